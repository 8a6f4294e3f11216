"""Convolution as patches + matrix multiplication, as drop-in replacements for
``lax.conv_general_dilated`` that flax's ``nn.Conv`` takes as its ``conv_general_dilated``
argument: the kernel stays the same HWIO parameter, so parameter names, shapes and
checkpoints do not depend on the implementation.

A benchmark-only module (benchmarks/bench_conv.py): measured slower than XLA's convolution
on this CPU (benchmarks/training.md), it is not part of the library. ``get(name)`` returns the
function for one of ``NAMES``; ``with convolutions(name):`` makes every ``nn.Conv`` traced
inside it (the library's models unchanged) compute its convolution that way:

- ``'xla'``: ``lax.conv_general_dilated`` itself (flax's default; XLA's convolution kernels).
- ``'im2col'``: the strided window of every kernel offset sliced from the padded input,
  concatenated along channels into one (..., kh*kw*C) patch array, then one matmul with the
  kernel reshaped to (kh*kw*C, O).
- ``'shifted'``: the same windows, each multiplied by its own (C, O) slice of the kernel and
  summed: kh*kw matmuls, no concatenated patch array.
- ``'lax_patches'``: ``lax.conv_general_dilated_patches`` (XLA builds the patches with a
  convolution against an identity kernel) followed by one matmul.

All compute the same function as ``lax.conv_general_dilated`` for channel-last layouts
(NHWC input, HWIO kernel, any number of spatial dimensions), strides, explicit or
'SAME'/'VALID' padding and kernel dilation; their gradients and Hessian-vector products
are JAX's derivatives of slices, pads and matmuls. On the project's 2-core CPU they are
slower than XLA's convolution on the layers of the small CNN and ResNet-18 (at best equal, on
one kernel gradient) and on the train step, HVP and attack step of both models
(benchmarks/bench_conv.py, benchmarks/training.md), so the models use XLA's.
"""

from __future__ import annotations

import contextlib
import itertools
import types
from typing import Callable, Sequence

import flax.linen.linear as flax_linear
import numpy as np
from jax import lax


def _channel_last_specs(ndim: int) -> lax.ConvDimensionNumbers:
    spatial = tuple(range(1, ndim - 1))
    return lax.ConvDimensionNumbers(
        lhs_spec=(0, ndim - 1, *spatial),
        rhs_spec=(ndim - 1, ndim - 2, *range(ndim - 2)),
        out_spec=(0, ndim - 1, *spatial),
    )


def _check_supported(lhs, rhs, lhs_dilation, dimension_numbers, feature_group_count):
    """The patch formulations cover what nn.Conv asks of them in these models; anything else
    is refused by name rather than computed wrongly."""
    given = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    wanted = _channel_last_specs(lhs.ndim)
    if given != wanted:
        raise ValueError(
            f"patch convolutions need channel-last layouts (NHWC input, HWIO kernel, NHWC "
            f"output, i.e. {wanted}); got dimension_numbers={given}"
        )
    if lhs_dilation is not None and any(d != 1 for d in lhs_dilation):
        raise ValueError(
            f"patch convolutions do not implement input dilation; got lhs_dilation="
            f"{tuple(lhs_dilation)} (allowed: None or all ones)"
        )
    if feature_group_count != 1:
        raise ValueError(
            f"patch convolutions do not implement grouped convolutions; got "
            f"feature_group_count={feature_group_count} (allowed: 1)"
        )


def _explicit_padding(spatial_shape, window, strides, padding):
    if isinstance(padding, str):
        return lax.padtype_to_pads(spatial_shape, window, strides, padding)
    return [tuple(p) for p in padding]


def _windows(lhs, kernel_spatial, strides, padding, rhs_dilation) -> list:
    """For each kernel offset (row-major over the kernel's spatial dimensions, as HWIO
    stores them), the input values that offset multiplies: a strided slice of the padded
    input with the output's spatial shape."""
    n_spatial = len(kernel_spatial)
    dilated = [(k - 1) * d + 1 for k, d in zip(kernel_spatial, rhs_dilation)]
    pads = _explicit_padding(lhs.shape[1:-1], dilated, strides, padding)
    padded = lax.pad(
        lhs, np.zeros((), lhs.dtype), [(0, 0, 0), *[(lo, hi, 0) for lo, hi in pads], (0, 0, 0)]
    )
    out = [(padded.shape[1 + i] - dilated[i]) // strides[i] + 1 for i in range(n_spatial)]
    windows = []
    for offset in itertools.product(*(range(k) for k in kernel_spatial)):
        start = [o * d for o, d in zip(offset, rhs_dilation)]
        limit = [s + (n - 1) * st + 1 for s, n, st in zip(start, out, strides)]
        windows.append(
            lax.slice(
                padded,
                (0, *start, 0),
                (padded.shape[0], *limit, padded.shape[-1]),
                (1, *strides, 1),
            )
        )
    return windows


def _matmul_last(x, matrix, precision, preferred_element_type):
    """x[..., K] @ matrix[K, O]."""
    return lax.dot_general(
        x,
        matrix,
        (((x.ndim - 1,), (0,)), ((), ())),
        precision=precision,
        preferred_element_type=preferred_element_type,
    )


def _patch_conv(body):
    """Wrap a formulation ``body(lhs, rhs, strides, padding, rhs_dilation, precision,
    preferred_element_type)`` in ``lax.conv_general_dilated``'s signature."""

    def conv_general_dilated(
        lhs,
        rhs,
        window_strides: Sequence[int],
        padding,
        lhs_dilation: Sequence[int] | None = None,
        rhs_dilation: Sequence[int] | None = None,
        dimension_numbers=None,
        feature_group_count: int = 1,
        batch_group_count: int = 1,
        precision=None,
        preferred_element_type=None,
    ):
        _check_supported(lhs, rhs, lhs_dilation, dimension_numbers, feature_group_count)
        if batch_group_count != 1:
            raise ValueError(
                f"patch convolutions do not implement batch_group_count={batch_group_count} "
                "(allowed: 1)"
            )
        n_spatial = lhs.ndim - 2
        strides = tuple(window_strides) if window_strides else (1,) * n_spatial
        dilation = tuple(rhs_dilation) if rhs_dilation else (1,) * n_spatial
        return body(lhs, rhs, strides, padding, dilation, precision, preferred_element_type)

    conv_general_dilated.__name__ = f"{body.__name__}_conv_general_dilated"
    conv_general_dilated.__doc__ = body.__doc__
    return conv_general_dilated


@_patch_conv
def im2col(lhs, rhs, strides, padding, dilation, precision, preferred_element_type):
    """One matmul of the concatenated windows (..., kh*kw*C) with the kernel (kh*kw*C, O)."""
    windows = _windows(lhs, rhs.shape[:-2], strides, padding, dilation)
    patches = windows[0] if len(windows) == 1 else lax.concatenate(windows, lhs.ndim - 1)
    kernel = rhs.reshape(-1, rhs.shape[-1])
    return _matmul_last(patches, kernel, precision, preferred_element_type)


@_patch_conv
def shifted(lhs, rhs, strides, padding, dilation, precision, preferred_element_type):
    """The sum over kernel offsets of (window @ kernel[offset]), one (C, O) matmul each."""
    windows = _windows(lhs, rhs.shape[:-2], strides, padding, dilation)
    kernels = rhs.reshape(-1, *rhs.shape[-2:])
    out = None
    for i, window in enumerate(windows):
        term = _matmul_last(window, kernels[i], precision, preferred_element_type)
        out = term if out is None else out + term
    return out


@_patch_conv
def lax_patches(lhs, rhs, strides, padding, dilation, precision, preferred_element_type):
    """``lax.conv_general_dilated_patches`` then one matmul; its patch features are ordered
    (C, *kernel spatial), so the kernel is transposed to match."""
    n_spatial = lhs.ndim - 2
    patches = lax.conv_general_dilated_patches(
        lhs,
        rhs.shape[:-2],
        strides,
        padding,
        rhs_dilation=dilation,
        dimension_numbers=_channel_last_specs(lhs.ndim),
        precision=precision,
    )
    kernel = rhs.transpose(n_spatial, *range(n_spatial), n_spatial + 1).reshape(-1, rhs.shape[-1])
    return _matmul_last(patches, kernel, precision, preferred_element_type)


_IMPLEMENTATIONS: dict[str, Callable] = {
    "xla": lax.conv_general_dilated,
    "im2col": im2col,
    "shifted": shifted,
    "lax_patches": lax_patches,
}
NAMES = tuple(_IMPLEMENTATIONS)


def get(name: str) -> Callable:
    """The ``conv_general_dilated`` function called ``name`` (one of ``NAMES``)."""
    try:
        return _IMPLEMENTATIONS[name]
    except KeyError as e:
        raise ValueError(f"unknown conv_impl {name!r}; valid choices: {', '.join(NAMES)}") from e


@contextlib.contextmanager
def convolutions(name: str):
    """Inside the block, flax's ``nn.Conv`` calls ``get(name)`` instead of
    ``lax.conv_general_dilated`` (flax looks the function up in its module's ``lax`` at trace
    time, and the conv modules leave ``conv_general_dilated`` unset); trace and compile the
    work inside the block. ``'xla'`` changes nothing."""
    fn = get(name)
    if fn is lax.conv_general_dilated:
        yield
        return
    shim = types.SimpleNamespace(**{k: getattr(lax, k) for k in dir(lax) if not k.startswith("_")})
    shim.conv_general_dilated = fn
    saved, flax_linear.lax = flax_linear.lax, shim
    try:
        yield
    finally:
        flax_linear.lax = saved
