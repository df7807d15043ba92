"""`taxoclass predict --run DIR --input FILE --output OUT runtime=ray`: batch prediction on Ray Data.

Features:
- checked before Ray starts, as the local path checks them: the run dir and its model (loaded once on
  the driver, so a bad `model.pt` is one line, not an actor's traceback), every line of the input (its
  format and count, with `predict.py`'s readers), `--top-k`, and the output folder (it takes files, and
  it is new, empty, or holds the shards of this very prediction: `manifest.json` says what they hold);
- the input is cut into shards by position, `ray.predict_shard_size` texts each, so shard N is always
  the same texts; one Ray Data read task on the driver's node (the input need not be on storage the
  other nodes see) reads it with the local path's reader (the same ids and texts: plain lines,
  `id<TAB>text`, JSON lines, gzipped too) and emits one block per shard still to do;
- `map_batches` with `PredictActor` in an `ActorPoolStrategy(size=ray.predict_actors)`: each actor
  loads the model once (one GPU each with `ray.use_gpu`) and calls `Predictor.records`, the local path's
  batch -> records function, on batches of the local path's chunk size;
- Ray Data does not keep order: rows carry their shard and position, and the driver writes a shard as
  `part-NNNNN.jsonl` (its records in input order, the lines the local path prints) atomically once all
  of them are back (`shards.py`); a rerun, also after kill -9, predicts only the shards not on disk.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
from ray.data import Datasource, ReadTask
from ray.data.block import BlockMetadata

from taxoclass.atomic import atomic_write_text, writable_dir, write_json
from taxoclass.config import Config
from taxoclass.distributed.shards import whole_shards
from taxoclass.errors import DataError
from taxoclass.predict import CHUNK, Predictor, check_top_k, iter_texts, scan_input

MANIFEST = "manifest.json"
WHAT = "the predictions"


def part_path(out: Path, shard: int) -> Path:
    return Path(out) / f"part-{shard:05d}.jsonl"


class ShardedTexts(Datasource):
    """The input's texts as rows {shard, pos, doc_id, text}, one block per wanted shard, in one read task."""

    def __init__(self, path: Path, fmt: str, shard_size: int, shards: list[int]):
        self.path, self.fmt, self.shard_size, self.shards = Path(path), fmt, shard_size, sorted(shards)

    @property
    def supports_distributed_reads(self) -> bool:
        return False  # the input is the driver's file: read it on the driver's node

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None, data_context=None) -> list[ReadTask]:
        # one task: a gzip stream (and a plain file's line numbers) can only be read from the start
        meta = BlockMetadata(num_rows=None, size_bytes=None, input_files=(str(self.path),), exec_stats=None)
        return [ReadTask(self._blocks, meta)]

    def _blocks(self):
        import pyarrow as pa

        wanted, size, last = set(self.shards), self.shard_size, self.shards[-1]
        rows: dict[str, list] = {"shard": [], "pos": [], "doc_id": [], "text": []}
        for pos, (doc_id, text) in enumerate(iter_texts(self.path, self.fmt)):
            shard = pos // size
            if shard > last:
                break
            if shard in wanted:
                for column, value in zip(rows, (shard, pos, doc_id, text)):
                    rows[column].append(value)
            if (pos + 1) % size == 0 and rows["pos"]:  # the shard's last text: hand its block on
                yield pa.table(rows)
                rows = {column: [] for column in rows}
        if rows["pos"]:
            yield pa.table(rows)


class PredictActor:
    """One model per actor, loaded once; called on numpy batches {shard, pos, doc_id, text}."""

    def __init__(self, run_dir: str, device: str, top_k: int, path: bool):
        self.predictor, self.top_k, self.path = Predictor(run_dir, device), top_k, path

    def __call__(self, batch: dict) -> dict:
        records = self.predictor.records([str(i) for i in batch["doc_id"]], [str(t) for t in batch["text"]], self.top_k, self.path)
        return {"shard": batch["shard"], "pos": batch["pos"], "record": np.array([json.dumps(r) for r in records], dtype=object)}


def manifest_of(run_dir: Path, input_path: Path, fmt: str, count: int, shard_size: int, top_k: int, path: bool) -> dict:
    """What the shards of this prediction hold: a rerun reuses them only when it asks for the same."""
    digest = hashlib.sha256()
    with open(Path(run_dir) / "model.pt", "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    st = Path(input_path).stat()
    return {"input": str(Path(input_path).resolve()), "input_bytes": st.st_size, "input_mtime_ns": st.st_mtime_ns,
            "format": fmt, "texts": count, "shard_size": shard_size, "model_sha256": digest.hexdigest(),
            "records": "path" if path else f"top_k={top_k}"}


def open_output(out: Path, manifest: dict) -> None:
    """`out` ready for this prediction's shards: a new or empty folder (hidden files aside) gets the manifest;
    one holding the same manifest is resumed; anything else is refused, before any work, rather than mixed."""
    writable_dir(out, WHAT)
    found = out / MANIFEST
    if found.is_file():
        try:
            old = json.loads(found.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            old = {}
        if old == manifest:
            return
        old = old if isinstance(old, dict) else {}
        key = next((k for k in manifest if old.get(k) != manifest[k]), None)  # None: only keys this version lacks
        what = f"{key}: {old.get(key)!r} there, {manifest[key]!r} now" if key else f"its {MANIFEST} differs"
        raise DataError(out, f"holds the shards of another prediction ({what}); give another --output, or empty this one")
    if any(not p.name.startswith(".") for p in out.iterdir()):
        raise DataError(out, f"not empty, and not a predict output folder (no {MANIFEST}); give a new or empty folder to --output")
    write_json(found, manifest, WHAT)


def predict_on_ray(cfg: Config, run_dir: Path, input_path: Path, out: Path, top_k: int = 3, path: bool = False,
                   progress: bool = True) -> dict:
    """Every shard of the input that `out` does not hold yet, predicted on Ray Data; returns the counts."""
    run_dir, input_path, out = Path(run_dir), Path(input_path), Path(out)
    if not run_dir.is_dir():
        raise DataError(run_dir, "run dir not found")
    fmt, count = scan_input(input_path)
    check_top_k(top_k)
    Predictor(run_dir, "cpu")  # loads and checks the model, then lets it go: the actors load their own
    size = cfg.ray.predict_shard_size
    open_output(out, manifest_of(run_dir, input_path, fmt, count, size, top_k, path))
    shards = math.ceil(count / size)
    todo = [s for s in range(shards) if not part_path(out, s).is_file()]
    actors = _predict_shards(cfg, run_dir, input_path, fmt, count, todo, out, top_k, path, progress) if todo else 0
    for stale in out.glob(".part-*.tmp"):  # a killed run's half-written shard
        stale.unlink(missing_ok=True)
    return {"format": fmt, "texts": count, "shards": shards, "written": len(todo), "reused": shards - len(todo), "actors": actors}


def _predict_shards(cfg: Config, run_dir: Path, input_path: Path, fmt: str, count: int, todo: list[int], out: Path,
                    top_k: int, path: bool, progress: bool) -> int:
    """The shards `todo` through the actor pool, each written when whole; returns the number of actors."""
    import ray  # Ray-specific lines start here
    from ray.data import ActorPoolStrategy
    from tqdm.auto import tqdm

    from taxoclass.distributed.ray_instance import join_or_start

    r = cfg.ray
    started = join_or_start(r, log_to_driver=False)
    try:
        gpus = int(ray.cluster_resources().get("GPU", 0)) if r.use_gpu else 0
        actors = r.predict_actors or max(1, gpus)
        size = r.predict_shard_size
        expected = {s: min(count, (s + 1) * size) - s * size for s in todo}
        ray.data.DataContext.get_current().enable_progress_bars = False  # one bar, ours, counts the texts written
        ds = ray.data.read_datasource(ShardedTexts(input_path, fmt, size, todo), num_cpus=0).map_batches(
            PredictActor,
            fn_constructor_kwargs={"run_dir": str(run_dir.resolve()), "device": "cuda" if gpus else "cpu", "top_k": top_k,
                                   "path": path},
            batch_size=CHUNK,
            batch_format="numpy",
            compute=ActorPoolStrategy(size=actors),
            num_gpus=1 if gpus else 0,
            num_cpus=0 if gpus else 1,
        )
        batches = ds.iter_batches(batch_size=None, batch_format="numpy")
        with tqdm(total=sum(expected.values()), disable=not progress, unit="text", desc="predict", dynamic_ncols=True) as bar:
            for shard, rows in whole_shards(batches, expected, ("pos", "record")):
                order = np.argsort(np.asarray(rows["pos"]), kind="stable")
                atomic_write_text(part_path(out, shard), "".join(rows["record"][i] + "\n" for i in order), WHAT)
                bar.update(len(order))
    finally:
        if started:
            ray.shutdown()  # only the instance started here; never `ray stop`
    return actors
