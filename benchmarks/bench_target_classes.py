"""AutoAttack's target classes one at a time vs side by side (``runs_per_pass``), ours only,
on the parity test's inputs: the first 500 Fashion-MNIST test images and the tiny CNN of
tests/test_attacks_parity.py (tests/attacks_support.py).

    python benchmarks/bench_target_classes.py --what cascade   # same robust accuracy?
    python benchmarks/bench_target_classes.py --what timing    # APGD-T, FAB-T: s, ratio

``cascade``: the standard cascade (Linf 0.1 and L2 2.0, the parity test's radii) with
``runs_per_pass=1`` and with all 9 target classes in one pass: robust accuracy after each
attack, robust flags, max |x_adv difference|. ``timing``: APGD-T and FAB-T on the examples
still robust after APGD-CE (Linf 0.1), each setting compiled first, then timed round robin,
median of ``--repeats``.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from attacks_support import apply_fn_of, fashion_mnist, trained_tiny_cnn  # noqa: E402

from flatrob_jax import attacks  # noqa: E402
from flatrob_jax.attacks import registry  # noqa: E402
from flatrob_jax.execution import Execution  # noqa: E402

ALL = registry.N_TARGET_CLASSES


def side_by_side(runs):
    for name in ("apgd-t", "fab-t"):
        registry.ATTACKS[name].settings["runs_per_pass"] = runs


def cascade(f, x, y, key):
    for norm, eps in (("Linf", 0.1), ("L2", 2.0)):
        out = {}
        for runs in (1, ALL):
            side_by_side(runs)
            t = time.perf_counter()
            out[runs] = attacks.autoattack(f, x, y, key, eps=eps, norm=norm)
            print(
                f"{norm} {eps} runs_per_pass={runs}: robust accuracy after each attack "
                f"{out[runs].robust_accuracy_after}, {time.perf_counter() - t:.1f} s "
                f"(compilation included), load {os.getloadavg()}",
                flush=True,
            )
        a, b = out[1], out[ALL]
        print(
            f"{norm}: same robust flags {bool(np.array_equal(a.robust, b.robust))}, same "
            f"accuracies {a.robust_accuracy_after == b.robust_accuracy_after}, max |x_adv diff| "
            f"{float(np.abs(a.x_adv - b.x_adv).max())}",
            flush=True,
        )
    side_by_side(registry.RUNS_PER_PASS)


def timing(f, x, y, key, repeats):
    norm, eps = "Linf", 0.1
    ce = registry.run_attack(
        "apgd-ce", f, x, y, registry.attack_key(key, "apgd-ce"), eps=eps, norm=norm
    )
    pred = np.asarray(jax.jit(f)(x)).argmax(1)
    idx = np.flatnonzero((pred == y) & ~ce[1])
    print(f"{norm} {eps}: {idx.size} robust after APGD-CE; load {os.getloadavg()}", flush=True)

    def call(name, runs):
        return registry.run_attack(
            name,
            f,
            x[idx],
            y[idx],
            registry.attack_key(key, name),
            eps=eps,
            norm=norm,
            indices=idx,
            execution=Execution(),
            runs_per_pass=runs,
        )

    print("| attack | one target at a time (s) | all 9 side by side (s) | ratio | same fooled |")
    print("|---|---|---|---|---|")
    for name in ("apgd-t", "fab-t"):
        first = {runs: call(name, runs) for runs in (1, ALL)}
        times = {1: [], ALL: []}
        for _ in range(repeats):
            for runs in (1, ALL):
                t = time.perf_counter()
                call(name, runs)
                times[runs].append(time.perf_counter() - t)
        one, all_ = np.median(times[1]), np.median(times[ALL])
        same = bool(np.array_equal(first[1][1], first[ALL][1]))
        print(
            f"| {name} | {one:.2f} {np.round(times[1], 2)} | {all_:.2f} "
            f"{np.round(times[ALL], 2)} | {one / all_:.2f}x | {same} |",
            flush=True,
        )
    print(f"load at the end {os.getloadavg()}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--what", default="cascade,timing")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    model, params = trained_tiny_cnn()
    f = apply_fn_of(model, params)
    x, y = fashion_mnist("test", 500)
    key = jax.random.key(0)
    for what in args.what.split(","):
        {
            "cascade": lambda: cascade(f, x, y, key),
            "timing": lambda: timing(f, x, y, key, args.repeats),
        }[what]()


if __name__ == "__main__":
    main()
