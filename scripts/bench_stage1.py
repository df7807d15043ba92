"""Stage-1 cost: encoder passes and wall time against the Hugging Face zero-shot pipeline.

    python scripts/bench_stage1.py                         # 40 amazon-531 generated reviews, 531 classes
    python scripts/bench_stage1.py --docs 100 --nli-model roberta-large-mnli   # with a real NLI model (GPU advised)

Three ways to score the same documents against the same class hypotheses:
1. transformers' `zero-shot-classification` pipeline with the NLI model: one pass per (document, class);
2. our NLI backend with top-down pruning (`similarity.pruning=true`): only the pairs the search visits;
3. our bi-encoder backend: N + C passes.
Without --nli-model, a small randomly initialised BERT NLI model (MiniLM's tokenizer) is built
here: the timing is what matters. Prints one table; targets: 2 at least 5x faster than 1,
3 at least 10x fewer passes than 1.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from taxoclass.config import build_config  # noqa: E402
from taxoclass.data.readers import load_dataset  # noqa: E402
from taxoclass.stages.similarity import BiEncoderScorer, NLIScorer, hypotheses, score_pruned  # noqa: E402
from taxoclass.stages.text_encoder import resolve_model_path  # noqa: E402


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "amazon-531"))
    ap.add_argument("--docs", type=int, default=40)
    ap.add_argument("--nli-model", default=None)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ds = load_dataset(args.data)
    tax = ds.taxonomy
    docs = [t.lower() for t in ds.corpus.texts[: args.docs]]
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
