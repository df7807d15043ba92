"""OS failures are one line too (issue 19, section 2): a run dir that cannot be written, a full disk,
a malformed tracking.json met while looking for `resume=ID`.

Each prints `taxoclass: error: PATH: ...` and exits with status 2, leaving nothing half-written that a
rerun would trust. The read-only case is real (a path under a regular file, which even root cannot
create; a chmod'ed folder when not root); the full disk is simulated in-process, and shown real on `/dev/full`
and on a 1 MB tmpfs, where torch's writer must give the file system's own error.
"""

import errno
import json
import os
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from taxoclass import tensorfile
from taxoclass.atomic import atomic_replace_with
from taxoclass.cli import find_run, main
from taxoclass.errors import DataError

DEBUG = ["run", "--preset", "debug", "self_training.enabled=false"]


def _error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr and [ln for ln in lines if ln.startswith("taxoclass: error")] == [lines[-1]], stderr
    return lines[-1]


def test_an_output_dir_under_a_regular_file_is_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    res = run_cli(*DEBUG, f"output_dir={blocker / 'runs'}", "run_name=x")
    assert res.returncode == 2
    assert _error_line(res.stderr) == f"taxoclass: error: {blocker / 'runs' / 'x'}: cannot write the run dir: Not a directory"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; the case under a regular file covers it")
def test_a_read_only_output_dir_or_run_dir_is_one_line(tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    (out / "old").mkdir()
    out.chmod(0o555)
    (out / "old").chmod(0o555)
    try:
        for name in ("new", "old"):  # a run dir to create, and one that exists but takes no files
            res = run_cli(*DEBUG, f"output_dir={out}", f"run_name={name}")
            assert res.returncode == 2
            assert _error_line(res.stderr).endswith(f"{out / name}: cannot write the run dir: Permission denied")
    finally:
        (out / "old").chmod(0o755)
        out.chmod(0o755)


def test_torch_writes_a_full_device_as_the_file_systems_own_error():
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    with pytest.raises(OSError) as caught:
        tensorfile.save({"w": torch.zeros(1_000_000)}, "/dev/full")  # torch.save to the path raised RuntimeError
    assert caught.value.errno == errno.ENOSPC


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 1 MB file system (tmpfs), where mounting one is allowed (root, here in `make test`'s namespaces)."""
    import subprocess

    folder = tmp_path / "small"
    folder.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root and a mount namespace that allows it")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_a_full_tmpfs_while_saving_tensors_is_no_space_left_on_device(small_tmpfs):
    """Issue 29: on a full 3 MB tmpfs, `taxoclass run` said `torch.save failed: unexpected pos 2498368 vs 2498320`:
    torch's zip writer swallows the OSError of the file handle's write and fails on a stream position later."""
    target = small_tmpfs / "stage3-key.pt"
    with pytest.raises(DataError) as caught:
        atomic_replace_with(target, lambda tmp: tensorfile.save({"w": torch.zeros(1_000_000)}, tmp))  # 4 MB
    assert str(caught.value) == f"{target}: cannot write this file: No space left on device"
    assert list(small_tmpfs.iterdir()) == []  # no partial file, no temporary one


def test_a_full_disk_while_storing_stage_3_is_one_line_and_leaves_nothing_half_written(tmp_path, monkeypatch, capsys):
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):  # what a full disk does to torch.save: some bytes, then ENOSPC
        fh = open(f, "wb") if isinstance(f, (str, os.PathLike)) else f
        fh.write(b"PK\x03\x04 the first bytes of a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk)
    args = [*DEBUG, f"output_dir={tmp_path}", "run_name=x"]
    assert main(args) == 2
    run_dir = tmp_path / "x"
    entries = sorted(p.name for p in (run_dir / "cache").iterdir())
    err = _error_line(capsys.readouterr().err)
    assert err.startswith(f"taxoclass: error: {run_dir / 'cache'}/stage3-") and err.endswith(
        ".pt: cannot write this file: No space left on device"), err
    # nothing a rerun would trust: no stage-3 entry (not even its checksum), no temporary file, no model
    assert not [n for n in entries if n.startswith("stage3-")], entries
    assert not list(run_dir.rglob("*.tmp")) and not (run_dir / "model.pt").exists() and not (run_dir / "summary.json").exists()
    monkeypatch.setattr(torch, "save", real_save)  # space again: the rerun computes stage 3 and finishes
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "stage 3 (classifier): cached" not in err and "stage 2 (core mining): cached" in err
    assert json.loads((run_dir / "summary.json").read_text())["test/example_f1"] > 0


# ---------------------------------------------------------------- resume=ID
def _run_dir(root: Path, tracking: str | None) -> Path:
    root.mkdir(parents=True)
    (root / "config.yaml").write_text("data: demo\n")
    if tracking is not None:
        (root / "tracking.json").write_text(tracking)
    return root


def test_resume_skips_a_malformed_tracking_json_with_a_warning(tmp_path, capsys):
    out = tmp_path / "runs"
    _run_dir(out / "a", '{"wandb_run_id": "abc1')  # cut short by a kill
    _run_dir(out / "b", "[1, 2]")
    _run_dir(out / "c", json.dumps({"wandb_run_id": "abc123"}))
    assert find_run("abc123", str(out)) == (out / "c", "abc123")
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 2 and all(w.startswith("taxoclass: warning: ") and "skipped" in w for w in warnings)
    assert f"{out / 'a' / 'tracking.json'}: unreadable tracking state (JSONDecodeError" in warnings[0]
    assert f"{out / 'b' / 'tracking.json'}: unreadable tracking state (not a JSON object)" in warnings[1]
    with pytest.raises(DataError, match=r"a/tracking.json: unreadable tracking state"):
        find_run(str(out / "a"), str(out))  # the run dir named itself: its own state must be readable


def test_resume_of_an_unknown_id_among_malformed_states_is_one_line(tmp_path):
    out = tmp_path / "runs"
    _run_dir(out / "a", "not json at all")
    res = run_cli("run", f"output_dir={out}", "resume=zzz")
    assert res.returncode == 2
    assert _error_line(res.stderr) == f"taxoclass: error: config key 'resume': 'zzz' is neither a run dir nor a wandb run id of a run under {out}/"


FULL_DISK_RUN = r"""
set -u
mount -t tmpfs -o size=1m tmpfs "$FULL" || exit 97
head -c 600K /dev/zero > "$FULL/filler"  # room for config.yaml and metrics.jsonl, none for the 835 KB model.pt
"$PYTHON" -m taxoclass.cli "$@" 2> "$LOG/first.err"
echo "first=$?"
echo "left: $(cd "$FULL/x" && ls -A | tr '\n' ' ')"
rm "$FULL/filler"
"$PYTHON" -m taxoclass.cli "$@" 2> "$LOG/rerun.err"
echo "rerun=$?"
echo "then: $(cd "$FULL/x" && ls -A | tr '\n' ' ')"
cmp "$FULL/x/model.pt" "$CACHE"/stage3-*.pt && echo "model.pt is the stage-3 entry"
"""


def test_a_disk_that_fills_while_model_pt_is_copied_is_one_line_and_a_rerun_finishes(tmp_path):
    """Issue 35: `mount -t tmpfs -o size=2m tmpfs FULL; taxoclass run --preset debug output_dir=FULL` ended in an
    `OSError: No space left on device` traceback, exit 1: shutil's copy names the source and the destination in its
    error, and atomic.py took it for an error about the source. A real tmpfs in a private mount namespace (gone with
    the command); the cache elsewhere, so that the disk fills exactly while model.pt is copied."""
    import shutil
    import subprocess
    import sys

    from conftest import REPO

    if not shutil.which("unshare") or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("a private mount namespace needs unshare and root")
    full, cache, log = tmp_path / "full", tmp_path / "cache", tmp_path / "log"
    full.mkdir()
    log.mkdir()
    env = {**os.environ, "FULL": str(full), "CACHE": str(cache), "LOG": str(log), "PYTHON": sys.executable}
    args = [*DEBUG, f"output_dir={full}", "run_name=x", f"cache_dir={cache}"]
    res = subprocess.run(["unshare", "-m", "--propagation", "private", "bash", "-c", FULL_DISK_RUN, "_", *args], capture_output=True,
                         text=True, cwd=REPO, env=env, timeout=900)
    if res.returncode == 97:
        pytest.skip(f"mounting a tmpfs is not allowed here: {res.stderr.strip()}")
    out = dict(line.split("=", 1) if "=" in line else line.split(": ", 1) for line in res.stdout.strip().splitlines()
               if "=" in line or ": " in line)
    first = (log / "first.err").read_text()
    assert out["first"] == "2", first[-3000:]
    assert _error_line(first) == f"taxoclass: error: {full / 'x' / 'model.pt'}: cannot write the model: No space left on device"
    # nothing a rerun would trust: no model.pt (not even a part of it), no temporary file, no summary, no predictions
    assert out["left"].split() == [".lock", "config.yaml", "metrics.jsonl"], out["left"]
    assert out["rerun"] == "0", (log / "rerun.err").read_text()[-3000:]
    assert {"model.pt", "summary.json", "predictions"} <= set(out["then"].split())
    assert "model.pt is the stage-3 entry" in res.stdout
