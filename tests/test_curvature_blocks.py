"""Block HVPs (k tangents, one primal) and the solvers that use them, against the dense
Hessian (reverse-over-reverse columns, checked against ``jax.hessian``) + numpy, and against
the one-vector-at-a-time path on the same keys."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from test_curvature_models import Mlp, dataset, dense_hessian, full_batch_loss, init

from flatrob_jax import curvature
from flatrob_jax.curvature import hutchinson
from flatrob_jax.distributed import make_mesh

K = 3


def _small_mlp():
    """A 4-unit MLP (275 parameters, float32), its data and loss."""
    model = Mlp(hidden=4)
    variables = init(model)
    images, labels = dataset(24)
    return model, variables, images, labels, full_batch_loss(model, variables, images, labels)


def _dense_hessian(loss, params):
    # reverse-over-reverse columns (test_curvature_models.dense_hessian, checked against
    # jax.hessian there; several times faster than jax.hessian's vmapped jacfwd here)
    with jax.default_matmul_precision("highest"):
        return dense_hessian(loss, params)


def _stack(vectors, unravel):
    return jax.vmap(unravel)(jnp.asarray(vectors))


def _flat_rows(tree):
    return np.asarray(jax.vmap(lambda t: ravel_pytree(t)[0])(tree), np.float64)


def test_hvp_block_equals_single_hvps_and_the_dense_hessian():
    _, variables, _, _, loss = _small_mlp()
    params = variables["params"]
    flat, unravel = ravel_pytree(params)
    h = _dense_hessian(loss, params)
    vs = np.asarray(jax.random.normal(jax.random.key(3), (K, flat.size)))
    block = _flat_rows(
        jax.jit(curvature.hvp_block, static_argnums=0)(loss, params, _stack(vs, unravel))
    )
    single = np.stack(
        [
            np.asarray(
                ravel_pytree(jax.jit(curvature.hvp, static_argnums=0)(loss, params, unravel(v)))[0]
            )
            for v in vs
        ]
    )
    dense = vs.astype(np.float64) @ h.T
    scale = np.linalg.norm(dense, axis=1, keepdims=True)
    assert np.max(np.abs(block - single) / scale) < 1e-5
    assert np.max(np.abs(block - dense) / scale) < 1e-5


def test_hvp_block_rejects_directions_without_a_block_axis():
    params = {"a": jnp.ones(3)}
    with pytest.raises(ValueError, match=r"\[k, \*param.shape\]"):
        curvature.hvp_block(lambda p: jnp.sum(p["a"] ** 3), params, {"a": jnp.ones(3)})
    with pytest.raises(ValueError, match="structure"):
        curvature.hvp_block(lambda p: jnp.sum(p["a"] ** 3), params, {"b": jnp.ones((2, 3))})


def _objective(batch_size=8):
    model, variables, images, labels, _ = _small_mlp()
    return curvature.from_flax(
        model, variables, images, labels, batch_size=batch_size, mesh=make_mesh(2)
    )


def test_dataset_objective_hvp_block_equals_its_hvp():
    obj = _objective()
    flat, unravel = ravel_pytree(obj.params)
    vs = np.asarray(jax.random.normal(jax.random.key(4), (3, flat.size)))
    block = _flat_rows(obj.hvp_block(_stack(vs, unravel)))
    single = np.stack([np.asarray(ravel_pytree(obj.hvp(unravel(v)))[0]) for v in vs])
    np.testing.assert_allclose(block, single, rtol=1e-5, atol=1e-6 * np.abs(single).max())
    moved = obj.at(jax.tree_util.tree_map(lambda a: a * 1.1, obj.params))
    np.testing.assert_allclose(
        _flat_rows(moved.hvp_block(_stack(vs[:1], unravel)))[0],
        np.asarray(ravel_pytree(moved.hvp(unravel(vs[0])))[0]),
        rtol=1e-5,
        atol=1e-6 * np.abs(single).max(),
    )


@pytest.mark.parametrize("block_matvec", ["objective", "vmap"])
def test_hutchinson_in_blocks_equals_one_probe_at_a_time(block_matvec):
    obj = _objective()
    key = jax.random.key(7)
    one = curvature.hutchinson_trace(obj.hvp, obj.params, key, num_probes=11)
    blocked = curvature.hutchinson_trace(
        obj.hvp,
        obj.params,
        key,
        num_probes=11,
        probe_block_size=4,  # blocks of 4, 4 and 3
        block_matvec=obj.hvp_block if block_matvec == "objective" else None,
    )
    np.testing.assert_allclose(blocked.samples, one.samples, rtol=1e-5)
    np.testing.assert_allclose(blocked.trace, one.trace, rtol=1e-5)
    np.testing.assert_allclose(blocked.trace_of_square.value, one.trace_of_square.value, rtol=1e-5)
    assert blocked.per_layer.keys() == one.per_layer.keys()
    for name, estimate in one.per_layer.items():
        np.testing.assert_allclose(blocked.per_layer[name].value, estimate.value, rtol=1e-4)
    assert blocked.num_matvecs == one.num_matvecs == 11


def test_hutchinson_in_blocks_stops_at_the_same_probe():
    obj = _objective()
    kw = dict(num_probes=40, min_probes=5, rel_tol=0.8)
    one = curvature.hutchinson_trace(obj.hvp, obj.params, jax.random.key(2), **kw)
    blocked = curvature.hutchinson_trace(
        obj.hvp, obj.params, jax.random.key(2), probe_block_size=8, block_matvec=obj.hvp_block, **kw
    )
    assert 5 <= one.num_matvecs < 40
    assert blocked.num_matvecs == one.num_matvecs
    np.testing.assert_allclose(blocked.trace, one.trace, rtol=1e-5)


def test_hutchinson_block_step_compiles_once_per_block_size():
    obj = _objective()
    hutchinson._probe_block_jit.clear_cache()
    traced = chex.assert_max_traces(hutchinson._probe_block, n=2)  # sizes 4 and the rest, 2
    step = jax.jit(traced, static_argnames=("unravel", "dim", "dtype", "size"))
    original = hutchinson._probe_block_jit
    hutchinson._probe_block_jit = step
    try:
        for seed in range(2):  # a second run (other key, other weights) traces nothing
            moved = obj.at(jax.tree_util.tree_map(lambda a: a * (1 + seed), obj.params))
            curvature.hutchinson_trace(
                moved.hvp,
                moved.params,
                jax.random.key(seed),
                num_probes=10,
                probe_block_size=4,
                block_matvec=moved.hvp_block,
            )
    finally:
        hutchinson._probe_block_jit = original


def test_hutchpp_in_blocks_equals_one_matvec_at_a_time():
    obj = _objective()
    one = curvature.hutchpp_trace(obj.hvp, obj.params, jax.random.key(5), num_matvecs=15)
    blocked = curvature.hutchpp_trace(
        obj.hvp,
        obj.params,
        jax.random.key(5),
        num_matvecs=15,
        probe_block_size=4,
        block_matvec=obj.hvp_block,
    )
    np.testing.assert_allclose(blocked.trace, one.trace, rtol=1e-5)
    np.testing.assert_allclose(blocked.samples, one.samples, rtol=1e-4, atol=1e-6)
    assert blocked.num_matvecs == one.num_matvecs == 15


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_block_size_must_be_a_positive_integer(bad):
    obj = _objective()
    with pytest.raises(ValueError, match=f"block size must be an integer >= 1, got {bad!r}"):
        curvature.hutchinson_trace(
            obj.hvp, obj.params, jax.random.key(0), num_probes=4, probe_block_size=bad
        )


def test_slq_runs_in_a_block_equal_the_runs_one_after_another():
    obj = _objective()
    kw = dict(num_steps=8, num_runs=3)
    one = curvature.slq_density(obj.hvp, obj.params, jax.random.key(8), **kw)
    blocked = curvature.slq_density(
        obj.hvp, obj.params, jax.random.key(8), block_size=2, block_matvec=obj.hvp_block, **kw
    )  # runs 0-1 in a block, run 2 alone
    assert blocked.num_matvecs == one.num_matvecs == 24
    for power in (1, 2):
        np.testing.assert_allclose(blocked.moment(power)[0], one.moment(power)[0], rtol=1e-5)
    np.testing.assert_allclose(blocked.trace()[0], one.trace()[0], rtol=1e-5)
    # the quadrature itself (8 of 275 dimensions: well inside float32 Lanczos's reach)
    np.testing.assert_allclose(
        blocked.nodes, one.nodes, rtol=1e-3, atol=1e-4 * np.abs(one.nodes).max()
    )
    np.testing.assert_allclose(blocked.weights, one.weights, atol=1e-3)


def test_slq_block_run_stops_at_its_own_breakdown():
    # diag(3, 2, 1, 0, ..., 0): the Krylov space of any start has dimension 4, so each run
    # breaks down after 4 steps of the 10 asked, in the block as one at a time.
    diagonal = jnp.asarray([3.0, 2.0, 1.0] + [0.0] * 17)
    params = {"w": jnp.zeros(20)}
    matvec = jax.tree_util.Partial(lambda v: {"w": diagonal * v["w"]})
    one = curvature.slq_density(matvec, params, jax.random.key(1), num_steps=10, num_runs=2)
    blocked = curvature.slq_density(
        matvec, params, jax.random.key(1), num_steps=10, num_runs=2, block_size=2
    )
    assert blocked.num_matvecs == one.num_matvecs == 8
    np.testing.assert_allclose(blocked.nodes, one.nodes, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("block_size, k", [(1, 3), (3, 3), (4, 2)])
def test_block_lanczos_top_k_equals_numpy_eigh(block_size, k):
    _, variables, _, _, loss = _small_mlp()
    params = variables["params"]
    h = _dense_hessian(loss, params)
    expected = np.sort(np.linalg.eigvalsh(h))[::-1][:k]
    obj = _objective()
    out = curvature.block_lanczos(
        obj.hvp,
        obj.params,
        jax.random.key(0),
        block_size=block_size,
        num_steps=60,
        k=k,
        tol=1e-4,
        block_matvec=obj.hvp_block,
    )
    assert out.converged
    assert out.num_matvecs == out.num_passes * block_size
    np.testing.assert_allclose(out.eigenvalues, expected, rtol=2e-3)
    assert np.all(out.residuals <= 1e-4 * np.abs(out.eigenvalues) + 1e-7)


def test_block_lanczos_finds_a_repeated_top_eigenvalue_in_fewer_passes():
    # lambda = 5 (twice), 4.99, then a spread: in exact arithmetic single-vector Lanczos sees
    # one copy of a repeated eigenvalue (float32 rounding lets the second in, slowly); a block
    # of 3 holds both copies from the start and resolves the cluster in far fewer passes.
    rng = np.random.RandomState(3)
    q = np.linalg.qr(rng.randn(300, 300))[0]
    eigs = np.concatenate([[5.0, 5.0, 4.99], np.linspace(-1.0, 4.0, 297)])
    h = jnp.asarray((q * eigs) @ q.T, jnp.float32)
    params = {"w": jnp.zeros(300)}
    matvec = jax.tree_util.Partial(lambda v: {"w": h @ v["w"]})
    out = curvature.block_lanczos(
        matvec, params, jax.random.key(2), block_size=3, num_steps=80, k=3, tol=1e-4
    )
    assert out.converged
    np.testing.assert_allclose(out.eigenvalues, [5.0, 5.0, 4.99], rtol=1e-4)
    single = curvature.lanczos(matvec, params, jax.random.key(2), num_steps=200, k=3, tol=1e-4)
    # here: 14 passes (42 HVPs) against 43 single HVPs, each a pass
    assert out.num_passes < single.num_matvecs / 2
