"""Curvature measurement of one trained model, for ``python -m flatrob_jax.analyze``.

``evaluate(eval_model, data, cfg, key=..., log=...)`` builds the dataset-level objective (the
mean cross-entropy over the given examples, eval-mode BatchNorm, sharded over the mesh) and
measures, as ``cfg`` switches:

* lambda_max (top Hessian eigenvalue, Lanczos) with its Ritz residual ``|Hv - lambda v|``;
  optionally the top-k and the smallest eigenvalue;
* tr(H) (Hutchinson, stopping on the relative confidence-interval width, or Hutch++) with its
  standard error, tr(H^2) and per-layer traces;
* the SLQ eigenvalue density (nodes/weights, optional PNG);
* sharpness: Keskar epsilon-sharpness, adaptive sharpness (worst case l2 and average), and the
  PAC-Bayes sigma.

Returns a JSON-serialisable dict (floats, ints, bools, strings, lists, dicts).
"""
from __future__ import annotations

import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from flatrob_jax.curvature.dataset_objective import default_mesh, from_flax
from flatrob_jax.curvature.density import plot_density, slq_density
from flatrob_jax.curvature.hutchinson import hutchinson_trace, hutchpp_trace
from flatrob_jax.curvature.lanczos import lanczos
from flatrob_jax.curvature.sharpness import (
    adaptive_sharpness_average,
    adaptive_sharpness_worst,
    keskar_sharpness,
    pac_bayes_sigma,
)

TRACE_METHODS = ("hutchinson", "hutch++")
PAC_BAYES_METRICS = ("error", "loss")


def default_config() -> ml_collections.ConfigDict:
    """Every field of the curvature section, with its default."""
    cfg = ml_collections.ConfigDict()
    cfg.batch_size = 128  # examples per device per microbatch (memory only; no effect on values)
    cfg.num_devices = 0  # 0: all devices
    cfg.batchnorm = "eval"  # 'eval' (running statistics) or 'batch'
    # lambda_max by Lanczos
    cfg.lanczos_steps = 100  # max Hessian-vector products
    cfg.lanczos_tol = 1e-3  # stop when |Hv - theta v| <= tol * |theta|
    cfg.top_k = 1
    cfg.smallest = False  # also converge the smallest eigenvalue
    # trace
    cfg.trace = True
    cfg.trace_method = "hutchinson"  # or 'hutch++'
    cfg.trace_max_probes = 200  # Hutchinson: max probes; Hutch++: the matvec budget
    cfg.trace_min_probes = 10
    cfg.trace_rel_tol = 0.05  # stop when the CI half-width <= rel_tol * |trace| (0: use all)
    cfg.confidence = 0.95
    # spectral density
    cfg.density = False
    cfg.density_steps = 80
    cfg.density_runs = 1
    cfg.density_png = ""  # path of the PNG plot; '' for none
    # sharpness
    cfg.sharpness = False
    cfg.keskar_epsilon = 1e-3
    cfg.keskar_iters = 10
    cfg.adaptive_rho = 0.05  # worst case, l2 ball of |w|-scaled perturbations
    cfg.adaptive_steps = 10
    cfg.adaptive_average_rho = 0.1
    cfg.adaptive_samples = 10
    cfg.pac_bayes = False  # many loss evaluations; off by default
    cfg.pac_bayes_metric = "error"  # 'error' (Jiang et al.) or 'loss'
    cfg.pac_bayes_target = 0.1
    cfg.pac_bayes_samples = 5
    return cfg


def _check(cfg):
    if cfg.trace_method not in TRACE_METHODS:
        raise ValueError(f"trace_method={cfg.trace_method!r}; allowed: {TRACE_METHODS}")
    if cfg.pac_bayes_metric not in PAC_BAYES_METRICS:
        raise ValueError(f"pac_bayes_metric={cfg.pac_bayes_metric!r}; allowed: {PAC_BAYES_METRICS}")


class _Progress:
    """Logs ``stage: done/total, steps/s, ETA`` at most every ``every_s`` seconds."""

    def __init__(self, log, stage, every_s=10.0):
        self.log, self.stage, self.every_s = log, stage, every_s
        self.start = self.last = time.time()

    def __call__(self, done, total):
        now = time.time()
        if now - self.last < self.every_s and done < total:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        eta = (total - done) / rate if rate > 0 else float("nan")
        self.log(f"curvature/{self.stage}: {done}/{total} HVPs, {rate:.2f} HVP/s, ETA <= {eta:.0f}s")


def evaluate(eval_model: Any, data, cfg: ml_collections.ConfigDict, *, key: jax.Array, log: Callable = print) -> dict:
    """Curvature measures of ``eval_model`` on ``data``; see the module docstring.

    Args:
      eval_model: has ``.model`` (Flax module, ``apply(variables, x, train=False)``) and
        ``.variables`` (``{'params', 'batch_stats'}``), e.g. ``checkpoint.load_for_eval(...)``.
      data: ``(images float32 [N,H,W,C] in [0,1], labels int [N])``.
      cfg: a ConfigDict with the fields of :func:`default_config`.
      key: PRNG key; each measure uses its own ``fold_in``.
      log: progress printer.
    """
    _check(cfg)
    images, labels = data
    timings = {}
    t0 = time.time()
    objective = from_flax(
        eval_model.model,
        eval_model.variables,
        images,
        labels,
        batch_size=cfg.batch_size,
        mesh=default_mesh(cfg.num_devices or None),
        batchnorm=cfg.batchnorm,
    )
    params = objective.params
    out = {
        "num_examples": objective.num_examples,
        "num_params": objective.num_params,
        "num_devices": int(objective.mesh.devices.size),
        "loss": float(objective.loss(params)),
        "error_rate": float(objective.error_rate(params)),
    }
    timings["loss"] = time.time() - t0
    log(f"curvature: {out['num_examples']} examples, {out['num_params']} parameters, loss {out['loss']:.4f}")

    t0 = time.time()
    top = lanczos(
        objective.hvp, params, jax.random.fold_in(key, 0), num_steps=cfg.lanczos_steps, k=cfg.top_k,
        tol=cfg.lanczos_tol, smallest=cfg.smallest, progress=_Progress(log, "lanczos"),
    )
    timings["lanczos"] = time.time() - t0
    out.update(
        lambda_max=float(top.eigenvalues[0]),
        lambda_max_residual=float(top.residuals[0]),
        lanczos_converged=bool(top.converged),
        lanczos_hvps=int(top.num_matvecs),
        top_eigenvalues=[float(x) for x in top.eigenvalues],
        top_residuals=[float(x) for x in top.residuals],
        lambda_min=float(top.smallest_eigenvalue),
        lambda_min_residual=float(top.smallest_residual),
    )
    log(f"curvature: lambda_max {out['lambda_max']:.6g} (residual {out['lambda_max_residual']:.2g}, "
        f"{top.num_matvecs} HVPs, converged={top.converged})")

    if cfg.trace:
        t0 = time.time()
        if cfg.trace_method == "hutchinson":
            tr = hutchinson_trace(
                objective.hvp, params, jax.random.fold_in(key, 1), num_probes=cfg.trace_max_probes,
                min_probes=cfg.trace_min_probes, rel_tol=cfg.trace_rel_tol or None, confidence=cfg.confidence,
                progress=_Progress(log, "trace"),
            )
            out.update(
                trace_of_square=tr.trace_of_square.value,
                trace_of_square_stderr=tr.trace_of_square.stderr,
                trace_per_layer={k: {"value": e.value, "stderr": e.stderr} for k, e in tr.per_layer.items()},
            )
        else:
            tr = hutchpp_trace(
                objective.hvp, params, jax.random.fold_in(key, 1), num_matvecs=cfg.trace_max_probes,
                confidence=cfg.confidence,
            )
        timings["trace"] = time.time() - t0
        out.update(
            trace=tr.trace,
            trace_stderr=tr.stderr,
            trace_ci_halfwidth=tr.ci_halfwidth,
            trace_confidence=tr.confidence,
            trace_method=cfg.trace_method,
            trace_hvps=int(tr.num_matvecs),
        )
        log(f"curvature: trace {tr.trace:.6g} +- {tr.ci_halfwidth:.2g} ({tr.confidence:.0%}, {tr.num_matvecs} HVPs)")

    if cfg.density:
        t0 = time.time()
        density = slq_density(
            objective.hvp, params, jax.random.fold_in(key, 2), num_steps=cfg.density_steps,
            num_runs=cfg.density_runs, progress=_Progress(log, "density"),
        )
        trace, stderr = density.trace()
        out["density"] = {
            "nodes": density.nodes.tolist(),
            "weights": density.weights.tolist(),
            "trace": trace,
            "trace_stderr": stderr if np.isfinite(stderr) else None,
            "png": plot_density(density, cfg.density_png) if cfg.density_png else None,
        }
        timings["density"] = time.time() - t0

    if cfg.sharpness:
        t0 = time.time()
        keskar = keskar_sharpness(objective.value_and_grad, params, epsilon=cfg.keskar_epsilon,
                                  max_iters=cfg.keskar_iters)
        worst = adaptive_sharpness_worst(objective.value_and_grad, params, rho=cfg.adaptive_rho,
                                         steps=cfg.adaptive_steps)
        average = adaptive_sharpness_average(objective.loss, params, jax.random.fold_in(key, 3),
                                             rho=cfg.adaptive_average_rho, num_samples=cfg.adaptive_samples)
        out.update(
            keskar_sharpness=keskar.value,
            adaptive_sharpness_worst=worst.value,
            adaptive_sharpness_average=average.value,
            adaptive_sharpness_average_stderr=average.stderr,
        )
        timings["sharpness"] = time.time() - t0
        log(f"curvature: keskar {keskar.value:.4g}%, adaptive worst {worst.value:.4g}, "
            f"average {average.value:.4g} +- {average.stderr:.2g}")
    if cfg.pac_bayes:
        t0 = time.time()
        metric = objective.error_rate if cfg.pac_bayes_metric == "error" else objective.loss
        try:
            sigma = pac_bayes_sigma(metric, params, jax.random.fold_in(key, 4), target=cfg.pac_bayes_target,
                                    num_samples=cfg.pac_bayes_samples)
        except RuntimeError as e:  # e.g. an error rate already at chance cannot rise by the target
            out.update(pac_bayes_sigma=None, pac_bayes_sharpness=None, pac_bayes_deviation=None,
                       pac_bayes_failure=str(e))
            log(f"curvature: PAC-Bayes sigma undefined: {e}")
        else:
            out.update(pac_bayes_sigma=sigma.sigma, pac_bayes_sharpness=sigma.sharpness,
                       pac_bayes_deviation=sigma.deviation)
            log(f"curvature: PAC-Bayes sigma {sigma.sigma:.4g}")
        timings["pac_bayes"] = time.time() - t0
    out["seconds"] = timings
    return out
