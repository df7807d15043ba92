"""The heavy stages as plain jobs, and the functions every runtime runs on them (the engine's entry points).

    similarity.py   stage 1: `SimilarityJob` and `run_similarity`
    training.py     stages 3 and 4: `TrainingJob` and `run_training`

The pipeline builds them (`pipeline/build_jobs.py`) and hands them to a runtime (`taxoclass/runtime.py`); the
local runtime calls the function in this process, Ray's on its workers. A job is data: no runtime sees the run.
"""
