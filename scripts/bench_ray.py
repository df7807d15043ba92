"""Ray runtime benchmarks: stage-1 throughput per actor count, runtime=ray overhead, stage-1 peak memory.

    scripts/private_net.sh .venv/bin/python scripts/bench_ray.py            # everything (about 15 min on 2 cores)
    scripts/private_net.sh .venv/bin/python scripts/bench_ray.py --only memory --sizes 10000,100000

1. Stage-1 throughput (documents/s) of the demo corpus x3 with 1 and 2 CPU scorer actors.
2. The overhead of `runtime=ray` over `runtime=local` on the demo preset, end to end.
3. Peak resident memory (driver + every Ray process) while stage 1 streams synthetic corpora of
   10,000 and 100,000 short documents into Parquet shards: it must stay flat, not grow with the corpus.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import psutil  # noqa: E402

from taxoclass.config import build_config  # noqa: E402
from taxoclass.data.readers import load_dataset  # noqa: E402
from taxoclass.stages.similarity import class_texts, hypotheses  # noqa: E402

WORDS = ("battery screen sound comfortable delivery price quality recommend broke returned camera kettle tent pillow "
         "shampoo helmet light warm soft loud quiet fast slow cheap sturdy coffee blanket mat").split()


class PeakRSS:
    """Samples the resident memory of this process and all its descendants (Ray's included)."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def _total(self) -> int:
        me = psutil.Process()
        total = 0
        for p in [me] + me.children(recursive=True):
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._total())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def throughput(actors_list, out: Path) -> None:
    from taxoclass.distributed.ray_data import score_with_ray_data

    ds = load_dataset("demo")
    texts = (ds.corpus.texts + ds.test.texts) * 3
    print(f"\n## Stage-1 throughput, {len(texts)} demo reviews (bi-encoder, 128 tokens)")
    print("| scorer actors | seconds | documents/s |\n|---|---|---|")
    for actors in actors_list:
        cfg = build_config("demo", overrides=[f"ray.stage1_actors={actors}", "ray.stage1_batch_size=64", "ray.shard_size=256"], environ={})
        hyps = hypotheses(cfg.similarity.template, class_texts(ds.taxonomy, "name", None))
        folder = out / f"tp{actors}"
        t0 = time.perf_counter()
        score_with_ray_data(cfg, ds.taxonomy, texts, hyps, folder, progress=False)
        secs = time.perf_counter() - t0
        print(f"| {actors} | {secs:.1f} | {len(texts) / secs:.1f} |", flush=True)


def overhead(out: Path) -> None:
    import ray

    from taxoclass.distributed.ray_runtime import RayRuntime
    from taxoclass.pipeline import run_pipeline
    from taxoclass.runtime import LocalRuntime

    print("\n## runtime=ray against runtime=local, demo preset end to end (2 Train workers)")
    print("| runtime | seconds | test/example_f1 |\n|---|---|---|")
    for runtime in ("local", "ray"):
        cfg = build_config("demo", overrides=[f"output_dir={out}", f"run_name=ovh-{runtime}", f"runtime={runtime}"], environ={})
        t0 = time.perf_counter()
        summary = run_pipeline(cfg, runtime=RayRuntime(cfg) if runtime == "ray" else LocalRuntime())
        print(f"| {runtime} | {time.perf_counter() - t0:.1f} | {summary['test/example_f1']:.4f} |", flush=True)
    assert ray.is_initialized()


def memory(sizes, out: Path) -> None:
    from taxoclass.distributed.ray_data import score_with_ray_data

    tax = load_dataset("demo").taxonomy
    print("\n## Stage-1 peak memory, synthetic 12-word documents streamed into Parquet shards (2 actors)")
    print("| documents | seconds | peak RSS, all processes (MiB) |\n|---|---|---|")
    rng = np.random.default_rng(0)
    for n in sizes:
        texts = [" ".join(rng.choice(WORDS, size=12)) for _ in range(n)]
        cfg = build_config("demo", overrides=["ray.stage1_actors=2", "ray.stage1_batch_size=512", "ray.shard_size=4096",
                                              "similarity.max_length=32"], environ={})
        hyps = hypotheses(cfg.similarity.template, class_texts(tax, "name", None))
        folder = out / f"mem{n}"
        t0 = time.perf_counter()
        with PeakRSS() as peak:
            score_with_ray_data(cfg, tax, texts, hyps, folder, progress=False)
        print(f"| {n:,} | {time.perf_counter() - t0:.0f} | {peak.peak / 2**20:,.0f} |", flush=True)
        del texts


def main() -> None:
    import ray

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["throughput", "overhead", "memory"], default=None)
    ap.add_argument("--sizes", default="10000,100000")
    args = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix="taxoclass-bench-ray-"))
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        if args.only in (None, "throughput"):
            throughput([1, 2], out)
        if args.only in (None, "overhead"):
            overhead(out)
        if args.only in (None, "memory"):
            memory([int(x) for x in args.sizes.split(",")], out)
    finally:
        ray.shutdown()
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
