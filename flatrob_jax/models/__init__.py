"""Model registry: ``get_model(name, num_classes, **kw) -> flax.linen.Module``.

Every model takes float32 NHWC images in [0, 1] (per-channel normalization is its first layer;
pass ``mean``/``std`` for the dataset) and is called as ``model.apply(variables, x,
train=False)``; ``train=True`` uses batch statistics (averaged over ``axis_name`` devices) and
needs ``mutable=['batch_stats']``.
"""

import functools

import jax.numpy as jnp

from flatrob_jax.models.cnn import SmallCNN
from flatrob_jax.models.resnet import ResNet
from flatrob_jax.models.wide_resnet import WideResNet

_REGISTRY = {
    # A few thousand parameters: for tests of curvature and attacks.
    "cnn_tiny": functools.partial(SmallCNN, widths=(8, 16), convs_per_stage=1),
    # The CPU-friendly default (73k parameters, ~1.5k train images/s on 2 CPU cores).
    "cnn_small": functools.partial(SmallCNN, widths=(16, 32, 64), convs_per_stage=2),
    "cnn_medium": functools.partial(SmallCNN, widths=(32, 64, 128), convs_per_stage=2),
    "resnet18": functools.partial(ResNet, block="basic", stage_sizes=(2, 2, 2, 2), stem="cifar"),
    "preact_resnet18": functools.partial(
        ResNet, block="preact", stage_sizes=(2, 2, 2, 2), stem="cifar"
    ),
    "resnet50": functools.partial(
        ResNet, block="bottleneck", stage_sizes=(3, 4, 6, 3), stem="imagenet"
    ),
    "wide_resnet50_2": functools.partial(
        ResNet,
        block="bottleneck",
        stage_sizes=(3, 4, 6, 3),
        stem="imagenet",
        bottleneck_width_factor=2,
    ),
    "wrn40_2": functools.partial(WideResNet, depth=40, widen_factor=2),
    # The WRNs of the adversarial-robustness literature (RobustBench's WideResNet layout).
    "wrn28_10": functools.partial(WideResNet, depth=28, widen_factor=10),
    "wrn34_10": functools.partial(WideResNet, depth=34, widen_factor=10),
    "wrn70_16": functools.partial(WideResNet, depth=70, widen_factor=16),
    "wrn16_1": functools.partial(WideResNet, depth=16, widen_factor=1),
}


def names():
    return sorted(_REGISTRY)


def get_model(name: str, num_classes: int, **kw):
    """Build a registered model. ``kw``: mean, std, axis_name, dtype, and family fields."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid choices: {', '.join(names())}")
    if "dtype" in kw and isinstance(kw["dtype"], str):
        kw["dtype"] = jnp.dtype(kw["dtype"])
    return _REGISTRY[name](num_classes=num_classes, **kw)


__all__ = ["get_model", "names", "SmallCNN", "ResNet", "WideResNet"]
