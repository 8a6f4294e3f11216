"""Analyze trained runs: every configured analysis (clean error, flatness on clean and on
augmented training data, corruption error, adversarial error) of each workdir's latest
checkpoint, into ``workdir/analysis.json``.

    python -m flatrob_jax.analyze --workdir DIR [--workdir DIR2 ...] \\
        [--config.analysis.attacks.autoattack=True ...]

The settings are the run config's ``analysis`` section; ``--config.analysis.x=v`` overrides
them for this analysis only. The library code is ``flatrob_jax.analysis.runner.analyze_runs``
(on several hosts, one workdir per process).
"""

from absl import app, flags, logging

from flatrob_jax import configuration, distributed, fileio

_WORKDIR = flags.DEFINE_multi_string("workdir", None, "run directory (repeat for several)")
flags.DEFINE_enum("distributed", None, distributed.MODES, distributed.FLAG_HELP)  # at start-up
flags.mark_flag_as_required("workdir")


def parse_flags(argv):
    """absl flags plus ``--config.analysis.x=v`` overrides (returned as 'analysis.x=v')."""
    overrides = [a[len("--config.") :] for a in argv[1:] if a.startswith("--config.")]
    for o in overrides:
        if not o.startswith("analysis.") or "=" not in o:
            raise app.UsageError(f"--config.{o}: analyze takes --config.analysis.<field>=<value>")
    return flags.FLAGS([a for a in argv if not a.startswith("--config.")]), overrides


def main(parsed):
    argv, overrides = parsed
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    fileio.require_support(*_WORKDIR.value)  # a gs:// workdir needs flatrob_jax[gcp]
    # Imported here: importing the library may run JAX computations (after start-up only).
    from flatrob_jax.analysis import analysis_config_for
    from flatrob_jax.analysis.runner import analyze_runs

    jobs = []
    for workdir in _WORKDIR.value:
        try:
            jobs.append((workdir, analysis_config_for(workdir, overrides)))
        except ValueError as e:  # an unknown field or a wrong type: a usage error
            raise app.UsageError(str(e)) from e
    analyze_runs(jobs)  # several hosts: one run per process, on its own devices


if __name__ == "__main__":
    configuration.accept_none_on_command_line()
    # jax.distributed starts before the flags are parsed (see distributed.mode_from_argv).
    app.run(main, flags_parser=distributed.start_up_then(parse_flags))
