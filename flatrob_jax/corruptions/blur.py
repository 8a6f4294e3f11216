"""Blur corruptions: defocus, Gaussian, glass, motion and zoom blur."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from flatrob_jax.corruptions import filters


def apply_defocus_blur(x, noise, c):
    """Correlation with the anti-aliased disk of radius c[0] (``disk()``), border REFLECT_101."""
    return jnp.clip(filters.correlate2d(x, filters.disk_kernel(c[0], c[1]), "reflect"), 0.0, 1.0)


def apply_gaussian_blur(x, noise, c):
    """``skimage.filters.gaussian(x, sigma=c)``: truncate 4, border 'nearest'."""
    return jnp.clip(filters.gaussian_blur(x, c), 0.0, 1.0)


def _glass_sites(h: int, w: int, delta: int, iterations: int) -> np.ndarray:
    """Flat indices of the pixels visited by the reference loop, in its order:
    ``for h in range(H - d, d, -1): for w in range(W - d, d, -1)``, repeated."""
    rows = np.arange(h - delta, delta, -1)
    cols = np.arange(w - delta, delta, -1)
    sites = (rows[:, None] * w + cols[None, :]).reshape(-1)
    return np.tile(sites, iterations)


def draw_glass(key, x, c):
    """One ``(dx, dy)`` uniform in ``[-d, d)`` per visited pixel
    (``np.random.randint(-d, d, 2)``)."""
    _, delta, iterations = c
    n = len(_glass_sites(x.shape[0], x.shape[1], delta, iterations))
    return {"dxdy": jax.random.randint(key, (n, 2), -delta, delta, jnp.int32)}


def apply_glass_blur(x, noise, c):
    """Gaussian blur, quantise to uint8 (floor, as ``np.uint8``), locally shuffle pixels, blur
    again.

    The reference "swap" ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` acts on NumPy views of
    the (3,) pixel vectors, so it copies pixel (h', w') onto (h, w) and leaves (h', w') as it
    was; that is what produced CIFAR-10-C and ImageNet-C, and what we do (for any C)."""
    sigma, delta, iterations = c
    h, w = x.shape[:2]
    x = jnp.floor(filters.gaussian_blur(x, sigma) * 255.0) / 255.0
    sites = jnp.asarray(_glass_sites(h, w, delta, iterations), jnp.int32)
    partners = sites + noise["dxdy"][:, 1] * w + noise["dxdy"][:, 0]

    def copy(i, perm):  # perm[p] = which original pixel now sits at p
        return perm.at[sites[i]].set(perm[partners[i]])

    perm = jax.lax.fori_loop(0, sites.shape[0], copy, jnp.arange(h * w, dtype=jnp.int32))
    x = x.reshape(h * w, -1)[perm].reshape(x.shape)
    return jnp.clip(filters.gaussian_blur(x, sigma), 0.0, 1.0)


def motion_kernel(radius: float, sigma: float) -> np.ndarray:
    """ImageMagick ``MotionBlurImage`` weights: width ``2 * ceil(radius) + 1``, one-sided
    Gaussian ``exp(-i^2 / (2 sigma^2))`` for i = 0..width-1, normalised."""
    width = int(2 * math.ceil(radius) + 1)
    i = np.arange(width)
    k = np.exp(-(i**2) / (2.0 * sigma**2))
    return k / k.sum()


def motion_blur(x, radius: float, sigma: float, angle_deg):
    """ImageMagick's motion blur (as re-implemented by imagecorruptions): output pixel
    (r, col) is ``sum_i k_i * x[r + oy_i, col + ox_i]`` with offsets
    ``ceil(i * sin(angle) - 0.5)``, ``ceil(i * cos(angle) - 0.5)`` and edge replication."""
    k = jnp.asarray(motion_kernel(radius, sigma), jnp.float32)
    h, w = x.shape[:2]
    theta = jnp.deg2rad(angle_deg)
    sin, cos = jnp.sin(theta), jnp.cos(theta)
    rows, cols = jnp.arange(h), jnp.arange(w)

    def tap(i, out):
        oy = jnp.ceil(i * sin - 0.5).astype(jnp.int32)
        ox = jnp.ceil(i * cos - 0.5).astype(jnp.int32)
        shifted = jnp.take(x, jnp.clip(rows + oy, 0, h - 1), axis=0)
        shifted = jnp.take(shifted, jnp.clip(cols + ox, 0, w - 1), axis=1)
        return out + k[i] * shifted

    return jax.lax.fori_loop(0, k.shape[0], tap, jnp.zeros(x.shape, jnp.float32))


def draw_motion(key, x, c):
    """Blur direction, uniform in [-45, 45] degrees."""
    return {"angle": jax.random.uniform(key, (), jnp.float32, -45.0, 45.0)}


def apply_motion_blur(x, noise, c):
    return jnp.clip(motion_blur(x, c[0], c[1], noise["angle"]), 0.0, 1.0)


def apply_zoom_blur(x, noise, c):
    """Average of the image and its centre zooms by each factor in c (``clipped_zoom``)."""
    h, w = x.shape[:2]
    mh = np.stack([filters.clipped_zoom_matrix(h, z) for z in c])
    mw = np.stack([filters.clipped_zoom_matrix(w, z) for z in c])
    # sum_z Mh_z X Mw_z^T, all factors in one contraction
    rows = jnp.einsum("zhi,ij...->zhj...", jnp.asarray(mh, jnp.float32), x, precision="highest")
    zoomed = jnp.einsum(
        "zhj...,zwj->hw...", rows, jnp.asarray(mw, jnp.float32), precision="highest"
    )
    return jnp.clip((x + zoomed) / (len(c) + 1), 0.0, 1.0)
