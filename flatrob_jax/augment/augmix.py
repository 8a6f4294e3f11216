"""AugMix (Hendrycks et al. 2020), following the authors' code (google-research/augmix).

Per image: ``width`` chains, each of ``depth`` ops (depth <= 0: drawn uniformly from 1..3 per
chain), ops uniform over the 9-op list (``all_ops``: 13, adding color, contrast, brightness,
sharpness); every op draws its own level ``u ~ U(0.1, severity)`` and maps it like the
reference ``augmentations.py`` (int() truncations included):
  posterize bits     4 - int(u * 4 / 10)
  rotate degrees     +-int(u * 30 / 10)               (bilinear, as the reference)
  solarize threshold 256 - int(u * 256 / 10)
  shear factor       +-u * 0.3 / 10
  translate pixels   +-int(u * (size / 3) / 10)      (the reference hard-codes size 32)
  enhance factor     u * 1.8 / 10 + 0.1
signs with probability 1/2. The chains (Pillow-exact uint8 ops) are mixed in float:
``(1 - m) x + m * sum_i w_i chain_i(x)`` with ``w ~ Dirichlet(alpha)``, ``m ~ Beta(alpha, alpha)``.
For the Jensen-Shannon consistency loss the train hook stacks [clean, augmix, augmix].
"""

import jax
import jax.numpy as jnp

from flatrob_jax.augment import op_table, sampling
from flatrob_jax.augment.levels import from_levels, to_levels

OPS = (
    "autocontrast",
    "equalize",
    "posterize",
    "rotate",
    "solarize",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
)
ALL_OPS = OPS + ("color", "contrast", "brightness", "sharpness")
MAX_SEVERITY = 10
MAX_RANDOM_DEPTH = 3


def op_names(all_ops: bool) -> tuple:
    """identity (for the unused slots of shorter chains) followed by the op list."""
    return ("identity",) + (ALL_OPS if all_ops else OPS)


def level_to_magnitude(names: tuple, op_index, level, negate, height: int, width: int):
    """The reference code's level -> magnitude maps (module docstring), in ``op_table`` units."""

    def trunc(v):
        return jnp.floor(v)  # int() of a non-negative value

    sign = jnp.where(negate, -1.0, 1.0)
    per_op = {
        "posterize": 4.0 - trunc(level * 4.0 / 10.0),
        "rotate": sign * trunc(level * 30.0 / 10.0),
        "solarize": 256.0 - trunc(level * 256.0 / 10.0),
        "shear_x": sign * level * 0.3 / 10.0,
        "shear_y": sign * level * 0.3 / 10.0,
        # the reference uses transform(..., (1, 0, t, 0, 1, 0)), i.e. our translate by -t
        "translate_x": -sign * trunc(level * (width / 3.0) / 10.0),
        "translate_y": -sign * trunc(level * (height / 3.0) / 10.0),
    }
    enhance_factor = level * 1.8 / 10.0 + 0.1
    values = jnp.stack(
        [per_op.get(n, enhance_factor if n in op_table.ENHANCE else 0.0 * level) for n in names]
    )
    return jnp.take_along_axis(values, op_index[None], axis=0)[0]


def sample(
    key,
    height: int,
    width: int,
    *,
    severity=3,
    width_chains: int = 3,
    depth: int = -1,
    alpha=1.0,
    all_ops: bool = False,
) -> dict:
    """Per-image choices: ``op_indices`` and ``magnitudes`` [width_chains, max_depth],
    ``weights`` [width_chains] (Dirichlet) and ``mix`` (Beta); plus ``depths`` and ``levels``."""
    names = op_names(all_ops)
    max_depth = depth if depth > 0 else MAX_RANDOM_DEPTH
    shape = (width_chains, max_depth)
    slots = width_chains * max_depth
    draws = sampling.Uniforms(
        key, (width_chains + 2) * sampling.GAMMA_UNIFORMS + width_chains + 3 * slots
    )
    alpha = jnp.asarray(alpha, jnp.float32)
    weights = draws.dirichlet(jnp.full((width_chains,), alpha))
    mix = draws.beta(alpha, alpha)
    if depth > 0:
        depths = jnp.full((width_chains,), depth, jnp.int32)
        draws.take((width_chains,))
    else:
        depths = draws.integers((width_chains,), 1, MAX_RANDOM_DEPTH + 1)
    ops = draws.integers(shape, 1, len(names))
    ops = jnp.where(jnp.arange(max_depth)[None, :] < depths[:, None], ops, 0)
    levels = 0.1 + draws.take(shape) * (jnp.asarray(severity, jnp.float32) - 0.1)
    negate = draws.take(shape) > 0.5
    mags = level_to_magnitude(names, ops, levels, negate, height, width)
    return {
        "op_indices": ops,
        "magnitudes": mags,
        "weights": weights,
        "mix": mix,
        "depths": depths,
        "levels": levels,
    }


def apply(
    image,
    params: dict,
    *,
    all_ops: bool = False,
    interpolation: str = "bilinear",
    select: str = "fused",
):
    """Mix the chains described by ``params`` (sampled or injected) into one [0, 1] image.
    ``select`` "fused": chains vmapped; "switch": chains one after another (``lax.map``) so each
    op slot runs only its chosen op (see ``op_table.apply_ops``)."""
    names = op_names(all_ops)
    levels = to_levels(image)
    m = params["mix"]
    if select == "switch":
        mixed_chains = from_levels(_mix_chains_one_by_one(levels, params, names, interpolation))
    else:

        def chain(o, mag):
            return op_table.apply_ops(levels, o, mag, names, interpolation, select=select)

        chains = jax.vmap(chain)(params["op_indices"], params["magnitudes"])
        mixed_chains = jnp.tensordot(params["weights"], from_levels(chains), axes=1)
    return (1.0 - m) * from_levels(levels) + m * mixed_chains


def _mix_chains_one_by_one(levels, params: dict, names: tuple, interpolation: str):
    """``sum_i w_i chain_i(levels)`` with each chain's slots run up to its last non-identity
    op only (a loop with a traced trip count), for code that runs one image at a time
    (``lax.map``): this skips the unused slots of short chains (with the two points below,
    0.7 -> ~0.3 ms per image of fixed cost at 224x224 on CPU, see benchmarks/augment.md)."""
    ops, mags, weights = params["op_indices"], params["magnitudes"], params["weights"]
    slots = ops.shape[1]
    used = jnp.max(jnp.where(ops != 0, jnp.arange(1, slots + 1), 0), axis=1)

    def slot(c, i, x):
        return op_table.apply_op_switch(x, ops[c, i], mags[c, i], names, interpolation)

    def chain(c):
        # the first slot reads ``levels`` directly: a loop starting from ``levels`` would
        # first copy it into the loop's buffer, once per chain (~0.08 ms at 224x224)
        first = slot(c, 0, levels)
        return jax.lax.fori_loop(1, used[c], lambda i, x: slot(c, i, x), first)

    # chains unrolled, so that their weighted sum is one pass over the image (6-9% faster at
    # 224x224 than accumulating in a loop over chains, for ~2 s more compile time)
    return sum(weights[c] * chain(c) for c in range(ops.shape[0]))


def augmix(
    key,
    image,
    *,
    severity=3,
    width_chains: int = 3,
    depth: int = -1,
    alpha=1.0,
    all_ops: bool = False,
    interpolation: str = "bilinear",
    select: str = "fused",
):
    """One image, one key: an AugMix view (float, not quantized)."""
    h, w, _ = image.shape
    params = sample(
        key,
        h,
        w,
        severity=severity,
        width_chains=width_chains,
        depth=depth,
        alpha=alpha,
        all_ops=all_ops,
    )
    return apply(image, params, all_ops=all_ops, interpolation=interpolation, select=select)


__all__ = [
    "ALL_OPS",
    "MAX_SEVERITY",
    "OPS",
    "apply",
    "augmix",
    "level_to_magnitude",
    "op_names",
    "sample",
]
