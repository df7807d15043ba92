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
