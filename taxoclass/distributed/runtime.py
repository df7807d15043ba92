"""`runtime=local | ray`: who runs stage 1 and stages 3-4.

`local` (the default) is the engine alone in one process, one GPU or the CPU: no Ray is
imported at all. It is the debugging mode, and the fastest choice for one GPU: a Ray
instance costs seconds to start and every stage's inputs must travel to its workers.
`ray` shards stage 1 over a pool of actors (Ray Data) and trains stages 3-4 data-parallel
(Ray Train V2); it pays off from two GPUs on, or on a cluster (`ray.address=auto`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from taxoclass.config import Config
from taxoclass.data.taxonomy import Taxonomy


def worker_env() -> dict[str, str]:
    """The environment a local instance's workers need from the driver: offline model hub, wandb mode."""
    return {k: v for k, v in os.environ.items() if k.startswith(("HF_", "TRANSFORMERS_", "WANDB_"))}


def bind_to_loopback() -> None:
    """Make a local Ray instance listen on 127.0.0.1 only.

    Ray rewrites `_node_ip_address="127.0.0.1"` to the host's address (and its GCS, raylet and
    object manager then listen there) unless its "no cluster" switch is on, which it reads at
    import: set it in the environment (for the workers) and in the loaded module (for us).
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False


def start_local_ray(num_cpus: int | None = None, dashboard: bool = False, **kwargs) -> None:
    """A local Ray instance on loopback, its workers with the driver's hub and wandb settings.

    `dashboard`: Ray's State API, which Ray Train's placement-group cleaner needs to notice that a
    Train run's driver was killed (a Tune trial stopped early); without it the run's workers'
    resources stay reserved until Ray ends. It listens on 127.0.0.1 too.
    """
    bind_to_loopback()
    import ray

    env = worker_env()
    ray.init(num_cpus=num_cpus or None, include_dashboard=dashboard, runtime_env={"env_vars": env} if env else None,
             _node_ip_address="127.0.0.1", **kwargs)


def make_runtime(cfg: Config):
    """None for the local runtime (the pipeline then calls the engine directly)."""
    return RayRuntime(cfg) if cfg.runtime == "ray" else None


class RayRuntime:
    """The pipeline's hooks for Ray: stage 1 on Ray Data, stages 3-4 on Ray Train."""

    name = "ray"

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self._started_here = False

    def start(self) -> None:
        import ray  # Ray-specific lines: joining or starting an instance

        if ray.is_initialized():
            return
        if self.cfg.ray.address:
            ray.init(address=self.cfg.ray.address, include_dashboard=False, log_to_driver=False)
        else:
            start_local_ray(self.cfg.ray.num_cpus, log_to_driver=False)  # a local instance serves this process only
            self._started_here = True

    def stop(self) -> None:
        if self._started_here:
            import ray

            ray.shutdown()  # only the instance started here; never `ray stop`
            self._started_here = False

    def similarity(self, cfg: Config, taxonomy: Taxonomy, texts: list[str], hypothesis_texts: list[str], folder: Path,
                   progress: bool = True, embed: bool = False) -> tuple[np.ndarray, dict]:
        """Scores (documents x classes), or with `embed` the bi-encoder's document embeddings."""
        from taxoclass.distributed.ray_data import load_shards, score_with_ray_data

        self.start()
        stats, width = score_with_ray_data(cfg, taxonomy, texts, hypothesis_texts, folder, progress, embed=embed)
        return load_shards(folder, len(texts), width), stats

    def train(self, stage: int, cfg: Config, taxonomy: Taxonomy, keywords, texts: list[str], storage: Path, name: str, **kw):
        from taxoclass.distributed.ray_train import fit

        self.start()
        return fit(stage, cfg, taxonomy, keywords, texts, storage, name, **kw)

    def stage_cached(self, storage: Path, name: str) -> None:
        """The stage's output is in the cache: its Train checkpoints (hundreds of MB each) can go."""
        from taxoclass.distributed.ray_train import discard_checkpoints

        discard_checkpoints(storage, name)
