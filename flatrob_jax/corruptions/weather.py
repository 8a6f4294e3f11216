"""Weather corruptions: fog (plasma fractal), snow and frost (procedural frost texture)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flatrob_jax.corruptions import blur, color, filters

# ------------------------------------------------------------------------------- fog


def plasma_size(h: int, w: int) -> int:
    """Side of the square fractal: the next power of two >= the longer image side."""
    n = max(h, w)
    return 1 if n <= 1 else 2 ** (n - 1).bit_length()


def plasma_draw_shapes(mapsize: int):
    """Shapes of the uniform(-1, 1) arrays the diamond-square algorithm consumes, in the
    reference's order: per level, the square step then the two diamond steps."""
    shapes, step = [], mapsize
    while step >= 2:
        k = mapsize // step
        shapes += [(k, k)] * 3
        step //= 2
    return shapes


def draw_plasma(key, mapsize: int):
    shapes = plasma_draw_shapes(mapsize)
    flat = jax.random.uniform(key, (sum(a * b for a, b in shapes),), jnp.float32, -1.0, 1.0)
    out, start = [], 0
    for a, b in shapes:
        out.append(flat[start : start + a * b].reshape(a, b))
        start += a * b
    return out


def plasma_fractal(uniforms, mapsize: int, wibbledecay: float):
    """Diamond-square height map in [0, 1] of the reference ``plasma_fractal`` (after
    FLHerne/mapgen): at each level the new points are the mean of their 4 neighbours plus
    ``wibble * uniform(-wibble, wibble)``, with wibble = 100 divided by ``wibbledecay`` per
    level; neighbours wrap around. ``uniforms`` are the uniform(-1, 1) draws in order."""
    m = jnp.zeros((mapsize, mapsize), jnp.float32)
    step, wibble, n = mapsize, 100.0, 0
    while step >= 2:
        half = step // 2
        corners = m[0::step, 0::step]
        sq = corners + jnp.roll(corners, -1, axis=0)
        sq = sq + jnp.roll(sq, -1, axis=1)
        m = m.at[half::step, half::step].set(sq / 4 + wibble * wibble * uniforms[n])
        dr = m[half::step, half::step]
        ul = m[0::step, 0::step]
        lt = dr + jnp.roll(dr, 1, axis=0) + ul + jnp.roll(ul, -1, axis=1)
        m = m.at[0::step, half::step].set(lt / 4 + wibble * wibble * uniforms[n + 1])
        tt = dr + jnp.roll(dr, 1, axis=1) + ul + jnp.roll(ul, -1, axis=0)
        m = m.at[half::step, 0::step].set(tt / 4 + wibble * wibble * uniforms[n + 2])
        step, wibble, n = half, wibble / wibbledecay, n + 3
    m = m - m.min()
    return m / m.max()


def draw_fog(key, x, c):
    return {"plasma": draw_plasma(key, plasma_size(*x.shape[:2]))}


def apply_fog(x, noise, c):
    """``x + c0 * plasma``, rescaled by ``max / (max + c0)`` (max over the whole image)."""
    h, w = x.shape[:2]
    p = plasma_fractal(noise["plasma"], plasma_size(h, w), c[1])[:h, :w, None]
    max_val = jnp.max(x)
    return jnp.clip((x + c[0] * p) * max_val / (max_val + c[0]), 0.0, 1.0)


# ------------------------------------------------------------------------------ snow


def draw_snow(key, x, c):
    """Snow flakes: normal(mean c0, std c1) per pixel; fall direction uniform in [-135, -45] deg."""
    k1, k2 = jax.random.split(key)
    return {
        "flakes": jax.random.normal(k1, x.shape[:2], jnp.float32),
        "angle": jax.random.uniform(k2, (), jnp.float32, -135.0, -45.0),
    }


def apply_snow(x, noise, c):
    """The reference snow: flakes zoomed by c2 (``clipped_zoom``), thresholded at c3, motion
    blurred (radius c4, sigma c5) and rounded to 8 bits; the image is whitened towards
    ``max(x, 1.5 * grey + 0.5)`` with weight ``1 - c6``; flakes are added twice (the layer and
    its 180-degree rotation)."""
    mean, std, zoom, thresh, radius, sigma, keep = c
    h, w = x.shape[:2]
    layer = mean + std * noise["flakes"]
    layer = filters.separable(
        layer, filters.clipped_zoom_matrix(h, zoom), filters.clipped_zoom_matrix(w, zoom)
    )
    layer = jnp.clip(jnp.where(layer < thresh, 0.0, layer), 0.0, 1.0)
    layer = blur.motion_blur(layer, radius, sigma, noise["angle"])
    layer = (jnp.round(layer * 255.0) / 255.0)[..., None]
    grey = color.luma(x)
    x = keep * x + (1 - keep) * jnp.maximum(x, grey * 1.5 + 0.5)
    return jnp.clip(x + layer + jnp.rot90(layer, k=2), 0.0, 1.0)


# ----------------------------------------------------------------------------- frost
#
# The frost photographs of ImageNet-C cannot be bundled, so the texture is synthesised per
# example. Construction (all from the example's key):
#   * crystal seeds: Bernoulli(0.02) points with uniform(0.4, 1) brightness;
#   * needles: every seed is smeared along 6 directions (a random base angle plus multiples
#     of 60 degrees, the hexagonal symmetry of ice) with the one-sided motion-blur kernel of
#     length ``FROST_NEEDLE`` pixels, and a second, finer generation at half length and 30
#     degrees offset; the brightest needle wins (max over directions), which gives the
#     feathery, star-like look of window frost;
#   * haze: a plasma fractal (the fog generator, wibble decay 2) for the low-frequency veil;
#   * colour: texture = 0.7 * needles + 0.3 * haze, standardised per example, then mapped to
#     RGB with the per-channel mean and spread measured on the five frost photographs the
#     reference samples from (only these 9 summary numbers were taken from them), plus a
#     per-example brightness shift with the spread of those photographs' means.
# Needle length is 20 pixels at ImageNet scale and 4 at CIFAR scale, as the CIFAR script
# shrinks the photographs to 1/5 before cropping.

FROST_NEEDLE = {"imagenet": 20, "cifar": 4}
FROST_MEAN = (145.9, 167.2, 178.9)  # mean of the photographs' channel means (0..255)
FROST_SPREAD = (28.5, 26.5, 26.4)  # mean within-photograph channel std
FROST_BETWEEN = (48.0, 31.0, 29.0)  # std of the photographs' channel means
FROST_SEED_DENSITY = 0.02


def draw_frost(key, x, c):
    h, w = x.shape[:2]
    k = jax.random.split(key, 6)
    return {
        "seeds": jax.random.bernoulli(k[0], FROST_SEED_DENSITY, (h, w)),
        "bright": jax.random.uniform(k[1], (h, w), jnp.float32, 0.4, 1.0),
        "angle": jax.random.uniform(k[2], (), jnp.float32, 0.0, 60.0),
        "shift": jnp.clip(jax.random.normal(k[3], (), jnp.float32), -1.5, 1.5),
        "plasma": draw_plasma(k[4], plasma_size(h, w)),
    }


def _needles(seeds, length: int, angles):
    """Max over directions of seeds smeared along each direction, fading from 1 to 0.2."""
    taps = jnp.linspace(1.0, 0.2, length)
    h, w = seeds.shape
    rows, cols = jnp.arange(h), jnp.arange(w)

    def one_direction(angle):
        theta = jnp.deg2rad(angle)

        def tap(i, acc):
            oy = jnp.round(i * jnp.sin(theta)).astype(jnp.int32)
            ox = jnp.round(i * jnp.cos(theta)).astype(jnp.int32)
            shifted = jnp.take(
                jnp.take(seeds, jnp.mod(rows + oy, h), axis=0), jnp.mod(cols + ox, w), axis=1
            )
            return jnp.maximum(acc, taps[i] * shifted)

        return jax.lax.fori_loop(0, length, tap, seeds)

    return jnp.max(jax.vmap(one_direction)(jnp.stack(angles)), axis=0)


def frost_texture(noise, h: int, w: int, needle: int):
    """Procedural frost texture [H, W, 3] in [0, 1] (construction above)."""
    seeds = noise["seeds"] * noise["bright"]
    base = noise["angle"]
    coarse = _needles(seeds, max(needle, 2), [base + 60.0 * k for k in range(6)])
    fine = _needles(coarse * 0.7, max(needle // 2, 2), [base + 30.0 + 60.0 * k for k in range(6)])
    needles = filters.gaussian_blur(jnp.maximum(coarse, fine), 0.5)
    haze = plasma_fractal(noise["plasma"], plasma_size(h, w), 2.0)[:h, :w]
    t = 0.7 * needles / (jnp.max(needles) + 1e-6) + 0.3 * haze
    t = (t - t.mean()) / (t.std() + 1e-6)
    mean = jnp.asarray(FROST_MEAN) + noise["shift"] * jnp.asarray(FROST_BETWEEN)
    rgb = mean + t[..., None] * jnp.asarray(FROST_SPREAD)
    return jnp.clip(rgb / 255.0, 0.0, 1.0)


def apply_frost(x, noise, c, *, needle: int):
    """``c0 * x + c1 * frost`` with the procedural texture (RGB only; see ``color``)."""
    h, w = x.shape[:2]
    return jnp.clip(c[0] * x + c[1] * frost_texture(noise, h, w, needle), 0.0, 1.0)
