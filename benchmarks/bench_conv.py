"""CPU lever: convolutions as patches + matmul (``benchmarks/conv_impl.py``) against
XLA's convolution, side by side in one process, interleaved, best of N.

    python benchmarks/bench_conv.py [--what layers,models] [--impls xla,im2col,shifted]
                                    [--repeats 3] [--no-torch]

``layers``: one convolution of the small CNN's and ResNet-18's shapes (batch 128): forward,
input gradient and kernel gradient, each jitted alone. ``models``: the small CNN's train
step (batch 128, 28x28x1) and ResNet-18's (batch 128, 32x32x3), both the library's jitted
data-parallel step (SGD Nesterov, weight decay, crop + flip, 1 device); a ResNet-18 HVP
(forward-over-reverse through ``curvature.from_flax``, eval-mode BatchNorm) on --hvp-images
images; one ResNet-18 sign-gradient attack step (cross-entropy input gradient, x + a sign(g),
clip) on --attack-images images. Random-init weights (the cost does not depend on them) and
random inputs; PyTorch's same work on the same architecture (benchmarks/torch_models.py,
2 threads) for reference. Every implementation is compiled first; then each repeat times
every implementation once in turn, so load changes hit all of them alike. Prints the best
(min) time per row and the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from flatrob_jax import curvature, distributed
from flatrob_jax.augment import build_train_augmentation, default_config
from flatrob_jax.models import get_model
from flatrob_jax.training.optimizer import sgd
from flatrob_jax.training.state import create_train_state
from flatrob_jax.training.steps import make_train_step

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import conv_impl  # noqa: E402  (benchmarks/conv_impl.py)

NHWC = ("NHWC", "HWIO", "NHWC")

# (label, batch, spatial size, in channels, out channels, stride)
LAYERS = [
    ("cnn_small stage 1", 128, 28, 16, 16, 1),
    ("resnet18 stage 1", 128, 32, 64, 64, 1),
    ("resnet18 stage 2, strided", 128, 32, 64, 128, 2),
    ("resnet18 stage 2", 128, 16, 128, 128, 1),
    ("resnet18 stage 3", 128, 8, 256, 256, 1),
    ("resnet18 stage 4", 128, 4, 512, 512, 1),
]


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def timed(fn) -> float:
    t = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t


def interleaved(cases: dict, repeats: int) -> dict:
    """{name: fn} -> {name: best seconds}: warm each once, then time all in turn, repeatedly."""
    for fn in cases.values():
        timed(fn)
    best = {name: float("inf") for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            best[name] = min(best[name], timed(fn))
    return best


# --- layers ------------------------------------------------------------------------------


def layer_cases(impl, batch, size, c_in, c_out, stride):
    conv = conv_impl.get(impl)
    x = jax.random.normal(jax.random.key(0), (batch, size, size, c_in))
    w = jax.random.normal(jax.random.key(1), (3, 3, c_in, c_out)) * 0.05

    def apply(x, w):
        return conv(x, w, (stride, stride), ((1, 1), (1, 1)), dimension_numbers=NHWC)

    dy = jax.jit(apply)(x, w)
    forward = jax.jit(apply)
    input_grad = jax.jit(lambda x, w, dy: jax.vjp(lambda x: apply(x, w), x)[1](dy))
    kernel_grad = jax.jit(lambda x, w, dy: jax.vjp(lambda w: apply(x, w), w)[1](dy))
    return {
        "forward": lambda: forward(x, w),
        "input grad": lambda: input_grad(x, w, dy),
        "kernel grad": lambda: kernel_grad(x, w, dy),
    }


def bench_layers(impls, repeats):
    print(
        f"\n### One 3x3 convolution, jitted alone (ms, best of {repeats})\n\nbefore: {uptime()}\n"
    )
    header = " | ".join(f"{impl} fwd / dx / dW" for impl in impls)
    print(f"| layer (batch, HxW, C_in -> C_out, stride) | {header} |")
    print("|---|" + "---|" * len(impls))
    for label, batch, size, c_in, c_out, stride in LAYERS:
        cases = {}
        for impl in impls:
            for part, fn in layer_cases(impl, batch, size, c_in, c_out, stride).items():
                cases[(impl, part)] = fn
        best = interleaved(cases, repeats)
        cells = " | ".join(
            " / ".join(
                f"{1e3 * best[(impl, p)]:.1f}" for p in ("forward", "input grad", "kernel grad")
            )
            for impl in impls
        )
        print(
            f"| {label} ({batch}, {size}x{size}, {c_in} -> {c_out}, /{stride}) | {cells} |",
            flush=True,
        )
    print(f"\nafter: {uptime()}")


# --- models ------------------------------------------------------------------------------


def train_step_case(name, impl, batch, shape):
    mesh = distributed.make_mesh(1)
    c = shape[-1]
    model = get_model(name, 10, mean=(0.5,) * c, std=(0.25,) * c, axis_name=distributed.AXIS)
    state = create_train_state(jax.random.key(0), model, sgd(0.05, 0.9, True, 5e-4), shape)
    state = {"state": distributed.replicate(mesh, state)}
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

    def run():
        state["state"], metrics = step(state["state"], data, key)
        return metrics

    return run


def resnet18(impl):
    model = get_model("resnet18", 10)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    if impl in ("im2col", "shifted"):  # called inside conv_impl.convolutions(impl)
        jaxpr = str(jax.make_jaxpr(model.apply)(variables, jnp.zeros((1, 32, 32, 3))))
        assert "conv_general_dilated" not in jaxpr, f"{impl}: XLA's conv still in the model"
    return model, variables


def images(n):
    rng = np.random.default_rng(1)
    return rng.uniform(size=(n, 32, 32, 3)).astype(np.float32), rng.integers(0, 10, n)


def hvp_case(impl, n):
    model, variables = resnet18(impl)
    x, y = images(n)
    obj = curvature.from_flax(
        model, variables, x, y.astype(np.int32), batch_size=n, mesh=distributed.make_mesh(1)
    )
    v = jax.tree.map(lambda p: jnp.full_like(p, 1e-2), obj.params)
    return lambda: obj.hvp(v)


def attack_step_case(impl, n, step_size=1 / 255):
    model, variables = resnet18(impl)
    x, y = images(n)

    @jax.jit
    def step(z):
        def loss(z):
            logits = model.apply(variables, z, train=False)
            return jnp.sum(jax.nn.log_softmax(logits)[jnp.arange(n), y])

        g = jax.grad(loss)(z)
        return jnp.clip(z - step_size * jnp.sign(g), 0.0, 1.0)

    return lambda: step(x)


def torch_cases(args):
    """PyTorch's same work (eager float32, 2 threads), or {} without torch."""
    import torch
    import torch.nn.functional as F
    from torch_models import TorchResNet18, TorchSmallCNN

    def train(net, batch, shape):
        opt = torch.optim.SGD(
            net.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4
        )
        x = torch.rand(batch, shape[2], shape[0], shape[1])
        y = torch.randint(0, 10, (batch,))

        def run():
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return None

        return run

    def hvp(n):
        net = TorchResNet18().eval()
        x, y = images(n)
        xt, yt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(y)
        params = [p for p in net.parameters()]
        v = [torch.full_like(p, 1e-2) for p in params]

        def run():  # PyHessian's HVP: double backward
            loss = F.cross_entropy(net(xt), yt)
            grads = torch.autograd.grad(loss, params, create_graph=True)
            return torch.autograd.grad(grads, params, grad_outputs=v)

        return run

    def attack(n):
        net = TorchResNet18().eval()
        x, y = images(n)
        xt, yt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(y)

        def run():
            z = xt.clone().requires_grad_(True)
            loss = F.cross_entropy(net(z), yt, reduction="sum")
            (g,) = torch.autograd.grad(loss, z)
            return (z.detach() + g.sign() / 255).clamp(0, 1)

        return run

    rows = {
        "cnn_small train step": lambda: train(TorchSmallCNN(in_channels=1), 128, (28, 28, 1)),
        "resnet18 train step": lambda: train(TorchResNet18(), 128, (32, 32, 3)),
        "resnet18 HVP": lambda: hvp(args.hvp_images),
        "resnet18 attack step": lambda: attack(args.attack_images),
    }
    return {row: make() for row, make in rows.items()}


def bench_models(impls, args):
    makers = {
        "cnn_small train step": lambda impl: train_step_case("cnn_small", impl, 128, (28, 28, 1)),
        "resnet18 train step": lambda impl: train_step_case("resnet18", impl, 128, (32, 32, 3)),
        "resnet18 HVP": lambda impl: hvp_case(impl, args.hvp_images),
        "resnet18 attack step": lambda impl: attack_step_case(impl, args.attack_images),
    }
    rows = [r for r in makers if any(r.startswith(m) for m in args.models.split(","))]
    torch_rows = torch_cases(args) if args.torch else {}
    if args.torch:
        import torch

        torch.set_num_threads(os.cpu_count())
    print(
        f"\n### Models, jax {jax.__version__} on {jax.devices()[0].platform}, "
        f"{os.cpu_count()} CPUs "
        f"(s, best of {args.repeats}; HVP on {args.hvp_images} images, attack step on "
        f"{args.attack_images})\n"
    )
    cells = "| " + " | ".join(impls) + (" | PyTorch" if args.torch else "") + " |"
    print(f"| work {cells} best patch impl / xla (time; > 1 is slower) |")
    print("|---|" + "---|" * (len(impls) + 1 + int(args.torch)))
    loads = []
    for row in rows:
        before = uptime()
        t_compile = time.perf_counter()
        cases = {}
        for impl in impls:  # traced and compiled with impl's convolution
            with conv_impl.convolutions(impl):
                cases[impl] = makers[row](impl)
                timed(cases[impl])
        if args.torch:
            cases["PyTorch"] = torch_rows[row]
        for fn in cases.values():  # compile (and PyTorch's warm-up) before any timing
            timed(fn)
        t_compile = time.perf_counter() - t_compile
        best = interleaved(cases, args.repeats)
        patch = [impl for impl in impls if impl != "xla"]
        ratio = (
            f"{min(best[i] for i in patch) / best['xla']:.2f}" if patch and "xla" in best else "-"
        )
        times = " | ".join(f"{best[name]:.3f}" for name in cases)
        print(f"| {row} | {times} | {ratio} |", flush=True)
        loads.append(f"- {row}: before `{before}`; after `{uptime()}`; setup {t_compile:.0f} s")
    print("\nLoad (uptime) around each row, and its setup + compile time:\n")
    print("\n".join(loads))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--what", default="layers,models", help="comma list of: layers, models")
    ap.add_argument(
        "--impls", default="xla,im2col,shifted", help=f"of {', '.join(conv_impl.NAMES)}"
    )
    ap.add_argument(
        "--models",
        default="cnn_small,resnet18 train,resnet18 HVP,resnet18 attack",
        help="rows to run (prefixes of the row names)",
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--hvp-images", type=int, default=8)
    ap.add_argument("--attack-images", type=int, default=16)
    ap.add_argument("--no-torch", dest="torch", action="store_false")
    args = ap.parse_args()
    impls = args.impls.split(",")
    for impl in impls:
        conv_impl.get(impl)
    for what in args.what.split(","):
        {
            "layers": lambda: bench_layers(impls, args.repeats),
            "models": lambda: bench_models(impls, args),
        }[what]()


if __name__ == "__main__":
    main()
