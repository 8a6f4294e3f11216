"""Pillow's ``ImageEnhance`` ops (brightness, color, contrast, sharpness) on levels.

Each is ``Image.blend(degenerate, image, factor)``: ``out = trunc(clip(d + f * (x - d), 0, 255))``
in float32, as Pillow's C code does (it truncates, it does not round). The degenerate image:
  brightness  black;
  color       the image converted to "L" (``(19595 R + 38470 G + 7471 B + 2**15) >> 16``);
  contrast    a constant: the mean of the "L" image rounded half up;
  sharpness   the image under Pillow's SMOOTH 3x3 filter (1 1 1 / 1 5 1 / 1 1 1, /13) with the
              one-pixel border left as is.
Unlike dm-pix (brightness adds a delta, contrast uses per-channel means), these follow Pillow,
which is what torchvision's AutoAugment/RandAugment/AugMix run on PIL images.
"""

import jax
import jax.numpy as jnp


def rounded_product(small_integer, factor):
    """``float32(a * f)`` for |a| < 512 an integer and f float32, rounded once, as C computes it.

    XLA fuses ``a * f + b`` into a fused multiply-add, which skips the product's rounding and
    can move a result across an integer boundary that Pillow's truncation then exposes. Here f
    is split into two halves of at most 12 significant bits, so both partial products are exact
    and their single float32 sum is the correctly rounded product whether or not it is fused.
    """
    f = jnp.asarray(factor, jnp.float32)
    high = jax.lax.bitcast_convert_type(
        jax.lax.bitcast_convert_type(f, jnp.uint32) & jnp.uint32(0xFFFFF000), jnp.float32
    )
    low = f - high
    return small_integer * high + small_integer * low


def blend(degenerate: jnp.ndarray, levels: jnp.ndarray, factor) -> jnp.ndarray:
    """``Image.blend(degenerate, image, factor)`` on levels (factor may be any real: > 1
    extrapolates)."""
    return jnp.floor(
        jnp.clip(degenerate + rounded_product(levels - degenerate, factor), 0.0, 255.0)
    )


def grayscale(levels: jnp.ndarray) -> jnp.ndarray:
    """Pillow's RGB -> "L" conversion, [H, W, 1]; a 1-channel image is returned as is."""
    if levels.shape[-1] == 1:
        return levels
    rgb = levels.astype(jnp.int32)
    weighted = rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000
    return jnp.right_shift(weighted, 16).astype(jnp.float32)[..., None]


def contrast_mean(levels: jnp.ndarray) -> jnp.ndarray:
    """``int(ImageStat.Stat(image.convert("L")).mean[0] + 0.5)`` in exact integer arithmetic."""
    gray = grayscale(levels).astype(jnp.int32)
    n = gray.shape[0] * gray.shape[1]
    return ((2 * jnp.sum(gray) + n) // (2 * n)).astype(jnp.float32)


def smooth(levels: jnp.ndarray) -> jnp.ndarray:
    """``image.filter(ImageFilter.SMOOTH)``: the 3x3 kernel (1 1 1 / 1 5 1 / 1 1 1) / 13 in float32,
    summed in Pillow's order (row below, row, row above; +0.5, truncate); border pixels copied.
    Images smaller than 3x3 are returned unchanged, as Pillow does."""
    h, w, _ = levels.shape
    if h < 3 or w < 3:
        return levels
    one = jnp.float32(1.0) / jnp.float32(13.0)
    five = jnp.float32(5.0) / jnp.float32(13.0)

    def row_term(row, centre):
        left, mid, right = (
            rounded_product(v, k)
            for v, k in ((row[:, :-2], one), (row[:, 1:-1], centre), (row[:, 2:], one))
        )
        return (left + mid) + right

    below = row_term(levels[2:], one)
    middle = row_term(levels[1:-1], five)
    above = row_term(levels[:-2], one)
    inner = jnp.floor(jnp.clip(((0.5 + below) + middle) + above, 0.0, 255.0))
    return levels.at[1:-1, 1:-1].set(inner)


def brightness(levels, factor):
    """``ImageEnhance.Brightness(image).enhance(factor)``."""
    return blend(jnp.zeros_like(levels), levels, factor)


def color(levels, factor):
    """``ImageEnhance.Color(image).enhance(factor)`` (saturation); identity on 1-channel images."""
    return blend(jnp.broadcast_to(grayscale(levels), levels.shape), levels, factor)


def contrast(levels, factor):
    """``ImageEnhance.Contrast(image).enhance(factor)``."""
    return blend(jnp.full_like(levels, contrast_mean(levels)), levels, factor)


def sharpness(levels, factor):
    """``ImageEnhance.Sharpness(image).enhance(factor)``."""
    return blend(smooth(levels), levels, factor)


__all__ = [
    "blend",
    "brightness",
    "color",
    "contrast",
    "contrast_mean",
    "grayscale",
    "sharpness",
    "smooth",
]
