"""CIFAR-10 with ResNet-18 (CIFAR stem): the CIFAR-10 WRN-40-2 recipe (cifar10_wrn40_2.py)
with ResNet-18 trained for 200 epochs.

    python -m flatrob_jax.train --config configs/cifar10_resnet18.py --workdir /mnt/runs/c10_r18 \
        --config.dataset.data_dir=$TFDS_DATA_DIR --config.augment.name=augmix

Expected: not measured here (needs the tfds cifar10 data and an accelerator; one train step
runs at 27071 img/s on an H100 at batch 128, benchmarks/training.md). ``:smoke`` runs one step
on 32 images.
"""

from flatrob_jax.configs import cifar10_wrn40_2


def get_config(arg=None):
    c = cifar10_wrn40_2.get_config(arg)
    c.model.name = "resnet18"
    c.train.num_epochs = 200.0
    return c
