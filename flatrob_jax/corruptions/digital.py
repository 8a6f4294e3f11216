"""Digital corruptions: brightness, contrast, saturate, pixelate, elastic transform."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flatrob_jax.corruptions import color, filters


def apply_brightness(x, noise, c):
    """HSV value channel + c (clipped), scikit-image HSV (RGB only; see ``color``)."""
    hsv = color.rgb_to_hsv(x)
    hsv = hsv.at[..., 2].set(jnp.clip(hsv[..., 2] + c, 0.0, 1.0))
    return jnp.clip(color.hsv_to_rgb(hsv), 0.0, 1.0)


def apply_saturate(x, noise, c):
    """HSV saturation ``clip(s * c[0] + c[1], 0, 1)`` (RGB only; see ``color``)."""
    hsv = color.rgb_to_hsv(x)
    hsv = hsv.at[..., 1].set(jnp.clip(hsv[..., 1] * c[0] + c[1], 0.0, 1.0))
    return jnp.clip(color.hsv_to_rgb(hsv), 0.0, 1.0)


def apply_contrast(x, noise, c):
    """Pull every channel towards its spatial mean: ``(x - mean) * c + mean``."""
    means = jnp.mean(x, axis=(0, 1), keepdims=True)
    return jnp.clip((x - means) * c + means, 0.0, 1.0)


def apply_pixelate(x, noise, c):
    """Pillow BOX resize to ``int(side * c)`` and back (``make_*_c.py``; imagecorruptions'
    NEAREST upsampling picks the same pixels)."""
    h, w = x.shape[:2]
    return jnp.clip(
        filters.separable(x, filters.pixelate_matrix(h, c), filters.pixelate_matrix(w, c)), 0.0, 1.0
    )


# ----------------------------------------------------------------------------- elastic


def _reflect101(i, n):
    """OpenCV BORDER_REFLECT_101 index map (``dcb|abcd|cba``), any distance."""
    if n == 1:
        return jnp.zeros_like(i)
    p = 2 * (n - 1)
    i = jnp.mod(i, p)
    return jnp.where(i > n - 1, p - i, i)


def _symmetric(i, n):
    """scipy ``mode='reflect'`` index map (``cba|abcd|dcb``), any distance."""
    p = 2 * n
    i = jnp.mod(i, p)
    return jnp.where(i > n - 1, p - 1 - i, i)


def bilinear(img, ys, xs, index_map):
    """Sample img[H, W, C] at float coordinates (ys, xs) [H', W'] with bilinear weights;
    out-of-range neighbours are mapped back with ``index_map``."""
    h, w = img.shape[:2]
    y0, x0 = jnp.floor(ys), jnp.floor(xs)
    fy, fx = (ys - y0)[..., None], (xs - x0)[..., None]
    y0, x0 = y0.astype(jnp.int32), x0.astype(jnp.int32)
    ya, yb = index_map(y0, h), index_map(y0 + 1, h)
    xa, xb = index_map(x0, w), index_map(x0 + 1, w)
    top = img[ya, xa] * (1 - fx) + img[ya, xb] * fx
    bottom = img[yb, xa] * (1 - fx) + img[yb, xb] * fx
    return top * (1 - fy) + bottom * fy


def elastic_scale(h: int, w: int, resolution: str) -> float:
    """Image side that multiplies the fractional elastic constants (see ``severity``)."""
    side = float(min(h, w))
    return side if resolution == "cifar" else side * 244.0 / 224.0


def _affine_points(h, w):
    center = jnp.asarray([h // 2, w // 2], jnp.float32)
    sq = float(min(h, w) // 3)
    return jnp.stack([center + sq, jnp.asarray([center[0] + sq, center[1] - sq]), center - sq])


def draw_elastic(key, x, c):
    """Affine jitter of the 3 control points (uniform in [-c2, c2]) and two uniform(-1, 1)
    fields that become the smooth displacements."""
    k1, k2, k3 = jax.random.split(key, 3)
    h, w = x.shape[:2]
    return {
        "jitter": jax.random.uniform(k1, (3, 2), jnp.float32, -1.0, 1.0),
        "ux": jax.random.uniform(k2, (h, w), jnp.float32, -1.0, 1.0),
        "uy": jax.random.uniform(k3, (h, w), jnp.float32, -1.0, 1.0),
    }


def apply_elastic_transform(x, noise, c):
    """``make_*_c.py``'s elastic transform; c = (alpha, sigma, jitter) in pixels.

    1. Random affine: the 3 points ``centre + s``, ``(centre_0 + s, centre_1 - s)``,
       ``centre - s`` (s = side // 3, read as OpenCV (x, y) points) move by the jitter; the
       affine map taking the old points to the new is applied as OpenCV ``warpAffine``
       (bilinear, coordinates on OpenCV's 1/32-pixel grid, border REFLECT_101).
    2. Elastic: displacements ``alpha * gaussian(uniform(-1, 1), sigma, mode='reflect',
       truncate=3)`` for columns (dx) and rows (dy), sampled like
       ``scipy.ndimage.map_coordinates(order=1, mode='reflect')``.
    """
    alpha, sigma, jitter = c
    h, w = x.shape[:2]
    src = _affine_points(h, w)
    dst = src + jitter * noise["jitter"]
    # M [2, 3] maps (x, y, 1) of src onto dst; warpAffine samples the source at M^-1 (x, y).
    a = jnp.concatenate([src, jnp.ones((3, 1), jnp.float32)], axis=1)
    m = jnp.linalg.solve(a, dst).T
    lin_inv = jnp.linalg.inv(m[:, :2])
    shift_inv = -lin_inv @ m[:, 2]
    cols, rows = jnp.meshgrid(jnp.arange(w, dtype=jnp.float32), jnp.arange(h, dtype=jnp.float32))
    sx = lin_inv[0, 0] * cols + lin_inv[0, 1] * rows + shift_inv[0]
    sy = lin_inv[1, 0] * cols + lin_inv[1, 1] * rows + shift_inv[1]
    # OpenCV rounds to 1/1024 then keeps 1/32 of a pixel.
    sx = jnp.floor(jnp.round(sx * 1024.0) / 32.0) / 32.0
    sy = jnp.floor(jnp.round(sy * 1024.0) / 32.0) / 32.0
    x = bilinear(x, sy, sx, _reflect101)
    if alpha == 0:
        return jnp.clip(x, 0.0, 1.0)

    def smooth(u):
        return filters.gaussian_blur(u, sigma, mode="symmetric", truncate=3.0) * alpha

    dx, dy = smooth(noise["ux"]), smooth(noise["uy"])
    x = bilinear(x, rows + dy, cols + dx, _symmetric)
    return jnp.clip(x, 0.0, 1.0)
