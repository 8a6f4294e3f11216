"""Units on a SLURM cluster through submitit: each unit one SLURM job, the units that become
ready together one job array.

``start`` only queues a unit; the next ``wait`` submits every queued unit at once, as one job
array (``executor.batch()``) when there are several: after the warm start, every run of the
sweep goes in one array. Each job runs :class:`SlurmUnit`, which runs the unit as a fresh
process on its node (``attempts.run_attempt``, node = the SLURM node's name) and writes its own
attempt record. Resources: ``cpu:K`` -> ``--cpus-per-task``, ``gpu:K`` -> ``--gpus-per-node``
(TPUs are not scheduled through SLURM here).

What is retried, and by whom:

* preemption (``PreemptMode=REQUEUE``), ``scontrol requeue`` and a failed node: jobs are
  submitted with ``--requeue``, so SLURM puts the job back in the queue and runs it again with
  the same job id; SLURM's SIGTERM makes the unit save and exit 75, and the job leaves no result
  (it sees its restart count go up), so the driver keeps waiting while the next run of the same
  job resumes the unit from its newest checkpoint;
* the time limit: submitit asks SLURM for SIGUSR2 ``warning_s`` seconds before it
  (``--signal=USR2@warning_s``); the job then tells the unit (SIGTERM) to save and exit 75, and
  the driver starts it again as a new job (so does SIGTERM from ``scancel``);
* a job that ended without a result (killed, or its requeue disabled): given to the driver as
  lost (``Outcome.lost``), which starts it again.

Job states come from ``squeue`` (no accounting database needed); results from submitit's
folder, which every node must see: by default ``<root>/.fanout/slurm`` for a local or shared
root; a gs:// root needs ``folder=`` on a shared mount. submitit is imported here only, and
only when this executor is chosen.
"""

from __future__ import annotations

import ast
import math
import os
import re
import signal
import subprocess
import time

from flatrob_jax import fileio
from flatrob_jax.fleet.attempts import PREEMPTED, Outcome, fanout_dir, run_attempt
from flatrob_jax.fleet.resources import Resources

SLURM_EXTRA = "pip install 'flatrob_jax[slurm]'"
DEFAULT_TIME_MIN = 240  # a longer unit saves at the limit and goes on in a new job
WARNING_S = 120  # SIGUSR2 this long before the time limit: the unit saves and exits 75
POLL_S = 1.0  # how often the result files are looked at
SQUEUE_EVERY_S = 20.0  # how often squeue is asked which jobs still run
LOST_GRACE_S = 20.0  # a job gone without a result this long is given to the driver as lost
# squeue states after which a job does not run again (any other state: it may still run)
ENDED = frozenset(
    "BOOT_FAIL CANCELLED COMPLETED DEADLINE FAILED NODE_FAIL OUT_OF_MEMORY PREEMPTED "
    "TIMEOUT".split()
)
# The options --slurm KEY=VALUE sets directly; any other key is a submitit SlurmExecutor
# parameter (qos, account, mem_gb, constraint, ...), passed on as it is.
OPTIONS = ("folder", "partition", "time_min", "warning_s")


# --------------------------------------------------------------------------- on the node


def _ignore_usr2() -> None:
    """In the unit's process: SLURM sends SIGUSR2 to every process of the job step; the job
    (:class:`SlurmUnit`) answers it, the unit would die of it."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def this_job() -> str:
    """This SLURM job as squeue names it: 'A_I' for a task of job array A, else its id."""
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID')}"
    return os.environ.get("SLURM_JOB_ID", "")


def being_requeued() -> bool:
    """Whether SLURM is putting this job back in the queue (``scontrol requeue``, preemption,
    a node failure): its restart count is above this run's ``SLURM_RESTART_COUNT``. When the
    count cannot be read: True (the safe side: see the comment below)."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return False
    this_run = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    try:
        shown = subprocess.run(
            ["scontrol", "--oneliner", "show", "job", job],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError) as e:
        shown = f"({e})"
    match = re.search(r"\bRestarts=(\d+)", shown)
    if match is None:  # unknown: leave no result; if SLURM does not run the job again, the
        print(f"could not read job {job}'s restart count: {shown.strip()[-300:]}", flush=True)
        return True  # executor sees it ended without one and has the driver start it again
    return int(match.group(1)) > this_run


class SlurmUnit:
    """What one SLURM job runs: one attempt at the unit ``name``; returns its Outcome.

    SIGUSR2 (the time limit is near) makes the unit save and exit 75. When the unit exits 75
    because SLURM is requeueing the job, the job leaves no result (SystemExit: submitit writes
    none) and its next run gives the unit's outcome."""

    def __init__(self, root: str, name: str, command):
        self.root, self.name, self.command = root, name, tuple(command)

    def __call__(self) -> Outcome:
        print(f"unit {self.name} in SLURM job {this_job()}", flush=True)
        running = {}

        def time_is_up(signum, frame):
            proc = running.get("proc")
            if proc is not None:
                print(f"{self.name}: SIGUSR2 (time limit near): the unit saves", flush=True)
                os.kill(proc.pid, signal.SIGTERM)

        signal.signal(signal.SIGUSR2, time_is_up)  # instead of submitit's: the unit saves itself
        outcome = run_attempt(
            self.root,
            self.name,
            self.command,
            node=os.environ.get("SLURMD_NODENAME", ""),
            preexec=_ignore_usr2,
            on_start=lambda proc: running.__setitem__("proc", proc),
        )
        if outcome.exit_status == PREEMPTED and being_requeued():
            print(
                f"{self.name}: saved; SLURM requeued job {this_job()}, whose next run "
                f"resumes the unit",
                flush=True,
            )
            raise SystemExit(PREEMPTED)
        return outcome


# --------------------------------------------------------------------------- the driver's side


def default_folder(root: str, folder: str | None) -> str:
    """submitit's folder (job scripts, pickles, logs): ``folder``, or ``<root>/.fanout/slurm``."""
    if folder is not None:
        if fileio.is_uri(folder):
            raise ValueError(
                f"slurm folder {folder!r}: submitit's folder must be a path every node sees "
                f"(a shared mount), not a URI"
            )
        return os.path.abspath(folder)
    if fileio.is_uri(root):
        raise ValueError(
            f"the sweep root {root!r} is a URI: --executor slurm needs submitit's folder on a "
            f"mount every node sees; give it with --slurm folder=/shared/path"
        )
    return os.path.abspath(fanout_dir(root, "slurm"))


def parameters(
    resources: Resources, *, partition: str | None, time_min: int, warning_s: int, extra: dict
) -> dict:
    """submitit SlurmExecutor parameters for one unit with ``resources``."""
    if resources.tpus or resources.tpu_host:
        raise ValueError(
            f"resources {resources}: TPUs are not scheduled through SLURM here; ask for "
            f"cpu:K and/or gpu:K (or use --executor ray / tools/tpu_vm.sh)"
        )
    if resources.gpus != int(resources.gpus):
        raise ValueError(f"resources gpu:{resources.gpus}: SLURM gives whole GPUs (gpu:1, gpu:2)")
    for name, value, least in (("time_min", time_min, 1), ("warning_s", warning_s, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"slurm {name}={value!r}: must be a whole number >= {least}")
    extra = dict(extra)
    params = {
        "cpus_per_task": max(1, math.ceil(resources.cpus)),
        "time": time_min,
        "signal_delay_s": warning_s,
        # SLURM runs a preempted job (or one on a failed node) again, with the same id.
        "additional_parameters": {"requeue": True, **extra.pop("additional_parameters", {})},
    }
    if resources.gpus:
        params["gpus_per_node"] = int(resources.gpus)
    if partition:
        params["partition"] = partition
    return {**params, **extra}


def options_from_strings(strings) -> dict:
    """``('partition=gpu', 'time_min=600', 'qos=low')`` (``--slurm KEY=VALUE``) -> the keyword
    arguments of :class:`SlurmExecutor`: the keys in ``OPTIONS`` as they are, the others in
    ``extra`` (submitit parameters). Values are Python literals where they parse as one."""
    options, extra = {}, {}
    for item in strings:
        key, sep, text = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(
                f"--slurm {item!r}: expected KEY=VALUE, e.g. partition=gpu, time_min=600, "
                f"folder=/shared/dir, or a submitit parameter such as qos=low"
            )
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        (options if key in OPTIONS else extra)[key] = value
    if extra:
        options["extra"] = extra
    return options


class _Submission:
    """A unit handed to SLURM: its name and command, then its submitit job."""

    def __init__(self, name: str, command):
        self.name, self.command = name, tuple(command)
        self.job = None  # submitit's Job, once submitted
        self.gone_since = None  # when squeue first showed it ended (or not at all)


class SlurmExecutor:
    def __init__(
        self,
        root: str,
        *,
        resources: Resources = Resources(),
        folder: str | None = None,
        partition: str | None = None,
        time_min: int = DEFAULT_TIME_MIN,
        warning_s: int = WARNING_S,
        extra: dict | None = None,
    ):
        try:
            import submitit
        except ImportError as e:
            raise ImportError(f"--executor slurm needs submitit: {SLURM_EXTRA}") from e
        self.root, self.folder = root, default_folder(root, folder)
        params = parameters(
            resources,
            partition=partition,
            time_min=time_min,
            warning_s=warning_s,
            extra=extra or {},
        )
        self._executor = submitit.SlurmExecutor(folder=self.folder)  # fails without srun
        self._executor.update_parameters(**params)  # names the valid ones on a bad one
        self.slots = None  # SLURM queues what the cluster cannot take yet
        where = f"partition {partition}" if partition else "its default partition"
        self.description = f"SLURM ({where}, {time_min} min per job; submitit in {self.folder})"
        self._queued = []  # started, to be submitted together at the next wait
        self._running = []  # submitted, no outcome yet
        self._states, self._states_at = None, 0.0

    def start(self, job) -> _Submission:
        unit = _Submission(job.name, job.command)
        self._queued.append(unit)
        return unit

    def _submit_queued(self) -> None:
        units, self._queued = self._queued, []
        if not units:
            return
        calls = [SlurmUnit(self.root, u.name, u.command) for u in units]
        name = units[0].name if len(units) == 1 else f"{len(units)}_units"
        self._executor.update_parameters(job_name=f"flatrob:{name}")
        if len(calls) == 1:
            jobs = [self._executor.submit(calls[0])]
        else:
            with self._executor.batch():  # one job array
                jobs = [self._executor.submit(call) for call in calls]
        for unit, job in zip(units, jobs):
            unit.job = job
        self._running += units
        self._states_at = 0.0  # ask squeue soon about the new jobs

    def wait(self, timeout: float) -> list:
        self._submit_queued()
        deadline = time.time() + timeout
        while True:
            ended = self._collect()
            left = deadline - time.time()
            if ended or left <= 0 or not self._running:
                return ended
            time.sleep(min(POLL_S, left))

    def _collect(self) -> list:
        if time.time() - self._states_at >= SQUEUE_EVERY_S:
            self._states = self._squeue()
            self._states_at = time.time()
        out = []
        for unit in list(self._running):
            if unit.job.paths.result_pickle.exists():
                outcome = self._result(unit)
            else:
                outcome = self._lost(unit)
            if outcome is not None:
                self._running.remove(unit)
                out.append((unit, outcome))
        return out

    def _result(self, unit: _Submission) -> Outcome:
        try:
            return unit.job.result()
        except Exception as e:  # the job's function raised (submitit's FailedJobError...)
            return Outcome(unit.name, "", None, lost=f"SLURM job {unit.job.job_id}: {e}"[:500])

    def _lost(self, unit: _Submission) -> Outcome | None:
        """The unit's Outcome as lost once SLURM has shown its job ended (or forgotten it)
        without a result for ``LOST_GRACE_S``; else None (it runs, waits or may run again)."""
        if self._states is None:  # squeue failed: no decision this time
            return None
        state = self._states.get(unit.job.job_id)
        if state is not None and state not in ENDED:
            unit.gone_since = None
            return None
        unit.gone_since = unit.gone_since or time.time()
        if time.time() - unit.gone_since < LOST_GRACE_S:
            return None
        return Outcome(
            unit.name,
            "",
            None,
            lost=f"SLURM job {unit.job.job_id} ended {state or 'and was forgotten'} without a "
            f"result (its log: {unit.job.paths.stderr})",
        )

    def _squeue(self) -> dict | None:
        """{job id: state} of the running units' jobs (array tasks as 'A_I'); None on error."""
        ids = sorted({u.job.job_id for u in self._running})
        if not ids:
            return {}
        done = subprocess.run(
            ["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T"]
            + ["--jobs=" + ",".join(ids)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            # Every id unknown (purged after MinJobAge) is an error to squeue.
            return {} if "Invalid job id" in done.stderr else None
        states = {}
        for line in done.stdout.splitlines():
            job_id, _, state = line.strip().partition("|")
            states[job_id] = state.split()[0] if state else ""
        return states

    def close(self) -> None:
        """Cancel the jobs of units still running (SIGTERM: they save and exit 75)."""
        self._queued = []
        ids = [u.job.job_id for u in self._running]
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True, timeout=120)
        self._running = []
