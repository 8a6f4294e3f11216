"""Wall time of a full analysis of a real model, ours vs the PyTorch peers doing the same work
on the same weights and the same inputs: pyautoattack's CIFAR-10 ResNet-18
(``pyautoattack/examples/model_test.pt``, 11.2M parameters).

    python benchmarks/bench_full_analysis.py                      # the documented reduced size
    python benchmarks/bench_full_analysis.py --sections apgd      # rerun one section
    python benchmarks/bench_full_analysis.py --n-curv 5000 --n-corr 1000 --severities 1,2,3,4,5 \
        --n-apgd 1000                                             # issue 14's full size

Components (one process, ours then the peer, back to back, per component):

* flatness: lambda_max to ``--tol`` (ours: ``curvature.from_flax`` + ``curvature.lanczos``;
  PyHessian: ``hessian.eigenvalues``, power iteration, same tolerance and iteration cap) and
  the Hutchinson trace with ``--probes`` Rademacher probes each (``curvature.hutchinson_trace``
  with every probe taken; PyHessian ``hessian.trace(tol=0)``), of the mean cross-entropy over
  ``--n-curv`` images, eval-mode BatchNorm, the whole set as one batch for PyHessian;
* corruptions: the 15 benchmark corruptions at ``--severities`` on ``--n-corr`` images,
  corrupted and classified (ours: ``corruptions.evaluate``, what the analysis calls;
  the peer: imagecorruptions 1.1.2 ``corrupt()`` one image at a time, then the PyTorch model
  in batches of ``--corr-batch``). imagecorruptions has only the ImageNet constants, so ours
  uses them too (``--resolution imagenet``; the analysis picks the CIFAR ones for 32x32);
* APGD-CE: ``--steps`` iterations, 1 restart, Linf ``--eps`` on ``--n-apgd`` images
  (ours: ``attacks.apgd``; pyautoattack: ``APGDAttack(n_restarts=1)``).

Inputs: CIFAR-10 is not available offline, so every component gets fixed seeded *smoothed
noise* images (``bench_resnet18.smooth_images``; a different seed per component), identical on
both sides; curvature labels are seeded random classes, corruption and attack labels the
model's own clean predictions. Ours is run twice: the first call includes compilation (what
a fresh ``python -m flatrob_jax.analyze`` pays), the second is the compiled steady state.

Load: before and after each measured section the script records the load average and the CPU
time that *other* processes used meanwhile (``/proc/stat`` busy time minus this process's
``os.times()``, in cores out of ``os.cpu_count()``); a section during which others used more
than ``--loaded-above`` cores is marked LOADED in the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import sys
import time
import warnings

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_HERE, os.path.dirname(_HERE)]  # bench_resnet18 & co., and this checkout
warnings.filterwarnings("ignore")

SECTIONS = ("curvature", "corruptions", "apgd")


def parse():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {SECTIONS}")
    ap.add_argument(
        "--workdir", default="/tmp/flatrob_bench_full_r18", help="imported run (made once)"
    )
    ap.add_argument("--n-curv", type=int, default=128, help="flatness: images")
    ap.add_argument("--curv-batch", type=int, default=128, help="ours: examples per microbatch")
    ap.add_argument("--lanczos-steps", type=int, default=100, help="max HVPs for lambda_max")
    ap.add_argument("--tol", type=float, default=1e-3, help="lambda_max relative tolerance")
    ap.add_argument("--probes", type=int, default=10, help="trace: Rademacher probes")
    ap.add_argument(
        "--probe-block-size",
        type=int,
        default=None,
        help="trace: probes per hvp_block call (default: analysis.curvature.probe_block_size)",
    )
    ap.add_argument("--n-corr", type=int, default=100, help="corruptions: images per cell")
    ap.add_argument("--severities", default="1,3", help="corruptions: comma list of 1..5")
    ap.add_argument("--resolution", default="imagenet", choices=("imagenet", "cifar"))
    ap.add_argument("--corr-batch", type=int, default=250, help="corruptions: batch size")
    ap.add_argument("--n-apgd", type=int, default=16, help="APGD-CE: images")
    ap.add_argument("--steps", type=int, default=100, help="APGD-CE: iterations")
    ap.add_argument("--eps", default="8/255", help="APGD-CE: Linf radius")
    ap.add_argument("--full-curv", type=int, default=5000, help="estimate for: flatness images")
    ap.add_argument("--full-test", type=int, default=1000, help="estimate for: test images")
    ap.add_argument("--full-severities", type=int, default=5, help="estimate for: severities")
    ap.add_argument(
        "--loaded-above",
        type=float,
        default=0.25,
        help="mark a section LOADED when other processes used more cores than this",
    )
    return ap.parse_args()


import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from flatrob_jax import attacks, corruptions, curvature  # noqa: E402
from flatrob_jax.corruptions.evaluate import evaluate as evaluate_corruptions  # noqa: E402
from flatrob_jax.distributed import make_mesh  # noqa: E402
from flatrob_jax.execution import Execution  # noqa: E402


def _bench_helpers():
    """bench_resnet18's model loading and inputs, bench_corruptions' peer shim (imported here,
    after argument parsing, so that ``--help`` stays fast)."""
    import bench_corruptions
    import bench_resnet18

    return bench_resnet18, bench_corruptions


# --------------------------------------------------------------------------- load metering


def _busy_seconds() -> float:
    """CPU seconds all processes of this machine spent busy (``/proc/stat``, steal excluded)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


class Meter:
    """Load average and other processes' CPU use over one measured section."""

    def __init__(self):
        self.load_before = os.getloadavg()[0]
        self._busy, self._own, self._t = _busy_seconds(), _own_seconds(), time.perf_counter()

    def stop(self, threshold: float) -> Meter:
        elapsed = time.perf_counter() - self._t
        others = (_busy_seconds() - self._busy) - (_own_seconds() - self._own)
        self.others_cores = max(others, 0.0) / elapsed
        self.load_after = os.getloadavg()[0]
        self.loaded = self.others_cores > threshold
        return self

    def text(self) -> str:
        mark = " **LOADED**" if self.loaded else ""
        return (
            f"{self.load_before:.1f} -> {self.load_after:.1f}; others {self.others_cores:.2f}{mark}"
        )


def clock(fn):
    t = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - t


@dataclasses.dataclass
class Row:
    """One timed component: peer seconds, ours compiled and first-call seconds, the results
    of both sides, and ``full_factor``: the work of the full size / the work measured."""

    name: str
    work: str
    peer: float
    ours: float
    first: float
    r_peer: str
    r_ours: str
    agree: str
    rates: str
    meter: Meter
    full_factor: float


def quiet(_msg):
    """The libraries' progress printer, silenced (the script prints its own table)."""


# --------------------------------------------------------------------------- sections


def bench_curvature(loaded, net, args, helpers):
    import importlib

    import pyhessian

    r18, _ = helpers
    ph_module = importlib.import_module("pyhessian.hessian")
    n, mesh = args.n_curv, make_mesh(1)
    x = r18.smooth_images(n, 2)
    y = np.random.default_rng(2).integers(0, 10, n).astype(np.int32)
    meter = Meter()

    # What one run's analysis does: a fresh objective, then Lanczos and the trace on it (the
    # first call compiles the HVP and both solvers' steps); then the same solves again on the
    # same objective, compiled. (A second from_flax objective of the same model, shapes and
    # mesh, e.g. the next run of a sweep, reuses the compiled programs too.)
    obj, t_obj = clock(
        lambda: curvature.from_flax(
            loaded.model, loaded.variables, x, y, batch_size=args.curv_batch, mesh=mesh
        )
    )

    block = args.probe_block_size
    if block is None:
        from flatrob_jax.analysis.analyses import curvature_config

        block = curvature_config().probe_block_size
    print(f"# curvature ours: trace probes in blocks of {block}")

    def ours():
        top, t_top = clock(
            lambda: curvature.lanczos(
                obj.hvp, obj.params, jax.random.key(0), num_steps=args.lanczos_steps, tol=args.tol
            )
        )
        tr, t_tr = clock(
            lambda: curvature.hutchinson_trace(
                obj.hvp,
                obj.params,
                jax.random.key(1),
                num_probes=args.probes,
                min_probes=args.probes,
                probe_block_size=block,
                block_matvec=obj.hvp_block,
            )
        )
        return top, tr, t_top, t_tr

    _, _, first_top, first_tr = ours()
    first_top += t_obj
    top, tr, t_top, t_tr = ours()
    print(
        f"# curvature ours: first {first_top:.1f} + {first_tr:.1f} s, then {t_top:.1f} + "
        f"{t_tr:.1f} s",
        flush=True,
    )

    calls = []
    original = ph_module.hessian_vector_product

    def counting(*a):
        calls.append(1)
        return original(*a)

    ph_module.hessian_vector_product = counting
    try:
        torch.manual_seed(0)
        hess, t_setup = clock(
            lambda: pyhessian.hessian(
                net,
                torch.nn.CrossEntropyLoss(),
                data=(r18.nchw(x), torch.from_numpy(y.astype(np.int64))),
                cuda=False,
            )
        )
        ((top_ref,), _), t_top_ref = clock(
            lambda: hess.eigenvalues(maxIter=args.lanczos_steps, tol=args.tol)
        )
        hvps_ref = len(calls)
        samples, t_tr_ref = clock(lambda: np.asarray(hess.trace(maxIter=args.probes, tol=0.0)))
    finally:
        ph_module.hessian_vector_product = original
    meter.stop(args.loaded_above)
    t_top_ref += t_setup
    se_ref = samples.std(ddof=1) / np.sqrt(len(samples))
    lam, rel = float(top.eigenvalues[0]), abs(float(top.eigenvalues[0]) / top_ref - 1)
    z = abs(tr.trace - samples.mean()) / np.hypot(tr.stderr, se_ref)
    return [
        Row(
            "lambda_max",
            f"lambda_max to {args.tol:g}, {n} images (ours Lanczos {top.num_matvecs} HVPs, "
            f"PyHessian power iteration {hvps_ref} HVPs)",
            t_top_ref,
            t_top,
            first_top,
            f"{top_ref:.2f}",
            f"{lam:.2f}",
            f"rel. diff {rel:.1e}",
            f"s/HVP: peer {t_top_ref / hvps_ref:.2f}, ours {t_top / top.num_matvecs:.2f}",
            meter,
            args.full_curv / n,
        ),
        Row(
            "trace",
            f"trace, {args.probes} Rademacher probes, {n} images",
            t_tr_ref,
            t_tr,
            first_tr,
            f"{samples.mean():.0f} ± {se_ref:.0f}",
            f"{tr.trace:.0f} ± {tr.stderr:.0f}",
            f"{z:.1f} combined SE",
            f"s/HVP: peer {t_tr_ref / args.probes:.2f}, ours {t_tr / args.probes:.2f}",
            meter,
            args.full_curv / n,
        ),
    ], {"hvps_ours": top.num_matvecs, "hvps_peer": hvps_ref}


def bench_corruptions(loaded, net, args, helpers):
    r18, bc = helpers
    names = corruptions.BENCHMARK
    severities = [int(s) for s in args.severities.split(",")]
    n = args.n_corr
    x_u8 = np.round(r18.smooth_images(n, 3) * 255).astype(np.uint8)
    x = x_u8.astype(np.float32) / 255
    y = r18.torch_logits(net, x).argmax(1).astype(np.int32)
    peer_corrupt = bc.peer_corrupt_fn()
    meter = Meter()

    def ours():
        return evaluate_corruptions(
            loaded.apply_fn,
            (x, y),
            key=jax.random.key(3),
            log=quiet,
            corruptions=tuple(names),
            severities=tuple(severities),
            resolution=args.resolution,
            batch_size=args.corr_batch,
        )

    _, first = clock(ours)
    res, t_ours = clock(ours)
    print(f"# corruptions ours: first {first:.1f} s, then {t_ours:.1f} s", flush=True)

    def peer():
        np.random.seed(0)
        errors, t_corrupt = {}, 0.0
        for name in names:
            errors[name] = []
            for s in severities:
                t = time.perf_counter()
                xc = np.stack([peer_corrupt(img, s, name) for img in x_u8])
                t_corrupt += time.perf_counter() - t
                pred = np.concatenate(
                    [
                        r18.torch_logits(net, xc[i : i + args.corr_batch].astype(np.float32) / 255)
                        for i in range(0, n, args.corr_batch)
                    ]
                ).argmax(1)
                errors[name].append(float((pred != y).mean()))
        return errors, t_corrupt

    (errors_ref, t_corrupt_ref), t_ref = clock(peer)
    meter.stop(args.loaded_above)
    cells = len(names) * len(severities)
    mce_ref = float(np.mean([e for v in errors_ref.values() for e in v]))
    mce = res["mean_corruption_error"]
    per_diff = {k: float(np.mean(res["errors"][k]) - np.mean(errors_ref[k])) for k in names}
    worst = max(per_diff, key=lambda k: abs(per_diff[k]))
    row = Row(
        "corruptions",
        f"{len(names)} corruptions x severities {severities}, {n} images "
        f"({args.resolution} constants)",
        t_ref,
        t_ours,
        first,
        f"mean error {mce_ref:.3f}",
        f"mean error {mce:.3f}",
        f"diff {mce - mce_ref:+.3f}; largest per corruption {worst} {per_diff[worst]:+.2f}",
        f"images/s: peer {cells * n / t_ref:.0f} (corrupting alone {cells * n / t_corrupt_ref:.0f}"
        f"), ours {cells * n / t_ours:.0f}",
        meter,
        args.full_test / n * args.full_severities / len(severities),
    )
    detail = [(k, np.mean(errors_ref[k]), np.mean(res["errors"][k])) for k in names]
    return [row], {"detail": detail, "clean_error_ours": res.get("clean_error")}


def bench_apgd(loaded, net, args, helpers):
    from pyautoattack.autopgd_base import APGDAttack

    r18, _ = helpers
    eps, n = eval(args.eps), args.n_apgd  # noqa: S307 - a CLI fraction
    x = r18.smooth_images(n, 0)
    y = r18.torch_logits(net, x).argmax(1)
    f = loaded.apply_fn
    meter = Meter()

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
            execution=Execution(batch_size=n, num_devices=1),
        )

    _, first = clock(ours)
    x_ours, t_ours = clock(ours)
    print(f"# APGD-CE ours: first {first:.1f} s, then {t_ours:.1f} s", flush=True)
    acc_ours = float((np.asarray(jax.jit(f)(x_ours)).argmax(1) == y).mean())
    torch.manual_seed(0)
    ref = APGDAttack(
        net, n_iter=args.steps, norm="Linf", eps=eps, loss="ce", n_restarts=1, seed=0, device="cpu"
    )
    x_ref, t_ref = clock(lambda: ref.perturb(r18.nchw(x), torch.from_numpy(y)))
    meter.stop(args.loaded_above)
    x_ref = x_ref.detach().numpy().transpose(0, 2, 3, 1)
    acc_ref = float((r18.torch_logits(net, x_ref).argmax(1) == y).mean())
    row = Row(
        "APGD-CE",
        f"APGD-CE {args.steps} it, Linf {args.eps}, {n} images, 1 restart",
        t_ref,
        t_ours,
        first,
        f"robust acc. {acc_ref:.3f}",
        f"robust acc. {acc_ours:.3f}",
        f"diff {acc_ours - acc_ref:+.3f}",
        f"s/iteration: peer {t_ref / args.steps:.3f}, ours {t_ours / args.steps:.3f}",
        meter,
        args.full_test / n,
    )
    return [row], {}


# --------------------------------------------------------------------------- report


def print_table(rows):
    print(
        "\n| component | peer (s) | ours (s) | ours first call, incl. compile (s) | "
        "peer / ours | peer / ours first call | result peer | result ours | agreement | "
        "per-unit rates | load 1-min before -> after; others' CPU (cores of 2) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.work} | {r.peer:.1f} | {r.ours:.1f} | {r.first:.1f} | {r.peer / r.ours:.2f}x | "
            f"{r.peer / r.first:.2f}x | {r.r_peer} | {r.r_ours} | {r.agree} | {r.rates} | "
            f"{r.meter.text()} |"
        )
    peer = sum(r.peer for r in rows)
    ours = sum(r.ours for r in rows)
    first = sum(r.first for r in rows)
    loaded = any(r.meter.loaded for r in rows)
    print(
        f"| **total** | **{peer:.1f}** | **{ours:.1f}** | **{first:.1f}** | "
        f"**{peer / ours:.2f}x** | **{peer / first:.2f}x** | | | | | "
        f"{'some sections **LOADED**' if loaded else 'all sections quiet'} |",
        flush=True,
    )


def print_estimates(rows, args):
    """Linear extrapolation of the compiled and peer times to the full size (an estimate)."""
    print(
        f"\n### Estimate (not measured): the full size by linear scaling of the times above\n\n"
        f"flatness on {args.full_curv} images (the same HVP and probe counts), the 15 "
        f"corruptions x {args.full_severities} severities on {args.full_test} images, APGD-CE "
        f"{args.steps} it on {args.full_test} images: time x (images x cells) of the full size / "
        f"of the measured one; compilation left out.\n"
    )
    print("| component | peer (estimate, min) | ours (estimate, min) |")
    print("|---|---|---|")
    peer = ours = 0.0
    for r in rows:
        p, o = r.peer * r.full_factor / 60, r.ours * r.full_factor / 60
        peer, ours = peer + p, ours + o
        print(f"| {r.name} (work x{r.full_factor:.0f}) | {p:.0f} | {o:.0f} |")
    print(f"| total | {peer:.0f} | {ours:.0f} |")


def main():
    args = parse()
    helpers = _bench_helpers()
    r18 = helpers[0]
    wanted = [s for s in args.sections.split(",") if s]
    unknown = sorted(set(wanted) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"unknown --sections {unknown}; allowed: {SECTIONS}")
    loaded, net = r18.load(args.workdir)
    probe = r18.smooth_images(16, 7)
    diff = float(
        np.abs(np.asarray(jax.jit(loaded.apply_fn)(probe)) - r18.torch_logits(net, probe)).max()
    )
    print(
        f"\n## Full analysis, ResNet-18 (pyautoattack examples/model_test.pt, imported), "
        f"{datetime.datetime.now().isoformat(timespec='minutes')}\n\n"
        f"jax {jax.__version__} on {jax.device_count()} {jax.devices()[0].platform} device; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {os.cpu_count()} CPUs; "
        f"max |logit diff| {diff:.1e} on 16 images; XLA_FLAGS="
        f"{os.environ.get('XLA_FLAGS', '')!r}; command: python {' '.join(sys.argv)}",
        flush=True,
    )
    rows, extras = [], {}
    for name in wanted:
        fn = {"curvature": bench_curvature, "corruptions": bench_corruptions, "apgd": bench_apgd}
        new_rows, extra = fn[name](loaded, net, args, helpers)
        rows += new_rows
        extras.update(extra)
    print_table(rows)
    if "detail" in extras:
        print("\nmean error over the severities, per corruption (peer / ours):\n")
        print(", ".join(f"{k} {p:.2f} / {o:.2f}" for k, p, o in extras["detail"]))
        print(
            f"clean error (ours, on the labels = PyTorch's predictions): "
            f"{extras['clean_error_ours']}"
        )
    print_estimates(rows, args)


if __name__ == "__main__":
    main()
