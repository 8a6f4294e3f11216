"""A real one-node SLURM on this machine, for tests: munged, slurmctld and slurmd as root.

Everything lives in one fresh directory: a generated munge key and socket, a generated
slurm.conf (one node, ``localhost``, with this machine's CPUs; one partition; free ports),
the controller's state and the node's spool. Clients (sbatch, squeue, scontrol, submitit)
find it through ``SLURM_CONF``. :meth:`stop` cancels the cluster's jobs and stops the three
daemons by the pids it started them with. Needs root and Debian's slurm-wlm and munge
(``.ci/setup --test`` installs them).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time

DAEMONS = ("munged", "slurmctld", "slurmd")
PARTITION = "debug"

SLURM_CONF = """\
ClusterName=flatrobtest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
PlugStackConfig={root}/plugstack.conf
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
KillWait=30
MinJobAge=600
InactiveLimit=0
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName={partition} Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def missing() -> str | None:
    """Why a cluster cannot be started here (None: it can)."""
    if os.geteuid() != 0:
        return "a local SLURM needs root"
    absent = [d for d in DAEMONS + ("sbatch", "squeue", "scontrol") if shutil.which(d) is None]
    if absent:
        return f"{', '.join(absent)} not installed (apt-get install slurm-wlm munge)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalSlurm:
    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="slurm-")  # short: slurmd's sockets live below
        self.conf = os.path.join(self.root, "slurm.conf")
        self.env = dict(os.environ, SLURM_CONF=self.conf)
        self.procs = {}  # daemon -> Popen

    def _log(self, name: str):
        return open(os.path.join(self.root, f"{name}.log"), "wb")

    def start(self, timeout: float = 60.0) -> LocalSlurm:
        munge_dir, socket_dir = os.path.join(self.root, "munge"), os.path.join(self.root, "run")
        for d in (munge_dir, socket_dir, os.path.join(self.root, "state")):
            os.makedirs(d)
        os.makedirs(os.path.join(self.root, "spool"))
        os.chmod(munge_dir, 0o700)
        key = os.path.join(munge_dir, "munge.key")
        with open(key, "wb") as f:
            f.write(os.urandom(1024))
        os.chmod(key, 0o400)
        munge_socket = os.path.join(socket_dir, "munge.socket")
        open(os.path.join(self.root, "plugstack.conf"), "w").close()
        with open(self.conf, "w") as f:
            f.write(
                SLURM_CONF.format(
                    root=self.root,
                    munge_socket=munge_socket,
                    ctld_port=_free_port(),
                    slurmd_port=_free_port(),
                    cpus=os.cpu_count(),
                    partition=PARTITION,
                )
            )
        deadline = time.time() + timeout
        self._spawn(
            "munged",
            [
                "munged",
                "--foreground",
                "--force",
                f"--socket={munge_socket}",
                f"--key-file={key}",
                f"--pid-file={munge_dir}/munged.pid",
                f"--seed-file={munge_dir}/munged.seed",
                f"--log-file={self.root}/munged.file.log",
            ],
        )
        self._until(lambda: os.path.exists(munge_socket), deadline, "munged's socket")
        self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", self.conf])
        self._spawn("slurmd", ["slurmd", "-D", "-N", "localhost", "-f", self.conf])
        self._until(self._node_idle, deadline, "the node to be idle in sinfo")
        return self

    def _spawn(self, name: str, argv: list) -> None:
        with self._log(name) as log:
            self.procs[name] = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.root
            )

    def _until(self, ready, deadline: float, what: str) -> None:
        while not ready():
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited ({proc.returncode}): {self.log_tail(name)}")
            if time.time() > deadline:
                raise TimeoutError(f"SLURM did not come up: waited for {what}; {self.log_tail()}")
            time.sleep(0.2)

    def _node_idle(self) -> bool:
        out = self.run("sinfo", "--noheader", "--format=%T", check=False)
        return out.returncode == 0 and out.stdout.strip() == "idle"

    def run(self, *argv, check: bool = True) -> subprocess.CompletedProcess:
        """A SLURM client command against this cluster."""
        return subprocess.run(
            argv, env=self.env, capture_output=True, text=True, timeout=60, check=check
        )

    def log_tail(self, name: str | None = None, chars: int = 2000) -> str:
        names = [name] if name else list(self.procs)
        out = []
        for n in names:
            path = os.path.join(self.root, f"{n}.log")
            if os.path.exists(path):
                out.append(f"--- {n}: " + open(path, errors="replace").read()[-chars:])
        return "\n".join(out)

    def jobs(self) -> dict:
        """{job id: state} of every job the controller still knows."""
        out = self.run(
            "squeue", "--noheader", "--array", "--states=all", "--format=%i|%T", check=False
        )
        return dict(line.split("|", 1) for line in out.stdout.split() if "|" in line)

    def stop(self, timeout: float = 60.0) -> None:
        """Cancel the cluster's jobs, wait for them to end, stop the daemons by pid."""
        deadline = time.time() + timeout
        if self.procs.get("slurmctld") is not None and self.procs["slurmctld"].poll() is None:
            self.run("scancel", "--full", "--partition", PARTITION, check=False)
            active = ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED")
            while time.time() < deadline:
                if not any(s in active for s in self.jobs().values()):
                    break
                time.sleep(0.5)
        for name in reversed(DAEMONS):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(max(1.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)
