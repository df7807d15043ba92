"""Seeds: the run's at its start, and each stage's own, so that a stage run alone computes what it
computes in a full run."""

from __future__ import annotations

import hashlib
import random

import numpy as np


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def seed_stage(seed: int, stage: int) -> None:
    """Seed every generator from (seed, stage) at a stage's start: without it a stage draws (dropout, ...)
    from whatever state the stages before it left, so `taxoclass stage 4` or a rerun with stage 3 cached
    gave other numbers than a full run."""
    digest = hashlib.sha256(f"taxoclass:{seed}:{stage}".encode()).digest()
    seed_everything(int.from_bytes(digest[:4], "little"))
