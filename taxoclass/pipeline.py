"""Runs the four stages and the evaluation in order, caching each stage's output.

Features:
- one entry point, `run_pipeline(cfg, sink)`, used by the CLI, Ray and Tune alike;
  it imports neither Ray nor wandb: metrics go to `metrics.jsonl` and to `sink`;
- each stage's output is cached in `<run_dir>/cache/` under a key made from its
  inputs' content and the config that affects it, so changing a stage-3 setting
  reuses stages 1 and 2; `force_stage=N` recomputes from stage N on; an entry is
  trusted only when its checksum, written last, matches (`cache.py`);
- each stage seeds the random generators from (seed, stage) when it starts, so a stage
  run alone, or after cached stages, computes what it computes in a full run;
- `metrics.jsonl` is appended to, each attempt starting with an `{"attempt": N}` row;
  a run whose config differs from the run dir's `config.yaml` first removes the old
  config's results (summary.json, predictions/, model.pt);
- `run_single_stage(run_dir, N)` runs one stage on an existing run dir;
- evaluation writes `predictions/test.jsonl` and `summary.json` (the run dir
  contract, `rundir.py`) with two zero-shot baselines from the stage-1 scores.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from taxoclass.cache import is_intact, seal
from taxoclass.config import Config, build_config, save_yaml, to_dict
from taxoclass.data.readers import Dataset, keyword_files, load_dataset, read_keywords
from taxoclass.data.taxonomy import ROOT, Taxonomy
from taxoclass.errors import DataError
from taxoclass.hier_metrics import hierarchical_metrics
from taxoclass.metrics import evaluate_rankings, example_f1, prefixed
from taxoclass.rundir import (
    PREDICTIONS,
    atomic_copy,
    atomic_write_text,
    cannot_write,
    remove_stale_outputs,
    strict_json,
    writable_dir,
    write_json,
    write_predictions,
)

Sink = Callable[..., None]
STAGE_NAMES = {1: "similarity", 2: "core mining", 3: "classifier", 4: "self-training", 5: "evaluation"}
OUTPUT_SUFFIX = {1: ".npz", 2: ".json", 3: ".pt", 4: ".pt"}


def log(msg: str) -> None:
    print(f"taxoclass: {msg}", file=sys.stderr, flush=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def seed_stage(seed: int, stage: int) -> None:
    """Seed every generator from (seed, stage) at a stage's start: without it a stage draws (dropout, ...)
    from whatever state the stages before it left, so `taxoclass stage 4` or a rerun with stage 3 cached
    gave other numbers than a full run."""
    digest = hashlib.sha256(f"taxoclass:{seed}:{stage}".encode()).digest()
    seed_everything(int.from_bytes(digest[:4], "little"))


# ---------------------------------------------------------------- inputs
@dataclass
class Docs:
    ids: list[str]
    texts: list[str]
    gold: list[list[int]] | None  # class indices, when known


@dataclass
class Inputs:
    dataset: Dataset
    corpus: Docs
    test: Docs | None
    keywords: dict[int, list[str]] | None

    @property
    def taxonomy(self) -> Taxonomy:
        return self.dataset.taxonomy

    def describe(self) -> str:
        """The documents the stages use (after `max_docs`), not only what the dataset holds."""
        ds = self.dataset

        def count(used: int, total: int, what: str) -> str:
            return f"{used} of {total} {what}" if used < total else f"{used} {what}"

        test = "no test set" if self.test is None else count(len(self.test.ids), len(ds.test), "test docs")
        return f"{ds.name} ({ds.variant}): {len(self.taxonomy)} classes, {count(len(self.corpus.ids), len(ds.corpus), 'corpus docs')}, {test}"


def prepare_inputs(cfg: Config) -> Inputs:
    ds = load_dataset(cfg.data, cfg.data_variant, cfg.test_corpus or None)
    c = ds.corpus
    gold = [ds.corpus_labels[d] for d in c.doc_ids] if ds.corpus_labels and all(d in ds.corpus_labels for d in c.doc_ids) else None
    corpus = Docs(list(c.doc_ids), list(c.texts), gold)
    test = None
    if ds.test is not None:
        test = Docs(list(ds.test.doc_ids), list(ds.test.texts), [ds.test_labels[d] for d in ds.test.doc_ids])
    if cfg.max_docs:
        corpus = Docs(corpus.ids[: cfg.max_docs], corpus.texts[: cfg.max_docs], corpus.gold[: cfg.max_docs] if corpus.gold else None)
        if test is not None:
            test = Docs(test.ids[: cfg.max_docs], test.texts[: cfg.max_docs], test.gold[: cfg.max_docs])
    if cfg.transductive and test is not None and not ds.transductive:
        # the unlabelled test texts join the training corpus (their labels are never used)
        corpus = Docs(corpus.ids + [f"test:{d}" for d in test.ids], corpus.texts + test.texts,
                      (corpus.gold + test.gold) if corpus.gold else None)
    keywords = None
    if cfg.similarity.class_text != "name":
        path = ds.root / "train" / f"{cfg.similarity.class_text}.txt"
        if path not in keyword_files(ds.root):
            raise DataError(path, "file not found (needed by similarity.class_text)")
        keywords = read_keywords(path, ds.taxonomy)
    return Inputs(ds, corpus, test, keywords)


def _same_docs(a: Docs, b: Docs | None) -> bool:
    return b is not None and a.ids == b.ids and a.texts == b.texts


# ---------------------------------------------------------------- cache keys
def _digest(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()[:16]


def content_digest(inputs: Inputs) -> str:
    """A checksum of everything read from the dataset: taxonomy, corpus, test texts and gold, keywords."""
    tax = inputs.taxonomy
    test = (inputs.test.ids, inputs.test.texts, inputs.test.gold) if inputs.test else None
    return _digest(tax.ids, tax.names, tax.edges, inputs.corpus.ids, inputs.corpus.texts, test, inputs.keywords)


def stage_keys(cfg: Config, inputs: Inputs) -> dict[int, str]:
    content = content_digest(inputs)
    # the search decides which pairs a pruned (NLI) stage 1 scores; a bi-encoder scores them all
    pruned = cfg.similarity.backend == "nli" and cfg.similarity.pruning
    search = (cfg.mining.root_width, cfg.mining.confidence_over) if pruned else None
    k1 = _digest("stage1", content, to_dict(cfg.similarity), search)
    k2 = _digest("stage2", k1, to_dict(cfg.mining))
    k3 = _digest("stage3", k2, to_dict(cfg.classifier), cfg.seed, training_setup(cfg))
    k4 = _digest("stage4", k3, to_dict(cfg.self_training))
    return {1: k1, 2: k2, 3: k3, 4: k4}


def training_setup(cfg: Config) -> tuple:
    """What changes stage 3-4 numbers besides their own settings (amp is one of those): data-parallel
    workers see larger global batches (1 and 2 Ray Train workers: validation losses up to 14 % apart)."""
    return ("ray", cfg.ray.num_workers) if cfg.runtime == "ray" else ("local",)


# ---------------------------------------------------------------- metrics log
class MetricsLog:
    """Appends every logged dict to metrics.jsonl (strict JSON) and forwards it to the sink.

    Each attempt on a run dir starts with a marker row `{"attempt": N, "time": ..., "command": ...}`:
    earlier attempts' curves stay, and a reader can tell the attempts apart.
    """

    def __init__(self, path: Path, sink: Sink | None, command: str = "run"):
        self.path = path
        self.sink = sink
        self.stats: dict = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        attempt = _previous_attempts(path) + 1
        with cannot_write(path):
            self._fh = open(path, "a", encoding="utf-8")
        self._write({"attempt": attempt, "time": round(time.time(), 3), "command": command})

    def __call__(self, metrics: dict, step: int | None = None) -> None:
        self.stats.update(metrics)
        self._write({"step": step, "time": round(time.time(), 3), **metrics})
        if self.sink is not None:
            self.sink(metrics, step=step)

    def _write(self, row: dict) -> None:
        with cannot_write(self.path):  # a full disk: one line naming the file, not a traceback
            self._fh.write(strict_json(row) + "\n")
            self._fh.flush()

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


# ---------------------------------------------------------------- stages
class Run:
    """One pipeline invocation on one run dir."""

    def __init__(self, cfg: Config, sink: Sink | None = None, runtime=None, command: str = "run"):
        from taxoclass.stages.text_encoder import resolve_device

        self.cfg = cfg
        self.runtime = runtime  # None: the engine runs here (runtime=local)
        seed_everything(cfg.seed)
        self.device = resolve_device(cfg.device)
        self.inputs = prepare_inputs(cfg)
        if not cfg.run_name:
            cfg.run_name = f"{self.inputs.dataset.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        self.dir = writable_dir(Path(cfg.output_dir) / cfg.run_name, "the run dir")
        self.cache = writable_dir(Path(cfg.cache_dir) if cfg.cache_dir else self.dir / "cache", "the cache")
        stale = remove_stale_outputs(self.dir, to_dict(cfg))
        if stale:
            log(f"the config differs from {self.dir / 'config.yaml'}: removed {', '.join(stale)} (the old config's results)")
        for leftover in self.dir.glob(".*.tmp"):  # temporary files of a run killed mid-write (this dir is the run's own)
            leftover.unlink(missing_ok=True)
        with cannot_write(self.dir / "config.yaml"):
            save_yaml(cfg, self.dir / "config.yaml")
        self.keys = stage_keys(cfg, self.inputs)
        self.sink = sink
        self.log = MetricsLog(self.dir / "metrics.jsonl", sink, command)
        self._bundle = None
        self._mining = None  # stage 2's output once produced or loaded: stages 3 and 4 both read it
        self.stage1: dict[str, np.ndarray] | None = None  # stage 1's arrays once produced or loaded
        self.timings: dict[str, float] = {}
        self.hook("on_start", self.dir, cfg, {"dataset": self.inputs.dataset.name, "dataset_checksum": content_digest(self.inputs)})

    def hook(self, name: str, *args) -> None:
        """Optional sink callbacks (tables, artifacts): the tracking layer implements them, the engine does not care."""
        fn = getattr(self.sink, name, None)
        if fn is not None:
            fn(*args)

    # cache helpers: an output file plus a JSON of the stats it logged
    def _path(self, stage: int, suffix: str) -> Path:
        return self.cache / f"stage{stage}-{self.keys[stage]}{suffix}"

    def _entry(self, stage: int) -> list[Path]:
        return [self._path(stage, OUTPUT_SUFFIX[stage]), self._path(stage, ".stats.json")]

    def _intact(self, stage: int) -> bool:
        """The stage's cache entry exists and matches its checksum (else a warning, when partly there)."""
        return is_intact(self._path(stage, ".sha256"), self._entry(stage))

    def _cached(self, stage: int, suffix: str, force: bool) -> bool:
        return not force and self._intact(stage)

    def _replay(self, stage: int) -> dict:
        stats = json.loads(self._path(stage, ".stats.json").read_text())
        self.log(stats)
        log(f"stage {stage} ({STAGE_NAMES[stage]}): cached ({self._path(stage, '').name})")
        return stats

    def _save_stats(self, stage: int, stats: dict) -> None:
        """The entry's last files: its stats, then the checksum that makes the entry trusted."""
        atomic_write_text(self._path(stage, ".stats.json"), strict_json(stats))
        seal(self._path(stage, ".sha256"), self._entry(stage))

    # stage 1
    def similarity(self, force: bool) -> tuple[np.ndarray, np.ndarray | None]:
        path = self._path(1, ".npz")
        if self._cached(1, ".npz", force):
            self._replay(1)
        else:
            from taxoclass.rundir import atomic_replace_with
            from taxoclass.stages.similarity import run_similarity

            seed_stage(self.cfg.seed, 1)
            t0 = time.time()
            inp = self.inputs
            same = _same_docs(inp.corpus, inp.test)
            test_texts = None if (inp.test is None or same) else inp.test.texts
            if self.runtime is None:
                out = run_similarity(self.cfg, inp.taxonomy, inp.corpus.texts, test_texts, inp.keywords, self.device)
            else:
                out = self._similarity_on_runtime(inp.corpus.texts, test_texts, fresh=force)
            arrays = out.arrays(test_is_corpus=same or out.test is None)
            def write(tmp):
                with open(tmp, "wb") as fh:
                    np.savez(fh, **arrays)

            atomic_replace_with(path, write)
            stats = {**out.stats(), **out.extra}
            self.timings["stage1"] = time.time() - t0
            stats["stage1/seconds"] = self.timings["stage1"]
            self.log(stats)
            self._save_stats(1, stats)
            self.hook("on_artifact", "similarity", "stage-output", path, {"key": self.keys[1]})
            log(f"stage 1 ({STAGE_NAMES[1]}): {len(inp.corpus.ids)} documents, {stats['stage1/pairs_per_doc']:.0f} pairs/doc, "
                f"{self.timings['stage1']:.1f}s")
        with np.load(path) as data:
            self.stage1 = {k: data[k] for k in data.files}
        if "test" not in self.stage1 and self.inputs.test is not None and _same_docs(self.inputs.corpus, self.inputs.test):
            self.stage1["test"] = self.stage1["corpus"]  # stored once when the test set is the corpus
            if "names_corpus" in self.stage1:
                self.stage1["names_test"] = self.stage1["names_corpus"]
        return self.stage1["corpus"], self.stage1.get("test")

    def _similarity_on_runtime(self, corpus_texts, test_texts, fresh: bool):
        from taxoclass.stages.similarity import SimilarityOutput, class_texts, hypotheses, make_scorer, refines, score_embeddings

        inp, cfg = self.inputs, self.cfg
        hyps = hypotheses(cfg.similarity.template, class_texts(inp.taxonomy, cfg.similarity.class_text, inp.keywords))
        folder = self.cache / f"stage1-{self.keys[1]}-shards"
        if fresh:  # a forced stage 1 scores every shard again instead of resuming from the old ones
            shutil.rmtree(folder, ignore_errors=True)
        # with refined prototypes the actors return document embeddings, and the scores are made here
        embed = refines(cfg)
        corpus, extra = self.runtime.similarity(cfg, inp.taxonomy, corpus_texts, hyps, folder / "corpus", embed=embed)
        test = None
        if test_texts is not None:
            test, _ = self.runtime.similarity(cfg, inp.taxonomy, test_texts, hyps, folder / "test", embed=embed)
        n_docs = len(corpus_texts) + (len(test_texts) if test_texts is not None else 0)
        if cfg.similarity.backend == "biencoder":  # each actor encodes the hypotheses once
            passes = n_docs + len(hyps) * extra["stage1/actors"]
        else:
            passes = int((~np.isnan(corpus)).sum() + (0 if test is None else (~np.isnan(test)).sum()))
        if embed:
            scorer = make_scorer(cfg, self.device)
            scorer.set_classes(hyps)
            return score_embeddings(corpus, test, scorer.class_emb, inp.taxonomy, cfg, passes + len(hyps), extra)
        return SimilarityOutput(corpus, test, passes, extra)

    # stage 2
    def mining(self, force: bool, sim: np.ndarray | None = None):
        from taxoclass.stages.core_mining import MiningOutput, mine_core_classes, mining_quality, mining_stats

        if self._mining is not None and not force:
            return self._mining
        path = self._path(2, ".json")
        if self._cached(2, ".json", force):
            self._replay(2)
            self._mining = MiningOutput.from_json(json.loads(path.read_text()))
            return self._mining
        if sim is None:
            sim, _ = self.similarity(force=False)
        seed_stage(self.cfg.seed, 2)
        t0 = time.time()
        out = mine_core_classes(sim, self.inputs.taxonomy, self.cfg.mining)
        stats = mining_stats(out)
        if self.inputs.corpus.gold is not None:
            stats.update(mining_quality(out, self.inputs.corpus.gold, self.inputs.taxonomy))
        stats["stage2/seconds"] = time.time() - t0
        atomic_write_text(path, json.dumps(out.to_json()))
        self.log(stats)
        self._save_stats(2, stats)
        self.hook("on_artifact", "core-classes", "stage-output", path, {"key": self.keys[2]})
        log(f"stage 2 ({STAGE_NAMES[2]}): {stats['stage2/total_docs_with_core']} of {len(out.cores)} documents have a core class, "
            f"{stats['stage2/num_core_classes']} core classes")
        self._mining = out
        return out

    # model
    def bundle(self):
        if self._bundle is None:
            from taxoclass.stages.model_io import build_model

            self._bundle = build_model(self.cfg, self.inputs.taxonomy, self.device, self.inputs.keywords, self._class_init())
        return self._bundle

    def _class_init(self) -> np.ndarray | None:
        """Stage 3 starts at stage 1's refined prototypes when they live in its encoder's space."""
        from taxoclass.stages.similarity import refines

        c, s = self.cfg.classifier, self.cfg.similarity
        if not refines(self.cfg) or c.head_init != "zeroshot" or c.encoder != s.model or c.pooling != "mean":
            return None
        if self.stage1 is None:
            self.similarity(force=False)
        return self.stage1.get("prototypes")

    # stage 3
    def pseudo_labels(self, mining) -> tuple[list[int], np.ndarray, np.ndarray]:
        """(corpus rows with a core class, their targets, their mask): stage 3's training data."""
        from taxoclass.stages.labels import build_labels

        keep = [i for i, c in enumerate(mining.cores) if c]
        if not keep:
            raise DataError(self.dir, "stage 2 found no core class for any document: nothing to train on "
                            "(lower mining.floor or check the similarity template)")
        c = self.cfg.classifier
        targets, mask = build_labels([mining.cores[i] for i in keep], self.inputs.taxonomy, c.label_scope, c.negatives)
        return keep, targets, mask

    def silver_validation(self):
        """The documents stage 3 held out for validation, with their pseudo-labels (stage 4's guard)."""
        from taxoclass.stages.classifier import SilverValidation, split_train_val

        keep, targets, mask = self.pseudo_labels(self.mining(force=False))
        _, val = split_train_val(len(keep), self.cfg.classifier.val_fraction, self.cfg.seed)
        return SilverValidation([keep[j] for j in val], targets[val], mask[val])

    def classifier(self, force: bool, mining=None) -> None:
        from taxoclass.stages.classifier import train_classifier
        from taxoclass.stages.labels import label_stats
        from taxoclass.stages.model_io import load_state

        path = self._path(3, ".pt")
        if self._cached(3, ".pt", force):
            self._replay(3)
            load_state(self.bundle(), path)
            return
        keep, targets, mask = self.pseudo_labels(mining or self.mining(force=False))
        t0 = time.time()
        bundle = self.bundle()
        seed_stage(self.cfg.seed, 3)  # after building the model, which seeds its own initial weights
        self.log(label_stats(targets, mask))
        texts = [self.inputs.corpus.texts[i] for i in keep]
        self.hook("on_model", bundle.model)
        if self.runtime is None:
            # the whole corpus, then its pseudo-labelled rows: a frozen encoder's embeddings are then reused by
            # the evaluation of a transductive set (and by stage 4) instead of computed again
            docs = bundle.docs(self.inputs.corpus.texts, desc="stage 3: embedding documents").subset(keep)
            stats = train_classifier(bundle.model, docs, targets, mask, self.cfg.classifier, self.device, self.cfg.seed, self.log,
                                     self.cfg.tracking.log_interval)
        else:
            init = bundle.model.head_state_dict() if self.cfg.classifier.freeze_encoder else bundle.model.state_dict()
            stats = self._train_on_runtime(3, texts, fresh=force, targets=targets, mask=mask,
                                           init_state={k: v.cpu() for k, v in init.items()})
        stats.update(label_stats(targets, mask))
        # stage3/best_epoch counts from 0; the progress bar and stage3/epoch count from 1
        self._finish_training(3, stats, t0, f"best epoch {stats['stage3/best_epoch'] + 1} of {self.cfg.classifier.epochs}, val loss {stats['stage3/best_val_loss']:.4f}")

    # stage 4
    def self_training(self, force: bool) -> None:
        from taxoclass.stages.model_io import load_state
        from taxoclass.stages.self_training import self_train

        path = self._path(4, ".pt")
        if self._cached(4, ".pt", force):
            self._replay(4)
            load_state(self.bundle(), path)
            return
        if not self._intact(3):
            raise DataError(self.dir, "stage 3 output missing: run stage 3 first")
        bundle = self.bundle()
        load_state(bundle, self._path(3, ".pt"))
        seed_stage(self.cfg.seed, 4)  # the model is built and loaded: what follows is stage 4's own randomness
        t0 = time.time()
        st = self.cfg.self_training
        silver = self.silver_validation() if st.val_patience > 0 else None
        if self.runtime is None:
            docs = bundle.docs(self.inputs.corpus.texts, desc="stage 4: embedding documents")
            stats = self_train(bundle.model, docs, st, self.device, self.cfg.seed, self.log, self.cfg.classifier.amp,
                               self.cfg.evaluation.batch_size, silver=silver)
        else:
            init = bundle.model.head_state_dict() if self.cfg.classifier.freeze_encoder else bundle.model.state_dict()
            stats = self._train_on_runtime(4, self.inputs.corpus.texts, fresh=force, init_state={k: v.cpu() for k, v in init.items()},
                                           objective=self.log.stats.get("stage3/best_val_loss", float("nan")), silver=silver)
        self._finish_training(4, stats, t0, f"{stats['stage4/batches']} batches, stopped by {stats['stage4/stopped_by']}")

    def skip_self_training(self) -> None:
        """Stage 4 is off by default: say so in the log, metrics.jsonl and the summary rather than run it
        and throw its result away."""
        why = ("self_training.enabled=false (the default: on corpora of 1,000-2,555 documents self-training "
               "never raised held-out quality, docs/quality.md section 4)")
        self.log({"stage4/skipped": why})
        log(f"stage 4 ({STAGE_NAMES[4]}): skipped: {why}")

    def _finish_training(self, stage: int, stats: dict, t0: float, what: str) -> None:
        """Log a training stage's stats, then store its model and stats under the stage's cache key."""
        from taxoclass.stages.model_io import save_checkpoint

        stats[f"stage{stage}/seconds"] = time.time() - t0
        self.log(stats)
        save_checkpoint(self.bundle(), self.inputs.taxonomy, self._path(stage, ".pt"))
        self._save_stats(stage, stats)
        if self.runtime is not None:
            self.runtime.stage_cached(*self._train_storage(stage))
        log(f"stage {stage} ({STAGE_NAMES[stage]}): {what}, {stats[f'stage{stage}/seconds']:.1f}s")

    def _train_storage(self, stage: int) -> tuple[Path, str]:
        """Where the runtime keeps a training stage's checkpoints: (storage folder, name)."""
        storage = Path(self.cfg.ray.storage_path) if self.cfg.ray.storage_path else self.dir / "ray"
        return storage, f"stage{stage}-{self.keys[stage]}"

    def _train_on_runtime(self, stage: int, texts: list[str], fresh: bool, **kw) -> dict:
        """Stage 3 or 4 on the runtime's workers; their rank-0 log lines are replayed here, in order."""
        storage, name = self._train_storage(stage)
        if fresh:  # Ray Train resumes a run of the same name: a forced stage must not restore the old final checkpoint
            shutil.rmtree(storage / name, ignore_errors=True)
        stats, logs, state = self.runtime.train(stage, self.cfg, self.inputs.taxonomy, self.inputs.keywords, texts, storage,
                                                name, **kw)
        for metrics, step in logs:
            self.log(metrics, step=step)
        self.bundle().model.load_state_dict(state, strict=not self.cfg.classifier.freeze_encoder)
        return stats

    def final_model_path(self) -> Path:
        if self.cfg.self_training.enabled and self._intact(4):
            return self._path(4, ".pt")
        return self._path(3, ".pt")

    # evaluation
    def evaluate(self, test_sim: np.ndarray | None) -> dict:
        from taxoclass.decoding import decode
        from taxoclass.stages.model import predict_probs

        inp = self.inputs
        summary: dict = {}
        seed_stage(self.cfg.seed, 5)
        # a copy, not a link: truncating or replacing model.pt must never touch the cache entry
        atomic_copy(self.final_model_path(), self.dir / "model.pt")
        if inp.test is None:
            log("no test set: predictions and test metrics skipped")
            return summary
        bundle = self.bundle()
        docs = bundle.docs(inp.test.texts, desc="evaluation: embedding test documents")
        probs = predict_probs(bundle.model, docs, self.device, self.cfg.evaluation.batch_size, self.cfg.classifier.amp)
        ranked, scores = decode(probs, inp.taxonomy, self.cfg.evaluation.decoding, self.cfg.evaluation.save_top_k)
        write_predictions(self.dir / PREDICTIONS, inp.test.ids, ranked, scores, inp.taxonomy)
        levels = inp.taxonomy.levels
        summary.update(prefixed(evaluate_rankings(ranked.tolist(), inp.test.gold, levels), "test"))
        summary.update(prefixed(hierarchical_metrics(ranked.tolist(), inp.test.gold, inp.taxonomy), "test"))
        if test_sim is not None:
            names = self.stage1.get("names_test") if self.stage1 else None
            if names is None:  # no refinement: the stage-1 scores are the name-only scores
                summary.update(zero_shot_metrics(test_sim, inp.test.gold, inp.taxonomy))
            else:
                summary.update(zero_shot_metrics(names, inp.test.gold, inp.taxonomy, enriched=test_sim))
            # what stages 2-4 and the enrichment add over the free name-only decoder, on the same protocol
            summary["test/gain_over_zeroshot"] = summary["test/example_f1"] / max(summary["zeroshot/bestpath_example_f1"], 1e-12)
        self.log(summary)
        self.hook("on_evaluation", {"taxonomy": inp.taxonomy, "doc_ids": inp.test.ids, "texts": inp.test.texts,
                                    "ranked": ranked.tolist(), "golds": inp.test.gold})
        self.hook("on_artifact", "model", "model", self.dir / "model.pt", {"stage": 4 if self._path(4, ".pt").is_file() else 3})
        return summary

    def close(self) -> None:
        self.log.close()


def zero_shot_metrics(sim: np.ndarray, golds: list[list[int]], taxonomy: Taxonomy, enriched: np.ndarray | None = None) -> dict:
    """The zero-shot baselines of the name-only stage-1 scores `sim`: flat (top-3 of the scored classes),
    greedy path (top-down, the path alone) and best path (the pipeline's own decoder, on the same top-3
    protocol as the pipeline: the fixed baseline training must beat); with `enriched` (the scores after
    prototype refinement) the best path of those too."""
    from taxoclass.decoding import rank, rank_with_paths, similarity_best_paths

    filled = np.where(np.isnan(sim), -np.inf, sim)
    ranked, _ = rank(filled, 0)
    out = prefixed(evaluate_rankings(ranked.tolist(), golds, taxonomy.levels), "zeroshot")
    paths = [greedy_path(row, taxonomy) for row in filled]
    out["zeroshot/path_example_f1"] = float(np.mean([example_f1(p, set(g), k=len(p)) for p, g in zip(paths, golds)]))
    out.update(prefixed(hierarchical_metrics(ranked.tolist(), golds, taxonomy, paths=paths), "zeroshot"))  # path: the greedy one
    for name, scores in (("bestpath", sim), ("enriched_bestpath", enriched)):
        if scores is None:
            continue
        best = similarity_best_paths(scores, taxonomy)
        top3, _ = rank_with_paths(np.where(np.isnan(scores), -np.inf, scores), best, 3)
        out[f"zeroshot/{name}_example_f1"] = float(np.mean([example_f1(list(r), set(g), k=3) for r, g in zip(top3, golds)]))
        hier = hierarchical_metrics(top3.tolist(), golds, taxonomy, paths=best)
        out.update({f"zeroshot/{name}_{k}": v for k, v in hier.items() if "hier_" in k})
        # the path alone, as the figure was reported before (not comparable with the top-3 protocol)
        out[f"zeroshot/{name}_path_only_example_f1"] = float(np.mean([example_f1(p, set(g), k=len(p)) for p, g in zip(best, golds)]))
    return out


def greedy_path(scores: np.ndarray, taxonomy: Taxonomy) -> list[int]:
    """At each level the most similar child, from ROOT down to a leaf."""
    path, node = [], ROOT
    while taxonomy.children(node):
        node = max(taxonomy.children(node), key=lambda c: (scores[c], -c))
        path.append(node)
    return path


# ---------------------------------------------------------------- entry points
def run_pipeline(cfg: Config, sink: Sink | None = None, runtime=None) -> dict:
    """All stages, then the evaluation. Returns the summary (also in summary.json).

    `runtime` (see distributed/runtime.py) runs stage 1 and stages 3-4 elsewhere; None runs them here.
    """
    t0 = time.time()
    run = Run(cfg, sink, runtime=runtime)
    try:
        log(f"run dir {run.dir} on {run.device}; {run.inputs.describe()}")
        force = cfg.force_stage
        sim, test_sim = run.similarity(force=1 >= force > 0)
        mining = run.mining(force=2 >= force > 0, sim=sim)
        run.classifier(force=3 >= force > 0, mining=mining)
        if cfg.self_training.enabled:
            run.self_training(force=4 >= force > 0)
        else:
            run.skip_self_training()
        summary = dict(run.log.stats)
        summary.update(run.evaluate(test_sim))
        summary["total_seconds"] = time.time() - t0
        summary["run_dir"] = str(run.dir)
        write_json(run.dir / "summary.json", summary)
        run.hook("on_finish", summary)
        return summary
    finally:
        run.close()


def run_single_stage(run_dir: Path, number: int, overrides: list[str] | None = None) -> dict | None:
    """`taxoclass stage N --run DIR`: stage N only, earlier stages from the cache."""
    config_path = Path(run_dir) / "config.yaml"
    if not config_path.is_file():
        raise DataError(config_path, "not a run dir (no config.yaml)")
    # the run dir's config is authoritative: no environment overrides here
    cfg = build_config(config_file=str(config_path), overrides=overrides or [], environ={})
    cfg.output_dir, cfg.run_name = str(Path(run_dir).parent), Path(run_dir).name
    from taxoclass.distributed.runtime import make_runtime  # no Ray import unless runtime=ray

    runtime = make_runtime(cfg)  # the stage runs where the run's config says: its cache key depends on it
    run = Run(cfg, runtime=runtime, command=f"stage {number}")
    try:
        if number == 1:
            run.similarity(force=True)
        elif number == 2:
            _require(run, 1, ".npz")
            run.mining(force=True)
        elif number == 3:
            _require(run, 2, ".json")
            run.classifier(force=True)
        elif number == 4:
            _require(run, 3, ".pt")
            run.self_training(force=True)
        else:
            _require(run, 3, ".pt")
            _, test_sim = run.similarity(force=False)
            if cfg.self_training.enabled and any(f.exists() for f in run._entry(4)):  # a damaged entry is computed again
                run.self_training(force=False)
            else:
                run.classifier(force=False)
            summary = {**run.log.stats, **run.evaluate(test_sim), "run_dir": str(run.dir)}
            write_json(run.dir / "summary.json", summary)
            return summary
        return None
    finally:
        run.close()
        if runtime is not None:
            runtime.stop()


def _require(run: Run, stage: int, suffix: str) -> None:
    if not run._intact(stage):
        raise DataError(run.dir, f"stage {stage} output missing for this config: run `taxoclass stage {stage} --run {run.dir}` first")
