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
from taxoclass.pipeline import open_finished, run_pipeline
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


def _sealed(path):
    """Rewrite the checksum of the entry `path` belongs to, as anyone who can write the file can."""
    files = [path] if path.suffix == ".npy" else [path, path.with_suffix(".stats.json")]
    seal(path.with_suffix(".sha256"), files)


@pytest.mark.parametrize("entry", ["vectors-*.npy", "stage1-*.npz"])
def test_an_object_array_in_a_cache_entry_is_refused_and_never_runs(run_dir, tmp_path, capsys, entry):
    """Issue 29: an object array in the document vectors or in stage 1's arrays, its checksum rewritten, ended in
    a traceback (`Array can't be memory-mapped`, `Object arrays cannot be loaded when allow_pickle=False`)."""
    from taxoclass.cli import main

    marker = tmp_path / "pwned"
    payload = np.array([Payload(marker)], dtype=object)
    for path in (run_dir / "cache").glob(entry):
        if path.suffix == ".npy":
            np.save(path, payload, allow_pickle=True)
            np.load(path, allow_pickle=True)  # the real attack: loading it with pickles allowed runs the payload
        else:
            np.savez(path, corpus=payload, test=payload)
            np.load(path, allow_pickle=True)["corpus"]
        assert marker.exists(), "the payload did not run: the test would prove nothing"
        marker.unlink()
        _sealed(path)
    assert main(["stage", "5", "--run", str(run_dir)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith(f"taxoclass: error: {run_dir / 'cache'}/{entry.split('*')[0]}") and "Traceback" not in lines
    assert "holds Python objects (an array of dtype object), not numbers, and loading it could run code; delete it and run " \
           "again: its stage is computed anew" in lines[-1]
    assert not marker.exists()


def test_a_cache_array_of_the_wrong_shape_is_computed_again_saying_why(run_dir, capsys):
    """Issue 29: float16 vectors of the wrong shape, their checksum rewritten, ended in `mat1 and mat2 shapes cannot be
    multiplied`; stage 1's arrays of the wrong shape likewise. Each is computed again, and the log says why."""
    from taxoclass.cli import main

    def test_metrics():
        summary = json.loads((run_dir / "summary.json").read_text())
        return {k: v for k, v in summary.items() if k.startswith("test/")}

    first = test_metrics()
    for path in (run_dir / "cache").glob("vectors-*.npy"):
        np.save(path, np.zeros((len(np.load(path)), 10), dtype=np.float16))
        _sealed(path)
    assert main(["stage", "5", "--run", str(run_dir)]) == 0  # the evaluation reads the test set's vectors
    err = capsys.readouterr().err
    vectors = next(p.name for p in (run_dir / "cache").glob("vectors-*.npy") if f"{p.name} holds" in err)
    assert f"is not usable ({vectors} holds float16 of shape 60 x 10, expected floats of 60 x 384): computing it again" in err
    # the true reason, where the line said before that stage 1 "ran before they were kept"
    assert (f"embedding 60 documents (stage 1's vectors cannot be used: {vectors} holds float16 of shape 60 x 10, "
            "expected floats of 60 x 384)" in err)
    assert test_metrics() == pytest.approx(first)
    stage1 = next((run_dir / "cache").glob("stage1-*.npz"))
    np.savez(stage1, **{k: v[:, :3] for k, v in np.load(stage1).items()})
    _sealed(stage1)
    with pytest.raises(DataError, match=r"stage1-\w+\.npz: not usable \(.*\); run the run again to compute it"):
        open_finished(run_dir).stage1()  # read only (report, the search objectives): said, nothing computed
    assert main(["stage", "5", "--run", str(run_dir)]) == 0  # stage 5 reads stage 1's arrays for the zero-shot baselines
    assert (f"is not usable ({stage1.name}'s array 'corpus' holds float32 of shape 60 x 3, expected floats of 60 x 41): "
            "computing it again") in capsys.readouterr().err
    assert test_metrics() == pytest.approx(first)


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
             # the keeper's nested checkpoint shape (training/keeper.py)
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


# ---------------------------------------------------------------- issue 35: a resealed cache file of the wrong content
def _cut_npy(path):
    """Half of the data gone, the header kept: what a copy cut short leaves."""
    with open(path, "rb") as fh:
        np.lib.format.read_magic(fh)
        np.lib.format.read_array_header_1_0(fh)
        header = fh.tell()
    data = path.read_bytes()
    path.write_bytes(data[:header + (len(data) - header) // 2])


def _edit_state(path, key, value):
    payload = torch.load(path, weights_only=True)
    torch.save({**payload, "state_dict": {**payload["state_dict"], key: value}}, path)


def _edit_json(path, edit):
    path.write_text(edit(path.read_text()))


def _stage_stats(path):
    return {k: v for k, v in json.loads(path.read_text()).items() if not k.endswith("seconds")}


STAGE5_DAMAGE = {
    # each: (cache files, how to damage one, the reason the warning gives)
    "an .npy cut short with its header intact": (
        "vectors-*.npy", _cut_npy, "is cut short: 23040 bytes of data where its header (float16, 60 x 384) needs 46080"),
    "a stage-1 .stats.json cut short": (
        "stage1-*.stats.json", lambda p: _edit_json(p, lambda t: t[:len(t) // 2]), ".stats.json is not JSON (JSONDecodeError"),
    "a stage-3 .pt holding a weight of the wrong shape": (
        "stage3-*.pt", lambda p: _edit_state(p, "bilinear", torch.zeros(3, 3)),
        "does not fit the model: its state_dict's 'bilinear' has shape 3 x 3, the model's 384 x 384"),
    "a stage-3 .pt holding a value that is not a tensor": (
        "stage3-*.pt", lambda p: _edit_state(p, "bias", [0.5]), "does not fit the model: its state_dict's 'bias' is a list, not a tensor"),
}


@pytest.mark.parametrize("damage", STAGE5_DAMAGE)
def test_stage_5_computes_a_resealed_entry_of_the_wrong_content_again_saying_why(run_dir, capsys, damage):
    """Issue 35: each ended in a traceback (`mmap length is greater than file size`, `JSONDecodeError`, `RuntimeError` from
    `load_state_dict`) although nothing was executed. The entry is a cache miss now, with its reason, and computed again."""
    from taxoclass.cli import main

    pattern, harm, reason = STAGE5_DAMAGE[damage]
    before = {k: v for k, v in json.loads((run_dir / "summary.json").read_text()).items() if k.startswith("test/")}
    for path in (run_dir / "cache").glob(pattern):
        harm(path)
        _sealed(path if path.suffix in (".npy", ".pt") else path.with_name(path.name.replace(".stats.json", ".npz")))
    assert main(["stage", "5", "--run", str(run_dir)]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "taxoclass: warning: cache entry " in err and reason in err, err
    assert ": computing it again" in err.split(reason)[1].splitlines()[0]
    after = json.loads((run_dir / "summary.json").read_text())
    assert {k: v for k, v in after.items() if k.startswith("test/")} == pytest.approx(before)


STAGE2_DAMAGE = {
    "cut short": (lambda t: t[:len(t) // 2], "is not JSON (JSONDecodeError"),
    "of the wrong structure": (lambda t: json.dumps(json.loads(t)["cores"]), "not an object with candidates, confidences, "
                                                                              "cores and thresholds"),
    "with an out-of-range class id": (lambda t: json.dumps({**json.loads(t), "cores": [[999]] + json.loads(t)["cores"][1:]}),
                                      "document 0 names class id 999, not one of the 41 classes (0-40)"),
}


@pytest.mark.parametrize("damage", STAGE2_DAMAGE)
def test_stage_3_computes_a_resealed_stage_2_output_of_the_wrong_content_again(run_dir, capsys, damage):
    """Issue 35: `taxoclass stage 3 --run` on a stage-2 `.json` cut short, of the wrong structure or with a class id
    out of range, its checksum rewritten, ended in `JSONDecodeError`, `TypeError` or `IndexError`."""
    from taxoclass.cli import main

    edit, reason = STAGE2_DAMAGE[damage]
    stage2 = next(p for p in (run_dir / "cache").glob("stage2-*.json") if not p.name.endswith(".stats.json"))
    stage3_stats = next((run_dir / "cache").glob("stage3-*.stats.json"))
    before = _stage_stats(stage3_stats)
    _edit_json(stage2, edit)
    _sealed(stage2)
    assert main(["stage", "3", "--run", str(run_dir)]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"is not usable ({stage2.name}" in err and reason in err, err
    assert "stage 2 (core mining): 37 of 60 documents have a core class" in err  # computed again, as it was
    assert _stage_stats(stage3_stats) == pytest.approx(before)


MODEL_DAMAGE = {
    "a weight of the wrong shape": ("bilinear", torch.zeros(3, 3), "its state_dict's 'bilinear' has shape 3 x 3, the model's 384 x 384"),
    "a value that is not a tensor": ("bias", "0.5", "its state_dict's 'bias' is a str, not a tensor"),
    "class features of another width": ("class_features", torch.zeros(41, 10),
                                        "its class_features are 41 x 10, the encoder's vectors 384 wide"),
    "class features for other classes": ("class_features", torch.zeros(7, 384),
                                         "its state_dict's 'class_features' has shape 7 x 384, not one row for each of its 41 classes"),
}


@pytest.mark.parametrize("damage", MODEL_DAMAGE)
def test_predict_refuses_a_model_pt_of_the_wrong_content_in_one_line(run_dir, tmp_path, capsys, damage):
    """Issue 35: `predict` on a `model.pt` holding a wrong-shape or non-tensor value ended in a `RuntimeError` traceback
    from `load_state_dict`. model.pt is no cache entry (nothing to compute it from here): refused, in one line."""
    from taxoclass.cli import main

    key, value, reason = MODEL_DAMAGE[damage]
    _edit_state(run_dir / "model.pt", key, value)
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n")
    assert main(["predict", "--run", str(run_dir), "--input", str(texts)]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and "Traceback" not in cap.err
    assert cap.err.strip().splitlines()[-1] == (f"taxoclass: error: {run_dir / 'model.pt'}: not a taxoclass checkpoint ({reason}); "
                                                "make it again from the run's cache with `taxoclass stage 5 --run RUN_DIR`, or "
                                                "train it with `taxoclass run`")
