"""Hierarchical, per-level and per-class figures: against hiclass.metrics and hand-computed golden values.

The taxonomy is a DAG: X has two parents (A and B). Gold paths end at different depths:
d0 at level 2, d1 at the top level, d2 at level 2 under X, d3 at level 1.
"""

import numpy as np
import pytest

from taxoclass.data.taxonomy import Taxonomy
from taxoclass.hier_metrics import class_wise, decoded_path, hierarchical_metrics

A, B, A1, A2, B1, X, A1a, X1 = range(8)
TAX = Taxonomy(ids=[str(i) for i in range(8)], names=["A", "B", "A1", "A2", "B1", "X", "A1a", "X1"],
               edges=[(A, A1), (A, A2), (B, B1), (A, X), (B, X), (A1, A1a), (X, X1)])
GOLDS = [[A1a], [B], [X1], [A2]]  # closed: {A, A1, A1a}, {B}, {A, B, X, X1}, {A, A2}
RANKINGS = [
    [A, A1, A2, A1a, B],  # top-3 {A, A1, A2}; path A > A1 (A2 is not a child of A1)
    [B, B1, A, X],  # top-3 {A, B, B1}; path B > B1
    [B, X, X1, A],  # top-3 {B, X, X1}, closed {A, B, X, X1}; path B > X > X1, closed adds A (X's other parent)
    [A, A2, A1, A1a],  # top-3 {A, A1, A2}; path A > A2
]


def test_decoded_path_is_the_leading_chain_from_a_top_level_class():
    assert [decoded_path(r, TAX) for r in RANKINGS] == [[A, A1], [B, B1], [B, X, X1], [A, A2]]
    assert decoded_path([X, X1], TAX) == []  # X is not a top-level class
    assert decoded_path([A, X, X1, B], TAX) == [A, X, X1]  # either parent leads into X


def _hiclass_paths(*class_sets_per_input):
    """hiclass's input: per document every root-to-node path of its classes, padded with ''. hiclass zips
    a document's gold paths with its predicted paths: both arrays get the same shape."""
    inputs = [[[[TAX.names[c] for c in p] for c in classes for p in TAX.paths(c)] for classes in class_sets]
              for class_sets in class_sets_per_input]
    width = max(len(row) for rows in inputs for row in rows)
    depth = max(len(p) for rows in inputs for row in rows for p in row)
    return [np.array([[p + [""] * (depth - len(p)) for p in row] + [[""] * depth] * (width - len(row)) for row in rows])
            for rows in inputs]


@pytest.mark.parametrize("prefix, predicted", [("hier", [r[:3] for r in RANKINGS]),
                                               ("path_hier", [decoded_path(r, TAX) for r in RANKINGS])])
def test_hierarchical_figures_match_hiclass(prefix, predicted):
    hiclass_metrics = pytest.importorskip("hiclass.metrics")
    ours = hierarchical_metrics(RANKINGS, GOLDS, TAX)
    y_true, y_pred = _hiclass_paths(GOLDS, predicted)
    for average in ("micro", "macro"):
        assert ours[f"{prefix}_precision_{average}"] == pytest.approx(hiclass_metrics.precision(y_true, y_pred, average))
        assert ours[f"{prefix}_recall_{average}"] == pytest.approx(hiclass_metrics.recall(y_true, y_pred, average))
        assert ours[f"{prefix}_f1_{average}"] == pytest.approx(hiclass_metrics.f1(y_true, y_pred, average))


def test_golden_hierarchical_and_per_level_figures():
    m = hierarchical_metrics(RANKINGS, GOLDS, TAX)
    # top-3 closed against gold closed: hits 2+1+4+2, predicted 3+3+4+3, gold 3+1+4+2
    p, r = 9 / 13, 9 / 10
    assert m["hier_precision_micro"] == pytest.approx(p) and m["hier_recall_micro"] == pytest.approx(r)
    assert m["hier_f1_micro"] == pytest.approx(2 * p * r / (p + r))
    assert m["hier_precision_macro"] == pytest.approx((2 / 3 + 1 / 3 + 1 + 2 / 3) / 4)
    assert m["hier_recall_macro"] == pytest.approx((2 / 3 + 1 + 1 + 1) / 4)
    assert m["hier_f1_macro"] == pytest.approx((2 / 3 + 1 / 2 + 1 + 4 / 5) / 4)
    # paths closed: {A, A1} {B, B1} {A, B, X, X1} {A, A2}: hits 2+1+4+2, predicted 2+2+4+2
    assert m["path_hier_precision_micro"] == pytest.approx(9 / 10) and m["path_hier_recall_micro"] == pytest.approx(9 / 10)
    # level 0: gold A, B, AB, A; predicted A, AB, AB, A -> 5 hits of 6 predicted, 5 gold.
    # per class: A 3 of 4 predicted, 3 of 3 gold; B 2 of 2, 2 of 2
    assert m["level_0_precision_micro"] == pytest.approx(5 / 6) and m["level_0_recall_micro"] == pytest.approx(1.0)
    assert m["level_0_precision_macro"] == pytest.approx((3 / 4 + 1) / 2)
    assert m["level_0_f1_macro"] == pytest.approx((6 / 7 + 1) / 2)
    # level 1: gold A1, -, X, A2; predicted A1 A2, B1, X, A1 A2 -> 3 hits of 6 predicted, 3 gold.
    # per class: A1 P .5 R 1, A2 P .5 R 1, B1 (predicted, never gold) 0 0, X 1 1
    assert m["level_1_precision_micro"] == pytest.approx(0.5) and m["level_1_recall_micro"] == pytest.approx(1.0)
    assert m["level_1_precision_macro"] == pytest.approx(0.5) and m["level_1_recall_macro"] == pytest.approx(0.75)
    assert m["level_1_f1_macro"] == pytest.approx((2 / 3 + 2 / 3 + 0 + 1) / 4)
    # level 2: gold A1a, X1; predicted X1 -> P 1, R .5; per class A1a 0 0, X1 1 1
    assert m["level_2_precision_micro"] == pytest.approx(1.0) and m["level_2_recall_micro"] == pytest.approx(0.5)
    assert m["level_2_f1_micro"] == pytest.approx(2 / 3) and m["level_2_f1_macro"] == pytest.approx(0.5)
    assert not any(k.startswith("level_3") for k in m)


def test_an_empty_path_scores_zero():
    # d1 ranks B1 first: no top-level class leads, the path is empty
    m = hierarchical_metrics([RANKINGS[0], [B1, B, A]], GOLDS[:2], TAX)
    assert m["path_hier_precision_macro"] == pytest.approx((1 + 0) / 2)  # d0: {A, A1} against {A, A1, A1a}
    assert m["path_hier_recall_macro"] == pytest.approx((2 / 3 + 0) / 2)
    assert m["path_hier_precision_micro"] == pytest.approx(2 / 2)  # the empty path predicts nothing
    assert m["path_hier_recall_micro"] == pytest.approx(2 / 4)


def test_class_wise_golden():
    # top-3 sets (not closed) against the gold sets as given
    rows = {row[0]: row[1:] for row in class_wise(TAX, RANKINGS, GOLDS)}
    assert rows["A"] == pytest.approx([0, 0.0, 0.0, 0.0, 0])  # predicted 3 times, never gold as given
    assert rows["A2"] == pytest.approx([1, 1 / 2, 1.0, 2 / 3, 1])  # predicted d0 d3, gold d3
    assert rows["X1"] == pytest.approx([2, 1.0, 1.0, 1.0, 1])
    assert rows["A1a"] == pytest.approx([2, 0.0, 0.0, 0.0, 1])  # gold d0, never in a top 3
    assert "B1" in rows and set(rows) == {"A", "B", "A1", "A2", "B1", "X", "X1", "A1a"}
