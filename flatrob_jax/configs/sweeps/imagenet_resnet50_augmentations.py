"""ImageNet, ResNet-50 (90 epochs), one run per augmentation; ImageNet-C from tfds
(imagenet2012_corrupted), mCE normalized by AlexNet; flatness on 5000 training images.

    python -m flatrob_jax.sweep --sweep configs/sweeps/imagenet_resnet50_augmentations.py \
        --workdir /mnt/studies/imagenet_resnet50_augmentations

``--print_commands`` prints the per-run training lines instead, to launch on a pod or cluster
into the same workdirs. ``:seeds`` trains every augmentation with seeds 0, 1 and 2. Expected
result and runtime: not measured here (needs tfds imagenet2012 and imagenet2012_corrupted and
accelerators).
"""

from flatrob_jax.configs.sweeps.paper import paper_sweep


def get_sweep(arg=None):
    return paper_sweep(
        base="../imagenet_resnet50.py",
        title="ImageNet, ResNet-50: flatness vs robustness across augmentations",
        extra={
            "analysis.corruptions.source": "imagenet2012_corrupted",
            "analysis.attacks.linf_eps": 4 / 255,
            "analysis.attacks.num_examples": 5000,
            "analysis.curvature.batch_size": 64,
            "augment.autoaugment.policy": "imagenet",
        },
        arg=arg,
    )
