"""Training images/s: our jitted data-parallel step vs the same model and step in PyTorch.

    python benchmarks/bench_train.py [--models cnn_small,resnet18] [--batch 128] [--steps 20]

Both sides: SGD Nesterov momentum 0.9 with weight decay, cross-entropy, BatchNorm in train
mode, random crop + flip applied to the batch (ours on device inside the step; PyTorch on
the batch tensor, also on device), synthetic uint8 images. Timed after warm-up (compilation
excluded), median of 3 repeats. Prints a table with the ratio ours / PyTorch.
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def bench_jax(name, batch, steps, shape):
    import jax

    from flatrob_jax import distributed
    from flatrob_jax.augment import build_train_augmentation, default_config
    from flatrob_jax.models import get_model
    from flatrob_jax.training.optimizer import sgd
    from flatrob_jax.training.state import create_train_state
    from flatrob_jax.training.steps import make_train_step

    mesh = distributed.make_mesh(1)
    c = shape[-1]
    model = get_model(name, 10, mean=(0.5,) * c, std=(0.25,) * c, axis_name=distributed.AXIS)
    state = create_train_state(jax.random.key(0), model, sgd(0.05, 0.9, True, 5e-4), shape)
    state = distributed.replicate(mesh, state)
    step = make_train_step(
        mesh,
        augmentation=build_train_augmentation(default_config()),
        num_classes=10,
        label_smoothing=0.0,
    )
    rng = np.random.default_rng(0)
    host = {
        "image": rng.integers(0, 256, (batch, *shape)).astype(np.uint8),
        "label": rng.integers(0, 10, batch).astype(np.int32),
    }
    data = distributed.shard_host_batch(mesh, host)
    key = distributed.replicate(mesh, jax.random.key(0))
    for _ in range(3):
        state, metrics = step(state, data, key)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(steps):
            state, metrics = step(state, data, key)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t)
    return batch * steps / statistics.median(times)


def bench_torch(name, batch, steps, shape, device, channels_last):
    import torch
    import torch.nn.functional as F
    from torch_models import TorchResNet18, TorchSmallCNN

    model = {"cnn_small": lambda: TorchSmallCNN(in_channels=shape[-1]), "resnet18": TorchResNet18}[
        name
    ]().to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(
        model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    mean, std = 0.5, 0.25
    rng = np.random.default_rng(0)
    images = torch.tensor(
        rng.integers(0, 256, (batch, shape[2], shape[0], shape[1])),
        dtype=torch.uint8,
        device=device,
    )
    labels = torch.tensor(rng.integers(0, 10, batch), device=device)

    def augment(x):  # random crop (pad 4) + flip, batched on the tensor
        h, w = x.shape[2:]
        padded = F.pad(x, (4, 4, 4, 4))
        dy, dx = np.random.randint(0, 9, 2)
        x = padded[:, :, dy : dy + h, dx : dx + w]
        flip = torch.rand(x.shape[0], device=x.device) < 0.5
        return torch.where(flip[:, None, None, None], x.flip(3), x)

    def step():
        x = augment(images.float() / 255.0)
        x = ((x - mean) / std).contiguous(memory_format=fmt)
        loss = F.cross_entropy(model(x), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    sync = (lambda: torch.cuda.synchronize()) if device == "cuda" else (lambda: None)
    for _ in range(3):
        step()
    sync()
    times = []
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        times.append(time.perf_counter() - t)
    return batch * steps / statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="cnn_small,resnet18")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()
    import jax
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}; torch {torch.__version__} on "
        f"{device} ({torch.get_num_threads()} threads); batch {args.batch}"
    )
    rows = []
    for name in args.models.split(","):
        shape = (28, 28, 1) if name.startswith("cnn") else (32, 32, 3)
        ours = bench_jax(name, args.batch, args.steps, shape)
        peer = bench_torch(name, args.batch, args.steps, shape, device, args.channels_last)
        rows.append((name, ours, peer))
    print("\n| model | input | flatrob_jax img/s | PyTorch img/s | ratio |")
    print("|---|---|---|---|---|")
    for name, ours, peer in rows:
        shape = "28x28x1" if name.startswith("cnn") else "32x32x3"
        print(f"| {name} | {shape} | {ours:.0f} | {peer:.0f} | {ours / peer:.2f} |")


if __name__ == "__main__":
    main()
