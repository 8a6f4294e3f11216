"""HVPs and the dataset-level Hessian operator against dense Hessians and each other."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from test_curvature_models import BnCnn, dataset, float64_problem, full_batch_loss, init

from flatrob_jax import curvature
from flatrob_jax.distributed import make_mesh


def _flat(tree):
    return np.asarray(ravel_pytree(tree)[0], dtype=np.float64)


@pytest.mark.parametrize("name", ["mlp", "bn_cnn"])
def test_hvp_equals_dense_hessian_times_v(name):
    with jax.enable_x64(True):
        model, variables, images, labels, h = float64_problem(name)
        loss = full_batch_loss(model, variables, images, labels)
        params = variables["params"]
        flat, unravel = ravel_pytree(params)
        v = unravel(jax.random.normal(jax.random.key(1), flat.shape, jnp.float64))
        hv = jax.jit(curvature.hvp, static_argnums=0)(loss, params, v)
        np.testing.assert_allclose(_flat(hv), h @ _flat(v), rtol=1e-10, atol=1e-12)


def test_hvp_rejects_a_direction_of_another_structure():
    with pytest.raises(ValueError, match="structure"):
        curvature.hvp(lambda p: jnp.sum(p["a"] ** 2), {"a": jnp.ones(2)}, {"b": jnp.ones(2)})


def test_dataset_objective_equals_the_full_batch_loss_gradient_and_hvp():
    model = BnCnn()
    with jax.enable_x64(True):
        variables = init(model, jnp.float64)
        images, labels = dataset(37)
        loss = full_batch_loss(model, variables, images, labels)
        params = variables["params"]
        obj = curvature.from_flax(
            model, variables, images, labels, batch_size=13, mesh=make_mesh(1)
        )
        value, grad = obj.value_and_grad(params)
        np.testing.assert_allclose(float(value), float(loss(params)), rtol=1e-12)
        np.testing.assert_allclose(float(obj.loss(params)), float(loss(params)), rtol=1e-12)
        np.testing.assert_allclose(
            _flat(grad), _flat(jax.grad(loss)(params)), rtol=1e-10, atol=1e-13
        )
        v = jax.tree_util.tree_map(jnp.ones_like, params)
        np.testing.assert_allclose(
            _flat(obj.hvp(v)), _flat(curvature.hvp(loss, params, v)), rtol=1e-10, atol=1e-12
        )
        logits = model.apply(variables, images, train=False)
        expected_error = np.mean(np.argmax(np.asarray(logits), -1) != labels)
        np.testing.assert_allclose(float(obj.error_rate(params)), expected_error, rtol=1e-6)


@pytest.mark.parametrize(
    "unroll", [True, pytest.param(False, marks=pytest.mark.slow)], ids=["unrolled", "lax.scan"]
)
def test_dataset_operator_is_invariant_to_the_batch_partition(unroll):
    """37 examples split as 1 batch, 2 x 19 (last padded), 5 x 8 (last padded), on 1 device;
    both microbatch loops (straight-line: the CPU default; lax.scan: the accelerator default)."""
    model = BnCnn()
    with jax.enable_x64(True):
        variables = init(model, jnp.float64)
        images, labels = dataset(37)
        params = variables["params"]
        v = ravel_pytree(params)[1](
            jax.random.normal(jax.random.key(2), (ravel_pytree(params)[0].size,), jnp.float64)
        )
        results = []
        for batch_size in (37, 19, 8):
            obj = curvature.from_flax(
                model,
                variables,
                images,
                labels,
                batch_size=batch_size,
                mesh=make_mesh(1),
                unroll_microbatches=unroll,
            )
            results.append((_flat(obj.hvp(v)), float(obj.loss(params))))
        for hv, value in results[1:]:
            np.testing.assert_allclose(hv, results[0][0], rtol=1e-11, atol=1e-14)
            np.testing.assert_allclose(value, results[0][1], rtol=1e-13)


def test_one_and_four_devices_agree_in_float32():
    assert jax.device_count() >= 4, "conftest sets 4 fake CPU devices"
    model = BnCnn()
    variables = init(model)
    images, labels = dataset(37)  # 4 devices x 2 microbatches x 5: 40 slots, 3 padded
    params = variables["params"]
    flat, unravel = ravel_pytree(params)
    v = unravel(jax.random.normal(jax.random.key(3), flat.shape))
    one = curvature.from_flax(model, variables, images, labels, batch_size=5, mesh=make_mesh(1))
    four = curvature.from_flax(model, variables, images, labels, batch_size=5, mesh=make_mesh(4))
    hv1, hv4 = _flat(one.hvp(v)), _flat(four.hvp(v))
    np.testing.assert_allclose(hv4, hv1, rtol=2e-4, atol=2e-5 * np.max(np.abs(hv1)))
    np.testing.assert_allclose(float(four.loss(params)), float(one.loss(params)), rtol=1e-6)
    l1, g1 = one.value_and_grad(params)
    l4, g4 = four.value_and_grad(params)
    np.testing.assert_allclose(_flat(g4), _flat(g1), rtol=2e-4, atol=1e-6)


def test_batchnorm_batch_mode_differs_and_refuses_padding():
    model = BnCnn()
    variables = init(model)
    images, labels = dataset(32)
    mesh = make_mesh(1)
    eval_obj = curvature.from_flax(model, variables, images, labels, batch_size=8, mesh=mesh)
    batch_obj = curvature.from_flax(
        model, variables, images, labels, batch_size=8, mesh=mesh, batchnorm="batch"
    )
    assert (
        abs(float(eval_obj.loss(variables["params"])) - float(batch_obj.loss(variables["params"])))
        > 1e-3
    )
    with pytest.raises(ValueError, match="padding"):
        curvature.from_flax(
            model, variables, images, labels, batch_size=5, mesh=mesh, batchnorm="batch"
        )
    with pytest.raises(ValueError, match="batchnorm='train'"):
        curvature.from_flax(
            model, variables, images, labels, batch_size=8, mesh=mesh, batchnorm="train"
        )
