"""Colour-space helpers with the reference libraries' exact definitions.

* ``rgb_to_hsv`` / ``hsv_to_rgb``: scikit-image's ``rgb2hsv`` / ``hsv2rgb`` (hue in [0, 1);
  where several channels tie for the maximum, blue wins over green over red; hue and
  saturation are 0 where the image is grey or black).
* ``luma``: ITU-R BT.601 weights 0.299, 0.587, 0.114 (OpenCV ``COLOR_RGB2GRAY``).

Grayscale rule (used by every corruption that mixes colour channels -- brightness,
saturate, snow, frost, spatter): a 1-channel image is treated as the grey RGB image
``(x, x, x)``, the RGB corruption is applied, and the result is turned back into one channel
with ``luma``. This is what ``imagecorruptions`` does (it stacks 1-channel images to RGB)
followed by a standard RGB-to-grey conversion. Channel-wise corruptions (noise, blurs,
contrast, fog, elastic, pixelate, zoom) act on the single channel directly, so their noise
is not averaged away, and JPEG encodes a 1-channel image as a grayscale JPEG (luminance
only), which is what libjpeg does with a grey RGB image up to rounding.
"""

from __future__ import annotations

import jax.numpy as jnp

LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def luma(rgb: jnp.ndarray) -> jnp.ndarray:
    """[..., 3] -> [..., 1] with BT.601 weights."""
    w = jnp.asarray(LUMA_WEIGHTS, rgb.dtype)
    return jnp.sum(rgb * w, axis=-1, keepdims=True)


def rgb_to_hsv(rgb: jnp.ndarray) -> jnp.ndarray:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = jnp.max(rgb, axis=-1)
    delta = v - jnp.min(rgb, axis=-1)
    safe_delta = jnp.where(delta == 0, 1.0, delta)
    s = jnp.where(delta == 0, 0.0, delta / jnp.where(v == 0, 1.0, v))
    h = jnp.where(r == v, (g - b) / safe_delta, 0.0)
    h = jnp.where(g == v, 2.0 + (b - r) / safe_delta, h)
    h = jnp.where(b == v, 4.0 + (r - g) / safe_delta, h)
    h = jnp.mod(h / 6.0, 1.0)
    h = jnp.where(delta == 0, 0.0, h)
    return jnp.stack([h, s, v], axis=-1)


def hsv_to_rgb(hsv: jnp.ndarray) -> jnp.ndarray:
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    hi = jnp.floor(h * 6)
    f = h * 6 - hi
    p = v * (1 - s)
    q = v * (1 - f * s)
    t = v * (1 - (1 - f) * s)
    hi = jnp.mod(hi, 6).astype(jnp.int32)
    table = jnp.stack(
        [
            jnp.stack([v, t, p], -1),
            jnp.stack([q, v, p], -1),
            jnp.stack([p, v, t], -1),
            jnp.stack([p, q, v], -1),
            jnp.stack([t, p, v], -1),
            jnp.stack([v, p, q], -1),
        ],
        axis=0,
    )  # [6, ..., 3]
    return jnp.take_along_axis(table, hi[None, ..., None], axis=0)[0]
