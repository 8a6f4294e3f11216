"""Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019): batch-level, NOT label-preserving;
both return ``(images, labels)`` with mixed soft labels.

Pairing: example ``i`` is mixed with its neighbour ``i ^ 1`` (0<->1, 2<->3, ...), each with its
own ``lambda`` drawn from its own key. Because global example indices are contiguous on a
device and per-device batches are even, a pair never straddles two devices, so the result
does not depend on the device count (timm's "elementwise" mode pairs i with B-1-i instead,
which would). An odd final example is paired with itself (left unchanged).
"""

import jax
import jax.numpy as jnp

from flatrob_jax.augment import sampling


def partner_index(batch_size: int) -> jnp.ndarray:
    """i ^ 1, with an odd last example paired with itself."""
    idx = jnp.arange(batch_size) ^ 1
    return jnp.where(idx < batch_size, idx, jnp.arange(batch_size))


def mixup(keys, images, labels, alpha=1.0):
    """``x_i <- lam_i x_i + (1 - lam_i) x_j``, same for labels, ``lam_i ~ Beta(alpha, alpha)``."""
    j = partner_index(images.shape[0])
    a = jnp.asarray(alpha, jnp.float32)
    lam = jax.vmap(lambda k: sampling.beta(k, a, a))(keys)
    mixed = lam[:, None, None, None] * images + (1.0 - lam[:, None, None, None]) * images[j]
    return mixed, lam[:, None] * labels + (1.0 - lam[:, None]) * labels[j]


def cutmix_box(key, height: int, width: int, alpha):
    """CutMix's box: ``lam ~ Beta(alpha, alpha)``; a box of ``int(H sqrt(1-lam))`` x
    ``int(W sqrt(1-lam))`` centred at a uniform pixel, clipped (the reference ``rand_bbox``).
    Returns (mask [H, W] of the pasted region, the label weight ``1 - area / (H W)``)."""
    draws = sampling.Uniforms(key, 2 * sampling.GAMMA_UNIFORMS + 2)
    a = jnp.asarray(alpha, jnp.float32)
    lam = draws.beta(a, a)
    ratio = jnp.sqrt(1.0 - lam)
    cut_h = jnp.floor(height * ratio).astype(jnp.int32)
    cut_w = jnp.floor(width * ratio).astype(jnp.int32)
    cy = draws.integers((), 0, height)
    cx = draws.integers((), 0, width)
    y1, y2 = jnp.clip(cy - cut_h // 2, 0, height), jnp.clip(cy + cut_h // 2, 0, height)
    x1, x2 = jnp.clip(cx - cut_w // 2, 0, width), jnp.clip(cx + cut_w // 2, 0, width)
    rows = jnp.arange(height)[:, None]
    cols = jnp.arange(width)[None, :]
    mask = (rows >= y1) & (rows < y2) & (cols >= x1) & (cols < x2)
    weight = 1.0 - ((y2 - y1) * (x2 - x1)).astype(jnp.float32) / (height * width)
    return mask, weight


def cutmix(keys, images, labels, alpha=1.0):
    """Paste the partner's box into each image; labels weighted by the kept area."""
    b, h, w, _ = images.shape
    j = partner_index(b)
    masks, weights = jax.vmap(lambda k: cutmix_box(k, h, w, alpha))(keys)
    mixed = jnp.where(masks[..., None], images[j], images)
    return mixed, weights[:, None] * labels + (1.0 - weights[:, None]) * labels[j]


__all__ = ["cutmix", "cutmix_box", "mixup", "partner_index"]
