"""The library behind ``python -m flatrob_jax.import_torch``: a file or a zoo entry into a run.

``import_run`` takes the command's arguments, checks that they name exactly one source (a zoo
entry, or an architecture + weights file + dataset) and imports it; ``summary`` is the line the
command prints.
"""

from __future__ import annotations

from flatrob_jax.torch_import import zoo
from flatrob_jax.torch_import.workdir import import_checkpoint

FILE_ARGS = ("arch", "weights", "dataset", "mean", "std", "sha256", "zoo_entry")


class ArgumentError(ValueError):
    """The arguments do not name one source, or a value cannot be read (not a file error)."""


def parse_floats(name: str, values) -> list | None:
    """``['0.5', '0.25']`` -> ``[0.5, 0.25]`` (None stays None); a clear error otherwise."""
    try:
        return None if values is None else [float(v) for v in values]
    except ValueError as e:
        raise ArgumentError(f"--{name}={','.join(values)}: expected numbers") from e


def import_run(workdir: str, *, zoo_name=None, zoo_cache=None, **file_args) -> dict:
    """Import the zoo entry ``zoo_name`` (fetched into ``zoo_cache``), or the file described
    by ``file_args`` (``FILE_ARGS``: arch, weights, dataset required), into the new run
    directory ``workdir``; returns the provenance record."""
    unknown = sorted(set(file_args) - set(FILE_ARGS))
    if unknown:
        raise TypeError(f"unknown arguments {unknown}; valid: {FILE_ARGS}")
    given = {k: v for k, v in file_args.items() if v is not None}
    if zoo_name is not None:
        if given:
            raise ArgumentError(
                f"--zoo takes its file, arch and dataset from the entry; also given: "
                f"{[f'--{k}' for k in given]}"
            )
        try:
            zoo.get(zoo_name)
        except KeyError as e:
            raise ArgumentError(e.args[0]) from e
        return zoo.import_entry(zoo_name, workdir, cache_dir=zoo_cache)
    missing = [f"--{k}" for k in ("arch", "weights", "dataset") if k not in given]
    if missing:
        raise ArgumentError(f"give --zoo NAME, or all of --arch, --weights, --dataset: {missing}")
    return import_checkpoint(
        given["arch"],
        given["weights"],
        given["dataset"],
        workdir,
        mean=parse_floats("mean", given.get("mean")),
        std=parse_floats("std", given.get("std")),
        sha256=given.get("sha256"),
        zoo_entry=given.get("zoo_entry"),
    )


def summary(record: dict, workdir: str) -> str:
    return (
        f"imported {record['arch']} ({record['num_parameters']:,} parameters, sha256 "
        f"{record['sha256']}) into {workdir}; normalization from "
        f"{record['normalization']['from']}"
    )
