"""Tiny models and data shared by the curvature tests (imported as a module; the tests here
check the fixtures themselves).

Both models are small enough for a dense Hessian: ``Mlp`` (an 8x8 image -> 24 ReLU units ->
3 classes, 1635 parameters, no BatchNorm: the reparameterization test needs pure ReLU
layers) and ``BnCnn`` (two 3x3 convolutions with BatchNorm and ReLU, a flatten, a linear
classifier; 573 parameters; eval mode uses the running statistics set by ``bn_cnn``).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

NUM_CLASSES = 3
IMAGE_SHAPE = (8, 8, 1)


class Mlp(nn.Module):
    hidden: int = 24

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(self.hidden, name="hidden")(x))
        return nn.Dense(NUM_CLASSES, name="out")(x)


class BnCnn(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = (x - 0.5) / 0.25  # normalization is the first layer (project convention)
        x = nn.Conv(4, (3, 3), padding=1, name="conv1")(x)
        x = nn.relu(
            nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name="bn1")(x)
        )
        x = nn.Conv(6, (3, 3), strides=(2, 2), padding=1, name="conv2")(x)
        x = nn.relu(
            nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name="bn2")(x)
        )
        x = x.reshape((x.shape[0], -1))  # NHWC flatten: (h, w, c) order
        return nn.Dense(NUM_CLASSES, name="out")(x)


def dataset(n=40, seed=0):
    rng = np.random.RandomState(seed)
    images = rng.rand(n, *IMAGE_SHAPE).astype(np.float32)
    labels = rng.randint(0, NUM_CLASSES, size=n).astype(np.int32)
    return images, labels


def init(model, dtype=jnp.float32, seed=0):
    """Variables in ``dtype``; BatchNorm running statistics set to non-trivial values."""
    variables = model.init(jax.random.key(seed), jnp.zeros((1,) + IMAGE_SHAPE))
    variables = jax.tree_util.tree_map(lambda a: a.astype(dtype), variables)
    if "batch_stats" in variables:
        rng = np.random.RandomState(seed + 1)
        stats = jax.tree_util.tree_map(lambda a: a, variables["batch_stats"])
        for layer in stats:
            shape = stats[layer]["mean"].shape
            stats[layer] = {
                "mean": jnp.asarray(rng.randn(*shape) * 0.3, dtype),
                "var": jnp.asarray(rng.uniform(0.5, 2.0, shape), dtype),
            }
        variables = {**variables, "batch_stats": stats}
    return variables


def full_batch_loss(model, variables, images, labels):
    """``params -> mean cross-entropy`` over all examples, eval-mode BatchNorm, one batch."""
    state = {k: v for k, v in variables.items() if k != "params"}

    def loss(params):
        logits = model.apply({"params": params, **state}, jnp.asarray(images), train=False)
        return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(labels)).mean()

    return loss


def dense_hessian(loss, params):
    """The dense Hessian of ``loss`` at ``params`` (ravel_pytree order) as float64 numpy.

    Column j is ``grad_p (grad L(p) . e_j)``: reverse-over-reverse, so it shares no code path
    with the forward-over-reverse ``curvature.hvp`` under test; columns are computed one after
    another with ``lax.map`` (20x faster on CPU than ``jax.hessian``'s vmapped jacfwd here;
    ``test_dense_oracle_equals_jax_hessian`` checks the two agree).
    """
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    grad = jax.grad(lambda x: loss(unravel(x)))

    def column(e):
        return jax.grad(lambda x: jnp.vdot(grad(x), e))(flat)

    h = jax.jit(lambda basis: jax.lax.map(column, basis))(jnp.eye(flat.size, dtype=flat.dtype))
    return np.asarray(h, dtype=np.float64)


@functools.lru_cache(maxsize=None)
def float64_problem(name, n=24):
    """``(model, variables, images, labels, dense Hessian)`` in float64, cached per session.

    Call inside ``jax.enable_x64(True)``.
    """
    model = {"mlp": Mlp(), "bn_cnn": BnCnn()}[name]
    variables = init(model, jnp.float64)
    images, labels = dataset(n)
    h = dense_hessian(full_batch_loss(model, variables, images, labels), variables["params"])
    return model, variables, images, labels, h


def num_params(params):
    return sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(params))


@pytest.mark.parametrize("model, expected", [(Mlp(), 1635), (BnCnn(), 573)])
def test_fixture_models_are_dense_hessian_sized(model, expected):
    assert num_params(init(model)["params"]) == expected


def test_fixture_bn_cnn_eval_mode_uses_the_set_running_statistics():
    model = BnCnn()
    variables = init(model)
    images, _ = dataset(4)
    out = model.apply(variables, images, train=False)
    zeroed = {
        **variables,
        "batch_stats": jax.tree_util.tree_map(jnp.zeros_like, variables["batch_stats"]),
    }
    zeroed["batch_stats"] = jax.tree_util.tree_map(
        lambda a: a + 1.0, zeroed["batch_stats"]
    )  # mean 1, var 1
    assert not np.allclose(out, model.apply(zeroed, images, train=False), atol=1e-3)


@pytest.mark.slow
def test_dense_oracle_equals_jax_hessian():
    model = Mlp(hidden=4)
    with jax.enable_x64(True):
        variables = init(model, jnp.float64)
        images, labels = dataset(8)
        loss = full_batch_loss(model, variables, images, labels)
        flat, unravel = jax.flatten_util.ravel_pytree(variables["params"])
        expected = np.asarray(jax.hessian(lambda x: loss(unravel(x)))(flat))
        np.testing.assert_allclose(
            dense_hessian(loss, variables["params"]), expected, rtol=1e-10, atol=1e-13
        )
