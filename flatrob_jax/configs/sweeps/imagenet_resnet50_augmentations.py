"""ImageNet, ResNet-50 (90 epochs), one run per augmentation; ImageNet-C from tfds
(imagenet2012_corrupted), mCE normalized by AlexNet; flatness on 5000 training images.

    python -m flatrob_jax.sweep --sweep configs/sweeps/imagenet_resnet50_augmentations.py --workdir /mnt/studies/imagenet_resnet50_augmentations \
        --print_commands     # per-run training lines for a TPU pod or cluster
    python -m flatrob_jax.sweep --sweep configs/sweeps/imagenet_resnet50_augmentations.py --workdir /mnt/studies/imagenet_resnet50_augmentations
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from paper import paper_sweep  # noqa: E402


def get_sweep(arg=None):
    return paper_sweep(
        base="../imagenet_resnet50.py",
        title="ImageNet, ResNet-50: flatness vs robustness across augmentations",
        extra={"analysis.corruptions.source": "imagenet2012_corrupted", "analysis.attacks.linf_eps": 4 / 255, "analysis.attacks.num_examples": 5000, "analysis.curvature.batch_size": 64, "augment.autoaugment.policy": "imagenet"},
        arg=arg)
