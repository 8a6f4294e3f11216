"""Targeted FAB (FAB-T; Croce & Hein, ICML 2020) as AutoAttack's standard version runs it.

Reference: ``pyautoattack/fab_base.py`` (``FABAttack.attack_single_run``/``perturb``) and
``fab_pt.py`` with AutoAttack's settings: targeted, 100 iterations, one restart (hence *no*
random start: the reference starts restart ``counter`` randomly only when ``counter > 0``),
``alpha_max = 0.1``, ``eta = 1.05``, ``beta = 0.9``, target classes ranked 2nd..10th by the
clean logits, run in turn on the examples still robust.

Per iteration, with ``f = z_t - z_y`` (target minus true logit) and ``g = grad f`` at the
current point ``x1``: project both ``x1`` and the original ``x0`` onto the linearised boundary
``{z: <g, z> = <g, x1> - f}`` inside the box (:mod:`fab_projections`), take the convex
combination ``(x1 + eta d1)(1 - alpha) + (x0 + eta d2) alpha`` with
``alpha = clip(|d1| / (|d1| + |d2|), 0, alpha_max)``, clip to [0, 1]; when the new point is
misclassified (any class but ``y``, as the reference), keep it if it is the closest so far and
step back towards ``x0`` by ``beta``.  The attack is deterministic (no keys).  An example
counts as fooled only if its closest adversarial point lies within ``eps`` (as ``perturb``).

Target classes side by side (``runs_per_pass = T > 1``): ``T`` target classes run as one
batched program over (target, example) rows (``T`` copies of the batch, row ``t * B + i`` the
run of example ``i`` against its target ``g * T + t``), their outcomes folded in target order;
every row is the same deterministic computation as in the one-target-at-a-time loop, so the
result is the same (``apgd.runs_per_pass_for`` picks ``T``).

Implemented: the standard version (targeted, one restart), Linf and L2.  Not implemented:
untargeted FAB and random restarts (AutoAttack's 'plus' version), and L1.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from flatrob_jax import execution
from flatrob_jax.attacks import norms
from flatrob_jax.attacks.apgd import check_inputs, resolve_runs_per_pass
from flatrob_jax.attacks.fab_projections import projection
from flatrob_jax.execution import Execution


def single_run_targeted(
    model_fn: Callable,
    x: jax.Array,
    y: jax.Array,
    y_target: jax.Array,
    *,
    norm: str,
    n_iter: int,
    alpha_max: float,
    eta: float,
    beta: float,
) -> tuple[jax.Array, jax.Array]:
    """``FABAttack.attack_single_run(is_targeted=True)`` without random start.

    Returns ``(adv, dist)``: the closest misclassified point found (``x`` where none) and its
    distance (``1e10`` where none).
    """
    batch = x.shape[0]
    x0 = x.reshape(batch, -1)

    def diff_and_grad(z):
        def f(z):
            logits = model_fn(z)
            yl = jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]
            tl = jnp.take_along_axis(logits, y_target[:, None], axis=1)[:, 0]
            diff = -(yl - tl)
            return jnp.sum(diff), diff

        g, diff = jax.grad(f, has_aux=True)(z)
        return diff, g

    def body(_, state):
        x1, adv, res2 = state
        df, dg = diff_and_grad(x1)
        w = dg.reshape(batch, -1)
        b = -df + jnp.sum(w * x1.reshape(batch, -1), axis=1)
        d3 = projection(
            norm,
            jnp.concatenate([x1.reshape(batch, -1), x0], 0),
            jnp.concatenate([w, w], 0),
            jnp.concatenate([b, b], 0),
        )
        d1 = d3[:batch].reshape(x.shape)
        d2 = d3[batch:].reshape(x.shape)
        a0 = jnp.maximum(norms.lp_norm(d3, norm), 1e-8)
        a1, a2 = a0[:batch], a0[batch:]
        alpha = norms.bcast(jnp.clip(a1 / (a1 + a2), 0.0, alpha_max), x)
        x1 = jnp.clip((x1 + eta * d1) * (1 - alpha) + (x + d2 * eta) * alpha, 0.0, 1.0)
        is_adv = jnp.argmax(model_fn(x1), axis=1) != y
        t = norms.lp_norm(x1 - x, norm)
        closer = is_adv & (t < res2)
        adv = jnp.where(norms.bcast(closer, x), x1, adv)
        res2 = jnp.where(closer, t, res2)
        x1 = jnp.where(norms.bcast(is_adv, x), x + (x1 - x) * beta, x1)
        return x1, adv, res2

    init = (x, x, jnp.full((batch,), 1e10, x.dtype))
    _, adv, res2 = jax.lax.fori_loop(0, n_iter, body, init)
    return adv, res2


def fab_targeted_program(
    model_fn,
    valid,
    x,
    y,
    *,
    eps: float,
    norm: str,
    n_iter: int,
    n_target_classes: int,
    alpha_max: float,
    eta: float,
    beta: float,
    runs_per_pass: int = 1,
):
    """Per-device FAB-T (``FABAttack.perturb`` with ``targeted=True``, one restart), the
    target classes ``runs_per_pass`` at a time (module doc).

    Returns ``(x_adv, fooled)``; ``x_adv`` is clean where not fooled.
    """
    clean_logits = model_fn(x)
    robust = (jnp.argmax(clean_logits, axis=1) == y) & valid
    order = jnp.argsort(clean_logits, axis=1)
    num_classes = clean_logits.shape[1]
    if n_target_classes + 1 > num_classes:
        raise ValueError(
            f"n_target_classes={n_target_classes} needs at least "
            f"{n_target_classes + 1} classes; the model has {num_classes}"
        )

    runs = max(1, min(runs_per_pass, n_target_classes))
    batch = x.shape[0]
    xs = jnp.concatenate([x] * runs, axis=0) if runs > 1 else x
    ys = jnp.concatenate([y] * runs, axis=0) if runs > 1 else y

    def cond(c):
        r, robust, _ = c
        return (r < n_target_classes) & jnp.any(robust)

    def body(c):
        r, robust, x_adv = c
        # target r + t is the class ranked 2 + r + t (past the last target: padding rows)
        y_target = jnp.concatenate(
            [
                jnp.take(order, num_classes - 2 - jnp.minimum(r + t, n_target_classes - 1), axis=1)
                for t in range(runs)
            ]
        )
        adv, res2 = single_run_targeted(
            model_fn,
            xs,
            ys,
            y_target,
            norm=norm,
            n_iter=n_iter,
            alpha_max=alpha_max,
            eta=eta,
            beta=beta,
        )
        adv = jnp.where(norms.bcast(res2 < 1e10, xs), adv, xs)
        still = (jnp.argmax(model_fn(adv), axis=1) == ys) | (norms.lp_norm(xs - adv, norm) > eps)
        for t in range(runs):
            rows = slice(t * batch, (t + 1) * batch)
            fooled = robust & ~still[rows] & (r + t < n_target_classes)
            robust = robust & ~fooled
            x_adv = jnp.where(norms.bcast(fooled, x), adv[rows], x_adv)
        return r + runs, robust, x_adv

    _, still_robust, x_adv = jax.lax.while_loop(cond, body, (jnp.int32(0), robust, x))
    fooled = (jnp.argmax(clean_logits, axis=1) == y) & valid & ~still_robust
    return x_adv, fooled


#: FAB-T runs as one compiled program per batch (its loops are cheap next to a gradient).
FAB_TARGETED_RUNNER = execution.Runner(fab_targeted_program)


def fab_targeted(
    apply_fn: Callable,
    x,
    y,
    *,
    eps: float,
    norm: str,
    n_iter: int = 100,
    n_target_classes: int = 9,
    alpha_max: float = 0.1,
    eta: float = 1.05,
    beta: float = 0.9,
    runs_per_pass: int = 1,
    return_info: bool = False,
    execution: Execution = Execution(),
):
    """FAB-T adversarial examples within ``eps`` (clean where not found), or ``(x_adv,
    {'fooled': bool[N]})``; see the module doc. ``execution``: batch size, devices, progress
    log. ``runs_per_pass``: target classes side by side (same result; None: 1 on CPU, else as
    many as keep the rows within ``execution.batch_size``)."""
    x, y = check_inputs(x, y, eps, norm)
    if x.shape[0] == 0:
        return (x, {"fooled": np.zeros(0, bool)}) if return_info else x
    static = dict(
        eps=float(eps),
        norm=norm,
        n_iter=int(n_iter),
        n_target_classes=int(n_target_classes),
        alpha_max=float(alpha_max),
        eta=float(eta),
        beta=float(beta),
        runs_per_pass=runs_per_pass,
    )
    static = resolve_runs_per_pass(static, execution, x.shape[0])
    x_adv, fooled = FAB_TARGETED_RUNNER.run(
        static, apply_fn, (x, y), execution=execution, desc="fab-t"
    )
    return (x_adv, {"fooled": fooled}) if return_info else x_adv
