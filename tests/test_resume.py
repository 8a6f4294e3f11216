"""Kill-and-resume, corrupt checkpoints and config changes: nothing a user had is lost."""

import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from flatrob_jax import load_for_eval
from flatrob_jax.checkpoint import CheckpointError
from flatrob_jax.training.trainer import train_and_evaluate
from tests.helpers import REPO, make_idx_dataset, tiny_config

TOTAL_STEPS = 16


def _train_command(data_dir, workdir):
    return [
        sys.executable,
        "-m",
        "flatrob_jax.train",
        "--config",
        os.path.join(REPO, "configs", "fashion_mnist_cnn.py:smoke"),
        "--workdir",
        workdir,
        f"--config.dataset.data_dir={data_dir}",
        "--config.model.name=cnn_tiny",
        "--config.num_devices=1",
        f"--config.train.num_steps={TOTAL_STEPS}",
        "--config.train.batch_size=32",
        "--config.dataset.num_train_examples=None",
        "--config.checkpoint.every_steps=2",
        "--config.log_every_steps=1",
        "--config.augment.name=standard",
    ]


def _env():
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # one CPU device in the subprocesses
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _finished_steps(workdir):
    ckpt = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(ckpt):
        return []
    return sorted(int(d) for d in os.listdir(ckpt) if d.isdigit())


@pytest.mark.slow
def test_sigkilled_run_resumes_to_bit_identical_parameters(tmp_path):
    data = make_idx_dataset(str(tmp_path / "data"), n_train=320, n_test=64)
    reference, interrupted = str(tmp_path / "reference"), str(tmp_path / "interrupted")
    subprocess.run(
        _train_command(data, reference), env=_env(), check=True, capture_output=True, timeout=600
    )

    proc = subprocess.Popen(
        _train_command(data, interrupted),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        steps = _finished_steps(interrupted)
        if steps and steps[-1] >= 6:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _finished_steps(interrupted)[-1]
    assert 6 <= killed_at < TOTAL_STEPS

    resumed = subprocess.run(
        _train_command(data, interrupted),
        env=_env(),
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert "resumed from" in resumed.stdout

    a, b = load_for_eval(reference), load_for_eval(interrupted)
    assert a.step == b.step == TOTAL_STEPS
    for x, y in zip(jax.tree.leaves(a.variables), jax.tree.leaves(b.variables)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _corrupt(checkpoint_dir):
    """Overwrite every data file of a checkpoint with garbage, keeping its layout."""
    for root, _, files in os.walk(checkpoint_dir):
        for f in files:
            with open(os.path.join(root, f), "wb") as fh:
                fh.write(b"\x00garbage")


def test_corrupt_checkpoint_is_a_clear_error_and_nothing_is_deleted(tmp_path):
    data = make_idx_dataset(str(tmp_path / "data"), n_train=128, n_test=32)
    workdir = str(tmp_path / "run")
    config = tiny_config(data, **{"train.num_steps": 4, "checkpoint.every_steps": 2})
    train_and_evaluate(config, workdir)
    latest = os.path.join(workdir, "checkpoints", "4")
    _corrupt(latest)
    before = sorted(
        os.path.relpath(os.path.join(r, f), workdir) for r, _, fs in os.walk(workdir) for f in fs
    )
    with pytest.raises(
        CheckpointError, match=r"checkpoints/4.*cannot be restored.*Nothing was deleted"
    ):
        train_and_evaluate(
            tiny_config(data, **{"train.num_steps": 6, "checkpoint.every_steps": 2}), workdir
        )
    after = sorted(
        os.path.relpath(os.path.join(r, f), workdir) for r, _, fs in os.walk(workdir) for f in fs
    )
    assert set(before) <= set(after)
    # Moving the corrupt one aside resumes from the previous checkpoint, as the message says.
    shutil.move(latest, str(tmp_path / "bad_4"))
    summary = train_and_evaluate(
        tiny_config(data, **{"train.num_steps": 6, "checkpoint.every_steps": 2}), workdir
    )
    assert summary["steps"] == 6 and summary["steps_this_session"] == 4


def test_changed_config_on_resume_is_kept_beside_the_original(tmp_path):
    data = make_idx_dataset(str(tmp_path / "data"), n_train=128, n_test=32)
    workdir = str(tmp_path / "run")
    train_and_evaluate(tiny_config(data, **{"train.num_steps": 2}), workdir)
    original = open(os.path.join(workdir, "config.json")).read()
    train_and_evaluate(tiny_config(data, **{"train.num_steps": 4}), workdir)
    assert open(os.path.join(workdir, "config.json")).read() == original
    assert os.path.exists(os.path.join(workdir, "config.1.json"))
