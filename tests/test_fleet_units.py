"""The pieces of the fleet, without a cluster: the one plan, --config overrides for every run,
resources, the lease, and the driver's decisions (retries, preemption, failures) with a
scripted executor."""

import os

import pytest

from flatrob_jax import study, workdir_lease
from flatrob_jax.configuration import split_config_args
from flatrob_jax.fleet import resources
from flatrob_jax.fleet.attempts import Outcome
from flatrob_jax.fleet.driver import Driver
from tests import fleet_support as fs
from tests.helpers import make_idx_dataset, tiny_config

# --------------------------------------------------------------------------- the plan


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory):
    return fs.write_sweep(tmp_path_factory.mktemp("plan"))


def test_the_plan_puts_the_warm_start_first_and_every_run_starts_from_it(sweep_file, tmp_path):
    root = str(tmp_path / "s")
    plan = study.plan(study.load_sweep(sweep_file), root)
    assert [j.name for j in plan.jobs] == ["warm_start", "name=none", "name=standard", fs.LONG]
    warm, *runs = plan.jobs
    assert warm.kind == "warm_start" and not warm.analyze and warm.depends_on == ()
    assert warm.config.train.num_steps == 2 and not warm.config.train.init_from
    for job in runs:
        assert job.kind == "train" and job.analyze and job.depends_on == ("warm_start",)
        assert job.config.train.init_from == os.path.join(root, "warm_start")
        assert job.workdir == os.path.join(root, job.name)
        assert job.command[:4] == ("python", "-m", "flatrob_jax.sweep", "--sweep")
        assert job.command[4] == sweep_file and job.command[-2:] == ("--run", job.name)
    assert [j.name for j in plan.runs] == [j.name for j in runs]


def test_command_line_overrides_reach_every_run_and_the_warm_start(sweep_file, tmp_path):
    overrides = ("dataset.data_dir=/elsewhere/data", "analysis.seed=7")
    plan = study.plan(study.load_sweep(sweep_file), str(tmp_path), overrides)
    for job in plan.jobs:
        assert job.config.dataset.data_dir == "/elsewhere/data"
        assert job.config.analysis.seed == 7
        assert job.command[-2:] == (
            "--config.dataset.data_dir=/elsewhere/data",
            "--config.analysis.seed=7",
        )
    with pytest.raises(ValueError, match=r"unknown config key 'dataset.dir'.*data_dir"):
        study.plan(study.load_sweep(sweep_file), str(tmp_path), ("dataset.dir=/x",))
    with pytest.raises(ValueError, match=r"analysis.seed.*expects int"):
        study.plan(study.load_sweep(sweep_file), str(tmp_path), ("analysis.seed=abc",))


def test_sweep_entry_point_takes_config_overrides_and_prints_them_in_each_unit(
    sweep_file, tmp_path
):
    done = fs.run(
        fs.sweep_command(
            sweep_file,
            str(tmp_path),
            "--print_commands",
            "--config.dataset.data_dir=/d",
            "--config.analysis.seed",
            "3",
        )
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 4
    assert all(
        line.endswith("--config.dataset.data_dir=/d --config.analysis.seed=3") for line in lines
    )
    bad = fs.run(
        fs.sweep_command(
            sweep_file, str(tmp_path), "--print_commands", "--config.train.num_stepz=3"
        )
    )
    assert bad.returncode != 0 and "unknown config key 'train.num_stepz'" in bad.stderr


def test_split_config_args():
    argv = ["prog", "--sweep", "s", "--config.a.b=1", "--config.c", "x y", "--run", "r"]
    assert split_config_args(argv) == (["a.b=1", "c=x y"], ["prog", "--sweep", "s", "--run", "r"])
    with pytest.raises(ValueError, match="--config.a needs a value"):
        split_config_args(["prog", "--config.a"])


# --------------------------------------------------------------------------- resources


@pytest.mark.parametrize(
    "spec, expected",
    [
        (None, resources.Resources()),
        ("cpu:4", resources.Resources(cpus=4)),
        ("gpu:1,cpu:8", resources.Resources(cpus=8, gpus=1)),
        ("tpu:4", resources.Resources(tpus=4)),
        ("tpu:host", resources.Resources(tpu_host=True)),
    ],
)
def test_resources_parse(spec, expected):
    assert resources.parse(spec) == expected


def test_resources_for_ray():
    assert resources.parse("tpu:host").ray_options() == {
        "num_cpus": 1,
        "num_gpus": 0,
        "resources": {"flatrob_tpu_host": 1},
    }
    assert resources.parse("tpu:4,cpu:2").ray_options()["resources"] == {"TPU": 4.0}


@pytest.mark.parametrize("bad", ["gpu", "tpu:x", "disk:1", "gpu:0", "cpu:-1"])
def test_bad_resources_name_the_allowed_forms(bad):
    with pytest.raises(ValueError, match=r"allowed: cpu:1, cpu:4, gpu:1, tpu:4, tpu:host"):
        resources.parse(bad)


# --------------------------------------------------------------------------- the lease


def test_an_attempt_that_lost_its_lease_may_not_write(tmp_path):
    path = str(tmp_path / "lease.json")
    first = workdir_lease.Lease.take(path, node="n1")
    first.check()
    second = workdir_lease.Lease.take(path, "attempt-2", node="n2")
    second.check()
    with pytest.raises(workdir_lease.LeaseLost, match="lost its lease to attempt attempt-2"):
        first.check()
    assert workdir_lease.read(path)["node"] == "n2"


def test_training_stops_before_its_first_write_once_the_lease_is_lost(tmp_path):
    from flatrob_jax.training.trainer import train_and_evaluate

    data = make_idx_dataset(str(tmp_path / "data"), n_train=64, n_test=16)
    workdir = str(tmp_path / "run")
    lease = workdir_lease.Lease.take(str(tmp_path / "lease.json"))
    workdir_lease.Lease.take(str(tmp_path / "lease.json"))  # another attempt takes the run
    config = tiny_config(data, **{"train.num_steps": 4, "checkpoint.every_steps": 2})
    with pytest.raises(workdir_lease.LeaseLost):
        train_and_evaluate(config, workdir, before_write=lease.check)
    assert fs.committed_steps(workdir) == [] and not os.listdir(
        os.path.join(workdir, "checkpoints")
    )
    assert not os.path.exists(os.path.join(workdir, "summary.json"))
    metrics = os.path.join(workdir, "metrics.jsonl")
    assert not os.path.exists(metrics) or open(metrics).read() == ""


# --------------------------------------------------------------------------- the driver


class ScriptedExecutor:
    """Each unit ends with the next exit status of its script (None: its machine was lost)."""

    description = "a script"

    def __init__(self, script, slots=None):
        self.script = {name: list(codes) for name, codes in script.items()}
        self.slots, self.started, self._running = slots, [], []

    def start(self, job):
        self.started.append(job.name)
        handle = (job.name, len(self.started))
        self._running.append(handle)
        return handle

    def wait(self, timeout):
        out = []
        for handle in self._running:
            status = self.script[handle[0]].pop(0)
            out.append(
                (
                    handle,
                    Outcome(
                        handle[0],
                        str(handle[1]),
                        status,
                        started=0.0,
                        ended=1.0,
                        lost="node died" if status is None else "",
                    ),
                )
            )
        self._running = []
        return out

    def close(self):
        pass


def _driver(sweep_file, tmp_path, script, max_retries=1):
    plan = study.plan(study.load_sweep(sweep_file), str(tmp_path))
    executor = ScriptedExecutor(script)
    driver = Driver(plan, executor, max_retries=max_retries, log=lambda m: None)
    driver.plan_units()
    driver.run(poll_s=0)
    return driver, executor


def test_the_driver_starts_the_warm_start_first_and_retries_as_it_should(sweep_file, tmp_path):
    script = {
        "warm_start": [0],
        "name=none": [75, 75, 0],  # preempted twice: not failures
        "name=standard": [1, 0],  # failed once, within --max_retries 1
        fs.LONG: [None, 3, 3],  # lost, then failed twice: failed
    }
    driver, executor = _driver(sweep_file, tmp_path, script)
    assert executor.started[0] == "warm_start"
    assert executor.started.count("name=none") == 3
    assert driver.state == {
        "warm_start": "done",
        "name=none": "done",
        "name=standard": "done",
        fs.LONG: "failed",
    }
    assert "exit 3" in driver.reasons[fs.LONG]
    assert driver.restarts["name=none"] == 2 and driver.failures["name=none"] == 0
    record = fs.read_json(driver.write_record())
    assert record["units"][fs.LONG]["state"] == "failed"


def test_runs_that_start_from_a_failed_warm_start_are_reported_failed(sweep_file, tmp_path):
    driver, executor = _driver(sweep_file, tmp_path, {"warm_start": [1]}, max_retries=0)
    assert executor.started == ["warm_start"]
    assert set(driver.state.values()) == {"failed"}
    assert driver.reasons["name=none"] == "a run it starts from failed"


def test_another_writer_is_reported_not_retried(sweep_file, tmp_path):
    script = {"warm_start": [0], "name=none": [76], "name=standard": [0], fs.LONG: [0]}
    driver, executor = _driver(sweep_file, tmp_path, script)
    assert (
        driver.state["name=none"] == "failed" and "took the run over" in driver.reasons["name=none"]
    )
    assert executor.started.count("name=none") == 1


def test_the_local_path_imports_neither_ray_nor_submitit():
    code = (
        "import sys, flatrob_jax.sweep, flatrob_jax.fleet.command, flatrob_jax.fleet.local, "
        "flatrob_jax.fleet.driver, flatrob_jax.fleet.attempts; "
        "print(sorted(m for m in ('ray', 'submitit') if m in sys.modules))"
    )
    done = fs.run([fs.sys.executable, "-c", code])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
