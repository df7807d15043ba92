"""`runtime=ray`: stage 1 on Ray Data, stages 3-4 on Ray Train, for the pipeline (`taxoclass/runtime.py`).

Features:
- joins `ray.address` or starts a local instance on loopback, on first use; `stop` ends only an
  instance it started (never `ray stop`);
- stage 1: the documents scored (or, with refined prototypes, embedded) by a pool of actors into
  Parquet shards under `<cache>/stage1-<key>-shards/`; a killed stage 1 resumes from the shards,
  a forced one (`fresh`) deletes them first; prototypes are refined here, on the driver;
- stages 3-4: the engine's loops data-parallel on Ray Train, checkpoints under `ray.storage_path`
  (a path or a URI; default `<run_dir>/ray`) named after the stage's cache entry; a killed stage
  resumes from its latest checkpoint, a forced one deletes them first, and they go once the output
  is cached; on a cluster of more than one node, storage the other nodes do not see stops the run
  when Ray is joined, before any work (`storage.py`);
  rank 0's log lines are replayed into the run's metrics log, in order;
- `training_setup`: the number of Train workers is part of the stage 3-4 cache keys (larger global
  batches give other numbers: 1 and 2 workers' validation losses were up to 14 % apart).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from taxoclass.config import Config
from taxoclass.distributed.storage import remove_tree, storage_location


class RayRuntime:
    """The pipeline's runtime on Ray."""

    name = "ray"

    def __init__(self, cfg: Config, train_callbacks=None):
        self.cfg = cfg
        # Ray Train callbacks for each stage's run, made when it starts (a search's trial reports its epochs to Tune)
        self.train_callbacks = train_callbacks or list
        self._started_here = False
        self._storage: str | None = None  # the run's checkpoint storage, checked once a cluster is joined
        self._storage_checked = False

    def training_setup(self) -> tuple:
        return ("ray", self.cfg.ray.num_workers)

    def start(self) -> None:
        from taxoclass.distributed.ray_instance import join_or_start  # Ray-specific lines: joining or starting an instance

        if join_or_start(self.cfg.ray, log_to_driver=False):
            self._started_here = True  # one node: whatever the storage, every worker sees it
        if not self._started_here and self._storage and not self._storage_checked:  # a cluster (or a Tune trial's)
            from taxoclass.distributed.storage import check_shared

            check_shared(self._storage)
            self._storage_checked = True

    def stop(self) -> None:
        if self._started_here:
            import ray

            ray.shutdown()  # only the instance started here; never `ray stop`
            self._started_here = False

    def storage(self, run_dir: Path) -> str:
        """Where Ray Train keeps the run's checkpoints: a URI, or an absolute path."""
        return storage_location(self.cfg.ray.storage_path, run_dir)

    # stage 1: the engine's flow (`run_similarity`), the documents embedded or scored by Ray Data's actors
    def similarity(self, job):
        from taxoclass.jobs.similarity import run_similarity
        from taxoclass.stages.similarity import VECTOR_DTYPE, class_hypotheses

        cfg, taxonomy = job.cfg, job.taxonomy
        self._storage = self.storage(job.run_dir)  # checked when a cluster is joined, before stage 1's work
        hyps = class_hypotheses(cfg.similarity, taxonomy, job.keywords)
        if job.fresh:  # a forced stage 1 scores every shard again instead of resuming from the old ones
            shutil.rmtree(job.shards, ignore_errors=True)
        extra: dict = {"stage1/actors": 0}  # vectors a rerun finds in the cache took no actor

        def on_actors(embed: bool):
            def run(texts, part):
                values, stats = self._score(cfg, taxonomy, texts, hyps, job.shards / part, embed=embed)
                extra.update({k: v for k, v in stats.items() if part == "corpus" or k not in extra})
                return values.astype(VECTOR_DTYPE) if embed else values

            return run

        out = run_similarity(job, embed=on_actors(True), score=on_actors(False))
        out.extra.update(extra)
        return out

    # stages 3 and 4
    def train(self, job, log, watch=None) -> tuple[dict, dict]:
        """Stage 3 or 4 on the Train workers (`watch`: no model here to watch); their rank-0 log lines are replayed
        into `log`, in order."""
        storage = self._storage = self.storage(job.run_dir)
        if job.fresh:  # Ray Train resumes a run of the same name: a forced stage must not restore the old final checkpoint
            remove_tree(storage, job.name)
        stats, logs, state = self._fit(job, storage)
        for metrics, step in logs:
            log(metrics, step=step)
        return stats, state

    def stage_cached(self, run_dir: Path, name: str) -> None:
        """The stage's output is in the cache: its Train checkpoints (hundreds of MB each) can go."""
        remove_tree(self.storage(run_dir), name)

    # the two calls that reach Ray
    def _score(self, cfg: Config, taxonomy, texts: list[str], hyps: list[str], folder: Path, embed: bool) -> tuple[np.ndarray, dict]:
        """Scores (documents x classes), or with `embed` the bi-encoder's document embeddings."""
        from taxoclass.distributed.ray_data import load_shards, score_with_ray_data

        self.start()
        stats, width = score_with_ray_data(cfg, taxonomy, texts, hyps, folder, embed=embed)
        return load_shards(folder, len(texts), width), stats

    def _fit(self, job, storage: str):
        from taxoclass.distributed.ray_train import fit

        self.start()
        return fit(job, storage, self.train_callbacks())
