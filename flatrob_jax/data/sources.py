"""Random-access sources of (uint8 image HWC, int label) examples.

- IDX files (Fashion-MNIST / MNIST as Debian's dataset-fashion-mnist installs them),
- tfds through ``tfds.data_source`` (ArrayRecord, no TensorFlow needed).

Small datasets are read fully into memory as uint8 arrays (``ArraySource``); ImageNet-sized
ones stay random-access (``TfdsSource``) and are decoded/resized on the host per batch.
"""
import gzip
import os
import struct

import numpy as np

from flatrob_jax.data.catalog import get_info

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class MissingDatasetError(FileNotFoundError):
    """The dataset is not where the config says; the message says how to get it."""


class ArraySource:
    """All examples in memory: ``images`` uint8 [N,H,W,C], ``labels`` int32 [N]."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        if images.ndim != 4 or images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 [N,H,W,C], got {images.dtype} {images.shape}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels shape {labels.shape} does not match {images.shape[0]} images")
        self.images = images
        self.labels = labels.astype(np.int32)

    def __len__(self):
        return self.images.shape[0]

    def gather(self, indices: np.ndarray):
        return self.images[indices], self.labels[indices]


def _open_maybe_gz(path: str):
    if os.path.exists(path):
        return open(path, "rb")
    if os.path.exists(path + ".gz"):
        return gzip.open(path + ".gz", "rb")
    raise FileNotFoundError(path)


def read_idx(path: str) -> np.ndarray:
    """Read an IDX file (optionally gzipped, ``path`` without the .gz): magic, dims, data."""
    with _open_maybe_gz(path) as f:
        zero, dtype_code, ndim = struct.unpack(">HBB", f.read(4))
        if zero != 0 or dtype_code != 0x08:
            raise ValueError(f"{path}: not an unsigned-byte IDX file "
                             f"(header {zero}, {dtype_code:#x})")
        dims = struct.unpack(">" + "I" * ndim, f.read(4 * ndim))
        data = np.frombuffer(f.read(), dtype=np.uint8)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: truncated IDX file ({data.size} bytes for dims {dims})")
    return data.reshape(dims)


def idx_source(name: str, split: str, data_dir: str) -> ArraySource:
    info = get_info(name)
    if split not in _IDX_FILES:
        raise ValueError(f"unknown split {split!r} for IDX files; valid: {', '.join(_IDX_FILES)}")
    image_file, label_file = (os.path.join(data_dir, f) for f in _IDX_FILES[split])
    try:
        images = read_idx(image_file)
        labels = read_idx(label_file)
    except FileNotFoundError as e:
        raise MissingDatasetError(
            f"dataset {name!r} split {split!r}: {e.args[0]}[.gz] not found in data_dir "
            f"{data_dir!r}. To get it: {info.how_to_get}") from e
    return ArraySource(images[..., None], labels)


def _tfds_split(split: str, num_examples: int | None) -> str:
    return split if num_examples is None or "[" in split else f"{split}[:{num_examples}]"


def tfds_random_access(name: str, split: str, data_dir: str | None):
    """``tfds.data_source`` with a clear error when the data is not prepared."""
    import tensorflow_datasets as tfds

    info = get_info(name)
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as e:  # tfds raises several types for "not prepared"
        raise MissingDatasetError(
            f"dataset {name!r} split {split!r} is not prepared in data_dir {data_dir!r} "
            f"({type(e).__name__}: {str(e)[:300]}). To get it: {info.how_to_get}") from e


def tfds_array_source(name: str, split: str, data_dir: str | None,
                      num_examples: int | None = None) -> ArraySource:
    """Read a small tfds dataset (CIFAR, Fashion-MNIST, CIFAR-10-C) fully into memory."""
    source = tfds_random_access(name, _tfds_split(split, num_examples), data_dir)
    n = len(source) if num_examples is None else min(len(source), num_examples)
    try:  # one batched read (ArrayRecord); tfds's mock sources only support single reads
        records = source.__getitems__(list(range(n)))
    except (AttributeError, TypeError):
        records = [source[i] for i in range(n)]
    images = np.stack([np.asarray(r["image"], np.uint8) for r in records])
    labels = np.asarray([r["label"] for r in records], np.int32)
    if images.ndim == 3:
        images = images[..., None]
    return ArraySource(images, labels)


class TfdsImageSource:
    """Random-access ImageNet-style source: decoded JPEGs of any size, resized on the host to
    ``image_size`` (shorter side to size/0.875, then a center crop; the standard eval
    preprocessing; the training random-resized-crop happens in the same place)."""

    def __init__(self, name, split, data_dir, image_size: int, train: bool, seed: int = 0):
        self.source = tfds_random_access(name, split, data_dir)
        self.image_size = image_size
        self.train = train
        self.seed = seed

    def __len__(self):
        return len(self.source)

    def _resize_center(self, image: np.ndarray) -> np.ndarray:
        from PIL import Image

        size = self.image_size
        h, w = image.shape[:2]
        scale = size / 0.875 / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        im = Image.fromarray(image.squeeze() if image.shape[-1] == 1 else image)
        im = im.convert("RGB").resize((nw, nh), Image.BICUBIC)
        top, left = (nh - size) // 2, (nw - size) // 2
        return np.asarray(im.crop((left, top, left + size, top + size)), np.uint8)

    def _random_resized_crop(self, image: np.ndarray, index: int) -> np.ndarray:
        """Inception-style crop: area in [0.08, 1], aspect ratio in [3/4, 4/3], 10 tries, then
        a center crop (torchvision RandomResizedCrop), seeded by (seed, index)."""
        from PIL import Image

        rng = np.random.default_rng([self.seed, index])
        h, w = image.shape[:2]
        for _ in range(10):
            area = h * w * rng.uniform(0.08, 1.0)
            ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
            cw, ch = int(round(np.sqrt(area * ratio))), int(round(np.sqrt(area / ratio)))
            if 0 < cw <= w and 0 < ch <= h:
                top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
                crop = image[top:top + ch, left:left + cw]
                im = Image.fromarray(crop).convert("RGB")
                return np.asarray(im.resize((self.image_size,) * 2, Image.BICUBIC), np.uint8)
        return self._resize_center(image)

    def gather(self, indices: np.ndarray):
        records = [self.source[int(i)] for i in indices]
        if self.train:
            images = [self._random_resized_crop(np.asarray(r["image"]), int(i))
                      for r, i in zip(records, indices)]
        else:
            images = [self._resize_center(np.asarray(r["image"])) for r in records]
        return np.stack(images), np.asarray([r["label"] for r in records], np.int32)
