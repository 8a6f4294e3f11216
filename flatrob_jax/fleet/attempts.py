"""One attempt at one unit, on whatever machine runs it: a fresh process, its record on disk.

:func:`run_attempt` is what every executor runs on its worker (a thread of the local driver, a
Ray task, a SLURM job): it starts the unit's command (``python -m flatrob_jax.sweep ... --run
NAME``) as a fresh child process in its own session, which is sent SIGTERM when the worker
that started it dies (Linux ``PR_SET_PDEATHSIG``), waits for it and returns its
:class:`Outcome`. The attempt also writes its own record, ``<root>/.fanout/attempts/<name>/
<attempt>.json``, when it starts and when it ends, so an attempt whose machine was lost still
shows (started, never ended) and the driver's ``fanout.json`` lists every attempt, also those
an engine retried by itself.

Exit statuses: 0 done, 75 preempted with its state saved (resumable), 76 stopped because
another attempt took the run over (``workdir_lease``), anything else failed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

from flatrob_jax import fileio

PREEMPTED = 75  # distributed.PREEMPTED_EXIT_CODE (not imported: that would import JAX here)
SUPERSEDED = 76  # workdir_lease.SUPERSEDED_EXIT_CODE
_TAIL = 4000  # characters of the unit's output kept in its record


@dataclasses.dataclass
class Outcome:
    """How an attempt ended (``exit_status`` None: it never ended, its machine was lost)."""

    name: str
    attempt: str
    exit_status: int | None
    node: str = ""
    pid: int | None = None
    started: float = 0.0
    ended: float | None = None
    log: str = ""  # where its whole output is
    tail: str = ""  # the last lines of its output
    lost: str = ""  # why the engine gave it up (the node died...), when it did

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def fanout_dir(root: str, *parts: str) -> str:
    return fileio.join(root, ".fanout", *parts)


def record_path(root: str, name: str, attempt: str) -> str:
    return fanout_dir(root, "attempts", name, f"{attempt}.json")


def read_records(root: str, name: str) -> list:
    """Every attempt record of unit ``name``, oldest first."""
    directory = fanout_dir(root, "attempts", name)
    if not fileio.exists(directory):
        return []
    records = [
        json.loads(fileio.read_text(fileio.join(directory, f)))
        for f in fileio.listdir(directory)
        if f.endswith(".json")
    ]
    return sorted(records, key=lambda r: r.get("started", 0.0))


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the thread that started it ends (its worker)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def this_python(command) -> list:
    """``command`` with its leading 'python' replaced by this interpreter."""
    command = list(command)
    return [sys.executable, *command[1:]] if command and command[0] == "python" else command


def run_attempt(
    root: str,
    name: str,
    command,
    *,
    node: str = "",
    env: dict | None = None,
    attempt: str | None = None,
    preexec=None,
    on_start=None,
) -> Outcome:
    """Run ``command`` once as a fresh child process; record and return its outcome.

    ``node``: where it runs (the executor's node id or host); ``env``: variables added to this
    process's environment (the attempt id, node and ``FLATROB_DISTRIBUTED=off`` are always
    set: a unit is one process); ``preexec``: a function run in the child before exec (the
    local executor pins CPU cores with it); ``on_start``: called with the child's ``Popen``."""
    attempt = attempt or f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    node = node or socket.gethostname()
    child_env = dict(os.environ, **(env or {}))
    child_env.update(
        FLATROB_ATTEMPT=attempt,
        FLATROB_NODE=node,
        FLATROB_DISTRIBUTED="off",
        PYTHONUNBUFFERED="1",
    )
    log_file = tempfile.NamedTemporaryFile(
        "w+b", prefix=f"flatrob-{attempt}-", suffix=".log", delete=False
    )

    def before_exec():
        _die_with_parent()
        if preexec is not None:
            preexec()

    started = time.time()
    proc = subprocess.Popen(
        this_python(command),
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=child_env,
        start_new_session=True,  # a signal to the worker's group does not reach it by accident
        preexec_fn=before_exec,
    )
    if on_start is not None:
        on_start(proc)
    outcome = Outcome(name, attempt, None, node=node, pid=proc.pid, started=started)
    path = record_path(root, name, attempt)
    fileio.write_json(path, outcome.as_dict(), indent=1)
    try:
        status = proc.wait()
    except BaseException:
        proc.terminate()  # the worker is being stopped: the unit saves and exits (75)
        proc.wait()
        raise
    log_file.seek(0)
    output = log_file.read().decode("utf-8", "replace")
    log_file.close()
    outcome.exit_status, outcome.ended = status, time.time()
    outcome.tail = output[-_TAIL:]
    outcome.log = fanout_dir(root, "logs", f"{name}.{attempt}.log")
    fileio.atomic_write_text(outcome.log, output)
    os.remove(log_file.name)
    fileio.write_json(path, outcome.as_dict(), indent=1)
    return outcome
