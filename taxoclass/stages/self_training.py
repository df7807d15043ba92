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
- silver-validation guard (`val_patience`, on by default, our addition): the documents
  stage 3 held out, with their pseudo-labels, are scored with stage 3's loss before
  self-training and after each target update; after `val_patience` updates without a
  lower loss it stops (`stopped_by=silver_val`), and the model with the lowest loss is
  kept (it may be stage 3's): the keeper stage 3 uses too (`training/keeper.py`), which also
  holds the checkpoint taken at each target update. Label-free: no gold label is read. Without it, self-training
  lowered Example-F1 on every set we measured (docs/quality.md);
- a model trained with the path loss (`output_mode=PATH`) self-trains on its distribution over
  root-to-leaf paths: the same sharpening, normalised per path over the corpus, q_ip = (p_ip^2 /
  f_p) / sum_p' (p_ip'^2 / f_p'), f_p = sum_i p_ip (DEC's target, the paper's per-class rule for
  one label per document); the loss the cross-entropy of q, the change the share of documents
  whose best path moved (`stage4/path_changed`), confidence the best path's probability;
- per update: confident predictions, their ratio, mean max prediction, mean target
  entropy, the iteration, the mean loss, the epoch, the top-3 (or best-path) change.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from taxoclass.config import SelfTrainingConfig
from taxoclass.stages.classifier import Log, silent
from taxoclass.stages.model import PATH, predict_scores
from taxoclass.training.doc_batches import DocBatches
from taxoclass.training.keeper import Keeper
from taxoclass.training.losses import path_cross_entropy
from taxoclass.training.silver import SilverValidation
from taxoclass.training.step import TrainStep, unwrap

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


def path_target_distribution(p: np.ndarray) -> np.ndarray:
    """Sharpened targets over root-to-leaf paths, each path's weight normalised over the corpus (DEC)."""
    p = np.clip(p.astype(np.float64), EPS, 1.0)
    weight = p**2 / p.sum(0, keepdims=True)
    return (weight / weight.sum(1, keepdims=True)).astype(np.float32)


class Reading:
    """How stage 4 reads the model: per class (sigmoid, the paper) or as a distribution over paths."""

    def __init__(self, model):
        self.paths = int(model.output_mode) == PATH

    def predict(self, model, docs: DocBatches, device, batch_size: int, amp: str) -> np.ndarray:
        classes, paths = predict_scores(model, docs, device, batch_size, amp)
        return paths if self.paths else classes

    def target(self, p: np.ndarray) -> np.ndarray:
        return path_target_distribution(p) if self.paths else target_distribution(p)

    def loss(self, model, logits: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return path_cross_entropy(unwrap(model).path_logits(logits), q) if self.paths else soft_bce(logits, q)

    def decisions(self, p: np.ndarray) -> np.ndarray:
        """What a document's change is measured on: its best path, or its top-3 set."""
        return p.argmax(1)[:, None] if self.paths else top3_sets(p)

    @property
    def change_name(self) -> str:
        return "stage4/path_changed" if self.paths else "stage4/top3_changed"

    def entropy(self, q: np.ndarray) -> np.ndarray:
        if self.paths:
            q = np.clip(q.astype(np.float64), EPS, 1.0)
            return -(q * np.log(q)).sum(1)
        return binary_entropy(q)


def update_stats(p: np.ndarray, q: np.ndarray, threshold: float, reading: Reading | None = None) -> dict:
    max_p = p.max(1)
    confident = int((max_p > threshold).sum())
    entropy = reading.entropy(q) if reading is not None else binary_entropy(q)
    return {
        "stage4/confident_predictions": confident,
        "stage4/confidence_ratio": confident / len(p),
        "stage4/avg_max_prediction": float(max_p.mean()),
        "stage4/avg_target_entropy": float(entropy.mean()),
    }


def predict_all(model, docs: DocBatches, device, batch_size: int, amp: str, env, reading: Reading | None = None) -> np.ndarray:
    """Predictions for every document (per class, or per path); each rank computes its share and all ranks get the whole."""
    reading = reading or Reading(model)
    owned = env.owned(len(docs))
    if owned:
        part = reading.predict(model, docs.subset(owned), device, batch_size, amp)
    else:
        part = np.zeros((0, model.path_member.shape[0] if reading.paths else model.num_classes), np.float32)
    return env.gather_rows(part, owned, len(docs))


def self_train(model, docs: DocBatches, cfg: SelfTrainingConfig, device, seed: int, log: Log, amp: str = "off",
               eval_batch_size: int = 128, env=None, silver: SilverValidation | None = None, train_gnn: bool = False) -> dict:
    """Self-train `model` in place on every corpus document; returns the final stats.

    With a data-parallel `env`, every rank holds the same targets (predictions are gathered),
    trains on its share of each batch, and a checkpoint is taken at each target update.
    With `silver` and `cfg.val_patience > 0`, the guard described above selects the model.
    `train_gnn`: the GCN branch and bilinear matrix learn too (at the head's rate), as in stage 3.
    """
    from taxoclass.training.env import LocalEnv

    env = env or LocalEnv()
    model.to(device)
    log = log if env.rank == 0 else silent
    reading = Reading(model)
    opt = torch.optim.AdamW(model.param_groups(cfg.learning_rate, cfg.head_learning_rate, 0.0,
                                               cfg.head_learning_rate if train_gnn else 0.0))
    ddp = env.prepare_model(model)
    train_step = TrainStep(ddp, opt, amp, device)
    iteration, done, passes = 0, 0, 0
    guard = silver is not None and len(silver.rows) > 0 and cfg.val_patience > 0
    keeper = Keeper(patience=cfg.val_patience)
    state = env.restore()
    if state is not None:  # resume at the last target update
        progress = keeper.resume(state, train_step)
        iteration, done, passes, prev_top3 = (progress[k] for k in ("iteration", "done", "passes", "prev_top3"))
        resumed_at = iteration
    elif guard:  # the starting point (stage 3's model) is the first candidate
        start_loss = silver.loss(unwrap(ddp), docs, device, eval_batch_size, amp, env)
        keeper.offer(start_loss, 0, ddp)
    p = predict_all(unwrap(ddp), docs, device, eval_batch_size, amp, env, reading)
    q = reading.target(p)
    if state is None:
        prev_top3 = reading.decisions(p)
    batches_per_epoch = max(1, -(-len(docs) // (cfg.batch_size * env.world_size)))
    losses = []
    pool = _training_pool(p, cfg)
    stats = {**update_stats(p, q, cfg.self_train_threshold, reading), "stage4/iteration": iteration,
             "stage4/epoch": done / batches_per_epoch}
    if guard and state is None:
        stats["stage4/val_loss"] = start_loss
    if state is None:
        log(stats, step=None)
    stopped_by = state["progress"]["stopped_by"] if state else "budget"
    queue: list[list[int]] = []
    while done < cfg.max_batches and stopped_by == "budget":
        if not queue:
            queue = env.batches(pool, cfg.batch_size, seed, passes)
            passes += 1
        b = queue.pop(0)
        target = torch.from_numpy(q[b]).to(device)
        losses.append(train_step(docs, b, lambda logits, target=target: reading.loss(ddp, logits, target)))
        done += 1
        if done % cfg.update_interval == 0 or done == cfg.max_batches:
            p = predict_all(unwrap(ddp), docs, device, eval_batch_size, amp, env, reading)
            q = reading.target(p)
            top3 = reading.decisions(p)
            changed = float((top3 != prev_top3).any(1).mean())
            prev_top3 = top3
            iteration += 1
            loss_sum, loss_n = env.all_reduce_sum([float(np.sum(losses)), len(losses)])
            stats = {**update_stats(p, q, cfg.self_train_threshold, reading), "stage4/iteration": iteration,
                     "stage4/self_train_loss": loss_sum / max(loss_n, 1), "stage4/epoch": done / batches_per_epoch,
                     reading.change_name: changed}
            losses = []
            pool, queue = _training_pool(p, cfg), []
            if guard:
                val = silver.loss(unwrap(ddp), docs, device, eval_batch_size, amp, env)
                keeper.offer(val, iteration, ddp)
                stats.update({"stage4/val_loss": val, "stage4/best_val_loss": keeper.best_loss})
            log(stats, step=None)
            if changed <= cfg.stop_tolerance:
                stopped_by = "tolerance"
            elif guard and keeper.exhausted:
                stopped_by = "silver_val"
            if env.checkpoints:
                env.checkpoint(stats, keeper.checkpoint(train_step, iteration=iteration, done=done, passes=passes,
                                                        prev_top3=prev_top3, stopped_by=stopped_by))
    if guard and keeper.restore_best(ddp):
        stats.update({"stage4/best_iteration": keeper.best_at, "stage4/best_val_loss": keeper.best_loss})
    unwrap(ddp).eval()
    stats.update({"stage4/batches": done, "stage4/stopped_by": stopped_by})
    if state is not None:
        stats["stage4/resumed_from_iteration"] = resumed_at
    return stats


def _training_pool(p: np.ndarray, cfg: SelfTrainingConfig) -> list[int]:
    if cfg.confident_only:
        confident = np.flatnonzero(p.max(1) > cfg.self_train_threshold).tolist()
        if confident:
            return confident
    return list(range(len(p)))
