"""``corrupt(key, images, name, severity)``: the 19 common corruptions, batched and jittable.

Each corruption is a pair ``draw(key, image, c) -> noise`` (all of its randomness) and
``apply(image, noise, c) -> image`` (deterministic) for one float32 [H, W, C] image in
[0, 1] and its severity constants ``c`` (``severity.py``). ``corrupt`` draws every example's
noise from ``fold_in(key, i)`` (i = index in the batch plus ``index_offset``), so a result
does not depend on the batch size or on how a data set is split into batches.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from flatrob_jax.corruptions import blur, color, digital, jpeg, noise, spatter, weather
from flatrob_jax.corruptions import severity as sev
from flatrob_jax.execution import example_keys


def _no_noise(key, x, c):
    return {}


class Corruption(NamedTuple):
    draw: Callable
    apply: Callable
    rgb: bool  # mixes colour channels: 1-channel images go through grey RGB (see ``color``)


CORRUPTIONS = {
    "gaussian_noise": Corruption(noise.draw_gaussian, noise.apply_gaussian_noise, False),
    "shot_noise": Corruption(noise.draw_shot, noise.apply_shot_noise, False),
    "impulse_noise": Corruption(noise.draw_impulse, noise.apply_impulse_noise, False),
    "speckle_noise": Corruption(noise.draw_gaussian, noise.apply_speckle_noise, False),
    "defocus_blur": Corruption(_no_noise, blur.apply_defocus_blur, False),
    "gaussian_blur": Corruption(_no_noise, blur.apply_gaussian_blur, False),
    "glass_blur": Corruption(blur.draw_glass, blur.apply_glass_blur, False),
    "motion_blur": Corruption(blur.draw_motion, blur.apply_motion_blur, False),
    "zoom_blur": Corruption(_no_noise, blur.apply_zoom_blur, False),
    "snow": Corruption(weather.draw_snow, weather.apply_snow, True),
    "frost": Corruption(weather.draw_frost, None, True),  # apply depends on resolution
    "fog": Corruption(weather.draw_fog, weather.apply_fog, False),
    "spatter": Corruption(spatter.draw_spatter, spatter.apply_spatter, True),
    "brightness": Corruption(_no_noise, digital.apply_brightness, True),
    "contrast": Corruption(_no_noise, digital.apply_contrast, False),
    "saturate": Corruption(_no_noise, digital.apply_saturate, True),
    "elastic_transform": Corruption(digital.draw_elastic, digital.apply_elastic_transform, False),
    "pixelate": Corruption(_no_noise, digital.apply_pixelate, False),
    "jpeg_compression": Corruption(_no_noise, jpeg.apply_jpeg_compression, False),
}
assert set(CORRUPTIONS) == set(sev.ALL)


def resolve_resolution(height: int, width: int, resolution: Optional[str]) -> str:
    if resolution is None:
        return sev.default_resolution(height, width)
    sev.check_resolution(resolution)
    return resolution


def single_image_fns(
    name: str, severity: int, height: int, width: int, resolution: Optional[str] = None
):
    """(draw, apply, rgb) for one image of this size, with constants bound. For tests and
    for callers that want the noise (e.g. to feed a reference implementation)."""
    sev.check_name(name)
    sev.check_severity(severity)
    resolution = resolve_resolution(height, width, resolution)
    c = sev.constants(name, severity, resolution)
    if name == "elastic_transform":
        s = digital.elastic_scale(height, width, resolution)
        c = tuple(s * k for k in c)
    spec = CORRUPTIONS[name]
    apply = spec.apply
    if name == "frost":
        apply = functools.partial(weather.apply_frost, needle=weather.FROST_NEEDLE[resolution])
    return (lambda key, x: spec.draw(key, x, c)), (lambda x, nz: apply(x, nz, c)), spec.rgb


def corrupt_image(key, image, name: str, severity: int, resolution: Optional[str] = None):
    """One image [H, W, C] -> corrupted image, randomness from ``key``."""
    h, w, ch = image.shape
    draw, apply, rgb = single_image_fns(name, severity, h, w, resolution)
    x = image.astype(jnp.float32)
    if rgb and ch == 1:
        x3 = jnp.broadcast_to(x, (h, w, 3))
        return color.luma(apply(x3, draw(key, x3)))
    return apply(x, draw(key, x))


def _check_images(images, name):
    if images.ndim != 4:
        raise ValueError(f"images must be [B, H, W, C], got shape {images.shape}")
    _, h, w, ch = images.shape
    if ch not in (1, 3):
        if CORRUPTIONS[name].rgb:
            raise ValueError(f"{name!r} needs 1 or 3 channels, got C={ch}")
    if min(h, w) < 8:
        raise ValueError(f"images must be at least 8x8 pixels, got {h}x{w}")


def corrupt(
    key, images, name: str, severity: int, *, resolution: Optional[str] = None, index_offset=0
):
    """Corrupt a batch of float32 NHWC images in [0, 1].

    Args:
      key: a PRNG key; example i uses ``fold_in(key, index_offset + i)``.
      images: [B, H, W, C], C = 1 (see ``color`` for the grayscale rule) or 3.
      name: one of ``BENCHMARK`` or ``EXTRA`` (static).
      severity: 1..5 (static).
      resolution: ``'cifar'`` (make_cifar_c.py constants), ``'imagenet'``
        (make_imagenet_c.py / imagecorruptions constants) or None: CIFAR constants for
        images up to 64 pixels a side, ImageNet constants above.
      index_offset: global index of the first example (int or traced int), so that
        batches of one data set draw different noise.

    Returns the corrupted images, float32, same shape, in [0, 1]. Jittable with
    ``name``, ``severity`` and ``resolution`` static.
    """
    images = jnp.asarray(images)
    keys = example_keys(key, images.shape[0], index_offset)
    return corrupt_examples(keys, images, name, severity, resolution=resolution)


def corrupt_examples(keys, images, name: str, severity: int, *, resolution: Optional[str] = None):
    """:func:`corrupt` with the per-example keys given: image ``i`` draws from ``keys[i]``
    (the form the sharded evaluation uses, ``flatrob_jax.execution``)."""
    sev.check_name(name)
    sev.check_severity(severity)
    images = jnp.asarray(images)
    _check_images(images, name)
    fn = functools.partial(corrupt_image, name=name, severity=severity, resolution=resolution)
    return jax.vmap(fn)(keys, images).astype(jnp.float32)


corrupt_jit = jax.jit(corrupt, static_argnames=("name", "severity", "resolution"))
