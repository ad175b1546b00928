"""A real single-node SLURM cluster on this machine, for tests (Debian's slurm-wlm 22.05).

Why: the stub SLURM (tests/stubs) proves which `sbatch` flags the profile produces; only a real
scheduler proves that SLURM accepts them, grants the GPU, runs the rule inside the allocation
and reports cancelled, killed, out-of-memory and timed-out jobs the way the executor plugin
expects.

`start_cluster()` installs the packages if they are missing (apt-get, as root) and starts, each as
a child process whose PID is kept: munged (its own key and socket), MariaDB and slurmdbd (the
accounting that `sacct` reads: what each job asked for, was granted and how it ended), slurmctld
and slurmd.
Everything lives in one fresh directory under /tmp, on free ports picked at start, so nothing
in /etc is written. `Cluster.stop()` cancels what is left and stops every daemon by its PID.

Facts this relies on (checked with slurm-wlm 22.05.8, munge 0.5.15, MariaDB 10.11):
- Clients and daemons read `$SLURM_CONF`, but the jobstep plugin (0.6.1) removes every SLURM_*
  variable before it calls `srun` inside a job. That `srun` then looks for /etc/slurm/slurm.conf
  and, failing that, /run/slurm/conf/slurm.conf (where a "configless" slurmd keeps the copy it
  fetched). The cluster links /run/slurm/conf to its configuration directory for as long as it
  runs (slurmd cannot run configless here: it would fetch its configuration through the default
  munge socket, and this cluster's munged has its own). A machine that has
  /etc/slurm/slurm.conf (a real cluster node) or another /run/slurm/conf is refused.
- GPU: one `v100` GPU GRES backed by /dev/null; slurmd rejects a GPU without a device file. The
  scheduler counts, allocates and accounts it like a real one (`AllocTRES` shows `gres/gpu=1`,
  the job sees `CUDA_VISIBLE_DEVICES`); no CUDA code can run on it.
- munged refuses a socket directory that others cannot enter, and runs as user munge.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# binary -> Debian package that provides it
REQUIRED = {
    "/usr/sbin/munged": "munge",
    "/usr/sbin/slurmctld": "slurm-wlm",
    "/usr/sbin/slurmd": "slurm-wlm",
    "/usr/bin/sbatch": "slurm-wlm",
    "/usr/sbin/slurmdbd": "slurmdbd",
    "/usr/sbin/mariadbd": "mariadb-server",
    "/usr/bin/mariadb-install-db": "mariadb-server",
}
CLUSTER = "qrnca"
ACCOUNT = "qrnca"
CPU_PARTITION, GPU_PARTITION = "cpu", "gpu"
GPU_TYPE = "v100"
CONFIGLESS_CACHE = Path("/run/slurm/conf")
PREFIX = "qrnca-slurm-"  # of the cluster's directory in the temp dir
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")


class SlurmUnavailable(RuntimeError):
    """The cluster could not be installed or brought up; the message says why and what to do."""


def missing_packages() -> list[str]:
    return sorted({pkg for path, pkg in REQUIRED.items() if not Path(path).exists()})


def install_packages(timeout: float = 900) -> None:
    """apt-get install what is missing (root only); raise SlurmUnavailable if that fails."""
    missing = missing_packages()
    if not missing:
        return
    if os.geteuid() != 0:
        raise SlurmUnavailable(f"packages {missing} are missing and installing them needs root")
    if shutil.which("apt-get") is None:
        raise SlurmUnavailable(f"packages {missing} are missing and there is no apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]):
        run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if run.returncode != 0:
            output = (run.stdout + run.stderr)[-2000:]
            raise SlurmUnavailable(f"`{' '.join(cmd)}` failed:\n{output}")
    if missing_packages():
        raise SlurmUnavailable(f"still missing after apt-get install: {missing_packages()}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_hardware() -> dict[str, str]:
    """`slurmd -C`: this machine as SLURM sees it (NodeName, CPUs, ..., RealMemory)."""
    out = subprocess.run(["/usr/sbin/slurmd", "-C"], capture_output=True, text=True,
                         timeout=60).stdout
    return dict(item.split("=", 1) for item in out.split("\n", 1)[0].split() if "=" in item)


@dataclass
class Layout:
    """Paths and ports of one cluster, and the configuration files written from them."""

    root: Path
    node: str
    hardware: dict[str, str]
    ports: dict[str, int] = field(default_factory=lambda: {
        name: free_port() for name in ("slurmctld", "slurmd", "slurmdbd", "mariadb")})

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    @property
    def conf(self) -> Path:
        return self.path("etc", "slurm.conf")

    @property
    def munge_socket(self) -> Path:
        return self.path("munge", "munge.socket")

    def slurm_conf(self) -> str:
        hw = self.hardware
        node_line = " ".join(f"{k}={hw[k]}" for k in ("CPUs", "Boards", "SocketsPerBoard",
                                                      "CoresPerSocket", "ThreadsPerCore",
                                                      "RealMemory") if k in hw)
        log, run = self.path("log"), self.path("run")
        return f"""\
ClusterName={CLUSTER}
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={self.ports['slurmctld']}
SlurmdPort={self.ports['slurmd']}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={self.path('state')}
SlurmdSpoolDir={self.path('spool')}
SlurmctldPidFile={run}/slurmctld.pid
SlurmdPidFile={run}/slurmd.pid
SlurmctldLogFile={log}/slurmctld.log
SlurmdLogFile={log}/slurmd.log
# no cgroups on these machines
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
GresTypes=gpu
# memory is enforced by sampling every second (OverMemoryKill), time by the controller
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
KillWait=5
# a step whose processes outlive the kill signals this long drains the node ("Kill task failed");
# killing a step once took over the default 60 s on these loaded VMs
UnkillableStepTimeout=300
# finished jobs stay visible to squeue/scontrol for 5 minutes
MinJobAge=300
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={self.ports['slurmdbd']}
AccountingStoragePass={self.munge_socket}
AccountingStorageTRES=gres/gpu,gres/gpu:{GPU_TYPE}
# the plugin's --comment rule_<name>_wildcards_<...> is how tests tell jobs apart
AccountingStoreFlags=job_comment
ReturnToService=2
NodeName={self.node} NodeAddr=127.0.0.1 {node_line} Gres=gpu:{GPU_TYPE}:1 State=UNKNOWN
PartitionName={CPU_PARTITION} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
PartitionName={GPU_PARTITION} Nodes={self.node} MaxTime=INFINITE State=UP
"""

    def gres_conf(self) -> str:
        return f"Name=gpu Type={GPU_TYPE} File=/dev/null\n"

    def slurmdbd_conf(self) -> str:
        return f"""\
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
DbdHost={self.node}
DbdAddr=127.0.0.1
DbdPort={self.ports['slurmdbd']}
SlurmUser=root
PidFile={self.path('run', 'slurmdbd.pid')}
LogFile={self.path('log', 'slurmdbd.log')}
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={self.ports['mariadb']}
StorageUser=root
StorageLoc=slurm_acct_db
"""


def wait_until(what: str, check, timeout: float, cluster: "Cluster") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in cluster.daemons.items():
            if proc.poll() is not None:
                raise SlurmUnavailable(f"{name} exited ({proc.returncode}) while waiting for "
                                       f"{what}\n{cluster.log_tails()}")
        if check():
            return
        time.sleep(0.2)
    raise SlurmUnavailable(f"timed out after {timeout:.0f} s waiting for {what}\n"
                           f"{cluster.log_tails()}")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Cluster:
    """A running cluster: `env` is what a client (the test's Snakemake) needs to reach it."""

    layout: Layout
    daemons: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.layout.conf)}

    def client_env(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def run(self, *argv: str, check: bool = True, timeout: float = 60) -> str:
        """Run a SLURM client command against this cluster; its stdout."""
        run = subprocess.run(argv, env=self.client_env(), capture_output=True, text=True,
                             timeout=timeout)
        if check and run.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({run.returncode}): {run.stderr}")
        return run.stdout

    def sacct(self, *args: str, fields: tuple[str, ...]) -> list[dict[str, str]]:
        """sacct rows (all users, all states, since the cluster started) as dicts."""
        out = self.run("sacct", "--allusers", "--parsable2", "--noheader", "--starttime",
                       "now-1days", "--format", ",".join(fields), *args)
        return [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line]

    def start_daemon(self, name: str, argv: list[str], **popen) -> None:
        log = open(self.layout.path("log", f"{name}.out"), "ab")
        self.daemons[name] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                              stderr=subprocess.STDOUT, start_new_session=True,
                                              **popen)
        log.close()

    def log_tails(self, chars: int = 1500) -> str:
        parts = []
        for path in sorted(self.layout.path("log").glob("*")):
            text = path.read_text(errors="replace")[-chars:]
            if text.strip():
                parts.append(f"--- {path.name}\n{text}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel every job, then stop the daemons in reverse order of start, each by its PID."""
        if self.daemons.get("slurmctld") and self.daemons["slurmctld"].poll() is None:
            jobs = self.run("squeue", "-h", "-o", "%i", check=False).split()
            if jobs:
                self.run("scancel", "--full", *jobs, check=False)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and self.run("squeue", "-h", check=False).strip():
                time.sleep(0.5)
        for name in reversed(list(self.daemons)):
            proc = self.daemons[name]
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
        self.daemons.clear()
        ours = self.layout.conf.parent
        if CONFIGLESS_CACHE.is_symlink() and Path(os.readlink(CONFIGLESS_CACHE)) == ours:
            CONFIGLESS_CACHE.unlink()
            with contextlib.suppress(OSError):
                CONFIGLESS_CACHE.parent.rmdir()  # /run/slurm, unless something else uses it


def write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def start_cluster(timeout: float = 60) -> Cluster:
    """Install if needed and start a single-node cluster; raise SlurmUnavailable with the reason."""
    if os.geteuid() != 0:
        raise SlurmUnavailable("starting slurmd and slurmctld needs root")
    if SYSTEM_CONF.exists():
        raise SlurmUnavailable(f"{SYSTEM_CONF} exists: this machine belongs to a SLURM cluster, and "
                               "srun inside the test's jobs would read that file")
    if CONFIGLESS_CACHE.is_symlink() and not CONFIGLESS_CACHE.exists() \
            and os.readlink(CONFIGLESS_CACHE).startswith(f"{tempfile.gettempdir()}/{PREFIX}"):
        CONFIGLESS_CACHE.unlink()  # left by a test run that was killed before it could clean up
    if CONFIGLESS_CACHE.exists() or CONFIGLESS_CACHE.is_symlink():
        raise SlurmUnavailable(f"{CONFIGLESS_CACHE} exists: another slurmd runs on this machine")
    install_packages()
    root = Path(tempfile.mkdtemp(prefix=PREFIX))
    root.chmod(0o755)  # munged (user munge) must reach its socket directory
    layout = Layout(root=root, node=socket.gethostname().split(".")[0], hardware=node_hardware())
    for sub in ("log", "run", "state", "spool"):
        layout.path(sub).mkdir(parents=True, exist_ok=True)
    write(layout.conf, layout.slurm_conf())
    write(layout.path("etc", "gres.conf"), layout.gres_conf())
    write(layout.path("etc", "slurmdbd.conf"), layout.slurmdbd_conf(), mode=0o600)
    munge = layout.path("munge")
    munge.mkdir(mode=0o755)
    (munge / "munge.key").write_bytes(os.urandom(1024))
    (munge / "munge.key").chmod(0o600)
    shutil.chown(munge, "munge", "munge")
    shutil.chown(munge / "munge.key", "munge", "munge")

    cluster = Cluster(layout)
    env = cluster.client_env()
    try:
        cluster.start_daemon("munged", [
            "/usr/sbin/munged", "--foreground", f"--socket={layout.munge_socket}",
            f"--key-file={munge / 'munge.key'}", f"--pid-file={munge / 'munged.pid'}",
            f"--log-file={munge / 'munged.log'}", f"--seed-file={munge / 'munged.seed'}"],
            user="munge", group="munge")
        db = layout.path("db")
        install = subprocess.run(["/usr/bin/mariadb-install-db", "--no-defaults", f"--datadir={db}",
                                  "--user=root", "--skip-test-db", "--innodb-log-file-size=8M"],
                                 capture_output=True, text=True, timeout=120)
        if install.returncode != 0:
            raise SlurmUnavailable(f"mariadb-install-db failed:\n{install.stdout}{install.stderr}")
        cluster.start_daemon("mariadb", [
            "/usr/sbin/mariadbd", "--no-defaults", f"--datadir={db}", "--user=root",
            f"--socket={layout.path('run', 'mariadb.sock')}", f"--port={layout.ports['mariadb']}",
            "--bind-address=127.0.0.1", "--skip-grant-tables", "--skip-log-bin",
            "--innodb-buffer-pool-size=32M", "--innodb-log-file-size=8M",
            f"--pid-file={layout.path('run', 'mariadb.pid')}",
            f"--log-error={layout.path('log', 'mariadb.log')}"])
        wait_until("munged", layout.munge_socket.exists, timeout, cluster)
        wait_until("MariaDB", lambda: port_open(layout.ports["mariadb"]), timeout, cluster)
        cluster.start_daemon("slurmdbd", ["/usr/sbin/slurmdbd", "-D"], env=env)
        wait_until("slurmdbd", lambda: port_open(layout.ports["slurmdbd"]), timeout, cluster)
        cluster.start_daemon("slurmctld", ["/usr/sbin/slurmctld", "-D", "-i", "-f",
                                           str(layout.conf)], env=env)
        wait_until("slurmctld", lambda: port_open(layout.ports["slurmctld"]), timeout, cluster)
        CONFIGLESS_CACHE.parent.mkdir(parents=True, exist_ok=True)
        CONFIGLESS_CACHE.symlink_to(layout.conf.parent)
        cluster.start_daemon("slurmd", ["/usr/sbin/slurmd", "-D", "-N", layout.node, "-f",
                                        str(layout.conf)], env=env)
        wait_until("the node to be idle", lambda: set(cluster.run(
            "sinfo", "-h", "-N", "-o", "%T", check=False).split()) == {"idle"},
            timeout, cluster)
        wait_until("the cluster in the accounting database", lambda: CLUSTER in cluster.run(
            "sacctmgr", "-n", "-P", "list", "cluster", "format=cluster", check=False).split(),
            timeout, cluster)
        cluster.run("sacctmgr", "-i", "add", "account", ACCOUNT, f"cluster={CLUSTER}")
        cluster.run("sacctmgr", "-i", "add", "user", "root", f"account={ACCOUNT}",
                    f"cluster={CLUSTER}")
    except BaseException:
        cluster.stop()
        raise
    return cluster
