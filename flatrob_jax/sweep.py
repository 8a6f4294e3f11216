"""Run a sweep: train one model per set of overrides, analyze every checkpoint, report.

    python -m flatrob_jax.sweep --sweep configs/sweeps/fashion_mnist_augmentations.py \\
        --workdir workdirs/fm_study [--only train|analyze|report] [--print_commands]

``--sweep`` is a sweep file (``path.py[:arg]``) or a sweep name in flatrob_jax.configs.sweeps.
The library code (``Sweep``, ``product``, ``load_sweep``, ``run_sweep``) is
``flatrob_jax.study``; every step is resumable (see there).
"""

from absl import app, flags, logging

from flatrob_jax import configuration, distributed, fileio, study

_SWEEP = flags.DEFINE_string("sweep", None, "sweep file path.py[:arg], or a sweep name")
_WORKDIR = flags.DEFINE_string("workdir", None, "root directory; one subdirectory per run")
_ONLY = flags.DEFINE_enum("only", None, list(study.STEPS), "run only this step")
_PRINT = flags.DEFINE_bool("print_commands", False, "print the per-run training commands, exit")
flags.DEFINE_enum("distributed", None, distributed.MODES, distributed.FLAG_HELP)  # at start-up
flags.mark_flags_as_required(["sweep", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    fileio.require_support(_WORKDIR.value)  # a gs:// root needs flatrob_jax[gcp]
    sweep = study.load_sweep(_SWEEP.value)
    if _PRINT.value:
        for name, overrides, _ in study.run_configs(sweep):
            print(study.command_line(sweep, overrides, fileio.join(_WORKDIR.value, name)))
        return
    with distributed.exit_on_preemption():  # SIGTERM: saved, exit status 75
        study.run_sweep(
            sweep, _WORKDIR.value, study.STEPS if _ONLY.value is None else (_ONLY.value,)
        )


if __name__ == "__main__":
    configuration.accept_none_on_command_line()
    # jax.distributed starts before the flags are parsed (see distributed.mode_from_argv).
    app.run(main, flags_parser=distributed.start_up_then(flags.FLAGS))
