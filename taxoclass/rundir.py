"""The run directory contract that other tools and outside checks read.

`<output_dir>/<run_name>/` holds:
- `config.yaml`: the resolved config;
- `summary.json`: every final metric under its tracking name (`test/example_f1`, ...);
- `metrics.jsonl`: every logged step, one JSON object a line;
- `predictions/test.jsonl`: `{"doc_id", "ranked": [class ids, best first], "scores": [floats]}`.

Files are written to a temporary name and renamed, so an interrupted run never
leaves a half-written file that a rerun would trust.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from taxoclass.data.taxonomy import Taxonomy
from taxoclass.data.textfile import read_lines
from taxoclass.errors import DataError

PREDICTIONS = Path("predictions") / "test.jsonl"
MIN_RANKED = 10


def atomic_write_text(path: Path, text: str) -> None:
    atomic_replace_with(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_replace_with(path: Path, writer) -> None:
    """Call `writer(tmp_path)`, then move the result over `path` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        writer(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


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
    path = Path(path)
    out: dict[str, list[int]] = {}
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
        out[doc_id] = indices
    if not out:
        raise DataError(path, "no predictions")
    return out

