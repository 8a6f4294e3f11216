"""The tidy results table of a study (the directory a sweep writes): one row per (run, metric),
and :func:`open_study`, which opens a finished study from its directory.

A row is a plain dict with the columns of ``COLUMNS``::

    {'run': 'augment=cutout,seed=0',          # the run's name (its workdir name)
     'overrides': {'augment.name': 'cutout'}, # the config overrides that define the run
     'metric': 'curvature/lambda_max',        # stable, '/'-separated metric name
     'value': 12.3,                           # float; NaN when missing
     'stderr': 0.4}                           # float; NaN when the measure has none

plus any extra scalar columns (``split``, ``seed``, ...) a caller adds through ``extra``.

Flattening rule (``flatten_results``), applied to the nested dicts returned by the per-area
``evaluate()`` functions:

* Keys along the path are joined with ``'/'``: ``{'curvature': {'trace': ..}}`` gives
  ``'curvature/trace'``. Keys are kept verbatim (``'pgd_linf_8/255'`` stays readable in
  ``'attacks/pgd_linf_8/255/error'``), so names are stable across runs and easy to grep.
* A dict holding a ``'value'`` key is one measurement: its ``'stderr'`` (if any) becomes the
  row's stderr and its other numeric entries become metrics of their own under its path
  (``'curvature/lambda_max/num_matvecs'``).
* Elsewhere, a key ``'<name>_stderr'`` next to ``'<name>'`` is the stderr of ``'<name>'``.
* Numbers (Python, NumPy or JAX scalars) are values with stderr NaN; ``None`` is a missing
  value (NaN). Lists and arrays become one metric per element, indexed from 0
  (``'.../per_severity/0'``). Strings and booleans are metadata and are skipped.

Files are written atomically through ``flatrob_jax.fileio`` (locally a temporary file in the
same directory, then ``os.replace``; on gs:// one upload), so an interrupted write never
leaves a truncated table or destroys an earlier one.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import numbers
import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from flatrob_jax import fileio

COLUMNS = ("run", "overrides", "metric", "value", "stderr")
SEPARATOR = "/"


# --------------------------------------------------------------------------- flattening


def _as_float(x: Any) -> float | None:
    """``x`` as a Python float if it is a real scalar (not bool), else None."""
    if x is None:
        return math.nan
    if isinstance(x, (bool, np.bool_)):
        return None
    if isinstance(x, numbers.Real):
        return float(x)
    if hasattr(x, "shape") and hasattr(x, "dtype") and tuple(x.shape) == ():
        kind = np.dtype(x.dtype).kind
        if kind in "iuf":
            return float(x)
    return None


def _is_sequence(x: Any) -> bool:
    if isinstance(x, (list, tuple)):
        return True
    return hasattr(x, "shape") and hasattr(x, "dtype") and len(tuple(x.shape)) > 0


def _is_scalar_number(x: Any) -> bool:
    """True for a real scalar (or None, a missing value); False for bools, arrays, dicts, text."""
    return not _is_sequence(x) and _as_float(x) is not None


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}{SEPARATOR}{key}" if prefix else str(key)


def flatten_results(results: Mapping[str, Any], prefix: str = "") -> dict[str, tuple[float, float]]:
    """Flatten a nested results dict into ``{metric_name: (value, stderr)}``.

    See the module docstring for the rule. Insertion order of the input is kept.
    """
    if not isinstance(results, Mapping):
        raise TypeError(f"results must be a mapping (nested dict), got {type(results).__name__}")
    out: dict[str, tuple[float, float]] = {}
    _flatten_into(results, prefix, out)
    return out


def _flatten_into(node: Any, path: str, out: dict) -> None:
    if isinstance(node, Mapping):
        if "value" in node:
            value = _as_float(node["value"])
            if value is None:
                raise TypeError(
                    f"{path or '<root>'}: 'value' must be a number, got {node['value']!r}"
                )
            stderr = _as_float(node.get("stderr"))
            _add(out, path, value, math.nan if stderr is None else stderr)
            for key, child in node.items():
                if key not in ("value", "stderr"):
                    _flatten_into(child, _join(path, key), out)
            return
        for key, child in node.items():
            key = str(key)
            base = key[: -len("_stderr")] if key.endswith("_stderr") else None
            if base in node and _is_scalar_number(node[base]):
                continue  # the stderr of its scalar sibling, consumed below
            sibling = node.get(f"{key}_stderr")
            if _is_scalar_number(child):
                value = _as_float(child)
                stderr = _as_float(sibling) if sibling is not None else math.nan
                _add(out, _join(path, key), value, math.nan if stderr is None else stderr)
            else:
                _flatten_into(child, _join(path, key), out)
        return
    if _is_sequence(node):
        for i, child in enumerate(np.asarray(node).tolist() if hasattr(node, "shape") else node):
            _flatten_into(child, _join(path, i), out)
        return
    value = _as_float(node)
    if value is not None:
        _add(out, path, value, math.nan)
    # strings, booleans and other metadata: skipped


def _add(out: dict, name: str, value: float, stderr: float) -> None:
    if not name:
        raise ValueError(
            "a bare number cannot be flattened: results must be a dict of named metrics"
        )
    if name in out:
        raise ValueError(f"metric {name!r} appears twice after flattening; rename one of the keys")
    out[name] = (value, stderr)


def rows_from_results(
    run: str,
    results: Mapping[str, Any],
    *,
    overrides: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> list[dict]:
    """Rows of the tidy table for one run's nested results (see ``flatten_results``).

    ``extra`` adds scalar columns (e.g. ``{'seed': 0, 'split': 'test'}``) to every row.
    """
    if not isinstance(run, str) or not run:
        raise ValueError(f"run must be a non-empty string, got {run!r}")
    extra = dict(extra or {})
    clash = set(extra) & set(COLUMNS)
    if clash:
        raise ValueError(f"extra columns {sorted(clash)} clash with the standard columns {COLUMNS}")
    overrides = dict(overrides or {})
    return [
        {
            "run": run,
            "overrides": dict(overrides),
            "metric": metric,
            "value": value,
            "stderr": stderr,
            **extra,
        }
        for metric, (value, stderr) in flatten_results(results).items()
    ]


def validate_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict]:
    """Check the rows have the standard columns and normalise their types; returns new dicts.

    ``overrides`` may be a dict or its JSON string; ``value``/``stderr`` may be None (NaN).
    """
    out = []
    for i, row in enumerate(rows):
        missing = [c for c in ("run", "metric", "value") if c not in row]
        if missing:
            raise ValueError(f"row {i} lacks columns {missing}; rows need {COLUMNS}: {dict(row)!r}")
        new = dict(row)
        new["run"] = str(row["run"])
        new["metric"] = str(row["metric"])
        new["overrides"] = parse_overrides(row.get("overrides"))
        for col in ("value", "stderr"):
            v = _as_float(row.get(col))
            if v is None:
                raise ValueError(
                    f"row {i} ({new['run']}, {new['metric']}): {col} must be a number, "
                    f"got {row.get(col)!r}"
                )
            new[col] = v
        out.append(new)
    return out


def parse_overrides(overrides: Any) -> dict:
    """Overrides as a dict, from a dict, a JSON object string, '' or None."""
    if overrides is None or overrides == "":
        return {}
    if isinstance(overrides, Mapping):
        return dict(overrides)
    if isinstance(overrides, str):
        parsed = json.loads(overrides)
        if not isinstance(parsed, dict):
            raise ValueError(f"overrides must be a JSON object, got {overrides!r}")
        return parsed
    raise TypeError(f"overrides must be a dict or a JSON string, got {type(overrides).__name__}")


# --------------------------------------------------------------------------- CSV / JSON


def _extra_columns(rows: Sequence[Mapping]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            if key not in COLUMNS:
                seen.setdefault(key, None)
    return list(seen)


def _csv_float(x: float) -> str:
    return "" if math.isnan(x) else repr(float(x))


def rows_to_csv(rows: Iterable[Mapping]) -> str:
    """CSV text: standard columns first, then extra ones; overrides as a JSON object string,
    floats with full precision (``repr``), NaN as an empty cell."""
    rows = validate_rows(rows)
    header = list(COLUMNS) + _extra_columns(rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        cells = []
        for col in header:
            v = row.get(col)
            if col == "overrides":
                cells.append(json.dumps(v, sort_keys=True))
            elif col in ("value", "stderr"):
                cells.append(_csv_float(v))
            elif v is None:
                cells.append("")
            else:
                cells.append(v if isinstance(v, str) else json.dumps(v))
        writer.writerow(cells)
    return buf.getvalue()


def rows_from_csv(text: str) -> list[dict]:
    """Inverse of ``rows_to_csv``. Extra columns come back as JSON values where they parse
    (numbers, booleans) and as strings otherwise; empty cells as None."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"CSV lacks columns {missing}; header is {reader.fieldnames}")
    rows = []
    for rec in reader:
        row = {
            "run": rec["run"],
            "overrides": parse_overrides(rec["overrides"]),
            "metric": rec["metric"],
            "value": float(rec["value"]) if rec["value"] not in ("", None) else math.nan,
            "stderr": float(rec["stderr"]) if rec["stderr"] not in ("", None) else math.nan,
        }
        for col, cell in rec.items():
            if col in COLUMNS:
                continue
            if cell == "" or cell is None:
                row[col] = None
                continue
            try:
                row[col] = json.loads(cell)
            except json.JSONDecodeError:
                row[col] = cell
        rows.append(row)
    return rows


def rows_to_json(rows: Iterable[Mapping]) -> str:
    """Strict JSON (a list of row objects); NaN is written as null."""
    return fileio.dumps_json(validate_rows(rows), indent=1) + "\n"


def rows_from_json(text: str) -> list[dict]:
    """Inverse of ``rows_to_json`` (null value/stderr -> NaN)."""
    payload = json.loads(text)
    if not isinstance(payload, list):
        raise ValueError(f"results JSON must be a list of rows, got {type(payload).__name__}")
    return validate_rows(payload)


def write_csv(rows: Iterable[Mapping], path: str | os.PathLike) -> str:
    return fileio.atomic_write_text(path, rows_to_csv(rows))


def write_json(rows: Iterable[Mapping], path: str | os.PathLike) -> str:
    return fileio.atomic_write_text(path, rows_to_json(rows))


def read_csv(path: str | os.PathLike) -> list[dict]:
    with fileio.open(path, newline="") as f:
        return rows_from_csv(f.read())


def read_json(path: str | os.PathLike) -> list[dict]:
    with fileio.open(path) as f:
        return rows_from_json(f.read())


def read_rows(path: str | os.PathLike) -> list[dict]:
    """Read a results table from ``.csv`` or ``.json`` (by extension)."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext == ".csv":
        return read_csv(path)
    if ext == ".json":
        return read_json(path)
    raise ValueError(
        f"unknown results file extension {ext!r} for {os.fspath(path)!r}; allowed: .csv, .json"
    )


# --------------------------------------------------------------------------- run x metric


@dataclass(frozen=True)
class MetricTable:
    """The results as a run x metric matrix.

    ``values[i, j]`` / ``stderrs[i, j]`` belong to ``runs[i]`` and ``metrics[j]``; NaN where the
    run lacks the metric. ``overrides[i]`` are the run's overrides. Runs and metrics keep the
    order in which they first appear in the rows.
    """

    runs: tuple[str, ...]
    metrics: tuple[str, ...]
    values: np.ndarray
    stderrs: np.ndarray
    overrides: tuple[dict, ...]

    def column(self, metric: str) -> np.ndarray:
        return self.values[:, self._index(metric)]

    def stderr_column(self, metric: str) -> np.ndarray:
        return self.stderrs[:, self._index(metric)]

    def _index(self, metric: str) -> int:
        try:
            return self.metrics.index(metric)
        except ValueError as e:
            raise KeyError(
                f"unknown metric {metric!r}; table has: {', '.join(self.metrics)}"
            ) from e


def pivot(rows: Iterable[Mapping]) -> MetricTable:
    """Pivot tidy rows into a ``MetricTable``. A (run, metric) pair given twice is an error."""
    rows = validate_rows(rows)
    runs: dict[str, int] = {}
    metrics: dict[str, int] = {}
    overrides: dict[str, dict] = {}
    for row in rows:
        runs.setdefault(row["run"], len(runs))
        metrics.setdefault(row["metric"], len(metrics))
        overrides.setdefault(row["run"], row["overrides"])
    values = np.full((len(runs), len(metrics)), np.nan)
    stderrs = np.full((len(runs), len(metrics)), np.nan)
    filled = np.zeros((len(runs), len(metrics)), dtype=bool)
    for row in rows:
        i, j = runs[row["run"]], metrics[row["metric"]]
        if filled[i, j]:
            raise ValueError(f"run {row['run']!r} has metric {row['metric']!r} more than once")
        filled[i, j] = True
        values[i, j] = row["value"]
        stderrs[i, j] = row["stderr"]
    return MetricTable(
        runs=tuple(runs),
        metrics=tuple(metrics),
        values=values,
        stderrs=stderrs,
        overrides=tuple(overrides[r] for r in runs),
    )


# --------------------------------------------------------------------------- a study on disk

STUDY_FILES = ("results.csv", "results.json")


@dataclasses.dataclass(frozen=True)
class Study:
    """A finished study: its ``path``, the tidy results ``rows`` (one per run and metric; see
    ``flatrob_jax.analysis.results``) and the names of its ``runs`` (their workdirs)."""

    path: str
    rows: list
    runs: tuple

    def frame(self):
        """The rows as a pandas DataFrame (columns run, overrides, metric, value, stderr)."""
        import pandas as pd

        return pd.DataFrame(self.rows)

    def wide(self):
        """Runs x metrics (values), as a pandas DataFrame in the study's run order."""
        table = self.frame().pivot(index="run", columns="metric", values="value")
        return table.loc[list(self.runs)]


def open_study(path: str) -> Study:
    """The study at ``path``: the directory ``python -m flatrob_jax.sweep --workdir DIR`` or
    ``flatrob_jax.study.run_sweep(sweep, DIR)`` wrote (results.csv and .json, report/, one
    workdir per run), a local path or a ``gs://`` URI (through ``flatrob_jax.fileio``).

    Raises FileNotFoundError naming the path, and what a study directory holds, when the
    path does not exist or has no results table."""
    shown = os.fspath(path)
    what = (
        f"a study is the directory a sweep writes (python -m flatrob_jax.sweep --sweep "
        f"NAME --workdir DIR), holding {' and '.join(STUDY_FILES)}"
    )
    fileio.require_support(shown)
    if not fileio.exists(shown):
        raise FileNotFoundError(f"no study at {shown!r}: the path does not exist; {what}")
    if not fileio.isdir(shown):
        raise FileNotFoundError(f"no study at {shown!r}: it is a file, not a directory; {what}")
    table = next(
        (fileio.join(shown, n) for n in STUDY_FILES if fileio.exists(fileio.join(shown, n))), None
    )
    if table is None:
        entries = sorted(fileio.listdir(shown))
        raise FileNotFoundError(
            f"no study at {shown!r}: it has neither {' nor '.join(STUDY_FILES)} (it holds "
            f"{entries[:20]}); {what}. A sweep whose report step has not run yet writes them "
            f"when it is run again"
        )
    rows = read_rows(table)
    if not rows:
        raise ValueError(f"the study at {shown!r} has an empty results table ({table})")
    return Study(shown, rows, tuple(dict.fromkeys(r["run"] for r in rows)))
