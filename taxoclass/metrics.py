"""Multi-label ranking metrics (TELEClass protocol) and the seed's tracking metrics.

Every metric takes, per document, a ranking of class indices (best first) and
the gold set, and returns a mean over documents. Definitions (docs/metrics.md):

- example_f1: prediction set P = top-3; mean of 2|T n P| / (|T| + |P|).
- p_at_k: mean |T n top-k| / k.
- paper_p_at_k: mean |T n top-k| / min(k, |T|) (the figure the papers print).
- mrr: filtered; each true class ranked only against the non-true classes,
  1 / rank averaged over the true classes, then over documents. A true class
  missing from a truncated ranking contributes 0.
- accuracy: the top-1 class is a gold class.
- precision / recall / f1_score: micro-averaged top-3 set against gold.
- topK_accuracy: every gold class is within the top K.
- level_N_accuracy: over documents with a gold class at level N, the best-ranked
  class of level N is gold.
"""

from __future__ import annotations

from collections.abc import Sequence

PRED_SET_SIZE = 3
TOPK_ACCURACY = (3, 5, 10)


def example_f1(ranked: Sequence[int], gold: set[int], k: int = PRED_SET_SIZE) -> float:
    pred = set(ranked[:k])
    return 2 * len(gold & pred) / (len(gold) + len(pred)) if gold or pred else 1.0


def precision_at_k(ranked: Sequence[int], gold: set[int], k: int) -> float:
    return len(gold & set(ranked[:k])) / k


def paper_precision_at_k(ranked: Sequence[int], gold: set[int], k: int) -> float:
    return len(gold & set(ranked[:k])) / min(k, len(gold))


def filtered_mrr(ranked: Sequence[int], gold: set[int]) -> float:
    reciprocal, false_above = 0.0, 0
    for c in ranked:
        if c in gold:
            reciprocal += 1.0 / (false_above + 1)
        else:
            false_above += 1
    return reciprocal / len(gold)


def evaluate_rankings(rankings: Sequence[Sequence[int]], golds: Sequence[Sequence[int]], levels: Sequence[int]) -> dict:
    """All metrics, unprefixed (`example_f1`, `p_at_1`, ..., `level_0_accuracy`).

    `levels[c]` is the taxonomy level of class c (Taxonomy.levels).
    """
    if len(rankings) != len(golds):
        raise ValueError(f"{len(rankings)} rankings for {len(golds)} gold sets")
    n = len(rankings)
    if n == 0:
        raise ValueError("no documents to evaluate")
    num_levels = max(levels) + 1
    sums = dict.fromkeys(["example_f1", "p_at_1", "p_at_3", "paper_p_at_1", "paper_p_at_3", "mrr", "accuracy"], 0.0)
    topk_hits = dict.fromkeys(TOPK_ACCURACY, 0)
    hit = pred_total = gold_total = 0
    level_hits, level_docs = [0] * num_levels, [0] * num_levels
    for ranked, gold_list in zip(rankings, golds):
        gold = set(gold_list)
        ranked = list(ranked)
        sums["example_f1"] += example_f1(ranked, gold)
        sums["p_at_1"] += precision_at_k(ranked, gold, 1)
        sums["p_at_3"] += precision_at_k(ranked, gold, 3)
        sums["paper_p_at_1"] += paper_precision_at_k(ranked, gold, 1)
        sums["paper_p_at_3"] += paper_precision_at_k(ranked, gold, 3)
        sums["mrr"] += filtered_mrr(ranked, gold)
        sums["accuracy"] += float(bool(ranked) and ranked[0] in gold)
        pred = set(ranked[:PRED_SET_SIZE])
        hit += len(pred & gold)
        pred_total += len(pred)
        gold_total += len(gold)
        for k in TOPK_ACCURACY:
            topk_hits[k] += gold <= set(ranked[:k])
        gold_levels = {levels[c] for c in gold}
        seen_levels = set()
        for c in ranked:  # the first class met at each level is that level's top-1
            lv = levels[c]
            if lv not in seen_levels:
                seen_levels.add(lv)
                if lv in gold_levels:
                    level_hits[lv] += c in gold
        for lv in gold_levels:
            level_docs[lv] += 1
    out = {k: v / n for k, v in sums.items()}
    out["precision"] = hit / pred_total if pred_total else 0.0
    out["recall"] = hit / gold_total if gold_total else 0.0
    p, r = out["precision"], out["recall"]
    out["f1_score"] = 2 * p * r / (p + r) if p + r else 0.0
    for k in TOPK_ACCURACY:
        out[f"top{k}_accuracy"] = topk_hits[k] / n
    for lv in range(num_levels):
        if level_docs[lv]:
            out[f"level_{lv}_accuracy"] = level_hits[lv] / level_docs[lv]
    out["num_docs"] = n
    return out


def prefixed(metrics: dict, prefix: str) -> dict:
    return {f"{prefix}/{k}": v for k, v in metrics.items()}
