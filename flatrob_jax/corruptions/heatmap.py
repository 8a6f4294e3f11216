"""Heat map of error per corruption (rows) and severity (columns), written as a PNG (a local
path or a gs:// URI, through ``flatrob_jax.fileio``)."""

from __future__ import annotations

import io
from typing import Mapping, Sequence

from flatrob_jax import fileio


def write_heatmap(errors: Mapping[str, Sequence[float]], path: str, title: str = "error") -> str:
    # A Figure with its own Agg canvas, not pyplot: no global backend switch and no figure
    # left in pyplot's state (a notebook's own plots keep showing).
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(errors)
    table = np.asarray([list(errors[k]) for k in names], np.float64)
    fig = Figure(figsize=(1.2 * table.shape[1] + 3, 0.35 * len(names) + 1.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(
        table, cmap="viridis", vmin=0.0, vmax=max(1e-6, float(np.nanmax(table))), aspect="auto"
    )
    ax.set_xticks(range(table.shape[1]), [str(s + 1) for s in range(table.shape[1])])
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("severity")
    ax.set_title(title)
    for i in range(table.shape[0]):
        for j in range(table.shape[1]):
            ax.text(
                j,
                i,
                f"{100 * table[i, j]:.1f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if table[i, j] < 0.6 * np.nanmax(table) else "black",
            )
    fig.colorbar(im, ax=ax, label="top-1 error")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    fileio.atomic_write_bytes(path, buffer.getvalue())
    return path
