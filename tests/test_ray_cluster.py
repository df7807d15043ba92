"""The Ray runtime on a simulated cluster: a head and two worker nodes on this machine, 1 CPU each.

`ray.cluster_utils.Cluster` starts real Ray nodes (a raylet and an object store each) at their own
loopback addresses (127.0.0.1, .2, .3), so Ray, Ray Train and Tune see three machines. One cluster
serves the module; a test that removes a node adds a fresh one back before it ends. Run inside
`scripts/private_net.sh` like every Ray test; `ray stop` is never called.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402

ray_tests = pytest.mark.ray  # the tests that start Ray nodes; the storage URI test does not
_next_ip = iter(range(4, 250))  # a node added later gets an address no node had


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False})
    try:
        for n in (2, 3):
            c.add_node(num_cpus=1, node_ip_address=f"127.0.0.{n}")
        ray.init(address=c.address, log_to_driver=False)
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


# ---------------------------------------------------------------- storage every node sees
def _node_blind_to(cluster, hidden: Path):
    """A worker node in its own mount namespace, an empty tmpfs over `hidden`: a machine that does not mount it."""
    if os.geteuid() != 0 or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs root and unshare -m (scripts/private_net.sh as root, as make test runs it)")
    ray_start = [str(Path(sys.executable).parent / "ray"), "start", f"--address={cluster.address}", "--num-cpus=1",
                 f"--node-ip-address=127.0.0.{next(_next_ip)}", "--block"]
    script = f'mount -t tmpfs none "{hidden}" && exec "$@"'
    return subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "_", *ray_start],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


@ray_tests
def test_storage_the_other_nodes_do_not_see_stops_the_run_before_any_work(cluster, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    before = len([n for n in ray.nodes() if n["Alive"]])
    node = _node_blind_to(cluster, out)
    try:
        t0 = time.time()
        while len([n for n in ray.nodes() if n["Alive"]]) <= before:
            assert node.poll() is None and time.time() - t0 < 120, "the node in its own mount namespace did not join"
            time.sleep(0.5)
        res = subprocess.run([sys.executable, "-m", "taxoclass.cli", "run", "--preset", "debug", "runtime=ray",
                              f"ray.address={cluster.address}", f"output_dir={out}", "run_name=r"],
                             capture_output=True, text=True, cwd=REPO, timeout=600)
        # the same run with its checkpoints on storage every node sees (a URI here) passes the check
        shared = f"file://{tmp_path}/shared"
        from taxoclass.distributed.storage import check_shared

        check_shared(shared)
    finally:
        node.terminate()  # `ray start --block` ends its node's processes on SIGTERM
        node.wait(timeout=60)
    assert res.returncode == 2, res.stderr[-3000:]
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith(f"taxoclass: error: config key 'ray.storage_path': {out / 'r' / 'ray'} is on this machine's disk: "
                           f"1 of the Ray cluster's {before + 1} nodes do not see it"), line
    assert "Traceback" not in res.stderr
    assert not list((out / "r" / "cache").glob("stage1-*"))  # no stage ran


def test_storage_path_takes_a_uri_as_ray_train_does(tmp_path):
    from taxoclass.distributed.storage import local_path, remove_tree, storage_location
    from taxoclass.errors import ConfigError

    assert storage_location("s3://bucket/taxoclass/ray/", tmp_path) == "s3://bucket/taxoclass/ray"  # before: s3:/bucket/...
    assert storage_location("gs://bucket/x", tmp_path) == "gs://bucket/x"
    assert storage_location("", tmp_path / "run") == str((tmp_path / "run" / "ray").resolve())
    assert storage_location("rel/ray", tmp_path) == str(Path("rel/ray").resolve())
    # what the cluster check probes on the nodes (a disk), and what it leaves alone (a cloud filesystem)
    assert [local_path(s) for s in ("/a/b", "file:///a/b", "file://host/a/b", "s3://b/x", "gs://b")] == ["/a/b"] * 3 + [None] * 2
    (tmp_path / "st" / "stage3-k" / "checkpoint_0").mkdir(parents=True)
    remove_tree(f"file://{tmp_path}/st", "stage3-k")
    remove_tree(f"file://{tmp_path}/st", "stage3-k")  # gone already: nothing to do
    remove_tree(str(tmp_path / "nowhere"), "stage3-k")
    assert (tmp_path / "st").is_dir() and not (tmp_path / "st" / "stage3-k").exists()
    with pytest.raises(ConfigError, match="^config key 'ray.storage_path': 'nosuch://x' is neither a path nor a URI"):
        remove_tree("nosuch://x", "stage3-k")
    shutil.rmtree(tmp_path / "st")
