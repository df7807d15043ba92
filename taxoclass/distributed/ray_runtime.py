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

    def __init__(self, cfg: Config):
        self.cfg = cfg
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

    def storage(self, ctx) -> str:
        """Where Ray Train keeps the run's checkpoints: a URI, or an absolute path."""
        return storage_location(self.cfg.ray.storage_path, ctx.dir)

    # stage 1
    def similarity(self, ctx, corpus_texts: list[str], test_texts: list[str] | None, fresh: bool):
        from taxoclass.stages.similarity import (
            VECTOR_DTYPE,
            SimilarityOutput,
            biencoder_passes,
            class_hypotheses,
            make_scorer,
            scores_from_vectors,
        )

        cfg, taxonomy = ctx.cfg, ctx.inputs.taxonomy
        self._storage = self.storage(ctx)  # checked when a cluster is joined, before stage 1's work
        hyps = class_hypotheses(cfg.similarity, taxonomy, ctx.inputs.keywords)
        folder = ctx.store.folder / f"{ctx.store.name(1)}-shards"
        if fresh:  # a forced stage 1 scores every shard again instead of resuming from the old ones
            shutil.rmtree(folder, ignore_errors=True)
        if cfg.similarity.backend != "biencoder":
            corpus, extra = self._score(cfg, taxonomy, corpus_texts, hyps, folder / "corpus", embed=False)
            test = None if test_texts is None else self._score(cfg, taxonomy, test_texts, hyps, folder / "test", embed=False)[0]
            passes = int((~np.isnan(corpus)).sum() + (0 if test is None else (~np.isnan(test)).sum()))
            return SimilarityOutput(corpus, test, passes, extra)
        # the bi-encoder's actors return document vectors, kept in the cache for the stages after it (a
        # rerun takes them from there); the scores are made here, from the vectors, as the local runtime does
        extra: dict = {"stage1/actors": 0}

        def on_ray(texts, part):
            def compute():
                vectors, stats = self._score(cfg, taxonomy, texts, hyps, folder / part, embed=True)
                extra.update({k: v for k, v in stats.items() if part == "corpus" or k not in extra})
                return vectors.astype(VECTOR_DTYPE)

            return lambda: ctx.memo(fresh)(texts, f"stage 1: {part}", compute)

        corpus = on_ray(corpus_texts, "corpus")()
        test = None if test_texts is None else on_ray(test_texts, "test")()
        scorer = make_scorer(cfg.similarity, ctx.device)
        scorer.set_classes(hyps)
        # what the local runtime counts: the texts once, whether the vectors came from the actors or the cache
        passes = biencoder_passes(hyps, corpus_texts, test_texts)
        return scores_from_vectors(corpus, test, scorer.class_emb, taxonomy, cfg.similarity, passes, extra)

    # stages 3 and 4
    def train_classifier(self, ctx, rows: list[int], targets: np.ndarray, mask: np.ndarray, fresh: bool) -> dict:
        return self._train(ctx, 3, _documents(ctx, rows), fresh, targets=targets, mask=mask, init_state=_initial_state(ctx))

    def self_train(self, ctx, silver, fresh: bool) -> dict:
        objective = ctx.log.stats.get("stage3/best_val_loss", float("nan"))
        return self._train(ctx, 4, _documents(ctx, None), fresh, init_state=_initial_state(ctx), objective=objective, silver=silver)

    def _train(self, ctx, stage: int, texts: list[str] | np.ndarray, fresh: bool, **kw) -> dict:
        """Stage 3 or 4 on the Train workers; their rank-0 log lines are replayed here, in order."""
        storage, name = self.storage(ctx), ctx.store.name(stage)
        self._storage = storage
        if fresh:  # Ray Train resumes a run of the same name: a forced stage must not restore the old final checkpoint
            remove_tree(storage, name)
        stats, logs, state = self._fit(stage, ctx.cfg, ctx.inputs.taxonomy, ctx.inputs.keywords, texts, storage, name, **kw)
        for metrics, step in logs:
            ctx.log(metrics, step=step)
        ctx.bundle().model.load_state_dict(state, strict=not ctx.cfg.classifier.freeze_encoder)
        return stats

    def stage_cached(self, ctx, stage: int) -> None:
        """The stage's output is in the cache: its Train checkpoints (hundreds of MB each) can go."""
        remove_tree(self.storage(ctx), ctx.store.name(stage))

    # the two calls that reach Ray (a test stands in for them)
    def _score(self, cfg: Config, taxonomy, texts: list[str], hyps: list[str], folder: Path, embed: bool) -> tuple[np.ndarray, dict]:
        """Scores (documents x classes), or with `embed` the bi-encoder's document embeddings."""
        from taxoclass.distributed.ray_data import load_shards, score_with_ray_data

        self.start()
        stats, width = score_with_ray_data(cfg, taxonomy, texts, hyps, folder, embed=embed)
        return load_shards(folder, len(texts), width), stats

    def _fit(self, stage: int, cfg: Config, taxonomy, keywords, texts: list[str], storage: str, name: str, **kw):
        from taxoclass.distributed.ray_train import fit

        self.start()
        return fit(stage, cfg, taxonomy, keywords, texts, storage, name, **kw)


def _documents(ctx, rows: list[int] | None) -> list[str] | np.ndarray:
    """What the Train workers turn into the classifier's inputs: with a frozen encoder the document vectors
    of the cache (stage 1's when they match: no worker embeds again), else the texts."""
    if ctx.cfg.classifier.freeze_encoder:
        vectors = ctx.document_vectors("corpus", "stage 3: embedding documents")
        return np.asarray(vectors if rows is None else vectors[np.asarray(rows, dtype=np.int64)])
    texts = ctx.inputs.corpus.texts
    return texts if rows is None else [texts[i] for i in rows]


def _initial_state(ctx) -> dict:
    """The driver's model as the workers start from it (the head alone with a frozen encoder), on the CPU."""
    model = ctx.bundle().model
    init = model.head_state_dict() if ctx.cfg.classifier.freeze_encoder else model.state_dict()
    return {k: v.cpu() for k, v in init.items()}
