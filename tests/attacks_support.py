"""Shared helpers for the attack tests: a tiny CNN in Flax and its PyTorch twin, Fashion-MNIST
from the Debian IDX files, and a few seconds of training (cached per process)."""

from __future__ import annotations

import functools
import gzip
import os

import flax.linen as nn
import jax
import numpy as np
import optax

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


def fashion_mnist(split: str, num: int) -> tuple[np.ndarray, np.ndarray]:
    """First ``num`` images (float32 NHWC in [0, 1]) and labels of a Fashion-MNIST split."""
    prefix = "train" if split == "train" else "t10k"
    with gzip.open(os.path.join(FASHION_MNIST_DIR, f"{prefix}-images-idx3-ubyte.gz")) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)
    with gzip.open(os.path.join(FASHION_MNIST_DIR, f"{prefix}-labels-idx1-ubyte.gz")) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return images[:num].astype(np.float32) / 255.0, labels[:num].astype(np.int32)


class TinyCNN(nn.Module):
    """Two stride-2 convs (explicit padding 1, as torch's ``padding=1``) and two dense layers."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train  # no BatchNorm/dropout; accepted for the models' calling convention
        x = (x - 0.5) / 0.5
        x = nn.relu(nn.Conv(8, (3, 3), (2, 2), padding=((1, 1), (1, 1)))(x))
        x = nn.relu(nn.Conv(16, (3, 3), (2, 2), padding=((1, 1), (1, 1)))(x))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(32)(x))
        return nn.Dense(10)(x)


@functools.lru_cache(maxsize=None)
def trained_tiny_cnn(num_train: int = 4000, epochs: int = 3, seed: int = 0):
    """(model, params) after a few seconds of Adam on ``num_train`` Fashion-MNIST images."""
    x, y = fashion_mnist("train", num_train)
    model = TinyCNN()
    params = model.init(jax.random.key(seed), x[:1])["params"]
    tx = optax.adam(3e-3)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, xb, yb):
        def loss_fn(p):
            logits = model.apply({"params": p}, xb)
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

        grads = jax.grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    rng = np.random.default_rng(seed)
    bs = 100
    for _ in range(epochs):
        perm = rng.permutation(num_train)
        for b in range(num_train // bs):
            idx = perm[b * bs : (b + 1) * bs]
            params, opt_state = step(params, opt_state, x[idx], y[idx])
    return model, params


def apply_fn_of(model, params):
    """``x -> logits`` as a jax Partial (weights are arguments of the compiled attacks)."""
    return jax.tree_util.Partial(functools.partial(_apply_params, model), params)


def _apply_params(model, params, x):
    return model.apply({"params": params}, x)


def torch_twin(params):
    """The same network in PyTorch (NCHW input), with the Flax weights copied in."""
    import torch

    class TorchTinyCNN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(1, 8, 3, 2, 1)
            self.conv2 = torch.nn.Conv2d(8, 16, 3, 2, 1)
            self.fc1 = torch.nn.Linear(7 * 7 * 16, 32)
            self.fc2 = torch.nn.Linear(32, 10)

        def forward(self, x):
            x = (x - 0.5) / 0.5
            x = torch.relu(self.conv1(x))
            x = torch.relu(self.conv2(x))
            x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # flatten in NHWC order, as Flax
            return self.fc2(torch.relu(self.fc1(x)))

    net = TorchTinyCNN()
    p = jax.tree.map(np.asarray, params)
    with torch.no_grad():
        for name in ("conv1", "conv2"):
            flax_name = {"conv1": "Conv_0", "conv2": "Conv_1"}[name]
            getattr(net, name).weight.copy_(
                torch.from_numpy(p[flax_name]["kernel"].transpose(3, 2, 0, 1).copy())
            )  # HWIO -> OIHW
            getattr(net, name).bias.copy_(torch.from_numpy(p[flax_name]["bias"]))
        for name, flax_name in (("fc1", "Dense_0"), ("fc2", "Dense_1")):
            getattr(net, name).weight.copy_(torch.from_numpy(p[flax_name]["kernel"].T.copy()))
            getattr(net, name).bias.copy_(torch.from_numpy(p[flax_name]["bias"]))
    return net.eval()


def to_nchw(x: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def to_nhwc(t) -> np.ndarray:
    return t.detach().numpy().transpose(0, 2, 3, 1)
