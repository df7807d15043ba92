"""Real offline wandb runs, read back from their .wandb files (tests/wandb_reader.py)."""

import json
import subprocess
import sys

import pytest
from conftest import REPO, run_cli
from wandb_reader import find_runs, read_run

SECRET = "0123456789abcdef0123456789abcdef01234567"  # a fake 40-character API key
SMALL = ["--preset", "debug", "max_docs=30", "self_training.max_batches=4"]


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tracked")
    env = {"USE_WANDB": "1", "WANDB_MODE": "offline", "WANDB_API_KEY": SECRET, "WANDB_TAGS": "ci,small",
           "WANDB_GROUP": "grp-1", "WANDB_PROJECT": "taxoclass-test"}
    res = run_cli("run", *SMALL, f"output_dir={out}", "run_name=tracked", env=env)
    assert res.returncode == 0, res.stderr
    return out / "tracked", res


def test_offline_run_has_every_metric_name_and_value(tracked_run):
    run_dir, _ = tracked_run
    files = find_runs(run_dir)
    assert len(files) == 1
    run = read_run(files[0])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert run.project == "taxoclass-test" and run.group == "grp-1" and sorted(run.tags) == ["ci", "small"]
    assert run.name == "taxo_minilm_gnn1_lr5e-05_bs16"  # made from the config
    logged = {k for row in run.history for k in row}
    expected = {
        "stage1/similarity_min", "stage1/similarity_max", "stage1/similarity_mean", "stage1/similarity_std",
        "stage2/num_core_classes", "stage2/total_docs_with_core", "stage2/avg_docs_per_core_class",
        "stage3/num_positive_labels", "stage3/num_negative_labels", "stage3/num_ignored_labels", "stage3/positive_ratio",
        "stage3/train_samples", "stage3/val_samples", "stage3/train_loss", "stage3/learning_rate", "stage3/epoch",
        "stage3/epoch_train_loss", "stage3/epoch_val_loss", "stage3/best_val_loss", "stage3/best_epoch",
        "stage4/confident_predictions", "stage4/confidence_ratio", "stage4/avg_max_prediction", "stage4/avg_target_entropy",
        "stage4/iteration", "stage4/self_train_loss", "stage4/epoch", "stage4/val_loss",
        "test/accuracy", "test/precision", "test/recall", "test/f1_score", "test/top3_accuracy", "test/top5_accuracy",
        "test/top10_accuracy", "test/level_0_accuracy", "test/level_1_accuracy", "test/level_2_accuracy",
        "test/example_f1", "test/p_at_1", "test/p_at_3", "test/mrr", "global_step",
    }
    assert expected <= logged, expected - logged
    # values, not just names: the wandb summary holds what summary.json holds
    for key in ["test/example_f1", "test/mrr", "test/level_2_accuracy", "stage2/num_core_classes", "test/gain_over_zeroshot",
                "zeroshot/bestpath_example_f1", "test/hier_f1_micro", "test/hier_precision_macro", "test/path_hier_f1_macro",
                "test/level_1_f1_macro", "zeroshot/bestpath_path_hier_f1_micro"]:
        assert run.summary[key] == pytest.approx(summary[key]), key
    assert run.summary["final_accuracy"] == pytest.approx(summary["test/accuracy"])
    assert run.summary["final_f1"] == pytest.approx(summary["test/f1_score"])
    assert 0 < run.summary["training_time_hours"] < 1
    train_losses = [row["stage3/train_loss"] for row in run.history if "stage3/train_loss" in row]
    jsonl = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert train_losses == pytest.approx([r["stage3/train_loss"] for r in jsonl if "stage3/train_loss" in r])
    assert run.metric_defs["stage3/*"] == "global_step" and run.metric_defs["stage4/*"] == "stage4/iteration"


def test_run_record_tables_and_artifacts(tracked_run):
    run_dir, _ = tracked_run
    run = read_run(find_runs(run_dir)[0])
    for key in ["seed", "git_commit", "torch_version", "cuda_version", "transformers_version", "ray_version", "dataset_checksum"]:
        assert key in run.config, key
    assert run.config["seed"] == 42 and run.config["classifier"]["gnn_num_layers"] == 1
    kinds = {t for _, t in run.artifacts}
    assert {"model", "stage-output"} <= kinds
    names = " ".join(n for n, _ in run.artifacts)
    for table in ["class_metrics", "prediction_examples", "stage4progress", "confusion_matrix_level_0", "confusion_matrix_level_2"]:
        assert table in names, table


def test_api_key_is_written_nowhere(tracked_run):
    run_dir, _ = tracked_run
    leaked = [p for p in run_dir.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaked == []


def test_resume_continues_the_same_run(tracked_run):
    run_dir, _ = tracked_run
    first_id = json.loads((run_dir / "tracking.json").read_text())["wandb_run_id"]
    res = run_cli("run", f"resume={run_dir}", env={"USE_WANDB": "1", "WANDB_MODE": "offline"})
    assert res.returncode == 0, res.stderr
    for stage in ("1 (similarity)", "2 (core mining)", "3 (classifier)", "4 (self-training)"):
        assert f"stage {stage}: cached" in res.stderr
    runs = find_runs(run_dir)
    assert len(runs) == 2 and {read_run(r).run_id for r in runs} == {first_id}
    res = run_cli("run", "resume=no-such-run", f"output_dir={run_dir.parent}")
    assert res.returncode == 2 and "config key 'resume'" in res.stderr


def test_online_without_api_key_falls_back_to_offline(tmp_path):
    env = {"USE_WANDB": "1", "WANDB_MODE": "online", "HOME": str(tmp_path), "WANDB_API_KEY": ""}
    res = run_cli("run", *SMALL, "max_docs=10", "self_training.enabled=false", f"output_dir={tmp_path}", "run_name=nokey", env=env)
    assert res.returncode == 0, res.stderr
    assert "no API key found" in res.stderr and "logging offline" in res.stderr
    assert len(find_runs(tmp_path / "nokey")) == 1


def test_without_wandb_installed(tmp_path):
    # a meta-path hook makes `import wandb` fail, as on a machine without it
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'wandb' or name.startswith('wandb.'):\n"
        "            raise ImportError('No module named wandb')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from taxoclass.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    args = ["run", *SMALL, "max_docs=10", "self_training.enabled=false", f"output_dir={tmp_path}", "run_name=nowandb"]
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO,
                         env={**__import__("os").environ, "USE_WANDB": "1"}, timeout=600)
    assert res.returncode == 0, res.stderr
    warnings = [line for line in res.stderr.splitlines() if "wandb is not installed" in line]
    assert len(warnings) == 1
    assert (tmp_path / "nowandb" / "summary.json").is_file() and not find_runs(tmp_path / "nowandb")


def test_report_plots_several_runs(tracked_run, tmp_path):
    run_dir, _ = tracked_run
    res = run_cli("report", run_dir, run_dir, "--out", tmp_path / "rep")
    assert res.returncode == 0, res.stderr
    for name in ["stage3_loss.png", "stage4_confidence.png", "level_accuracy.png", "summary.md"]:
        assert (tmp_path / "rep" / name).stat().st_size > 0
    md = (tmp_path / "rep" / "summary.md").read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert f"{summary['test/example_f1']:.4f}" in md
    res = run_cli("report", tmp_path / "nothing")
    assert res.returncode == 2 and "not a run dir" in res.stderr
