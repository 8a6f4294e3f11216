"""The offline default: Fashion-MNIST (Debian's dataset-fashion-mnist IDX files) with the
small CNN and the standard crop + flip augmentation.

    python -m flatrob_jax.train --config configs/fashion_mnist_cnn.py --workdir /tmp/fm
    python -m flatrob_jax.train --config configs/fashion_mnist_cnn.py:smoke --workdir /tmp/fm_smoke
"""
from flatrob_jax.configuration import base_config, shrink_for_smoke


def get_config(arg=None):
    c = base_config()
    c.seed = 0
    c.num_devices = -1
    c.dataset.name = "fashion_mnist"
    c.dataset.source = "idx"
    c.dataset.data_dir = "/usr/share/datasets/fashion-mnist"
    c.dataset.train_split = "train"
    c.dataset.eval_split = "test"
    c.dataset.image_size = (28, 28, 1)
    c.dataset.mean = (0.2860,)
    c.dataset.std = (0.3530,)
    c.dataset.num_train_examples = -1
    c.dataset.num_eval_examples = -1
    c.model.name = "cnn_small"
    c.model.dtype = "float32"
    c.augment.name = "standard"
    c.augment.crop_padding = 2
    c.augment.flip = True
    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 0.1
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = True
    c.optimizer.weight_decay = 5e-4
    c.optimizer.warmup_epochs = 0.5
    c.optimizer.schedule = "cosine"
    c.train.batch_size = 128
    c.train.eval_batch_size = 500
    c.train.num_epochs = 6.0
    c.train.num_steps = -1
    c.train.label_smoothing = 0.0
    c.log_every_steps = 100
    c.eval_every_steps = 1000
    c.checkpoint.every_steps = 500
    c.checkpoint.max_to_keep = 2
    if arg == "smoke":
        shrink_for_smoke(c, batch_size=64, num_train_examples=512, num_eval_examples=256,
                         num_steps=4, checkpoint_every_steps=2)
    elif arg not in (None, ""):
        raise ValueError(f"unknown config argument {arg!r}; valid: 'smoke' or none")
    return c
