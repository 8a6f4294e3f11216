"""The curvature measures that :func:`flatrob_jax.curvature.evaluate.evaluate` runs: a registry.

A measure is a :class:`Measure`: a name (its entry in the result's ``seconds``), the boolean
setting that switches it on (None: always run), the settings it reads, the allowed values of
those that are a choice, the ``fold_in`` index of its key, its headline flatness metrics, and

    run(objective: DatasetObjective, key, settings: Mapping, log) -> dict

which measures it on the dataset objective and returns its part of the result (floats, ints,
bools, strings, lists, dicts). ``key`` is already its own: ``fold_in(evaluate's key, index)``.
The built-in measures, in the order they run (and their key index):

* ``lanczos`` (0, always): lambda_max with its Ritz residual, the top-k, the smallest;
* ``trace`` (1): tr(H) by Hutchinson (with tr(H^2) and per-layer traces) or Hutch++;
* ``density`` (2): the SLQ eigenvalue density (and its plot);
* ``sharpness`` (3): Keskar and the average adaptive sharpness;
* ``pac_bayes`` (4): the PAC-Bayes sigma;
* ``adaptive_worst`` (5): worst-case adaptive m-sharpness by APGD (Andriushchenko et al.
  2023), one value per setting of the ``adaptive_worst`` list;
* ``adaptive_ascent`` (6, draws no key): the fast worst-case adaptive ascent (l2, full batch).

Results are named by what they are: ``adaptive_worst/linf_0.002`` (norm and radius,
``_normlogits`` with normalized logits), ``adaptive_ascent/l2_0.05``,
``adaptive_average/gauss_0.1`` (with its ``_stderr``).

Adding a measure: its function and one ``register(Measure(...))`` here (or in its own module
that calls ``register``), and its switch and settings, with their defaults, in the config
(``flatrob_jax.analysis.analyses.curvature_config``, the only place a default lives).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, Mapping

import jax
import numpy as np

from flatrob_jax.curvature.dataset_objective import DatasetObjective
from flatrob_jax.curvature.density import plot_density, slq_density
from flatrob_jax.curvature.hutchinson import hutchinson_trace, hutchpp_trace
from flatrob_jax.curvature.lanczos import lanczos
from flatrob_jax.curvature.sharpness import (
    L2_GEOMETRIES,
    NormalizedLogits,
    adaptive_sharpness_apgd,
    adaptive_sharpness_ascent,
    adaptive_sharpness_average,
    keskar_sharpness,
    pac_bayes_sigma,
)
from flatrob_jax.progress import Progress

TRACE_METHODS = ("hutchinson", "hutch++")
PAC_BAYES_METRICS = ("error", "loss")

Run = Callable[[DatasetObjective, jax.Array, Mapping, Callable[[str], None]], dict]


@dataclasses.dataclass(frozen=True)
class Measure:
    name: str
    run: Run
    key_index: int  # its key is fold_in(evaluate's key, key_index); unique per measure
    switch: str | None = None  # the setting that turns it on (when truthy); None: always run
    settings: tuple[str, ...] = ()  # the settings ``run`` reads
    choices: Mapping[str, tuple] = dataclasses.field(default_factory=dict)  # allowed values
    headline: tuple[str, ...] = ()  # fnmatch patterns of its headline flatness results
    check: Callable[[Mapping], None] | None = None  # further checks of its settings' values


_REGISTRY: dict[str, Measure] = {}


def register(measure: Measure) -> Measure:
    """Add ``measure`` (runs after those registered before it); names, key indices and
    settings are each owned by one measure."""
    if measure.name in _REGISTRY:
        raise ValueError(f"curvature measure {measure.name!r} is already registered")
    for other in _REGISTRY.values():
        if other.key_index == measure.key_index:
            raise ValueError(
                f"curvature measure {measure.name!r}: key_index={measure.key_index} is "
                f"{other.name!r}'s; each measure draws its own keys"
            )
        shared = set(_own_settings(other)) & set(_own_settings(measure))
        if shared:
            raise ValueError(
                f"curvature measure {measure.name!r}: settings {sorted(shared)} are "
                f"{other.name!r}'s"
            )
    unknown = set(measure.choices) - set(measure.settings)
    if unknown:
        raise ValueError(f"curvature measure {measure.name!r}: choices for unread {unknown}")
    _REGISTRY[measure.name] = measure
    return measure


def _own_settings(measure: Measure) -> tuple[str, ...]:
    return ((measure.switch,) if measure.switch else ()) + measure.settings


def measures() -> tuple[Measure, ...]:
    """The registered measures, in the order they run."""
    return tuple(_REGISTRY.values())


def setting_names() -> tuple[str, ...]:
    """Every measure's switch and settings, in registration order."""
    return tuple(name for m in measures() for name in _own_settings(m))


def headline_metrics() -> tuple[str, ...]:
    """The (fnmatch) patterns of the results that are headline flatness measures, relative
    to the curvature result, in registration order."""
    return tuple(name for m in measures() for name in m.headline)


def check_choices(settings: Mapping) -> None:
    """ValueError naming the first setting whose value is not one of its allowed values (or
    fails its measure's ``check``)."""
    for m in measures():
        for name, allowed in m.choices.items():
            if settings[name] not in allowed:
                raise ValueError(f"{name}={settings[name]!r}; allowed: {allowed}")
        if m.check is not None:
            m.check(settings)


def enabled(settings: Mapping) -> tuple[Measure, ...]:
    """The measures ``settings`` switch on, in the order they run."""
    return tuple(m for m in measures() if m.switch is None or settings[m.switch])


def _progress(log, stage):
    """The ``progress(done, total)`` callback of the solvers: a line at most every 10 s."""
    return Progress(0, unit="HVP", desc=f"curvature/{stage}", log=log, every_secs=10.0)


# --------------------------------------------------------------------------- the measures


def top_eigenvalues(objective, key, s, log) -> dict:
    """lambda_max (and the top-k, the smallest) by Lanczos, with their Ritz residuals."""
    top = lanczos(
        objective.hvp,
        objective.params,
        key,
        num_steps=s["lanczos_steps"],
        k=s["top_k"],
        tol=s["lanczos_tol"],
        smallest=s["smallest"],
        progress=_progress(log, "lanczos"),
    )
    log(
        f"curvature: lambda_max {float(top.eigenvalues[0]):.6g} "
        f"(residual {float(top.residuals[0]):.2g}, "
        f"{top.num_matvecs} HVPs, converged={top.converged})"
    )
    return {
        "lambda_max": float(top.eigenvalues[0]),
        "lambda_max_residual": float(top.residuals[0]),
        "lanczos_converged": bool(top.converged),
        "lanczos_hvps": int(top.num_matvecs),
        "top_eigenvalues": [float(x) for x in top.eigenvalues],
        "top_residuals": [float(x) for x in top.residuals],
        "lambda_min": float(top.smallest_eigenvalue),
        "lambda_min_residual": float(top.smallest_residual),
    }


def trace(objective, key, s, log) -> dict:
    """tr(H) by Hutchinson (stopping on the interval width; with tr(H^2) and per-layer
    traces) or by Hutch++ (``trace_max_probes`` is its matvec budget)."""
    if s["trace_method"] == "hutchinson":
        tr = hutchinson_trace(
            objective.hvp,
            objective.params,
            key,
            num_probes=s["trace_max_probes"],
            min_probes=s["trace_min_probes"],
            rel_tol=s["trace_rel_tol"] or None,
            confidence=s["confidence"],
            progress=_progress(log, "trace"),
            probe_block_size=s["probe_block_size"],
            block_matvec=objective.hvp_block,
        )
        out = {
            "trace_of_square": tr.trace_of_square.value,
            "trace_of_square_stderr": tr.trace_of_square.stderr,
            "trace_per_layer": {
                k: {"value": e.value, "stderr": e.stderr} for k, e in tr.per_layer.items()
            },
        }
    else:
        tr = hutchpp_trace(
            objective.hvp,
            objective.params,
            key,
            num_matvecs=s["trace_max_probes"],
            confidence=s["confidence"],
            probe_block_size=s["probe_block_size"],
            block_matvec=objective.hvp_block,
        )
        out = {}
    log(
        f"curvature: trace {tr.trace:.6g} +- {tr.ci_halfwidth:.2g} "
        f"({tr.confidence:.0%}, {tr.num_matvecs} HVPs)"
    )
    return {
        **out,
        "trace": tr.trace,
        "trace_stderr": tr.stderr,
        "trace_ci_halfwidth": tr.ci_halfwidth,
        "trace_confidence": tr.confidence,
        "trace_method": s["trace_method"],
        "trace_hvps": int(tr.num_matvecs),
    }


def density(objective, key, s, log) -> dict:
    """The SLQ eigenvalue density (nodes and weights per run), its trace, and its plot at
    ``density_png`` ('' or None: no plot)."""
    spectrum = slq_density(
        objective.hvp,
        objective.params,
        key,
        num_steps=s["density_steps"],
        num_runs=s["density_runs"],
        progress=_progress(log, "density"),
        block_size=s["probe_block_size"],
        block_matvec=objective.hvp_block,
    )
    slq_trace, slq_stderr = spectrum.trace()
    return {
        "density": {
            "nodes": spectrum.nodes.tolist(),
            "weights": spectrum.weights.tolist(),
            "trace": slq_trace,
            "trace_stderr": slq_stderr if np.isfinite(slq_stderr) else None,
            "png": plot_density(spectrum, s["density_png"]) if s["density_png"] else None,
        }
    }


def sharpness(objective, key, s, log) -> dict:
    """Keskar epsilon-sharpness and the average adaptive sharpness (named by its setting)."""
    keskar = keskar_sharpness(
        objective.value_and_grad,
        objective.params,
        epsilon=s["keskar_epsilon"],
        max_iters=s["keskar_iters"],
    )
    average = adaptive_sharpness_average(
        objective.loss,
        objective.params,
        key,
        rho=s["adaptive_average_rho"],
        num_samples=s["adaptive_samples"],
    )
    average_name = f"gauss_{s['adaptive_average_rho']:g}"
    log(
        f"curvature: keskar {keskar.value:.4g}% ({keskar.num_evaluations} gradients), "
        f"adaptive average {average_name} {average.value:.4g} +- {average.stderr:.2g}"
    )
    return {
        "keskar_sharpness": keskar.value,
        "adaptive_average": {
            average_name: average.value,
            f"{average_name}_stderr": average.stderr,
        },
    }


def adaptive_ascent(objective, key, s, log) -> dict:
    """The fast worst-case adaptive ascent (l2) on the whole objective, named by its radius."""
    ascent = adaptive_sharpness_ascent(
        objective.value_and_grad,
        objective.params,
        rho=s["adaptive_ascent_rho"],
        steps=s["adaptive_ascent_steps"],
    )
    name = f"l2_{s['adaptive_ascent_rho']:g}"
    log(f"curvature: adaptive ascent {name} {ascent.value:.4g}")
    return {"adaptive_ascent": {name: ascent.value}}


# One setting of the adaptive_worst list: '<norm>_<rho>' or '<norm>_<rho>_normlogits'.
_ADAPTIVE_SPEC = re.compile(r"(l2|linf)_([0-9.eE+-]+?)(_normlogits)?")
ADAPTIVE_SPEC_FORM = "'<l2|linf>_<rho>[_normlogits]', e.g. 'linf_0.002', 'l2_0.5_normlogits'"


def parse_adaptive_spec(spec: str) -> tuple[str, float, bool]:
    """``(norm, rho, normalize_logits)`` of one ``adaptive_worst`` setting (ValueError naming
    it and the allowed form otherwise)."""
    match = _ADAPTIVE_SPEC.fullmatch(spec) if isinstance(spec, str) else None
    try:
        rho = float(match.group(2)) if match else -1.0
    except ValueError:
        rho = -1.0
    if not match or not 0 <= rho < float("inf"):
        raise ValueError(f"adaptive_worst setting {spec!r}; allowed: {ADAPTIVE_SPEC_FORM}")
    return match.group(1), rho, bool(match.group(3))


def adaptive_spec_name(norm: str, rho: float, normalize_logits: bool) -> str:
    """The result name of a setting: ``linf_0.002``, ``l2_0.5_normlogits``."""
    return f"{norm}_{rho:g}" + ("_normlogits" if normalize_logits else "")


def _check_adaptive_worst(s: Mapping) -> None:
    specs = s["adaptive_worst"]
    if isinstance(specs, str):
        raise ValueError(
            f"adaptive_worst={specs!r}: a tuple of settings, e.g. ('linf_0.002', 'l2_0.5')"
        )
    names = [adaptive_spec_name(*parse_adaptive_spec(spec)) for spec in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"adaptive_worst={tuple(specs)!r} names one setting twice")
    for name in ("adaptive_worst_iters", "adaptive_worst_batch"):
        if not s[name] >= 1:
            raise ValueError(f"{name}={s[name]!r}: must be >= 1")
    if s["adaptive_worst_examples"] is not None and not s["adaptive_worst_examples"] >= 1:
        raise ValueError(
            f"adaptive_worst_examples={s['adaptive_worst_examples']!r}: must be >= 1 or None"
        )
    if not s["adaptive_worst_step_mult"] > 0:
        raise ValueError(f"adaptive_worst_step_mult={s['adaptive_worst_step_mult']!r}: must be > 0")


def adaptive_worst(objective, key, s, log) -> dict:
    """Worst-case adaptive m-sharpness by APGD for each setting of the ``adaptive_worst`` list,
    on the first ``adaptive_worst_examples`` examples (rounded down to whole batches of
    ``adaptive_worst_batch``), every setting from the same key."""
    m = s["adaptive_worst_batch"]
    limit = s["adaptive_worst_examples"] or objective.num_examples
    used = min(limit, objective.num_examples) // m * m
    if used == 0:
        raise ValueError(
            f"adaptive_worst_batch={m} is more than the {objective.num_examples} examples "
            "the curvature is measured on"
        )
    loss = objective.source.per_example_loss if objective.source else None
    batches = {}
    values = {}
    for spec in s["adaptive_worst"]:
        norm, rho, normalize = parse_adaptive_spec(spec)
        if normalize not in batches:
            batch_loss = NormalizedLogits(loss) if normalize else None
            batches[normalize] = [
                b.value_and_grad
                for b in objective.batches(m, num_examples=used, per_example_loss=batch_loss)
            ]
        result = adaptive_sharpness_apgd(
            batches[normalize],
            objective.params,
            key,
            rho=rho,
            norm=norm,
            iters=s["adaptive_worst_iters"],
            random_start=s["adaptive_worst_random_start"],
            step_size_mult=s["adaptive_worst_step_mult"],
            l2_geometry=s["adaptive_worst_l2_geometry"],
        )
        name = adaptive_spec_name(norm, rho, normalize)
        values[name] = result.value
        log(
            f"curvature: adaptive worst {name} {result.value:.4g} "
            f"({used // m} batches of {m}, {result.num_evaluations} gradients)"
        )
    return {"adaptive_worst": values, "adaptive_worst_num_examples": used}


def pac_bayes(objective, key, s, log) -> dict:
    """The PAC-Bayes sigma: the largest noise under which the error (or the loss) rises by
    at most ``pac_bayes_target``; None, with the reason, where no sigma satisfies it."""
    metric = objective.error_rate if s["pac_bayes_metric"] == "error" else objective.loss
    try:
        sigma = pac_bayes_sigma(
            metric,
            objective.params,
            key,
            target=s["pac_bayes_target"],
            num_samples=s["pac_bayes_samples"],
        )
    except RuntimeError as e:  # e.g. an error rate already at chance cannot rise by the target
        log(f"curvature: PAC-Bayes sigma undefined: {e}")
        return {
            "pac_bayes_sigma": None,
            "pac_bayes_sharpness": None,
            "pac_bayes_deviation": None,
            "pac_bayes_failure": str(e),
        }
    log(f"curvature: PAC-Bayes sigma {sigma.sigma:.4g}")
    return {
        "pac_bayes_sigma": sigma.sigma,
        "pac_bayes_sharpness": sigma.sharpness,
        "pac_bayes_deviation": sigma.deviation,
    }


register(
    Measure(
        "lanczos",
        top_eigenvalues,
        key_index=0,
        settings=("lanczos_steps", "lanczos_tol", "top_k", "smallest"),
        headline=("lambda_max",),
    )
)
register(
    Measure(
        "trace",
        trace,
        key_index=1,
        switch="trace",
        settings=(
            "trace_method",
            "trace_max_probes",
            "trace_min_probes",
            "trace_rel_tol",
            "confidence",
        ),
        choices={"trace_method": TRACE_METHODS},
        headline=("trace",),
    )
)
register(
    Measure(
        "density",
        density,
        key_index=2,
        switch="density",
        settings=("density_steps", "density_runs", "density_png"),
    )
)
register(
    Measure(
        "sharpness",
        sharpness,
        key_index=3,
        switch="sharpness",
        settings=("keskar_epsilon", "keskar_iters", "adaptive_average_rho", "adaptive_samples"),
        headline=("keskar_sharpness", "adaptive_average/*"),
    )
)
register(
    Measure(
        "pac_bayes",
        pac_bayes,
        key_index=4,
        switch="pac_bayes",
        settings=("pac_bayes_metric", "pac_bayes_target", "pac_bayes_samples"),
        choices={"pac_bayes_metric": PAC_BAYES_METRICS},
        headline=("pac_bayes_sigma",),
    )
)
register(
    Measure(
        "adaptive_worst",
        adaptive_worst,
        key_index=5,
        switch="adaptive_worst",  # the list of settings; empty: off
        settings=(
            "adaptive_worst_iters",
            "adaptive_worst_batch",
            "adaptive_worst_examples",
            "adaptive_worst_random_start",
            "adaptive_worst_step_mult",
            "adaptive_worst_l2_geometry",
        ),
        choices={"adaptive_worst_l2_geometry": L2_GEOMETRIES},
        headline=("adaptive_worst/*",),
        check=_check_adaptive_worst,
    )
)
register(
    Measure(
        "adaptive_ascent",
        adaptive_ascent,
        key_index=6,  # draws no key
        switch="adaptive_ascent",
        settings=("adaptive_ascent_rho", "adaptive_ascent_steps"),
        headline=("adaptive_ascent/*",),
    )
)
