"""One trial of the search, inside its Tune process: the pipeline with the trial's parameters, then its objectives.

Features:
- the trial's config is the search's base plus its parameters, its run dir `<search>/runs/<trial id>`, its
  cache the search's (`<search>/cache`): stage 1's document vectors and every stage output the trials share;
- a trial of one worker (`plan.in_process`) runs the pipeline in its own process (`runtime=local`, the
  config its run dir records, so `taxoclass run --config best_trial_config.yaml` is the same run);
  `TrialReports` turns its stage-3 epochs and stage-4 target updates into Tune results (what ASHA
  compares); a wider trial trains on Ray Train (`RayRuntime`), whose reports reach Tune through
  `train_reports`' `TuneReportCallback`, with the same `objective`;
- the last report holds every label-free objective, the one that drives the search as `objective`,
  and the test metrics for the record.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from taxoclass.config import from_dict, with_values
from taxoclass.search.objectives import OBJECTIVES, dev_example_f1, label_free_objectives
from taxoclass.search.results import DOCS_PER_LABEL, OBJECTIVE, STEPPED_ASIDE
from taxoclass.sink import Sink

RECORD_METRICS = ["test/example_f1", "test/p_at_1", "test/p_at_3", "test/mrr", "test/accuracy"]
COLUMNS = RECORD_METRICS + [o.column for o in OBJECTIVES.values()]
# what the trial did, in trials.csv: whether stage 3 trained, the texts it embedded (its class hypotheses only, when
# the search's vectors served it) and its own work's seconds
WORK_SECONDS, TEXTS_EMBEDDED = "trial/seconds", "trial/texts_embedded"
TRIAL_FACTS = [STEPPED_ASIDE, DOCS_PER_LABEL, "stage4/iteration", TEXTS_EMBEDDED, WORK_SECONDS]
SILVER_LOSS = OBJECTIVES["silver_loss"].column


class TrialReports(Sink):
    """An in-process trial's training curve as Tune results: one per stage-3 epoch and per stage-4 target update,
    each with the stage-3 best validation loss as `objective` (the one objective that exists during a trial)."""

    def __init__(self):
        self.best = math.nan

    def __call__(self, metrics: dict, step: int | None = None) -> None:
        from ray import tune

        self.best = metrics.get(SILVER_LOSS, self.best)
        # an epoch's end (not its logging steps, which also carry `stage3/epoch`) and a target update: the counts
        # `max_reports` allows, so ASHA never ends a trial at max_t before its last report
        if "stage3/epoch_val_loss" in metrics or "stage4/self_train_loss" in metrics:
            numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            tune.report({**numeric, OBJECTIVE: self.best})


class SilverLoss(Sink):
    """The stage-3 best validation loss a wider trial's Train runs logged (replayed here once each stage ends)."""

    def __init__(self):
        self.best = math.nan

    def __call__(self, metrics: dict, step: int | None = None) -> None:
        self.best = metrics.get(SILVER_LOSS, self.best)


def train_reports(silver: SilverLoss):
    """A wider trial's Ray Train callbacks, made as each stage's Train run starts: each Train report handed to Tune
    with the stage-3 best validation loss so far as `objective` (what ASHA compares; stage 4's reports carry
    stage 3's), as `TrialReports` does in one process."""
    from ray.tune.integration.ray_train import TuneReportCallback

    class ObjectiveReports(TuneReportCallback):
        def __init__(self, best: float):
            super().__init__()
            self.best = best

        def after_report(self, run_context, metrics, checkpoint):
            self.best = metrics[0].get(SILVER_LOSS, self.best)
            super().after_report(run_context, [{**metrics[0], OBJECTIVE: self.best}, *metrics[1:]], checkpoint)

    return lambda: [ObjectiveReports(silver.best)]


def run_trial(params: dict, base: dict, search_dir: str, dev: str | None, objective: str, in_process: bool) -> None:
    """One Tune trial: the pipeline with this trial's parameters, then its objectives in one last report."""
    from ray import tune

    from taxoclass.pipeline import run_pipeline
    from taxoclass.stages.text_encoder import texts_encoded

    started, encoded = time.time(), texts_encoded()
    cfg = with_values(from_dict(base, "search base config"), {
        **params,
        "output_dir": str(Path(search_dir) / "runs"),  # absolute: a trial's working directory is not the driver's
        "run_name": tune.get_context().get_trial_id(),
        "cache_dir": str(Path(search_dir) / "cache"),  # stage 1's vectors and the stage outputs the trials share
        **({"runtime": "local"} if in_process else {})})
    if in_process:
        from taxoclass.runtime import LocalRuntime

        summary = run_pipeline(cfg, sink=TrialReports(), runtime=LocalRuntime())
    else:
        from taxoclass.distributed.ray_runtime import RayRuntime

        silver = SilverLoss()
        summary = run_pipeline(cfg, sink=silver, runtime=RayRuntime(cfg, train_callbacks=train_reports(silver)))
    run_dir = Path(summary["run_dir"])
    final = {k: summary[k] for k in COLUMNS + TRIAL_FACTS if k in summary}
    final[TEXTS_EMBEDDED] = texts_encoded() - encoded  # the class hypotheses alone, when the search's vectors served it
    final.update(label_free_objectives(cfg, run_dir))  # all of them, whichever drives the search: trials.csv compares them
    final[OBJECTIVE] = dev_example_f1(cfg, run_dir, dev) if dev else final[OBJECTIVES[objective].column]
    final[WORK_SECONDS] = time.time() - started  # the trial's own work: the rest of its wall time is Ray's
    tune.report(final)
