"""Common corruptions (Hendrycks & Dietterich, ICLR 2019) in JAX: the 15 benchmark and 4
extra corruptions at 5 severities, for CIFAR- and ImageNet-sized images, plus loaders for
the released -C data sets and corruption-error metrics (CE, mCE, relative mCE).

``corrupt(key, images[B, H, W, C], name, severity, *, resolution=None)`` is jittable
(name, severity, resolution static), batched, float32 NHWC in [0, 1]; example i draws its
noise from ``fold_in(key, i)``. Nothing here calls ImageMagick, OpenCV or PIL: motion
blur, zoom, elastic, JPEG (DCT, quantisation tables, 4:2:0 chroma), glass blur, snow,
spatter and the fog plasma fractal are written in JAX following the reference code
(hendrycks/robustness ImageNet-C/create_c/make_{cifar,imagenet}_c.py and
imagecorruptions 1.1.2).

Frost: the reference blends crops of frost photographs that cannot be redistributed here.
We synthesise a frost texture per example instead (needle crystals in 6 directions grown
from random seeds, plus a plasma-fractal haze, coloured with the per-channel mean and
spread measured on the reference photographs); see ``weather.py``. Frost error is therefore
comparable in kind, not identical in value, to the released sets' frost.

Grayscale (C = 1): colour-mixing corruptions (brightness, saturate, snow, frost, spatter)
treat the image as grey RGB and return BT.601 luma; all others act on the one channel;
JPEG encodes a grayscale JPEG. See ``color.py``.
"""

from flatrob_jax.corruptions.corrupt import corrupt, corrupt_image, corrupt_jit, single_image_fns
from flatrob_jax.corruptions.severity import ALL, BENCHMARK, EXTRA, RESOLUTIONS, SEVERITIES

__all__ = [
    "corrupt",
    "corrupt_image",
    "corrupt_jit",
    "single_image_fns",
    "ALL",
    "BENCHMARK",
    "EXTRA",
    "RESOLUTIONS",
    "SEVERITIES",
]
