"""Power iteration for the top Hessian eigenvalues, following PyHessian's
``hessian.eigenvalues`` (Yao et al. 2020), kept for comparison with :func:`lanczos`.

For each of the top ``k`` eigenvalues: start from a Gaussian vector; repeat
``v <- orthonormalize(v, found vectors)``, ``w = H v``, ``theta = v . w`` (Rayleigh quotient),
``v <- w / |w|``; stop when ``|theta - theta_prev| / (|theta_prev| + 1e-6) < tol`` (PyHessian's
test on successive estimates, not on the residual) or after ``max_iters``. Deflation by
orthogonalization as in PyHessian. Note that power iteration converges to the eigenvalue of
largest *magnitude*; with a dominant negative eigenvalue it returns that one. Each step is one
jitted call (matvec, Rayleigh quotient, residual ``|H v - theta v|``, normalization), with
its vectors pinned to the operator's output sharding (:func:`.lanczos.vector_sharding`) so it
compiles once.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from flatrob_jax.curvature.lanczos import vector_sharding
from flatrob_jax.curvature.linalg import as_partial, flat_matvec, flattener

PyTree = Any
HIGHEST = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class PowerIterationResult:
    """eigenvalues (descending as found), residuals ``|H v - theta v|`` of the last iterate,
    num_matvecs in total, converged per eigenvalue, the Rayleigh-quotient history of each."""

    eigenvalues: np.ndarray
    residuals: np.ndarray
    num_matvecs: int
    converged: np.ndarray
    history: tuple[np.ndarray, ...]
    eigenvectors: PyTree | None = None


def _orthonormalize(v, found):
    v = v - jnp.matmul(jnp.matmul(found, v, precision=HIGHEST), found, precision=HIGHEST)
    return v / jnp.linalg.norm(v)


def _power_step(matvec, v, found, *, unravel):
    v = _orthonormalize(v, found)
    w = flat_matvec(matvec, unravel, v)
    theta = jnp.dot(v, w, precision=HIGHEST)
    residual = jnp.linalg.norm(w - theta * v)
    return w / jnp.linalg.norm(w), theta, residual


@functools.lru_cache(maxsize=64)
def _power_step_fn(sharding):
    return jax.jit(_power_step, static_argnames=("unravel",), out_shardings=sharding)


def power_iteration(
    matvec: Callable[[PyTree], PyTree],
    params_like: PyTree,
    key: jax.Array,
    *,
    k: int = 1,
    max_iters: int = 100,
    tol: float = 1e-3,
    return_eigenvectors: bool = False,
) -> PowerIterationResult:
    """Top-k eigenvalues by deflated power iteration with PyHessian's stopping rule."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if max_iters < 1:
        raise ValueError(f"max_iters must be >= 1, got {max_iters}")
    dim, dtype, unravel = flattener(params_like)
    op = as_partial(matvec)
    sharding = vector_sharding(op)
    step = _power_step_fn(sharding)
    found = jax.device_put(jnp.zeros((k, dim), dtype), sharding)
    values, residuals, converged, history = [], [], [], []
    num_matvecs = 0
    for i in range(k):
        v = jax.device_put(jax.random.normal(jax.random.fold_in(key, i), (dim,), dtype), sharding)
        thetas, done, residual = [], False, np.inf
        for _ in range(max_iters):
            v_next, theta, residual = step(op, v, found, unravel=unravel)
            num_matvecs += 1
            thetas.append(float(theta))
            if len(thetas) > 1 and abs(thetas[-2] - thetas[-1]) / (abs(thetas[-2]) + 1e-6) < tol:
                done = True
            v = v_next
            if done:
                break
        found = found.at[i].set(_orthonormalize(v, found))
        values.append(thetas[-1])
        residuals.append(float(residual))
        converged.append(done)
        history.append(np.array(thetas))
    return PowerIterationResult(
        eigenvalues=np.array(values),
        residuals=np.array(residuals),
        num_matvecs=num_matvecs,
        converged=np.array(converged),
        history=tuple(history),
        eigenvectors=jax.vmap(unravel)(found) if return_eigenvectors else None,
    )
