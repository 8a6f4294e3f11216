"""One writer per run directory: a lease file names the attempt that may write it.

A sweep's units run on machines that can be lost and retried elsewhere; a machine thought dead
(partitioned, frozen, slow to die) may still be running its attempt when the retry starts. So
each attempt takes the run directory's lease when it starts (``Lease.take``: it writes
``<workdir>/.lease.json`` naming itself, atomically, replacing the previous holder's) and checks
it before every write that others read (``Lease.check``: before a checkpoint, summary.json,
analysis.json). An attempt whose lease another attempt has taken stops with
:class:`LeaseLost` without writing. The newest attempt always wins: the executor only starts a
new attempt when it has given the old one up.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
import uuid

from flatrob_jax import fileio

LEASE_FILE = ".lease.json"
# The exit status of a unit that lost its lease: neither done nor failed, just superseded.
SUPERSEDED_EXIT_CODE = 76


class LeaseLost(RuntimeError):
    """Another attempt holds the run directory's lease: this one must not write."""


def read(workdir: str) -> dict | None:
    """The lease record of ``workdir`` (attempt, host, pid, node, taken_at), or None."""
    path = fileio.join(workdir, LEASE_FILE)
    if not fileio.exists(path):
        return None
    return json.loads(fileio.read_text(path))


@dataclasses.dataclass(frozen=True)
class Lease:
    workdir: str
    attempt: str

    @classmethod
    def take(cls, workdir: str, attempt: str | None = None, **info) -> Lease:
        """Write the lease for ``attempt`` (a new id when None) into ``workdir``, with the
        host, pid, time and ``info`` (e.g. the executor's node id)."""
        attempt = attempt or uuid.uuid4().hex
        record = {
            "attempt": attempt,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "taken_at": time.time(),
            **info,
        }
        fileio.makedirs(workdir)
        fileio.write_json(fileio.join(workdir, LEASE_FILE), record, indent=1)
        return cls(workdir, attempt)

    def check(self) -> None:
        """Raise :class:`LeaseLost` when another attempt has taken the lease since."""
        holder = read(self.workdir)
        if holder is None or holder.get("attempt") != self.attempt:
            other = "nobody" if holder is None else f"attempt {holder.get('attempt')}"
            where = "" if holder is None else f" on {holder.get('host')} pid {holder.get('pid')}"
            raise LeaseLost(
                f"{self.workdir}: attempt {self.attempt} lost its lease to {other}{where}; "
                f"stopping without writing"
            )
