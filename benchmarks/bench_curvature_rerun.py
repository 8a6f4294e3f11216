"""What a sweep's next run pays for its curvature analysis: ``curvature.evaluate`` twice on one
model (the Fashion-MNIST ``cnn_small``) at two different weights, with JAX's own count of
traces and XLA compilations in each call. Since the dataset objective compiles once per
(model, shapes, mesh), the second call should trace and compile nothing.

Presets: ``default`` (``curvature_config()``), ``default_capped`` (the same with
``lanczos_steps=20`` and ``trace_max_probes=20``: the same programs to compile, fewer HVPs),
``study`` (the default study's analysis settings, configs/sweeps/fashion_mnist_augmentations.py),
``study_v2`` (the v2 study's: Keskar 5 iterations, no APGD), ``paper_sharpness`` (the published
APGD grid of configs/sweeps/paper.py, 20 iterations, m = 128). ``--stages`` prints each stage's
seconds.

Run: python benchmarks/bench_curvature_rerun.py [--examples 2000] [--preset default_capped]
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
import types

REPO = os.path.join(os.path.dirname(__file__), "..")
sys.path.insert(0, REPO)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from flatrob_jax.analysis.analyses import curvature_config  # noqa: E402
from flatrob_jax.curvature import evaluate as curvature_evaluate  # noqa: E402
from flatrob_jax.models import get_model  # noqa: E402

PRESETS = {
    "default": {},
    "default_capped": {"lanczos_steps": 20, "trace_max_probes": 20},
    "study_v2": {
        "lanczos_steps": 20,
        "trace_method": "hutch++",
        "trace_max_probes": 18,
        "sharpness": True,
        "keskar_iters": 5,
        "adaptive_ascent": True,
        "adaptive_ascent_steps": 5,
        "adaptive_samples": 16,
    },
}
# The default study's and the paper design's curvature settings, read from the sweeps.
PRESETS["study"] = STUDY = {}
PRESETS["paper_sharpness"] = PAPER = {}
TRACE = "/jax/core/compile/jaxpr_trace_duration"
COMPILE = "/jax/core/compile/backend_compile_duration"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000, help="random 28x28x1 images")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default_capped")
    parser.add_argument("--stages", action="store_true", help="print seconds per stage")
    args = parser.parse_args()
    STUDY.update(_sweep_curvature("configs/sweeps/fashion_mnist_augmentations.py"))
    PAPER.update(
        {
            k: v
            for k, v in _sweep_curvature("configs/sweeps/paper.py").items()
            if k.startswith("adaptive_worst") or k in ("sharpness", "keskar_iters")
        }
    )
    model = get_model("cnn_small", 10)
    rng = np.random.RandomState(0)
    images = rng.rand(args.examples, 28, 28, 1).astype(np.float32)
    labels = rng.randint(0, 10, args.examples).astype(np.int32)
    count, seconds = collections.Counter(), collections.Counter()

    def listener(event, duration, **kwargs):
        count[event] += 1
        seconds[event] += duration

    jax.monitoring.register_event_duration_secs_listener(listener)
    print(f"cnn_small, {args.examples} images, preset {args.preset}, {jax.devices()[0].platform}")
    print("| weights | wall s | traces (s) | XLA compiles (s) | HVPs | lambda_max |")
    print("|---|---|---|---|---|---|")
    for seed in (0, 1):
        view = types.SimpleNamespace(
            model=model, variables=model.init(jax.random.key(seed), images[:1])
        )
        count.clear()
        seconds.clear()
        t0 = time.perf_counter()
        out = curvature_evaluate.evaluate(
            view,
            (images, labels),
            curvature_config(),
            key=jax.random.key(7),
            log=lambda _: None,
            **PRESETS[args.preset],
        )
        wall = time.perf_counter() - t0
        hvps = out["lanczos_hvps"] + out.get("trace_hvps", 0)
        print(
            f"| init seed {seed} | {wall:.1f} | {count[TRACE]} ({seconds[TRACE]:.1f}) | "
            f"{count[COMPILE]} ({seconds[COMPILE]:.1f}) | {hvps} | {out['lambda_max']:.6g} |"
        )
        if args.stages:
            print("|  | stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in out["seconds"].items()))


def _sweep_curvature(path: str) -> dict:
    """The ``analysis.curvature.*`` overrides of a sweep file (its module-level settings)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sweep", os.path.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    overrides = getattr(module, "ANALYSIS", None) or module.get_sweep().overrides
    prefix = "analysis.curvature."
    return {k[len(prefix) :]: v for k, v in overrides.items() if k.startswith(prefix)}


if __name__ == "__main__":
    main()
