"""The pipeline's two entry points: every stage then the evaluation, or one stage on a run dir.

Features:
- `run_pipeline(cfg, sink, runtime)`: stages 1-4 (each from the cache when its entry is intact;
  `force_stage=N` recomputes from stage N on; stage 4 skipped openly when off), the evaluation,
  and the summary; used by the CLI, Ray Tune's trials and the benchmarks alike;
- `run_single_stage(cfg, N, runtime)`: `taxoclass stage N --run DIR` (cfg: `run_config(DIR)`),
  stage N recomputed, the stage before it read from the cache (an error when it was never
  computed; computed again, saying why, when its entry is there but damaged or does not fit);
  stage 5 evaluates the final model and writes the same summary as a full run; stage 4 on a run
  that skips it (`self_training.enabled=false`) says so and does nothing; stages 1-4 leave the
  run's final outputs to stage 5, and say so when the run dir holds none;
- `run_first_stages(cfg, through)`: stage 1 (and 2), from the cache when intact, with the frozen
  classifier's document vectors: what a hyper-parameter search computes once, before its trials;
- the caller builds the runtime (`taxoclass/runtime.py`; the CLI builds Ray's) and stops it:
  this package never imports Ray or wandb.
"""

from __future__ import annotations

from pathlib import Path

from taxoclass.config import Config
from taxoclass.errors import DataError
from taxoclass.pipeline import steps
from taxoclass.pipeline.context import RunContext
from taxoclass.pipeline.metrics_log import say
from taxoclass.pipeline.schedule import self_training_runs
from taxoclass.pipeline.store import STAGE_NAMES
from taxoclass.pipeline.summary import summarize
from taxoclass.pipeline.view import open_finished
from taxoclass.runtime import LocalRuntime, Runtime
from taxoclass.sink import Sink


def run_pipeline(cfg: Config, sink: Sink | None = None, runtime: Runtime | None = None) -> dict:
    """All stages, then the evaluation. Returns the summary (also in summary.json)."""
    with RunContext.open(cfg, sink, runtime) as ctx:
        say(f"run dir {ctx.dir} on {ctx.device}; {ctx.inputs.describe()}")

        def forced(stage: int) -> bool:
            return 0 < cfg.force_stage <= stage

        steps.similarity(ctx, force=forced(1))
        steps.mining(ctx, force=forced(2))
        steps.classifier(ctx, force=forced(3))
        steps.self_training_or_skip(ctx, force=forced(4))
        return summarize(ctx, steps.evaluation(ctx))


def run_first_stages(cfg: Config, through: int = 2) -> None:
    """Stages 1 to `through` (1 or 2) on the run dir of `cfg`, each from the cache when its entry is intact, and the
    document vectors of a frozen classifier whose encoder is not stage 1's; no evaluation, no summary."""
    with RunContext.open(cfg) as ctx:
        steps.similarity(ctx)
        if through >= 2:
            steps.mining(ctx)
        if cfg.classifier.freeze_encoder:
            ctx.document_vectors("corpus")
            if ctx.inputs.test is not None:
                ctx.document_vectors("test")


# the stage whose cache entry stage N reads
NEEDS = {2: 1, 3: 2, 4: 3, 5: 3}


def run_single_stage(cfg: Config, number: int, runtime: Runtime | None = None) -> dict | None:
    """Stage `number` (1-4, 5 = evaluation) on the run dir of `cfg`; the summary for stage 5."""
    if number == 4:
        run_dir = Path(cfg.output_dir) / cfg.run_name
        runs, why = self_training_runs(cfg, open_finished(run_dir, cfg, training_setup=(runtime or LocalRuntime()).training_setup())
                                       .stage3_outcome())
        if not runs:  # its result would be a cache entry nothing reads: the run's final model is stage 3's
            say(f"stage 4 ({STAGE_NAMES[4]}): this run skips it ({why}), nothing done; to run it: "
                f"taxoclass stage 4 --run {run_dir} self_training.enabled=true")
            return None
    with RunContext.open(cfg, runtime=runtime, command=f"stage {number}") as ctx:
        need = NEEDS.get(number)
        if need and not ctx.view.store.present(need):  # never computed: a damaged entry is computed again below, said
            raise DataError(ctx.dir, f"stage {need} output missing for this config: run `taxoclass stage {need} --run {ctx.dir}` first")
        if number == 5:  # the zero-shot baselines read stage 1 (an unusable entry is computed again, said)
            steps.similarity(ctx)
            steps.final_model(ctx)
            return summarize(ctx, steps.evaluation(ctx))
        step = {1: steps.similarity, 2: steps.mining, 3: steps.classifier, 4: steps.self_training}[number]
        if need:  # loaded, or computed again (with the reason) when its sealed entry does not fit
            step_before = {1: steps.similarity, 2: steps.mining, 3: steps.classifier}[need]
            step_before(ctx)
        step(ctx, force=True)
        if not (ctx.dir / "summary.json").is_file():
            say(f"{ctx.dir} holds no final results for this config (model.pt, predictions, summary.json): "
                f"`taxoclass stage 5 --run {ctx.dir}` evaluates it")
        return None
