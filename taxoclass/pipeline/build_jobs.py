"""The pipeline's side of a job: it builds the jobs it hands to its runtime (`taxoclass/runtime.py`) from one
attempt on a run dir, and takes their results back. The job types and the functions that run them are the
engine's (`taxoclass/jobs/`).

Features:
- `similarity_job`: stage 1's documents, the cache's vector store (`memo`) and where a runtime keeps
  a part-done stage 1 (`<cache>/stage1-<key>-shards`);
- `training_job`: stage 3's or 4's documents (with a frozen encoder the cache's document vectors,
  stage 1's when they match, so no worker embeds again; else the texts), the model's weights as
  the job starts from them (the head alone with a frozen encoder), stage 3's targets and mask or
  stage 4's silver set, the name its checkpoints go under;
- `load_trained`: the weights a runtime returns, into the run's model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch comes with them: imported when a job is built, not with the pipeline
    from taxoclass.jobs.similarity import SimilarityJob
    from taxoclass.jobs.training import TrainingJob
    from taxoclass.pipeline.context import RunContext


def similarity_job(ctx: RunContext, fresh: bool) -> SimilarityJob:
    from taxoclass.jobs.similarity import SimilarityJob

    inp = ctx.inputs
    test_texts = None if (inp.test is None or inp.test_is_corpus) else inp.test.texts
    return SimilarityJob(ctx.cfg, inp.taxonomy, inp.keywords, inp.corpus.texts, test_texts, ctx.device, ctx.memo(fresh),
                         ctx.view.store.folder / f"{ctx.view.store.name(1)}-shards", fresh, ctx.dir)


def training_job(ctx: RunContext, stage: int, rows: list[int] | None, fresh: bool, **labels) -> TrainingJob:
    """Stage `stage` on the corpus `rows` (None: every document); `labels`: `targets` and `mask`, or `silver`."""
    from taxoclass.jobs.training import TrainingJob

    cfg = ctx.cfg
    if cfg.classifier.freeze_encoder:
        vectors = ctx.view.document_vectors("corpus", f"stage {stage}: embedding documents")
        documents = np.asarray(vectors if rows is None else vectors[np.asarray(rows, dtype=np.int64)])
    else:
        texts = ctx.inputs.corpus.texts
        documents = texts if rows is None else [texts[i] for i in rows]
    model = ctx.bundle().model
    init = model.head_state_dict() if cfg.classifier.freeze_encoder else model.state_dict()
    return TrainingJob(stage, cfg, ctx.inputs.taxonomy, ctx.inputs.keywords, documents, {k: v.detach().cpu() for k, v in init.items()},
                       name=ctx.view.store.name(stage), fresh=fresh, run_dir=ctx.dir, device=ctx.device, **labels)


def load_trained(ctx: RunContext, state: dict) -> None:
    ctx.bundle().model.load_state_dict(state, strict=not ctx.cfg.classifier.freeze_encoder)
