"""Multi-host overhead on CPU: 2 processes x 2 devices vs 1 process x 4 devices.

    python benchmarks/bench_multihost.py [--steps 200] [--batch-size 64] [--out FILE]

No accelerator here, so the issue's "otherwise" benchmark: the cost of splitting the same 4
fake CPU devices (``--xla_force_host_platform_device_count``) over 2 real processes joined by
``jax.distributed`` (coordinator on 127.0.0.1, gloo collectives), started with the tests'
launcher (tests/multihost.py). Config: ``fashion_mnist_cnn:smoke`` with ``cnn_tiny`` on a fake
IDX Fashion-MNIST (tests/helpers.make_idx_dataset), ``--steps`` steps, a checkpoint halfway.

For each layout:
- images/s of the training loop: ``summary.json``'s ``images_per_second`` (steps x batch over
  the loop's time, compilation of the first step included, log every 10 steps);
- the command's wall time;
- time to resume: the last checkpoint and summary.json are deleted, the same command is
  started again (log every step) and timed from launch until process 0 logs the first new
  step (start-up, ``jax.distributed`` connect, restore of the halfway checkpoint, compilation,
  one step).

Prints a Markdown table with the machine's ``uptime`` load before and after.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tests import multihost  # noqa: E402
from tests.helpers import make_idx_dataset  # noqa: E402

CONFIG = os.path.join(REPO, "configs", "fashion_mnist_cnn.py:smoke")
TIMEOUT = 600


def _args(workdir, data_dir, steps, batch_size, log_every):
    overrides = {
        "dataset.data_dir": data_dir,
        "model.name": "cnn_tiny",
        "dataset.num_train_examples": None,
        "dataset.num_eval_examples": None,
        "train.num_steps": steps,
        "train.batch_size": batch_size,
        "train.eval_batch_size": 128,
        "checkpoint.every_steps": steps // 2,
        "log_every_steps": log_every,
        "augment.name": "standard",
    }
    flags = [f"--config.{k}={v}" for k, v in overrides.items()]
    return multihost.module_args(
        "flatrob_jax.train", "--config", CONFIG, "--workdir", workdir, *flags
    )


def _layout(name, num_processes, devices, root, data_dir, steps, batch_size):
    workdir, logs = os.path.join(root, name, "run"), os.path.join(root, name, "logs")
    kw = dict(num_processes=num_processes, devices=devices)
    t0 = time.monotonic()
    multihost.run(
        _args(workdir, data_dir, steps, batch_size, 10), logs, timeout=TIMEOUT, name="train", **kw
    )
    wall = time.monotonic() - t0
    with open(os.path.join(workdir, "summary.json")) as f:
        summary = json.load(f)

    # Resume from the halfway checkpoint: remove what the end of the run wrote.
    shutil.rmtree(os.path.join(workdir, "checkpoints", str(steps)))
    os.remove(os.path.join(workdir, "summary.json"))
    half = steps // 2
    args = _args(workdir, data_dir, steps, batch_size, 1)
    with multihost.Group(args, logs, name="resume", **kw) as group:
        group.wait_for(
            lambda: f"step {half + 1}/{steps}" in group.log(0), TIMEOUT, "the first new step"
        )
        resume = time.monotonic() - group.started
        codes = group.wait(TIMEOUT)
        assert codes == [0] * num_processes, group.logs()
        assert f"resumed from {os.path.join(workdir, 'checkpoints')}/{half}" in group.log(0)
    return {
        "layout": f"{num_processes} process{'es' if num_processes > 1 else ''} x {devices} devices",
        "images_per_second": summary["images_per_second"],
        "train_seconds": summary["train_seconds_this_session"],
        "wall_seconds": wall,
        "resume_seconds": resume,
    }


def _uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", help="also write the table (Markdown) to this file")
    a = parser.parse_args()
    before = _uptime()
    root = tempfile.mkdtemp(prefix="bench_multihost.")
    try:
        data_dir = make_idx_dataset(os.path.join(root, "data"), n_train=2048, n_test=256)
        rows = [
            _layout("one", 1, 4, root, data_dir, a.steps, a.batch_size),
            _layout("two", 2, 2, root, data_dir, a.steps, a.batch_size),
        ]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    after = _uptime()
    base = rows[0]
    lines = [
        f"{a.steps} steps, batch {a.batch_size}, cnn_tiny, {os.cpu_count()} CPUs.",
        "",
        f"Load before: `{before}`  ",
        f"Load after: `{after}`",
        "",
        "| layout | images/s (loop) | vs 1 process | loop s | command wall s | resume to "
        "first new step s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['layout']} | {r['images_per_second']:.0f} | "
            f"{r['images_per_second'] / base['images_per_second']:.2f}x | "
            f"{r['train_seconds']:.1f} | {r['wall_seconds']:.1f} | {r['resume_seconds']:.1f} |"
        )
    table = "\n".join(lines)
    print(table)
    if a.out:
        with open(a.out, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
