"""The CIFAR default: random crop with zero padding plus a random horizontal flip."""
import jax
import jax.numpy as jnp


def random_crop(key: jax.Array, image: jax.Array, padding: int = 4) -> jax.Array:
    """Zero-pad by ``padding`` on each side, then crop back to H x W at a uniform offset
    (torchvision RandomCrop(size, padding) with fill 0)."""
    if padding == 0:
        return image
    h, w, c = image.shape
    padded = jnp.pad(image, ((padding, padding), (padding, padding), (0, 0)))
    ky, kx = jax.random.split(key)
    dy = jax.random.randint(ky, (), 0, 2 * padding + 1)
    dx = jax.random.randint(kx, (), 0, 2 * padding + 1)
    return jax.lax.dynamic_slice(padded, (dy, dx, 0), (h, w, c))


def random_flip(key: jax.Array, image: jax.Array) -> jax.Array:
    """Mirror left-right with probability 1/2."""
    return jnp.where(jax.random.bernoulli(key), image[:, ::-1, :], image)


def crop_flip(key: jax.Array, image: jax.Array, padding: int = 4, flip: bool = True) -> jax.Array:
    """One image: random crop with ``padding`` then (if ``flip``) a random horizontal flip."""
    k_crop, k_flip = jax.random.split(key)
    image = random_crop(k_crop, image, padding)
    if flip:
        image = random_flip(k_flip, image)
    return image
