"""Where Ray Train keeps a run's checkpoints: a path or a URI, and on a cluster storage every node sees.

Features:
- `storage_location`: `ray.storage_path` as Ray Train takes it: a URI as written (`s3://`, `gs://`,
  `file://`, any scheme pyarrow's filesystems know), a path made absolute, and when empty the run's
  `<run_dir>/ray`;
- `remove_tree`: a stage's checkpoints deleted through the same pyarrow filesystem Ray Train wrote
  them with (a forced stage, a cached one);
- `check_shared`: on a cluster of more than one node, storage on a local disk must be visible from
  every node (Ray Train's workers write there and a restarted run reads there): the driver writes a
  marker and a task pinned to each node looks for it, before any work; a node that does not see it is
  a one-line ConfigError naming `ray.storage_path`. Remote filesystems (`s3://`, `gs://`, ...) are
  shared by nature and not probed. The stage cache, the run dir and stage 1's shards stay on the
  driver: only the driver reads and writes them.
"""

from __future__ import annotations

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
        raise ConfigError(KEY, f"{storage!r} is neither a path nor a URI pyarrow can open ({err})") from None


def remove_tree(storage: str, name: str) -> None:
    """`<storage>/<name>` and everything under it, if it is there."""
    fs, root = filesystem(storage)
    try:
        fs.delete_dir(f"{root.rstrip('/')}/{name}")
    except FileNotFoundError:
        pass


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
