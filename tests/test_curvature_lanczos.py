"""Lanczos memory and compilation: the basis grows with the steps actually run, the step
compiles once per operator shape (issue 14 item 4), and power iteration compiles once too."""

import importlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from test_curvature_models import BnCnn, dataset, init

from flatrob_jax import curvature
from flatrob_jax.distributed import make_mesh

# the package re-exports the functions under the modules' names
lanczos_lib = importlib.import_module("flatrob_jax.curvature.lanczos")
power_lib = importlib.import_module("flatrob_jax.curvature.power_iteration")


def _diagonal_operator(n1, n2, seed=0):
    """H = diag(d) on pytrees {'a': [n1], 'b': [n2]}: top eigenvalues 10 and 5, the rest in
    [-1, 1]; d travels as the Partial's leaves (a pytree like the vectors, so no live array
    of the flat shape belongs to the operator)."""
    rng = np.random.default_rng(seed)
    d = rng.uniform(-1.0, 1.0, n1 + n2).astype(np.float32)
    d[[3, n1 + 5]] = 10.0, 5.0
    params = {"a": jnp.zeros((n1,)), "b": jnp.zeros((n2,))}
    _, unravel = ravel_pytree(params)
    diag = jax.tree_util.tree_map(jnp.asarray, unravel(jnp.asarray(d)))
    op = jax.tree_util.Partial(lambda diag, v: jax.tree_util.tree_map(jnp.multiply, diag, v), diag)
    return op, params


def test_basis_memory_grows_with_the_steps_run_not_num_steps():
    """num_steps=100 converging in ~10 steps holds ~10 vectors: measured as the live device
    arrays of the flat shape (and their bytes) at every progress callback."""
    n1, n2 = 6007, 4001  # a flat size no other live array of the test process has
    dim = n1 + n2
    op, params = _diagonal_operator(n1, n2)
    peak = {"count": 0, "bytes": 0}

    def measure(done, total):
        flat = [a for a in jax.live_arrays() if a.shape == (dim,)]
        peak["count"] = max(peak["count"], len(flat))
        peak["bytes"] = max(peak["bytes"], sum(a.nbytes for a in flat))

    result = curvature.lanczos(
        op, params, jax.random.key(0), num_steps=100, tol=1e-3, progress=measure
    )
    assert result.converged and 5 <= result.num_matvecs <= 20, result.num_matvecs
    np.testing.assert_allclose(result.eigenvalues[0], 10.0, rtol=1e-3)
    m = result.num_matvecs
    assert result.basis_vectors == m + 1
    # the basis q_0..q_m (+ at most one vector in flight), far from 101 vectors
    assert m + 1 <= peak["count"] <= m + 2, (peak, m)
    assert peak["bytes"] <= (m + 2) * dim * 4
    assert peak["bytes"] < 0.25 * 101 * dim * 4


def test_the_step_compiles_once_on_a_mesh_and_num_steps_does_not_matter(monkeypatch):
    """A dataset objective on 4 devices: the start vector carries the operator's output
    sharding, so step 0 and the later steps share one compilation, and calls with other
    num_steps / keys reuse it."""
    model = BnCnn()
    variables = init(model)
    images, labels = dataset(16)
    obj = curvature.from_flax(model, variables, images, labels, batch_size=4, mesh=make_mesh(4))
    before = lanczos_lib.TRACE_COUNTS["step"]
    first = curvature.lanczos(obj.hvp, obj.params, jax.random.key(0), num_steps=100, tol=1e-4)
    assert lanczos_lib.TRACE_COUNTS["step"] - before == 1
    second = curvature.lanczos(obj.hvp, obj.params, jax.random.key(1), num_steps=7, tol=1e-9)
    assert lanczos_lib.TRACE_COUNTS["step"] - before == 1
    assert second.num_matvecs == 7 and not second.converged
    assert first.converged
    # the same answer as on one device (float32 summation order only)
    single = curvature.from_flax(model, variables, images, labels, batch_size=16, mesh=make_mesh(1))
    one = curvature.lanczos(single.hvp, single.params, jax.random.key(0), num_steps=100, tol=1e-4)
    np.testing.assert_allclose(first.eigenvalues[0], one.eigenvalues[0], rtol=1e-4)

    # Power iteration's step: traced once for every iteration, eigenvector and call.
    monkeypatch.setattr(power_lib, "_power_step", chex.assert_max_traces(power_lib._power_step, 1))
    power_lib._power_step_fn.cache_clear()
    for seed in (0, 1):
        curvature.power_iteration(obj.hvp, obj.params, jax.random.key(seed), k=2, max_iters=20)
    power_lib._power_step_fn.cache_clear()


def test_basis_stays_orthonormal_and_matches_the_dense_answer():
    """Block Gram-Schmidt over groups of GROUP vectors: more steps than one group, checked
    against eigh of the dense matrix (float64)."""
    rng = np.random.RandomState(0)
    n = 120
    spectrum = np.concatenate([[9.0, 8.5, 8.0], rng.uniform(-2.0, 2.0, n - 3)])
    q = np.linalg.qr(rng.randn(n, n))[0]
    h = q @ np.diag(spectrum) @ q.T
    with jax.enable_x64(True):
        m = jnp.asarray(h)
        params = jnp.zeros((n,))
        start = jax.random.normal(jax.random.key(2), (n,), jnp.float64)
        alphas, betas, basis, _ = lanczos_lib.lanczos_tridiagonal(
            lambda v: m @ v, params, start, 3 * lanczos_lib.GROUP
        )
        b = np.asarray(jnp.stack(basis[:-1]))
        np.testing.assert_allclose(b @ b.T, np.eye(len(b)), atol=1e-12)
        t = np.diag(alphas) + np.diag(betas[:-1], 1) + np.diag(betas[:-1], -1)
        np.testing.assert_allclose(b @ h @ b.T, t, atol=1e-10)
        res = curvature.lanczos(
            lambda v: m @ v,
            params,
            jax.random.key(3),
            num_steps=n,
            k=3,
            tol=1e-10,
            return_eigenvectors=True,
        )
        np.testing.assert_allclose(res.eigenvalues, [9.0, 8.5, 8.0], rtol=1e-9)
        y = np.asarray(res.eigenvectors)
        np.testing.assert_allclose(np.abs(y @ q[:, :3]), np.eye(3), atol=1e-6)
