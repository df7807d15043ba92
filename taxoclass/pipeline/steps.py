"""Compute or load, one function per stage: the intact cache entry unless forced, else the stage
computed (on the run's runtime) and stored.

Features:
- `similarity` (1): stage 1's arrays; `mining` (2): the core classes; `classifier` (3) and
  `self_training` (4): the model, in `ctx.bundle()`; `skip_self_training`: stage 4 off, said in
  the log and the summary; `final_model`: the model of the stage `schedule.final_stage` names;
  `evaluation` (5): predictions, test metrics and the zero-shot baselines;
- a computed stage seeds its generators from (seed, stage) first, logs its stats, writes its
  output and seals its entry (`store.py`) with the last value of every name it logged (step
  curves included): a cached one replays them, and the summary does not depend on what was cached;
- the stages' engine code (`taxoclass/stages/`) gets its own config section; where a stage runs
  (here or on Ray) is the runtime's business (`taxoclass/runtime.py`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from taxoclass.errors import DataError
from taxoclass.pipeline.build_jobs import load_trained, similarity_job, training_job
from taxoclass.pipeline.metrics_log import say
from taxoclass.pipeline.schedule import classifier_steps_aside, self_training_runs
from taxoclass.pipeline.store import STAGE_NAMES
from taxoclass.pipeline.summary import zero_shot_baselines
from taxoclass.seeding import seed_stage

if TYPE_CHECKING:
    from taxoclass.pipeline.context import RunContext


def similarity(ctx: RunContext, force: bool = False) -> dict[str, np.ndarray]:
    """Stage 1: document-class scores (and with refined prototypes, the name-only scores and the prototypes)."""
    store, inp = ctx.view.store, ctx.inputs
    arrays = None if force else _intact_similarity(ctx)
    if arrays is not None:
        store.replay(1, ctx.log)
    else:
        seed_stage(ctx.cfg.seed, 1)
        t0 = time.time()
        with ctx.log.recording() as logged:
            out = ctx.runtime.similarity(similarity_job(ctx, fresh=force))
            store.write_similarity(out.arrays(test_is_corpus=inp.test_is_corpus or out.test is None))
            stats = {**out.stats(), **out.extra}
            stats["stage1/seconds"] = time.time() - t0
            ctx.log(stats)
        _seal_output(ctx, 1, logged, "similarity", f"{len(inp.corpus.ids)} documents, {stats['stage1/pairs_per_doc']:.0f} "
                                                   f"pairs/doc, {stats['stage1/seconds']:.1f}s")
        arrays = store.read_similarity(ctx.cfg, inp)
    ctx.reported.add(1)
    ctx.outputs[1] = arrays
    return arrays


def _intact_similarity(ctx: RunContext) -> dict[str, np.ndarray] | None:
    """Stage 1's cached arrays, or None (with a warning saying why, when an entry is there) to compute them."""
    return _intact_entry(ctx, 1, lambda: ctx.view.store.read_similarity(ctx.cfg, ctx.inputs))


def _intact_entry(ctx: RunContext, stage: int, read):
    """`read()` of the stage's intact entry, or None (with a warning saying why, when an entry is there) to compute it."""
    from taxoclass.cache import Unusable, warn_unusable

    if not ctx.view.store.intact(stage):
        return None
    try:
        return read()
    except Unusable as err:  # sealed, but a file replaced together with its checksum may hold anything
        warn_unusable(ctx.view.store.path(stage, ".sha256"), str(err))
        return None


def mining(ctx: RunContext, force: bool = False):
    """Stage 2: each document's core classes."""
    from taxoclass.stages.core_mining import mine_core_classes, mining_quality, mining_stats

    store, inp = ctx.view.store, ctx.inputs
    out = None if force else _intact_entry(ctx, 2, store.read_mining)
    if out is not None:
        store.replay(2, ctx.log)
    else:
        sim = ctx.stage1()["corpus"]
        seed_stage(ctx.cfg.seed, 2)
        t0 = time.time()
        out = mine_core_classes(sim, inp.taxonomy, ctx.cfg.mining)
        stats = mining_stats(out)
        if inp.corpus.gold is not None:
            stats.update(mining_quality(out, inp.corpus.gold, inp.taxonomy))
        stats["stage2/seconds"] = time.time() - t0
        store.write_mining(out)
        ctx.log(stats)
        _seal_output(ctx, 2, stats, "core-classes", f"{stats['stage2/total_docs_with_core']} of {len(out.cores)} documents "
                                                    f"have a core class, {stats['stage2/num_core_classes']} core classes")
    ctx.reported.add(2)
    ctx.outputs[2] = out
    return out


def _seal_output(ctx: RunContext, stage: int, stats: dict, artifact: str, what: str) -> None:
    """Stage 1's or 2's written output: its entry sealed with its stats, offered to tracking, and said."""
    ctx.view.store.seal(stage, stats)
    ctx.sink.on_artifact(artifact, "stage-output", ctx.view.store.output(stage), {"key": ctx.view.store.keys[stage]})
    say(f"stage {stage} ({STAGE_NAMES[stage]}): {what}")


def classifier(ctx: RunContext, force: bool = False) -> None:
    """Stage 3: the classifier trained on the core classes, or, with too few pseudo-labelled documents per
    label path to learn from, its zero-shot start kept (it steps aside, and says so); its weights end in
    `ctx.bundle()`."""
    from taxoclass.stages.labels import docs_per_label, label_stats

    if _cached_model(ctx, 3, force):
        return
    rows, targets, mask = ctx.view.pseudo_labels()
    c = ctx.cfg.classifier
    cores = ctx.mining().cores
    per_label = docs_per_label([cores[i] for i in rows])
    t0 = time.time()
    with ctx.log.recording() as logged:
        if mask is None:  # the path loss: the seed's label metrics from the per-class reading of the same cores
            from taxoclass.stages.labels import build_labels

            c_targets, c_mask = build_labels([cores[i] for i in rows], ctx.inputs.taxonomy, c.label_scope, c.negatives)
        else:
            c_targets, c_mask = targets, mask
        labels = {"stage3/docs_per_label": per_label, **label_stats(c_targets, c_mask)}
        ctx.log(labels)
        if classifier_steps_aside(c, per_label):
            stats = {"stage3/stepped_aside": 1, **labels}
            why = (f"stepped aside: {per_label:.1f} pseudo-labelled documents per label path, fewer than "
                   f"classifier.min_docs_per_label={c.min_docs_per_label:g}: the model is its zero-shot start "
                   f"(stage 1's {'refined prototypes' if ctx.class_init() is not None else 'class hypotheses'}), untrained")
            _finish_training(ctx, 3, stats, t0, logged, why)
            return
        # the job seeds stage 3 once its model is built (`run_training`), wherever it trains
        stats, state = ctx.runtime.train(training_job(ctx, 3, rows, force, targets=targets, mask=mask), ctx.log,
                                         watch=ctx.sink.on_model)
        load_trained(ctx, state)
        stats.update({"stage3/stepped_aside": 0, **labels})
        # stage3/best_epoch counts from 0; the progress bar and stage3/epoch count from 1
        _finish_training(ctx, 3, stats, t0, logged, f"best epoch {stats['stage3/best_epoch'] + 1} of "
                                                    f"{c.epochs}, val loss {stats['stage3/best_val_loss']:.4f}")


def self_training(ctx: RunContext, force: bool = False) -> None:
    """Stage 4: stage 3's model self-trained on the whole corpus; its weights end in `ctx.bundle()`."""
    if _cached_model(ctx, 4, force):
        return
    from taxoclass.cache import Unusable

    store = ctx.view.store
    if not store.intact(3):
        raise DataError(ctx.dir, "stage 3 output missing: run stage 3 first")
    try:
        store.read_model(3, ctx.bundle())
    except Unusable as err:
        raise DataError(store.output(3), f"not usable ({err}); run `taxoclass stage 3 --run {ctx.dir}` to compute it "
                                         "again") from None
    t0 = time.time()
    silver = ctx.view.silver_validation() if ctx.cfg.self_training.val_patience > 0 else None
    with ctx.log.recording() as logged:
        # the job seeds stage 4 once its model is built and loaded (`run_training`), wherever it trains
        stats, state = ctx.runtime.train(training_job(ctx, 4, None, force, silver=silver), ctx.log)
        load_trained(ctx, state)
        _finish_training(ctx, 4, stats, t0, logged, f"{stats['stage4/batches']} batches, stopped by {stats['stage4/stopped_by']}")


def skip_self_training(ctx: RunContext, why: str) -> None:
    """Stage 4 not run: say why in the log, metrics.jsonl and the summary."""
    ctx.log({"stage4/skipped": why})
    say(f"stage 4 ({STAGE_NAMES[4]}): skipped: {why}")


def self_training_or_skip(ctx: RunContext, force: bool = False) -> int:
    """Stage 4 when the rule (`schedule.self_training_runs`, from stage 3's outcome) says so, else its skip said;
    stage 3 must be done. Returns the final model's stage."""
    runs, why = self_training_runs(ctx.cfg, ctx.view.stage3_outcome())
    if runs:
        ctx.log({"stage4/runs_because": why})  # a run says why it ran stage 4 as it says why it skipped it
        self_training(ctx, force=force)
        return 4
    skip_self_training(ctx, why)
    return 3


def final_model(ctx: RunContext) -> int:
    """The final model into `ctx.bundle()`, from its cache entry (computed if it is not there); returns its stage."""
    classifier(ctx)
    return self_training_or_skip(ctx)


def _cached_model(ctx: RunContext, stage: int, force: bool) -> bool:
    """A training stage's intact entry, unless forced: its model loaded into `ctx.bundle()` and its stats replayed;
    False (a warning saying why, when the entry does not fit the model) to compute it."""
    def load() -> bool:
        ctx.view.store.read_model(stage, ctx.bundle())
        return True

    if force or not _intact_entry(ctx, stage, load):
        return False
    ctx.view.store.replay(stage, ctx.log)
    ctx.reported.add(stage)
    return True


def _finish_training(ctx: RunContext, stage: int, stats: dict, t0: float, logged: dict, what: str) -> None:
    """Log a training stage's final stats, then store its model and everything it logged under its cache key."""
    stats[f"stage{stage}/seconds"] = time.time() - t0
    ctx.log(stats)
    ctx.view.store.write_model(stage, ctx.bundle(), ctx.inputs.taxonomy)
    ctx.view.store.seal(stage, logged)
    ctx.reported.add(stage)
    ctx.runtime.stage_cached(ctx.dir, ctx.view.store.name(stage))
    say(f"stage {stage} ({STAGE_NAMES[stage]}): {what}, {stats[f'stage{stage}/seconds']:.1f}s")


def evaluation(ctx: RunContext) -> dict:
    """model.pt (a copy of the final stage's entry), then with a test set: predictions/test.jsonl, the test
    metrics and the zero-shot baselines. The model in `ctx.bundle()` must be the final one."""
    from taxoclass.atomic import atomic_copy
    from taxoclass.decoding import decode
    from taxoclass.hier_metrics import hierarchical_metrics
    from taxoclass.metrics import evaluate_rankings, prefixed
    from taxoclass.rundir import PREDICTIONS, write_predictions
    from taxoclass.stages.model import predict_scores

    cfg, inp = ctx.cfg, ctx.inputs
    summary: dict = {}
    seed_stage(cfg.seed, 5)
    stage = ctx.view.final_stage()
    # a copy, not a link: truncating or replacing model.pt must never touch the cache entry
    atomic_copy(ctx.view.store.output(stage), ctx.dir / "model.pt", "the model")  # a full disk: one line, no model.pt
    if inp.test is None:
        say("no test set: predictions and test metrics skipped")
        return summary
    bundle = ctx.bundle()
    docs = ctx.view.document_inputs("test", desc="evaluation: embedding test documents")
    probs, paths = predict_scores(bundle.model, docs, ctx.device, cfg.evaluation.batch_size, cfg.classifier.amp)
    ranked, scores = decode(probs, inp.taxonomy, cfg.evaluation.decoding, cfg.evaluation.save_top_k, paths)
    write_predictions(ctx.dir / PREDICTIONS, inp.test.ids, ranked, scores, inp.taxonomy)
    summary.update(prefixed(evaluate_rankings(ranked.tolist(), inp.test.gold, inp.taxonomy.levels), "test"))
    summary.update(prefixed(hierarchical_metrics(ranked.tolist(), inp.test.gold, inp.taxonomy), "test"))
    summary.update(zero_shot_baselines(ctx.stage1(), inp.test.gold, inp.taxonomy, summary["test/example_f1"]))
    ctx.log(summary)
    ctx.sink.on_evaluation({"taxonomy": inp.taxonomy, "doc_ids": inp.test.ids, "texts": inp.test.texts,
                            "ranked": ranked.tolist(), "golds": inp.test.gold})
    ctx.sink.on_artifact("model", "model", ctx.dir / "model.pt", {"stage": stage})
    return summary
