"""User-facing errors: each prints as one line and makes the CLI exit with status 2.

A `DataError` names the file and line; a `ConfigError` names the config key.
The CLI catches `TaxoclassError` and prints `str(err)` with no traceback. Both survive pickling
(`__reduce__`), so a search trial's error reaches the driver as the same one line.
`warn` prints a problem the run goes on with, as one `taxoclass: warning:` line on stderr.
"""

from __future__ import annotations

import os
import sys


class TaxoclassError(Exception):
    """Base class for errors caused by the user's input, not by a bug."""


class DataError(TaxoclassError):
    def __init__(self, path, message: str, line: int | None = None):
        self.path = os.fspath(path) if path is not None else None
        self.line = line
        self.message = message
        where = self.path or "<input>"
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {message}")

    def __reduce__(self):
        # rebuilt from its own arguments: Ray copies a trial's error between processes by pickling it, and the
        # default (the class called with `args`, the one formatted line) would miss `message`
        return type(self), (self.path, self.message, self.line)


class ConfigError(TaxoclassError):
    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(f"config key '{key}': {message}" if key else message)

    def __reduce__(self):
        return type(self), (self.key, self.message)  # as DataError's: whole after Ray's copy between processes


def warn(message: str) -> None:
    print(f"taxoclass: warning: {message}", file=sys.stderr, flush=True)
