"""ImageNet (ILSVRC-2012) with ResNet-50: SGD Nesterov 0.9, lr 0.1 x batch/256 with 5 warmup
epochs then cosine, weight decay 1e-4, label smoothing 0.1, 90 epochs, batch 1024. Host
preprocessing: random-resized crop to 224 (train), resize + center crop (eval); the flip and
the policy run on device.

    python -m flatrob_jax.train --config configs/imagenet_resnet50.py --workdir /mnt/runs/in_r50 \
        --config.dataset.data_dir=/mnt/runs/tensorflow_datasets
"""
from flatrob_jax.configuration import base_config, shrink_for_smoke


def get_config(arg=None):
    c = base_config()
    c.seed = 0
    c.num_devices = -1
    c.dataset.name = "imagenet2012"
    c.dataset.source = "tfds"
    c.dataset.data_dir = ""
    c.dataset.train_split = "train"
    c.dataset.eval_split = "validation"
    c.dataset.image_size = (224, 224, 3)
    c.dataset.mean = (0.485, 0.456, 0.406)
    c.dataset.std = (0.229, 0.224, 0.225)
    c.dataset.num_train_examples = -1
    c.dataset.num_eval_examples = -1
    c.model.name = "resnet50"
    c.model.dtype = "float32"
    c.augment.name = "standard"
    c.augment.crop_padding = 0  # the random-resized crop already happened on the host
    c.augment.flip = True
    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 0.4  # 0.1 x 1024 / 256
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = True
    c.optimizer.weight_decay = 1e-4
    c.optimizer.warmup_epochs = 5.0
    c.optimizer.schedule = "cosine"
    c.train.batch_size = 1024
    c.train.eval_batch_size = 1000
    c.train.num_epochs = 90.0
    c.train.num_steps = -1
    c.train.label_smoothing = 0.1
    c.log_every_steps = 100
    c.eval_every_steps = 6255  # every 5 epochs
    c.checkpoint.every_steps = 1251  # every epoch
    c.checkpoint.max_to_keep = 2
    if arg == "smoke":
        c.dataset.image_size = (32, 32, 3)  # tiny shapes for a CPU step
        shrink_for_smoke(c, batch_size=4, num_train_examples=8, num_eval_examples=4,
                         num_steps=1)
    elif arg not in (None, ""):
        raise ValueError(f"unknown config argument {arg!r}; valid: 'smoke' or none")
    return c
