"""Stage 3: the core-class-guided classifier's training loop (METHOD.md, stage 3).

Features:
- two losses (labels: `stages/labels.py`; model: `stages/model.py`): `classifier.loss=path` (ours,
  the default), the cross-entropy of the document's pseudo-label path among every root-to-leaf path,
  a path's logit the mean of its classes' (the model then reads its logits as a distribution over
  paths, `output_mode=PATH`); `bce` (the paper), BCE summed per document over positive and negative
  classes, ignored classes masked;
- the class features and bias learn at `head_learning_rate`, the GCN branch and the bilinear matrix
  at `gnn_learning_rate` (0 by default: frozen at their zero-shot start);
- AdamW with separate learning rates for the encoder and the rest, warm-up then linear
  decay, a validation split of the pseudo-labelled documents (`SilverValidation`, which
  stage 4's guard scores too);
- shared with stage 4: the step (`training/step.py`: AMP, bf16 autocast or fp16 with a
  GradScaler on CUDA) and the keeper (`training/keeper.py`: best-epoch weights, early stopping,
  checkpoint and resume after the last finished epoch);
- a log line at the first step, every `log_interval` steps and at each epoch's end, so that
  even a one-epoch run draws a curve.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from transformers import get_linear_schedule_with_warmup

from taxoclass.config import ClassifierConfig
from taxoclass.stages.model import PATH, SIGMOID, TaxoClassifier
from taxoclass.training.doc_batches import DocBatches
from taxoclass.training.keeper import Keeper
from taxoclass.training.losses import label_loss
from taxoclass.training.silver import SilverValidation, split_train_val
from taxoclass.training.step import TrainStep, unwrap

Log = Callable[..., None]  # the run's metrics channel: log(metrics, step=N)


def silent(*args, **kwargs) -> None:
    """A rank other than 0 logs nothing."""


def train_classifier(model: TaxoClassifier, docs: DocBatches, targets: np.ndarray, mask: np.ndarray | None,
                     cfg: ClassifierConfig, device, seed: int, log: Log, log_interval: int = 10, env=None) -> dict:
    """Train on the pseudo-labelled documents; returns stats. The model ends with its best-epoch weights.

    `env` (default: one process) decides the batches of this rank, reduces the losses across
    ranks and checkpoints each epoch; a restored checkpoint resumes after its epoch.
    """
    from tqdm.auto import tqdm

    from taxoclass.training.env import LocalEnv

    env = env or LocalEnv()
    model.to(device)
    model.output_mode.fill_(PATH if cfg.loss == "path" else SIGMOID)  # how the trained model reads its logits
    targets_t = torch.from_numpy(targets)
    mask_t = None if mask is None else torch.from_numpy(mask)
    train_idx, val_idx = split_train_val(len(docs), cfg.val_fraction, seed)
    stats = {"stage3/train_samples": len(train_idx), "stage3/val_samples": len(val_idx)}
    log = log if env.rank == 0 else silent
    log(stats)
    steps_per_epoch = math.ceil(len(train_idx) / (cfg.batch_size * env.world_size))
    total = steps_per_epoch * cfg.epochs
    opt = torch.optim.AdamW(model.param_groups(cfg.learning_rate, cfg.head_learning_rate, cfg.weight_decay, cfg.gnn_learning_rate))
    sched = get_linear_schedule_with_warmup(opt, int(total * cfg.warmup_ratio), total)
    ddp = env.prepare_model(model)
    train_step = TrainStep(ddp, opt, cfg.amp, device, sched)
    loss_fn = label_loss(model, cfg.loss)
    keeper = Keeper(patience=cfg.early_stopping_patience)
    step, start_epoch = 0, 0
    state = env.restore()
    if state is not None:  # resume after the last finished epoch
        progress = keeper.resume(state, train_step)
        step, start_epoch = progress["step"], progress["epoch"] + 1
        stats["stage3/resumed_from_epoch"] = start_epoch
    held_out = SilverValidation(val_idx, targets[val_idx], None if mask is None else mask[val_idx], cfg.loss)
    for epoch in range(start_epoch, cfg.epochs):
        if state is not None and keeper.exhausted:
            break
        running, count = 0.0, 0
        batches = env.batches(train_idx, cfg.batch_size, seed, epoch)
        for b in tqdm(batches, desc=f"stage 3: epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False, disable=env.rank != 0):
            loss = train_step(docs, b, lambda logits, b=b: loss_fn(logits, targets_t[b].to(device),
                                                                  None if mask_t is None else mask_t[b].to(device)))
            step += 1
            running += loss * len(b)
            count += len(b)
            # the first step, every log_interval steps and each epoch's last: a curve even for one short epoch
            if step == 1 or step % log_interval == 0 or step % steps_per_epoch == 0:
                log({"stage3/train_loss": loss, "stage3/learning_rate": opt.param_groups[0]["lr"],
                     "stage3/epoch": step / steps_per_epoch}, step=step)
        train_sum, train_n = env.all_reduce_sum([running, count])
        train_loss = train_sum / max(train_n, 1)
        if val_idx:
            val_loss = held_out.loss(unwrap(ddp), docs, device, cfg.batch_size, cfg.amp, env)
        else:  # too few pseudo-labelled documents for a split: select on the training loss
            val_loss = train_loss
        keeper.offer(val_loss, epoch, ddp)
        epoch_metrics = {"stage3/epoch_train_loss": train_loss, "stage3/epoch_val_loss": val_loss,
                         "stage3/best_val_loss": keeper.best_loss, "stage3/best_epoch": keeper.best_at, "stage3/epoch": epoch + 1}
        log(epoch_metrics, step=step)
        if env.checkpoints:
            env.checkpoint(epoch_metrics, keeper.checkpoint(train_step, step=step, epoch=epoch))
        if keeper.exhausted:
            break
    keeper.restore_best(ddp)
    stats.update({"stage3/best_val_loss": keeper.best_loss, "stage3/best_epoch": keeper.best_at, "stage3/steps": step})
    return stats
