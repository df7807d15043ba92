"""Shared fixtures: tiny datasets written to tmp dirs, the shared benchmark data, a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# On N pytest-xdist workers (`make test`: 2), each worker's torch gets its share of the cores, and so do the
# subprocesses and Ray instances its tests start (they inherit it). With torch's default, every process takes every
# core and the workers' OpenMP threads oversubscribe them and spin: two debug runs (200 documents) at once on 2 cores
# took 14.5 s and 28 CPU-s that way, 8.2 s and 16 CPU-s with one thread each, to the same Example-F1.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"shared benchmark data not found at {SHARED_DATA}")

# A tiny DAG: two top-level classes, 'c' has two parents (a and b), 'e' sits under 'c'.
#   a(0) -> c(2), a -> d(3); b(1) -> c; c -> e(4)
TINY_LABELS = "0\ta\n1\tb\n2\tc\n3\td\n4\te_class\n"
TINY_EDGES = "0\t2\n0\t3\n1\t2\n2\t4\n"


def write_dataset(root: Path, labels=TINY_LABELS, edges=TINY_EDGES, corpus=None, test=None, test_labels=None,
                  train_labels=None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    files = {
        "labels.txt": labels,
        "label_hierarchy.txt": edges,
        "train/corpus.txt": corpus if corpus is not None else "d1\tfirst document\nd2\tsecond document\n",
        "test/corpus.txt": test,
        "test/doc2labels.txt": test_labels,
        "train/doc2labels.txt": train_labels,
    }
    for name, content in files.items():
        if content is None:
            continue
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return root


@pytest.fixture
def tiny_dataset(tmp_path) -> Path:
    return write_dataset(
        tmp_path / "tiny",
        test="t1\tgreat thing\nt2\tbad thing\n",
        test_labels="t1\t0,2,4\nt2\t1\n",
    )


def run_cli(*args, cwd=None, env=None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "taxoclass.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=600)


# `make test` runs the suite on two workers (pytest-xdist, `--dist loadfile`: a module's tests on one worker, so its
# module-scoped fixtures are built once); part of its time is spent waiting on Ray instances and subprocesses (two
# workers: 16 min 50 s against 21 min 21 s on one). These modules go first, the longest first, so that no long module
# starts last while the other worker idles.
LONGEST_FIRST = ["test_ray", "test_search", "test_pipeline", "test_ray_cluster", "test_ray_predict", "test_config",
                 "test_readme", "test_package", "test_jobs"]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.module.__name__, len(rank)))  # stable: a module's own order is kept
