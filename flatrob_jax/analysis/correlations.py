"""The pooled per-run correlations of the report: every flatness measure x robust error x
method, across runs (each run one point), with bootstrap intervals; their CSV and JSON files."""

from __future__ import annotations

import csv
import io
import math
from typing import Iterable, Mapping, Sequence

import numpy as np

from flatrob_jax import fileio
from flatrob_jax.analysis import stats
from flatrob_jax.analysis.results import MetricTable

COLUMNS = (
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
    """Every flatness x robust-error x method correlation, as dicts with ``COLUMNS``.

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
            rows.append({c: row[c] for c in COLUMNS})
    return rows


def find(rows: Iterable[Mapping], flatness: str, robust: str, method: str) -> Mapping:
    """The row of one (flatness, robust error, method)."""
    return next(
        c
        for c in rows
        if c["flatness"] == flatness and c["robust"] == robust and c["method"] == method
    )


def to_csv(rows: Iterable[Mapping]) -> str:
    """CSV text: floats with full precision (``repr``), NaN as an empty cell."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(
            [
                ""
                if isinstance(row[c], float) and math.isnan(row[c])
                else (repr(row[c]) if isinstance(row[c], float) else row[c])
                for c in COLUMNS
            ]
        )
    return buf.getvalue()


def to_json(rows: Iterable[Mapping]) -> str:
    """Strict JSON, a list of row objects (NaN as null)."""
    return fileio.dumps_json([{c: row[c] for c in COLUMNS} for row in rows], indent=1) + "\n"
