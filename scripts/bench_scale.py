"""How the default run's cost grows with the corpus: wall time and peak RSS per stage on synthetic corpora.

    python scripts/bench_scale.py --short                       # 10,000, 40,000, 160,000 documents cut at 32 tokens
    python scripts/bench_scale.py --sizes 10000                 # the default token limit (256)
    python scripts/bench_scale.py --sizes 300,1000 --short      # a quick look

Corpora: amazon-531's 2,555 generated reviews are cut into sentences, grouped by label path
(each review's "with ancestors" list); each synthetic document is a review-sized draw (3 to 8
sentences, seeded) from the sentences of one label path, so its topic is a real class path. The
reviews themselves, with their gold, are the test set. Each corpus is a TELEClass folder under
`--out` (default: a temporary folder, removed at the end): labels.txt, label_hierarchy.txt,
train/corpus.txt (+ train/doc2labels.txt, the path each document was drawn from, which the run only
reports mining quality against), test/corpus.txt + test/doc2labels.txt.

Each size is one child process running `taxoclass run data=CORPUS output_dir=... run_name=...`
in-process through the CLI (the default config; `--short` and `--max-len` add
`similarity.max_length` and `classifier.max_length`), with timers around the pipeline's stage
steps, the evaluation's predictions writer and the text encoder (`encode_texts`), and the peak
RSS of each step (Linux: VmHWM, reset per step through /proc/self/clear_refs). Stage 1's own
timing (`stage1/seconds` etc.) is in the run's summary.json as always; the timers add the
evaluation, the predictions file and the encoder's share, which the run does not record apart.

Prints one table (seconds and peak RSS per step and size, the share of the run that is not the
encoder, the growth exponent log(t2/t1)/log(n2/n1) between consecutive sizes), then the targets
of issue 18 item 3, each met or missed:
  (a) everything but the encoder passes <= 15 % of the run at 40,000 documents, growing at most
      linearly (exponent <= 1.1 between consecutive sizes);
  (b) peak RSS at 160,000 documents (531 classes) < 6 GB;
  (c) the run's wall time <= 1.2x its stage 1 (frozen encoder, the default), at every size.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "amazon-531"
SHORT_TOKENS = 32
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")

# (step, what it is): the rows of the table, in run order
STEPS = [("setup", "reading the data, run dir, keys (the rest of the run)"), ("stage1", "similarity, encoder included"),
         ("stage2", "core mining"), ("stage3", "classifier"), ("stage4", "self-training (skipped by default)"),
         ("evaluation", "evaluation, without writing predictions"), ("predictions", "writing predictions/test.jsonl")]


# ---------------------------------------------------------------- the synthetic corpora

def sentence_pools(data: Path) -> tuple[dict[tuple[str, ...], list[str]], list[tuple[str, str, list[str]]]]:
    """({label path: its reviews' sentences}, [(doc id, review, label path)]) from the generated reviews."""
    labels = json.loads((data / "train" / "generated_doc2label.json").read_text(encoding="utf-8"))
    pools: dict[tuple[str, ...], list[str]] = defaultdict(list)
    reviews = []
    for line in (data / "train" / "generated_docs.txt").read_text(encoding="utf-8").splitlines():
        doc_id, text = line.split("\t", 1)
        path = tuple(labels[doc_id]["with ancestors"])
        pools[path] += [s for s in SENTENCE_END.split(text.strip()) if s]
        reviews.append((doc_id, text, list(path)))
    return dict(pools), reviews


def write_corpus(folder: Path, n: int, data: Path = DATA, seed: int = 0) -> Path:
    """A TELEClass folder with `n` synthetic documents and the generated reviews as test set."""
    if (folder / ".complete").is_file():
        return folder
    pools, reviews = sentence_pools(data)
    paths = sorted(pools)
    rng = random.Random(seed)
    for sub in ("train", "test"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for name in ("labels.txt", "label_hierarchy.txt"):
        shutil.copyfile(data / name, folder / name)
    with open(folder / "train" / "corpus.txt", "w", encoding="utf-8") as docs, \
         open(folder / "train" / "doc2labels.txt", "w", encoding="utf-8") as gold:
        for i in range(n):
            path = paths[rng.randrange(len(paths))]
            pool = pools[path]
            text = " ".join(rng.sample(pool, min(len(pool), rng.randint(3, 8))))
            docs.write(f"syn{i}\t{text}\n")
            gold.write(f"syn{i}\t{','.join(path)}\n")
    with open(folder / "test" / "corpus.txt", "w", encoding="utf-8") as docs, \
         open(folder / "test" / "doc2labels.txt", "w", encoding="utf-8") as gold:
        for doc_id, text, path in reviews:
            docs.write(f"{doc_id}\t{text}\n")
            gold.write(f"{doc_id}\t{','.join(path)}\n")
    (folder / ".complete").touch()
    return folder


# ---------------------------------------------------------------- one run, measured (the child process)

def _hwm_kib() -> int:
    """The process's peak RSS since the last reset (VmHWM), KiB."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:  # not Linux, or not allowed: each step then reports the process's peak so far
        return False


class Meter:
    """Inclusive wall time and peak RSS of nested steps; the encoder's time apart."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.peak_kib: dict[str, int] = defaultdict(int)
        self.encoder_seconds = 0.0
        self.resets = True
        self._stack: list[str] = []
        self._in_encoder = False

    @contextmanager
    def step(self, name: str):
        if self._stack:  # the parent's peak so far, before the reset hides it
            self.peak_kib[self._stack[-1]] = max(self.peak_kib[self._stack[-1]], _hwm_kib())
        self.resets = _reset_hwm() and self.resets
        self._stack.append(name)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - t0
            peak = _hwm_kib()
            self._stack.pop()
            for n in [name] + self._stack[-1:]:
                self.peak_kib[n] = max(self.peak_kib[n], peak)

    def timed(self, name: str, fn):
        def wrapper(*args, **kwargs):
            with self.step(name):
                return fn(*args, **kwargs)
        return wrapper

    def encoder(self, fn):
        def wrapper(*args, **kwargs):
            if self._in_encoder:
                return fn(*args, **kwargs)
            self._in_encoder = True
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.encoder_seconds += time.perf_counter() - t0
                self._in_encoder = False
        return wrapper


def instrument(meter: Meter) -> None:
    """Timers around the steps `run_pipeline` calls (module attributes, so the CLI's run goes through them)."""
    import taxoclass.rundir as rundir
    import taxoclass.stages.similarity as similarity
    import taxoclass.stages.text_encoder as text_encoder
    from taxoclass.pipeline import steps

    for attr, name in (("similarity", "stage1"), ("mining", "stage2"), ("classifier", "stage3"),
                       ("self_training", "stage4"), ("skip_self_training", "stage4"), ("evaluation", "evaluation")):
        setattr(steps, attr, meter.timed(name, getattr(steps, attr)))
    rundir.write_predictions = meter.timed("predictions", rundir.write_predictions)
    text_encoder.encode_texts = meter.encoder(text_encoder.encode_texts)
    similarity.encode_texts = text_encoder.encode_texts  # imported by name there


def measure_run(data: Path, out: Path, max_len: int | None, result: Path) -> None:
    from taxoclass import cli

    meter = Meter()
    instrument(meter)
    args = ["run", f"data={data}", f"output_dir={out}", "run_name=run"]
    if max_len:
        args += [f"similarity.max_length={max_len}", f"classifier.max_length={max_len}"]
    _reset_hwm()
    t0 = time.perf_counter()
    code = cli.main(args)
    total = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"taxoclass run failed with status {code}")
    seconds = dict(meter.seconds)
    seconds["evaluation"] -= seconds.get("predictions", 0.0)  # exclusive: the writer is timed apart
    seconds["setup"] = total - sum(v for k, v in seconds.items() if k != "predictions")
    peaks = dict(meter.peak_kib)
    peaks["setup"] = 0  # not measured apart: the process peak covers it
    summary = json.loads((out / "run" / "summary.json").read_text())
    result.write_text(json.dumps({
        "total": total, "seconds": seconds, "peak_kib": peaks, "encoder_seconds": meter.encoder_seconds,
        "per_step_peaks": meter.resets,
        # resetting VmHWM also lowers ru_maxrss: the process's peak is the highest of the steps' peaks
        "max_rss_kib": max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, *peaks.values()),
        "summary": {k: summary.get(k) for k in ("stage1/seconds", "stage2/seconds", "stage3/seconds", "total_seconds",
                                                "total_encoder_passes", "test/example_f1", "stage3/train_samples")},
    }))


# ---------------------------------------------------------------- the table and the targets

def exponent(t1: float, t2: float, n1: int, n2: int) -> float:
    if t1 <= 0 or t2 <= 0:
        return float("nan")
    return math.log(t2 / t1) / math.log(n2 / n1)


def non_encoder(r: dict) -> float:
    return r["total"] - r["encoder_seconds"]


def report(results: dict[int, dict], max_len: int | None) -> list[str]:
    sizes = sorted(results)
    lines = [f"max_len {max_len or 'default (256)'}; load average {os.getloadavg()[0]:.1f}; "
             f"peaks per step: {'VmHWM reset per step' if all(results[n]['per_step_peaks'] for n in sizes) else 'process peak so far'}"]
    head = "| step | " + " | ".join(f"{n:,} docs: s | peak MiB" for n in sizes) + "".join(
        f" | exp {a:,}->{b:,}" for a, b in zip(sizes, sizes[1:])) + " |"
    lines += [head, "|" + "---|" * (1 + 2 * len(sizes) + len(sizes) - 1)]

    def row(name: str, secs: dict[int, float], peaks: dict[int, float | None]) -> str:
        cells = [f"{secs[n]:.1f} | {peaks[n]:.0f}" if peaks[n] else f"{secs[n]:.1f} | -" for n in sizes]
        exps = [f"{exponent(secs[a], secs[b], a, b):.2f}" for a, b in zip(sizes, sizes[1:])]
        return f"| {name} | " + " | ".join(cells + exps) + " |"

    for step, _ in STEPS:
        lines.append(row(step, {n: results[n]["seconds"].get(step, 0.0) for n in sizes},
                         {n: results[n]["peak_kib"].get(step, 0) / 1024 for n in sizes}))
    lines.append(row("encoder (in stage 1 and any later pass)", {n: results[n]["encoder_seconds"] for n in sizes}, dict.fromkeys(sizes)))
    lines.append(row("everything but the encoder", {n: non_encoder(results[n]) for n in sizes}, dict.fromkeys(sizes)))
    lines.append(row("run", {n: results[n]["total"] for n in sizes}, {n: results[n]["max_rss_kib"] / 1024 for n in sizes}))
    lines.append("")
    for n in sizes:
        r = results[n]
        s = r["summary"]
        lines.append(f"{n:,} docs: not-encoder share {non_encoder(r) / r['total']:.1%}, run / stage 1 "
                     f"{r['total'] / r['seconds']['stage1']:.2f}x, encoder passes {s['total_encoder_passes']}, "
                     f"stage-3 training docs {s['stage3/train_samples']}, test/example_f1 {s['test/example_f1']:.3f}")
    lines.append("")
    lines += targets(results)
    return lines


def targets(results: dict[int, dict]) -> list[str]:
    sizes = sorted(results)

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("met" if ok else "MISSED")

    exps = [exponent(non_encoder(results[a]), non_encoder(results[b]), a, b) for a, b in zip(sizes, sizes[1:])]
    share = non_encoder(results[40000]) / results[40000]["total"] if 40000 in results else None
    a_ok = None if share is None else (share <= 0.15 and all(e <= 1.1 for e in exps))
    a_text = ("40,000 not measured" if share is None else f"share at 40,000 {share:.1%}") + \
        f"; exponents {', '.join(f'{e:.2f}' for e in exps) or 'n/a'}"
    peak = results[160000]["max_rss_kib"] / 2**20 if 160000 in results else None
    b_ok = None if peak is None else peak < 6.0
    b_text = "160,000 not measured" if peak is None else f"peak RSS at 160,000 {peak:.2f} GiB"
    ratios = {n: results[n]["total"] / results[n]["seconds"]["stage1"] for n in sizes}
    c_ok = all(v <= 1.2 for v in ratios.values())
    c_text = ", ".join(f"{n:,}: {v:.2f}x" for n, v in ratios.items())
    return [f"(a) not-encoder <= 15% at 40,000 and exponent <= 1.1: {verdict(a_ok)} ({a_text})",
            f"(b) peak RSS at 160,000 docs < 6 GB: {verdict(b_ok)} ({b_text})",
            f"(c) run <= 1.2x stage 1: {verdict(c_ok)} ({c_text})"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,40000,160000", help="corpus sizes, comma-separated")
    ap.add_argument("--short", action="store_true", help=f"documents cut at {SHORT_TOKENS} tokens: everything but the encoder shows")
    ap.add_argument("--max-len", type=int, default=None, help="token limit of stage 1 and the classifier (default: the config's)")
    ap.add_argument("--out", default=None, help="scratch folder for the corpora and runs (default: a temporary folder, removed)")
    ap.add_argument("--data", default=str(DATA), help="amazon-531 folder with the generated reviews")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", nargs=3, metavar=("DATA", "OUT", "RESULT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    max_len = args.max_len or (SHORT_TOKENS if args.short else None)
    if args.child:
        data, out, result = map(Path, args.child)
        measure_run(data, out, max_len, result)
        return
    scratch = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench-scale-"))
    if scratch.resolve().is_relative_to(REPO) or scratch.resolve().is_relative_to(REPO.parent / "shared"):
        raise SystemExit(f"--out {scratch}: the corpora do not go into the repository or ../shared")
    results = {}
    try:
        for n in sorted(int(s) for s in args.sizes.split(",")):
            corpus = write_corpus(scratch / f"amazon531-synth-{n}-seed{args.seed}", n, Path(args.data), args.seed)
            out = scratch / f"runs-{n}-{max_len or 'default'}"
            shutil.rmtree(out, ignore_errors=True)  # a fresh run dir: nothing from the cache
            result = out / "bench.json"
            out.mkdir(parents=True)
            cmd = [sys.executable, __file__, "--child", str(corpus), str(out), str(result)]
            cmd += ["--max-len", str(max_len)] if max_len else []
            t0 = time.time()
            with open(out / "bench.log", "w") as log:  # the run's status lines and progress bars
                code = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode
            if code != 0:
                raise SystemExit(f"{n:,} documents: the run failed ({code}); its log ends:\n"
                                 + "\n".join((out / "bench.log").read_text().splitlines()[-15:]))
            results[n] = json.loads(result.read_text())
            print(f"{n:,} documents: run {results[n]['total']:.1f}s ({time.time() - t0:.0f}s with start-up)", file=sys.stderr, flush=True)
            if n != max(int(s) for s in args.sizes.split(",")):  # the table so far, should a later size not finish
                print("\n".join(report(results, max_len)), file=sys.stderr, flush=True)
    finally:
        if not args.out:
            shutil.rmtree(scratch, ignore_errors=True)
    print("\n".join(report(results, max_len)))


if __name__ == "__main__":
    main()
