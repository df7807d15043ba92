"""Where a training loop runs: one process (`LocalEnv`) or one rank of a data-parallel group.

Stages 3 and 4 are written once against this interface; `distributed/ray_train.py`
implements it with Ray Train (DDP, checkpoints, resume) and this module stays free of Ray.
"""

from __future__ import annotations

import numpy as np
import torch


class LocalEnv:
    """Single process: no wrapping, no reduction, no checkpoints between epochs."""

    rank = 0
    world_size = 1
    checkpoints = False  # nothing to resume from in one process: stage outputs are cached whole

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def batches(self, indices: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
        """A seeded shuffle of `indices` cut into batches (this rank's share)."""
        g = torch.Generator()
        g.manual_seed(seed * 1000 + epoch)
        order = [indices[i] for i in torch.randperm(len(indices), generator=g).tolist()]
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        return list(values)

    def gather_rows(self, part: np.ndarray, owned: list[int], total: int) -> np.ndarray:
        """Rows computed for `owned` indices -> the full (total x ...) array on every rank."""
        out = np.zeros((total,) + part.shape[1:], dtype=part.dtype)
        out[owned] = part
        return out

    def owned(self, n: int) -> list[int]:
        """The rows this rank computes when work is split (all of them here)."""
        return list(range(n))

    def checkpoint(self, metrics: dict, state: dict) -> None:
        """At each epoch / target update (only where `checkpoints` is true): report and save `state`."""

    def restore(self) -> dict | None:
        return None
