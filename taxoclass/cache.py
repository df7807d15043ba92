"""Stage cache entries that cannot lie: the stage's files, then a checksum of them, written last.

An entry whose checksum is missing (the run was killed before it was written) or does not
match (a file was truncated or replaced since) is a cache miss with a one-line warning: the
stage runs again and rewrites the entry. Nothing is trusted because it merely exists, and an intact
entry is checked against what the stage expects as it is read, whatever its checksum says (`Unusable`):
its arrays' dtype, shape and length (`npyfile.py`), its stats, stage 2's structure and class ids
(`pipeline/store.py`), a model's tensors against the model (`stages/model_io.py`).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from taxoclass.atomic import atomic_write_text

CHUNK = 1 << 20


class Unusable(Exception):
    """An entry's file is intact (its checksum matches) but not what its reader expects: replaced together with its
    checksum, or written by another version. The message says how; the caller computes the entry again, saying why
    (`warn_unusable`), or, reading a finished run without computing anything, says it in one line."""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def seal(checksum: Path, files: list[Path]) -> None:
    """Record the files' checksums; call once every file of the entry is complete."""
    atomic_write_text(checksum, json.dumps({f.name: file_sha256(f) for f in files}, sort_keys=True))


def problem(checksum: Path, files: list[Path]) -> str | None:
    """Why the entry cannot be trusted, or None when it is intact."""
    for f in files:
        if not f.is_file():
            return f"{f.name} is missing"
    if not checksum.is_file():
        return "it has no checksum (the run that wrote it was interrupted)"
    try:
        recorded = json.loads(checksum.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"its checksum file {checksum.name} is unreadable"
    for f in files:
        if not isinstance(recorded, dict) or recorded.get(f.name) != file_sha256(f):
            return f"{f.name} does not match its checksum (truncated or changed since it was written)"
    return None


def is_intact(checksum: Path, files: list[Path]) -> bool:
    """True for an intact entry; False, with a warning when anything of it exists, otherwise."""
    if not checksum.exists() and not any(f.exists() for f in files):
        return False  # never computed: an ordinary miss
    why = problem(checksum, files)
    if why is not None:
        warn_unusable(checksum, why)
    return why is None


def warn_unusable(checksum: Path, why: str) -> None:
    """The one line that says an entry is computed again, and why."""
    print(f"taxoclass: warning: cache entry {checksum.parent / checksum.stem} is not usable ({why}): computing it again",
          file=sys.stderr, flush=True)
