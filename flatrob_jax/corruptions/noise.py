"""Noise corruptions (per pixel and channel, as in ``make_cifar_c.py`` / ``make_imagenet_c.py``).

Every corruption here is a pair ``draw(key, x, c) -> noise`` (all randomness, as arrays) and
``apply(x, noise, c) -> image`` (deterministic), so a test can feed the very same noise to a
reference implementation.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def draw_gaussian(key, x, c):
    """Standard normal per pixel and channel (the reference scales it by ``c``)."""
    return {"z": jax.random.normal(key, x.shape, jnp.float32)}


def apply_gaussian_noise(x, noise, c):
    """``clip(x + c * z, 0, 1)``."""
    return jnp.clip(x + c * noise["z"], 0.0, 1.0)


def apply_speckle_noise(x, noise, c):
    """Multiplicative noise: ``clip(x + x * c * z, 0, 1)``."""
    return jnp.clip(x + x * c * noise["z"], 0.0, 1.0)


def draw_shot(key, x, c):
    """Photon counts ``k ~ Poisson(c * x)`` per pixel and channel."""
    return {"k": jax.random.poisson(key, c * x, x.shape).astype(jnp.float32)}


def apply_shot_noise(x, noise, c):
    """``clip(k / c, 0, 1)``."""
    return jnp.clip(noise["k"] / c, 0.0, 1.0)


def draw_impulse(key, x, c):
    """Salt-and-pepper of ``skimage.util.random_noise(mode='s&p', amount=c)``: each value is
    replaced with probability c, by 1 (salt) or 0 (pepper) with equal odds."""
    k1, k2 = jax.random.split(key)
    return {"flipped": jax.random.bernoulli(k1, c, x.shape),
            "salted": jax.random.bernoulli(k2, 0.5, x.shape)}


def apply_impulse_noise(x, noise, c):
    out = jnp.where(noise["flipped"] & noise["salted"], 1.0, x)
    return jnp.where(noise["flipped"] & ~noise["salted"], 0.0, out)
