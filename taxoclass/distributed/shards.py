"""Rows coming back from Ray Data, gathered into whole shards.

Ray Data does not keep order: a shard's rows (each carrying its `shard` number) arrive in any
batch, mixed with other shards'. `whole_shards` hands each shard on once, as soon as all its
rows are in, so the driver holds only the shards in flight and writes each one when it is whole
(stage 1's Parquet shards, `ray_data.py`; predict's JSON-lines shards, `ray_predict.py`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator


def whole_shards(batches: Iterable[dict], expected: dict[int, int], columns: tuple[str, ...]) -> Iterator[tuple[int, dict]]:
    """(shard, {column: its rows' values}) for each shard once its `expected[shard]` rows are in; a shard still
    short when the batches end is a RuntimeError (a row was lost: nothing incomplete is handed on)."""
    pending: dict[int, dict[str, list]] = {}
    for batch in batches:
        for i, s in enumerate(batch["shard"]):
            s = int(s)
            rows = pending.setdefault(s, {c: [] for c in columns})
            for c in columns:
                rows[c].append(batch[c][i])
            if len(rows[columns[0]]) == expected[s]:
                yield s, pending.pop(s)
    if pending:
        raise RuntimeError(f"Ray Data returned incomplete shards: {sorted(pending)}")
