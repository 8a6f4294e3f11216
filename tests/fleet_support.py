"""Shared pieces of the fleet tests: a tiny sweep file with a warm start, the unit commands,
reading fanout.json and comparing results tables and final weights.

The sweep: cnn_tiny on a synthetic IDX dataset, a warm start of 2 steps, then runs of 4 steps
(one of them, ``LONG``, of ``LONG_STEPS`` steps with a checkpoint every 25, so a test can
interrupt it between two checkpoints); the analysis is as small as a report allows (clean error,
lambda_max by 2 Lanczos steps, PGD-1 at 8/255): what these tests check is the orchestration
(every unit trained, analyzed and reported once, the same numbers as in one process), and each
unit is a fresh process that compiles its programs again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np

from tests.helpers import REPO, make_idx_dataset

LONG_STEPS = 400
LONG_RUN = {
    "augment.name": "cutout",
    "train.num_steps": LONG_STEPS,
    "checkpoint.every_steps": 25,
    "log_every_steps": 25,
}
LONG = "name=cutout,num_steps=400,every_steps=25,log_every_steps=25"  # study.run_name(LONG_RUN)

SWEEP_FILE = """
from flatrob_jax.study import Sweep

def get_sweep(arg=None):
    runs = {short_runs!r} + [{long_run!r}] + {extra_runs!r}
    return Sweep(
        base={base!r},
        overrides={{
            "dataset.data_dir": {data!r}, "model.name": "cnn_tiny", "train.num_steps": 4,
            "train.batch_size": 16, "dataset.num_train_examples": None, "log_every_steps": 2,
            "checkpoint.every_steps": 2, "num_devices": 1,
            "analysis.measures": ("clean", "curvature", "attacks"),
            "analysis.num_train_examples": 16, "analysis.num_test_examples": 16,
            "analysis.curvature.lanczos_steps": 2, "analysis.curvature.trace": False,
            "analysis.attacks.norms": ("Linf",), "analysis.attacks.pgd_steps": 1,
            "analysis.attacks.autoattack": False, "analysis.attacks.batch_size": 16,
        }},
        runs=runs,
        warm_start={{"train.num_steps": 2}},
        title="fleet sweep",
        num_resamples=20,
    )
"""


SHORT_RUNS = [{"augment.name": "none"}, {"augment.name": "standard"}]


def write_sweep(directory, extra_runs=(), short_runs=True) -> str:
    """The sweep file (and its data) in ``directory``; returns its path. ``short_runs=False``
    leaves out the two 4-step runs (a test about the long run needs only it)."""
    directory = str(directory)
    data = make_idx_dataset(os.path.join(directory, "data"), n_train=64, n_test=16)
    path = os.path.join(directory, "fleet_sweep.py")
    base = os.path.join(REPO, "configs", "fashion_mnist_cnn.py:smoke")
    with open(path, "w") as f:
        f.write(
            SWEEP_FILE.format(
                base=base,
                data=data,
                short_runs=SHORT_RUNS if short_runs else [],
                long_run=LONG_RUN,
                extra_runs=list(extra_runs),
            )
        )
    return path


def sweep_command(sweep: str, root: str, *args: str) -> list:
    return [sys.executable, "-m", "flatrob_jax.sweep", "--sweep", sweep, "--workdir", root, *args]


def unit_env(extra: dict | None = None) -> dict:
    """The environment of a driver or unit started by a test: one CPU device each."""
    env = dict(os.environ, **(extra or {}))
    env.pop("XLA_FLAGS", None)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run(cmd, env=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, env=env or unit_env(), capture_output=True, text=True, timeout=timeout
    )


def read_text(path: str) -> str:
    from flatrob_jax import fileio

    return fileio.read_text(path)


def read_json(path: str):
    return json.loads(read_text(path))


def this_python(argv) -> list:
    """A printed unit command (it starts with 'python') for this interpreter."""
    from flatrob_jax.fleet.attempts import this_python as swap

    return swap(argv)


def results_by_key(root: str) -> dict:
    """{(run, metric): value} of the sweep's results.json (a local path or gs:// root)."""
    from flatrob_jax import fileio

    rows = read_json(fileio.join(root, "results.json"))
    return {(r["run"], r["metric"]): r["value"] for r in rows}


def assert_same_results(a: str, b: str, tol: float = 1e-6) -> None:
    ra, rb = results_by_key(a), results_by_key(b)
    assert set(ra) == set(rb), sorted(set(ra) ^ set(rb))[:10]
    skip = ("seconds", "time_s")  # timings differ from run to run
    for key, value in ra.items():
        if any(s in key[1] for s in skip):
            continue
        other = rb[key]
        if value is None or other is None:
            assert value is None and other is None, key
        else:
            assert abs(value - other) <= tol * max(1.0, abs(value)), (key, value, other)


def final_params(workdir: str):
    from flatrob_jax import load_for_eval

    return load_for_eval(workdir).variables


def assert_same_params(a: str, b: str) -> None:
    import jax

    pa, pb = final_params(a), final_params(b)
    for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def committed_steps(workdir: str) -> list:
    """Checkpoint steps orbax has finished writing: locally a directory with a plain integer
    name (it writes a temporary name and renames it), on gs:// one with its commit file."""
    from flatrob_jax import fileio

    directory = fileio.join(workdir, "checkpoints")
    if not fileio.exists(directory):
        return []
    steps = [n.rstrip("/") for n in fileio.listdir(directory) if n.rstrip("/").isdigit()]
    if fileio.is_uri(workdir):
        steps = [s for s in steps if fileio.exists(fileio.join(directory, s, "commit_success.txt"))]
    return sorted(int(s) for s in steps)


def wait_for(predicate, timeout: float, what: str, poll: float = 0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"waited {timeout:.0f} s for {what}")


def attempt_records(root: str, name: str) -> list:
    from flatrob_jax.fleet.attempts import read_records

    return read_records(root, name)


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (gone, or a zombie nobody reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
