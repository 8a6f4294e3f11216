"""Metrics as JSON lines and TensorBoard events (tensorboardX: no TensorFlow needed).

Both go through the workdir's storage, a local path or a gs:// URI (``flatrob_jax.fileio``):
``metrics.jsonl`` through ``fileio.Appender`` (appended locally; buffered and rewritten on an
object store), event files on gs:// through :class:`ObjectRecordWriter`, registered with
tensorboardX for gs:// in place of its own google-cloud-storage writer, because that one
uploads the event file once more from its ``__del__`` at interpreter exit (a redundant upload,
and a two-minute hang when the bucket is unreachable by then)."""

import json
import time

import numpy as np

from flatrob_jax import fileio


class ObjectRecordWriter:
    """A tensorboardX record writer for an object store: keeps the event file's bytes and
    uploads the whole object on ``flush()``/``close()`` when it has grown (an upload is
    atomic; there is no append)."""

    def __init__(self, path: str):
        self.path = path
        self._buffer = bytearray()
        self._uploaded = -1

    def write(self, data: bytes) -> None:
        self._buffer += data

    def flush(self) -> None:
        if len(self._buffer) != self._uploaded:
            fileio.atomic_write_bytes(self.path, bytes(self._buffer))
            self._uploaded = len(self._buffer)

    def close(self) -> None:
        self.flush()


class _ObjectRecordWriterFactory:
    def open(self, path):
        return ObjectRecordWriter(path)

    def directory_check(self, path):
        pass  # an object store has no directories to create


def _summary_writer(logdir: str):
    from tensorboardX import SummaryWriter, record_writer

    if fileio.scheme(logdir) == "gs":
        record_writer.register_writer_factory("gs", _ObjectRecordWriterFactory())
    return SummaryWriter(logdir)


class MetricWriter:
    """Appends ``{"step": s, "split": ..., name: value}`` lines to ``metrics.jsonl`` and
    scalars to TensorBoard under ``workdir/tensorboard``. Only process 0 writes.

    On an object store the lines reach the bucket at most ``min_interval_s`` after they are
    written and on :meth:`flush`, which the trainer calls before each checkpoint, so a
    resumed run never misses the lines of the steps before its checkpoint."""

    def __init__(
        self,
        workdir: str,
        enabled: bool = True,
        filename: str = "metrics.jsonl",
        min_interval_s: float = 30.0,
    ):
        self.enabled = enabled
        self.path = fileio.join(workdir, filename)
        self._tb = None
        self._lines = None
        if enabled:
            fileio.makedirs(workdir)
            self._lines = fileio.Appender(self.path, min_interval_s=min_interval_s)
            self._tb = _summary_writer(fileio.join(workdir, "tensorboard"))

    def truncate_after(self, step: int) -> None:
        """Drop lines logged after ``step`` (a resumed run logs those steps again)."""
        if not self.enabled:
            return
        lines = [ln for ln in self._lines.read().splitlines(keepends=True) if ln.strip()]
        kept = [ln for ln in lines if json.loads(ln).get("step", 0) <= step]
        if len(kept) != len(lines):
            self._lines.rewrite("".join(kept))

    def write(self, step: int, split: str, metrics: dict) -> None:
        if not self.enabled:
            return
        row = {"step": int(step), "split": split, "time": time.time(), **metrics}
        self._lines.append(fileio.dumps_json(row) + "\n")
        for k, v in metrics.items():
            v = np.asarray(v)
            if v.ndim == 0 and np.isfinite(v):
                self._tb.add_scalar(f"{split}/{k}", float(v), step)

    def flush(self):
        if self._lines is not None:
            self._lines.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self):
        if self._lines is not None:
            self._lines.flush()
        if self._tb is not None:
            self._tb.close()


__all__ = ["MetricWriter", "ObjectRecordWriter"]
