"""What the default study's sharpness costs per curvature result, v2's settings against v3's,
on a trained checkpoint: the unit costs (a gradient on the 256 examples and on APGD's batch of
64, a loss, an HVP; medians of 7 interleaved calls) times the evaluations each setting makes.

v2: Keskar at 5 L-BFGS-B iterations (and L(w) once more), the fast ascent (5 steps), the
average adaptive sharpness with 16 samples. v3: Keskar at 10 iterations (its first point the
end point's gradient), APGD l-inf rho 0.002 on one batch of 64 (20 iterations), 10 samples,
plus the end point's gradient norm.

Run: python benchmarks/bench_sharpness_cost.py --workdir WORKDIR [--examples 256]
(WORKDIR: a trained run, e.g. the default study's warm start).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from flatrob_jax import curvature, load_for_eval  # noqa: E402
from flatrob_jax.data import load_arrays  # noqa: E402
from flatrob_jax.distributed import make_mesh  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--examples", type=int, default=256)
    args = parser.parse_args()
    run = load_for_eval(args.workdir)
    images, labels = load_arrays(run.config.dataset, "train", args.examples)
    obj = curvature.from_flax(
        run.model, run.variables, images, labels, batch_size=128, mesh=make_mesh(1)
    )
    p = obj.params
    batch = obj.batches(64, num_examples=64)
    units = {
        "gradient": lambda: obj.value_and_grad(p),
        "gradient_64": lambda: batch[0].value_and_grad(p),
        "loss": lambda: obj.loss(p),
        "hvp": lambda: obj.hvp(p),
    }
    for fn in units.values():
        jax.block_until_ready(fn())
    times = {k: [] for k in units}
    for _ in range(7):
        for k, fn in units.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times[k].append(time.perf_counter() - t0)
    s = {k: float(np.median(v)) for k, v in times.items()}
    keskar5 = curvature.keskar_sharpness(obj.value_and_grad, p, max_iters=5).num_evaluations
    keskar10 = curvature.keskar_sharpness(obj.value_and_grad, p, max_iters=10).num_evaluations
    v2 = (keskar5 + 1 + 6) * s["gradient"] + 17 * s["loss"]
    v3 = keskar10 * s["gradient"] + 21 * s["gradient_64"] + 11 * s["loss"]
    print(f"{args.workdir}: {args.examples} examples, loss {float(obj.loss(p)):.4f}")
    print("| unit | seconds |\n|---|---|")
    for k, v in s.items():
        print(f"| {k} | {v:.3f} |")
    print(f"Keskar evaluations: {keskar5} at 5 iterations, {keskar10} at 10")
    print(f"sharpness per curvature result: v2 {v2:.2f} s, v3 {v3:.2f} s ({v3 / v2:.2f}x)")


if __name__ == "__main__":
    main()
