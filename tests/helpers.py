"""Small shared test fixtures: tiny IDX datasets and configs that train in seconds."""

import gzip
import os
import struct

import numpy as np

from flatrob_jax.configuration import apply_overrides, load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_idx(path: str, array: np.ndarray) -> None:
    """Write a uint8 IDX file, gzipped (as Debian ships Fashion-MNIST)."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(
        ">" + "I" * array.ndim, *array.shape
    )
    with gzip.open(path + ".gz", "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def make_idx_dataset(directory: str, n_train: int = 256, n_test: int = 100, seed: int = 0):
    """A learnable fake Fashion-MNIST: class k has mean intensity 20 + 23k, plus noise."""
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    for split, n, prefix in (("train", n_train, "train"), ("test", n_test, "t10k")):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        noise = rng.integers(-15, 16, (n, 28, 28))
        images = np.clip(20 + 23 * labels[:, None, None].astype(int) + noise, 0, 255)
        images = images.astype(np.uint8)
        write_idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte"), images)
        write_idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte"), labels)
    return directory


def tiny_config(data_dir: str, **overrides):
    """The offline default shrunk to the tiny CNN on a fake IDX dataset."""
    config = load_config("fashion_mnist_cnn:smoke")
    base = {
        "dataset.data_dir": data_dir,
        "model.name": "cnn_tiny",
        "dataset.num_train_examples": None,
        "dataset.num_eval_examples": None,
        "train.batch_size": 32,
        "train.eval_batch_size": 64,
        "log_every_steps": 2,
    }
    base.update(overrides)
    return apply_overrides(config, base)
