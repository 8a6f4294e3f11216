"""CIFAR-100, WRN-40-2, one run per augmentation; CIFAR-100-C from the released .npy files
(set analysis.corruptions.data_dir to the CIFAR-100-C directory).

    python -m flatrob_jax.sweep --sweep configs/sweeps/cifar100_wrn40_2_augmentations.py --workdir /mnt/studies/cifar100_wrn40_2_augmentations \
        --print_commands     # per-run training lines for a TPU pod or cluster
    python -m flatrob_jax.sweep --sweep configs/sweeps/cifar100_wrn40_2_augmentations.py --workdir /mnt/studies/cifar100_wrn40_2_augmentations
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from paper import paper_sweep  # noqa: E402


def get_sweep(arg=None):
    return paper_sweep(
        base="../cifar100_wrn40_2.py",
        title="CIFAR-100, WRN-40-2: flatness vs robustness across augmentations",
        extra={"analysis.corruptions.source": "npy", "analysis.corruptions.data_dir": "CIFAR-100-C"},
        arg=arg)
