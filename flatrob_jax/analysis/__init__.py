"""Analysis of a sweep: tidy results table, correlation statistics, plots, Markdown report.

* ``results``: rows {run, overrides, metric, value, stderr} from nested evaluate() dicts;
  CSV/JSON read and atomic write; run x metric pivot.
* ``stats``: Pearson, Spearman, Kendall tau-b with p-values; paired bootstrap intervals
  (percentile, BCa).
* ``plots``: flatness-vs-robust-error scatter plots, grid, correlation heat-map (Agg, PNG).
* ``report``: ``write_report(rows, out_dir)`` -> report.md, correlations.csv/json, figures.
"""
from flatrob_jax.analysis.report import build_report, classify_metrics, write_report
from flatrob_jax.analysis.results import (
    MetricTable,
    flatten_results,
    pivot,
    read_rows,
    rows_from_results,
    write_csv,
    write_json,
)
from flatrob_jax.analysis.stats import bootstrap_ci, correlate, correlation, kendall, pearson, spearman

__all__ = [
    "MetricTable", "bootstrap_ci", "build_report", "classify_metrics", "correlate", "correlation",
    "flatten_results", "kendall", "pearson", "pivot", "read_rows", "rows_from_results", "spearman",
    "write_csv", "write_json", "write_report",
]
