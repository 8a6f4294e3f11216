"""Progress of long loops: rate (units/s), elapsed time and ETA, reported at most every
``every_secs`` seconds.

One reporter for training steps, attack and corruption batches and curvature HVPs, modelled
on clu's ``periodic_actions.ReportProgress`` (``every_secs``, steps/s, ETA): call it with the
number of units done after each unit of work; it logs a line when ``every_secs`` have passed
since the last line, and always at the end (``done == total``)::

    progress = Progress(total=100, unit="HVP", desc="curvature/lanczos", log=print,
                        every_secs=10.0)
    for i in range(100):
        ...
        progress(i + 1)   # "curvature/lanczos: HVP 37/100 (37%) 2.31 HVPs/s elapsed 0:16 ETA 0:27"

The rate and the ETA use the average since the reporter was made (``start`` units done then),
so a first slow unit (compilation) shows in both until it is amortised.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Callable


def format_duration(seconds: float) -> str:
    """``h:mm:ss`` (or ``m:ss`` under an hour); ``'?'`` for an unknown (non-finite) duration."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Rate and ETA of a loop of ``total`` units of which ``start`` were done before.

    Args:
      total: number of units of the whole loop (may be updated by a call).
      start: units already done when the reporter is made (a resumed run's step).
      unit: singular name of a unit (``'step'``, ``'example'``, ``'HVP'``).
      stream: where :meth:`report` prints when ``log`` is None (default stdout).
      desc: prefix of each line (``'desc: ...'``); empty for none.
      log: ``str -> None`` that :meth:`__call__` and :meth:`report` use instead of printing.
      every_secs: least time between two lines written by :meth:`__call__` (None: every call).
      clock: seconds as a float (``time.perf_counter``; tests pass a fake clock).
    """

    def __init__(
        self,
        total: int,
        start: int = 0,
        unit: str = "step",
        stream=None,
        *,
        desc: str = "",
        log: Callable[[str], None] | None = None,
        every_secs: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ):
        if every_secs is not None and every_secs < 0:
            raise ValueError(f"every_secs must be None or >= 0, got {every_secs!r}")
        self.total = total
        self.start = start
        self.unit = unit
        self.stream = stream
        self.desc = desc
        self.log = log
        self.every_secs = every_secs
        self.clock = clock
        self.t0 = clock()
        self.last_report: float | None = None

    def elapsed(self) -> float:
        """Seconds since the reporter was made."""
        return self.clock() - self.t0

    def rate(self, done: int) -> float:
        """Units per second since the reporter was made (NaN before any time has passed)."""
        elapsed = self.elapsed()
        return (done - self.start) / elapsed if elapsed > 0 else float("nan")

    def eta(self, done: int) -> float:
        """Seconds left at the average rate (NaN while the rate is unknown or zero)."""
        rate = self.rate(done)
        return (self.total - done) / rate if rate > 0 else float("nan")

    def line(self, done: int, extra: str = "") -> str:
        """``[desc: ]unit done/total (pct%) rate units/s elapsed h:mm:ss ETA h:mm:ss[ | extra]``."""
        pct = 100.0 * done / max(self.total, 1)
        text = (
            f"{self.unit} {done}/{self.total} ({pct:.0f}%) {self.rate(done):.2f} "
            f"{self.unit}s/s elapsed {format_duration(self.elapsed())} "
            f"ETA {format_duration(self.eta(done))}"
        )
        if self.desc:
            text = f"{self.desc}: {text}"
        return text + (f" | {extra}" if extra else "")

    def report(self, done: int, extra: str = "") -> None:
        """Write :meth:`line` now (to ``log``, else to ``stream``)."""
        self.last_report = self.clock()
        text = self.line(done, extra)
        if self.log is not None:
            self.log(text)
        else:
            print(text, file=self.stream or sys.stdout, flush=True)

    def due(self, done: int) -> bool:
        """Whether :meth:`__call__` would write a line now."""
        if done >= self.total or self.every_secs is None:
            return True
        last = self.t0 if self.last_report is None else self.last_report
        return self.clock() - last >= self.every_secs

    def __call__(self, done: int, total: int | None = None, extra: str = "") -> bool:
        """Record ``done`` units (of ``total``, if given); write a line when due. Returns
        whether it wrote one. The ``(done, total)`` form is the curvature solvers'
        ``progress`` callback."""
        if total is not None:
            self.total = total
        if not self.due(done):
            return False
        self.report(done, extra)
        return True


__all__ = ["Progress", "format_duration"]
