"""What fanning a sweep out costs and buys on this machine.

    python benchmarks/bench_fleet.py overhead [--units 16]
    python benchmarks/bench_fleet.py study [--modes sequential,local2,ray2] [--root /tmp/fleet]

``overhead``: the driver's own cost per unit. ``--units`` units whose command is an empty
Python process (``python -c pass``) run through the fleet driver with the local executor (2 at
once) and with a 2-node Ray cluster on 127.0.0.1 (a head without CPUs, two nodes of 1 CPU,
started here), against the same processes started directly, 2 at a time: the difference per
unit is what the driver, its records and the engine add. ``study``: the default study
(configs/sweeps/fashion_mnist_augmentations.py), each mode in a fresh root, one after another:
``sequential`` (every run in one process, the default), ``local2`` (``--executor local
--parallel 2``), ``ray2`` (``--executor ray`` on the 2-node cluster); prints wall times and the
machine's load before and after each.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import subprocess
import sys
import tempfile
import time

import ml_collections

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY = os.path.join(REPO, "configs", "sweeps", "fashion_mnist_augmentations.py")


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def ray_cluster():
    os.environ.update(RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1"}
    )
    for _ in range(2):
        cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    return cluster


def dummy_plan(root: str, units: int):
    from flatrob_jax import study

    config = ml_collections.ConfigDict({"train": {"num_steps": 1}, "analysis": {}})
    jobs = tuple(
        study.Job(
            f"u{i}",
            "train",
            os.path.join(root, f"u{i}"),
            config,
            {},
            (),
            ("python", "-c", "pass"),
            analyze=False,
        )
        for i in range(units)
    )
    return study.Plan(None, root, jobs)


def drive(plan, executor) -> float:
    from flatrob_jax.fleet.driver import Driver

    driver = Driver(plan, executor, max_retries=0, log=lambda m: None)
    driver.plan_units()
    t = time.perf_counter()
    driver.run(poll_s=0.05)
    seconds = time.perf_counter() - t
    executor.close()
    assert set(driver.state.values()) == {"done"}, driver.state
    return seconds


def overhead(units: int) -> None:
    from flatrob_jax.fleet.local import LocalExecutor
    from flatrob_jax.fleet.ray_cluster import RayExecutor

    print(f"before: {uptime()}")
    t = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: subprocess.run([sys.executable, "-c", "pass"]), range(units)))
    direct = time.perf_counter() - t
    rows = [("processes started directly, 2 at a time", direct)]
    with tempfile.TemporaryDirectory() as root:
        rows.append(
            (
                "local executor, --parallel 2",
                drive(dummy_plan(root, units), LocalExecutor(root, parallel=2)),
            )
        )
    cluster = ray_cluster()
    try:
        with tempfile.TemporaryDirectory() as root:
            executor = RayExecutor(root, address=cluster.address)
            drive(dummy_plan(root, 2), executor)  # Ray's workers started once, not timed
            executor = RayExecutor(root, address=cluster.address)
            rows.append(("Ray, 2 nodes of 1 CPU", drive(dummy_plan(root + "/t", units), executor)))
    finally:
        import ray

        ray.shutdown()
        cluster.shutdown()
    print(f"\n{units} units of `python -c pass`\n")
    print("| how | wall (s) | per unit and slot (s) | over direct, per unit (s) |")
    print("|---|---|---|---|")
    for name, seconds in rows:
        print(
            f"| {name} | {seconds:.2f} | {2 * seconds / units:.3f} | "
            f"{2 * (seconds - direct) / units:+.3f} |"
        )
    print(f"\nafter: {uptime()}")


def study(modes, root: str) -> None:
    commands = {
        "sequential": [],
        "local2": ["--executor", "local", "--parallel", "2"],
    }
    cluster = ray_cluster() if "ray2" in modes else None
    if cluster is not None:
        commands["ray2"] = ["--executor", "ray", "--address", cluster.address]
    rows = []
    try:
        for mode in modes:
            workdir = os.path.join(root, mode)
            shutil.rmtree(workdir, ignore_errors=True)
            before = uptime()
            t = time.perf_counter()
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "flatrob_jax.sweep",
                    "--sweep",
                    STUDY,
                    "--workdir",
                    workdir,
                    *commands[mode],
                ],
                capture_output=True,
                text=True,
            )
            seconds = time.perf_counter() - t
            if done.returncode != 0:
                sys.exit(f"{mode} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
            rows.append((mode, seconds, before, uptime()))
            print(f"{mode}: {seconds:.0f} s", flush=True)
    finally:
        if cluster is not None:
            cluster.shutdown()
    base = rows[0][1]
    print("\n| mode | wall | vs the first | load before | load after |\n|---|---|---|---|---|")
    for mode, seconds, before, after in rows:
        print(
            f"| {mode} | {seconds / 60:.1f} min | {seconds / base:.2f}x | "
            f"{before.split('average: ')[1]} | {after.split('average: ')[1]} |"
        )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=("overhead", "study"))
    ap.add_argument("--units", type=int, default=16)
    ap.add_argument("--modes", default="sequential,local2,ray2")
    ap.add_argument("--root", default="/tmp/bench_fleet")
    args = ap.parse_args()
    if args.what == "overhead":
        overhead(args.units)
    else:
        study(args.modes.split(","), args.root)


if __name__ == "__main__":
    main()
