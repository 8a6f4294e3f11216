"""The augmentation registry: one ``AugmentSpec`` per name, and the config every name reads.

A spec says everything the rest of the library needs to know about an augmentation: its
factory, the config section its parameters live in, whether it mixes labels, how many views
the train hook stacks (and which section fields switch that on and weight the consistency
loss), whether it takes ``execution``. ``build_train_augmentation`` and ``default_config``
read only these declarations, so an augmentation added with ``register()`` is selectable with
``--config.augment.name=<name>`` like the built-in ones.
"""

from collections.abc import Callable
from typing import NamedTuple

import ml_collections

from flatrob_jax.augment import factories
from flatrob_jax.augment.validation import check_range

_SECTION_IS_NAME = object()  # register()'s default: the section is named after the augmentation


class AugmentSpec(NamedTuple):
    """How one augmentation is built and used in training."""

    factory: Callable  # factory(**params) -> fn(key, images) or fn(key, images, labels)
    section: str | None = None  # config section (augment.<section>) with its parameters
    config: dict | None = None  # that section's default fields (added to default_config)
    label_mixing: bool = False  # fn(key, images, labels) -> (images, soft labels)
    execution_aware: bool = False  # the factory takes ``execution`` (augment.execution)
    num_views: int = 1  # views in training when multi-view is on: the clean one, then augmented
    views_field: str | None = None  # bool field of the section switching multi-view on
    consistency_weight: float = 0.0  # consistency-loss weight when multi-view ...
    consistency_weight_field: str | None = None  # ... or the section field that holds it
    crop_flip: bool = True  # in training, the shared crop/flip (augment.crop_padding/flip) first
    train_policy: bool = True  # False: in training it IS that crop/flip ("standard")

    @property
    def train_fields(self) -> tuple:
        """Section fields read by the train hook, not passed to the factory."""
        return tuple(f for f in (self.views_field, self.consistency_weight_field) if f is not None)

    def factory_params(self, params: dict) -> dict:
        """``params`` (a section's fields) without the train-only fields."""
        return {k: v for k, v in params.items() if k not in self.train_fields}

    def views(self, params: dict):
        """(num_views, consistency_weight) in training for a section's fields ``params``."""
        weight = self.consistency_weight
        if self.consistency_weight_field is not None:
            weight = params.get(self.consistency_weight_field, weight)
            check_range(self.section or "", self.consistency_weight_field, weight, 0.0)
        multi = self.num_views > 1 and bool(
            params.get(self.views_field, True) if self.views_field else True
        )
        return (self.num_views, float(weight)) if multi else (1, 0.0)


_REGISTRY: dict = {}
LABEL_MIXING: set = set()  # names of the label-mixing augmentations (kept in step by register)


def register(
    name: str,
    factory: Callable,
    *,
    label_mixing: bool = False,
    section=_SECTION_IS_NAME,
    config: dict | None = None,
    execution_aware: bool = False,
    num_views: int = 1,
    views_field: str | None = None,
    consistency_weight: float = 0.0,
    consistency_weight_field: str | None = None,
    crop_flip: bool = True,
    train_policy: bool = True,
) -> AugmentSpec:
    """Add (or replace) augmentation ``name``; returns its spec.

    ``factory(**params)`` returns ``fn(key, images) -> images`` (label-mixing:
    ``fn(key, images, labels) -> (images, labels)``). In training its parameters come from
    ``config.augment.<section>`` (``section`` defaults to ``name``) if the config has that
    section, else the factory's defaults; ``config`` (a dict of defaults) adds the section to
    ``default_config()`` so its fields can be set from the command line. See ``AugmentSpec``
    for the other fields.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"augmentation name must be a non-empty string; got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory for augmentation {name!r} must be callable; got {factory!r}")
    check_range(name, "num_views", num_views, 1, integer=True)
    if label_mixing and num_views > 1:
        raise ValueError(
            f"augmentation {name!r}: label_mixing with num_views={num_views} is not supported"
        )
    spec = AugmentSpec(
        factory=factory,
        section=name if section is _SECTION_IS_NAME else section,
        config=None if config is None else dict(config),
        label_mixing=label_mixing,
        execution_aware=execution_aware,
        num_views=num_views,
        views_field=views_field,
        consistency_weight=consistency_weight,
        consistency_weight_field=consistency_weight_field,
        crop_flip=crop_flip,
        train_policy=train_policy,
    )
    _REGISTRY[name] = spec
    if label_mixing:
        LABEL_MIXING.add(name)
    else:
        LABEL_MIXING.discard(name)
    return spec


def unregister(name: str) -> None:
    """Remove ``name`` (for tests and notebooks that register a temporary augmentation)."""
    spec_of(name)
    del _REGISTRY[name]
    LABEL_MIXING.discard(name)


def names() -> list:
    """Registered names, sorted."""
    return sorted(_REGISTRY)


def spec_of(name: str) -> AugmentSpec:
    """The spec of ``name``; raises ValueError naming the valid choices."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown augmentation {name!r}; valid choices: {', '.join(names())}")
    return _REGISTRY[name]


def get_augment(name: str, **kw) -> Callable:
    """Batched augmentation ``name`` built with parameters ``kw``: ``fn(key, images) -> images``,
    or ``fn(key, images, labels) -> (images, labels)`` for the names in ``LABEL_MIXING``.
    Raises ValueError naming the valid choices (names and out-of-range parameters).
    Training-only fields of a section (AugMix's ``jsd``, ``consistency_weight``) are accepted
    and ignored, so ``get_augment(name, **config.augment[name])`` works."""
    spec = spec_of(name)
    return spec.factory(**spec.factory_params(kw))


def default_config() -> ml_collections.ConfigDict:
    """Every augmentation field, with defaults; configs start from this and set ``name``.

    Each policy's parameters live in a section named after it (declared by its spec), so a
    locked config can switch policy from the command line (``--config.augment.name=augmix``)."""
    cfg = {
        "name": "standard",
        # how per-image choices run: "vectorized" (vmap; op slots family-fused), "sequential"
        # (lax.map; lax.switch runs only the chosen op) or "auto" (sequential on CPU only).
        # Same results either way; see benchmarks/augment.md for the speeds.
        "execution": "auto",
        "crop_padding": 4,  # the crop+flip applied before every policy (0 disables the crop)
        "flip": True,  # False for data whose label changes under a mirror (digits)
    }
    for name in names():
        spec = _REGISTRY[name]
        if spec.section and spec.config is not None:
            cfg[spec.section] = dict(spec.config)
    return ml_collections.ConfigDict(cfg)


def _register_builtins():
    register("none", factories.none, section=None, crop_flip=False)
    register("standard", factories.crop_flip, section=None, train_policy=False)
    register("cutout", factories.cutout, config={"length": 16, "fill": 0.0})
    register("gaussian_noise", factories.gaussian_noise, config={"sigma": 0.1})
    register(
        "autoaugment",
        factories.autoaugment,
        execution_aware=True,
        config={"policy": "cifar10", "interpolation": "nearest"},
    )
    register(
        "randaugment",
        factories.randaugment,
        execution_aware=True,
        config={"num_ops": 2, "magnitude": 9, "num_magnitude_bins": 31, "interpolation": "nearest"},
    )
    register(
        "trivialaugment",
        factories.trivialaugment,
        execution_aware=True,
        config={"num_magnitude_bins": 31, "interpolation": "nearest"},
    )
    register(
        "augmix",
        factories.augmix,
        execution_aware=True,
        # [clean, augmix, augmix] with the Jensen-Shannon consistency loss when augmix.jsd
        num_views=3,
        views_field="jsd",
        consistency_weight_field="consistency_weight",
        config={
            "severity": 3,
            "width": 3,
            "depth": -1,  # -1: uniform in 1..3 per chain
            "alpha": 1.0,
            "all_ops": False,  # True adds color, contrast, brightness, sharpness
            "interpolation": "bilinear",
            "jsd": True,  # train on [clean, augmix, augmix] with the Jensen-Shannon loss
            "consistency_weight": 12.0,
        },
    )
    register("mixup", factories.mixup, label_mixing=True, config={"alpha": 1.0})
    register("cutmix", factories.cutmix, label_mixing=True, config={"alpha": 1.0})


_register_builtins()

__all__ = [
    "LABEL_MIXING",
    "AugmentSpec",
    "default_config",
    "get_augment",
    "names",
    "register",
    "spec_of",
    "unregister",
]
