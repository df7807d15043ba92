"""The engine's jobs built by hand, not by the pipeline, and run by the local runtime (issue 36): what a job holds is
all that runs it. Golden values on tiny fixed inputs: a taxonomy of five classes, three documents for stage 1,
24 fixed vectors for stages 3 and 4."""

import numpy as np
import pytest
import torch
from conftest import write_dataset

from taxoclass.config import build_config
from taxoclass.data.taxonomy import Taxonomy
from taxoclass.jobs.similarity import SimilarityJob
from taxoclass.jobs.training import TrainingJob
from taxoclass.runtime import LocalRuntime
from taxoclass.stages.labels import training_data
from taxoclass.stages.model import PATH, TaxoClassifier
from taxoclass.training.silver import held_out

# sports(0) -> football(3); cooking(1) -> baking(4); music(2)
LABELS = "0\tsports\n1\tcooking\n2\tmusic\n3\tfootball\n4\tbaking\n"
EDGES = "0\t3\n1\t4\n"
BRANCHES = {0: [0, 3], 1: [1, 4], 2: [2]}  # the classes of each top-level branch


@pytest.fixture(scope="module")
def tax(tmp_path_factory):
    return Taxonomy.load(write_dataset(tmp_path_factory.mktemp("jobs"), labels=LABELS, edges=EDGES))


def test_a_similarity_job_built_by_hand_runs_on_the_local_runtime(tax):
    cfg = build_config("debug", overrides=["similarity.refine_rounds=0"], environ={})
    texts = ["The team won the football match in the last minute.", "Bake the bread in a hot oven for an hour.",
             "A guitar and drums concert tonight."]
    kept, computed = {}, []

    def memo(texts, desc, compute):  # the pipeline's vector store, as a dict
        if tuple(texts) not in kept:
            computed.append(desc)
            kept[tuple(texts)] = compute()
        return kept[tuple(texts)]

    job = SimilarityJob(cfg, tax, None, texts, None, "cpu", memo)
    out = LocalRuntime().similarity(job)
    assert out.corpus.shape == (3, 5) and out.corpus.dtype == np.float32 and out.test is None
    assert out.encoder_passes == 5 + 3 and out.prototypes is None  # each hypothesis and document once, names only
    assert computed == ["stage 1: corpus"] and kept[tuple(texts)].shape == (3, 384)  # the bundled MiniLM's vectors
    for doc, branch in BRANCHES.items():  # each document is closest to a class of its own branch
        others = [c for c in range(5) if c not in branch]
        assert out.corpus[doc, branch].max() > out.corpus[doc, others].max(), (doc, out.corpus[doc])
    again = LocalRuntime().similarity(job)  # the vectors come from the memo: no document is embedded again
    assert computed == ["stage 1: corpus"] and np.array_equal(again.corpus, out.corpus)


def test_training_jobs_built_by_hand_run_on_the_local_runtime(tax):
    cfg = build_config("debug", overrides=["classifier.epochs=3", "classifier.batch_size=4", "classifier.early_stopping_patience=3",
                                           "classifier.gnn_hidden_dim=8", "self_training.update_interval=2",
                                           "self_training.max_batches=6", "self_training.batch_size=4"], environ={})
    c = cfg.classifier
    assert c.freeze_encoder and c.loss == "path"  # the jobs take vectors; the model reads paths
    rng = np.random.default_rng(0)
    class_init = rng.normal(size=(5, 8)).astype(np.float32)
    cores = [[3], [4], [2]] * 8  # football, baking, music in turn
    documents = (class_init[[core[0] for core in cores]] + rng.normal(scale=1.5, size=(24, 8))).astype(np.float32)
    model = TaxoClassifier(None, torch.from_numpy(class_init), tax, pooling=c.pooling, gnn_num_layers=c.gnn_num_layers,
                           gnn_hidden_dim=c.gnn_hidden_dim, head_init=c.head_init)
    init = model.head_state_dict()
    rows, targets, mask = training_data(cores, tax, c)
    assert rows == list(range(24)) and targets.shape == (24, 3) and mask is None  # 3 root-to-leaf paths

    def run(job):
        logged = []
        stats, state = LocalRuntime().train(job, lambda metrics, step=None: logged.append(dict(metrics)))
        return stats, state, logged

    stage3 = TrainingJob(3, cfg, tax, None, documents[rows], init, targets=targets, mask=mask)
    stats3, state3, logged3 = run(stage3)
    assert set(state3) == set(init)  # the head alone: the encoder is frozen
    assert int(state3["output_mode"]) == PATH and not torch.equal(state3["class_features"], init["class_features"])
    # 10% held out (2 documents), 22 trained on in batches of 4: 6 steps an epoch, 3 epochs, the last the best
    assert (stats3["stage3/train_samples"], stats3["stage3/val_samples"], stats3["stage3/steps"]) == (22, 2, 18)
    assert stats3["stage3/best_epoch"] == 2 and stats3["stage3/best_val_loss"] == pytest.approx(0.400769, rel=1e-4)
    assert logged3[0] == {"stage3/train_samples": 22, "stage3/val_samples": 2}
    # the job seeds its stage: the same job again gives the same weights
    _, state3_again, _ = run(stage3)
    assert all(torch.equal(state3_again[k], v) for k, v in state3.items())

    silver = held_out(rows, targets, mask, c, cfg.seed)
    assert len(silver.rows) == 2
    stage4 = TrainingJob(4, cfg, tax, None, documents, state3, silver=silver)
    stats4, state4, logged4 = run(stage4)
    assert set(state4) == set(init)
    # stage 3's model scores 0.4008 on the silver documents, the first update 0.3967 (kept), the second 0.4000, and
    # no document's best path moved then: stopped by the tolerance, the first update's weights returned
    assert [m["stage4/iteration"] for m in logged4] == [0, 1, 2]
    assert [m["stage4/val_loss"] for m in logged4] == pytest.approx([0.400769, 0.396683, 0.400045], rel=1e-4)
    assert (stats4["stage4/batches"], stats4["stage4/stopped_by"], stats4["stage4/best_iteration"]) == (4, "tolerance", 1)
    assert stats4["stage4/best_val_loss"] == pytest.approx(0.396683, rel=1e-4)
    assert stats4["stage4/avg_max_prediction"] == pytest.approx(0.883709, rel=1e-4)

