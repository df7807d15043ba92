"""Stage 3's losses, which stage 4 and the silver validation score with too.

Features:
- `path` (ours, the default): the cross-entropy of a document's target distribution over every
  root-to-leaf path, a path's logit the mean of its classes';
- `bce` (the paper): BCE summed per document over its unmasked classes;
- `label_loss(model, kind)`: a batch's loss as `fn(logits, targets, mask)` for either.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from taxoclass.training.step import unwrap


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """BCE summed over each document's unmasked classes, averaged over documents."""
    loss = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none")
    return (loss * mask).sum(1).mean()


def path_cross_entropy(path_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each document's target distribution over root-to-leaf paths, averaged over documents."""
    return -(targets * torch.log_softmax(path_logits.float(), dim=-1)).sum(1).mean()


def label_loss(model, loss: str) -> Callable:
    """The stage-3 loss of a batch, `fn(logits, targets, mask)`: `path` or masked `bce` (mask unused by `path`)."""
    if loss == "path":
        return lambda logits, targets, mask: path_cross_entropy(unwrap(model).path_logits(logits), targets)
    return lambda logits, targets, mask: masked_bce(logits, targets, mask)
