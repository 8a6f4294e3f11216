"""dm-pix against Pillow and against our ops, op by op: which dm-pix function could stand in for
each augmentation op, how far its result is from the Pillow reference the tests use, and (for
the affine warp, the one op where dm-pix has a same-meaning function) how fast each is.

    python benchmarks/bench_augment_dmpix.py

Prints a markdown table (the one in docs/analyses.md's dm-pix section). Images: the test photos
(tests/test_augment_fixtures.py), uint8 -> [0, 1]. Differences are in uint8 levels after
rounding ``out * 255``; "> 1 level" is the fraction of pixels the geometric-op tests allow
(1%). Not run by pytest.
"""

import time

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps
from tests.test_augment_fixtures import by_shape, from_pil, to_pil

from flatrob_jax.augment import geometry, ops, standard

IMAGES = [img for _, imgs in by_shape().values() for img in imgs if img.shape[0] >= 8]


def levels_of(x) -> np.ndarray:
    return np.round(np.asarray(x, np.float64) * 255.0).astype(np.int64)


def diff_stats(pairs):
    """(max abs level difference, fraction of pixels off by > 1 level, by >= 1 level)."""
    diffs = np.concatenate([np.abs(a - b.astype(np.int64)).ravel() for a, b in pairs])
    return int(diffs.max()), float(np.mean(diffs > 1)), float(np.mean(diffs >= 1))


def row(op, tried, pairs, why):
    worst, frac, any_ = diff_stats(pairs)
    print(
        f"| {op} | {tried} | {why} (max {worst} levels, {frac:.2%} of pixels > 1 level, "
        f"{any_:.2%} >= 1) |"
    )


def pillow_matrix_to_pix(matrix):
    """Pillow's (a, b, c, d, e, f) with pixel centres at +0.5 -> dm-pix's (row, col, ch) 4x4
    homogeneous ``input = M @ output_index``."""
    a, b, c, d, e, f = (float(v) for v in matrix)
    return jnp.array(
        [
            [e, d, 0.0, f + 0.5 * (d + e) - 0.5],
            [b, a, 0.0, c + 0.5 * (a + b) - 0.5],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ],
        jnp.float32,
    )


def pix_warp(image, matrix, order):
    """dm-pix affine warp made as close to Pillow as its API allows: Pillow's coordinates,
    fill 0 outside, bilinear truncated to a level (Pillow truncates)."""
    out = pix.affine_transform(image * 255.0, matrix, order=order, mode="constant", cval=0.0)
    return jnp.floor(out + 1e-4) / 255.0 if order == 1 else out / 255.0


def pix_warp_clamped(image, matrix, pillow_matrix):
    """Bilinear dm-pix warp with Pillow's edge rule added by hand: neighbours clamped to the
    edge (mode 'nearest') and fill where the sample point itself is off the image."""
    h, w, _ = image.shape
    out = jnp.floor(pix.affine_transform(image * 255.0, matrix, order=1, mode="nearest") + 1e-4)
    a, b, c, d, e, f = (float(v) for v in pillow_matrix)
    y, x = jnp.meshgrid(jnp.arange(h) + 0.5, jnp.arange(w) + 0.5, indexing="ij")
    xs, ys = a * x + b * y + c, d * x + e * y + f
    inside = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    return jnp.where(inside[..., None], out, 0.0) / 255.0


def main():
    print("| op | dm-pix function tried | why ours (measured difference vs Pillow) |")
    print("|---|---|---|")
    rng = np.random.default_rng(0)

    # flips and crop/pad: used from dm-pix (identical pixels), listed for completeness
    pairs = []
    for img in IMAGES:
        x = jnp.asarray(img, jnp.float32) / 255.0
        pairs.append((levels_of(pix.flip_left_right(x)), img[:, ::-1]))
        padded = pix.pad_to_size(x, x.shape[0] + 8, x.shape[1] + 8)
        pairs.append((levels_of(padded[4:-4, 4:-4]), img))
    row(
        "flip, crop/pad (used)",
        "pix.flip_left_right, pix.pad_to_size",
        pairs,
        "dm-pix's, identical",
    )
    # random_crop / random_flip_left_right draw from their own keys
    key = jax.random.key(0)
    x = jnp.asarray(IMAGES[0], jnp.float32) / 255.0
    theirs = pix.random_crop(key, jnp.pad(x, ((4, 4), (4, 4), (0, 0))), x.shape)
    ours = standard.random_crop(key, x, 4)
    same = bool(np.array_equal(np.asarray(theirs), np.asarray(ours)))
    print(
        f"| random crop/flip offsets | pix.random_crop, pix.random_flip_left_right | their draws "
        f"(randint on split keys, bernoulli) are not ours (one uniform vector per image): same "
        f"crop for one key: {same}; switching would change every run's stream |"
    )

    # grey conversion: Pillow "L" is integer (19595 R + 38470 G + 7471 B + 2**15) >> 16
    pairs = []
    for img in IMAGES:
        if img.shape[-1] != 3:
            continue
        x = jnp.asarray(img, jnp.float32)
        got = np.round(np.asarray(pix.rgb_to_grayscale(x))).astype(np.int64)
        pairs.append((got, from_pil(to_pil(img).convert("L"))))
    row(
        "grey (color, contrast)",
        "pix.rgb_to_grayscale (rec601)",
        pairs,
        "weights 0.2989/0.5870/0.1140 in float vs Pillow's 16-bit integer weights",
    )

    enhancers = {
        "color": (
            lambda x, f: pix.adjust_saturation(x, f),
            ImageEnhance.Color,
            "HSV saturation, not a blend with grey",
        ),
        "contrast": (
            lambda x, f: pix.adjust_contrast(x, f),
            ImageEnhance.Contrast,
            "per-channel means, no truncation",
        ),
        "brightness": (
            lambda x, f: jnp.clip(pix.adjust_brightness(x, 0.0) * f, 0, 1),
            ImageEnhance.Brightness,
            "pix adds a delta (Pillow multiplies); tried x*f around pix",
        ),
    }
    for name, (fn, enhancer, why) in enhancers.items():
        pairs = []
        for img in IMAGES:
            if img.shape[-1] != 3:
                continue
            x = jnp.asarray(img, jnp.float32) / 255.0
            for f in (0.1, 0.5, 1.3, 1.9):
                got = levels_of(jnp.clip(fn(x, f), 0.0, 1.0))
                pairs.append((got, from_pil(enhancer(to_pil(img)).enhance(f))))
        tried = {"color": "pix.adjust_saturation", "contrast": "pix.adjust_contrast"}.get(
            name, "pix.adjust_brightness"
        )
        row(name, tried, pairs, why)

    pairs = []
    for img in IMAGES:
        x = jnp.asarray(img, jnp.float32) / 255.0
        for t in (1, 128, 226.66667, 255):
            pairs.append(
                (levels_of(pix.solarize(x, t / 255.0)), from_pil(ImageOps.solarize(to_pil(img), t)))
            )
    row("solarize", "pix.solarize", pairs, "float compare of x = l/255 with t/255 and 1 - x")

    pairs = []
    for img in IMAGES:
        if min(img.shape[:2]) < 3:
            continue
        x = jnp.asarray(img, jnp.float32) / 255.0
        blurred = pix.gaussian_blur(x, sigma=0.6, kernel_size=3)
        pairs.append((levels_of(blurred), from_pil(to_pil(img).filter(ImageFilter.SMOOTH))))
    row(
        "sharpness (SMOOTH filter)",
        "pix.gaussian_blur(sigma 0.6, 3x3)",
        pairs,
        "Pillow's SMOOTH kernel (1 1 1 / 1 5 1 / 1 1 1)/13 is not Gaussian; "
        "pix pads borders, Pillow copies them",
    )

    # affine warps: rotate, shear, translate with Pillow's matrices
    for interpolation, order, resample in (
        ("nearest", 0, Image.NEAREST),
        ("bilinear", 1, Image.BILINEAR),
    ):
        pairs_pix, pairs_ours, pairs_clamped = [], [], []
        for img in IMAGES:
            h, w, _ = img.shape
            x = jnp.asarray(img, jnp.float32) / 255.0
            mats = [geometry.rotate_matrix(d, h, w) for d in (-30.0, -7.0, 13.5, 22.5)]
            mats += [geometry.shear_x_matrix(s) for s in (-0.3, 0.12)] + [
                geometry.shear_y_matrix(0.21)
            ]
            mats += [geometry.translate_matrix(t, 0.0) for t in (-3.5, 2.25)]
            for m in mats:
                pil = to_pil(img)
                want = from_pil(
                    pil.transform(
                        pil.size, Image.AFFINE, tuple(float(v) for v in m), resample=resample
                    )
                )
                pairs_pix.append(
                    (levels_of(pix_warp(x, pillow_matrix_to_pix(np.asarray(m)), order)), want)
                )
                pairs_ours.append((levels_of(ops.affine(x, m, interpolation)), want))
                if order == 1:
                    clamped = pix_warp_clamped(
                        x, pillow_matrix_to_pix(np.asarray(m)), np.asarray(m)
                    )
                    pairs_clamped.append((levels_of(clamped), want))
        worst, frac, any_ = diff_stats(pairs_ours)
        row(
            f"affine warp, {interpolation} (rotate, shear, translate)",
            f"pix.affine_transform(order={order}, mode='constant')",
            pairs_pix,
            f"ours (16.16 fixed point like Pillow): max {worst}, {frac:.2%} > 1, "
            f"{any_:.2%} >= 1; pix",
        )
        if pairs_clamped:
            row(
                "affine warp, bilinear, Pillow's edge rule added",
                "pix.affine_transform(order=1, mode='nearest') + mask",
                pairs_clamped,
                "float coordinates vs Pillow's",
            )

    # speed of the warps, batch of 64 images, vmapped, jitted, CPU
    for size, interpolation, order in (
        (32, "bilinear", 1),
        (224, "bilinear", 1),
        (32, "nearest", 0),
        (224, "nearest", 0),
    ):
        batch = jnp.asarray(rng.integers(0, 256, (64, size, size, 3)), jnp.float32)
        m = geometry.rotate_matrix(13.5, size, size)
        pm = pillow_matrix_to_pix(np.asarray(m))
        fns = {
            "ours": jax.jit(jax.vmap(lambda x, m=m, i=interpolation: geometry.warp(x, m, i))),
            "pix": jax.jit(jax.vmap(lambda x, pm=pm, o=order: pix_warp(x / 255.0, pm, o) * 255.0)),
        }
        times = {}
        for name, fn in fns.items():
            fn(batch).block_until_ready()
            t0 = time.perf_counter()
            for _ in range(5):
                fn(batch).block_until_ready()
            times[name] = (time.perf_counter() - t0) / 5 / 64 * 1e3
        print(
            f"| {interpolation} warp speed {size}x{size} | pix.affine_transform | "
            f"ours {times['ours']:.3f} ms/image, "
            f"pix {times['pix']:.3f} ms/image ({times['pix'] / times['ours']:.1f}x) |"
        )

    print("| posterize, equalize, autocontrast, invert | none | dm-pix has no such op |")


if __name__ == "__main__":
    main()
