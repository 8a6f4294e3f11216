"""RandAugment (Cubuk et al. 2020) and TrivialAugmentWide (Müller & Hutter 2021), as
torchvision's ``transforms.RandAugment`` / ``transforms.TrivialAugmentWide`` on PIL images.

Both draw ops uniformly from the same 14 ops (``magnitudes.RANDAUGMENT_OPS``, torchvision's
list and order) and negate signed magnitudes with probability 1/2:
  RandAugment         ``num_ops`` ops in sequence, all at bin ``magnitude`` of
                      ``num_magnitude_bins`` (defaults 2, 9, 31) of the "autoaugment" space;
  TrivialAugmentWide  one op at a bin drawn uniformly from ``num_magnitude_bins`` (31) of the
                      "trivialaugment_wide" space.
Interpolation defaults to nearest, as torchvision. ``magnitude`` may be a traced integer.
"""

import jax.numpy as jnp

from flatrob_jax.augment import magnitudes, op_table, sampling
from flatrob_jax.augment.levels import from_levels, to_levels

OPS = magnitudes.RANDAUGMENT_OPS


def _signed_magnitudes(draws, ops, bins, table, signed):
    negate = draws.bernoulli(ops.shape)
    raw = table[ops, bins]
    return magnitudes.to_op_magnitude(OPS, ops, jnp.where(signed[ops] & negate, -raw, raw))


def sample_randaugment(
    key, num_ops: int, magnitude, num_magnitude_bins: int, height: int, width: int
) -> dict:
    """``op_indices`` [num_ops] into OPS and ``magnitudes`` [num_ops] in ``op_table`` units."""
    table, signed = magnitudes.magnitude_table(
        OPS, num_magnitude_bins, "autoaugment", height, width
    )
    draws = sampling.Uniforms(key, 2 * num_ops)
    ops = draws.integers((num_ops,), 0, len(OPS))
    bins = jnp.full((num_ops,), magnitude, jnp.int32)
    return {"op_indices": ops, "magnitudes": _signed_magnitudes(draws, ops, bins, table, signed)}


def sample_trivialaugment(key, num_magnitude_bins: int, height: int, width: int) -> dict:
    """``op_indices`` [1], ``magnitudes`` [1] and the drawn ``bins`` [1] (for tests)."""
    table, signed = magnitudes.magnitude_table(
        OPS, num_magnitude_bins, "trivialaugment_wide", height, width
    )
    draws = sampling.Uniforms(key, 3)
    ops = draws.integers((1,), 0, len(OPS))
    bins = draws.integers((1,), 0, num_magnitude_bins)
    return {
        "op_indices": ops,
        "magnitudes": _signed_magnitudes(draws, ops, bins, table, signed),
        "bins": bins,
    }


def apply(image, params: dict, interpolation: str = "nearest", select: str = "fused"):
    """Apply sampled (or injected) choices to one [0, 1] image; output quantized to levels/255.
    ``select``: see ``op_table.apply_ops``."""
    levels = op_table.apply_ops(
        to_levels(image),
        params["op_indices"],
        params["magnitudes"],
        OPS,
        interpolation,
        select=select,
    )
    return from_levels(levels)


def randaugment(
    key,
    image,
    num_ops: int = 2,
    magnitude=9,
    num_magnitude_bins: int = 31,
    interpolation: str = "nearest",
    select: str = "fused",
):
    h, w, _ = image.shape
    return apply(
        image,
        sample_randaugment(key, num_ops, magnitude, num_magnitude_bins, h, w),
        interpolation,
        select,
    )


def trivialaugment(
    key, image, num_magnitude_bins: int = 31, interpolation: str = "nearest", select: str = "fused"
):
    h, w, _ = image.shape
    return apply(image, sample_trivialaugment(key, num_magnitude_bins, h, w), interpolation, select)


__all__ = [
    "OPS",
    "apply",
    "randaugment",
    "sample_randaugment",
    "sample_trivialaugment",
    "trivialaugment",
]
