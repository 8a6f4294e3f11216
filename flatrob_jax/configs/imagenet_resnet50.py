"""ImageNet (ILSVRC-2012) with ResNet-50: SGD Nesterov 0.9, lr 0.1 x batch/256 with 5 warmup
epochs then cosine, weight decay 1e-4, label smoothing 0.1, 90 epochs, batch 1024. Host
preprocessing: random-resized crop to 224 (train), resize + center crop (eval); the flip and
the policy run on device.

    python -m flatrob_jax.train --config configs/imagenet_resnet50.py --workdir /mnt/runs/in_r50 \
        --config.dataset.data_dir=/mnt/runs/tensorflow_datasets

Expected: not measured here (needs the prepared tfds imagenet2012 and a TPU/GPU pod).
``:smoke`` runs one step on 8 images shrunk to 32x32.
"""

from flatrob_jax.configs import common


def get_config(arg=None):
    arg = common.parse(arg)
    c = common.base_config()
    c.seed = arg.seed
    common.set_dataset(c, "imagenet2012")
    c.dataset.source = "tfds"
    c.dataset.data_dir = ""  # the tfds default (TFDS_DATA_DIR or ~/tensorflow_datasets)
    c.dataset.eval_split = "validation"
    c.model.name = "resnet50"
    c.augment.crop_padding = 0  # the random-resized crop already happened on the host
    c.optimizer.learning_rate = 0.4  # 0.1 x 1024 / 256
    c.optimizer.weight_decay = 1e-4
    c.optimizer.warmup_epochs = 5.0
    c.train.batch_size = 1024
    c.train.num_epochs = 90.0
    c.train.label_smoothing = 0.1
    c.eval_every_steps = 6255  # every 5 epochs (1251 steps per epoch)
    c.checkpoint.every_steps = 1251  # every epoch
    if arg.smoke:
        c.dataset.image_size = (32, 32, 3)  # tiny shapes for a CPU step
        common.shrink_for_smoke(
            c, batch_size=4, num_train_examples=8, num_eval_examples=4, num_steps=1
        )
    return c
