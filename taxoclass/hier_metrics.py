"""Precision, recall and F1 of predicted class sets: hierarchical, per level, per class (scikit-learn).

Features (docs/metrics.md defines each name):
- `hierarchical_metrics(rankings, golds, taxonomy)`: hierarchical precision / recall / F1
  (Kiritchenko et al. 2006, as hiclass computes them): the predicted and the gold set each closed
  under ancestors; micro = counts summed over documents, macro = the mean of each document's
  figure. Of the top-3 set (`hier_*`) and of the decoded path (`path_hier_*`); and micro / macro
  P/R/F1 per taxonomy level of the closed top-3 set (`level_N_*`; macro = mean over the level's
  classes that are gold or predicted somewhere);
- `decoded_path(ranked, taxonomy)`: the path a ranking starts with, its longest prefix that is a
  chain from a top-level class down (with `evaluation.decoding=path` the whole decoded path);
- `class_wise(taxonomy, rankings, golds)`: each class's P/R/F1 of the top-k set, and its support.

A document whose predicted set is empty (a ranking that does not start with a top-level class
has an empty path) scores 0 in the macro figures and adds nothing to the micro denominators.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import precision_recall_fscore_support
from sklearn.preprocessing import MultiLabelBinarizer

from taxoclass.data.taxonomy import ROOT, Taxonomy
from taxoclass.metrics import PRED_SET_SIZE

AVERAGES = {"micro": "micro", "macro": "samples"}  # our name: scikit-learn's (macro over documents is its "samples")


def decoded_path(ranked: Sequence[int], taxonomy: Taxonomy) -> list[int]:
    """The longest prefix of `ranked` in which the first class is top-level and each next one a child of the one before."""
    path: list[int] = []
    for c in ranked:
        if (path[-1] if path else ROOT) not in taxonomy.parents(c):
            break
        path.append(c)
    return path


def hierarchical_metrics(rankings: Sequence[Sequence[int]], golds: Sequence[Sequence[int]], taxonomy: Taxonomy,
                         paths: Sequence[Sequence[int]] | None = None) -> dict:
    """`hier_*`, `path_hier_*` and `level_N_*` figures, unprefixed. `paths` default to each ranking's decoded path."""
    if len(rankings) != len(golds):
        raise ValueError(f"{len(rankings)} rankings for {len(golds)} gold sets")
    paths = [decoded_path(r, taxonomy) for r in rankings] if paths is None else paths
    binarize = MultiLabelBinarizer(classes=list(range(len(taxonomy))), sparse_output=True).fit([])
    gold = binarize.transform([taxonomy.with_ancestors(g) for g in golds])
    top = binarize.transform([taxonomy.with_ancestors(list(r)[:PRED_SET_SIZE]) for r in rankings])
    path = binarize.transform([taxonomy.with_ancestors(p) for p in paths])
    out = {**_prf(gold, top, "hier"), **_prf(gold, path, "path_hier")}
    levels, gold_count, top_count = taxonomy.levels, _column_counts(gold), _column_counts(top)
    for level in range(taxonomy.num_levels):
        columns = [c for c in range(len(taxonomy)) if levels[c] == level]
        if any(gold_count[c] for c in columns):  # like level_N_accuracy: only levels some gold class is on
            present = [c for c in columns if gold_count[c] or top_count[c]]
            for name, average in (("micro", "micro"), ("macro", "macro")):
                p, r, f, _ = precision_recall_fscore_support(gold, top, labels=present, average=average, zero_division=0)
                out.update({f"level_{level}_precision_{name}": float(p), f"level_{level}_recall_{name}": float(r),
                            f"level_{level}_f1_{name}": float(f)})
    return out


def _column_counts(matrix) -> list[int]:
    return np.asarray(matrix.sum(axis=0)).ravel().tolist()


def _prf(gold, pred, prefix: str) -> dict:
    out = {}
    for name, average in AVERAGES.items():
        p, r, f, _ = precision_recall_fscore_support(gold, pred, average=average, zero_division=0)
        out.update({f"{prefix}_precision_{name}": float(p), f"{prefix}_recall_{name}": float(r), f"{prefix}_f1_{name}": float(f)})
    return out


def class_wise(taxonomy: Taxonomy, rankings, golds, k: int = PRED_SET_SIZE) -> list[list]:
    """[name, level, precision, recall, f1, support] of each class that is predicted (top-k) or gold somewhere."""
    binarize = MultiLabelBinarizer(classes=list(range(len(taxonomy))), sparse_output=True).fit([])
    gold = binarize.transform([set(g) for g in golds])
    pred = binarize.transform([set(list(r)[:k]) for r in rankings])
    gold_count, pred_count = _column_counts(gold), _column_counts(pred)
    present = [c for c in range(len(taxonomy)) if gold_count[c] or pred_count[c]]
    if not present:
        return []
    p, r, f, support = precision_recall_fscore_support(gold, pred, labels=present, average=None, zero_division=0)
    return [[taxonomy.names[c], taxonomy.level(c), float(p[i]), float(r[i]), float(f[i]), int(support[i])]
            for i, c in enumerate(present)]
