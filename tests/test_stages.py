"""Golden tests of the stages on tiny fixed inputs, computed by hand (see comments)."""

import numpy as np
import pytest
import torch
from conftest import write_dataset

from taxoclass.config import MiningConfig
from taxoclass.data.taxonomy import Taxonomy
from taxoclass.pipeline import greedy_path, zero_shot_metrics
from taxoclass.stages.classifier import TaxoClassifier, build_labels, ego_graph, masked_bce
from taxoclass.stages.core_mining import mine_core_classes, mining_quality
from taxoclass.stages.search import run_search
from taxoclass.stages.self_training import target_distribution, top3_sets

# ROOT -> A(0) B(1) C(2); A -> A1(3) A2(4); B -> B1(5); C -> C1(6); A1 -> A1a(7) A1b(8)
LABELS = "".join(f"{i}\t{n}\n" for i, n in enumerate(["A", "B", "C", "A1", "A2", "B1", "C1", "A1a", "A1b"]))
EDGES = "0\t3\n0\t4\n1\t5\n2\t6\n3\t7\n3\t8\n"
SIM = np.array([
    [.9, .5, .3, .8, .2, .6, .0, .7, .1],  # doc 1
    [.2, .7, .6, .0, .0, .9, .3, .0, .0],  # doc 2
], dtype=np.float32)


@pytest.fixture
def tax(tmp_path):
    return Taxonomy.load(write_dataset(tmp_path / "t", labels=LABELS, edges=EDGES))


def test_candidate_search_golden(tax):
    # doc 1: root keeps A(.9), B(.5); depth 1 pools A1 (.9*.8=.72), B1 (.5*.6=.30), A2 (.9*.2=.18), keeps 4;
    # depth 2: A1's children A1a (.72*.7), A1b (.72*.1); leaves end the search.
    cands, ps = run_search(tax, 2, lambda req: {c: float(SIM[0, c]) for c in req})
    assert cands == [0, 1, 3, 5, 4, 7, 8]
    assert ps[3] == pytest.approx(.72) and ps[7] == pytest.approx(.72 * .7)
    cands2, _ = run_search(tax, 2, lambda req: {c: float(SIM[1, c]) for c in req})
    assert cands2 == [1, 2, 5, 6]


def test_core_mining_golden(tax):
    out = mine_core_classes(SIM, tax, MiningConfig(root_width=2, positivity=True, floor=0.05))
    # confidences, doc 1: A .9-.5=.4, B .5-.9=-.4, A1 .8-.9=-.1, B1 .6-.5=.1, A2 .2-.9=-.7, A1a .7-.8=-.1, A1b .1-.8=-.7
    assert out.confidences[0] == pytest.approx([.4, -.4, -.1, .1, -.7, -.1, -.7], abs=1e-6)
    # doc 2: B .7-.6=.1, C .6-.7=-.1, B1 .9-.7=.2, C1 .3-.6=-.3
    assert out.confidences[1] == pytest.approx([.1, -.1, .2, -.3], abs=1e-6)
    # medians: B (-.4, .1) -> -.15; B1 (.1, .2) -> .15; a class seen by one document never beats its own median
    assert out.thresholds[1] == pytest.approx(-.15) and out.thresholds[5] == pytest.approx(.15)
    assert out.cores == [[], [1, 5]]
    floor = mine_core_classes(SIM, tax, MiningConfig(root_width=2, positivity=True, floor=0.15))
    assert floor.cores == [[], [5]]  # B's .1 misses the floor
    quality = mining_quality(out, [[0, 3], [1, 5]], tax)
    assert quality["stage2/core_precision"] == 1.0 and quality["stage2/core_recall"] == pytest.approx(2 / 4)


def test_positivity_switch(tax):
    # two more documents like doc 2 with B at .55 and .3: conf(B) over the four = -.4, .1, -.05, -.3, median -.175,
    # so doc 3's -.05 beats the median but is not positive
    doc3, doc4 = SIM[1].copy(), SIM[1].copy()
    doc3[1], doc4[1] = .55, .3
    sim = np.vstack([SIM, doc3, doc4])
    off = mine_core_classes(sim, tax, MiningConfig(root_width=2, positivity=False, floor=-1.0))
    on = mine_core_classes(sim, tax, MiningConfig(root_width=2, positivity=True, floor=-1.0))
    assert off.thresholds[1] == pytest.approx(-.175)
    assert 1 in off.cores[2] and 1 not in on.cores[2]


def test_label_construction(tmp_path):
    t = Taxonomy.load(write_dataset(tmp_path / "tiny"))  # a->c, a->d, b->c, c->e
    targets, mask = build_labels([[2], [0], [4]], t, "paper")
    assert targets.tolist() == [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [0, 0, 1, 0, 1]]
    assert mask.tolist() == [[1, 1, 1, 1, 0], [1, 1, 0, 0, 1], [1, 1, 1, 1, 1]]
    targets, mask = build_labels([[4], [0]], t, "all")
    assert targets.tolist() == [[1, 1, 1, 0, 1], [1, 0, 0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]


def test_masked_bce_sums_over_unmasked_classes():
    logits = torch.zeros(1, 3)
    loss = masked_bce(logits, torch.tensor([[1.0, 0.0, 1.0]]), torch.tensor([[1.0, 1.0, 0.0]]))
    assert loss.item() == pytest.approx(2 * np.log(2))


def test_self_training_target_golden():
    # f = (1.3, .8), g = (.7, 1.2); q = (p^2/f) / (p^2/f + (1-p)^2/g)
    q = target_distribution(np.array([[.9, .2], [.4, .6]]))
    assert q == pytest.approx(np.array([[.977586, .085714], [.193103, .771429]]), abs=1e-5)
    assert top3_sets(np.array([[.1, .5, .3, .9]])).tolist() == [[1, 2, 3]]


def test_ego_graph_and_gcn(tmp_path):
    t = Taxonomy.load(write_dataset(tmp_path / "tiny"))
    node_class, edge_index, node_batch = ego_graph(t)
    # ego(a) = a, c, d; ego(b) = b, c; ego(c) = c, a, b, e; ego(d) = d, a; ego(e) = e, c
    assert node_class.tolist() == [0, 2, 3, 1, 2, 2, 0, 1, 4, 3, 0, 4, 2]
    assert node_batch.tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 4, 4]
    assert edge_index.shape == (2, 16)
    torch.manual_seed(0)
    model = TaxoClassifier(None, torch.randn(5, 8), t, gnn_num_layers=2, gnn_hidden_dim=6)
    logits = model(doc_embeddings=torch.randn(3, 8))
    assert logits.shape == (3, 5) and torch.isfinite(logits).all()


def test_zero_shot_baselines(tax):
    sim = SIM.copy()
    assert greedy_path(sim[0], tax) == [0, 3, 7]
    m = zero_shot_metrics(sim, [[0, 3, 7], [1, 5]], tax)
    # doc 1 path = gold -> F1 1; doc 2 path B, B1 = gold -> 1
    assert m["zeroshot/path_example_f1"] == pytest.approx(1.0)
    # flat top-3 of doc 1: A .9, A1 .8, A1a .7 -> all gold; doc 2: B1 .9, B .7, C .6 -> 2 of 2 gold in 3
    assert m["zeroshot/example_f1"] == pytest.approx((1.0 + 2 * 2 / 5) / 2)
