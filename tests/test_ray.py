"""Ray runtime: one real local Ray instance per test session, 2 CPU Train workers, loopback only.

Run inside a private network namespace (`make test` does, as root) or with Ray bound to
127.0.0.1 (this fixture does both). `ray stop` is never called: only `ray.shutdown()`.
"""

import copy
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO, run_cli

ray = pytest.importorskip("ray")

from taxoclass.config import build_config  # noqa: E402
from taxoclass.distributed.ray_data import load_shards, score_with_ray_data, shard_path  # noqa: E402
from taxoclass.distributed.ray_runtime import RayRuntime  # noqa: E402
from taxoclass.pipeline import RunContext, run_pipeline, steps  # noqa: E402
from taxoclass.pipeline.inputs import prepare_inputs  # noqa: E402
from taxoclass.pipeline.store import StageStore, stage_keys  # noqa: E402
from taxoclass.stages.core_mining import mine_core_classes  # noqa: E402
from taxoclass.stages.similarity import class_texts, hypotheses  # noqa: E402

pytestmark = pytest.mark.ray
ENV_VARS = {k: v for k, v in os.environ.items() if k.startswith(("HF_", "WANDB_", "TOKENIZERS"))}


@pytest.fixture(scope="module")
def ray_instance():
    # address="local": a new instance, whatever RAY_ADDRESS or /tmp/ray/ray_current_cluster (another user's) name
    ray.init(address="local", num_cpus=6, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1",
             runtime_env={"env_vars": ENV_VARS})
    yield
    ray.shutdown()


def cfg_for(tmp_path, name, *extra):
    return build_config("debug", overrides=[f"output_dir={tmp_path}", f"run_name={name}", *extra], environ={})


def test_a_ray_address_that_names_no_cluster_is_one_line(tmp_path, ray_tmp):
    """First in this module: before its tests start the Ray instance that `auto` would find and join."""
    common = ["run", "--preset", "debug", "runtime=ray", f"output_dir={tmp_path}", "run_name=x"]
    res = run_cli(*common, "ray.address=local")  # not Ray's word for a new instance here: empty is
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        "taxoclass: error: config key 'ray.address': expected 'auto', HOST:PORT or ray://HOST:PORT (empty: a local instance), "
        "got 'local'"]
    # in a PID namespace of its own (as root), where no other test's Ray instance can be seen: with none, the suite's
    # other Ray instances (pytest -n) would be what ray.address=auto finds
    alone = ["unshare", "-p", "-f", "--mount-proc"]
    if subprocess.run([*alone, "true"], capture_output=True).returncode != 0:
        import psutil

        alone = []
        if any(p.info["name"] == "gcs_server" for p in psutil.process_iter(["name"])):
            pytest.skip("a Ray instance runs where this test can see it: ray.address=auto would join it")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    res = subprocess.run([*alone, sys.executable, "-m", "taxoclass.cli", *common, "ray.address=auto"], capture_output=True,
                         text=True, cwd=REPO, timeout=300, env={**env, "RAY_TMPDIR": str(ray_tmp)})  # no `ray start` to find
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and "Traceback" not in res.stderr and lines[-1].startswith(
        "taxoclass: error: config key 'ray.address': cannot join a Ray cluster at auto: Could not find any running Ray "
        "instance"), res.stderr


def test_stage1_and_2_match_the_local_runtime(ray_instance, tmp_path):
    local = RunContext.open(cfg_for(tmp_path, "local"))
    arrays_local = steps.similarity(local, force=True)
    sim_local, test_local = arrays_local["corpus"], arrays_local["test"]
    local.close()
    cfg = cfg_for(tmp_path, "ray", "runtime=ray", "ray.shard_size=16", "ray.stage1_actors=2", "ray.stage1_batch_size=8")
    remote = RunContext.open(cfg, runtime=RayRuntime(cfg))
    # a shard left by an earlier run: a forced stage 1 deletes it and scores every shard (resumed, it would read it)
    stale = remote.view.store.folder / f"{remote.view.store.name(1)}-shards" / "corpus" / "shard-00000.parquet"
    stale.parent.mkdir(parents=True)
    stale.write_text("old")
    arrays_ray = steps.similarity(remote, force=True)
    sim_ray, test_ray = arrays_ray["corpus"], arrays_ray["test"]
    assert remote.log.stats["stage1/shards_scored"] == 4 and remote.log.stats["stage1/actors"] == 2
    # issue 29: the actors' own copies of the hypotheses are not counted, so both runtimes give the run's figure
    assert remote.log.stats["stage1/encoder_passes"] == local.log.stats["stage1/encoder_passes"] == 60 + 60 + 41
    remote.close()
    np.testing.assert_allclose(sim_ray, sim_local, atol=1e-5)
    np.testing.assert_allclose(test_ray, test_local, atol=1e-5)
    # refined prototypes: the actors returned document embeddings, the driver refined and scored
    # the vectors are stored as float16: a component the actors' other batch sizes move by 1e-7 can round to the
    # neighbouring half-precision value, and a prototype averages such components
    np.testing.assert_allclose(arrays_ray["prototypes"], arrays_local["prototypes"], atol=1e-4)
    np.testing.assert_allclose(arrays_ray["names_test"], arrays_local["names_test"], atol=1e-5)
    a = mine_core_classes(sim_local, local.inputs.taxonomy, local.cfg.mining)
    b = mine_core_classes(sim_ray, local.inputs.taxonomy, local.cfg.mining)
    assert a.cores == b.cores and a.candidates == b.candidates


def test_stage1_scores_only_missing_shards(ray_instance, tmp_path):
    cfg = cfg_for(tmp_path, "shards", "ray.shard_size=16", "ray.stage1_actors=1")
    run = RunContext.open(cfg)
    texts, tax = run.inputs.corpus.texts, run.inputs.taxonomy
    hyps = hypotheses(cfg.similarity.template, class_texts(tax, "name", None))
    folder = tmp_path / "shards"
    first, width = score_with_ray_data(cfg, tax, texts, hyps, folder, progress=False)
    assert width == len(tax)  # scores; with embed=True the rows are document embeddings
    full = load_shards(folder, len(texts), len(tax))
    shard_path(folder, 1).unlink()
    shard_path(folder, 3).unlink()
    again, _ = score_with_ray_data(cfg, tax, texts, hyps, folder, progress=False)
    assert first["stage1/shards_scored"] == 4
    assert again["stage1/shards_scored"] == 2 and again["stage1/shards_reused"] == 2
    np.testing.assert_allclose(load_shards(folder, len(texts), len(tax)), full, atol=1e-6)
    run.close()


def test_one_and_two_train_workers_agree(ray_instance, tmp_path):
    from wandb_reader import find_runs, read_run

    from taxoclass.tracking import make_tracker

    results = {}
    cache = f"cache_dir={tmp_path / 'cache'}"  # one stage 1 and 2 for both: the worker count keys stages 3 and 4 only
    for workers in (1, 2):
        cfg = cfg_for(tmp_path, f"w{workers}", "runtime=ray", f"ray.num_workers={workers}", "classifier.epochs=2",
                      "tracking.use_wandb=true", "tracking.mode=offline", cache)
        tracker = make_tracker(cfg)
        try:
            results[workers] = run_pipeline(cfg, sink=tracker, runtime=RayRuntime(cfg))
        finally:
            tracker.close()
    one, two = results[1], results[2]
    # Two workers see the same documents per epoch in twice-as-large global batches with half as many
    # steps: the losses and scores move, but not far. Measured (debug, 2 epochs; seeds 42 and 7):
    # validation loss 4.94 vs 5.62 and 6.94 vs 7.38 (at most +14 %), Example-F1 .699 vs .726 and
    # .621 vs .721 (at most 0.10 apart). Tolerances with headroom: 30 % and 0.15.
    assert two["stage3/best_val_loss"] == pytest.approx(one["stage3/best_val_loss"], rel=0.3)
    assert abs(two["test/example_f1"] - one["test/example_f1"]) <= 0.15
    assert two["stage3/train_samples"] == one["stage3/train_samples"]
    # wandb from rank 0 only: one run, with the workers' step logs replayed into it
    runs = find_runs(tmp_path / "w2")
    assert len(runs) == 1
    history = read_run(runs[0]).history
    assert any("stage3/epoch_val_loss" in row for row in history)
    assert any("stage4/iteration" in row for row in history)
    # issue 11: force_stage=3 on runtime=ray trains stage 3 again; before, Ray Train restored the final
    # checkpoint of the run of the same name (the cache key) in the same storage, and nothing was trained
    # (and a stale checkpoint record is deleted first: both epochs train, none is restored)
    forced_args = ["runtime=ray", "ray.num_workers=1", "classifier.epochs=2", "force_stage=3", "self_training.enabled=false",
                   cache]
    cfg = cfg_for(tmp_path, "w1", *forced_args)
    # the latest-checkpoint record an interrupted run of this stage would have left: a forced stage deletes it first
    store = StageStore(tmp_path / "cache", stage_keys(cfg, prepare_inputs(cfg), RayRuntime(cfg).training_setup()))
    assert store.output(3).is_file()  # the one-worker run's stage 3, which this run trains again
    stage3 = store.name(3)
    (tmp_path / "w1" / "ray" / stage3).mkdir(parents=True, exist_ok=True)
    (tmp_path / "w1" / "ray" / stage3 / "checkpoint_manager_snapshot.json").write_text("{}")
    # from the command line, on a Ray instance of its own: in this module's in-process instance, Ray Train's
    # placement-group cleaner (a detached actor polling the State API) took a live controller for dead in 5 of 22 Train
    # runs over five runs of this module (once on the instance's first), and removed its workers' placement group; Ray
    # Train then retried from the run's own first checkpoint: a `stage3/resumed_from_epoch` this check would take for
    # the issue-11 restore (the CLI tests' own instances: no such retry in 45 Train runs)
    res = run_cli("run", "--preset", "debug", *forced_args, f"output_dir={tmp_path}", "run_name=w1")
    assert res.returncode == 0, res.stderr[-3000:]
    forced = json.loads((tmp_path / "w1" / "summary.json").read_text())
    lines = (tmp_path / "w1" / "metrics.jsonl").read_text().splitlines()
    last_attempt = [json.loads(x) for x in lines[max(i for i, x in enumerate(lines) if x.startswith('{"attempt"')) + 1:]]
    assert sum("stage3/epoch_val_loss" in r for r in last_attempt) == 2 and "stage3/resumed_from_epoch" not in forced
    stale = tmp_path / "w1" / "ray" / stage3 / "checkpoint_manager_snapshot.json"
    assert not stale.exists() or stale.read_text() != "{}"  # the command line's run took this stage-3 folder as its own
    # issue 12: once the stage's output is cached, its Train checkpoints are deleted
    assert not list((tmp_path / "w1" / "ray").glob("stage3-*/checkpoint_*"))


def _spawn(args, cwd):
    return subprocess.Popen([sys.executable, "-m", "taxoclass.cli", *map(str, args)], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _kill_tree(proc):
    import psutil

    try:
        parent = psutil.Process(proc.pid)
        victims = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        return
    _end(victims)


def _kill_driver(proc) -> list:
    """kill -9 of the driver alone, as a user's `kill -9 PID` does; returns the processes it had started that are still
    there (its Ray instance's workers, actors and agents), for the test to end by pid once it is done."""
    import psutil

    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]


def _end(leftovers) -> None:
    """kill -9 of these processes, by pid; those already gone are skipped."""
    import psutil

    for p in leftovers:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(leftovers, timeout=30)


def _wait_for(predicate, proc, timeout=300):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if predicate():
            return True
        if proc.poll() is not None:
            pytest.fail(f"the run ended before the kill point: {proc.stderr.read()[-2000:]}")
        time.sleep(0.2)
    return False


def test_kill_9_resumes_stage1_shards_and_stage3_checkpoints(tmp_path):
    args = ["run", "--preset", "debug", "runtime=ray", "ray.num_cpus=4", "ray.shard_size=8", "ray.stage1_batch_size=4",
            "classifier.epochs=4", "classifier.early_stopping_patience=10", "self_training.enabled=false",
            f"output_dir={tmp_path}", "run_name=killed"]
    run_dir = tmp_path / "killed"
    # 1) kill -9 of the driver while stage 1 is writing shards. The processes of its Ray instance stay a while (issue
    # 29: over 90 s): the next run must not mind them
    proc = _spawn(args, REPO)
    assert _wait_for(lambda: len(list(run_dir.glob("cache/*-shards/corpus/shard-*.parquet"))) >= 2, proc)
    leftovers = _kill_driver(proc)
    done_before = len(list(run_dir.glob("cache/*-shards/corpus/shard-*.parquet")))
    assert done_before < 8  # killed part-way: 60 documents are 8 shards
    try:
        assert leftovers, "nothing of the killed run's Ray instance was left: the reruns would prove nothing about it"
        # 2) run again beside them, and kill -9 its driver once stage 3 has checkpointed an epoch
        proc = _spawn(args, REPO)
        # the snapshot is what a restarted Ray Train run restores its latest checkpoint from
        assert _wait_for(lambda: any(run_dir.glob("ray/stage3-*/checkpoint_manager_snapshot.json")), proc)
        leftovers += _kill_driver(proc)
        # 3) the third run finishes, reusing the shards and resuming stage 3 from its checkpoint
        proc = _spawn(args, REPO)
        assert proc.wait(timeout=900) == 0, proc.stderr.read()[-3000:]
    finally:
        _kill_tree(proc)
        _end(leftovers)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stage3/resumed_from_epoch"] >= 1
    stage1 = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if "stage1/shards_reused" in line]
    assert stage1 and stage1[-1]["stage1/shards_reused"] == done_before
    # once stage 3's output is cached its Train checkpoints (the model and optimiser state) are deleted
    assert list(run_dir.glob("cache/stage3-*.pt")) and not list(run_dir.glob("ray/stage3-*/checkpoint_*"))


def test_ctrl_c_in_stage_3_says_interrupted_and_exits_130(tmp_path):
    """Issue 35: Ctrl-C in stage 3 of a `runtime=ray` run ended it with exit status 1 and no message: Ray Train's own
    SIGINT handler took the signal. Now it is a run's Ctrl-C, as a local run's: `interrupted`, exit status 130."""
    args = ["run", "--preset", "debug", "runtime=ray", "ray.num_cpus=4", "ray.num_workers=1", "classifier.epochs=200",
            "classifier.early_stopping_patience=300", "self_training.enabled=false", f"output_dir={tmp_path}", "run_name=c"]
    # Ctrl-C's disposition as in a terminal's foreground job (a suite started in the background hands SIGINT ignored)
    proc = subprocess.Popen([sys.executable, "-m", "taxoclass.cli", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert _wait_for(lambda: any((tmp_path / "c").glob("ray/stage3-*/checkpoint_manager_snapshot.json")), proc)
        os.killpg(proc.pid, signal.SIGINT)  # one Ctrl-C, as a terminal sends it: to the whole process group
        code = proc.wait(timeout=120)
    finally:
        _kill_tree(proc)
    stderr = proc.stderr.read()
    assert code == 130 and stderr.strip().splitlines()[-1] == "taxoclass: interrupted", stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]


SECRET = "local-0123456789abcdef0123456789abcdef01234567"  # a fake W&B API key


@pytest.fixture
def ray_tmp():
    """A private folder for Ray's session files (RAY_TMPDIR), short enough for Ray's socket paths (107 bytes)."""
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    yield Path(folder)
    shutil.rmtree(folder, ignore_errors=True)


def listening() -> set[tuple[str, str, int]]:
    """(local address, process, pid) of every listening TCP socket (`ss -ltnp`; in `make test`'s namespace, only the
    tests')."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout
    found = set()
    for line in out.splitlines():
        fields = line.split()
        address = fields[3].rsplit(":", 1)[0].strip("[]")
        users = fields[5] if len(fields) > 5 else ""
        for name, pid in re.findall(r'"([^"]*)",pid=(\d+)', users) or [("?", 0)]:
            found.add((address, name, int(pid)))
    return found


def descendants(pid: int) -> set[int]:
    """`pid` and every process below it (a run's Ray instance: its GCS, raylet, workers and agents)."""
    import psutil

    try:
        return {pid} | {p.pid for p in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def holding(secret: str, *folders: Path) -> list[Path]:
    return [p for folder in folders for p in folder.rglob("*") if p.is_file() and not p.is_symlink()
            and secret.encode() in p.read_bytes()]


def test_a_ray_run_listens_on_loopback_only_and_writes_no_secret(tmp_path, ray_tmp):
    """Issue 29: during stages 3 and 4 a Ray Train worker listened on every interface (`*:PORT`, torch's rendezvous
    store), and the W&B API key was in Ray's session folder (`logs/runtime_env_agent.log`): every WANDB_* variable
    went into the runtime_env, which Ray writes down."""
    import shutil

    if not shutil.which("ss"):
        pytest.skip("no `ss` (iproute2) to list the listening sockets")
    env = {**os.environ, "WANDB_API_KEY": SECRET, "USE_WANDB": "1", "WANDB_MODE": "offline", "RAY_TMPDIR": str(ray_tmp)}
    args = ["run", "--preset", "debug", "runtime=ray", "ray.num_cpus=4", f"output_dir={tmp_path}", "run_name=r"]
    proc = subprocess.Popen([sys.executable, "-m", "taxoclass.cli", *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    seen: set[tuple[str, str]] = set()
    try:
        while proc.poll() is None:
            # this run's sockets only: under pytest -n another test's Ray nodes may listen beside it (on 127.0.0.2...)
            ours = descendants(proc.pid)
            seen |= {(address, name) for address, name, pid in listening() if pid in ours}
            time.sleep(0.5)
    finally:
        _kill_tree(proc)
    assert proc.returncode == 0, proc.stderr.read()[-3000:]
    assert any(name.startswith("ray::RayTrain") for _, name in seen), seen  # sampled while stages 3-4 ran (ss shows 15 characters)
    loopback = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
    assert {(a, name) for a, name in seen if a not in loopback} == set()
    assert list(ray_tmp.glob("ray/session_*/logs/runtime_env_agent.log"))  # where the key was; and a wandb run to look in
    assert list((tmp_path / "r").rglob("run-*.wandb"))
    assert holding(SECRET, tmp_path, ray_tmp) == []


@pytest.mark.parametrize("address, env, where", [
    ("127.0.0.1:1", {}, "a Ray cluster at 127.0.0.1:1 cannot be reached"),
    ("auto", {"RAY_ADDRESS": "127.0.0.1:1"}, "ray.address=auto joins RAY_ADDRESS=127.0.0.1:1, which cannot be reached"),
])
def test_a_ray_address_that_cannot_be_reached_is_one_line_at_once(tmp_path, address, env, where):
    """Issue 29: `RAY_ADDRESS=127.0.0.1:1 taxoclass run --preset debug runtime=ray` retried "Failed to connect to GCS"
    for 171 s with no error until it was killed. Refused now before any work, run and search alike."""
    how = "(Connection refused); start it (ray start --head) or fix the address; an empty ray.address starts a local instance"
    for command, prog in ((["run", "--preset", "debug"], "taxoclass"), (["search", "--smoke"], "taxoclass search")):
        res = subprocess.run([sys.executable, "-m", "taxoclass.cli", *command, "runtime=ray", f"ray.address={address}",
                              f"output_dir={tmp_path}", "run_name=x"], capture_output=True, text=True, cwd=REPO, timeout=120,
                             env={**os.environ, **env})
        assert res.returncode == 2 and res.stderr.strip().splitlines() == [
            f"{prog}: error: config key 'ray.address': {where} {how}"], res.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written: no run dir, no search folder


def test_a_real_gcs_answers_the_address_check(ray_instance):
    """Issue 35's check asks the GCS one question only Ray answers: a real one passes it (an HTTP server, a silent
    port: test_preflight.py)."""
    from taxoclass.distributed.ray_address import check_reachable, not_ray

    gcs = ray.get_runtime_context().gcs_address
    assert not_ray(gcs, client=False, timeout=10) is None
    check_reachable(gcs)


def test_the_env_handed_to_ray_holds_no_secret(monkeypatch):
    from taxoclass.distributed.ray_instance import worker_env

    for name, value in {"WANDB_API_KEY": SECRET, "HF_TOKEN": "hf_x", "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}.items():
        monkeypatch.setenv(name, value)
    env = worker_env()
    assert env["WANDB_MODE"] == "offline" and env["HF_HUB_OFFLINE"] == "1"
    assert "WANDB_API_KEY" not in env and "HF_TOKEN" not in env


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-aws.yaml"])
def test_cluster_configs_pass_rays_validation(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / name).read_text())
    validate_config(prepare_config(copy.deepcopy(config)))  # what `ray up` checks, starting nothing
    text = (REPO / name).read_text()
    assert "RAY_AUTH_MODE=token" in text and "~/.ray/auth_token" in text
    broken = copy.deepcopy(config)
    broken["provider"]["no_such_field"] = 1
    broken["not_a_key"] = 1
    import jsonschema

    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))
