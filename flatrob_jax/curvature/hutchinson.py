"""Stochastic trace estimation: Hutchinson (with tr(H^2) and per-layer traces) and Hutch++.

Hutchinson (1989): for Rademacher probes ``z`` (independent +-1 entries), ``E[z^T H z] =
tr(H)``. With n probes the estimate is the sample mean of ``z_i^T H z_i`` and its standard
error is the sample standard deviation over ``sqrt(n)``. The same probes give, at no extra
cost,

* ``tr(H^2) = E[|H z|^2]`` (since ``E[z z^T] = I``), i.e. the squared Frobenius norm of H;
* per-layer traces ``tr(H_ll) = E[z_l^T (H z)_l]`` for each diagonal block ``l`` (a layer is a
  top-level parameter collection, e.g. ``Conv_0`` with its kernel and bias).

Stopping on the confidence interval: after at least ``min_probes`` probes, stop as soon as
the half-width of the two-sided ``confidence`` Student-t interval,
``t_{(1+c)/2, n-1} * stderr``, is at most ``rel_tol * |trace|``. (Sequential stopping makes
the final interval's coverage approximate; ``min_probes`` >= 10 keeps it close to nominal.)

Hutch++ (Meyer, Musco, Musco & Woodruff 2021): with m matvecs split in three, take a
Rademacher sketch ``S`` (m/3 columns), ``Q = orth(H S)``; then
``tr(H) ~= tr(Q^T H Q) + mean_i g_i^T (I - QQ^T) H (I - QQ^T) g_i`` over the remaining
Rademacher probes ``g_i``. The first term is exact given Q, so the reported standard error is
that of the second (Hutchinson) term. It removes the top of the spectrum from the variance,
which helps when a few large eigenvalues dominate (typical of trained networks).

Probe i is drawn from ``jax.random.fold_in(key, i)``, so estimates are reproducible and a
longer run extends a shorter one with the same probes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from flatrob_jax.curvature.linalg import as_partial, flat_matvec, flattener, rademacher

PyTree = Any
HIGHEST = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A Monte Carlo mean with its standard error (and number of samples)."""

    value: float
    stderr: float
    num_samples: int


@dataclasses.dataclass(frozen=True)
class TraceResult:
    """Output of :func:`hutchinson_trace` / :func:`hutchpp_trace`.

    Attributes:
      trace, stderr: the estimate of tr(H) and its standard error.
      num_matvecs: Hessian-vector products used.
      ci_halfwidth: half-width of the ``confidence`` interval (Student t).
      confidence: the interval's nominal coverage.
      trace_of_square: tr(H^2) estimate (Hutchinson only; None for Hutch++).
      per_layer: ``{layer name: Estimate}`` of diagonal-block traces (Hutchinson only).
      samples: the per-probe values ``z^T H z`` (for Hutch++: of the residual term).
    """

    trace: float
    stderr: float
    num_matvecs: int
    ci_halfwidth: float
    confidence: float
    samples: np.ndarray
    trace_of_square: Estimate | None = None
    per_layer: dict[str, Estimate] | None = None

    def interval(self) -> tuple[float, float]:
        return self.trace - self.ci_halfwidth, self.trace + self.ci_halfwidth


def _mean_stderr(x: np.ndarray) -> tuple[float, float]:
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 2:
        return float(np.mean(x)), math.inf
    return float(np.mean(x)), float(np.std(x, ddof=1) / math.sqrt(len(x)))


def _t_quantile(confidence: float, num_samples: int) -> float:
    return float(scipy.stats.t.ppf(0.5 + confidence / 2, df=max(num_samples - 1, 1)))


def layer_names(params_like: PyTree) -> list[str]:
    """One name per leaf: its path without the last key (``Conv_0/kernel`` -> ``Conv_0``)."""
    names = []
    for path, _ in jax.tree_util.tree_flatten_with_path(params_like)[0]:
        keys = [str(getattr(p, "key", getattr(p, "idx", getattr(p, "name", p)))) for p in path]
        names.append("/".join(keys[:-1]) if len(keys) > 1 else (keys[0] if keys else "params"))
    return names


def _probe_step(matvec, key, *, unravel, dim, dtype):
    z = rademacher(key, dim, dtype)
    hz = flat_matvec(matvec, unravel, z)
    leafwise = jax.tree_util.tree_map(
        lambda a, b: jnp.sum(a * b), unravel(z), unravel(hz)
    )  # z_l . (Hz)_l per leaf
    return jnp.dot(z, hz, precision=HIGHEST), jnp.dot(hz, hz, precision=HIGHEST), leafwise


_probe_step_jit = jax.jit(_probe_step, static_argnames=("unravel", "dim", "dtype"))


def _check_confidence(confidence: float, rel_tol: float | None, min_probes: int, num_probes: int):
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if rel_tol is not None and not rel_tol > 0:
        raise ValueError(f"rel_tol must be > 0 or None, got {rel_tol}")
    if num_probes < 1 or not 1 <= min_probes:
        raise ValueError(
            f"need num_probes >= 1 and min_probes >= 1, got {num_probes}, {min_probes}"
        )


def hutchinson_trace(
    matvec: Callable[[PyTree], PyTree],
    params_like: PyTree,
    key: jax.Array,
    *,
    num_probes: int,
    min_probes: int = 10,
    rel_tol: float | None = None,
    confidence: float = 0.95,
    progress: Callable[[int, int], None] | None = None,
) -> TraceResult:
    """Hutchinson estimate of tr(H) (plus tr(H^2) and per-layer traces), see module doc.

    Args:
      matvec, params_like, key: operator, vector structure, PRNG key for the probes.
      num_probes: maximum number of probes (= Hessian-vector products).
      min_probes: probes always taken before the interval test (with ``rel_tol``).
      rel_tol: stop once the ``confidence`` half-width is <= ``rel_tol * |trace|``; None runs
        all ``num_probes``.
      confidence: nominal coverage of the reported interval.
      progress: called as ``progress(probes done, num_probes)`` after each probe.
    """
    _check_confidence(confidence, rel_tol, min_probes, num_probes)
    dim, dtype, unravel = flattener(params_like)
    op = as_partial(matvec)
    names = layer_names(params_like)
    quad, squares, per_leaf = [], [], []
    for i in range(num_probes):
        q, sq, leafwise = _probe_step_jit(
            op, jax.random.fold_in(key, i), unravel=unravel, dim=dim, dtype=dtype
        )
        quad.append(float(q))
        squares.append(float(sq))
        per_leaf.append(np.asarray(jax.tree_util.tree_leaves(leafwise), dtype=np.float64))
        n = len(quad)
        if progress is not None:
            progress(n, num_probes)
        if rel_tol is not None and n >= max(min_probes, 2):
            mean, se = _mean_stderr(quad)
            if _t_quantile(confidence, n) * se <= rel_tol * abs(mean):
                break
    n = len(quad)
    trace, stderr = _mean_stderr(quad)
    per_leaf = np.stack(per_leaf)  # [probes, leaves]
    per_layer = {}
    for name in dict.fromkeys(names):
        cols = [j for j, nm in enumerate(names) if nm == name]
        value, se = _mean_stderr(per_leaf[:, cols].sum(axis=1))
        per_layer[name] = Estimate(value, se, n)
    sq_mean, sq_se = _mean_stderr(squares)
    return TraceResult(
        trace=trace,
        stderr=stderr,
        num_matvecs=n,
        ci_halfwidth=_t_quantile(confidence, n) * stderr,
        confidence=confidence,
        samples=np.array(quad),
        trace_of_square=Estimate(sq_mean, sq_se, n),
        per_layer=per_layer,
    )


def _single_matvec(matvec, x, *, unravel):
    return flat_matvec(matvec, unravel, x)


_single_matvec_jit = jax.jit(_single_matvec, static_argnames=("unravel",))


def _apply_rows(op, block, unravel):
    """H applied to each row of ``block`` ([r, P]), one compiled matvec call per row (the same
    compiled program for every block size)."""
    return jnp.stack([_single_matvec_jit(op, row, unravel=unravel) for row in block])


def hutchpp_trace(
    matvec: Callable[[PyTree], PyTree],
    params_like: PyTree,
    key: jax.Array,
    *,
    num_matvecs: int,
    confidence: float = 0.95,
) -> TraceResult:
    """Hutch++ estimate of tr(H) with ``num_matvecs`` (>= 3) Hessian-vector products."""
    if num_matvecs < 3:
        raise ValueError(f"Hutch++ needs num_matvecs >= 3, got {num_matvecs}")
    _check_confidence(confidence, None, 1, num_matvecs)
    dim, dtype, unravel = flattener(params_like)
    op = as_partial(matvec)
    sketch = min(num_matvecs // 3, dim)
    residual_probes = num_matvecs - 2 * sketch
    k_sketch, k_probe = jax.random.split(key)
    s = jax.random.rademacher(k_sketch, (sketch, dim), dtype=jnp.int8).astype(dtype)
    q = jnp.linalg.qr(_apply_rows(op, s, unravel).T)[0].T  # [sketch, P], orthonormal rows
    hq = _apply_rows(op, q, unravel)
    top = float(jnp.sum(q * hq))
    g = jax.random.rademacher(k_probe, (residual_probes, dim), dtype=jnp.int8).astype(dtype)
    g = g - jnp.matmul(jnp.matmul(g, q.T, precision=HIGHEST), q, precision=HIGHEST)
    hg = _apply_rows(op, g, unravel)
    samples = np.asarray(jnp.sum(g * hg, axis=1), dtype=np.float64)
    rest, stderr = _mean_stderr(samples)
    return TraceResult(
        trace=top + rest,
        stderr=stderr,
        num_matvecs=2 * sketch + residual_probes,
        ci_halfwidth=_t_quantile(confidence, residual_probes) * stderr,
        confidence=confidence,
        samples=samples,
    )
