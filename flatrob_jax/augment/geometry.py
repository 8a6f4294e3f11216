"""Affine warps as Pillow's ``Image.transform(size, AFFINE, data, resample)`` computes them.

A matrix here is Pillow's 6-tuple ``(a, b, c, d, e, f)``: output pixel (x, y) samples the input
at ``(a x + b y + c, d x + e y + f)``, pixel centres at half-integers. Rotate, shear and
translate are all such a matrix (the ``*_matrix`` helpers build them with the conventions
torchvision uses on PIL images), so one warp serves every geometric op.

Resampling, as in Pillow's ``Geometry.c``:
  nearest   16.16 fixed-point coordinates (``affine_fixed``), input pixel ``floor(coordinate)``;
  bilinear  the sample point must lie in [0, W) x [0, H); neighbours are clamped at the edges;
            the result is truncated to an integer level (Pillow does not round).
Pixels that sample outside the image get ``fill`` (levels).
"""
import jax.numpy as jnp

INTERPOLATIONS = ("nearest", "bilinear")


def identity_matrix() -> jnp.ndarray:
    return jnp.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], jnp.float32)


def shear_x_matrix(factor) -> jnp.ndarray:
    """torchvision ShearX on PIL (``F.affine`` with shear=degrees(atan(m)), centre [0, 0]):
    ``(1, m, 0, 0, 1, 0)``, the same matrix the AutoAugment and AugMix reference code uses."""
    m = jnp.asarray(factor, jnp.float32)
    return jnp.stack([1.0, m, 0.0, 0.0, 1.0, 0.0]).astype(jnp.float32)


def shear_y_matrix(factor) -> jnp.ndarray:
    """torchvision ShearY on PIL: ``(1, 0, 0, m, 1, 0)``."""
    m = jnp.asarray(factor, jnp.float32)
    return jnp.stack([1.0, 0.0, 0.0, m, 1.0, 0.0]).astype(jnp.float32)


def translate_matrix(dx, dy) -> jnp.ndarray:
    """torchvision ``F.affine(translate=[dx, dy])`` on PIL: content moves right by dx, down by dy,
    i.e. ``(1, 0, -dx, 0, 1, -dy)``."""
    dx = jnp.asarray(dx, jnp.float32)
    dy = jnp.asarray(dy, jnp.float32)
    return jnp.stack([1.0, 0.0, -dx, 0.0, 1.0, -dy]).astype(jnp.float32)


def rotate_matrix(degrees, height: int, width: int) -> jnp.ndarray:
    """``Image.rotate(degrees)`` (counter-clockwise about the centre (W/2, H/2), same size).

    Pillow rounds cos/sin to 15 decimals so that multiples of 90 degrees are exact; in float32
    the same is done by snapping values within 1e-6 of 0 to 0.
    """
    angle = jnp.mod(jnp.asarray(degrees, jnp.float32), 360.0)
    rad = -jnp.deg2rad(angle)
    cos = jnp.cos(rad)
    sin = jnp.sin(rad)
    cos = jnp.where(jnp.abs(cos) < 1e-6, 0.0, cos)
    sin = jnp.where(jnp.abs(sin) < 1e-6, 0.0, sin)
    cx, cy = width / 2.0, height / 2.0
    c = cos * (-cx) + sin * (-cy) + cx
    f = -sin * (-cx) + cos * (-cy) + cy
    return jnp.stack([cos, sin, c, -sin, cos, f]).astype(jnp.float32)


def _grid(height: int, width: int):
    y, x = jnp.meshgrid(
        jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32), indexing="ij"
    )
    return x, y


def _fixed(v):
    """Pillow's FIX: ``floor(v * 65536 + 0.5)`` as int32."""
    return jnp.floor(v * 65536.0 + 0.5).astype(jnp.int32)


def warp_nearest(levels: jnp.ndarray, matrix: jnp.ndarray, fill=0.0) -> jnp.ndarray:
    """Nearest-neighbour affine warp in Pillow's 16.16 fixed point."""
    h, w, _ = levels.shape
    a, b, c, d, e, f = (matrix[i] for i in range(6))
    a0, a1, a3, a4 = _fixed(a), _fixed(b), _fixed(d), _fixed(e)
    a2 = _fixed(c + a * 0.5 + b * 0.5)
    a5 = _fixed(f + d * 0.5 + e * 0.5)
    y, x = jnp.meshgrid(jnp.arange(h, dtype=jnp.int32), jnp.arange(w, dtype=jnp.int32), indexing="ij")
    xin = jnp.right_shift(a2 + x * a0 + y * a1, 16)
    yin = jnp.right_shift(a5 + x * a3 + y * a4, 16)
    inside = (xin >= 0) & (xin < w) & (yin >= 0) & (yin < h)
    flat = jnp.clip(yin, 0, h - 1) * w + jnp.clip(xin, 0, w - 1)
    sampled = levels.reshape(h * w, -1)[flat]
    return jnp.where(inside[..., None], sampled, jnp.asarray(fill, jnp.float32))


def warp_bilinear(levels: jnp.ndarray, matrix: jnp.ndarray, fill=0.0) -> jnp.ndarray:
    """Bilinear affine warp as Pillow's ``bilinear_filter32RGB`` (float32 here, double there)."""
    h, w, _ = levels.shape
    a, b, c, d, e, f = (matrix[i] for i in range(6))
    x, y = _grid(h, w)
    xs = a * (x + 0.5) + b * (y + 0.5) + c
    ys = d * (x + 0.5) + e * (y + 0.5) + f
    inside = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    xs = xs - 0.5
    ys = ys - 0.5
    x0 = jnp.floor(xs)
    y0 = jnp.floor(ys)
    dx = (xs - x0)[..., None]
    dy = (ys - y0)[..., None]
    x0 = x0.astype(jnp.int32)
    y0 = y0.astype(jnp.int32)
    xa, xb = jnp.clip(x0, 0, w - 1), jnp.clip(x0 + 1, 0, w - 1)
    ya, yb = jnp.clip(y0, 0, h - 1), jnp.clip(y0 + 1, 0, h - 1)
    flat = levels.reshape(h * w, -1)
    top_l, top_r = flat[ya * w + xa], flat[ya * w + xb]
    bot_l, bot_r = flat[yb * w + xa], flat[yb * w + xb]
    top = top_l + (top_r - top_l) * dx
    bottom = bot_l + (bot_r - bot_l) * dx
    value = jnp.floor(top + (bottom - top) * dy)
    return jnp.where(inside[..., None], value, jnp.asarray(fill, jnp.float32))


def warp(levels: jnp.ndarray, matrix: jnp.ndarray, interpolation: str = "nearest", fill=0.0) -> jnp.ndarray:
    """Affine warp with ``interpolation`` in INTERPOLATIONS."""
    if interpolation == "nearest":
        return warp_nearest(levels, matrix, fill)
    if interpolation == "bilinear":
        return warp_bilinear(levels, matrix, fill)
    raise ValueError(f"unknown interpolation {interpolation!r}; valid choices: {', '.join(INTERPOLATIONS)}")


__all__ = [
    "INTERPOLATIONS",
    "identity_matrix",
    "rotate_matrix",
    "shear_x_matrix",
    "shear_y_matrix",
    "translate_matrix",
    "warp",
    "warp_bilinear",
    "warp_nearest",
]
