"""Line-by-line reading of the dataset's text files with file:line errors.

Every reader goes through `read_lines`, so a missing file, bytes that are not
UTF-8 and a `.gz` twin are handled once, with the same one-line messages.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

from taxoclass.errors import DataError


def resolve_maybe_gz(path: Path) -> Path | None:
    """`path` if it exists, else `path.gz` if that exists, else None."""
    if path.is_file():
        return path
    gz = path.with_name(path.name + ".gz")
    return gz if gz.is_file() else None


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (line_number, line without its newline), 1-based; skips blank lines.

    Decoding is strict so a stray Latin-1 byte is reported with its line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(path, f"bytes that are not UTF-8 at column {err.start + 1}", number) from None
            line = line.rstrip("\r\n")
            if line.strip():
                yield number, line


def split_tab(path: Path, number: int, line: str, fields: int, what: str) -> list[str]:
    parts = line.split("\t")
    if len(parts) != fields:
        raise DataError(path, f"expected {what} ({fields} tab-separated fields), got {len(parts)}", number)
    return [p.strip() for p in parts]

