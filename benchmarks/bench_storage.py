"""Storage: training with a gs:// workdir (against a local Cloud Storage emulator) vs a local one.

    python benchmarks/bench_storage.py [--steps 500] [--data DIR] [--models cnn_small,resnet18]
                                       [--skip-runs] [--skip-writes]

Part 1, whole runs through the command line (``python -m flatrob_jax.train``), back to back
with the same inputs: the smoke config (``fashion_mnist_cnn:smoke``, 4 steps) and a
``--steps`` run of the same model (checkpoint every 100 steps, metrics every 10), each once with
a local workdir and once with a gs:// one. Reported: wall time of the command, the training
loop's time (``summary.json``'s ``train_seconds_this_session``: the steps plus the metric
writes plus the part of each checkpoint save that blocks the loop) and the difference gs://
minus local per step.

Part 2, the writes themselves, in this process: for each model's training state, the time
``Checkpointer.save`` blocks its caller (orbax saves asynchronously: the caller waits for the
device-to-host copy, the upload runs in a background thread) and the time until the checkpoint
is complete (``wait()``), local vs gs://, median of 5; and ``MetricWriter.write`` per call and
``flush`` (on gs:// a write only buffers the line; flush uploads ``metrics.jsonl``).
What must hold: the blocking part of a save is about the same on gs:// as on local disk (the
upload is not in the loop's way).

The emulator (tests/gcs_emulator.py: gcp-storage-emulator, a single-threaded Python server on
loopback) is not Cloud Storage: there is no network latency or bandwidth limit, and its own
CPU time competes with training on small machines. The numbers measure what the library adds
(client libraries, extra requests, serialization), not a real bucket's speed.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

SMOKE = "fashion_mnist_cnn:smoke"
MODEL_CONFIGS = {"cnn_small": "fashion_mnist_cnn:smoke", "resnet18": "cifar10_resnet18"}


def _train_command(workdir, data, steps):
    cmd = [
        sys.executable,
        "-m",
        "flatrob_jax.train",
        "--config",
        os.path.join(REPO, "configs", "fashion_mnist_cnn.py:smoke"),
        "--workdir",
        workdir,
        f"--config.dataset.data_dir={data}",
    ]
    if steps is not None:
        cmd += [
            f"--config.train.num_steps={steps}",
            "--config.checkpoint.every_steps=100",
            "--config.log_every_steps=10",
        ]
    return cmd


def bench_runs(emu, data, steps, scratch):
    from flatrob_jax import fileio

    env = emu.env()
    env.pop("XLA_FLAGS", None)
    rows = []
    for label, run_steps in (("smoke (4 steps)", None), (f"{steps} steps", steps)):
        result = {}
        for storage in ("local", "gs://"):
            name = f"{label.split()[0]}-{run_steps or 4}"
            workdir = (
                os.path.join(scratch, "local", name)
                if storage == "local"
                else emu.uri("bench", name)
            )
            cwd = tempfile.mkdtemp(dir=scratch)
            t = time.perf_counter()
            done = subprocess.run(
                _train_command(workdir, data, run_steps),
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
            )
            wall = time.perf_counter() - t
            if done.returncode:
                raise RuntimeError(f"{storage} run failed:\n{done.stderr[-3000:]}")
            summary = json.loads(fileio.read_text(fileio.join(workdir, "summary.json")))
            result[storage] = (wall, summary["train_seconds_this_session"], summary["steps"])
        (lw, lt, n), (gw, gt, _) = result["local"], result["gs://"]
        rows.append((label, lw, gw, lt, gt, 1000 * (gt - lt) / n))
    print("\n## Whole runs (python -m flatrob_jax.train), local vs gs:// (emulator)\n")
    print(
        "| run | wall local (s) | wall gs:// (s) | loop local (s) | loop gs:// (s) | "
        "gs:// - local per step (ms) |"
    )
    print("|---|---|---|---|---|---|")
    for label, lw, gw, lt, gt, per in rows:
        print(f"| {label} | {lw:.1f} | {gw:.1f} | {lt:.2f} | {gt:.2f} | {per:+.1f} |")


def bench_writes(emu, models, scratch, repeats=5):
    import jax

    from flatrob_jax import checkpoint as ckpt_lib
    from flatrob_jax import configuration
    from flatrob_jax.metrics_log import MetricWriter
    from flatrob_jax.training import builders
    from flatrob_jax.training.state import state_to_tree

    print(f"\n## Checkpoint saves (orbax async), local vs gs:// (emulator), median of {repeats}\n")
    print(
        "| model | MB | save blocks local (ms) | save blocks gs:// (ms) | "
        "complete local (ms) | complete gs:// (ms) |"
    )
    print("|---|---|---|---|---|---|")
    for name in models:
        config = configuration.load_config(MODEL_CONFIGS[name])
        model = builders.build_model(config, axis_name=None)
        tree = state_to_tree(
            builders.initial_state(config, model, total_steps=1, steps_per_epoch=1)
        )
        tree = jax.device_put(tree)
        megabytes = sum(x.nbytes for x in jax.tree.leaves(tree)) / 2**20
        timings = {}
        for storage in ("local", "gs://"):
            workdir = (
                os.path.join(scratch, "ckpt", name) if storage == "local" else emu.uri("ckpt", name)
            )
            checkpointer = ckpt_lib.Checkpointer(workdir, max_to_keep=2)
            blocked, complete = [], []
            for step in range(1, repeats + 2):
                t = time.perf_counter()
                checkpointer.save(step, tree, force=True)
                b = time.perf_counter() - t
                checkpointer.wait()
                c = time.perf_counter() - t
                if step > 1:  # the first save also creates the directory and warms up
                    blocked.append(b)
                    complete.append(c)
            checkpointer.close()
            timings[storage] = (statistics.median(blocked), statistics.median(complete))
        (lb, lc), (gb, gc) = timings["local"], timings["gs://"]
        print(
            f"| {name} | {megabytes:.1f} | {1e3 * lb:.0f} | {1e3 * gb:.0f} | "
            f"{1e3 * lc:.0f} | {1e3 * gc:.0f} |"
        )

    print("\n## Metric writes (metrics.jsonl + TensorBoard), 200 writes then flush\n")
    print("| storage | write (ms/call) | flush (ms) |")
    print("|---|---|---|")
    for storage in ("local", "gs://"):
        workdir = os.path.join(scratch, "metrics") if storage == "local" else emu.uri("metrics")
        writer = MetricWriter(workdir)
        writer.write(0, "train", {"loss": 1.0})
        writer.flush()
        t = time.perf_counter()
        for step in range(1, 201):
            writer.write(step, "train", {"loss": 1.0 / step, "accuracy": 0.5, "learning_rate": 0.1})
        per_write = (time.perf_counter() - t) / 200
        t = time.perf_counter()
        writer.flush()
        flush = time.perf_counter() - t
        writer.close()
        print(f"| {storage} | {1e3 * per_write:.2f} | {1e3 * flush:.0f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500, help="length of the longer run")
    parser.add_argument(
        "--data",
        default="/usr/share/datasets/fashion-mnist",
        help="Fashion-MNIST IDX directory (Debian's dataset-fashion-mnist)",
    )
    parser.add_argument(
        "--models", default="cnn_small,resnet18", help="models whose training state part 2 saves"
    )
    parser.add_argument("--skip-runs", action="store_true", help="only part 2")
    parser.add_argument("--skip-writes", action="store_true", help="only part 1")
    args = parser.parse_args()

    from tests.gcs_emulator import running_emulator

    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as scratch, running_emulator() as emu:
        if not args.skip_runs:
            bench_runs(emu, args.data, args.steps, scratch)
        if not args.skip_writes:
            bench_writes(emu, args.models.split(","), scratch)
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
