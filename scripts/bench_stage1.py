"""Stage-1 cost: encoder passes and wall time against the Hugging Face zero-shot pipeline; the document pass before and after.

    python scripts/bench_stage1.py                         # 40 amazon-531 generated reviews, 531 classes
    python scripts/bench_stage1.py --docs 100 --nli-model roberta-large-mnli   # with a real NLI model (GPU advised)
    python scripts/bench_stage1.py --encode --docs 1000    # the bi-encoder's document pass, before and after issue 28
    python scripts/bench_stage1.py --dtypes --encoders bundled,DIR --data ../shared/data/20newsgroups --docs 200
                                                           # docs/s of each encoder in fp32 and bf16, side by side

Three ways to score the same documents against the same class hypotheses:
1. transformers' `zero-shot-classification` pipeline with the NLI model: one pass per (document, class);
2. our NLI backend with top-down pruning (`similarity.pruning=true`): only the pairs the search visits;
3. our bi-encoder backend: N + C passes.
Without --nli-model, a small randomly initialised BERT NLI model (MiniLM's tokenizer) is built
here: the timing is what matters. Prints one table; targets: 2 at least 5x faster than 1,
3 at least 10x fewer passes than 1.

`--encode`: `encode_texts` as stage 1 calls it (MiniLM, mean pooling, the documents lower-cased,
`--max-length` tokens, `--batch-size`) on the first `--docs` documents, side by side with the same
function at `--before` (a commit; default the one before issue 28: fixed batches of 64 by character
length, tokenized on the model's thread), read from git; the two run in turn, `--repeats` times each,
so that both meet the same load. Prints documents/s (best and median), the ratio, the smallest cosine
between their vectors (target: above 0.999) and the load average before and after: a CPU figure
means something only on a quiet machine.

`--dtypes`: the document pass as stage 1 runs it (`encode_texts` with similarity.max_length, batch_size and
batch_tokens of the default config) for each of `--encoders` (default: the bundled MiniLM and
all-mpnet-base-v2 from ~/.cache/taxoclass, where ../shared/models/get-mpnet.sh puts it) in fp32
(`similarity.autocast=off`) and under bf16 autocast, in turn, `--repeats` times each; prints documents/s
(best, median), bf16's speed-up and the smallest cosine between the two dtypes' vectors, and whether this
CPU has bf16 units (torch's own check, the one `similarity.autocast=auto` asks).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from taxoclass.config import build_config  # noqa: E402
from taxoclass.data.readers import load_dataset  # noqa: E402
from taxoclass.stages import text_encoder  # noqa: E402
from taxoclass.stages.similarity import BiEncoderScorer, NLIScorer, hypotheses, score_pruned  # noqa: E402
from taxoclass.stages.text_encoder import resolve_model_path  # noqa: E402

BEFORE_ISSUE_28 = "b1f1ce3"  # main before issue 28: fixed batches of 64, tokenized on the model's thread


def tiny_nli_model(folder: Path) -> str:
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tok = AutoTokenizer.from_pretrained(resolve_model_path("bundled"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=256, num_labels=3, id2label={0: "entailment", 1: "neutral", 2: "contradiction"},
                        label2id={"entailment": 0, "neutral": 1, "contradiction": 2})
    BertForSequenceClassification(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def module_at(rev: str, path: str = "taxoclass/stages/text_encoder.py") -> types.ModuleType:
    """A module of this repository as it was at `rev` (`git show`), importable beside today's."""
    try:
        source = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:{path}"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        sys.exit(f"bench_stage1.py: --before {rev}: cannot read {path} from git ({err})")
    module = types.ModuleType(f"{Path(path).stem}_at_{rev}")
    exec(compile(source, f"{rev}:{path}", "exec"), module.__dict__)
    return module


def compare_encode(args, docs: list[str], device) -> None:
    """Today's encode_texts against the one at --before, in turn, on the same texts."""
    old = module_at(args.before)
    model, tok = text_encoder.load_encoder("bundled")
    model.to(device)
    paths = {f"before ({args.before})": old.encode_texts, "after (this checkout)": text_encoder.encode_texts}
    times: dict[str, list[float]] = {name: [] for name in paths}
    vectors = {}
    load_before = os.getloadavg()
    paths[next(iter(paths))](model, tok, docs[:32], max_length=args.max_length, batch_size=args.batch_size, device=device)  # warm-up
    for _ in range(args.repeats):
        for name, encode in paths.items():
            t0 = time.perf_counter()
            vectors[name] = encode(model, tok, docs, max_length=args.max_length, batch_size=args.batch_size, device=device)
            times[name].append(time.perf_counter() - t0)
    load_after = os.getloadavg()
    a, b = vectors.values()
    cosines = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    print(f"encode_texts: {len(docs)} documents of {args.data}, MiniLM, {args.max_length} tokens, batch size {args.batch_size}, "
          f"on {device} ({torch.get_num_threads()} threads), {args.repeats} runs each in turn; load average "
          f"{load_before[0]:.2f} before, {load_after[0]:.2f} after ({os.cpu_count()} CPUs)")
    print("| path | documents/s (best) | documents/s (median) |")
    print("|---|---|---|")
    for name, secs in times.items():
        print(f"| {name} | {len(docs) / min(secs):.1f} | {len(docs) / statistics.median(secs):.1f} |")
    before, after = (min(t) for t in times.values())
    print(f"after / before: {before / after:.2f}x (best runs); vectors: smallest cosine {cosines.min():.7f}, "
          f"largest difference {np.abs(a - b).max():.2e}")


def compare_dtypes(args, docs: list[str], device) -> None:
    """Each encoder's document pass in fp32 and under bf16 autocast, in turn, on the same texts."""
    from taxoclass.amp import cpu_has_bf16

    cfg = build_config(None, environ={}).similarity
    print(f"encode_texts: {len(docs)} documents of {args.data}, {cfg.max_length} tokens, batch size {cfg.batch_size}, "
          f"on {device} ({torch.get_num_threads()} threads), {args.repeats} runs each in turn; bf16 units: {cpu_has_bf16()}; "
          f"load average {os.getloadavg()[0]:.2f} before ({os.cpu_count()} CPUs)")
    print("| encoder | fp32 docs/s (best, median) | bf16 docs/s (best, median) | bf16 / fp32 (best) | smallest cosine |")
    print("|---|---|---|---|---|")
    for encoder in args.encoders.split(","):
        model, tok = text_encoder.load_encoder(encoder)
        model.to(device)
        times: dict[str, list[float]] = {"off": [], "bf16": []}
        vectors = {}

        settings = dict(max_length=cfg.max_length, batch_size=cfg.batch_size, batch_tokens=cfg.batch_tokens, device=device)
        for amp in times:  # warm-up: oneDNN builds its kernels for each dtype on first use
            text_encoder.encode_texts(model, tok, docs[:8], amp=amp, **settings)
        for _ in range(args.repeats):
            for amp in times:
                t0 = time.perf_counter()
                vectors[amp] = text_encoder.encode_texts(model, tok, docs, amp=amp, **settings)
                times[amp].append(time.perf_counter() - t0)
        a, b = vectors["off"], vectors["bf16"]
        cosines = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        cells = [f"{len(docs) / min(t):.1f}, {len(docs) / statistics.median(t):.1f}" for t in times.values()]
        print(f"| {Path(encoder).name} | {cells[0]} | {cells[1]} | {min(times['off']) / min(times['bf16']):.2f}x "
              f"| {cosines.min():.5f} |", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "amazon-531"))
    ap.add_argument("--docs", type=int, default=40)
    ap.add_argument("--nli-model", default=None)
    ap.add_argument("--max-length", type=int, default=None, help="default 128; with --encode 256 (similarity.max_length)")
    ap.add_argument("--batch-size", type=int, default=None, help="default 32; with --encode 64 (similarity.batch_size)")
    ap.add_argument("--encode", action="store_true", help="the document pass before and after issue 28, side by side")
    ap.add_argument("--before", default=BEFORE_ISSUE_28, help="with --encode: the commit to compare with")
    ap.add_argument("--repeats", type=int, default=3, help="with --encode or --dtypes: runs of each path")
    ap.add_argument("--dtypes", action="store_true", help="each encoder's document pass in fp32 and bf16, side by side")
    ap.add_argument("--encoders", default=f"bundled,{Path.home() / '.cache/taxoclass/all-mpnet-base-v2'}",
                    help="with --dtypes: comma-separated encoders (bundled, a hub name or a folder)")
    args = ap.parse_args()
    args.max_length = args.max_length or (256 if args.encode else 128)
    args.batch_size = args.batch_size or (64 if args.encode else 32)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ds = load_dataset(args.data)
    tax = ds.taxonomy
    docs = [t.lower() for t in ds.corpus.texts[: args.docs]]
    if args.encode:
        compare_encode(args, docs, device)
        return
    if args.dtypes:
        compare_dtypes(args, docs, device)
        return
    cfg = build_config(None, overrides=[f"data={args.data}"], environ={})
    template = cfg.similarity.template
    labels = tax.readable_names
    with tempfile.TemporaryDirectory() as tmp:
        model = args.nli_model or tiny_nli_model(Path(tmp) / "nli")
        rows = []

        from transformers import pipeline
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        zsc = pipeline("zero-shot-classification", model=model, tokenizer=model, device=device)
        t0 = time.perf_counter()
        for doc in docs:
            zsc(doc, candidate_labels=labels, hypothesis_template=template, multi_label=True, truncation=True)
        rows.append(("HF zero-shot pipeline (NLI)", len(docs) * len(labels), time.perf_counter() - t0))

        nli = NLIScorer(model, args.max_length, args.batch_size, device)
        nli.set_classes(hypotheses(template, labels))
        t0 = time.perf_counter()
        score_pruned(nli, docs, tax, root_width=cfg.mining.root_width, progress=False)
        rows.append(("taxoclass NLI + pruning", nli.encoder_passes, time.perf_counter() - t0))

        bi = BiEncoderScorer("bundled", args.max_length, args.batch_size, device)
        t0 = time.perf_counter()
        bi.set_classes(hypotheses(template, labels))
        bi.score_all(docs, desc=None)
        rows.append(("taxoclass bi-encoder (MiniLM)", bi.encoder_passes, time.perf_counter() - t0))

    base_passes, base_time = rows[0][1], rows[0][2]
    print(f"{len(docs)} documents x {len(labels)} classes on {device} ({torch.get_num_threads()} threads); NLI model: "
          f"{args.nli_model or 'tiny random BERT (2 layers, 128 hidden)'}")
    print("| scorer | encoder passes | passes / doc | wall time (s) | passes vs pipeline | time vs pipeline |")
    print("|---|---|---|---|---|---|")
    for name, passes, secs in rows:
        print(f"| {name} | {passes} | {passes / len(docs):.1f} | {secs:.2f} | {base_passes / passes:.1f}x fewer "
              f"| {base_time / secs:.1f}x faster |")


if __name__ == "__main__":
    main()
