"""Hyper-parameter search for taxoclass on Ray Tune (search.py) and its search spaces (space.py)."""
