"""Stage 3's training labels from the core classes (METHOD.md, stage 3).

- positive = cores and their parents, ignored = their children, negative = the rest (paper);
  `classifier.label_scope=all`: ancestors / descendants; `path` (default): the cores read as one
  path, only what lies below the deepest core ignored;
- `classifier.negatives=core_depth` (default, ours): nothing deeper than the deepest core is a negative;
- `training_data`: the rows with a core class and their targets (and mask), by `classifier.loss`.
"""

from __future__ import annotations

import numpy as np

from taxoclass.data.taxonomy import ROOT, Taxonomy


def build_labels(cores: list[list[int]], taxonomy: Taxonomy, scope: str = "paper",
                 negatives: str = "all") -> tuple[np.ndarray, np.ndarray]:
    """(targets, mask), both documents x classes: target 1 = positive, mask 0 = ignored.

    scope: paper = cores + parents positive, children ignored; all = cores + ancestors
    positive, descendants ignored; path = the cores read as one path: cores + ancestors positive,
    only the descendants of the deepest core ignored, so that the siblings of a core whose child
    is also a core are negatives (a whole-path core set, `mining.rule=path_top`, ignores nothing
    when it ends at a leaf). negatives: all = every other class (paper); core_depth =
    classes deeper than the document's deepest core are ignored too: a document whose
    deepest core is at level 0 says nothing about level 2, and treating all level-2 classes
    as its negatives pushes the leaves down everywhere (docs/quality.md).
    """
    n, c = len(cores), len(taxonomy)
    targets = np.zeros((n, c), dtype=np.float32)
    mask = np.ones((n, c), dtype=np.float32)
    levels = np.asarray(taxonomy.levels)
    for i, core in enumerate(cores):
        positive, ignored = set(core), set()
        if scope == "path" and core:
            deepest = max(core, key=lambda k: (taxonomy.level(k), k))
            for k in core:
                positive |= taxonomy.ancestors(k)
            ignored |= taxonomy.descendants(deepest)
        for k in core if scope != "path" else []:
            if scope == "all":
                positive |= taxonomy.ancestors(k)
                ignored |= taxonomy.descendants(k)
            else:
                positive |= {p for p in taxonomy.parents(k) if p != ROOT}
                ignored |= set(taxonomy.children(k))
        ignored -= positive
        targets[i, sorted(positive)] = 1.0
        if ignored:
            mask[i, sorted(ignored)] = 0.0
        if negatives == "core_depth" and core:
            mask[i, levels > max(taxonomy.level(k) for k in core)] = 0.0
    return targets, mask


def label_stats(targets: np.ndarray, mask: np.ndarray) -> dict:
    pos = int(targets.sum())
    ignored = int((mask == 0).sum())
    neg = int(mask.sum()) - pos
    return {
        "stage3/num_positive_labels": pos,
        "stage3/num_negative_labels": neg,
        "stage3/num_ignored_labels": ignored,
        "stage3/positive_ratio": pos / max(pos + neg, 1),
    }


def path_targets(cores: list[list[int]], taxonomy: Taxonomy) -> np.ndarray:
    """(documents, root-to-leaf paths): each document's target distribution over the paths for
    `classifier.loss=path`, uniform over the paths that hold the most of its core classes.

    With `mining.rule=path_top` the cores are one whole path, so the target is that path; cores that
    stop above the leaves spread the target over every path below them (nothing below the deepest
    core is claimed), like `label_scope=path` ignores what lies below it.
    """
    from taxoclass.decoding import path_membership

    member = path_membership(taxonomy)
    hits = np.zeros((len(cores), len(member)), dtype=np.float32)
    for i, core in enumerate(cores):
        if core:
            hits[i] = member[:, core].sum(1)
    best = hits.max(1, keepdims=True)
    targets = ((hits == best) & (best > 0)).astype(np.float32)
    return targets / np.maximum(targets.sum(1, keepdims=True), 1.0)


def docs_per_label(cores: list[list[int]]) -> float:
    """Pseudo-labelled documents per distinct core set (with `mining.rule=path_top`, per root-to-leaf
    path): how many examples a label has to be learnt from."""
    labelled = [tuple(sorted(c)) for c in cores if c]
    return len(labelled) / max(len(set(labelled)), 1)


def training_data(cores: list[list[int]], taxonomy: Taxonomy, c) -> tuple[list[int], np.ndarray, np.ndarray | None]:
    """Stage 3's training data (`c`: the classifier config): (the corpus rows with a core class, their targets, their
    mask); with the path loss the targets are distributions over root-to-leaf paths and there is no mask."""
    rows = [i for i, found in enumerate(cores) if found]
    if c.loss == "path":
        return rows, path_targets([cores[i] for i in rows], taxonomy), None
    targets, mask = build_labels([cores[i] for i in rows], taxonomy, c.label_scope, c.negatives)
    return rows, targets, mask
