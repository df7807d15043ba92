"""End to end on the debug preset: determinism, the run dir contract, caching, predict, single stages."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, run_cli

from taxoclass.config import build_config
from taxoclass.data.readers import load_dataset
from taxoclass.errors import DataError
from taxoclass.evaluate import evaluate_predictions_file
from taxoclass.pipeline import (
    RunContext,
    open_finished,
    prepare_inputs,
    run_config,
    run_pipeline,
    run_single_stage,
    stage_keys,
    steps,
)
from taxoclass.pipeline.schedule import self_training_runs
from taxoclass.sink import Sink
from taxoclass.stages.text_encoder import texts_encoded

REQUIRED_SUMMARY = ["test/example_f1", "test/p_at_1", "test/p_at_3", "test/mrr", "test/accuracy", "test/precision", "test/recall",
                    "test/f1_score", "test/top3_accuracy", "test/top5_accuracy", "test/top10_accuracy", "test/level_0_accuracy",
                    "test/level_1_accuracy", "test/level_2_accuracy", "zeroshot/example_f1", "zeroshot/path_example_f1",
                    "stage1/similarity_mean", "stage2/num_core_classes", "stage3/best_val_loss", "stage4/confidence_ratio",
                    "zeroshot/bestpath_example_f1", "zeroshot/enriched_bestpath_example_f1", "test/gain_over_zeroshot"]


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _refuse(constant):
    raise AssertionError(f"not strict JSON: {constant}")


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
    # issue 11: model.pt is a copy (a hard link let a truncated model.pt truncate the cache), no temporary file is
    # left, files get the umask's mode like config.yaml, and the JSON is strict
    cached = sorted((run / "cache").glob("stage4-*.pt"))
    assert (run / "model.pt").stat().st_nlink == 1 and cached[0].stat().st_nlink == 1
    assert not list(run.glob(".*.tmp"))
    mode = 0o666 & ~_umask()
    for f in [run / "summary.json", run / "predictions/test.jsonl", run / "model.pt", *(run / "cache").glob("stage*")]:
        if f.is_file():
            assert f.stat().st_mode & 0o777 == mode, f
    json.loads((run / "summary.json").read_text(), parse_constant=_refuse)
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[0])["attempt"] == 1
    for line in (run / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=_refuse)
    for p in preds:
        assert len(p["ranked"]) >= 10 and len(p["scores"]) == len(p["ranked"])
        # path decoding: a root-to-leaf path first, then the other classes by score
        path = [tax.index[str(c)] for c in p["ranked"][:3]]
        assert path in tax.paths(path[-1])
        assert p["scores"][3:] == sorted(p["scores"][3:], reverse=True)
    # `taxoclass evaluate` recomputes exactly what the summary says
    recomputed = evaluate_predictions_file(run / "predictions/test.jsonl", load_dataset("demo"), max_docs=60)
    for k, v in recomputed.items():
        assert on_disk[k] == pytest.approx(v), k


def test_evaluate_on_a_max_docs_run(debug_run, capsys):
    """Issue 29: `taxoclass evaluate` on a --preset debug run (max_docs=60) failed with 'no prediction for 40 test
    documents' and no way out; it says how now, and --max-docs evaluates what the run predicted."""
    from taxoclass.cli import main

    out, _ = debug_run
    predictions = out / "a" / "predictions" / "test.jsonl"
    assert main(["evaluate", "--predictions", str(predictions), "--data", "demo"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"taxoclass: error: {predictions}: no prediction for 40 test documents (first: 't060'); they are of its first "
        "60, as a run with max_docs=60 predicts them: evaluate those with --max-docs 60")
    assert main(["evaluate", "--predictions", str(predictions), "--data", "demo", "--max-docs", "60"]) == 0
    printed = dict(line.split() for line in capsys.readouterr().out.splitlines())
    summary = json.loads((out / "a" / "summary.json").read_text())
    assert printed["test/example_f1"] == f"{summary['test/example_f1']:.4f}" and printed["test/mrr"] == f"{summary['test/mrr']:.4f}"


@pytest.fixture(scope="module")
def second_run(tmp_path_factory):
    """The debug run again, in its own output dir: later tests take its run dir apart."""
    out = tmp_path_factory.mktemp("again")
    return out / "b", run_pipeline(debug_config(out, "b"))


def test_same_seed_same_metrics(debug_run, second_run):
    _, first = debug_run
    _, again = second_run
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


def test_stage_3_steps_aside_openly_and_stage_4_follows_it(tmp_path, capfd):
    """Too few pseudo-labelled documents per label path (the debug data: a few per path): the default stage 3
    keeps its zero-shot start untrained, says so, and the run's answer is the enriched best path exactly."""
    summary = run_pipeline(debug_config(tmp_path, "aside", "classifier.min_docs_per_label=10", "self_training.enabled=auto"))
    err = capfd.readouterr().err
    assert summary["stage3/stepped_aside"] == 1 and summary["stage3/docs_per_label"] < 10
    assert "stage 3 (classifier): stepped aside:" in err and "fewer than classifier.min_docs_per_label=10" in err
    assert "stage 3 stepped aside" in summary["stage4/skipped"] and "stage 4 (self-training): skipped:" in err
    # the untrained model decodes as stage 1's refined scores do: nothing gained, nothing lost
    assert summary["test/example_f1"] == pytest.approx(summary["zeroshot/enriched_bestpath_example_f1"], abs=1e-9)
    assert summary["test/gain_over_enriched"] == pytest.approx(1.0, abs=1e-9)
    # the rule itself, from stage 3's stats: auto runs stage 4 after the path loss only
    trained = {"stage3/stepped_aside": 0}
    assert self_training_runs(debug_config(tmp_path, "x", "self_training.enabled=auto"), trained)[0]
    ran = run_pipeline(debug_config(tmp_path, "ran", "classifier.min_docs_per_label=0", "self_training.enabled=auto"))
    assert ran["stage3/stepped_aside"] == 0 and "stage4/skipped" not in ran and ran["stage4/batches"] > 0
    assert ran["stage4/runs_because"] == "self_training.enabled=auto and stage 3 trained with the path loss"
    runs, why = self_training_runs(debug_config(tmp_path, "x", "self_training.enabled=auto", "classifier.loss=bce"), trained)
    assert not runs and "classifier.loss=bce" in why
    assert self_training_runs(debug_config(tmp_path, "x", "self_training.enabled=true"), {"stage3/stepped_aside": 1})[0]


def test_stage_3_starts_at_the_refined_prototypes(tmp_path):
    """Before training, the classifier ranks as stage 1's refined scores do: the prototypes are its class features."""
    import numpy as np

    from taxoclass.stages.model import predict_probs

    run = RunContext.open(debug_config(tmp_path, "init", "classifier.max_length=128", "similarity.max_length=128"))
    try:
        sim = steps.similarity(run)["corpus"]
        bundle = run.bundle()
        assert np.allclose(bundle.model.class_features.detach().numpy(), run.stage1()["prototypes"], atol=1e-6)
        probs = predict_probs(bundle.model, bundle.docs(run.inputs.corpus.texts), "cpu", 64)
        # logits = 10 * (cosine with the prototype - 0.3): the refined stage-1 scores, not the names'
        logits = np.log(probs) - np.log1p(-probs)
        assert np.allclose(logits, 10 * (sim - 0.3), atol=2e-3)
        assert not np.allclose(logits, 10 * (run.stage1()["names_corpus"] - 0.3), atol=2e-3)
        refined_off = build_config("debug", overrides=[f"output_dir={tmp_path}", "run_name=off", "similarity.refine_rounds=0"], environ={})
        off = RunContext.open(refined_off)
        try:
            assert "prototypes" not in steps.similarity(off) and off.class_init() is None
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
        # the path's own score is the decoder's criterion: with the path loss, the model's probability of the path, which no
        # class on it has less of (a class's probability is the sum over the paths through it); the runner-up scores no higher
        assert 0 < a["path_score"] <= min(a["scores"]) + 1e-5
        runner = a["runner_up"]
        assert runner["path"] != a["path"] and runner["path_score"] <= a["path_score"] and len(runner["names"]) == len(runner["path"])
        assert a["path_score"] + runner["path_score"] <= 1 + 1e-5  # two of the paths' probabilities
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


def test_predict_streams_chunk_by_chunk_with_a_progress_bar(debug_run, tmp_path, monkeypatch, capsys):
    """Issue 19: records leave as each chunk is predicted (memory flat in the number of texts), with a bar on stderr."""
    import taxoclass
    from taxoclass import predict
    from taxoclass.cli import main

    out, _ = debug_run
    monkeypatch.setattr(predict, "CHUNK", 4)  # 11 texts: chunks of 4, 4 and 3
    texts = [f"Review {i}: noise-cancelling earbuds with a case." if i % 2 else f"Review {i}: a tent for two." for i in range(11)]
    path = tmp_path / "many.txt"
    path.write_text("\n".join(texts) + "\n")
    sizes = []
    records_of = predict.Predictor.records
    monkeypatch.setattr(predict.Predictor, "records", lambda self, ids, t, *a: sizes.append(len(t)) or records_of(self, ids, t, *a))
    fmt, count, records = predict.predict_file(out / "a", path, top_k=2, progress=False)
    assert (fmt, count, sizes) == ("plain", 11, [])  # checked and counted; nothing predicted yet
    first = next(records)
    assert sizes == [4] and first["doc_id"] == "1"  # one chunk predicted for the first record, not the whole file
    streamed = [first, *records]
    assert sizes == [4, 4, 3] and [r["doc_id"] for r in streamed] == [str(i) for i in range(1, 12)]
    model = taxoclass.load(out / "a")
    assert model.predict(texts, top_k=2) == streamed  # the API returns the very same records, in the same chunks
    assert not model.bundle._frozen_cache  # no chunk's embeddings are kept after it is printed
    capsys.readouterr()
    assert main(["predict", "--run", str(out / "a"), "--input", str(path), "--top-k", "2"]) == 0
    cap = capsys.readouterr()
    assert [json.loads(line) for line in cap.out.splitlines()] == streamed
    assert "many.txt: 11 texts read as plain text lines" in cap.err and "predict: 100%" in cap.err and "11/11" in cap.err


def test_single_stage_on_a_run_dir(debug_run):
    out, _ = debug_run
    res = run_cli("stage", "2", "--run", out / "a", "mining.floor=0.1")
    assert res.returncode == 0, res.stderr
    assert "stage 2 (core mining)" in res.stderr and "cached" not in res.stderr.split("stage 2")[1].splitlines()[0]
    # self_training.enabled=true: earlier tests left run a's config with stage 4 off, which `stage 4` now skips
    res = run_cli("stage", "4", "--run", out / "a", "mining.floor=0.3", "self_training.enabled=true")
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


# ---------------------------------------------------------------- issue 11: reproducible stages, a cache that cannot lie
def _stage_stats(path):
    return {k: v for k, v in json.loads(path.read_text()).items() if not k.endswith("seconds") and isinstance(v, (int, float))}


def test_stage_4_alone_reproduces_the_full_run(second_run, tmp_path):
    run_dir, full = second_run
    entry = next((run_dir / "cache").glob("stage4-*.pt"))
    before = torch.load(entry, weights_only=True)["state_dict"]
    stats_before = _stage_stats(entry.with_suffix(".stats.json"))
    run_single_stage(run_config(run_dir), 4)  # `taxoclass stage 4 --run DIR`, in this process
    after = torch.load(entry, weights_only=True)["state_dict"]
    # seeded from (seed, stage) at its start, stage 4 alone draws what it drew in the full run (torchtune's
    # resume-equivalence); before, it drew from the state stage 3 left (Example-F1 .7861 against .7806)
    assert _stage_stats(entry.with_suffix(".stats.json")) == pytest.approx(stats_before, rel=1e-5)
    for name, tensor in before.items():
        torch.testing.assert_close(after[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    markers = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.startswith('{"attempt"')]
    assert [m["attempt"] for m in markers] == [1, 2] and markers[1]["command"] == "stage 4"


def test_kill_9_in_stage_4_then_rerun_equals_an_uninterrupted_run(tmp_path):
    from test_ray import _kill_tree, _wait_for

    # a stage 4 long enough to be killed inside (the debug preset's takes well under a second with a frozen
    # encoder): the unguarded paper's stage 4, 400 batches (1.5 s on 2 cores, against the 0.2 s the kill polls at),
    # targets every 50. Longer budgets saturate the predictions (max p ~1 - 3e-5), and the top-3 ties then make
    # the tolerance stop fall one update apart between two runs
    long = ["self_training.max_batches=400", "self_training.update_interval=50", "self_training.val_patience=0"]
    full = run_pipeline(debug_config(tmp_path, "ref", *long))
    run_dir = tmp_path / "ref"
    killed = tmp_path / "k"
    (killed / "cache").mkdir(parents=True)
    for f in (run_dir / "cache").iterdir():  # stages 1-3 from the uninterrupted run: the rerun recomputes stage 4
        if f.is_file() and not f.name.startswith("stage4-"):
            shutil.copy(f, killed / "cache" / f.name)
    args = ["run", "--preset", "debug", f"output_dir={tmp_path}", "run_name=k", *long]
    proc = subprocess.Popen([sys.executable, "-m", "taxoclass.cli", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    metrics = killed / "metrics.jsonl"
    assert _wait_for(lambda: metrics.is_file() and '"stage4/iteration"' in metrics.read_text(), proc)
    _kill_tree(proc)
    assert not list((killed / "cache").glob("stage4-*.sha256")), "stage 4 finished before the kill"
    run_pipeline(debug_config(tmp_path, "k", *long))  # the rerun (in this process: no second start-up)
    resumed = json.loads((killed / "summary.json").read_text())
    # stages 1-3 came from the cache (their stats only, not every step's): compare what stage 4 and evaluation computed
    def result(summary):
        return {k: v for k, v in _metrics(summary).items() if k.startswith(("stage4/", "test/"))}

    assert len(result(full)) > 20 and result(resumed) == pytest.approx(result(full), rel=1e-4)
    assert resumed["test/example_f1"] == full["test/example_f1"]
    # both attempts stay in metrics.jsonl; the report draws stage 4 from the last one
    from taxoclass.run_report import load_run, series

    rows, _ = load_run(killed)
    markers = [json.loads(line) for line in metrics.read_text().splitlines() if line.startswith('{"attempt"')]
    assert [m["attempt"] for m in markers] == [1, 2]
    xs, _ = series(rows, "stage4/iteration", "stage4/confidence_ratio")
    assert xs == sorted(xs) and xs


def test_a_corrupt_cache_entry_is_a_miss_and_model_pt_is_a_copy(second_run, capfd):
    from taxoclass.stages.model_io import load_checkpoint

    run_dir, _ = second_run
    cfg = debug_config(run_dir.parent, "b")
    stage2 = next(p for p in (run_dir / "cache").glob("stage2-*.json") if not p.name.endswith(".stats.json"))
    cores = json.loads(stage2.read_text())["cores"]
    stage2.write_text(stage2.read_text()[:100])  # truncated
    (run_dir / "model.pt").write_bytes((run_dir / "model.pt").read_bytes()[:1000])
    capfd.readouterr()
    run = RunContext.open(cfg)
    try:
        out = steps.mining(run)
        assert run.view.store.intact(4)  # the truncated model.pt left the cache entry whole
    finally:
        run.close()
    err = capfd.readouterr().err
    warnings = [line for line in err.splitlines() if "warning: cache entry" in line]
    assert len(warnings) == 1 and "does not match its checksum" in warnings[0] and stage2.stem in warnings[0]
    assert out.cores == cores and json.loads(stage2.read_text())["cores"] == cores  # recomputed and stored again
    with pytest.raises(DataError, match="model.pt: not a readable checkpoint"):
        load_checkpoint(run_dir / "model.pt", torch.device("cpu"))


def test_a_changed_config_removes_the_old_results(second_run, tmp_path):
    run_dir, _ = second_run
    copy = tmp_path / "c"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("cache"))
    outputs = ["summary.json", "predictions", "model.pt"]
    RunContext.open(debug_config(tmp_path, "c")).close()  # the same config: its results stay
    assert all((copy / name).exists() for name in outputs)
    RunContext.open(debug_config(tmp_path, "c", "seed=7")).close()  # seed 7 in config.yaml: the seed-42 results must go
    assert not any((copy / name).exists() for name in outputs)
    assert "seed: 7" in (copy / "config.yaml").read_text()


def test_keys_follow_what_changes_training_numbers():
    from taxoclass.cli import build_runtime

    inputs = prepare_inputs(build_config("debug", environ={}))

    def keys(*extra):
        cfg = build_config("debug", overrides=list(extra), environ={})
        return stage_keys(cfg, inputs, build_runtime(cfg).training_setup())  # the runtime the CLI would build

    local = keys()
    assert keys("ray.num_workers=3") == local  # workers are not used on the local runtime
    ray1, ray2 = keys("runtime=ray", "ray.num_workers=1"), keys("runtime=ray", "ray.num_workers=2")
    for other in (ray1, ray2, keys("classifier.amp=bf16")):
        assert other[2] == local[2] and other[3] != local[3] and other[4] != local[4]
    assert ray1[3] != ray2[3]


def test_json_is_strict_and_metrics_are_appended(tmp_path):
    from taxoclass.atomic import write_json
    from taxoclass.pipeline import MetricsLog

    write_json(tmp_path / "s.json", {"a": float("nan"), "b": [float("inf"), np.float32(1.5)], "c": np.int64(3)})
    assert json.loads((tmp_path / "s.json").read_text(), parse_constant=_refuse) == {"a": None, "b": [None, 1.5], "c": 3}
    path = tmp_path / "metrics.jsonl"
    for attempt in (1, 2):
        log = MetricsLog(path, None)
        log({"x": float("-inf"), "y": attempt}, step=1)
        log.close()
    with open(path, "a") as fh:
        fh.write('{"step": 2, "y"')  # torn by a kill mid-write
    MetricsLog(path, None).close()
    rows = [json.loads(line, parse_constant=_refuse) for line in path.read_text().splitlines()]
    assert [r.get("attempt") for r in rows] == [1, None, 2, None, 3]
    assert rows[1]["x"] is None and rows[3]["y"] == 2


# ---------------------------------------------------------------- issue 18: the stage store and the read-only open
class ArtifactRecorder(Sink):
    def __init__(self):
        self.artifacts = []

    def on_artifact(self, name, kind, path, metadata=None):
        self.artifacts.append((name, dict(metadata or {})))


def test_one_rule_names_the_final_model(second_run, tmp_path):
    run_dir, _ = second_run
    shutil.copytree(run_dir, tmp_path / "r")
    for enabled, stage in (("true", 4), ("false", 3)):
        cfg = debug_config(tmp_path, "r", f"self_training.enabled={enabled}")
        store = open_finished(tmp_path / "r", cfg, training_setup=("local",)).store
        if stage == 3:
            # a stage-4 model under this config's key, as `taxoclass stage 4` used to leave on a run that skips
            # stage 4: the artifact then said stage 4 while model.pt was stage 3's
            shutil.copy(store.output(3), store.output(4))
        sink = ArtifactRecorder()
        run_pipeline(cfg, sink=sink)
        assert [meta for name, meta in sink.artifacts if name == "model"] == [{"stage": stage}]
        assert (tmp_path / "r" / "model.pt").read_bytes() == store.output(stage).read_bytes()


def test_a_finished_run_opens_read_only(second_run, tmp_path):
    run_dir, _ = second_run
    copy = tmp_path / "r"
    shutil.copytree(run_dir, copy)
    run_pipeline(debug_config(tmp_path, "r"))  # every stage cached: a finished run again (earlier tests took model.pt apart)

    def tree():
        return {str(p.relative_to(copy)): (p.stat().st_mtime_ns, p.read_bytes()) for p in copy.rglob("*") if p.is_file()}

    before = tree()
    view = open_finished(copy)  # its own config.yaml
    arrays = view.stage1()
    assert arrays["corpus"].shape == (60, 41) and arrays["test"].shape == (60, 41) and "prototypes" in arrays
    silver = view.silver_validation()
    assert silver.rows and len(view.document_inputs("corpus", silver.rows)) == len(silver.rows)
    assert len(view.document_inputs("test")) == 60  # the model is model.pt's: the classifier's inputs need it
    rows = view.metrics_rows()
    assert rows and {r["_attempt"] for r in rows} >= {1} and "attempt" not in rows[0]
    assert view.summary() == json.loads((copy / "summary.json").read_text())
    assert tree() == before  # nothing written: no attempt, no config.yaml, no lock, no cache entry
    # and nothing computed: a stage whose entry is gone is an error, not a stage run
    next((copy / "cache").glob("stage2-*.sha256")).unlink()
    with pytest.raises(DataError, match="stage 2 output missing"):
        open_finished(copy).mining()


# ---------------------------------------------------------------- issue 19: one run per run dir, summaries, stage 4 when off
@pytest.fixture(scope="module")
def fresh_run(tmp_path_factory):
    """A full debug run (stage 4 on) and the summary.json it wrote, before anything was cached."""
    out = tmp_path_factory.mktemp("fresh")
    run_pipeline(debug_config(out, "f"))
    return out / "f", json.loads((out / "f" / "summary.json").read_text())


def test_the_summary_does_not_depend_on_what_was_cached(fresh_run):
    run_dir, first = fresh_run
    assert {"stage3/epoch_train_loss", "stage3/epoch_val_loss", "stage3/learning_rate", "stage3/train_loss", "stage3/epoch",
            "stage4/self_train_loss", "stage2/num_core_classes", "stage1/similarity_mean"} <= set(first)
    rerun = run_pipeline(debug_config(run_dir.parent, "f"))  # every stage from the cache
    cached = json.loads((run_dir / "summary.json").read_text())
    single = run_single_stage(run_config(run_dir), 5)  # `taxoclass stage 5`: stages 1 and 4 loaded, 2 and 3 not
    stage5 = json.loads((run_dir / "summary.json").read_text())
    assert rerun["run_dir"] == single["run_dir"] == str(run_dir)
    for summary in (cached, stage5):
        assert set(summary) == set(first)
        # only the attempt's time is the attempt's own; every other value is the run's, total_encoder_passes too (issue
        # 29: it counted the attempt's passes, 0 for a rerun from the cache)
        assert {k: v for k, v in summary.items() if k != "total_seconds"} == {k: v for k, v in first.items() if k != "total_seconds"}


def test_stage_4_on_a_run_that_skips_it_does_nothing(fresh_run, tmp_path):
    run_dir, _ = fresh_run
    copy = tmp_path / "r"
    shutil.copytree(run_dir, copy)
    run_pipeline(debug_config(tmp_path, "r", "self_training.enabled=false"))  # stages 1-3 cached
    entries = sorted(p.name for p in (copy / "cache").iterdir())
    metrics = (copy / "metrics.jsonl").read_text()
    res = run_cli("stage", "4", "--run", copy)
    assert res.returncode == 0, res.stderr
    assert "stage 4 (self-training): this run skips it (self_training.enabled=false), nothing done" in res.stderr
    assert f"taxoclass stage 4 --run {copy} self_training.enabled=true" in res.stderr and "Traceback" not in res.stderr
    # no work: no cache entry, no attempt in metrics.jsonl (before: 2 minutes of training into an entry nothing read)
    assert sorted(p.name for p in (copy / "cache").iterdir()) == entries and (copy / "metrics.jsonl").read_text() == metrics
    # the override it names runs it
    run_single_stage(run_config(copy, ["self_training.enabled=true"]), 4)
    last = (copy / "metrics.jsonl").read_text().split('{"attempt"')[-1]
    assert '"command": "stage 4"' in last and '"stage4/iteration"' in last


def test_a_second_run_on_a_run_dir_in_use_stops_at_once(tmp_path):
    from test_ray import _kill_tree, _wait_for

    # the first run: the whole demo corpus and a long stage 4, so that it is still going when the second one starts
    args = ["run", "--preset", "debug", f"output_dir={tmp_path}", "run_name=x", "max_docs=0", "self_training.max_batches=3000",
            "self_training.update_interval=1500", "self_training.val_patience=0", "self_training.stop_tolerance=0"]
    first = subprocess.Popen([sys.executable, "-m", "taxoclass.cli", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        metrics = tmp_path / "x" / "metrics.jsonl"
        assert _wait_for(lambda: metrics.is_file(), first)  # it holds the lock from before metrics.jsonl is written
        second = run_cli(*args)
        assert first.poll() is None, "the first run ended before the second one was refused"
        assert second.returncode == 2, second.stderr
        errors = [line for line in second.stderr.splitlines() if line.startswith("taxoclass: error")]
        assert errors == [f"taxoclass: error: {tmp_path / 'x'}: in use by another taxoclass run (pid {first.pid}); wait for it "
                          "to end, or give this run another run_name"]
        assert metrics.read_text().count('{"attempt"') == 1  # the second run wrote nothing
    finally:
        _kill_tree(first)
    # kill -9 left the lock file: the kernel released the lock with its holder, and the next run goes ahead
    assert (tmp_path / "x" / ".lock").is_file()
    res = run_cli("stage", "1", "--run", tmp_path / "x")
    assert res.returncode == 0, res.stderr


def test_each_document_is_embedded_once(tmp_path, capfd):
    # the debug preset: stages 3 and 4 train (classifier.min_docs_per_label=0), on vectors of its 64-token limit
    trains = [f"output_dir={tmp_path}", "run_name=once"]
    cfg = debug_config(tmp_path, "once")
    before = texts_encoded()
    summary = run_pipeline(cfg)
    # 60 corpus documents, 60 test documents and 41 class hypotheses, each through the encoder once: stage 3's
    # frozen encoder and the evaluation take stage 1's vectors (before issue 29, both embedded them again)
    assert texts_encoded() - before == summary["total_encoder_passes"] == 161 == summary["stage1/encoder_passes"]
    assert len(list((tmp_path / "once" / "cache").glob("vectors-*.npy"))) == 2  # corpus and test, float16
    # another token limit for the classifier: stage 1 is cached, the classifier embeds its own vectors, and says why
    capfd.readouterr()
    before = texts_encoded()
    summary = run_pipeline(build_config("debug", overrides=[*trains, "classifier.max_length=32"], environ={}))
    assert texts_encoded() - before == 120
    assert summary["total_encoder_passes"] == 281  # the run's figure: its stage 1's passes (cached) and the classifier's
    assert "not stage 1's vectors: classifier.max_length=32 against similarity.max_length=64" in capfd.readouterr().err
    # a rerun embeds nothing: stage 1's and the classifier's vectors are both in the cache; the run's figure is the same
    before = texts_encoded()
    assert run_pipeline(build_config("debug", overrides=[*trains, "force_stage=3",
                                                         "classifier.max_length=32"], environ={}))["total_encoder_passes"] == 281
    assert texts_encoded() == before


def test_the_mpnet_preset_takes_a_local_folder_in_place_of_the_hub(tmp_path, monkeypatch):
    """`--preset mpnet` names the hub's all-mpnet-base-v2 for stage 1, and the classifier follows it; with no hub a local
    folder given once, as similarity.model, takes its place for both (here a tiny random BERT stands in for the 420 MB
    model)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from taxoclass.stages.similarity import classifier_encoder
    from taxoclass.stages.text_encoder import resolve_model_path

    with monkeypatch.context() as online:  # the hub's name is checked against the local cache only when offline
        online.delenv("HF_HUB_OFFLINE", raising=False)
        online.delenv("TRANSFORMERS_OFFLINE", raising=False)
        preset = build_config("mpnet", environ={})
    assert preset.similarity.model == classifier_encoder(preset) == "sentence-transformers/all-mpnet-base-v2"
    folder = tmp_path / "mpnet-local"
    tok = AutoTokenizer.from_pretrained(resolve_model_path("bundled"))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(folder)
    tok.save_pretrained(folder)
    cfg = build_config("mpnet", overrides=[f"similarity.model={folder}", "max_docs=40",
                                           f"output_dir={tmp_path}", "run_name=local", "device=cpu"], environ={})
    assert classifier_encoder(cfg) == str(folder)
    summary = run_pipeline(cfg)
    saved = (tmp_path / "local" / "config.yaml").read_text()
    assert f"model: {folder}" in saved and "encoder: similarity" in saved
    assert 0 <= summary["test/example_f1"] <= 1 and summary["stage1/encoder_passes"] > 0
    assert len(list((tmp_path / "local" / "cache").glob("vectors-*.npy"))) >= 1  # the folder's 32-dim vectors, embedded once
