"""CIFAR-10 with WRN-40-2, AugMix's recipe (Hendrycks et al. 2020): SGD Nesterov 0.9, lr 0.1
cosine, weight decay 5e-4, batch 128, 100 epochs."""
from flatrob_jax.configuration import base_config, shrink_for_smoke


def get_config(arg=None):
    c = base_config()
    c.seed = 0
    c.num_devices = -1
    c.dataset.name = "cifar10"
    c.dataset.source = "tfds"
    c.dataset.data_dir = ""
    c.dataset.train_split = "train"
    c.dataset.eval_split = "test"
    c.dataset.image_size = (32, 32, 3)
    c.dataset.mean = (0.4914, 0.4822, 0.4465)
    c.dataset.std = (0.2470, 0.2435, 0.2616)
    c.dataset.num_train_examples = -1
    c.dataset.num_eval_examples = -1
    c.model.name = "wrn40_2"
    c.model.dtype = "float32"
    c.augment.name = "standard"
    c.augment.crop_padding = 4
    c.augment.flip = True
    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 0.1
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = True
    c.optimizer.weight_decay = 5e-4
    c.optimizer.warmup_epochs = 0.0
    c.optimizer.schedule = "cosine"
    c.train.batch_size = 128
    c.train.eval_batch_size = 1000
    c.train.num_epochs = 100.0
    c.train.num_steps = -1
    c.train.label_smoothing = 0.0
    c.log_every_steps = 100
    c.eval_every_steps = 3910
    c.checkpoint.every_steps = 1955
    c.checkpoint.max_to_keep = 2
    if arg == "smoke":
        shrink_for_smoke(c, batch_size=8, num_train_examples=32, num_eval_examples=16,
                         num_steps=1)
    elif arg not in (None, ""):
        raise ValueError(f"unknown config argument {arg!r}; valid: 'smoke' or none")
    return c
