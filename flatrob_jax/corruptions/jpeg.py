"""Baseline JPEG compression and decompression, as libjpeg(-turbo) does it through Pillow's
``save(format='JPEG', quality=q)`` with default settings:

* 8-bit samples; RGB -> YCbCr with JFIF full-range coefficients in libjpeg's 16-bit fixed
  point; 4:2:0 chroma subsampling (2x2 average with libjpeg's alternating 1, 2 rounding
  bias); image padded to whole MCUs by replicating the last row and column;
* 8x8 DCT-II per block after a level shift of 128, quantisation with the JPEG Annex K
  tables scaled by ``jpeg_quality_scaling`` (baseline: entries clamped to 1..255), rounding
  half away from zero;
* decoding: dequantise, inverse DCT, +128 and clamp, chroma upsampled by libjpeg's "fancy"
  triangular filter (weights 3/4, 1/4 with its +8 / +7 rounding), YCbCr -> RGB, clamp.

A float DCT is used where libjpeg uses its scaled integer DCT (``JDCT_ISLOW``); the two
agree to well above 40 dB PSNR. One-channel images are encoded as grayscale JPEGs
(luminance only).
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np

# JPEG standard (ITU T.81) Annex K.1 tables, natural (row-major) order.
LUMINANCE_TABLE = np.array(
    [
        16,
        11,
        10,
        16,
        24,
        40,
        51,
        61,
        12,
        12,
        14,
        19,
        26,
        58,
        60,
        55,
        14,
        13,
        16,
        24,
        40,
        57,
        69,
        56,
        14,
        17,
        22,
        29,
        51,
        87,
        80,
        62,
        18,
        22,
        37,
        56,
        68,
        109,
        103,
        77,
        24,
        35,
        55,
        64,
        81,
        104,
        113,
        92,
        49,
        64,
        78,
        87,
        103,
        121,
        120,
        101,
        72,
        92,
        95,
        98,
        112,
        100,
        103,
        99,
    ]
).reshape(8, 8)
CHROMINANCE_TABLE = np.full((8, 8), 99)
CHROMINANCE_TABLE[:4, :4] = np.array(
    [17, 18, 24, 47, 18, 21, 26, 66, 24, 26, 56, 99, 47, 66, 99, 99]
).reshape(4, 4)


def quality_tables(quality: int):
    """libjpeg ``jpeg_set_quality(quality, force_baseline=TRUE)``: (luminance, chrominance)."""
    q = min(max(int(quality), 1), 100)
    scale = 5000 // q if q < 50 else 200 - 2 * q
    tables = []
    for base in (LUMINANCE_TABLE, CHROMINANCE_TABLE):
        t = (base * scale + 50) // 100
        tables.append(np.clip(t, 1, 255))
    return tables


@functools.lru_cache(maxsize=None)
def _dct_matrix() -> np.ndarray:
    """Orthonormal 8-point DCT-II matrix D; the JPEG 2-D DCT of a block B is D B D^T."""
    k = np.arange(8)[:, None]
    n = np.arange(8)[None, :]
    d = np.cos((2 * n + 1) * k * np.pi / 16) * np.sqrt(2 / 8)
    d[0] /= np.sqrt(2)
    return d


def _to_blocks(plane):
    h, w = plane.shape
    return plane.reshape(h // 8, 8, w // 8, 8).transpose(0, 2, 1, 3)


def _from_blocks(blocks):
    nh, nw = blocks.shape[:2]
    return blocks.transpose(0, 2, 1, 3).reshape(nh * 8, nw * 8)


def _code_plane(plane, table):
    """Encode and decode one padded plane of 0..255 samples (multiple of 8 per side)."""
    d = jnp.asarray(_dct_matrix(), jnp.float32)
    q = jnp.asarray(table, jnp.float32)
    blocks = _to_blocks(plane - 128.0)
    coef = jnp.einsum("uk,ijkl,vl->ijuv", d, blocks, d, precision="highest")
    levels = jnp.sign(coef) * jnp.floor(jnp.abs(coef) / q + 0.5)
    rec = jnp.einsum("uk,ijuv,vl->ijkl", d, levels * q, d, precision="highest")
    return jnp.clip(jnp.round(_from_blocks(rec) + 128.0), 0.0, 255.0)


def _pad_to(plane, h, w):
    return jnp.pad(plane, ((0, h - plane.shape[0]), (0, w - plane.shape[1])), mode="edge")


def _downsample_2x2(plane):
    """libjpeg ``h2v2_downsample``: (sum of 2x2 + bias) >> 2, bias 1, 2, 1, 2, ... by column."""
    h, w = plane.shape
    s = plane.reshape(h // 2, 2, w // 2, 2).sum(axis=(1, 3))
    bias = jnp.where(jnp.arange(w // 2) % 2 == 0, 1.0, 2.0)
    return jnp.floor((s + bias) / 4.0)


def _fancy_upsample_2x2(plane):
    """libjpeg ``h2v2_fancy_upsample`` (triangle filter, edge samples replicated)."""
    up = jnp.concatenate([plane[:1], plane[:-1]], axis=0)
    down = jnp.concatenate([plane[1:], plane[-1:]], axis=0)
    rows = jnp.stack([3 * plane + up, 3 * plane + down], axis=1).reshape(
        -1, plane.shape[1]
    )  # colsums
    left = jnp.concatenate([rows[:, :1], rows[:, :-1]], axis=1)
    right = jnp.concatenate([rows[:, 1:], rows[:, -1:]], axis=1)
    even = jnp.floor((3 * rows + left + 8) / 16)
    odd = jnp.floor((3 * rows + right + 7) / 16)
    return jnp.stack([even, odd], axis=2).reshape(rows.shape[0], -1)


def jpeg_roundtrip(x, quality: int):
    """x[H, W, C] in [0, 1], C in {1, 3} -> decoded JPEG at ``quality``, in [0, 1]."""
    h, w, c = x.shape
    lum_t, chrom_t = quality_tables(quality)
    px = jnp.round(jnp.clip(x, 0.0, 1.0) * 255.0)
    if c == 1:
        hp, wp = -(-h // 8) * 8, -(-w // 8) * 8
        y = _code_plane(_pad_to(px[..., 0], hp, wp), lum_t)
        return (y[:h, :w] / 255.0)[..., None]
    r, g, b = (px[..., i].astype(jnp.int32) for i in range(3))
    yy = (19595 * r + 38470 * g + 7471 * b + 32768) >> 16
    cb = (-11059 * r - 21709 * g + 32768 * b + (128 << 16) + 32767) >> 16
    cr = (32768 * r - 27439 * g - 5329 * b + (128 << 16) + 32767) >> 16
    hp, wp = -(-h // 16) * 16, -(-w // 16) * 16
    y_dec = _code_plane(_pad_to(yy.astype(jnp.float32), hp, wp), lum_t)[:h, :w]
    hc, wc = -(-h // 2), -(-w // 2)
    chroma = []
    for plane in (cb, cr):
        small = _downsample_2x2(_pad_to(plane.astype(jnp.float32), hp, wp))
        dec = _code_plane(small, chrom_t)[:hc, :wc]
        chroma.append(_fancy_upsample_2x2(dec)[:h, :w])
    cb_d, cr_d = chroma[0] - 128.0, chroma[1] - 128.0
    # libjpeg ycc_rgb_convert: rounded fixed-point products added to Y, then clamped.
    rr = y_dec + jnp.round(1.40200 * cr_d)
    gg = y_dec + jnp.floor(-0.34414 * cb_d - 0.71414 * cr_d + 0.5)
    bb = y_dec + jnp.round(1.77200 * cb_d)
    rgb = jnp.stack([rr, gg, bb], axis=-1)
    return jnp.clip(rgb, 0.0, 255.0) / 255.0


def apply_jpeg_compression(x, noise, c):
    return jpeg_roundtrip(x, c)
