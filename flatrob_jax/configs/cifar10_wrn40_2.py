"""CIFAR-10 with WRN-40-2, AugMix's recipe (Hendrycks et al. 2020): SGD Nesterov 0.9, lr 0.1
cosine, weight decay 5e-4, batch 128, 100 epochs, crop (pad 4) + flip before the policy.

    python -m flatrob_jax.train --config configs/cifar10_wrn40_2.py --workdir /mnt/runs/c10_wrn \
        --config.dataset.data_dir=$TFDS_DATA_DIR --config.augment.name=augmix

Expected: not measured here (needs the tfds cifar10 data and an accelerator). ``:smoke`` runs
one step on 32 images.
"""

from flatrob_jax.configs import common


def get_config(arg=None):
    arg = common.parse(arg)
    c = common.base_config()
    c.seed = arg.seed
    common.set_dataset(c, "cifar10")
    c.dataset.source = "tfds"
    c.dataset.data_dir = ""  # the tfds default (TFDS_DATA_DIR or ~/tensorflow_datasets)
    c.model.name = "wrn40_2"
    c.augment.crop_padding = 4
    c.train.num_epochs = 100.0
    c.eval_every_steps = 3910  # about every 10 epochs (390 steps each)
    c.checkpoint.every_steps = 1955  # about every 5 epochs
    if arg.smoke:
        common.shrink_for_smoke(
            c, batch_size=8, num_train_examples=32, num_eval_examples=16, num_steps=1
        )
    return c
