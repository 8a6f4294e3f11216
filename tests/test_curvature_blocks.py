"""Block HVPs (k tangents, one primal) and the solvers that use them, against the dense
Hessian (``jax.hessian`` + numpy) and against the one-vector-at-a-time path on the same keys."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from test_curvature_models import Mlp, dataset, full_batch_loss, init

from flatrob_jax import curvature
from flatrob_jax.curvature import hutchinson
from flatrob_jax.distributed import make_mesh

K = 5


def _small_mlp():
    """A 6-unit MLP (411 parameters, float32), its data and loss."""
    model = Mlp(hidden=6)
    variables = init(model)
    images, labels = dataset(24)
    return model, variables, images, labels, full_batch_loss(model, variables, images, labels)


def _dense_hessian(loss, params):
    flat, unravel = ravel_pytree(params)
    with jax.default_matmul_precision("highest"):
        h = jax.hessian(lambda x: loss(unravel(x)))(flat)
    return np.asarray(h, np.float64)


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
    one = curvature.hutchpp_trace(obj.hvp, obj.params, jax.random.key(5), num_matvecs=30)
    blocked = curvature.hutchpp_trace(
        obj.hvp,
        obj.params,
        jax.random.key(5),
        num_matvecs=30,
        probe_block_size=4,
        block_matvec=obj.hvp_block,
    )
    np.testing.assert_allclose(blocked.trace, one.trace, rtol=1e-5)
    np.testing.assert_allclose(blocked.samples, one.samples, rtol=1e-4, atol=1e-6)
    assert blocked.num_matvecs == one.num_matvecs == 30


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_block_size_must_be_a_positive_integer(bad):
    obj = _objective()
    with pytest.raises(ValueError, match=f"block size must be an integer >= 1, got {bad!r}"):
        curvature.hutchinson_trace(
            obj.hvp, obj.params, jax.random.key(0), num_probes=4, probe_block_size=bad
        )
