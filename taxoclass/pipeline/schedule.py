"""What runs when: the rules that decide, from the config and what the earlier stages did, which stages train.

Features:
- `classifier_steps_aside`: stage 3 keeps its zero-shot start, untrained, when the pseudo-labelled
  documents per label path are fewer than `classifier.min_docs_per_label`;
- `self_training_runs`: whether stage 4 runs (with `self_training.enabled=auto`, from what stage 3
  did), and the reason the log and the summary give;
- `final_stage`: which stage's model is the run's final model (evaluation, `stage 5`, model.pt).
"""

from __future__ import annotations

from taxoclass.config import ClassifierConfig, Config


def classifier_steps_aside(c: ClassifierConfig, docs_per_label: float) -> bool:
    """Stage 3 keeps its zero-shot start: a classifier fitted to a handful of documents per label moves away from its
    start on noise (on the sets of 1,000-2,555 documents, 2-3 per path, it lost to the refined prototypes it starts
    from). A random head has no start worth keeping."""
    return c.head_init == "zeroshot" and docs_per_label < c.min_docs_per_label


def self_training_runs(cfg: Config, stage3: dict) -> tuple[bool, str]:
    """Whether stage 4 runs, and why (the log and the summary say it): `self_training.enabled`, and with
    `auto` (the default) what stage 3 did, from its stats (`stage3`)."""
    enabled = cfg.self_training.enabled
    if enabled != "auto":
        return enabled == "true", f"self_training.enabled={enabled}"
    if stage3.get("stage3/stepped_aside"):
        return False, ("self_training.enabled=auto and stage 3 stepped aside (too few pseudo-labelled documents per label "
                       "path): self-training would sharpen the zero-shot model's own guesses")
    if cfg.classifier.loss != "path":
        return False, ("self_training.enabled=auto runs it after the path loss; after classifier.loss=bce the paper's "
                       "self-training never raised held-out quality (docs/quality.md)")
    return True, "self_training.enabled=auto and stage 3 trained with the path loss"


def final_stage(cfg: Config, stage3: dict) -> int:
    """The stage whose model is the run's final model: stage 4 when it runs (`self_training_runs`), else stage 3."""
    return 4 if self_training_runs(cfg, stage3)[0] else 3
