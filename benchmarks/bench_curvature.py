"""Curvature benchmarks: ours (JAX) against PyHessian (PyTorch) on the same weights and data.

1. HVP time / gradient time, both jitted through the dataset operator, for the small CNN,
   ResNet-18 and WRN-40-2 (CIFAR-shaped 32x32x3 inputs; batch 32 on CPU).
2. Hessian-vector products and wall time to reach 1e-3 relative error on lambda_max: our
   Lanczos vs PyHessian's power iteration (PyHessian itself, instrumented to record its
   Rayleigh quotients), on cnn_small briefly trained on real Fashion-MNIST, ported to PyTorch.
   Also each method's own stopping rule (ours: Ritz residual <= 1e-3 |theta|; PyHessian:
   relative change < 1e-3) with the error it actually reached.
3. Wall time of lambda_max and trace (100 Rademacher probes each side) vs PyHessian.

Run: python benchmarks/bench_curvature.py [--quick]   (prints Markdown tables)
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from flatrob_jax import curvature  # noqa: E402
from flatrob_jax.curvature.lanczos import lanczos_tridiagonal  # noqa: E402
from flatrob_jax.distributed import make_mesh  # noqa: E402
from flatrob_jax.models import get_model  # noqa: E402

FASHION = "/usr/share/datasets/fashion-mnist"


def read_idx(name):
    with gzip.open(os.path.join(FASHION, name)) as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def timed(fn, reps):
    fn()  # compile / warm up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# ---------------------------------------------------------------- 1. HVP / gradient
def hvp_over_grad(name, batch, reps):
    model = get_model(name, 10, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    rng = np.random.RandomState(0)
    images = rng.rand(batch, 32, 32, 3).astype(np.float32)
    labels = rng.randint(0, 10, batch).astype(np.int32)
    variables = model.init(jax.random.key(0), images[:1])
    obj = curvature.from_flax(model, variables, images, labels, batch_size=batch, mesh=make_mesh(1))
    v = jax.tree_util.tree_map(jnp.ones_like, obj.params)
    t0 = time.perf_counter()
    jax.block_until_ready(obj.hvp(v))
    compile_hvp = time.perf_counter() - t0
    t_hvp = timed(lambda: obj.hvp(v), reps)
    t_grad = timed(lambda: obj.value_and_grad(obj.params), reps)
    return dict(
        model=name, params=obj.num_params, batch=batch, grad=t_grad, hvp=t_hvp, compile=compile_hvp
    )


# ---------------------------------------------------------------- 2-3. vs PyHessian
def train_small_cnn(images, labels, steps, batch=64, seed=0):
    """A few SGD steps (train-mode BatchNorm) so the Hessian is that of a partly trained net."""
    model = get_model("cnn_small", 10)
    variables = model.init(jax.random.key(seed), images[:1])
    params, stats = variables["params"], variables["batch_stats"]
    tx = optax.sgd(0.05, momentum=0.9)
    opt = tx.init(params)

    @jax.jit
    def step(params, stats, opt, x, y):
        def loss_fn(p):
            logits, new = model.apply(
                {"params": p, "batch_stats": stats}, x, train=True, mutable=["batch_stats"]
            )
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new[
                "batch_stats"
            ]

        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), stats, opt, loss

    rng = np.random.RandomState(seed)
    for _ in range(steps):
        idx = rng.randint(0, len(images), batch)
        params, stats, opt, loss = step(params, stats, opt, images[idx], labels[idx])
    return model, {"params": params, "batch_stats": stats}, float(loss)


def torch_small_cnn(variables, torch):
    """cnn_small (flatrob_jax.models.SmallCNN) in PyTorch with the same weights.

    Flax 'SAME' padding of a stride-2 3x3 conv on an even input pads (0, 1) per spatial axis,
    PyTorch's padding=1 pads (1, 1): the port pads explicitly. Kernels HWIO -> OIHW; inputs
    NHWC -> NCHW by the caller.
    """
    F = torch.nn.functional
    p, s = variables["params"], variables["batch_stats"]
    num_convs = len([k for k in p if k.startswith("Conv_")])
    convs = [np.asarray(p[f"Conv_{i}"]["kernel"]) for i in range(num_convs)]
    widths = [k.shape[-1] for k in convs]
    strides = [2 if i > 0 and widths[i] != widths[i - 1] else 1 for i in range(num_convs)]

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.convs = torch.nn.ModuleList(
                torch.nn.Conv2d(k.shape[2], k.shape[3], 3, stride=st, padding=0, bias=False)
                for k, st in zip(convs, strides)
            )
            self.bns = torch.nn.ModuleList(torch.nn.BatchNorm2d(w, eps=1e-5) for w in widths)
            self.fc = torch.nn.Linear(widths[-1], p["Dense_0"]["kernel"].shape[1])

        def forward(self, x):
            x = (x - 0.5) / 0.5
            for conv, bn, st in zip(self.convs, self.bns, strides):
                x = F.pad(x, (1, 1, 1, 1) if st == 1 else (0, 1, 0, 1))
                x = torch.relu(bn(conv(x)))
            return self.fc(x.mean(dim=(2, 3)))

    net = Net()

    def t(a):
        return torch.from_numpy(np.array(a, dtype=np.float32))

    with torch.no_grad():
        for i in range(num_convs):
            net.convs[i].weight.copy_(t(convs[i].transpose(3, 2, 0, 1)))
            bn = net.bns[i]
            bn.weight.copy_(t(p[f"BatchNorm_{i}"]["scale"]))
            bn.bias.copy_(t(p[f"BatchNorm_{i}"]["bias"]))
            bn.running_mean.copy_(t(s[f"BatchNorm_{i}"]["mean"]))
            bn.running_var.copy_(t(s[f"BatchNorm_{i}"]["var"]))
        net.fc.weight.copy_(t(np.asarray(p["Dense_0"]["kernel"]).T))
        net.fc.bias.copy_(t(p["Dense_0"]["bias"]))
    return net.eval()


def first_within(history, reference, rel):
    for i, value in enumerate(history):
        if abs(value - reference) <= rel * abs(reference):
            return i + 1
    return None


def log(message):
    print(f"# {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def versus_pyhessian(num_examples, train_steps, probes, max_power_iters):
    import importlib

    import pyhessian
    import torch

    ph_module = importlib.import_module(
        "pyhessian.hessian"
    )  # the package re-exports the class as `hessian`

    torch.manual_seed(0)
    images = (read_idx("train-images-idx3-ubyte.gz")[..., None] / 255.0).astype(np.float32)
    labels = read_idx("train-labels-idx1-ubyte.gz").astype(np.int32)
    model, variables, train_loss = train_small_cnn(images, labels, train_steps)
    x, y = images[:num_examples], labels[:num_examples]
    obj = curvature.from_flax(model, variables, x, y, batch_size=num_examples, mesh=make_mesh(1))
    net = torch_small_cnn(variables, torch)
    tx, ty = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(y.astype(np.int64))
    with torch.no_grad():
        port_error = float(np.max(np.abs(net(tx).numpy() - np.asarray(model.apply(variables, x)))))

    # reference lambda_max: our Lanczos run to a tight residual
    log(f"trained cnn_small ({train_steps} steps, loss {train_loss:.3f}); reference Lanczos ...")
    ref = curvature.lanczos(obj.hvp, obj.params, jax.random.key(123), num_steps=80, tol=1e-5)
    reference = float(ref.eigenvalues[0])

    # ours: Ritz value history (never stop) -> HVPs to 1e-3; then the residual rule, timed
    history = []
    log(
        f"reference {reference:.6g} ({ref.num_matvecs} HVPs, "
        f"residual {ref.residuals[0]:.1e}); our history ..."
    )
    lanczos_tridiagonal(
        obj.hvp,
        obj.params,
        jax.random.normal(jax.random.key(0), (obj.num_params,)),
        40,
        should_stop=lambda theta, s, b: history.append(theta[-1]) or False,
    )
    ours_oracle = first_within(history, reference, 1e-3)
    curvature.lanczos(
        obj.hvp, obj.params, jax.random.key(7), num_steps=100, tol=1e-3
    )  # compile the step
    t0 = time.perf_counter()
    ours = curvature.lanczos(obj.hvp, obj.params, jax.random.key(0), num_steps=100, tol=1e-3)
    ours_time = time.perf_counter() - t0
    ours_hvp_time = timed(lambda: obj.hvp(obj.params), 5)

    # PyHessian: count its HVPs and record its Rayleigh quotients through a wrapper
    original = ph_module.hessian_vector_product
    recorded = []

    def recording(gradsH, params, v):
        hv = original(gradsH, params, v)
        recorded.append(float(sum((a * b).sum() for a, b in zip(hv, v))))
        return hv

    ph_module.hessian_vector_product = recording
    try:
        hess = pyhessian.hessian(net, torch.nn.CrossEntropyLoss(), data=(tx, ty), cuda=False)
        recorded.clear()
        log("PyHessian power iteration history ...")
        hess.eigenvalues(maxIter=max_power_iters, tol=0.0)  # full history
        ph_oracle = first_within(recorded, reference, 1e-3)
        ph_history = list(recorded)
        recorded.clear()
        t0 = time.perf_counter()
        (ph_default,), _ = hess.eigenvalues(maxIter=100, tol=1e-3)
        ph_default_time = time.perf_counter() - t0
        ph_default_hvps = len(recorded)
        t0 = time.perf_counter()
        if ph_oracle:
            recorded.clear()
            hess.eigenvalues(maxIter=ph_oracle, tol=0.0)
        ph_oracle_time = time.perf_counter() - t0
        v = [torch.randn_like(p) for p in hess.params]
        t0 = time.perf_counter()
        for _ in range(5):
            original(hess.gradsH, hess.params, v)
        ph_hvp_time = (time.perf_counter() - t0) / 5

        # trace: the same number of probes on both sides
        log("PyHessian trace ...")
        t0 = time.perf_counter()
        samples = np.asarray(hess.trace(maxIter=probes, tol=0.0))
        ph_trace_time = time.perf_counter() - t0
    finally:
        ph_module.hessian_vector_product = original
    curvature.hutchinson_trace(obj.hvp, obj.params, jax.random.key(5), num_probes=2)  # compile
    t0 = time.perf_counter()
    tr = curvature.hutchinson_trace(obj.hvp, obj.params, jax.random.key(1), num_probes=probes)
    ours_trace_time = time.perf_counter() - t0
    # time for ours to reach 1e-3 with the oracle count = per-step time x steps
    ours_step_time = ours_time / ours.num_matvecs
    return dict(
        params=obj.num_params,
        examples=num_examples,
        train_steps=train_steps,
        train_loss=train_loss,
        port_error=port_error,
        reference=reference,
        ours_oracle=ours_oracle,
        ours_oracle_time=(ours_oracle or 0) * ours_step_time,
        ours_rule_hvps=ours.num_matvecs,
        ours_rule_error=abs(ours.eigenvalues[0] - reference) / reference,
        ours_rule_time=ours_time,
        ours_hvp_time=ours_hvp_time,
        ph_oracle=ph_oracle,
        ph_oracle_time=ph_oracle_time,
        ph_history_last=ph_history[-1],
        ph_rule_hvps=ph_default_hvps,
        ph_rule_error=abs(ph_default - reference) / reference,
        ph_rule_time=ph_default_time,
        ph_hvp_time=ph_hvp_time,
        ours_trace=(tr.trace, tr.stderr),
        ph_trace=(samples.mean(), samples.std(ddof=1) / np.sqrt(len(samples))),
        ours_trace_time=ours_trace_time,
        ph_trace_time=ph_trace_time,
        probes=probes,
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small CNN only, fewer steps")
    parser.add_argument("--skip-ratio", action="store_true", help="skip the HVP/gradient table")
    parser.add_argument("--batch", type=int, default=32, help="batch of the HVP/gradient table")
    args = parser.parse_args()
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, {os.cpu_count()} CPUs")

    print(
        "\n## HVP time / gradient time (jitted, dataset operator, 1 device, CIFAR-shaped 32x32x3)\n"
    )
    print("| model | params | batch | gradient (s) | HVP (s) | HVP / gradient | HVP compile (s) |")
    print("|---|---|---|---|---|---|---|")
    names = (
        []
        if args.skip_ratio
        else ["cnn_small"]
        if args.quick
        else ["cnn_small", "resnet18", "wrn40_2"]
    )
    for name in names:
        log(f"HVP/gradient timing: {name}")
        r = hvp_over_grad(name, batch=args.batch, reps=3)
        print(
            f"| {r['model']} | {r['params']:,} | {r['batch']} | {r['grad']:.3f} | {r['hvp']:.3f} | "
            f"{r['hvp'] / r['grad']:.2f} | {r['compile']:.1f} |",
            flush=True,
        )

    r = versus_pyhessian(
        num_examples=128,
        train_steps=50 if args.quick else 200,
        probes=30 if args.quick else 50,
        max_power_iters=40,
    )
    print(
        f"\n## lambda_max: Lanczos vs PyHessian power iteration "
        f"(cnn_small, {r['params']:,} params, "
        f"{r['examples']} Fashion-MNIST train images, {r['train_steps']} SGD steps, "
        f"train loss {r['train_loss']:.3f}; "
        f"port max |logit diff| {r['port_error']:.1e}; "
        f"reference lambda_max {r['reference']:.6g})\n"
    )
    print(
        "| method | HVPs to 1e-3 rel. error | wall (s) "
        "| own stopping rule: HVPs | error reached | wall (s) | s / HVP |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| ours: Lanczos (residual <= 1e-3 theta) | {r['ours_oracle']} "
        f"| {r['ours_oracle_time']:.2f} | "
        f"{r['ours_rule_hvps']} | {r['ours_rule_error']:.1e} | {r['ours_rule_time']:.2f} "
        f"| {r['ours_hvp_time']:.3f} |"
    )
    print(
        f"| PyHessian: power iteration (rel. change < 1e-3) | {r['ph_oracle']} "
        f"| {r['ph_oracle_time']:.2f} | "
        f"{r['ph_rule_hvps']} | {r['ph_rule_error']:.1e} | {r['ph_rule_time']:.2f} "
        f"| {r['ph_hvp_time']:.3f} |"
    )
    if r["ph_oracle"] and r["ours_oracle"]:
        print(
            f"\nHVP ratio (PyHessian / ours) to 1e-3: {r['ph_oracle'] / r['ours_oracle']:.1f}x; "
            f"wall ratio: {r['ph_oracle_time'] / max(r['ours_oracle_time'], 1e-9):.1f}x"
        )
    print(f"\n## trace, {r['probes']} Rademacher probes each\n", flush=True)
    print("| method | trace | stderr | wall (s) |")
    print("|---|---|---|---|")
    print(
        f"| ours: hutchinson_trace | {r['ours_trace'][0]:.4g} | {r['ours_trace'][1]:.2g} "
        f"| {r['ours_trace_time']:.2f} |"
    )
    print(
        f"| PyHessian: hessian.trace | {r['ph_trace'][0]:.4g} | {r['ph_trace'][1]:.2g} "
        f"| {r['ph_trace_time']:.2f} |"
    )
    print(
        f"\ntrace wall ratio (PyHessian / ours): {r['ph_trace_time'] / r['ours_trace_time']:.2f}x; "
        f"lambda_max (own rules) wall ratio: {r['ph_rule_time'] / r['ours_rule_time']:.2f}x"
    )


if __name__ == "__main__":
    main()
