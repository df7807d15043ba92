"""What a training loop keeps between evaluations: the best weights, the patience left, and the
state a checkpoint resumes from. Stage 3 (`stages/classifier.py`, per epoch) and stage 4
(`stages/self_training.py`, per target update) share it.

Features:
- `Keeper.offer(loss, at, model)`: a loss lower than every one before keeps a CPU copy of the
  weights and where they came from (an epoch, a target update) and resets the patience; any other
  counts one evaluation without a gain; `exhausted` once those reach the patience;
- `restore_best(model)`: the kept weights back into the model (a DDP wrapper is looked through);
- `checkpoint(train_step, **progress)` / `resume(state, train_step)`: one checkpoint shape for both stages,
  `{"step": TrainStep.state(), "keeper": {...}, "progress": {the loop's own counters}}`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

from torch import nn

from taxoclass.training.step import TrainStep, unwrap


def snapshot(model: nn.Module) -> dict:
    """A CPU copy of the (unwrapped) model's weights."""
    return copy.deepcopy({k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()})


@dataclass
class Keeper:
    patience: int  # evaluations without a lower loss before `exhausted`
    best_loss: float = math.inf
    best_at: int = -1  # the epoch or target update the kept weights come from
    best_state: dict | None = None
    stale: int = 0  # evaluations since the last lower loss

    def offer(self, loss: float, at: int, model: nn.Module) -> bool:
        """True when `loss` is the lowest so far (the model's weights are then kept)."""
        if loss < self.best_loss:
            self.best_loss, self.best_at, self.best_state, self.stale = loss, at, snapshot(model), 0
            return True
        self.stale += 1
        return False

    @property
    def exhausted(self) -> bool:
        return self.stale >= self.patience

    def restore_best(self, model: nn.Module) -> bool:
        """Load the kept weights into `model`; False when nothing was kept."""
        if self.best_state is None:
            return False
        unwrap(model).load_state_dict(self.best_state)
        return True

    def checkpoint(self, train_step: TrainStep, /, **progress) -> dict:
        """A resumable state: the step's (model, optimiser, ...), this keeper's, and the loop's counters."""
        kept = {"best_loss": self.best_loss, "best_at": self.best_at, "best_state": self.best_state, "stale": self.stale}
        return {"step": train_step.state(), "keeper": kept, "progress": progress}

    def resume(self, state: dict, train_step: TrainStep) -> dict:
        """Load a `checkpoint()` into `train_step` and this keeper; returns the loop's counters."""
        train_step.load(state["step"])
        kept = state["keeper"]
        self.best_loss, self.best_at, self.best_state, self.stale = (kept[k] for k in ("best_loss", "best_at", "best_state", "stale"))
        return state["progress"]
