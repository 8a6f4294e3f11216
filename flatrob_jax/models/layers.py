"""Layer factories shared by the model families (BatchNorm with the right axis name)."""

import functools

import flax.linen as nn
import jax.numpy as jnp


def batch_norm(train: bool, axis_name, dtype=jnp.float32, **kw):
    """BatchNorm: batch statistics averaged over ``axis_name`` when training (cross-device
    BatchNorm, lax.pmean inside flax), running statistics otherwise. Momentum 0.9 and eps 1e-5
    as in PyTorch's BatchNorm2d (flax momentum = 1 - torch momentum)."""
    return functools.partial(
        nn.BatchNorm,
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        dtype=dtype,
        axis_name=axis_name if train else None,
        **kw,
    )


# PyTorch's default conv init is kaiming_uniform(a=sqrt(5)); the ResNet papers and the CIFAR
# reference code use He-normal (fan_out) for convolutions. We use He-normal fan_out.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def conv(width: int, kernel: int, stride: int, name=None, *, dtype=jnp.float32):
    """Bias-free convolution with 'same'-style padding of kernel // 2 and He-normal init."""
    return nn.Conv(
        width,
        (kernel, kernel),
        (stride, stride),
        padding=kernel // 2,
        use_bias=False,
        kernel_init=conv_init,
        dtype=dtype,
        name=name,
    )
