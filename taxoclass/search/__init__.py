"""Hyper-parameter search on Ray Tune (orchestration: the engine never imports it).

flags.py (the flags of `taxoclass search` and `tune/search.py`), tuner.py (the search: Ray, Optuna, ASHA),
trial.py (one trial), shared.py (stages 1-2 once for every trial), space.py (search spaces, wandb sweep
files), objectives.py (label-free objectives), resources.py (a trial's shape against the cluster),
callbacks.py (wandb runs, terminal lines), results.py (trials.csv, trials.md, best_config.yaml).
"""
