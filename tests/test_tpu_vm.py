"""tools/tpu_vm.sh and tools/relaunch.sh, without a TPU and without Google Cloud.

* Dry runs: every gcloud command and the scripts copied to the workers are printed; they are
  checked as text (the arguments intact, the known TPU types, queued resources where Google
  recommends them, setup's Python >= 3.11, the data venv kept apart from the training venv).
* The job wrapper for real: the exact job script that ``train --dry-run`` writes runs here in
  tmux, as on two workers (two homes, two tmux servers, two jax.distributed processes on
  127.0.0.1), then the whole session is signalled as a VM shutdown does (SIGTERM to every
  process, tmux and the log's tail included, then SIGHUP): both processes save the same step
  and exit with status 75, the logs are complete, and the relaunched job ends bit-identical to
  an uninterrupted one.
* setup's script for real, with apt, uv and sudo stubbed: the venv is built from a Python >=
  3.11, and a failing step stops with the worker's error.
* doctor, create (queued resources, the wait), recreate and delete against a fake gcloud
  (tests/fake_gcloud.py) on the PATH: each failing check prints the command that fixes it.
"""

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
import pytest

from flatrob_jax import load_for_eval
from tests import multihost
from tests.helpers import REPO, make_idx_dataset

TPU_VM = os.path.join(REPO, "tools", "tpu_vm.sh")
RELAUNCH = os.path.join(REPO, "tools", "relaunch.sh")
CONFIG = os.path.join(REPO, "configs", "fashion_mnist_cnn.py:smoke")
STEPS = 8
TIMEOUT = 240  # seconds for one job on both workers (a hang fails here with both logs)


def _dry_run(*args, env=None, check=True):
    """The output of ``tools/tpu_vm.sh --dry-run ARGS``: itself a bash script (the scripts for
    the workers as here-documents, then the gcloud commands); returns (text, gcloud argvs)."""
    full_env = dict(
        os.environ,
        TPU_NAME="flat-pod",
        TPU_ZONE="us-central2-b",
        TPU_PROJECT="my-proj",
        **(env or {}),
    )
    done = subprocess.run(
        ["bash", TPU_VM, "--dry-run", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=full_env,
    )
    if not check:
        return done
    assert done.returncode == 0, done.stderr
    subprocess.run(["bash", "-n"], input=done.stdout, text=True, check=True, timeout=60)
    commands, in_heredoc = [], False
    for line in done.stdout.splitlines():
        if in_heredoc or line.startswith("cat > "):
            in_heredoc = line != "EOF"
        else:
            commands.append(shlex.split(line))
    return done.stdout, commands


def _script(text, name):
    """A script of a dry run (its here-document), exactly as it is copied to the workers."""
    opening = f"cat > /tmp/tpu_vm.{name} <<'EOF'\n"
    start = text.index(opening) + len(opening)
    return text[start : text.index("\nEOF\n", start)]


def _workers_command(argv, workers="all"):
    assert argv[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"], argv
    assert f"--worker={workers}" in argv
    return [a for a in argv if a.startswith("--command=")][0][len("--command=") :]


# --------------------------------------------------------------------------- dry runs


def test_scripts_are_valid_bash_and_pass_shellcheck():
    scripts = [TPU_VM, RELAUNCH]
    for script in scripts:
        subprocess.run(["bash", "-n", script], check=True, timeout=60)
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck; .ci/setup --test does)")
    done = subprocess.run([shellcheck, *scripts], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout


@pytest.mark.parametrize("tpu_type", ["v3-8", "v2-8", "v4-12", "v6e-3", "v5e", "tpu", "v7x-8"])
def test_unknown_types_fail_with_the_list_of_known_types(tpu_type):
    done = _dry_run("create", "--type", tpu_type, check=False)
    assert done.returncode != 0 and done.stdout == ""
    assert f"unknown --type '{tpu_type}'" in done.stderr
    for known in ("v4-8", "v5e-8", "v5p-8", "v6e-8", "v5litepod"):
        assert known in done.stderr


def test_create_uses_queued_resources_for_spot_v5e_and_v6e():
    _, (create, wait) = _dry_run("create", "--type", "v5e-8")
    assert create[:6] == ["gcloud", "compute", "tpus", "queued-resources", "create", "flat-pod"]
    for flag in (
        "--node-id=flat-pod",
        "--accelerator-type=v5litepod-8",
        "--runtime-version=v2-alpha-tpuv5-lite",
        "--zone=us-central2-b",
        "--project=my-proj",
    ):
        assert flag in create
    assert "--spot" not in create
    assert wait[:5] == ["gcloud", "compute", "tpus", "queued-resources", "describe"]
    _, (create, _) = _dry_run("create", "--type", "v6e-8", "--spot")
    assert "--runtime-version=v2-alpha-tpuv6e" in create and "--spot" in create
    _, (create, _) = _dry_run("create", "--type", "v4-32", "--spot")  # Spot: queued too
    assert create[3] == "queued-resources" and "--spot" in create
    _, (create,) = _dry_run("create", "--type", "v4-32", "--service-account", "sa@p.iam")
    assert create[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "flat-pod"]
    assert "--accelerator-type=v4-32" in create and "--version=tpu-ubuntu2204-base" in create
    assert "--service-account=sa@p.iam" in create and "--spot" not in create
    _, (delete,) = _dry_run("delete", "--type", "v6e-8")
    assert delete[:6] == ["gcloud", "compute", "tpus", "queued-resources", "delete", "flat-pod"]
    assert "--force" in delete
    _, (delete,) = _dry_run("delete", "--type", "v4-8")
    assert delete[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "flat-pod"]


def test_setup_builds_the_venv_from_python_3_11_on_every_worker():
    text, commands = _dry_run("setup", "--ref", "v1.2")
    assert any(a == "flat-pod:flatrob/relaunch.sh" for a in commands[1])
    assert commands[-2][-1] == "--command=bash ~/flatrob/setup.sh"
    assert "test -f ~/flatrob/setup.ok" in _workers_command(commands[-1])
    script = _script(text, "setup.sh")
    (venv,) = [line for line in script.splitlines() if line.startswith("uv venv")]
    version = shlex.split(venv)[shlex.split(venv).index("--python") + 1]
    assert tuple(int(x) for x in version.split(".")) >= (3, 11), venv
    assert "'flatrob_jax[gcp] @ git+https://github.com/flatrob-jax/flatrob_jax@v1.2'" in script
    assert "'jax[tpu]'" in script and "apt_install tmux git curl" in script
    assert "assert sys.version_info >= (3, 11)" in script
    assert "DPkg::Lock::Timeout" in script and "cloud-init status --wait" in script
    text, _ = _dry_run("setup", "--python", "3.12", "--wheel", "dist/flatrob_jax-0.1.0.whl")
    assert "uv venv --seed --python 3.12 ~/flatrob/venv" in text
    assert "~/flatrob/'flatrob_jax-0.1.0.whl[gcp]'" in text
    done = _dry_run("setup", "--python", "3.10", check=False)
    assert done.returncode != 0 and "needs Python >= 3.11" in done.stderr


def test_data_builds_in_its_own_venv_never_the_training_venv():
    _, (data,) = _dry_run("data", "--dataset", "cifar10", "--bucket", "gs://b/tfds")
    build = _workers_command(data, workers="0")  # built once, on worker 0
    assert "~/flatrob/tfds-venv" in build and "tensorflow-cpu" in build
    assert "~/flatrob/venv/" not in build and "venv/bin/activate" not in build
    assert shlex.split(build.rsplit(";", 1)[-1]) == [
        "gcloud",
        "storage",
        "cp",
        "-r",
        "/tmp/tfds/cifar10",
        "gs://b/tfds/",
    ]


def test_train_on_all_workers_keeps_the_arguments_intact():
    workdir = "gs://my-bucket/runs/a b"
    user_args = ["--config", "fashion_mnist_cnn", "--config.augment.name=it's; rm -rf ~"]
    text, (scp, ssh) = _dry_run(
        "train",
        "--workdir",
        workdir,
        "--env",
        "JAX_DEFAULT_MATMUL_PRECISION=highest",
        "--",
        *user_args,
    )
    assert scp[5:7] == ["/tmp/tpu_vm.train.sh", "flat-pod:flatrob/train.sh"]
    assert "--worker=all" in scp
    start = _workers_command(ssh)
    assert start.endswith("tmux new-session -d -s flatrob-train bash ~/flatrob/train.sh")
    script = _script(text, "train.sh")
    assert "export JAX_DEFAULT_MATMUL_PRECISION=highest" in script
    assert "tee" not in script and "trap '' HUP" in script
    assert ') >> "$LOG" 2>&1 < /dev/null' in script
    (line,) = [ln for ln in script.replace("\\\n", " ").splitlines() if "relaunch.sh" in ln]
    argv = shlex.split(line)
    assert argv[argv.index("--done") + 1] == workdir + "/summary.json"
    train = argv[argv.index("--") + 1 :]
    assert train == ["python", "-m", "flatrob_jax.train", "--workdir", workdir, *user_args]


def test_sweep_runs_the_whole_sweep_in_a_relaunch_loop():
    text, commands = _dry_run(
        "sweep", "--workdir", "gs://b/study", "--", "--sweep", "fashion_mnist_augmentations:smoke"
    )
    _workers_command(commands[-1])
    script = _script(text, "sweep.sh")
    (line,) = [ln for ln in script.replace("\\\n", " ").splitlines() if "relaunch.sh" in ln]
    argv = shlex.split(line)
    assert argv[argv.index("--done") + 1] == "gs://b/study/results.csv"
    assert argv[argv.index("--") + 1 :][:7] == [
        "python",
        "-m",
        "flatrob_jax.sweep",
        "--workdir",
        "gs://b/study",
        "--sweep",
        "fashion_mnist_augmentations:smoke",
    ]
    subprocess.run(["bash", "-n"], input=script, text=True, check=True, timeout=60)


def test_a_local_workdir_is_refused():
    done = _dry_run("train", "--workdir", "/tmp/x", check=False)
    assert done.returncode != 0
    assert "a workdir every host can see (gs:// or a shared mount)" in done.stderr


# --------------------------------------------------------------------------- relaunch.sh


def test_relaunch_loop_restarts_after_preemption_until_done(tmp_path):
    """Exit status 75 restarts the command; it stops once the done file exists."""
    counter, done_file = tmp_path / "attempts", tmp_path / "summary.json"
    script = (
        f"n=$(cat {counter} 2>/dev/null || echo 0); echo $((n + 1)) > {counter}; "
        f"if [ $n -ge 2 ]; then touch {done_file}; exit 0; fi; exit 75"
    )
    done = subprocess.run(
        ["bash", RELAUNCH, "--done", str(done_file), "--", "bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=REPO),
    )
    assert done.returncode == 0, done.stderr
    assert counter.read_text().strip() == "3" and done_file.exists()
    assert done.stderr.count("preempted (exit status 75)") == 2


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: signal.Signals(s).name
)
def test_relaunch_loop_stops_when_signalled(tmp_path, sig):
    """A signal to the loop (a shutdown, Ctrl-C) lets the command finish saving, then the loop
    exits with its status instead of restarting it."""
    started = tmp_path / "started"
    command = f"trap 'kill $!; exit 75' TERM HUP INT; touch {started}; sleep 30 & wait"
    with subprocess.Popen(
        ["bash", RELAUNCH, "--", "bash", "-c", command],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as loop:
        deadline = time.monotonic() + 30
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(loop.pid, sig)  # the loop and the command, as a terminal or shutdown does
        _, err = loop.communicate(timeout=60)
    assert loop.returncode == 75, err
    assert f"{signal.Signals(sig).name} received: not restarting (exit status 75)" in err
    assert err.count("attempt") == 1


# --------------------------------------------------------------------------- the job wrapper


def _session_pids(env):
    """Every process a worker's job consists of: the tmux server and the processes of the
    pane's session (the job script, the log's tail, the relaunch loop, python)."""

    def tmux(*args):
        return subprocess.run(
            ["tmux", *args], env=env, capture_output=True, text=True, timeout=30
        ).stdout.split()

    server = [int(p) for p in tmux("display-message", "-p", "#{pid}")]
    panes = {int(p) for p in tmux("list-panes", "-a", "-F", "#{pane_pid}")}
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) in panes:  # the session id
                members.append(int(entry))
    return server + members


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Workers:
    """Two workers on this machine running tools/tpu_vm.sh's job script: each a home of its
    own (~/flatrob with the job script, relaunch.sh and a venv whose python is this
    interpreter) and a tmux server of its own; their processes meet through jax.distributed
    on 127.0.0.1, as the hosts of a pod do."""

    def __init__(self, root, script, start_line):
        self.start_line = start_line
        self.homes = [os.path.join(root, f"worker{i}") for i in range(2)]
        # tmux's socket lives under TMUX_TMPDIR: a short directory of its own, since a unix
        # socket path longer than 107 bytes (pytest's tmp paths can be) fails to connect.
        self.tmux_dirs = [tempfile.mkdtemp(prefix="flatrob-tmux-") for _ in self.homes]
        for home in self.homes:
            flatrob = os.path.join(home, "flatrob")
            os.makedirs(os.path.join(flatrob, "venv", "bin"))
            with open(os.path.join(flatrob, "train.sh"), "w") as f:
                f.write(script + "\n")
            shutil.copy(RELAUNCH, os.path.join(flatrob, "relaunch.sh"))
            os.chmod(os.path.join(flatrob, "relaunch.sh"), 0o755)  # as setup does
            bin_dir = os.path.join(flatrob, "venv", "bin")
            with open(os.path.join(bin_dir, "activate"), "w") as f:
                f.write(f'export PATH="{bin_dir}:$PATH"\n')
            # `python -m MODULE` goes through tests/multihost.py, which slows each training
            # step by $STEP_DELAY seconds (the numbers are unchanged).
            python = os.path.join(bin_dir, "python")
            with open(python, "w") as f:
                f.write(
                    f'#!/bin/sh\nif [ "$1" = -m ] && [ -n "$STEP_DELAY" ]; then\n'
                    f'  exec {sys.executable} {multihost.HERE} --step-delay "$STEP_DELAY" "$@"\n'
                    f'fi\nexec {sys.executable} "$@"\n'
                )
            os.chmod(python, 0o755)
        self.envs = None

    def env(self, i, port, step_delay):
        env = multihost.process_env(i, 2, 2, port)
        env.update(HOME=self.homes[i], TMUX_TMPDIR=self.tmux_dirs[i])
        env.pop("TMUX", None)
        if step_delay:
            env["STEP_DELAY"] = str(step_delay)
        return env

    def start(self, step_delay=0.0):
        """Run the start line that `train` sends to every worker, on both."""
        port = multihost.free_port()
        self.envs = [self.env(i, port, step_delay) for i in range(2)]
        for env in self.envs:
            subprocess.run(["bash", "-c", self.start_line], env=env, check=True, timeout=60)

    def log(self, i):
        logs = os.path.join(self.homes[i], "flatrob", "logs")
        names = os.listdir(logs) if os.path.isdir(logs) else []
        if not names:
            return ""
        (name,) = names
        with open(os.path.join(logs, name), errors="replace") as f:
            return f.read()

    def logs(self):
        return "\n".join(f"===== worker {i} =====\n{self.log(i)[-6000:]}" for i in range(2))

    def wait_for(self, predicate, what, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"{timeout}s passed before {what}. Logs:\n{self.logs()}")
            time.sleep(0.1)

    def ended(self, count):
        return all(self.log(i).count("job train: ended") >= count for i in range(2))

    def kill(self):
        for env in self.envs or []:
            subprocess.run(["tmux", "kill-server"], env=env, capture_output=True, timeout=30)


def _saved_steps(workers):
    return [
        int(m)
        for i in range(2)
        for m in re.findall(r"preempted: checkpoint saved at step (\d+)", workers.log(i))
    ]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_idx_dataset(str(tmp_path_factory.mktemp("data")), n_train=256, n_test=64)


def _job(tmp_path, data_dir, name):
    """Workers for the job `tools/tpu_vm.sh train --dry-run` writes for a run in tmp/name."""
    workdir = str(tmp_path / name / "run")
    overrides = {
        "dataset.data_dir": data_dir,
        "model.name": "cnn_tiny",
        "dataset.num_train_examples": None,
        "dataset.num_eval_examples": None,
        "train.num_steps": STEPS,
        "train.batch_size": 32,
        "train.eval_batch_size": 64,
        "checkpoint.every_steps": 100,  # no periodic checkpoint: only the shutdown saves
        "log_every_steps": 2,
        "augment.name": "standard",
    }
    flags = [f"--config.{k}={v}" for k, v in overrides.items()]
    text, (_, ssh) = _dry_run(
        "train", "--workdir", workdir, "--allow-local-workdir", "--", "--config", CONFIG, *flags
    )
    return Workers(str(tmp_path / name), _script(text, "train.sh"), _workers_command(ssh)), workdir


@pytest.mark.slow
def test_job_wrapper_survives_a_shutdown_and_resumes_bit_identically(data_dir, tmp_path):
    if shutil.which("tmux") is None:
        pytest.skip("tmux not installed (apt-get install tmux; .ci/setup --test does)")
    # An uninterrupted run through the job script: the reference.
    reference, reference_dir = _job(tmp_path, data_dir, "uninterrupted")
    try:
        reference.start()
        reference.wait_for(lambda: reference.ended(1), "the uninterrupted job ended")
    finally:
        reference.kill()
    for i in range(2):
        assert "job train: ended" in reference.log(i) and "exit status 0\n" in reference.log(i)
    assert os.path.exists(os.path.join(reference_dir, "summary.json"))

    workers, workdir = _job(tmp_path, data_dir, "shutdown")
    try:
        workers.start(step_delay=0.3)
        workers.wait_for(lambda: "step 2/8" in workers.log(0), "step 2")
        # The shutdown: SIGTERM to every process of both workers' sessions and their tmux
        # servers at once, then SIGHUP (systemd's SendSIGHUP; the terminal going away).
        pids = [p for env in workers.envs for p in _session_pids(env)]
        assert len(pids) >= 2 * 5, pids  # tmux, job script, tail, relaunch loop, python
        for sig in (signal.SIGTERM, signal.SIGHUP):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        workers.wait_for(lambda: not any(_alive(p) for p in pids), "every process exited")
        text = workers.logs()
        saved = _saved_steps(workers)
        assert len(saved) == 2 and saved[0] == saved[1], text  # both processes, one step
        assert 2 <= saved[0] < STEPS and os.path.isdir(os.path.join(workdir, "checkpoints"))
        assert not os.path.exists(os.path.join(workdir, "summary.json"))
        for i in range(2):
            log = workers.log(i)
            # The log is complete: the training's last words, the loop's, the job script's.
            assert "(exit status 75)" in log, text
            assert "relaunch.sh: SIGTERM received: not restarting (exit status 75)" in log, text
            assert log.rstrip().endswith("with exit status 75 (SIGTERM received)"), text

        workers.start()  # what recreate does once the TPU is back: start the job again
        workers.wait_for(lambda: workers.ended(2), "the relaunched job ended")
    finally:
        workers.kill()
    assert f"resumed from {os.path.join(workdir, 'checkpoints')}/{saved[0]}" in workers.log(0)
    for i in range(2):
        assert workers.log(i).rstrip().endswith("with exit status 0"), workers.logs()
    for a, b in zip(
        jax.tree.leaves(load_for_eval(reference_dir).variables),
        jax.tree.leaves(load_for_eval(workdir).variables),
    ):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- setup's script


def _stub(bin_dir, name, body):
    path = os.path.join(bin_dir, name)
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body + "\n")
    os.chmod(path, 0o755)


def _run_setup_script(tmp_path, fail_pip=False):
    """setup.sh of a dry run, run here as on a worker: sudo, apt-get, fuser, cloud-init and uv
    are stubs (uv records what it is asked and makes a venv whose python is this one)."""
    text, commands = _dry_run("setup")
    home, bin_dir = tmp_path / "home", tmp_path / "bin"
    (home / "flatrob").mkdir(parents=True)
    bin_dir.mkdir()
    (home / "flatrob" / "relaunch.sh").write_text("")
    (home / "flatrob" / "setup.sh").write_text(_script(text, "setup.sh") + "\n")
    uv_log = tmp_path / "uv.log"
    _stub(bin_dir, "sudo", 'exec env "$@"')
    _stub(bin_dir, "apt-get", "exit 0")
    _stub(bin_dir, "fuser", "exit 1")  # no process holds apt's locks
    _stub(bin_dir, "cloud-init", "exit 0")
    _stub(
        bin_dir,
        "uv",
        f'echo "$@" >> {uv_log}\n'
        f'if [ "$1" = venv ]; then for a; do d=$a; done; mkdir -p "$d/bin"\n'
        f'  printf \'#!/bin/sh\\nexec {sys.executable} "$@"\\n\' > "$d/bin/python"\n'
        f'  chmod +x "$d/bin/python"; fi\n'
        f'if [ "$1 $2" = "pip install" ] && [ -n "$FAIL_PIP" ]; then exit 1; fi',
    )
    env = dict(
        multihost.process_env(0, 1, 1, None),
        HOME=str(home),
        PATH=f"{bin_dir}:{os.environ['PATH']}",
        **({"FAIL_PIP": "1"} if fail_pip else {}),
    )
    done = subprocess.run(
        ["bash", str(home / "flatrob" / "setup.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    verify = subprocess.run(
        ["bash", "-c", _workers_command(commands[-1])],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done, verify, uv_log.read_text(), home


def test_setup_script_builds_the_venv_from_python_3_11(tmp_path):
    done, verify, uv_calls, home = _run_setup_script(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert verify.returncode == 0, verify.stderr
    assert uv_calls.splitlines()[0] == "venv --seed --python 3.11 " + str(home / "flatrob" / "venv")
    assert "pip install --python" in uv_calls and "jax[tpu]" in uv_calls
    assert (home / "flatrob" / "setup.ok").exists()
    assert "setup done: Python 3." in done.stdout
    assert "setup done" in (home / "flatrob" / "logs" / "setup.log").read_text()


def test_setup_script_stops_with_the_workers_error(tmp_path):
    done, verify, _, home = _run_setup_script(tmp_path, fail_pip=True)
    assert done.returncode != 0
    failed = r"\[worker \S+\] setup FAILED \(exit status 1\) at: uv pip install"
    assert re.search(failed, done.stdout + done.stderr), done.stdout  # the log has it too
    assert not (home / "flatrob" / "setup.ok").exists()
    assert verify.returncode != 0 and "setup did not finish" in verify.stderr


# --------------------------------------------------------------------------- against a fake gcloud

SERVICE_ACCOUNT = "serviceAccount:123456789012-compute@developer.gserviceaccount.com"


def _world(**changes):
    """A project where everything is ready for a v6e-8 Spot TPU in us-east5-b and bucket gs://b."""
    world = {
        "account": "me@example.com",
        "project": "my-proj",
        "project_number": "123456789012",
        "services": ["compute.googleapis.com", "tpu.googleapis.com"],
        "zones": {"us-east5-b": ["v6e-1", "v6e-8"], "us-central2-b": ["v4-8", "v4-32"]},
        "versions": {"us-east5-b": ["v2-alpha-tpuv6e"], "us-central2-b": ["tpu-ubuntu2204-base"]},
        "quotas": [
            {
                "quotaId": "TPUV6EPreemptiblePerProjectPerZoneForTPUAPI",
                "dimensionsInfos": [
                    {"details": {"value": "64"}, "applicableLocations": ["us-east5-b"]},
                    {"details": {"value": "0"}, "applicableLocations": ["us-east1-d"]},
                ],
            },
            {
                "quotaId": "TPUV6EPerProjectPerZoneForTPUAPI",
                "dimensionsInfos": [
                    {"details": {"value": "0"}, "applicableLocations": ["us-east5-b"]}
                ],
            },
        ],
        "buckets": {
            "gs://b": {
                "location": "US-EAST5",
                "iam": {
                    "bindings": [
                        {"role": "roles/storage.objectAdmin", "members": [SERVICE_ACCOUNT]},
                        {"role": "roles/storage.legacyBucketOwner", "members": ["projectOwner:x"]},
                    ]
                },
            }
        },
        "project_iam": {"bindings": [{"role": "roles/viewer", "members": [SERVICE_ACCOUNT]}]},
    }
    world.update(changes)
    return world


class FakeCloud:
    """tools/tpu_vm.sh run for real, with tests/fake_gcloud.py as `gcloud` on the PATH."""

    def __init__(self, tmp_path, world):
        import json

        self.json = json
        self.bin = tmp_path / "fake_bin"
        self.bin.mkdir(exist_ok=True)
        _stub(self.bin, "gcloud", f'exec {sys.executable} {REPO}/tests/fake_gcloud.py "$@"')
        self.world_path, self.log_path = tmp_path / "world.json", tmp_path / "gcloud.log"
        self.world_path.write_text(json.dumps(world))
        self.log_path.write_text("")
        self.state = tmp_path / "state"

    def run(self, *args, env=None):
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("TPU_", "FLATROB_"))}
        full_env.update(
            PATH=f"{self.bin}:{os.environ['PATH']}",
            FAKE_GCLOUD_WORLD=str(self.world_path),
            FAKE_GCLOUD_LOG=str(self.log_path),
            FLATROB_TPU_STATE=str(self.state),
            FLATROB_TPU_POLL_SECONDS="0",
            TPU_NAME="flat",
            TPU_ZONE="us-east5-b",
            **(env or {}),
        )
        return subprocess.run(
            ["bash", TPU_VM, *args], env=full_env, capture_output=True, text=True, timeout=120
        )

    def calls(self):
        return [self.json.loads(line) for line in self.log_path.read_text().splitlines()]

    def world(self):
        return self.json.loads(self.world_path.read_text())


DOCTOR = ("doctor", "--type", "v6e-8", "--spot", "--bucket", "gs://b/tfds")


def test_doctor_passes_when_everything_is_ready(tmp_path):
    done = FakeCloud(tmp_path, _world()).run(*DOCTOR)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAIL" not in done.stdout and "doctor: ready" in done.stdout
    for line in (
        "signed in as me@example.com",
        "project my-proj",
        "Cloud TPU API enabled",
        "v6e-8 is offered in us-east5-b",
        "Spot (preemptible) v6e quota in us-east5-b: 64",
        "bucket gs://b in us-east5",
        "can write to gs://b (roles/storage.objectAdmin)",
    ):
        assert line in done.stdout, done.stdout
    # The project's editors can write too.
    editor = {"bindings": [{"role": "roles/editor", "members": [SERVICE_ACCOUNT]}]}
    buckets = {"gs://b": {"location": "US-EAST5", "iam": {}}}
    done = FakeCloud(tmp_path, _world(project_iam=editor, buckets=buckets)).run(*DOCTOR)
    assert done.returncode == 0 and "(roles/editor)" in done.stdout, done.stdout


QUOTA_FIX = (
    "gcloud beta quotas preferences create --service=tpu.googleapis.com --project=my-proj "
    "--quota-id=TPUV6EPerProjectPerZoneForTPUAPI --preferred-value=8 --dimensions=zone=us-east5-b"
)


@pytest.mark.parametrize(
    "changes, args, fix",
    [
        ({"account": ""}, (), "gcloud auth login"),
        ({"project": ""}, (), "gcloud config set project YOUR_PROJECT_ID"),
        ({"services": []}, (), "gcloud services enable tpu.googleapis.com --project=my-proj"),
        ({"zones": {}}, (), "export TPU_ZONE=us-central1-b"),
        ({"versions": {}}, (), "gcloud compute tpus versions list --zone=us-east5-b"),
        ({}, ("--type", "v6e-8"), QUOTA_FIX),  # on demand: that quota is 0
        (
            {"buckets": {}},
            (),
            "gcloud storage buckets create gs://b --location=us-east5 "
            "--uniform-bucket-level-access --project=my-proj",
        ),
        (
            {"buckets": {"gs://b": dict(_world()["buckets"]["gs://b"], location="US")}},
            (),
            "gcloud storage buckets create gs://A_NEW_NAME --location=us-east5",
        ),
        (
            {"buckets": {"gs://b": {"location": "US-EAST5", "iam": {}}}},
            (),
            f"gcloud storage buckets add-iam-policy-binding gs://b --member={SERVICE_ACCOUNT} "
            "--role=roles/storage.objectAdmin",
        ),
    ],
)
def test_each_failing_check_prints_the_command_that_fixes_it(tmp_path, changes, args, fix):
    doctor = DOCTOR if not args else ("doctor", *args, "--bucket", "gs://b")
    done = FakeCloud(tmp_path, _world(**changes)).run(*doctor)
    assert done.returncode != 0, done.stdout
    assert "FAIL" in done.stdout and "check(s) failed" in done.stdout
    fixes = [ln.strip()[len("fix: ") :] for ln in done.stdout.splitlines() if "fix: " in ln]
    assert len(fixes) == 1 and fix in fixes[0], done.stdout


def test_doctor_warns_but_passes_when_it_cannot_read_the_quota(tmp_path):
    done = FakeCloud(tmp_path, _world(quotas=None)).run(*DOCTOR)
    assert done.returncode == 0, done.stdout
    assert "warn  could not read the TPU quotas" in done.stdout
    assert "gcloud beta quotas info list --service=tpu.googleapis.com" in done.stdout


def test_create_checks_first_then_waits_for_the_queued_resource(tmp_path):
    cloud = FakeCloud(tmp_path, _world())
    done = cloud.run("create", "--type", "v6e-8", "--spot", "--bucket", "gs://b")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "doctor: ready" in done.stdout
    assert "flat: WAITING_FOR_RESOURCES, 0 min so far" in done.stdout
    assert "flat: PROVISIONING" in done.stdout and "flat is ACTIVE" in done.stdout
    (create,) = [
        c for c in cloud.calls() if c[:4] == ["compute", "tpus", "queued-resources", "create"]
    ]
    assert "--spot" in create and "--accelerator-type=v6e-8" in create

    # A failing check: nothing is created.
    (tmp_path / "broken").mkdir()
    cloud = FakeCloud(tmp_path / "broken", _world(services=[]))
    done = cloud.run("create", "--type", "v6e-8", "--spot", "--bucket", "gs://b")
    assert done.returncode != 0 and "the checks above failed" in done.stderr
    assert not [c for c in cloud.calls() if "create" in c]


def test_create_stops_when_the_queued_resource_fails(tmp_path):
    cloud = FakeCloud(tmp_path, _world(queued={"flat": ["WAITING_FOR_RESOURCES", "FAILED"]}))
    done = cloud.run("create", "--type", "v6e-8", "--spot", "--skip-doctor")
    assert done.returncode != 0
    assert "the queued resource flat exists already: waiting for it" in done.stdout
    assert "the queued resource flat is FAILED" in done.stderr


def test_a_setup_that_fails_on_a_worker_stops_with_its_error(tmp_path):
    cloud = FakeCloud(tmp_path, _world(ssh_fail="bash ~/flatrob/setup.sh"))
    done = cloud.run("setup")
    assert done.returncode != 0
    assert "[worker 1] command failed" in done.stderr
    assert "setup failed on a worker: its error is above" in done.stderr
    assert not (cloud.state / "flat" / "setup.env").exists()  # recreate will not trust it


def test_recreate_deletes_creates_sets_up_and_restarts_the_last_job(tmp_path):
    cloud = FakeCloud(tmp_path, _world())
    for args in (
        ("create", "--type", "v6e-8", "--spot", "--bucket", "gs://b"),
        ("setup", "--ref", "v1.2"),
        ("train", "--workdir", "gs://b/run", "--", "--config", "cifar10_resnet18"),
    ):
        done = cloud.run(*args)
        assert done.returncode == 0, done.stdout + done.stderr
    job = cloud.world()["copies"]["flat:flatrob/train.sh"]
    cloud.log_path.write_text("")

    done = cloud.run("recreate")  # no flags: everything comes from what was run before
    assert done.returncode == 0, done.stdout + done.stderr
    calls = cloud.calls()
    steps = [
        ("queued-resources", "delete"),
        ("queued-resources", "create"),
        ("tpu-vm", "ssh", "bash ~/flatrob/setup.sh"),
        ("tpu-vm", "scp", "flat:flatrob/train.sh"),
        ("tpu-vm", "ssh", "tmux new-session -d -s flatrob-train bash ~/flatrob/train.sh"),
    ]
    at = [
        next(
            i
            for i, c in enumerate(calls)
            if c[2:4] == list(s[:2]) and (len(s) == 2 or any(s[2] in a for a in c))
        )
        for s in steps
    ]
    assert at == sorted(at), calls
    assert "--force" in calls[at[0]] and "--spot" in calls[at[1]]
    setup = cloud.world()["copies"]["flat:flatrob/setup.sh"]
    assert "flatrob_jax@v1.2" in setup
    assert cloud.world()["copies"]["flat:flatrob/train.sh"] == job  # the same job script
    (tmp_path / "elsewhere").mkdir()
    done = FakeCloud(tmp_path / "elsewhere", _world()).run("recreate")
    assert done.returncode != 0 and "no record of how flat was created" in done.stderr


def test_ray_head_and_join_start_ray_of_the_ray_extra_on_the_workers():
    import tomllib

    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        (ray_spec,) = tomllib.load(f)["project"]["optional-dependencies"]["ray"]
    _, commands = _dry_run("ray-head")
    head = _workers_command(commands[-1], workers="0")
    assert f"uv pip install -q --python ~/flatrob/venv/bin/python {ray_spec};" in head
    assert "ray start --head --port=6379" in head and '"flatrob_tpu_host": 1' in head
    _, commands = _dry_run("ray-join", "--address", "10.0.0.2:6379")
    join = _workers_command(commands[-1])
    assert "ray start --address=10.0.0.2:6379" in join and ray_spec in join
    assert '"flatrob_tpu_host": 1' in join  # what --resources tpu:host asks for
    from flatrob_jax.fleet.resources import TPU_HOST_RESOURCE

    assert TPU_HOST_RESOURCE == "flatrob_tpu_host"
    done = _dry_run("ray-join", check=False)
    assert done.returncode != 0 and "set --address HOST:PORT" in done.stderr
