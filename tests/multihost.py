"""Test harness: several real JAX processes on this machine, as on the hosts of a pod.

Each process gets ``JAX_PLATFORMS=cpu``, ``XLA_FLAGS=--xla_force_host_platform_device_count=D``
and the coordinator of ``jax.distributed`` on 127.0.0.1 at a free port (``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``, ``FLATROB_DISTRIBUTED=on``); its stdout and stderr go to
one log file per process. A hang is the failure mode of multi-host code, so every wait has a hard
timeout that kills every process of the group and fails with all their logs.

Also a command-line driver (``python tests/multihost.py [--step-delay S] -m MODULE ARGS...``):
runs ``python -m MODULE ARGS...`` with each training step slowed by ``S`` seconds, so that a test
can kill or signal the processes mid-run; the numbers computed are unchanged.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.abspath(__file__)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_env(
    index: int, num_processes: int, devices: int, port: int | None, extra: dict | None = None
) -> dict:
    """The environment of process ``index`` (``port=None``: a plain single process)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JAX_", "FLATROB_", "TPU_", "SLURM_", "OMPI_", "PYTEST_"))
    }
    env.update(
        {
            "JAX_PLATFORMS": "cpu",
            "PYTHONUNBUFFERED": "1",
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
            "PYTHONPATH": REPO + os.pathsep + env.get("PYTHONPATH", ""),
        }
    )
    if port is not None:
        env.update(
            {
                "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
                "JAX_NUM_PROCESSES": str(num_processes),
                "JAX_PROCESS_ID": str(index),
                "FLATROB_DISTRIBUTED": "on",
            }
        )
    env.update(extra or {})
    return env


class Group:
    """``num_processes`` processes running ``args`` (``python ARGS``), started at once.

    ``cwd``: one directory for all, or a list with one per process. Use as a context manager:
    whatever still runs on exit is killed."""

    def __init__(
        self,
        args,
        log_dir: str,
        *,
        num_processes: int = 2,
        devices: int = 2,
        cwd=None,
        env: dict | None = None,
        name: str = "group",
    ):
        self.args = list(args)
        self.num_processes = num_processes
        cwds = cwd if isinstance(cwd, (list, tuple)) else [cwd or REPO] * num_processes
        port = free_port() if num_processes > 1 else None
        os.makedirs(log_dir, exist_ok=True)
        self.log_paths = [
            os.path.join(log_dir, f"{name}.process{i}.log") for i in range(num_processes)
        ]
        self.procs = []
        for i in range(num_processes):
            with open(self.log_paths[i], "wb") as log:
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, *self.args],
                        cwd=cwds[i],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                        env=process_env(i, num_processes, devices, port, env),
                    )
                )
        self.started = time.monotonic()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()
        return False

    def logs(self) -> str:
        parts = []
        for i, path in enumerate(self.log_paths):
            with open(path, errors="replace") as f:
                text = f.read()
            code = self.procs[i].poll()
            parts.append(f"===== process {i} (exit status {code}) =====\n{text[-6000:]}")
        return "\n".join(parts)

    def log(self, i: int) -> str:
        with open(self.log_paths[i], errors="replace") as f:
            return f.read()

    def send(self, i: int, sig) -> None:
        self.procs[i].send_signal(sig)

    def kill(self, sig=signal.SIGKILL) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass

    def wait(self, timeout: float) -> list[int]:
        """Exit statuses of all processes; past ``timeout`` seconds (since the start) kill
        them all and fail with every log."""
        deadline = self.started + timeout
        while any(p.poll() is None for p in self.procs):
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(
                    f"processes still running after {timeout:.0f}s (a hang?); "
                    f"killed them all. Logs:\n{self.logs()}"
                )
            time.sleep(0.1)
        return [p.returncode for p in self.procs]

    def wait_for(self, predicate, timeout: float, what: str) -> None:
        """Poll ``predicate()`` until true; fail with every log on timeout or if a process
        ends first."""
        deadline = time.monotonic() + timeout
        while not predicate():
            ended = [i for i, p in enumerate(self.procs) if p.poll() is not None]
            if ended or time.monotonic() > deadline:
                self.kill()
                why = f"process(es) {ended} ended" if ended else f"{timeout:.0f}s passed"
                raise AssertionError(f"{why} before {what}. Logs:\n{self.logs()}")
            time.sleep(0.05)


def run(args, log_dir: str, *, timeout: float, expect=(0,), **kw) -> Group:
    """Start a :class:`Group`, wait for it, check every exit status is in ``expect``."""
    with Group(args, log_dir, **kw) as group:
        codes = group.wait(timeout)
        if any(c not in expect for c in codes):
            raise AssertionError(
                f"exit statuses {codes}, expected {list(expect)}. Logs:\n{group.logs()}"
            )
        return group


def module_args(module: str, *args, step_delay: float = 0.0) -> list:
    """``python -m module args`` as :class:`Group` arguments, each training step slowed by
    ``step_delay`` seconds (through this file's driver) when it is > 0."""
    if step_delay > 0:
        return [HERE, "--step-delay", str(step_delay), "-m", module, *args]
    return ["-m", module, *args]


def _slow_training_steps(delay: float) -> None:
    """Sleep ``delay`` seconds before each training batch (results are unchanged)."""
    from flatrob_jax.data import pipeline

    iterate = pipeline.TrainBatches.iterate

    def slow_iterate(self, *a, **kw):
        for batch in iterate(self, *a, **kw):
            time.sleep(delay)
            yield batch

    pipeline.TrainBatches.iterate = slow_iterate


def _main(argv) -> None:
    import runpy

    delay = 0.0
    if argv[:1] == ["--step-delay"]:
        delay, argv = float(argv[1]), argv[2:]
    if argv[:1] != ["-m"] or len(argv) < 2:
        raise SystemExit("usage: multihost.py [--step-delay S] -m MODULE ARGS...")
    if delay > 0:
        _slow_training_steps(delay)
    sys.argv = [argv[1], *argv[2:]]
    runpy.run_module(argv[1], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    sys.path.insert(0, REPO)
    _main(sys.argv[1:])
