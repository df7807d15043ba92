"""Writing files so that an interrupted write never leaves a half-written file a rerun would trust.

Features:
- `atomic_replace_with(path, writer)`: the writer fills a temporary file beside `path`, which then
  replaces `path` in one rename; `atomic_write_text`, `write_json` (strict JSON: a non-finite
  number is null) and `atomic_copy` are made of it;
- files get the mode the umask allows, like any other tool's (a shared `output_dir` stays readable);
- a write the system refuses (a read-only folder, a full disk) is one `DataError` line naming the
  file (`cannot_write`), and `writable_dir` proves a folder takes files before any work is done.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from taxoclass.errors import DataError


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
        # a copy's error names both files (shutil's sendfile: the source first, the temporary second: a full disk
        # while model.pt was copied went through as a traceback); one that names only another file is about that file
        named = {os.fsdecode(n) for n in (err.filename, err.filename2) if n is not None}
        if named and tmp not in named:
            raise
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


def atomic_copy(src: Path, dst: Path, what: str = "this file") -> None:
    """dst becomes an independent copy of src: truncating one never touches the other."""
    atomic_replace_with(dst, lambda tmp: shutil.copyfile(src, tmp), what)


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
