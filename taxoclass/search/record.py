"""The search's own record, in JSON: what `--resume` and the end of a search read, instead of Ray Tune's state.

Tune keeps its state in pickles (`tuner.pkl`, `searcher-state-*.pkl`, a failed trial's `error.pkl`), and
loading a pickle can run any code it names: a search folder copied from someone else, or from shared
storage, must not. So the search never hands its folder to `Tuner.restore`; it writes what it needs itself:

- `search.json`, once, when the search starts: the config its trials run on, the base best_config.yaml
  starts from, the space, the objective, the dev file, the Optuna storage, the trials asked and the
  default trial's point;
- `trials/<trial id>.json`, written by the driver (`TrialRecord`, a Tune callback) when a trial starts
  (its config, `"state": "running"`) and when it ends (`"done"` with its last report, or `"error"` with
  its error's one line).

Both are written atomically (a temporary name, then a rename). `--resume` starts a new Tuner on the same
folder and Optuna study: the finished trials are kept as their records say, the trials that were running
or failed run again with the same parameters (`unfinished`). A record that cannot be read is a one-line
DataError naming the file: nothing is dropped silently.
"""

from __future__ import annotations

import json
from pathlib import Path

from taxoclass.atomic import write_json
from taxoclass.errors import DataError

SEARCH_FILE = "search.json"
TRIALS_DIR = "trials"
FORMAT = 1


def _read(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, f"{what} not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(path, f"unreadable {what} ({type(err).__name__}: {err})") from None
    except json.JSONDecodeError as err:
        raise DataError(path, f"unreadable {what} ({err.msg}): cut short or edited; the search cannot be resumed "
                              "from it", err.lineno) from None
    if not isinstance(data, dict):
        raise DataError(path, f"unreadable {what}: expected a JSON object")
    return data


def write_search(search_dir: Path, settings: dict) -> None:
    write_json(search_dir / SEARCH_FILE, {"format": FORMAT, **settings}, "the search record")


def read_search(search_dir: Path) -> dict:
    data = _read(search_dir / SEARCH_FILE, "search record")
    missing = [k for k in ("base", "user_base", "space", "objective", "num_samples") if k not in data]
    if data.get("format") != FORMAT or missing:
        raise DataError(search_dir / SEARCH_FILE, f"not a search record of this taxoclass (format {data.get('format')!r}"
                                                  f"{', no ' + missing[0] if missing else ''})")
    return data


def read_trials(search_dir: Path) -> list[dict]:
    """Every trial's record, in the order the trials started."""
    records = []
    for path in sorted((search_dir / TRIALS_DIR).glob("*.json")):
        record = _read(path, "trial record")
        if not isinstance(record.get("trial"), str) or record.get("state") not in ("running", "done", "error") \
                or not isinstance(record.get("config"), dict):
            raise DataError(path, "unreadable trial record: expected trial, state (running, done or error) and config")
        records.append(record)
    return sorted(records, key=lambda r: (r.get("started") or 0, r["trial"]))


def finished(records: list[dict]) -> list[dict]:
    """The trials that ran to their end (or that ASHA stopped): kept as they are by --resume."""
    return [r for r in records if r["state"] == "done"]


def unfinished(records: list[dict]) -> list[dict]:
    """The trials a killed search left running, or that failed: --resume runs their parameters again."""
    return [r for r in records if r["state"] != "done"]


def forget(search_dir: Path, records: list[dict]) -> None:
    """Drop these trials' records (they run again under new ids)."""
    for r in records:
        (search_dir / TRIALS_DIR / f"{r['trial']}.json").unlink(missing_ok=True)


def error_line(error_file: str | None) -> str:
    """A failed trial's error as one line, from the text Tune wrote (`error.txt`, never its `error.pkl`): the
    project's own errors by their message (`DataError: dev.txt:3: ...` -> `dev.txt:3: ...`), anything else
    by its last line."""
    try:
        lines = [line.strip() for line in Path(error_file).read_text(errors="replace").splitlines() if line.strip()]
    except (OSError, TypeError):
        return "failed (no error.txt)"
    for line in reversed(lines):
        for name in ("DataError", "ConfigError"):
            if line.startswith((f"taxoclass.errors.{name}: ", f"{name}: ")):
                return line.split(": ", 1)[1]
    return lines[-1] if lines else "failed"
