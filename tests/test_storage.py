"""gs:// end to end, through the command-line entry points, against a local Cloud Storage
emulator (tests/gcs_emulator.py; nothing leaves 127.0.0.1): training, SIGKILL and resume,
analysis, a sweep with its report, tfds and IDX datasets read from the bucket, and the errors
for a missing extra, a missing bucket and a missing object. Every command runs in a fresh
empty directory, which must stay empty: no URI may turn into a local path."""

import io
import json
import os
import signal
import subprocess
import sys
import time
import types

import jax
import numpy as np
import pytest

from flatrob_jax import fileio, load_for_eval
from tests.gcs_emulator import emulator  # noqa: F401 (the fixture)
from tests.helpers import REPO, make_idx_dataset, tiny_config

TOTAL_STEPS = 12
TRAIN_FLAGS = (
    "--config.model.name=cnn_tiny",
    "--config.num_devices=1",
    f"--config.train.num_steps={TOTAL_STEPS}",
    "--config.train.batch_size=32",
    "--config.dataset.num_train_examples=None",
    "--config.checkpoint.every_steps=2",
    "--config.log_every_steps=1",
    "--config.augment.name=standard",
)
ANALYSIS_FLAGS = (
    '--config.analysis.measures=("clean", "curvature")',
    "--config.analysis.num_train_examples=32",
    "--config.analysis.num_test_examples=32",
    "--config.analysis.curvature.lanczos_steps=6",
    "--config.analysis.curvature.trace_min_probes=2",
    "--config.analysis.curvature.trace_max_probes=3",
    "--config.analysis.curvature.density=True",
    "--config.analysis.curvature.density_steps=6",
)


def _env(emu):
    env = emu.env()
    env.pop("XLA_FLAGS", None)  # one CPU device in the subprocesses
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _run(emu, args, cwd, *, check=True, timeout=300):
    done = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=cwd,
        env=_env(emu),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check:
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def _train(data, workdir):
    return [
        "flatrob_jax.train",
        "--config",
        os.path.join(REPO, "configs", "fashion_mnist_cnn.py:smoke"),
        "--workdir",
        workdir,
        f"--config.dataset.data_dir={data}",
        *TRAIN_FLAGS,
    ]


def _assert_nothing_local(cwd):
    """No file appeared in the command's directory, nor where a URI made local would land."""
    assert os.listdir(cwd) == [], os.listdir(cwd)
    for root in (REPO, "/"):
        assert not os.path.exists(os.path.join(root, "gs:")), root


@pytest.fixture(scope="module")
def bucket_data(emulator, tmp_path_factory):  # noqa: F811
    """A tiny IDX dataset in the bucket (and its local original)."""
    local = make_idx_dataset(str(tmp_path_factory.mktemp("idx")), n_train=192, n_test=48)
    return fileio.copytree(local, emulator.uri("data", "fashion_mnist")), local


def _committed_steps(checkpoints: str) -> list:
    """Checkpoint steps orbax has finished writing (on gs://: with their commit file)."""
    if not fileio.exists(checkpoints):
        return []
    return sorted(
        int(d)
        for d in fileio.listdir(checkpoints)
        if d.isdigit() and fileio.exists(fileio.join(checkpoints, d, "commit_success.txt"))
    )


@pytest.mark.slow
def test_train_kill_resume_and_analyze_in_a_bucket(emulator, bucket_data, tmp_path):  # noqa: F811
    data, _ = bucket_data
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    reference, interrupted = emulator.uri("runs", "reference"), emulator.uri("runs", "killed")

    _run(emulator, _train(data, reference), cwd)
    _assert_nothing_local(cwd)
    for name in ("config.json", "summary.json", "metrics.jsonl"):
        assert fileio.isfile(fileio.join(reference, name)), name
    assert (
        json.loads(fileio.read_text(fileio.join(reference, "summary.json")))["steps"] == TOTAL_STEPS
    )
    logged = [
        json.loads(x)["step"]
        for x in fileio.read_text(fileio.join(reference, "metrics.jsonl")).splitlines()
    ]
    assert [s for s in logged if s <= TOTAL_STEPS][:TOTAL_STEPS] == list(range(1, 13))
    events = fileio.listdir(fileio.join(reference, "tensorboard"))
    assert events and events[0].startswith("events.out.tfevents")

    # SIGKILL mid-run, then the same command: bit-identical to the uninterrupted run.
    proc = subprocess.Popen(
        [sys.executable, "-m", *_train(data, interrupted)],
        cwd=cwd,
        env=_env(emulator),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoints = fileio.join(interrupted, "checkpoints")
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        steps = _committed_steps(checkpoints)
        if steps and steps[-1] >= 4:
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _committed_steps(checkpoints)[-1]
    assert 4 <= killed_at < TOTAL_STEPS
    resumed = _run(emulator, _train(data, interrupted), cwd)
    assert f"resumed from {checkpoints}/" in resumed.stdout
    a, b = load_for_eval(reference), load_for_eval(interrupted)
    assert a.step == b.step == TOTAL_STEPS
    for x, y in zip(jax.tree.leaves(a.variables), jax.tree.leaves(b.variables)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # The metrics of the killed session up to its checkpoint survived, none twice.
    rows = [
        json.loads(x)
        for x in fileio.read_text(fileio.join(interrupted, "metrics.jsonl")).splitlines()
    ]
    train_steps = [r["step"] for r in rows if r["split"] == "train"]
    assert train_steps == list(range(1, TOTAL_STEPS + 1))

    # analyze, into the same bucket.
    _run(emulator, ["flatrob_jax.analyze", "--workdir", reference, *ANALYSIS_FLAGS], cwd)
    _assert_nothing_local(cwd)
    results = json.loads(fileio.read_text(fileio.join(reference, "analysis.json")))
    assert results["workdir"] == reference and results["step"] == TOTAL_STEPS
    assert np.isfinite(results["curvature"]["clean"]["lambda_max"])
    pngs = fileio.listdir(fileio.join(reference, "analysis"))
    assert "hessian_density_clean.png" in pngs
    png = fileio.read_bytes(fileio.join(reference, "analysis", "hessian_density_clean.png"))
    assert png.startswith(b"\x89PNG")


SWEEP_FILE = """
from flatrob_jax.study import Sweep

def get_sweep(arg=None):
    return Sweep(
        base={base!r},
        overrides={{
            "dataset.data_dir": {data!r}, "model.name": "cnn_tiny", "train.num_steps": 3,
            "train.batch_size": 32, "dataset.num_train_examples": None, "log_every_steps": 3,
            "checkpoint.every_steps": None, "num_devices": 1,
            "analysis.measures": ("clean", "curvature", "corruptions"),
            "analysis.num_train_examples": 32, "analysis.num_test_examples": 32,
            "analysis.curvature.lanczos_steps": 4, "analysis.curvature.trace_max_probes": 3,
            "analysis.curvature.trace_min_probes": 2,
            "analysis.corruptions.corruptions": ("gaussian_noise",),
            "analysis.corruptions.severities": (1, 5), "analysis.corruptions.batch_size": 32,
        }},
        runs=[{{"augment.name": n}} for n in ("none", "standard", "cutout")],
        title="tiny sweep in a bucket",
        num_resamples=50,
    )
"""


@pytest.mark.slow
def test_sweep_with_a_bucket_root(emulator, bucket_data, tmp_path):  # noqa: F811
    data, _ = bucket_data
    sweep_file = tmp_path / "tiny_sweep.py"
    sweep_file.write_text(
        SWEEP_FILE.format(
            base=os.path.join(REPO, "configs", "fashion_mnist_cnn.py:smoke"), data=data
        )
    )
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    root = emulator.uri("study")
    done = _run(
        emulator,
        ["flatrob_jax.sweep", "--sweep", str(sweep_file), "--workdir", root],
        cwd,
        timeout=600,
    )
    _assert_nothing_local(cwd)
    assert f"report: {root}/report/report.md" in done.stdout
    report = fileio.read_text(fileio.join(root, "report", "report.md"))
    assert "tiny sweep in a bucket" in report
    header = fileio.read_text(fileio.join(root, "results.csv")).splitlines()[0]
    assert "metric" in header and "value" in header
    assert json.loads(fileio.read_text(fileio.join(root, "results.json")))
    figures = fileio.join(root, "report", "figures")
    scatter = fileio.listdir(fileio.join(figures, "scatter"))
    assert scatter and all(f.endswith(".png") for f in scatter)
    for name in scatter:
        assert f"figures/scatter/{name}" in report
    for run in ("name=none", "name=standard", "name=cutout"):
        assert fileio.isfile(fileio.join(root, run, "analysis.json")), run
    heatmap = fileio.join(root, "name=none", "analysis", "corruption_heatmap.png")
    assert fileio.read_bytes(heatmap).startswith(b"\x89PNG")
    assert fileio.listdir(fileio.join(root, ".jax_cache"))  # the compilation cache, in the bucket


def _tiny_tfds(data_dir: str) -> None:
    """A real, tiny 'fashion_mnist' prepared by tfds (its builder, our 40 + 20 examples as
    PNG bytes, which needs no TensorFlow) as ArrayRecord files in ``data_dir``."""
    import tensorflow_datasets as tfds
    from PIL import Image

    builder = tfds.builder("fashion_mnist", data_dir=data_dir, file_format="array_record")

    def png(array):
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, format="PNG")
        return buf.getvalue()

    def examples(n, seed):
        rng = np.random.default_rng(seed)
        for i in range(n):
            yield i, {"image": png(rng.integers(0, 256, (28, 28), dtype=np.uint8)), "label": i % 10}

    builder._split_generators = lambda dl_manager: {
        "train": examples(40, 0),
        "test": examples(20, 1),
    }
    # Nothing to download: a stand-in download manager (the real one needs the builder's
    # checksums file, which tfds reads with importlib_resources).
    builder._make_download_manager = lambda **kw: types.SimpleNamespace(
        downloaded_size=0, download_dir=data_dir, manual_dir=None
    )
    builder.download_and_prepare()


def test_tfds_and_idx_datasets_from_a_bucket(emulator, bucket_data, tmp_path):  # noqa: F811
    from flatrob_jax.data import MissingDatasetError, build_source

    local = str(tmp_path / "tfds")
    _tiny_tfds(local)
    remote = fileio.copytree(local, emulator.uri("tfds"))
    cfg = tiny_config(remote, **{"dataset.source": "tfds"}).dataset
    from_bucket = build_source(cfg, "train")
    from_disk = build_source(tiny_config(local, **{"dataset.source": "tfds"}).dataset, "train")
    assert len(from_bucket) == len(from_disk) == 40
    np.testing.assert_array_equal(from_bucket.images, from_disk.images)
    np.testing.assert_array_equal(from_bucket.labels, from_disk.labels)
    assert sorted(from_bucket.labels) == sorted(np.arange(40) % 10)  # tfds shuffles the order

    data, original = bucket_data
    idx = build_source(tiny_config(data).dataset, "test")
    np.testing.assert_array_equal(
        idx.images, build_source(tiny_config(original).dataset, "test").images
    )

    # A missing dataset names the URI it looked at.
    with pytest.raises(MissingDatasetError, match="gs://bkt/nothing-here"):
        build_source(tiny_config(emulator.uri("nothing-here")).dataset, "train")
    with pytest.raises(MissingDatasetError, match="gs://bkt/nothing-here"):
        build_source(
            tiny_config(emulator.uri("nothing-here"), **{"dataset.source": "tfds"}).dataset, "train"
        )


def test_bad_storage_input_fails_at_once_naming_the_path(
    emulator,  # noqa: F811
    bucket_data,
    tmp_path,
    monkeypatch,
):
    data, _ = bucket_data
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    earlier = emulator.uri("bad", "kept.json")
    fileio.atomic_write_text(earlier, "written earlier")

    # Without the extra (import gcsfs fails): the pip command, before any work.
    argv = _train(data, emulator.uri("bad", "run"))
    code = (
        "import runpy, sys; sys.modules['gcsfs'] = None; "
        f"sys.argv = {argv!r}; runpy.run_module('flatrob_jax.train', run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=_env(emulator),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "MissingExtraError" in done.stderr and "pip install 'flatrob_jax[gcp]'" in done.stderr
    assert "gs://bkt/bad/run" in done.stderr and "Traceback" in done.stderr
    assert fileio.listdir(emulator.uri("bad")) == ["kept.json"]

    # A bucket that does not exist: one error naming the object it could not write, raised
    # by the first thing training does (the library call the entry point makes).
    from flatrob_jax.analysis import analysis_config_for
    from flatrob_jax.training.trainer import train_and_evaluate

    monkeypatch.chdir(cwd)
    with pytest.raises(
        FileNotFoundError, match="gs://no-such-bucket/run/config.json': it does not exist"
    ):
        train_and_evaluate(tiny_config(data), "gs://no-such-bucket/run")
    # A workdir with nothing in it: analyze's first call names it.
    with pytest.raises(FileNotFoundError, match="workdir 'gs://bkt/bad/absent' does not"):
        analysis_config_for(emulator.uri("bad", "absent"))

    _assert_nothing_local(cwd)
    assert fileio.read_text(earlier) == "written earlier"  # nothing written earlier is lost
