"""Where Ray Train keeps a run's checkpoints: a path or a URI, and on a cluster storage every node sees.

Features:
- `storage_location`: `ray.storage_path` as Ray Train takes it: a URI as written (`s3://`, `gs://`,
  `file://`, any scheme pyarrow's filesystems know), a path made absolute, and when empty the run's
  `<run_dir>/ray`;
- `remove_tree`: a stage's checkpoints deleted through the same pyarrow filesystem Ray Train wrote
  them with (a forced stage, a cached one);
- `check_writable`: before any work, the storage opens as Ray Train opens it (pyarrow) and takes a
  folder and a file (removed again): an unknown scheme, a `file://` URI that is not absolute, a
  bucket without credentials or beyond the network is one ConfigError line naming
  `ray.storage_path`, not a traceback after stages 1-2 nor a hang in stage 3 (pyarrow retried
  `gs://` without credentials for over 10 minutes). A URI is tried in a child process, killed
  after `ray.storage_wait_s` seconds: no retry loop of a cloud SDK can hold the run;
- `check_shared`: on a cluster of more than one node, storage on a local disk must be visible from
  every node (Ray Train's workers write there and a restarted run reads there): the driver writes a
  marker and a task pinned to each node looks for it, before any work; a node that does not see it is
  a one-line ConfigError naming `ray.storage_path`. Remote filesystems (`s3://`, `gs://`, ...) are
  shared by nature and not probed. The stage cache, the run dir and stage 1's shards stay on the
  driver: only the driver reads and writes them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from taxoclass.errors import ConfigError

KEY = "ray.storage_path"
PROBE_TIMEOUT_S = 120  # a busy node starts a worker process for the probe


def storage_location(setting: str, run_dir: Path) -> str:
    """A URI as given, a path absolute (the workers do not share the driver's working folder)."""
    if not setting:
        return str((Path(run_dir) / "ray").resolve())
    if "://" in setting:
        return setting.rstrip("/")
    return str(Path(setting).expanduser().resolve())


def filesystem(storage: str):
    """(pyarrow filesystem, path inside it), as Ray Train resolves its `storage_path`."""
    import pyarrow.fs

    try:
        return pyarrow.fs.FileSystem.from_uri(storage)
    except (pyarrow.ArrowInvalid, ValueError) as err:
        hint = "; a file:// URI takes an absolute path, file:///path" if storage.startswith("file://") else ""
        raise ConfigError(KEY, f"{storage!r} is neither a path nor a URI pyarrow can open ({err}{hint})") from None


def remove_tree(storage: str, name: str) -> None:
    """`<storage>/<name>` and everything under it, if it is there."""
    fs, root = filesystem(storage)
    try:
        fs.delete_dir(f"{root.rstrip('/')}/{name}")
    except FileNotFoundError:
        pass


def write_test(storage: str) -> str | None:
    """None when `storage` takes a write as Ray Train's StorageContext makes its validation file (a folder, a file in
    it; both removed again here), else the error's first line."""
    import pyarrow.fs

    try:
        fs, root = pyarrow.fs.FileSystem.from_uri(storage)  # a cloud URI may already go to the network here
        fs.create_dir(root)
        marker = f"{root.rstrip('/')}/.taxoclass-write-test-{uuid.uuid4().hex}"
        with fs.open_output_stream(marker) as out:
            out.write(b"taxoclass")
        fs.delete_file(marker)
    except Exception as err:  # pyarrow's OSError, ArrowInvalid, ...: what the storage said
        text = str(err).strip().splitlines()
        return f"{type(err).__name__}: {text[0] if text else 'no message'}"
    return None


CHILD = "import sys; from taxoclass.distributed.storage import write_test; w = write_test(sys.argv[1]); print(w or ''); sys.exit(bool(w))"


def check_writable(setting: str, wait_s: float) -> None:
    """`ray.storage_path` opens and takes a write, as Ray Train will need, or a ConfigError before any work; an empty
    setting is the run dir's own `ray/` folder (the run dir is proven writable when it is made)."""
    if not setting:
        return
    storage = storage_location(setting, Path.cwd())
    if local_path(storage) is not None:  # a disk: at once, here
        filesystem(storage)  # a relative file:// URI: the hint
        why = write_test(storage)
    else:  # a URI: in a child process, killed after wait_s (pyarrow's gs:// retried for minutes, deaf to Ctrl-C)
        package_root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
        try:
            done = subprocess.run([sys.executable, "-c", CHILD, storage], capture_output=True, text=True, timeout=wait_s, env=env)
        except subprocess.TimeoutExpired:
            raise ConfigError(KEY, f"{storage} does not take a write within {wait_s:g} s (ray.storage_wait_s): no credentials "
                                   "for it here, or no network to it? Ray Train keeps the stages' checkpoints there") from None
        why = done.stdout.strip().splitlines()[-1] if done.returncode and done.stdout.strip() else (
            f"the write test exited with status {done.returncode}" if done.returncode else None)
    if why and why.startswith("ArrowInvalid: "):  # the scheme, or the URI's form
        raise ConfigError(KEY, f"{storage!r} is neither a path nor a URI pyarrow can open ({why.removeprefix('ArrowInvalid: ')})")
    if why:
        raise ConfigError(KEY, f"{storage} cannot be written ({why}); Ray Train keeps the stages' checkpoints there: give a "
                               "folder or a URI this machine can write, with its credentials")


def local_path(storage: str) -> str | None:
    """The folder of storage on a disk (a path, a file:// URI); None for a remote filesystem (s3://, gs://, ...)."""
    if "://" not in storage:
        return storage
    scheme, _, rest = storage.partition("://")
    return "/" + rest.partition("/")[2] if scheme == "file" else None  # file://host/path: the path


def _sees(path: str) -> bool:
    return Path(path).is_file()


def check_shared(storage: str) -> None:
    """On a cluster of more than one node: local storage every node sees, or a ConfigError before any work."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    if len(nodes) < 2:
        return
    root = local_path(storage)
    if root is None:  # told apart by its scheme: resolving a cloud URI could mean a network round trip
        return
    marker = Path(root) / f".taxoclass-storage-{uuid.uuid4().hex}"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    look = ray.remote(num_cpus=0)(_sees)
    pending = [look.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote(str(marker)) for n in nodes]
    try:
        # a node that does not answer in time is not judged here (Ray Train's own check meets it later)
        answered, _ = ray.wait(pending, num_returns=len(pending), timeout=PROBE_TIMEOUT_S)
        seen = ray.get(answered)
    finally:
        marker.unlink(missing_ok=True)
    blind = seen.count(False)
    if blind:
        raise ConfigError(KEY, f"{root} is on this machine's disk: {blind} of the Ray cluster's {len(nodes)} nodes do not see it, "
                               "and Ray Train's workers keep their checkpoints there; set ray.storage_path to a folder every node "
                               "mounts (NFS) or to a URI (s3://bucket/path, gs://bucket/path)")
