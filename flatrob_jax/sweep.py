"""Run a sweep: train one model per set of overrides, analyze every checkpoint, report.

    python -m flatrob_jax.sweep --sweep configs/sweeps/fashion_mnist_augmentations.py \\
        --workdir workdirs/fm_study [--config.a.b=value ...] [--only train|analyze|report]
        [--print_commands | --run NAME] [--executor local|ray|slurm --parallel N
        --address ADDR --resources gpu:1 --max_retries N --slurm KEY=VALUE]

``--sweep`` is a sweep file (``path.py[:arg]``) or a sweep name in flatrob_jax.configs.sweeps;
``--config.a.b=value`` applies to every run. The library code is ``flatrob_jax.study`` (plan,
units, in-process runs) and ``flatrob_jax.fleet`` (executors; ``fleet.command`` says what each
flag does); every step is resumable.
"""

import sys

from absl import app, flags, logging

from flatrob_jax import configuration, distributed, fleet, study
from flatrob_jax.fleet import command

_SWEEP = flags.DEFINE_string("sweep", None, "sweep file path.py[:arg], or a sweep name")
_WORKDIR = flags.DEFINE_string("workdir", None, "root directory; one subdirectory per run")
_ONLY = flags.DEFINE_enum("only", None, list(study.STEPS), "run only this step (in-process)")
_PRINT = flags.DEFINE_bool("print_commands", False, "print the unit commands in order, exit")
_RUN = flags.DEFINE_string("run", None, "do one unit (train/import, analyze) in this process")
_EXECUTOR = flags.DEFINE_enum("executor", "local", list(fleet.EXECUTORS), "where units run")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "local executor: units at once")
_ADDRESS = flags.DEFINE_string("address", None, "ray: auto, ray://HOST:PORT or HOST:PORT")
_RESOURCES = flags.DEFINE_string("resources", None, "per unit: cpu:K, gpu:K, tpu:K, tpu:host")
_RETRIES = flags.DEFINE_integer("max_retries", 1, "restarts of a unit that failed on its own")
flags.DEFINE_multi_string("slurm", [], "slurm: KEY=VALUE (partition, time_min, folder, ...)")
flags.DEFINE_enum("distributed", None, distributed.MODES, distributed.FLAG_HELP)  # at start-up
flags.mark_flags_as_required(["sweep", "workdir"])
_OVERRIDES = []  # --config.a.b=value, taken off the command line before absl parses it


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    names = ("sweep", "workdir", "only", "print_commands", "run", "executor", "parallel")
    names += ("address", "resources", "max_retries", "slurm")
    values = {n: flags.FLAGS[n].value for n in names}
    values["slurm"] = tuple(values["slurm"])
    sys.exit(command.run(command.Options(**values, overrides=tuple(_OVERRIDES))))


def _parse(argv):
    overrides, rest = configuration.split_config_args(argv)
    _OVERRIDES.extend(overrides)
    return distributed.start_up_then(flags.FLAGS)(rest)


if __name__ == "__main__":
    configuration.accept_none_on_command_line()
    # jax.distributed starts before the flags are parsed (see distributed.mode_from_argv).
    app.run(main, flags_parser=_parse)
