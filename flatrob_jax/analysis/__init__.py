"""Analysis of runs and sweeps.

* ``registry``: the analyses (one contract: ``run(inputs, *, log, **settings) -> metrics``,
  with declared headline flatness / robustness / clean metrics); ``analyses`` registers the
  built-in ones (clean, curvature, curvature_augmented, corruptions, attacks).
* ``config``: the ``analysis`` config section; ``runner``: ``analyze_run(workdir, cfg)``.
* ``results``: rows {run, overrides, metric, value, stderr} from nested results; CSV/JSON.
* ``stats``: Pearson, Spearman, Kendall tau-b with p-values; the one bootstrap (paired, with
  covariates); exact / Monte Carlo permutation tests (Freedman-Lane for partial
  correlations); Holm's adjustment; the primary test's power by simulation.
* ``plots``: flatness-vs-robust-error scatter plots, grid, correlation heat-map (Agg, PNG).
* ``report``: ``write_report(rows, out_dir)`` -> report.md, correlations.csv/json, figures;
  ``findings`` computes what it says (typed), ``report_markdown`` renders it (``markdown``:
  the one table helper), ``correlations`` the pooled per-run correlations.
* ``design`` (the runs' conditions and replicates; the reference, families and interventions
  the sweep declares), ``design_stats`` (seed-noise floor, reliability, granulated Kendall,
  sign-error, partial rank correlation, leave-one-out, intervention line), ``predictions``
  (the paper's predictions and their verdicts), ``design_report`` (their sections of
  report.md),
  ``zoo_report`` (imported models: measured vs published).
"""

from flatrob_jax.analysis import design, design_report, design_stats, findings, predictions
from flatrob_jax.analysis.config import default_config
from flatrob_jax.analysis.design import Design, FamilySpec, declare_design, group_runs
from flatrob_jax.analysis.registry import Analysis, Inputs, headline_metrics, register
from flatrob_jax.analysis.report import build_report, classify_metrics, write_report
from flatrob_jax.analysis.results import (
    MetricTable,
    Study,
    flatten_results,
    open_study,
    pivot,
    read_rows,
    rows_from_results,
    write_csv,
    write_json,
)
from flatrob_jax.analysis.runner import analysis_config_for, analyze_run, analyze_runs
from flatrob_jax.analysis.stats import (
    bootstrap_ci,
    correlate,
    correlation,
    correlation_power,
    freedman_lane,
    holm,
    kendall,
    pearson,
    permutation_correlation,
    spearman,
)

__all__ = [
    "Analysis",
    "Design",
    "FamilySpec",
    "Inputs",
    "analyze_runs",
    "declare_design",
    "design",
    "design_report",
    "design_stats",
    "findings",
    "group_runs",
    "predictions",
    "MetricTable",
    "Study",
    "open_study",
    "analysis_config_for",
    "analyze_run",
    "bootstrap_ci",
    "build_report",
    "classify_metrics",
    "correlate",
    "correlation",
    "correlation_power",
    "default_config",
    "freedman_lane",
    "holm",
    "flatten_results",
    "headline_metrics",
    "kendall",
    "pearson",
    "permutation_correlation",
    "pivot",
    "read_rows",
    "register",
    "rows_from_results",
    "spearman",
    "write_csv",
    "write_json",
    "write_report",
]
