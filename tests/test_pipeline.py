"""End to end on the debug preset: determinism, the run dir contract, caching, predict, single stages."""

import json

import pytest
from conftest import run_cli

from taxoclass.config import build_config
from taxoclass.data.readers import load_dataset
from taxoclass.errors import DataError
from taxoclass.evaluate import evaluate_predictions_file
from taxoclass.pipeline import run_pipeline

REQUIRED_SUMMARY = ["test/example_f1", "test/p_at_1", "test/p_at_3", "test/mrr", "test/accuracy", "test/precision", "test/recall",
                    "test/f1_score", "test/top3_accuracy", "test/top5_accuracy", "test/top10_accuracy", "test/level_0_accuracy",
                    "test/level_1_accuracy", "test/level_2_accuracy", "zeroshot/example_f1", "zeroshot/path_example_f1",
                    "stage1/similarity_mean", "stage2/num_core_classes", "stage3/best_val_loss", "stage4/confidence_ratio",
                    "zeroshot/bestpath_example_f1", "zeroshot/enriched_bestpath_example_f1", "test/gain_over_zeroshot"]


def debug_config(tmp_path, name, *extra):
    return build_config("debug", overrides=[f"output_dir={tmp_path}", f"run_name={name}", *extra], environ={})


def _metrics(summary):
    return {k: v for k, v in summary.items()
            if k.startswith(("test/", "zeroshot/", "stage")) and not k.endswith("seconds") and isinstance(v, (int, float))}


@pytest.fixture(scope="module")
def debug_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    summary = run_pipeline(debug_config(out, "a"))
    return out, summary


def test_run_dir_contract(debug_run):
    out, summary = debug_run
    run = out / "a"
    for f in ["config.yaml", "summary.json", "metrics.jsonl", "predictions/test.jsonl", "model.pt"]:
        assert (run / f).is_file(), f
    on_disk = json.loads((run / "summary.json").read_text())
    for key in REQUIRED_SUMMARY:
        assert key in on_disk, key
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("stage3/train_loss" in r and r["step"] for r in rows)
    assert any("stage4/iteration" in r for r in rows)
    assert sum("stage2/num_core_classes" in r for r in rows) == 1  # stages 3 and 4 reuse stage 2, logged once
    preds = [json.loads(line) for line in (run / "predictions/test.jsonl").read_text().splitlines()]
    assert len(preds) == 60
    tax = load_dataset("demo").taxonomy
    for p in preds:
        assert len(p["ranked"]) >= 10 and len(p["scores"]) == len(p["ranked"])
        # path decoding: a root-to-leaf path first, then the other classes by score
        path = [tax.index[str(c)] for c in p["ranked"][:3]]
        assert path in tax.paths(path[-1])
        assert p["scores"][3:] == sorted(p["scores"][3:], reverse=True)
    # `taxoclass evaluate` recomputes exactly what the summary says
    ds = load_dataset("demo")
    ds.test.doc_ids = ds.test.doc_ids[:60]
    recomputed = evaluate_predictions_file(run / "predictions/test.jsonl", ds)
    for k, v in recomputed.items():
        assert on_disk[k] == pytest.approx(v), k


def test_same_seed_same_metrics(debug_run, tmp_path):
    _, first = debug_run
    again = run_pipeline(debug_config(tmp_path, "b"))
    # equal up to float reduction order in CPU kernels (seen: 3e-6 relative on the stage-4 loss)
    assert _metrics(again) == pytest.approx(_metrics(first), rel=1e-4)
    assert again["test/example_f1"] == first["test/example_f1"]


def test_stage3_change_reuses_stages_1_and_2(debug_run, capfd):
    out, first = debug_run
    capfd.readouterr()
    changed = run_pipeline(debug_config(out, "a", "classifier.gnn_hidden_dim=32"))
    err = capfd.readouterr().err
    assert "stage 1 (similarity): cached" in err and "stage 2 (core mining): cached" in err
    assert "stage 3 (classifier): cached" not in err
    # the banner counts what the stages use; epochs count from 1, as the progress bar does
    assert "41 classes, 60 of 200 corpus docs, 60 of 100 test docs" in err and "best epoch 1 of 1," in err
    assert changed["stage2/num_core_classes"] == first["stage2/num_core_classes"]
    run_pipeline(debug_config(out, "a", "force_stage=2", "self_training.enabled=false"))
    err = capfd.readouterr().err
    assert "stage 1 (similarity): cached" in err and "stage 2 (core mining): cached" not in err


def test_gain_over_zeroshot_and_the_skipped_stage_4(debug_run, capfd):
    out, first = debug_run
    # every run says what it adds over the free name-only best-path decoder, on the same top-3 protocol
    assert first["test/gain_over_zeroshot"] == pytest.approx(first["test/example_f1"] / first["zeroshot/bestpath_example_f1"])
    # the default skips stage 4 openly: the log line, metrics.jsonl and the summary say why
    capfd.readouterr()
    skipped = run_pipeline(debug_config(out, "a", "self_training.enabled=false"))
    assert "stage 4 (self-training): skipped: self_training.enabled=false" in capfd.readouterr().err
    assert "self_training.enabled=false" in skipped["stage4/skipped"]
    rows = [json.loads(line) for line in (out / "a" / "metrics.jsonl").read_text().splitlines()]
    assert any("stage4/skipped" in r for r in rows)


def test_stage_3_starts_at_the_refined_prototypes(tmp_path):
    """Before training, the classifier ranks as stage 1's refined scores do: the prototypes are its class features."""
    import numpy as np

    from taxoclass.pipeline import Run
    from taxoclass.stages.model import predict_probs

    run = Run(debug_config(tmp_path, "init", "classifier.max_length=128", "similarity.max_length=128"))
    try:
        sim, _ = run.similarity(force=False)
        bundle = run.bundle()
        assert np.allclose(bundle.model.class_features.detach().numpy(), run.stage1["prototypes"], atol=1e-6)
        probs = predict_probs(bundle.model, bundle.docs(run.inputs.corpus.texts), "cpu", 64)
        # logits = 10 * (cosine with the prototype - 0.3): the refined stage-1 scores, not the names'
        logits = np.log(probs) - np.log1p(-probs)
        assert np.allclose(logits, 10 * (sim - 0.3), atol=2e-3)
        assert not np.allclose(logits, 10 * (run.stage1["names_corpus"] - 0.3), atol=2e-3)
        refined_off = build_config("debug", overrides=[f"output_dir={tmp_path}", "run_name=off", "similarity.refine_rounds=0"], environ={})
        off = Run(refined_off)
        try:
            off.similarity(force=False)
            assert "prototypes" not in off.stage1 and off._class_init() is None
        finally:
            off.close()
    finally:
        run.close()


def test_predict_and_errors(debug_run, tmp_path):
    out, _ = debug_run
    texts = tmp_path / "texts.txt"
    texts.write_text("These headphones block the noise on my commute.\n\nA tent for two.\n")
    res = run_cli("predict", "--run", out / "a", "--input", texts, "--top-k", "4")
    assert res.returncode == 0, res.stderr
    assert "texts.txt: 2 texts read as plain text lines" in res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["doc_id"] for r in rows] == ["1", "3"] and all(len(r["classes"]) == 4 for r in rows)  # ids: line numbers
    # the project's own doc_id<TAB>text file: ids kept, texts without them; --path answers what evaluation ranked first
    preds = {p["doc_id"]: p for p in map(json.loads, (out / "a" / "predictions/test.jsonl").read_text().splitlines())}
    test = load_dataset("demo").test
    known = tmp_path / "corpus.txt"
    known.write_text("".join(f"{d}\t{t}\n" for d, t in list(zip(test.doc_ids, test.texts))[:5]))
    res = run_cli("predict", "--run", out / "a", "--input", known, "--path")
    assert res.returncode == 0, res.stderr
    assert "corpus.txt: 5 texts read as id<TAB>text lines" in res.stderr
    answers = [json.loads(line) for line in res.stdout.splitlines()]
    assert [a["doc_id"] for a in answers] == test.doc_ids[:5]
    for a in answers:
        assert len(a["path"]) == 3 and [str(c) for c in a["path"]] == [str(c) for c in preds[a["doc_id"]]["ranked"][:3]]
        # the path's own score is the decoder's criterion (the mean of its classes' probabilities); the runner-up scores no higher
        assert a["path_score"] == pytest.approx(sum(a["scores"]) / 3, abs=1e-5)
        runner = a["runner_up"]
        assert runner["path"] != a["path"] and runner["path_score"] <= a["path_score"] and len(runner["names"]) == len(runner["path"])
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    res = run_cli("predict", "--run", out / "a", "--input", empty)
    assert res.returncode == 2 and "empty.txt: no texts to classify" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("predict", "--run", tmp_path / "nope", "--input", texts)
    assert res.returncode == 2 and "run dir not found" in res.stderr


def test_python_api_returns_what_the_cli_prints(debug_run, tmp_path, capsys):
    import taxoclass
    from taxoclass.cli import main

    out, _ = debug_run
    texts = ["Noise-cancelling earbuds with a charging case.", "A two-person tent with a rain fly.", "Dark roast coffee beans."]
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(texts) + "\n")
    model = taxoclass.load(out / "a")
    for flags, kwargs in (([], {"top_k": 3}), (["--top-k", "5", "--path"], {"top_k": 5, "path": True})):
        capsys.readouterr()
        assert main(["predict", "--run", str(out / "a"), "--input", str(path), *flags]) == 0  # in-process: no second torch start
        assert model.predict(texts, **kwargs) == [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    records = model.predict(texts, top_k=5, ids=["a", "b", "c"])
    assert [r["doc_id"] for r in records] == ["a", "b", "c"] and all(len(r["classes"]) == 5 for r in records)
    assert all(r["scores"] == sorted(r["scores"], reverse=True) for r in records)
    with pytest.raises(DataError, match="at least 1"):
        model.predict(texts, top_k=0)
    with pytest.raises(DataError, match="run dir not found"):
        taxoclass.load(tmp_path / "nope")


def test_single_stage_on_a_run_dir(debug_run):
    out, _ = debug_run
    res = run_cli("stage", "2", "--run", out / "a", "mining.floor=0.1")
    assert res.returncode == 0, res.stderr
    assert "stage 2 (core mining)" in res.stderr and "cached" not in res.stderr.split("stage 2")[1].splitlines()[0]
    res = run_cli("stage", "4", "--run", out / "a", "mining.floor=0.3")
    assert res.returncode == 2 and "stage 3 output missing" in res.stderr


def test_nli_backend_end_to_end(tmp_path):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from taxoclass.stages.text_encoder import resolve_model_path

    path = tmp_path / "nli"
    tok = AutoTokenizer.from_pretrained(resolve_model_path("bundled"))
    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                             intermediate_size=64, num_labels=3, initializer_range=0.5,
                                             id2label={0: "entailment", 1: "neutral", 2: "contradiction"},
                                             label2id={"entailment": 0, "neutral": 1, "contradiction": 2})).save_pretrained(path)
    tok.save_pretrained(path)
    cfg = debug_config(tmp_path, "nli", "similarity.backend=nli", f"similarity.model={path}", "max_docs=20", "mining.floor=0.0",
                       "self_training.enabled=false")
    summary = run_pipeline(cfg)
    assert summary["stage1/pairs_per_doc"] < 41  # pruned: fewer than all classes
    assert 0 <= summary["test/example_f1"] <= 1
