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

Blocks. With ``probe_block_size = b > 1`` the probes are applied ``b`` at a time through the
block operator (``block_matvec``, e.g. ``DatasetObjective.hvp_block``: one pass over the data,
the primal computed once for the ``b`` tangents; by default ``jax.vmap`` of ``matvec``). The
probes and keys are the same as with ``b = 1`` and the estimate equals the one-at-a-time
path's to float rounding. Hutchinson's stopping rule is still checked after every probe, in
order, so it stops at the same probe; the rest of that last block (at most ``b - 1`` HVPs) is
computed and discarded (``num_matvecs`` counts the probes used). Memory grows with ``b``:
``2 * b`` flat vectors of P floats for the probes and their products, plus ``b`` tangent
copies of the network's activations per microbatch.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from flatrob_jax.curvature.linalg import (
    as_block_partial,
    as_partial,
    check_block_size,
    flat_block_matvec,
    flat_matvec,
    flattener,
    rademacher,
)

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


def _probe_block(block_matvec, key, first, *, unravel, dim, dtype, size):
    """:func:`_probe_step` for the ``size`` probes ``first, first + 1, ...`` (keys
    ``fold_in(key, i)``, as one at a time), H applied to all of them in one block call."""
    index = first + jnp.arange(size, dtype=jnp.uint32)
    z = jax.vmap(lambda i: rademacher(jax.random.fold_in(key, i), dim, dtype))(index)
    hz = flat_block_matvec(block_matvec, unravel, z)
    leafwise = jax.tree_util.tree_map(
        lambda a, b: jnp.sum((a * b).reshape(size, -1), axis=1),
        jax.vmap(unravel)(z),
        jax.vmap(unravel)(hz),
    )
    quad = jnp.einsum("kp,kp->k", z, hz, precision=HIGHEST)
    square = jnp.einsum("kp,kp->k", hz, hz, precision=HIGHEST)
    return quad, square, leafwise


_probe_block_jit = jax.jit(_probe_block, static_argnames=("unravel", "dim", "dtype", "size"))


def _probe_values(matvec, block_matvec, key, *, num_probes, block_size, unravel, dim, dtype):
    """Yields ``(z.Hz, |Hz|^2, per-leaf z_l.(Hz)_l)`` of probe 0, 1, ... ``num_probes - 1``,
    computed one at a time (``block_size == 1``: ``matvec``) or ``block_size`` at a time
    (``block_matvec``; the last block holds what is left)."""
    if block_size == 1:
        op = as_partial(matvec)
        for i in range(num_probes):
            q, sq, leafwise = _probe_step_jit(
                op, jax.random.fold_in(key, i), unravel=unravel, dim=dim, dtype=dtype
            )
            yield float(q), float(sq), np.asarray(jax.tree_util.tree_leaves(leafwise), np.float64)
        return
    block_op = as_block_partial(matvec, block_matvec)
    for first in range(0, num_probes, block_size):
        size = min(block_size, num_probes - first)
        quad, square, leafwise = jax.device_get(
            _probe_block_jit(
                block_op,
                key,
                jnp.uint32(first),
                unravel=unravel,
                dim=dim,
                dtype=dtype,
                size=size,
            )
        )
        per_leaf = np.stack(
            [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(leafwise)], axis=1
        )
        for j in range(size):
            yield float(quad[j]), float(square[j]), per_leaf[j]


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
    probe_block_size: int = 1,
    block_matvec: Callable[[PyTree], PyTree] | None = None,
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
      probe_block_size: probes per call of the block operator (1: one HVP call per probe).
      block_matvec: ``V -> H V`` for stacked directions (e.g. ``DatasetObjective.hvp_block``);
        None: ``jax.vmap(matvec)``. Used only when ``probe_block_size > 1``.
    """
    _check_confidence(confidence, rel_tol, min_probes, num_probes)
    block_size = check_block_size(probe_block_size)
    dim, dtype, unravel = flattener(params_like)
    names = layer_names(params_like)
    quad, squares, per_leaf = [], [], []
    values = _probe_values(
        matvec,
        block_matvec,
        key,
        num_probes=num_probes,
        block_size=block_size,
        unravel=unravel,
        dim=dim,
        dtype=dtype,
    )
    for q, sq, leafwise in values:
        quad.append(q)
        squares.append(sq)
        per_leaf.append(leafwise)
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


_block_matvec_jit = jax.jit(flat_block_matvec, static_argnames=("unravel",))


def _apply_rows(op, block_op, block, unravel, block_size):
    """H applied to each row of ``block`` ([r, P]): one compiled matvec call per row
    (``block_size == 1``), else one block call per ``block_size`` rows (the last call takes
    what is left)."""
    if block_size == 1:
        return jnp.stack([_single_matvec_jit(op, row, unravel=unravel) for row in block])
    parts = [
        _block_matvec_jit(block_op, unravel, block[lo : lo + block_size])
        for lo in range(0, block.shape[0], block_size)
    ]
    return jnp.concatenate(parts) if len(parts) > 1 else parts[0]


def hutchpp_trace(
    matvec: Callable[[PyTree], PyTree],
    params_like: PyTree,
    key: jax.Array,
    *,
    num_matvecs: int,
    confidence: float = 0.95,
    probe_block_size: int = 1,
    block_matvec: Callable[[PyTree], PyTree] | None = None,
) -> TraceResult:
    """Hutch++ estimate of tr(H) with ``num_matvecs`` (>= 3) Hessian-vector products.

    ``probe_block_size`` and ``block_matvec``: as :func:`hutchinson_trace` (the sketch, its
    orthonormal basis and the residual probes are each applied in blocks)."""
    if num_matvecs < 3:
        raise ValueError(f"Hutch++ needs num_matvecs >= 3, got {num_matvecs}")
    _check_confidence(confidence, None, 1, num_matvecs)
    block_size = check_block_size(probe_block_size)
    dim, dtype, unravel = flattener(params_like)
    op = as_partial(matvec)
    block_op = as_block_partial(matvec, block_matvec) if block_size > 1 else None

    def apply_rows(rows):
        return _apply_rows(op, block_op, rows, unravel, block_size)

    sketch = min(num_matvecs // 3, dim)
    residual_probes = num_matvecs - 2 * sketch
    k_sketch, k_probe = jax.random.split(key)
    s = jax.random.rademacher(k_sketch, (sketch, dim), dtype=jnp.int8).astype(dtype)
    q = jnp.linalg.qr(apply_rows(s).T)[0].T  # [sketch, P], orthonormal rows
    hq = apply_rows(q)
    top = float(jnp.sum(q * hq))
    g = jax.random.rademacher(k_probe, (residual_probes, dim), dtype=jnp.int8).astype(dtype)
    g = g - jnp.matmul(jnp.matmul(g, q.T, precision=HIGHEST), q, precision=HIGHEST)
    hg = apply_rows(g)
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
