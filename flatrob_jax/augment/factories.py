"""The built-in augmentations as factories: ``factory(**params) -> fn``.

``fn(key, images[B, H, W, C]) -> images`` takes one key (per-example keys are derived as
``fold_in(key, i)``) or B per-example keys; the label-mixing ones (mixup, cutmix) are
``fn(key, images, labels) -> (images, labels)``. Each factory validates its parameters (errors
name the config field, ``augment.<section>.<field>``) and its keyword defaults are the
defaults a config section starts from. ``registry`` maps names to these.
"""

import jax

from flatrob_jax.augment import augmix as augmix_lib
from flatrob_jax.augment import autoaugment as autoaugment_lib
from flatrob_jax.augment import geometry, mixing, regularizers, standard
from flatrob_jax.augment import randaugment as randaugment_lib
from flatrob_jax.augment.validation import (
    check_choice,
    check_range,
    is_concrete,
    op_select,
    resolve_execution,
)
from flatrob_jax.execution import as_example_keys


def per_example(image_fn):
    """Lift ``f(key, image) -> image`` to ``fn(key_or_keys, images)`` with per-example keys
    (vmapped: the simple ops have no per-image choice among ops)."""

    def fn(key, images):
        keys = as_example_keys(key, images.shape[0])
        return jax.vmap(image_fn)(keys, images)

    return fn


def batched_policy(sample_fn, apply_fn, execution: str):
    """Batched policy: choices sampled for the whole batch at once (vmapped elementwise math),
    then applied per image, vmapped or with ``lax.map`` (``execution``). Same result either way."""
    sequential = resolve_execution(execution) == "sequential"

    def fn(key, images):
        b, h, w, _ = images.shape
        keys = as_example_keys(key, b)
        params = jax.vmap(lambda k: sample_fn(k, h, w))(keys)
        if sequential:
            return jax.lax.map(lambda a: apply_fn(*a), (images, params))
        return jax.vmap(apply_fn)(images, params)

    return fn


def none():
    """The identity (no augmentation, not even the crop/flip)."""

    def fn(key, images):
        del key
        return images

    return fn


def crop_flip(padding: int = 4, flip: bool = True):
    """Random crop with zero ``padding`` plus (if ``flip``) a random horizontal flip."""
    check_range("standard", "padding", padding, 0, integer=True)
    return per_example(lambda k, x: standard.crop_flip(k, x, padding, flip))


def cutout(length: int = 16, fill: float = 0.0):
    """One ``length`` x ``length`` square per image set to ``fill``."""
    check_range("cutout", "length", length, 0, integer=True)
    check_range("cutout", "fill", fill, 0.0, 1.0)
    return per_example(lambda k, x: regularizers.cutout(k, x, length, fill))


def gaussian_noise(sigma: float = 0.1):
    """``clip(x + sigma * N(0, 1), 0, 1)``."""
    check_range("gaussian_noise", "sigma", sigma, 0.0)
    return per_example(lambda k, x: regularizers.gaussian_noise(k, x, sigma))


def autoaugment(policy: str = "cifar10", interpolation: str = "nearest", execution: str = "auto"):
    """AutoAugment with a learned ``policy`` (cifar10, imagenet, svhn)."""
    check_choice("autoaugment", "policy", policy, tuple(autoaugment_lib.POLICIES))
    check_choice("autoaugment", "interpolation", interpolation, geometry.INTERPOLATIONS)
    select = op_select(execution)
    return batched_policy(
        lambda k, h, w: autoaugment_lib.sample(k, policy, h, w),
        lambda x, p: autoaugment_lib.apply(x, p, policy, interpolation, select),
        execution,
    )


def randaugment(
    num_ops: int = 2,
    magnitude: int = 9,
    num_magnitude_bins: int = 31,
    interpolation: str = "nearest",
    execution: str = "auto",
):
    """RandAugment: ``num_ops`` uniform ops at bin ``magnitude`` of ``num_magnitude_bins``."""
    check_range("randaugment", "num_ops", num_ops, 0, integer=True)
    check_range("randaugment", "num_magnitude_bins", num_magnitude_bins, 1, integer=True)
    check_range("randaugment", "magnitude", magnitude, 0, num_magnitude_bins - 1, integer=True)
    check_choice("randaugment", "interpolation", interpolation, geometry.INTERPOLATIONS)
    select = op_select(execution)
    return batched_policy(
        lambda k, h, w: randaugment_lib.sample_randaugment(
            k, num_ops, magnitude, num_magnitude_bins, h, w
        ),
        lambda x, p: randaugment_lib.apply(x, p, interpolation, select),
        execution,
    )


def trivialaugment(
    num_magnitude_bins: int = 31, interpolation: str = "nearest", execution: str = "auto"
):
    """TrivialAugmentWide: one uniform op at a uniform bin."""
    check_range("trivialaugment", "num_magnitude_bins", num_magnitude_bins, 1, integer=True)
    check_choice("trivialaugment", "interpolation", interpolation, geometry.INTERPOLATIONS)
    select = op_select(execution)
    return batched_policy(
        lambda k, h, w: randaugment_lib.sample_trivialaugment(k, num_magnitude_bins, h, w),
        lambda x, p: randaugment_lib.apply(x, p, interpolation, select),
        execution,
    )


def augmix(
    severity=3,
    width: int = 3,
    depth: int = -1,
    alpha=1.0,
    all_ops: bool = False,
    interpolation: str = "bilinear",
    execution: str = "auto",
):
    """One AugMix view. Its training-only fields (``jsd``, ``consistency_weight``: three views
    and the Jensen-Shannon loss) are declared in its registry entry, not taken here."""
    check_range("augmix", "severity", severity, 1, augmix_lib.MAX_SEVERITY)
    check_range("augmix", "width", width, 1, integer=True)
    if is_concrete(depth) and (depth == 0 or depth > 10 or int(depth) != depth):
        raise ValueError(
            f"augment.augmix.depth={depth!r} is out of range; valid: -1 (random 1..3) or 1..10"
        )
    check_range("augmix", "alpha", alpha, 1e-6)
    check_choice("augmix", "interpolation", interpolation, geometry.INTERPOLATIONS)
    select = op_select(execution)
    return batched_policy(
        lambda k, h, w: augmix_lib.sample(
            k,
            h,
            w,
            severity=severity,
            width_chains=width,
            depth=depth,
            alpha=alpha,
            all_ops=all_ops,
        ),
        lambda x, p: augmix_lib.apply(
            x, p, all_ops=all_ops, interpolation=interpolation, select=select
        ),
        execution,
    )


def label_mixer(section: str, mix_fn):
    """Factory ``(alpha=1.0) -> fn(key, images, labels) -> (images, labels)`` for a batch-level
    ``mix_fn(keys, images, labels, alpha)`` (mixup, cutmix)."""

    def factory(alpha=1.0):
        check_range(section, "alpha", alpha, 1e-6)

        def fn(key, images, labels):
            keys = as_example_keys(key, images.shape[0])
            return mix_fn(keys, images, labels, alpha)

        return fn

    factory.__name__ = section
    return factory


mixup = label_mixer("mixup", mixing.mixup)
cutmix = label_mixer("cutmix", mixing.cutmix)

__all__ = [
    "augmix",
    "autoaugment",
    "batched_policy",
    "crop_flip",
    "cutmix",
    "cutout",
    "gaussian_noise",
    "label_mixer",
    "mixup",
    "none",
    "per_example",
    "randaugment",
    "trivialaugment",
]
