"""CIFAR-10, ResNet-18 (200 epochs), one run per augmentation; CIFAR-10-C from tfds.

    python -m flatrob_jax.sweep --sweep configs/sweeps/cifar10_resnet18_augmentations.py --workdir /mnt/studies/cifar10_resnet18_augmentations \
        --print_commands     # per-run training lines for a TPU pod or cluster
    python -m flatrob_jax.sweep --sweep configs/sweeps/cifar10_resnet18_augmentations.py --workdir /mnt/studies/cifar10_resnet18_augmentations
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from paper import paper_sweep  # noqa: E402


def get_sweep(arg=None):
    return paper_sweep(
        base="../cifar10_resnet18.py",
        title="CIFAR-10, ResNet-18: flatness vs robustness across augmentations",
        extra={"analysis.corruptions.source": "cifar10_corrupted"},
        arg=arg)
