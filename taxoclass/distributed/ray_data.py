"""Stage 1 on Ray Data: documents sharded over a pool of scorer actors.

Features:
- documents become a Ray dataset of rows {id, shard, text}; `map_batches` runs
  `SimilarityActor` (the engine's scorer, built once per actor) in an
  `ActorPoolStrategy(size=ray.stage1_actors)`, one GPU per actor when `ray.use_gpu`;
- output order is not trusted: rows carry their ids and are joined back by id;
- each shard of `ray.shard_size` documents is written as one Parquet file, atomically,
  as soon as all its rows are back; a stage 1 killed with kill -9 resumes and scores
  only the shards that are missing;
- the driver holds at most the shards in flight, not the corpus' scores (`load_shards`
  reads them back when stage 2 needs them);
- each row says which node scored it: `stage1/actor_nodes` counts the nodes the pool ran on (a
  node lost mid-stage shows up as one more when Ray Data restarts its actor elsewhere).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from taxoclass.config import Config, from_dict, to_dict
from taxoclass.data.taxonomy import Taxonomy
from taxoclass.distributed.shards import whole_shards


class SimilarityActor:
    """One scorer per actor; called on numpy batches {id, shard, text}."""

    def __init__(self, cfg: dict, hypothesis_texts: list[str], taxonomy: dict, use_gpu: bool, embed: bool = False):
        import ray
        import torch

        from taxoclass.stages.similarity import PrunedSearch, make_scorer

        full = from_dict(cfg, "stage-1 actor")
        self.settings, self.search = full.similarity, PrunedSearch.of(full.mining)
        self.taxonomy = Taxonomy.from_dict(taxonomy)
        device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.scorer = make_scorer(self.settings, device)
        self.scorer.set_classes(hypothesis_texts)
        self.embed = embed  # bi-encoder document embeddings instead of scores (the driver refines prototypes)
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict) -> dict:
        from taxoclass.stages.similarity import score_documents

        texts = [str(t) for t in batch["text"]]
        if self.embed:
            sims = self.scorer.vectors(texts, desc=None)
        else:
            sims = score_documents(self.scorer, texts, self.taxonomy, self.settings, self.search, desc=None)
        return {"id": batch["id"], "shard": batch["shard"], "sims": sims.astype(np.float32),
                "node": np.full(len(texts), self.node, dtype=object)}


def shard_path(folder: Path, shard: int) -> Path:
    return folder / f"shard-{shard:05d}.parquet"


def write_shard(path: Path, ids: np.ndarray, sims: np.ndarray) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from taxoclass.atomic import atomic_replace_with

    order = np.argsort(ids)
    flat = pa.array(sims[order].reshape(-1), type=pa.float32())
    table = pa.table({"id": pa.array(ids[order], type=pa.int64()), "sims": pa.FixedSizeListArray.from_arrays(flat, sims.shape[1])})
    atomic_replace_with(path, lambda tmp: pq.write_table(table, tmp))


def load_shards(folder: Path, num_docs: int, num_classes: int) -> np.ndarray:
    import pyarrow.parquet as pq

    out = np.full((num_docs, num_classes), np.nan, dtype=np.float32)
    seen = 0
    for path in sorted(folder.glob("shard-*.parquet")):
        table = pq.read_table(path)
        ids = table.column("id").to_numpy()
        out[ids] = table.column("sims").combine_chunks().flatten().to_numpy().reshape(len(ids), num_classes)
        seen += len(ids)
    if seen != num_docs:
        raise RuntimeError(f"{folder}: {seen} scored documents in the shards, expected {num_docs}")
    return out


def missing_shards(folder: Path, num_docs: int, shard_size: int) -> list[int]:
    return [s for s in range(math.ceil(num_docs / shard_size)) if not shard_path(folder, s).is_file()]


def score_with_ray_data(cfg: Config, taxonomy: Taxonomy, texts: list[str], hypothesis_texts: list[str], folder: Path,
                        progress: bool = True, embed: bool = False) -> tuple[dict, int]:
    """Score (or with `embed`, embed) `texts` into Parquet shards under `folder`; returns counts (shards
    scored, reused, actors) and the width of a row."""
    import ray  # Ray-specific lines start here
    from ray.data import ActorPoolStrategy

    r = cfg.ray
    folder.mkdir(parents=True, exist_ok=True)
    todo = missing_shards(folder, len(texts), r.shard_size)
    total_shards = math.ceil(len(texts) / r.shard_size)
    gpus = int(ray.cluster_resources().get("GPU", 0)) if r.use_gpu else 0
    actors = r.stage1_actors or max(1, gpus)
    nodes: set[str] = set()
    if todo:
        rows = [{"id": i, "shard": s, "text": texts[i]} for s in todo for i in range(s * r.shard_size, min(len(texts), (s + 1) * r.shard_size))]
        expected = {s: min(len(texts), (s + 1) * r.shard_size) - s * r.shard_size for s in todo}
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = progress
        ds = ray.data.from_items(rows).map_batches(
            SimilarityActor,
            fn_constructor_kwargs={"cfg": to_dict(cfg), "hypothesis_texts": hypothesis_texts,
                                   "taxonomy": taxonomy.to_dict(),
                                   "use_gpu": bool(gpus), "embed": embed},
            batch_size=r.stage1_batch_size,
            batch_format="numpy",
            compute=ActorPoolStrategy(size=actors),
            num_gpus=1 if gpus else 0,
            num_cpus=0 if gpus else 1,
        )
        batches = _noting_nodes(ds.iter_batches(batch_size=None, batch_format="numpy"), nodes)
        for s, rows in whole_shards(batches, expected, ("id", "sims")):  # each shard written once whole, then let go
            write_shard(shard_path(folder, s), np.array(rows["id"], dtype=np.int64), np.stack(rows["sims"]))
    width = _embedding_width(cfg) if embed else len(taxonomy)
    return {"stage1/shards_scored": len(todo), "stage1/shards_reused": total_shards - len(todo), "stage1/actors": actors,
            "stage1/gpus_per_actor": 1 if gpus else 0, "stage1/actor_nodes": len(nodes)}, width


def _noting_nodes(batches, nodes: set[str]):
    for batch in batches:
        nodes.update(batch["node"])
        yield batch


def _embedding_width(cfg: Config) -> int:
    from transformers import AutoConfig

    from taxoclass.stages.text_encoder import resolve_model_path

    return AutoConfig.from_pretrained(resolve_model_path(cfg.similarity.model)).hidden_size
