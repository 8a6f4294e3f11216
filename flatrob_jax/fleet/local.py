"""Units on this machine: up to ``parallel`` at once, each a fresh process.

Each slot runs one unit at a time (``attempts.run_attempt`` in a thread of the driver). Without
``resources`` the units share the machine as any processes do. With ``resources`` ``cpu:K``
the slots get disjoint sets of K CPU cores (``sched_setaffinity``, slot i: cores i*K ..
i*K+K-1, wrapping around); note that XLA then uses K threads, and a different thread count
sums in a different order, so a pinned run's numbers differ from an unpinned one's by float
rounding (amplified over a long training). With ``gpu:K`` the slots get disjoint GPUs
(``CUDA_VISIBLE_DEVICES``). Nothing beyond the standard library.
"""

from __future__ import annotations

import concurrent.futures
import os
import socket

from flatrob_jax.fleet.attempts import run_attempt
from flatrob_jax.fleet.resources import Resources


class LocalExecutor:
    def __init__(self, root: str, *, parallel: int = 1, resources: Resources | None = None):
        if parallel < 1:
            raise ValueError(f"parallel={parallel!r}: must be >= 1")
        self.root, self.slots, self.resources = root, parallel, resources
        self.description = f"this machine ({socket.gethostname()}), {parallel} at a time"
        self._pool = concurrent.futures.ThreadPoolExecutor(parallel)
        self._free = list(range(parallel))
        self._futures = {}  # future -> slot
        self._procs = {}  # slot -> the Popen of its running unit

    def _slot_setup(self, slot: int):
        env, preexec = {}, None
        if self.resources is None:
            return env, preexec
        cpus = int(self.resources.cpus)
        if self.slots > 1 and cpus >= 1 and hasattr(os, "sched_setaffinity"):
            available = sorted(os.sched_getaffinity(0))
            mine = {available[(slot * cpus + i) % len(available)] for i in range(cpus)}
            preexec = lambda: os.sched_setaffinity(0, mine)  # noqa: E731
        if self.resources.gpus:
            k = int(self.resources.gpus)
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(slot * k + i) for i in range(k))
        return env, preexec

    def start(self, job):
        slot = self._free.pop(0)
        env, preexec = self._slot_setup(slot)
        future = self._pool.submit(
            run_attempt,
            self.root,
            job.name,
            job.command,
            env=env,
            preexec=preexec,
            on_start=lambda proc: self._procs.__setitem__(slot, proc),
        )
        self._futures[future] = slot
        return future

    def wait(self, timeout: float) -> list:
        done, _ = concurrent.futures.wait(
            list(self._futures), timeout=timeout, return_when=concurrent.futures.FIRST_COMPLETED
        )
        out = []
        for future in done:
            self._free.append(self._futures.pop(future))
            out.append((future, future.result()))
        return out

    def close(self) -> None:
        """Wait for the pool; units still running (the driver was interrupted) get SIGTERM
        first, so they save their state and exit 75."""
        for future, slot in self._futures.items():
            proc = self._procs.get(slot)
            if not future.done() and proc is not None and proc.poll() is None:
                proc.terminate()
        self._pool.shutdown(wait=True)
