"""Multi-device and multi-host plumbing: process start-up (:func:`initialize`), the 1-D mesh,
host-local to global arrays, and multi-host agreement: decisions taken on process 0 and
broadcast (:func:`decide_on_main`), barriers, the shared-workdir check, and preemption
(:class:`PreemptionGuard`, :data:`PREEMPTED_EXIT_CODE`).

Multi-host rules (docs/design.md): one process per host; only process 0 writes shared files; every
decision that depends on files is taken on process 0 and broadcast, so no process reaches a
collective that another skips.

Steps are written in the pmap programming model (a per-device function with collectives over
the axis ``AXIS``) and run with ``jax.shard_map`` under ``jax.jit`` over a 1-D mesh of all
devices. (``jax.pmap`` itself lowers to jit + shard_map since JAX 0.8, and its documentation
points new code to shard_map.)
"""

import contextlib

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "batch"


MODES = ("auto", "on", "off")
# The environment variable with the meaning of the entry points' --distributed flag (the flag,
# when given, wins).
ENV_VAR = "FLATROB_DISTRIBUTED"
FLAG_HELP = (
    f"multi-host start-up: 'on' calls jax.distributed.initialize() (cluster detected "
    f"by JAX: Cloud TPU VM metadata, GKE, SLURM, Open MPI; JAX_COORDINATOR_ADDRESS, "
    f"JAX_NUM_PROCESSES, JAX_PROCESS_ID honoured), 'off' never does, 'auto' (default) "
    f"does where the environment shows several processes. Default: ${ENV_VAR} or auto"
)
# Exit status of an entry point stopped by SIGTERM/SIGHUP/SIGINT after saving a resumable
# checkpoint (EX_TEMPFAIL in sysexits.h: "temporary failure, the user is invited to retry").
PREEMPTED_EXIT_CODE = 75
SHARED_WORKDIR_MESSAGE = (
    "multi-host runs need a workdir every host can see (gs:// or a shared mount)"
)
_METADATA_URL = "http://{host}/computeMetadata/v1/instance/attributes/worker-network-endpoints"
_GOOGLE_PCI_VENDOR = "0x1ae0"
# PCI device ids of TPU chips (v3, v4, v5p, v5e, v6e, TPU7x and one without a public name), as
# in jax/_src/hardware_utils.py; Google's vendor id alone also matches the gVNIC network card
# of ordinary Compute Engine VMs.
_TPU_PCI_DEVICES = ("0x0027", "0x0056", "0x005e", "0x0062", "0x0063", "0x006f", "0x0076")


def _count(environ, name: str) -> int | None:
    value = environ.get(name)
    try:
        return None if value in (None, "") else int(value)
    except ValueError as e:
        raise ValueError(f"${name}={value!r} must be an integer (a process count or id)") from e


def _on_cloud_tpu_vm(pci_root: str = "/sys/bus/pci/devices") -> bool:
    """A TPU chip is attached over PCI: this is a Cloud TPU VM."""
    import glob
    import os

    for vendor in glob.glob(os.path.join(pci_root, "*", "vendor")):
        try:
            with open(vendor) as f, open(os.path.join(os.path.dirname(vendor), "device")) as g:
                if f.read().strip() == _GOOGLE_PCI_VENDOR and g.read().strip() in _TPU_PCI_DEVICES:
                    return True
        except OSError:
            continue
    return False


def _tpu_vm_workers(environ, timeout_s: float = 5.0) -> int:
    """Number of workers of this Cloud TPU VM's slice, from the metadata server."""
    import urllib.error
    import urllib.request

    url = _METADATA_URL.format(host=environ.get("GCE_METADATA_IP", "metadata.google.internal"))
    request = urllib.request.Request(url, headers={"Metadata-Flavor": "Google"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            endpoints = response.read().decode()
    except urllib.error.HTTPError as e:
        if e.code == 404:  # no such attribute: not a TPU VM created as a slice
            return 1
        raise RuntimeError(f"the metadata server answered {e.code} for {url}") from e
    except OSError as e:
        raise RuntimeError(
            f"this looks like a Cloud TPU VM (a TPU chip is attached) but its metadata server "
            f"did not say how many workers the slice has ({url}: {e}); pass --distributed=on "
            f"(or off for a single-host VM), or set ${ENV_VAR}"
        ) from e
    return len([w for w in endpoints.split(",") if w.strip()])


def cluster_evidence(environ=None, *, probe_tpu_vm: bool = True) -> list[str]:
    """Why this process looks like one of several (empty: it does not): explicit JAX
    variables, SLURM or Open MPI with more than one task, a GKE TPU slice of several hosts,
    or a Cloud TPU VM whose metadata lists several workers (``probe_tpu_vm``)."""
    import os

    environ = os.environ if environ is None else environ
    evidence = []
    if environ.get("JAX_COORDINATOR_ADDRESS"):
        evidence.append("JAX_COORDINATOR_ADDRESS is set")
    for name in ("JAX_NUM_PROCESSES", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        if (_count(environ, name) or 1) > 1:
            evidence.append(f"{name}={environ[name]}")
    hosts = environ.get("TPU_PROCESS_ADDRESSES") or environ.get("TPU_WORKER_HOSTNAMES") or ""
    if len([h for h in hosts.split(",") if h.strip()]) > 1:
        evidence.append("a GKE TPU slice of several hosts (TPU_WORKER_HOSTNAMES)")
    if (
        not evidence
        and probe_tpu_vm
        and not environ.get("TPU_SKIP_MDS_QUERY")
        and _on_cloud_tpu_vm()
    ):
        workers = _tpu_vm_workers(environ)
        if workers > 1:
            evidence.append(f"a Cloud TPU VM slice of {workers} workers (metadata server)")
    return evidence


def resolve_mode(mode: str | None = None, environ=None) -> str:
    """The start-up mode: ``mode`` (the flag) if given, else ``$FLATROB_DISTRIBUTED``, else
    'auto'; checked against :data:`MODES`."""
    import os

    environ = os.environ if environ is None else environ
    source = "--distributed"
    if mode is None:
        mode, source = environ.get(ENV_VAR) or "auto", f"${ENV_VAR}"
    mode = str(mode).strip().lower()
    if mode not in MODES:
        raise ValueError(f"{source}={mode!r}: must be one of {MODES}")
    return mode


def initialize(
    mode: str | None = None,
    *,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Multi-host start-up, once per process, before any other JAX call; returns whether
    ``jax.distributed`` is (now) initialized.

    ``mode`` (the entry points' ``--distributed``; None: ``$FLATROB_DISTRIBUTED`` or 'auto'):
    'off' never initializes; 'on' always does; 'auto' does where :func:`cluster_evidence`
    finds several processes. Initializing passes ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``
    (JAX itself reads only ``JAX_COORDINATOR_ADDRESS``) and leaves the rest to JAX's cluster
    detection (Cloud TPU VM metadata, GKE, SLURM, Open MPI). Any failure raises: silently
    going on would train N independent copies of the model. Explicit arguments imply 'on'."""
    import os

    if jax.distributed.is_initialized():
        return True
    explicit = (coordinator_address, num_processes, process_id) != (None, None, None)
    mode = "on" if explicit and mode is None else resolve_mode(mode)
    if mode == "off" or (mode == "auto" and not cluster_evidence()):
        return False
    if num_processes is None:
        num_processes = _count(os.environ, "JAX_NUM_PROCESSES")
    if process_id is None:
        process_id = _count(os.environ, "JAX_PROCESS_ID")
    try:
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
    except Exception as e:
        raise RuntimeError(
            f"jax.distributed.initialize failed (--distributed={mode}; coordinator "
            f"{coordinator_address or os.environ.get('JAX_COORDINATOR_ADDRESS')!r}, "
            f"num_processes={num_processes}, process_id={process_id}): {e}. Without it every "
            f"host would train its own copy; fix the cluster set-up or pass --distributed=off "
            f"for a single-host run."
        ) from e
    return True


def mode_from_argv(argv) -> str | None:
    """The value of ``--distributed`` in ``argv`` (None when absent), read before the flags are
    parsed: parsing loads the config file, whose imports may already run JAX computations, and
    ``jax.distributed.initialize`` must come before any."""
    for i, arg in enumerate(argv[1:], start=1):
        if arg == "--distributed" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--distributed="):
            return arg.partition("=")[2]
    return None


def start_up_then(parse):
    """An ``absl.app.run`` flags parser: :func:`initialize` with ``--distributed`` from argv
    (else ``$FLATROB_DISTRIBUTED``, else auto), then ``parse(argv)`` (e.g. ``flags.FLAGS``)."""

    def parser(argv):
        initialize(mode_from_argv(argv))
        return parse(argv)

    return parser


# --------------------------------------------------------------------------- agreement


def is_main() -> bool:
    """Process 0: the one that writes shared files and takes file-based decisions."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process reached the barrier ``name`` (the same name everywhere; a
    no-op with one process). Used where a file written by one host is read by another."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _broadcast_bytes(data: bytes) -> bytes:
    from jax.experimental import multihost_utils

    size = int(multihost_utils.broadcast_one_to_all(np.int32(len(data))))
    padded = 1 << max(size - 1, 0).bit_length()  # few distinct shapes: few compilations
    buf = np.zeros(padded, np.uint8)
    if is_main():
        buf[:size] = np.frombuffer(data, np.uint8)
    out = multihost_utils.broadcast_one_to_all(buf)
    return np.asarray(out, np.uint8)[:size].tobytes()


def broadcast_from_main(value):
    """Process 0's ``value`` (anything JSON can hold) on every process; every process must
    call this at the same point. With one process, ``value`` itself."""
    if jax.process_count() == 1:
        return value
    import json

    data = json.dumps(value).encode() if is_main() else b""
    return json.loads(_broadcast_bytes(data).decode())


def decide_on_main(fn, what: str = "a decision"):
    """``fn()`` run on process 0 only (e.g. reading files: what exists, which step to resume)
    and its JSON-able result given to every process, so all take the same branch. If ``fn``
    raises on process 0, it re-raises there and every other process raises a RuntimeError
    naming it, instead of waiting forever in the next collective."""
    if jax.process_count() == 1:
        return fn()
    error = None
    if is_main():
        try:
            message = {"ok": fn()}
        except Exception as e:  # noqa: BLE001 - re-raised below, after the others are told
            error, message = e, {"error": f"{type(e).__name__}: {e}"}
    else:
        message = None
    message = broadcast_from_main(message)
    if error is not None:
        raise error
    if "error" in message:
        raise RuntimeError(f"process 0 failed while deciding {what}: {message['error']}")
    return message["ok"]


def gather_flags(flag: bool) -> list[bool]:
    """Every process's ``flag``, in process order (a collective; [flag] with one process)."""
    if jax.process_count() == 1:
        return [bool(flag)]
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.asarray([int(bool(flag))], np.int32))
    return [bool(f) for f in np.asarray(flags).reshape(-1)]


def any_process(flag: bool) -> bool:
    """Whether ``flag`` is true on at least one process (a collective)."""
    return any(gather_flags(flag))


class SharedWorkdirError(RuntimeError):
    """Some process of a multi-host run cannot see the files process 0 writes."""


def check_shared_workdir(workdir: str) -> None:
    """With several processes: process 0 writes a fresh token into ``workdir``, and every
    process must read it back after a barrier. Otherwise every process raises
    :class:`SharedWorkdirError` (with :data:`SHARED_WORKDIR_MESSAGE`), together, rather than
    running on and later hanging or writing results no one else sees."""
    if jax.process_count() == 1:
        return
    import secrets

    from flatrob_jax import fileio

    path = fileio.join(workdir, ".flatrob_shared_workdir_check")

    def write_token():
        token = secrets.token_hex(16)
        fileio.makedirs(workdir)
        fileio.atomic_write_text(path, token)
        return token

    token = decide_on_main(write_token, f"the shared-workdir token in {workdir!r}")
    barrier("flatrob_jax:shared_workdir:written")
    try:
        seen = fileio.read_text(path) if fileio.exists(path) else None
    except OSError:
        seen = None
    flags = gather_flags(seen == token)
    if is_main():
        with contextlib.suppress(OSError):
            fileio.remove(path)
    if not all(flags):
        blind = [i for i, ok in enumerate(flags) if not ok]
        raise SharedWorkdirError(
            f"{SHARED_WORKDIR_MESSAGE}: process(es) {blind} of {len(flags)} did not see the "
            f"file {path!r} that process 0 wrote into --workdir {workdir!r}"
        )


# --------------------------------------------------------------------------- preemption


class Preempted(Exception):
    """Training stopped on SIGTERM/SIGHUP/SIGINT after saving a checkpoint at ``step``: resumable.
    Entry points exit with :data:`PREEMPTED_EXIT_CODE` (:func:`exit_on_preemption`)."""

    def __init__(self, step: int, workdir: str = ""):
        super().__init__(
            f"preempted: checkpoint saved at step {step} in {workdir!r}; run the "
            f"same command again to resume"
        )
        self.step = step
        self.workdir = workdir


def _preemption_service_active() -> bool:
    from jax._src import distributed as jax_distributed

    state = jax_distributed.global_state
    return state.client is not None and state.preemption_sync_manager is not None


class PreemptionGuard:
    """SIGTERM, SIGHUP and SIGINT set a flag; :meth:`should_stop` says, at the same step on
    every process, that the loop must save and stop.

    SIGHUP counts as a shutdown too: when a VM shuts down, systemd sends SIGTERM and then
    SIGHUP to every process of a session, and a terminal (a tmux pane, an ssh session) that
    goes away sends SIGHUP, whose default action would kill the process before it saved.

    Agreement: with several processes and JAX's preemption service (on by default with
    ``jax.distributed``), SIGTERM is received by JAX's notifier, which every process learns of
    from the coordination service, and ``multihost_utils.reached_preemption_sync_point``
    names one step for all. SIGHUP, SIGINT (and SIGTERM where the service is off) set this
    guard's flag, which the processes combine with a collective every ``check_every`` steps.
    A second SIGINT interrupts at once (KeyboardInterrupt). Use as a context manager: the
    previous handlers are restored on exit. Signal handlers can only be installed from the
    main thread; elsewhere the guard only follows the preemption service."""

    def __init__(self, check_every: int = 1, log=print):
        self.check_every = max(1, int(check_every))
        self.requested = None  # the signal's name once one arrived
        self.reason = None  # why should_stop said stop
        self._log = log
        self._multi = jax.process_count() > 1
        self._service = self._multi and _preemption_service_active()
        self._previous = {}

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return self
        signals = [signal.SIGINT, signal.SIGHUP] + ([] if self._service else [signal.SIGTERM])
        for sig in signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self) -> None:
        """Restore the signal handlers that were there before."""
        import signal

        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def watch(self, iterable):
        """Yield from ``iterable`` with the handlers installed (removed when it ends), so a
        loop gains the guard without changing its body: ``for b in guard.watch(batches)``."""
        with self:
            yield from iterable

    def _handle(self, signum, frame):
        import signal

        del frame
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        self._log(
            f"[process {jax.process_index()}] {self.requested} received: saving a "
            f"checkpoint at the next step all processes agree on, then exiting with "
            f"status {PREEMPTED_EXIT_CODE}"
        )

    def should_stop(self, step: int) -> bool:
        """Called by every process after every step (same ``step`` numbers everywhere)."""
        reasons = []
        if self._service:
            from jax.experimental import multihost_utils

            if multihost_utils.reached_preemption_sync_point(step):
                reasons.append("preemption notice (JAX preemption service)")
        if not self._multi:
            if self.requested is not None:
                reasons.append(self.requested)
        elif step % self.check_every == 0:
            if any_process(self.requested is not None):  # every process takes part
                reasons.append(self.requested or "a signal to another process")
        self.reason = ", ".join(reasons) or None
        return bool(reasons)


@contextlib.contextmanager
def exit_on_preemption():
    """For entry points: :class:`Preempted` becomes ``SystemExit(PREEMPTED_EXIT_CODE)``."""
    import sys

    try:
        yield
    except Preempted as e:
        print(
            f"[process {jax.process_index()}] {e} (exit status {PREEMPTED_EXIT_CODE})",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(PREEMPTED_EXIT_CODE) from e


# --------------------------------------------------------------------------- meshes

_LOCAL_ONLY = []  # non-empty inside process_local()


def is_process_local() -> bool:
    """Inside :func:`process_local`: this process works alone, on its own devices."""
    return bool(_LOCAL_ONLY)


@contextlib.contextmanager
def process_local():
    """Inside, :func:`make_mesh` builds meshes of this process's devices only: the analyses
    of a multi-host sweep run one workdir per process, with no collective across hosts."""
    _LOCAL_ONLY.append(True)
    try:
        yield
    finally:
        _LOCAL_ONLY.pop()


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh named ``AXIS`` over the first ``num_devices`` devices (None: all; this
    process's own devices only inside :func:`process_local`).

    The project's one mesh helper: training, the execution layer (attacks, corruptions, clean
    error) and the curvature objective all shard over this mesh."""
    devices = jax.local_devices() if _LOCAL_ONLY else jax.devices()
    if num_devices is not None:
        if not 1 <= num_devices <= len(devices):
            raise ValueError(
                f"num_devices must be None (all) or 1..{len(devices)} (the devices "
                f"available), got {num_devices!r}"
            )
        devices = devices[:num_devices]
    return jax.sharding.Mesh(np.asarray(devices), (AXIS,))


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh) -> NamedSharding:
    return NamedSharding(mesh, P(AXIS))


def shard_host_batch(mesh, tree):
    """Host-local arrays (this process's slice of the global batch, leading axis) -> global
    jax.Arrays sharded over the mesh's batch axis."""
    sharding = batch_sharded(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree
    )


def replicate(mesh, tree):
    """Place a pytree fully replicated on the mesh.

    With several processes, every process passes the same values (same seed, same restored
    checkpoint) and each places its host copy on its own devices (``make_array_from_callback``):
    ``jax.device_put`` would refuse an array committed to a local device ("addressable
    devices") and otherwise compares the values across processes, one collective per leaf."""
    sharding = replicated(mesh)
    if jax.process_count() == 1 or sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)

    def put(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(
                put(jax.random.key_data(x)), impl=jax.random.key_impl(x)
            )
        if isinstance(x, jax.Array) and x.sharding == sharding:
            return x
        host = np.asarray(jax.device_get(x))
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)


def data_parallel(per_device_fn, mesh, in_specs, out_specs, donate_argnums=()):
    """jit(shard_map(per_device_fn)) over ``mesh``: the pmap programming model, for the
    training and eval steps (``execution.sharded_step`` is the cached variant for the steps of
    host-driven loops).

    ``check_vma=False`` gives pmap's semantics: a value computed from this device's data is
    per-device, and its gradient with respect to replicated parameters is the local gradient
    (the per-device code averages it with ``lax.pmean`` as under pmap). With the default
    ``check_vma=True``, shard_map's AD would instead insert an implicit psum of that gradient,
    and an explicit pmean on top would count the devices twice. Outputs declared replicated
    (``P()``) must be identical on every device: the per-device functions make them so with
    pmean/psum."""
    mapped = jax.shard_map(
        per_device_fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False
    )
    return jax.jit(mapped, donate_argnums=donate_argnums)


__all__ = [
    "AXIS",
    "ENV_VAR",
    "MODES",
    "PREEMPTED_EXIT_CODE",
    "SHARED_WORKDIR_MESSAGE",
    "Preempted",
    "PreemptionGuard",
    "SharedWorkdirError",
    "any_process",
    "barrier",
    "broadcast_from_main",
    "check_shared_workdir",
    "cluster_evidence",
    "decide_on_main",
    "exit_on_preemption",
    "gather_flags",
    "is_main",
    "is_process_local",
    "mode_from_argv",
    "process_local",
    "resolve_mode",
    "start_up_then",
    "initialize",
    "make_mesh",
    "replicate",
    "shard_host_batch",
    "data_parallel",
    "replicated",
    "batch_sharded",
]
