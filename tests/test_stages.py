"""Golden tests of the stages on tiny fixed inputs, computed by hand (see comments)."""

import copy

import numpy as np
import pytest
import torch
from conftest import write_dataset

from taxoclass.config import MiningConfig
from taxoclass.data.taxonomy import Taxonomy
from taxoclass.pipeline import greedy_path, zero_shot_metrics
from taxoclass.stages.candidates import run_candidate_search
from taxoclass.stages.core_mining import mine_core_classes, mining_quality
from taxoclass.stages.labels import build_labels
from taxoclass.stages.model import TaxoClassifier, ego_graph
from taxoclass.stages.prototypes import refine_prototypes
from taxoclass.stages.self_training import target_distribution, top3_sets
from taxoclass.training.losses import masked_bce

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
    cands, ps = run_candidate_search(tax, 2, lambda req: {c: float(SIM[0, c]) for c in req})
    assert cands == [0, 1, 3, 5, 4, 7, 8]
    assert ps[3] == pytest.approx(.72) and ps[7] == pytest.approx(.72 * .7)
    cands2, _ = run_candidate_search(tax, 2, lambda req: {c: float(SIM[1, c]) for c in req})
    assert cands2 == [1, 2, 5, 6]


def test_core_mining_golden(tax):
    out = mine_core_classes(SIM, tax, MiningConfig(rule="margin", root_width=2, positivity=True, floor=0.05))
    # confidences, doc 1: A .9-.5=.4, B .5-.9=-.4, A1 .8-.9=-.1, B1 .6-.5=.1, A2 .2-.9=-.7, A1a .7-.8=-.1, A1b .1-.8=-.7
    assert out.confidences[0] == pytest.approx([.4, -.4, -.1, .1, -.7, -.1, -.7], abs=1e-6)
    # doc 2: B .7-.6=.1, C .6-.7=-.1, B1 .9-.7=.2, C1 .3-.6=-.3
    assert out.confidences[1] == pytest.approx([.1, -.1, .2, -.3], abs=1e-6)
    # medians: B (-.4, .1) -> -.15; B1 (.1, .2) -> .15; a class seen by one document never beats its own median
    assert out.thresholds[1] == pytest.approx(-.15) and out.thresholds[5] == pytest.approx(.15)
    assert out.cores == [[], [1, 5]]
    floor = mine_core_classes(SIM, tax, MiningConfig(rule="margin", root_width=2, positivity=True, floor=0.15))
    assert floor.cores == [[], [5]]  # B's .1 misses the floor
    quality = mining_quality(out, [[0, 3], [1, 5]], tax)
    assert quality["stage2/core_precision"] == 1.0 and quality["stage2/core_recall"] == pytest.approx(2 / 4)


def test_path_consistent_and_ancestor_confidence(tax):
    # doc X: A .6, B .5, B1 .9, A1 .1; doc Y: A .5, B .6; everything else 0. Both keep A and B from the root,
    # so A's confidences are .1 (X) and -.1 (Y), median 0; B1's .4 (X) and -.6 (Y), median -.1.
    x = [.6, .5, .0, .1, .0, .9, .0, .0, .0]
    y = [.5, .6, .0, .0, .0, .0, .0, .0, .0]
    sim = np.array([x, y], dtype=np.float32)
    paper = mine_core_classes(sim, tax, MiningConfig(rule="margin", root_width=2, floor=0.05, path_consistent=False))
    assert paper.cores == [[0, 5], [1]]
    # X's best path by mean similarity is B-B1 (.7; A-A2 .3, A-A1-A1a .23): its core A lies off it and goes
    filtered = mine_core_classes(sim, tax, MiningConfig(rule="margin", root_width=2, floor=0.05, path_consistent=True))
    assert filtered.cores == [[5], [1]]
    assert filtered.thresholds == paper.thresholds  # the filter removes cores, the medians stay
    # A1a in X: .0 - max(Par A1 .1, Sib A1b .0) = -.1; with every ancestor: .0 - max(A1 .1, A .6, A1b .0) = -.6
    anc = mine_core_classes(sim, tax, MiningConfig(rule="margin", root_width=2, confidence_over="ancestors"))
    i = paper.candidates[0].index(7)
    assert paper.confidences[0][i] == pytest.approx(-.1) and anc.confidences[0][i] == pytest.approx(-.6)


def test_positivity_switch(tax):
    # two more documents like doc 2 with B at .55 and .3: conf(B) over the four = -.4, .1, -.05, -.3, median -.175,
    # so doc 3's -.05 beats the median but is not positive
    doc3, doc4 = SIM[1].copy(), SIM[1].copy()
    doc3[1], doc4[1] = .55, .3
    sim = np.vstack([SIM, doc3, doc4])
    off = mine_core_classes(sim, tax, MiningConfig(rule="margin", root_width=2, positivity=False, floor=-1.0))
    on = mine_core_classes(sim, tax, MiningConfig(rule="margin", root_width=2, positivity=True, floor=-1.0))
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
    # negatives=core_depth: nothing deeper than the deepest core is a negative (levels a, b 0; c, d 1; e 2)
    targets, mask = build_labels([[0], [2]], t, "paper", negatives="core_depth")
    assert targets.tolist() == [[1, 0, 0, 0, 0], [1, 1, 1, 0, 0]]
    assert mask.tolist() == [[1, 1, 0, 0, 0], [1, 1, 1, 1, 0]]


def test_label_scope_path_reads_the_cores_as_one_path(tax):
    # cores A, A1 on one path: A and A1 positive; only below the deepest core (A1a, A1b) ignored, so
    # A2, the sibling of the core A1, is a negative (the paper's scope ignores it as a child of A)
    targets, mask = build_labels([[0, 3], [0, 3, 7]], tax, "path")
    assert targets.tolist() == [[1, 0, 0, 1, 0, 0, 0, 0, 0], [1, 0, 0, 1, 0, 0, 0, 1, 0]]
    assert mask.tolist() == [[1, 1, 1, 1, 1, 1, 1, 0, 0], [1] * 9]
    _, paper_mask = build_labels([[0, 3]], tax, "paper")
    assert paper_mask.tolist() == [[1, 1, 1, 1, 0, 1, 1, 0, 0]]
    # a leaf core alone: its whole path positive, nothing ignored
    targets, mask = build_labels([[8]], tax, "path")
    assert targets.tolist() == [[1, 0, 0, 1, 0, 0, 0, 0, 1]] and mask.tolist() == [[1] * 9]


def test_path_top_cores_golden(tax):
    sim = np.vstack([SIM, [[.6, .1, .1, .5, .1, .1, .1, .4, .1], [.1, .6, .1, .1, .1, .5, .1, .1, .1]]]).astype(np.float32)
    # best paths by mean score: doc 0 A>A1>A1a (.8), doc 1 B>B1 (.8), doc 2 A>A1>A1a (.5), doc 3 B>B1 (.55);
    # per end class the top half (ceil) of its documents keeps its path as cores
    out = mine_core_classes(sim, tax, MiningConfig(rule="path_top", top_share=0.5))
    assert out.candidates == [[0, 3, 7], [1, 5], [0, 3, 7], [1, 5]]
    assert out.cores == [[0, 3, 7], [1, 5], [], []]
    assert out.thresholds == pytest.approx({7: .8, 5: .8})
    everyone = mine_core_classes(sim, tax, MiningConfig(rule="path_top", top_share=1.0))
    assert everyone.cores == everyone.candidates
    assert everyone.thresholds == pytest.approx({7: .5, 5: .55})


def test_refined_prototypes_golden(tmp_path):
    flat = Taxonomy.load(write_dataset(tmp_path / "flat", labels="0\tA\n1\tB\n", edges=""))
    docs = np.array([[1, 0], [.6, .8], [0, 1]], dtype=np.float32)
    names = np.array([[1, 0], [0, 1]], dtype=np.float32)
    assert refine_prototypes(docs, names, flat, rounds=0, weight=.5, share=1.0) == pytest.approx(names)
    # round 1: doc 0 -> A; docs 1, 2 -> B. B's centroid = normalize(.3, .9) = (.316228, .948683);
    # B = normalize(.5 * (0, 1) + .5 * centroid) = (.160182, .987087); A keeps (1, 0); round 2 changes nothing
    for rounds in (1, 2):
        protos = refine_prototypes(docs, names, flat, rounds=rounds, weight=.5, share=1.0)
        assert protos == pytest.approx(np.array([[1, 0], [.160182, .987087]]), abs=1e-5)
    # share .5: B keeps only its more similar member, doc 2 = its name: nothing moves
    assert refine_prototypes(docs, names, flat, rounds=1, weight=.5, share=.5) == pytest.approx(names)


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
    # best path on the top-3 protocol: doc 2's path B, B1 (2 classes) is followed by C (.6): 2 * 2 / (2 + 3)
    assert m["zeroshot/bestpath_example_f1"] == pytest.approx((1.0 + 0.8) / 2)
    assert m["zeroshot/bestpath_path_only_example_f1"] == pytest.approx(1.0)
    # hierarchical: the greedy and the best path are the gold paths; the top-3 sets hold 3 + 2 gold of 3 + 3
    assert m["zeroshot/path_hier_f1_micro"] == pytest.approx(1.0) and m["zeroshot/bestpath_path_hier_f1_macro"] == pytest.approx(1.0)
    assert m["zeroshot/hier_precision_micro"] == pytest.approx(5 / 6) and m["zeroshot/hier_recall_micro"] == pytest.approx(1.0)
    assert m["zeroshot/bestpath_hier_precision_micro"] == pytest.approx(5 / 6) and "zeroshot/level_2_f1_macro" in m
    enriched = zero_shot_metrics(sim, [[0, 3, 7], [1, 5]], tax, enriched=np.flip(sim, axis=0).copy())
    assert enriched["zeroshot/bestpath_example_f1"] == m["zeroshot/bestpath_example_f1"]
    assert enriched["zeroshot/enriched_bestpath_example_f1"] < m["zeroshot/bestpath_example_f1"]


def test_self_training_guard_keeps_the_best_silver_model(tax):
    """Stage 4's guard: the model returned is the one with the lowest silver-validation loss,
    and it stops `val_patience` updates after that best one (or runs to the budget)."""
    from taxoclass.config import SelfTrainingConfig
    from taxoclass.stages.self_training import self_train
    from taxoclass.training.doc_batches import DocBatches
    from taxoclass.training.env import LocalEnv
    from taxoclass.training.silver import SilverValidation

    torch.manual_seed(0)
    docs = DocBatches(embeddings=torch.randn(40, 8))
    targets, mask = build_labels([[3], [5], [0], [6]], tax, "paper")
    silver = SilverValidation([0, 1, 2, 3], targets, mask)
    results = {}
    for patience in (0, 2):
        model = TaxoClassifier(None, torch.randn(9, 8, generator=torch.Generator().manual_seed(1)), tax,
                               gnn_num_layers=1, gnn_hidden_dim=8)
        # stop_tolerance below the config's range (unchecked: model_construct) turns the top-3 stop rule off
        cfg = SelfTrainingConfig.model_construct(update_interval=1, max_batches=12, batch_size=8, head_learning_rate=0.05,
                                                 stop_tolerance=-1.0, val_patience=patience)
        logged = []
        stats = self_train(model, docs, cfg, "cpu", 0, lambda m, step=None, out=logged: out.append(m), silver=silver)
        losses = [m["stage4/val_loss"] for m in logged if "stage4/val_loss" in m]
        final = silver.loss(model, docs, "cpu", 64, "off", LocalEnv())
        results[patience] = (stats, losses, final)
    stats, losses, _ = results[0]
    assert losses == [] and stats["stage4/stopped_by"] == "budget" and stats["stage4/batches"] == 12
    stats, losses, final = results[2]
    best = int(np.argmin(losses))  # index 0 is the model before self-training
    assert stats["stage4/best_iteration"] == best and final == pytest.approx(min(losses), rel=1e-5)
    if stats["stage4/stopped_by"] == "silver_val":
        assert len(losses) - 1 - best == 2
    else:
        assert stats["stage4/batches"] == 12


def test_self_training_resumed_at_any_target_update_ends_as_an_uninterrupted_run(tax):
    """Stage 4 resumed from the checkpoint of any target update (as Ray Train restores it after a worker died) trains
    on to the same weights, the same kept best model and the same final stats as the run that was never stopped."""
    from taxoclass.config import SelfTrainingConfig
    from taxoclass.stages.self_training import self_train
    from taxoclass.training.doc_batches import DocBatches
    from taxoclass.training.env import LocalEnv
    from taxoclass.training.silver import SilverValidation

    class CheckpointingEnv(LocalEnv):
        checkpoints = True

        def __init__(self, restored=None):
            self.saved, self.restored = [], restored

        def checkpoint(self, metrics, state):
            self.saved.append(copy.deepcopy(state))

        def restore(self):
            return self.restored

    torch.manual_seed(0)
    docs = DocBatches(embeddings=torch.randn(40, 8))
    targets, mask = build_labels([[3], [5], [0], [6]], tax, "paper")
    silver = SilverValidation([0, 1, 2, 3], targets, mask)
    cfg = SelfTrainingConfig.model_construct(update_interval=2, max_batches=10, batch_size=8, head_learning_rate=0.05,
                                             stop_tolerance=-1.0, val_patience=3)

    def run(env):
        model = TaxoClassifier(None, torch.randn(9, 8, generator=torch.Generator().manual_seed(1)), tax,
                               gnn_num_layers=1, gnn_hidden_dim=8)
        logged = []
        stats = self_train(model, docs, cfg, "cpu", 0, lambda m, step=None: logged.append(m), env=env, silver=silver,
                           train_gnn=True)
        return stats, model.state_dict(), logged

    full_env = CheckpointingEnv()
    full, weights, logged = run(full_env)
    updates = full["stage4/iteration"]
    assert full["stage4/batches"] == 2 * updates and len(full_env.saved) == updates >= 3  # a checkpoint at each update
    assert [m["stage4/iteration"] for m in logged] == list(range(updates + 1))
    for at in range(updates - 1):  # the last checkpoint is the end: a resumed run then has nothing left to train
        stats, resumed_weights, resumed_log = run(CheckpointingEnv(restored=full_env.saved[at]))
        assert stats.pop("stage4/resumed_from_iteration") == at + 1
        assert stats == full
        for name, tensor in weights.items():
            assert torch.equal(resumed_weights[name], tensor), name
        # a resumed run logs only the updates after its checkpoint: the earlier ones are in the first attempt's log
        assert resumed_log == logged[at + 2:]


def test_keeper_keeps_the_best_weights_and_resumes_its_state():
    from taxoclass.training.keeper import Keeper
    from taxoclass.training.step import TrainStep

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    keeper = Keeper(patience=2)
    weights = {}
    for at, loss in enumerate([3.0, 2.0, 2.5, 2.6]):
        with torch.no_grad():
            model.weight.add_(1.0)  # every evaluation sees other weights
        weights[at] = model.weight.detach().clone()
        keeper.offer(loss, at, model)
        assert keeper.exhausted == (at == 3)  # two evaluations after the best one without a lower loss
    assert (keeper.best_loss, keeper.best_at, keeper.stale) == (2.0, 1, 2)
    step = TrainStep(model, torch.optim.AdamW(model.parameters()), "off", "cpu")
    state = keeper.checkpoint(step, epoch=3, step=12)  # the loop's own counters may be called anything
    # a fresh keeper and step resumed from the checkpoint: the same weights, best weights, patience and counters
    other = torch.nn.Linear(3, 2)
    again = Keeper(patience=2)
    progress = again.resume(state, TrainStep(other, torch.optim.AdamW(other.parameters()), "off", "cpu"))
    assert progress == {"epoch": 3, "step": 12} and torch.equal(other.weight, weights[3])
    assert (again.best_loss, again.best_at, again.stale, again.exhausted) == (2.0, 1, 2, True)
    assert again.restore_best(other) and torch.equal(other.weight, weights[1])
    assert keeper.restore_best(model) and torch.equal(model.weight, weights[1])
    untouched = other.weight.detach().clone()
    assert not Keeper(patience=1).restore_best(other) and torch.equal(other.weight, untouched)  # nothing kept


def test_path_targets_golden(tax):
    from taxoclass.stages.labels import docs_per_label, path_targets

    # paths in root_to_leaf_paths order: A-A2, B-B1, C-C1, A-A1-A1a, A-A1-A1b
    targets = path_targets([[0, 3, 7], [0, 3], [1], [], [0, 5]], tax)
    assert targets.tolist() == [[0, 0, 0, 1, 0],  # a whole path: that path
                                [0, 0, 0, .5, .5],  # cores stop at A1: both paths below it
                                [0, 1, 0, 0, 0],  # B: its one path
                                [0, 0, 0, 0, 0],  # no cores: no target (the document is not trained on)
                                [.25, .25, 0, .25, .25]]  # A and B1 disagree: every path holding one of them
    assert docs_per_label([[0, 3, 7], [0, 3, 7], [1, 5], []]) == 1.5  # 3 labelled documents, 2 distinct labels


def test_output_modes_golden(tax):
    """How the model reads its logits: the zero-shot start ranks paths as stage 1's mean score does; the path
    mode is a distribution over paths whose class marginals sum what passes through each class."""
    from taxoclass.decoding import decode
    from taxoclass.stages.model import PATH, SIGMOID, ZERO_SHOT

    model = TaxoClassifier(None, torch.eye(9), tax, gnn_num_layers=1, gnn_hidden_dim=4)
    assert int(model.output_mode) == ZERO_SHOT
    logits = torch.tensor([[2.0, 0.0, 0.0, 1.0, -1.0, 0.0, 0.0, 3.0, -3.0]])
    probs, paths = model.scores(logits)
    assert probs[0].tolist() == pytest.approx(torch.sigmoid(logits[0]).tolist())
    # each path's mean logit through a sigmoid: A-A2 .5, B-B1 0, C-C1 0, A-A1-A1a 2, A-A1-A1b 0
    assert paths[0].tolist() == pytest.approx(torch.sigmoid(torch.tensor([.5, 0, 0, 2, 0])).tolist())
    ranked, _ = decode(probs.numpy(), tax, "path", 3, paths.numpy())
    assert ranked[0].tolist() == [0, 3, 7]
    model.output_mode.fill_(PATH)
    probs, paths = model.scores(logits)
    expect = torch.softmax(torch.tensor([.5, 0, 0, 2, 0]), 0)
    assert paths[0].tolist() == pytest.approx(expect.tolist()) and paths.sum().item() == pytest.approx(1.0)
    # A lies on three paths, A1 on two, A1a on one
    assert probs[0, 0].item() == pytest.approx((expect[0] + expect[3] + expect[4]).item())
    assert probs[0, 3].item() == pytest.approx((expect[3] + expect[4]).item()) and probs[0, 7].item() == pytest.approx(expect[3].item())
    model.output_mode.fill_(SIGMOID)  # the paper's reading: a path scores its classes' mean probability
    probs, paths = model.scores(logits)
    assert paths[0, 3].item() == pytest.approx(torch.sigmoid(logits[0, [0, 3, 7]]).mean().item())


def test_the_docs_say_what_each_output_mode_returns():
    """Issue 29: the README described predict's scores and path_score as an untrained model's (independent sigmoids, the
    path's mean), where a model trained with the path loss returns class marginals and the path's probability. The
    table (docs/run-dir.md since issue 30) must give, for each output mode, what test_output_modes_golden checks the
    model does."""
    from conftest import REPO

    section = (REPO / "docs" / "run-dir.md").read_text().split("## Predicting new texts")[1].split("### Millions of texts")[0]
    rows = {line.split("|")[1].strip(): line for line in section.splitlines() if line.strip().startswith("| trained")
            or line.strip().startswith("| untrained")}
    path = next(row for name, row in rows.items() if "classifier.loss=path" in name)
    bce = next(row for name, row in rows.items() if "classifier.loss=bce" in name)
    untrained = next(row for name, row in rows.items() if name.startswith("untrained"))
    assert "marginal probability" in path and "softmax of each path's mean logit" in path and "the path's probability" in path
    assert "one sigmoid per class" in bce and "the mean of the path's class probabilities" in bce
    assert "sigmoid of each class's logit" in untrained and "sigmoid of the mean of the path's logits" in untrained


def test_path_cross_entropy_and_self_training_targets_golden():
    from taxoclass.stages.self_training import path_target_distribution
    from taxoclass.training.losses import path_cross_entropy

    # uniform logits over 4 paths: -log(1/4) whatever the target
    assert path_cross_entropy(torch.zeros(2, 4), torch.tensor([[1.0, 0, 0, 0], [0, .5, .5, 0]])).item() == pytest.approx(np.log(4))
    # DEC over paths: weight p^2 / (the path's total over the corpus), renormalised per document
    # f = (1.0, 1.0); doc 1: (.64, .04) -> (.9412, .0588); doc 2: (.04, .64) -> mirrored
    q = path_target_distribution(np.array([[.8, .2], [.2, .8]]))
    assert q == pytest.approx(np.array([[.941176, .058824], [.058824, .941176]]), abs=1e-5)


def test_a_frozen_class_encoder_gets_no_gradient(tax):
    model = TaxoClassifier(None, torch.eye(9), tax, gnn_num_layers=1, gnn_hidden_dim=4)
    groups = {g["name"]: g for g in model.param_groups(1e-5, 4e-3, 0.01, gnn_lr=0.0)}
    assert set(groups) == {"head"} and len(groups["head"]["params"]) == 2  # class features and bias
    assert not model.bilinear.requires_grad and all(not p.requires_grad for p in model.gnn.parameters())
    groups = {g["name"]: g for g in model.param_groups(1e-5, 4e-3, 0.01, gnn_lr=1e-3)}  # a later stage may unfreeze it
    assert groups["gnn"]["lr"] == 1e-3 and model.bilinear.requires_grad
