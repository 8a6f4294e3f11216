"""Regenerate flatrob_jax/example_study/: the small study notebooks/explore_study.ipynb opens when
there is no study at its STUDY location (so the notebook runs on its own, e.g. in a fresh Colab).

It is the real output of the study notebooks/quickstart.ipynb makes with ``SMOKE = True`` (the
smoke sweep ``fashion_mnist_augmentations:smoke`` with the quickstart's smaller sizes: 3 runs
and a warm start of a tiny CNN, 3-4 training steps each, analyzed on 32 images), trained and
analyzed by this script on Debian's Fashion-MNIST; its numbers show the notebook's mechanics,
not a finding. Kept: results.csv, results.json and report/report.md (its figures are left out
for size: explore_study draws them again), and ABOUT.md saying how and when it was made.

    python tools/make_example_study.py [--workdir DIR]    # from the repository root
"""

import argparse
import datetime
import os
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = "fashion_mnist_augmentations:smoke"
# The quickstart's SMOKE sizes for its study (notebooks/quickstart.ipynb, section 4).
QUICKSTART_SMOKE = {
    "train.num_steps": 3,
    "dataset.num_train_examples": 256,
    "dataset.num_eval_examples": 64,
    "analysis.num_train_examples": 32,
    "analysis.num_test_examples": 32,
    "analysis.measures": ("clean", "curvature", "corruptions", "attacks"),
    "analysis.curvature.lanczos_steps": 4,
    "analysis.curvature.trace_min_probes": 2,
    "analysis.curvature.trace_max_probes": 3,
    "analysis.corruptions.corruptions": ("gaussian_noise", "contrast"),
    "analysis.corruptions.severities": (1, 3),
    "analysis.attacks.pgd_steps": 2,
}
TARGET = os.path.join(REPO, "flatrob_jax", "example_study")
MAX_BYTES = 200_000  # package data stays small


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", help="where the sweep runs (default: a temporary directory)")
    args = parser.parse_args()
    sys.path.insert(0, REPO)
    import jax

    from flatrob_jax import study

    workdir = args.workdir or tempfile.mkdtemp(prefix="flatrob_example_study_")
    sweep = study.load_sweep(SWEEP)
    sweep.overrides.update(QUICKSTART_SMOKE)
    paths = study.run_sweep(sweep, workdir)
    shutil.rmtree(TARGET, ignore_errors=True)
    os.makedirs(os.path.join(TARGET, "report"))
    for name in ("results.csv", "results.json"):
        shutil.copy(os.path.join(workdir, name), TARGET)
    shutil.copy(paths["report"], os.path.join(TARGET, "report", "report.md"))
    commit = subprocess.run(
        ["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    with open(os.path.join(TARGET, "ABOUT.md"), "w") as f:
        f.write(
            f"# The example study\n\n"
            f"Made by `python tools/make_example_study.py` on "
            f"{datetime.date.today().isoformat()} (commit {commit or 'unknown'}, JAX "
            f"{jax.__version__}, {jax.default_backend()}): the study the quickstart notebook "
            f"makes with SMOKE = True (the sweep `{SWEEP}` with the quickstart's sizes: 3 runs "
            f"and a warm start of a tiny CNN, 3-4 training steps each, analyzed on 32 images) "
            f"on Debian's Fashion-MNIST. Its numbers show what the explore_study notebook "
            f"does; they are no finding. The report's figures are left out (size); "
            f"explore_study draws them again. A real study: `python -m flatrob_jax.sweep "
            f"--sweep fashion_mnist_augmentations --workdir DIR`.\n"
        )
    size = sum(
        os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(TARGET) for n in names
    )
    if size > MAX_BYTES:
        raise SystemExit(f"{TARGET} holds {size} bytes, more than {MAX_BYTES}: trim it")
    print(f"wrote {TARGET} ({size} bytes) from {workdir}")


if __name__ == "__main__":
    main()
