"""Stage 4: multi-label self-training (METHOD.md, stage 4).

Features:
- target q_ij = (p_ij^2 / f_j) / (p_ij^2 / f_j + (1 - p_ij)^2 / g_j), f_j = sum_i p_ij,
  g_j = sum_i (1 - p_ij), recomputed on the whole corpus every `update_interval` batches;
- loss: binary KL(q || p) per class, i.e. soft-target BCE (the constant entropy of q
  dropped), summed over classes, averaged over documents;
- stop rule, label-free: the share of documents whose top-3 set changed since the
  last update falls to `stop_tolerance` or below; else the `max_batches` budget;
- `confident_only` (off by default, our addition): train each interval only on
  documents whose max prediction exceeds `self_train_threshold`;
- per update: confident predictions, their ratio, mean max prediction, mean target
  entropy, the iteration, the mean loss, the epoch, the top-3 change.
"""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn.functional as F

from taxoclass.config import SelfTrainingConfig
from taxoclass.stages.classifier import DocBatches, amp_context, check_amp, predict_probs, shuffled_batches

EPS = 1e-8


def target_distribution(p: np.ndarray) -> np.ndarray:
    """Sharpened targets, normalised per class across documents."""
    p = np.clip(p.astype(np.float64), EPS, 1 - EPS)
    f = p.sum(0, keepdims=True)
    g = (1 - p).sum(0, keepdims=True)
    pos = p**2 / f
    neg = (1 - p) ** 2 / g
    return (pos / (pos + neg)).astype(np.float32)


def binary_entropy(q: np.ndarray) -> np.ndarray:
    q = np.clip(q.astype(np.float64), EPS, 1 - EPS)  # float64: 1 - 1e-8 rounds to 1 in float32
    return -(q * np.log(q) + (1 - q) * np.log(1 - q))


def top3_sets(p: np.ndarray) -> np.ndarray:
    return np.sort(np.argsort(-p, axis=1)[:, :3], axis=1)


def soft_bce(logits: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), q, reduction="none").sum(1).mean()


def update_stats(p: np.ndarray, q: np.ndarray, threshold: float) -> dict:
    max_p = p.max(1)
    confident = int((max_p > threshold).sum())
    return {
        "stage4/confident_predictions": confident,
        "stage4/confidence_ratio": confident / len(p),
        "stage4/avg_max_prediction": float(max_p.mean()),
        "stage4/avg_target_entropy": float(binary_entropy(q).mean()),
    }


def self_train(model, docs: DocBatches, cfg: SelfTrainingConfig, device, seed: int, sink, amp: str = "off",
               eval_batch_size: int = 128) -> dict:
    """Self-train `model` in place on every corpus document; returns the final stats."""
    check_amp(amp, device)
    model.to(device)
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.param_groups(cfg.learning_rate, cfg.head_learning_rate, 0.0))
    scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
    p = predict_probs(model, docs, device, eval_batch_size, amp)
    q = target_distribution(p)
    prev_top3 = top3_sets(p)
    batches_per_epoch = max(1, -(-len(docs) // cfg.batch_size))
    iteration, done, losses = 0, 0, []
    pool = _training_pool(p, cfg)
    stats = {**update_stats(p, q, cfg.self_train_threshold), "stage4/iteration": 0, "stage4/epoch": 0.0}
    sink(stats, step=None)
    stopped_by = "budget"
    queue: list[list[int]] = []
    while done < cfg.max_batches:
        if not queue:
            queue = [[pool[i] for i in b] for b in shuffled_batches(len(pool), cfg.batch_size, rng)]
        b = queue.pop(0)
        model.train()
        with amp_context(amp, device):
            logits = model(**docs.batch(b, device))
        loss = soft_bce(logits, torch.from_numpy(q[b]).to(device))
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(loss.item())
        done += 1
        if done % cfg.update_interval == 0 or done == cfg.max_batches:
            p = predict_probs(model, docs, device, eval_batch_size, amp)
            q = target_distribution(p)
            top3 = top3_sets(p)
            changed = float((top3 != prev_top3).any(1).mean())
            prev_top3 = top3
            iteration += 1
            stats = {**update_stats(p, q, cfg.self_train_threshold), "stage4/iteration": iteration,
                     "stage4/self_train_loss": float(np.mean(losses)), "stage4/epoch": done / batches_per_epoch,
                     "stage4/top3_changed": changed}
            sink(stats, step=None)
            losses = []
            pool, queue = _training_pool(p, cfg), []
            if changed <= cfg.stop_tolerance:
                stopped_by = "tolerance"
                break
    model.eval()
    stats.update({"stage4/batches": done, "stage4/stopped_by": stopped_by})
    return stats


def _training_pool(p: np.ndarray, cfg: SelfTrainingConfig) -> list[int]:
    if cfg.confident_only:
        confident = np.flatnonzero(p.max(1) > cfg.self_train_threshold).tolist()
        if confident:
            return confident
    return list(range(len(p)))
