"""Where the heavy stages run: the interface every runtime implements, and the local one.

Features:
- `Runtime`: stage 1 (`similarity`), stage 3 (`train_classifier`) and stage 4 (`self_train`) for
  a run (`pipeline/context.py`'s `RunContext`); `training_setup()`, the part of the stage 3-4
  cache keys that depends on where training runs; `stage_cached`, called once a stage's output
  is in the cache; `stop`;
- `LocalRuntime` (`runtime=local`, the default): the engine in this process, on one GPU or the
  CPU; Ray is not imported. `taxoclass/distributed/ray_runtime.py` is the Ray one; the CLI
  chooses (the pipeline never looks at which it got).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from taxoclass.pipeline.context import RunContext
    from taxoclass.stages.classifier import SilverValidation
    from taxoclass.stages.similarity import SimilarityOutput


class Runtime(Protocol):
    name: str

    def training_setup(self) -> tuple:
        """What besides their own settings changes stage 3-4 numbers here (part of their cache keys)."""

    def similarity(self, ctx: RunContext, corpus_texts: list[str], test_texts: list[str] | None, fresh: bool) -> SimilarityOutput:
        """Stage 1's scores of the documents (`fresh`: a forced stage, nothing earlier reused)."""

    def train_classifier(self, ctx: RunContext, rows: list[int], targets: np.ndarray, mask: np.ndarray, fresh: bool) -> dict:
        """Stage 3 on the corpus `rows` with their pseudo-labels; the trained weights end in `ctx.bundle()`."""

    def self_train(self, ctx: RunContext, silver: SilverValidation | None, fresh: bool) -> dict:
        """Stage 4 from the model in `ctx.bundle()`, which ends with the self-trained weights."""

    def stage_cached(self, ctx: RunContext, stage: int) -> None:
        """The stage's output is in the cache: whatever was kept to resume it can go."""

    def stop(self) -> None:
        """Release what the runtime started."""


class LocalRuntime:
    """The engine in this process."""

    name = "local"

    def training_setup(self) -> tuple:
        return ("local",)

    def similarity(self, ctx: RunContext, corpus_texts, test_texts, fresh: bool):
        from taxoclass.stages.similarity import PrunedSearch, run_similarity

        inp, cfg = ctx.inputs, ctx.cfg
        return run_similarity(cfg.similarity, PrunedSearch.of(cfg.mining), inp.taxonomy, corpus_texts, test_texts, inp.keywords,
                              ctx.device, memo=ctx.memo(fresh))

    def train_classifier(self, ctx: RunContext, rows, targets, mask, fresh: bool) -> dict:
        from taxoclass.stages.classifier import train_classifier

        cfg = ctx.cfg
        docs = ctx.document_inputs("corpus", rows, desc="stage 3: embedding documents")
        return train_classifier(ctx.bundle().model, docs, targets, mask, cfg.classifier, ctx.device, cfg.seed, ctx.log,
                                cfg.tracking.log_interval)

    def self_train(self, ctx: RunContext, silver, fresh: bool) -> dict:
        from taxoclass.stages.self_training import self_train

        cfg = ctx.cfg
        docs = ctx.document_inputs("corpus", desc="stage 4: embedding documents")
        return self_train(ctx.bundle().model, docs, cfg.self_training, ctx.device, cfg.seed, ctx.log, cfg.classifier.amp,
                          cfg.evaluation.batch_size, silver=silver, train_gnn=cfg.classifier.gnn_learning_rate > 0)

    def stage_cached(self, ctx: RunContext, stage: int) -> None:
        """Nothing to clear: a local stage keeps no checkpoints beside its cache entry."""

    def stop(self) -> None:
        """Nothing was started."""
