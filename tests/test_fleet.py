"""Sweeps fanned out: the one plan, units run by hand, the local executor (N processes at once,
a preempted unit retried, a failing unit reported) and a real multi-node Ray cluster on
127.0.0.1 that loses a node while a run trains.

Every test compares with the same sweep run the default way (every run in one process,
``--executor local``), computed once per module: results to 1e-6, final weights exactly.
The tests share the group 'fleet' (``--dist loadgroup``): one xdist worker runs them one after
another, so at most one cluster or fan-out loads the machine at a time.
"""

import os
import signal
import subprocess

import pytest

from tests import fleet_support as fs
from tests.gcs_emulator import emulator  # noqa: F401 (the fixture)

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("fleet")]

FAILING = {"augment.name": "none", "optimizer.learning_rate": 1e30}  # NaN loss at once
FAILING_NAME = "name=none,learning_rate=1e+30"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(sweep file, root) of the sweep run in one process, the default executor."""
    directory = tmp_path_factory.mktemp("fleet")
    sweep = fs.write_sweep(directory)
    root = str(directory / "in_process")
    done = fs.run(fs.sweep_command(sweep, root))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return sweep, root


def test_printed_commands_start_with_the_warm_start_and_by_hand_equal_the_default(
    reference, tmp_path
):
    sweep, ref = reference
    root = str(tmp_path / "by_hand")
    printed = fs.run(fs.sweep_command(sweep, root, "--print_commands"))
    assert printed.returncode == 0, printed.stderr[-2000:]
    lines = printed.stdout.strip().splitlines()
    runs = [line.split("--run ")[1].split()[0] for line in lines]
    assert runs == ["warm_start", "name=none", "name=standard", fs.LONG]
    for line in lines:
        argv = line.split()  # no run name or path here holds a space
        done = fs.run(fs.this_python(argv))
        assert done.returncode == 0, line + "\n" + done.stdout[-2000:] + done.stderr[-2000:]
    report = fs.run(fs.sweep_command(sweep, root, "--only", "report"))
    assert report.returncode == 0, report.stderr[-2000:]
    fs.assert_same_results(ref, root)
    # A unit run again does no finished work.
    again = fs.run(fs.this_python(lines[1].split()))
    assert "name=none: trained already" in again.stdout
    assert "name=none: analyzed already" in again.stdout

    # The driver on the finished sweep submits nothing and leaves results.csv as it was.
    results = os.path.join(root, "results.csv")
    before = (open(results).read(), os.stat(results).st_mtime_ns)
    rerun = fs.run(fs.sweep_command(sweep, root, "--executor", "local", "--parallel", "2"))
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "0 to do" in rerun.stdout
    assert (open(results).read(), os.stat(results).st_mtime_ns) == before
    assert not fs.attempt_records(root, "name=none")  # no unit was started


def test_a_unit_needs_its_warm_start_trained(reference, tmp_path):
    sweep, _ = reference
    done = fs.run(fs.sweep_command(sweep, str(tmp_path / "r"), "--run", "name=none"))
    assert done.returncode == 1
    assert "starts from warm_start" in done.stderr and "not trained yet" in done.stderr


def test_local_parallel_retries_a_preempted_unit_and_reports_a_failing_one(reference, tmp_path):
    """--parallel 2: the long run gets SIGTERM between checkpoints (exit 75, started again,
    resumes, ends with the weights of an uninterrupted run); a run with a NaN loss fails
    twice (--max_retries 1) and is reported; the others finish; the driver exits 1. (The
    sweep is the warm start, the long run and the failing run: the short runs add nothing.)"""
    sweep_ref, ref = reference
    sweep = fs.write_sweep(tmp_path, extra_runs=[FAILING], short_runs=False)
    root = str(tmp_path / "fanned_out")
    cmd = fs.sweep_command(sweep, root, "--executor", "local", "--parallel", "2")
    driver = subprocess.Popen(
        [*cmd, "--max_retries", "1"],
        env=fs.unit_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        long_dir = os.path.join(root, fs.LONG)

        def first_attempt_between_checkpoints():
            records = fs.attempt_records(root, fs.LONG)
            steps = fs.committed_steps(long_dir)
            return records[0] if records and steps and max(steps) >= 25 else None

        first = fs.wait_for(first_attempt_between_checkpoints, 300, "a checkpoint of the long run")
        assert not os.path.exists(os.path.join(long_dir, "summary.json"))
        os.kill(first["pid"], signal.SIGTERM)
        output, _ = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 1, output[-3000:]
    fanout = fs.read_json(os.path.join(root, "fanout.json"))
    units = fanout["units"]
    long_attempts = units[fs.LONG]["attempts"]
    assert [a["exit_status"] for a in long_attempts] == [75, 0], long_attempts
    assert "resumed from" in open(long_attempts[1]["log"]).read()
    assert units[fs.LONG]["state"] == "done"
    failing = units[FAILING_NAME]
    assert failing["state"] == "failed" and "exit 1" in failing["reason"]
    assert [a["exit_status"] for a in failing["attempts"]] == [1, 1]
    assert "training loss is nan" in open(failing["attempts"][0]["log"]).read()
    assert FAILING_NAME in output and "failed" in output
    fs.assert_same_params(os.path.join(ref, fs.LONG), long_dir)
    ours, theirs = fs.results_by_key(root), fs.results_by_key(ref)
    theirs = {k: v for k, v in theirs.items() if k[0] == fs.LONG}
    assert {k for k in ours if k[0] != FAILING_NAME} == set(theirs)
    for key, value in theirs.items():
        if not any(t in key[1] for t in ("seconds", "time_s")) and value is not None:
            assert abs(ours[key] - value) <= 1e-6 * max(1.0, abs(value)), key
    report = open(os.path.join(root, "report", "report.md")).read()
    assert FAILING_NAME in report
    del sweep_ref


def test_ray_cluster_loses_the_node_of_a_training_run(reference, emulator, tmp_path):  # noqa: F811
    """A real Ray cluster on 127.0.0.1 (a head without CPUs and two worker nodes, started here)
    with the sweep's root in the GCS emulator's bucket. While the long run trains (a checkpoint
    committed, no summary yet) its node is killed by pid; a new node joins. Every run finishes;
    the long run's lost attempt is in fanout.json; the retry resumed from the checkpoint and
    ends with an uninterrupted run's weights; the results equal the default executor's; no
    process of the lost attempt is left."""
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    sweep, ref = reference
    root = emulator.uri("fleet_ray")
    env = fs.unit_env({**emulator.env(), "RAY_USAGE_STATS_ENABLED": "0"})
    # Keep the driver on loopback (Ray otherwise swaps 127.0.0.1 for the machine's address).
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    saved = dict(os.environ)
    os.environ.update(env)  # the nodes' workers inherit it (emulator, one CPU device)
    os.environ.pop("XLA_FLAGS", None)
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1"}
    )
    driver = None
    try:
        nodes = [cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1") for _ in range(2)]
        cmd = fs.sweep_command(sweep, root, "--executor", "ray", "--address", cluster.address)
        driver = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

        def long_run_between_checkpoints():
            records = fs.attempt_records(root, fs.LONG)
            steps = fs.committed_steps(f"{root}/{fs.LONG}")
            return records[0] if records and steps and max(steps) >= 25 else None

        first = fs.wait_for(long_run_between_checkpoints, 400, "the long run's checkpoint", 0.2)
        victim = next(n for n in nodes if n.node_id == first["node"])
        victim_pids = [p.process.pid for ps in victim.all_processes.values() for p in ps]
        cluster.remove_node(victim, allow_graceful=False)  # SIGKILL to each of its pids
        cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
        output, _ = driver.communicate(timeout=900)
        assert driver.returncode == 0, output[-4000:]
        fs.wait_for(lambda: fs.process_gone(first["pid"]), 60, "the lost unit to end")
        assert all(fs.process_gone(pid) for pid in victim_pids)
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
        cluster.shutdown()
        os.environ.clear()
        os.environ.update(saved)
    fanout = fs.read_json(f"{root}/fanout.json")
    attempts = fanout["units"][fs.LONG]["attempts"]
    assert len(attempts) >= 2 and attempts[0]["exit_status"] is None, attempts  # lost
    assert attempts[0]["node"] == first["node"] and attempts[-1]["exit_status"] == 0
    assert attempts[-1]["node"] != first["node"]
    assert "resumed from" in fs.read_text(attempts[-1]["log"])
    assert all(u["state"] in ("done",) for u in fanout["units"].values())
    fs.assert_same_params(os.path.join(ref, fs.LONG), f"{root}/{fs.LONG}")
    fs.assert_same_results(ref, root)
