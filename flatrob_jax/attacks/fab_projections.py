"""Box-constrained projections onto a hyperplane, used by FAB (Croce & Hein, ICML 2020).

For each row: the smallest ``d`` (in Linf or L2 norm) with ``<w, t + d> = b`` and
``t + d`` in ``[0, 1]^D`` (or, if the hyperplane cannot be reached inside the box, the
reference's fallback).  A jittable, batched re-derivation of ``projection_linf`` and
``projection_l2`` in ``pyautoattack/fab_projections.py``: the same sorted break points, the
same ``ceil(log2 D)``-step bisection over them and the same case split, written with masks
(``jnp.where``) instead of boolean indexing, so rows of all cases are computed and selected.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def _take(a, idx):
    return jnp.take_along_axis(a, idx, axis=1)


def projection_linf(t: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    """Linf projection of rows ``t[N, D]`` onto ``{z: <w, z> = b}`` within ``[0, 1]^D``."""
    n, dim = t.shape
    sign = jnp.where(jnp.sum(w * t, axis=1) - b >= 0, 1.0, -1.0).astype(t.dtype)
    w = w * sign[:, None]
    b = b * sign
    a = (w < 0).astype(t.dtype)
    nonzero = (w != 0).astype(t.dtype)
    d = (a - t) * nonzero
    p = a - t * (2 * a - 1)
    indp = jnp.argsort(p, axis=1)
    b = b - jnp.sum(w * t, axis=1)
    b0 = jnp.sum(w * d, axis=1)
    indp2 = indp[:, ::-1]
    ws = _take(w, indp2)
    bs2 = -ws * _take(d, indp2)
    s = jnp.cumsum(jnp.abs(ws), axis=1)
    sb = jnp.cumsum(bs2, axis=1) + b0[:, None]
    b2 = sb[:, -1] - s[:, -1] * _take(p, indp[:, :1])[:, 0]
    c_l = b - b2 > 0
    c2 = (b - b0 > 0) & ~c_l

    lb = jnp.zeros((n,), t.dtype)
    ub = jnp.full((n,), dim - 1, t.dtype)
    for _ in range(math.ceil(math.log2(dim))):
        mid = jnp.floor((lb + ub) / 2)
        mid_i = mid.astype(jnp.int32)[:, None]
        indcurr = _take(indp, dim - 1 - mid_i)
        b2 = (_take(sb, mid_i) - _take(s, mid_i) * _take(p, indcurr))[:, 0]
        c = b - b2 > 0
        lb = jnp.where(c, mid, lb)
        ub = jnp.where(c, ub, mid)
    lb_i = lb.astype(jnp.int32)[:, None]

    lmbd_l = jnp.maximum((b - sb[:, -1]) / (-s[:, -1]), 0.0)[:, None]
    d = jnp.where(c_l[:, None], (2 * a - 1) * lmbd_l, d)
    lmbd = jnp.maximum((b - _take(sb, lb_i)[:, 0]) / (-_take(s, lb_i)[:, 0]), 0.0)[:, None]
    d_c2 = jnp.minimum(lmbd, d) * a + jnp.maximum(-lmbd, d) * (1 - a)
    d = jnp.where(c2[:, None], d_c2, d)
    return d * nonzero


def projection_l2(t: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    """L2 projection of rows ``t[N, D]`` onto ``{z: <w, z> = b}`` within ``[0, 1]^D``."""
    n, dim = t.shape
    c = jnp.sum(w * t, axis=1) - b
    sign = jnp.where(c >= 0, 1.0, -1.0).astype(t.dtype)
    w = w * sign[:, None]
    c = c * sign
    big = jnp.asarray(1e12, t.dtype)
    r = jnp.clip(jnp.maximum(t / w, (t - 1) / w), -big, big)
    r = jnp.where(jnp.abs(w) < 1e-8, big, r)
    r = jnp.where(r == -big, big, r)
    indr = jnp.argsort(r, axis=1)
    rs = _take(r, indr)
    rs2 = jnp.concatenate([rs[:, 1:], jnp.zeros((n, 1), t.dtype)], axis=1)
    rs = jnp.where(rs == big, 0.0, rs)
    rs2 = jnp.where(rs2 == big, 0.0, rs2)
    w3s = _take(w**2, indr)
    w5 = jnp.sum(w3s, axis=1, keepdims=True)
    ws = w5 - jnp.cumsum(w3s, axis=1)
    wmask = (jnp.abs(w) > 1e-8).astype(t.dtype)
    d = -(r * w) * wmask
    s = jnp.concatenate(
        [-w5 * rs[:, :1], jnp.cumsum((-rs2 + rs) * ws, axis=1) - w5 * rs[:, :1]], axis=1
    )
    c4 = s[:, 0] + c < 0
    c3 = jnp.sum(d * w, axis=1) + c > 0
    c2 = ~(c4 | c3)

    lb = jnp.zeros((n,), t.dtype)
    ub = jnp.full((n,), dim - 1, t.dtype)
    for _ in range(math.ceil(math.log2(dim))):
        mid = jnp.floor((lb + ub) / 2)
        up = _take(s, mid.astype(jnp.int32)[:, None])[:, 0] + c > 0
        lb = jnp.where(up, mid, lb)
        ub = jnp.where(up, ub, mid)
    lb_i = lb.astype(jnp.int32)[:, None]

    d = jnp.where(c4[:, None], -(c / w5[:, 0])[:, None] * w, d)
    ws_lb = _take(ws, lb_i)[:, 0]
    alpha = (_take(s, lb_i)[:, 0] + c) / ws_lb + _take(rs, lb_i)[:, 0]
    alpha = jnp.where(ws_lb == 0, 0.0, alpha)[:, None]
    c5 = (alpha > r).astype(t.dtype)
    d = jnp.where(c2[:, None], d * c5 - alpha * w * (1 - c5), d)
    return d * wmask


def projection(norm: str, t: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    if norm == "Linf":
        return projection_linf(t, w, b)
    if norm == "L2":
        return projection_l2(t, w, b)
    raise ValueError(f"FAB projection for norm {norm!r} not implemented; allowed: ('Linf', 'L2')")
