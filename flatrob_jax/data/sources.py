"""Random-access sources of (uint8 image HWC, int label) examples.

- IDX files (Fashion-MNIST / MNIST as Debian's dataset-fashion-mnist installs them),
- tfds through ``tfds.data_source`` (ArrayRecord, no TensorFlow needed).

Small datasets are read fully into memory as uint8 arrays (``ArraySource``); ImageNet-sized
ones stay random-access (``TfdsSource``) and are decoded/resized on the host per batch.
The data_dir may be a gs:// URI: IDX files through ``flatrob_jax.fileio``, tfds through epath
and ArrayRecord's own Cloud Storage reader.
"""

import gzip
import hashlib
import io
import struct
import urllib.request

import numpy as np

from flatrob_jax import fileio
from flatrob_jax.data.catalog import get_info

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# Where ``download=True`` fetches IDX files from: mirrors tried in order (the first is the one
# tfds's fashion_mnist builder uses), and the SHA-256 of each file's *uncompressed* bytes, so
# any mirror's gzip of the same data passes (measured on Debian's dataset-fashion-mnist).
IDX_DOWNLOADS = {
    "fashion_mnist": {
        "mirrors": (
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        "sha256": {
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",  # noqa: E501
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",  # noqa: E501
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",  # noqa: E501
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",  # noqa: E501
        },
    },
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
    if fileio.exists(path):
        return io.BytesIO(fileio.read_bytes(path))
    if fileio.exists(path + ".gz"):
        return io.BytesIO(gzip.decompress(fileio.read_bytes(path + ".gz")))
    raise FileNotFoundError(path)


def read_idx(path: str) -> np.ndarray:
    """Read an IDX file (optionally gzipped, ``path`` without the .gz): magic, dims, data."""
    with _open_maybe_gz(path) as f:
        zero, dtype_code, ndim = struct.unpack(">HBB", f.read(4))
        if zero != 0 or dtype_code != 0x08:
            raise ValueError(
                f"{path}: not an unsigned-byte IDX file (header {zero}, {dtype_code:#x})"
            )
        dims = struct.unpack(">" + "I" * ndim, f.read(4 * ndim))
        data = np.frombuffer(f.read(), dtype=np.uint8)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: truncated IDX file ({data.size} bytes for dims {dims})")
    return data.reshape(dims)


def _sha256_uncompressed(data: bytes) -> str:
    return hashlib.sha256(gzip.decompress(data)).hexdigest()


def download_idx(name: str, data_dir: str, files=None) -> list:
    """Download ``name``'s IDX files (``files``: default all four) into ``data_dir`` as
    ``<file>.gz``, trying each mirror of :data:`IDX_DOWNLOADS` in turn and checking the
    SHA-256 of the uncompressed bytes; a file is written (atomically, ``fileio``) only once it
    checks out, so an interrupted download leaves nothing half-written. ``data_dir`` may be a
    gs:// URI. Returns the paths written."""
    if name not in IDX_DOWNLOADS:
        raise ValueError(
            f"no IDX download for dataset {name!r}; available for: "
            f"{', '.join(IDX_DOWNLOADS)} (use dataset.source='tfds' for others)"
        )
    spec = IDX_DOWNLOADS[name]
    fileio.makedirs(data_dir)
    written = []
    for file in files or spec["sha256"]:
        target = fileio.join(data_dir, file + ".gz")
        errors = []
        for mirror in spec["mirrors"]:
            url = mirror + file + ".gz"
            try:
                with urllib.request.urlopen(url, timeout=60) as r:
                    data = r.read()  # in memory (at most ~30 MB) until it checks out
                got = _sha256_uncompressed(data)
                if got != spec["sha256"][file]:
                    raise ValueError(
                        f"SHA-256 of the uncompressed data is {got}, expected "
                        f"{spec['sha256'][file]}"
                    )
                fileio.atomic_write_bytes(target, data)
                written.append(target)
                break
            except (OSError, ValueError, EOFError) as e:  # URLError is an OSError
                errors.append(f"{url}: {type(e).__name__}: {e}")
        else:
            raise MissingDatasetError(
                f"could not download {file}.gz of dataset {name!r} into {data_dir!r}; tried: "
                + "; ".join(errors)
            )
    return written


def idx_source(name: str, split: str, data_dir: str, download: bool = False) -> ArraySource:
    """The IDX files of ``split`` in ``data_dir`` (gzipped or not); with ``download`` missing
    files are fetched first (:func:`download_idx`), else a missing file raises
    :class:`MissingDatasetError` naming the path and how to get the data."""
    info = get_info(name)
    if split not in _IDX_FILES:
        raise ValueError(f"unknown split {split!r} for IDX files; valid: {', '.join(_IDX_FILES)}")
    image_file, label_file = (fileio.join(data_dir, f) for f in _IDX_FILES[split])
    if download:
        missing = [
            fileio.basename(p)
            for p in (image_file, label_file)
            if not (fileio.exists(p) or fileio.exists(p + ".gz"))
        ]
        if missing:
            download_idx(name, data_dir, missing)
    try:
        images = read_idx(image_file)
        labels = read_idx(label_file)
    except FileNotFoundError as e:
        how = info.how_to_get
        if name in IDX_DOWNLOADS:
            how += "; or, where there is internet, set dataset.download=True"
        raise MissingDatasetError(
            f"dataset {name!r} split {split!r}: {e.args[0]}[.gz] not found in data_dir "
            f"{data_dir!r}. To get it: {how}"
        ) from e
    return ArraySource(images[..., None], labels)


def _tfds_split(split: str, num_examples: int | None) -> str:
    return split if num_examples is None or "[" in split else f"{split}[:{num_examples}]"


def tfds_random_access(name: str, split: str, data_dir: str | None, download: bool = False):
    """``tfds.data_source`` with a clear error when the data is not prepared.

    ``download=True`` lets tfds download and prepare it first (ArrayRecord files, what
    ``data_source`` reads; needs internet, and for most datasets TensorFlow, as in Colab);
    a failure then says the download failed rather than that the data is missing."""
    import tensorflow_datasets as tfds

    info = get_info(name)
    try:
        # data_source asks its builder for ArrayRecord files (what it reads) itself.
        return tfds.data_source(name, split=split, data_dir=data_dir, download=download)
    except Exception as e:  # tfds raises several types for "not prepared"
        if download:
            raise MissingDatasetError(
                f"dataset {name!r} split {split!r}: tfds could not download and prepare it in "
                f"data_dir {data_dir!r} ({type(e).__name__}: {str(e)[:300]}). "
                f"Otherwise: {info.how_to_get}"
            ) from e
        raise MissingDatasetError(
            f"dataset {name!r} split {split!r} is not prepared in data_dir {data_dir!r} "
            f"({type(e).__name__}: {str(e)[:300]}). To get it: {info.how_to_get}; or, where "
            f"there is internet, set dataset.download=True"
        ) from e


def tfds_array_source(
    name: str,
    split: str,
    data_dir: str | None,
    num_examples: int | None = None,
    download: bool = False,
) -> ArraySource:
    """Read a small tfds dataset (CIFAR, Fashion-MNIST, CIFAR-10-C) fully into memory."""
    source = tfds_random_access(name, _tfds_split(split, num_examples), data_dir, download)
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

    def __init__(
        self,
        name,
        split,
        data_dir,
        image_size: int,
        train: bool,
        seed: int = 0,
        download: bool = False,
    ):
        self.source = tfds_random_access(name, split, data_dir, download)
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
                crop = image[top : top + ch, left : left + cw]
                im = Image.fromarray(crop).convert("RGB")
                return np.asarray(im.resize((self.image_size,) * 2, Image.BICUBIC), np.uint8)
        return self._resize_center(image)

    def gather(self, indices: np.ndarray):
        records = [self.source[int(i)] for i in indices]
        if self.train:
            images = [
                self._random_resized_crop(np.asarray(r["image"]), int(i))
                for r, i in zip(records, indices)
            ]
        else:
            images = [self._resize_center(np.asarray(r["image"])) for r in records]
        return np.stack(images), np.asarray([r["label"] for r in records], np.int32)
