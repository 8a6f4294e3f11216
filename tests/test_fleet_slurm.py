"""The SLURM executor on a real one-node SLURM started here (tests/slurm_cluster.py): a smoke
sweep with a warm start runs as a job array through submitit, a job requeued mid-training runs
again and its unit resumes from its checkpoint, and the results equal the in-process sweep's."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from flatrob_jax.analysis import read_rows
from flatrob_jax.fleet import command, resources, slurm
from flatrob_jax.fleet.attempts import read_records
from tests import slurm_cluster
from tests.helpers import REPO, make_idx_dataset

LONG_STEPS = 200  # the run that is requeued while it trains

SWEEP_FILE = """
from flatrob_jax.study import Sweep

def get_sweep(arg=None):
    return Sweep(
        base={base!r},
        overrides={{
            "dataset.data_dir": {data!r}, "model.name": "cnn_tiny", "train.num_steps": 4,
            "train.batch_size": 32, "dataset.num_train_examples": None, "log_every_steps": 50,
            "checkpoint.every_steps": 2, "num_devices": 1,
            "analysis.measures": ("clean", "curvature", "attacks"),
            "analysis.curvature.lanczos_steps": 4, "analysis.curvature.trace": False,
            "analysis.num_train_examples": 32, "analysis.num_test_examples": 32,
            "analysis.attacks.norms": ("Linf",), "analysis.attacks.pgd_steps": 2,
            "analysis.attacks.autoattack": False, "analysis.attacks.batch_size": 32,
        }},
        runs=[
            {{"augment.name": "none"}},
            {{"augment.name": "standard", "train.num_steps": {long}, "checkpoint.every_steps": 20}},
        ],
        warm_start={{"augment.name": "standard", "train.num_steps": 2}},
        title="slurm smoke sweep",
        num_resamples=50,
    )
"""
LONG_RUN = f"name=standard,num_steps={LONG_STEPS},every_steps=20"


@pytest.fixture
def cluster():
    why = slurm_cluster.missing()
    if why:
        pytest.skip(why)
    pytest.importorskip("submitit")
    local = slurm_cluster.LocalSlurm()
    try:
        yield local.start()
    finally:
        local.stop()


def _sweep_file(tmp_path) -> str:
    data = make_idx_dataset(str(tmp_path / "data"), n_train=128, n_test=40)
    path = tmp_path / "slurm_sweep.py"
    base = os.path.join(REPO, "configs", "fashion_mnist_cnn.py:smoke")
    path.write_text(SWEEP_FILE.format(base=base, data=data, long=LONG_STEPS))
    return str(path)


def _sweep(sweep_file, root, executor, env, **popen):
    argv = [sys.executable, "-m", "flatrob_jax.sweep", "--sweep", sweep_file, "--workdir", root]
    return subprocess.Popen(argv + ["--executor", executor], env=env, cwd=REPO, **popen)


def _wait_for(condition, timeout: float, what: str, proc=None):
    deadline = time.time() + timeout
    while True:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the driver ended ({proc.returncode}) while waiting for {what}")
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def _job_training_with_a_checkpoint(root):
    """The SLURM job of the long run's attempt once it has committed a checkpoint and is
    still training (no summary.json), else None."""
    workdir = os.path.join(root, LONG_RUN)
    ckpts = os.path.join(workdir, "checkpoints")
    if os.path.exists(os.path.join(workdir, "summary.json")) or not os.path.isdir(ckpts):
        return None
    if not any(step.isdigit() for step in os.listdir(ckpts)):
        return None
    for record in read_records(root, LONG_RUN):
        if record["ended"] is None:
            try:
                return _slurm_job_of(record["pid"])
            except OSError:  # it has just ended
                return None
    return None


def _slurm_job_of(pid: int) -> str:
    """The SLURM job (array task 'A_I' or plain id) a unit's process runs in, from its env."""
    with open(f"/proc/{pid}/environ", "rb") as f:
        raw = f.read().split(b"\0")
    env = dict(item.decode().split("=", 1) for item in raw if b"=" in item)
    if "SLURM_ARRAY_JOB_ID" in env:
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env["SLURM_JOB_ID"]


def _results(root) -> dict:
    """{(run, metric): value} of the results table, without the timings."""
    rows = read_rows(os.path.join(root, "results.csv"))
    timing = ("/seconds/", "time_s")
    return {
        (r["run"], r["metric"]): r["value"]
        for r in rows
        if not any(t in r["metric"] for t in timing)
    }


@pytest.mark.slow
@pytest.mark.xdist_group("fleet")
def test_a_sweep_runs_as_a_job_array_and_a_requeued_job_resumes(cluster, tmp_path):
    sweep_file = _sweep_file(tmp_path)
    env = dict(cluster.env)
    env.pop("XLA_FLAGS", None)  # one CPU device per unit, as the in-process sweep has
    env["JAX_PLATFORMS"] = "cpu"
    root, reference = str(tmp_path / "on_slurm"), str(tmp_path / "in_process")
    out = open(tmp_path / "driver.log", "w+")
    driver = _sweep(sweep_file, root, "slurm", env, stdout=out, stderr=subprocess.STDOUT)
    local = _sweep(sweep_file, reference, "local", env, stdout=subprocess.DEVNULL)
    try:
        job = _wait_for(
            lambda: _job_training_with_a_checkpoint(root),
            240,
            "a checkpoint of the long run",
            driver,
        )
        cluster.run("scontrol", "requeue", job)
        # SLURM holds a requeued job back for a while (BeginTime); let it start at once.
        _wait_for(lambda: cluster.jobs().get(job) == "PENDING", 60, f"job {job} to be requeued")
        cluster.run("scontrol", "update", f"JobId={job}", "StartTime=now")
        assert driver.wait(timeout=300) == 0, open(tmp_path / "driver.log").read()[-4000:]
        assert local.wait(timeout=300) == 0
    finally:
        for proc in (driver, local):
            if proc.poll() is None:
                proc.kill()
        out.close()

    fanout = json.load(open(os.path.join(root, "fanout.json")))
    units = fanout["units"]
    assert set(units) == {"warm_start", "name=none", LONG_RUN}
    assert fanout["executor"].startswith("SLURM")
    for name, unit in units.items():
        assert unit["state"] == "done", (name, unit)
        assert all(a["node"] == "localhost" for a in unit["attempts"]), unit["attempts"]
    # The requeued run: two attempts in the same SLURM job; the second resumed.
    attempts = units[LONG_RUN]["attempts"]
    assert [a["exit_status"] for a in attempts] == [75, 0], attempts
    assert "resumed from" in open(attempts[1]["log"]).read()
    assert "resumed from" not in open(attempts[0]["log"]).read()
    assert not any(os.path.exists(f"/proc/{a['pid']}") for a in attempts)  # none left alive
    for name in ("warm_start", "name=none"):
        assert [a["exit_status"] for a in units[name]["attempts"]] == [0]

    # One job for the warm start, then one array for the two runs (and nothing resubmitted).
    names = cluster.run("squeue", "--noheader", "--array", "--states=all", "--format=%i|%j")
    jobs = dict(line.split("|", 1) for line in names.stdout.split())
    arrays = sorted(j for j in jobs if "_" in j)
    assert len(jobs) == 3 and len(arrays) == 2, jobs
    assert arrays[0].split("_")[0] == arrays[1].split("_")[0] and job in arrays, jobs
    assert jobs[arrays[0]] == "flatrob:2_units", jobs

    got, want = _results(root), _results(reference)
    assert set(got) == set(want) and len(got) > 4
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-6, nan_ok=True), key


# --------------------------------------------------------------------------- without a cluster


def test_slurm_options_from_the_command_line():
    got = slurm.options_from_strings(
        ["partition=gpu", "time_min=600", "folder=/shared/x", "qos=low", "mem_gb=32"]
    )
    assert got == {
        "partition": "gpu",
        "time_min": 600,
        "folder": "/shared/x",
        "extra": {"qos": "low", "mem_gb": 32},
    }
    with pytest.raises(ValueError, match="KEY=VALUE"):
        slurm.options_from_strings(["partition"])
    options = command.Options(sweep="s", workdir="w", executor="ray", slurm=("partition=gpu",))
    with pytest.raises(ValueError, match="--executor slurm only"):
        command._slurm_options(options)


def test_resources_become_sbatch_options_and_tpus_are_refused():
    params = slurm.parameters(
        resources.parse("gpu:2,cpu:3.5"), partition="p", time_min=60, warning_s=90, extra={}
    )
    assert params["cpus_per_task"] == 4 and params["gpus_per_node"] == 2
    assert params["partition"] == "p" and params["time"] == 60
    assert params["signal_delay_s"] == 90 and params["additional_parameters"] == {"requeue": True}
    extra = {"qos": "low", "additional_parameters": {"mail-type": "END"}}
    params = slurm.parameters(
        resources.parse("cpu:1"), partition=None, time_min=5, warning_s=0, extra=extra
    )
    assert params["qos"] == "low" and "partition" not in params
    assert params["additional_parameters"] == {"requeue": True, "mail-type": "END"}
    with pytest.raises(ValueError, match="time_min='2h'"):
        slurm.parameters(
            resources.parse("cpu:1"), partition=None, time_min="2h", warning_s=9, extra={}
        )
    for spec, match in (("tpu:4", "TPUs"), ("tpu:host", "TPUs"), ("gpu:0.5", "whole GPUs")):
        with pytest.raises(ValueError, match=match):
            slurm.parameters(
                resources.parse(spec), partition=None, time_min=60, warning_s=90, extra={}
            )


def test_submitits_folder_is_under_a_local_root_and_must_be_given_for_a_bucket(tmp_path):
    root = str(tmp_path / "study")
    assert slurm.default_folder(root, None) == os.path.join(root, ".fanout", "slurm")
    assert slurm.default_folder("gs://b/study", "/shared/s") == "/shared/s"
    with pytest.raises(ValueError, match="folder=/shared/path"):
        slurm.default_folder("gs://b/study", None)
    with pytest.raises(ValueError, match="not a URI"):
        slurm.default_folder(root, "gs://b/slurm")


def test_without_submitit_the_error_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(ImportError, match=r"flatrob_jax\[slurm\]"):
        slurm.SlurmExecutor(str(tmp_path), resources=resources.Resources())


@pytest.mark.parametrize(
    "shown, this_run, want",
    [
        ("JobId=7 JobState=COMPLETING Requeue=1 Restarts=1 BatchFlag=1", "0", True),
        ("JobId=7 JobState=COMPLETING Requeue=1 Restarts=1 BatchFlag=1", "1", False),
        ("JobId=7 JobState=CANCELLED Requeue=1 Restarts=0 BatchFlag=1", "", False),
        ("", "0", True),  # unreadable: no result, the executor's lost-job path decides
    ],
)
def test_a_job_knows_when_slurm_requeues_it(monkeypatch, tmp_path, shown, this_run, want):
    """scontrol's restart count against this run's (a fake scontrol prints a real line's
    fields; tests/test_fleet_slurm.py's cluster test runs the real one)."""
    fake = tmp_path / "scontrol"
    fake.write_text(f"#!/bin/sh\necho '{shown}'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_RESTART_COUNT", this_run)
    assert slurm.being_requeued() is want


def test_an_unknown_submitit_parameter_is_named(tmp_path):
    pytest.importorskip("submitit")
    if shutil.which("srun") is None:
        pytest.skip("submitit's SlurmExecutor needs srun (apt-get install slurm-client)")
    with pytest.raises(ValueError, match="bogus"):
        slurm.SlurmExecutor(str(tmp_path), extra={"bogus": 1})
    executor = slurm.SlurmExecutor(str(tmp_path), partition="p", time_min=30)
    assert executor.slots is None and "partition p" in executor.description
    assert executor.folder == os.path.join(str(tmp_path), ".fanout", "slurm")
