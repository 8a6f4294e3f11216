"""On-device augmentations: a registry from names to batched, jittable functions.

``get_augment(name, **kw)`` returns ``fn(key, images[B,H,W,C]) -> images`` where ``key`` is one
key (per-example keys are derived with ``fold_in(key, i)``) or a batch of B per-example keys.
Batch-level augmentations that change labels (mixup, cutmix; listed in ``LABEL_MIXING``) return
``(images, labels)`` from ``fn(key, images, labels)``.

``build_train_augmentation(config.augment)`` turns the config into the training hook the train
step calls: ``TrainAugmentation.apply(keys[B], images, labels_onehot) -> (images, labels)``;
``num_views > 1`` means ``images`` come back stacked as ``[V, B, H, W, C]`` with the clean view
first (AugMix's Jensen-Shannon consistency loss, weighted by ``consistency_weight``).

Every image op follows Pillow on uint8 images (what torchvision's policies run on); see
``ops`` for the single-image ops and ``op_table`` for how policies avoid the vmap-of-switch cost.
"""
import numbers
from typing import Callable, NamedTuple

import jax
import ml_collections

from flatrob_jax.augment import augmix as augmix_lib
from flatrob_jax.augment import autoaugment as autoaugment_lib
from flatrob_jax.augment import geometry, mixing, randaugment as randaugment_lib, regularizers, standard
from flatrob_jax.augment.keys import as_example_keys, example_keys


class TrainAugmentation(NamedTuple):
    apply: Callable  # (keys[B], images, labels_onehot) -> (images, labels)
    num_views: int = 1
    consistency_weight: float = 0.0
    label_preserving: bool = True


# ---------------------------------------------------------------------------------------------
# validation: clear errors naming the bad value and the valid ones


def _is_concrete(value) -> bool:
    return isinstance(value, (numbers.Number, bool))


def _path(policy: str, field: str) -> str:
    return f"augment.{policy}.{field}" if policy else f"augment.{field}"


def _check_range(policy: str, field: str, value, low, high=None, integer: bool = False):
    if not _is_concrete(value):
        return  # a traced or array magnitude: checked by whoever made it
    if integer and int(value) != value:
        raise ValueError(f"{_path(policy, field)} must be an integer; got {value!r}")
    too_low = value < low
    too_high = high is not None and value > high
    if too_low or too_high:
        valid = f"{low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{_path(policy, field)}={value!r} is out of range; valid: {valid}")


def _check_choice(policy: str, field: str, value, choices):
    if value not in choices:
        raise ValueError(f"{_path(policy, field)}={value!r} is not valid; valid choices: {', '.join(map(str, choices))}")


EXECUTIONS = ("auto", "vectorized", "sequential")


def resolve_execution(execution: str) -> str:
    """"auto" -> "sequential" on CPU, "vectorized" on GPU/TPU (benchmarks/augment.md: on CPU a
    vmapped gather/scatter costs more than looping over images, and a per-image loop lets
    ``lax.switch`` run only the chosen op; on accelerators the batch must stay vectorized)."""
    _check_choice("", "execution", execution, EXECUTIONS)
    if execution == "auto":
        return "sequential" if jax.default_backend() == "cpu" else "vectorized"
    return execution


def _select(execution: str) -> str:
    return "switch" if resolve_execution(execution) == "sequential" else "fused"


def _per_example(images_fn):
    """Lift ``f(key, image) -> image`` to ``fn(key_or_keys, images)`` with per-example keys
    (vmapped: the simple ops have no per-image choice among ops)."""

    def fn(key, images):
        keys = as_example_keys(key, images.shape[0])
        return jax.vmap(images_fn)(keys, images)

    return fn


# ---------------------------------------------------------------------------------------------
# factories: name -> factory(**kw) -> batched fn


def _none():
    def fn(key, images):
        del key
        return images

    return fn


def _standard(padding: int = 4, flip: bool = True):
    _check_range("standard", "padding", padding, 0, integer=True)
    return _per_example(lambda k, x: standard.crop_flip(k, x, padding, flip))


def _cutout(length: int = 16, fill: float = 0.0):
    _check_range("cutout", "length", length, 0, integer=True)
    _check_range("cutout", "fill", fill, 0.0, 1.0)
    return _per_example(lambda k, x: regularizers.cutout(k, x, length, fill))


def _gaussian_noise(sigma: float = 0.1):
    _check_range("gaussian_noise", "sigma", sigma, 0.0)
    return _per_example(lambda k, x: regularizers.gaussian_noise(k, x, sigma))


def _policy(sample_fn, apply_fn, execution: str):
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


def _autoaugment(policy: str = "cifar10", interpolation: str = "nearest", execution: str = "auto"):
    _check_choice("autoaugment", "policy", policy, tuple(autoaugment_lib.POLICIES))
    _check_choice("autoaugment", "interpolation", interpolation, geometry.INTERPOLATIONS)
    select = _select(execution)
    return _policy(
        lambda k, h, w: autoaugment_lib.sample(k, policy, h, w),
        lambda x, p: autoaugment_lib.apply(x, p, policy, interpolation, select),
        execution,
    )


def _randaugment(num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 31, interpolation: str = "nearest", execution: str = "auto"):
    _check_range("randaugment", "num_ops", num_ops, 0, integer=True)
    _check_range("randaugment", "num_magnitude_bins", num_magnitude_bins, 1, integer=True)
    _check_range("randaugment", "magnitude", magnitude, 0, num_magnitude_bins - 1, integer=True)
    _check_choice("randaugment", "interpolation", interpolation, geometry.INTERPOLATIONS)
    select = _select(execution)
    return _policy(
        lambda k, h, w: randaugment_lib.sample_randaugment(k, num_ops, magnitude, num_magnitude_bins, h, w),
        lambda x, p: randaugment_lib.apply(x, p, interpolation, select),
        execution,
    )


def _trivialaugment(num_magnitude_bins: int = 31, interpolation: str = "nearest", execution: str = "auto"):
    _check_range("trivialaugment", "num_magnitude_bins", num_magnitude_bins, 1, integer=True)
    _check_choice("trivialaugment", "interpolation", interpolation, geometry.INTERPOLATIONS)
    select = _select(execution)
    return _policy(
        lambda k, h, w: randaugment_lib.sample_trivialaugment(k, num_magnitude_bins, h, w),
        lambda x, p: randaugment_lib.apply(x, p, interpolation, select),
        execution,
    )


def _augmix(severity=3, width: int = 3, depth: int = -1, alpha=1.0, all_ops: bool = False, interpolation: str = "bilinear", execution: str = "auto", **train_only):
    """AugMix view; ``jsd`` / ``consistency_weight`` are read by build_train_augmentation."""
    unknown = set(train_only) - {"jsd", "consistency_weight"}
    if unknown:
        raise TypeError(f"unknown augmix argument(s) {sorted(unknown)}")
    _check_range("augmix", "severity", severity, 1, augmix_lib.MAX_SEVERITY)
    _check_range("augmix", "width", width, 1, integer=True)
    if _is_concrete(depth) and (depth == 0 or depth > 10 or int(depth) != depth):
        raise ValueError(f"augment.augmix.depth={depth!r} is out of range; valid: -1 (random 1..3) or 1..10")
    _check_range("augmix", "alpha", alpha, 1e-6)
    _check_choice("augmix", "interpolation", interpolation, geometry.INTERPOLATIONS)
    select = _select(execution)
    return _policy(
        lambda k, h, w: augmix_lib.sample(k, h, w, severity=severity, width_chains=width, depth=depth, alpha=alpha, all_ops=all_ops),
        lambda x, p: augmix_lib.apply(x, p, all_ops=all_ops, interpolation=interpolation, select=select),
        execution,
    )


def _label_mixer(name, mix_fn):
    def factory(alpha=1.0):
        _check_range(name, "alpha", alpha, 1e-6)

        def fn(key, images, labels):
            keys = as_example_keys(key, images.shape[0])
            return mix_fn(keys, images, labels, alpha)

        return fn

    return factory


_REGISTRY: dict = {
    "none": _none,
    "standard": _standard,
    "cutout": _cutout,
    "gaussian_noise": _gaussian_noise,
    "autoaugment": _autoaugment,
    "randaugment": _randaugment,
    "trivialaugment": _trivialaugment,
    "augmix": _augmix,
    "mixup": _label_mixer("mixup", mixing.mixup),
    "cutmix": _label_mixer("cutmix", mixing.cutmix),
}
LABEL_MIXING: set = {"mixup", "cutmix"}


def names():
    return sorted(_REGISTRY)


def register(name: str, factory: Callable, *, label_mixing: bool = False):
    _REGISTRY[name] = factory
    if label_mixing:
        LABEL_MIXING.add(name)


def _check_name(name: str):
    if name not in _REGISTRY:
        raise ValueError(f"unknown augmentation {name!r}; valid choices: {', '.join(names())}")


def get_augment(name: str, **kw) -> Callable:
    """Batched augmentation by name; raises ValueError naming the valid choices (names and
    out-of-range parameters)."""
    _check_name(name)
    return _REGISTRY[name](**kw)


def default_config() -> ml_collections.ConfigDict:
    """Every augmentation field, with defaults; configs start from this and set ``name``.

    Each policy's parameters live in a section named after it, so a locked config can switch
    policy from the command line (``--config.augment.name=augmix``)."""
    return ml_collections.ConfigDict(
        {
            "name": "standard",
            # how per-image choices run: "vectorized" (vmap; op slots family-fused), "sequential"
            # (lax.map; lax.switch runs only the chosen op) or "auto" (sequential on CPU only).
            # Same results either way; see benchmarks/augment.md for the speeds.
            "execution": "auto",
            "crop_padding": 4,  # the crop+flip applied before every policy (0 disables the crop)
            "flip": True,  # False for data whose label changes under a mirror (digits)
            "cutout": {"length": 16, "fill": 0.0},
            "gaussian_noise": {"sigma": 0.1},
            "autoaugment": {"policy": "cifar10", "interpolation": "nearest"},
            "randaugment": {"num_ops": 2, "magnitude": 9, "num_magnitude_bins": 31, "interpolation": "nearest"},
            "trivialaugment": {"num_magnitude_bins": 31, "interpolation": "nearest"},
            "augmix": {
                "severity": 3,
                "width": 3,
                "depth": -1,  # -1: uniform in 1..3 per chain
                "alpha": 1.0,
                "all_ops": False,  # True adds color, contrast, brightness, sharpness
                "interpolation": "bilinear",
                "jsd": True,  # train on [clean, augmix, augmix] with the Jensen-Shannon loss
                "consistency_weight": 12.0,
            },
            "mixup": {"alpha": 1.0},
            "cutmix": {"alpha": 1.0},
        }
    )


_EXECUTION_AWARE = ("autoaugment", "randaugment", "trivialaugment", "augmix")


def _section(cfg, name):
    if name in ("none", "standard"):
        return {}
    kw = dict(cfg[name])
    if name in _EXECUTION_AWARE:
        kw["execution"] = cfg.execution
    return kw


def build_train_augmentation(cfg: ml_collections.ConfigDict) -> TrainAugmentation:
    """The train-step hook for ``config.augment``: crop/flip (``crop_padding``, ``flip``), then the
    named policy with the parameters in its section. Keys: the crop/flip uses
    ``fold_in(key_i, 0)``, the policy ``fold_in(key_i, 1)`` (and ``2`` for AugMix's second view)."""
    _check_name(cfg.name)
    _check_range("", "crop_padding", cfg.crop_padding, 0, integer=True)
    resolve_execution(cfg.execution)
    if cfg.name == "none":
        return TrainAugmentation(apply=lambda keys, x, y: (x, y))
    base = _standard(cfg.crop_padding, cfg.flip)
    kw = _section(cfg, cfg.name)
    num_views, weight = 1, 0.0
    if cfg.name == "augmix":
        jsd = kw.pop("jsd")
        weight = float(kw.pop("consistency_weight"))
        _check_range("augmix", "consistency_weight", weight, 0.0)
        num_views = 3 if jsd else 1
        weight = weight if jsd else 0.0
    policy = None if cfg.name == "standard" else get_augment(cfg.name, **kw)
    mixes_labels = cfg.name in LABEL_MIXING

    def derive(keys, i):
        return jax.vmap(lambda k: jax.random.fold_in(k, i))(keys)

    def apply(keys, images, labels):
        images = base(derive(keys, 0), images)
        if policy is None:
            return images, labels
        if mixes_labels:
            return policy(derive(keys, 1), images, labels)
        if num_views == 3:
            # both AugMix views in one call (one traced policy, twice the batch)
            both = jax.numpy.concatenate([derive(keys, 1), derive(keys, 2)])
            augmented = policy(both, jax.numpy.concatenate([images, images]))
            views = [images, augmented[: images.shape[0]], augmented[images.shape[0] :]]
            return jax.numpy.stack(views), labels
        return policy(derive(keys, 1), images), labels

    return TrainAugmentation(apply=apply, num_views=num_views, consistency_weight=weight, label_preserving=not mixes_labels)


__all__ = [
    "EXECUTIONS",
    "LABEL_MIXING",
    "TrainAugmentation",
    "as_example_keys",
    "build_train_augmentation",
    "default_config",
    "example_keys",
    "get_augment",
    "names",
    "register",
    "resolve_execution",
]
