"""The ImageNet ResNet-50 zoo: RobustBench's ImageNet corruptions entries with the torchvision
ResNet-50 layout (NoisyMix, Stylized-ImageNet A/B/C, DeepAugment+AugMix, AugMix, standard) and
torchvision's ResNet50_Weights.IMAGENET1K_V1 and V2 (``flatrob_jax.torch_import.zoo``): each
run imports one checkpoint instead of training it; ImageNet-C from tfds
(imagenet2012_corrupted) with mCE normalized by AlexNet, clean accuracy on 5000 validation
images, AutoAttack at Linf 4/255 on 1000, flatness on 5000 training images.

    python -m flatrob_jax.sweep --sweep configs/sweeps/zoo_imagenet_resnet50.py \\
        --workdir /mnt/studies/zoo_imagenet_resnet50

``:wide_resnet50_2`` takes the zoo's one Wide ResNet-50-2 (Salman2020Do_50_2_Linf) instead.
Needs torch for the import, the network once to fetch the checkpoints into the zoo cache
($FLATROB_ZOO_CACHE, default ~/.cache/flatrob_jax/zoo), and tfds imagenet2012 and
imagenet2012_corrupted. The published numbers use RobustBench's resize-256 / crop-224
preprocessing (torchvision V2: resize 232), which may differ from this library's ImageNet eval
pipeline: compare the clean accuracies before reading the rest. Expected result and runtime:
not measured here (no network, GPU or ImageNet on this machine).
"""

from flatrob_jax.configs.sweeps.zoo_common import zoo_sweep


def get_sweep(arg=None):
    return zoo_sweep(
        base="../imagenet_resnet50.py",
        dataset="imagenet2012",
        threat_model=None,  # RobustBench's corruptions entries and torchvision's
        arch=arg or "resnet50",
        title="ImageNet ResNet-50 zoo: flatness vs robustness",
        extra={
            "analysis.num_train_examples": 5000,
            "analysis.num_test_examples": 5000,
            "analysis.corruptions.source": "imagenet2012_corrupted",
            "analysis.attacks.linf_eps": 4 / 255,
            "analysis.attacks.num_examples": 1000,
            "analysis.curvature.batch_size": 64,
        },
    )
