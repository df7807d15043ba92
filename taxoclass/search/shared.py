"""What a search computes once, before its trials: stage 1 for each document-vector setting the space can draw.

A trial may set any stage-1 key. Most only change how the stored document vectors become scores
(the prototype refinement, the template and the class texts: a trial embeds the class hypotheses
again, never a document). The keys in `VECTOR_KEYS` need new document vectors (with the NLI
backend, whose stage 1 scores pairs, also `NLI_SCORE_KEYS`): the space must give them as a list of
values, and each combination of values is computed here, once, into the search's cache, where
every trial with those values finds it.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from taxoclass.config import Config, get_value, to_dict, with_values
from taxoclass.errors import ConfigError
from taxoclass.pipeline.metrics_log import say

# what a document's vector depends on (pipeline/vectors.py's EncoderSpec), for stage 1 and the classifier
VECTOR_KEYS = ("similarity.backend", "similarity.model", "similarity.max_length", "similarity.lowercase",
               "classifier.encoder", "classifier.pooling", "classifier.max_length")
# with the NLI cross-encoder, stage 1 is one model pass per (document, class) pair: every input of the pair
NLI_SCORE_KEYS = ("similarity.template", "similarity.class_text", "similarity.nli_normalization", "similarity.pruning")


def costly_keys(space, cfg: Config) -> list[str]:
    """The space's keys whose values need stage 1 to embed (or score) the documents again."""
    from taxoclass.stages.similarity import SCORERS

    drawn = [cfg.similarity.backend, *(v for p in space.params if p.key == "similarity.backend" for v in p.values or [])]
    nli = any(not SCORERS[name].embeds_documents for name in drawn if name in SCORERS)  # a scorer of pairs
    costly = VECTOR_KEYS + (NLI_SCORE_KEYS if nli else ())
    return [p.key for p in space.params if p.key in costly]


def stage1_settings(space, cfg: Config) -> list[dict]:
    """Every combination of the values the space gives its costly keys (`[{}]` when it has none); a range over
    such a key is a ConfigError: each value costs a pass of the encoder over the corpus, so they must be listed."""
    keys = costly_keys(space, cfg)
    values = []
    for key in keys:
        p = next(p for p in space.params if p.key == key)
        if p.kind not in ("categorical", "constant"):
            raise ConfigError(f"parameters.{key}", "needs new document vectors for each value: give it `values` (each is "
                              "embedded once, before the trials), not a range")
        values.append(list(p.values))
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def compute_shared_stages(cfg: Config, search_dir: Path, settings: list[dict]) -> None:
    """Stage 1 (and the frozen classifier's document vectors) for each setting, and stage 2 of the base config,
    in this process, into the cache every trial reads: the pipeline's own entry point, run once per setting."""
    from taxoclass.pipeline import run_first_stages

    for number, setting in enumerate(settings):
        shared = with_values(cfg, {**setting, "runtime": "local", "output_dir": str(search_dir),
                                   "run_name": "shared" if number == 0 else f"shared-{number}",
                                   "cache_dir": str(search_dir / "cache")})
        if len(settings) > 1:
            say(f"search: stage 1 for {', '.join(f'{k}={v}' for k, v in setting.items())} ({number + 1} of {len(settings)})")
        run_first_stages(shared, through=2 if number == 0 else 1)


def stage1_values(cfg: Config) -> dict:
    """The trial's stage-1 settings, for its wandb config (the group's parallel-coordinates view compares them)."""
    return {f"similarity.{k}": get_value(cfg, f"similarity.{k}") for k in to_dict(cfg.similarity)}
