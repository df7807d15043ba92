"""Silver validation: held-out pseudo-labelled documents that pick stage 3's best epoch and guard stage 4.

Features:
- `split_train_val`: a seeded split of the pseudo-labelled documents (none under 10 documents);
- `eval_loss`: a model's stage-3 loss over documents, in batches, without gradients;
- `held_out`: the split stage 3 makes, as stage 4's guard reads it again;
- `SilverValidation`: the held-out rows, their targets and mask, scored on every rank, the sum all-reduced.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from taxoclass.amp import amp_context
from taxoclass.training.doc_batches import DocBatches
from taxoclass.training.losses import label_loss


@torch.no_grad()
def eval_loss(model, docs: DocBatches, targets, mask, device, batch_size: int, amp: str, loss: str = "bce") -> float:
    model.eval()
    loss_fn = label_loss(model, loss)
    total, n = 0.0, 0
    for start in range(0, len(docs), batch_size):
        idx = list(range(start, min(start + batch_size, len(docs))))
        with amp_context(amp, device):
            logits = model(**docs.batch(idx, device))
        total += loss_fn(logits, targets[idx].to(device), None if mask is None else mask[idx].to(device)).item() * len(idx)
        n += len(idx)
    return total / max(n, 1)


def split_train_val(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_val = int(round(n * val_fraction)) if n >= 10 else 0
    return sorted(order[n_val:]), sorted(order[:n_val])


@dataclass
class SilverValidation:
    """Held-out pseudo-labelled documents: rows of a DocBatches, their targets and mask (None for the path loss).

    Stage 3 selects its best epoch on them; stage 4's guard scores the same documents.
    """

    rows: list[int]
    targets: np.ndarray
    mask: np.ndarray | None
    kind: str = "bce"  # the stage-3 loss they are scored with

    def loss(self, model, docs: DocBatches, device, batch_size: int, amp: str, env) -> float:
        """Stage 3's loss on these documents; each rank scores its share, the sum is all-reduced."""
        mine = env.owned(len(self.rows))
        part = 0.0
        if mine:
            mask = None if self.mask is None else torch.from_numpy(self.mask[mine])
            part = eval_loss(model, docs.subset([self.rows[j] for j in mine]), torch.from_numpy(self.targets[mine]),
                             mask, device, batch_size, amp, self.kind) * len(mine)
        total, n = env.all_reduce_sum([part, len(mine)])
        return total / max(n, 1)


def held_out(rows: list[int], targets: np.ndarray, mask: np.ndarray | None, c, seed: int) -> SilverValidation:
    """The pseudo-labelled documents stage 3 holds out for validation (`c`: the classifier config): the split
    `train_classifier` makes, which stage 4's guard scores again."""
    _, val = split_train_val(len(rows), c.val_fraction, seed)
    return SilverValidation([rows[j] for j in val], targets[val], None if mask is None else mask[val], c.loss)
