"""Running a per-device attack program over a dataset.

Three conventions make the outcome for an example independent of batch size and device count
(DESIGN.md):

* per-example keys: example ``i`` of the arrays handed to an attack gets
  ``fold_in(key, i)``; every random draw for that example derives from it;
* fixed padded batches: the host cuts the (still attacked) examples into batches of one fixed
  size, pads the last one with copies of a real example flagged ``valid=False``, so one
  compiled program serves every batch;
* the program is written in the pmap model (a per-device function) and run with
  ``jax.shard_map`` under ``jax.jit`` over a 1-D mesh with axis ``'batch'``.

A *program* is a module-level function ``program(model_fn, valid, *batched, **static)``
returning a tuple of per-example arrays; ``model_fn`` is a ``jax.tree_util.Partial`` (so model
weights travel as replicated arguments, not as constants baked into the compiled program).
"""
from __future__ import annotations

import functools
import math
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

AXIS = "batch"


def default_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
    """The project's 1-D ``'batch'`` mesh (``flatrob_jax.distributed.make_mesh``)."""
    try:
        from flatrob_jax.distributed import make_mesh
    except ImportError:  # pragma: no cover - distributed.py is part of the package
        devices = jax.devices()[: num_devices or None]
        return jax.sharding.Mesh(np.asarray(devices), (AXIS,))
    return make_mesh(num_devices)


def as_model_fn(apply_fn: Callable) -> jax.tree_util.Partial:
    """Wrap ``apply_fn(x) -> logits`` as a pytree that jit can take as an argument.

    Pass ``jax.tree_util.Partial(model.apply_like_fn, variables)`` to have the weights traced
    (one compilation for any weights); a plain function is used as is (its closed-over arrays
    become constants of the compiled program).
    """
    if isinstance(apply_fn, jax.tree_util.Partial):
        return apply_fn
    if not callable(apply_fn):
        raise TypeError(f"apply_fn must be callable (x -> logits), got {type(apply_fn).__name__}")
    return jax.tree_util.Partial(apply_fn)


def typed_key(key: jax.Array) -> jax.Array:
    """Accept a new-style typed key or a raw ``uint32[2]`` PRNGKey; return a typed key."""
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    return jax.random.wrap_key_data(jnp.asarray(key, jnp.uint32))


def derive_key(key: jax.Array, tag: int) -> jax.Array:
    """Key of one attack of a cascade (``fold_in(key, tag)``)."""
    return jax.random.fold_in(typed_key(key), tag)


@jax.jit
def _fold_in_indices(key: jax.Array, indices: jax.Array) -> jax.Array:
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(indices)


def example_key_data(key: jax.Array, indices: np.ndarray) -> tuple[np.ndarray, str]:
    """Raw data of ``fold_in(key, i)`` for each example index ``i``, and the key impl name."""
    key = typed_key(key)
    keys = _fold_in_indices(key, jnp.asarray(indices, jnp.uint32))
    return np.asarray(jax.random.key_data(keys)), str(jax.random.key_impl(key))


def wrap_keys(key_data: jax.Array, impl: str) -> jax.Array:
    """Inverse of :func:`example_key_data` inside a program."""
    return jax.random.wrap_key_data(key_data, impl=impl)


@functools.lru_cache(maxsize=128)
def _compiled(program: Callable, static: tuple, mesh: jax.sharding.Mesh, num_batched: int):
    fn = functools.partial(program, **dict(static))
    in_specs = (P(), P(AXIS)) + (P(AXIS),) * num_batched
    # check_vma=False: pmap semantics; programs use no collectives, and their device-local
    # while_loop predicates (early exit once a device's examples are all fooled) are allowed.
    mapped = jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=P(AXIS), check_vma=False)
    return jax.jit(mapped)


def padded_batch_size(batch_size: int, num_examples: int, num_devices: int) -> int:
    """Global batch size: ``batch_size`` rounded up to a multiple of the device count, and no
    larger than needed for ``num_examples``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    per_device = math.ceil(min(batch_size, max(num_examples, 1)) / num_devices)
    return per_device * num_devices


def run_batched(program: Callable, static: dict, apply_fn: Callable,
                inputs: Sequence[np.ndarray], *, batch_size: int,
                mesh: jax.sharding.Mesh | None = None, log: Callable[[str], None] | None = None,
                desc: str = "") -> tuple[np.ndarray, ...]:
    """Run ``program`` over all examples of ``inputs`` (host arrays with a common leading axis)
    in fixed padded batches, sharded over ``mesh``; return its outputs as host arrays."""
    mesh = default_mesh() if mesh is None else mesh
    n = int(inputs[0].shape[0])
    num_devices = int(mesh.devices.size)
    bs = padded_batch_size(batch_size, n, num_devices)
    fn = _compiled(program, tuple(sorted(static.items())), mesh, len(inputs))
    model_fn = jax.device_put(as_model_fn(apply_fn), NamedSharding(mesh, P()))
    sharding = NamedSharding(mesh, P(AXIS))
    num_batches = math.ceil(n / bs) if n else 0
    outputs: list[list[np.ndarray]] = []
    start = time.perf_counter()
    for b in range(num_batches):
        lo, hi = b * bs, min((b + 1) * bs, n)
        take = np.concatenate([np.arange(lo, hi), np.full(bs - (hi - lo), lo)])
        valid = np.arange(bs) < (hi - lo)
        args = [jax.device_put(valid, sharding)]
        args += [jax.device_put(np.asarray(a)[take], sharding) for a in inputs]
        out = jax.tree.map(lambda o: np.asarray(o)[: hi - lo], fn(model_fn, *args))
        outputs.append(list(out))
        if log is not None:
            elapsed = time.perf_counter() - start
            rate = hi / max(elapsed, 1e-9)
            log(f"{desc}: batch {b + 1}/{num_batches}, {hi}/{n} examples, "
                f"{rate:.1f} examples/s, ETA {(n - hi) / max(rate, 1e-9):.0f} s")
    if not outputs:
        return ()
    return tuple(np.concatenate(parts, axis=0) for parts in zip(*outputs))
