"""Noise corruptions (per pixel and channel, as in ``make_cifar_c.py`` / ``make_imagenet_c.py``).

Every corruption here is a pair ``draw(key, x, c) -> noise`` (all randomness, as arrays) and
``apply(x, noise, c) -> image`` (deterministic), so a test can feed the very same noise to a
reference implementation.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np


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
    """Photon counts ``k ~ Poisson(c * x)`` per pixel and channel (``shot_counts``; for a
    traced ``c``, ``poisson_counts``)."""
    if isinstance(c, (int, float, np.number)):
        return {"k": shot_counts(key, x, float(c))}
    return {"k": poisson_counts(key, c * x)}


_LEVELS = 255


@functools.lru_cache(maxsize=None)
def _level_cdf_table(c: float) -> np.ndarray:
    """CDF of Poisson(c * j / 255) for j = 0..255 on k = 0..K-1, float32 [256, K], with K
    past c + 10 sqrt(c) + 20 so that every row ends at exactly 1.0 (the tail is below 1e-20)."""
    k_max = int(c + 10.0 * math.sqrt(c) + 20.0) + 1
    lam = c * np.arange(_LEVELS + 1)[:, None] / _LEVELS
    k = np.arange(k_max)[None, :]
    lgamma = np.vectorize(math.lgamma)(k + 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_pmf = np.where(
            lam > 0,
            k * np.log(np.where(lam > 0, lam, 1.0)) - lam - lgamma,
            np.where(k == 0, 0.0, -np.inf),
        )
    cdf = np.cumsum(np.exp(log_pmf), axis=1).astype(np.float32)
    cdf[:, -1] = 1.0
    return cdf


def _search_rows(table: np.ndarray, rows, u):
    """Per element, the smallest k with ``table[row, k] >= u``: a branchless binary search
    over rows padded with 1.0 to a power of two (one gather per step, all steps in one loop
    fusion on CPU; 2x faster than a lo/hi search, measured)."""
    steps = max(1, math.ceil(math.log2(table.shape[1])))
    size = 1 << steps
    padded = np.ones((table.shape[0], size), np.float32)
    padded[:, : table.shape[1]] = table
    flat = jnp.asarray(padded).reshape(-1)
    base = rows * size
    pos = jnp.zeros(u.shape, jnp.int32)
    for s in range(steps - 1, -1, -1):
        step = 1 << s
        pos = jnp.where(flat[base + pos + (step - 1)] < u, pos + step, pos)
    return pos


def shot_counts(key, x, c: float):
    """Poisson(c * x) variates, float32, for one image x in [0, 1] and a constant rate ``c``.

    The rate splits as ``c * j / 255 + delta`` with ``j = floor(255 x)`` and delta in
    [0, c / 255), and a Poisson variate of a sum of rates is the sum of independent variates
    of each. The first part has only 256 possible rates, so it is sampled by inversion
    against a precomputed CDF table (one uniform and a ~10-step binary search per element);
    the second by ``_poisson_inversion`` (delta is small; it is 0 for images that are
    quantized to 8 bits, as every image in the reference pipeline is). Exact in
    distribution up to float32 rounding of the CDF, like any float32 sampler, and ~5x
    cheaper than per-element rejection sampling (PTRS) on CPU (measured, see
    benchmarks/corruptions.md).
    """
    x = jnp.clip(jnp.asarray(x, jnp.float32), 0.0, 1.0)
    table = _level_cdf_table(float(c))
    j = jnp.clip(jnp.floor(x * _LEVELS + 1e-4), 0, _LEVELS).astype(jnp.int32)
    lam_j = jnp.asarray((float(c) * np.arange(_LEVELS + 1) / _LEVELS).astype(np.float32))[j]
    delta = jnp.maximum(c * x - lam_j, 0.0)
    u = jax.random.uniform(jax.random.fold_in(key, 0), x.shape, jnp.float32)
    counts = _search_rows(table, j, u).astype(jnp.float32)
    return counts + _poisson_inversion(jax.random.fold_in(key, 1), delta)


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


def _ptrs_proposal(key, lam):
    """One PTRS proposal per element of ``lam`` (>= 10): (candidate, accepted)."""
    slam = jnp.sqrt(lam)
    loglam = jnp.log(lam)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    inv_alpha = 1.1239 + 1.1328 / (b - 3.4)
    v_r = 0.9277 - 3.6224 / (b - 2.0)
    uv = jax.random.uniform(key, (2,) + lam.shape, jnp.float32)
    u = uv[0] - 0.5
    v = uv[1]
    us = 0.5 - jnp.abs(u)
    cand = jnp.floor((2.0 * a / us + b) * u + lam + 0.43)
    quick = (us >= 0.07) & (v <= v_r)
    reject = (cand < 0) | ((us < 0.013) & (v > us))
    log_ok = jnp.log(v) + jnp.log(inv_alpha) - jnp.log(
        a / (us * us) + b
    ) <= -lam + cand * loglam - jax.lax.lgamma(cand + 1.0)
    return cand, quick | (~reject & log_ok)


_RETRY_FRACTION = 8  # later rounds propose for at most 1/8 of the elements at a time


def _poisson_ptrs(key, lam):
    """Hormann (1993) PTRS for lam >= 10: rounds until every element has accepted.

    Round 0 proposes for every element (about 90% accept at lam = 10, more above). Later
    rounds propose only for the elements still rejected, gathered into a fixed-size buffer of
    ``n / 8`` slots (repeated while more remain), so the random numbers, logs and lgamma of
    the ~6 further rounds a batch needs cost a fraction of a full round. An element keeps the
    first candidate it accepts; its draws depend only on ``key`` and on which elements of
    this array were rejected before it, so the result is a function of (key, lam).
    """
    shape = lam.shape
    lam = lam.reshape(-1)
    n = lam.shape[0]
    k, accepted = _ptrs_proposal(jax.random.fold_in(key, 0), lam)
    k = jnp.where(accepted, k, 0.0)
    slots = max(1, -(-n // _RETRY_FRACTION))

    def cond(state):
        _, _, accepted = state
        return ~jnp.all(accepted)

    def body(state):
        r, k, accepted = state
        (idx,) = jnp.nonzero(~accepted, size=slots, fill_value=n)  # n: an empty slot
        cand, ok = _ptrs_proposal(
            jax.random.fold_in(key, r), lam.at[idx].get(mode="fill", fill_value=10.0)
        )
        ok = ok & (idx < n)
        k = k.at[idx].set(jnp.where(ok, cand, 0.0), mode="drop")
        accepted = accepted.at[idx].set(ok, mode="drop")
        return r + 1, k, accepted

    _, k, _ = jax.lax.while_loop(cond, body, (jnp.int32(1), k, accepted))
    return k.reshape(shape)


def apply_shot_noise(x, noise, c):
    """``clip(k / c, 0, 1)``."""
    return jnp.clip(noise["k"] / c, 0.0, 1.0)


def draw_impulse(key, x, c):
    """Salt-and-pepper of ``skimage.util.random_noise(mode='s&p', amount=c)``: each value is
    replaced with probability c, by 1 (salt) or 0 (pepper) with equal odds."""
    k1, k2 = jax.random.split(key)
    return {
        "flipped": jax.random.bernoulli(k1, c, x.shape),
        "salted": jax.random.bernoulli(k2, 0.5, x.shape),
    }


def apply_impulse_noise(x, noise, c):
    out = jnp.where(noise["flipped"] & noise["salted"], 1.0, x)
    return jnp.where(noise["flipped"] & ~noise["salted"], 0.0, out)
