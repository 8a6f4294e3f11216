"""Import a PyTorch checkpoint as a run: ``python -m flatrob_jax.import_torch --arch ARCH
--weights PATH --dataset NAME --workdir W [--mean m1,m2,m3 --std s1,s2,s3] [--sha256 HEX]
[--zoo_entry NAME]``. ARCH: resnet18_cifar, preact_resnet18, wrn_28_10, wrn_34_10, wrn_70_16,
wrn_40_2, resnet50, wide_resnet50_2. Without --mean/--std the inputs are used as they are
(unless the checkpoint stores its normalization). Needs torch (``pip install
'flatrob_jax[torch]'``); the library code is ``flatrob_jax.torch_import.command.import_run``.

A zoo entry instead: ``python -m flatrob_jax.import_torch --zoo NAME --workdir W
[--zoo_cache DIR]`` fetches it once into the cache (``torch_import.fetch``) and imports it
with the entry's architecture, dataset and normalization (``torch_import.zoo.names()``)."""

from absl import app, flags, logging

from flatrob_jax.torch_import import arch_names, command, dataset_names

_ARCH = flags.DEFINE_string("arch", None, f"architecture: {', '.join(arch_names())}")
_WEIGHTS = flags.DEFINE_string("weights", None, "the .pt/.pth file (a state_dict)")
_DATASET = flags.DEFINE_string("dataset", None, f"dataset: {', '.join(dataset_names())}")
_WORKDIR = flags.DEFINE_string("workdir", None, "new run directory to write")
_MEAN = flags.DEFINE_list("mean", None, "per-channel input mean the weights were trained with")
_STD = flags.DEFINE_list("std", None, "per-channel input std the weights were trained with")
_SHA256 = flags.DEFINE_string("sha256", None, "expected sha256 of the weights file")
_ZOO_ENTRY = flags.DEFINE_string("zoo_entry", None, "zoo name of the model, for provenance")
_ZOO = flags.DEFINE_string("zoo", None, "a zoo entry to fetch and import, instead of --arch...")
_ZOO_CACHE = flags.DEFINE_string("zoo_cache", None, "zoo cache (default $FLATROB_ZOO_CACHE)")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    file_args = {name: flags.FLAGS[name].value for name in command.FILE_ARGS}
    try:
        record = command.import_run(
            _WORKDIR.value, zoo_name=_ZOO.value, zoo_cache=_ZOO_CACHE.value, **file_args
        )
    except command.ArgumentError as e:
        raise app.UsageError(str(e)) from e
    print(command.summary(record, _WORKDIR.value))


if __name__ == "__main__":
    app.run(main)
