"""The run directory contract that other tools and outside checks read.

`<output_dir>/<run_name>/` holds:
- `config.yaml`: the resolved config;
- `summary.json`: every final metric under its tracking name (`test/example_f1`, ...);
- `metrics.jsonl`: every logged step, one JSON object a line; each attempt starts with an `{"attempt": N}` row;
- `predictions/test.jsonl`: `{"doc_id", "ranked": [class ids, best first], "scores": [floats]}`.

Files are written to a temporary name and renamed, so an interrupted run never
leaves a half-written file that a rerun would trust; they get the mode the umask
allows, like any other tool's (a shared `output_dir` stays readable). JSON is strict:
a non-finite number is written as null.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

from taxoclass.data.taxonomy import Taxonomy
from taxoclass.data.textfile import read_lines
from taxoclass.errors import DataError

PREDICTIONS = Path("predictions") / "test.jsonl"
MIN_RANKED = 10


def atomic_write_text(path: Path, text: str, what: str = "this file") -> None:
    atomic_replace_with(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), what)


def atomic_replace_with(path: Path, writer, what: str = "this file") -> None:
    """Call `writer(tmp_path)`, then move the result over `path` in one step. A write the system refuses
    (a read-only folder, a full disk) is one `DataError` line, `PATH: cannot write WHAT: reason`, and
    leaves neither `path` changed nor a temporary file behind."""
    path = Path(path)
    with cannot_write(path, what):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    try:
        writer(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; a plain open() would honour the umask
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if err.filename is not None and os.fsdecode(err.filename) != tmp:
            raise  # about another file (the source of a copy), not this write
        raise write_error(path, what, err) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_error(path: Path, what: str, err: OSError) -> DataError:
    return DataError(path, f"cannot write {what}: {err.strerror or err}")


@contextmanager
def cannot_write(path: Path, what: str = "this file"):
    """An OSError while writing `path` becomes `PATH: cannot write WHAT: reason` (exit 2, no traceback)."""
    try:
        yield
    except OSError as err:
        raise write_error(path, what, err) from None


def writable_dir(path: Path, what: str) -> Path:
    """Create `path` if needed and prove it takes files (a read-only folder or file system, a file in
    the way), before any work is done."""
    path = Path(path)
    with cannot_write(path, what):
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".write-test."):
            pass
    return path


def current_umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it
    os.umask(mask)
    return mask


def atomic_copy(src: Path, dst: Path) -> None:
    """dst becomes an independent copy of src: truncating one never touches the other."""
    atomic_replace_with(dst, lambda tmp: shutil.copyfile(src, tmp))


def json_safe(value):
    """`value` with NaN and +-Infinity as None and numpy scalars as Python numbers: strict JSON."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int):
        return value
    return str(value)


def strict_json(data, **kw) -> str:
    return json.dumps(json_safe(data), allow_nan=False, **kw)


def write_json(path: Path, data, what: str = "this file") -> None:
    atomic_write_text(path, strict_json(data, indent=2, sort_keys=True) + "\n", what)


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

