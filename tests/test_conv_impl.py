"""The patch + matmul convolutions compute XLA's convolution: forward, gradients and
forward-over-reverse HVPs, alone and inside the models (same parameters, same outputs)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from flatrob_jax.models import conv_impl, get_model

PATCH_IMPLS = [name for name in conv_impl.NAMES if name != "xla"]
NHWC = ("NHWC", "HWIO", "NHWC")

# (input channels, kernel size, stride, padding, kernel dilation)
CASES = [
    (1, 3, 1, "SAME", 1),
    (3, 3, 2, "SAME", 1),
    (3, 3, 2, ((1, 1), (1, 1)), 1),
    (1, 3, 1, "VALID", 1),
    (3, 1, 2, "VALID", 1),
    (3, 3, 1, ((2, 0), (0, 1)), 2),
]


def _inputs(channels, kernel, out_channels=4, size=7):
    x = jax.random.normal(jax.random.key(0), (2, size, size, channels))
    w = jax.random.normal(jax.random.key(1), (kernel, kernel, channels, out_channels))
    return x, w


def _conv(impl, stride, padding, dilation):
    fn = conv_impl.get(impl)

    def conv(x, w):
        return fn(
            x,
            w,
            (stride, stride),
            padding,
            rhs_dilation=(dilation, dilation),
            dimension_numbers=NHWC,
        )

    return conv


def _loss(conv):
    return lambda x, w: jnp.sum(jnp.tanh(conv(x, w)) ** 2)


@pytest.mark.parametrize("impl", PATCH_IMPLS)
@pytest.mark.parametrize("channels,kernel,stride,padding,dilation", CASES)
def test_forward_gradients_and_hvp_match_xla(impl, channels, kernel, stride, padding, dilation):
    x, w = _inputs(channels, kernel)
    ours, ref = _conv(impl, stride, padding, dilation), _conv("xla", stride, padding, dilation)
    np.testing.assert_allclose(ours(x, w), ref(x, w), rtol=1e-5, atol=1e-5)

    grads = jax.grad(_loss(ours), argnums=(0, 1))(x, w)
    grads_ref = jax.grad(_loss(ref), argnums=(0, 1))(x, w)
    for g, g_ref in zip(grads, grads_ref):
        np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=1e-5)

    # Forward-over-reverse HVP in (input, kernel), along a random direction in both.
    v = (
        jax.random.normal(jax.random.key(2), x.shape),
        jax.random.normal(jax.random.key(3), w.shape),
    )

    def hvp(loss):
        grad = jax.grad(lambda xw: loss(*xw))
        return jax.jvp(grad, ((x, w),), (v,))[1]

    for h, h_ref in zip(hvp(_loss(ours)), hvp(_loss(ref))):
        np.testing.assert_allclose(h, h_ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("impl", PATCH_IMPLS)
def test_flax_conv_same_parameters_and_output(impl):
    x, _ = _inputs(3, 3, size=8)
    layer = dict(features=5, kernel_size=(3, 3), strides=(2, 2), padding=1)
    variables = nn.Conv(**layer).init(jax.random.key(0), x)
    ours = nn.Conv(**layer, conv_general_dilated=conv_impl.get(impl))
    assert jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x)) == jax.tree.map(
        jnp.shape, variables
    )
    np.testing.assert_allclose(
        ours.apply(variables, x), nn.Conv(**layer).apply(variables, x), rtol=1e-5, atol=1e-5
    )


MODELS = [
    ("cnn_tiny", (8, 8, 1), {}, True),
    # narrow and shallow: stem, one block per stage, a strided block with its shortcut conv;
    # forward only (their HVP compile dominated this file's time; CASES cover the conv HVPs)
    ("resnet18", (8, 8, 3), {"widths": (4, 8), "stage_sizes": (1, 1)}, False),
    ("wrn16_1", (8, 8, 3), {"depth": 10}, False),
]


@pytest.mark.parametrize("name,shape,kw,with_hvp", MODELS, ids=[m[0] for m in MODELS])
def test_models_same_variables_logits_and_parameter_hvp(name, shape, kw, with_hvp):
    x = jax.random.uniform(jax.random.key(0), (2, *shape))
    y = jnp.array([1, 3])
    ref = get_model(name, 10, mean=(0.5,) * shape[-1], std=(0.25,) * shape[-1], **kw)
    ours = get_model(
        name, 10, mean=(0.5,) * shape[-1], std=(0.25,) * shape[-1], conv_impl="im2col", **kw
    )
    variables = jax.jit(ref.init)(jax.random.key(1), x)
    assert jax.tree.map(jnp.shape, jax.eval_shape(ours.init, jax.random.key(1), x)) == jax.tree.map(
        jnp.shape, variables
    )
    np.testing.assert_allclose(
        jax.jit(ours.apply)(variables, x), jax.jit(ref.apply)(variables, x), atol=1e-5
    )
    if not with_hvp:
        return

    def loss(model):
        def fn(params):
            logits = model.apply({**variables, "params": params}, x)
            return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(2), y])

        return fn

    params = variables["params"]
    rng = np.random.default_rng(2)
    v = jax.tree.map(lambda p: rng.standard_normal(p.shape, dtype=np.float32), params)

    def hvp(model):  # jitted: op-by-op dispatch of a model's HVP takes tens of seconds
        return jax.jit(lambda p, d: jax.jvp(jax.grad(loss(model)), (p,), (d,))[1])(params, v)

    hv, hv_ref = hvp(ours), hvp(ref)
    for a, b in zip(jax.tree.leaves(hv), jax.tree.leaves(hv_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_unknown_name_and_unsupported_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown conv_impl 'gemm'.*im2col"):
        conv_impl.get("gemm")
    with pytest.raises(ValueError, match="unknown conv_impl"):
        get_model("cnn_tiny", 10, conv_impl="gemm").init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    x, w = _inputs(4, 3)
    im2col = conv_impl.get("im2col")
    with pytest.raises(ValueError, match="feature_group_count=2"):
        im2col(x, w[:, :, :2], (1, 1), "SAME", dimension_numbers=NHWC, feature_group_count=2)
    with pytest.raises(ValueError, match="channel-last"):
        im2col(
            x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1), (1, 1), "SAME", dimension_numbers=None
        )
    with pytest.raises(ValueError, match="lhs_dilation"):
        im2col(x, w, (1, 1), "SAME", lhs_dilation=(2, 2), dimension_numbers=NHWC)
    # the XLA path is lax's own function, so 'xla' models are unchanged
    assert conv_impl.get("xla") is lax.conv_general_dilated
