"""Shared inputs and cached corruption outputs for the corruption tests (no tests here).

Compilation dominates the cost of these tests, so every (corruption, image setting) is
compiled once, as ONE jitted function that returns all requested severities together
with the noise each example drew; shape/range, severity-order, peer and JPEG tests in
test_corruptions.py and test_corruptions_peers.py all read the same cached outputs.

Settings (real images: centre crops of scikit-image's sample photographs):

* ``'cifar32'``   -- 2 RGB photos 32x32, CIFAR constants, severities 1..5;
* ``'imagenet72'`` -- 2 RGB photos 72x72, ImageNet constants, severities 1..5 (72: the
  peer's top-left trim in ``clipped_zoom`` equals the scripts' centred trim);
* ``'gray32'``    -- the same 32x32 photos as 8-bit grayscale (1 channel), CIFAR
  constants, severities 1 and 5.

Example i draws its noise from ``fold_in(KEY, i)`` exactly as ``corrupt`` does, so the
cached ``out`` is ``corrupt(KEY, x, name, s)`` and ``noise`` is what that call drew.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from flatrob_jax.corruptions import corrupt, single_image_fns

KEY_SEED = 0
SETTINGS = {
    "cifar32": dict(size=32, resolution="cifar", gray=False, severities=(1, 2, 3, 4, 5)),
    "imagenet72": dict(size=72, resolution="imagenet", gray=False, severities=(1, 2, 3, 4, 5)),
    "gray32": dict(size=32, resolution="cifar", gray=True, severities=(1, 5)),
}


@functools.lru_cache(maxsize=None)
def photos(size, n=2, gray=False):
    """uint8 [n, size, size, 3] (or [..., 1] grey) centre crops, resized bicubically."""
    import skimage.data
    from PIL import Image

    out = []
    for name in ("astronaut", "chelsea", "coffee", "rocket")[:n]:
        im = Image.fromarray(getattr(skimage.data, name)())
        w, h = im.size
        s = min(w, h)
        im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        im = im.resize((size, size), Image.BICUBIC)
        out.append(np.asarray(im.convert("L"))[..., None] if gray else np.asarray(im))
    return np.stack(out)


def setting_images(setting):
    """(uint8 images, float32 images in [0, 1]) of a setting."""
    cfg = SETTINGS[setting]
    u8 = photos(cfg["size"], 2, cfg["gray"])
    return u8, (u8 / 255.0).astype(np.float32)


@functools.lru_cache(maxsize=None)
def sweep(name, setting):
    """dict(severity -> (out float32 [B, H, W, C] as NumPy, noise pytree with a leading
    batch axis or None for grey images)), computed by one compiled call."""
    cfg = SETTINGS[setting]
    _, x = setting_images(setting)
    b, h, w, _ = x.shape
    res, sevs = cfg["resolution"], cfg["severities"]

    def run(key, images):
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(b))
        outs, noises = [], []
        for s in sevs:
            outs.append(corrupt(key, images, name, s, resolution=res))
            if cfg["gray"]:
                noises.append(None)
            else:
                draw, _, _ = single_image_fns(name, s, h, w, res)
                noises.append(jax.vmap(draw)(keys, images))
        return outs, noises

    outs, noises = jax.jit(run)(jax.random.key(KEY_SEED), jnp.asarray(x))
    return {
        s: (np.asarray(o), jax.tree_util.tree_map(np.asarray, nz))
        for s, o, nz in zip(sevs, outs, noises)
    }
