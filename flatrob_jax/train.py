"""Train one model: ``python -m flatrob_jax.train --config configs/x.py[:arg] --workdir DIR
[--config.a.b=value ...]``. Resumes automatically from the latest checkpoint in DIR.

``arg`` is the config's argument (``smoke``, ``smoke,seed=1``); ``--config.a.b=None`` sets a
field to None ("all" examples or devices, steps derived from epochs, never)."""

from absl import app, flags, logging
from ml_collections import config_flags

from flatrob_jax import configuration, distributed, fileio

configuration.accept_none_on_command_line()
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "experiment config file", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "directory for checkpoints, metrics and config")
flags.DEFINE_enum("distributed", None, distributed.MODES, distributed.FLAG_HELP)  # at start-up
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    fileio.require_support(_WORKDIR.value, _CONFIG.value.dataset.data_dir)  # gs:// needs [gcp]
    # Imported here: importing the library may run JAX computations (after start-up only).
    from flatrob_jax.training.trainer import train_and_evaluate

    with distributed.exit_on_preemption():  # SIGTERM: saved, exit status 75
        train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    # jax.distributed starts before the flags are parsed (see distributed.mode_from_argv).
    app.run(main, flags_parser=distributed.start_up_then(flags.FLAGS))
