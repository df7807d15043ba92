"""Line-by-line reading of the dataset's text files with file:line errors.

Every reader goes through `read_lines`, so a missing file, bytes that are not
UTF-8, a byte order mark and a `.gz` twin (also one that is not gzip or is cut
short) are handled once, with the same one-line messages.
"""

from __future__ import annotations

import codecs
import gzip
import zlib
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
    if path.is_dir():
        raise DataError(path, "a folder, not a file")
    if not path.is_file():
        raise DataError(path, "file not found")
    if path.suffix == ".gz":
        yield from _gzip_lines(path)
        return
    with open(path, "rb") as fh:
        yield from _decoded(path, enumerate(fh, start=1))


def _decoded(path: Path, numbered_raw) -> Iterator[tuple[int, str]]:
    for number, raw in numbered_raw:
        if number == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8):]  # editors on Windows start files with a BOM; it is not part of the first id
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(path, f"bytes that are not UTF-8 at column {err.start + 1}", number) from None
        line = line.rstrip("\r\n")
        if line.strip():
            yield number, line


def _gzip_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Lines of a .gz file; a file that is not gzip, or is cut short, is a one-line error."""
    last = 0
    try:
        with gzip.open(path, "rb") as fh:
            for item in _decoded(path, enumerate(fh, start=1)):
                last = item[0]
                yield item
    except gzip.BadGzipFile:
        raise DataError(path, "not a gzip file (rename it without .gz if it is plain text)") from None
    except (EOFError, zlib.error) as err:
        where = f"after line {last}" if last else "before the first line"
        raise DataError(path, f"truncated or corrupt gzip file ({err}), {where}") from None


def split_tab(path: Path, number: int, line: str, fields: int, what: str) -> list[str]:
    parts = line.split("\t")
    if len(parts) != fields:
        raise DataError(path, f"expected {what} ({fields} tab-separated fields), got {len(parts)}", number)
    return [p.strip() for p in parts]

