"""Norm balls: names, per-example norms, normalisation and projections (pixel space, [0, 1] box).

Conventions follow pyautoattack 0.2.0 (``APGDAttack.normalize`` and the projections written
inline in ``APGDAttack.attack_single_run``): normalisation divides by ``norm + 1e-12``, and the
L2 projection rescales ``x_adv - x`` to length ``min(eps, ||x_adv - x||)`` before clipping to
the box.  Arrays are batches ``[B, ...]``; every reduction is over all non-batch axes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NORMS = ("Linf", "L2")


def check_norm_and_eps(norm: str, eps: float) -> None:
    """Raise a ValueError naming the bad value and the allowed ones."""
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; allowed: {NORMS}")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}")


def _bcast(v: jax.Array, like: jax.Array) -> jax.Array:
    return v.reshape((-1,) + (1,) * (like.ndim - 1))


def lp_norm(d: jax.Array, norm: str) -> jax.Array:
    """Per-example norm ``[B]`` of ``d[B, ...]``."""
    flat = d.reshape(d.shape[0], -1)
    if norm == "Linf":
        return jnp.max(jnp.abs(flat), axis=1)
    if norm == "L2":
        return jnp.sqrt(jnp.sum(flat * flat, axis=1))
    raise ValueError(f"unknown norm {norm!r}; allowed: {NORMS}")


def normalize(d: jax.Array, norm: str) -> jax.Array:
    """``d / (||d|| + 1e-12)`` per example (``APGDAttack.normalize``)."""
    return d / (_bcast(lp_norm(d, norm), d) + 1e-12)


def project(x_adv: jax.Array, x: jax.Array, eps: float, norm: str) -> jax.Array:
    """Map ``x_adv`` into the eps-ball around ``x`` intersected with ``[0, 1]``.

    Linf: ``clip(min(max(x_adv, x - eps), x + eps), 0, 1)``.
    L2: ``clip(x + normalize(x_adv - x) * min(eps, ||x_adv - x||), 0, 1)`` (APGD's formula; the
    box clip moves every coordinate towards ``x``, so the result stays in the ball).
    """
    if norm == "Linf":
        return jnp.clip(jnp.minimum(jnp.maximum(x_adv, x - eps), x + eps), 0.0, 1.0)
    if norm == "L2":
        d = x_adv - x
        radius = jnp.minimum(eps, lp_norm(d, "L2"))
        return jnp.clip(x + normalize(d, "L2") * _bcast(radius, d), 0.0, 1.0)
    raise ValueError(f"unknown norm {norm!r}; allowed: {NORMS}")


def bcast(v: jax.Array, like: jax.Array) -> jax.Array:
    """Reshape a per-example vector ``[B]`` to broadcast against ``like[B, ...]``."""
    return _bcast(v, like)
