"""GPU check of the engine: stage-1 throughput against the card's peak, and a stage-3 step in fp32, bf16, fp16.

    python scripts/bench_gpu.py                    # on the lent GPU machine (no wandb or optuna there; Ray optional)
    python scripts/bench_gpu.py --device cpu --docs 64 --steps 3 --batch-size 8   # a smoke run anywhere

Prints the card's name, then:
1. stage 1 (the bi-encoder's document pass, `encode_texts` as the pipeline calls it): documents/s for
   MiniLM (the bundled model) and mpnet (all-mpnet-base-v2's shape: 12 layers, 768 wide; randomly
   initialised unless --mpnet names its folder, which does not change the time) on synthetic documents
   of 256 tokens, fp32 and bf16 autocast, batches of --batch-tokens padded tokens; beside each, the
   FLOPs it sustains as a share of the card's dense bf16 peak (a table of cards, or --peak-tflops), and the
   tokenizer's own documents/s (the ceiling when it, not the GPU, is the limit);
2. with N > 1 GPUs and Ray installed: MiniLM bf16 on N Ray Data actors, one GPU each (`ray_data.py`);
3. the mean time of a full stage-3 training step (MiniLM encoder + GCN + bilinear, batch of 64
   synthetic 256-token documents, 531 classes) in fp32, bf16 autocast and fp16 with GradScaler.
Targets: stage 1 >= 10,000 documents/s for MiniLM in bf16 on an H200; AMP at least 1.8x faster per step than fp32.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from taxoclass.amp import amp_context  # noqa: E402
from taxoclass.config import ClassifierConfig  # noqa: E402
from taxoclass.data.taxonomy import Taxonomy  # noqa: E402
from taxoclass.stages.model import TaxoClassifier  # noqa: E402
from taxoclass.stages.text_encoder import encode_texts, load_encoder, load_tokenizer  # noqa: E402
from taxoclass.training.losses import masked_bce  # noqa: E402

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


# dense bf16 tensor-core peaks (TFLOP/s, no sparsity), matched on the card's name in this order
PEAK_BF16_TFLOPS = [("H200", 989.4), ("H100 PCIe", 756.0), ("H100", 989.4), ("B200", 2250.0), ("A100", 312.0),
                    ("L40S", 362.1), ("L40", 181.0), ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0), ("RTX 4090", 165.2),
                    ("RTX 3090", 71.0)]


def peak_flops(card: str, override: float | None) -> float | None:
    if override:
        return override * 1e12
    return next((tflops * 1e12 for name, tflops in PEAK_BF16_TFLOPS if name in card), None)


def flops_per_doc(model, tokens: int) -> float:
    """Forward FLOPs of one document: 2 per weight of the transformer layers per token, plus attention's
    two T x T products (scores, weighted sum) per layer."""
    c = model.config
    layer_weights = sum(p.numel() for n, p in model.named_parameters() if ".layer." in n and n.endswith("weight"))
    return 2.0 * layer_weights * tokens + 4.0 * c.num_hidden_layers * tokens * tokens * c.hidden_size


def mpnet_model(folder: str | None):
    """all-mpnet-base-v2, or a model of its shape with random weights (the time is the same)."""
    if folder:
        return load_encoder(folder)
    from transformers import MPNetConfig, MPNetModel

    config = MPNetConfig(vocab_size=30527, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                         max_position_embeddings=514)
    torch.manual_seed(0)
    return MPNetModel(config), load_tokenizer("bundled")  # MiniLM's uncased WordPiece: ids within mpnet's vocabulary


def synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def docs_per_second(model, tok, docs, device, amp: str, args) -> float:
    def run(texts):
        encode_texts(model, tok, texts, max_length=args.max_length, batch_size=64, device=device, batch_tokens=args.batch_tokens,
                     amp=amp)

    run(docs[: max(64, len(docs) // 20)])  # warm-up: kernels chosen, allocator filled
    synchronize(device)
    t0 = time.perf_counter()
    run(docs)
    synchronize(device)
    return len(docs) / (time.perf_counter() - t0)


def stage1_table(args, device, card: str) -> None:
    docs = synthetic_docs(args.docs, 300)  # 300 words: every document fills its 256 tokens
    minilm = load_encoder("bundled")
    tok = minilm[1]
    tokens = float(np.mean([len(ids) for ids in tok(docs[:256], truncation=True, max_length=args.max_length)["input_ids"]]))
    t0 = time.perf_counter()
    tok(docs, truncation=True, max_length=args.max_length, return_attention_mask=False, return_token_type_ids=False)
    print(f"stage 1: {len(docs)} synthetic documents of {tokens:.0f} tokens, batches of {args.batch_tokens} tokens; the tokenizer "
          f"alone: {len(docs) / (time.perf_counter() - t0):,.0f} documents/s")
    peak = peak_flops(card, args.peak_tflops)
    print("| model | precision | documents/s | TFLOP/s | share of the dense bf16 peak |")
    print("|---|---|---|---|---|")
    for name, (model, model_tok) in (("MiniLM-L6 (bundled)", minilm), ("mpnet-base", mpnet_model(args.mpnet))):
        model.to(device)
        per_doc = flops_per_doc(model, int(round(tokens)))
        for amp in ("off", "bf16"):
            rate = docs_per_second(model, model_tok, docs, device, amp, args)
            share = f"{rate * per_doc / peak:.1%}" if peak else "n/a (give --peak-tflops)"
            print(f"| {name} | {'fp32' if amp == 'off' else 'bf16 autocast'} | {rate:,.0f} | {rate * per_doc / 1e12:.1f} | {share} |")
        model.to("cpu")


def multi_gpu_row(args, device) -> None:
    """MiniLM bf16 on one Ray Data actor per GPU, the pipeline's stage-1 path on Ray."""
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    if gpus < 2:
        print(f"stage 1 on N actors: {gpus} GPU(s) here; the row needs two or more")
        return
    try:
        import ray  # noqa: F401
    except ImportError:
        print("stage 1 on N actors: Ray is not installed here")
        return
    import tempfile

    from taxoclass.config import build_config
    from taxoclass.distributed.ray_data import score_with_ray_data
    from taxoclass.distributed.ray_instance import start_local_ray

    start_local_ray(dashboard=False, log_to_driver=False)
    docs = synthetic_docs(args.docs * gpus, 300)
    tax = synthetic_taxonomy()
    cfg = build_config(None, overrides=["ray.use_gpu=true", f"ray.stage1_actors={gpus}", f"ray.stage1_batch_size={4096}",
                                        f"ray.shard_size={16384}", f"similarity.batch_tokens={args.batch_tokens}"], environ={})
    with tempfile.TemporaryDirectory() as tmp:
        score_with_ray_data(cfg, tax, docs[: 256 * gpus], ["x"], Path(tmp) / "warm", progress=False, embed=True)
        t0 = time.perf_counter()
        score_with_ray_data(cfg, tax, docs, ["x"], Path(tmp) / "run", progress=False, embed=True)
        secs = time.perf_counter() - t0
    print(f"stage 1 on {gpus} actors (Ray Data, one GPU each, MiniLM, bf16): {len(docs) / secs:,.0f} documents/s "
          f"({len(docs) / secs / gpus:,.0f} per GPU; actors started once per run, included)")
    import ray

    ray.shutdown()


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
    ap.add_argument("--docs", type=int, default=20000, help="stage-1 documents per measurement")
    ap.add_argument("--batch-tokens", type=int, default=131072, help="stage 1: padded tokens per batch")
    ap.add_argument("--mpnet", default=None, help="all-mpnet-base-v2's folder (default: its shape, random weights)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the card's dense bf16 peak (default: from its name)")
    ap.add_argument("--serial-tokenizer", action="store_true",
                    help="tokenize on one thread (default: the tokenizer's threads, Hugging Face's default)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=256)
    args = ap.parse_args()
    # the device machine's environment turns the tokenizer's threads off (for tests); a user's run has them
    os.environ["TOKENIZERS_PARALLELISM"] = "false" if args.serial_tokenizer else "true"
    device = torch.device(args.device)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {card}; torch {torch.__version__}; {os.cpu_count()} CPUs, tokenizer threads "
          f"{'off' if args.serial_tokenizer else 'on'}")
    tax = synthetic_taxonomy()

    stage1_table(args, device, card)
    multi_gpu_row(args, device)

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
