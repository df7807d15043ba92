"""One run per run dir: a second run on a run dir in use stops at once, naming the holder.

Features:
- `RunDirLock.acquire(run_dir)`: an exclusive `fcntl.flock` on `<run_dir>/.lock`, never waited
  for; the holder writes its pid into the file. A second `taxoclass run` or `taxoclass stage N` on
  the same run dir gets `RUN_DIR: in use by another taxoclass run (pid N); ...` (exit status 2)
  before it writes anything there;
- the kernel drops the lock when its holder ends, also after kill -9: a lock file left behind
  never blocks the next run;
- taken by `RunContext.open` (every run that writes); the read-only open (`view.py`) takes none.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from taxoclass.errors import DataError

LOCK_FILE = ".lock"


class RunDirLock:
    """The held lock of one run dir; `release` it when the run ends."""

    def __init__(self, fd: int):
        self._fd = fd

    @classmethod
    def acquire(cls, run_dir: Path) -> RunDirLock:
        fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataError(run_dir, f"in use by another taxoclass run (pid {holder}); wait for it to end, "
                            "or give this run another run_name") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor releases the flock
            self._fd = None
