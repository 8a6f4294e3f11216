"""The CIFAR default: random crop with zero padding plus a random horizontal flip.

The padding and the flip are dm-pix's (``pix.pad_to_size``, ``pix.flip_left_right``); the
crop is ``lax.dynamic_slice`` at our offsets, as dm-pix's ``random_crop`` docstring advises
for a given offset. The randomness is ours, not ``pix.random_crop`` / ``random_flip_left_right``
(which draw from their own split keys): one uniform draw per image (``sampling.Uniforms``: one
Threefry call compiles much faster than one per decision), so the training stream is the one
every earlier run used.
"""

import dm_pix as pix
import jax
import jax.numpy as jnp

from flatrob_jax.augment import sampling


def _crop(image, padding: int, draws) -> jax.Array:
    if padding == 0:
        return image
    h, w, c = image.shape
    padded = pix.pad_to_size(image, h + 2 * padding, w + 2 * padding)  # zeros, centred
    dy = draws.integers((), 0, 2 * padding + 1)
    dx = draws.integers((), 0, 2 * padding + 1)
    return jax.lax.dynamic_slice(padded, (dy, dx, 0), (h, w, c))


def random_crop(key: jax.Array, image: jax.Array, padding: int = 4) -> jax.Array:
    """Zero-pad by ``padding`` on each side, then crop back to H x W at a uniform offset
    (torchvision RandomCrop(size, padding) with fill 0)."""
    return _crop(image, padding, sampling.Uniforms(key, 2))


def random_flip(key: jax.Array, image: jax.Array) -> jax.Array:
    """Mirror left-right with probability 1/2."""
    return jnp.where(sampling.Uniforms(key, 1).bernoulli(()), pix.flip_left_right(image), image)


def crop_flip(key: jax.Array, image: jax.Array, padding: int = 4, flip: bool = True) -> jax.Array:
    """One image: random crop with ``padding`` then (if ``flip``) a random horizontal flip."""
    draws = sampling.Uniforms(key, 3)
    image = _crop(image, padding, draws)
    if flip:
        image = jnp.where(draws.bernoulli(()), pix.flip_left_right(image), image)
    return image
