"""The driver of a fanned-out sweep: plan -> units on an executor -> settled -> the report.

:func:`fan_out` takes the sweep's plan (``study.plan``), skips the units that are done (trained
and analyzed), starts the warm start first and every other unit once the runs it starts from
are trained, and then waits, retries and reports:

* exit 0: done;
* exit 75 (preempted, state saved): started again at once, not counted as a failure;
* exit 76 (another attempt took the run over): given up, reported;
* any other exit, or a unit whose machine the engine gave up on: started again up to
  ``max_retries`` times, then reported as failed; the other units go on (those that start from
  a failed warm start are reported as failed too).

It prints progress (done / running / retried / failed, ETA) and keeps ``<root>/fanout.json``:
every unit's attempts (node, pid, exit status, start and end times, log), merged from the
records the attempts write themselves (``attempts.py``). When every unit has settled it builds
the report (``study.write_report``), unless nothing was started and the results table exists.
It returns 0 when every unit is done, else 1.
"""

from __future__ import annotations

import time

from flatrob_jax import fileio, study
from flatrob_jax.fleet.attempts import PREEMPTED, SUPERSEDED, Outcome, read_records
from flatrob_jax.progress import format_duration

FANOUT_FILE = "fanout.json"
LOST_RETRIES = 10  # starts of one unit after machines were lost, before it counts as failed


class Driver:
    """The state of one fan-out: which unit is waiting, running, done or failed."""

    def __init__(self, plan, executor, *, max_retries: int, log):
        self.plan, self.executor, self.log = plan, executor, log
        self.max_retries = max_retries
        self.state = {}  # name -> 'done-before' | 'waiting' | 'running' | 'done' | 'failed'
        self.failures, self.restarts, self.reasons = {}, {}, {}
        self.durations = []
        self.t0 = time.time()

    # ----------------------------------------------------------------------- decisions

    def plan_units(self) -> None:
        for job in self.plan.jobs:
            self.state[job.name] = "done-before" if study.job_done(job) else "waiting"
            self.failures[job.name] = self.restarts[job.name] = 0

    def ready(self) -> list:
        """Waiting units whose dependencies are trained, in plan order."""
        settled = ("done", "done-before")
        out = []
        for job in self.plan.jobs:
            if self.state[job.name] != "waiting":
                continue
            deps = [self.state[d] for d in job.depends_on]
            if any(s == "failed" for s in deps):
                self._settle(job.name, "failed", "a run it starts from failed")
            elif all(s in settled for s in deps):
                out.append(job)
        return out

    def finished(self, outcome: Outcome) -> None:
        name = outcome.name
        if outcome.ended:
            self.durations.append(outcome.ended - outcome.started)
        status = outcome.exit_status
        if status == 0:
            self._settle(name, "done")
        elif status == PREEMPTED:
            self.restarts[name] += 1
            self._retry(name, f"preempted (exit {PREEMPTED}), state saved; started again")
        elif status == SUPERSEDED:
            self._settle(name, "failed", f"another attempt took the run over (exit {SUPERSEDED})")
        elif status is None:
            self.restarts[name] += 1
            if self.restarts[name] > LOST_RETRIES:
                self._settle(name, "failed", f"lost {self.restarts[name]} times: {outcome.lost}")
            else:
                self._retry(name, f"its machine was lost ({outcome.lost}); started again")
        else:
            self.failures[name] += 1
            if self.failures[name] > self.max_retries:
                tail = outcome.tail.strip().splitlines()[-1:] or [""]
                self._settle(name, "failed", f"exit {status}: {tail[0]} (log: {outcome.log})")
            else:
                self._retry(name, f"failed with exit {status}; retry {self.failures[name]}")

    def _retry(self, name: str, why: str) -> None:
        self.state[name] = "waiting"
        self.log(f"{name}: {why}")

    def _settle(self, name: str, state: str, why: str = "") -> None:
        self.state[name] = state
        if why:
            self.reasons[name] = why
        self.log(f"{name}: {state}" + (f" ({why})" if why else ""))

    # ----------------------------------------------------------------------- the loop

    def run(self, poll_s: float) -> None:
        running = {}
        while True:
            for job in self.ready():
                if self.executor.slots is not None and len(running) >= self.executor.slots:
                    break
                running[self.executor.start(job)] = job.name
                self.state[job.name] = "running"
            if not running:
                break
            for handle, outcome in self.executor.wait(poll_s):
                running.pop(handle, None)
                self.finished(outcome)
                self.write_record()
            self.log(self.progress_line())

    def progress_line(self) -> str:
        counts = {s: sum(v == s for v in self.state.values()) for s in set(self.state.values())}
        done = counts.get("done", 0) + counts.get("done-before", 0)
        left = counts.get("waiting", 0) + counts.get("running", 0)
        eta = "?"
        if self.durations and left:
            width = self.executor.slots or max(1, counts.get("running", 0))
            eta = format_duration(sum(self.durations) / len(self.durations) * left / width)
        retried = sum(self.restarts.values()) + sum(self.failures.values())
        return (
            f"fan-out: {done}/{len(self.state)} done, {counts.get('running', 0)} running, "
            f"{retried} retried, {counts.get('failed', 0)} failed; elapsed "
            f"{format_duration(time.time() - self.t0)}, ETA {eta}"
        )

    def write_record(self) -> str:
        units = {}
        for job in self.plan.jobs:
            attempts = read_records(self.plan.root, job.name)
            units[job.name] = {
                "state": self.state[job.name],
                "reason": self.reasons.get(job.name, ""),
                "depends_on": list(job.depends_on),
                "workdir": job.workdir,
                "command": job.command_line,
                "attempts": attempts,
            }
        record = {
            "root": self.plan.root,
            "executor": self.executor.description,
            "max_retries": self.max_retries,
            "started": self.t0,
            "updated": time.time(),
            "units": units,
        }
        return fileio.write_json(fileio.join(self.plan.root, FANOUT_FILE), record, indent=1)


def fan_out(plan, executor, *, max_retries: int = 1, poll_s: float = 10.0, log=print) -> int:
    """Run every unit of ``plan`` that is not done on ``executor`` (module docstring); build
    the report; return the exit status (0: every unit done; 1: some failed)."""
    missing = [job.name for job in plan.jobs if job.command is None]
    if missing:
        raise ValueError(
            f"runs {missing} have no command: a sweep built in code (no spec) runs in-process "
            f"only (study.run_sweep); load it with study.load_sweep to fan it out"
        )
    fileio.makedirs(plan.root)
    driver = Driver(plan, executor, max_retries=max_retries, log=log)
    driver.plan_units()
    todo = [n for n, s in driver.state.items() if s == "waiting"]
    log(f"{len(plan.jobs)} units in {plan.root}: {len(todo)} to do on {executor.description}")
    try:
        driver.run(poll_s)
    finally:
        executor.close()
        driver.write_record()
    failed = [n for n, s in driver.state.items() if s == "failed"]
    results = fileio.join(plan.root, "results.csv")
    if todo or not fileio.exists(results):
        study.write_report(plan, log, failed={n: driver.reasons[n] for n in failed})
    log(driver.progress_line())
    if failed:
        log(f"failed: {', '.join(failed)} (fanout.json has every attempt and its log)")
    return 1 if failed else 0
