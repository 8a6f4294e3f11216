"""The reparameterization audit: function-preserving rescalings (BatchNorm-scale, ReLU layer
rescaling) leave the logits unchanged, move lambda_max, the trace and Keskar sharpness, and
leave the adaptive sharpness measures where they were (same keys)."""

import types

import jax
import numpy as np
import pytest

from flatrob_jax.analysis import registry
from flatrob_jax.curvature import reparam
from flatrob_jax.models import ResNet, WideResNet, get_model


def _data(n=64, seed=0):
    """Fake Fashion-MNIST-like images: class k has mean intensity 20 + 23k, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.int32)
    noise = rng.integers(-15, 16, (n, 28, 28, 1))
    images = np.clip(20 + 23 * labels[:, None, None, None] + noise, 0, 255) / 255.0
    return images.astype(np.float32), labels


def _with_data_statistics(model, variables, images, passes=20):
    """Running BatchNorm statistics from train-mode passes over ``images`` (so the audit sees
    realistic statistics, not the initial 0 / 1)."""
    step = jax.jit(lambda v: model.apply(v, images, train=True, mutable=["batch_stats"])[1])
    for _ in range(passes):
        variables = {**variables, **step(variables)}
    return variables


def _random_variables(model, x, seed=0):
    """Random weights (N(0, 1/fan_in)) and running statistics (means ~ N(0, 1), variances in
    [0.5, 2]) in the shapes of ``model.init``, without compiling the init: any values define
    a function to rescale."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)

    def draw(path, leaf):
        name = path[-1].key
        if name == "var":
            return rng.uniform(0.5, 2.0, leaf.shape).astype(np.float32)
        fan_in = int(np.prod(leaf.shape[:-1])) if name == "kernel" else 1
        return (rng.normal(size=leaf.shape) / np.sqrt(fan_in)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.fixture(scope="module")
def tiny():
    """The tiny CNN at its initialization with running statistics of the data (training it
    first would only add compile time: the rescalings and the invariances hold at any point)."""
    images, labels = _data()
    model = get_model("cnn_tiny", 10)
    variables = _with_data_statistics(model, _random_variables(model, images[:1]), images)
    return types.SimpleNamespace(model=model, variables=variables), (images, labels)


# The settings of the audit through its registered analysis entry: few HVPs, fixed probes.
SETTINGS = {
    "alpha": 4.0,
    "transforms": ("bn_scale", "relu_rescale"),
    "move_tol": 0.05,
    "probe_examples": 16,
    "batch_size": 64,
    "num_devices": 1,
    "lanczos_steps": 20,
    "lanczos_tol": 1e-3,
    "trace_probes": 10,
    "keskar_epsilon": 1e-3,
    "keskar_iters": 3,
    "adaptive_ascent_rho": 0.05,
    "adaptive_ascent_steps": 3,
    "adaptive_average_rho": 0.1,
    "adaptive_samples": 4,
}


@pytest.fixture(scope="module")
def audited(tiny):
    run, data = tiny
    entry = registry.get("reparam_audit")
    assert not (entry.flatness or entry.robustness or entry.clean)  # not headline measures
    inputs = registry.Inputs(
        model=run, test=None, train=data, key=jax.random.key(0), out_dir="", cache=None
    )
    logs = []
    out = entry.run(inputs, log=logs.append, **SETTINGS)
    assert any("max |logit difference|" in line for line in logs)
    return out


def test_rescalings_keep_the_logits(audited):
    assert audited["bn_scale"]["layers"] == ["Conv_0", "Conv_1"]
    assert audited["relu_rescale"]["layers"] == ["BatchNorm_1", "Dense_0"]
    for t in reparam.TRANSFORMS:
        assert audited[t]["max_abs_logit_diff"] < 1e-5, t
        # The loss the measures start from is the same function's loss.
        np.testing.assert_allclose(
            audited[t]["values"]["loss"], audited["original"]["loss"], rtol=1e-5
        )


def test_lambda_max_trace_and_keskar_move(audited):
    """alpha = 4: BatchNorm-scale shrinks the conv blocks' curvature by 1/16 (lambda_max fell
    to 0.28x when measured); the ReLU rescaling grows the classifier's block by 16 (lambda_max
    rose 3.9x)."""
    bn, relu = audited["bn_scale"], audited["relu_rescale"]
    assert bn["ratio"]["lambda_max"] < 0.5
    assert bn["ratio"]["trace"] < 0.5
    assert bn["moved"]["keskar_sharpness"]
    assert relu["ratio"]["lambda_max"] > 2.0
    assert relu["ratio"]["trace"] > 1.1
    assert relu["moved"]["lambda_max"] and bn["moved"]["lambda_max"]


def test_adaptive_sharpness_does_not_move(audited):
    """Same keys (same noise, same ascent start): the |w|-scaled perturbations see the same
    losses, up to float rounding, far inside the average's Monte Carlo error."""
    ascent, average = "adaptive_ascent/l2_0.05", "adaptive_average/gauss_0.1"
    assert sorted(audited["invariant_measures"]) == [ascent, average]
    original = audited["original"]
    for t in reparam.TRANSFORMS:
        values = audited[t]["values"]
        for m in (ascent, average):
            assert reparam.is_measure(m, reparam.INVARIANT)
            assert not audited[t]["moved"][m]
            np.testing.assert_allclose(values[m], original[m], rtol=1e-3, atol=1e-6)
        se = original[f"{average}_stderr"]
        assert abs(values[average] - original[average]) < 0.1 * se


def test_batchnorm_scale_folds_eps_exactly():
    """BN(alpha z) with mean x alpha and var' = alpha^2 (var + eps) - eps equals BN(z) in eval
    mode, also for alpha < 1 and non-power-of-2 alpha."""
    images, _ = _data(16)
    model = get_model("cnn_tiny", 10)
    variables = _with_data_statistics(model, model.init(jax.random.key(1), images[:1]), images)
    for alpha in (0.25, 3.0, 10.0):
        r = reparam.bn_scale(model, variables, alpha, images[:8])
        assert r.layers == ("Conv_0", "Conv_1")
        diff = reparam.max_abs_logit_difference(model, variables, r.variables, images)
        assert diff < 1e-4, (alpha, diff)
        np.testing.assert_allclose(
            r.variables["params"]["Conv_0"]["kernel"],
            alpha * np.asarray(variables["params"]["Conv_0"]["kernel"]),
            rtol=1e-6,
        )


def test_preact_and_wide_resnets_leave_out_convs_that_feed_a_residual_sum():
    """PreAct blocks: the stem conv (and each block's input) feeds a BatchNorm and the
    shortcut sum, so only the convs followed by nothing but a BatchNorm are scaled; the final
    BatchNorm -> ReLU -> pool -> Dense allows the ReLU rescaling."""
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(4, 16, 16, 3)).astype(np.float32)
    for model in (
        ResNet(num_classes=5, block="preact", stage_sizes=(1, 1), widths=(8, 16)),
        WideResNet(num_classes=5, depth=10, widen_factor=1),
    ):
        variables = _random_variables(model, images[:1])
        r = reparam.bn_scale(model, variables, 2.0, images)
        assert "stem_conv" in [name for name, _ in r.excluded]
        assert r.layers and all(name.endswith("Conv_0") for name in r.layers), r.layers
        assert reparam.max_abs_logit_difference(model, variables, r.variables, images) < 1e-5
        relu = reparam.relu_rescale(model, variables, 4.0, images)
        assert relu.layers == ("final_bn", "Dense_0")


def test_relu_rescale_refuses_post_activation_resnets_and_bad_input():
    images = np.random.default_rng(0).uniform(size=(2, 16, 16, 3)).astype(np.float32)
    model = ResNet(num_classes=5, block="basic", stage_sizes=(1, 1), widths=(8, 16))
    variables = _random_variables(model, images[:1])
    with pytest.raises(ValueError, match=r"shortcut is added after it.*cnn_\*, preact_resnet18"):
        reparam.relu_rescale(model, variables, 4.0, images)
    with pytest.raises(ValueError, match=r"alpha=-1.0: .* > 0"):
        reparam.bn_scale(model, variables, -1.0, images)
    with pytest.raises(ValueError, match=r"unknown rescaling 'flip'; allowed: \('bn_scale'"):
        reparam.rescale("flip", model, variables, 2.0, images)
