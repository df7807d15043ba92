"""The stage store: each stage's output in the cache folder, under a key of what it was computed from.

Features:
- `stage_keys`: a key per stage, chained (stage N's key includes stage N-1's) from the dataset's
  content, the config section that affects the stage, and for stages 3-4 the seed and the
  runtime's training setup (`Runtime.training_setup()`: 1 or 2 Ray Train workers give other
  numbers); changing a stage-3 setting keeps stages 1-2;
- an entry is the stage's output file, a JSON of the stats it logged, and a checksum of both
  written last (`cache.py`): `intact` trusts nothing else, and reads the stats (a JSON object of
  plain values) before it says yes; `seal` finishes an entry;
- `replay`: a cached stage's stats back into the metrics log, as if the stage had run;
- readers and writers of each output: stage 1's arrays (.npz, each checked against the shape the
  stage makes: `similarity_shapes`), stage 2's core classes (.json, checked against the documents
  and classes: `mining_problem`), stages 3-4's models (.pt, through `stages/model_io.py`, each
  tensor checked against the model); a sealed file that does not fit is `Unusable` (`cache.py`),
  whatever its checksum says, and its stage is computed again.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from taxoclass.atomic import atomic_replace_with, atomic_write_text, strict_json
from taxoclass.cache import Unusable, is_intact, seal, warn_unusable
from taxoclass.config import Config, to_dict
from taxoclass.npyfile import load_npz
from taxoclass.pipeline.inputs import Inputs, content_digest, digest
from taxoclass.pipeline.metrics_log import say
from taxoclass.stages.similarity import prunes, refines

STAGE_NAMES = {1: "similarity", 2: "core mining", 3: "classifier", 4: "self-training", 5: "evaluation"}
OUTPUT_SUFFIX = {1: ".npz", 2: ".json", 3: ".pt", 4: ".pt"}


def stage_keys(cfg: Config, inputs: Inputs, training_setup: tuple | None = None) -> dict[int, str]:
    """{stage: key}; stages 3-4 only with the runtime's `training_setup` (where training runs changes its numbers)."""
    content = content_digest(inputs)
    # the search decides which pairs a pruned (NLI) stage 1 scores; a bi-encoder scores them all
    search = (cfg.mining.root_width, cfg.mining.confidence_over) if prunes(cfg.similarity) else None
    from taxoclass.pipeline.vectors import stage1_precision

    # `similarity.autocast=auto` is bf16 on one machine and fp32 on another: the key holds what it resolves to
    k1 = digest("stage1", content, to_dict(cfg.similarity), search, stage1_precision(cfg))
    k2 = digest("stage2", k1, to_dict(cfg.mining))
    keys = {1: k1, 2: k2}
    if training_setup is not None:
        keys[3] = digest("stage3", k2, to_dict(cfg.classifier), cfg.seed, training_setup)
        keys[4] = digest("stage4", keys[3], to_dict(cfg.self_training))
    return keys


def similarity_shapes(cfg: Config, inputs: Inputs) -> dict[str, tuple[int | None, int | None]]:
    """The arrays stage 1 stores and their shapes (`write_similarity`): scores of each document for each class,
    the test set's unless it is the corpus, and with refined prototypes the name-only scores and the prototypes."""
    from taxoclass.pipeline.vectors import encoder_width

    classes, documents = len(inputs.taxonomy), len(inputs.corpus.ids)
    test = None if inputs.test is None or inputs.test_is_corpus else len(inputs.test.ids)
    shapes = {"corpus": (documents, classes), "test": (test, classes)}
    if refines(cfg.similarity):
        shapes.update({"names_corpus": (documents, classes), "names_test": (test, classes),
                       "prototypes": (classes, encoder_width(cfg.similarity.model))})
    return {name: shape for name, shape in shapes.items() if shape[0] is not None}


def mining_problem(data, documents: int, classes: int) -> str | None:
    """Why a stage-2 JSON (`MiningOutput.to_json`) does not fit `documents` corpus documents and `classes` classes,
    or None: per document a list of candidate class ids, as many confidences and a list of core class ids; a
    threshold per class id."""
    if not isinstance(data, dict) or not {"candidates", "confidences", "cores", "thresholds"} <= set(data):
        return "not an object with candidates, confidences, cores and thresholds"

    def class_id(value) -> bool:
        return type(value) is int and 0 <= value < classes

    def number(value) -> bool:
        return type(value) in (int, float)

    for name in ("candidates", "confidences", "cores"):
        rows = data[name]
        if not isinstance(rows, list) or len(rows) != documents or not all(isinstance(r, list) for r in rows):
            got = f"{len(rows)} entries" if isinstance(rows, list) else type(rows).__name__
            return f"its {name} are not one list per document ({got} for {documents} documents)"
    for i, (cands, confs, cores) in enumerate(zip(data["candidates"], data["confidences"], data["cores"])):
        wrong = [v for v in cands + cores if not class_id(v)]
        if wrong:
            return f"document {i} names class id {wrong[0]!r}, not one of the {classes} classes (0-{classes - 1})"
        if len(confs) != len(cands) or not all(map(number, confs)):
            return f"document {i} has {len(confs)} confidences for {len(cands)} candidates, or one that is not a number"
    thresholds = data["thresholds"]
    if not isinstance(thresholds, dict) or not all(
            k.isdigit() and int(k) < classes and number(v) for k, v in thresholds.items()):
        return f"its thresholds are not a number per class id (0-{classes - 1})"
    return None


def stats_problem(stats) -> str | None:
    """Why a stage's `.stats.json` content is not what `seal` wrote (a JSON object of plain values), or None."""
    if not isinstance(stats, dict):
        return f"its stats are not a JSON object (a {type(stats).__name__})"
    bad = next((k for k, v in stats.items() if v is not None and type(v) not in (int, float, str, bool)), None)
    return None if bad is None else f"its stats hold a {type(stats[bad]).__name__} under {bad!r}, not a number or a word"


class StageStore:
    """The cache folder's entries for one run's keys; `sizes` (corpus documents, classes) is what stage 2's output
    is checked against when it is read."""

    def __init__(self, folder: Path, keys: dict[int, str], sizes: tuple[int, int] | None = None):
        self.folder = Path(folder)
        self.keys = keys
        self.sizes = sizes

    def name(self, stage: int) -> str:
        """`stage<N>-<key>`: the entry's file stem (Ray Train names the stage's checkpoints after it too)."""
        return f"stage{stage}-{self.keys[stage]}"

    def path(self, stage: int, suffix: str) -> Path:
        return self.folder / f"{self.name(stage)}{suffix}"

    def output(self, stage: int) -> Path:
        return self.path(stage, OUTPUT_SUFFIX[stage])

    def entry(self, stage: int) -> list[Path]:
        return [self.output(stage), self.path(stage, ".stats.json")]

    def present(self, stage: int) -> bool:
        """Anything of the stage's entry is there (intact or not): it was computed, or begun."""
        return any(p.exists() for p in [self.path(stage, ".sha256"), *self.entry(stage)])

    def intact(self, stage: int) -> bool:
        """The stage's entry exists, matches its checksum and its stats read as the stats `seal` wrote (else a
        warning, when partly there: the stage is computed again)."""
        if not is_intact(self.path(stage, ".sha256"), self.entry(stage)):
            return False
        try:
            why = stats_problem(json.loads(self.path(stage, ".stats.json").read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            why = f"{self.path(stage, '.stats.json').name} is not JSON ({type(err).__name__}: {getattr(err, 'msg', err)})"
        if why is not None:
            warn_unusable(self.path(stage, ".sha256"), why)
        return why is None

    def seal(self, stage: int, stats: dict) -> None:
        """The entry's last files, once its output is written: its stats, then the checksum that makes it trusted."""
        atomic_write_text(self.path(stage, ".stats.json"), strict_json(stats))
        seal(self.path(stage, ".sha256"), self.entry(stage))

    def stats(self, stage: int) -> dict:
        """What the stage logged, the last value of each name (read from an intact entry)."""
        return json.loads(self.path(stage, ".stats.json").read_text())

    def replay(self, stage: int, log) -> dict:
        """A cached stage's stats into `log` (the metrics log), and the line that says it was cached."""
        stats = self.stats(stage)
        log(stats)
        say(f"stage {stage} ({STAGE_NAMES[stage]}): cached ({self.name(stage)})")
        return stats

    # stage 1: the scores (and with refined prototypes, the name-only scores and the prototypes)
    def write_similarity(self, arrays: dict[str, np.ndarray]) -> None:
        def write(tmp):
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)

        atomic_replace_with(self.output(1), write)

    def read_similarity(self, cfg: Config, inputs: Inputs) -> dict[str, np.ndarray]:
        """Stage 1's arrays, each checked against the documents, the classes and the encoder: `Unusable`
        (compute the stage again) when one does not fit, a `DataError` for one that holds Python objects."""
        arrays = load_npz(self.output(1), similarity_shapes(cfg, inputs))
        if "test" not in arrays and inputs.test_is_corpus:  # stored once when the test set is the corpus
            arrays["test"] = arrays["corpus"]
            if "names_corpus" in arrays:
                arrays["names_test"] = arrays["names_corpus"]
        return arrays

    # stage 2: the core classes
    def write_mining(self, out) -> None:
        atomic_write_text(self.output(2), json.dumps(out.to_json()))

    def read_mining(self):
        """Stage 2's output, checked against the documents and classes (`sizes`): `Unusable` when it does not fit."""
        from taxoclass.stages.core_mining import MiningOutput

        path = self.output(2)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise Unusable(f"{path.name} is not JSON ({type(err).__name__}: {getattr(err, 'msg', err)})") from None
        why = mining_problem(data, *self.sizes) if self.sizes else None
        if why is not None:
            raise Unusable(f"{path.name}: {why}")
        return MiningOutput.from_json(data)

    # stages 3-4: the model (the head alone with a frozen encoder)
    def write_model(self, stage: int, bundle, taxonomy) -> None:
        from taxoclass.stages.model_io import save_checkpoint

        save_checkpoint(bundle, taxonomy, self.output(stage))

    def read_model(self, stage: int, bundle) -> None:
        """The entry's weights into `bundle`'s model: `Unusable` when a tensor does not fit it, a `DataError` (refused)
        for a file that holds a Python object."""
        from taxoclass.stages.model_io import load_state

        load_state(bundle, self.output(stage))
