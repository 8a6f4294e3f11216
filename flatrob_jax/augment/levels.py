"""Conversion between float images in [0, 1] and uint8 "levels".

Pillow works on uint8 images; to behave like Pillow the ops in this package work on *levels*:
float32 arrays holding the integers 0..255 (``round(x * 255)``). Keeping them in float32 avoids
dtype juggling inside jitted code while every value stays an exact integer.
"""

import jax.numpy as jnp

MAX_LEVEL = 255.0


def to_levels(image: jnp.ndarray) -> jnp.ndarray:
    """[0, 1] float image -> float32 levels in {0, ..., 255} (round half to even, then clip).

    This is the quantization ``PIL.Image.fromarray(np.round(x * 255).astype(np.uint8))`` does.
    """
    return jnp.clip(jnp.round(jnp.asarray(image, jnp.float32) * MAX_LEVEL), 0.0, MAX_LEVEL)


def from_levels(levels: jnp.ndarray) -> jnp.ndarray:
    """float32 levels in {0, ..., 255} -> float image in [0, 1]."""
    return levels / MAX_LEVEL


def check_image(image, name: str = "image") -> None:
    """Raise a clear error unless ``image`` is one HWC image with 1 or 3 channels."""
    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(
            f"{name} must be one image of shape [H, W, C] with C in (1, 3); got shape {image.shape}"
        )
