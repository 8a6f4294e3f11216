"""On-device augmentations: a registry from names to batched, jittable functions.

``get_augment(name, **kw)`` returns ``fn(key, images[B,H,W,C]) -> images`` where ``key`` is one
key (per-example keys are derived with ``fold_in(key, i)``) or a batch of B per-example keys.
Batch-level augmentations that change labels (mixup, cutmix) return ``(images, labels)`` from
``fn(key, images, labels)``; their docstrings say so.

``build_train_augmentation(config.augment)`` turns the config into the training hook the train
step calls: ``TrainAugmentation.apply(keys[B], images, labels_onehot) -> (images, labels)``;
``num_views > 1`` means ``images`` come back stacked as ``[V, B, H, W, C]`` with the clean view
first (AugMix's Jensen-Shannon consistency loss, weighted by ``consistency_weight``).
"""
from typing import Callable, NamedTuple

import jax
import ml_collections

from flatrob_jax.augment import standard
from flatrob_jax.augment.keys import as_example_keys, example_keys


class TrainAugmentation(NamedTuple):
    apply: Callable  # (keys[B], images, labels_onehot) -> (images, labels)
    num_views: int = 1
    consistency_weight: float = 0.0
    label_preserving: bool = True


def _none(**kw):
    def fn(key, images):
        del key
        return images

    return fn


def _standard(padding: int = 4, flip: bool = True):
    def fn(key, images):
        keys = as_example_keys(key, images.shape[0])
        return jax.vmap(lambda k, x: standard.crop_flip(k, x, padding, flip))(keys, images)

    return fn


# name -> factory(**kw) -> fn(key, images) -> images. Label-changing ones are listed in
# LABEL_MIXING and take (key, images, labels).
_REGISTRY: dict = {
    "none": _none,
    "standard": _standard,
}
LABEL_MIXING: set = set()


def names():
    return sorted(_REGISTRY)


def register(name: str, factory: Callable, *, label_mixing: bool = False):
    _REGISTRY[name] = factory
    if label_mixing:
        LABEL_MIXING.add(name)


def get_augment(name: str, **kw) -> Callable:
    """Batched augmentation by name; raises ValueError naming the valid choices."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown augmentation {name!r}; valid choices: {', '.join(names())}")
    return _REGISTRY[name](**kw)


def default_config() -> ml_collections.ConfigDict:
    """Every augmentation field, with defaults; configs start from this and set ``name``."""
    return ml_collections.ConfigDict(
        {
            "name": "standard",
            "crop_padding": 4,  # the crop+flip applied before every policy (0 disables the crop)
            "flip": True,  # False for data whose label changes under a mirror (digits)
        }
    )


def build_train_augmentation(cfg: ml_collections.ConfigDict) -> TrainAugmentation:
    """The train-step hook for ``config.augment`` (crop/flip, then the named policy)."""
    base = _standard(cfg.crop_padding, cfg.flip)
    if cfg.name in ("standard",):
        policy = None
    elif cfg.name == "none":
        return TrainAugmentation(apply=lambda keys, x, y: (x, y))
    else:
        policy = get_augment(cfg.name)

    def apply(keys, images, labels):
        k_base = jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys)
        images = base(k_base, images)
        if policy is not None:
            k_pol = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
            images = policy(k_pol, images)
        return images, labels

    return TrainAugmentation(apply=apply)


__all__ = [
    "TrainAugmentation",
    "as_example_keys",
    "build_train_augmentation",
    "default_config",
    "example_keys",
    "get_augment",
    "names",
    "register",
]
