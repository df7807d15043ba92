"""Runs the four stages and the evaluation in order, caching each stage's output (see run.py).

    run.py          the entry points: run_pipeline, run_single_stage, run_first_stages
    context.py      one attempt on a run dir (config.yaml, metrics.jsonl, the runtime, the sink, the model)
    steps.py        compute or load, one function per stage, and the evaluation
    schedule.py     what runs when: stage 3 stepping aside, whether stage 4 runs, which stage made the final model
    store.py        the stage store: cache keys, sealed entries, replay
    view.py         a run dir's inputs and cache; the read-only open of a finished run
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
