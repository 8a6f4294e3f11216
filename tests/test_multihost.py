"""Multi-host runs with real processes (tests/multihost.py): 2 processes x 2 CPU devices, as
two hosts of a pod, against 1 process x 4 devices.

What must hold: the same parameters as one process; only process 0 writes shared files;
SIGKILL of both and a restart end bit-identical to an uninterrupted run; SIGTERM of one
process makes both save the same step and exit with the preemption status, and a restart ends
bit-identical (with JAX's preemption service and with the broadcast flag that replaces it
where the service is off); a sweep gives the same results table; a workdir that is not
shared fails with the clear error, not a hang. Plus start-up (--distributed, cluster
evidence) and agreement helpers in one process (tools/tpu_vm.sh: tests/test_tpu_vm.py).
"""

import json
import os
import signal
import subprocess

import jax
import numpy as np
import pytest

from flatrob_jax import distributed, load_for_eval
from flatrob_jax.configuration import apply_overrides, load_config
from flatrob_jax.training.trainer import train_and_evaluate
from tests import multihost
from tests.helpers import REPO, make_idx_dataset

CONFIG = os.path.join(REPO, "configs", "fashion_mnist_cnn.py:smoke")
STEPS = 8
TIMEOUT = 240  # seconds for one group of processes (a hang fails here with both logs)


def _overrides(data_dir, **kw):
    base = {
        "dataset.data_dir": data_dir,
        "model.name": "cnn_tiny",
        "dataset.num_train_examples": None,
        "dataset.num_eval_examples": None,
        "train.num_steps": STEPS,
        "train.batch_size": 32,
        "train.eval_batch_size": 64,
        "checkpoint.every_steps": 2,
        "log_every_steps": 2,
        "augment.name": "standard",
    }
    base.update(kw)
    return base


def _train_args(workdir, overrides, step_delay=0.0):
    flags = [f"--config.{k}={v}" for k, v in overrides.items()]
    return multihost.module_args(
        "flatrob_jax.train", "--config", CONFIG, "--workdir", workdir, *flags, step_delay=step_delay
    )


def _params(workdir):
    return jax.tree.leaves(load_for_eval(workdir).variables)


def _checkpoints(workdir):
    path = os.path.join(workdir, "checkpoints")
    return sorted(int(d) for d in os.listdir(path) if d.isdigit()) if os.path.isdir(path) else []


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_idx_dataset(str(tmp_path_factory.mktemp("data")), n_train=256, n_test=64)


@pytest.fixture(scope="module")
def two_process_run(data_dir, tmp_path_factory):
    """An uninterrupted 2-process x 2-device run of the smoke config."""
    root = tmp_path_factory.mktemp("uninterrupted")
    workdir = str(root / "run")
    group = multihost.run(
        _train_args(workdir, _overrides(data_dir)), str(root / "logs"), timeout=TIMEOUT
    )
    return workdir, group


@pytest.fixture(scope="module")
def one_process_run(data_dir, tmp_path_factory):
    """The same config trained here: 1 process x 4 devices."""
    workdir = str(tmp_path_factory.mktemp("one_process") / "run")
    config = apply_overrides(load_config(CONFIG), _overrides(data_dir))
    assert jax.device_count() == 4
    return workdir, train_and_evaluate(config, workdir)


# --------------------------------------------------------------------------- one process


def test_modes_flag_and_environment(monkeypatch):
    assert distributed.resolve_mode(None, environ={}) == "auto"
    assert distributed.resolve_mode(None, environ={distributed.ENV_VAR: "OFF"}) == "off"
    assert distributed.resolve_mode("on", environ={distributed.ENV_VAR: "off"}) == "on"
    with pytest.raises(ValueError, match=r"\$FLATROB_DISTRIBUTED='maybe'.*'auto', 'on', 'off'"):
        distributed.resolve_mode(None, environ={distributed.ENV_VAR: "maybe"})
    argv = ["train", "--workdir", "w", "--distributed", "off"]
    assert distributed.mode_from_argv(argv) == "off"
    assert distributed.mode_from_argv(["train", "--distributed=on"]) == "on"
    assert distributed.mode_from_argv(["train", "--config.distributed_x=1"]) is None
    monkeypatch.setenv(distributed.ENV_VAR, "off")
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1")
    assert distributed.initialize() is False  # off wins over the evidence


def test_cluster_evidence():
    ev = distributed.cluster_evidence
    assert ev({}, probe_tpu_vm=False) == []
    assert ev({"SLURM_NTASKS": "1", "OMPI_COMM_WORLD_SIZE": "1"}, probe_tpu_vm=False) == []
    assert ev({"SLURM_NTASKS": "4"}, probe_tpu_vm=False) == ["SLURM_NTASKS=4"]
    assert ev({"JAX_NUM_PROCESSES": "2"}, probe_tpu_vm=False) == ["JAX_NUM_PROCESSES=2"]
    assert ev({"JAX_COORDINATOR_ADDRESS": "10.0.0.2:1234"}, probe_tpu_vm=False)
    assert ev({"TPU_WORKER_HOSTNAMES": "a,b"}, probe_tpu_vm=False)
    assert ev({"TPU_WORKER_HOSTNAMES": "a"}, probe_tpu_vm=False) == []
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES='two'"):
        ev({"JAX_NUM_PROCESSES": "two"}, probe_tpu_vm=False)


def test_cloud_tpu_vm_detection(tmp_path, monkeypatch):
    """A TPU chip on PCI (not just Google's vendor id: gVNIC has it too), then the metadata
    server's worker list decides; a 404 means one host."""
    import http.server
    import threading

    def device(name, vendor, dev):
        (tmp_path / name).mkdir()
        (tmp_path / name / "vendor").write_text(vendor + "\n")
        (tmp_path / name / "device").write_text(dev + "\n")

    device("0000:00:04.0", "0x1ae0", "0x0042")  # gVNIC
    assert not distributed._on_cloud_tpu_vm(str(tmp_path))
    device("0000:00:05.0", "0x1ae0", "0x005e")  # a TPU v4 chip
    assert distributed._on_cloud_tpu_vm(str(tmp_path))

    answers = {}

    class Metadata(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            assert self.headers["Metadata-Flavor"] == "Google"
            body = answers.get(self.path)
            self.send_response(404 if body is None else 200)
            self.end_headers()
            self.wfile.write((body or "").encode())

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Metadata)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(distributed, "_on_cloud_tpu_vm", lambda: True)
        env = {"GCE_METADATA_IP": f"127.0.0.1:{server.server_port}"}
        assert distributed.cluster_evidence(env) == []  # 404: a single-host VM
        path = "/computeMetadata/v1/instance/attributes/worker-network-endpoints"
        answers[path] = "w-0:0:10.0.0.2,w-1:1:10.0.0.3,w-2:2:10.0.0.4,w-3:3:10.0.0.5"
        assert distributed.cluster_evidence(env) == [
            "a Cloud TPU VM slice of 4 workers (metadata server)"
        ]
        answers[path] = "10.0.0.2"
        assert distributed.cluster_evidence(env) == []
        assert distributed.cluster_evidence({**env, "TPU_SKIP_MDS_QUERY": "1"}) == []
    finally:
        server.shutdown()


def test_on_without_a_cluster_raises_instead_of_training_alone(tmp_path):
    code = "from flatrob_jax import distributed\ndistributed.initialize('on')\n"
    env = multihost.process_env(0, 1, 1, None, {"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"})
    done = subprocess.run(
        [os.sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        timeout=120,
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert "jax.distributed.initialize failed (--distributed=on" in done.stderr


def test_agreement_helpers_with_one_process(tmp_path):
    assert distributed.decide_on_main(lambda: {"step": 3}) == {"step": 3}
    assert distributed.broadcast_from_main([1, None]) == [1, None]
    assert distributed.gather_flags(True) == [True] and not distributed.any_process(False)
    distributed.barrier("one process: a no-op")
    distributed.check_shared_workdir(str(tmp_path))  # one process: nothing to check
    mesh = distributed.make_mesh()
    with distributed.process_local():
        assert distributed.make_mesh().devices.size == jax.local_device_count()
    assert mesh.devices.size == jax.device_count()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_preemption_guard_treats_sighup_like_sigterm(sig):
    """A shutdown sends SIGTERM, then SIGHUP (systemd; a terminal that goes away): both ask
    for a save; the handlers that were there before come back afterwards."""
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    with distributed.PreemptionGuard(log=lambda message: None) as guard:
        assert not guard.should_stop(1)
        os.kill(os.getpid(), sig)
        assert guard.requested == signal.Signals(sig).name
        assert guard.should_stop(2) and guard.reason == signal.Signals(sig).name
    assert {s: signal.getsignal(s) for s in before} == before


@pytest.mark.slow
def test_sigterm_in_one_process_saves_and_raises_preempted(one_process_run, data_dir, tmp_path):
    """One process: SIGTERM during training -> checkpoint at the next step, Preempted, and
    the resumed run ends bit-identical to an uninterrupted one."""
    config = apply_overrides(load_config(CONFIG), _overrides(data_dir))
    from flatrob_jax.data import pipeline

    iterate = pipeline.TrainBatches.iterate

    def iterate_then_signal(self, start, total):
        for i, batch in enumerate(iterate(self, start, total)):
            if start + i == 2:  # before step 3 runs: it is the step that must be saved
                os.kill(os.getpid(), signal.SIGTERM)
            yield batch

    workdir = str(tmp_path / "run")
    previous = signal.getsignal(signal.SIGTERM)
    pipeline.TrainBatches.iterate = iterate_then_signal
    try:
        with pytest.raises(distributed.Preempted) as e:
            train_and_evaluate(config, workdir)
    finally:
        pipeline.TrainBatches.iterate = iterate
    assert signal.getsignal(signal.SIGTERM) is previous  # the handlers are restored
    assert e.value.step == 3 and _checkpoints(workdir)[-1] == 3
    assert not os.path.exists(os.path.join(workdir, "summary.json"))
    with pytest.raises(SystemExit) as exit_info:
        with distributed.exit_on_preemption():
            raise distributed.Preempted(3)
    assert exit_info.value.code == distributed.PREEMPTED_EXIT_CODE == 75
    resumed = train_and_evaluate(config, workdir)
    assert resumed["steps_this_session"] == STEPS - 3
    for a, b in zip(_params(one_process_run[0]), _params(workdir)):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- two processes


def _sigterm_process_1(args, logs, workdir, env=None):
    """Start 2 processes, SIGTERM process 1 once process 0 logged step 2; both must exit with
    the preemption status after saving the same step. Returns (that step, process 0's line
    saying why it stopped)."""
    with multihost.Group(args, logs, name="preempted", env=env) as group:
        group.wait_for(lambda: "step 2/8" in group.log(0), TIMEOUT, "step 2")
        group.send(1, signal.SIGTERM)
        codes = group.wait(TIMEOUT)
        text = group.logs()
    assert codes == [distributed.PREEMPTED_EXIT_CODE] * 2, text
    saved = [
        int(line.split("saved at step ")[1].split()[0])
        for i in range(2)
        for line in group.log(i).splitlines()
        if "preempted: checkpoint saved at step" in line
    ]
    assert len(saved) == 2 and saved[0] == saved[1], text  # both processes, the same step
    preempted_at = saved[0]
    assert 2 <= preempted_at < STEPS and _checkpoints(workdir)[-1] == preempted_at, text
    assert not os.path.exists(os.path.join(workdir, "summary.json"))
    (why,) = [ln for ln in group.log(0).splitlines() if ln.startswith("preempted (")]
    return preempted_at, why


@pytest.mark.slow
def test_two_processes_train_like_one_and_only_process_0_writes(two_process_run, one_process_run):
    workdir, group = two_process_run
    single_workdir, single = one_process_run
    for a, b in zip(_params(workdir), _params(single_workdir)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    with open(os.path.join(workdir, "summary.json")) as f:
        summary = json.load(f)
    assert summary["num_devices"] == 4 and summary["steps"] == STEPS
    assert abs(summary["test_accuracy"] - single["test_accuracy"]) < 1e-6
    # One writer: one TensorBoard event file, each logged step once in metrics.jsonl, the
    # progress lines only in process 0's log.
    assert len(os.listdir(os.path.join(workdir, "tensorboard"))) == 1
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    keys = [(r["step"], r.get("split", r.get("kind"))) for r in records]
    assert len(keys) == len(set(keys)), keys
    assert "done: test accuracy" in group.log(0) and "done: test accuracy" not in group.log(1)
    assert sorted(os.listdir(workdir)) == [
        "checkpoints",
        "config.json",
        "metrics.jsonl",
        "summary.json",
        "tensorboard",
    ]


@pytest.mark.slow
def test_sigterm_one_process_then_sigkill_both_then_restart_is_bit_identical(
    two_process_run, data_dir, tmp_path
):
    """SIGTERM to process 1 only: both save the same step and exit with status 75. The
    relaunched run resumes; SIGKILL of both after its next checkpoint; a restart finishes.
    The final parameters equal an uninterrupted 2-process run bit for bit."""
    reference, _ = two_process_run
    workdir, logs = str(tmp_path / "run"), str(tmp_path / "logs")
    args = _train_args(workdir, _overrides(data_dir), step_delay=0.3)
    preempted_at, why = _sigterm_process_1(args, logs, workdir)
    assert why.startswith("preempted (preemption notice (JAX preemption service)"), why

    with multihost.Group(args, logs, name="killed") as group:
        group.wait_for(
            lambda: preempted_at < max(_checkpoints(workdir)) < STEPS,
            TIMEOUT,
            "a checkpoint after the resumed step",
        )
        group.kill(signal.SIGKILL)
        assert f"resumed from {os.path.join(workdir, 'checkpoints')}/{preempted_at}" in group.log(
            0
        ), group.logs()
    assert not os.path.exists(os.path.join(workdir, "summary.json"))

    restart = multihost.run(
        _train_args(workdir, _overrides(data_dir)), logs, timeout=TIMEOUT, name="restart"
    )
    assert "resumed from" in restart.log(0)
    for a, b in zip(_params(reference), _params(workdir)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_sigterm_without_the_preemption_service_uses_the_broadcast_flag(
    two_process_run, data_dir, tmp_path
):
    """JAX's preemption service off (JAX_ENABLE_PREEMPTION_SERVICE=false): SIGTERM to process
    1 sets its guard's flag, the processes combine the flags with a collective and save the
    same step, exit with status 75, and a restart ends bit-identical to an uninterrupted run."""
    reference, _ = two_process_run
    workdir, logs = str(tmp_path / "run"), str(tmp_path / "logs")
    env = {"JAX_ENABLE_PREEMPTION_SERVICE": "false"}
    args = _train_args(workdir, _overrides(data_dir), step_delay=0.3)
    preempted_at, why = _sigterm_process_1(args, logs, workdir, env=env)
    # Process 0 was not signalled: it stopped on process 1's flag, not on a service notice.
    assert why.startswith("preempted (a signal to another process)"), why
    restart = multihost.run(
        _train_args(workdir, _overrides(data_dir)), logs, timeout=TIMEOUT, name="restart", env=env
    )
    resumed = f"resumed from {os.path.join(workdir, 'checkpoints')}/{preempted_at}"
    assert resumed in restart.log(0), restart.logs()
    for a, b in zip(_params(reference), _params(workdir)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_workdir_not_shared_fails_clearly_on_every_process(data_dir, tmp_path):
    cwds = [str(tmp_path / "host0"), str(tmp_path / "host1")]
    for c in cwds:
        os.makedirs(c)
    group = multihost.run(
        _train_args("run", _overrides(data_dir)),
        str(tmp_path / "logs"),
        timeout=TIMEOUT,
        expect=(1,),
        cwd=cwds,
    )
    for i in range(2):
        assert distributed.SHARED_WORKDIR_MESSAGE in group.log(i), group.logs()
    assert not os.path.exists(os.path.join(cwds[1], "run", "checkpoints"))


SWEEP_FILE = """
from flatrob_jax.study import Sweep

def get_sweep(arg=None):
    return Sweep(base={base!r}, overrides={overrides!r},
                 runs=[{{"augment.name": "none"}}, {{"augment.name": "standard"}}],
                 title="two-process sweep", num_resamples=50, compilation_cache=False)
"""


@pytest.mark.slow
def test_sweep_on_two_processes_gives_the_same_results_table(data_dir, tmp_path):
    """Training over both processes, analyses one run per process on its own devices, the
    report by process 0: the same table as one process with 4 devices."""
    from flatrob_jax.analysis import read_rows
    from flatrob_jax.study import load_sweep, run_sweep

    overrides = _overrides(
        data_dir,
        **{
            "train.num_steps": 4,
            "analysis.measures": ("clean", "curvature", "attacks"),
            "analysis.num_train_examples": 32,
            "analysis.num_test_examples": 32,
            "analysis.curvature.lanczos_steps": 6,
            "analysis.curvature.trace_max_probes": 4,
            "analysis.curvature.trace_min_probes": 2,
            "analysis.attacks.norms": ("Linf",),
            "analysis.attacks.pgd_steps": 2,
            "analysis.attacks.autoattack": False,
            "analysis.attacks.batch_size": 32,
        },
    )
    path = tmp_path / "sweep.py"
    path.write_text(SWEEP_FILE.format(base=CONFIG, overrides=overrides))
    root = str(tmp_path / "two")
    group = multihost.run(
        multihost.module_args("flatrob_jax.sweep", "--sweep", str(path), "--workdir", root),
        str(tmp_path / "logs"),
        timeout=2 * TIMEOUT,
    )
    # Each process analyzed one run; process 0 alone wrote the report.
    for i, name in enumerate(["name=none", "name=standard"]):
        assert f"{name}] clean" in group.log(i) and f"{name}] clean" not in group.log(1 - i)
        with open(os.path.join(root, name, "analysis.json")) as f:
            assert json.load(f)["platform"] == "cpu"
    assert "report:" in group.log(0) and "report:" not in group.log(1)

    single = run_sweep(load_sweep(str(path)), str(tmp_path / "one"), log=lambda m: None)
    two = {
        (r["run"], r["metric"]): r["value"] for r in read_rows(os.path.join(root, "results.csv"))
    }
    one = {(r["run"], r["metric"]): r["value"] for r in read_rows(single["results_csv"])}
    assert two.keys() == one.keys() and len(one) > 10
    how_it_ran = {"num_devices", "seconds", "time_s"}  # not what it found
    differ = {
        key: (two[key], value)
        for key, value in one.items()
        if not how_it_ran & set(key[1].split("/"))
        and two[key] != pytest.approx(value, rel=1e-4, abs=1e-5, nan_ok=True)
    }
    assert not differ, differ
