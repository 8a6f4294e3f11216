"""The study's Markdown report: per-run table, correlation table, figures, methods.

``write_report(rows, out_dir)`` writes into ``out_dir``::

    report.md                      the report (figures embedded by relative path)
    correlations.csv, .json        one row per (flatness, robust error, method)
    figures/scatter_grid.png       all flatness x robust-error panels
    figures/scatter/<flat>__<rob>.png  one PNG per pair
    figures/correlation_heatmap_<method>.png
    figures/interventions.png      the intervention line (when the sweep has intervention runs)
    study_stats.json               the study statistics (``study_report.to_json``)

report.md opens with the paper's predictions and their verdicts (``predictions``), then the
run table, the sweep's design (conditions, replicates, families: ``design``), the seed-noise
floor, the dose-response per family, the within-axis rank statistics (granulated Kendall,
sign-error), the rank and partial rank correlations across conditions with leave-one-out
influence, the intervention line (``study_stats``), the pooled per-run correlations, the
figures and the methods. A section that does not apply to the sweep (one seed, no families,
no interventions) says so.

Which metrics are flatness measures, robust errors and the clean error is what the registered
analyses declare (``registry.headline_metrics``) unless explicit lists are given. Every file
is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from flatrob_jax import fileio
from flatrob_jax.analysis import plots, registry, stats, study_report
from flatrob_jax.analysis.design import INTERVENTION_KEYS, SEED_KEY, infer_design
from flatrob_jax.analysis.results import MetricTable, atomic_write_text, pivot

CORRELATION_COLUMNS = (
    "flatness",
    "robust",
    "method",
    "statistic",
    "pvalue",
    "ci_low",
    "ci_high",
    "ci_method",
    "confidence",
    "num_resamples",
    "n",
    "pvalue_method",
    "note",
)
_CI_NAME = {"bca": "BCa", "percentile": "percentile"}
_CI_LONG_NAME = {
    "bca": "BCa (bias-corrected and accelerated, jackknife acceleration)",
    "percentile": "percentile",
}
_SYMBOL = {"pearson": "r", "spearman": "rho", "kendall": "tau-b"}


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


def run_labels(table: MetricTable, label_key: str | None = None) -> list[str]:
    """One label per run for plots and tables.

    ``label_key`` names the override to use. By default a run is labelled by its condition
    (``design.infer_design``: the overrides that differ between conditions, ``'augmix'``,
    ``'randaugment, magnitude=9'``) and its seed when the condition has replicates
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
    design = infer_design(table.overrides)
    return [design.run_label(i) for i in range(len(table.runs))]


# --------------------------------------------------------------------------- correlations


def correlation_rows(
    table: MetricTable,
    flatness_metrics: Sequence[str],
    robust_metrics: Sequence[str],
    *,
    methods: Sequence[str] = stats.METHODS,
    num_resamples: int = 2000,
    confidence: float = 0.95,
    ci_method: str = "bca",
    seed: int = 0,
) -> list[dict]:
    """Every flatness x robust-error x method correlation, as dicts with ``CORRELATION_COLUMNS``.

    The bootstrap of pair k uses ``numpy.random.default_rng([seed, k])`` for every method, so
    the three coefficients of one pair are computed on the same resampled runs.
    """
    rows = []
    for k, (flat, rob) in enumerate((f, r) for f in flatness_metrics for r in robust_metrics):
        x, y = table.column(flat), table.column(rob)
        for method in methods:
            corr = stats.correlate(
                x,
                y,
                method,
                num_resamples=num_resamples,
                confidence=confidence,
                ci_method=ci_method,
                rng=np.random.default_rng([seed, k]),
            )
            row = {"flatness": flat, "robust": rob, **corr.as_dict()}
            rows.append({c: row[c] for c in CORRELATION_COLUMNS})
    return rows


def _json_value(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def correlations_to_csv(rows: Iterable[Mapping]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CORRELATION_COLUMNS)
    for row in rows:
        writer.writerow(
            [
                ""
                if isinstance(row[c], float) and math.isnan(row[c])
                else (repr(row[c]) if isinstance(row[c], float) else row[c])
                for c in CORRELATION_COLUMNS
            ]
        )
    return buf.getvalue()


def correlations_to_json(rows: Iterable[Mapping]) -> str:
    payload = [{c: _json_value(row[c]) for c in CORRELATION_COLUMNS} for row in rows]
    return json.dumps(payload, indent=1, allow_nan=False) + "\n"


# --------------------------------------------------------------------------- formatting


def _num(v: float, digits: int = 4) -> str:
    return "n/a" if not np.isfinite(v) else f"{v:.{digits}g}"


def _with_stderr(v: float, se: float) -> str:
    if not np.isfinite(v):
        return "n/a"
    return f"{v:.4g} ± {se:.2g}" if np.isfinite(se) else f"{v:.4g}"


def _pvalue(p: float) -> str:
    if not np.isfinite(p):
        return "n/a"
    if p < 1e-16:
        return "< 1e-16"
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(header: Sequence[str], body: Iterable[Sequence[str]]) -> str:
    lines = [
        "| " + " | ".join(_md_cell(h) for h in header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def _slug(metric: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", metric).strip("_") or "metric"


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
    study: study_report.StudyStats | None = None
    study_json: str = ""
    interventions: list = ()  # plots.InterventionPanel per (flatness, robust) with a fit


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
    families: Mapping[str, str | tuple] | None = None,
    intervention_keys: Sequence[str] = INTERVENTION_KEYS,
    none_name: str = study_report.NONE_AUGMENT,
) -> Report:
    """Write the report files (see the module docstring) and return what was computed.

    The sweep's design (``design.infer_design``): ``seed_key`` names the replicate key;
    ``reference`` the reference condition's overrides (default: inferred); ``families``
    ``{family name: strength key or (strength key, reference strength)}`` (default: inferred);
    ``intervention_keys`` the overrides
    that intervene on flatness; ``none_name`` the augmentation name of "no augmentation".
    ``covariate_metrics`` (mean confidence, ECE) and ``endpoint_metrics`` (train loss and error
    where training ended) default to those the analyses declare; they are tabulated per run,
    and the covariates correlated with every measure across conditions.
    """
    table = pivot(results_rows)
    if not table.runs:
        raise ValueError("results_rows is empty: nothing to report")
    flat, rob, clean = classify_metrics(
        table.metrics,
        flatness_metrics=flatness_metrics,
        robust_metrics=robust_metrics,
        clean_metric=clean_metric,
    )
    if not flat or not rob:
        raise ValueError(
            f"need at least one flatness measure and one robust error; found flatness "
            f"{flat} and "
            f"robust {rob} among metrics {list(table.metrics)} (pass flatness_metrics/"
            f"robust_metrics explicitly)"
        )
    declared = registry.headline_metrics(table.metrics)
    covariates = _known(covariate_metrics, declared.covariates, table, "covariate_metrics")
    endpoint = _known(endpoint_metrics, declared.endpoint, table, "endpoint_metrics")
    out_dir = os.fspath(out_dir)
    fileio.makedirs(fileio.join(out_dir, "figures", "scatter"))
    labels = run_labels(table, label_key)
    design = infer_design(
        table.overrides,
        seed_key=seed_key,
        reference=reference,
        families=families,
        intervention_keys=intervention_keys,
    )
    study = study_report.compute(
        table,
        flat,
        rob,
        clean,
        design,
        confidence=confidence,
        num_resamples=num_resamples,
        seed=seed,
        none_name=none_name,
        covariates=covariates,
    )
    study_json = atomic_write_text(
        os.path.join(out_dir, "study_stats.json"), study_report.to_json(study)
    )
    points = _scatter_points(table, design, study, labels, (*flat, *rob))

    corr = correlation_rows(
        table,
        flat,
        rob,
        num_resamples=num_resamples,
        confidence=confidence,
        ci_method=ci_method,
        seed=seed,
    )
    csv_path = atomic_write_text(
        os.path.join(out_dir, "correlations.csv"), correlations_to_csv(corr)
    )
    json_path = atomic_write_text(
        os.path.join(out_dir, "correlations.json"), correlations_to_json(corr)
    )

    figures: dict[str, str] = {}
    scatter = {}
    used_names: set[str] = set()
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
            figures[f"scatter:{f}:{r}"] = rel
    figures["scatter_grid"] = "figures/scatter_grid.png"
    grid = plots.plot_scatter_grid(
        os.path.join(out_dir, figures["scatter_grid"]),
        points["columns"],
        points["labels"],
        flat,
        rob,
        dpi=dpi,
    )
    panels = []
    for (f, r), fit in study.interventions.items():
        if np.isfinite(fit.coef[1]):
            panels.append(
                plots.intervention_panel_data(
                    table.column(f),
                    table.column(r),
                    table.column(clean) if clean else None,
                    fit.coef,
                    study.fit_runs,
                    study.eval_runs,
                    [design.run_label(i) for i in range(len(table.runs))],
                    x_metric=f,
                    y_metric=r,
                )
            )
    if panels:
        figures["interventions"] = "figures/interventions.png"
        plots.plot_intervention_grid(
            os.path.join(out_dir, figures["interventions"]), panels, dpi=dpi
        )
    heatmaps = {}
    for method in stats.METHODS:
        matrix = np.array(
            [
                [
                    next(
                        c["statistic"]
                        for c in corr
                        if c["flatness"] == f and c["robust"] == r and c["method"] == method
                    )
                    for r in rob
                ]
                for f in flat
            ]
        )
        rel = f"figures/correlation_heatmap_{method}.png"
        heatmaps[method] = plots.plot_correlation_heatmap(
            os.path.join(out_dir, rel),
            matrix,
            flat,
            rob,
            title=f"{method.capitalize()} {_SYMBOL[method]}",
            dpi=dpi,
        )
        figures[f"heatmap:{method}"] = rel

    text = _render_markdown(
        title,
        table,
        labels,
        flat,
        rob,
        clean,
        corr,
        figures,
        num_resamples=num_resamples,
        confidence=confidence,
        ci_method=ci_method,
        seed=seed,
        study=study,
        condition_points=points["by_condition"],
        descriptive=[m for m in (*covariates, *endpoint) if m != clean],
    )
    path = atomic_write_text(os.path.join(out_dir, "report.md"), text)
    return Report(
        path,
        csv_path,
        json_path,
        figures,
        scatter,
        grid,
        heatmaps,
        corr,
        table,
        labels,
        flat,
        rob,
        clean,
        study,
        study_json,
        panels,
    )


def _scatter_points(table: MetricTable, design, study, labels, metrics) -> dict:
    """What the scatter plots show. Without a replicated condition: one point per run with its
    measurement's standard error. With one: one point per condition (its mean over seeds) with
    error bars of its seed SD, or the pooled noise floor for a condition with one run."""
    if not design.replicated:
        return {
            "by_condition": False,
            "labels": list(labels),
            "columns": {m: (table.column(m), table.stderr_column(m)) for m in metrics},
        }
    columns = {}
    for m in metrics:
        mean, sd, _ = study.means[m]
        columns[m] = (mean, np.where(np.isfinite(sd), sd, study.floors[m].sd))
    return {
        "by_condition": True,
        "labels": [c.label for c in design.conditions],
        "columns": columns,
    }


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
    ci_method, seed, dpi, and the design: seed_key, reference, families, intervention_keys,
    none_name).
    """
    return build_report(
        results_rows,
        out_dir,
        flatness_metrics=flatness_metrics,
        robust_metrics=robust_metrics,
        title=title,
        **kwargs,
    ).path


def _render_markdown(
    title,
    table,
    labels,
    flat,
    rob,
    clean,
    corr,
    figures,
    *,
    num_resamples,
    confidence,
    ci_method,
    seed,
    study=None,
    condition_points=False,
    descriptive=(),
) -> str:
    level = f"{100 * confidence:g}%"
    parts = [f"# {title}", ""]
    if study is not None:
        parts += study_report.render_predictions(study)

    parts += ["## Runs", ""]
    header = ["run", "label"] + (["clean error"] if clean else []) + flat + rob
    body = []
    for i, run in enumerate(table.runs):
        cells = [run, labels[i]]
        if clean:
            j = table.metrics.index(clean)
            cells.append(_with_stderr(table.values[i, j], table.stderrs[i, j]))
        for m in (*flat, *rob):
            j = table.metrics.index(m)
            cells.append(_with_stderr(table.values[i, j], table.stderrs[i, j]))
        body.append(cells)
    parts += [
        _md_table(header, body),
        "",
        "Values are ± one standard error where the measurement has one.",
        "",
    ]
    if descriptive:
        parts += [
            "## Training end point and covariates",
            "",
            "Where each run's training ended (loss and error, BatchNorm in eval mode, on the "
            "training examples the flatness is measured on, clean and through the run's own "
            "augmentation) and the covariates of robustness (mean confidence and expected "
            "calibration error on the clean test images).",
            "",
            _md_table(
                ["run", "label", *descriptive],
                [
                    [run, labels[i]]
                    + [
                        _with_stderr(
                            table.values[i, table.metrics.index(m)],
                            table.stderrs[i, table.metrics.index(m)],
                        )
                        for m in descriptive
                    ]
                    for i, run in enumerate(table.runs)
                ],
            ),
            "",
        ]
    if study is not None:
        parts += study_report.render_sections(study, figures)

    parts += [
        "## Correlations",
        "",
        "Pooled over runs (every run one point, replicates included). "
        f"Coefficient [{level} bootstrap {_CI_NAME[ci_method]} CI] and two-sided p-value, "
        "across runs.",
        "",
    ]
    header = ["flatness", "robust error", "n"]
    for method in stats.METHODS:
        header += [f"{method.capitalize()} {_SYMBOL[method]}", "p"]
    body, notes = [], []
    for f in flat:
        for r in rob:
            cells = [f, r, None]
            for method in stats.METHODS:
                c = next(
                    c
                    for c in corr
                    if c["flatness"] == f and c["robust"] == r and c["method"] == method
                )
                cells[2] = str(c["n"])
                ci = (
                    f" [{_num(c['ci_low'], 2)}, {_num(c['ci_high'], 2)}]"
                    if np.isfinite(c["ci_low"]) or np.isfinite(c["ci_high"])
                    else ""
                )
                cells += [f"{_num(c['statistic'], 3)}{ci}", _pvalue(c["pvalue"])]
                if c["note"]:
                    notes.append(f"- {f} vs {r}, {method}: {c['note']}")
            body.append(cells)
    parts += [_md_table(header, body), ""]
    if notes:
        parts += ["Notes:", "", *notes, ""]

    parts += ["## Figures", "", f"![scatter grid]({figures['scatter_grid']})", ""]
    for method in stats.METHODS:
        parts += [f"![{method} heat-map]({figures['heatmap:' + method]})", ""]
    parts += ["Per-pair scatter plots:", ""]
    for f in flat:
        for r in rob:
            parts += [f"![{f} vs {r}]({figures[f'scatter:{f}:{r}']})", ""]

    num_tests = len(flat) * len(rob) * len(stats.METHODS)
    n_runs = len(table.runs)
    parts += [
        "## Methods",
        "",
        f"The sweep has {n_runs} runs. For each of {len(flat)} flatness measure(s) and "
        f"{len(rob)} robust "
        f"error(s), we computed the correlation across runs (each run is one point; a run "
        "missing either value "
        f"is left out of that pair, so n is given per pair). Pearson r uses the raw values; "
        "Spearman rho is "
        f"Pearson r of the ranks (ties get their average rank); Kendall tau-b counts "
        "concordant and "
        f"discordant pairs with the tie correction. Two-sided p-values: Student's t with n - "
        "2 degrees of "
        f"freedom for Pearson and Spearman (for Spearman an approximation that is rough "
        "below about 10 runs); for Kendall the exact permutation distribution when there are "
        f"no ties and n <= 33, otherwise the tie-corrected normal approximation. Confidence "
        "intervals are "
        f"{level} bootstrap "
        f"{_CI_LONG_NAME[ci_method]} "
        f"intervals from {num_resamples} resamples of the runs with replacement (paired; "
        "NumPy generator, "
        f"seed {seed}; resamples on which a coefficient is undefined are dropped). The "
        "scatter plots show "
        f"one point per run labelled by its augmentation, ± one standard error bars where "
        "measured, and "
        f"the least-squares line. {num_tests} tests are reported without correction for "
        "multiple "
        f"comparisons; with few runs, read the intervals rather than the p-values.",
        "",
    ]
    if condition_points:
        parts[-2] = parts[-2].replace(
            "one point per run labelled by its augmentation, ± one "
            "standard error bars "
            "where measured",
            "one point per condition (its mean over "
            "seeds) with "
            "error bars of its seed SD (the pooled noise floor for a "
            "condition with "
            "one run)",
        )
    if study is not None:
        parts += [study_report.render_methods(study), ""]
    return "\n".join(parts)
