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
    """Photon counts ``k ~ Poisson(c * x)`` per pixel and channel (``poisson_counts``)."""
    return {"k": poisson_counts(key, c * x)}


_SMALL_LAM = 10.0  # inversion below, PTRS at and above (as NumPy and jax.random.poisson)


def poisson_counts(key, lam):
    """Poisson(lam) variates, float32, elementwise, for one image's array of rates.

    ``jax.random.poisson`` runs a per-element rejection loop that splits a key per
    iteration and evaluates both of its samplers under vmap; here every round draws
    whole arrays of uniforms from ``fold_in(key, round)`` instead:

    * lam < 10: inversion by sequential search, one uniform u per element,
      k = min{k : P(K <= k) >= u}, the CDF built term by term (p_k = p_{k-1} lam / k);
    * lam >= 10: Hormann's PTRS transformed rejection (the sampler of NumPy and of
      jax.random.poisson), rounds of two uniforms per element until every element has
      accepted; an element keeps the first candidate it accepts.

    The result for an element depends only on ``key`` and its position, so a batch
    (vmap over per-example keys) gives each example the same counts as alone.
    """
    lam = jnp.asarray(lam, jnp.float32)
    small = lam < _SMALL_LAM
    k_small = _poisson_inversion(jax.random.fold_in(key, 0), jnp.where(small, lam, 0.0))
    k_large = _poisson_ptrs(jax.random.fold_in(key, 1), jnp.where(small, _SMALL_LAM, lam))
    return jnp.where(small, k_small, k_large)


def _poisson_inversion(key, lam, max_k=64):
    """Sequential-search inversion for lam < 10 (P(K > 64) < 1e-30 there)."""
    u = jax.random.uniform(key, lam.shape, jnp.float32)
    p = jnp.exp(-lam)

    def cond(state):
        k, _, cdf = state
        return jnp.any((u > cdf) & (k < max_k))

    def body(state):
        k, p, cdf = state
        more = (u > cdf) & (k < max_k)
        k1 = k + 1.0
        p = jnp.where(more, p * lam / k1, p)
        return jnp.where(more, k1, k), p, jnp.where(more, cdf + p, cdf)

    k, _, _ = jax.lax.while_loop(cond, body, (jnp.zeros_like(lam), p, p))
    return k


def _poisson_ptrs(key, lam):
    """Hormann (1993) PTRS for lam >= 10: rounds until every element has accepted."""
    slam = jnp.sqrt(lam)
    loglam = jnp.log(lam)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    inv_alpha = 1.1239 + 1.1328 / (b - 3.4)
    v_r = 0.9277 - 3.6224 / (b - 2.0)

    def cond(state):
        _, _, accepted = state
        return ~jnp.all(accepted)

    def body(state):
        r, k, accepted = state
        uv = jax.random.uniform(jax.random.fold_in(key, r), (2,) + lam.shape, jnp.float32)
        u = uv[0] - 0.5
        v = uv[1]
        us = 0.5 - jnp.abs(u)
        cand = jnp.floor((2.0 * a / us + b) * u + lam + 0.43)
        quick = (us >= 0.07) & (v <= v_r)
        reject = (cand < 0) | ((us < 0.013) & (v > us))
        log_ok = (jnp.log(v) + jnp.log(inv_alpha) - jnp.log(a / (us * us) + b)
                  <= -lam + cand * loglam - jax.lax.lgamma(cand + 1.0))
        ok = quick | (~reject & log_ok)
        take = ok & ~accepted
        return r + 1, jnp.where(take, cand, k), accepted | ok

    _, k, _ = jax.lax.while_loop(cond, body, (jnp.int32(0), jnp.zeros_like(lam), jnp.zeros(lam.shape, bool)))
    return k


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
