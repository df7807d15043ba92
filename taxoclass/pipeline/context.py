"""One attempt on a run dir, for writing: what every stage step reads and writes through.

Features:
- `RunContext.open(cfg, sink, runtime, command)`: seeds the run, reads its inputs, makes the
  run dir (named after the dataset and the time when `run_name` is empty) and locks it (one run
  per run dir, `lock.py`; released by `close`), removes the results
  of a different earlier config and the temporary files of a killed run, writes `config.yaml`,
  starts an attempt in `metrics.jsonl` and tells the sink (`on_start`);
- what an attempt has that a reading of the run has not: the runtime (`taxoclass/runtime.py`: local
  by default), the metrics log, the sink, and stage 1's way into the vector store (`memo`);
- `view`: the run as it reads (`view.py`'s `RunView`: the config, the inputs, the stage store under keys
  that include the runtime's training setup, the pseudo-labels, the documents as the classifier's
  inputs); the steps ask it directly;
- what the attempt gives that view in turn (`StageOutputs`, the view's one link back): stage 1's arrays and
  stage 2's core classes as the attempt's steps left them, else read from the cache (`stage1()`,
  `mining()`; the context reads, it never computes a stage: `run.py` holds the one order), and the model
  (`bundle()`), built once, which starts at stage 1's refined prototypes when they live in its encoder's space.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from taxoclass.atomic import cannot_write, writable_dir
from taxoclass.config import Config, save_yaml, to_dict, with_values
from taxoclass.errors import DataError
from taxoclass.pipeline.inputs import content_digest, prepare_inputs
from taxoclass.pipeline.lock import RunDirLock
from taxoclass.pipeline.metrics_log import MetricsLog, say
from taxoclass.pipeline.view import RunView
from taxoclass.rundir import remove_stale_outputs
from taxoclass.runtime import LocalRuntime, Runtime
from taxoclass.seeding import seed_everything
from taxoclass.sink import Sink
from taxoclass.stages.similarity import classifier_encoder, refines


class RunContext:
    """A run dir opened for one attempt (`open`); close it (or use it as a context manager) at the end. It reads the
    run through a `RunView` whose stage outputs it supplies (`stage1`, `mining`, `bundle`)."""

    def __init__(self, run_dir: Path, cfg: Config, inputs, device, runtime: Runtime, sink: Sink, started: float):
        self.view = RunView(run_dir, cfg, inputs, device, runtime.training_setup(), outputs=self, writes=True)
        self.dir, self.cfg, self.inputs, self.device = self.view.dir, cfg, inputs, device
        self.runtime, self.sink, self.started = runtime, sink, started
        self.outputs: dict[int, object] = {}  # stage 1's arrays and stage 2's core classes, once computed or loaded
        self.reported: set[int] = set()  # the stages whose stats this attempt logged (computed or replayed)
        self._bundle = None
        self.log: MetricsLog | None = None  # the attempt's metrics log, started by `open`
        self.lock: RunDirLock | None = None

    @classmethod
    def open(cls, cfg: Config, sink: Sink | None = None, runtime: Runtime | None = None, command: str = "run") -> RunContext:
        from taxoclass.stages.text_encoder import resolve_device

        started = time.time()
        seed_everything(cfg.seed)
        device = resolve_device(cfg.device)
        inputs = prepare_inputs(cfg)
        if not cfg.run_name:
            cfg = with_values(cfg, {"run_name": f"{inputs.dataset.name}-{time.strftime('%Y%m%d-%H%M%S')}"})  # a copy: the caller's stays
        run_dir = writable_dir(Path(cfg.output_dir) / cfg.run_name, "the run dir")
        ctx = cls(run_dir, cfg, inputs, device, runtime or LocalRuntime(), sink or Sink(), started)
        ctx.lock = RunDirLock.acquire(run_dir)  # before anything in the run dir is touched
        try:
            ctx._start(command)
        except BaseException:
            ctx.close()
            raise
        return ctx

    def _start(self, command: str) -> None:
        """The locked run dir made ready for this attempt."""
        cfg, run_dir, inputs = self.cfg, self.dir, self.inputs
        writable_dir(self.view.store.folder, "the cache")
        stale = remove_stale_outputs(run_dir, to_dict(cfg))
        if stale:
            say(f"the config differs from {run_dir / 'config.yaml'}: removed {', '.join(stale)} (the old config's results)")
        for leftover in run_dir.glob(".*.tmp"):  # temporary files of a run killed mid-write (this dir is the run's own)
            leftover.unlink(missing_ok=True)
        with cannot_write(run_dir / "config.yaml"):
            save_yaml(cfg, run_dir / "config.yaml")
        self.log = MetricsLog(run_dir / "metrics.jsonl", self.sink, command)
        self.sink.on_start(run_dir, cfg, {"dataset": inputs.dataset.name, "dataset_checksum": content_digest(inputs)})

    def __enter__(self) -> RunContext:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
        if self.lock is not None:
            self.lock.release()

    def document_vectors(self, which: str, desc: str | None = None) -> np.ndarray:
        """The view's (`RunView.document_vectors`); what reads the run otherwise asks `view`, the search's shared
        stages (`search/shared.py`) still ask here."""
        return self.view.document_vectors(which, desc)

    def memo(self, fresh: bool = False):
        """Stage 1's document vectors through the cache (`vectors.py`): `memo(texts, desc, compute)` computes
        only what is missing, or everything for a forced stage 1 (`fresh`)."""
        from taxoclass.pipeline.vectors import EncoderSpec

        spec = EncoderSpec.of_similarity(self.cfg)
        return lambda texts, desc, compute: self.view.vectors.get(spec, texts, compute, fresh=fresh)

    # what the attempt supplies to its view (`StageOutputs`): stage 1's arrays, stage 2's core classes, the model
    def stage1(self) -> dict[str, np.ndarray]:
        """Stage 1's arrays: as this attempt computed or loaded them, else read from the cache (never computed:
        `run.py` decides what runs)."""
        if 1 not in self.outputs:
            self.outputs[1] = self._cached(1, lambda: self.view.store.read_similarity(self.cfg, self.inputs))
        return self.outputs[1]

    def mining(self):
        """Stage 2's core classes, as `stage1` finds them."""
        if 2 not in self.outputs:
            self.outputs[2] = self._cached(2, self.view.store.read_mining)
        return self.outputs[2]

    def _cached(self, stage: int, read):
        """A stage's intact cache entry, its stats replayed into this attempt's log; a missing one is an error."""
        if not self.view.store.intact(stage):
            raise DataError(self.dir, f"stage {stage} output missing for this config: run `taxoclass stage {stage} "
                            f"--run {self.dir}` first")
        from taxoclass.npyfile import Unusable

        try:
            value = read()
        except Unusable as err:  # sealed, but a file replaced together with its checksum may hold anything
            raise DataError(self.view.store.output(stage), f"not usable ({err}); run `taxoclass stage {stage} --run {self.dir}` "
                            "to compute it again") from None
        self.view.store.replay(stage, self.log)
        self.reported.add(stage)
        return value

    def bundle(self):
        if self._bundle is None:
            from taxoclass.stages.model_io import build_model

            self._bundle = build_model(self.cfg, self.inputs.taxonomy, self.device, self.inputs.keywords, self.class_init())
        return self._bundle

    def class_init(self) -> np.ndarray | None:
        """Stage 3 starts at stage 1's refined prototypes when they live in its encoder's space."""
        c, s = self.cfg.classifier, self.cfg.similarity
        if not refines(s) or c.head_init != "zeroshot" or classifier_encoder(self.cfg) != s.model or c.pooling != "mean":
            return None
        return self.stage1().get("prototypes")
