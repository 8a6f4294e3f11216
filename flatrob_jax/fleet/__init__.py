"""Sweeps fanned out over many processes or machines: one unit of work per run.

A unit is ``python -m flatrob_jax.sweep --sweep S --workdir ROOT --run NAME``: train (or
import) the run unless it is finished, then analyze it unless its analysis is current
(``study.run_unit``). ``fan_out(plan, executor)`` (``driver``) runs the plan's units on an
executor, the warm start first, retrying lost and preempted ones, and builds the report.
Executors, one module each, chosen by name (``EXECUTORS``):

* ``local``: this machine, ``parallel`` units at once (``local.LocalExecutor``);
* ``ray``: a Ray cluster (``ray_cluster.RayExecutor``; needs ``flatrob_jax[ray]``);
* ``slurm``: a SLURM cluster through submitit (``slurm.SlurmExecutor``; needs
  ``flatrob_jax[slurm]``).

Ray and submitit are imported only by their executor, only when it is chosen. The driver (and
with it study, analysis and JAX) is imported on first use of ``fan_out``/``FANOUT_FILE``: a
worker that only runs ``attempts.run_attempt`` (a Ray task, a SLURM job) starts without JAX.
"""

from __future__ import annotations

from flatrob_jax.fleet import resources as resources_lib

EXECUTORS = ("local", "ray", "slurm")


def make_executor(
    name: str,
    root: str,
    *,
    resources: str | None = None,
    parallel: int = 1,
    address: str | None = None,
    slurm_options: dict | None = None,
):
    """The executor called ``name`` (one of ``EXECUTORS``) for a sweep under ``root``."""
    wanted = resources_lib.parse(resources)
    if name == "local":
        from flatrob_jax.fleet.local import LocalExecutor

        return LocalExecutor(root, parallel=parallel, resources=wanted if resources else None)
    if name == "ray":
        from flatrob_jax.fleet.ray_cluster import RayExecutor

        return RayExecutor(root, address=address, resources=wanted)
    if name == "slurm":
        from flatrob_jax.fleet.slurm import SlurmExecutor

        return SlurmExecutor(root, resources=wanted, **(slurm_options or {}))
    raise ValueError(f"unknown executor {name!r}; allowed: {', '.join(EXECUTORS)}")


def __getattr__(name):
    if name in ("fan_out", "FANOUT_FILE"):
        from flatrob_jax.fleet import driver

        return getattr(driver, name)
    raise AttributeError(f"module 'flatrob_jax.fleet' has no attribute {name!r}")


__all__ = ["EXECUTORS", "FANOUT_FILE", "fan_out", "make_executor"]
