"""Stage 3's learning-rate schedule: transformers' `get_linear_schedule_with_warmup` (warm-up from 0, then
linear decay to 0), read back step by step from the rates the real training loop logs."""

import numpy as np
import pytest
import torch

from taxoclass.config import ClassifierConfig
from taxoclass.data.taxonomy import Taxonomy
from taxoclass.stages.classifier import train_classifier
from taxoclass.stages.model import TaxoClassifier
from taxoclass.training.doc_batches import DocBatches

LR = 0.01


def before_issue_20(total: int, warmup_ratio: float):
    """The hand-written schedule stage 3 used before (`warmup_linear`), as the reference for the runs it ran."""
    warmup = int(total * warmup_ratio)
    return lambda step: (step + 1) / warmup if warmup and step < warmup else max(0.0, (total - step) / max(1, total - warmup))


def logged_rates(tmp_path, warmup_ratio: float) -> list[float]:
    """Stage 3 on 22 documents (2 held out, 20 in batches of 2: 10 steps an epoch, 2 epochs): the learning
    rate logged after each of the 20 steps, the rate the next step uses."""
    from conftest import write_dataset

    tax = Taxonomy.load(write_dataset(tmp_path / f"t{warmup_ratio}"))
    torch.manual_seed(0)
    model = TaxoClassifier(None, torch.randn(len(tax), 8), tax, gnn_num_layers=1, gnn_hidden_dim=8)
    docs = DocBatches(embeddings=torch.randn(22, 8))
    targets = (np.arange(22 * len(tax)).reshape(22, len(tax)) % 3 == 0).astype(np.float32)
    # per-class targets, so the per-class loss (the schedule does not depend on the loss)
    cfg = ClassifierConfig(batch_size=2, epochs=2, learning_rate=LR, head_learning_rate=LR, warmup_ratio=warmup_ratio,
                           val_fraction=0.1, early_stopping_patience=5, loss="bce")
    logged = []
    stats = train_classifier(model, docs, targets, np.ones_like(targets), cfg, "cpu", 0,
                             lambda m, step=None: logged.append((step, m)), log_interval=1)
    assert stats["stage3/steps"] == 20
    rates = {step: m["stage3/learning_rate"] for step, m in logged if "stage3/learning_rate" in m}
    assert sorted(rates) == list(range(1, 21))
    return [rates[k] for k in range(1, 21)]


def test_warm_up_starts_at_zero_and_decays_linearly(tmp_path):
    # warm-up of int(20 * 0.1) = 2 steps: the rates of steps 0, 1 are 0 and LR/2, the peak at step 2, then
    # (20 - k) / 18 of it down to 0. The hand-written schedule ran steps 0 and 1 at LR/2 and LR, so this
    # fails with it at the warm-up edge (step 1: LR, not LR/2)
    want = [LR * 0.5] + [LR * (20 - k) / 18 for k in range(2, 21)]
    assert logged_rates(tmp_path, 0.1) == pytest.approx(want, abs=1e-12)


def test_without_warm_up_the_rates_are_those_of_the_runs_before(tmp_path):
    # fewer than 10 steps have no warm-up step at 0.1: there the library's schedule is the old one, rate for
    # rate (20 Newsgroups' stage 3 has about 80 steps, a warm-up of 8: its figures were re-measured)
    old = before_issue_20(20, 0.04)
    assert logged_rates(tmp_path, 0.04) == pytest.approx([LR * old(k) for k in range(1, 21)], abs=1e-12)


@pytest.mark.parametrize("total", range(1, 10))
def test_the_library_schedule_equals_the_old_one_below_ten_steps(total):
    from transformers import get_linear_schedule_with_warmup

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = get_linear_schedule_with_warmup(opt, int(total * 0.1), total)
    old = before_issue_20(total, 0.1)
    for step in range(total):
        assert opt.param_groups[0]["lr"] == pytest.approx(old(step), abs=1e-12)
        opt.step()
        sched.step()
