"""Stages 3 and 4 on Ray Train V2: the engine's training loops, data-parallel.

Features:
- `TorchTrainer(ScalingConfig(num_workers, use_gpu, resources_per_worker))` runs `train_loop_per_worker`, which
  runs the pipeline's job with the engine's `run_training` (`jobs/training.py`, as the local runtime does) and a
  `RayTrainEnv`: `prepare_model` (DDP; gloo on CPU), `prepare_data_loader` (a
  DistributedSampler over document indices), losses all-reduced, predictions all-gathered;
- AMP through the engine (`torch.autocast` bf16, fp16 with `torch.amp.GradScaler`, whose
  state is in the checkpoint);
- a checkpoint at each epoch (stage 3) and each target update (stage 4), every rank
  reporting equally often, only the latest kept, all deleted once the stage's output is
  cached; `FailureConfig(max_failures)`, which also bounds a worker group that cannot start; a run killed with kill -9 and
  started again with the same run dir resumes from its latest checkpoint (Ray Train V2
  restores the checkpoint manager from `storage_path/name`);
- on a local instance the torch process group's rendezvous store listens on 127.0.0.1 only
  (`torch_config`, `loopback_store.py`), as every other port of the instance;
- logging from rank 0 only: its log lines travel in the checkpoints and the driver replays
  them into the pipeline's log (metrics.jsonl, wandb): one run, not one per worker; inside a Tune trial
  each report goes to Tune (`TuneReportCallback`, or the caller's own: the search adds its objective);
- a checkpoint's `state.pt` loads without running code (`write_state` / `read_state`): the
  model, optimiser, scaler and scheduler states and NumPy arrays as tensors (`weights_only=True`),
  counters, stats and log lines as JSON text; a worker that finds a checkpoint it cannot read
  safely (tampered, or from an older version) says so and trains the stage from its start.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from taxoclass import tensorfile
from taxoclass.config import Config
from taxoclass.errors import DataError

STATE_FILE = "state.pt"
ARRAY = "__ndarray__"  # marks a NumPy array stored as a tensor
REDO_STATE = "delete the stage's folder under the run's ray/ storage (or rerun with force_stage=N): the stage then trains from its start"


def write_state(state: dict, path: Path) -> None:
    """A training checkpoint of any nesting (the keeper's `{"step", "keeper", "progress"}`, logs) as what
    `torch.load(weights_only=True)` builds: tensors, dicts, lists, strings and numbers; a NumPy array
    becomes a marked tensor, a NumPy scalar a Python number."""
    tensorfile.save({"state": _storable(state)}, path)


def read_state(path: Path) -> dict:
    """`write_state`'s dict back, NumPy arrays as NumPy arrays; a file it cannot read safely is a DataError."""
    stored = tensorfile.load(path, REDO_STATE)
    if not isinstance(stored, dict) or not isinstance(stored.get("state"), dict):
        raise DataError(path, f"not a taxoclass training checkpoint; {REDO_STATE}")
    return _restored(stored["state"])


def _storable(value):
    if isinstance(value, np.ndarray):
        return {ARRAY: torch.from_numpy(np.ascontiguousarray(value))}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _storable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_storable(v) for v in value]
    return value


def _restored(value):
    if isinstance(value, dict):
        if set(value) == {ARRAY}:
            return value[ARRAY].numpy()
        return {k: _restored(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_restored(v) for v in value]
    return value


class RayTrainEnv:
    """The TrainEnv of one Ray Train worker (see training/env.py)."""

    checkpoints = True

    def __init__(self):
        import ray.train

        ctx = ray.train.get_context()
        self.rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()
        self.logs: list = []
        self._restored = None
        self._looked = False

    def log(self, metrics: dict, step: int | None = None) -> None:
        self.logs.append([metrics, step])

    def prepare_model(self, model):
        import ray.train.torch

        # find_unused_parameters: a Hugging Face encoder's pooler takes no part in the loss
        return ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": True})

    def batches(self, indices: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
        import ray.train.torch

        g = torch.Generator()
        g.manual_seed(seed * 1000 + epoch)
        loader = torch.utils.data.DataLoader(indices, batch_size=batch_size, shuffle=True, generator=g, collate_fn=list)
        loader = ray.train.torch.prepare_data_loader(loader, move_to_device=False)
        if self.world_size > 1:
            loader.sampler.set_epoch(seed * 1000 + epoch)  # a new order every epoch
        return [list(map(int, b)) for b in loader]

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        import torch.distributed as dist

        if self.world_size == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return t.tolist()

    def owned(self, n: int) -> list[int]:
        return list(range(self.rank, n, self.world_size))

    def gather_rows(self, part: np.ndarray, owned: list[int], total: int) -> np.ndarray:
        import torch.distributed as dist

        pieces = [(owned, part)]
        if self.world_size > 1:
            pieces = [None] * self.world_size
            dist.all_gather_object(pieces, (owned, part))
        out = np.zeros((total,) + part.shape[1:], dtype=part.dtype)
        for rows, values in pieces:
            out[rows] = values
        return out

    def node_count(self) -> int:
        """The Ray nodes this worker group spans (a collective: every rank calls it)."""
        import ray
        import torch.distributed as dist

        ids = [ray.get_runtime_context().get_node_id()]
        if self.world_size > 1:
            ids = [None] * self.world_size
            dist.all_gather_object(ids, ray.get_runtime_context().get_node_id())
        return len(set(ids))

    def checkpoint(self, metrics: dict, state: dict) -> None:
        import ray.train

        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if self.rank == 0:  # one copy of the state; the other ranks report metrics only
                write_state({**state, "logs": self.logs}, Path(tmp) / STATE_FILE)
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
            ray.train.report(numeric, checkpoint=checkpoint)

    def restore(self) -> dict | None:
        import ray.train

        if not self._looked:
            self._looked = True
            checkpoint = ray.train.get_checkpoint()
            if checkpoint is not None:
                with checkpoint.as_directory() as folder:
                    try:
                        self._restored = read_state(Path(folder) / STATE_FILE)
                    except DataError as err:  # only a resume aid: training from the start gives the same result
                        print(f"taxoclass: warning: {err}", file=sys.stderr, flush=True)
                if self._restored is not None:
                    self.logs = self._restored.pop("logs", [])
        return None if self._restored is None or self._restored.get("final") else self._restored


def train_loop_per_worker(config: dict) -> None:
    """One Ray Train worker: the engine's job (`jobs/training.py`) on this rank's share."""
    import ray.train.torch

    from taxoclass.jobs.training import run_training

    job = config["job"]
    env = RayTrainEnv()
    env.restore()
    if env._restored is not None and env._restored.get("final"):
        env.checkpoint({"final": 1}, env._restored)  # finished before a restart: report the result again
        return
    device = ray.train.torch.get_device()
    stats, state = run_training(job, device, env.log, env=env)
    stats[f"stage{job.stage}/worker_gpus"] = 1 if device.type == "cuda" else 0  # did ray.use_gpu reach the workers?
    stats[f"stage{job.stage}/worker_nodes"] = env.node_count()  # one node, or spread over a cluster
    env.checkpoint({"final": 1}, {"final": True, "model": state, "stats": stats})


def _fit_off_the_main_thread(trainer):
    """`trainer.fit()`; called on the main thread, it runs on a helper thread while the main one waits.

    On the main thread Ray Train V2 installs a SIGINT handler of its own (and leaves it installed): Ctrl-C
    then aborted the run and the process ended with exit status 1 and no word. On any other thread (a Tune
    trial's, this helper) it installs none, and Ctrl-C is the KeyboardInterrupt of every other stage: the
    command says `interrupted` and exits with 130, as a local run does; the Train run ends with the Ray
    instance (`RayRuntime.stop`), and a rerun resumes from its latest checkpoint.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        return trainer.fit()
    outcome: dict = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as err:  # handed to the main thread, which raises it as its own
            outcome["error"] = err

    helper = threading.Thread(target=fit, name="ray-train-fit", daemon=True)
    helper.start()
    helper.join()  # Ctrl-C interrupts the wait: KeyboardInterrupt here
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def worker_resources(cfg: Config) -> dict[str, float]:
    """What one Train worker holds: `ray.cpus_per_worker` CPUs and, with `ray.use_gpu`, a share of a GPU."""
    r = cfg.ray
    return {"CPU": r.cpus_per_worker, **({"GPU": r.gpus_per_worker} if r.use_gpu else {})}


def scaling_config(cfg: Config):
    from ray.train import ScalingConfig

    return ScalingConfig(num_workers=cfg.ray.num_workers, use_gpu=cfg.ray.use_gpu, resources_per_worker=worker_resources(cfg))


def torch_config(cfg: Config):
    """Ray Train's torch setup: on a local instance, its rendezvous store on loopback (`loopback_store.py`)."""
    if cfg.ray.address:
        from ray.train.torch import TorchConfig

        return TorchConfig()
    from taxoclass.distributed.loopback_store import LoopbackTorchConfig

    return LoopbackTorchConfig()


TUNE_HANDOFF_TIMEOUT_S = 600


def _until_tune_took_the_last_report() -> None:
    """Wait, in a Tune trial, until Tune has taken Ray Train's last report from TuneReportCallback's queue.

    The trial's main thread moves that report into the trial's one-slot result queue only when the
    driver next asks the trial for a result; a `tune.report` the trial makes meanwhile (its final
    metrics, a few seconds later) takes the slot first, and the main thread then blocks on the full
    queue for good: the trial never reports again. Seen with two trials at once (the driver busy with
    the other): one trial hung after its first report, 2 of 2 runs; none with this wait.
    """
    from ray.train._internal.session import get_session

    handoff = get_session()._get_or_create_inter_actor_queue()  # the queue TuneReportCallback puts into
    deadline = time.monotonic() + TUNE_HANDOFF_TIMEOUT_S
    while not handoff.empty() and time.monotonic() < deadline:
        time.sleep(0.1)


def fit(job, storage: str, callbacks: list | None = None):
    """Run the job (stage 3 or 4) on Ray Train, its checkpoints under `storage` (a URI or an absolute path,
    `storage.py`) named after the job; `callbacks`: Ray Train's, beside the one that hands each report to Tune
    inside a Tune trial. Returns (stats, rank-0 log lines, final model state)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig  # Ray-specific lines start here
    from ray.train.torch import TorchTrainer
    from ray.tune.trainable.trainable_fn_utils import _in_tune_session

    cfg, callbacks = job.cfg, list(callbacks or [])
    in_tune = _in_tune_session()
    if in_tune:  # inside a Tune trial: each Train report becomes a trial result (epochs, Q updates)
        from ray.tune.integration.ray_train import TuneReportCallback

        if not any(isinstance(c, TuneReportCallback) for c in callbacks):  # a search's own (search/trial.py) does it too
            callbacks.append(TuneReportCallback())
    r = cfg.ray
    trainer = TorchTrainer(
        train_loop_per_worker,
        torch_config=torch_config(cfg),
        train_loop_config={"job": job},
        scaling_config=scaling_config(cfg),
        # the latest checkpoint is all a restart needs (the engine keeps its best weights in it);
        # a worker group that cannot start is a controller failure: bounded too, never retried forever
        run_config=RunConfig(name=job.name, storage_path=storage, callbacks=callbacks,
                             checkpoint_config=CheckpointConfig(num_to_keep=1),
                             failure_config=FailureConfig(max_failures=r.max_failures, controller_failure_limit=r.max_failures)),
    )
    result = _fit_off_the_main_thread(trainer)
    if in_tune:
        _until_tune_took_the_last_report()
    with result.checkpoint.as_directory() as folder:
        final = read_state(Path(folder) / STATE_FILE)
    return final["stats"], final.get("logs", []), final["model"]
