"""Lanczos with full reorthogonalization: extreme Hessian eigenvalues and the tridiagonal
matrix used by stochastic Lanczos quadrature.

Algorithm (Golub & Van Loan, Alg. 10.1.1 with complete reorthogonalization). From a unit
vector ``q_0``, step j computes ``w = H q_j``, ``alpha_j = q_j . w``,
``w -= alpha_j q_j + beta_{j-1} q_{j-1}``, then reorthogonalizes ``w`` against every stored
``q_i`` (i <= j) twice ("twice is enough", Giraud et al. 2005), sets ``beta_j = |w|`` and
``q_{j+1} = w / beta_j``. After m steps, ``Q_m^T H Q_m = T_m`` (tridiagonal, diagonal alpha,
off-diagonal beta). The eigenpairs ``(theta_i, s_i)`` of ``T_m`` give Ritz pairs
``(theta_i, y_i = Q_m s_i)`` whose residual is exactly ``|H y_i - theta_i y_i| =
beta_m |s_i[m-1]|`` while the basis is orthonormal. Lanczos stops when the top-k Ritz pairs
(and the smallest, if asked) satisfy ``|H y - theta y| <= tol * |theta|``, which guarantees an
eigenvalue of H within ``tol * |theta|`` of each reported ``theta``.

Where the work happens, and why.

* The basis is a Python list of the Lanczos vectors filled so far, each a device array in the
  parameters' dtype: memory grows with the steps actually run (``j + 2`` vectors of P floats
  after step j, plus one work vector), not with ``num_steps``. A run of ResNet-18 (11.2M
  parameters) that converges in 10 steps holds 12 vectors (0.5 GB in float32) whatever
  ``num_steps`` says; the former preallocated ``[num_steps + 1, P]`` basis took 4.5 GB at
  ``num_steps=100`` and was swept in full at every step.
* Each step is ONE jitted call for the matvec (a ``Partial`` operator passed as an argument,
  see :mod:`.linalg`) and the three-term recurrence; its shapes do not depend on j, and its
  input carries the same sharding at every step (the start vector is placed where the
  operator's output lives: replicated over the operator's mesh), so it compiles once per
  operator shape. The reorthogonalization runs as a few small jitted calls over groups of
  :data:`GROUP` stored vectors (block Gram-Schmidt: classical within a group, sequential
  across groups, the whole pass twice), so its cost is O(jP) for the j vectors filled, with
  at most ``GROUP`` distinct (tiny) compilations. Only the two scalars ``alpha_j``,
  ``beta_j`` go to the host per step.
* Reorthogonalizing in the parameters' dtype on the device (twice) keeps the basis
  orthogonal to O(eps), so Ritz values are off by O(eps * |H|) ~ 1e-7 lambda_max in float32,
  far below any tolerance used here; keeping the basis in float64 on the host instead would
  move two P-vectors per step over PCIe and do O(jP) float64 work on the host CPU. Dot
  products use ``Precision.HIGHEST`` (TPUs would otherwise multiply float32 in bfloat16).
* The tridiagonal eigenproblem is tiny (m x m) and solved on the host in float64
  (``scipy.linalg.eigh_tridiagonal``) after every step, for the stopping test.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from flatrob_jax.curvature.linalg import (
    as_block_partial,
    as_partial,
    check_block_size,
    flat_block_matvec,
    flat_matvec,
    flattener,
)

PyTree = Any
HIGHEST = jax.lax.Precision.HIGHEST

#: Stored vectors per reorthogonalization call (block Gram-Schmidt; see the module docstring).
GROUP = 8

#: How many times each jitted function of this module was traced (a test checks that the
#: Lanczos step compiles once per operator shape, whatever ``num_steps`` is).
TRACE_COUNTS: collections.Counter = collections.Counter()


@dataclasses.dataclass(frozen=True)
class LanczosResult:
    """Output of :func:`lanczos`.

    Attributes:
      eigenvalues: top-k Ritz values, descending (float64).
      residuals: ``|H y_i - theta_i y_i|`` for each of them (unit Ritz vectors ``y_i``).
      num_matvecs: Hessian-vector products used (= Lanczos steps).
      converged: whether the stopping test passed before ``num_steps`` ran out.
      smallest_eigenvalue, smallest_residual: the bottom Ritz value and its residual (always
        reported; part of the stopping test only with ``smallest=True``).
      eigenvectors: with ``return_eigenvectors=True``, a pytree like ``params_like`` with a
        leading axis of size k (unit norm as flat vectors), in the order of ``eigenvalues``.
      smallest_eigenvector: likewise, for the smallest Ritz value (no leading axis).
      alphas, betas: the tridiagonal matrix T (``betas[j]`` couples steps j and j+1; the last
        one is the residual norm that multiplies the Ritz residuals).
      basis_vectors: the most Lanczos vectors held at once (``num_matvecs + 1``): the basis
        memory is ``basis_vectors * P`` floats.
    """

    eigenvalues: np.ndarray
    residuals: np.ndarray
    num_matvecs: int
    converged: bool
    smallest_eigenvalue: float
    smallest_residual: float
    alphas: np.ndarray
    betas: np.ndarray
    eigenvectors: PyTree | None = None
    smallest_eigenvector: PyTree | None = None
    basis_vectors: int = 0

    @property
    def num_steps(self) -> int:
        return len(self.alphas)


def vector_sharding(op: jax.tree_util.Partial) -> jax.sharding.Sharding:
    """Where flat vectors of the operator ``op`` live: replicated over the largest mesh its
    array leaves are on (a dataset objective's output is replicated over its mesh), else on
    the device of its leaves, else on the default device. Solvers place their start vector
    there and pin their steps' outputs to it, so a step sees the same input sharding at every
    iteration and compiles once."""
    leaves = [x for x in jax.tree_util.tree_leaves(op) if isinstance(x, jax.Array)]
    meshes = [x.sharding.mesh for x in leaves if isinstance(x.sharding, NamedSharding)]
    if meshes:
        return NamedSharding(max(meshes, key=lambda m: m.size), P())
    devices = {d for x in leaves for d in x.devices()}
    device = devices.pop() if len(devices) == 1 else jax.local_devices()[0]
    return jax.sharding.SingleDeviceSharding(device)


def _lanczos_step(matvec, q, q_prev, beta_prev, *, unravel):
    """``w = H q - alpha q - beta_prev q_prev`` and ``alpha = q . H q``."""
    TRACE_COUNTS["step"] += 1
    w = flat_matvec(matvec, unravel, q)
    alpha = jnp.dot(q, w, precision=HIGHEST)
    w = w - alpha * q - beta_prev.astype(w.dtype) * q_prev
    return w, alpha


@functools.lru_cache(maxsize=64)
def _step_fn(sharding: jax.sharding.Sharding):
    return jax.jit(_lanczos_step, static_argnames=("unravel",), out_shardings=sharding)


@jax.jit
def _project_out(w, qs):
    """``w - sum_i (q_i . w) q_i`` over the group ``qs`` (a tuple of orthonormal vectors)."""
    TRACE_COUNTS["project_out"] += 1
    coeffs = [jnp.dot(q, w, precision=HIGHEST) for q in qs]
    for c, q in zip(coeffs, qs):
        w = w - c * q
    return w


@jax.jit
def _normalize(w):
    beta = jnp.linalg.norm(w)
    return w / jnp.where(beta > 0, beta, 1.0).astype(w.dtype), beta


@jax.jit
def _combine(acc, coeffs, qs):
    """``acc + sum_i coeffs[i] q_i`` over the group ``qs``."""
    for i, q in enumerate(qs):
        acc = acc + coeffs[i] * q
    return acc


def _groups(basis):
    return [tuple(basis[i : i + GROUP]) for i in range(0, len(basis), GROUP)]


def reorthogonalize(w: jax.Array, basis: list) -> jax.Array:
    """``w`` made orthogonal to the orthonormal vectors ``basis`` (block Gram-Schmidt, twice)."""
    for _ in range(2):
        for group in _groups(basis):
            w = _project_out(w, group)
    return w


def combine(coeffs: np.ndarray, basis: list, like: jax.Array) -> jax.Array:
    """``sum_i coeffs[i] basis[i]`` without stacking the basis (``like`` gives the dtype and
    sharding of the result)."""
    acc = jnp.zeros_like(like)
    for lo in range(0, len(basis), GROUP):
        group = tuple(basis[lo : lo + GROUP])
        acc = _combine(acc, jnp.asarray(coeffs[lo : lo + len(group)], like.dtype), group)
    return acc


def ritz_pairs(alphas, betas) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors of the tridiagonal T, in float64."""
    d = np.asarray(alphas, dtype=np.float64)
    e = np.asarray(betas, dtype=np.float64)[: len(d) - 1]
    if len(d) == 1:
        return d.copy(), np.ones((1, 1))
    return scipy.linalg.eigh_tridiagonal(d, e)


def lanczos_tridiagonal(
    matvec: Callable[[PyTree], PyTree],
    params_like: PyTree,
    start: jax.Array,
    num_steps: int,
    should_stop: Callable[[np.ndarray, np.ndarray, float], bool] | None = None,
    progress: Callable[[int, int], None] | None = None,
):
    """Runs up to ``num_steps`` Lanczos steps from the flat vector ``start``.

    ``should_stop(theta, S, beta_last)`` (Ritz values ascending, their eigenvectors, last beta)
    is asked, and ``progress(done, total)`` told, after each step. Returns
    ``(alphas, betas, basis, stopped)``; ``basis`` is the list of the Lanczos vectors
    ``q_0 .. q_m`` (device arrays; ``q_m`` is the next vector, unused by T_m).
    """
    dim, dtype, unravel = flattener(params_like)
    if start.shape != (dim,):
        raise ValueError(f"start vector has shape {start.shape}, expected ({dim},)")
    steps = min(num_steps, dim)
    op = as_partial(matvec)
    sharding = vector_sharding(op)
    step = _step_fn(sharding)
    basis = [jax.device_put(_normalize(jnp.asarray(start, dtype))[0], sharding)]
    del start  # with the caller's reference gone too, only the basis holds P-vectors
    alphas, betas = [], []
    beta = np.zeros((), dtype)  # a host scalar: the same (uncommitted) input at every step
    stopped = False
    eps = np.finfo(dtype).eps
    for j in range(steps):
        q_prev = basis[j - 1] if j > 0 else basis[0]
        w, alpha = step(op, basis[j], q_prev, beta, unravel=unravel)
        w = reorthogonalize(w, basis)
        q_next, beta_j = _normalize(w)
        del w
        basis.append(q_next)
        alphas.append(float(alpha))
        betas.append(float(beta_j))
        beta = np.asarray(betas[-1], dtype)
        if progress is not None:
            progress(j + 1, steps)
        theta, s = ritz_pairs(alphas, betas)
        breakdown = betas[-1] <= eps * max(np.max(np.abs(theta)), np.finfo(np.float64).tiny)
        if breakdown or (should_stop is not None and should_stop(theta, s, betas[-1])):
            stopped = True
            break
    return np.array(alphas), np.array(betas), basis, stopped


def lanczos(
    matvec: Callable[[PyTree], PyTree],
    params_like: PyTree,
    key: jax.Array,
    *,
    num_steps: int,
    k: int = 1,
    tol: float = 1e-3,
    smallest: bool = False,
    return_eigenvectors: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> LanczosResult:
    """Top-k (and smallest) eigenvalues of the symmetric operator ``matvec`` by Lanczos.

    Memory: ``num_matvecs + 2`` vectors of P floats (the basis grows with the steps actually
    run, see the module docstring), so ``num_steps`` can be generous.

    Args:
      matvec: ``v -> H v`` on pytrees like ``params_like`` (e.g. ``DatasetObjective.hvp``).
      params_like: pytree giving the structure, shapes and dtype of vectors.
      key: PRNG key for the Gaussian start vector.
      num_steps: maximum number of Lanczos steps (= Hessian-vector products).
      k: number of top eigenvalues wanted.
      tol: stop when every wanted Ritz pair has ``|H y - theta y| <= tol * |theta|``.
      smallest: include the smallest Ritz pair in the stopping test.
      return_eigenvectors: also form the Ritz vectors (on device, from the stored basis).
      progress: called as ``progress(steps done, num_steps)`` after each step.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if k < 1 or k > num_steps:
        raise ValueError(f"k must be in 1..num_steps={num_steps}, got {k}")
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    dim, dtype, unravel = flattener(params_like)
    if k > dim:
        raise ValueError(f"k={k} exceeds the operator dimension {dim}")

    def converged(theta, s, beta_last):
        if len(theta) < k:
            return False
        residuals = np.abs(beta_last * s[-1, :])
        wanted = list(range(len(theta) - k, len(theta))) + ([0] if smallest else [])
        return all(residuals[i] <= tol * abs(theta[i]) for i in wanted)

    alphas, betas, basis, stopped = lanczos_tridiagonal(
        matvec, params_like, jax.random.normal(key, (dim,), dtype), num_steps, converged, progress
    )
    theta, s = ritz_pairs(alphas, betas)
    residuals = np.abs(betas[-1] * s[-1, :])
    order = np.argsort(theta)[::-1][:k]
    eigenvectors = smallest_vector = None
    if return_eigenvectors:
        m = len(alphas)
        vectors = [combine(s[:, i], basis[:m], basis[0]) for i in list(order) + [0]]
        eigenvectors = jax.vmap(unravel)(jnp.stack(vectors[:-1]))
        smallest_vector = unravel(vectors[-1])
    return LanczosResult(
        eigenvalues=theta[order],
        residuals=residuals[order],
        num_matvecs=len(alphas),
        converged=bool(stopped),
        smallest_eigenvalue=float(theta[0]),
        smallest_residual=float(residuals[0]),
        alphas=alphas,
        betas=betas,
        eigenvectors=eigenvectors,
        smallest_eigenvector=smallest_vector,
        basis_vectors=len(basis),
    )


# ------------------------------------------------------------------ blocks of vectors
# Several Lanczos recurrences in lockstep (SLQ's runs) and block Lanczos (top-k): each step
# applies H to a block of b vectors in one call of the block operator (``hvp_block``: one pass
# over the data, the primal computed once for the b tangents). Memory: b times the basis of
# one run, ``(steps + 1) * b`` vectors of P floats.


def _rows_step(block_matvec, qs, qs_prev, betas_prev, *, unravel):
    """For each row r: ``w_r = H q_r - alpha_r q_r - beta_prev_r q_prev_r``, ``alpha_r``."""
    TRACE_COUNTS["rows_step"] += 1
    w = flat_block_matvec(block_matvec, unravel, qs)
    alphas = jnp.einsum("rp,rp->r", qs, w, precision=HIGHEST)
    w = w - alphas[:, None] * qs - betas_prev.astype(w.dtype)[:, None] * qs_prev
    return w, alphas


@functools.lru_cache(maxsize=64)
def _rows_step_fn(sharding: jax.sharding.Sharding):
    return jax.jit(_rows_step, static_argnames=("unravel",), out_shardings=sharding)


@jax.jit
def _project_out_rows(w, qs):
    """Row r of ``w`` minus its projections on row r of each block in ``qs`` (independent runs)."""
    coeffs = [jnp.einsum("rp,rp->r", q, w, precision=HIGHEST) for q in qs]
    for c, q in zip(coeffs, qs):
        w = w - c[:, None] * q
    return w


@jax.jit
def _normalize_rows(w):
    beta = jnp.linalg.norm(w, axis=1)
    return w / jnp.where(beta > 0, beta, 1.0).astype(w.dtype)[:, None], beta


def lanczos_tridiagonal_runs(
    matvec: Callable[[PyTree], PyTree],
    params_like: PyTree,
    starts: jax.Array,
    num_steps: int,
    *,
    block_matvec: Callable[[PyTree], PyTree] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`lanczos_tridiagonal` (no stopping test but breakdown) from each row of
    ``starts`` ([r, P]), the r recurrences run in lockstep: each step is one call of the
    block operator on r vectors. Returns ``[(alphas, betas)]`` per run, equal to r separate
    runs up to float rounding. ``progress(step, steps)`` after each step."""
    dim, dtype, unravel = flattener(params_like)
    if starts.ndim != 2 or starts.shape[1] != dim:
        raise ValueError(f"starts have shape {starts.shape}, expected (runs, {dim})")
    runs = starts.shape[0]
    steps = min(num_steps, dim)
    op = as_block_partial(matvec, block_matvec)
    sharding = vector_sharding(op)
    step = _rows_step_fn(sharding)
    basis = [jax.device_put(_normalize_rows(jnp.asarray(starts, dtype))[0], sharding)]
    del starts
    alphas, betas = np.zeros((runs, steps)), np.zeros((runs, steps))
    length = np.zeros(runs, int)  # steps each run keeps (it stops at its own breakdown)
    done = np.zeros(runs, bool)
    beta = np.zeros(runs, dtype)
    eps = np.finfo(dtype).eps
    for j in range(steps):
        q_prev = basis[j - 1] if j > 0 else basis[0]
        w, alpha = step(op, basis[j], q_prev, beta, unravel=unravel)
        for _ in range(2):
            for group in _groups(basis):
                w = _project_out_rows(w, group)
        q_next, beta_j = _normalize_rows(w)
        del w
        basis.append(q_next)
        alphas[:, j] = np.asarray(alpha, np.float64)
        betas[:, j] = np.asarray(beta_j, np.float64)
        beta = np.asarray(betas[:, j], dtype)
        if progress is not None:
            progress(j + 1, steps)
        for r in np.flatnonzero(~done):
            length[r] = j + 1
            theta = ritz_pairs(alphas[r, : j + 1], betas[r, : j + 1])[0]
            done[r] = betas[r, j] <= eps * max(np.max(np.abs(theta)), np.finfo(np.float64).tiny)
        if np.all(done):
            break
    return [(alphas[r, : length[r]], betas[r, : length[r]]) for r in range(runs)]


@dataclasses.dataclass(frozen=True)
class BlockLanczosResult:
    """Output of :func:`block_lanczos`.

    Attributes:
      eigenvalues: top-k Ritz values, descending (float64).
      residuals: ``|H y_i - theta_i y_i|`` for each of them (unit Ritz vectors ``y_i``).
      num_passes: block steps (each one call of the block operator: one pass over the data).
      num_matvecs: Hessian-vector products (``num_passes * block_size``).
      converged: whether the stopping test passed before ``num_steps`` ran out.
      block_size: vectors per block.
    """

    eigenvalues: np.ndarray
    residuals: np.ndarray
    num_passes: int
    num_matvecs: int
    converged: bool
    block_size: int


@jax.jit
def _gram(w):
    return jnp.matmul(w, w.T, precision=HIGHEST)


@jax.jit
def _left_apply(m, w):
    return jnp.matmul(m.astype(w.dtype), w, precision=HIGHEST)


@jax.jit
def _project_out_blocks(w, qs):
    """``w - sum_i (w q_i^T) q_i`` over the blocks ``qs`` (orthonormal rows)."""
    coeffs = [jnp.matmul(w, q.T, precision=HIGHEST) for q in qs]
    for c, q in zip(coeffs, qs):
        w = w - jnp.matmul(c, q, precision=HIGHEST)
    return w


def _cholesky_qr(w):
    """``w = L q`` with q's rows orthonormal (Cholesky QR, twice; the small factors on the
    host in float64). Returns ``(q, L)``, or None where the rows are (numerically) dependent."""
    total = np.eye(w.shape[0])
    for _ in range(2):
        g = np.asarray(jax.device_get(_gram(w)), np.float64)
        try:
            low = np.linalg.cholesky(g)
        except np.linalg.LinAlgError:
            return None
        if np.min(np.abs(np.diag(low))) <= 1e3 * np.finfo(np.float32).eps * np.max(np.diag(low)):
            return None
        w = _left_apply(jnp.asarray(np.linalg.inv(low)), w)
        total = total @ low  # w_0 = L_1 w_1 = L_1 L_2 w_2
    return w, total


def block_lanczos(
    matvec: Callable[[PyTree], PyTree],
    params_like: PyTree,
    key: jax.Array,
    *,
    block_size: int,
    num_steps: int,
    k: int = 1,
    tol: float = 1e-3,
    block_matvec: Callable[[PyTree], PyTree] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BlockLanczosResult:
    """Top-k eigenvalues of the symmetric operator by block Lanczos (block size ``b``, full
    reorthogonalization).

    From ``b`` orthonormal Gaussian start vectors ``Q_0``, step j applies H to the block
    ``Q_j`` in one call of the block operator, ``A_j = Q_j (H Q_j)^T``, removes the basis from
    ``H Q_j`` (block Gram-Schmidt, twice) and factors the rest ``L_j Q_{j+1}`` (Cholesky QR,
    twice). The block tridiagonal ``T`` (diagonal ``A_j``, sub-diagonal ``L_j^T``) gives Ritz
    pairs with residuals ``|L_m^T s_last|``; it stops when the top-k satisfy
    ``|H y - theta y| <= tol * |theta|``. A block of b vectors finds clustered or repeated
    eigenvalues (up to multiplicity b) that single-vector Lanczos resolves slowly; each step
    is one pass over the data for b HVPs. Memory: ``(steps + 1) * b`` vectors of P floats.

    Args:
      matvec, params_like, key: operator, vector structure, PRNG key for the start block.
      block_size: vectors per block (b >= 1).
      num_steps: maximum block steps (passes); capped so that ``steps * b <= P``.
      k, tol: as :func:`lanczos`.
      block_matvec: ``V -> H V`` (e.g. ``DatasetObjective.hvp_block``); None: vmap of matvec.
      progress: ``progress(steps done, num_steps)`` after each step.
    """
    b = check_block_size(block_size)
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    dim, dtype, unravel = flattener(params_like)
    if k < 1 or k > min(num_steps * b, dim):
        raise ValueError(f"k must be in 1..min(num_steps * block_size, dim), got {k}")
    steps = max(1, min(num_steps, dim // b))
    op = as_block_partial(matvec, block_matvec)
    sharding = vector_sharding(op)
    step = _block_step_fn(sharding)
    start = jax.device_put(jax.random.normal(key, (b, dim), dtype), sharding)
    first = _cholesky_qr(start)
    if first is None:
        raise ValueError("block_lanczos: the start block is rank deficient")
    basis = [first[0]]
    del start, first
    diag, sub = [], []  # A_j (b x b) and L_j^T
    converged = False
    theta = residuals = None
    for j in range(steps):
        w, a = step(op, basis[j], unravel=unravel)
        a = np.asarray(a, np.float64)
        diag.append((a + a.T) / 2)
        for _ in range(2):
            for group in _groups(basis):
                w = _project_out_blocks(w, group)
        factored = _cholesky_qr(w)
        del w
        if factored is None:  # invariant subspace: T's eigenvalues are exact
            sub.append(np.zeros((b, b)))
        else:
            basis.append(factored[0])
            sub.append(factored[1].T)
        if progress is not None:
            progress(j + 1, steps)
        m = len(diag)
        t = np.zeros((m * b, m * b))
        for i in range(m):
            t[i * b : (i + 1) * b, i * b : (i + 1) * b] = diag[i]
            if i + 1 < m:
                t[(i + 1) * b : (i + 2) * b, i * b : (i + 1) * b] = sub[i]
                t[i * b : (i + 1) * b, (i + 1) * b : (i + 2) * b] = sub[i].T
        theta, s = np.linalg.eigh(t)
        residuals = np.linalg.norm(sub[-1] @ s[-b:, :], axis=0)
        top = np.argsort(theta)[::-1][:k]
        if len(theta) >= k and all(residuals[i] <= tol * abs(theta[i]) for i in top):
            converged = True
            break
        if factored is None:
            break
    order = np.argsort(theta)[::-1][:k]
    return BlockLanczosResult(
        eigenvalues=theta[order],
        residuals=residuals[order],
        num_passes=len(diag),
        num_matvecs=len(diag) * b,
        converged=converged,
        block_size=b,
    )


def _block_lanczos_step(block_matvec, q, *, unravel):
    """``W = H Q`` (rows) and ``A = Q W^T``."""
    TRACE_COUNTS["block_step"] += 1
    w = flat_block_matvec(block_matvec, unravel, q)
    return w, jnp.matmul(q, w.T, precision=HIGHEST)


@functools.lru_cache(maxsize=64)
def _block_step_fn(sharding: jax.sharding.Sharding):
    return jax.jit(
        _block_lanczos_step, static_argnames=("unravel",), out_shardings=(sharding, sharding)
    )
