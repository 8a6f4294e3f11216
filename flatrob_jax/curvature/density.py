"""Eigenvalue density of the Hessian by stochastic Lanczos quadrature (SLQ).

Definition (Ghorbani, Krishnan & Xiao 2019; Lin, Saad & Yang 2016). The spectral density is
``phi(t) = (1/P) sum_i delta(t - lambda_i)``. For a unit vector ``v`` the Lanczos
tridiagonal ``T_m`` built from ``v`` has eigenpairs ``(theta_j, s_j)``; Gauss quadrature gives
``v^T f(H) v ~= sum_j tau_j f(theta_j)`` with weights ``tau_j = s_j[0]^2``. With ``v`` a
normalized Rademacher vector, ``E[v^T f(H) v] = tr f(H) / P``, so the density is
approximated by the nodes ``theta_j`` with weights ``tau_j`` averaged over runs, and smoothed
with a Gaussian kernel for plotting. The first moment ``sum_j tau_j theta_j = v^T H v`` times
P is exactly a Hutchinson sample of tr(H) (PyHessian's ``density`` follows the same recipe).

Runs in blocks: with ``block_size = b > 1`` the runs go ``b`` at a time, their Lanczos
recurrences in lockstep, each step one call of the block operator on ``b`` vectors (one pass
over the data: ``DatasetObjective.hvp_block``). Same start vectors, same result to float
rounding; the memory of the Lanczos bases grows ``b``-fold (``b * (steps + 1)`` vectors of P
floats).
"""

from __future__ import annotations

import dataclasses
import io
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from flatrob_jax import fileio
from flatrob_jax.curvature.lanczos import (
    lanczos_tridiagonal,
    lanczos_tridiagonal_runs,
    ritz_pairs,
)
from flatrob_jax.curvature.linalg import check_block_size, flattener, rademacher

PyTree = Any


@dataclasses.dataclass(frozen=True)
class SpectralDensity:
    """Quadrature nodes/weights of each SLQ run (``[runs, m]``; weights of a run sum to 1),
    the operator dimension P, and the matvecs used."""

    nodes: np.ndarray
    weights: np.ndarray
    dim: int
    num_matvecs: int

    def moment(self, power: int = 1) -> tuple[float, float]:
        """Estimate of ``tr(H^power) / P`` and its standard error over runs."""
        per_run = np.sum(self.weights * self.nodes**power, axis=1)
        stderr = np.std(per_run, ddof=1) / math.sqrt(len(per_run)) if len(per_run) > 1 else math.inf
        return float(np.mean(per_run)), float(stderr)

    def trace(self) -> tuple[float, float]:
        """tr(H) estimate ``P * first moment`` and its standard error."""
        mean, stderr = self.moment(1)
        return self.dim * mean, self.dim * stderr

    def on_grid(self, grid: np.ndarray, sigma: float) -> np.ndarray:
        """The density smoothed by a Gaussian of standard deviation ``sigma`` on ``grid``."""
        grid = np.asarray(grid, dtype=np.float64)[:, None, None]
        kernel = np.exp(-0.5 * ((grid - self.nodes[None]) / sigma) ** 2) / (
            sigma * math.sqrt(2 * math.pi)
        )
        return np.mean(np.sum(kernel * self.weights[None], axis=2), axis=1)


def slq_density(
    matvec: Callable[[PyTree], PyTree],
    params_like: PyTree,
    key: jax.Array,
    *,
    num_steps: int,
    num_runs: int = 1,
    progress: Callable[[int, int], None] | None = None,
    block_size: int = 1,
    block_matvec: Callable[[PyTree], PyTree] | None = None,
) -> SpectralDensity:
    """SLQ with ``num_runs`` Rademacher start vectors and ``num_steps`` Lanczos steps each;
    ``progress(steps done, total steps)`` is called after each step. ``block_size`` runs go
    together through ``block_matvec`` (None: ``jax.vmap(matvec)``), see the module doc."""
    if num_steps < 1 or num_runs < 1:
        raise ValueError(f"num_steps and num_runs must be >= 1, got {num_steps}, {num_runs}")
    block_size = check_block_size(block_size)
    dim, dtype, _ = flattener(params_like)
    steps = min(num_steps, dim)
    nodes, weights, matvecs = [], [], 0
    for first in range(0, num_runs, block_size):
        group = range(first, min(first + block_size, num_runs))
        report = (
            None
            if progress is None
            else (
                lambda done, _, lo=first, n=len(group): progress(
                    lo * steps + n * done, num_runs * steps
                )
            )
        )
        starts = [rademacher(jax.random.fold_in(key, run), dim, dtype) for run in group]
        if len(group) == 1:
            alphas, betas, _, _ = lanczos_tridiagonal(
                matvec, params_like, starts[0], steps, progress=report
            )
            tridiagonals = [(alphas, betas)]
        else:
            tridiagonals = lanczos_tridiagonal_runs(
                matvec,
                params_like,
                jnp.stack(starts),
                steps,
                block_matvec=block_matvec,
                progress=report,
            )
        del starts
        for alphas, betas in tridiagonals:
            node, weight = _quadrature(alphas, betas, steps)
            nodes.append(node)
            weights.append(weight)
            matvecs += len(alphas)
    return SpectralDensity(np.array(nodes), np.array(weights), dim, matvecs)


def _quadrature(alphas, betas, steps):
    """Gauss quadrature nodes and weights of one run, padded to ``steps``."""
    theta, s = ritz_pairs(alphas, betas)
    node = np.zeros(steps)
    weight = np.zeros(steps)  # an early breakdown leaves zero-weight padding nodes
    node[: len(theta)] = theta
    node[len(theta) :] = theta[-1]
    weight[: len(theta)] = s[0, :] ** 2
    return node, weight


def plot_density(
    density: SpectralDensity,
    path: str,
    *,
    num_points: int = 1000,
    sigma_fraction: float = 0.01,
    title: str = "Hessian eigenvalue density (SLQ)",
) -> str:
    """Writes a PNG of the smoothed density (log scale) to ``path`` (a local path or a gs://
    URI, written atomically through ``flatrob_jax.fileio``); returns ``path``.

    The kernel width is ``sigma_fraction`` times the span of the nodes; the grid extends five
    percent of the span beyond them. Draws on matplotlib's Agg canvas directly (no display,
    no change to the global pyplot backend).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lo, hi = float(np.min(density.nodes)), float(np.max(density.nodes))
    span = max(hi - lo, 1e-12 * max(abs(lo), abs(hi), 1.0))
    grid = np.linspace(lo - 0.05 * span, hi + 0.05 * span, num_points)
    values = density.on_grid(grid, sigma_fraction * span)
    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.semilogy(grid, np.maximum(values, 1e-12))
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density (Gaussian-smoothed)")
    ax.set_title(title)
    ax.set_ylim(max(float(values.max()) * 1e-8, 1e-12), float(values.max()) * 2)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    fileio.atomic_write_bytes(path, buffer.getvalue())
    return path
