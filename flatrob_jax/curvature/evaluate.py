"""Curvature measurement of one trained model, for ``python -m flatrob_jax.analyze``.

``evaluate(eval_model, data, *, key, log, **settings)`` builds the dataset-level objective (the
mean cross-entropy over the given examples, eval-mode BatchNorm, sharded over the mesh) and
measures, as the keyword settings switch:

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
import numpy as np

from flatrob_jax import execution
from flatrob_jax.curvature.dataset_objective import from_flax
from flatrob_jax.curvature.density import plot_density, slq_density
from flatrob_jax.curvature.hutchinson import hutchinson_trace, hutchpp_trace
from flatrob_jax.curvature.lanczos import lanczos
from flatrob_jax.curvature.sharpness import (
    adaptive_sharpness_average,
    adaptive_sharpness_worst,
    keskar_sharpness,
    pac_bayes_sigma,
)
from flatrob_jax.distributed import make_mesh
from flatrob_jax.progress import Progress

TRACE_METHODS = ("hutchinson", "hutch++")
PAC_BAYES_METRICS = ("error", "loss")


def _check(trace_method, pac_bayes_metric):
    if trace_method not in TRACE_METHODS:
        raise ValueError(f"trace_method={trace_method!r}; allowed: {TRACE_METHODS}")
    if pac_bayes_metric not in PAC_BAYES_METRICS:
        raise ValueError(f"pac_bayes_metric={pac_bayes_metric!r}; allowed: {PAC_BAYES_METRICS}")


def _progress(log, stage):
    """The ``progress(done, total)`` callback of the solvers: a line at most every 10 s."""
    return Progress(0, unit="HVP", desc=f"curvature/{stage}", log=log, every_secs=10.0)


def evaluate(
    eval_model: Any,
    data,
    *,
    key: jax.Array,
    log: Callable = print,
    batch_size: int = 128,
    num_devices: int | None = None,
    batchnorm: str = "eval",
    lanczos_steps: int = 100,
    lanczos_tol: float = 1e-3,
    top_k: int = 1,
    smallest: bool = False,
    trace: bool = True,
    trace_method: str = "hutchinson",
    trace_max_probes: int = 200,
    trace_min_probes: int = 10,
    trace_rel_tol: float | None = 0.05,
    confidence: float = 0.95,
    density: bool = False,
    density_steps: int = 80,
    density_runs: int = 1,
    density_png: str | None = "",
    sharpness: bool = False,
    keskar_epsilon: float = 1e-3,
    keskar_iters: int = 10,
    adaptive_rho: float = 0.05,
    adaptive_steps: int = 10,
    adaptive_average_rho: float = 0.1,
    adaptive_samples: int = 10,
    pac_bayes: bool = False,
    pac_bayes_metric: str = "error",
    pac_bayes_target: float = 0.1,
    pac_bayes_samples: int = 5,
) -> dict:
    """Curvature measures of ``eval_model`` on ``data``; see the module docstring.

    Args:
      eval_model: has ``.model`` (Flax module, ``apply(variables, x, train=False)``) and
        ``.variables`` (``{'params', 'batch_stats'}``), e.g. ``flatrob_jax.load_for_eval(...)``.
      data: ``(images float32 [N,H,W,C] in [0,1], labels int [N])``.
      key: PRNG key; each measure uses its own ``fold_in``.
      log: progress printer.
      batch_size: examples per device per microbatch (memory only; no effect on values).
      num_devices: devices of the mesh; None: all.
      batchnorm: ``'eval'`` (running statistics) or ``'batch'``.
      lanczos_steps, lanczos_tol, top_k, smallest: lambda_max by Lanczos (at most
        ``lanczos_steps`` HVPs, stop when ``|Hv - theta v| <= tol * |theta|``), the top-k, and
        whether to converge the smallest eigenvalue too.
      trace, trace_method, trace_max_probes, trace_min_probes, trace_rel_tol, confidence:
        tr(H) by ``'hutchinson'`` (stop when the CI half-width <= ``trace_rel_tol * |trace|``;
        None: use every probe) or ``'hutch++'`` (``trace_max_probes`` is its matvec budget).
      density, density_steps, density_runs, density_png: the SLQ eigenvalue density and the
        path of its plot ('' or None: no plot).
      sharpness, keskar_*, adaptive_*: Keskar and adaptive (worst-case, average) sharpness.
      pac_bayes, pac_bayes_metric, pac_bayes_target, pac_bayes_samples: the PAC-Bayes sigma
        (``'error'`` or ``'loss'`` rises by ``pac_bayes_target``).
    """
    _check(trace_method, pac_bayes_metric)
    execution.check_count("num_devices", num_devices, none_means="all devices")
    images, labels = data
    timings = {}
    t0 = time.time()
    objective = from_flax(
        eval_model.model,
        eval_model.variables,
        images,
        labels,
        batch_size=batch_size,
        mesh=make_mesh(num_devices),
        batchnorm=batchnorm,
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
    log(
        f"curvature: {out['num_examples']} examples, {out['num_params']} parameters, "
        f"loss {out['loss']:.4f}"
    )

    t0 = time.time()
    top = lanczos(
        objective.hvp,
        params,
        jax.random.fold_in(key, 0),
        num_steps=lanczos_steps,
        k=top_k,
        tol=lanczos_tol,
        smallest=smallest,
        progress=_progress(log, "lanczos"),
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
    log(
        f"curvature: lambda_max {out['lambda_max']:.6g} "
        f"(residual {out['lambda_max_residual']:.2g}, "
        f"{top.num_matvecs} HVPs, converged={top.converged})"
    )

    if trace:
        t0 = time.time()
        if trace_method == "hutchinson":
            tr = hutchinson_trace(
                objective.hvp,
                params,
                jax.random.fold_in(key, 1),
                num_probes=trace_max_probes,
                min_probes=trace_min_probes,
                rel_tol=trace_rel_tol or None,
                confidence=confidence,
                progress=_progress(log, "trace"),
            )
            out.update(
                trace_of_square=tr.trace_of_square.value,
                trace_of_square_stderr=tr.trace_of_square.stderr,
                trace_per_layer={
                    k: {"value": e.value, "stderr": e.stderr} for k, e in tr.per_layer.items()
                },
            )
        else:
            tr = hutchpp_trace(
                objective.hvp,
                params,
                jax.random.fold_in(key, 1),
                num_matvecs=trace_max_probes,
                confidence=confidence,
            )
        timings["trace"] = time.time() - t0
        out.update(
            trace=tr.trace,
            trace_stderr=tr.stderr,
            trace_ci_halfwidth=tr.ci_halfwidth,
            trace_confidence=tr.confidence,
            trace_method=trace_method,
            trace_hvps=int(tr.num_matvecs),
        )
        log(
            f"curvature: trace {tr.trace:.6g} +- {tr.ci_halfwidth:.2g} "
            f"({tr.confidence:.0%}, {tr.num_matvecs} HVPs)"
        )

    if density:
        t0 = time.time()
        spectrum = slq_density(
            objective.hvp,
            params,
            jax.random.fold_in(key, 2),
            num_steps=density_steps,
            num_runs=density_runs,
            progress=_progress(log, "density"),
        )
        slq_trace, slq_stderr = spectrum.trace()
        out["density"] = {
            "nodes": spectrum.nodes.tolist(),
            "weights": spectrum.weights.tolist(),
            "trace": slq_trace,
            "trace_stderr": slq_stderr if np.isfinite(slq_stderr) else None,
            "png": plot_density(spectrum, density_png) if density_png else None,
        }
        timings["density"] = time.time() - t0

    if sharpness:
        t0 = time.time()
        keskar = keskar_sharpness(
            objective.value_and_grad, params, epsilon=keskar_epsilon, max_iters=keskar_iters
        )
        worst = adaptive_sharpness_worst(
            objective.value_and_grad, params, rho=adaptive_rho, steps=adaptive_steps
        )
        average = adaptive_sharpness_average(
            objective.loss,
            params,
            jax.random.fold_in(key, 3),
            rho=adaptive_average_rho,
            num_samples=adaptive_samples,
        )
        out.update(
            keskar_sharpness=keskar.value,
            adaptive_sharpness_worst=worst.value,
            adaptive_sharpness_average=average.value,
            adaptive_sharpness_average_stderr=average.stderr,
        )
        timings["sharpness"] = time.time() - t0
        log(
            f"curvature: keskar {keskar.value:.4g}%, adaptive worst {worst.value:.4g}, "
            f"average {average.value:.4g} +- {average.stderr:.2g}"
        )
    if pac_bayes:
        t0 = time.time()
        metric = objective.error_rate if pac_bayes_metric == "error" else objective.loss
        try:
            sigma = pac_bayes_sigma(
                metric,
                params,
                jax.random.fold_in(key, 4),
                target=pac_bayes_target,
                num_samples=pac_bayes_samples,
            )
        except RuntimeError as e:  # e.g. an error rate already at chance cannot rise by the target
            out.update(
                pac_bayes_sigma=None,
                pac_bayes_sharpness=None,
                pac_bayes_deviation=None,
                pac_bayes_failure=str(e),
            )
            log(f"curvature: PAC-Bayes sigma undefined: {e}")
        else:
            out.update(
                pac_bayes_sigma=sigma.sigma,
                pac_bayes_sharpness=sigma.sharpness,
                pac_bayes_deviation=sigma.deviation,
            )
            log(f"curvature: PAC-Bayes sigma {sigma.sigma:.4g}")
        timings["pac_bayes"] = time.time() - t0
    out["seconds"] = timings
    return out
