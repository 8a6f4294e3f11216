"""AutoAugment (Cubuk et al. 2019) as torchvision's ``transforms.AutoAugment`` runs it on PIL
images.

Per image: pick one of the policy's sub-policies uniformly; each of its two (op, probability,
magnitude bin) entries is applied when ``u <= probability`` (u ~ U[0, 1)), with torchvision's
magnitude for that bin out of 10 (``magnitudes.magnitude_table``, space "autoaugment"),
negated with probability 1/2 for signed ops. Interpolation defaults to nearest, as torchvision.
"""

import jax.numpy as jnp
import numpy as np

from flatrob_jax.augment import magnitudes, op_table, sampling
from flatrob_jax.augment.levels import from_levels, to_levels

NUM_BINS = 10

# (op, probability, magnitude bin or None) pairs, torchvision's AutoAugmentPolicy tables.
POLICIES = {
    "cifar10": (
        (("invert", 0.1, None), ("contrast", 0.2, 6)),
        (("rotate", 0.7, 2), ("translate_x", 0.3, 9)),
        (("sharpness", 0.8, 1), ("sharpness", 0.9, 3)),
        (("shear_y", 0.5, 8), ("translate_y", 0.7, 9)),
        (("autocontrast", 0.5, None), ("equalize", 0.9, None)),
        (("shear_y", 0.2, 7), ("posterize", 0.3, 7)),
        (("color", 0.4, 3), ("brightness", 0.6, 7)),
        (("sharpness", 0.3, 9), ("brightness", 0.7, 9)),
        (("equalize", 0.6, None), ("equalize", 0.5, None)),
        (("contrast", 0.6, 7), ("sharpness", 0.6, 5)),
        (("color", 0.7, 7), ("translate_x", 0.5, 8)),
        (("equalize", 0.3, None), ("autocontrast", 0.4, None)),
        (("translate_y", 0.4, 3), ("sharpness", 0.2, 6)),
        (("brightness", 0.9, 6), ("color", 0.2, 8)),
        (("solarize", 0.5, 2), ("invert", 0.0, None)),
        (("equalize", 0.2, None), ("autocontrast", 0.6, None)),
        (("equalize", 0.2, None), ("equalize", 0.6, None)),
        (("color", 0.9, 9), ("equalize", 0.6, None)),
        (("autocontrast", 0.8, None), ("solarize", 0.2, 8)),
        (("brightness", 0.1, 3), ("color", 0.7, 0)),
        (("solarize", 0.4, 5), ("autocontrast", 0.9, None)),
        (("translate_y", 0.9, 9), ("translate_y", 0.7, 9)),
        (("autocontrast", 0.9, None), ("solarize", 0.8, 3)),
        (("equalize", 0.8, None), ("invert", 0.1, None)),
        (("translate_y", 0.7, 9), ("autocontrast", 0.9, None)),
    ),
    "imagenet": (
        (("posterize", 0.4, 8), ("rotate", 0.6, 9)),
        (("solarize", 0.6, 5), ("autocontrast", 0.6, None)),
        (("equalize", 0.8, None), ("equalize", 0.6, None)),
        (("posterize", 0.6, 7), ("posterize", 0.6, 6)),
        (("equalize", 0.4, None), ("solarize", 0.2, 4)),
        (("equalize", 0.4, None), ("rotate", 0.8, 8)),
        (("solarize", 0.6, 3), ("equalize", 0.6, None)),
        (("posterize", 0.8, 5), ("equalize", 1.0, None)),
        (("rotate", 0.2, 3), ("solarize", 0.6, 8)),
        (("equalize", 0.6, None), ("posterize", 0.4, 6)),
        (("rotate", 0.8, 8), ("color", 0.4, 0)),
        (("rotate", 0.4, 9), ("equalize", 0.6, None)),
        (("equalize", 0.0, None), ("equalize", 0.8, None)),
        (("invert", 0.6, None), ("equalize", 1.0, None)),
        (("color", 0.6, 4), ("contrast", 1.0, 8)),
        (("rotate", 0.8, 8), ("color", 1.0, 2)),
        (("color", 0.8, 8), ("solarize", 0.8, 7)),
        (("sharpness", 0.4, 7), ("invert", 0.6, None)),
        (("shear_x", 0.6, 5), ("equalize", 1.0, None)),
        (("color", 0.4, 0), ("equalize", 0.6, None)),
        (("equalize", 0.4, None), ("solarize", 0.2, 4)),
        (("solarize", 0.6, 5), ("autocontrast", 0.6, None)),
        (("invert", 0.6, None), ("equalize", 1.0, None)),
        (("color", 0.6, 4), ("contrast", 1.0, 8)),
        (("equalize", 0.8, None), ("equalize", 0.6, None)),
    ),
    "svhn": (
        (("shear_x", 0.9, 4), ("invert", 0.2, None)),
        (("shear_y", 0.9, 8), ("invert", 0.7, None)),
        (("equalize", 0.6, None), ("solarize", 0.6, 6)),
        (("invert", 0.9, None), ("equalize", 0.6, None)),
        (("equalize", 0.6, None), ("rotate", 0.9, 3)),
        (("shear_x", 0.9, 4), ("autocontrast", 0.8, None)),
        (("shear_y", 0.9, 8), ("invert", 0.4, None)),
        (("shear_y", 0.9, 5), ("solarize", 0.2, 6)),
        (("invert", 0.9, None), ("autocontrast", 0.8, None)),
        (("equalize", 0.6, None), ("rotate", 0.9, 3)),
        (("shear_x", 0.9, 4), ("solarize", 0.3, 3)),
        (("shear_y", 0.8, 8), ("invert", 0.7, None)),
        (("equalize", 0.9, None), ("translate_y", 0.6, 6)),
        (("invert", 0.9, None), ("equalize", 0.6, None)),
        (("contrast", 0.3, 3), ("rotate", 0.8, 4)),
        (("invert", 0.8, None), ("translate_y", 0.0, 2)),
        (("shear_y", 0.7, 6), ("solarize", 0.4, 8)),
        (("invert", 0.6, None), ("rotate", 0.8, 4)),
        (("shear_y", 0.3, 7), ("translate_x", 0.9, 3)),
        (("shear_x", 0.1, 6), ("invert", 0.6, None)),
        (("solarize", 0.7, 2), ("translate_y", 0.6, 7)),
        (("shear_y", 0.8, 4), ("invert", 0.8, None)),
        (("shear_x", 0.7, 9), ("translate_y", 0.8, 3)),
        (("shear_y", 0.8, 5), ("autocontrast", 0.7, None)),
        (("shear_x", 0.7, 2), ("invert", 0.1, None)),
    ),
}


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ValueError(
            f"unknown AutoAugment policy {policy!r}; valid choices: {', '.join(POLICIES)}"
        )
    return policy


def op_names(policy: str) -> tuple:
    """identity followed by the ops the policy uses (only their families get built)."""
    used = {entry[0] for pair in POLICIES[check_policy(policy)] for entry in pair}
    return ("identity",) + tuple(n for n in op_table.OP_NAMES if n in used)


def _policy_arrays(policy: str):
    names = op_names(policy)
    table = POLICIES[policy]
    ops = np.array([[names.index(e[0]) for e in pair] for pair in table], np.int32)
    probs = np.array([[e[1] for e in pair] for pair in table], np.float32)
    bins = np.array([[0 if e[2] is None else e[2] for e in pair] for pair in table], np.int32)
    return ops, probs, bins


def sample(key, policy: str, height: int, width: int) -> dict:
    """Per-image choices: ``op_indices`` [2] into ``op_names(policy)`` (identity where the entry
    is skipped), ``magnitudes`` [2] in ``op_table`` units, and ``sub_policy`` (for tests)."""
    names = op_names(policy)
    ops, probs, bins = (jnp.asarray(a) for a in _policy_arrays(policy))
    table, signed = magnitudes.magnitude_table(names, NUM_BINS, "autoaugment", height, width)
    draws = sampling.Uniforms(key, 5)
    sub = draws.integers((), 0, ops.shape[0])
    applied = draws.take((2,)) <= probs[sub]
    negate = draws.bernoulli((2,))
    op = jnp.where(applied, ops[sub], 0)
    raw = table[op, bins[sub]]
    m = jnp.where(signed[op] & negate, -raw, raw)
    return {
        "op_indices": op,
        "magnitudes": magnitudes.to_op_magnitude(names, op, m),
        "sub_policy": sub,
    }


def apply(image, params: dict, policy: str, interpolation: str = "nearest", select: str = "fused"):
    """Apply sampled (or injected) choices to one [0, 1] image; output quantized to levels/255.
    ``select``: see ``op_table.apply_ops``."""
    levels = op_table.apply_ops(
        to_levels(image),
        params["op_indices"],
        params["magnitudes"],
        op_names(policy),
        interpolation,
        select=select,
    )
    return from_levels(levels)


def autoaugment(
    key, image, policy: str = "cifar10", interpolation: str = "nearest", select: str = "fused"
):
    """One image, one key: AutoAugment with ``policy`` in POLICIES (cifar10, imagenet, svhn)."""
    h, w, _ = image.shape
    return apply(image, sample(key, policy, h, w), policy, interpolation, select)


__all__ = ["NUM_BINS", "POLICIES", "apply", "autoaugment", "check_policy", "op_names", "sample"]
