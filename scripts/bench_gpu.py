"""GPU check of the engine without Ray: stage-1 throughput and a stage-3 step in fp32, bf16, fp16.

    python scripts/bench_gpu.py                    # on the lent GPU machine (no Ray, wandb or optuna there)
    python scripts/bench_gpu.py --device cpu --steps 3 --batch-size 8   # a smoke run anywhere

Prints the card's name, stage-1 documents/s and pairs/s with the bundled bi-encoder, and the
mean time of a full stage-3 training step (MiniLM encoder + GCN + bilinear, batch of 64
synthetic 256-token documents, 531 classes) in fp32, bf16 autocast and fp16 with GradScaler.
Target: AMP at least 1.8x faster per step than fp32.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from taxoclass.config import ClassifierConfig  # noqa: E402
from taxoclass.data.taxonomy import Taxonomy  # noqa: E402
from taxoclass.stages.amp import amp_context  # noqa: E402
from taxoclass.stages.classifier import masked_bce  # noqa: E402
from taxoclass.stages.model import TaxoClassifier  # noqa: E402
from taxoclass.stages.similarity import BiEncoderScorer  # noqa: E402
from taxoclass.stages.text_encoder import load_encoder  # noqa: E402

WORDS = ("battery screen sound comfortable delivery price quality recommend broke returned camera kettle tent pillow "
         "shampoo helmet light warm soft loud quiet fast slow cheap sturdy").split()


def synthetic_docs(n: int, words: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=words)) for _ in range(n)]


def synthetic_taxonomy(top: int = 6, mid: int = 10, leaves: int = 8) -> Taxonomy:
    names, edges = [], []
    for a in range(top):
        names.append(f"top_{a}")
        ia = len(names) - 1
        for b in range(mid):
            names.append(f"mid_{a}_{b}")
            ib = len(names) - 1
            edges.append((ia, ib))
            for c in range(leaves):
                names.append(f"leaf_{a}_{b}_{c}")
                edges.append((ib, len(names) - 1))
    return Taxonomy(ids=[str(i) for i in range(len(names))], names=names, edges=edges)


def time_steps(model, batch, targets, mask, amp: str, device, steps: int) -> float:
    opt = torch.optim.AdamW(model.param_groups(5e-5, 4e-3, 0.01))
    scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
    times = []
    for i in range(steps + 2):  # two warm-up steps
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with amp_context(amp, device):
            logits = model(**batch)
        loss = masked_bce(logits, targets, mask)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return float(np.mean(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=256)
    args = ap.parse_args()
    device = torch.device(args.device)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {card}; torch {torch.__version__}")
    tax = synthetic_taxonomy()

    docs = synthetic_docs(args.docs, 200)
    scorer = BiEncoderScorer("bundled", args.max_length, 256, device)
    scorer.set_classes([f"This product is about {n}." for n in tax.readable_names])
    scorer.score_all(docs[:256], desc=None)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    scorer.score_all(docs, desc=None)
    if device.type == "cuda":
        torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    print(f"stage 1 (bi-encoder, {len(docs)} docs x {len(tax)} classes, {args.max_length} tokens): "
          f"{len(docs) / secs:.0f} docs/s, {len(docs) * len(tax) / secs:,.0f} pairs/s")

    encoder, tok = load_encoder("bundled")
    cfg = ClassifierConfig()
    class_init = torch.randn(len(tax), encoder.config.hidden_size)
    model = TaxoClassifier(encoder.to(device), class_init, tax, gnn_num_layers=cfg.gnn_num_layers,
                           gnn_hidden_dim=cfg.gnn_hidden_dim).to(device)
    enc = tok(synthetic_docs(args.batch_size, 400, seed=1), padding="max_length", truncation=True, max_length=args.max_length,
              return_tensors="pt")
    batch = {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}
    targets = (torch.rand(args.batch_size, len(tax), device=device) < 0.01).float()
    mask = torch.ones_like(targets)
    modes = ["off", "bf16"] + (["fp16"] if device.type == "cuda" else [])
    results = {m: time_steps(model, batch, targets, mask, m, device, args.steps) for m in modes}
    print(f"stage 3 step (batch {args.batch_size} x {args.max_length} tokens, {len(tax)} classes):")
    print("| precision | ms / step | speed-up vs fp32 |")
    print("|---|---|---|")
    for m, secs in results.items():
        label = {"off": "fp32", "bf16": "bf16 autocast", "fp16": "fp16 + GradScaler"}[m]
        print(f"| {label} | {secs * 1000:.1f} | {results['off'] / secs:.2f}x |")


if __name__ == "__main__":
    main()
