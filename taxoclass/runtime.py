"""Where the heavy stages run: the interface every runtime implements, and the local one.

Features:
- `Runtime`: stage 1 (`similarity`, a `SimilarityJob`) and stages 3-4 (`train`, a `TrainingJob`):
  plain jobs the pipeline builds (`taxoclass/jobs/`), whose results it stores; no runtime sees the run itself.
  `training_setup()`, the part of the stage 3-4 cache keys that depends on where training runs;
  `stage_cached`, called once a stage's output is in the cache; `stop`;
- `LocalRuntime` (`runtime=local`, the default): the engine in this process, on one GPU or the
  CPU; Ray is not imported. `taxoclass/distributed/ray_runtime.py` is the Ray one; the CLI
  chooses (the pipeline never looks at which it got).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from taxoclass.jobs.similarity import SimilarityJob
    from taxoclass.jobs.training import TrainingJob
    from taxoclass.stages.similarity import SimilarityOutput


class Runtime(Protocol):
    name: str

    def training_setup(self) -> tuple:
        """What besides their own settings changes stage 3-4 numbers here (part of their cache keys)."""

    def similarity(self, job: SimilarityJob) -> SimilarityOutput:
        """Stage 1's scores of the job's documents."""

    def train(self, job: TrainingJob, log: Callable, watch: Callable | None = None) -> tuple[dict, dict]:
        """Stage 3 or 4: (stats, the trained weights on the CPU); `log` takes the training curve as it comes or
        once the stage is done, `watch(model)` sees the model before it trains where it trains in this process."""

    def stage_cached(self, run_dir: Path, name: str) -> None:
        """The stage's output is in the cache (its entry `name`): whatever was kept to resume it can go."""

    def stop(self) -> None:
        """Release what the runtime started."""


class LocalRuntime:
    """The engine in this process."""

    name = "local"

    def training_setup(self) -> tuple:
        return ("local",)

    def similarity(self, job: SimilarityJob):
        from taxoclass.jobs.similarity import run_similarity

        return run_similarity(job)

    def train(self, job: TrainingJob, log: Callable, watch: Callable | None = None) -> tuple[dict, dict]:
        from taxoclass.jobs.training import run_training

        return run_training(job, job.device, log, watch=watch)

    def stage_cached(self, run_dir: Path, name: str) -> None:
        """Nothing to clear: a local stage keeps no checkpoints beside its cache entry."""

    def stop(self) -> None:
        """Nothing was started."""
