"""Data: sources (tfds data_source, local IDX files) and deterministic batch pipelines.

``build_source(dataset_config, split, train)`` reads ``config.dataset``; everything below
takes plain arguments.
"""

import numpy as np

from flatrob_jax import fileio
from flatrob_jax.data.catalog import CATALOG, DatasetInfo, get_info
from flatrob_jax.data.pipeline import EvalBatches, TrainBatches
from flatrob_jax.data.sources import (
    ArraySource,
    MissingDatasetError,
    TfdsImageSource,
    download_idx,
    idx_source,
    read_idx,
    tfds_array_source,
)

SOURCES = ("idx", "tfds")


def build_source(dataset_cfg, split: str, train: bool = False):
    """The random-access source for ``split`` of ``config.dataset``.

    ``dataset_cfg.num_train_examples`` / ``num_eval_examples`` (None: all) keep the first n
    examples (smoke runs and fast tests)."""
    info = get_info(dataset_cfg.name)
    if dataset_cfg.source not in SOURCES:
        raise ValueError(f"unknown data source {dataset_cfg.source!r}; valid: {', '.join(SOURCES)}")
    if dataset_cfg.source not in info.sources:
        raise ValueError(
            f"dataset {dataset_cfg.name!r} cannot be read from source "
            f"{dataset_cfg.source!r}; valid for it: {', '.join(info.sources)}"
        )
    field = "num_train_examples" if train else "num_eval_examples"
    limit = _example_limit(field, dataset_cfg[field])
    data_dir = dataset_cfg.data_dir or None
    fileio.require_support(data_dir)  # gs:// data needs flatrob_jax[gcp] (tfds reads via epath)
    # dataset.download: configs stored by runs made before the field existed lack it (False).
    download = bool(dataset_cfg.download) if "download" in dataset_cfg else False
    if info.name.startswith("imagenet2012"):
        split_str = split if limit is None else f"{split}[:{limit}]"
        return TfdsImageSource(
            dataset_cfg.name,
            split_str,
            data_dir,
            dataset_cfg.image_size[0],
            train=train,
            seed=0,
            download=download,
        )
    if dataset_cfg.source == "idx":
        source = idx_source(dataset_cfg.name, split, dataset_cfg.data_dir, download=download)
        if limit is not None:
            source = ArraySource(source.images[:limit], source.labels[:limit])
        return source
    return tfds_array_source(dataset_cfg.name, split, data_dir, limit, download=download)


def _example_limit(field: str, value) -> int | None:
    """None (all examples) or a positive count; anything else names the field."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"dataset.{field}={value!r}: expected None (all examples) or a "
            f"positive number of examples"
        )
    return value


def load_arrays(dataset_cfg, split: str, num_examples: int | None = None):
    """``(images float32 [N,H,W,C] in [0,1], labels int32 [N])`` of a split, for analysis."""
    source = build_source(dataset_cfg, split, train=False)
    n = len(source) if num_examples is None else min(num_examples, len(source))
    images, labels = source.gather(np.arange(n))
    return images.astype(np.float32) / 255.0, labels


__all__ = [
    "ArraySource",
    "CATALOG",
    "DatasetInfo",
    "EvalBatches",
    "MissingDatasetError",
    "TrainBatches",
    "TfdsImageSource",
    "build_source",
    "download_idx",
    "get_info",
    "idx_source",
    "load_arrays",
    "read_idx",
    "tfds_array_source",
]
