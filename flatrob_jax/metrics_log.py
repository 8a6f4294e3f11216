"""Metrics as JSON lines and TensorBoard events (tensorboardX: no TensorFlow needed).

``Progress`` and ``format_duration`` (steps/s and ETA lines) are ``flatrob_jax.progress``'s,
re-exported here."""
import json
import os
import time

import numpy as np

from flatrob_jax.atomic_files import atomic_write_text
from flatrob_jax.progress import Progress, format_duration


def _plain(value):
    value = np.asarray(value)
    return value.item() if value.ndim == 0 else value.tolist()


class MetricWriter:
    """Appends ``{"step": s, "split": ..., name: value}`` lines to ``metrics.jsonl`` and
    scalars to TensorBoard under ``workdir/tensorboard``. Only process 0 writes."""

    def __init__(self, workdir: str, enabled: bool = True, filename: str = "metrics.jsonl"):
        self.enabled = enabled
        self.path = os.path.join(workdir, filename)
        self._tb = None
        if enabled:
            os.makedirs(workdir, exist_ok=True)
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def truncate_after(self, step: int) -> None:
        """Drop lines logged after ``step`` (a resumed run logs those steps again)."""
        if not (self.enabled and os.path.exists(self.path)):
            return
        with open(self.path) as f:
            lines = [ln for ln in f if ln.strip()]
        kept = [ln for ln in lines if json.loads(ln).get("step", 0) <= step]
        if len(kept) != len(lines):
            atomic_write_text(self.path, "".join(kept))

    def write(self, step: int, split: str, metrics: dict) -> None:
        if not self.enabled:
            return
        row = {"step": int(step), "split": split, "time": time.time()}
        row.update({k: _plain(v) for k, v in metrics.items()})
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        for k, v in metrics.items():
            v = np.asarray(v)
            if v.ndim == 0 and np.isfinite(v):
                self._tb.add_scalar(f"{split}/{k}", float(v), step)

    def flush(self):
        if self._tb is not None:
            self._tb.flush()

    def close(self):
        if self._tb is not None:
            self._tb.close()


# The one progress reporter lives in flatrob_jax.progress; re-exported for existing importers
# (training/trainer.py, sweep.py).
__all__ = ["MetricWriter", "Progress", "format_duration"]
