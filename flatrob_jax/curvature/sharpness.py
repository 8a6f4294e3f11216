"""Perturbation-based sharpness measures from the generalization literature.

All measures take the loss (or error) as a function of the parameter pytree, typically
``DatasetObjective.loss`` / ``.value_and_grad`` / ``.error_rate`` (the full-dataset, eval-mode
objective), and ``L(w)`` below is that function at the trained parameters ``w``.

* epsilon-sharpness (Keskar et al. 2017, "On large-batch training...", Metric 2.1, A = I):
  ``100 * (max_{z in C_eps} L(w + z) - L(w)) / (1 + L(w))`` over the box
  ``C_eps = {z : |z_i| <= eps * (|w_i| + 1)}``; the maximum is sought, as in the paper, with
  L-BFGS-B (SciPy, float64, bounds = the box) from ``z = 0`` for ``max_iters`` iterations.
  The best value seen is reported (a lower bound on the true maximum).
* adaptive sharpness, worst case (Kwon et al. 2021, ASAM; Andriushchenko et al. 2023,
  "A modern look at the relationship between sharpness and generalization", with ``c = |w|``):
  ``max_{|delta / |w||_p <= rho} L(w + delta) - L(w)``, p in {2, inf}. Written as
  ``delta = |w| * u`` with ``|u|_p <= rho``, maximized by projected normalized gradient ascent
  on u (sign steps for p = inf), halving the step when the loss does not improve.
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
import math
from typing import Any, Callable

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
    best = {"loss": -math.inf, "evals": 0}

    def negative_loss(z):
        loss, grad = value_and_grad_fn(unravel(jnp.asarray(w + z, flat.dtype)))
        loss = float(loss)
        best["evals"] += 1
        best["loss"] = max(best["loss"], loss)
        return -loss, -np.asarray(ravel_pytree(grad)[0], dtype=np.float64)

    base, _ = negative_loss(np.zeros_like(w))
    scipy.optimize.minimize(
        negative_loss,
        np.zeros_like(w),
        jac=True,
        method="L-BFGS-B",
        bounds=scipy.optimize.Bounds(-half_width, half_width),
        options={"maxiter": max_iters},
    )
    loss = -base
    return SharpnessResult(
        value=100.0 * (best["loss"] - loss) / (1.0 + loss),
        loss=loss,
        perturbed_loss=best["loss"],
        num_evaluations=best["evals"],
    )


def adaptive_sharpness_worst(
    value_and_grad_fn: Callable[[PyTree], tuple[Any, PyTree]],
    params: PyTree,
    *,
    rho: float,
    norm: str = "l2",
    steps: int = 20,
    step_size: float | None = None,
) -> SharpnessResult:
    """Worst-case adaptive sharpness ``max_{|u|_p <= rho} L(w + |w| u) - L(w)``.

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
