import pytest

from taxoclass.config import build_config, preset_names
from taxoclass.errors import ConfigError, DataError


def test_defaults_and_overrides():
    cfg = build_config(overrides=["seed=7", "gnn_num_layers=4", "classifier.learning_rate=1e-5", "data=/x", "run_name=007",
                                  "tags=[a, b]", "similarity.pruning=false"], environ={})
    assert cfg.seed == 7 and cfg.classifier.gnn_num_layers == 4
    assert cfg.classifier.learning_rate == pytest.approx(1e-5)
    assert cfg.data == "/x" and cfg.run_name == "007"
    assert cfg.tracking.tags == ["a", "b"] and cfg.similarity.pruning is False


def test_precedence_preset_file_env_cli(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("seed: 5\nclassifier:\n  epochs: 9\ntracking:\n  project: from-file\n")
    cfg = build_config("debug", str(f), ["seed=6"], environ={"WANDB_PROJECT": "from-env", "USE_WANDB": "1"})
    assert cfg.max_docs == 60  # preset
    assert cfg.classifier.epochs == 9  # file over preset
    assert cfg.tracking.project == "from-env"  # env over file
    assert cfg.tracking.use_wandb is True
    assert cfg.seed == 6  # command line over everything


def test_seed_names_as_keys():
    cfg = build_config(overrides=["WANDB_LOG_INTERVAL=3", "WANDB_TAGS=x,y"], environ={})
    assert cfg.tracking.log_interval == 3 and cfg.tracking.tags == ["x", "y"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("gnn_num_layer=3", "config key 'gnn_num_layer': unknown key; did you mean 'gnn_num_layers'?"),
        ("classifer.epochs=3", "did you mean 'classifier.epochs'?"),
        ("seed=abc", "config key 'seed': expected int, got 'abc'"),
        ("classifier.epochs=2.5", "config key 'classifier.epochs': expected int, got 2.5"),
        ("use_wandb=maybe", "config key 'tracking.use_wandb': expected bool"),
        ("learning_rate=1e-5", "config key 'learning_rate': ambiguous"),
        ("classifier.amp=fp8", "expected one of 'off', 'bf16', 'fp16'"),
        ("noequals", "expected key=value"),
    ],
)
def test_config_errors_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        build_config(overrides=[override], environ={})
    assert message in str(err.value)


def test_errors_in_files_and_env(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("classifier:\n  epoks: 3\n")
    with pytest.raises(ConfigError, match=r"'classifier.epoks': unknown key; did you mean 'classifier.epochs'\? \(in .*c.yaml\)"):
        build_config(config_file=str(f), environ={})
    f.write_text("seed: [1\n")
    with pytest.raises(DataError, match="c.yaml:2: malformed YAML"):
        build_config(config_file=str(f), environ={})
    with pytest.raises(ConfigError, match="'WANDB_LOG_INTERVAL': expected int, got 'often' \\(environment variable\\)"):
        build_config(environ={"WANDB_LOG_INTERVAL": "often"})
    with pytest.raises(ConfigError, match="unknown preset 'debgu'; did you mean 'debug'"):
        build_config("debgu", environ={})


def test_presets_all_load():
    assert {"debug", "demo", "amazon-531", "dbpedia-298"} <= set(preset_names())
    for name in preset_names():
        build_config(name, environ={})
    assert build_config("dbpedia-298", environ={}).similarity.template == "This example is {}."
    assert build_config("amazon-531", environ={}).similarity.template == "This product is about {}."


@pytest.mark.parametrize("override, message", [
    ("classifier.batch_size=0", "config key 'classifier.batch_size': expected at least 1, got 0"),
    ("classifier.batch_size=-4", "config key 'classifier.batch_size': expected at least 1, got -4"),
    ("self_training.update_interval=0", "config key 'self_training.update_interval': expected at least 1"),
    ("classifier.epochs=0", "config key 'classifier.epochs': expected at least 1"),
    ("classifier.epochs=-1", "config key 'classifier.epochs': expected at least 1"),
    ("classifier.learning_rate=0", "config key 'classifier.learning_rate': expected more than 0"),
    ("self_training.learning_rate=-1e-6", "config key 'self_training.learning_rate': expected more than 0"),
    ("max_docs=-1", "config key 'max_docs': expected at least 0"),
    ("classifier.val_fraction=0", "config key 'classifier.val_fraction': expected a value in (0.0, 1.0)"),
    ("classifier.val_fraction=1.5", "config key 'classifier.val_fraction': expected a value in (0.0, 1.0)"),
    ("mining.root_width=0", "config key 'mining.root_width': expected at least 1"),
    ("mining.top_share=0", "config key 'mining.top_share': expected a value in (0.0, 1.0]"),
    ("similarity.refine_share=1.5", "config key 'similarity.refine_share': expected a value in (0.0, 1.0]"),
    ("similarity.refine_rounds=-1", "config key 'similarity.refine_rounds': expected at least 0"),
    ("evaluation.save_top_k=0", "config key 'evaluation.save_top_k': expected at least 1"),
    ("mining.floor=2", "config key 'mining.floor': expected less than 1.0, got 2.0"),
    ("classifier.learning_rate=.inf", "config key 'classifier.learning_rate': expected a finite number"),
    ("classifier.encoder=/nonexistent", "config key 'classifier.encoder': model folder '/nonexistent' does not exist"),
    ("similarity.model=./no/such/model", "config key 'similarity.model': model folder './no/such/model' does not exist"),
    ("similarity.model=not a name!", "config key 'similarity.model': 'not a name!' is neither 'bundled'"),
])
def test_ranges_and_models_are_checked_when_the_config_is_built(override, message):
    with pytest.raises(ConfigError) as err:
        build_config("debug", overrides=[override], environ={})
    assert message in str(err.value)


def test_model_name_not_loadable_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="'classifier.encoder': model 'no-such-org/no-such-model' is not in the local Hugging Face cache"):
        build_config(overrides=["classifier.encoder=no-such-org/no-such-model"], environ={})


def test_bad_value_exits_2_before_any_work(tmp_path):
    from conftest import run_cli

    for override in ["classifier.batch_size=0", "classifier.encoder=/nonexistent", "mining.floor=2"]:
        res = run_cli("run", "--preset", "debug", override, f"output_dir={tmp_path}")
        assert res.returncode == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"taxoclass: error: config key '{override.split('=')[0]}': ")
        assert not any(tmp_path.iterdir())  # no run dir, no stage started
