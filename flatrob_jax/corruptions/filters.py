"""Linear image operators shared by the corruptions, built exactly as the reference libraries
define them, then applied in JAX.

One-dimensional operators (Gaussian filtering with a border mode, ``scipy.ndimage.zoom``
with ``order=1``, Pillow's box resampling) are built once, in NumPy, at trace time, as dense
matrices ``M [out, in]`` that already contain the border rule; a separable 2-D operator is
then ``M_h @ X @ M_w^T`` per channel, which is exact and fast for image-sized matrices.

Border names follow NumPy's ``np.pad``: ``'edge'`` (scipy ``'nearest'``, OpenCV
``BORDER_REPLICATE``), ``'symmetric'`` (scipy ``'reflect'``), ``'reflect'`` (OpenCV
``BORDER_REFLECT_101``, scipy ``'mirror'``).
"""

from __future__ import annotations

import functools
import math

import jax.numpy as jnp
import numpy as np


def _filter_matrix(n: int, taps: np.ndarray, mode: str) -> np.ndarray:
    """Matrix of the 1-D correlation of a length-n signal with odd-length ``taps``."""
    r = len(taps) // 2
    idx = np.pad(np.arange(n), r, mode=mode)  # which input sample each padded slot reads
    m = np.zeros((n, n))
    for i in range(n):
        np.add.at(m[i], idx[i : i + 2 * r + 1], taps)
    return m


def gaussian_taps(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter1d`` weights: radius ``int(truncate * sigma + 0.5)``."""
    if sigma <= 0:
        return np.ones(1)
    r = int(truncate * float(sigma) + 0.5)
    x = np.arange(-r, r + 1)
    w = np.exp(-0.5 / float(sigma) ** 2 * x**2)
    return w / w.sum()


@functools.lru_cache(maxsize=None)
def gaussian_matrix(n: int, sigma: float, mode: str = "edge", truncate: float = 4.0) -> np.ndarray:
    """Gaussian filter as a matrix; ``skimage.filters.gaussian`` defaults: mode 'nearest',
    truncate 4."""
    return _filter_matrix(n, gaussian_taps(sigma, truncate), mode)


@functools.lru_cache(maxsize=None)
def box_matrix(n: int, size: int = 3, mode: str = "reflect") -> np.ndarray:
    """``cv2.blur`` with a ``size`` box, default border BORDER_REFLECT_101."""
    return _filter_matrix(n, np.full(size, 1.0 / size), mode)


def separable(x: jnp.ndarray, mh: np.ndarray, mw: np.ndarray) -> jnp.ndarray:
    """Apply ``mh`` along rows and ``mw`` along columns of x[H, W, ...]."""
    mh = jnp.asarray(mh, jnp.float32)
    mw = jnp.asarray(mw, jnp.float32)
    hp = "highest"
    y = jnp.tensordot(mh, x, axes=(1, 0), precision=hp)  # [H', W, ...]
    y = jnp.tensordot(mw, y, axes=(1, 1), precision=hp)  # [W', H', ...]
    return jnp.swapaxes(y, 0, 1)


def gaussian_blur(
    x: jnp.ndarray, sigma: float, mode: str = "edge", truncate: float = 4.0
) -> jnp.ndarray:
    """``skimage.filters.gaussian(x, sigma, mode, truncate)`` on x[H, W, ...] (channels apart)."""
    h, w = x.shape[:2]
    return separable(
        x, gaussian_matrix(h, sigma, mode, truncate), gaussian_matrix(w, sigma, mode, truncate)
    )


@functools.lru_cache(maxsize=None)
def zoom_matrix(n: int, factor: float) -> np.ndarray:
    """``scipy.ndimage.zoom(order=1)`` along one axis: output length ``round(n * factor)``,
    output sample i reads input coordinate ``i * (n - 1) / (out - 1)`` linearly."""
    out = int(round(n * factor))
    m = np.zeros((out, n))
    scale = (n - 1) / (out - 1) if out > 1 else 0.0
    for i in range(out):
        c = i * scale
        lo = min(int(math.floor(c)), n - 1)
        f = c - lo
        m[i, lo] += 1 - f
        if f > 0 and lo + 1 < n:
            m[i, lo + 1] += f
    return m


@functools.lru_cache(maxsize=None)
def clipped_zoom_matrix(n: int, factor: float) -> np.ndarray:
    """The reference scripts' ``clipped_zoom`` along one axis: crop the centre
    ``ceil(n / factor)`` samples, zoom them by ``factor`` (scipy, order 1), keep the centre n."""
    ch = int(math.ceil(n / factor))
    top = (n - ch) // 2
    z = zoom_matrix(ch, factor)
    trim = (z.shape[0] - n) // 2
    m = np.zeros((n, n))
    m[:, top : top + ch] = z[trim : trim + n]
    return m


def _pil_box_coeffs(in_size: int, out_size: int) -> np.ndarray:
    """Pillow's ``precompute_coeffs`` for the BOX filter (support 0.5) as a matrix [out, in]."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    m = np.zeros((out_size, in_size))
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        for x in range(xmin, xmax):
            t = (x - center + 0.5) / filterscale
            if -0.5 < t <= 0.5:
                m[xx, x] = 1.0
        s = m[xx].sum()
        if s > 0:
            m[xx] /= s
    return m


@functools.lru_cache(maxsize=None)
def pixelate_matrix(n: int, factor: float) -> np.ndarray:
    """Pillow BOX resize of n samples down to ``int(n * factor)`` and back up to n (BOX
    upsampling equals NEAREST's ``floor((x + 0.5) * scale)``, as imagecorruptions uses)."""
    small = int(n * factor)
    return _pil_box_coeffs(small, n) @ _pil_box_coeffs(n, small)


def pad2d(x: jnp.ndarray, r: int, mode: str) -> jnp.ndarray:
    return jnp.pad(x, ((r, r), (r, r)) + ((0, 0),) * (x.ndim - 2), mode=mode)


def correlate2d(x: jnp.ndarray, kernel: np.ndarray, mode: str = "reflect") -> jnp.ndarray:
    """``cv2.filter2D`` (a correlation) of x[H, W, C] with an odd square kernel, border ``mode``."""
    k = np.asarray(kernel, np.float32)
    r = k.shape[0] // 2
    h, w = x.shape[:2]
    xp = pad2d(x, r, mode)
    if k.shape[0] <= 5:  # small kernels: a sum of shifted copies is cheapest
        out = jnp.zeros(x.shape, jnp.float32)
        for i in range(k.shape[0]):
            for j in range(k.shape[1]):
                if k[i, j] != 0:
                    out = out + float(k[i, j]) * xp[i : i + h, j : j + w]
        return out
    # large kernels: through the FFT of the padded image (a direct sum or banded matmuls cost
    # K^2 or K*W multiply-adds per pixel; 7-9x slower at K = 17..21 on a 32x32 image, measured)
    hp, wp = xp.shape[:2]
    flipped = np.zeros((hp, wp), np.float32)
    flipped[: k.shape[0], : k.shape[1]] = k[::-1, ::-1]
    spectrum = jnp.asarray(np.fft.rfft2(flipped).astype(np.complex64))
    spectrum = spectrum.reshape(spectrum.shape + (1,) * (x.ndim - 2))
    # circular convolution with the flipped kernel = correlation on the valid window
    y = jnp.fft.irfft2(jnp.fft.rfft2(xp, axes=(0, 1)) * spectrum, s=(hp, wp), axes=(0, 1))
    return y[2 * r : 2 * r + h, 2 * r : 2 * r + w].astype(jnp.float32)


def cv2_gaussian_kernel(ksize: int, sigma: float) -> np.ndarray:
    """``cv2.getGaussianKernel(ksize, sigma)`` for sigma > 0 (float64)."""
    x = np.arange(ksize) - (ksize - 1) / 2
    w = np.exp(-(x**2) / (2 * sigma**2))
    return w / w.sum()


@functools.lru_cache(maxsize=None)
def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """Anti-aliased disk of the reference ``disk()``: the indicator of ``x^2 + y^2 <= r^2`` on
    ``[-8, 8]^2`` (``[-r, r]^2`` when r > 8), normalised, then ``cv2.GaussianBlur`` with a 3x3
    (5x5 when r > 8) kernel of sigma ``alias_blur`` and border BORDER_REFLECT_101."""
    if radius <= 8:
        grid, ksize = np.arange(-8, 9), 3
    else:
        grid, ksize = np.arange(-radius, radius + 1), 5
    xx, yy = np.meshgrid(grid, grid)
    d = np.asarray(xx**2 + yy**2 <= radius**2, np.float32)
    d /= d.sum()
    g = cv2_gaussian_kernel(ksize, alias_blur)
    m = _filter_matrix(d.shape[0], g, "reflect")
    return (m @ d @ m.T).astype(np.float32)
