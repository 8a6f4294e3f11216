"""Magnitude bins as torchvision defines them (``transforms.autoaugment._augmentation_space``).

A policy draws a bin index per op slot; ``table[op, bin]`` is torchvision's unsigned magnitude,
``signed[op]`` whether it is negated with probability 1/2, and ``to_op_magnitude`` turns the
signed value into what ``op_table.apply_op`` takes: enhance factor ``1 + m``, translate
``int(m)`` (torchvision truncates toward zero), the rest as is.
"""

from typing import Sequence

import jax.numpy as jnp
import numpy as np

from flatrob_jax.augment.op_table import ENHANCE, check_op_names

# The op list RandAugment and TrivialAugmentWide sample from, in torchvision's order.
RANDAUGMENT_OPS = (
    "identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness",
    "color", "contrast", "sharpness", "posterize", "solarize", "autocontrast", "equalize",
)  # fmt: skip

SPACES = ("autoaugment", "trivialaugment_wide")


def _linspace(start: float, end: float, num: int) -> np.ndarray:
    """``torch.linspace`` in float32: ``start + i * step`` for the first half, ``end - (num - 1 - i)
    * step`` for the second (so bins match torchvision's to the last bit)."""
    if num == 1:
        return np.array([start], np.float32)
    start, end = np.float32(start), np.float32(end)
    step = (end - start) / np.float32(num - 1)
    i = np.arange(num, dtype=np.float32)
    return np.where(i < num // 2, start + i * step, end - (np.float32(num - 1) - i) * step).astype(
        np.float32
    )


def _ranges(space: str, height: int, width: int) -> dict:
    """op -> (max magnitude, signed) for the linspace(0, max) ops of a space."""
    if space == "autoaugment":  # AutoAugment and RandAugment share it
        shear, tx, ty, rot, enh = 0.3, 150.0 / 331.0 * width, 150.0 / 331.0 * height, 30.0, 0.9
    elif space == "trivialaugment_wide":
        shear, tx, ty, rot, enh = 0.99, 32.0, 32.0, 135.0, 0.99
    else:
        raise ValueError(f"unknown magnitude space {space!r}; valid choices: {', '.join(SPACES)}")
    out = {"shear_x": shear, "shear_y": shear, "translate_x": tx, "translate_y": ty, "rotate": rot}
    out.update({n: enh for n in ENHANCE})
    return out


def magnitude_table(op_names: Sequence[str], num_bins: int, space: str, height: int, width: int):
    """(table float32 [K, num_bins], signed bool [K]) for ``op_names`` (K ops)."""
    names = check_op_names(op_names)
    ranges = _ranges(space, height, width)
    posterize_span = 4 if space == "autoaugment" else 6
    bins = np.arange(num_bins, dtype=np.float32)
    table = np.zeros((len(names), num_bins), np.float32)
    signed = np.zeros(len(names), bool)
    for k, name in enumerate(names):
        if name in ranges:
            table[k] = _linspace(0.0, ranges[name], num_bins)
            signed[k] = True
        elif name == "posterize":
            step = np.float32((num_bins - 1) / posterize_span) if num_bins > 1 else np.float32(1)
            table[k] = 8 - np.round(bins / step)
        elif name == "solarize":
            table[k] = _linspace(255.0, 0.0, num_bins)
    return jnp.asarray(table), jnp.asarray(signed)


def to_op_magnitude(op_names: Sequence[str], op_index, magnitude):
    """Signed torchvision magnitude -> the value ``apply_op`` takes (see module docstring)."""
    names = check_op_names(op_names)
    is_enhance = jnp.asarray([n in ENHANCE for n in names])[op_index]
    is_translate = jnp.asarray([n.startswith("translate") for n in names])[op_index]
    magnitude = jnp.where(is_translate, jnp.trunc(magnitude), magnitude)
    return jnp.where(is_enhance, 1.0 + magnitude, magnitude)


__all__ = ["RANDAUGMENT_OPS", "SPACES", "magnitude_table", "to_op_magnitude"]
