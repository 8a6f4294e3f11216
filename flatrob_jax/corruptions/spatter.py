"""Spatter: water drops (severities with mode 0) or mud (mode 1), after the reference scripts.

The water branch of the reference is an OpenCV pipeline on an 8-bit "liquid" layer; each
step is rewritten here with OpenCV's definition:
``Canny(50, 150)`` (3x3 Sobel with replicated border, L1 gradient magnitude, OpenCV's
non-maximum suppression sectors, hysteresis by 8-connectivity) ->
``distanceTransform(DIST_L2, 5)`` (5x5 chamfer distance, costs 1, 1.4, 2.1969; computed by
parallel min-plus relaxation, exact up to the truncation at 20 that follows) ->
``threshold(TRUNC 20)`` -> ``blur 3x3`` -> uint8 -> ``equalizeHist`` -> ``filter2D`` with the
emboss kernel (uint8, saturating) -> ``blur 3x3`` (uint8). Deviation: values of the liquid
layer above 1 are clipped to 255 before the uint8 cast (NumPy wraps them around).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from flatrob_jax.corruptions import filters

_EMBOSS = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], np.float32)
_CANNY_SHIFT = 15
_TG22 = int(0.4142135623730950488016887242097 * (1 << _CANNY_SHIFT) + 0.5)


def _shift(a, dy, dx, fill):
    """out[i, j] = a[i + dy, j + dx], ``fill`` outside."""
    h, w = a.shape
    p = max(abs(dy), abs(dx))
    ap = jnp.pad(a, p, constant_values=fill)
    return ap[p + dy : p + dy + h, p + dx : p + dx + w]


def canny(img_u8, low: int = 50, high: int = 150):
    """Boolean edge map of ``cv2.Canny(img, low, high)`` (aperture 3, L1 gradient)."""
    a = jnp.pad(img_u8.astype(jnp.int32), 1, mode="edge")
    h, w = img_u8.shape

    def win(dy, dx):
        return a[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    dx = (win(-1, 1) + 2 * win(0, 1) + win(1, 1)) - (win(-1, -1) + 2 * win(0, -1) + win(1, -1))
    dy = (win(1, -1) + 2 * win(1, 0) + win(1, 1)) - (win(-1, -1) + 2 * win(-1, 0) + win(-1, 1))
    mag = jnp.abs(dx) + jnp.abs(dy)

    def nb(oy, ox):
        return _shift(mag, oy, ox, 0)  # magnitudes outside the image are 0

    xs, ys = jnp.abs(dx), jnp.abs(dy)
    tg22x = xs * _TG22
    y = ys << _CANNY_SHIFT
    tg67x = tg22x + (xs << (_CANNY_SHIFT + 1))
    horizontal = (mag > nb(0, -1)) & (mag >= nb(0, 1))
    vertical = (mag > nb(-1, 0)) & (mag >= nb(1, 0))
    s_neg = (dx ^ dy) < 0
    diag = jnp.where(
        s_neg, (mag > nb(-1, 1)) & (mag > nb(1, -1)), (mag > nb(-1, -1)) & (mag > nb(1, 1))
    )
    is_max = jnp.where(y < tg22x, horizontal, jnp.where(y > tg67x, vertical, diag))
    candidate = (mag > low) & is_max
    strong = candidate & (mag > high)

    def grow(state):
        edges, _ = state
        near = jnp.zeros_like(edges)
        for oy in (-1, 0, 1):
            for ox in (-1, 0, 1):
                near = near | _shift(edges, oy, ox, False)
        new = edges | (candidate & near)
        return new, jnp.any(new != edges)

    edges, _ = jax.lax.while_loop(lambda s: s[1], grow, (strong, jnp.array(True)))
    return edges


_CHAMFER5 = [
    (0, 1, 1.0),
    (1, 0, 1.0),
    (0, -1, 1.0),
    (-1, 0, 1.0),
    (1, 1, 1.4),
    (1, -1, 1.4),
    (-1, 1, 1.4),
    (-1, -1, 1.4),
] + [
    (dy, dx, 2.1969)
    for dy, dx in ((1, 2), (2, 1), (-1, 2), (-2, 1), (1, -2), (2, -1), (-1, -2), (-2, -1))
]


def chamfer_distance(zero_mask, cap: float = 20.0):
    """``cv2.distanceTransform(DIST_L2, 5)`` to the nearest True pixel, min(., cap)."""
    big = jnp.float32(1e6)
    d = jnp.where(zero_mask, 0.0, big)

    def relax(_, d):
        nd = d
        for oy, ox, cost in _CHAMFER5:
            nd = jnp.minimum(nd, _shift(d, oy, ox, big) + cost)
        return nd

    # Every move costs >= 1, so ceil(cap) + 1 rounds settle all distances below the cap.
    d = jax.lax.fori_loop(0, int(np.ceil(cap)) + 1, relax, d)
    return jnp.minimum(d, cap)


def equalize_hist(u8):
    """``cv2.equalizeHist`` on integer values 0..255."""
    v = u8.astype(jnp.int32).reshape(-1)
    hist = jnp.zeros(256, jnp.int32).at[v].add(1)
    total = v.shape[0]
    first = jnp.argmax(hist > 0)
    scale = 255.0 / jnp.maximum(total - hist[first], 1)
    cum = jnp.cumsum(hist) - hist[first]  # sum over (first, i]
    lut = jnp.clip(jnp.round(cum * scale), 0, 255)
    lut = jnp.where(jnp.arange(256) <= first, 0.0, lut)
    out = lut[v].reshape(u8.shape)
    return jnp.where(hist[first] == total, u8.astype(jnp.float32), out)


def _blur_u8(a):
    """``cv2.blur(a, (3, 3))`` on a uint8 image: rounded box mean, border REFLECT_101."""
    m = filters.box_matrix(a.shape[0]), filters.box_matrix(a.shape[1])
    return jnp.round(filters.separable(a, *m))


def water_mask(liquid):
    """The reference's ``liquid_layer * dist`` for the water branch, before normalisation."""
    liquid_u8 = jnp.floor(jnp.clip(liquid * 255.0, 0.0, 255.0))
    edges = canny(liquid_u8.astype(jnp.int32))
    dist = chamfer_distance(edges)
    dist = jnp.floor(
        filters.separable(
            dist, filters.box_matrix(dist.shape[0]), filters.box_matrix(dist.shape[1])
        )
    )
    dist = equalize_hist(dist)
    dist = jnp.clip(
        jnp.round(filters.correlate2d(dist[..., None], _EMBOSS, "reflect")[..., 0]), 0, 255
    )
    dist = _blur_u8(dist)
    return liquid_u8 * dist


def draw_spatter(key, x, c):
    return {"liquid": jax.random.normal(key, x.shape[:2], jnp.float32)}


def apply_spatter(x, noise, c):
    """Water (mode 0): pale-turquoise (175, 238, 238) drops with embossed rims, strength c4.
    Mud (mode 1): brown (63, 42, 20) blobs where the blurred liquid mask exceeds 0.8.
    (RGB only; see ``color``.)"""
    mean, std, sigma, thresh, strength, mode = c
    liquid = filters.gaussian_blur(mean + std * noise["liquid"], sigma)
    liquid = jnp.where(liquid < thresh, 0.0, liquid)
    if mode == 0:
        m = water_mask(liquid)
        m = m / jnp.maximum(jnp.max(m), 1e-12) * strength
        tint = jnp.asarray([175.0, 238.0, 238.0]) / 255.0
        return jnp.clip(x + m[..., None] * tint, 0.0, 1.0)
    m = jnp.where(liquid > thresh, 1.0, 0.0)
    m = filters.gaussian_blur(m, strength)
    m = jnp.where(m < 0.8, 0.0, m)[..., None]
    mud = jnp.asarray([63.0, 42.0, 20.0]) / 255.0
    return jnp.clip(x * (1 - m) + mud * m, 0.0, 1.0)
