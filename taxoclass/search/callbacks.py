"""The search's Tune callbacks: one wandb run per trial, one line per trial on the terminal, and each trial's record
(record.py: what --resume and the end of the search read)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import ray
from ray.air.integrations.wandb import WandbLoggerCallback, _WandbLoggingActor
from ray.air.util.node import _force_on_current_node
from ray.tune import Callback

from taxoclass.atomic import write_json
from taxoclass.search.record import TRIALS_DIR, error_line

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
            # never restarted (Ray's own asks for endless restarts, and Ray's core then warns on every search that a
            # restart would miss the constructor's arguments, kept in the object store): a logging actor that dies
            # loses its trial's wandb run either way
            self._remote_logger_class = ray.remote(num_cpus=0, **_force_on_current_node())(self._logger_actor_cls)
        super()._start_logging_actor(trial, exclude_results, api_key=os.environ.get(API_KEY), **wandb_init_kwargs)

    def __del__(self):
        # Ray's own __del__ also runs at interpreter teardown, when the globals it reads are gone, and
        # prints an AttributeError traceback; the logging actors are finished by then (on_experiment_end)
        # or gone with Ray (an interrupted search)
        try:
            super().__del__()
        except Exception:  # noqa: BLE001 - nothing can be done at teardown
            pass


class TrialRecord(Callback):
    """Writes each trial's record (record.py), in the driver: at its start, and at its end with its last report or
    its error's line."""

    def __init__(self, search_dir: str):
        self.dir = Path(search_dir) / TRIALS_DIR

    def _write(self, trial, **fields) -> None:
        path = self.dir / f"{trial.trial_id}.json"
        started = json.loads(path.read_text())["started"] if path.is_file() else time.time()
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json(path, {"trial": trial.trial_id, "started": started, "config": dict(trial.config), **fields},
                   "a trial record")

    def _last(self, trial) -> dict:
        return {k: v for k, v in (trial.last_result or {}).items() if k != "config"}

    def on_trial_start(self, iteration, trials, trial, **info):
        self._write(trial, state="running")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._write(trial, state="done", metrics=self._last(trial))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._write(trial, state="error", metrics=self._last(trial), error=error_line(trial.error_file))


class TrialLines(Callback):
    """What a user needs from a running search, instead of Tune's status tables: a line per trial."""

    def __init__(self, total: int, shown: list[str], params: list[str], done: int = 0):
        self.total, self.shown, self.done = total, shown, done
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
        # its error's one line (the project's errors come back whole from the trial's process), and where the rest is
        print(f"trial {trial.trial_id} failed ({self.done}/{self.total}): {error_line(trial.error_file)} "
              f"(see {trial.path}/error.txt)", file=sys.stderr, flush=True)


def short_names(keys: list[str]) -> dict[str, str]:
    """Each key by its last part, or the whole key where two share it (`classifier.head_learning_rate` and
    `self_training.head_learning_rate`)."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: name if last.count(name) == 1 else k for k, name in zip(keys, last)}


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
