"""Turning scores into rankings: flat, or path-consistent (the best root-to-leaf path first).

Plain NumPy, shared by stage 2 (path-consistent core classes), evaluation, `predict` and
the zero-shot baselines.
"""

from __future__ import annotations

import numpy as np

from taxoclass.data.taxonomy import Taxonomy


def root_to_leaf_paths(taxonomy: Taxonomy) -> list[list[int]]:
    return [p for leaf in taxonomy.leaves for p in taxonomy.paths(leaf)]


def path_membership(taxonomy: Taxonomy) -> np.ndarray:
    """(paths, classes): 1 where the class lies on the root-to-leaf path (`root_to_leaf_paths` order)."""
    paths = root_to_leaf_paths(taxonomy)
    member = np.zeros((len(paths), len(taxonomy)), dtype=np.float32)
    for i, p in enumerate(paths):
        member[i, p] = 1.0
    return member


def best_paths(scores: np.ndarray, taxonomy: Taxonomy, chunk: int = 4096) -> list[list[int]]:
    """Per row, the root-to-leaf path with the highest mean score (path-consistent decoding)."""
    paths = root_to_leaf_paths(taxonomy)
    member = path_membership(taxonomy)
    weights = member / member.sum(1, keepdims=True)  # each path's mean
    out = []
    for start in range(0, len(scores), chunk):
        best = (scores[start : start + chunk] @ weights.T).argmax(1)
        out.extend(paths[b] for b in best)
    return out


def similarity_best_paths(sim: np.ndarray, taxonomy: Taxonomy) -> list[list[int]]:
    """`best_paths` of stage-1 scores; a pair pruning left unscored (NaN) counts as -1,
    below any cosine or probability."""
    return best_paths(np.where(np.isnan(sim), -1.0, sim), taxonomy)


def top_share(rows: np.ndarray, scores: np.ndarray, share: float) -> np.ndarray:
    """The best-scored `share` of `rows` (at least one; ties keep row order), `scores` aligned with `rows`.
    Per-class selection shared by prototype refinement and the per-class core rule."""
    return rows[np.argsort(-scores, kind="stable")[: max(1, int(np.ceil(len(rows) * share)))]]


def rank_with_paths(probs: np.ndarray, paths: list[list[int]], top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """The decoded path first (top level first), then the other classes by score."""
    k = probs.shape[1] if top_k <= 0 else min(top_k, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")
    ranked = np.empty((len(probs), k), dtype=np.int64)
    for i, path in enumerate(paths):
        on_path = set(path)
        ranked[i] = (list(path) + [c for c in order[i] if c not in on_path])[:k]
    return ranked, np.take_along_axis(probs, ranked, axis=1)


def decode(probs: np.ndarray, taxonomy: Taxonomy, decoding: str, top_k: int,
           path_scores: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rankings and their scores. With `path_scores` (documents x `root_to_leaf_paths`, the model's own
    score of each path) the best path is the highest-scored one; without, the path with the highest
    mean probability."""
    if decoding == "flat":
        return rank(probs, top_k)
    if path_scores is not None:
        paths = root_to_leaf_paths(taxonomy)
        return rank_with_paths(probs, [paths[j] for j in path_scores.argmax(1)], top_k)
    # the mean probability, not the mean logit: in a path's mean logit one extreme class can
    # outvote the others, a probability saturates
    # (path-decoded Example-F1 after stage 3: relaclass .598 -> .626, DBpedia .629 -> .698,
    # amazon-531 .738 -> .718; docs/quality.md)
    return rank_with_paths(probs, best_paths(probs, taxonomy), top_k)


def rank(probs: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """(class indices, scores), best first, `top_k` per row (all when top_k <= 0)."""
    k = probs.shape[1] if top_k <= 0 else min(top_k, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(probs, order, axis=1)
