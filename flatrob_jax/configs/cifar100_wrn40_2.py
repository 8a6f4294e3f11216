"""CIFAR-100 with WRN-40-2: the CIFAR-10 WRN-40-2 recipe (cifar10_wrn40_2.py, AugMix's) on
CIFAR-100; normalization and classes from the data catalog.

    python -m flatrob_jax.train --config configs/cifar100_wrn40_2.py --workdir /mnt/runs/c100_wrn \
        --config.dataset.data_dir=$TFDS_DATA_DIR --config.augment.name=augmix

Expected: not measured here (needs the tfds cifar100 data and an accelerator). ``:smoke`` runs
one step on 32 images.
"""

from flatrob_jax.configs import cifar10_wrn40_2, common


def get_config(arg=None):
    c = cifar10_wrn40_2.get_config(arg)
    common.set_dataset(c, "cifar100")
    return c
