"""The optimisation step stages 3 and 4 share.

Features:
- `TrainStep`: autocast forward (bf16; fp16 with a GradScaler on CUDA, `taxoclass/amp.py`), a loss,
  a scaled backward, the optimiser step and, in stage 3, the scheduler step;
- `TrainStep.state()` / `load()`: model, optimiser, scaler (and scheduler), the part of a
  checkpoint that belongs to the step (the rest: `training/keeper.py`);
- `unwrap`: the model inside a DDP wrapper.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from taxoclass.amp import amp_context, check_amp


def unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)  # DDP keeps the model in .module


class TrainStep:
    """One optimisation step on a batch of document rows, for the (possibly DDP-wrapped) `model`."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, amp: str, device, scheduler=None):
        check_amp(amp, device)
        self.model, self.optimizer, self.scheduler, self.amp, self.device = model, optimizer, scheduler, amp, device
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")

    def __call__(self, docs, rows: list[int], loss_fn: Callable[[torch.Tensor], torch.Tensor]) -> float:
        """Forward the rows of `docs`, `loss_fn(logits)`, backward and step; returns the loss."""
        self.model.train()
        with amp_context(self.amp, self.device):
            logits = self.model(**docs.batch(rows, self.device))
        loss = loss_fn(logits)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        return loss.item()

    def state(self) -> dict:
        out = {"model": unwrap(self.model).state_dict(), "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict()}
        if self.scheduler is not None:
            out["scheduler"] = self.scheduler.state_dict()
        return out

    def load(self, state: dict) -> None:
        unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
