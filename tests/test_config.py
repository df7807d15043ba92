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


def test_the_stage_4_switch_reads_yaml_booleans():
    assert [build_config(overrides=[f"self_training.enabled={v}"], environ={}).self_training.enabled
            for v in ("yes", "off", "true", "auto")] == ["true", "false", "true", "auto"]
    cfg = build_config(overrides=["classifier.head_init=random", "classifier.gnn_learning_rate=4e-3"], environ={})
    assert cfg.classifier.gnn_learning_rate == 4e-3


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
        ("self_training.enabled=maybe", "config key 'self_training.enabled': expected one of 'auto', 'true', 'false', got 'maybe'"),
        ("classifier.loss=mse", "config key 'classifier.loss': expected one of 'path', 'bce', got 'mse'"),
        # the paper's random start learns its class vectors through the GCN, which the default leaves frozen
        ("classifier.head_init=random", "config key 'classifier.gnn_learning_rate': head_init=random learns its class vectors"),
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


def test_presets_all_load(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # `mpnet` names a hub model, checked against the cache only offline
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert {"debug", "demo", "amazon-531", "dbpedia-298", "20newsgroups", "mpnet"} <= set(preset_names())
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

    empty = tmp_path.parent / "empty-model"
    empty.mkdir()
    for override in ["classifier.batch_size=0", "classifier.encoder=/nonexistent", "mining.floor=2", f"similarity.model={empty}",
                     "run_name=../escaped", "similarity.template=This is {name}."]:
        res = run_cli("run", "--preset", "debug", override, f"output_dir={tmp_path}")
        assert res.returncode == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"taxoclass: error: config key '{override.split('=')[0]}': ")
        assert not any(tmp_path.iterdir())  # no run dir, no stage started


# to_dict of the default config as the dataclass config wrote it before pydantic (captured from that code):
# cache keys and config.yaml files depend on these keys, their order and their values.
GOLDEN_DEFAULTS = {'data': 'demo',
 'data_variant': 'auto',
 'test_corpus': '',
 'transductive': False,
 'output_dir': 'runs',
 'run_name': '',
 'cache_dir': '',
 'seed': 42,
 'device': 'auto',
 'runtime': 'local',
 'force_stage': 0,
 'resume': '',
 'max_docs': 0,
 'similarity': {'backend': 'biencoder',
                'model': 'bundled',
                'template': 'This product is about {}.',
                'max_length': 256,
                'batch_size': 64,
                'batch_tokens': 0,
                'autocast': 'auto',
                'lowercase': True,
                'nli_normalization': 'softmax3',
                'pruning': True,
                'class_text': 'name',
                'refine_rounds': 3,
                'refine_weight': 0.5,
                'refine_share': 0.5},
 'mining': {'root_width': 2,
            'positivity': True,
            'floor': 0.05,
            'confidence_over': 'parents',
            'path_consistent': True,
            'rule': 'path_top',
            'top_share': 0.5},
 'classifier': {'encoder': 'similarity',
                'pooling': 'mean',
                'max_length': 256,
                'gnn_num_layers': 3,
                'gnn_hidden_dim': 512,
                'head_init': 'zeroshot',
                'label_scope': 'path',
                'negatives': 'core_depth',
                'loss': 'path',
                'min_docs_per_label': 10.0,
                'batch_size': 64,
                'epochs': 1,
                'learning_rate': 5e-05,
                'head_learning_rate': 0.004,
                'gnn_learning_rate': 0.0,
                'weight_decay': 0.01,
                'warmup_ratio': 0.1,
                'val_fraction': 0.1,
                'early_stopping_patience': 2,
                'amp': 'off',
                'freeze_encoder': True},
 'self_training': {'enabled': 'auto',
                   'update_interval': 25,
                   'max_batches': 500,
                   'stop_tolerance': 0.005,
                   'self_train_threshold': 0.5,
                   'confident_only': False,
                   'val_patience': 2,
                   'learning_rate': 1e-06,
                   'head_learning_rate': 0.001,
                   'batch_size': 64},
 'evaluation': {'save_top_k': 100, 'decoding': 'path', 'batch_size': 128},
 'ray': {'address': '',
         'num_cpus': 0,
         'stage1_actors': 0,
         'stage1_batch_size': 256,
         'shard_size': 1024,
         'num_workers': 2,
         'use_gpu': False,
         'gpus_per_worker': 1.0,
         'cpus_per_worker': 1.0,
         'max_failures': 2,
         'storage_path': '',
         'storage_wait_s': 30.0,
         'predict_actors': 0,
         'predict_shard_size': 10000},
 'tracking': {'use_wandb': False,
              'project': 'taxoclass-hierarchical',
              'entity': '',
              'run_name': '',
              'tags': [],
              'group': '',
              'job_type': 'train',
              'mode': '',
              'log_interval': 10,
              'log_gradients': False}}


def test_to_dict_is_the_same_as_before_pydantic(tmp_path):
    import json

    from taxoclass.config import Config, from_dict, load_yaml, save_yaml, to_dict

    cfg = build_config(environ={})
    assert json.dumps(to_dict(cfg)) == json.dumps(GOLDEN_DEFAULTS)  # same keys, same order, same values
    assert to_dict(Config()) == GOLDEN_DEFAULTS
    assert to_dict(cfg.classifier) == GOLDEN_DEFAULTS["classifier"]  # a section alone: the stage cache keys
    save_yaml(cfg, tmp_path / "config.yaml")
    assert list(load_yaml(tmp_path / "config.yaml")) == list(GOLDEN_DEFAULTS)
    assert from_dict(load_yaml(tmp_path / "config.yaml")) == cfg


def test_leaf_types_and_short_names():
    from taxoclass.config import LEAF_TYPES, SHORT_NAMES

    assert LEAF_TYPES["classifier.gnn_num_layers"] is int and LEAF_TYPES["classifier.learning_rate"] is float
    assert LEAF_TYPES["classifier.amp"] is str and LEAF_TYPES["tracking.use_wandb"] is bool  # a Literal key is text
    assert LEAF_TYPES["tracking.tags"] == list[str] and len(LEAF_TYPES) == 92
    assert SHORT_NAMES["gnn_num_layers"] == "classifier.gnn_num_layers" and "learning_rate" not in SHORT_NAMES


def test_a_config_is_not_changed_after_it_is_built_and_with_values_validates_the_copy():
    from taxoclass.config import Config, with_values

    cfg = Config()
    with pytest.raises(TypeError, match=r"with_values\(cfg, \{'classifier.epochs': \.\.\.\}\) gives a copy"):
        cfg.classifier.epochs = 3
    with pytest.raises(TypeError, match="not changed after it is built"):
        cfg.run_name = "x"
    copy = with_values(cfg, {"run_name": "x", "epochs": 3})  # a short name as on the command line
    assert (copy.run_name, copy.classifier.epochs) == ("x", 3) and (cfg.run_name, cfg.classifier.epochs) == ("", Config().classifier.epochs)
    with pytest.raises(ConfigError, match=r"^config key 'classifier.epochs': expected at least 1, got 0$"):
        with_values(cfg, {"classifier.epochs": 0})
    with pytest.raises(ConfigError, match=r"^config key 'classifier.amp': expected one of 'off', 'bf16', 'fp16', got 'fp8' \(in a sweep\)$"):
        with_values(cfg, {"amp": "fp8"}, "a sweep")
    with pytest.raises(ConfigError, match=r"^config key 'seed': expected int, got True$"):
        with_values(cfg, {"seed": True})


def test_flatten_and_unflatten_are_inverse_over_a_whole_config():
    from taxoclass.config import LEAF_TYPES, Config, flatten, to_dict, unflatten

    nested = to_dict(Config())
    flat = flatten(nested)
    assert set(flat) == set(LEAF_TYPES) and unflatten(flat) == nested


def test_a_range_error_names_where_the_value_came_from(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("classifier:\n  epochs: 0\n")
    with pytest.raises(ConfigError, match=r"'classifier.epochs': expected at least 1, got 0 \(in .*c.yaml\)$"):
        build_config(config_file=str(f), environ={})
    assert build_config(config_file=str(f), overrides=["epochs=2"], environ={}).classifier.epochs == 2  # the winner is checked
    with pytest.raises(ConfigError, match=r"^config key 'WANDB_LOG_INTERVAL': expected at least 1, got 0 \(environment variable\)$"):
        build_config(environ={"WANDB_LOG_INTERVAL": "0"})
    with pytest.raises(ConfigError, match=r"^config key 'WANDB_LOG_INTERVAL': expected at least 1, got '0.0' \(environment variable\)$"):
        build_config(environ={"WANDB_LOG_INTERVAL": "0.0"})  # read as an int by pydantic, shown as written


@pytest.mark.parametrize("template", ["This is {name}.", "No slot.", "Two {} and {}.", "Numbered {0}.", "Padded {:>9}.",
                                      "Converted {!r}.", "Open { brace."])
def test_template_needs_exactly_one_slot(template):
    with pytest.raises(ConfigError) as err:
        build_config(overrides=[f"similarity.template={template}"], environ={})
    assert str(err.value).startswith("config key 'similarity.template': ")
    assert "\n" not in str(err.value)


def test_template_error_message():
    with pytest.raises(ConfigError) as err:
        build_config(overrides=["similarity.template=This is {name}."], environ={})
    assert str(err.value) == ("config key 'similarity.template': expected exactly one '{}' (the class name) and no other "
                              "'{...}' field (write '{{' for a literal brace), got 'This is {name}.'")
    cfg = build_config(overrides=["similarity.template={{literal}} braces and {}"], environ={})
    assert cfg.similarity.template.format("x") == "{literal} braces and x"


@pytest.mark.parametrize("name", ["../../x", "/tmp/elsewhere", "a/../../b", ".."])
def test_run_name_stays_inside_output_dir(name):
    with pytest.raises(ConfigError) as err:
        build_config(overrides=[f"run_name={name}"], environ={})
    assert str(err.value) == (f"config key 'run_name': expected a folder name inside output_dir (relative, without '..'), "
                              f"got {name!r}")


def test_run_name_may_have_subfolders():
    assert build_config(overrides=["run_name=sweep-1/trial-2"], environ={}).run_name == "sweep-1/trial-2"


def test_save_top_k_must_cover_top10_accuracy():
    # top5_accuracy and top10_accuracy read the saved list: fewer than 10 classes would make them wrong
    with pytest.raises(ConfigError, match=r"^config key 'evaluation.save_top_k': expected at least 10, got 9$"):
        build_config(overrides=["evaluation.save_top_k=9"], environ={})
    assert build_config(overrides=["evaluation.save_top_k=10"], environ={}).evaluation.save_top_k == 10


def _stray(folder):
    (folder / "notes.txt").write_text("not a model")


def _config_only(folder):
    (folder / "config.json").write_text('{"model_type": "bert"}')


@pytest.mark.parametrize("key", ["classifier.encoder", "similarity.model"])
@pytest.mark.parametrize("fill, reason", [(lambda f: None, "holds no model (no config.json)"), (_stray, "holds no model (no config.json)"),
                                          (_config_only, "holds no weights (no *.safetensors or *.bin file)")],
                         ids=["empty", "stray-file", "config-only"])
def test_a_model_folder_without_a_model_is_refused(tmp_path, key, fill, reason):
    folder = tmp_path / "model"
    folder.mkdir()
    fill(folder)
    with pytest.raises(ConfigError) as err:
        build_config(overrides=[f"{key}={folder}"], environ={})
    assert str(err.value) == f"config key '{key}': model folder '{folder}' {reason}"


@pytest.mark.parametrize("config_json, weights", [("{}", b""), ('{"model_type": "bert"}', b"not safetensors")],
                         ids=["no-model-type", "corrupt-weights"])
def test_loaders_turn_an_unloadable_model_into_a_config_error(tmp_path, config_json, weights):
    # past the folder check (config.json and a weights file), transformers raises ValueError or a SafetensorError
    from taxoclass.stages.similarity import NLIScorer
    from taxoclass.stages.text_encoder import load_encoder

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(config_json)
    (folder / "model.safetensors").write_bytes(weights)
    build_config(overrides=[f"classifier.encoder={folder}"], environ={})
    for load, key in ((lambda: load_encoder(str(folder)), "classifier.encoder"),
                      (lambda: NLIScorer(str(folder), 32, 2, "cpu"), "similarity.model")):
        with pytest.raises(ConfigError) as err:
            load()
        message = str(err.value)
        assert message.startswith(f"config key '{key}': cannot load model '{folder}': ") and "\n" not in message


def test_the_config_table_names_real_keys():
    """docs/configuration.md's table of keys (the README's until issue 30) names only keys the config has."""
    import re

    from conftest import REPO

    from taxoclass.config import canonical_key

    page = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    table = page.split("`taxoclass config` prints every key", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    keys = [k for row in rows for k in re.findall(r"`([a-z_.]+)`", row.split(" | ")[0])]
    assert len(keys) > 40
    for key in keys:
        canonical_key(key)  # an unknown or ambiguous name is a ConfigError: the table is out of date


def test_the_classifier_follows_stage_1s_encoder_unless_told_otherwise(tmp_path):
    from taxoclass.stages.similarity import classifier_encoder

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    assert classifier_encoder(build_config(environ={})) == "bundled"
    # `similarity.model=X` alone moves both: a search trial over encoders trains on the encoder it scored with
    assert classifier_encoder(build_config(overrides=[f"similarity.model={folder}"], environ={})) == str(folder)
    # an NLI cross-encoder makes no document vectors: the classifier takes the bundled bi-encoder
    assert classifier_encoder(build_config(overrides=[f"similarity.model={folder}", "similarity.backend=nli"], environ={})) == "bundled"
    assert classifier_encoder(build_config(overrides=[f"similarity.model={folder}", "classifier.encoder=bundled"],
                                           environ={})) == "bundled"


def test_a_key_given_twice_warns_on_the_command_line_and_is_refused_in_a_file(tmp_path, capsys):
    """Issue 29: `seed=1 seed=2`, or a key twice in one YAML file, silently took the last value. On the command line
    the last one still counts, with a warning (a later override is how a wrapper script changes one setting); in a
    file, where nothing overrides anything, it is refused with the line."""
    from taxoclass.cli import main

    assert main(["config", "seed=1", "seed=2", "gnn_num_layers=2", "classifier.gnn_num_layers=3"]) == 0
    out, err = capsys.readouterr()
    assert "seed: 2" in out and "gnn_num_layers: 3" in out
    assert err.splitlines() == [
        "taxoclass: warning: config key 'seed' given twice on the command line (seed=1, then seed=2): the last one counts",
        "taxoclass: warning: config key 'classifier.gnn_num_layers' given twice on the command line (gnn_num_layers=2, then "
        "classifier.gnn_num_layers=3): the last one counts"]
    twice = tmp_path / "twice.yaml"
    twice.write_text("seed: 1\nclassifier:\n  epochs: 2\n  epochs: 3\n")
    with pytest.raises(DataError) as caught:
        build_config(config_file=str(twice))
    assert str(caught.value) == f"{twice}:4: config key 'epochs' given twice (first on line 3)"
    both = tmp_path / "both.yaml"
    both.write_text("epochs: 1\nclassifier:\n  epochs: 2\n")  # one key under two of its names
    with pytest.raises(ConfigError) as caught:
        build_config(config_file=str(both))
    assert str(caught.value) == f"config key 'classifier.epochs': given twice, as 'epochs' and as 'classifier.epochs' (in {both})"
