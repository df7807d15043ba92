"""Hyper-parameter search on Ray Tune (orchestration: the engine never imports it).

cli.py (the flags of `taxoclass search` and `tune/search.py`), search.py (the search), space.py
(search spaces, wandb sweep files), objectives.py (label-free objectives), resources.py (a trial's
shape against the cluster), callbacks.py (wandb runs, terminal lines), report.py (trials.md).
"""
