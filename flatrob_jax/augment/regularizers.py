"""Label-preserving regularizers that are not op policies: Cutout and additive Gaussian noise."""

import jax
import jax.numpy as jnp

from flatrob_jax.augment import ops, sampling


def cutout(key, image, length: int = 16, fill=0.0):
    """Cutout (DeVries & Taylor 2017, their reference code): one ``length`` x ``length`` square
    centred at a uniform pixel, clipped at the border, set to ``fill`` (16 px on CIFAR). Their
    code zeroes *normalized* pixels (the dataset mean); ``fill`` is in [0, 1] pixel units here."""
    h, w, _ = image.shape
    draws = sampling.Uniforms(key, 2)
    cy = draws.integers((), 0, h)
    cx = draws.integers((), 0, w)
    return ops.cutout(image, cy, cx, length, fill)


def gaussian_noise(key, image, sigma=0.1):
    """``clip(x + sigma * N(0, 1), 0, 1)`` per pixel and channel."""
    noise = jax.random.normal(key, image.shape, image.dtype)
    return jnp.clip(image + jnp.asarray(sigma, image.dtype) * noise, 0.0, 1.0)


__all__ = ["cutout", "gaussian_noise"]
