"""Files of tensors that load without running code: the only way the project reads a `.pt` file.

Features:
- `load(path)`: `torch.load(weights_only=True)`, whose unpickler builds tensors, dicts, lists,
  tuples, strings and numbers and refuses every other object; a file that holds any other object
  (a tampered `model.pt` whose `__reduce__` would call `os.system`, a file from an older version
  with a NumPy array) is a one-line `DataError` that says it was refused, and a cut or foreign file
  one that says it is unreadable: nothing in it is ever executed;
- `save(obj, path)`: `torch.save` through a file handle whose failed writes are remembered, so a full
  disk is the `OSError` the file system raised (`No space left on device`), never torch's
  `RuntimeError` about stream positions (its zip writer swallows the handle's error);
- `to_json` / `from_json`: what is not a tensor (configs, taxonomies, stats, logs) travels as a
  JSON string inside the file; floats round-trip exactly, `inf` and `nan` included.
"""

from __future__ import annotations

import errno
import json
import pickle
import re
from pathlib import Path

import torch

from taxoclass.errors import DataError


def save(obj, path: str | Path) -> None:
    with open(path, "wb") as fh:
        recording = _RecordingWriter(fh)
        try:
            torch.save(obj, recording)
        except RuntimeError as err:
            # torch's zip writer swallows the OSError its write raised (a full disk) and fails later on a stream
            # position ("unexpected pos 704 vs 598"): the file system's own error is what happened
            if recording.error is not None:
                raise recording.error from None
            raise OSError(errno.EIO, f"torch.save failed: {_first_line(err)}") from None


class _RecordingWriter:
    """A binary file handle that keeps the last OSError its `write` raised, for torch.save to be honest about."""

    def __init__(self, fh):
        self.fh, self.error = fh, None

    def write(self, data) -> int:
        try:
            return self.fh.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.fh.flush()


class Refused(DataError):
    """The file holds a Python object whose loading could run code: refused, never computed around."""


def load(path: str | Path, redo: str):
    """The file's content, tensors on the CPU; `redo` ends the error line (how to make the file again). A file holding
    a Python object is `Refused`; one cut short or foreign a plain `DataError`."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        if found:
            raise Refused(path, f"refused: it holds a Python object ({found.group(1)}), not only tensors and plain values, "
                                f"and loading it could run code; {redo}") from None
        raise DataError(path, f"not a readable checkpoint (truncated or corrupt: {type(err).__name__}); {redo}") from None
    except Exception as err:  # torch raises RuntimeError, EOFError, ... for a cut or foreign file
        raise DataError(path, f"not a readable checkpoint (truncated or corrupt: {type(err).__name__}); {redo}") from None


def to_json(value) -> str:
    """JSON text of plain values; NumPy scalars become Python numbers, anything else is a bug (TypeError)."""
    return json.dumps(value, default=_plain)


def from_json(text, path: str | Path, redo: str):
    if not isinstance(text, str):
        raise DataError(path, f"not a taxoclass checkpoint (expected JSON text, got {type(text).__name__}); {redo}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(path, f"not a taxoclass checkpoint (malformed JSON inside: {err.msg}); {redo}") from None


def _plain(value):
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0 and not isinstance(value, torch.Tensor):
        return value.item()  # numpy.float32 and friends
    raise TypeError(f"{type(value).__name__} is not JSON: store it as a tensor")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return re.sub(r"^\[enforce fail at [^\]]*\]\s*\.?\s*", "", text)
