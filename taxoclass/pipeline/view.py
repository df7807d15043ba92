"""A run dir as its stages left it, and the read-only open of a finished run.

Features:
- `RunView`: what every view of a run reads: its config, inputs (`inputs.py`), stage store
  (`store.py`), stage 3's pseudo-labels and held-out silver documents, which stage made the final model;
- `document_vectors`: with a frozen encoder, each document's vector, taken from the cache
  (`vectors.py`): stage 1's own when the encoder, pooling and length match, else embedded once by
  the classifier's encoder (the log says why); a training job's documents (`build_jobs.py`);
- `document_inputs`: the classifier's inputs (`DocBatches`) for the evaluation and the search
  objectives: those vectors, or with a trained encoder the token ids;
- its stage outputs (stage 1's arrays, stage 2's core classes, the model) come from what it is
  given (`StageOutputs`): a finished run's files (`FinishedOutputs`) or an attempt
  (`context.py`'s `RunContext`, which opens a view with `writes=True` and is its only link back);
- `open_finished(run_dir)`: a finished run, read only: it writes nothing (no config.yaml, no
  attempt in metrics.jsonl, no lock), fires no tracking hook and computes nothing: a missing
  stage output is an error; its model is `model.pt`; `metrics_rows()` and `summary()` are what
  `taxoclass report` draws;
- `run_config(run_dir)`: the config a run dir was made with (`config.yaml`, no environment).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import numpy as np

from taxoclass.config import Config, build_config, with_values
from taxoclass.errors import DataError
from taxoclass.pipeline.inputs import Inputs, prepare_inputs
from taxoclass.pipeline.metrics_log import read_metrics
from taxoclass.pipeline.store import StageStore, stage_keys
from taxoclass.pipeline.vectors import VectorStore


def run_config(run_dir: Path, overrides: list[str] | None = None) -> Config:
    """The run dir's `config.yaml` (authoritative: no environment overrides), with `overrides` applied."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise DataError(config_path, "not a run dir (no config.yaml)")
    cfg = build_config(config_file=str(config_path), overrides=overrides or [], environ={})
    return with_values(cfg, {"output_dir": str(run_dir.parent), "run_name": run_dir.name})


class StageOutputs(Protocol):
    """Where a view's stage outputs come from: a finished run's files (`FinishedOutputs`), or an attempt's
    steps and cache (`pipeline/context.py`)."""

    def stage1(self) -> dict[str, np.ndarray]:
        """Stage 1's arrays: `corpus` and `test` scores, with refined prototypes `names_*` and `prototypes`."""

    def mining(self):
        """Stage 2's output (`MiningOutput`)."""

    def bundle(self):
        """The classifier (`ModelBundle`) whose inputs `document_inputs` makes."""


class RunView:
    """A run dir's config, inputs and cache, and the classifier's inputs for its documents; its stage outputs from
    `outputs` (default: the finished run's files), its vectors written into the cache only when `writes`."""

    def __init__(self, run_dir: Path, cfg: Config | None = None, inputs: Inputs | None = None, device="cpu",
                 training_setup: tuple | None = None, outputs: StageOutputs | None = None, writes: bool = False):
        self.dir = Path(run_dir)
        self.device = device
        self._cfg, self._inputs, self._store, self._vector_store = cfg, inputs, None, None
        self._vectors: dict[str, np.ndarray] = {}  # document_vectors, once per attempt
        self._training_setup = training_setup  # the runtime's part of the stage 3-4 keys; None: stages 1-2 only
        self.outputs = outputs or FinishedOutputs(self)
        self.writes = writes  # only a run opened for an attempt writes into its cache

    @property
    def cfg(self) -> Config:
        if self._cfg is None:
            self._cfg = run_config(self.dir)
        return self._cfg

    @property
    def inputs(self) -> Inputs:
        if self._inputs is None:
            self._inputs = prepare_inputs(self.cfg)
        return self._inputs

    @property
    def store(self) -> StageStore:
        if self._store is None:
            folder = Path(self.cfg.cache_dir) if self.cfg.cache_dir else self.dir / "cache"
            self._store = StageStore(folder, stage_keys(self.cfg, self.inputs, self._training_setup),
                                     (len(self.inputs.corpus.ids), len(self.inputs.taxonomy)))
        return self._store

    def stage1(self) -> dict[str, np.ndarray]:
        return self.outputs.stage1()

    def mining(self):
        return self.outputs.mining()

    def bundle(self):
        return self.outputs.bundle()

    # what follows from them
    def pseudo_labels(self) -> tuple[list[int], np.ndarray, np.ndarray | None]:
        """(corpus rows with a core class, their targets, their mask): stage 3's training data; with the path
        loss the targets are distributions over root-to-leaf paths and there is no mask."""
        from taxoclass.stages.labels import training_data

        cores = self.mining().cores
        if not any(cores):
            raise DataError(self.dir, "stage 2 found no core class for any document: nothing to train on "
                            "(lower mining.floor or check the similarity template)")
        return training_data(cores, self.inputs.taxonomy, self.cfg.classifier)

    def silver_validation(self):
        """The documents stage 3 held out for validation, with their pseudo-labels (stage 4's guard)."""
        from taxoclass.training.silver import held_out

        return held_out(*self.pseudo_labels(), self.cfg.classifier, self.cfg.seed)

    def stage3_outcome(self) -> dict:
        """Stage 3's stats from its cache entry (did it train, or step aside?): what decides stage 4 with
        `self_training.enabled=auto`, and so the final model."""
        return self.store.stats(3) if self.store.intact(3) else {}

    def final_stage(self) -> int:
        from taxoclass.pipeline.schedule import final_stage

        return final_stage(self.cfg, self.stage3_outcome())

    @property
    def vectors(self) -> VectorStore:
        """The cache's document vectors; a view that must not write keeps what it computes to itself."""
        if self._vector_store is None:
            self._vector_store = VectorStore(self.store.folder, writable=self.writes)
        return self._vector_store

    def document_inputs(self, which: str, rows: list[int] | None = None, desc: str | None = None):
        """The classifier's inputs (`DocBatches`) for the `corpus` or `test` documents, all or `rows`:
        token ids, or with a frozen encoder their vectors (`document_vectors`)."""
        import torch

        from taxoclass.training.doc_batches import DocBatches

        docs = {"corpus": self.inputs.corpus, "test": self.inputs.test}[which]
        if not self.cfg.classifier.freeze_encoder:
            return self.bundle().docs(docs.texts if rows is None else [docs.texts[i] for i in rows], desc=desc)
        vectors = self.document_vectors(which, desc)
        chosen = vectors if rows is None else vectors[np.asarray(rows, dtype=np.int64)]
        return DocBatches(embeddings=torch.from_numpy(np.asarray(chosen, dtype=np.float32)))

    def document_vectors(self, which: str, desc: str | None = None) -> np.ndarray:
        """The frozen classifier encoder's vectors of every `corpus` or `test` document (float16): from the
        cache, stage 1's when its encoder, pooling and length are the classifier's; else embedded once."""
        from taxoclass.pipeline.metrics_log import say
        from taxoclass.pipeline.vectors import EncoderSpec, why_embed
        from taxoclass.stages.similarity import VECTOR_DTYPE
        from taxoclass.stages.text_encoder import encode_texts

        c = self.cfg.classifier
        texts = {"corpus": self.inputs.corpus, "test": self.inputs.test}[which].texts
        spec = EncoderSpec.of_classifier(self.cfg)

        def embed() -> np.ndarray:
            say(f"{desc or which}: embedding {len(texts)} documents ({why_embed(spec, self.cfg, self.vectors.miss)})")
            b = self.bundle()
            return encode_texts(b.encoder, b.tokenizer, texts, max_length=c.max_length, batch_size=self.cfg.evaluation.batch_size,
                                pooling=c.pooling, device=self.device, desc=desc, amp=spec.precision).astype(VECTOR_DTYPE)

        if which not in self._vectors:
            self._vectors[which] = self.vectors.get(spec, texts, embed)
        return self._vectors[which]


    def metrics_rows(self) -> list[dict]:
        return read_metrics(self.dir / "metrics.jsonl")

    def summary(self) -> dict:
        path = self.dir / "summary.json"
        return json.loads(path.read_text()) if path.is_file() else {}


class FinishedOutputs:
    """A finished run's stage outputs, read only: its cache entries (a missing one is an error, nothing is computed)
    and its final model, `model.pt`; each loaded once."""

    def __init__(self, view: RunView):
        self.view = view
        self._stage1, self._mining, self._bundle = None, None, None

    def _require(self, stage: int) -> None:
        if not self.view.store.intact(stage):
            raise DataError(self.view.dir, f"stage {stage} output missing for this config (cache {self.view.store.folder})")

    def stage1(self) -> dict[str, np.ndarray]:
        if self._stage1 is None:
            self._stage1 = self._read(1, lambda: self.view.store.read_similarity(self.view.cfg, self.view.inputs))
        return self._stage1

    def mining(self):
        if self._mining is None:
            self._mining = self._read(2, self.view.store.read_mining)
        return self._mining

    def _read(self, stage: int, read):
        from taxoclass.cache import Unusable

        self._require(stage)
        try:
            return read()
        except Unusable as err:  # read only: nothing is computed again
            raise DataError(self.view.store.output(stage), f"not usable ({err}); run the run again to compute it") from None

    def bundle(self):
        if self._bundle is None:
            from taxoclass.stages.model_io import load_checkpoint

            self._bundle, _ = load_checkpoint(self.view.dir / "model.pt", self.view.device)
        return self._bundle


def open_finished(run_dir: Path, cfg: Config | None = None, device="cpu", training_setup: tuple | None = None) -> RunView:
    """A finished run dir, read only: it writes nothing (no config.yaml, no attempt in metrics.jsonl, no lock), fires
    no tracking hook and computes nothing. `cfg` (default: its config.yaml) says where its cache is and what its keys
    are; `training_setup` (the runtime's, see `Runtime.training_setup`) is needed only to reach stages 3-4's entries."""
    return RunView(run_dir, cfg, device=device, training_setup=training_setup)
