"""Shared plumbing for the iterative eigen/trace solvers: flat vectors and jitted matvecs.

Solvers work on flat vectors (``jax.flatten_util.ravel_pytree`` of the parameter pytree) and
call the operator through :func:`flat_matvec`, inside their own ``jax.jit``-compiled steps.
The operator is passed into those steps as an *argument*: a ``jax.tree_util.Partial`` whose
leaves (parameters, data) are traced, so a dataset operator's arrays are never embedded in
the compiled program as constants. A plain Python callable is accepted too; it is wrapped in
a ``Partial`` with no leaves, so whatever it closes over becomes a compile-time constant
(fine for small tests; pass a ``Partial`` for large data).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

PyTree = Any


def as_partial(matvec: Callable[[PyTree], PyTree]) -> jax.tree_util.Partial:
    """The operator as a pytree that can be passed to a jitted function."""
    if isinstance(matvec, jax.tree_util.Partial):
        return matvec
    if not callable(matvec):
        raise TypeError(f"matvec must be callable (v -> H v), got {type(matvec).__name__}")
    return jax.tree_util.Partial(matvec)


def _vmapped(op, vs):
    return jax.vmap(op)(vs)


def as_block_partial(
    matvec: Callable[[PyTree], PyTree], block_matvec: Callable[[PyTree], PyTree] | None = None
) -> jax.tree_util.Partial:
    """The block operator ``V -> H V`` (every leaf with a leading axis ``k``) as a pytree for
    jitted steps: ``block_matvec`` (e.g. ``DatasetObjective.hvp_block``) if given, else
    ``jax.vmap`` of ``matvec`` (the primal work that does not depend on the direction is
    then left unbatched by vmap, so it runs once for the block too)."""
    if block_matvec is not None:
        if not callable(block_matvec):
            raise TypeError(
                f"block_matvec must be callable (V -> H V), got {type(block_matvec).__name__}"
            )
        return as_partial(block_matvec)
    return jax.tree_util.Partial(_vmapped, as_partial(matvec))


def check_block_size(block_size: int, name: str = "block size") -> int:
    """``block_size`` as an int; ValueError naming it unless it is an integer >= 1."""
    if (
        isinstance(block_size, bool)
        or not isinstance(block_size, (int, np.integer))
        or block_size < 1
    ):
        raise ValueError(f"{name} must be an integer >= 1, got {block_size!r}")
    return int(block_size)


def flattener(params_like: PyTree):
    """``(dim, dtype, unravel)`` for the flat representation of ``params_like``.

    ``unravel`` is hashable by value (it is a static argument of the jitted steps).
    """
    flat, unravel = ravel_pytree(jax.tree_util.tree_map(jnp.asarray, params_like))
    if flat.size == 0:
        raise ValueError("params_like has no array leaves")
    if not jnp.issubdtype(flat.dtype, jnp.floating):
        raise ValueError(f"params_like must be floating point, got dtype {flat.dtype}")
    return int(flat.size), flat.dtype, unravel


def flat_matvec(matvec: jax.tree_util.Partial, unravel: Callable, x: jax.Array) -> jax.Array:
    """``ravel(matvec(unravel(x)))``, in the dtype of ``x``; call inside jit."""
    out, _ = ravel_pytree(matvec(unravel(x)))
    return out.astype(x.dtype)


def flat_block_matvec(
    block_matvec: jax.tree_util.Partial, unravel: Callable, xs: jax.Array
) -> jax.Array:
    """``H`` applied to each row of ``xs`` ([k, P]) in one call of the block operator; call
    inside jit. Returns [k, P] in the dtype of ``xs``."""
    out = block_matvec(jax.vmap(unravel)(xs))
    return jax.vmap(lambda t: ravel_pytree(t)[0])(out).astype(xs.dtype)


def rademacher(key: jax.Array, dim: int, dtype) -> jax.Array:
    """A vector of independent +-1 entries (Rademacher), the Hutchinson probe distribution."""
    return jax.random.rademacher(key, (dim,), dtype=jnp.int8).astype(dtype)


def to_host_f64(x) -> np.ndarray:
    return np.asarray(jax.device_get(x), dtype=np.float64)
