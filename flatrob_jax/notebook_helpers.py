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
    workdir per run), a local path or a ``gs://`` URI (through ``flatrob_jax.fileio``).

    Raises FileNotFoundError naming the path, and what a study directory holds, when the
    path does not exist or has no results table."""
    from flatrob_jax import fileio
    from flatrob_jax.analysis.results import read_rows

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
