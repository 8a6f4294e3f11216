"""The analysis registry: one entry per analysis, one contract.

An analysis (clean error, curvature, curvature on augmented data, corruptions, attacks, and
whatever comes next) is an :class:`Analysis`: a name, the data it needs, the config section
that holds its settings, and a function

    run(inputs: Inputs, *, log, **settings) -> dict of (nested) named metrics

``settings`` are the fields of its config section (``analysis.<section>``) as plain keyword
arguments. Each entry also declares which of its metrics are headline measures: ``flatness``
(e.g. ``lambda_max``), ``robustness`` (robust errors, e.g. ``mean_corruption_error``) and
``clean`` (the clean error, a covariate) and ``covariates`` (further covariates the report
controls for: mean confidence, calibration error) and ``endpoint`` (where training ended:
the loss and error on the training data the flatness is measured on). The patterns are
``fnmatch`` patterns relative to the entry's place in ``analysis.json`` (its ``path``); the
sweep and the report read these declarations (``headline_metrics``) instead of guessing from
metric names.

To add an analysis: write its function and ``register(Analysis(...))`` it (see
``analysis/analyses.py`` for the built-in ones), then name it in ``analysis.measures``.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Any, Callable, NamedTuple

import ml_collections

DATA = ("test", "train", "none")


@dataclasses.dataclass(frozen=True)
class Inputs:
    """What every analysis receives besides its settings.

    ``model``: the ``EvalModel`` (``.config``, ``.model``, ``.variables``, ``.apply_fn``);
    ``test``/``train``: ``(images, labels)`` host arrays (None unless some configured analysis
    asked for them); ``key``: the analysis's root key (entries document their ``fold_in``);
    ``out_dir``: where files (plots) go; ``cache``: a dict the caller keeps across runs for
    model-independent work (the sweep shares the corrupted test sets through it)."""

    model: Any
    test: tuple | None
    train: tuple | None
    key: Any
    out_dir: str
    cache: dict | None = None


@dataclasses.dataclass(frozen=True)
class Analysis:
    name: str
    run: Callable[..., dict]  # run(inputs, *, log, **settings) -> dict
    data: str  # which split it measures: 'test', 'train' or 'none'
    section: str | None = None  # its settings: analysis.<section> ('' / None: no settings)
    default_config: Callable[[], ml_collections.ConfigDict] | None = None
    path: str = ""  # where its metrics go in analysis.json, '/'-separated ('' = name)
    flatness: tuple = ()  # fnmatch patterns (relative to path) of headline flatness measures
    robustness: tuple = ()  # ... of headline robust errors
    clean: tuple = ()  # ... of the clean error (a covariate)
    covariates: tuple = ()  # ... of further covariates (mean confidence, calibration error)
    endpoint: tuple = ()  # ... of where training ended (train loss and error on its data)
    default: bool = True  # part of the default analysis.measures (False: opt-in, e.g. costly)

    @property
    def where(self) -> str:
        return self.path or self.name


_REGISTRY: dict[str, Analysis] = {}


def register(analysis: Analysis) -> Analysis:
    """Add ``analysis`` to the registry (a name may be registered once)."""
    if analysis.name in _REGISTRY:
        raise ValueError(f"analysis {analysis.name!r} is already registered")
    if analysis.data not in DATA:
        raise ValueError(f"analysis {analysis.name!r}: data={analysis.data!r}; allowed: {DATA}")
    if analysis.section and analysis.default_config is None:
        raise ValueError(
            f"analysis {analysis.name!r} names section {analysis.section!r} "
            "but has no default_config"
        )
    _REGISTRY[analysis.name] = analysis
    return analysis


def names(default_only: bool = False) -> tuple:
    """Registered analyses, in registration order (``default_only``: those that run unless
    ``analysis.measures`` names others)."""
    return tuple(n for n, a in _REGISTRY.items() if a.default or not default_only)


def get(name: str) -> Analysis:
    try:
        return _REGISTRY[name]
    except KeyError as e:
        raise ValueError(f"unknown analysis {name!r}; registered: {', '.join(_REGISTRY)}") from e


def check_measures(measures) -> tuple:
    """``analysis.measures`` as a tuple of registered names (a clear error otherwise)."""
    if isinstance(measures, str):
        raise TypeError(
            f"analysis.measures must be a tuple of names, got the string "
            f"{measures!r}; e.g. {tuple(_REGISTRY)}"
        )
    measures = tuple(measures)
    for name in measures:
        get(name)
    return measures


def sections() -> dict:
    """{section name: default ConfigDict} over the registered analyses."""
    out = {}
    for analysis in _REGISTRY.values():
        if analysis.section and analysis.section not in out:
            out[analysis.section] = analysis.default_config()
    return out


class Headlines(NamedTuple):
    flatness: list
    robustness: list
    clean: str | None
    covariates: list
    endpoint: list


def _matches(metric: str, where: str, patterns) -> bool:
    prefix = where + "/"
    if not metric.startswith(prefix):
        return False
    rest = metric[len(prefix) :]
    # A measurement stored as {'value': v, 'stderr': s} flattens to '<name>/value'.
    rest = rest[: -len("/value")] if rest.endswith("/value") else rest
    return any(fnmatch.fnmatchcase(rest, p) for p in patterns)


def headline_metrics(metrics) -> Headlines:
    """The headline flatness measures, robust errors and the clean error among the flattened
    metric names ``metrics`` (``'curvature/clean/lambda_max'``...), as declared by the
    registered analyses; in the order of ``metrics``."""
    metrics = list(metrics)
    flat, robust, clean, covariates, endpoint = [], [], [], [], []
    for analysis in _REGISTRY.values():
        for m in metrics:
            if _matches(m, analysis.where, analysis.flatness):
                flat.append(m)
            if _matches(m, analysis.where, analysis.robustness):
                robust.append(m)
            if _matches(m, analysis.where, analysis.clean):
                clean.append(m)
            if _matches(m, analysis.where, analysis.covariates):
                covariates.append(m)
            if _matches(m, analysis.where, analysis.endpoint):
                endpoint.append(m)
    order = {m: i for i, m in enumerate(metrics)}
    unique = lambda xs: sorted(set(xs), key=order.get)  # noqa: E731
    clean = unique(clean)
    return Headlines(
        unique(flat),
        unique(robust),
        clean[0] if clean else None,
        unique(covariates),
        unique(endpoint),
    )
