"""Severity constants of the common corruptions (Hendrycks & Dietterich, ICLR 2019).

Two tables, transcribed from the scripts that generated the released datasets
(github.com/hendrycks/robustness, ImageNet-C/create_c/):

* ``'cifar'``    -- ``make_cifar_c.py`` (CIFAR-10-C / CIFAR-100-C, 32x32 images);
* ``'imagenet'`` -- ``make_imagenet_c.py`` (ImageNet-C, 224x224 images); the
  ``imagecorruptions`` package uses the same numbers at any image size.

Constants are absolute pixel sizes, as in the scripts and in ``imagecorruptions`` (a blur
radius of 3 means 3 pixels whatever the image size). The one exception is
``elastic_transform``, whose constants both scripts express as fractions of the image side
(``IMSIZE * k`` with IMSIZE = 32 for CIFAR, ``244 * k`` for 224-pixel ImageNet images): we
store the fractions and multiply by the image side (``side`` for CIFAR,
``side * 244 / 224`` for ImageNet), so native sizes reproduce the scripts exactly.
"""

from __future__ import annotations

import numpy as np

RESOLUTIONS = ("cifar", "imagenet")

# The 15 benchmark corruptions in the order of Hendrycks & Dietterich (and of the AlexNet
# error table used for mCE), then the 4 extra ("validation") corruptions.
BENCHMARK = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL = BENCHMARK + EXTRA
SEVERITIES = (1, 2, 3, 4, 5)


def _zoom_factors(stop: float, step: float) -> tuple:
    # Same floating-point values as np.arange(1, stop, step) in the reference scripts.
    return tuple(float(z) for z in np.arange(1, stop, step))


CIFAR = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "speckle_noise": (0.06, 0.1, 0.12, 0.16, 0.2),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
    # (sigma, max_delta, iterations)
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
    # (disk radius, alias blur sigma)
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
    # (radius, sigma) of ImageMagick's motion blur
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
    "zoom_blur": (
        _zoom_factors(1.06, 0.01),
        _zoom_factors(1.11, 0.01),
        _zoom_factors(1.16, 0.01),
        _zoom_factors(1.21, 0.01),
        _zoom_factors(1.26, 0.01),
    ),
    # (fog strength, plasma wibble decay)
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
    # (image weight, frost weight)
    "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
    # (mean, std, zoom, threshold, blur radius, blur sigma, image weight)
    "snow": (
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ),
    # (mean, std, sigma, threshold, strength/mud sigma, mode 0=water 1=mud)
    "spatter": (
        (0.62, 0.1, 0.7, 0.7, 0.5, 0),
        (0.65, 0.1, 0.8, 0.7, 0.5, 0),
        (0.65, 0.3, 1, 0.69, 0.5, 0),
        (0.65, 0.1, 0.7, 0.69, 0.6, 1),
        (0.65, 0.1, 0.5, 0.68, 0.6, 1),
    ),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    # (saturation scale, saturation shift)
    "saturate": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
    "jpeg_compression": (80, 65, 58, 50, 40),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
    # (alpha, sigma, affine jitter) as fractions of the image side
    "elastic_transform": (
        (0, 0, 0.08),
        (0.05, 0.2, 0.07),
        (0.08, 0.06, 0.06),
        (0.1, 0.04, 0.05),
        (0.1, 0.03, 0.03),
    ),
}

IMAGENET = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
    "shot_noise": (60, 25, 12, 5, 3),
    "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
    "speckle_noise": (0.15, 0.2, 0.35, 0.45, 0.6),
    "gaussian_blur": (1, 2, 3, 4, 6),
    "glass_blur": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
    "defocus_blur": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
    "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
    "zoom_blur": (
        _zoom_factors(1.11, 0.01),
        _zoom_factors(1.16, 0.01),
        _zoom_factors(1.21, 0.02),
        _zoom_factors(1.26, 0.02),
        _zoom_factors(1.31, 0.03),
    ),
    "fog": ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)),
    "frost": ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),
    "snow": (
        (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
        (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
        (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
        (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
    ),
    "spatter": (
        (0.65, 0.3, 4, 0.69, 0.6, 0),
        (0.65, 0.3, 3, 0.68, 0.6, 0),
        (0.65, 0.3, 2, 0.68, 0.5, 0),
        (0.65, 0.3, 1, 0.65, 1.5, 1),
        (0.67, 0.4, 1, 0.65, 1.5, 1),
    ),
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    "saturate": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)),
    "jpeg_compression": (25, 18, 15, 10, 7),
    "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
    "elastic_transform": (
        (2, 0.7, 0.1),
        (2, 0.08, 0.2),
        (0.05, 0.01, 0.02),
        (0.07, 0.01, 0.02),
        (0.12, 0.01, 0.02),
    ),
}

TABLES = {"cifar": CIFAR, "imagenet": IMAGENET}


def check_name(name: str) -> None:
    if name not in ALL:
        raise ValueError(
            f"unknown corruption {name!r}; valid names are the 15 benchmark corruptions "
            f"{', '.join(BENCHMARK)} and the 4 extra ones {', '.join(EXTRA)}"
        )


def check_severity(severity) -> None:
    if (
        isinstance(severity, bool)
        or not isinstance(severity, (int, np.integer))
        or severity not in SEVERITIES
    ):
        raise ValueError(
            f"severity must be an integer in 1..5 (one of {SEVERITIES}), got {severity!r}"
        )


def check_resolution(resolution: str) -> None:
    if resolution not in RESOLUTIONS:
        raise ValueError(
            f"unknown resolution {resolution!r}; valid: {RESOLUTIONS} "
            "(or None to pick from image size)"
        )


def default_resolution(height: int, width: int) -> str:
    """CIFAR constants for images up to 64 pixels a side (CIFAR, Fashion-MNIST, SVHN,
    Tiny-ImageNet at 64), ImageNet constants for anything larger."""
    return "cifar" if max(height, width) <= 64 else "imagenet"


def constants(name: str, severity: int, resolution: str):
    """The constant(s) of corruption ``name`` at ``severity`` (1..5) for ``resolution``."""
    check_name(name)
    check_severity(severity)
    check_resolution(resolution)
    return TABLES[resolution][name][severity - 1]
