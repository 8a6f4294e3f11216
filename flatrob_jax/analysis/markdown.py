"""The one Markdown helper of the report modules: tables, and numbers as the report prints
them (``'n/a'`` for a missing or non-finite value)."""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np


def _missing(v) -> bool:
    return v is None or not np.isfinite(v)


def cell(value) -> str:
    """``value`` as one table cell: ``|`` escaped, line breaks as spaces."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(header: Sequence, rows: Iterable[Sequence]) -> str:
    """A pipe table: the header, the separator line and one line per row."""
    lines = [
        "| " + " | ".join(cell(h) for h in header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def number(v, digits: int = 3) -> str:
    """``v`` to ``digits`` significant digits."""
    return "n/a" if _missing(v) else f"{v:.{digits}g}"


def signed(v, digits: int = 2) -> str:
    """``v`` with its sign and ``digits`` decimals (coefficients: ``'+0.75'``)."""
    return "n/a" if _missing(v) else f"{v:+.{digits}f}"


def with_stderr(v, se) -> str:
    """``'v ± se'`` (4 and 2 significant digits), or ``v`` alone when it has no stderr."""
    if _missing(v):
        return "n/a"
    return f"{v:.4g} ± {se:.2g}" if np.isfinite(se) else f"{v:.4g}"


def pvalue(p) -> str:
    """A p-value: 2 significant digits, scientific below 1e-4, ``'< 1e-16'`` below that."""
    if _missing(p):
        return "n/a"
    if p < 1e-16:
        return "< 1e-16"
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"
