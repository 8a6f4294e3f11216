"""Metrics as JSON lines and TensorBoard events (tensorboardX: no TensorFlow needed), and
progress lines with steps/s and ETA."""
import json
import math
import os
import sys
import time

import numpy as np

from flatrob_jax.atomic_files import atomic_write_text


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


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Rate and ETA of a loop of ``total`` units started at ``start``; ``line()`` formats them."""

    def __init__(self, total: int, start: int = 0, unit: str = "step", stream=None):
        self.total = total
        self.start = start
        self.unit = unit
        self.stream = stream or sys.stdout
        self.t0 = time.perf_counter()
        self.last = (start, self.t0)

    def rate(self, done: int) -> float:
        elapsed = time.perf_counter() - self.t0
        return (done - self.start) / elapsed if elapsed > 0 else float("nan")

    def line(self, done: int, extra: str = "") -> str:
        rate = self.rate(done)
        eta = (self.total - done) / rate if rate and rate > 0 else float("nan")
        pct = 100.0 * done / max(self.total, 1)
        return (f"{self.unit} {done}/{self.total} ({pct:.0f}%) {rate:.2f} {self.unit}s/s "
                f"elapsed {format_duration(time.perf_counter() - self.t0)} "
                f"ETA {format_duration(eta)}" + (f" | {extra}" if extra else ""))

    def report(self, done: int, extra: str = "") -> None:
        print(self.line(done, extra), file=self.stream, flush=True)
