"""The Ray runtime on a simulated cluster: a head and two worker nodes on this machine, 1 CPU each.

`ray.cluster_utils.Cluster` starts real Ray nodes (a raylet and an object store each) at their own
loopback addresses (127.0.0.1, .2, .3), so Ray, Ray Train and Tune see three machines. One cluster
serves the module; a test that removes a node adds a fresh one back before it ends. Run inside
`scripts/private_net.sh` like every Ray test; `ray stop` is never called.
"""

import csv
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from test_search import placement_trainable

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402

from taxoclass.config import build_config, with_values  # noqa: E402
from taxoclass.distributed import ray_data  # noqa: E402
from taxoclass.distributed.ray_data import load_shards, score_with_ray_data  # noqa: E402
from taxoclass.distributed.ray_runtime import RayRuntime  # noqa: E402
from taxoclass.pipeline import RunContext, run_pipeline, steps  # noqa: E402
from taxoclass.pipeline.vectors import EncoderSpec  # noqa: E402
from taxoclass.stages.similarity import VECTOR_DTYPE, class_hypotheses  # noqa: E402

ray_tests = pytest.mark.ray  # the tests that start Ray nodes; the storage URI test does not
# stage 3 long enough for a node to be removed between its first checkpoint and its end
STAGE3 = ["classifier.epochs=5", "classifier.early_stopping_patience=5", "self_training.enabled=false"]
_next_ip = iter(range(4, 250))  # a node added back gets an address no node had


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False})
    try:
        for n in (2, 3):
            c.add_node(num_cpus=1, node_ip_address=f"127.0.0.{n}")
        # Tune's workers import the placement trial from the tests folder
        path = os.pathsep.join([str(REPO / "tests"), str(REPO), os.environ.get("PYTHONPATH", "")])
        ray.init(address=c.address, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def add_worker(cluster):
    return cluster.add_node(num_cpus=1, node_ip_address=f"127.0.0.{next(_next_ip)}")


def cfg_for(root, name, cluster, *extra):
    return build_config("debug", overrides=[f"output_dir={root}", f"run_name={name}", "runtime=ray", f"ray.address={cluster.address}",
                                            *extra], environ={})


def stored_vectors(run) -> np.ndarray:
    """Stage 1's document vectors as the cache keeps them (nothing is embedded here)."""
    def missing():
        raise AssertionError("stage 1 kept no document vectors")

    return np.asarray(run.view.vectors.get(EncoderSpec.of_similarity(run.cfg), run.inputs.corpus.texts, missing), np.float32)


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """The local runtime's stage 1 (vectors, scores) and stage 3 on the same settings: what the cluster must give."""
    root = tmp_path_factory.mktemp("local")
    cfg = build_config("debug", overrides=[f"output_dir={root}", "run_name=local", *STAGE3], environ={})
    summary = run_pipeline(cfg)
    with RunContext.open(cfg) as run:
        arrays = steps.similarity(run)
        vectors = stored_vectors(run)
    return {"summary": summary, "vectors": vectors, "corpus": arrays["corpus"], "test": arrays["test"], "cache": root / "local" / "cache"}


def assert_same_vectors(got, want):
    # float16 in the cache: a component that other batch shapes move by 1e-7 can round to the neighbouring value
    np.testing.assert_allclose(got, want, atol=1e-3)
    cosines = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cosines.min() > 0.9999


def worker_nodes_of(cluster, node_ids):
    """The cluster's worker nodes (never the head, which the driver is connected to) among `node_ids`."""
    return [n for n in cluster.worker_nodes if n.node_id in node_ids]


@pytest.fixture
def whole_pool(monkeypatch):
    """Ray Data dispatches once all the pool's actors are up: with one still loading its model, the first would
    take every batch of these few documents."""
    monkeypatch.setattr(ray.data.DataContext.get_current(), "wait_for_min_actors_s", 600)


@ray_tests
def test_stage1_actors_on_two_nodes_give_the_local_vectors_and_scores(cluster, local, whole_pool, tmp_path):
    cfg = cfg_for(tmp_path, "ray", cluster, "ray.stage1_actors=2", "ray.shard_size=16", "ray.stage1_batch_size=8")
    with RunContext.open(cfg, runtime=RayRuntime(cfg)) as run:
        arrays = steps.similarity(run)
        stats, vectors = dict(run.log.stats), stored_vectors(run)
    assert stats["stage1/actors"] == 2 and stats["stage1/actor_nodes"] == 2  # each node has one CPU: one actor each
    assert_same_vectors(vectors, local["vectors"])
    np.testing.assert_allclose(arrays["corpus"], local["corpus"], atol=1e-3)
    np.testing.assert_allclose(arrays["test"], local["test"], atol=1e-3)


@pytest.fixture(scope="module")
def two_nodes(cluster, local, tmp_path_factory):
    """Stage 3 with 2 Train workers, one per node, its checkpoints under a file:// URI; stages 1-2 from the local cache."""
    root = tmp_path_factory.mktemp("two-nodes")
    storage = f"file://{root}/shared-ray"
    cfg = cfg_for(root, "w2", cluster, "ray.num_workers=2", f"ray.storage_path={storage}", f"cache_dir={local['cache']}", *STAGE3)
    return run_pipeline(cfg, runtime=RayRuntime(cfg)), root / "shared-ray"


@ray_tests
def test_stage3_with_train_workers_on_two_nodes_matches_one_node(two_nodes, local):
    summary, storage = two_nodes
    one = local["summary"]
    assert summary["stage3/worker_nodes"] == 2
    assert summary["stage3/train_samples"] == one["stage3/train_samples"]
    # the tolerances of test_ray's 1-against-2-workers test: twice-as-large global batches move the numbers a little
    assert summary["stage3/best_val_loss"] == pytest.approx(one["stage3/best_val_loss"], rel=0.3)
    assert abs(summary["test/example_f1"] - one["test/example_f1"]) <= 0.15
    # the checkpoints went to the URI's folder, and were deleted through it once stage 3 was cached
    assert storage.is_dir() and not list(storage.glob("stage3-*/checkpoint_*"))


@ray_tests
def test_a_node_lost_mid_stage1_still_gives_the_local_vectors(cluster, local, whole_pool, tmp_path, monkeypatch):
    """The driver writes its first shard; meanwhile a worker node holding a scorer actor is removed. Ray Data
    restarts the actor on a free CPU and retries its batches, or the run fails and a rerun scores only the
    shards that are missing; either way the corpus gets the local runtime's vectors."""
    removed = {}
    write = ray_data.write_shard

    def write_then_remove_a_node(path, ids, sims):
        write(path, ids, sims)
        if not removed:
            actors = cluster.global_state.actor_table(None, actor_state_name="ALIVE").values()
            nodes = {a["Address"]["NodeID"] for a in actors if "SimilarityActor" in a["ActorClassName"]}
            victims = worker_nodes_of(cluster, nodes)
            assert victims, nodes  # two actors on three nodes of one CPU each: at least one is on a worker node
            removed["shards"] = len(list(path.parent.glob("shard-*.parquet")))
            cluster.remove_node(victims[0])  # its actor and the batches it held are gone
            removed["node"] = victims[0].node_id

    monkeypatch.setattr(ray_data, "write_shard", write_then_remove_a_node)
    cfg = cfg_for(tmp_path, "lost", cluster, "ray.stage1_actors=2", "ray.shard_size=4", "ray.stage1_batch_size=2")
    with RunContext.open(cfg) as run:  # the corpus and class hypotheses as stage 1 sees them
        texts = run.inputs.corpus.texts
        taxonomy, hyps = run.inputs.taxonomy, class_hypotheses(cfg.similarity, run.inputs.taxonomy, run.inputs.keywords)
    folder, attempts = tmp_path / "shards", []
    try:
        for _ in range(2):
            try:
                attempts.append(score_with_ray_data(cfg, taxonomy, texts, hyps, folder, progress=False, embed=True)[0])
                break
            except Exception as err:  # the loss surfaced as an error: the rerun below must finish the stage
                attempts.append(err)
    finally:
        add_worker(cluster)  # the next tests get three nodes again
    assert removed, attempts
    assert removed["shards"] == 1 and removed["node"] not in {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert isinstance(attempts[-1], dict), attempts
    if len(attempts) == 2:  # the rerun scored only what the first attempt had not written
        assert attempts[1]["stage1/shards_reused"] >= 1 and attempts[1]["stage1/shards_scored"] < 15
    vectors = load_shards(folder, len(texts), local["vectors"].shape[1]).astype(VECTOR_DTYPE).astype(np.float32)
    assert_same_vectors(vectors, local["vectors"])


def _remove_a_train_node_after_the_first_checkpoint(cluster, storage: Path, done: dict):
    t0 = time.time()
    while time.time() - t0 < 600 and not done.get("ended"):
        # the controller has registered a checkpoint (a checkpoint folder alone may not be known to it yet)
        if list(storage.glob("stage3-*/checkpoint_manager_snapshot.json")):
            groups = [g for g in ray.util.placement_group_table().values() if g["state"] == "CREATED"]
            nodes = {n for g in groups for n in g["bundles_to_node_id"].values()}
            victims = worker_nodes_of(cluster, nodes)
            if victims:
                cluster.remove_node(victims[0])
                done["removed"] = victims[0].node_id
                return
        time.sleep(0.05)


@ray_tests
def test_a_node_lost_mid_stage3_resumes_from_the_last_checkpoint(cluster, local, two_nodes, tmp_path):
    # force_stage=3: the cache holds the uninterrupted run's stage 3 (same key), which must not be reused
    cfg = cfg_for(tmp_path, "lost3", cluster, "ray.num_workers=2", f"cache_dir={local['cache']}", "force_stage=3", *STAGE3)
    done: dict = {}
    watcher = threading.Thread(target=_remove_a_train_node_after_the_first_checkpoint, args=(cluster, tmp_path / "lost3" / "ray", done))
    watcher.start()
    try:
        summary = run_pipeline(cfg, runtime=RayRuntime(cfg))
    finally:
        done["ended"] = True
        watcher.join()
        add_worker(cluster)
    assert "removed" in done  # a node holding a Train worker went while stage 3 ran
    assert summary["stage3/resumed_from_epoch"] >= 1  # Ray Train restarted the group, which restored the checkpoint
    assert summary["stage3/worker_nodes"] == 2
    # model, optimizer and data order come back from the checkpoint; dropout draws after the restart do not
    # (the tolerance of test_search's kill -9 resume)
    want = two_nodes[0]
    assert summary["stage3/best_val_loss"] == pytest.approx(want["stage3/best_val_loss"], rel=0.1)
    assert abs(summary["test/example_f1"] - want["test/example_f1"]) <= 0.1


@ray_tests
def test_search_trials_land_on_different_nodes(cluster, tmp_path):
    # a one-worker trial trains in its own process, which holds ray.cpus_per_worker CPUs: with 1, each node (1 CPU) fits
    # one trial, so two trials at once run on two nodes; a grid of two one-epoch trials keeps it short
    space = tmp_path / "grid.yaml"
    space.write_text("method: grid\nparameters:\n  classifier.head_learning_rate:\n    values: [0.004, 0.008]\n")
    res = subprocess.run([sys.executable, "-m", "taxoclass.cli", "search", "--smoke", "--space", space, "--num-samples", "2",
                          "--no-asha", "--name", "spread", f"output_dir={tmp_path}", f"ray.address={cluster.address}",
                          "ray.num_workers=1", "ray.cpus_per_worker=1", "max_docs=40", "self_training.enabled=false"],
                         capture_output=True, text=True, cwd=REPO, timeout=600, env={**os.environ, "WANDB_MODE": "offline"})
    assert res.returncode == 0, res.stderr[-3000:]
    # trials.csv's node column: Tune's record of the address of the node each trial ran on
    with open(tmp_path / "spread" / "trials.csv") as fh:
        trials = {r["trial"]: r["node"] for r in csv.DictReader(fh)}
    assert len(trials) == 2 and len(set(trials.values())) == 2, trials


@ray_tests
def test_a_quarter_gpu_per_trial_packs_four_trials_on_a_stand_in_gpu(cluster, tmp_path):
    """A node whose one GPU is Ray's logical resource only (no CUDA here): the search's plan for --gpus-per-trial
    0.25 runs four trials at once, each in its own process on that GPU, a quarter each."""
    from ray import tune

    from taxoclass.search.resources import plan_trials

    gpu_node = cluster.add_node(num_cpus=1, num_gpus=1, node_ip_address=f"127.0.0.{next(_next_ip)}")
    try:
        plan = plan_trials(0.25, 0, ray.cluster_resources())  # trials of no CPU: four fit the stand-in GPU
        assert (plan.in_process, plan.gpus_per_worker, plan.concurrent) == (True, 0.25, 4)
        cfg = with_values(build_config("debug", environ={}), plan.settings())
        folder = tmp_path / "notes"
        folder.mkdir()
        tuner = tune.Tuner(placement_trainable(plan, cfg, folder, 4, tmp_path / "ray"),
                           tune_config=tune.TuneConfig(num_samples=4, max_concurrent_trials=plan.concurrent),
                           run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), verbose=0))
        assert not tuner.fit().errors
    finally:
        cluster.remove_node(gpu_node)
    assert [p.read_text() for p in folder.glob("*.together")] == ["True"] * 4  # the four trials ran at the same time
    notes = [json.loads(p.read_text()) for p in folder.glob("*.json")]
    assert len(notes) == 4 and {n["node"] for n in notes} == {gpu_node.node_id}
    assert {n["gpu"] for n in notes} == {0.25} and len({tuple(n["ids"]) for n in notes}) == 1  # one GPU, a quarter each


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
            if node.poll() is not None:  # `ray start` in the namespace exited (seen once on a machine at load 10)
                pytest.skip(f"the node in its own mount namespace could not start (exit {node.returncode})")
            assert time.time() - t0 < 120, "the node in its own mount namespace did not join"
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
