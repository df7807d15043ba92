"""The search's Tune callbacks: one wandb run per trial, and one line per trial on the terminal."""

from __future__ import annotations

import os
import sys

import ray
from ray.air.integrations.wandb import WandbLoggerCallback, _WandbLoggingActor
from ray.air.util.node import _force_on_current_node
from ray.tune import Callback

API_KEY = "WANDB_API_KEY"


class _KeyedLoggingActor(_WandbLoggingActor):
    """Ray's wandb logging actor, given the API key as an argument (kept in memory) and setting it in its own process."""

    def __init__(self, *args, api_key: str | None = None, **kwargs):
        if api_key:
            os.environ[API_KEY] = api_key
        super().__init__(*args, **kwargs)


class TrialWandbCallback(WandbLoggerCallback):
    """Ray's callback, but the API key never enters a runtime_env: Ray's own puts it in the logging actor's, and Ray
    writes each runtime_env it sets up into its session folder (`logs/runtime_env_agent.log`, mode 0644, kept after
    the run). The key travels as an argument of the actor instead, which Ray does not log."""

    _logger_actor_cls = _KeyedLoggingActor

    def _start_logging_actor(self, trial, exclude_results, **wandb_init_kwargs):
        if not self._remote_logger_class:  # Ray's options for the actor, without its runtime_env
            self._remote_logger_class = ray.remote(num_cpus=0, **_force_on_current_node(), max_restarts=-1,
                                                   max_task_retries=-1)(self._logger_actor_cls)
        super()._start_logging_actor(trial, exclude_results, api_key=os.environ.get(API_KEY), **wandb_init_kwargs)

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
        self.total, self.shown, self.done = total, shown, 0
        self.names = short_names(params)

    def on_trial_start(self, iteration, trials, trial, **info):
        # the space's keys (the trial's config also carries the stage-1 settings every trial shares)
        params = ", ".join(f"{self.names[k]}={_fmt(v)}" for k, v in trial.config.items() if k in self.names)
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


def short_names(keys: list[str]) -> dict[str, str]:
    """Each key by its last part, or the whole key where two share it (`classifier.head_learning_rate` and
    `self_training.head_learning_rate`)."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: name if last.count(name) == 1 else k for k, name in zip(keys, last)}


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
