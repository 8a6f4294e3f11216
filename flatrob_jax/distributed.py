"""Multi-device and multi-host plumbing: initialization, the 1-D mesh, and host-local to
global arrays.

Steps are written in the pmap programming model (a per-device function with collectives over
the axis ``AXIS``) and run with ``jax.shard_map`` under ``jax.jit`` over a 1-D mesh of all
devices. (``jax.pmap`` itself lowers to jit + shard_map since JAX 0.8, and its documentation
points new code to shard_map.)
"""

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

AXIS = "batch"


# Environment variables that say this process is one of several (Cloud TPU pods, SLURM,
# an explicit coordinator); jax.distributed.initialize() detects the rest from them.
_MULTI_PROCESS_HINTS = ("TPU_WORKER_HOSTNAMES", "CLOUD_TPU_TASK_ID", "JAX_COORDINATOR_ADDRESS",
                        "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """``jax.distributed.initialize`` for multi-host runs.

    With explicit arguments, or when the environment says this is one process of several
    (a Cloud TPU pod, SLURM, Open MPI, JAX_COORDINATOR_ADDRESS), initialize and let any
    failure raise: silently going on would train N independent copies. Otherwise (one
    process on one host) there is nothing to initialize."""
    import os

    if coordinator_address is not None or num_processes is not None:
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
        return
    hints = [v for v in _MULTI_PROCESS_HINTS if v in os.environ]
    if os.environ.get("SLURM_NTASKS") == "1" or os.environ.get("OMPI_COMM_WORLD_SIZE") == "1":
        hints = [v for v in hints if v not in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")]
    if hints:
        jax.distributed.initialize()


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh named ``AXIS`` over the first ``num_devices`` devices (None: all).

    The project's one mesh helper: training, the execution layer (attacks, corruptions, clean
    error) and the curvature objective all shard over this mesh."""
    devices = jax.devices()
    if num_devices is not None:
        if not 1 <= num_devices <= len(devices):
            raise ValueError(f"num_devices must be None (all) or 1..{len(devices)} (the devices "
                             f"available), got {num_devices!r}")
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
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)


def replicate(mesh, tree):
    """Place a pytree fully replicated on the mesh."""
    return jax.device_put(tree, replicated(mesh))


def sharded_step(per_device_fn, mesh, in_specs, out_specs, donate_argnums=()):
    """jit(shard_map(per_device_fn)) over ``mesh``: the pmap programming model.

    ``check_vma=False`` gives pmap's semantics: a value computed from this device's data is
    per-device, and its gradient with respect to replicated parameters is the local gradient
    (the per-device code averages it with ``lax.pmean`` as under pmap). With the default
    ``check_vma=True``, shard_map's AD would instead insert an implicit psum of that gradient,
    and an explicit pmean on top would count the devices twice. Outputs declared replicated
    (``P()``) must be identical on every device: the per-device functions make them so with
    pmean/psum."""
    mapped = jax.shard_map(per_device_fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs,
                           check_vma=False)
    return jax.jit(mapped, donate_argnums=donate_argnums)


def per_device_offset(local_batch_size: int):
    """Index of this device's first example in the global batch (inside shard_map)."""
    return jax.lax.axis_index(AXIS) * local_batch_size


def to_host(tree):
    """Fully replicated global arrays -> numpy on this host."""
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)


__all__ = ["AXIS", "initialize", "make_mesh", "replicate", "shard_host_batch", "sharded_step",
           "per_device_offset", "to_host", "replicated", "batch_sharded", "P"]
