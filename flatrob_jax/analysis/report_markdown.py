"""report.md, rendered from the report's findings (``findings.ReportFindings``) and the paths
of its figures: one function per section, in the order they appear.

    title
    predictions and verdicts (design_report), or why the report has the pooled part only
    runs; training end point and covariates
    the design sections (design_report)
    imported models: measured vs published (zoo_report)
    figures; methods
    appendix: the correlations pooled over runs (descriptive, no p-values)
"""

from __future__ import annotations

import numpy as np

from flatrob_jax.analysis import correlations, design_report, stats, zoo_report
from flatrob_jax.analysis.findings import ReportFindings, Settings
from flatrob_jax.analysis.markdown import number, table, with_stderr
from flatrob_jax.analysis.results import MetricTable

SYMBOL = {"pearson": "r", "spearman": "rho", "kendall": "tau-b"}
_CI_NAME = {"bca": "BCa", "percentile": "percentile"}
_CI_LONG_NAME = {
    "bca": "BCa (bias-corrected and accelerated, jackknife acceleration)",
    "percentile": "percentile",
}
NO_DESIGN = (
    "This sweep declares no design, so the report gives the pooled per-run correlations only: "
    "set `Sweep.reference` (the reference condition's overrides; `reference=` of "
    "`write_report`) and, for dose-response, `Sweep.families` to get the predictions' verdicts "
    "and the per-condition statistics."
)


def render(found: ReportFindings, figures: dict) -> str:
    """The whole of report.md."""
    parts = [f"# {found.title}", ""]
    if found.design_findings is not None:
        parts += design_report.render_predictions(found.design_findings)
    else:
        parts += [NO_DESIGN, ""]
    parts += runs_section(found)
    parts += missing_section(found)
    parts += end_point_section(found)
    if found.design_findings is not None:
        parts += design_report.render_sections(found.design_findings, figures)
    parts += zoo_report.render(found.imported)
    parts += figures_section(found, figures)
    parts += methods_section(found)
    parts += correlations_section(found)
    return "\n".join(parts)


def _values(t: MetricTable, run: int, metrics) -> list:
    """The run's ``metrics`` with their standard errors, as table cells."""
    return [
        with_stderr(t.values[run, j], t.stderrs[run, j])
        for j in (t.metrics.index(m) for m in metrics)
    ]


def runs_section(found: ReportFindings) -> list:
    """One row per run: its label, clean error, flatness measures and robust errors."""
    roles, t = found.roles, found.table
    clean = [roles.clean] if roles.clean else []
    header = ["run", "label"] + (["clean error"] if clean else []) + roles.flatness + roles.robust
    body = [
        [run, found.labels[i], *_values(t, i, [*clean, *roles.flatness, *roles.robust])]
        for i, run in enumerate(t.runs)
    ]
    return [
        "## Runs",
        "",
        table(header, body),
        "",
        "Values are ± one standard error where the measurement has one.",
        "",
    ]


def missing_section(found: ReportFindings) -> list:
    """The sweep's runs that are not in the tables, and why (failed, not analyzed yet)."""
    if not found.missing:
        return []
    body = [[run, why] for run, why in found.missing.items()]
    return [
        "## Runs left out",
        "",
        f"{len(body)} of the sweep's runs have no results and are in no table or statistic:",
        "",
        table(["run", "why"], body),
        "",
    ]


def end_point_section(found: ReportFindings) -> list:
    """Where each run's training ended, and the covariates of robustness."""
    descriptive, t = found.roles.descriptive, found.table
    if not descriptive:
        return []
    body = [[run, found.labels[i], *_values(t, i, descriptive)] for i, run in enumerate(t.runs)]
    return [
        "## Training end point and covariates",
        "",
        "Where each run's training ended (loss and error, BatchNorm in eval mode, on the "
        "training examples the flatness is measured on, clean and through the run's own "
        "augmentation), with the diagnostics of that point: the gradient norm (zero at a "
        "stationary point), lambda_min (the smallest Ritz value of Lanczos, an upper bound on "
        "the smallest Hessian eigenvalue: negative means not a minimum) and lambda_max's Ritz "
        "residual (how well lambda_max has converged); and the covariates of robustness (mean "
        "confidence and expected calibration error on the clean test images).",
        "",
        table(["run", "label", *descriptive], body),
        "",
    ]


def _level(settings: Settings) -> str:
    return f"{100 * settings.confidence:g}%"


def correlations_section(found: ReportFindings) -> list:
    """The appendix: the per-run correlations, every (flatness, robust error) x method,
    without p-values (runs of one condition are not independent points)."""
    header = ["flatness", "robust error", "n"]
    header += [f"{method.capitalize()} {SYMBOL[method]}" for method in stats.METHODS]
    body, notes = [], []
    for f in found.roles.flatness:
        for r in found.roles.robust:
            cells = [f, r, None]
            for method in stats.METHODS:
                c = correlations.find(found.correlations, f, r, method)
                cells[2] = str(c["n"])
                ci = (
                    f" [{number(c['ci_low'], 2)}, {number(c['ci_high'], 2)}]"
                    if np.isfinite(c["ci_low"]) or np.isfinite(c["ci_high"])
                    else ""
                )
                cells.append(f"{number(c['statistic'], 3)}{ci}")
                if c["note"]:
                    notes.append(f"- {f} vs {r}, {method}: {c['note']}")
            body.append(cells)
    ci_name = _CI_NAME[found.settings.ci_method]
    parts = [
        "## Appendix: correlations pooled over runs",
        "",
        "Descriptive only: every run one point, replicates included, so a replicated condition "
        "counts several times and the points are not independent; no p-values are given here "
        "(the tests are the ones above, across condition means). Coefficient "
        f"[{_level(found.settings)} bootstrap {ci_name} interval over runs].",
        "",
        table(header, body),
        "",
    ]
    return parts + (["Notes:", "", *notes, ""] if notes else [])


def figures_section(found: ReportFindings, figures: dict) -> list:
    """The scatter grid, the heat-maps and every per-pair scatter plot."""
    parts = ["## Figures", "", f"![scatter grid]({figures['scatter_grid']})", ""]
    for method in stats.METHODS:
        parts += [f"![{method} heat-map]({figures['heatmap:' + method]})", ""]
    parts += ["Per-pair scatter plots:", ""]
    for f in found.roles.flatness:
        for r in found.roles.robust:
            parts += [f"![{f} vs {r}]({figures[f'scatter:{f}:{r}']})", ""]
    return parts


def methods_section(found: ReportFindings) -> list:
    """How the pooled correlations and the figures were computed; then the design's methods."""
    s, roles = found.settings, found.roles
    num_tests = len(roles.flatness) * len(roles.robust) * len(stats.METHODS)
    if found.condition_points:
        points = (
            "one point per condition (its mean over seeds) with error bars of its seed SD (the "
            "pooled noise floor for a condition with one run)"
        )
    else:
        points = (
            "one point per run labelled by its augmentation, ± one standard error bars where "
            "measured"
        )
    text = (
        f"The sweep has {len(found.table.runs)} runs. The appendix gives, for each of "
        f"{len(roles.flatness)} flatness measure(s) and {len(roles.robust)} robust error(s), "
        "the correlation across runs (each run is one point; a run missing either value is "
        "left out of that pair, so n is given per pair): Pearson r on the raw values, "
        "Spearman rho (Pearson r of the ranks, ties get their average rank) and Kendall tau-b "
        f"(tie-corrected). Its intervals are {_level(s)} bootstrap "
        f"{_CI_LONG_NAME[s.ci_method]} intervals from {s.num_resamples} resamples of the "
        "runs with replacement (paired; NumPy generator, seed "
        f"{s.seed}; resamples on which a coefficient is undefined are dropped). The "
        f"{num_tests} pooled coefficients carry no p-values: replicates of one condition are "
        f"not independent points. The scatter plots show {points}, and the least-squares line."
    )
    parts = ["## Methods", "", text, ""]
    if found.design_findings is not None:
        parts += [design_report.METHODS, ""]
    return parts
