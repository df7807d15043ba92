"""The run directory contract that other tools and outside checks read.

`<output_dir>/<run_name>/` holds:
- `config.yaml`: the resolved config;
- `summary.json`: every final metric under its tracking name (`test/example_f1`, ...);
- `metrics.jsonl`: every logged step, one JSON object a line; each attempt starts with an `{"attempt": N}` row;
- `predictions/test.jsonl`: `{"doc_id", "ranked": [class ids, best first], "scores": [floats]}`.

Every file is written by `atomic.py` (a temporary name renamed, the umask's mode, strict JSON).
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path

from taxoclass.atomic import atomic_write_text
from taxoclass.data.taxonomy import Taxonomy
from taxoclass.data.textfile import read_lines
from taxoclass.errors import DataError

PREDICTIONS = Path("predictions") / "test.jsonl"
MIN_RANKED = 10


STALE_WHEN_CONFIG_CHANGES = ("summary.json", "predictions", "model.pt")
# where a run lives and how it is tracked: changing these does not change its results
NOT_RESULT_KEYS = ("output_dir", "run_name", "cache_dir", "force_stage", "resume", "tracking")


def remove_stale_outputs(run_dir: Path, new_config: dict) -> list[str]:
    """Delete the results a run dir holds when its config.yaml is about to change: they belong to the old config."""
    import yaml

    old_path = Path(run_dir) / "config.yaml"
    if not old_path.is_file():
        return []
    try:
        old = yaml.safe_load(old_path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError):
        old = {}

    def results_part(cfg: dict) -> dict:
        return {k: v for k, v in cfg.items() if k not in NOT_RESULT_KEYS} if isinstance(cfg, dict) else {}

    if results_part(old) == results_part(new_config):
        return []
    removed = []
    for name in STALE_WHEN_CONFIG_CHANGES:
        target = Path(run_dir) / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        else:
            continue
        removed.append(name)
    return removed


def write_predictions(path: Path, doc_ids: Sequence[str], rankings, scores, taxonomy: Taxonomy) -> None:
    """One line per document; `rankings[i]` are class indices, best first."""
    lines = []
    for doc_id, ranked, sc in zip(doc_ids, rankings, scores):
        row = {
            "doc_id": doc_id,
            "ranked": [taxonomy.output_id(int(c)) for c in ranked],
            "scores": [round(float(s), 6) for s in sc],
        }
        lines.append(json.dumps(row))
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_predictions(path: Path, taxonomy: Taxonomy) -> dict[str, list[int]]:
    """{doc_id: ranked class indices}; every malformed line is a file:line error."""
    return {doc_id: ranked for doc_id, (_, ranked) in read_prediction_lines(path, taxonomy).items()}


def read_prediction_lines(path: Path, taxonomy: Taxonomy) -> dict[str, tuple[int, list[int]]]:
    """{doc_id: (its line number, ranked class indices)}, for errors that name the line."""
    path = Path(path)
    out: dict[str, tuple[int, list[int]]] = {}
    for number, line in read_lines(path):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(path, f"malformed JSON line: {err.msg} at column {err.colno}", number) from None
        if not isinstance(row, dict) or "doc_id" not in row or "ranked" not in row:
            raise DataError(path, "expected an object with 'doc_id' and 'ranked'", number)
        doc_id, ranked = str(row["doc_id"]), row["ranked"]
        if not isinstance(ranked, list) or not ranked:
            raise DataError(path, "'ranked' must be a non-empty list of class ids", number)
        scores = row.get("scores")
        if scores is not None:
            if not isinstance(scores, list) or len(scores) != len(ranked):
                raise DataError(path, "'scores' must be a list as long as 'ranked'", number)
            if any(not isinstance(s, (int, float)) or math.isnan(s) for s in scores):
                raise DataError(path, "'scores' must hold numbers", number)
        if doc_id in out:
            raise DataError(path, f"duplicate document id '{doc_id}'", number)
        indices = []
        for cid in ranked:
            if str(cid) not in taxonomy.index:
                raise DataError(path, f"unknown class id '{cid}' in 'ranked'", number)
            indices.append(taxonomy.index[str(cid)])
        if len(set(indices)) != len(indices):
            raise DataError(path, "a class appears twice in 'ranked'", number)
        out[doc_id] = (number, indices)
    if not out:
        raise DataError(path, "no predictions")
    return out

