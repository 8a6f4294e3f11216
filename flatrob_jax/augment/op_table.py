"""Apply one op, chosen per image by a traced index, without paying for every op.

Policies (AutoAugment, RandAugment, TrivialAugment, AugMix) pick an op per image from a list.
Written as ``lax.switch`` and vmapped over the batch, XLA turns the switch into a select over
*all* branches: every image pays for every op (AugMix's 9 op slots x 9-13 ops). Here the ops are
grouped into three families that each share one computation:

  geometric  rotate, shear_x/y, translate_x/y (and identity): ONE affine warp with a per-image
             matrix (every geometric op is a matrix, see ``geometry``);
  enhance    brightness, color, contrast, sharpness: ONE blend with a per-image degenerate
             image and factor (see ``enhance``);
  lut        posterize, solarize, autocontrast, equalize, invert: ONE table lookup with a
             per-image table (see ``lut``).

so an op slot costs one warp + one blend + one lookup whatever the list length, and only the
families present in the list are built. Inactive families pass the image through unchanged,
so the result is exactly the chosen op (tests compare against the per-op functions).

Magnitudes, one float per image, in the units the op functions take: shear factor, translate
pixels, rotate degrees, enhance factor (1 = identity), posterize bits, solarize threshold in
levels (0..256); ignored by identity, autocontrast, equalize, invert.
"""

from typing import Sequence

import jax
import jax.numpy as jnp

from flatrob_jax.augment import enhance, geometry, lut

GEOMETRIC = ("shear_x", "shear_y", "translate_x", "translate_y", "rotate")
ENHANCE = ("brightness", "color", "contrast", "sharpness")
LOOKUP = ("posterize", "solarize", "autocontrast", "equalize", "invert")
OP_NAMES = ("identity",) + GEOMETRIC + ENHANCE + LOOKUP


def check_op_names(op_names: Sequence[str]) -> tuple:
    op_names = tuple(op_names)
    unknown = [n for n in op_names if n not in OP_NAMES]
    if unknown:
        raise ValueError(f"unknown op(s) {unknown}; valid choices: {', '.join(OP_NAMES)}")
    return op_names


def _matrix(name: str, magnitude, height: int, width: int) -> jnp.ndarray:
    if name == "shear_x":
        return geometry.shear_x_matrix(magnitude)
    if name == "shear_y":
        return geometry.shear_y_matrix(magnitude)
    if name == "translate_x":
        return geometry.translate_matrix(magnitude, 0.0)
    if name == "translate_y":
        return geometry.translate_matrix(0.0, magnitude)
    if name == "rotate":
        return geometry.rotate_matrix(magnitude, height, width)
    return geometry.identity_matrix()


def _degenerate(name: str, levels: jnp.ndarray) -> jnp.ndarray:
    if name == "brightness":
        return jnp.zeros_like(levels)
    if name == "color":
        return jnp.broadcast_to(enhance.grayscale(levels), levels.shape)
    if name == "contrast":
        return jnp.full_like(levels, enhance.contrast_mean(levels))
    return enhance.smooth(levels)


def _table(name: str, levels: jnp.ndarray, magnitude, hist) -> jnp.ndarray:
    c = levels.shape[-1]
    if name == "posterize":
        return lut.posterize_lut(magnitude, c)
    if name == "solarize":
        return lut.solarize_lut(magnitude, c)
    if name == "autocontrast":
        return lut.autocontrast_lut(levels)
    if name == "equalize":
        return lut.equalize_lut(levels, hist)
    return lut.invert_lut(c)


def _pick(op_index, candidates: dict, names: tuple):
    """candidates[name] for names[op_index] (chained selects; cheap for small per-image values,
    and for images the few candidates of one family)."""
    items = list(candidates.items())
    out = items[0][1]
    for name, value in items[1:]:
        out = jnp.where(op_index == names.index(name), value, out)
    return out


def apply_op(
    levels, op_index, magnitude, op_names: Sequence[str], interpolation: str = "nearest", fill=0.0
):
    """``op_names[op_index]`` applied to one image of levels with ``magnitude`` (family-fused)."""
    names = check_op_names(op_names)
    h, w, _ = levels.shape
    op_index = jnp.asarray(op_index, jnp.int32)
    magnitude = jnp.asarray(magnitude, jnp.float32)
    x = levels

    def member(family):
        present = [names.index(n) for n in names if n in family]
        return present, jnp.isin(op_index, jnp.asarray(present or [-1]))

    present, active = member(GEOMETRIC)
    if present:
        matrices = {n: _matrix(n, magnitude, h, w) for n in names if n in GEOMETRIC}
        warped = geometry.warp(x, _pick(op_index, matrices, names), interpolation, fill)
        x = jnp.where(active, warped, x)

    present, active = member(ENHANCE)
    if present:
        degenerate = _pick(op_index, {n: _degenerate(n, x) for n in names if n in ENHANCE}, names)
        x = jnp.where(active, enhance.blend(degenerate, x, jnp.where(active, magnitude, 1.0)), x)

    present, active = member(LOOKUP)
    if present:
        hist = lut.histogram(x) if "equalize" in names else None
        tables = {n: _table(n, x, magnitude, hist) for n in names if n in LOOKUP}
        x = jnp.where(active, lut.apply_lut(x, _pick(op_index, tables, names)), x)
    return x


def level_op(name: str, interpolation: str = "nearest", fill=0.0):
    """The single op ``name`` as ``f(levels, magnitude) -> levels`` (the reference the fused
    version is tested against, and the branches of the ``lax.switch`` baseline)."""
    check_op_names([name])
    if name == "identity":
        return lambda x, m: x
    if name in ("translate_x", "translate_y"):
        axis = 1 if name == "translate_x" else 0
        return lambda x, m: geometry.translate(x, m, axis, interpolation, fill)
    if name in GEOMETRIC:
        return lambda x, m: geometry.warp(
            x, _matrix(name, m, x.shape[0], x.shape[1]), interpolation, fill
        )
    if name in ENHANCE:
        return lambda x, m: enhance.blend(_degenerate(name, x), x, m)
    return lut.lut_op(name)


def apply_op_switch(
    levels, op_index, magnitude, op_names: Sequence[str], interpolation: str = "nearest", fill=0.0
):
    """Same result as ``apply_op`` via ``lax.switch`` over the ops (the design this module avoids:
    under vmap every branch runs for every image). Kept for tests and benchmarks."""
    names = check_op_names(op_names)
    branches = [level_op(n, interpolation, fill) for n in names]
    return jax.lax.switch(op_index, branches, levels, jnp.asarray(magnitude, jnp.float32))


__all__ = [
    "ENHANCE",
    "GEOMETRIC",
    "LOOKUP",
    "OP_NAMES",
    "SELECTS",
    "apply_op",
    "apply_ops",
    "apply_op_switch",
    "check_op_names",
    "level_op",
]


SELECTS = ("fused", "switch")


def apply_ops(
    levels,
    op_indices,
    magnitudes,
    op_names: Sequence[str],
    interpolation: str = "nearest",
    fill=0.0,
    select: str = "fused",
):
    """Apply the slots ``op_names[op_indices[s]]`` with ``magnitudes[s]`` in order s = 0, 1, ...
    (a ``lax.scan`` over slots, so compile time does not grow with the number of slots).

    ``select``: "fused" (``apply_op``; for vmapped batches) or "switch" (``apply_op_switch``; for
    code that runs one image at a time, e.g. under ``lax.map``, where only the chosen branch
    executes). Both give the same result."""
    if select not in SELECTS:
        raise ValueError(f"unknown select {select!r}; valid choices: {', '.join(SELECTS)}")
    slot_fn = apply_op if select == "fused" else apply_op_switch

    def step(x, slot):
        op_index, magnitude = slot
        return slot_fn(x, op_index, magnitude, op_names, interpolation, fill), None

    out, _ = jax.lax.scan(
        step, levels, (jnp.asarray(op_indices, jnp.int32), jnp.asarray(magnitudes, jnp.float32))
    )
    return out
