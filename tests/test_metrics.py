"""Golden values computed by hand (see the comments) for two documents."""

import pytest

from taxoclass.metrics import evaluate_rankings, example_f1, filtered_mrr, paper_precision_at_k, precision_at_k

LEVELS = [0, 0, 1, 1, 2, 2]  # level of classes 0..5
# doc A: gold {1,2,3}, ranked 1,5,2,3,4,0 -> top-3 {1,5,2} holds 2 gold
# doc B: gold {4},     ranked 0,5,4,1,2,3 -> top-3 {0,5,4} holds 1 gold
RANKINGS = [[1, 5, 2, 3, 4, 0], [0, 5, 4, 1, 2, 3]]
GOLDS = [[1, 2, 3], [4]]


def test_single_document_metrics():
    a, gold = RANKINGS[0], {1, 2, 3}
    assert example_f1(a, gold) == pytest.approx(2 * 2 / (3 + 3))
    assert precision_at_k(a, gold, 3) == pytest.approx(2 / 3)
    # filtered ranks: 1 -> 1; 2 -> 2 (only 5 above it is false); 3 -> 2
    assert filtered_mrr(a, gold) == pytest.approx((1 + 1 / 2 + 1 / 2) / 3)
    # doc B: 4 is behind two false classes -> rank 3; paper P@3 divides by min(3, 1)
    assert filtered_mrr(RANKINGS[1], {4}) == pytest.approx(1 / 3)
    assert paper_precision_at_k(RANKINGS[1], {4}, 3) == pytest.approx(1.0)


def test_golden_aggregate():
    m = evaluate_rankings(RANKINGS, GOLDS, LEVELS)
    expected = {
        "example_f1": (4 / 6 + 2 / 4) / 2,
        "p_at_1": 0.5,
        "p_at_3": (2 / 3 + 1 / 3) / 2,
        "paper_p_at_1": 0.5,
        "paper_p_at_3": (2 / 3 + 1) / 2,
        "mrr": (2 / 3 + 1 / 3) / 2,
        "accuracy": 0.5,
        "precision": 3 / 6,  # micro: 3 hits in 6 predicted
        "recall": 3 / 4,  # 3 of 4 gold
        "f1_score": 0.6,
        "top3_accuracy": 0.5,  # only B has all its gold in the top 3
        "top5_accuracy": 1.0,
        "top10_accuracy": 1.0,
        "level_0_accuracy": 1.0,  # A: first level-0 class is 1 (gold)
        "level_1_accuracy": 1.0,  # A: first level-1 class is 2 (gold)
        "level_2_accuracy": 0.0,  # B: first level-2 class is 5 (not gold)
        "num_docs": 2,
    }
    assert m.keys() == expected.keys()
    for k, v in expected.items():
        assert m[k] == pytest.approx(v), k


def test_truncated_ranking_counts_missing_gold_as_zero():
    assert filtered_mrr([7, 8], {1, 7}) == pytest.approx((1 + 0) / 2)


def test_mismatched_lengths():
    with pytest.raises(ValueError):
        evaluate_rankings(RANKINGS, GOLDS[:1], LEVELS)
