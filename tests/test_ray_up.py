"""`ray up cluster.yaml` for real: three hosts on this machine (tests/local_cluster.py), jobs submitted
as docs/ray.md prints them, `ray down`.

The cluster file is the shipped cluster.yaml with only the addresses, the worker count and the ssh user
and key replaced; each host gets the checkout by file_mounts and runs the setup and start commands over
ssh, and the head's autoscaler starts the workers. The hosts already have the project's venv (the one
running this test): each host's ~/.bashrc sets TAXOCLASS_VENV, the override cluster.yaml documents.

Root only (namespaces); behind the `cluster` marker. Whole module:
    scripts/private_net.sh .venv/bin/python -m pytest -q -m cluster tests/test_ray_up.py -s
The tests run in file order on one cluster; each step's wall time is printed at the end.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from local_cluster import HOSTS, SHARED, Lab, missing_tools

pytestmark = [pytest.mark.cluster, pytest.mark.ray]
RAY = Path(sys.executable).parent / "ray"
HEAD = HOSTS["head"]
DASHBOARD = f"http://{HEAD}:8265"
STOP_WORKERS = "~/taxoclass/scripts/stop_workers.sh"
UP_ENV = {"RAY_UP_enable_autoscaler_v2": "0"}
# three scorer actors in batches of 8 of the 60 documents (one batch of 256 would go to one actor); a stage 3 of
# 5 epochs, long enough for a host to be lost between its first checkpoint and its end; the stage cache shared
DEBUG_JOB = ["taxoclass", "run", "--preset", "debug", "runtime=ray", "ray.address=auto", "ray.num_workers=3", "ray.stage1_actors=3",
             "ray.stage1_batch_size=8", "classifier.epochs=5", "classifier.early_stopping_patience=5", "self_training.enabled=false",
             f"cache_dir={SHARED}/taxoclass/cache"]
# beyond the docs' command: Ray Data dispatching once all three scorer actors are up (with one still loading its
# model, the first would take every batch of 60 documents; test_ray_cluster's whole_pool). Not WANDB_MODE: the run's
# own ray.init passes it in its runtime env, and Ray refuses a job whose runtime env sets the same key (the debug
# preset tracks nothing; the search sets offline itself without an API key)
JOB_ENV = json.dumps({"env_vars": {"RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S": "600"}})
FULL = os.environ.get("TAXOCLASS_CLUSTER_FULL") == "1"
full_only = pytest.mark.skipif(not FULL, reason="the full cluster test: TAXOCLASS_CLUSTER_FULL=1 (docs/ray.md); CI runs up, one job, down")
RAY_PROCESS = re.compile(r"raylet|gcs_server|ray::|default_worker|dashboard|monitor\.py|log_monitor|runtime_env|ray/_private")


def can_run() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network, PID and mount namespaces)"
    missing = missing_tools()
    if missing:
        return f"missing {', '.join(missing)} (apt-get install -y openssh-server rsync iproute2)"
    if subprocess.run(["unshare", "--net", "--mount", "--pid", "--fork", "true"], capture_output=True).returncode != 0:
        return "unshare --net --mount --pid is not allowed here"
    return None


def cluster_yaml(key: str) -> dict:
    """The shipped cluster.yaml with only the lab's addresses, worker count and ssh user and key."""
    cfg = yaml.safe_load((REPO / "cluster.yaml").read_text())
    cfg["provider"]["head_ip"] = HEAD
    cfg["provider"]["worker_ips"] = [HOSTS["worker1"], HOSTS["worker2"]]
    cfg["max_workers"] = 2
    cfg["auth"] = {"ssh_user": "root", "ssh_private_key": key}
    return cfg


class Cluster:
    def __init__(self, lab: Lab, yaml_path: str):
        self.lab, self.yaml, self.times = lab, yaml_path, {}
        self.down = False
        self.summaries = {}

    def ray(self, *args, step: str | None = None, env: dict | None = None, check: bool = True, timeout: float = 600):
        t = time.monotonic()
        r = self.lab.client(RAY, *args, cwd=REPO, env=env, check=check, timeout=timeout)
        if step:
            self.times[step] = round(time.monotonic() - t, 1)
        return r

    def submit_in_background(self, *cmd) -> subprocess.Popen:
        return subprocess.Popen(["nsenter", "-t", str(self.lab.proc.pid), "-n", "-m", f"--wd={REPO}", "--", str(RAY), "job", "submit",
                                 "--address", DASHBOARD, "--working-dir", ".", "--runtime-env-json", JOB_ENV, "--", *cmd],
                                stdout=open(self.lab.root / "background-job.log", "w"), stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "HOME": "/root", "RAY_AUTH_MODE": "token"})

    def take_down(self):
        """docs/ray.md's teardown: the workers' Ray (which `ray down` leaves running), then `ray down`."""
        t = time.monotonic()
        self.ray("exec", self.yaml, STOP_WORKERS)
        out = self.ray("down", "-y", self.yaml, timeout=300)
        self.down = True
        self.times["ray down"] = round(time.monotonic() - t, 1)
        return out

    def status(self) -> str:
        return self.ray("exec", self.yaml, "ray status").stdout

    def nodes(self) -> int:
        """Live nodes in `ray status`: the counts under Active and Idle (autoscaler v2) or Healthy (v1)."""
        text = self.status()
        return sum(int(n) for block in re.findall(r"\n(?:Active|Idle|Healthy):\n((?:[ \t]+\d+ \S+\n)+)", text)
                   for n in re.findall(r"^\s+(\d+) ", block, re.M))


@pytest.fixture(scope="module")
def cluster():
    reason = can_run()
    if reason:
        pytest.skip(reason)
    lab = Lab.create()
    c = None
    try:
        t = time.monotonic()
        lab.start(env_lines=f"export TAXOCLASS_VENV={sys.prefix}\n")
        lab.wait_ssh()
        key = "~/.ssh/id_ed25519"
        (lab.client_home / "cluster.yaml").write_text(yaml.safe_dump(cluster_yaml(key), sort_keys=False))
        c = Cluster(lab, "/root/cluster.yaml")
        c.times["hosts"] = round(time.monotonic() - t, 1)
        c.ray("get-auth-token", "--generate")  # as cluster.yaml's first line says
        c.ray("up", "-y", c.yaml, step="ray up", env=UP_ENV)
        yield c
    finally:
        if c is not None and not c.down:
            c.ray("exec", c.yaml, STOP_WORKERS, check=False)
            c.ray("down", "-y", c.yaml, check=False, timeout=300)
        keep = os.environ.get("TAXOCLASS_KEEP_LAB") == "1"
        lab.stop(keep=keep)
        if c is not None:
            print(f"\ncluster test wall times (s): {c.times}", file=sys.__stderr__)


def test_docs_print_the_commands_this_test_runs():
    """The up and down steps that made three hosts work here are what docs/ray.md and cluster.yaml tell users."""
    for text in ((REPO / "docs" / "ray.md").read_text(), (REPO / "cluster.yaml").read_text()):
        assert "RAY_UP_enable_autoscaler_v2=0 ray up cluster.yaml" in text
        assert f"ray exec cluster.yaml '{STOP_WORKERS}'" in text


def test_ray_up_starts_head_and_both_workers(cluster):
    t = time.monotonic()
    while cluster.nodes() < 3 and time.monotonic() - t < 300:  # the autoscaler starts the workers after `ray up`
        time.sleep(5)
    cluster.times["workers up"] = round(time.monotonic() - t, 1)
    status = cluster.status()
    print(status, file=sys.__stderr__)
    assert cluster.nodes() == 3, status
    for name in ("worker1", "worker2"):  # set up and started over ssh, by the head's autoscaler
        assert cluster.lab.hosts[name].processes(), name
        assert any("raylet" in p for p in cluster.lab.hosts[name].processes()), name


def test_a_job_without_the_token_is_refused(cluster):
    """Token authentication is on: a client without ~/.ray/auth_token cannot submit."""
    (cluster.lab.root / "client" / "tmp" / "no-token").mkdir(exist_ok=True)
    env = {"HOME": "/tmp/no-token", "RAY_AUTH_MODE": "token"}
    r = cluster.ray("job", "submit", "--address", DASHBOARD, "--", "echo", "ran", env=env, check=False, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "ran\n" not in r.stdout, out[-3000:]
    assert re.search(r"(?i)token|auth|401|unauthori", out), out[-3000:]


def submit(cluster, *cmd, step: str, env: str | None = None) -> str:
    """`ray job submit` as docs/ray.md prints it, from the client's checkout (`env`: a runtime env besides)."""
    extra = ["--runtime-env-json", env] if env else []
    r = cluster.ray("job", "submit", "--address", DASHBOARD, "--working-dir", ".", *extra, "--", *cmd, step=step, timeout=900,
                    env={"RAY_AUTH_MODE": "token"})  # docs/ray.md's `export RAY_AUTH_MODE=token`
    return r.stdout


def test_debug_job_runs_on_several_hosts(cluster):
    out = submit(cluster, *DEBUG_JOB, "output_dir=/mnt/shared/taxoclass/runs", "ray.storage_path=/mnt/shared/taxoclass/ray",
                 "run_name=debug-cluster", step="debug job", env=JOB_ENV)
    summary = json.loads((cluster.lab.shared / "taxoclass" / "runs" / "debug-cluster" / "summary.json").read_text())
    assert summary["stage1/actor_nodes"] >= 2, out[-3000:]
    assert summary["stage3/worker_nodes"] >= 2, out[-3000:]
    assert (cluster.lab.shared / "taxoclass" / "ray").is_dir()  # Ray Train's storage on the shared folder
    cluster.summaries["debug"] = summary


@full_only
def test_search_runs_trials_on_several_hosts(cluster):
    out = submit(cluster, "python", "tune/search.py", "--smoke", "--num-samples", "4", "--name", "search-cluster", "ray.address=auto",
                 f"output_dir={SHARED}/taxoclass/runs", step="search job (4 trials)")
    with open(cluster.lab.shared / "taxoclass" / "runs" / "search-cluster" / "trials.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4, out[-3000:]
    assert len({r["node"] for r in rows if r["node"]}) >= 2, rows


def checkpoints(folder: Path) -> list[Path]:
    """Ray Train's checkpoint folders (not its checkpoint_manager_snapshot.json, written before the first epoch)."""
    return [p for p in folder.glob("**/checkpoint_*") if p.is_dir()] if folder.is_dir() else []


@full_only
def test_a_host_lost_mid_stage3(cluster):
    """A worker host dies (every process in it) after stage 3's first checkpoint: the run finishes on the others,
    or submitting it again resumes it; the summary is the undisturbed debug job's within test_ray's tolerance."""
    want = cluster.summaries.get("debug") or pytest.skip("needs the debug job's summary")
    storage = cluster.lab.shared / "taxoclass" / "ray-lost"
    cmd = [*DEBUG_JOB, "force_stage=3", f"output_dir={SHARED}/taxoclass/runs", f"ray.storage_path={SHARED}/taxoclass/ray-lost",
           "run_name=lost-host"]
    t = time.monotonic()
    job = cluster.submit_in_background(*cmd)
    lost = None
    while job.poll() is None and lost is None:
        if checkpoints(storage):
            train = {n: [p for p in h.processes() if "RayTrainWorker" in p] for n, h in cluster.lab.hosts.items() if n != "head"}
            victims = [n for n, ps in train.items() if ps]
            if victims:
                lost = cluster.lab.hosts[victims[0]]
                held = train[victims[0]]
                lost.kill()
        time.sleep(0.5)
    job.wait(timeout=900)
    out = (cluster.lab.root / "background-job.log").read_text()
    assert lost is not None, f"no worker host held a Train worker after the first checkpoint\n{out[-3000:]}"
    if job.returncode != 0:  # the job failed with its host: submitted again, it resumes from the shared checkpoints
        cluster.times["lost host: first attempt"] = round(time.monotonic() - t, 1)
        out = submit(cluster, *cmd, step="lost host: resubmitted", env=JOB_ENV)
    cluster.times["lost host"] = round(time.monotonic() - t, 1)
    summary = json.loads((cluster.lab.shared / "taxoclass" / "runs" / "lost-host" / "summary.json").read_text())
    print(f"\nlost {lost.name} holding {held}; first attempt exit status {job.returncode}; resumed_from_epoch "
          f"{summary.get('stage3/resumed_from_epoch')}", file=sys.__stderr__)
    # the loss hit stage 3: Ray Train's controller (its log on the head) retried the worker group, or the job failed
    # and was resumed. (stage3/resumed_from_epoch stayed absent in the runs that retried: not established why)
    # (session_latest is a link to an absolute path inside the head's /tmp: glob the session folders)
    head_tmp = cluster.lab.hosts["head"].dir / "tmp" / "ray"
    retried = any("[FailurePolicy] RETRY" in f.read_text(errors="replace")
                  for f in head_tmp.glob("session_2*/logs/train/ray-train-*controller*.log"))
    assert job.returncode != 0 or retried, out[-3000:]
    # the tolerances of test_ray's 1-against-2-workers test (the group may restart on fewer nodes)
    assert summary["stage3/best_val_loss"] == pytest.approx(want["stage3/best_val_loss"], rel=0.3), out[-3000:]
    assert abs(summary["test/example_f1"] - want["test/example_f1"]) <= 0.15


def test_ray_down_leaves_no_ray_process(cluster):
    out = cluster.take_down()
    for name, host in cluster.lab.hosts.items():
        left = [p[:80] for p in host.processes() if RAY_PROCESS.search(p)]
        assert not left, f"{name}: {left}\n{out.stdout[-6000:]}"
