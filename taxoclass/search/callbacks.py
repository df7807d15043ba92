"""The search's Tune callbacks: one wandb run per trial, and one line per trial on the terminal."""

from __future__ import annotations

import sys

from ray.air.integrations.wandb import WandbLoggerCallback
from ray.tune import Callback


class TrialWandbCallback(WandbLoggerCallback):
    def __del__(self):
        # Ray's own __del__ also runs at interpreter teardown, when the globals it reads are gone, and
        # prints an AttributeError traceback; the logging actors are finished by then (on_experiment_end)
        # or gone with Ray (an interrupted search)
        try:
            super().__del__()
        except Exception:  # noqa: BLE001 - nothing can be done at teardown
            pass


class TrialLines(Callback):
    """What a user needs from a running search, instead of Tune's status tables: a line per trial."""

    def __init__(self, total: int, shown: list[str], params: list[str]):
        self.total, self.shown, self.params, self.done = total, shown, params, 0

    def on_trial_start(self, iteration, trials, trial, **info):
        # the space's keys (the trial's config also carries the stage-1 settings every trial shares)
        params = ", ".join(f"{k.rsplit('.', 1)[-1]}={_fmt(v)}" for k, v in trial.config.items() if k in self.params)
        print(f"trial {trial.trial_id} started: {params}", flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.done += 1
        result = trial.last_result or {}
        how = "finished" if "test/example_f1" in result else f"stopped by ASHA after {result.get('training_iteration', 0)} reports"
        values = ", ".join(f"{k}={_fmt(result[k])}" for k in self.shown if k in result)
        print(f"trial {trial.trial_id} {how} ({self.done}/{self.total}): {values}", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.done += 1
        print(f"trial {trial.trial_id} failed ({self.done}/{self.total}): see {trial.path}/error.txt", file=sys.stderr, flush=True)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
