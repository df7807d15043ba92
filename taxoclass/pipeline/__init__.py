"""Runs the four stages and the evaluation in order on one run dir, caching each stage's output (see run.py).

    run.py          the entry points: run_pipeline, run_single_stage, run_first_stages
    steps.py        compute or load, one function per stage, and the evaluation
    schedule.py     what runs when: stage 3 stepping aside, whether stage 4 runs, which stage made the final model
    build_jobs.py   the jobs it hands to the runtime (stage 1, stages 3-4; the types: taxoclass/jobs/) and the weights back
    context.py      one attempt on a run dir (config.yaml, metrics.jsonl, the runtime, the sink, the model)
    view.py         a run dir's inputs, cache and document vectors; the read-only open of a finished run
    store.py        the stage store: cache keys, sealed entries, replay
    vectors.py      document vectors embedded once per cache, shared by every stage whose encoder matches
    inputs.py       the dataset's documents as the stages use them, and their checksum
    metrics_log.py  metrics.jsonl and the status lines
    summary.py      summary.json and the zero-shot baselines
    lock.py         one run per run dir
"""

from taxoclass.pipeline.context import RunContext
from taxoclass.pipeline.inputs import Docs, Inputs, content_digest, prepare_inputs
from taxoclass.pipeline.metrics_log import MetricsLog
from taxoclass.pipeline.run import run_first_stages, run_pipeline, run_single_stage
from taxoclass.pipeline.schedule import final_stage, self_training_runs
from taxoclass.pipeline.store import StageStore, stage_keys
from taxoclass.pipeline.summary import greedy_path, zero_shot_metrics
from taxoclass.pipeline.view import RunView, open_finished, run_config

__all__ = ["Docs", "Inputs", "MetricsLog", "RunContext", "RunView", "StageStore", "content_digest", "final_stage",
           "greedy_path", "open_finished", "prepare_inputs", "run_config", "run_first_stages", "run_pipeline", "run_single_stage",
           "self_training_runs", "stage_keys", "zero_shot_metrics"]
