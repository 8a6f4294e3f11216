"""Loaders for the released corrupted test sets.

* CIFAR-10-C through TFDS ``cifar10_corrupted`` (split 'test') and ImageNet-C through TFDS
  ``imagenet2012_corrupted`` (split 'validation'), both with ``tfds.data_source`` (random
  access, no TensorFlow needed); one TFDS config per ``<corruption>_<severity>``.
* CIFAR-10-C / CIFAR-100-C as released on Zenodo: a directory with ``<corruption>.npy``
  (uint8 [5 * N, 32, 32, 3], severities 1..5 stacked in order, N = 10000) and ``labels.npy``,
  on local disk or in a bucket (``gs://...``, read through ``flatrob_jax.fileio``; only the
  rows of the requested severity are read).

Every loader returns ``(images float32 [n, H, W, C] in [0, 1], labels int32 [n])``, the
first ``num_examples`` examples (all when None). Corruption names are ours (``BENCHMARK``
/ ``EXTRA``); the TFDS spellings ('elastic', 'frosted_glass_blur' in cifar10_corrupted)
are translated here.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from flatrob_jax import fileio
from flatrob_jax.corruptions import severity as sev

TFDS_DATASETS = {"cifar10_corrupted": "test", "imagenet2012_corrupted": "validation"}
_TFDS_NAMES = {
    "cifar10_corrupted": {"elastic_transform": "elastic", "glass_blur": "frosted_glass_blur"}
}


def tfds_config(dataset: str, name: str, severity: int) -> str:
    """TFDS name ``dataset/config`` of one corruption and severity."""
    if dataset not in TFDS_DATASETS:
        raise ValueError(
            f"unknown corrupted TFDS data set {dataset!r}; valid: {sorted(TFDS_DATASETS)}"
        )
    sev.check_name(name)
    sev.check_severity(severity)
    return f"{dataset}/{_TFDS_NAMES.get(dataset, {}).get(name, name)}_{severity}"


def _to_arrays(images, labels):
    return np.asarray(images, np.float32) / 255.0, np.asarray(labels, np.int32)


def load_tfds(
    dataset: str,
    name: str,
    severity: int,
    *,
    num_examples: Optional[int] = None,
    data_dir: Optional[str] = None,
):
    """One corruption and severity of ``cifar10_corrupted`` or ``imagenet2012_corrupted``."""
    import tensorflow_datasets as tfds

    fileio.require_support(data_dir)  # tfds reads a gs:// data_dir through epath
    config = tfds_config(dataset, name, severity)
    # Never download here: an offline run fails fast, naming where it looked. (tfds reports
    # a set that is not prepared as DatasetNotFoundError, or, when it finds no dataset_info,
    # as a NotImplementedError about the file format.)
    try:
        source = tfds.data_source(
            config, split=TFDS_DATASETS[dataset], data_dir=data_dir, download=False
        )
    except (tfds.core.DatasetNotFoundError, NotImplementedError) as e:
        raise FileNotFoundError(
            f"{config} is not prepared in data_dir {data_dir or '(the tfds default)'!r}: "
            f"prepare it there with `tfds build {dataset} --data_dir=...` (it needs the "
            f"original files), then point analysis.corruptions.data_dir at it"
        ) from e
    n = len(source) if num_examples is None else min(num_examples, len(source))
    records = [source[i] for i in range(n)]
    images = (
        np.stack([np.asarray(r["image"]) for r in records]) if records else np.zeros((0, 1, 1, 3))
    )
    return _to_arrays(images, [r["label"] for r in records])


def load_npy_dir(directory: str, name: str, severity: int, *, num_examples: Optional[int] = None):
    """One corruption and severity from a CIFAR-10-C / CIFAR-100-C directory of .npy files."""
    sev.check_name(name)
    sev.check_severity(severity)
    if not fileio.isdir(directory):
        raise FileNotFoundError(f"corrupted data directory {directory!r} does not exist")
    path = fileio.join(directory, f"{name}.npy")
    labels_path = fileio.join(directory, "labels.npy")
    present = sorted(f for f in fileio.listdir(directory) if f.endswith(".npy"))
    for p in (path, labels_path):
        if fileio.basename(p) not in present:
            raise FileNotFoundError(f"{p} not found; the directory holds {present}")
    with fileio.open(path, "rb") as f, fileio.open(labels_path, "rb") as g:
        header = _npy_header(f, path)
        labels_header = _npy_header(g, labels_path)
        shape, labels_shape = header[0], labels_header[0]
        if len(shape) < 1 or shape[0] % 5 or shape[:1] != labels_shape[:1]:
            raise ValueError(
                f"{path}: expected 5 severities stacked ([5 * N, H, W, C]) and as "
                f"many labels, got images {shape}, labels {labels_shape}"
            )
        per = shape[0] // 5
        n = per if num_examples is None else min(num_examples, per)
        start = (severity - 1) * per
        images = _npy_rows(f, path, header, start, n)
        labels = _npy_rows(g, labels_path, labels_header, start, n)
    return _to_arrays(images, labels)


def _npy_header(f, path: str):
    """``(shape, dtype, data_offset)`` of the .npy file open in ``f``."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        readers = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
        if version not in readers:
            raise ValueError(f"unsupported .npy format version {version}")
        shape, fortran, dtype = readers[version](f)
    except ValueError as e:
        raise ValueError(f"{path} is not a .npy file this loader reads: {e}") from e
    if fortran or dtype.hasobject:
        raise ValueError(
            f"{path}: expected a C-ordered numeric array, got "
            f"fortran_order={fortran}, dtype {dtype}"
        )
    return shape, dtype, f.tell()


def _npy_rows(f, path: str, header, start: int, count: int) -> np.ndarray:
    """Rows ``start:start + count`` of the .npy file open in ``f`` (``header`` from
    :func:`_npy_header`): one seek and one read, so a bucket serves just those bytes."""
    shape, dtype, offset = header
    row = dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
    f.seek(offset + start * row)
    data = f.read(count * row)
    if len(data) != count * row:
        raise ValueError(
            f"{path}: truncated ({len(data)} bytes for rows {start}..."
            f"{start + count - 1} of shape {shape})"
        )
    return np.frombuffer(data, dtype).reshape((count, *shape[1:]))


def load_released(
    source: str,
    name: str,
    severity: int,
    *,
    num_examples: Optional[int] = None,
    data_dir: Optional[str] = None,
):
    """Dispatch: ``source`` is a TFDS name (``cifar10_corrupted``, ``imagenet2012_corrupted``)
    or ``'npy'`` (then ``data_dir`` is the directory of .npy files)."""
    if source == "npy":
        if not data_dir:
            raise ValueError(
                "source='npy' needs data_dir, the directory with <corruption>.npy and labels.npy"
            )
        return load_npy_dir(data_dir, name, severity, num_examples=num_examples)
    return load_tfds(source, name, severity, num_examples=num_examples, data_dir=data_dir)
