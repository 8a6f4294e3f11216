"""CIFAR-10 with PreAct ResNet-18 (He et al. 2016, identity mappings; the architecture of
much of the adversarial-robustness literature and of RobustBench's CIFAR-10 ResNet-18 entries):
the CIFAR-10 WRN-40-2 recipe (cifar10_wrn40_2.py) with PreAct ResNet-18 trained 200 epochs.

    python -m flatrob_jax.train --config configs/cifar10_preact_resnet18.py \
        --workdir /mnt/runs/c10_preact_r18 --config.dataset.data_dir=$TFDS_DATA_DIR \
        --config.augment.name=augmix

Expected: not measured here (needs the tfds cifar10 data and an accelerator). ``:smoke`` runs
one step on 32 images.
"""

from flatrob_jax.configs import cifar10_wrn40_2


def get_config(arg=None):
    c = cifar10_wrn40_2.get_config(arg)
    c.model.name = "preact_resnet18"
    c.train.num_epochs = 200.0
    return c
