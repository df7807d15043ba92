"""Three "hosts" on this machine for `ray up cluster.yaml`: a head and two workers, each a real sshd.

Everything lives in one private network namespace, the *lab* (`unshare --net --mount`): its bridge,
its veth pairs and every address the test uses; nothing is created in the namespace the harness
starts in. The lab's own mount namespace is the client's machine (the user's laptop): a private home
(the ssh key, ~/.ray/auth_token) and /tmp (Ray's cluster state and ssh control sockets), and
/mnt/shared, one folder that every host sees at the same path, standing in for cluster.yaml's NFS export.

Each host is `unshare --net --pid --mount --uts` inside the lab: its own address on the bridge, its
own process tree (so `ray stop` in cluster.yaml's start commands ends that host's Ray only, and
killing the host's first process ends all of it, as losing the machine would), its own hostname,
/tmp and home folder. Its first process is a shell that runs sshd and reaps what Ray leaves behind.

Needs root, util-linux's unshare/nsenter, iproute2, rsync and Debian's openssh-server
(`apt-get install -y openssh-server rsync`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SUBNET = "10.77.0"  # addresses inside the lab only
CLIENT_IP = f"{SUBNET}.1"
HOSTS = {"head": f"{SUBNET}.11", "worker1": f"{SUBNET}.12", "worker2": f"{SUBNET}.13"}
SHARED = "/mnt/shared"
SSHD = "/usr/sbin/sshd"

# The lab: loopback, the bridge (the client's address), and /mnt/shared on a private tmpfs over /mnt
# (nothing is written to the machine's /mnt), then the client's home and /tmp. Its shell then waits.
LAB_SCRIPT = r"""
set -e
ip link set lo up
ip link add br0 type bridge
ip addr add {client_ip}/24 dev br0
ip link set br0 up
mount -t tmpfs lab-mnt /mnt
mkdir -p {shared}
mount --bind "$ROOT/shared" {shared}
mount --bind "$ROOT/client/tmp" /tmp
H="$ROOT/client/home"; {keep_home}
touch "$ROOT/lab.ready"
exec sleep infinity
"""

# A host's first process (PID 1 of its PID namespace): its own /tmp and home, sshd in the
# foreground, and bash's wait, which also reaps the daemons `ray start` leaves to it.
HOST_SCRIPT = r"""
set -e
hostname "$HOST_NAME"
mount --bind "$HOST_DIR/hosts" /etc/hosts
ip link set lo up
mount --bind "$HOST_DIR/tmp" /tmp
H="$HOST_DIR/home"; {keep_home}
mkdir -p /run/sshd
{sshd} -D -e -f "$HOST_DIR/sshd_config" 2>>"$HOST_DIR/sshd.log" &
while true; do wait || true; sleep 1; done
"""

# The private home $H goes over $HOME, with $KEEP (folders under $HOME, e.g. a pyenv Python the venv
# links to) bound back inside it: this machine's interpreter is then where every host finds it.
KEEP_HOME = r"""for rel in $KEEP; do mkdir -p "$H/$rel"; mount --bind "$HOME/$rel" "$H/$rel"; done; mount --rbind "$H" "$HOME" """

SSHD_CONFIG = """\
ListenAddress 0.0.0.0
HostKey {host_key}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PidFile none
AuthorizedKeysFile .ssh/authorized_keys
AcceptEnv LANG LC_*
Subsystem sftp internal-sftp
"""


def sh(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True, **kw)


def child_pid(pid: int, timeout: float = 10) -> int:
    """The process `unshare --fork` started (PID 1 of the new PID namespace)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if kids:
            return int(kids[0])
        time.sleep(0.05)
    raise RuntimeError(f"unshare {pid} started no process")


def kept_under_home(home: str = "/root") -> str:
    """This Python's install, where it lies under root's home (pyenv): the venv's interpreter links to it."""
    base = Path(os.path.realpath(sys.base_prefix))
    return str(base.relative_to(home)) if base.is_relative_to(home) else ""


def missing_tools() -> list[str]:
    need = ["unshare", "nsenter", "ip", "rsync", "ssh", "ssh-keygen", SSHD]
    return [t for t in need if not shutil.which(t)]


@dataclass
class Host:
    name: str
    ip: str
    dir: Path
    proc: subprocess.Popen
    pid: int  # PID 1 of the host's namespace, as this machine sees it

    def alive(self) -> bool:
        return self.proc.poll() is None

    def processes(self) -> list[str]:
        """The command lines of every process in this host's PID namespace."""
        try:
            ns = os.readlink(f"/proc/{self.pid}/ns/pid")
        except OSError:
            return []
        out = []
        for p in Path("/proc").iterdir():
            if not p.name.isdigit():
                continue
            try:
                if os.readlink(p / "ns" / "pid") == ns:
                    out.append((p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip())
            except OSError:
                continue
        return [c for c in out if c]

    def kill(self) -> None:
        """The machine is lost: PID 1 of its namespace dies, and the kernel ends everything in it."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


@dataclass
class Lab:
    root: Path
    proc: subprocess.Popen | None = None
    hosts: dict[str, Host] = field(default_factory=dict)

    @classmethod
    def create(cls, base: str = "/var/tmp") -> Lab:
        # not under /tmp: every host and the client mount their own /tmp over it
        return cls(Path(tempfile.mkdtemp(prefix="taxoclass-cluster-", dir=base)))

    @property
    def client_home(self) -> Path:
        return self.root / "client" / "home"

    @property
    def shared(self) -> Path:
        """/mnt/shared as this process sees it."""
        return self.root / "shared"

    def start(self, env_lines: str = "") -> None:
        """The lab, then the three hosts; `env_lines` goes into each host's ~/.bashrc (a provisioned machine)."""
        for d in ("shared", "client/tmp", "client/home/.ssh", "ssh"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        key = self.client_home / ".ssh" / "id_ed25519"
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "taxoclass-cluster-test", "-f", key)
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", self.root / "ssh" / "host_key")
        env = {**os.environ, "ROOT": str(self.root), "HOME": "/root", "KEEP": kept_under_home()}
        self.proc = subprocess.Popen(["unshare", "--net", "--mount", "--propagation", "private", "bash", "-c",
                                      LAB_SCRIPT.format(client_ip=CLIENT_IP, shared=SHARED, keep_home=KEEP_HOME)], env=env, start_new_session=True)
        self._wait_for(self.root / "lab.ready", self.proc)
        for name, ip in HOSTS.items():
            self.hosts[name] = self._start_host(name, ip, key.with_suffix(".pub").read_text(), env_lines)

    def _wait_for(self, path: Path, proc: subprocess.Popen, timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        while not path.exists():
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"the cluster lab did not start (exit status {proc.poll()}; see {self.root})")
            time.sleep(0.05)

    def _start_host(self, name: str, ip: str, pubkey: str, env_lines: str) -> Host:
        d = self.root / "hosts" / name
        (d / "tmp").mkdir(parents=True)
        home = d / "home"
        shutil.copytree("/etc/skel", home) if Path("/etc/skel").is_dir() else home.mkdir()
        (home / ".ssh").mkdir(mode=0o700, exist_ok=True)
        (home / ".ssh" / "authorized_keys").write_text(pubkey)
        home.chmod(0o700)
        if env_lines:
            with open(home / ".bashrc", "a") as f:
                f.write(env_lines)
        # every host's name resolves to its address, as DNS gives on a real cluster: torch's gloo binds
        # to what the hostname resolves to, and an unresolved name falls back to 127.0.0.1 (stage 3 then
        # fails to connect across hosts, as the first run of this test did)
        (d / "hosts").write_text("127.0.0.1 localhost\n" + "".join(f"{a} {n}\n" for n, a in HOSTS.items()))
        (d / "sshd_config").write_text(SSHD_CONFIG.format(host_key=self.root / "ssh" / "host_key"))
        env = {**os.environ, "HOST_NAME": name, "HOST_DIR": str(d), "HOME": "/root", "KEEP": kept_under_home()}
        proc = subprocess.Popen(["nsenter", "-t", str(self.proc.pid), "-n", "-m", "--",
                                 "unshare", "--net", "--pid", "--mount", "--uts", "--fork", "--mount-proc", "--propagation", "private",
                                 "bash", "-c", HOST_SCRIPT.format(sshd=SSHD, keep_home=KEEP_HOME)], env=env, start_new_session=True)
        pid = child_pid(proc.pid)  # nsenter execs unshare, which forks the host's PID 1
        veth = f"v-{name}"
        self.lab("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", pid)
        self.lab("ip", "link", "set", veth, "master", "br0", "up")
        inside = ["nsenter", "-t", pid, "-n", "--"]
        sh(*inside, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
        sh(*inside, "ip", "link", "set", "eth0", "up")
        # a default route, as a real host has: Ray finds its node address by routing towards the internet
        sh(*inside, "ip", "route", "add", "default", "via", CLIENT_IP)
        return Host(name, ip, d, proc, pid)

    def lab(self, *args, **kw) -> subprocess.CompletedProcess:
        """A command in the lab's network namespace (not its mounts)."""
        return sh("nsenter", "-t", self.proc.pid, "-n", "--", *args, **kw)

    def client(self, *args, cwd: str | Path, env: dict | None = None, timeout: float = 600, check: bool = True
               ) -> subprocess.CompletedProcess:
        """A command on the client machine: the lab's network and mounts (its home, /tmp, /mnt/shared)."""
        full = {**os.environ, "HOME": "/root", **(env or {})}
        r = subprocess.run(["nsenter", "-t", str(self.proc.pid), "-n", "-m", f"--wd={cwd}", "--", *map(str, args)],
                           capture_output=True, text=True, env=full, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(map(str, args[:3]))} ... exited {r.returncode}\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
        return r

    def wait_ssh(self, timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        for host in self.hosts.values():
            while True:
                r = subprocess.run(["nsenter", "-t", str(self.proc.pid), "-n", "--", "bash", "-c", f"exec 3<>/dev/tcp/{host.ip}/22"],
                                   capture_output=True)
                if r.returncode == 0:
                    break
                if time.monotonic() > end:
                    raise RuntimeError(f"sshd on {host.name} ({host.ip}) does not answer; see {host.dir / 'sshd.log'}")
                time.sleep(0.2)

    def stop(self, keep: bool = False) -> None:
        """Every host's process tree and the lab end; the folder goes unless `keep`."""
        for host in self.hosts.values():
            host.kill()
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)
