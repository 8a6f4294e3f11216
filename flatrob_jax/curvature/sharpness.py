"""Perturbation-based sharpness measures from the generalization literature.

All measures take the loss (or error) as a function of the parameter pytree, typically
``DatasetObjective.loss`` / ``.value_and_grad`` / ``.error_rate`` (the full-dataset, eval-mode
objective), and ``L(w)`` below is that function at the trained parameters ``w``.

* epsilon-sharpness (Keskar et al. 2017, "On large-batch training...", Metric 2.1, A = I):
  ``100 * (max_{z in C_eps} L(w + z) - L(w)) / (1 + L(w))`` over the box
  ``C_eps = {z : |z_i| <= eps * (|w_i| + 1)}``; the maximum is sought, as in the paper, with
  L-BFGS-B (SciPy, float64, bounds = the box) from ``z = 0`` for ``max_iters`` iterations.
  The best value seen is reported (a lower bound on the true maximum).
* adaptive sharpness, worst case, by APGD (Andriushchenko et al. 2023, "A modern look at the
  relationship between sharpness and generalization", Sec. 3 and their released evaluation
  code, tml-epfl/sharpness-vs-generalization; with ``c = |w|``, Kwon et al. 2021):
  ``max_{||delta / |w| ||_p <= rho} L_B(w + delta) - L_B(w)``, p in {2, inf}, taken per batch
  B of m examples and averaged over the batches (m-sharpness). The maximum is sought with
  their APGD (:func:`adaptive_sharpness_apgd`), so the value is a lower bound on the maximum.
  For p = 2 their code steps in weight space and projects onto the ellipsoid there, which stops
  short of the maximum; by default the l2 step is taken in ``u = delta / |w|`` instead, where
  the constraint is a ball (``l2_geometry='weights'`` reproduces theirs).
  Their "normalized logits" variant is the same with the loss of logits centred and scaled
  to unit l2 norm per example (:class:`NormalizedLogits`).
* adaptive sharpness, worst case, fast ascent (this project's cheap estimate of the same
  maximum over the whole dataset, p = 2): written as ``delta = |w| * u`` with ``|u|_p <= rho``,
  maximized by a few steps of projected normalized gradient ascent on u from 0 (sign steps
  for p = inf), halving the step when the loss does not improve. Neither Kwon et al.'s nor
  Andriushchenko et al.'s solver: no random start, no momentum, no m-sharpness.
* adaptive sharpness, average case (same references):
  ``E_{xi ~ N(0, I)} L(w + rho * |w| * xi) - L(w)``, Monte Carlo with a standard error.
  Both adaptive measures are invariant to the rescaling ``W_l -> c W_l, W_{l+1} -> W_{l+1}/c``
  of ReLU networks (the loss as a function of u is unchanged), unlike the Hessian.
* PAC-Bayes sigma (Jiang et al. 2020, "Fantastic generalization measures", pacbayes.sharpness
  and pacbayes.mag.sharpness; Dziugaite & Roy 2017): the largest ``sigma`` with
  ``E_xi[M(w + sigma * xi)] - M(w) <= target`` where M is the training error (default target
  0.1) or loss, found by bisection on ``log sigma`` with common random numbers (the same
  ``xi`` samples at every sigma). Magnitude-aware: the perturbation of ``w_i`` has standard
  deviation ``sqrt(sigma^2 w_i^2 + mag_eps^2)``. Sharper minima have a smaller sigma; the
  measure reported in that paper is ``1 / sigma^2``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
from jax.flatten_util import ravel_pytree

PyTree = Any
NORMS = ("l2", "linf")


@dataclasses.dataclass(frozen=True)
class SharpnessResult:
    """``value`` of the measure (with ``stderr`` for Monte Carlo ones), ``loss`` L(w), the
    perturbed loss it is built from, and the number of loss/gradient evaluations."""

    value: float
    loss: float
    perturbed_loss: float
    num_evaluations: int
    stderr: float | None = None


@dataclasses.dataclass(frozen=True)
class PacBayesSigma:
    """Largest sigma found (``sigma``: satisfies the constraint; ``sigma_upper``: violates it),
    the measure ``1 / sigma^2``, the deviation at ``sigma``, and evaluations used."""

    sigma: float
    sigma_upper: float
    sharpness: float
    deviation: float
    num_evaluations: int


def _tree_add(a, b):
    return jax.tree_util.tree_map(lambda x, y: x + y.astype(x.dtype), a, b)


def _tree_abs(a):
    return jax.tree_util.tree_map(jnp.abs, a)


def _tree_mul(a, b):
    return jax.tree_util.tree_map(lambda x, y: x * y, a, b)


def _gaussian_like(key, params):
    flat, unravel = ravel_pytree(params)
    return unravel(jax.random.normal(key, flat.shape, flat.dtype))


def keskar_sharpness(
    value_and_grad_fn: Callable[[PyTree], tuple[Any, PyTree]],
    params: PyTree,
    *,
    epsilon: float = 1e-3,
    max_iters: int = 10,
) -> SharpnessResult:
    """Keskar et al.'s epsilon-sharpness in percent (definition in the module docstring)."""
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    flat, unravel = ravel_pytree(params)
    w = np.asarray(flat, dtype=np.float64)
    half_width = epsilon * (np.abs(w) + 1.0)
    best = {"loss": -math.inf, "evals": 0, "base": None}

    def negative_loss(z):
        loss, grad = value_and_grad_fn(unravel(jnp.asarray(w + z, flat.dtype)))
        loss = float(loss)
        best["evals"] += 1
        best["loss"] = max(best["loss"], loss)
        if best["base"] is None and not np.any(z):  # L(w): L-BFGS-B's first point, z = 0
            best["base"] = loss
        return -loss, -np.asarray(ravel_pytree(grad)[0], dtype=np.float64)

    scipy.optimize.minimize(
        negative_loss,
        np.zeros_like(w),
        jac=True,
        method="L-BFGS-B",
        bounds=scipy.optimize.Bounds(-half_width, half_width),
        options={"maxiter": max_iters},
    )
    if best["base"] is None:
        negative_loss(np.zeros_like(w))
    loss = best["base"]
    return SharpnessResult(
        value=100.0 * (best["loss"] - loss) / (1.0 + loss),
        loss=loss,
        perturbed_loss=best["loss"],
        num_evaluations=best["evals"],
    )


def adaptive_sharpness_ascent(
    value_and_grad_fn: Callable[[PyTree], tuple[Any, PyTree]],
    params: PyTree,
    *,
    rho: float,
    norm: str = "l2",
    steps: int = 20,
    step_size: float | None = None,
) -> SharpnessResult:
    """Worst-case adaptive sharpness ``max_{|u|_p <= rho} L(w + |w| u) - L(w)`` by a fast
    projected ascent (the cheap variant; :func:`adaptive_sharpness_apgd` is the published one).

    Projected ascent on u from 0: ``u <- P(u + eta * g / |g|_2)`` (p=2) or
    ``u <- clip(u + eta * sign(g))`` (p=inf), ``g = |w| * grad L(w + |w| u)``; ``eta`` starts
    at ``step_size`` (default ``rho / 2``) and is halved, restarting from the best point,
    whenever a step does not increase the loss. Returns the best loss increase found.
    """
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r}; allowed: {NORMS}")
    if not rho > 0 or steps < 1:
        raise ValueError(f"need rho > 0 and steps >= 1, got rho={rho}, steps={steps}")
    flat, unravel = ravel_pytree(params)
    scale = jnp.abs(flat)
    eta = rho / 2 if step_size is None else step_size

    def evaluate(u):
        loss, grad = value_and_grad_fn(unravel(flat + scale * u))
        return float(loss), scale * ravel_pytree(grad)[0]

    def project(u):
        if norm == "l2":
            return u * jnp.minimum(1.0, rho / jnp.maximum(jnp.linalg.norm(u), 1e-30))
        return jnp.clip(u, -rho, rho)

    u_best = jnp.zeros_like(flat)
    loss0, g_best = evaluate(u_best)
    best = loss0
    for _ in range(steps):
        if norm == "l2":
            direction = g_best / jnp.maximum(jnp.linalg.norm(g_best), 1e-30)
        else:
            direction = jnp.sign(g_best)
        u = project(u_best + eta * direction)
        loss, g = evaluate(u)
        if loss > best:
            best, u_best, g_best = loss, u, g
        else:
            eta /= 2
    return SharpnessResult(
        value=best - loss0, loss=loss0, perturbed_loss=best, num_evaluations=steps + 1
    )


# --------------------------------------------------------------------------- APGD (published)

#: APGD's momentum weight (Croce & Hein 2020; Andriushchenko et al.'s sharpness code).
APGD_MOMENTUM = 0.75
#: A check point halves the step when fewer than this fraction of its iterations improved.
APGD_MIN_UPDATE_RATIO = 0.75


def apgd_checkpoints(iters: int) -> tuple[int, ...]:
    """The iterations (0-based) at which APGD may halve its step: ``ceil(p_j * iters)`` for
    ``p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` (Croce & Hein
    2020), without ``p_0``, up to the first at or past ``iters``. 20 iterations: (5, 9, 12,
    15, 16, 18, 19, 20)."""
    fractions = [0.0, 0.22]
    points = [0, math.ceil(iters * 0.22)]
    while points[-1] < iters and points[-1] != points[-2]:
        fractions.append(fractions[-1] + max(fractions[-1] - fractions[-2] - 0.03, 0.06))
        points.append(math.ceil(fractions[-1] * iters))
    return tuple(points[1:])


def _weighted_norm(x, scale):
    """``|| x / scale ||_2`` over the coordinates with ``scale > 0`` (x is 0 elsewhere)."""
    safe = jnp.where(scale > 0, scale, 1.0)
    return jnp.sqrt(jnp.sum(jnp.where(scale > 0, (x / safe) ** 2, 0.0)))


def _project_ellipsoid(z, scale, rho, bisections: int = 100):
    """Euclidean projection of ``z`` onto ``{x : ||x / scale||_2 <= rho}`` (``x_i = 0`` where
    ``scale_i = 0``): ``x = z scale^2 / (scale^2 + lam)`` with ``lam >= 0`` the root of
    ``||x(lam) / scale||_2 = rho`` (the KKT conditions), found by bisection on
    ``[0, ||z scale||_2 / rho]`` (at the upper end the norm is already <= rho)."""
    sq = scale * scale

    def shrunk(lam):
        return jnp.where(scale > 0, z * sq / jnp.where(sq + lam > 0, sq + lam, 1.0), 0.0)

    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        outside = _weighted_norm(shrunk(mid), scale) > rho
        return jnp.where(outside, mid, lo), jnp.where(outside, hi, mid)

    hi = jnp.linalg.norm(z * scale) / jnp.maximum(rho, jnp.finfo(z.dtype).tiny)
    _, hi = jax.lax.fori_loop(0, bisections, body, (jnp.zeros_like(hi), hi))
    inside = _weighted_norm(z, scale) <= rho
    projected = jnp.where(rho > 0, shrunk(hi), jnp.zeros_like(z))
    return jnp.where(inside, jnp.where(scale > 0, z, 0.0), projected)


#: The geometry of APGD's l2 step: 'scaled' (step and projection in ``u = delta / |w|``,
#: where the constraint is the ball ``||u||_2 <= rho`` and the gradient is ``|w| g``) or
#: 'weights' (Andriushchenko et al.'s code: the step ``|w| g / ||g||_2`` in weight space, then the
#: Euclidean projection onto the ellipsoid ``||delta / |w| ||_2 <= rho``; its fixed points are
#: not the constrained maxima unless every |w_i| is equal, so it stops below the maximum).
#: For p = inf both are the same sign step and clip.
L2_GEOMETRIES = ("scaled", "weights")


@functools.partial(jax.jit, static_argnames=("norm", "geometry"))
def _apgd_step(delta, previous, grad, scale, step, rho, *, norm, geometry):
    """One APGD iteration in ``delta = w' - w`` space, with their momentum:
    ``z = clip(delta + step * |w| * sign(g), -rho |w|, rho |w|)`` (p = inf); for p = 2,
    ``geometry='scaled'``: ``u = delta / |w|``, ``z = |w| P_ball(u + step * h / ||h||_2)`` with
    ``h = |w| g`` the gradient in u; ``'weights'``: ``z = P_ellipsoid(delta + step * |w| g /
    ||g||_2)`` (their code). Then ``0.75 z + 0.25 previous``, ``previous`` the iterate before
    ``delta`` (their momentum)."""
    if norm == "linf":
        bound = rho * scale
        z = jnp.clip(delta + step * scale * jnp.sign(grad), -bound, bound)
    elif geometry == "weights":
        z = delta + step * scale * grad / (jnp.linalg.norm(grad) + 1e-12)
        z = _project_ellipsoid(z, scale, rho)
    else:
        h = scale * grad
        u = jnp.where(scale > 0, delta / jnp.where(scale > 0, scale, 1.0), 0.0)
        u = u + step * h / (jnp.linalg.norm(h) + 1e-12)
        u = u * jnp.minimum(1.0, rho / jnp.maximum(jnp.linalg.norm(u), 1e-30))
        z = scale * u
    return APGD_MOMENTUM * z + (1.0 - APGD_MOMENTUM) * previous


def _random_start(key, scale, rho, norm):
    """A random feasible start: ``|w| * U(-rho, rho)`` per coordinate (p = inf, as their
    ``random_init_lw``), or ``|w| * u`` with u uniform on the sphere of radius rho (p = 2;
    their ``random_init_lw`` draws ``u ~ N(0, rho^2 I)``, far outside the ball)."""
    if norm == "linf":
        return rho * scale * jax.random.uniform(key, scale.shape, scale.dtype, -1.0, 1.0)
    xi = jnp.where(scale > 0, jax.random.normal(key, scale.shape, scale.dtype), 0.0)
    return scale * rho * xi / jnp.maximum(jnp.linalg.norm(xi), 1e-30)


def adaptive_sharpness_apgd(
    batches: Sequence[Callable[[PyTree], tuple[Any, PyTree]]],
    params: PyTree,
    key: jax.Array,
    *,
    rho: float,
    norm: str = "linf",
    iters: int = 20,
    random_start: bool = False,
    step_size_mult: float = 1.0,
    l2_geometry: str = "scaled",
) -> SharpnessResult:
    """Worst-case adaptive m-sharpness by APGD (Andriushchenko et al. 2023):
    ``mean_B max_{||delta / |w| ||_p <= rho} L_B(w + delta) - L_B(w)``.

    ``batches``: one ``value_and_grad`` function per batch B of m examples (the max is taken
    per batch, the mean over batches: m-sharpness; one function over the whole dataset gives
    the full-batch value). Per batch, as in their ``eval_APGD_sharpness``: ``delta_0 = 0`` (or
    a random feasible point, key ``fold_in(key, b)``), step ``eta = 2 rho * step_size_mult``,
    ``iters`` iterations of :func:`_apgd_step` (the gradient at the current iterate; for p = 2
    in the ``l2_geometry`` of :data:`L2_GEOMETRIES`), the best loss kept; at each of
    :func:`apgd_checkpoints` the step is halved when fewer than 75% of the iterations since the
    last check point improved the best loss, or when neither the step nor the best loss changed
    since then, and the next gradient is then taken at the best point. Each batch costs
    ``iters + 1`` gradient evaluations (+1 with a random start). Returns the mean increase
    (``value``), the mean unperturbed and perturbed batch losses, and the evaluations used.
    """
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r}; allowed: {NORMS}")
    if l2_geometry not in L2_GEOMETRIES:
        raise ValueError(f"l2_geometry={l2_geometry!r}; allowed: {L2_GEOMETRIES}")
    if not rho >= 0 or iters < 1 or not step_size_mult > 0:
        raise ValueError(
            f"need rho >= 0, iters >= 1, step_size_mult > 0; got rho={rho}, iters={iters}, "
            f"step_size_mult={step_size_mult}"
        )
    if not batches:
        raise ValueError("batches is empty: need at least one batch's value_and_grad")
    flat, unravel = ravel_pytree(params)
    scale = jnp.abs(flat)
    checkpoints = apgd_checkpoints(iters)
    rho_arg = jnp.asarray(rho, flat.dtype)
    evaluations = 0
    base_losses, best_losses = [], []
    for b, value_and_grad_fn in enumerate(batches):

        def evaluate(delta, value_and_grad_fn=value_and_grad_fn):
            nonlocal evaluations
            evaluations += 1
            loss, grad = value_and_grad_fn(unravel(flat + delta))
            return float(loss), ravel_pytree(grad)[0]

        delta = jnp.zeros_like(flat)
        loss0, grad = evaluate(delta)
        if random_start:
            delta = _random_start(jax.random.fold_in(key, b), scale, rho, norm)
            _, grad = evaluate(delta)
        previous = delta
        best, best_grad = loss0, grad
        step = 2.0 * rho * step_size_mult
        last_step, last_best, last_check, improved = step, best, 0, 0
        for i in range(iters):
            delta, previous = (
                _apgd_step(
                    delta, previous, grad, scale, step, rho_arg, norm=norm, geometry=l2_geometry
                ),
                delta,
            )
            loss, grad = evaluate(delta)
            if loss > best:
                best, best_grad, improved = loss, grad, improved + 1
            if i in checkpoints:
                too_few = improved < APGD_MIN_UPDATE_RATIO * (i - last_check)
                stalled = last_step == step and last_best == best
                last_step, last_best, last_check, improved = step, best, i, 0
                if too_few or stalled:
                    step *= 0.5
                    grad = best_grad  # their code reloads the best weights here
        base_losses.append(loss0)
        best_losses.append(best)
    loss0, best = float(np.mean(base_losses)), float(np.mean(best_losses))
    return SharpnessResult(
        value=float(np.mean(np.subtract(best_losses, base_losses))),
        loss=loss0,
        perturbed_loss=best,
        num_evaluations=evaluations,
    )


@dataclasses.dataclass(frozen=True)
class NormalizedLogits:
    """A per-example loss of normalized logits (Andriushchenko et al.'s "normalized logits"):
    each example's logits centred (mean over classes removed) and divided by their l2 norm
    (at least 1e-10), then ``loss``. Hashable, so objectives with it share compiled programs."""

    loss: Callable[[jax.Array, jax.Array], jax.Array]

    def __call__(self, logits, labels):
        centred = logits - jnp.mean(logits, axis=-1, keepdims=True)
        norms = jnp.linalg.norm(centred, axis=-1, keepdims=True)
        return self.loss(centred / jnp.maximum(norms, 1e-10), labels)


def adaptive_sharpness_average(
    loss_fn: Callable[[PyTree], Any],
    params: PyTree,
    key: jax.Array,
    *,
    rho: float,
    num_samples: int = 10,
) -> SharpnessResult:
    """Average adaptive sharpness ``E L(w + rho |w| xi) - L(w)``, xi standard normal; sample
    s uses ``fold_in(key, s)``. ``stderr`` is the Monte Carlo standard error."""
    if not rho > 0 or num_samples < 1:
        raise ValueError(
            f"need rho > 0 and num_samples >= 1, got rho={rho}, num_samples={num_samples}"
        )
    loss0 = float(loss_fn(params))
    scale = _tree_abs(params)
    losses = []
    for s in range(num_samples):
        xi = _gaussian_like(jax.random.fold_in(key, s), params)
        delta = jax.tree_util.tree_map(lambda c, x: rho * c * x, scale, xi)
        losses.append(float(loss_fn(_tree_add(params, delta))))
    losses = np.array(losses)
    stderr = float(np.std(losses, ddof=1) / math.sqrt(num_samples)) if num_samples > 1 else math.inf
    return SharpnessResult(
        value=float(np.mean(losses)) - loss0,
        loss=loss0,
        perturbed_loss=float(np.mean(losses)),
        num_evaluations=num_samples + 1,
        stderr=stderr,
    )


def pac_bayes_sigma(
    metric_fn: Callable[[PyTree], Any],
    params: PyTree,
    key: jax.Array,
    *,
    target: float = 0.1,
    num_samples: int = 10,
    magnitude_aware: bool = False,
    mag_eps: float = 1e-3,
    sigma_init: float = 1e-2,
    bisection_steps: int = 12,
    max_bracket_steps: int = 20,
) -> PacBayesSigma:
    """Largest sigma with ``E M(w + perturbation(sigma)) - M(w) <= target`` (module doc).

    The bracket starts at ``sigma_init`` and is widened by factors of 4 until it contains the
    crossing; then ``bisection_steps`` bisections on ``log sigma``.
    """
    if not target > 0 or num_samples < 1 or bisection_steps < 1:
        raise ValueError(
            f"need target > 0, num_samples >= 1, bisection_steps >= 1; "
            f"got {target}, {num_samples}, {bisection_steps}"
        )
    base = float(metric_fn(params))
    noises = [_gaussian_like(jax.random.fold_in(key, s), params) for s in range(num_samples)]
    evaluations = 1

    def deviation(sigma):
        nonlocal evaluations
        values = []
        for xi in noises:
            if magnitude_aware:
                std = jax.tree_util.tree_map(
                    lambda w: jnp.sqrt(sigma**2 * w**2 + mag_eps**2), params
                )
            else:
                std = jax.tree_util.tree_map(lambda w: jnp.full_like(w, sigma), params)
            values.append(float(metric_fn(_tree_add(params, _tree_mul(std, xi)))))
            evaluations += 1
        return float(np.mean(values)) - base

    lo, hi = sigma_init, sigma_init
    dev_lo = deviation(lo)
    steps = 0
    if dev_lo <= target:
        hi = lo * 4
        while deviation(hi) <= target:
            lo, hi = hi, hi * 4
            steps += 1
            if steps >= max_bracket_steps:
                raise RuntimeError(
                    f"no sigma up to {hi:g} raises the metric by target={target} "
                    f"above its value {base:g} "
                    "(a metric that saturates, e.g. an error rate near chance, cannot)"
                )
    else:
        lo = hi / 4
        while deviation(lo) > target:
            lo, hi = lo / 4, lo
            steps += 1
            if steps >= max_bracket_steps:
                raise RuntimeError(f"even sigma={lo:g} raises the metric by more than {target}")
    for _ in range(bisection_steps):
        mid = math.sqrt(lo * hi)
        if deviation(mid) <= target:
            lo = mid
        else:
            hi = mid
    return PacBayesSigma(
        sigma=lo,
        sigma_upper=hi,
        sharpness=1.0 / lo**2,
        deviation=deviation(lo),
        num_evaluations=evaluations,
    )
