"""The offline default: Fashion-MNIST (Debian's dataset-fashion-mnist IDX files, no download)
with the small CNN (73k parameters), crop (pad 2) + flip, SGD Nesterov, lr 0.1 after half an
epoch of warmup, cosine, 6 epochs.

    python -m flatrob_jax.train --config configs/fashion_mnist_cnn.py --workdir /tmp/fm

Expected: 91.03% test accuracy after 8 min 51 s of training on the 2-core CPU (677 img/s,
benchmarks/training.md). ``:smoke`` (4 steps on 512 images) checks the whole pipeline:
``--config configs/fashion_mnist_cnn.py:smoke`` took 17 s wall on the 2-core CPU, mostly
start-up and compilation.
"""

from flatrob_jax.configs import common


def get_config(arg=None):
    arg = common.parse(arg)
    c = common.base_config()
    c.seed = arg.seed
    common.set_dataset(c, "fashion_mnist")
    c.model.name = "cnn_small"
    c.augment.crop_padding = 2
    c.optimizer.warmup_epochs = 0.5
    c.train.eval_batch_size = 500
    c.train.num_epochs = 6.0
    c.eval_every_steps = 1000
    if arg.smoke:
        common.shrink_for_smoke(
            c,
            batch_size=64,
            num_train_examples=512,
            num_eval_examples=256,
            num_steps=4,
            checkpoint_every_steps=2,
        )
    return c
