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
        "astronaut": _shrink(skimage.data.astronaut(), 40, 48),
        "chelsea": _shrink(skimage.data.chelsea(), 30, 45),
        "coffee": _shrink(skimage.data.coffee(), 32, 32),
        "camera": _shrink(skimage.data.camera()[..., None], 36, 36),
    }
    if os.path.exists(FASHION_MNIST):
        with gzip.open(FASHION_MNIST) as f:
            data = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)
        out["fashion_mnist"] = np.ascontiguousarray(data[7])
    return out


@functools.lru_cache(maxsize=None)
def edge_cases() -> dict:
    """Constant image, two-level image, one flat channel, full range gradient, tiny image."""
    rng = np.random.default_rng(0)
    two = np.where(rng.random((20, 24, 3)) < 0.3, 17, 200).astype(np.uint8)
    flat_channel = photos()["coffee"].copy()
    flat_channel[..., 1] = 77
    gradient = np.broadcast_to(np.arange(256, dtype=np.uint8).reshape(16, 16, 1), (16, 16, 3)).copy()
    return {
        "constant": np.full((12, 14, 3), 123, np.uint8),
        "two_level": two,
        "flat_channel": flat_channel,
        "gradient": gradient,
        "tiny": rng.integers(0, 256, (2, 5, 3), dtype=np.uint8),
    }


def all_images() -> dict:
    return {**photos(), **edge_cases()}


def to_pil(image: np.ndarray):
    from PIL import Image

    return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def from_pil(pil) -> np.ndarray:
    a = np.asarray(pil)
    return a[..., None] if a.ndim == 2 else a
