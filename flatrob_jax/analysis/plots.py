"""The paper's figures: flatness (x) against robust error (y), one labelled point per run.

Every figure is a bare ``matplotlib.figure.Figure`` rendered by the Agg PNG writer (no pyplot,
no global backend switch, no display needed) at a fixed size
(``figsize`` inches x ``dpi``; no tight bounding box, so the PNG is exactly
``round(w * dpi) x round(h * dpi)`` pixels) and written atomically.

The functions return what was plotted, read back from the Axes artists (the scatter's
``PathCollection`` offsets, the fitted line's data), so callers and tests can check the
figure against the results table.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from flatrob_jax import fileio
from flatrob_jax.analysis import stats

DEFAULT_DPI = 100
SCATTER_FIGSIZE = (5.0, 4.0)
FIT_LINE_GID = "least_squares"  # the fitted line's artist id, to find it among the error bars


@dataclass(frozen=True)
class ScatterData:
    """What one scatter panel shows. ``x``/``y``/``labels`` are the plotted points (read back
    from the Axes; runs with a NaN coordinate are left out and listed in ``dropped``);
    ``slope``/``intercept`` the least-squares line (NaN when fewer than 2 distinct x);
    ``pearson``/``spearman`` the coefficients shown in the title."""

    x_metric: str
    y_metric: str
    x: np.ndarray
    y: np.ndarray
    labels: tuple[str, ...]
    slope: float
    intercept: float
    pearson: float
    spearman: float
    dropped: tuple[str, ...] = ()


def least_squares_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) minimising sum (y - (slope x + intercept))^2; NaN if x has < 2
    distinct values."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.size < 2 or np.ptp(x) == 0:
        return math.nan, math.nan
    xc = x - x.mean()
    slope = float((xc * (y - y.mean())).sum() / (xc * xc).sum())
    return slope, float(y.mean() - slope * x.mean())


def _fmt(v: float) -> str:
    return "n/a" if not np.isfinite(v) else f"{v:+.2f}"


def scatter_panel(
    ax,
    x,
    y,
    labels: Sequence[str],
    *,
    xerr=None,
    yerr=None,
    x_metric: str = "flatness",
    y_metric: str = "robust error",
) -> ScatterData:
    """Draw one flatness-vs-robust-error scatter on ``ax``; return the plotted data.

    Error bars come from ``xerr``/``yerr`` (stderr per run) where finite. The title shows
    Pearson r and Spearman rho over the plotted runs; the legend shows the fitted line.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    labels = [str(s) for s in labels]
    if not (x.shape == y.shape == (len(labels),)):
        raise ValueError(
            f"x, y and labels must have one entry per run, got shapes {x.shape}, "
            f"{y.shape} and {len(labels)} labels"
        )
    keep = np.isfinite(x) & np.isfinite(y)
    dropped = tuple(lab for lab, k in zip(labels, keep) if not k)
    xs, ys = x[keep], y[keep]
    kept_labels = [lab for lab, k in zip(labels, keep) if k]

    collection = ax.scatter(xs, ys, s=28, zorder=3, color="tab:blue")
    _error_bars(ax, xs, ys, xerr, yerr, keep)
    for xi, yi, lab in zip(xs, ys, kept_labels):
        ax.annotate(lab, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)

    slope, intercept = least_squares_line(xs, ys)
    r = stats.pearson(xs, ys).statistic
    rho = stats.spearman(xs, ys).statistic
    if np.isfinite(slope):
        grid = np.array([xs.min(), xs.max()])
        ax.plot(
            grid,
            slope * grid + intercept,
            color="tab:red",
            lw=1.2,
            zorder=1,
            label=f"least squares (r = {_fmt(r)})",
            gid=FIT_LINE_GID,
        )
        ax.legend(fontsize=7, loc="best")
    ax.set_xlabel(x_metric, fontsize=8)
    ax.set_ylabel(y_metric, fontsize=8)
    ax.set_title(f"r = {_fmt(r)}, rho = {_fmt(rho)} (n = {xs.size})", fontsize=9)
    ax.tick_params(labelsize=7)
    ax.grid(True, alpha=0.3)

    offsets = np.asarray(collection.get_offsets(), dtype=float).reshape(-1, 2)
    return ScatterData(
        x_metric,
        y_metric,
        offsets[:, 0].copy(),
        offsets[:, 1].copy(),
        tuple(kept_labels),
        slope,
        intercept,
        float(r),
        float(rho),
        dropped,
    )


def _error_bars(ax, xs, ys, xerr, yerr, keep) -> None:
    """Grey error bars of the kept points where ``xerr``/``yerr`` are finite and positive."""
    for err, axis in ((xerr, "x"), (yerr, "y")):
        if err is None:
            continue
        err = np.asarray(err, dtype=float)[keep]
        err = np.where(np.isfinite(err), err, 0.0)
        if np.any(err > 0):
            ax.errorbar(
                xs,
                ys,
                **{f"{axis}err": err},
                fmt="none",
                ecolor="0.5",
                elinewidth=0.8,
                capsize=2,
                zorder=2,
            )


def save_figure(fig: Figure, path, *, dpi: int = DEFAULT_DPI) -> str:
    """Render ``fig`` to PNG at its own size (no tight bbox) and write it atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return fileio.atomic_write_bytes(path, buf.getvalue())


def plot_scatter(
    path,
    x,
    y,
    labels: Sequence[str],
    *,
    xerr=None,
    yerr=None,
    x_metric: str,
    y_metric: str,
    figsize=SCATTER_FIGSIZE,
    dpi: int = DEFAULT_DPI,
) -> ScatterData:
    """One PNG with one scatter panel (``scatter_panel``); returns the plotted data."""
    fig = Figure(figsize=figsize)
    try:
        ax = fig.add_subplot(1, 1, 1)
        data = scatter_panel(
            ax, x, y, labels, xerr=xerr, yerr=yerr, x_metric=x_metric, y_metric=y_metric
        )
        fig.subplots_adjust(left=0.16, right=0.96, bottom=0.13, top=0.9)
        save_figure(fig, path, dpi=dpi)
    finally:
        fig.clear()
    return data


def plot_scatter_grid(
    path,
    columns: dict[str, tuple[np.ndarray, np.ndarray]],
    labels: Sequence[str],
    flatness_metrics: Sequence[str],
    robust_metrics: Sequence[str],
    *,
    panel_size=(3.2, 2.8),
    dpi: int = DEFAULT_DPI,
) -> dict[tuple[str, str], ScatterData]:
    """Grid of scatter panels: one row per robust error, one column per flatness measure.

    ``columns[metric] = (values[runs], stderrs[runs])``. Returns ``{(flatness, robust):
    ScatterData}``.
    """
    if not flatness_metrics or not robust_metrics:
        raise ValueError(
            "plot_scatter_grid needs at least one flatness and one robust metric, got "
            f"{list(flatness_metrics)} and {list(robust_metrics)}"
        )
    nrows, ncols = len(robust_metrics), len(flatness_metrics)
    fig = Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows))
    out = {}
    try:
        axes = fig.subplots(nrows, ncols, squeeze=False)
        for i, rob in enumerate(robust_metrics):
            for j, flat in enumerate(flatness_metrics):
                (xv, xe), (yv, ye) = columns[flat], columns[rob]
                out[(flat, rob)] = scatter_panel(
                    axes[i, j], xv, yv, labels, xerr=xe, yerr=ye, x_metric=flat, y_metric=rob
                )
        fig.tight_layout()
        save_figure(fig, path, dpi=dpi)
    finally:
        fig.clear()
    return out


def plot_correlation_heatmap(
    path,
    matrix: np.ndarray,
    flatness_metrics: Sequence[str],
    robust_metrics: Sequence[str],
    *,
    title: str = "Spearman rho",
    dpi: int = DEFAULT_DPI,
) -> np.ndarray:
    """Heat-map of ``matrix[i, j]`` = correlation of ``flatness_metrics[i]`` with
    ``robust_metrics[j]``, colour scale fixed to [-1, 1], values written in the cells (NaN
    cells are blank and marked 'n/a'). Returns the plotted array read back from the image."""
    matrix = np.asarray(matrix, dtype=float)
    if matrix.shape != (len(flatness_metrics), len(robust_metrics)):
        raise ValueError(
            f"matrix shape {matrix.shape} does not match {len(flatness_metrics)} "
            "flatness x "
            f"{len(robust_metrics)} robust metrics"
        )
    width = 2.5 + 1.1 * len(robust_metrics)
    height = 1.6 + 0.5 * len(flatness_metrics)
    fig = Figure(figsize=(width, height))
    try:
        ax = fig.add_subplot(1, 1, 1)
        image = ax.imshow(
            np.ma.masked_invalid(matrix), cmap="RdBu_r", vmin=-1.0, vmax=1.0, aspect="auto"
        )
        ax.set_xticks(
            range(len(robust_metrics)), robust_metrics, rotation=30, ha="right", fontsize=7
        )
        ax.set_yticks(range(len(flatness_metrics)), flatness_metrics, fontsize=7)
        for i in range(matrix.shape[0]):
            for j in range(matrix.shape[1]):
                v = matrix[i, j]
                ax.text(
                    j,
                    i,
                    "n/a" if not np.isfinite(v) else f"{v:+.2f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if np.isfinite(v) and abs(v) > 0.6 else "black",
                )
        fig.colorbar(image, ax=ax, fraction=0.05)
        ax.set_title(title, fontsize=9)
        fig.tight_layout()
        save_figure(fig, path, dpi=dpi)
        plotted = np.ma.filled(np.ma.asarray(image.get_array(), dtype=float), np.nan)
    finally:
        fig.clear()
    return plotted


@dataclass(frozen=True)
class InterventionPanel:
    """One panel of the intervention figure: flatness (x) against robust error adjusted to the
    fit runs' mean clean error (y); ``fit_*`` the reference and intervention runs, ``eval_*``
    the augmentation runs; the line is the fitted ``intercept + slope x``."""

    x_metric: str
    y_metric: str
    fit_x: np.ndarray
    fit_y: np.ndarray
    eval_x: np.ndarray
    eval_y: np.ndarray
    eval_labels: tuple
    slope: float
    intercept: float


def intervention_panel_data(
    flat, robust, clean, coef, fit_runs, eval_runs, labels, *, x_metric: str, y_metric: str
) -> InterventionPanel:
    """Adjust robust error for clean error with the fitted slope (``coef = (a, b_flat,
    b_clean)``; NaN b_clean: no adjustment): ``y - b_clean (clean - mean clean of the fit
    runs)``; the line is ``a + b_clean mean_clean + b_flat x``."""
    flat, robust = np.asarray(flat, dtype=float), np.asarray(robust, dtype=float)
    a, b, c = coef
    fit_runs, eval_runs = list(fit_runs), list(eval_runs)
    if clean is not None and np.isfinite(c):
        clean = np.asarray(clean, dtype=float)
        centre = float(np.nanmean(clean[fit_runs]))
        y = robust - c * (clean - centre)
        intercept = a + c * centre
    else:
        y, intercept = robust, a
    return InterventionPanel(
        x_metric,
        y_metric,
        flat[fit_runs],
        y[fit_runs],
        flat[eval_runs],
        y[eval_runs],
        tuple(str(labels[i]) for i in eval_runs),
        float(b),
        float(intercept),
    )


def plot_intervention_grid(
    path,
    panels: Sequence[InterventionPanel],
    *,
    ncols: int = 2,
    panel_size=(3.6, 3.0),
    dpi: int = DEFAULT_DPI,
) -> list:
    """One panel per (flatness, robust error): the intervention runs (circles) with their fitted
    line and the augmentation runs (labelled triangles). Returns the plotted points per panel,
    read back from the Axes, as ``(fit_xy, eval_xy)``."""
    if not panels:
        raise ValueError("plot_intervention_grid needs at least one panel")
    ncols = min(ncols, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows))
    out = []
    try:
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, p in zip(axes, panels):
            fit = ax.scatter(
                p.fit_x,
                p.fit_y,
                s=24,
                color="tab:blue",
                label="reference + interventions",
                zorder=3,
            )
            ev = ax.scatter(
                p.eval_x,
                p.eval_y,
                s=30,
                marker="^",
                color="tab:orange",
                label="augmentations",
                zorder=3,
            )
            for xi, yi, lab in zip(p.eval_x, p.eval_y, p.eval_labels):
                if np.isfinite(xi) and np.isfinite(yi):
                    ax.annotate(
                        lab, (xi, yi), textcoords="offset points", xytext=(4, 3), fontsize=6
                    )
            xs = np.concatenate([p.fit_x, p.eval_x])
            xs = xs[np.isfinite(xs)]
            if xs.size and np.isfinite(p.slope):
                grid = np.array([xs.min(), xs.max()])
                ax.plot(
                    grid, p.intercept + p.slope * grid, color="tab:blue", lw=1.0, gid=FIT_LINE_GID
                )
            ax.set_xlabel(p.x_metric, fontsize=7)
            ax.set_ylabel(f"{p.y_metric}\n(adjusted for clean error)", fontsize=7)
            ax.tick_params(labelsize=6)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=6, loc="best")
            out.append(
                (
                    np.asarray(fit.get_offsets(), dtype=float).reshape(-1, 2),
                    np.asarray(ev.get_offsets(), dtype=float).reshape(-1, 2),
                )
            )
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        fig.tight_layout()
        save_figure(fig, path, dpi=dpi)
    finally:
        fig.clear()
    return out
