"""Single-image ops: float32 [H, W, C] images in [0, 1] in and out, jittable, Pillow semantics.

Each op quantizes its input to uint8 levels (``round(x * 255)``), computes what Pillow computes
on that uint8 image, and returns levels / 255, so ``op(x) * 255`` equals Pillow's output
exactly for the lookup-table ops (posterize, solarize, invert, autocontrast, equalize) and the
enhance ops, and to within float32-vs-double rounding for the resampling ops. Which Pillow
function each op reproduces, and torchvision's convention for its magnitude, is in its docstring.
Magnitudes may be traced values: changing them does not retrace.
"""

import dm_pix as pix
import jax.numpy as jnp

from flatrob_jax.augment import enhance, geometry, lut
from flatrob_jax.augment.levels import check_image, from_levels, to_levels


def _levelwise(fn):
    def op(image, *args, **kw):
        check_image(image)
        return from_levels(fn(to_levels(image), *args, **kw))

    op.__name__ = fn.__name__
    return op


def posterize(image, bits):
    """``ImageOps.posterize(img, bits)``: keep the ``bits`` (0..8) most significant bits."""
    check_image(image)
    x = to_levels(image)
    return from_levels(lut.apply_lut(x, lut.posterize_lut(bits, x.shape[-1])))


def solarize(image, threshold):
    """``ImageOps.solarize(img, threshold * 255)``: invert pixels at or above ``threshold``
    (given in [0, 1] units; pass ``t / 255`` for Pillow's threshold t).

    ``pix.solarize`` on the quantized image: ``l / 255 < t`` in float32 is Pillow's
    ``l < t * 255`` for every level l and every t = k / 255 (both sides are k / 255 correctly
    rounded when l = k) and for fractional Pillow thresholds such as torchvision's 226.67.
    Its ``1 - x`` is re-quantized so the result is exactly ``levels / 255``, as every op's."""
    check_image(image)
    return from_levels(to_levels(pix.solarize(from_levels(to_levels(image)), threshold)))


def invert(image):
    """``ImageOps.invert``: 255 - level."""
    check_image(image)
    x = to_levels(image)
    return from_levels(lut.apply_lut(x, lut.invert_lut(x.shape[-1])))


def autocontrast(image):
    """``ImageOps.autocontrast(img)`` (per channel, cutoff 0), bit-exact."""
    check_image(image)
    x = to_levels(image)
    return from_levels(lut.apply_lut(x, lut.autocontrast_lut(x)))


def equalize(image):
    """``ImageOps.equalize(img)`` (per channel), bit-exact."""
    check_image(image)
    x = to_levels(image)
    return from_levels(lut.apply_lut(x, lut.equalize_lut(x)))


def brightness(image, factor):
    """``ImageEnhance.Brightness(img).enhance(factor)``: multiplies (dm-pix adds)."""
    return _levelwise(enhance.brightness)(image, factor)


def color(image, factor):
    """``ImageEnhance.Color(img).enhance(factor)``: saturation, blending with Pillow's "L" image."""
    return _levelwise(enhance.color)(image, factor)


def contrast(image, factor):
    """``ImageEnhance.Contrast(img).enhance(factor)``: blends with the mean of the *grey* image
    (dm-pix uses per-channel means)."""
    return _levelwise(enhance.contrast)(image, factor)


def sharpness(image, factor):
    """``ImageEnhance.Sharpness(img).enhance(factor)``: blends with Pillow's SMOOTH filter
    (border kept; dm-pix pads with zeros)."""
    return _levelwise(enhance.sharpness)(image, factor)


def affine(image, matrix, interpolation="nearest", fill=0.0):
    """``img.transform(img.size, Image.AFFINE, matrix, resample)``; ``fill`` in [0, 1]."""
    check_image(image)
    return from_levels(geometry.warp(to_levels(image), matrix, interpolation, to_levels(fill)))


def rotate(image, degrees, interpolation="nearest", fill=0.0):
    """``img.rotate(degrees, resample)``: counter-clockwise about the centre, same size."""
    h, w, _ = image.shape
    return affine(image, geometry.rotate_matrix(degrees, h, w), interpolation, fill)


def shear_x(image, factor, interpolation="nearest", fill=0.0):
    """torchvision's ShearX on PIL: ``transform(AFFINE, (1, factor, 0, 0, 1, 0))``."""
    return affine(image, geometry.shear_x_matrix(factor), interpolation, fill)


def shear_y(image, factor, interpolation="nearest", fill=0.0):
    """torchvision's ShearY on PIL: ``transform(AFFINE, (1, 0, 0, factor, 1, 0))``."""
    return affine(image, geometry.shear_y_matrix(factor), interpolation, fill)


def translate_x(image, pixels, interpolation="nearest", fill=0.0):
    """torchvision's TranslateX on PIL: content moves right by ``pixels`` (torchvision's
    policies pass ``int(magnitude)``; a fractional shift here is resampled)."""
    return affine(image, geometry.translate_matrix(pixels, 0.0), interpolation, fill)


def translate_y(image, pixels, interpolation="nearest", fill=0.0):
    """torchvision's TranslateY on PIL: content moves down by ``pixels``."""
    return affine(image, geometry.translate_matrix(0.0, pixels), interpolation, fill)


def cutout(image, center_y, center_x, size, fill=0.0):
    """Cutout (DeVries & Taylor 2017): set the ``size`` x ``size`` square with rows
    ``[cy - size // 2, cy + size // 2)`` (same for columns), clipped to the image, to ``fill``.
    No quantization: works on any float image."""
    check_image(image)
    h, w, _ = image.shape
    half = jnp.asarray(size, jnp.int32) // 2
    rows = jnp.arange(h)[:, None]
    cols = jnp.arange(w)[None, :]
    cy = jnp.asarray(center_y, jnp.int32)
    cx = jnp.asarray(center_x, jnp.int32)
    inside = (rows >= cy - half) & (rows < cy + half) & (cols >= cx - half) & (cols < cx + half)
    return jnp.where(inside[..., None], jnp.asarray(fill, image.dtype), image)


__all__ = [
    "affine",
    "autocontrast",
    "brightness",
    "color",
    "contrast",
    "cutout",
    "equalize",
    "invert",
    "posterize",
    "rotate",
    "sharpness",
    "shear_x",
    "shear_y",
    "solarize",
    "translate_x",
    "translate_y",
]
