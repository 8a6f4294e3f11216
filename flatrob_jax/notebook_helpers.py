"""Small pieces the notebooks need that the rest of the library does not offer (yet).

* :func:`open_study`: a finished study, from a local path or a ``gs://`` URI, as its tidy
  results rows (``Study.frame()`` / ``Study.wide()`` give pandas DataFrames), with a clear error
  when the path holds no study.

Runtime checks and installation are in ``flatrob_jax.colab``.
"""
from __future__ import annotations

import dataclasses
import os

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
    workdir per run), a local path or a ``gs://`` URI (read through ``etils.epath``).

    Raises FileNotFoundError naming the path, and what a study directory holds, when the
    path does not exist or has no results table."""
    from etils import epath

    from flatrob_jax.analysis.results import rows_from_csv, rows_from_json

    shown = os.fspath(path)
    what = (f"a study is the directory a sweep writes (python -m flatrob_jax.sweep --sweep "
            f"NAME --workdir DIR), holding {' and '.join(STUDY_FILES)}")
    root = epath.Path(path)
    if not root.exists():
        raise FileNotFoundError(f"no study at {shown!r}: the path does not exist; {what}")
    if not root.is_dir():
        raise FileNotFoundError(f"no study at {shown!r}: it is a file, not a directory; {what}")
    for name, parse in (("results.csv", rows_from_csv), ("results.json", rows_from_json)):
        if (root / name).exists():
            rows = parse((root / name).read_text())
            break
    else:
        entries = sorted(p.name for p in root.iterdir())
        raise FileNotFoundError(
            f"no study at {shown!r}: it has neither {' nor '.join(STUDY_FILES)} (it holds "
            f"{entries[:20]}); {what}. A sweep whose report step has not run yet writes them "
            f"when it is run again")
    if not rows:
        raise ValueError(f"the study at {shown!r} has an empty results table")
    return Study(shown, rows, tuple(dict.fromkeys(r["run"] for r in rows)))

