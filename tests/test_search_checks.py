"""The search's checks before any work (no Ray starts in this file), its command line, and its errors' trip between
processes. A check that were missing would start Ray: `join_or_start` is replaced by a failure here."""

import argparse
import pickle
from pathlib import Path

import cloudpickle
import pytest

from taxoclass.errors import ConfigError, DataError
from taxoclass.search import flags, tuner

DEBUG = ["--preset", "debug"]


@pytest.fixture
def no_ray(monkeypatch):
    """The search must stop before Ray starts: starting it fails the test at once."""
    def started(*args, **kwargs):
        raise AssertionError("Ray started before the input was checked")

    monkeypatch.setattr(tuner, "join_or_start", started)


def _search(tmp_path, capsys, *argv) -> str:
    """`tune/search.py ARGV` in this process: its exit status must be 2, with one line and nothing written."""
    code = flags.main([*map(str, argv), "max_docs=40", f"output_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert not (tmp_path / "out").exists()  # no search folder, no stage
    assert len(err) == 1 and err[0].startswith("tune/search.py: error: ")
    return err[0]


def test_space_values_and_bounds_are_checked_before_ray(tmp_path, capsys, no_ray):
    # issue 35 items 5 and 14: a model folder that does not exist (a 100-line traceback after 25 s), and a range whose
    # end no trial can run with ("no trial finished", the cause in each error.txt)
    space = tmp_path / "space.yaml"
    space.write_text(f"parameters:\n  similarity.model:\n    values: [bundled, {tmp_path / 'no-such-model'}]\n")
    line = _search(tmp_path, capsys, *DEBUG, "--space", space)
    assert f"config key 'parameters.similarity.model': '{tmp_path / 'no-such-model'}' cannot be drawn: model folder" in line
    assert "does not exist" in line
    space.write_text("parameters:\n  mining.top_share:\n    min: 0.5\n    max: 1.5\n")
    line = _search(tmp_path, capsys, *DEBUG, "--space", space)
    assert "config key 'parameters.mining.top_share': 1.5 cannot be drawn: " in line
    space.write_text("parameters:\n  classifier.epochs:\n    min: 0\n    max: 3\n")
    assert "config key 'parameters.classifier.epochs': 0 cannot be drawn" in _search(tmp_path, capsys, *DEBUG, "--space", space)


def test_dev_file_is_checked_before_ray(tmp_path, capsys, no_ray):
    # issue 35 item 6: a missing --dev file failed every trial
    missing = tmp_path / "dev.txt"
    assert _search(tmp_path, capsys, *DEBUG, "--dev", missing).endswith(f"{missing}: dev file not found (--dev)")
    missing.write_text("d1\t0\nd2\tno-such-class\n")
    line = _search(tmp_path, capsys, *DEBUG, "--dev", missing)
    assert line.startswith(f"tune/search.py: error: {missing}:2: ")


def test_optuna_storage_is_checked_before_ray(tmp_path, capsys, no_ray):
    # issue 35 item 8: a sqlalchemy OperationalError traceback after stages 1-2
    line = _search(tmp_path, capsys, *DEBUG, "--storage", "sqlite:////nonexistent/dir/x.db")
    assert line.startswith("tune/search.py: error: config key '--storage': sqlite:////nonexistent/dir/x.db cannot be opened "
                           "(OperationalError: ")


def test_resume_of_a_search_that_never_ran_is_refused_before_ray(tmp_path, capsys, no_ray):
    # issue 35 item 15: Ray and stages 1-2 (25 s) before the refusal, and a folder left behind
    line = _search(tmp_path, capsys, *DEBUG, "--name", "never", "--resume")
    assert line == f"tune/search.py: error: config key '--resume': no search to resume at {tmp_path / 'out' / 'never'}"


def test_overrides_on_both_sides_of_the_flags(monkeypatch):
    # issue 35 item 19: "unrecognized arguments: output_dir=Y"
    seen = {}
    monkeypatch.setattr(flags, "run", lambda args, prog: seen.setdefault("args", args) and 0)
    flags.main(["data=X", "--num-samples", "8", "output_dir=Y"])
    args = seen["args"]
    assert (args.overrides, args.num_samples) == (["data=X", "output_dir=Y"], 8)
    with pytest.raises(SystemExit):  # a flag it does not know is still refused
        flags.main(["data=X", "--trials", "8"])


@pytest.mark.parametrize("error", [DataError("dev.txt", "unknown class 'x'", 3), DataError(None, "no input"),
                                   ConfigError("mining.top_share", "must be at most 1"), ConfigError("", "plain")])
def test_the_projects_errors_survive_pickling(error):
    # issue 35 item 6: Ray copies a trial's error to the driver by pickling it, and each error.txt ended in
    # `TypeError: DataError.__init__() missing 1 required positional argument: 'message'`
    for module in (pickle, cloudpickle):
        copy = module.loads(module.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error) and vars(copy) == vars(error)


def test_run_search_reads_args_and_builds_the_config_once(tmp_path, monkeypatch):
    # issue 36 item 2: run_search changed args three times and built the config twice
    from taxoclass.search import prepare as prepare_module

    calls = []
    real = prepare_module.build_config
    monkeypatch.setattr(prepare_module, "build_config", lambda *a, **k: calls.append(a) or real(*a, **k))
    args = flags.parse(argparse.ArgumentParser(), ["--smoke", f"output_dir={tmp_path}"])
    before = dict(vars(args))
    search = prepare_module.prepare(args, "tune/search.py")
    assert vars(args) == before and len(calls) == 1
    assert (search.num_samples, search.objective, search.cfg.runtime) == (3, "text_margin", "ray")
    assert search.user_base.classifier.gnn_hidden_dim == 64  # --smoke's preset: the base the trials run on
    assert not list(tmp_path.iterdir())


def test_the_environment_is_set_in_one_place(tmp_path, capsys):
    env = tuner.environment(tmp_path / "s", "tune/search.py", environ={"TUNE_WARN_THRESHOLD_S": "3", "WANDB_DIR": "w"})
    assert "TUNE_WARN_THRESHOLD_S" not in env and env["TUNE_DISABLE_SIGINT_HANDLER"] == "1"  # the user's own kept
    assert env["WANDB_DIR"] == str(Path("w").resolve()) and env["WANDB_MODE"] == "offline"
    assert "no wandb API key" in capsys.readouterr().err


def test_shared_stages_come_from_the_pipeline():
    source = (Path(tuner.__file__).parent / "shared.py").read_text()
    assert "steps." not in source and "run_first_stages" in source  # issue 36: a second orchestrator no more


def test_error_line_from_a_trials_error_txt(tmp_path):
    from taxoclass.search.record import error_line

    text = ("Failure # 1 (occurred at 2026-12-07)\nray::ImplicitFunc.train() (pid=1, ip=127.0.0.1)\n  File \"x.py\", line 3\n"
            "    raise DataError(...)\ntaxoclass.errors.DataError: demo/train/kw.txt: file not found\n")
    (tmp_path / "error.txt").write_text(text)
    assert error_line(str(tmp_path / "error.txt")) == "demo/train/kw.txt: file not found"
    (tmp_path / "error.txt").write_text("Failure # 1\nValueError: boom\n")
    assert error_line(str(tmp_path / "error.txt")) == "ValueError: boom"
    assert error_line(None) == "failed (no error.txt)"


def _started_search(tmp_path, *argv):
    """A search's folder and record as the search writes them before its trials (no Ray)."""
    from taxoclass.search.prepare import prepare
    from taxoclass.search.record import write_search

    search = prepare(flags.parse(argparse.ArgumentParser(), [*DEBUG, "--name", "s", f"output_dir={tmp_path / 'out'}",
                                                             *argv]), "tune/search.py")
    search.dir.mkdir(parents=True)
    write_search(search.dir, search.record())
    return search


def test_a_name_that_holds_a_search_is_refused_and_a_damaged_record_is_one_line(tmp_path, capsys, no_ray):
    search = _started_search(tmp_path)
    assert capsys.readouterr().err == ""
    code = flags.main([*DEBUG, "--name", "s", f"output_dir={tmp_path / 'out'}"])
    assert code == 2
    assert capsys.readouterr().err.strip() == (f"tune/search.py: error: config key '--name': {search.dir} holds a search "
                                               "already: `--name s --resume` continues it, or choose another --name")
    (search.dir / "trials").mkdir()
    (search.dir / "trials" / "ab12cd34.json").write_text('{"trial": "ab12cd34", "state": "do')  # cut short
    code = flags.main(["--name", "s", "--resume", f"output_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"tune/search.py: error: {search.dir / 'trials' / 'ab12cd34.json'}:1: unreadable trial record")


def test_resume_with_its_trials_done_runs_nothing_and_names_flags_it_does_not_apply(tmp_path, capsys, no_ray):
    import json

    search = _started_search(tmp_path, "--num-samples", "1")
    (search.dir / "trials").mkdir()
    record = {"trial": "ab12cd34", "state": "done", "started": 1.0, "config": dict(search.first),
              "metrics": {"objective": 0.5, "test/example_f1": 0.7, "training_iteration": 2}}
    (search.dir / "trials" / "ab12cd34.json").write_text(json.dumps(record))
    code = flags.main(["--name", "s", "--resume", "--objective", "silver_loss", f"output_dir={tmp_path / 'out'}"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "search s: 1 trials finished, --num-samples 1: nothing to run" in out and "best trial ab12cd34" in out
    assert err.strip() == (f"tune/search.py: warning: --resume continues s with the settings it started with "
                           f"({search.dir / 'search.json'}); not applied: --objective")
