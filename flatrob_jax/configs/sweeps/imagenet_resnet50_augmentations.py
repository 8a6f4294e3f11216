"""ImageNet, ResNet-50 (90 epochs), the paper-scale design; ImageNet-C from tfds
(imagenet2012_corrupted), mCE normalized by AlexNet; flatness on 5000 training images.

    python -m flatrob_jax.sweep --sweep configs/sweeps/imagenet_resnet50_augmentations.py \
        --workdir /mnt/studies/imagenet_resnet50_augmentations

``--print_commands`` prints one line per run in dependency order (the same units a fleet
executor runs). The design is paper.py's: 17 label-preserving conditions, 3 seeds (5 for none
and crop + flip), none at the reference's training loss, and the intervention arm; 82 runs, 58
with ``:interventions=false``, 26 with ``:seeds=1``. Cost: not estimated (no ResNet-50 step
time has been measured). Expected result: not measured here (needs tfds imagenet2012 and
imagenet2012_corrupted and accelerators).
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
