"""Loading a run never executes code (issue 19, section 1), and a checkpoint outlives config changes (issue 20).

A tampered `model.pt` and a tampered stage-3 cache entry (its checksum rewritten to match) hold an object
whose `__reduce__` would create a marker file: `predict`, `taxoclass.load` and `stage 5` refuse them with
one line and exit status 2, and the marker never appears. Checkpoints hold only the config sections the
model needs, as JSON; an older checkpoint (config and taxonomy as nested dicts) loads through the same
safe path, and one whose config has keys this version does not know still predicts.
"""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from conftest import run_cli

from taxoclass.cache import seal
from taxoclass.config import build_config
from taxoclass.errors import DataError
from taxoclass.pipeline import run_pipeline
from taxoclass.stages.model_io import MODEL_SECTIONS, load_checkpoint

TEXTS = ["Noise-cancelling earbuds with a charging case.", "A two-person tent with a rain fly."]


class Payload:
    """Unpickling this runs `touch MARKER` (pickle calls what `__reduce__` returns)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    # stage 4 off, as by default: stage 3's cache entry is the final model, the one `stage 5` loads
    cfg = build_config("debug", overrides=[f"output_dir={out}", "run_name=a", "self_training.enabled=false"], environ={})
    run_pipeline(cfg)
    return out / "a"


@pytest.fixture
def run_dir(trained, tmp_path):
    """A private copy of the trained run dir: each test may damage its own."""
    return shutil.copytree(trained, tmp_path / "run")


def _tampered(path, marker):
    """Replace the checkpoint at `path` by one whose state dict is the payload; the real attack is checked first."""
    good = torch.load(path, weights_only=True)
    torch.save({**good, "state_dict": Payload(marker)}, path)
    torch.load(path, weights_only=False)  # what the code did before: the payload runs
    assert marker.exists(), "the payload did not run: the test would prove nothing"
    marker.unlink()


def _one_error_line(res, *fragments):
    """Exit 2; the error is one line, the last (progress lines of the cached stages may come before it)."""
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, res.stderr
    errors = [line for line in lines if line.startswith("taxoclass: error")]
    assert errors == [lines[-1]] and lines[-1].startswith("taxoclass: error: ") and "Traceback" not in res.stderr, res.stderr
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]


def test_a_tampered_model_pt_never_runs(run_dir, tmp_path):
    import taxoclass

    marker = tmp_path / "pwned"
    _tampered(run_dir / "model.pt", marker)
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n")
    res = run_cli("predict", "--run", run_dir, "--input", texts)
    _one_error_line(res, "model.pt: refused", "posix.system", "stage 5 --run")
    assert len(res.stderr.strip().splitlines()) == 1 and res.stdout == ""  # input checked, model refused: nothing printed
    assert not marker.exists()
    with pytest.raises(DataError, match="refused: it holds a Python object"):
        taxoclass.load(run_dir)
    assert not marker.exists()


def test_a_tampered_cache_entry_with_a_matching_checksum_never_runs(run_dir, tmp_path):
    marker = tmp_path / "pwned"
    entry = next((run_dir / "cache").glob("stage3-*.pt"))
    _tampered(entry, marker)
    seal(entry.with_suffix(".sha256"), [entry, entry.with_suffix(".stats.json")])  # anyone who can write the file can do this
    res = run_cli("stage", "5", "--run", run_dir)
    _one_error_line(res, f"{entry.name}: refused", "delete it and run again")
    assert not marker.exists()


def test_a_checkpoint_holds_only_the_model_config_as_json(trained):
    payload = torch.load(trained / "model.pt", weights_only=True)
    config = json.loads(payload["config"])
    assert set(config) == set(MODEL_SECTIONS)  # no data path, output_dir, ray or tracking settings
    assert config["classifier"]["freeze_encoder"] is True and config["seed"] == 42
    assert set(json.loads(payload["taxonomy"])) == {"ids", "names", "edges"}


def test_an_old_checkpoint_with_unknown_keys_loads_safely_and_predicts_the_same(run_dir, trained):
    """Format 1 (before this change): config and taxonomy as nested dicts, the whole config of the run. Its
    keys include ones this version does not know (a renamed `ray.*` key, a removed classifier key)."""
    import yaml

    import taxoclass

    payload = torch.load(trained / "model.pt", weights_only=True)
    config = yaml.safe_load((trained / "config.yaml").read_text())
    config["ray"]["stage1_workers"] = 3  # renamed since
    config["classifier"]["dropout_rate"] = 0.1  # removed since
    config["an_old_section"] = {"key": "value"}
    old = {"state_dict": payload["state_dict"], "config": config, "taxonomy": json.loads(payload["taxonomy"])}
    torch.save(old, run_dir / "model.pt")
    assert taxoclass.load(run_dir).predict(TEXTS, top_k=5) == taxoclass.load(trained).predict(TEXTS, top_k=5)


def test_a_checkpoint_whose_config_has_unknown_keys_still_predicts(run_dir, trained):
    import taxoclass

    payload = torch.load(trained / "model.pt", weights_only=True)
    config = json.loads(payload["config"])
    config["classifier"]["renamed_key"] = 1
    config["ray"] = {"address": "auto", "gone": True}
    torch.save({**payload, "config": json.dumps(config)}, run_dir / "model.pt")
    records = taxoclass.load(run_dir).predict(TEXTS, path=True)
    assert [len(r["path"]) for r in records] == [3, 3]
    assert records == taxoclass.load(trained).predict(TEXTS, path=True)


def test_a_truncated_or_foreign_model_pt_is_one_line(run_dir, tmp_path):
    (run_dir / "model.pt").write_bytes((run_dir / "model.pt").read_bytes()[:1000])
    with pytest.raises(DataError, match="model.pt: not a readable checkpoint"):
        load_checkpoint(run_dir / "model.pt", torch.device("cpu"))
    torch.save([1, 2, 3], run_dir / "model.pt")
    with pytest.raises(DataError, match="not a taxoclass checkpoint"):
        load_checkpoint(run_dir / "model.pt", torch.device("cpu"))


# ---------------------------------------------------------------- Ray Train's state.pt (no Ray needed)
def test_a_training_state_round_trips_without_pickle(tmp_path):
    from taxoclass.distributed.ray_train import read_state, write_state

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "scaler": {}, "best_state": None, "best_loss": float("inf"), "stale": 2, "stopped_by": "budget",
             "prev_top3": np.array([[0, 1, 2], [1, 2, 4]]), "logs": [[{"stage4/loss": np.float32(0.5)}, None]],
             # the keeper's nested checkpoint shape (stages/keeper.py)
             "keeper": {"best_state": model.state_dict(), "best_at": np.int64(3)}, "progress": {"prev": np.arange(4)}}
    write_state(state, tmp_path / "state.pt")
    back = read_state(tmp_path / "state.pt")
    assert back["keeper"]["best_at"] == 3 and (back["progress"]["prev"] == np.arange(4)).all()
    torch.testing.assert_close(back["keeper"]["best_state"]["bias"], model.bias.detach())
    assert isinstance(back["prev_top3"], np.ndarray) and (back["prev_top3"] == state["prev_top3"]).all()
    assert back["best_loss"] == float("inf") and back["stale"] == 2 and back["best_state"] is None
    assert back["logs"] == [[{"stage4/loss": 0.5}, None]]
    torch.testing.assert_close(back["model"]["weight"], model.weight.detach())
    opt2 = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters())
    opt2.load_state_dict(back["optimizer"])  # the optimiser's own state dict, as it was
    torch.testing.assert_close(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_a_tampered_or_old_training_state_is_refused(tmp_path):
    from taxoclass.distributed.ray_train import read_state

    marker = tmp_path / "pwned"
    torch.save({"model": {}, "logs": Payload(marker)}, tmp_path / "state.pt")
    with pytest.raises(DataError, match="refused: it holds a Python object"):
        read_state(tmp_path / "state.pt")
    assert not marker.exists()
    # before this change a stage-4 state held a NumPy array as such: refused too (the worker then trains afresh)
    torch.save({"model": {}, "prev_top3": np.zeros((2, 3), dtype=np.int64)}, tmp_path / "old.pt")
    with pytest.raises(DataError, match="refused"):
        read_state(tmp_path / "old.pt")
