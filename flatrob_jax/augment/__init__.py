"""On-device augmentations: a registry from names to batched, jittable functions.

``get_augment(name, **kw)`` returns ``fn(key, images[B,H,W,C]) -> images`` where ``key`` is one
key (per-example keys are derived with ``fold_in(key, i)``) or a batch of B per-example keys.
Batch-level augmentations that change labels (mixup, cutmix; listed in ``LABEL_MIXING``) return
``(images, labels)`` from ``fn(key, images, labels)``.

``build_train_augmentation(config.augment)`` turns the config into the training hook the train
step calls: ``TrainAugmentation.apply(keys[B], images, labels_onehot) -> (images, labels)``;
``num_views > 1`` means ``images`` come back stacked as ``[V, B, H, W, C]`` with the clean view
first (AugMix's Jensen-Shannon consistency loss, weighted by ``consistency_weight``).
``register(name, factory, ...)`` adds an augmentation that configs can then select.

Modules: ``registry`` (one spec per name, ``default_config``), ``factories`` (the built-in
ones), ``train_hook``, ``validation`` (parameter checks, execution modes), ``ops`` (the
single-image ops) and ``op_table`` (how policies avoid the vmap-of-switch cost). Per-example
keys are ``flatrob_jax.execution``'s (``example_keys``, ``as_example_keys``).

Every image op follows Pillow on uint8 images (what torchvision's policies run on); flips and
crop padding are dm-pix's. Which ops are written here rather than taken from dm-pix, and the
measured reason, is in docs/analyses.md (benchmarks/bench_augment_dmpix.py measures it).
"""

from flatrob_jax.augment import ops
from flatrob_jax.augment.registry import (
    LABEL_MIXING,
    AugmentSpec,
    default_config,
    get_augment,
    names,
    register,
    spec_of,
    unregister,
)
from flatrob_jax.augment.train_hook import TrainAugmentation, build_train_augmentation
from flatrob_jax.augment.validation import EXECUTIONS, resolve_execution

__all__ = [
    "EXECUTIONS",
    "LABEL_MIXING",
    "AugmentSpec",
    "TrainAugmentation",
    "build_train_augmentation",
    "default_config",
    "get_augment",
    "names",
    "ops",
    "register",
    "resolve_execution",
    "spec_of",
    "unregister",
]
