"""The training hook: ``config.augment`` -> the function the train step calls on each batch.

``build_train_augmentation(config.augment)`` reads only the registry's declarations (see
``registry.AugmentSpec``), so every registered augmentation, built-in or added with
``register()``, is built the same way:

  1. the shared random crop + flip (``crop_padding``, ``flip``) unless the spec opts out
     (``none``), with keys ``fold_in(key_i, 0)``;
  2. the augmentation with the parameters in its config section (or its factory's defaults
     when the config has no such section), keys ``fold_in(key_i, 1)``; a multi-view one
     (AugMix with ``jsd``) stacks ``[clean, view 1, view 2, ...]`` with view v drawn from
     ``fold_in(key_i, v)``, all views in one call of the policy.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from flatrob_jax.augment import factories, registry
from flatrob_jax.augment.validation import check_range, resolve_execution


class TrainAugmentation(NamedTuple):
    """What the train step needs: ``apply(keys[B], images, labels_onehot) -> (images, labels)``;
    with ``num_views > 1`` images come back as ``[V, B, H, W, C]``, the clean view first, and
    the loss adds ``consistency_weight`` times the views' Jensen-Shannon divergence."""

    apply: Callable
    num_views: int = 1
    consistency_weight: float = 0.0
    label_preserving: bool = True


def section_params(cfg: ml_collections.ConfigDict, spec: registry.AugmentSpec) -> dict:
    """The fields of ``spec``'s config section, or {} when the config has none (the factory's
    defaults then apply)."""
    if spec.section is None or spec.section not in cfg:
        return {}
    return dict(cfg[spec.section])


def _derive(keys, i):
    return jax.vmap(lambda k: jax.random.fold_in(k, i))(keys)


def build_train_augmentation(cfg: ml_collections.ConfigDict) -> TrainAugmentation:
    """The train-step hook for ``config.augment`` (see the module docstring for the keys).

    Raises ValueError naming the valid choices for an unknown ``cfg.name`` and for
    out-of-range parameters (``augment.<section>.<field>=value``)."""
    spec = registry.spec_of(cfg.name)
    check_range("", "crop_padding", cfg.crop_padding, 0, integer=True)
    resolve_execution(cfg.execution)
    params = section_params(cfg, spec)
    num_views, weight = spec.views(params)
    base = factories.crop_flip(cfg.crop_padding, cfg.flip) if spec.crop_flip else None
    policy = None
    if spec.train_policy:
        kw = spec.factory_params(params)
        if spec.execution_aware:
            kw["execution"] = cfg.execution
        policy = spec.factory(**kw)
    mixes_labels = spec.label_mixing

    def apply(keys, images, labels):
        if base is not None:
            images = base(_derive(keys, 0), images)
        if policy is None:
            return images, labels
        if mixes_labels:
            return policy(_derive(keys, 1), images, labels)
        if num_views == 1:
            return policy(_derive(keys, 1), images), labels
        # every augmented view in one call (one traced policy, (V - 1) times the batch)
        b = images.shape[0]
        view_keys = jnp.concatenate([_derive(keys, v) for v in range(1, num_views)])
        augmented = policy(view_keys, jnp.concatenate([images] * (num_views - 1)))
        views = [images] + [augmented[v * b : (v + 1) * b] for v in range(num_views - 1)]
        return jnp.stack(views), labels

    return TrainAugmentation(
        apply=apply,
        num_views=num_views,
        consistency_weight=weight,
        label_preserving=not mixes_labels,
    )


__all__ = ["TrainAugmentation", "build_train_augmentation", "section_params"]
