"""Import a PyTorch checkpoint as a run: ``python -m flatrob_jax.import_torch --arch ARCH
--weights PATH --dataset NAME --workdir W [--mean m1,m2,m3 --std s1,s2,s3] [--sha256 HEX]
[--zoo_entry NAME]``. ARCH: resnet18_cifar, preact_resnet18, wrn_28_10, wrn_34_10, wrn_70_16,
resnet50, wide_resnet50_2. Without --mean/--std the inputs are used as they are (unless the
checkpoint stores its normalization). Needs torch (``pip install 'flatrob_jax[torch]'``); the
library code is ``flatrob_jax.torch_import.import_checkpoint``."""

from absl import app, flags, logging

from flatrob_jax.torch_import import arch_names, dataset_names, import_checkpoint

_ARCH = flags.DEFINE_string("arch", None, f"architecture: {', '.join(arch_names())}")
_WEIGHTS = flags.DEFINE_string("weights", None, "the .pt/.pth file (a state_dict)")
_DATASET = flags.DEFINE_string("dataset", None, f"dataset: {', '.join(dataset_names())}")
_WORKDIR = flags.DEFINE_string("workdir", None, "new run directory to write")
_MEAN = flags.DEFINE_list("mean", None, "per-channel input mean the weights were trained with")
_STD = flags.DEFINE_list("std", None, "per-channel input std the weights were trained with")
_SHA256 = flags.DEFINE_string("sha256", None, "expected sha256 of the weights file")
_ZOO_ENTRY = flags.DEFINE_string("zoo_entry", None, "zoo name of the model, for provenance")
flags.mark_flags_as_required(["arch", "weights", "dataset", "workdir"])


def _floats(name, values):
    try:
        return None if values is None else [float(v) for v in values]
    except ValueError as e:
        raise app.UsageError(f"--{name}={','.join(values)}: expected numbers") from e


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    record = import_checkpoint(
        _ARCH.value,
        _WEIGHTS.value,
        _DATASET.value,
        _WORKDIR.value,
        mean=_floats("mean", _MEAN.value),
        std=_floats("std", _STD.value),
        sha256=_SHA256.value,
        zoo_entry=_ZOO_ENTRY.value,
    )
    print(
        f"imported {record['arch']} ({record['num_parameters']:,} parameters, sha256 "
        f"{record['sha256']}) into {_WORKDIR.value}; normalization from "
        f"{record['normalization']['from']}"
    )


if __name__ == "__main__":
    app.run(main)
