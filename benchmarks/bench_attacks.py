"""Wall time of APGD-CE (100 steps) and of the full standard AutoAttack, ours (JAX, jitted,
sharded over the CPU devices) vs pyautoattack 0.2.0 (PyTorch, CPU), on the same tiny
Fashion-MNIST CNN (weights ported Flax -> PyTorch) and the same test images.

    python benchmarks/bench_attacks.py [--n 500] [--eps-apgd 8/255] [--eps-aa 0.1]
        [--host-loop auto|yes|no]

(The same tables on pyautoattack's CIFAR-10 ResNet-18: benchmarks/bench_resnet18.py.)

Ours is timed twice (first call includes compilation; second is the steady state).  Prints a
markdown table (paste into benchmarks/attacks.md).
"""

import argparse
import os
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from attacks_support import (
    apply_fn_of,
    fashion_mnist,
    to_nchw,
    torch_twin,  # noqa: E402
    trained_tiny_cnn,
)

from flatrob_jax import attacks  # noqa: E402
from flatrob_jax.execution import Execution  # noqa: E402


def _acc_jax(f, x, y):
    return float((np.asarray(f(x)).argmax(1) == y).mean())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--eps-apgd", type=str, default="8/255")
    ap.add_argument("--eps-aa", type=str, default="0.1")
    ap.add_argument("--norm", default="Linf")
    ap.add_argument("--device", default="cpu", help="torch device of the reference (cpu, cuda)")
    ap.add_argument(
        "--host-loop",
        default="auto",
        choices=("auto", "yes", "no"),
        help="ours: APGD/PGD iterations as a host loop of compiled steps (auto: CPU)",
    )
    args = ap.parse_args()
    eps_apgd, eps_aa = eval(args.eps_apgd), eval(args.eps_aa)  # noqa: S307 - CLI fractions
    host_loop = {"auto": None, "yes": True, "no": False}[args.host_loop]
    import pyautoattack
    from pyautoattack import checks as ref_checks
    from pyautoattack.autopgd_base import APGDAttack

    model, params = trained_tiny_cnn()
    x, y = fashion_mnist("test", args.n)
    f = apply_fn_of(model, params)
    net = torch_twin(params).to(args.device)
    xt, yt = to_nchw(x).to(args.device), torch.from_numpy(y).long().to(args.device)
    rows = []

    def ours_apgd():
        return attacks.apgd(
            f,
            x,
            y,
            jax.random.key(0),
            eps=eps_apgd,
            norm=args.norm,
            loss="ce",
            steps=100,
            execution=Execution(host_loop=host_loop),
        )

    t = time.perf_counter()
    ours_apgd()
    t_first = time.perf_counter() - t
    t = time.perf_counter()
    xa = ours_apgd()
    t_ours = time.perf_counter() - t
    acc_ours = _acc_jax(f, xa, y)
    ref = APGDAttack(
        net, n_iter=100, norm=args.norm, eps=eps_apgd, loss="ce", seed=0, device=args.device
    )
    t = time.perf_counter()
    xr = ref.perturb(xt, yt)
    t_ref = time.perf_counter() - t
    acc_ref = float((net(xr).argmax(1) == yt).float().mean())
    rows.append(
        (
            f"APGD-CE 100 steps, {args.norm} eps={args.eps_apgd}",
            t_first,
            t_ours,
            t_ref,
            acc_ours,
            acc_ref,
        )
    )

    def ours_aa():
        return attacks.autoattack(
            f,
            x,
            y,
            jax.random.key(0),
            eps=eps_aa,
            norm=args.norm,
            execution=Execution(host_loop=host_loop),
        )

    t = time.perf_counter()
    ours_aa()
    t_first = time.perf_counter() - t
    t = time.perf_counter()
    res = ours_aa()
    t_ours = time.perf_counter() - t
    captured = {}
    original = ref_checks.check_square_sr

    def capture(acc_dict, **kw):
        captured.update(acc_dict)
        return original(acc_dict, **kw)

    ref_checks.check_square_sr = capture
    aa = pyautoattack.AutoAttack(net, eps=eps_aa, norm=args.norm, seed=0, device=args.device)
    t = time.perf_counter()
    aa.run_standard_evaluation(xt, yt, batch_size=500)
    t_ref = time.perf_counter() - t
    rows.append(
        (
            f"AutoAttack standard, {args.norm} eps={args.eps_aa}",
            t_first,
            t_ours,
            t_ref,
            res.robust_accuracy,
            captured["square"] if "square" in captured else min(captured.values()),
        )
    )

    print(
        f"\n{args.n} Fashion-MNIST test images, tiny CNN, {jax.device_count()} JAX "
        f"{jax.devices()[0].platform} device(s); pyautoattack on {args.device}, torch threads "
        f"{torch.get_num_threads()}; host_loop={args.host_loop}; load average "
        f"{os.getloadavg()[0]:.1f}\n"
    )
    print(
        "| attack | ours first call (s, incl. compile) | ours (s) | pyautoattack (s) | "
        "speed-up | robust acc ours | robust acc pyautoattack |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, first, ours, ref_t, a_o, a_r in rows:
        print(
            f"| {name} | {first:.1f} | {ours:.1f} | {ref_t:.1f} | {ref_t / ours:.1f}x | "
            f"{a_o:.2%} | {a_r:.2%} |"
        )
    print("\nper attack (cumulative robust accuracy), ours:", res.robust_accuracy_after)
    print("per attack (cumulative robust accuracy), pyautoattack:", captured)


if __name__ == "__main__":
    main()
