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

from dataclasses import dataclass

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


@dataclass
class Progress:
    """Stage 4's counters: what a checkpoint keeps at each target update, and where a resumed attempt goes on."""

    iteration: int = 0  # target updates so far
    done: int = 0  # batches trained
    passes: int = 0  # shuffles of the training pool drawn (the next one's seed)
    prev_top3: np.ndarray | None = None  # each document's decisions at the last update (top-3 set, or best path)
    stopped_by: str = "budget"  # budget (while it runs, and when the budget is spent), tolerance or silver_val


class Predictions:
    """The whole corpus as stage 4 reads the model: every document's prediction `p` and sharpened target `q` (each rank
    predicts its share, all get the whole), and with the guard the silver documents' loss."""

    def __init__(self, model, docs: DocBatches, reading: Reading, env, device, batch_size: int, amp: str,
                 silver: SilverValidation | None):
        self.model, self.docs, self.reading, self.env = model, docs, reading, env
        self.device, self.batch_size, self.amp, self.silver = device, batch_size, amp, silver

    def refresh(self) -> None:
        self.p = predict_all(self.model, self.docs, self.device, self.batch_size, self.amp, self.env, self.reading)
        self.q = self.reading.target(self.p)

    def silver_loss(self) -> float:
        return self.silver.loss(self.model, self.docs, self.device, self.batch_size, self.amp, self.env)


def self_train(model, docs: DocBatches, cfg: SelfTrainingConfig, device, seed: int, log: Log, amp: str = "off",
               eval_batch_size: int = 128, env=None, silver: SilverValidation | None = None, train_gnn: bool = False) -> dict:
    """Self-train `model` in place on every corpus document; returns the final stats.

    With a data-parallel `env`, every rank holds the same targets (predictions are gathered),
    trains on its share of each batch, and a checkpoint is taken at each target update, which a
    restored attempt resumes from. With `silver` and `cfg.val_patience > 0`, the guard described
    above selects the model. `train_gnn`: the GCN branch and bilinear matrix learn too (at the head's rate), as in stage 3.
    """
    from taxoclass.training.env import LocalEnv

    env = env or LocalEnv()
    model.to(device)
    log = log if env.rank == 0 else silent
    opt = torch.optim.AdamW(model.param_groups(cfg.learning_rate, cfg.head_learning_rate, 0.0,
                                               cfg.head_learning_rate if train_gnn else 0.0))
    ddp = env.prepare_model(model)
    train_step = TrainStep(ddp, opt, amp, device)
    guard = silver is not None and len(silver.rows) > 0 and cfg.val_patience > 0
    corpus = Predictions(unwrap(ddp), docs, Reading(model), env, device, eval_batch_size, amp, silver if guard else None)
    keeper = Keeper(patience=cfg.val_patience)
    per_epoch = max(1, -(-len(docs) // (cfg.batch_size * env.world_size)))  # batches of one pass over the corpus
    run, stats, resumed_from = _start_or_resume(env.restore(), corpus, keeper, train_step, cfg, per_epoch, log)
    queue, losses, pool = [], [], _training_pool(corpus.p, cfg)
    while run.done < cfg.max_batches and run.stopped_by == "budget":
        if not queue:
            queue = env.batches(pool, cfg.batch_size, seed, run.passes)
            run.passes += 1
        b = queue.pop(0)
        target = torch.from_numpy(corpus.q[b]).to(device)
        losses.append(train_step(docs, b, lambda logits, target=target: corpus.reading.loss(ddp, logits, target)))
        run.done += 1
        if run.done % cfg.update_interval == 0 or run.done == cfg.max_batches:
            stats = _update_targets(run, corpus, keeper, losses, cfg, per_epoch)
            log(stats, step=None)
            losses, pool, queue = [], _training_pool(corpus.p, cfg), []
            if env.checkpoints:
                env.checkpoint(stats, keeper.checkpoint(train_step, **vars(run)))
    if guard and keeper.restore_best(ddp):
        stats.update({"stage4/best_iteration": keeper.best_at, "stage4/best_val_loss": keeper.best_loss})
    unwrap(ddp).eval()
    stats.update({"stage4/batches": run.done, "stage4/stopped_by": run.stopped_by})
    if resumed_from is not None:
        stats["stage4/resumed_from_iteration"] = resumed_from
    return stats


def _start_or_resume(state: dict | None, corpus: Predictions, keeper: Keeper, train_step: TrainStep,
                     cfg: SelfTrainingConfig, per_epoch: int, log: Log) -> tuple[Progress, dict, int | None]:
    """Where stage 4 starts, with every document predicted and its target made: (counters, their stats, the iteration
    a resumed attempt goes on from). A checkpoint (`state`) gives its counters, keeper and step, and nothing is
    logged again; a fresh start offers stage 3's model to the guard as its first candidate and logs iteration 0."""

    def stats(run: Progress) -> dict:
        return {**update_stats(corpus.p, corpus.q, cfg.self_train_threshold, corpus.reading),
                "stage4/iteration": run.iteration, "stage4/epoch": run.done / per_epoch}

    if state is not None:  # resume at the checkpoint's target update
        run = Progress(**keeper.resume(state, train_step))
        corpus.refresh()
        return run, stats(run), run.iteration
    run = Progress()
    start_loss = corpus.silver_loss() if corpus.silver is not None else None
    if start_loss is not None:
        keeper.offer(start_loss, 0, corpus.model)
    corpus.refresh()
    run.prev_top3 = corpus.reading.decisions(corpus.p)
    start = stats(run)
    if start_loss is not None:
        start["stage4/val_loss"] = start_loss
    log(start, step=None)
    return run, start, None


def _update_targets(run: Progress, corpus: Predictions, keeper: Keeper, losses: list[float], cfg: SelfTrainingConfig,
                    per_epoch: int) -> dict:
    """A target update: every document predicted again and its target sharpened, the share whose decisions moved,
    the mean loss since the last update, the guard's silver loss offered to the keeper, and the stop rule (on `run`).
    Returns the update's stats."""
    corpus.refresh()
    decisions = corpus.reading.decisions(corpus.p)
    changed = float((decisions != run.prev_top3).any(1).mean())
    run.prev_top3 = decisions
    run.iteration += 1
    loss_sum, loss_n = corpus.env.all_reduce_sum([float(np.sum(losses)), len(losses)])
    stats = {**update_stats(corpus.p, corpus.q, cfg.self_train_threshold, corpus.reading), "stage4/iteration": run.iteration,
             "stage4/self_train_loss": loss_sum / max(loss_n, 1), "stage4/epoch": run.done / per_epoch,
             corpus.reading.change_name: changed}
    if corpus.silver is not None:
        val = corpus.silver_loss()
        keeper.offer(val, run.iteration, corpus.model)
        stats.update({"stage4/val_loss": val, "stage4/best_val_loss": keeper.best_loss})
    if changed <= cfg.stop_tolerance:
        run.stopped_by = "tolerance"
    elif corpus.silver is not None and keeper.exhausted:
        run.stopped_by = "silver_val"
    return stats


def _training_pool(p: np.ndarray, cfg: SelfTrainingConfig) -> list[int]:
    if cfg.confident_only:
        confident = np.flatnonzero(p.max(1) > cfg.self_train_threshold).tolist()
        if confident:
            return confident
    return list(range(len(p)))
