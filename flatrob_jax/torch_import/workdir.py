"""Writing an imported PyTorch checkpoint as an ordinary run directory.

The workdir holds what a trained run holds, so ``flatrob_jax.load_for_eval``, ``analyze``,
sweeps and the report treat it like one:

    workdir/config.json        the dataset's experiment config with ``model.name`` set to the
                               architecture's Flax model and ``dataset.mean/std`` to the
                               checkpoint's input normalization (mean 0, std 1 when none)
    workdir/checkpoints/0/     the imported params and BatchNorm statistics, in the TrainState
                               structure ``training.builders.initial_state`` gives (step 0)
    workdir/provenance.json    where the weights came from: file, sha256, zoo entry, torch
                               version, architecture, normalization and its origin
    workdir/summary.json       marks the run finished (``"imported": true``, ``steps`` 0)

Everything is checked (architecture, dataset, file, checksum, every tensor's name and shape)
before anything is written. On local disk the files are then written into a temporary sibling
directory that is renamed to ``workdir`` only when complete, so an error leaves no workdir
behind. An object store (gs://) has no rename: there the files are written into ``workdir``
itself, only after every check passed, with ``summary.json`` (which marks the run finished)
last; an error while writing removes what was written (a killed import leaves a workdir
without summary.json: delete it, e.g. ``gcloud storage rm -r``, and import again).
"""

from __future__ import annotations

import datetime
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from flatrob_jax import checkpoint as ckpt_lib
from flatrob_jax import configuration, fileio
from flatrob_jax.data import get_info
from flatrob_jax.torch_import import convert, layouts, loading
from flatrob_jax.training import builders
from flatrob_jax.training.state import TrainState, state_to_tree

# The experiment config an imported run of each dataset starts from (data source, splits,
# image size and the analysis settings come from it).
DATASET_CONFIGS = {
    "cifar10": "cifar10_resnet18",
    "cifar100": "cifar100_wrn40_2",
    "imagenet2012": "imagenet_resnet50",
}


def dataset_names() -> list:
    return sorted(DATASET_CONFIGS)


def build_config(arch: str, dataset: str, mean, std):
    """The run config of an imported model: the dataset's experiment config, with the ARCH's
    Flax model and the given normalization."""
    spec = layouts.get_arch(arch)
    if dataset not in DATASET_CONFIGS:
        raise ValueError(
            f"unknown dataset {dataset!r} for an imported model; valid choices: "
            f"{', '.join(dataset_names())}"
        )
    config = configuration.load_config(DATASET_CONFIGS[dataset])
    config.model.name = spec.model_name
    config.dataset.mean = tuple(float(m) for m in mean)
    config.dataset.std = tuple(float(s) for s in std)
    return config


def resolve_normalization(flag_mean, flag_std, from_checkpoint, channels: int) -> tuple:
    """``(mean, std, origin)``: the flags if given, else the checkpoint's normalization
    buffers, else the identity (inputs used as they are). Flags that contradict the
    checkpoint's buffers are an error."""
    if (flag_mean is None) != (flag_std is None):
        raise ValueError("give --mean and --std together (or neither)")
    if flag_mean is not None:
        mean, std = tuple(map(float, flag_mean)), tuple(map(float, flag_std))
        for name, values in (("mean", mean), ("std", std)):
            if len(values) != channels:
                raise ValueError(
                    f"--{name}={','.join(map(str, values))} has {len(values)} "
                    f"values; the dataset's images have {channels} channels"
                )
        if any(s <= 0 for s in std):
            raise ValueError(f"--std={','.join(map(str, std))}: every value must be > 0")
        if from_checkpoint is not None and not (
            np.allclose(mean, from_checkpoint[0], atol=1e-6)
            and np.allclose(std, from_checkpoint[1], atol=1e-6)
        ):
            raise ValueError(
                f"--mean/--std {mean}/{std} contradict the normalization buffers "
                f"stored in the checkpoint {from_checkpoint[0]}/{from_checkpoint[1]}"
            )
        return mean, std, "flags"
    if from_checkpoint is not None:
        mean, std = from_checkpoint
        if len(mean) == 1 and channels > 1:  # a scalar buffer: the same for every channel
            mean, std = mean * channels, std * channels
        if len(mean) != channels or len(std) != channels:
            raise ValueError(
                f"the checkpoint's normalization buffers {from_checkpoint} do not "
                f"have {channels} channels"
            )
        return tuple(mean), tuple(std), "checkpoint buffers"
    return (0.0,) * channels, (1.0,) * channels, "identity (inputs used as they are)"


def _num_params(tree) -> int:
    return int(sum(np.prod(np.shape(x)) for x in jax.tree.leaves(tree)))


def _check_workdir(workdir: str) -> None:
    if fileio.exists(workdir) and (not fileio.isdir(workdir) or fileio.listdir(workdir)):
        raise FileExistsError(
            f"workdir {workdir!r} exists and is not empty; an import writes a "
            f"new run: give a new directory"
        )


def prepare_import(
    arch: str, weights, dataset: str, *, mean=None, std=None, sha256: str | None = None
):
    """Check and convert everything, write nothing: ``(config, variables, provenance)``."""
    spec = layouts.get_arch(arch)
    if dataset not in DATASET_CONFIGS:
        raise ValueError(
            f"unknown dataset {dataset!r} for an imported model; valid choices: "
            f"{', '.join(dataset_names())}"
        )
    info = get_info(dataset)
    if isinstance(weights, (str, os.PathLike)):
        source = fileio.absolute(weights)
        digest = loading.verify_file(source, sha256)
    else:
        if sha256 is not None:
            raise ValueError("--sha256 checks a weights file; the weights given are in memory")
        source, digest = "<in-memory state_dict>", None
    prepared = convert.prepare(loading.read_state_dict(weights))
    mean, std, origin = resolve_normalization(
        mean, std, prepared.normalization, info.image_shape[-1]
    )
    config = build_config(arch, dataset, mean, std)
    model = builders.build_model(config, axis_name=None)
    template = convert.template_variables(model, tuple(config.dataset.image_size))
    variables, ignored = convert.to_flax(
        prepared.tensors,
        spec.layout,
        model,
        template,
        arch_label=f"{arch} with {info.num_classes} classes ({dataset})",
    )
    provenance = {
        "arch": arch,
        "layout": spec.layout.name,
        "layout_source": spec.layout.source,
        "model": spec.model_name,
        "dataset": dataset,
        "source": source,
        "sha256": digest,
        "zoo_entry": None,
        "torch_version": loading.torch_version(),
        "normalization": {"mean": list(mean), "std": list(std), "from": origin},
        "ignored_tensors": ignored,
        "notes": prepared.dropped,
        "num_parameters": _num_params(variables["params"]),
    }
    return config, variables, provenance


def _imported_state(config, variables: dict):
    """The TrainState ``load_for_eval`` restores into, holding the imported variables.

    Built as ``training.state.create_train_state`` builds it after ``model.init``, without
    running (and compiling) the init: its structure and shapes are checked against
    ``builders.initial_state`` traced abstractly."""
    model = builders.build_model(config, axis_name=None)
    tx, _ = builders.build_optimizer(config, total_steps=1, steps_per_epoch=1)
    params = jax.tree.map(jnp.asarray, variables["params"])
    batch_stats = jax.tree.map(jnp.asarray, variables.get("batch_stats", {}))
    state = TrainState.create(apply_fn=model.apply, params=params, batch_stats=batch_stats, tx=tx)
    expected = jax.eval_shape(lambda: state_to_tree(builders.initial_state(config, model)))
    got = jax.eval_shape(lambda: state_to_tree(state))
    same = jax.tree.structure(got) == jax.tree.structure(expected) and all(
        a.shape == b.shape and a.dtype == b.dtype
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected))
    )
    if not same:
        raise RuntimeError(
            "the imported state does not have the structure of "
            "training.builders.initial_state (a bug in the import)"
        )
    return state


def _write_run(directory: str, config, state, provenance: dict) -> None:
    """The run's files in ``directory``, ``summary.json`` (the run is finished) last."""
    configuration.save_run_config(directory, config)
    checkpointer = ckpt_lib.Checkpointer(directory, max_to_keep=1, async_save=False)
    try:
        checkpointer.save(0, state_to_tree(state), force=True)
    finally:
        checkpointer.close()
    fileio.atomic_write_text(
        fileio.join(directory, "provenance.json"), json.dumps(provenance, indent=2, sort_keys=True)
    )
    summary = {
        "imported": True,
        "steps": 0,
        "model": config.model.name,
        "dataset": config.dataset.name,
        "arch": provenance["arch"],
        "source": provenance["source"],
    }
    fileio.atomic_write_text(fileio.join(directory, "summary.json"), json.dumps(summary, indent=2))


def write_workdir(workdir: str, config, variables: dict, provenance: dict) -> str:
    """Write the run (config, checkpoint at step 0, provenance, summary): locally into a
    temporary sibling renamed into place when complete; on an object store (no rename)
    into ``workdir`` itself, summary.json last, removing what was written on an error."""
    workdir = fileio.absolute(workdir)
    _check_workdir(workdir)
    state = _imported_state(config, variables)
    if fileio.is_uri(workdir):
        try:
            _write_run(workdir, config, state, provenance)
        except BaseException:
            fileio.rmtree(workdir)  # it was empty before: only what this import wrote
            raise
        return workdir
    tmp = fileio.make_temp_dir(
        fileio.dirname(workdir), prefix=f".{fileio.basename(workdir)}.importing-"
    )
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a run directory is not
        _write_run(tmp, config, state, provenance)
        _check_workdir(workdir)  # still free (another process may have raced us)
        fileio.rename_dir(tmp, workdir)  # an empty workdir is replaced by the complete run
    except BaseException:
        fileio.rmtree(tmp)
        raise
    return workdir


def import_checkpoint(
    arch: str,
    weights,
    dataset: str,
    workdir: str,
    *,
    mean=None,
    std=None,
    sha256: str | None = None,
    zoo_entry: str | None = None,
) -> dict:
    """Import PyTorch ``weights`` (a ``.pt``/``.pth`` path or a state_dict) of architecture
    ``arch`` (see ``layouts.arch_names()``) trained on ``dataset`` into a new run directory
    ``workdir``; returns the provenance record (also in ``workdir/provenance.json``).

    ``mean``/``std``: the per-channel input normalization the checkpoint was trained with
    (the model then takes [0, 1] images); without them, the checkpoint's own normalization
    buffers if it has some, else none. ``sha256``: the expected checksum of the file.
    ``zoo_entry``: the zoo's name for the model, recorded in the provenance.
    """
    workdir = fileio.absolute(workdir)
    fileio.require_support(workdir, weights if isinstance(weights, (str, os.PathLike)) else None)
    _check_workdir(workdir)  # fail before the (possibly long) conversion
    config, variables, provenance = prepare_import(
        arch, weights, dataset, mean=mean, std=std, sha256=sha256
    )
    provenance["zoo_entry"] = zoo_entry
    provenance["imported_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"
    )
    write_workdir(workdir, config, variables, provenance)
    return provenance
