"""The study's report: computed as typed findings (``findings``), written as files, drawn as
figures, rendered as Markdown (``report_markdown``).

``write_report(rows, out_dir)`` writes into ``out_dir``::

    report.md                      the report (figures embedded by relative path)
    correlations.csv, .json        one row per (flatness, robust error, method)
    figures/scatter_grid.png       all flatness x robust-error panels
    figures/scatter/<flat>__<rob>.png  one PNG per pair
    figures/correlation_heatmap_<method>.png
    figures/interventions.png      the intervention line (when the sweep has intervention runs)
    study_stats.json               the design statistics (``findings.design_json``), when the
                                   sweep declares its design

report.md opens with the primary test (the paper's Pearson r across condition means, exact
permutation p) and the secondary predictions' verdicts, raw and Holm-adjusted
(``predictions``), then the run table, the sweep's design (conditions, replicates, families:
``design``), the seed-noise floor and reliability, the dose-response per family, P1's
details, the within-axis rank statistics (granulated Kendall, sign-error), the rank and
partial rank correlations across conditions with leave-one-out influence, the intervention
line (``design_stats``), the figures, the methods and, as an appendix without p-values, the
pooled per-run correlations. A section that does not apply to the sweep (one seed, no families,
no interventions) says so. Everything before the pooled correlations needs the sweep's design:
its reference condition (``reference``, ``flatrob_jax.study.Sweep.reference``) and its
dose-response families (``families``); without a reference the report has the run tables,
the pooled correlations, the figures and the methods, and says why.

Which metrics are flatness measures, robust errors and the clean error is what the registered
analyses declare (``registry.headline_metrics``) unless explicit lists are given. Every file
is written atomically.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from flatrob_jax import fileio
from flatrob_jax.analysis import correlations, plots, registry, report_markdown, stats
from flatrob_jax.analysis.design import INTERVENTION_KEYS, SEED_KEY, group_runs
from flatrob_jax.analysis.findings import (
    NONE_AUGMENT,
    DesignFindings,
    MetricRoles,
    ReportFindings,
    Settings,
    design_json,
    report_findings,
)
from flatrob_jax.analysis.results import MetricTable, pivot

# --------------------------------------------------------------------------- metric roles


def classify_metrics(
    metrics: Sequence[str],
    *,
    flatness_metrics: Sequence[str] | None = None,
    robust_metrics: Sequence[str] | None = None,
    clean_metric: str | None = None,
) -> tuple[list[str], list[str], str | None]:
    """Split metric names into (flatness measures, robust errors, clean error).

    Defaults are the headline metrics the registered analyses declare
    (``registry.headline_metrics``); explicit lists replace them and must name metrics that
    exist.
    """
    metrics = list(metrics)
    known = set(metrics)
    for given, what in (
        (flatness_metrics, "flatness_metrics"),
        (robust_metrics, "robust_metrics"),
        ([clean_metric] if clean_metric else None, "clean_metric"),
    ):
        if given is not None:
            unknown = [m for m in given if m not in known]
            if unknown:
                raise ValueError(
                    f"{what} names unknown metrics {unknown}; the table has: {', '.join(metrics)}"
                )
    headlines = registry.headline_metrics(metrics)
    flat = headlines.flatness if flatness_metrics is None else flatness_metrics
    rob = headlines.robustness if robust_metrics is None else robust_metrics
    clean = headlines.clean if clean_metric is None else clean_metric
    return list(flat), list(rob), clean


def _known(given, declared, table: MetricTable, what: str) -> list:
    """``given`` (checked against the table) or else the ``declared`` metrics."""
    if given is None:
        return list(declared)
    unknown = [m for m in given if m not in table.metrics]
    if unknown:
        raise ValueError(
            f"{what} names unknown metrics {unknown}; the table has: {', '.join(table.metrics)}"
        )
    return list(given)


def run_labels(
    table: MetricTable, label_key: str | None = None, *, seed_key: str = SEED_KEY
) -> list[str]:
    """One label per run for plots and tables.

    ``label_key`` names the override to use. By default a run is labelled by its condition
    (``design.group_runs``: the overrides that differ between conditions, ``'augmix'``,
    ``'randaugment, magnitude=9'``) and its ``seed_key`` when the condition has replicates
    (``'standard, seed=1'``); when no override differs, by its run name.
    """
    if label_key is not None:
        for run, overrides in zip(table.runs, table.overrides):
            if label_key not in overrides:
                raise ValueError(
                    f"run {run!r} has no override {label_key!r}; its overrides: {sorted(overrides)}"
                )
        return [str(o[label_key]) for o in table.overrides]
    keys = sorted({k for o in table.overrides for k in o})
    varying = [k for k in keys if len({repr(o.get(k)) for o in table.overrides}) > 1]
    if not varying:
        return list(table.runs)
    conditions = group_runs(table.overrides, seed_key=seed_key)
    return [conditions.run_label(i) for i in range(len(table.runs))]


def metric_roles(
    table: MetricTable,
    *,
    flatness_metrics: Sequence[str] | None = None,
    robust_metrics: Sequence[str] | None = None,
    clean_metric: str | None = None,
    covariate_metrics: Sequence[str] | None = None,
    endpoint_metrics: Sequence[str] | None = None,
) -> MetricRoles:
    """The report's metric roles: ``classify_metrics``, plus the covariates (mean confidence,
    ECE) and end-point metrics (train loss and error where training ended), by default those
    the analyses declare."""
    flat, rob, clean = classify_metrics(
        table.metrics,
        flatness_metrics=flatness_metrics,
        robust_metrics=robust_metrics,
        clean_metric=clean_metric,
    )
    if not flat or not rob:
        raise ValueError(
            f"need at least one flatness measure and one robust error; found flatness "
            f"{flat} and robust {rob} among metrics {list(table.metrics)} (pass "
            "flatness_metrics/robust_metrics explicitly)"
        )
    declared = registry.headline_metrics(table.metrics)
    covariates = _known(covariate_metrics, declared.covariates, table, "covariate_metrics")
    endpoint = _known(endpoint_metrics, declared.endpoint, table, "endpoint_metrics")
    return MetricRoles(flat, rob, clean, covariates, endpoint)


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class Report:
    """Everything ``build_report`` wrote and computed."""

    path: str
    correlations_csv: str
    correlations_json: str
    figures: dict  # name -> path relative to out_dir
    scatter: dict  # (flatness, robust) -> plots.ScatterData of the per-pair PNG
    grid: dict  # (flatness, robust) -> plots.ScatterData of the grid panel
    heatmaps: dict  # method -> plotted matrix [flatness, robust]
    correlations: list
    table: MetricTable
    labels: list
    flatness_metrics: list
    robust_metrics: list
    clean_metric: str | None
    findings: DesignFindings | None = None  # None: the sweep declares no design
    findings_json: str = ""  # study_stats.json ("" without a design)
    interventions: list = ()  # plots.InterventionPanel per (flatness, robust) with a fit


@dataclass(frozen=True)
class _Figures:
    paths: dict  # name -> path relative to out_dir
    scatter: dict
    grid: dict
    heatmaps: dict
    interventions: list


def build_report(
    results_rows: Iterable[Mapping],
    out_dir,
    *,
    flatness_metrics: Sequence[str] | None = None,
    robust_metrics: Sequence[str] | None = None,
    clean_metric: str | None = None,
    covariate_metrics: Sequence[str] | None = None,
    endpoint_metrics: Sequence[str] | None = None,
    label_key: str | None = None,
    title: str = "Flatness vs. robustness across augmentations",
    num_resamples: int = 2000,
    confidence: float = 0.95,
    ci_method: str = "bca",
    seed: int = 0,
    dpi: int = plots.DEFAULT_DPI,
    seed_key: str = SEED_KEY,
    reference: Mapping | None = None,
    families: Mapping | None = None,
    intervention_keys: Sequence[str] = INTERVENTION_KEYS,
    none_name: str = NONE_AUGMENT,
    missing: Mapping | None = None,
    notes: Sequence[str] = (),
) -> Report:
    """Write the report files (see the module docstring) and return what was computed.

    The sweep's design (``design.declare_design``): ``reference`` the reference condition's
    overrides (None: no design, the pooled correlations only); ``families`` ``{family name:
    strength key | (strength key, reference strength) | design.FamilySpec}`` (None: none);
    ``seed_key`` names the replicate key; ``intervention_keys`` the overrides that intervene
    on flatness; ``none_name`` the augmentation name of "no augmentation".
    ``covariate_metrics`` (mean confidence, ECE) and ``endpoint_metrics`` (train loss and error
    where training ended) default to those the analyses declare; they are tabulated per run,
    and the covariates correlated with every measure across conditions. ``missing``: ``{run:
    why}`` of the sweep's runs that have no results (failed, not analyzed yet), named in the
    report. ``notes``: sentences the design section states (how the runs were trained: a
    shared warm start, AugMix without its JSD loss).
    """
    table = pivot(results_rows)
    if not table.runs:
        raise ValueError("results_rows is empty: nothing to report")
    roles = metric_roles(
        table,
        flatness_metrics=flatness_metrics,
        robust_metrics=robust_metrics,
        clean_metric=clean_metric,
        covariate_metrics=covariate_metrics,
        endpoint_metrics=endpoint_metrics,
    )
    found = report_findings(
        table,
        roles,
        run_labels(table, label_key, seed_key=seed_key),
        Settings(num_resamples, confidence, ci_method, seed),
        title=title,
        reference=reference,
        families=families,
        seed_key=seed_key,
        intervention_keys=intervention_keys,
        none_name=none_name,
        missing=missing,
        notes=notes,
    )
    out_dir = os.fspath(out_dir)
    fileio.makedirs(fileio.join(out_dir, "figures", "scatter"))
    files = _write_data_files(out_dir, found)
    figures = _draw_figures(out_dir, found, dpi)
    path = fileio.atomic_write_text(
        os.path.join(out_dir, "report.md"), report_markdown.render(found, figures.paths)
    )
    return Report(
        path,
        files["correlations.csv"],
        files["correlations.json"],
        figures.paths,
        figures.scatter,
        figures.grid,
        figures.heatmaps,
        found.correlations,
        table,
        found.labels,
        roles.flatness,
        roles.robust,
        roles.clean,
        found.design_findings,
        files.get("study_stats.json", ""),
        figures.interventions,
    )


def _write_data_files(out_dir: str, found: ReportFindings) -> dict:
    """correlations.csv/json and, with a design, study_stats.json (a stale one from an earlier
    report with a design is removed); returns their paths by file name."""
    texts = {
        "correlations.csv": correlations.to_csv(found.correlations),
        "correlations.json": correlations.to_json(found.correlations),
    }
    if found.design_findings is not None:
        texts["study_stats.json"] = design_json(found.design_findings)
    else:
        fileio.remove(os.path.join(out_dir, "study_stats.json"), missing_ok=True)
    return {
        name: fileio.atomic_write_text(os.path.join(out_dir, name), text)
        for name, text in texts.items()
    }


def _slug(metric: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", metric).strip("_") or "metric"


def _scatter_points(found: ReportFindings) -> dict:
    """What the scatter plots show. Without a replicated condition (or without a design): one
    point per run with its measurement's standard error. With one: one point per condition
    (its mean over seeds) with error bars of its seed SD, or the pooled noise floor for a
    condition with one run."""
    metrics = (*found.roles.flatness, *found.roles.robust)
    if not found.condition_points:
        t = found.table
        return {
            "labels": list(found.labels),
            "columns": {m: (t.column(m), t.stderr_column(m)) for m in metrics},
        }
    s = found.design_findings
    columns = {}
    for m in metrics:
        mean, sd, _ = s.means[m]
        columns[m] = (mean, np.where(np.isfinite(sd), sd, s.floors[m].sd))
    return {"labels": [c.label for c in s.design.conditions], "columns": columns}


def _draw_figures(out_dir: str, found: ReportFindings, dpi: int) -> _Figures:
    """Every figure of the report, written under ``out_dir/figures``."""
    paths: dict[str, str] = {}
    scatter, grid = _scatter_figures(out_dir, found, dpi, paths)
    panels = _intervention_figure(out_dir, found, dpi, paths)
    heatmaps = _heatmap_figures(out_dir, found, dpi, paths)
    return _Figures(paths, scatter, grid, heatmaps, panels)


def _scatter_figures(out_dir: str, found: ReportFindings, dpi: int, paths: dict):
    """One scatter plot per (flatness, robust error), and the grid of all of them."""
    points = _scatter_points(found)
    flat, rob = found.roles.flatness, found.roles.robust
    scatter, used_names = {}, set()
    for f in flat:
        for r in rob:
            name = f"{_slug(f)}__{_slug(r)}"
            while name in used_names:
                name += "_"
            used_names.add(name)
            rel = f"figures/scatter/{name}.png"
            (xv, xe), (yv, ye) = points["columns"][f], points["columns"][r]
            scatter[(f, r)] = plots.plot_scatter(
                os.path.join(out_dir, rel),
                xv,
                yv,
                points["labels"],
                xerr=xe,
                yerr=ye,
                x_metric=f,
                y_metric=r,
                dpi=dpi,
            )
            paths[f"scatter:{f}:{r}"] = rel
    paths["scatter_grid"] = "figures/scatter_grid.png"
    grid = plots.plot_scatter_grid(
        os.path.join(out_dir, paths["scatter_grid"]),
        points["columns"],
        points["labels"],
        flat,
        rob,
        dpi=dpi,
    )
    return scatter, grid


def _intervention_figure(out_dir: str, found: ReportFindings, dpi: int, paths: dict) -> list:
    """The intervention line of every pair with a fit (none without intervention runs)."""
    s, t, clean = found.design_findings, found.table, found.roles.clean
    if s is None:
        return []
    panels = [
        plots.intervention_panel_data(
            t.column(f),
            t.column(r),
            t.column(clean) if clean else None,
            fit.coef,
            s.fit_runs,
            s.eval_runs,
            [s.design.run_label(i) for i in range(len(t.runs))],
            x_metric=f,
            y_metric=r,
        )
        for (f, r), fit in s.interventions.items()
        if np.isfinite(fit.coef[1])
    ]
    if panels:
        paths["interventions"] = "figures/interventions.png"
        plots.plot_intervention_grid(os.path.join(out_dir, paths["interventions"]), panels, dpi=dpi)
    return panels


def _heatmap_figures(out_dir: str, found: ReportFindings, dpi: int, paths: dict) -> dict:
    """One heat-map of the pooled coefficients per method."""
    flat, rob = found.roles.flatness, found.roles.robust
    heatmaps = {}
    for method in stats.METHODS:
        matrix = np.array(
            [
                [correlations.find(found.correlations, f, r, method)["statistic"] for r in rob]
                for f in flat
            ]
        )
        rel = f"figures/correlation_heatmap_{method}.png"
        symbol = report_markdown.SYMBOL[method]
        heatmaps[method] = plots.plot_correlation_heatmap(
            os.path.join(out_dir, rel),
            matrix,
            flat,
            rob,
            title=f"{method.capitalize()} {symbol}",
            dpi=dpi,
        )
        paths[f"heatmap:{method}"] = rel
    return heatmaps


def write_report(
    results_rows: Iterable[Mapping],
    out_dir,
    *,
    flatness_metrics=None,
    robust_metrics=None,
    title: str = "Flatness vs. robustness across augmentations",
    **kwargs,
) -> str:
    """Write report.md (+ correlations.csv/json and figures) into ``out_dir``; return its path.

    ``kwargs`` go to ``build_report`` (clean_metric, label_key, num_resamples, confidence,
    ci_method, seed, dpi, and the design: reference, families, seed_key, intervention_keys,
    none_name, notes).
    """
    return build_report(
        results_rows,
        out_dir,
        flatness_metrics=flatness_metrics,
        robust_metrics=robust_metrics,
        title=title,
        **kwargs,
    ).path
