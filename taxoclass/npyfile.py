"""NumPy files of the cache, read without running code and checked against what their reader expects.

A checksum proves that a file is the one that was sealed, not that it holds what the stage needs:
one replaced together with its checksum could hold anything. So every array is checked from its
header (dtype and shape) before it is read.

Features:
- `load_npy(path, rows, columns)`: a `.npy` matrix, memory-mapped, once its header shows floats of
  that shape; `load_npz(path, expected)`: the arrays of an `.npz`, each member's header checked first;
- an array of Python objects is refused (`DataError`): only a pickle makes one, and loading it could
  run code, so it is treated as the tampered `.pt` entries are (`tensorfile.py`); any other mismatch
  (another dtype, another shape, a member missing, a file that is not NumPy's, data cut short or
  longer than its header says) is `Unusable`, and the caller computes the entry again, saying why.
Nothing is loaded with allow_pickle=True.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from taxoclass.cache import Unusable
from taxoclass.errors import DataError

__all__ = ["REDO", "Unusable", "load_npy", "load_npz"]

REDO = "delete it and run again: its stage is computed anew"


def load_npy(path: Path, rows: int | None, columns: int | None) -> np.ndarray:
    """The float matrix in `path` (rows x columns; None: any), memory-mapped."""
    path = Path(path)
    with open(path, "rb") as fh:
        shape, dtype = _header(fh, path.name)
        data_bytes = path.stat().st_size - fh.tell()
    _check(path, path.name, shape, dtype, (rows, columns))
    _check_length(path.name, shape, dtype, data_bytes)  # a file cut short, header intact: mmap would fail
    return np.load(path, mmap_mode="r")


def load_npz(path: Path, expected: dict[str, tuple[int | None, int | None]]) -> dict[str, np.ndarray]:
    """{name: float matrix} of `path`, which must hold exactly the names of `expected`, each of its shape."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            headers, lengths = {}, {}
            for member in zf.namelist():
                name = member.removesuffix(".npy")
                with zf.open(member) as fh:
                    headers[name] = _header(fh, f"{path.name}'s array '{name}'")
                    lengths[name] = zf.getinfo(member).file_size - fh.tell()
                _refuse_objects(path, f"{path.name}'s array '{name}'", headers[name][1])  # before anything else is said
            if set(headers) != set(expected):
                raise Unusable(f"{path.name} holds the arrays {sorted(headers)}, expected {sorted(expected)}")
            for name, (shape, dtype) in headers.items():
                _check(path, f"{path.name}'s array '{name}'", shape, dtype, expected[name])
                _check_length(f"{path.name}'s array '{name}'", shape, dtype, lengths[name])
    except zipfile.BadZipFile:
        raise Unusable(f"{path.name} is not an .npz archive") from None
    try:
        with np.load(path) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:  # a member's data damaged behind an intact directory
        raise Unusable(f"{path.name} cannot be read ({type(err).__name__}: {err})") from None


def _header(fh, what: str) -> tuple[tuple[int, ...], np.dtype]:
    try:
        version = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(fh)
    except ValueError as err:
        raise Unusable(f"{what} is not a NumPy array ({err})") from None
    return shape, dtype


def _refuse_objects(path: Path, what: str, dtype: np.dtype) -> None:
    if dtype.hasobject:
        raise DataError(path, f"refused: {what} holds Python objects (an array of dtype object), not numbers, and loading "
                              f"it could run code; {REDO}")


def _check(path: Path, what: str, shape: tuple[int, ...], dtype: np.dtype, want: tuple[int | None, int | None]) -> None:
    _refuse_objects(path, what, dtype)
    matches = len(shape) == len(want) and all(w is None or s == w for s, w in zip(shape, want))
    if dtype.kind != "f" or not matches:
        wanted = " x ".join("N" if w is None else str(w) for w in want)
        raise Unusable(f"{what} holds {dtype} of shape {' x '.join(map(str, shape)) or 'scalar'}, expected floats of {wanted}")


def _check_length(what: str, shape: tuple[int, ...], dtype: np.dtype, data_bytes: int) -> None:
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if data_bytes != expected:
        said = "cut short" if data_bytes < expected else "longer than its header says"
        raise Unusable(f"{what} is {said}: {data_bytes} bytes of data where its header ({dtype}, "
                       f"{' x '.join(map(str, shape)) or 'scalar'}) needs {expected}")
