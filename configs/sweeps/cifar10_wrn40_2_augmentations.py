"""CIFAR-10, WRN-40-2 (AugMix's recipe, 100 epochs), one run per augmentation; CIFAR-10-C
from tfds (cifar10_corrupted) and AutoAttack at 8/255 and 0.5.

    python -m flatrob_jax.sweep --sweep configs/sweeps/cifar10_wrn40_2_augmentations.py --workdir gs://bucket/cifar10_wrn40_2_augmentations \
        --print_commands     # per-run training lines for a TPU pod or cluster
    python -m flatrob_jax.sweep --sweep configs/sweeps/cifar10_wrn40_2_augmentations.py --workdir gs://bucket/cifar10_wrn40_2_augmentations
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from paper import ANALYSIS, AUGMENTATIONS  # noqa: E402

from flatrob_jax.sweep import Sweep, product  # noqa: E402


def get_sweep(arg=None):
    overrides = dict(ANALYSIS)
    overrides.update({"analysis.corruptions.source": "cifar10_corrupted"})
    seeds = (0, 1, 2) if arg == "seeds" else (0,)
    if arg not in (None, "", "seeds"):
        raise ValueError(f"unknown sweep argument {arg!r}; valid: 'seeds' or none")
    return Sweep(
        base="../cifar10_wrn40_2.py",
        overrides=overrides,
        runs=product(**{"augment.name": list(AUGMENTATIONS), "seed": list(seeds)}),
        title="CIFAR-10, WRN-40-2: flatness vs robustness across augmentations",
    )
