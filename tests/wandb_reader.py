"""Read an offline wandb run back from its `run-<id>.wandb` file (no mock, no network).

The file is a LevelDB-style log: a 7-byte header (":W&B", magic 0xBEE1, version), then
32 KiB blocks of records, each with a 7-byte header (crc32 uint32, length uint16, type
uint8: 1 full, 2 first, 3 middle, 4 last); a block's tail shorter than a header is padding.
Each record's payload is a `wandb_internal_pb2.Record`.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def iter_payloads(path: Path):
    data = Path(path).read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:HEADER])
    assert ident == b":W&B" and magic == 0xBEE1, f"not a wandb datastore: {path}"
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < HEADER:
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0 and length == 0:  # zero padding at the end of a block
            pos += left_in_block
            continue
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
            pending = b""


@dataclass
class OfflineRun:
    run_id: str = ""
    project: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    tags: list = field(default_factory=list)
    config: dict = field(default_factory=dict)
    history: list = field(default_factory=list)  # one dict per wandb.log call
    summary: dict = field(default_factory=dict)
    artifacts: list = field(default_factory=list)  # (name, type)
    metric_defs: dict = field(default_factory=dict)  # name -> step_metric


def _value(item):
    return json.loads(item.value_json) if item.value_json else None


def _key(item):
    return item.key or "/".join(item.nested_key)


def read_run(path: Path) -> OfflineRun:
    from wandb.proto import wandb_internal_pb2

    run = OfflineRun()
    for payload in iter_payloads(path):
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(payload)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            run.run_id, run.project, run.name = r.run_id, r.project, r.display_name
            run.group, run.job_type, run.tags = r.run_group, r.job_type, list(r.tags)
            for item in r.config.update:
                run.config[_key(item)] = _value(item)
        elif kind == "config":
            for item in rec.config.update:
                run.config[_key(item)] = _value(item)
        elif kind == "history":
            run.history.append({_key(item): _value(item) for item in rec.history.item})
        elif kind == "summary":
            for item in rec.summary.update:
                run.summary[_key(item)] = _value(item)
        elif kind == "artifact":
            run.artifacts.append((rec.artifact.name, rec.artifact.type))
        elif kind == "metric":
            if rec.metric.name:
                run.metric_defs[rec.metric.name] = rec.metric.step_metric
            elif rec.metric.glob_name:
                run.metric_defs[rec.metric.glob_name] = rec.metric.step_metric
    run.config = {k: (v.get("value") if isinstance(v, dict) and "value" in v else v) for k, v in run.config.items()}
    return run


def find_runs(root: Path) -> list[Path]:
    return sorted(Path(root).rglob("run-*.wandb"))
