"""CIFAR-10, WRN-40-2 (AugMix's recipe, 100 epochs), one run per augmentation; CIFAR-10-C
from tfds (cifar10_corrupted) and AutoAttack at 8/255 and 0.5.

    python -m flatrob_jax.sweep --sweep configs/sweeps/cifar10_wrn40_2_augmentations.py --workdir /mnt/studies/cifar10_wrn40_2_augmentations \
        --print_commands     # per-run training lines for a TPU pod or cluster
    python -m flatrob_jax.sweep --sweep configs/sweeps/cifar10_wrn40_2_augmentations.py --workdir /mnt/studies/cifar10_wrn40_2_augmentations
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from paper import paper_sweep  # noqa: E402


def get_sweep(arg=None):
    return paper_sweep(
        base="../cifar10_wrn40_2.py",
        title="CIFAR-10, WRN-40-2: flatness vs robustness across augmentations",
        extra={"analysis.corruptions.source": "cifar10_corrupted"},
        arg=arg)
