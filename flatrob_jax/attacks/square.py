"""Square Attack (Andriushchenko et al., ECCV 2020), Linf and L2, as AutoAttack runs it.

Reference: ``pyautoattack/square.py`` with AutoAttack's settings: margin loss, ``p_init=0.8``,
5000 queries, one restart, ``resc_schedule=False`` (the p schedule is read at the raw
iteration number).  Reproduced: the vertical-stripe Linf start and the 5x5-grid L2 start, the
``p`` schedule and square sizes (``s = round(sqrt(p * h * w))``, at least 1 for Linf, at least 3
and odd for L2, at most ``min(h, w)``), positions ``floor(U * (h - s))`` (so, as in the
reference, the last position ``h - s`` is never drawn), the L2 ``eta`` patterns and window
rescaling, acceptance when the margin loss decreases or the example becomes misclassified,
attacking only examples whose margin is still > 0, stopping when all are fooled.

Difference by design: the reference draws one square position, one Linf colour vector and
one ``eta`` orientation per iteration *shared by the whole batch*; here every example draws
its own from ``fold_in(key, example_index)``, so its outcome does not depend on the batch.
Each example's marginal distribution of proposals is the reference's.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from flatrob_jax import execution
from flatrob_jax.attacks import losses, norms
from flatrob_jax.attacks.apgd import check_inputs
from flatrob_jax.execution import Execution


def p_selection(p_init: float, it: int, n_queries: int, rescale: bool = False) -> float:
    """``SquareAttack.p_selection`` (AutoAttack passes ``resc_schedule=False``)."""
    if rescale:
        it = int(it / n_queries * 10000)
    for lo, hi, div in (
        (10, 50, 2),
        (50, 200, 4),
        (200, 500, 8),
        (500, 1000, 16),
        (1000, 2000, 32),
        (2000, 4000, 64),
        (4000, 6000, 128),
        (6000, 8000, 256),
    ):
        if lo < it <= hi:
            return p_init / div
    return p_init / 512 if it > 8000 else p_init


def square_sizes(
    norm: str, p_init: float, n_queries: int, h: int, w: int, rescale: bool = False
) -> np.ndarray:
    """Side of the square proposed at each iteration, ``int32[n_queries]``."""
    out = np.empty(n_queries, np.int32)
    for it in range(n_queries):
        s = int(round(math.sqrt(p_selection(p_init, it, n_queries, rescale) * h * w)))
        if norm == "Linf":
            s = max(s, 1)
        else:
            s = max(s, 3)
            s += s % 2 == 0
        out[it] = min(s, min(h, w))
    return out


def _eta_rectangles(x: int, y: int) -> np.ndarray:
    """``SquareAttack.eta_rectangles`` for L2 (float32, as the reference computes it)."""
    delta = np.zeros((x, y), np.float32)
    x_c, y_c = x // 2 + 1, y // 2 + 1
    c0, c1 = x_c - 1, y_c - 1
    for counter in range(max(x_c, y_c)):
        delta[
            max(c0, 0) : min(c0 + 2 * counter + 1, x), max(0, c1) : min(c1 + 2 * counter + 1, y)
        ] += np.float32(1.0) / np.float32(counter + 1) ** 2
        c0 -= 1
        c1 -= 1
    return delta / np.sqrt((delta**2).sum(dtype=np.float32))


def eta(s: int) -> np.ndarray:
    """``SquareAttack.eta`` for L2 before its random transpose: ``[s, s]``, unit L2 norm."""
    delta = np.zeros((s, s), np.float32)
    delta[: s // 2] = _eta_rectangles(s // 2, s)
    delta[s // 2 :] = -_eta_rectangles(s - s // 2, s)
    return delta / np.sqrt((delta**2).sum(dtype=np.float32))


@functools.lru_cache(maxsize=16)
def _eta_canvases(sizes: tuple, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """For each size: eta at the top-left of an ``[h, w]`` canvas, and its transpose."""
    canv = np.zeros((len(sizes), h, w), np.float32)
    canv_t = np.zeros_like(canv)
    for j, s in enumerate(sizes):
        canv[j, :s, :s] = eta(s)
        canv_t[j, :s, :s] = eta(s).T
    return canv, canv_t


def _window(top, left, s, h, w):
    rows = jnp.arange(h)[:, None]
    cols = jnp.arange(w)[None, :]
    return ((rows >= top) & (rows < top + s) & (cols >= left) & (cols < left + s)).astype(
        jnp.float32
    )


def _randint(key, high):
    """``random_int(0, high)``: ``floor(U * high)``, in ``{0, ..., high - 1}`` (0 if high = 0)."""
    return jnp.floor(jax.random.uniform(key) * high).astype(jnp.int32)


def _sign(key, shape):
    """``random_choice``: ``sign(2U - 1)``."""
    return jnp.sign(2.0 * jax.random.uniform(key, shape) - 1.0)


def _l2_init(key, x, eps, pattern, pattern_t):
    """5x5 grid of eta blocks with random signs per channel and random transposes."""
    h, w, c = x.shape
    s = h // 5
    start = (h - s * 5) // 2
    delta = jnp.zeros_like(x)
    n = 0
    vh = start
    for _ in range(h // s):
        vw = start
        for _ in range(w // s):
            k_t, k_s = jax.random.split(jax.random.fold_in(key, n))
            block = jnp.where(jax.random.uniform(k_t) > 0.5, pattern_t, pattern)
            block = jnp.roll(block, (vh, vw), axis=(0, 1))[:, :, None]
            delta = delta + block * _sign(k_s, (1, 1, c))
            vw += s
            n += 1
        vh += s
    return jnp.clip(x + delta / (jnp.sqrt(jnp.sum(delta**2)) + 1e-12) * eps, 0.0, 1.0)


def _propose_linf(key, x, x_best, s, eps):
    h, w, c = x.shape
    k_h, k_w, k_s = jax.random.split(key, 3)
    win = _window(_randint(k_h, h - s), _randint(k_w, w - s), s, h, w)[:, :, None]
    new = x_best + win * (2.0 * eps * _sign(k_s, (1, 1, c)))
    return jnp.clip(jnp.minimum(jnp.maximum(new, x - eps), x + eps), 0.0, 1.0)


def _propose_l2(key, x, x_best, s, level, eps, canv, canv_t):
    h, w, c = x.shape
    k_h, k_w, k_h2, k_w2, k_t, k_s = jax.random.split(key, 6)
    vh, vw = _randint(k_h, h - s), _randint(k_w, w - s)
    m1 = _window(vh, vw, s, h, w)[:, :, None]
    m2 = _window(_randint(k_h2, h - s), _randint(k_w2, w - s), s, h, w)[:, :, None]
    delta = x_best - x
    norm_window_1 = jnp.sqrt(jnp.sum((delta * m1) ** 2, axis=(0, 1), keepdims=True))
    norm_image = jnp.sqrt(jnp.sum(delta**2))
    norm_windows = jnp.sqrt(jnp.sum((delta * jnp.maximum(m1, m2)) ** 2, axis=(0, 1), keepdims=True))
    pattern = jnp.where(jax.random.uniform(k_t) > 0.5, canv_t[level], canv[level])
    pattern = jnp.roll(pattern, (vh, vw), axis=(0, 1))[:, :, None]
    new = pattern * _sign(k_s, (1, 1, c)) + delta * m1 / (1e-12 + norm_window_1)
    new = (
        new
        / (1e-12 + jnp.sqrt(jnp.sum(new**2, axis=(0, 1), keepdims=True)))
        * jnp.sqrt(jnp.maximum(eps**2 - norm_image**2, 0.0) / c + norm_windows**2)
    )
    delta = delta * (1.0 - m2) * (1.0 - m1) + new
    return jnp.clip(x + delta / (jnp.sqrt(jnp.sum(delta**2)) + 1e-12) * eps, 0.0, 1.0)


def square_program(
    model_fn,
    valid,
    x,
    y,
    key_data,
    *,
    eps: float,
    norm: str,
    n_queries: int,
    p_init: float,
    key_impl: str,
):
    """Per-device Square attack; returns ``(x_adv, fooled)`` (``x_adv`` clean where not fooled)."""
    keys = execution.wrap_keys(key_data, key_impl)
    _, h, w, _ = x.shape
    sizes = square_sizes(norm, p_init, n_queries, h, w)
    levels_list = sorted(set(sizes.tolist()))
    levels = np.asarray([levels_list.index(s) for s in sizes], np.int32)
    canv, canv_t = (jnp.asarray(a) for a in _eta_canvases(tuple(levels_list), h, w))
    sizes_j, levels_j = jnp.asarray(sizes), jnp.asarray(levels)
    k_init = jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys)
    k_loop = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)

    def margin_of(z):
        return losses.margin(model_fn(z), y)

    attacked = (jnp.argmax(model_fn(x), axis=1) == y) & valid
    if norm == "Linf":
        c = x.shape[-1]
        stripes = jax.vmap(lambda k: _sign(k, (1, w, c)))(k_init)
        x_best = jnp.clip(x + eps * stripes, 0.0, 1.0)
    else:
        # The L2 start tiles eta(h // 5) blocks (no odd / >= 3 adjustment, as the reference).
        init_canv, init_canv_t = (jnp.asarray(a) for a in _eta_canvases((h // 5,), h, w))
        x_best = jax.vmap(lambda k, xi: _l2_init(k, xi, eps, init_canv[0], init_canv_t[0]))(
            k_init, x
        )
    margin_min = margin_of(x_best)
    loss_min = margin_min

    def cond(state):
        i, _, margin_min, _ = state
        return (i < n_queries) & jnp.any(attacked & (margin_min > 0.0))

    def body(state):
        i, x_best, margin_min, loss_min = state
        active = attacked & (margin_min > 0.0)
        it_keys = jax.vmap(lambda k: jax.random.fold_in(k, i))(k_loop)
        s = sizes_j[i]
        if norm == "Linf":
            x_new = jax.vmap(lambda k, xi, xb: _propose_linf(k, xi, xb, s, eps))(it_keys, x, x_best)
        else:
            level = levels_j[i]
            x_new = jax.vmap(lambda k, xi, xb: _propose_l2(k, xi, xb, s, level, eps, canv, canv_t))(
                it_keys, x, x_best
            )
        margin = margin_of(x_new)
        loss = margin  # loss='margin'
        improved = active & (loss < loss_min)
        loss_min = jnp.where(improved, loss, loss_min)
        accept = improved | (active & (margin <= 0.0))
        margin_min = jnp.where(accept, margin, margin_min)
        x_best = jnp.where(norms.bcast(accept, x), x_new, x_best)
        return i + 1, x_best, margin_min, loss_min

    _, x_best, _, _ = jax.lax.while_loop(cond, body, (jnp.int32(0), x_best, margin_min, loss_min))
    fooled = attacked & (jnp.argmax(model_fn(x_best), axis=1) != y)
    return jnp.where(norms.bcast(fooled, x), x_best, x), fooled


#: Square runs as one compiled program per batch.
SQUARE_RUNNER = execution.Runner(square_program)


def square(
    apply_fn: Callable,
    x,
    y,
    key: jax.Array,
    *,
    eps: float,
    norm: str,
    n_queries: int = 5000,
    p_init: float = 0.8,
    return_info: bool = False,
    execution: Execution = Execution(),
):
    """Square attack (margin loss); returns ``x_adv`` (clean where not fooled) or
    ``(x_adv, {'fooled': bool[N]})``.  Example ``i`` uses ``fold_in(key, i)``.
    ``execution``: batch size, devices, progress log."""
    x, y = check_inputs(x, y, eps, norm)
    if n_queries < 1:
        raise ValueError(f"n_queries must be >= 1, got {n_queries}")
    if not 0 < p_init <= 1:
        raise ValueError(f"p_init must be in (0, 1], got {p_init}")
    if x.shape[0] == 0:
        return (x, {"fooled": np.zeros(0, bool)}) if return_info else x
    static = dict(eps=float(eps), norm=norm, n_queries=int(n_queries), p_init=float(p_init))
    x_adv, fooled = SQUARE_RUNNER.run(
        static, apply_fn, (x, y), execution=execution, key=key, desc="square"
    )
    return (x_adv, {"fooled": fooled}) if return_info else x_adv
