"""The search (`taxoclass search`, `tune/search.py`): real Ray Tune + OptunaSearch + ASHA + WandbLoggerCallback (offline), and the sweep translation."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, run_cli
from test_ray import SECRET, _kill_tree, _wait_for, holding
from wandb_reader import find_runs, read_run

from taxoclass.config import build_config, to_dict, with_values
from taxoclass.errors import ConfigError
from taxoclass.rundir import NOT_RESULT_KEYS
from taxoclass.search.objectives import DEFAULT_OBJECTIVE, DEV_BUDGET, OBJECTIVES, label_free_objectives
from taxoclass.search.space import Param, read_sweep, to_tune

SEARCH = [sys.executable, str(REPO / "tune" / "search.py")]  # the entry point the README and the cluster files name
TAXOCLASS_SEARCH = [sys.executable, "-m", "taxoclass.cli", "search"]  # the same search as a subcommand
ray_tests = pytest.mark.ray  # the searches start Ray; the sweep translation does not
FAST = ["self_training.enabled=false", "max_docs=40"]  # no ray.num_cpus: the search must fit whatever machine runs it

SEED_SWEEP = """program: train.py
method: bayes
metric:
  name: test/accuracy
  goal: maximize
parameters:
  learning_rate:
    distribution: log_uniform_values
    min: 5e-6
    max: 5e-5
  gnn_hidden_dim:
    values: [512, 768, 1024]
  gnn_num_layers:
    values: [3, 4, 5]
  self_train_threshold:
    min: 0.4
    max: 0.7
  epochs:
    value: 3
  WANDB_LOG_INTERVAL:
    min: 5
    max: 20
"""


def test_sweep_translation_golden(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(SEED_SWEEP)
    space = read_sweep(path)
    assert space.sampler == "tpe"
    assert space.params == [
        Param("classifier.learning_rate", "log_uniform_values", 5e-6, 5e-5),
        Param("classifier.gnn_hidden_dim", "categorical", values=[512, 768, 1024]),
        Param("classifier.gnn_num_layers", "categorical", values=[3, 4, 5]),
        Param("self_training.self_train_threshold", "uniform", 0.4, 0.7),
        Param("classifier.epochs", "constant", values=[3]),
        Param("tracking.log_interval", "int_uniform", 5.0, 20.0),
    ]
    domains = to_tune(space)
    assert "LogUniform" in type(domains["classifier.learning_rate"].get_sampler()).__name__
    assert domains["classifier.gnn_num_layers"].categories == [3, 4, 5]
    assert domains["classifier.epochs"] == 3
    assert (domains["tracking.log_interval"].lower, domains["tracking.log_interval"].upper) == (5, 21)
    path.write_text(SEED_SWEEP.replace("method: bayes", "method: random"))
    assert read_sweep(path).sampler == "random"


@pytest.mark.parametrize("text, key", [
    (SEED_SWEEP.replace("method: bayes", "method: hyperband"), "'method'"),
    (SEED_SWEEP.replace("distribution: log_uniform_values", "distribution: normal"), "'parameters.learning_rate.distribution'"),
    (SEED_SWEEP.replace("gnn_num_layers:", "gnn_layerz:"), "'parameters.gnn_layerz': unknown key; did you mean 'gnn_num_layers'?"),
    (SEED_SWEEP.replace("method: bayes", "method: grid"), "'parameters.learning_rate': a grid needs `values`"),
    (SEED_SWEEP.replace("max: 0.7", "max: 0.1"), "'parameters.self_train_threshold': min 0.4 is not below max 0.1"),
    (SEED_SWEEP.replace("values: [3, 4, 5]", "values: [3, 4, 5]\n    q: 1"), "'parameters.gnn_num_layers.q': cannot be translated"),
])
def test_sweep_translation_errors_name_the_key(tmp_path, text, key):
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        read_sweep(path)
    assert key in str(err.value)


@pytest.mark.parametrize("command, prog", [(SEARCH, "tune/search.py"), (TAXOCLASS_SEARCH, "taxoclass search")])
@pytest.mark.parametrize("value, message", [("0", "expected at least 1, got 0"), ("-1", "expected at least 1, got -1"),
                                            ("many", "expected a whole number, got 'many'")])
def test_num_samples_below_1_is_refused_before_ray_starts(tmp_path, command, prog, value, message):
    # before: -1 searched without end (the timeout ends the test), 0 started Ray and ran stages 1-2 first
    res = subprocess.run([*command, "--smoke", "--num-samples", value, f"output_dir={tmp_path}"], capture_output=True, text=True,
                         cwd=REPO, timeout=120, env={**os.environ, "WANDB_MODE": "offline"})
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"{prog}: error: argument --num-samples: {message}" in res.stderr.strip().splitlines()[-1]
    assert res.stdout == "" and not list(tmp_path.iterdir())  # no search folder, no Ray, no stage


def _rows(search_dir):
    with open(search_dir / "trials.csv") as fh:
        return list(csv.DictReader(fh))


def _finished_search(command: list, *args, cwd, **env) -> subprocess.CompletedProcess:
    """A search run to its end (exit status 0), its wandb runs offline."""
    res = subprocess.run([*command, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=1500,
                         env={**os.environ, "WANDB_MODE": "offline", **env})
    assert res.returncode == 0, res.stderr[-3000:]
    return res


@pytest.fixture(scope="module")
def search_ray_tmp():
    """Ray's session folder for the smoke search (RAY_TMPDIR), short enough for Ray's socket paths."""
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    yield Path(folder)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, search_ray_tmp):
    """The smoke search as `taxoclass search` (the other searches run tune/search.py), with WANDB_DIR set
    (relative, to the working folder) as a user may set it for every wandb run, and a (fake) W&B API key."""
    out = tmp_path_factory.mktemp("search")
    res = _finished_search(TAXOCLASS_SEARCH, "--smoke", "--name", "smoke", f"output_dir={out}", "max_docs=40", cwd=out,
                           WANDB_DIR="wandb-elsewhere", WANDB_API_KEY=SECRET, RAY_TMPDIR=str(search_ray_tmp))
    return out / "smoke", res


@ray_tests
def test_smoke_search_writes_the_api_key_nowhere(smoke, search_ray_tmp):
    """Issue 29: the search's Ray instance took every WANDB_* variable into its runtime_env, and Ray's WandbLoggerCallback
    puts the API key into its logging actors' runtime_env: Ray writes both into its session folder."""
    search_dir, _ = smoke
    assert list(search_ray_tmp.glob("ray/session_*/logs/runtime_env_agent.log"))  # where the key was written
    assert holding(SECRET, search_dir.parent, search_ray_tmp) == []  # the search folder, the trials' wandb runs, Ray's files


@ray_tests
def test_smoke_search_one_offline_run_per_trial_with_comparable_names(smoke):
    search_dir, res = smoke
    rows = _rows(search_dir)
    assert len(rows) == 3
    # the trials' offline runs are where WANDB_DIR says (before: in the search folder regardless)
    assert not find_runs(search_dir)
    runs = [read_run(p) for p in find_runs(search_dir.parent / "wandb-elsewhere" / "wandb")]
    assert len(runs) == 3
    assert {r.group for r in runs} == {"smoke"} and {r.job_type for r in runs} == {"hpo-trial"}
    assert {r.run_id for r in runs} == {row["trial"] for row in rows}
    finished = {row["trial"] for row in rows if row["finished"] == "True"}
    assert finished  # the default trial at least: nothing is better than it before it has run
    trained = {row["trial"] for row in rows if row["stage3/stepped_aside"] == "0"}
    assert trained  # the default trial at least: the debug preset trains whatever its documents per label
    for r in runs:  # the trial's parameters are its run's config; its history, the pipeline's metric names
        assert "classifier.head_learning_rate" in r.config and "mining.top_share" in r.config
        # every stage-1 setting, searched or not, so that the group's parallel-coordinates view compares them
        assert {"similarity.refine_rounds", "similarity.model", "similarity.template"} <= set(r.config)
        keys = {k for row in r.history for k in row}
        assert "objective" in keys
        if r.run_id in trained:  # a report per stage-3 epoch (a stage 3 that stepped aside has none)
            assert "stage3/epoch_val_loss" in keys and "stage4/iteration" in keys
        if r.run_id in finished:
            assert {"test/example_f1", "silver/example_f1", "label_free/path_margin", "label_free/teacher_f1",
                    "label_free/path_zmargin", "label_free/text_agreement", "label_free/text_margin"} <= keys


@ray_tests
def test_smoke_search_shares_stage1_and_keeps_its_outputs_in_its_folder(smoke):
    search_dir, res = smoke
    trials = [row["trial"] for row in _rows(search_dir)]
    configs = [search_dir / "runs" / t / "config.yaml" for t in trials]
    assert all(c.is_file() for c in configs)  # every trial's run dir under the search folder
    # the documents' vectors embedded once, before the trials (the default space moves the refinement, which each
    # trial applies to them: its own stage-1 scores, its class hypotheses its only texts through the encoder) ...
    vectors = list((search_dir / "cache").glob("vectors-*.npy"))
    assert vectors and max(v.stat().st_mtime for v in vectors) <= min(c.stat().st_mtime for c in configs)
    assert all(int(float(row["trial/texts_embedded"])) <= 41 for row in _rows(search_dir))  # 41 classes, 40 documents
    assert not list((search_dir / "cache").glob("stage1-*-shards"))  # ... and never on Ray Data by a trial
    for c in configs:
        assert build_config(config_file=str(c), environ={}).cache_dir == str(search_dir / "cache")
    assert not list(search_dir.glob("runs/*/ray/*/checkpoint_*"))  # Train checkpoints gone once the search ends
    assert "Traceback" not in res.stderr and "AttributeError" not in res.stderr
    # issue 35 item 20: Ray's core said the wandb logging actor's restart would fail (the search's own callback asked
    # for endless restarts of an actor whose constructor arguments sit in the object store)
    assert "core_worker.cc" not in res.stderr and "_KeyedLoggingActor" not in res.stderr


@ray_tests
def test_objective_is_label_free_and_best_config_runs(smoke):
    import yaml

    search_dir, res = smoke
    for row in _rows(search_dir):
        if row["finished"] == "True":  # the searcher's objective is computed from corpus documents, not a test metric
            run_dir = search_dir / "runs" / row["trial"]
            summary = json.loads((run_dir / "summary.json").read_text())
            cfg = build_config(config_file=str(run_dir / "config.yaml"), environ={})
            column = OBJECTIVES[DEFAULT_OBJECTIVE].column
            assert float(row["objective"]) == pytest.approx(label_free_objectives(cfg, run_dir)[column])
            assert float(row["objective"]) == pytest.approx(float(row[column]))
            if row["stage3/stepped_aside"] == "0":
                assert float(row["stage3/best_val_loss"]) == pytest.approx(summary["stage3/best_val_loss"])
            assert float(row["test/example_f1"]) == pytest.approx(summary["test/example_f1"])
    best = max((r for r in _rows(search_dir) if r["finished"] == "True"), key=lambda row: float(row["objective"]))
    written = yaml.safe_load((search_dir / "best_config.yaml").read_text())
    assert "runtime" not in written and "ray" not in written  # the base the user gave, not what the search sets itself
    cfg = build_config(config_file=str(search_dir / "best_config.yaml"), environ={})
    assert cfg.runtime == "local" and cfg.max_docs == 40
    assert cfg.classifier.head_learning_rate == pytest.approx(float(best["classifier.head_learning_rate"]))
    assert cfg.similarity.refine_weight == pytest.approx(float(best["similarity.refine_weight"]))
    full = build_config(config_file=str(search_dir / "best_trial_config.yaml"), environ={})
    # the winner as it ran: in its trial's own process (no Train worker group), on the debug preset
    assert full.runtime == "local" and full.classifier.gnn_hidden_dim == 64
    # issue 35 item 16: best_config.yaml left out --smoke's preset, so it ran another pipeline than the winner's (test
    # Example-F1 .7550 against .7653); now every setting that changes results is the winner's
    def results_part(c):
        return {k: v for k, v in to_dict(c).items() if k not in (*NOT_RESULT_KEYS, "runtime", "ray")}
    assert results_part(cfg) == results_part(full)
    report = (search_dir / "trials.md").read_text()
    assert "default" in report.split("|---|")[-1]  # the verdict on the winner against the default trial
    assert sum(row["default"] == "True" for row in _rows(search_dir)) == 1


class _Payload:
    """A pickle that runs a command when it is loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@ray_tests
def test_resume_loads_no_pickle_keeps_the_finished_trials_and_runs_more(smoke, tmp_path):
    """Issue 35 items 7, 10, 11 and 18, on a copy of the smoke search: --resume loaded Tune's pickles (a payload planted
    in searcher-state-*.pkl ran), a truncated tuner.pkl was an UnpicklingError traceback, a truncated
    experiment_state-*.json dropped the finished trials without a word, and `--num-samples 5` on a finished 3-trial
    search said "5 trials" and ran none."""
    import pickle
    import shutil

    import optuna

    search_dir = tmp_path / "copy"
    shutil.copytree(smoke[0], search_dir)
    marker = tmp_path / "payload-ran"
    before = _rows(search_dir)
    stamps = {r["trial"]: (search_dir / "runs" / r["trial"] / "summary.json").stat().st_mtime for r in before}
    for state in search_dir.glob("experiment_state-*.json"):
        state.write_bytes(state.read_bytes()[:200])
    (search_dir / "tuner.pkl").write_bytes((search_dir / "tuner.pkl").read_bytes()[:100])
    resume = [*SEARCH, "--name", "copy", "--resume", f"output_dir={tmp_path}"]
    res = subprocess.run(resume, capture_output=True, text=True, cwd=tmp_path, timeout=300, env={**os.environ, "WANDB_MODE": "offline"})
    assert res.returncode == 0, res.stderr[-3000:]
    assert "search copy: 3 trials finished, --num-samples 3: nothing to run" in res.stdout  # and no Ray: no trial line
    assert "Traceback" not in res.stderr and "started" not in res.stdout
    pickles = sorted(p.name.split("-")[0].removesuffix(".pkl") for p in search_dir.rglob("*.pkl"))
    assert pickles == ["searcher", "tuner"]  # every pickle Tune left: each now a payload
    for path in search_dir.rglob("*.pkl"):
        path.write_bytes(pickle.dumps(_Payload(marker)))
    _finished_search(SEARCH, "--name", "copy", "--resume", "--num-samples", "4", f"output_dir={tmp_path}", cwd=tmp_path)
    assert not marker.exists()  # nothing in the folder ran
    rows = _rows(search_dir)
    assert len(rows) == 4 and [r["trial"] for r in rows[:3]] == [r["trial"] for r in before]
    assert all(r["finished"] == "True" for r in rows)
    for trial, stamp in stamps.items():  # the finished trials kept, not run again
        assert (search_dir / "runs" / trial / "summary.json").stat().st_mtime == stamp
    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{search_dir / 'optuna.db'}")
    assert len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]) == 4
    assert not marker.exists()


@ray_tests
def test_a_trials_own_error_reaches_the_terminal_and_sigterm_ends_a_search(tmp_path):
    """Issue 35 items 6 and 12: each trial's error.txt ended in Ray's TypeError (the project's errors did not survive
    Ray's copy), and SIGTERM on a search exited 134 with Ray's native crash dump."""
    space = tmp_path / "space.yaml"  # a keyword file the data set does not have: each trial fails reading it
    space.write_text("parameters:\n  similarity.class_text:\n    values: [enrichment]\n")
    res = subprocess.run([*SEARCH, "--preset", "debug", "--space", space, "--num-samples", "1", "--name", "bad",
                          f"output_dir={tmp_path}", *FAST], capture_output=True, text=True, cwd=tmp_path, timeout=600,
                         env={**os.environ, "WANDB_MODE": "offline"})
    assert res.returncode == 2, res.stderr[-3000:]
    failed = [line for line in res.stderr.splitlines() if " failed (1/1): " in line]
    assert len(failed) == 1 and "enrichment.txt: file not found (needed by similarity.class_text)" in failed[0], res.stderr[-3000:]
    last = res.stderr.strip().splitlines()[-1]
    assert "no trial of bad finished" in last and "enrichment.txt: file not found" in last
    assert "TypeError" not in (tmp_path / "bad" / "trials").joinpath(f"{failed[0].split()[1]}.json").read_text()

    proc = subprocess.Popen([*SEARCH, "--smoke", "--name", "term", f"output_dir={tmp_path}", *FAST], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "WANDB_MODE": "offline"})
    try:
        assert proc.stdout.readline().startswith("search term: ")  # Ray is up, the search folder made
        proc.send_signal(signal.SIGTERM)  # to the driver alone, as `kill PID` does
        code = proc.wait(timeout=120)
    finally:
        _kill_tree(proc)
    stderr = proc.stderr.read()
    assert code == 143, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == "tune/search.py: terminated; `--name term --resume` continues this search"
    assert "SIGTERM received" not in stderr and "Traceback" not in stderr


STAGE1_SPACE = """method: grid
parameters:
  similarity.model:
    values: [bundled, {folder}]
  similarity.refine_weight:
    values: [0.3, 0.7]
"""


@pytest.fixture(scope="module")
def stage1_search(tmp_path_factory):
    """A grid over two encoders (the bundled one by name and by folder: two encoder settings to the cache) and a
    refinement setting, as a user's --space file gives it, on the debug preset (named, so best_config.yaml holds it)."""
    from taxoclass.stages.text_encoder import resolve_model_path

    out = tmp_path_factory.mktemp("stage1")
    space = out / "space.yaml"
    space.write_text(STAGE1_SPACE.format(folder=resolve_model_path("bundled")))
    res = _finished_search(SEARCH, "--preset", "debug", "--space", space, "--name", "s1", "--num-samples", "4",
                           f"output_dir={out}", "max_docs=40", cwd=out)
    return out / "s1", res


@ray_tests
def test_trials_that_change_stage_1_embed_no_document(stage1_search):
    search_dir, res = stage1_search
    rows = _rows(search_dir)
    assert len(rows) == 4 and all(r["finished"] == "True" for r in rows)
    assert len({r["similarity.model"] for r in rows}) == 2
    classes = 41  # the demo taxonomy: each trial embeds its class hypotheses for its prototypes, and no document
    assert [int(float(r["trial/texts_embedded"])) for r in rows] == [classes] * 4
    # each encoder's vectors were embedded once, before the trials: corpus and test set, two encoders
    vectors = sorted((search_dir / "cache").glob("vectors-*.npy"))
    assert len(vectors) == 4
    first_trial = min((search_dir / "runs" / r["trial"] / "config.yaml").stat().st_mtime for r in rows)
    assert max(v.stat().st_mtime for v in vectors) <= first_trial
    # the two encoders give their own scores: the trials differ
    assert len({r["test/example_f1"] for r in rows}) > 1 or len({r["objective"] for r in rows}) > 1
    # the objective cannot rank encoders: the search said so once, before its trials, with the labels that can
    assert res.stderr.count("cannot rank similarity.model") == 1, res.stderr[-2000:]
    assert f"give --dev with about {DEV_BUDGET} labelled corpus documents" in res.stderr


@ray_tests
def test_best_config_reproduces_the_winning_trial(stage1_search):
    search_dir, _ = stage1_search
    best = max(_rows(search_dir), key=lambda row: float(row["objective"]))
    res = run_cli("run", "--config", search_dir / "best_config.yaml", cwd=search_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(next((search_dir.parent).glob("best-s1/summary.json")).read_text())
    for key in ("test/example_f1", "test/p_at_1", "test/mrr"):
        assert summary[key] == float(best[key]), key  # the same run: the same numbers, exactly as trials.csv wrote them


def test_a_range_over_a_key_that_needs_new_vectors_is_refused_before_ray_starts(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("parameters:\n  similarity.max_length:\n    min: 64\n    max: 256\n")
    res = subprocess.run([*SEARCH, "--smoke", "--space", space, f"output_dir={tmp_path}"], capture_output=True, text=True,
                         cwd=REPO, timeout=300, env={**os.environ, "WANDB_MODE": "offline"})
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith(
        "tune/search.py: error: config key 'parameters.similarity.max_length': needs new document vectors for each value")
    assert not (tmp_path / "search-demo").exists() and "ray" not in res.stderr.lower()


@ray_tests
def test_asha_stops_a_diverging_trial(tmp_path):
    space = tmp_path / "grid.yaml"
    # head learning rate 100 diverges: worse than the first trial at the first rung, so ASHA stops it there.
    # One trial at a time: two at once raced, and a diverging trial that reaches a rung first has no peer to lose to
    space.write_text("method: grid\nparameters:\n  classifier.head_learning_rate:\n    values: [100.0, 0.004]\n")
    # --objective silver_loss: the one objective reported every epoch, which ASHA compares
    res = subprocess.run([*SEARCH, "--smoke", "--space", space, "--num-samples", "2", "--max-concurrent", "1", "--name", "asha",
                          "--objective", "silver_loss",
                          f"output_dir={tmp_path}",
                          *FAST, "classifier.epochs=3", "classifier.early_stopping_patience=5"],
                         capture_output=True, text=True, cwd=REPO, timeout=1500, env={**os.environ, "WANDB_MODE": "offline"})
    assert res.returncode == 0, res.stderr[-3000:]
    ordered = _rows(tmp_path / "asha")
    assert [float(r["classifier.head_learning_rate"]) for r in ordered] == [0.004, 100.0]  # the seeded grid's order
    rows = {float(r["classifier.head_learning_rate"]): r for r in ordered}
    good, bad = rows[0.004], rows[100.0]
    assert good["finished"] == "True" and bad["finished"] == "False"
    assert int(bad["reports"]) < int(good["reports"])
    if not os.environ.get("WANDB_DIR"):  # no WANDB_DIR: the trials' wandb runs in the search folder
        assert len(find_runs(tmp_path / "asha" / "wandb")) == 2


@ray_tests
def test_ctrl_c_ends_the_search_at_once_and_resume_continues_trials_and_study(tmp_path):
    import optuna

    # one trial at a time, a short one and then one that trains long enough (600 epochs of 40 documents: about 20 s on
    # 2 quiet cores) that it is still running when the first is seen finished and Ctrl-C comes (with two trials of 150
    # epochs, 5 s each, both had ended by then, and the Ctrl-C met the search's teardown). A grid: each value once, in
    # the seeded grid's order (20 first; checked below: the trial done before Ctrl-C is the short one)
    space = tmp_path / "slow.yaml"
    space.write_text("method: grid\nparameters:\n  classifier.epochs:\n    values: [600, 20]\n")
    args = [*SEARCH, "--smoke", "--space", space, "--num-samples", "2", "--max-concurrent", "1", "--no-asha", "--name", "res",
            f"output_dir={tmp_path}", *FAST, "classifier.early_stopping_patience=2000"]
    search_dir = tmp_path / "res"
    # Ctrl-C's disposition as in a terminal's foreground job: a suite started in the background (`cmd &` in a
    # script, nohup) hands its children SIGINT ignored, and an ignoring search would run on to the end
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "WANDB_MODE": "offline"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def one_finished():  # the search's own record of each trial (search/record.py), written when the trial ends
        return any('"state": "done"' in p.read_text(errors="ignore") for p in search_dir.glob("trials/*.json"))

    assert _wait_for(one_finished, proc, timeout=900)
    os.killpg(proc.pid, signal.SIGINT)  # one Ctrl-C, as a terminal sends it: to the whole process group
    try:
        code = proc.wait(timeout=60)
    finally:
        _kill_tree(proc)
    stderr = proc.stderr.read()
    assert code == 130, stderr[-3000:]  # what the search printed says why it ended otherwise
    assert "interrupted" in stderr and "Traceback" not in stderr, stderr[-3000:]
    finished = [p.parent.name for p in (search_dir / "runs").glob("*/summary.json")]
    assert len(finished) == 1
    stamp = (search_dir / "runs" / finished[0] / "summary.json").stat().st_mtime
    time.sleep(1)
    res = subprocess.run(args + ["--resume"], capture_output=True, text=True, cwd=REPO, timeout=1500,
                         env={**os.environ, "WANDB_MODE": "offline"})
    assert res.returncode == 0, res.stderr[-3000:]
    rows = _rows(search_dir)
    assert len(rows) == 2 and finished[0] in {r["trial"] for r in rows}
    epochs = {r["trial"]: int(float(r["classifier.epochs"])) for r in rows}
    assert sorted(epochs.values()) == [20, 600] and epochs[finished[0]] == 20  # the short trial came first and was done
    assert (search_dir / "runs" / finished[0] / "summary.json").stat().st_mtime == stamp  # not run again
    # the Optuna study, in the search folder and named after it, holds both trials with their objectives
    study = optuna.load_study(study_name="res", storage=f"sqlite:///{search_dir / 'optuna.db'}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.value for t in complete) == pytest.approx(sorted(float(r["objective"]) for r in rows))

# ---------------------------------------------------------------- the feasibility check (no Ray started)
def test_a_trial_of_one_worker_trains_in_its_own_process():
    from taxoclass.search.resources import plan_trials

    plan = plan_trials(0, cpus_per_worker=1, cluster={"CPU": 2.0})  # the 2-core machine of the issue
    # no Ray Train worker group: the trial's own process holds one CPU, so two trials run at once
    assert (plan.workers, plan.in_process, plan.concurrent, plan.resources()) == (1, True, 2, {"cpu": 1.0})
    assert not plan.notices
    quarter = plan_trials(0.25, 1, {"CPU": 8.0, "GPU": 1.0})
    assert quarter.in_process and quarter.resources() == {"cpu": 1.0, "gpu": 0.25} and quarter.concurrent == 4


def test_ddp_trials_too_wide_for_the_cpus_shrink_with_a_notice():
    from taxoclass.search.resources import TRIAL_CPUS, plan_trials

    plan = plan_trials(4, 1, {"CPU": 3.0, "GPU": 4.0})  # 4 DDP workers asked, 2 fit beside the trial's own CPU
    assert (plan.workers, plan.in_process, plan.resources()) == (2, False, {"cpu": TRIAL_CPUS})
    assert len(plan.notices) == 1 and "4 Train workers do not fit" in plan.notices[0]
    assert plan_trials(2, 1, {"CPU": 2.0, "GPU": 2.0}).in_process  # one worker fits: it trains in the trial's process


@pytest.mark.parametrize("gpus, cluster, key", [
    (0, {"CPU": 1.0}, "ray.cpus_per_worker"),  # a trial of 2 CPUs on a cluster of 1
    (0.25, {"CPU": 8.0}, "--gpus-per-trial"),  # no GPU at all
    (1.5, {"CPU": 8.0, "GPU": 4.0}, "--gpus-per-trial"),  # neither a share nor whole GPUs
])
def test_a_trial_that_cannot_fit_is_a_one_line_error(gpus, cluster, key):
    from taxoclass.search.resources import plan_trials

    with pytest.raises(ConfigError) as err:
        plan_trials(gpus, 2, cluster)
    assert f"'{key}'" in str(err.value) and "\n" not in str(err.value)


def test_fractional_and_whole_gpus_per_trial():
    from taxoclass.search.resources import plan_trials

    cluster = {"CPU": 64.0, "GPU": 4.0}
    quarter = plan_trials(0.25, 1, cluster)
    assert (quarter.workers, quarter.gpus_per_worker, quarter.concurrent) == (1, 0.25, 16)  # four trials per GPU
    two = plan_trials(2, 1, cluster)
    assert (two.workers, two.gpus_per_worker, two.concurrent) == (2, 1.0, 2)  # two DDP workers a trial
    wide = plan_trials(8, 1, cluster)
    assert wide.workers == 4 and len(wide.notices) == 1


def test_best_config_is_the_base_plus_the_winning_parameters(tmp_path):
    import yaml

    from taxoclass.search.results import write_best_config

    base = tmp_path / "base.yaml"
    base.write_text("data: demo\nclassifier:\n  gnn_hidden_dim: 128\n")
    user = build_config(config_file=str(base), overrides=["max_docs=30"], environ={})
    trial = tmp_path / "runs" / "t1"
    trial.mkdir(parents=True)
    (trial / "config.yaml").write_text("runtime: ray\n")
    path = write_best_config(user, {"classifier.head_learning_rate": 0.01, "mining.floor": 0.1}, trial, tmp_path, "s")
    written = yaml.safe_load(path.read_text())
    assert written == {"run_name": "best-s", "max_docs": 30,
                       "mining": {"floor": 0.1}, "classifier": {"gnn_hidden_dim": 128, "head_learning_rate": 0.01}}
    assert (tmp_path / "best_trial_config.yaml").read_text() == "runtime: ray\n"


def test_trials_report_says_when_the_winner_does_not_beat_the_default():
    from taxoclass.search.results import markdown

    def row(trial, objective, held_out, default=False):
        return {"trial": trial, "status": "ok", "reports": 3, "finished": True, "default": default,
                "objective": objective, "test/example_f1": held_out}

    # the objective (a loss) picks b, whose held-out score is below the default's: regret .2, correlation -0.5
    rows = [row("a", 2.0, 0.7, default=True), row("b", 1.0, 0.5), row("c", 3.0, 0.6)]
    md = markdown(rows, "min")
    assert "Spearman -0.50, regret 0.2000" in md
    assert "the winner does not beat the default: 0.5000 vs 0.7000" in md
    rows[1]["test/example_f1"] = 0.9
    assert "better too: 0.9000 vs 0.7000" in markdown(rows, "min")
    rows[0]["objective"] = 0.5
    assert "The default configuration (trial a) won" in markdown(rows, "min")


# ---------------------------------------------------------------- fractional GPUs, placed by real Ray on logical GPUs
def _note_placement(folder: Path, name: str, expected: int) -> None:
    """Note where this process runs and what it holds, then wait until every expected one has started."""
    import ray

    ctx = ray.get_runtime_context()
    note = {"node": ctx.get_node_id(), "gpu": ctx.get_assigned_resources().get("GPU", 0), "ids": ctx.get_accelerator_ids()["GPU"]}
    (folder / f"{name}.json").write_text(json.dumps(note))
    t0 = time.time()
    while len(list(folder.glob("*.json"))) < expected and time.time() - t0 < 240:
        time.sleep(0.5)
    (folder / f"{name}.together").write_text(str(len(list(folder.glob("*.json"))) >= expected))


def _placement_worker(config):
    """A Train worker of a wide trial."""
    import ray.train

    _note_placement(Path(config["folder"]), f"{config['trial']}-{ray.train.get_context().get_world_rank()}", config["expected"])


def _placement_in_process(config, folder, expected):
    """A one-worker trial, which trains in its own Tune process (`TrialPlan.in_process`)."""
    from ray import tune

    _note_placement(Path(folder), tune.get_context().get_trial_id(), expected)
    tune.report({"done": 1})


def placement_trainable(plan, cfg, folder: Path, expected: int, storage: Path):
    """What the search gives Tune for `plan`, with the trial's work replaced by a placement note."""
    from ray import tune

    if plan.in_process:
        return tune.with_resources(tune.with_parameters(_placement_in_process, folder=str(folder), expected=expected),
                                   plan.resources())
    fn = tune.with_parameters(_placement_trial, cfg=cfg, folder=str(folder), expected=expected, storage=str(storage))
    return tune.with_resources(fn, plan.resources())


def _placement_trial(config, cfg, folder, expected, storage):
    from ray import tune
    from ray.train import RunConfig
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    from taxoclass.distributed.ray_train import scaling_config

    trial = tune.get_context().get_trial_id()
    trainer = DataParallelTrainer(_placement_worker, train_loop_config={"folder": folder, "trial": trial, "expected": expected},
                                  scaling_config=scaling_config(cfg), run_config=RunConfig(name=trial, storage_path=storage))
    trainer.fit()
    tune.report({"done": 1})


@ray_tests
def test_gpus_per_trial_places_trials_on_logical_gpus(tmp_path):
    """0.25: four one-worker trials at once, each trial's process holding a quarter GPU; 2: two trials of two DDP
    workers."""
    import ray
    from ray import tune

    from taxoclass.search.resources import plan_trials

    path = os.pathsep.join([str(REPO / "tests"), str(REPO), os.environ.get("PYTHONPATH", "")])  # the workers import this module
    ray.init(address="local", num_cpus=12, num_gpus=4, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1",
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    try:
        for gpus_per_trial, trials in ((0.25, 4), (2, 2)):
            plan = plan_trials(gpus_per_trial, 1, ray.cluster_resources())
            cfg = with_values(build_config("debug", environ={}), plan.settings())
            folder = tmp_path / str(gpus_per_trial)
            folder.mkdir()
            expected = trials * plan.workers
            tuner = tune.Tuner(placement_trainable(plan, cfg, folder, expected, tmp_path / "ray"),
                               tune_config=tune.TuneConfig(num_samples=trials, max_concurrent_trials=plan.concurrent),
                               run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), verbose=0))
            results = tuner.fit()
            assert not results.errors
            together = [p.read_text() for p in folder.glob("*.together")]
            assert together == ["True"] * expected  # every trial's workers ran at the same time
            notes = [json.loads(p.read_text()) for p in folder.glob("*.json")]
            assert len(notes) == expected
            if gpus_per_trial < 1:
                assert {n["gpu"] for n in notes} == {0.25}
            else:
                assert {n["gpu"] for n in notes} == {1.0}
                assert len({i for n in notes for i in n["ids"]}) == 4  # two trials x two workers: all four GPUs, one each
    finally:
        ray.shutdown()


@ray_tests
@pytest.mark.slow
def test_kill_9_during_a_trial_resumes_it_to_the_uninterrupted_result(tmp_path):
    """Slow (the ray marker): an uninterrupted one-trial search, then the same search killed with -9 once its trial has
    trained a stage-3 epoch, resumed with --resume. A trial trains in its own process, which keeps no checkpoint
    inside a stage: the resumed trial runs again from the stages the cache holds, to the same numbers."""
    one_trial = ["--smoke", "--num-samples", "1", "--no-asha", f"output_dir={tmp_path}", *FAST, "classifier.epochs=3",
                 "classifier.early_stopping_patience=5"]
    _finished_search(SEARCH, *one_trial, "--name", "ref", cwd=REPO)
    args = [*SEARCH, *one_trial, "--name", "killed"]
    search_dir = tmp_path / "killed"
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "WANDB_MODE": "offline"})

    def trained_an_epoch():
        return any("stage3/epoch_val_loss" in p.read_text(errors="ignore") for p in search_dir.glob("runs/*/metrics.jsonl"))

    assert _wait_for(trained_an_epoch, proc, timeout=900)
    _kill_tree(proc)
    assert not list(search_dir.glob("runs/*/summary.json"))  # killed inside the trial
    _finished_search(SEARCH, *one_trial, "--name", "killed", "--resume", cwd=REPO)
    (want,), (got,) = _rows(tmp_path / "ref"), _rows(search_dir)
    assert got["mining.top_share"] == want["mining.top_share"]  # the seeded sampler drew the same trial
    for key in ("objective", "test/example_f1", "stage3/best_val_loss"):
        assert float(got[key]) == pytest.approx(float(want[key]), rel=1e-6), key


@pytest.mark.parametrize("command", [SEARCH + ["--help"], [sys.executable, "-m", "taxoclass.cli", "run", "--help"]])
def test_help_lists_every_preset(command):
    from taxoclass.config import preset_names

    res = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=120)
    text = " ".join(res.stdout.split())  # argparse wraps the list
    assert res.returncode == 0 and len(preset_names()) >= 6
    assert all(name in text for name in preset_names()), text


def test_a_trial_line_names_keys_by_their_last_part_unless_two_share_it():
    from taxoclass.search.callbacks import short_names
    from taxoclass.search.space import DEFAULT_SPACE

    names = short_names([p.key for p in DEFAULT_SPACE])
    assert names["similarity.refine_rounds"] == "refine_rounds" and names["mining.top_share"] == "top_share"
    # stage 3's and stage 4's step sizes: the line must say which is which
    assert names["classifier.head_learning_rate"] == "classifier.head_learning_rate"
    assert names["self_training.head_learning_rate"] == "self_training.head_learning_rate"
    assert len(set(names.values())) == len(names)
