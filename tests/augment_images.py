"""Test images for the augmentation tests: real photographs (scikit-image's bundled samples,
Fashion-MNIST) and edge cases, all small uint8 HWC arrays."""

import functools
import gzip
import os

import numpy as np

FASHION_MNIST = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"


def _shrink(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Block-average down-sampling (keeps the photo's statistics, no resampling library needed)."""
    fy, fx = image.shape[0] // height, image.shape[1] // width
    crop = image[: height * fy, : width * fx].astype(np.float64)
    crop = crop.reshape(height, fy, width, fx, -1).mean(axis=(1, 3))
    return np.round(crop).astype(np.uint8)


@functools.lru_cache(maxsize=None)
def photos() -> dict:
    """name -> uint8 [H, W, C]: colour photos at non-square sizes, and a grey one."""
    import skimage.data

    out = {
        "astronaut": _shrink(skimage.data.astronaut(), 24, 32),
        "chelsea": _shrink(skimage.data.chelsea(), 24, 32),
        "coffee": _shrink(skimage.data.coffee(), 24, 32),
        "camera": _shrink(skimage.data.camera()[..., None], 28, 28),
    }
    if os.path.exists(FASHION_MNIST):
        with gzip.open(FASHION_MNIST) as f:
            data = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)
        out["fashion_mnist"] = np.ascontiguousarray(data[7])
    return out


@functools.lru_cache(maxsize=None)
def edge_cases() -> dict:
    """Constant image, two-level image, one flat channel, every level present, tiny image
    (all but the tiny one at the photos' 24 x 32 so they share compiled functions)."""
    rng = np.random.default_rng(0)
    two = np.where(rng.random((24, 32, 3)) < 0.3, 17, 200).astype(np.uint8)
    flat_channel = photos()["coffee"].copy()
    flat_channel[..., 1] = 77
    levels = np.arange(24 * 32) % 256
    gradient = (
        np.stack([levels, levels[::-1], (levels * 7) % 256], -1).reshape(24, 32, 3).astype(np.uint8)
    )
    return {
        "constant": np.full((24, 32, 3), 123, np.uint8),
        "two_level": two,
        "flat_channel": flat_channel,
        "gradient": gradient,
        "tiny": rng.integers(0, 256, (2, 5, 3), dtype=np.uint8),
    }


def all_images() -> dict:
    return {**photos(), **edge_cases()}


def by_shape() -> dict:
    """shape -> (names, uint8 [N, H, W, C]) grouping all_images() for batched test calls."""
    groups: dict = {}
    for name, image in sorted(all_images().items()):
        groups.setdefault(image.shape, []).append((name, image))
    return {
        shape: ([n for n, _ in items], np.stack([i for _, i in items]))
        for shape, items in groups.items()
    }


def to_pil(image: np.ndarray):
    from PIL import Image

    return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def from_pil(pil) -> np.ndarray:
    a = np.asarray(pil)
    return a[..., None] if a.ndim == 2 else a
