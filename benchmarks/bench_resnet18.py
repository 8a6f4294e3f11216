"""Speed on a real trained model, ours vs the PyTorch peers on identical weights and inputs:
pyautoattack's CIFAR-10 ResNet-18 (``pyautoattack/examples/model_test.pt``, 11.2M params).

    python benchmarks/bench_resnet18.py --what apgd        # APGD-CE 100 it, Linf 1/255, 16 images
    python benchmarks/bench_resnet18.py --what autoattack  # AutoAttack standard, 8 images
    python benchmarks/bench_resnet18.py --what curvature   # lambda_max to 1e-3, trace 50 probes
    python benchmarks/bench_resnet18.py --what loops       # CPU lever: host loop vs lax loop (APGD)
    python benchmarks/bench_resnet18.py --what step        # CPU levers on one APGD step (bf16, ...)
    python benchmarks/bench_resnet18.py --what lanczos [--lanczos-impl OLD.py]  # memory, s/step
    python benchmarks/bench_resnet18.py --what hvp_block --blocks 1,2,4,8  # s per HVP by block

Weights: imported with ``python -m flatrob_jax.import_torch --arch resnet18_cifar`` into
``--workdir`` (once; reused) and loaded with ``flatrob_jax.load_for_eval``; the peers get the
same file through pyautoattack's own ``examples/resnet.py`` ResNet18. Inputs: CIFAR-10 is not
available offline, so the images are fixed seeded *smoothed noise* (uniform noise blurred by
a Gaussian of 1.5 px, stretched to [0, 1] per image), identical on both sides; attack labels
are the model's own predictions (clean accuracy 100%), curvature labels are seeded random
classes. Same iterations / restarts / probes on both sides (pyautoattack's APGDAttack with
n_restarts=1 is one ``apgd`` call). Ours is timed on a second call (compilation reported
separately); every table prints the machine's load average, since figures taken under load
are only comparable within one run (ours vs peer back to back).

Set ``XLA_FLAGS`` yourself to try XLA options; ``--devices N`` splits the CPU into N XLA
devices (the batch is sharded over them).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def parse():
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--what", default="apgd", help="comma list of: apgd, autoattack, curvature, loops, step"
    )
    ap.add_argument("--workdir", default="/tmp/flatrob_bench_r18", help="imported run (reused)")
    ap.add_argument("--devices", type=int, default=1, help="XLA CPU devices")
    ap.add_argument("--n-apgd", type=int, default=16)
    ap.add_argument("--n-aa", type=int, default=8)
    ap.add_argument("--n-curv", type=int, default=8)
    ap.add_argument("--steps", type=int, default=100, help="APGD iterations")
    ap.add_argument("--loop-steps", type=int, default=20, help="APGD iterations in --what loops")
    ap.add_argument("--probes", type=int, default=50)
    ap.add_argument("--eps", default="1/255")
    ap.add_argument("--host-loop", default="auto", choices=("auto", "yes", "no"))
    ap.add_argument(
        "--lanczos-impl",
        default=None,
        help="--what lanczos: a lanczos.py to time instead of the library's (e.g. "
        "an older revision: git show REV:flatrob_jax/curvature/lanczos.py)",
    )
    ap.add_argument("--lanczos-steps", type=int, default=10)
    ap.add_argument(
        "--probe-block-size",
        type=int,
        default=None,
        help="--what curvature: trace probes per hvp_block call for the 'blocks' row "
        "(default: analysis.curvature.probe_block_size); the 1-at-a-time row always runs too",
    )
    ap.add_argument("--blocks", default="1,2,4,8", help="--what hvp_block: block sizes")
    ap.add_argument(
        "--aa-attacks",
        default="standard",
        help="--what autoattack: 'standard' or a comma list of attacks (version='custom' on "
        "both sides, e.g. apgd-ce,apgd-t,fab-t)",
    )
    ap.add_argument("--repeats", type=int, default=3, help="--what hvp_block: timed calls")
    return ap.parse_args()


ARGS = parse() if __name__ == "__main__" else None
if ARGS is not None and ARGS.devices > 1:
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={ARGS.devices}"
    )

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.ndimage  # noqa: E402
import torch  # noqa: E402

import flatrob_jax  # noqa: E402
from flatrob_jax import attacks, curvature  # noqa: E402
from flatrob_jax.distributed import make_mesh  # noqa: E402
from flatrob_jax.execution import Execution  # noqa: E402


def load(workdir):
    import pyautoattack
    from pyautoattack.examples.resnet import ResNet18

    weights = os.path.join(os.path.dirname(pyautoattack.__file__), "examples", "model_test.pt")
    if not os.path.exists(os.path.join(workdir, "provenance.json")):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "flatrob_jax.import_torch",
                "--arch",
                "resnet18_cifar",
                "--weights",
                weights,
                "--dataset",
                "cifar10",
                "--workdir",
                workdir,
            ],
            check=True,
        )
    net = ResNet18()
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return flatrob_jax.load_for_eval(workdir), net.eval()


def smooth_images(n, seed):
    """Seeded uniform noise blurred by a 1.5-px Gaussian, stretched to [0, 1] per image."""
    noise = np.random.default_rng(seed).uniform(size=(n, 32, 32, 3))
    x = scipy.ndimage.gaussian_filter(noise, sigma=(0, 1.5, 1.5, 0))
    lo = x.min(axis=(1, 2, 3), keepdims=True)
    hi = x.max(axis=(1, 2, 3), keepdims=True)
    return ((x - lo) / (hi - lo)).astype(np.float32)


def nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def torch_logits(net, x):
    with torch.no_grad():
        return net(nchw(x)).numpy()


def load_average():
    return ", ".join(f"{v:.1f}" for v in os.getloadavg())


def clock(fn):
    t = time.perf_counter()
    out = fn()
    jax.block_until_ready(out) if not isinstance(out, (np.ndarray, torch.Tensor)) else None
    return out, time.perf_counter() - t


def host_loop_arg(value):
    return {"auto": None, "yes": True, "no": False}[value]


def header(loaded, net, x):
    diff = float(np.abs(np.asarray(jax.jit(loaded.apply_fn)(x)) - torch_logits(net, x)).max())
    print(
        f"\nResNet-18 (pyautoattack examples/model_test.pt, imported); jax {jax.__version__} "
        f"on {jax.device_count()} {jax.devices()[0].platform} device(s); torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads; {os.cpu_count()} CPUs; "
        f"max |logit diff| {diff:.1e}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"
    )


def table(title, rows):
    print(f"\n### {title} (load average at the end: {load_average()})\n")
    print(
        "| work | peer (s) | ours (s) | ours first call (s) | peer / ours | result peer | "
        "result ours |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, peer, ours, first, r_peer, r_ours in rows:
        print(
            f"| {name} | {peer:.1f} | {ours:.1f} | {first:.1f} | {peer / ours:.2f}x | "
            f"{r_peer} | {r_ours} |",
            flush=True,
        )


def bench_apgd(loaded, net, args):
    from pyautoattack.autopgd_base import APGDAttack

    eps, n = eval(args.eps), args.n_apgd  # noqa: S307 - a CLI fraction
    x = smooth_images(n, 0)
    y = torch_logits(net, x).argmax(1)
    how = Execution(batch_size=n, num_devices=args.devices, host_loop=host_loop_arg(args.host_loop))
    f = loaded.apply_fn

    def ours():
        return attacks.apgd(
            f,
            x,
            y,
            jax.random.key(0),
            eps=eps,
            norm="Linf",
            loss="ce",
            steps=args.steps,
            execution=how,
        )

    _, first = clock(ours)
    x_ours, t_ours = clock(ours)
    acc_ours = float((np.asarray(jax.jit(f)(x_ours)).argmax(1) == y).mean())
    print(f"# ours: first call {first:.1f} s, second {t_ours:.1f} s", flush=True)
    torch.manual_seed(0)
    ref = APGDAttack(
        net, n_iter=args.steps, norm="Linf", eps=eps, loss="ce", n_restarts=1, seed=0, device="cpu"
    )
    x_ref, t_ref = clock(lambda: ref.perturb(nchw(x), torch.from_numpy(y)))
    x_ref = x_ref.detach().numpy().transpose(0, 2, 3, 1)
    acc_ref = float((torch_logits(net, x_ref).argmax(1) == y).mean())
    header(loaded, net, x)
    table(
        f"APGD-CE {args.steps} it, Linf {args.eps}, {n} images, 1 restart, host_loop="
        f"{args.host_loop}",
        [("APGD-CE (robust accuracy)", t_ref, t_ours, first, f"{acc_ref:.3f}", f"{acc_ours:.3f}")],
    )


def bench_autoattack(loaded, net, args):
    import pyautoattack
    from pyautoattack import checks as ref_checks

    eps, n = eval(args.eps), args.n_aa  # noqa: S307
    x = smooth_images(n, 1)
    y = torch_logits(net, x).argmax(1)
    how = Execution(batch_size=n, num_devices=args.devices, host_loop=host_loop_arg(args.host_loop))

    from flatrob_jax.attacks import registry

    chosen = None
    version = {}
    if args.aa_attacks != "standard":
        chosen = tuple(args.aa_attacks.split(","))
        version = dict(version="custom", attacks=chosen)

    def ours():
        return attacks.autoattack(
            loaded.apply_fn,
            x,
            y,
            jax.random.key(0),
            eps=eps,
            norm="Linf",
            execution=how,
            **version,
        )

    def side_by_side(runs):
        """The cascade's APGD-T and FAB-T with ``runs`` target classes per pass (None: auto)."""
        for name in ("apgd-t", "fab-t"):
            registry.ATTACKS[name].settings["runs_per_pass"] = runs

    side_by_side(1)  # before: one target class at a time
    _, first_one = clock(ours)
    res_one, t_one = clock(ours)
    side_by_side(registry.N_TARGET_CLASSES)  # all 9 target classes in one pass
    _, first = clock(ours)
    res, t_ours = clock(ours)
    captured = {}
    original = ref_checks.check_square_sr

    def capture(acc_dict, **kw):
        captured.update(acc_dict)
        return original(acc_dict, **kw)

    ref_checks.check_square_sr = capture
    aa = pyautoattack.AutoAttack(
        net, norm="Linf", eps=eps, version="standard", seed=0, device="cpu"
    )
    if chosen is not None:
        # the standard version's settings on a subset of its attacks (version='custom' would
        # change them: 5 restarts for APGD and FAB)
        aa.attacks_to_run = list(chosen)
    aa.verbose = False
    _, t_ref = clock(lambda: aa.run_standard_evaluation(nchw(x), torch.from_numpy(y), batch_size=n))
    ref_checks.check_square_sr = original
    header(loaded, net, x)
    ref_acc = min(captured.values()) if captured else float("nan")
    table(
        f"AutoAttack {args.aa_attacks}, Linf {args.eps}, {n} images",
        [
            (
                "AutoAttack (robust accuracy), target classes one at a time",
                t_ref,
                t_one,
                first_one,
                f"{ref_acc:.3f}",
                f"{res_one.robust_accuracy:.3f}",
            ),
            (
                f"AutoAttack (robust accuracy), runs_per_pass={registry.N_TARGET_CLASSES} "
                "(the default on CPU is 1)",
                t_ref,
                t_ours,
                first,
                f"{ref_acc:.3f}",
                f"{res.robust_accuracy:.3f}",
            ),
        ],
    )
    side_by_side(registry.RUNS_PER_PASS)
    print(
        f"\nours per attack, one target at a time (s): "
        f"{ ({k: round(v, 1) for k, v in res_one.time_s.items()}) }"
    )
    print(
        f"\nours per attack (s): { ({k: round(v, 1) for k, v in res.time_s.items()}) }; "
        f"cumulative accuracy ours {res.robust_accuracy_after}, pyautoattack {captured}"
    )


def bench_curvature(loaded, net, args):
    import importlib

    import pyhessian

    ph_module = importlib.import_module("pyhessian.hessian")
    n = args.n_curv
    x = smooth_images(n, 2)
    y = np.random.default_rng(2).integers(0, 10, n).astype(np.int32)
    obj = curvature.from_flax(
        loaded.model, loaded.variables, x, y, batch_size=n, mesh=make_mesh(args.devices)
    )
    # compile the HVP and both solvers' steps (a 2-step Lanczos, a 2-probe trace)
    _, compile_time = clock(lambda: obj.hvp(obj.params))
    curvature.lanczos(obj.hvp, obj.params, jax.random.key(9), num_steps=2, tol=1e-3)
    curvature.hutchinson_trace(obj.hvp, obj.params, jax.random.key(9), num_probes=2)

    top, t_top = clock(
        lambda: curvature.lanczos(obj.hvp, obj.params, jax.random.key(0), num_steps=100, tol=1e-3)
    )
    tr, t_tr = clock(
        lambda: curvature.hutchinson_trace(
            obj.hvp, obj.params, jax.random.key(1), num_probes=args.probes
        )
    )
    block = args.probe_block_size
    if block is None:
        from flatrob_jax.analysis.analyses import curvature_config

        block = curvature_config().probe_block_size

    def blocked_trace():
        return curvature.hutchinson_trace(
            obj.hvp,
            obj.params,
            jax.random.key(1),
            num_probes=args.probes,
            probe_block_size=block,
            block_matvec=obj.hvp_block,
        )

    _, t_tr_block_first = clock(blocked_trace)  # compiles the block program
    tr_block, t_tr_block = clock(blocked_trace)
    calls = []
    original = ph_module.hessian_vector_product

    def counting(*a):
        calls.append(1)
        return original(*a)

    ph_module.hessian_vector_product = counting
    try:
        torch.manual_seed(0)
        hess = pyhessian.hessian(
            net,
            torch.nn.CrossEntropyLoss(),
            data=(nchw(x), torch.from_numpy(y.astype(np.int64))),
            cuda=False,
        )
        ((top_ref,), _), t_top_ref = clock(lambda: hess.eigenvalues(maxIter=100, tol=1e-3))
        hvps_ref = len(calls)
        samples, t_tr_ref = clock(lambda: np.asarray(hess.trace(maxIter=args.probes, tol=0.0)))
    finally:
        ph_module.hessian_vector_product = original
    se_ref = samples.std(ddof=1) / np.sqrt(len(samples))
    header(loaded, net, x)
    table(
        f"curvature of the mean cross-entropy over {n} images (random labels); HVP compile "
        f"{compile_time:.1f} s",
        [
            (
                f"lambda_max to 1e-3: Lanczos ({top.num_matvecs} HVPs) vs power iteration "
                f"({hvps_ref} HVPs)",
                t_top_ref,
                t_top,
                float("nan"),
                f"{top_ref:.2f}",
                f"{top.eigenvalues[0]:.2f}",
            ),
            (
                f"trace, {args.probes} Rademacher probes",
                t_tr_ref,
                t_tr,
                float("nan"),
                f"{samples.mean():.0f} +- {se_ref:.0f}",
                f"{tr.trace:.0f} +- {tr.stderr:.0f}",
            ),
            (
                f"trace, {args.probes} Rademacher probes, probe_block_size={block}",
                t_tr_ref,
                t_tr_block,
                t_tr_block_first,
                f"{samples.mean():.0f} +- {se_ref:.0f}",
                f"{tr_block.trace:.0f} +- {tr_block.stderr:.0f}",
            ),
        ],
    )
    print(
        f"\ns/HVP: ours lambda_max {t_top / top.num_matvecs:.2f}, trace "
        f"{t_tr / tr.num_matvecs:.2f}, trace in blocks of {block} "
        f"{t_tr_block / tr_block.num_matvecs:.2f}; PyHessian lambda_max "
        f"{t_top_ref / hvps_ref:.2f}, trace {t_tr_ref / args.probes:.2f}"
    )


def bench_hvp_block(loaded, net, args):
    """Seconds per HVP on the dataset objective by block size (``hvp`` for 1 and
    ``hvp_block`` for k): every size compiled first (in increasing order, the process's peak
    RSS read after each: each peak is that size's or a smaller one's), then ``--repeats``
    rounds that time each size once in turn (round robin, so a load that drifts hits every
    size alike), median per size; and the block's vectors in bytes (2 x k x P x 4)."""
    import resource

    n = args.n_curv
    x = smooth_images(n, 2)
    y = np.random.default_rng(2).integers(0, 10, n).astype(np.int32)
    obj = curvature.from_flax(
        loaded.model, loaded.variables, x, y, batch_size=n, mesh=make_mesh(args.devices)
    )
    num_params = obj.num_params
    sizes = sorted(int(b) for b in args.blocks.split(","))
    calls, firsts, peaks = {}, {}, {}
    for k in sizes:
        if k == 1:
            calls[k] = lambda: obj.hvp(obj.params)
        else:
            vs = jax.tree_util.tree_map(
                lambda a, k=k: jnp.ones((k,) + a.shape, a.dtype) * 0.01, obj.params
            )
            calls[k] = lambda vs=vs: obj.hvp_block(vs)
        firsts[k] = clock(calls[k])[1]
        peaks[k] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    times = {k: [] for k in sizes}
    for _ in range(args.repeats):
        for k in sizes:
            times[k].append(clock(calls[k])[1])
    rows = [
        (k, firsts[k], float(np.median(times[k])), min(times[k]), max(times[k]), peaks[k])
        for k in sizes
    ]
    header(loaded, net, x)
    print(
        f"\n### HVP of the mean cross-entropy over {n} images by block size (median of "
        f"{args.repeats}; load average at the end: {load_average()})\n"
    )
    print(
        "| block k | first call (s) | s per call | min-max | s per HVP | vs k=1 | peak RSS "
        "(GiB) | block vectors 2kP*4 (GiB) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    base = rows[0][2] / rows[0][0]
    for k, first, med, lo, hi, rss in rows:
        print(
            f"| {k} | {first:.1f} | {med:.2f} | {lo:.2f}-{hi:.2f} | {med / k:.3f} | "
            f"{base / (med / k):.2f}x | {rss:.2f} | {2 * k * num_params * 4 / 2**30:.2f} |",
            flush=True,
        )


def bench_loops(loaded, net, args):
    """Old vs new back to back: the same APGD-CE call with the compiled lax loops and with
    the host loop of compiled steps."""
    eps, n = eval(args.eps), args.n_apgd  # noqa: S307
    x = smooth_images(n, 0)
    y = torch_logits(net, x).argmax(1)
    results = {}
    for host in (False, True, False, True):  # interleaved, to even out the load

        def run():
            return attacks.apgd(
                loaded.apply_fn,
                x,
                y,
                jax.random.key(0),
                eps=eps,
                norm="Linf",
                loss="ce",
                steps=args.loop_steps,
                return_info=True,
                execution=Execution(batch_size=n, num_devices=args.devices, host_loop=host),
            )

        if host not in results:
            _, first = clock(run)
        else:
            first = float("nan")
        (x_adv, info), t = clock(run)
        results.setdefault(host, []).append((t, first, x_adv, info["fooled"]))
    (t_lax, first_lax, x_lax, f_lax), (t_lax2, *_) = results[False]
    (t_host, first_host, x_host, f_host), (t_host2, *_) = results[True]
    header(loaded, net, x)
    print(
        f"\n### APGD-CE {args.loop_steps} it, Linf {args.eps}, {n} images: compiled lax "
        f"loops vs host loop of compiled steps (load average at the end: {load_average()})\n"
    )
    print("| loop | run 1 (s) | run 2 (s) | s / iteration (best) | first call (s) |")
    print("|---|---|---|---|---|")
    for name, a, b, first in (
        ("lax.fori_loop (old)", t_lax, t_lax2, first_lax),
        ("host loop (new)", t_host, t_host2, first_host),
    ):
        print(f"| {name} | {a:.1f} | {b:.1f} | {min(a, b) / args.loop_steps:.3f} | {first:.1f} |")
    print(
        f"\nspeed-up host / lax: {min(t_lax, t_lax2) / min(t_host, t_host2):.2f}x; same "
        f"fooled set: {bool((f_lax == f_host).all())}; max |x_adv diff| "
        f"{float(np.abs(x_lax - x_host).max()):.1e}"
    )


def bench_step(loaded, net, args):
    """CPU levers on the inner step of APGD (value and input-gradient of the CE loss on
    ResNet-18, n images): float32 vs bfloat16 compute; PyTorch's same step for reference."""
    n = args.n_apgd
    x = smooth_images(n, 0)
    y = torch_logits(net, x).argmax(1)
    model, variables = loaded.model, loaded.variables

    def make(dtype):
        def loss(v, z):
            vv = jax.tree_util.tree_map(lambda a: a.astype(dtype), v)
            logits = model.apply(vv, z.astype(dtype), train=False).astype(jnp.float32)
            return jnp.sum(jax.nn.log_softmax(logits)[jnp.arange(n), y])

        return jax.jit(jax.value_and_grad(loss, argnums=1))

    rows = []
    for name, fn in (("float32", make(jnp.float32)), ("bfloat16", make(jnp.bfloat16))):
        fn(variables, x)
        reps = []
        for _ in range(5):
            _, t = clock(lambda: fn(variables, x))
            reps.append(t)
        agree = ""
        if name == "bfloat16":
            g32 = np.sign(np.asarray(make(jnp.float32)(variables, x)[1]))
            same = np.mean(np.sign(np.asarray(fn(variables, x)[1])) == g32)
            agree = f"gradient signs equal to float32's: {same:.3f}"
        rows.append((name, min(reps), agree))
    xt = nchw(x).requires_grad_(True)
    reps = []
    for _ in range(5):
        t = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(net(xt), torch.from_numpy(y), reduction="sum")
        torch.autograd.grad(loss, xt)
        reps.append(time.perf_counter() - t)
    header(loaded, net, x)
    print(
        f"\n### one APGD inner step (loss + input gradient), {n} images "
        f"(load average at the end: {load_average()})\n"
    )
    print("| compute | ours (s, best of 5) | PyTorch float32 (s) | note |")
    print("|---|---|---|---|")
    for name, t, note in rows:
        print(f"| {name} | {t:.3f} | {min(reps):.3f} | {note} |")


def bench_lanczos(loaded, net, args):
    """Lanczos with num_steps=100 stopped after --lanczos-steps steps: seconds per step
    (after a compiled first step) and the process's peak resident memory, for the library's
    lanczos.py or another revision of it (run each in its own process, back to back)."""
    import importlib.util
    import resource

    del net
    if args.lanczos_impl:
        spec = importlib.util.spec_from_file_location("lanczos_under_test", args.lanczos_impl)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module("flatrob_jax.curvature.lanczos")
    n = args.n_curv
    x = smooth_images(n, 2)
    y = np.random.default_rng(2).integers(0, 10, n).astype(np.int32)
    obj = curvature.from_flax(
        loaded.model, loaded.variables, x, y, batch_size=n, mesh=make_mesh(args.devices)
    )
    jax.block_until_ready(obj.hvp(obj.params))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    times = []

    def stop(theta, s, beta):
        times.append(time.perf_counter())
        return len(theta) >= args.lanczos_steps

    start = jax.random.normal(jax.random.key(0), (obj.num_params,))
    t0 = time.perf_counter()
    alphas, *_ = module.lanczos_tridiagonal(obj.hvp, obj.params, start, 100, should_stop=stop)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    per_step = (times[-1] - times[0]) / (len(times) - 1)
    print(
        f"\n### Lanczos, ResNet-18 ({obj.num_params:,} params), {n} images, num_steps=100 "
        f"stopped after {len(alphas)} steps; implementation "
        f"{args.lanczos_impl or 'flatrob_jax (this checkout)'} (load average "
        f"{load_average()})\n"
    )
    print(
        "| first step incl. compile (s) | s / later step | peak RSS before (GiB) | "
        "peak RSS after (GiB) |"
    )
    print("|---|---|---|---|")
    print(f"| {times[0] - t0:.1f} | {per_step:.2f} | {rss0:.2f} | {rss:.2f} |")


def main(args):
    loaded, net = load(args.workdir)
    for what in args.what.split(","):
        {
            "apgd": bench_apgd,
            "autoattack": bench_autoattack,
            "curvature": bench_curvature,
            "loops": bench_loops,
            "step": bench_step,
            "lanczos": bench_lanczos,
            "hvp_block": bench_hvp_block,
        }[what](loaded, net, args)


if __name__ == "__main__":
    main(ARGS)
