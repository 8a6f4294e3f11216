import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flatrob_jax.models import get_model, names

SHAPES = {
    "cnn_tiny": (28, 28, 1),
    "cnn_small": (28, 28, 1),
    "cnn_medium": (28, 28, 1),
    "resnet18": (32, 32, 3),
    "preact_resnet18": (32, 32, 3),
    "wrn16_1": (32, 32, 3),
    "wrn40_2": (32, 32, 3),
    "wrn28_10": (16, 16, 3),
    "wrn34_10": (16, 16, 3),
    "wrn70_16": (16, 16, 3),
    "resnet50": (32, 32, 3),
    "wide_resnet50_2": (32, 32, 3),
}
# The well-known sizes at 10 classes (the same counts as the PyTorch modules of
# tests/test_import_torch.py: torchvision's ResNet-50 / Wide ResNet-50-2, RobustBench's WRNs).
PARAMS = {
    "resnet18": 11_173_962,
    "preact_resnet18": 11_172_170,
    "wrn40_2": 2_243_546,
    "wrn28_10": 36_479_194,
    "wrn34_10": 46_160_474,
    "wrn70_16": 266_796_506,
    "resnet50": 23_528_522,
    "wide_resnet50_2": 66_854_730,
}


@pytest.mark.parametrize("name", names())
def test_every_model_builds_and_normalizes_inside(name):
    h, w, c = SHAPES[name]
    model = get_model(name, 10, mean=(0.5,) * c, std=(0.25,) * c)
    x = jax.random.uniform(jax.random.key(0), (2, h, w, c))
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))
    if name in PARAMS:
        assert n_params == PARAMS[name]
    if name in ("cnn_tiny", "wrn16_1"):
        variables = jax.jit(model.init)(jax.random.key(0), x)
        logits = jax.jit(model.apply)(variables, x)
        assert logits.shape == (2, 10) and logits.dtype == jnp.float32
        # Normalization is the first layer: a shifted input with a matching shifted mean gives
        # the same logits.
        shifted = get_model(name, 10, mean=(0.6,) * c, std=(0.25,) * c)
        np.testing.assert_allclose(jax.jit(shifted.apply)(variables, x + 0.1), logits, atol=1e-4)


def test_batchnorm_train_mode_updates_stats_and_eval_uses_them():
    model = get_model("cnn_tiny", 10)
    x = jax.random.uniform(jax.random.key(0), (8, 28, 28, 1))
    variables = model.init(jax.random.key(0), x)
    _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    before = jax.tree.leaves(variables["batch_stats"])
    after = jax.tree.leaves(updates["batch_stats"])
    assert any(not np.allclose(a, b) for a, b in zip(before, after))


def test_batchnorm_eval_mode_normalises_with_the_running_statistics():
    """train=False: y = (x - running mean) / sqrt(running var + 1e-5) * scale + bias, the same
    for an example alone as inside any batch (no batch statistics are used)."""
    from flatrob_jax.models.layers import batch_norm

    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, (6, 5, 5, 4)).astype(np.float32)
    norm = batch_norm(train=False, axis_name="batch")()
    variables = norm.init(jax.random.key(0), x)
    stats = {"mean": rng.normal(size=4), "var": rng.uniform(0.5, 2.0, 4)}
    affine = {"scale": rng.uniform(0.5, 1.5, 4), "bias": rng.normal(size=4)}
    variables = {
        "params": {k: jnp.asarray(v, jnp.float32) for k, v in affine.items()},
        "batch_stats": {k: jnp.asarray(v, jnp.float32) for k, v in stats.items()},
    }
    y = norm.apply(variables, x)
    expected = (x - stats["mean"]) / np.sqrt(stats["var"] + 1e-5) * affine["scale"] + affine["bias"]
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(norm.apply(variables, x[:1]), y[:1], rtol=1e-6, atol=1e-6)


def test_unknown_model_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown model 'resnet19'.*resnet18"):
        get_model("resnet19", 10)


def test_channel_mismatch_is_a_clear_error():
    model = get_model("cnn_tiny", 10, mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2))
    with pytest.raises(ValueError, match="3 channel statistics but the input has 1"):
        model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
