"""Curvature measurement of one trained model, for ``python -m flatrob_jax.analyze``.

``evaluate(eval_model, data, settings, *, key, log)`` builds the dataset-level objective once
(the mean cross-entropy over the given examples, eval-mode BatchNorm, sharded over the mesh),
records where training ended on those examples (loss, error rate, gradient norm), then runs
each measure of :mod:`flatrob_jax.curvature.measures` that ``settings`` switch on (lambda_max
by Lanczos always, with its Ritz residual and the bottom Ritz value lambda_min; tr(H), the SLQ
density, sharpness, the PAC-Bayes sigma and the APGD adaptive sharpness by their switches).

``settings`` are the fields of the ``analysis.curvature`` config section, all of them: the
defaults live in one place, ``flatrob_jax.analysis.analyses.curvature_config()``, and a
direct caller starts from it::

    from flatrob_jax.analysis.analyses import curvature_config
    out = evaluate(eval_model, (images, labels), curvature_config(), key=key, lanczos_steps=30)

Returns a JSON-serialisable dict (floats, ints, bools, strings, lists, dicts), with the
seconds each stage took under ``seconds``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from flatrob_jax import execution
from flatrob_jax.curvature import measures
from flatrob_jax.curvature.dataset_objective import DatasetObjective, from_flax
from flatrob_jax.curvature.linalg import check_block_size
from flatrob_jax.distributed import make_mesh

#: The settings of the objective itself and of how H is applied (the rest belong to the
#: measures): ``probe_block_size`` is the vectors per call of ``objective.hvp_block`` that the
#: block solvers use (Hutchinson/Hutch++ probes, SLQ runs).
OBJECTIVE_SETTINGS = ("batch_size", "num_devices", "batchnorm", "probe_block_size")
#: Settings of the data the caller measures on, read by the analysis that builds the data
#: (``augment_draws``: ``analysis.analyses.curvature_augmented``); accepted and unused here.
DATA_SETTINGS = ("augment_draws",)


def setting_names() -> tuple[str, ...]:
    """Every setting ``evaluate`` takes: the data's, the objective's, then each measure's."""
    return DATA_SETTINGS + OBJECTIVE_SETTINGS + measures.setting_names()


def resolve_settings(settings: Mapping, overrides: Mapping | None = None) -> dict:
    """``settings`` updated by ``overrides``, checked: every setting present, none unknown,
    each choice allowed (ValueError naming the bad ones and the allowed ones)."""
    resolved = {**{name: settings[name] for name in settings.keys()}, **(overrides or {})}
    allowed = setting_names()
    unknown = sorted(set(resolved) - set(allowed))
    if unknown:
        raise ValueError(f"unknown curvature settings {unknown}; allowed: {allowed}")
    missing = [name for name in allowed if name not in resolved]
    if missing:
        raise ValueError(
            f"curvature settings {missing} missing; start from "
            "flatrob_jax.analysis.analyses.curvature_config() (every setting, with its default)"
        )
    measures.check_choices(resolved)
    execution.check_count("num_devices", resolved["num_devices"], none_means="all devices")
    check_block_size(resolved["probe_block_size"], "probe_block_size")
    return resolved


def build_objective(eval_model: Any, data, settings: Mapping) -> DatasetObjective:
    """The mean loss over ``data`` at ``eval_model``'s weights, sharded over the mesh."""
    images, labels = data
    return from_flax(
        eval_model.model,
        eval_model.variables,
        images,
        labels,
        batch_size=settings["batch_size"],
        mesh=make_mesh(settings["num_devices"]),
        batchnorm=settings["batchnorm"],
    )


@jax.jit
def _tree_equal(a, b):
    return jnp.all(
        jnp.stack([jnp.array_equal(x, y) for x, y in zip(*map(jax.tree_util.tree_leaves, (a, b)))])
    )


def reusing_gradient_at_params(objective: DatasetObjective) -> DatasetObjective:
    """The objective whose ``value_and_grad`` computes ``(L, grad L)`` at its own params once
    and returns that result again whenever it is asked at equal params (the end point's
    gradient norm, Keskar's and the fast ascent's first point): the same program on the same
    inputs, so the same numbers, one gradient evaluation per measure fewer."""
    params, compute = objective.params, objective.value_and_grad
    structure = jax.tree_util.tree_structure(params)
    at_params = compute(params)

    def value_and_grad(p):
        if jax.tree_util.tree_structure(p) == structure and bool(_tree_equal(p, params)):
            return at_params
        return compute(p)

    return dataclasses.replace(objective, value_and_grad=value_and_grad)


def endpoint(objective: DatasetObjective) -> dict:
    """The problem's size and where training ended on it: the loss, the error rate and the
    gradient's l2 norm (how far from a stationary point the curvature is measured)."""
    _, grad = objective.value_and_grad(objective.params)
    flat, _ = ravel_pytree(grad)
    return {
        "num_examples": objective.num_examples,
        "num_params": objective.num_params,
        "num_devices": int(objective.mesh.devices.size),
        "loss": float(objective.loss(objective.params)),
        "grad_norm": float(jnp.linalg.norm(flat)),
        "error_rate": float(objective.error_rate(objective.params)),
    }


def evaluate(
    eval_model: Any,
    data,
    settings: Mapping,
    *,
    key: jax.Array,
    log: Callable[[str], None] = print,
    **overrides,
) -> dict:
    """Curvature measures of ``eval_model`` on ``data``; see the module docstring.

    Args:
      eval_model: has ``.model`` (Flax module, ``apply(variables, x, train=False)``) and
        ``.variables`` (``{'params', 'batch_stats'}``), e.g. ``flatrob_jax.load_for_eval(...)``.
      data: ``(images float32 [N,H,W,C] in [0,1], labels int [N])``.
      settings: every curvature setting (a mapping, e.g. the ``analysis.curvature`` config
        section; the fields and their meaning: ``analysis.analyses.curvature_config``).
      key: PRNG key; measure ``m`` uses ``fold_in(key, m.key_index)`` (lanczos 0, trace 1,
        density 2, sharpness 3, pac_bayes 4, adaptive_worst 5).
      log: progress printer.
      overrides: settings that replace those in ``settings``.
    """
    settings = resolve_settings(settings, overrides)
    t0 = time.time()
    objective = reusing_gradient_at_params(build_objective(eval_model, data, settings))
    out = endpoint(objective)
    seconds = {"loss": time.time() - t0}
    log(
        f"curvature: {out['num_examples']} examples, {out['num_params']} parameters, "
        f"loss {out['loss']:.4f}"
    )
    for measure in measures.enabled(settings):
        t0 = time.time()
        out.update(
            measure.run(objective, jax.random.fold_in(key, measure.key_index), settings, log)
        )
        seconds[measure.name] = time.time() - t0
    out["seconds"] = seconds
    return out
