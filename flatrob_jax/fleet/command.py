"""The library behind ``python -m flatrob_jax.sweep``: what one command line asks for.

* ``--print_commands``: the plan's unit commands, in dependency order (the warm start first);
  running them by hand, in that order, then ``--only report``, gives the same study.
* ``--run NAME``: one unit, in this process (``study.run_unit``); exit 0 done, 75 preempted
  and saved, 76 another attempt took the run over, other failed.
* ``--executor local`` with ``--parallel 1`` (the default): every run in this process, one
  after another (``study.run_plan``; on a pod every process of it takes part).
* otherwise: the units fanned out on the executor (``fleet.fan_out``); ``--slurm KEY=VALUE``
  (repeated) sets the SLURM executor's options: ``partition``, ``time_min``, ``folder``,
  ``warning_s``, or any submitit SlurmExecutor parameter (``qos``, ``account``, ``mem_gb``...).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os

from flatrob_jax import distributed, study, workdir_lease
from flatrob_jax.fleet import driver, make_executor


@dataclasses.dataclass
class Options:
    sweep: str
    workdir: str
    overrides: tuple = ()  # 'a.b=value' for every run
    only: str | None = None
    print_commands: bool = False
    run: str | None = None
    executor: str = "local"
    parallel: int = 1
    address: str | None = None
    resources: str | None = None
    max_retries: int = 1
    slurm: tuple = ()  # --slurm KEY=VALUE: partition, time_min, folder, a submitit parameter


@contextlib.contextmanager
def unit_exit_codes():
    """Preempted -> exit 75 (saved, resumable); LeaseLost -> exit 76 (superseded)."""
    try:
        with distributed.exit_on_preemption():
            yield
    except workdir_lease.LeaseLost as e:
        print(f"{e} (exit status {workdir_lease.SUPERSEDED_EXIT_CODE})", flush=True)
        raise SystemExit(workdir_lease.SUPERSEDED_EXIT_CODE) from e


def _slurm_options(options: Options) -> dict | None:
    if not options.slurm:
        return None
    if options.executor != "slurm":
        raise ValueError(f"--slurm {options.slurm[0]!r} applies to --executor slurm only")
    from flatrob_jax.fleet.slurm import options_from_strings

    return options_from_strings(options.slurm)


def run(options: Options, log=print) -> int:
    """Do what ``options`` ask (module docstring); returns the exit status."""
    sweep = study.load_sweep(options.sweep)
    plan = study.plan(sweep, options.workdir, options.overrides)
    if options.print_commands:
        for job in plan.jobs:
            log(job.command_line)
        return 0
    if options.run is not None:
        with unit_exit_codes():
            study.run_unit(
                plan,
                options.run,
                log=log,
                attempt=os.environ.get("FLATROB_ATTEMPT"),
                node=os.environ.get("FLATROB_NODE", ""),
            )
        return 0
    steps = study.STEPS if options.only is None else (options.only,)
    if options.executor == "local" and options.parallel == 1 or options.only == "report":
        with distributed.exit_on_preemption():  # SIGTERM: saved, exit status 75
            study.run_plan(plan, steps, log)
        return 0
    if options.only is not None:
        raise ValueError(f"--only {options.only} runs in-process; fanned-out units do every step")
    executor = make_executor(
        options.executor,
        plan.root,
        resources=options.resources or sweep.resources,
        parallel=options.parallel,
        address=options.address,
        slurm_options=_slurm_options(options),
    )
    return driver.fan_out(plan, executor, max_retries=options.max_retries, log=log)
