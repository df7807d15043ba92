"""The run's log: every logged metric in `metrics.jsonl`, forwarded to the sink, and status lines.

Features:
- `MetricsLog`: appends each logged dict to `metrics.jsonl` as strict JSON (`{"step": N or null,
  "time": ..., "<name>": value}`) and hands it to the sink; `stats` holds the last value of every
  name, what the summary starts from; `recording()` collects the last value of every name logged
  while it is open (a stage's cache entry stores them all, so that replaying it gives the summary
  what running it gave);
- each attempt on a run dir starts with a marker row `{"attempt": N, "time": ..., "command": ...}`:
  earlier attempts' curves stay and a reader tells them apart; a torn last line (a kill
  mid-write) is cut first;
- `read_metrics`: the rows back, each tagged with its attempt (`ATTEMPT`), a malformed line a
  one-line error naming it;
- `say`: a status line on stderr (`taxoclass: ...`); stdout carries results.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from taxoclass.atomic import cannot_write, strict_json
from taxoclass.errors import DataError
from taxoclass.sink import Sink

ATTEMPT = "_attempt"  # added to each row on reading: the attempt that logged it


def say(msg: str) -> None:
    print(f"taxoclass: {msg}", file=sys.stderr, flush=True)


class MetricsLog:
    """metrics.jsonl of one attempt, and the sink it forwards to."""

    def __init__(self, path: Path, sink: Sink | None, command: str = "run"):
        self.path = path
        self.sink = sink or Sink()
        self.stats: dict = {}
        self._recorders: list[dict] = []
        path.parent.mkdir(parents=True, exist_ok=True)
        attempt = _previous_attempts(path) + 1
        with cannot_write(path):
            self._fh = open(path, "a", encoding="utf-8")
        self._write({"attempt": attempt, "time": round(time.time(), 3), "command": command})

    def __call__(self, metrics: dict, step: int | None = None) -> None:
        self.stats.update(metrics)
        for recorder in self._recorders:
            recorder.update(metrics)
        self._write({"step": step, "time": round(time.time(), 3), **metrics})
        self.sink(metrics, step=step)

    def _write(self, row: dict) -> None:
        with cannot_write(self.path):  # a full disk: one line naming the file, not a traceback
            self._fh.write(strict_json(row) + "\n")
            self._fh.flush()

    @contextmanager
    def recording(self) -> Iterator[dict]:
        """A dict that receives the last value of every name logged until the block ends."""
        recorder: dict = {}
        self._recorders.append(recorder)
        try:
            yield recorder
        finally:
            self._recorders.remove(recorder)

    def close(self) -> None:
        self._fh.close()


def _previous_attempts(path: Path) -> int:
    """Attempts already in metrics.jsonl (a file from before markers counts as one); a torn last line,
    left by a kill mid-write, is cut so the file stays JSON lines."""
    if not path.is_file() or path.stat().st_size == 0:
        return 0
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        with open(path, "rb+") as fh:
            fh.truncate(data.rfind(b"\n") + 1)
    markers = sum(1 for line in data.splitlines() if line.startswith(b'{"attempt":'))
    return max(markers, 1)


def read_metrics(path: Path) -> list[dict]:
    """Every metrics row of the file, in order, each with its attempt under `ATTEMPT` (markers left out)."""
    if not path.is_file():
        raise DataError(path, "not a run dir (no metrics.jsonl)")
    rows, attempt = [], 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(path, f"malformed JSON line: {err.msg}", number) from None
            if isinstance(row, dict) and "attempt" in row:  # a marker, not metrics
                attempt = row["attempt"]
                continue
            rows.append({**row, ATTEMPT: attempt})
    return rows
