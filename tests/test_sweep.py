"""End to end: a tiny synthetic sweep trains, analyzes and reports; reruns do no work twice;
a sweep killed midway completes when rerun."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from flatrob_jax.analysis import read_rows
from flatrob_jax.study import load_sweep, run_name, run_sweep
from tests.helpers import REPO, make_idx_dataset

SWEEP_FILE = """
from flatrob_jax.study import Sweep

def get_sweep(arg=None):
    return Sweep(
        base={base!r},
        overrides={{
            "dataset.data_dir": {data!r}, "model.name": "cnn_tiny", "train.num_steps": 4,
            "train.batch_size": 32, "dataset.num_train_examples": None, "log_every_steps": 2,
            "checkpoint.every_steps": 2, "num_devices": 1,
            "analysis.measures": ("clean", "curvature", "curvature_augmented", "corruptions",
                                  "attacks"),
            "analysis.num_train_examples": 32, "analysis.num_test_examples": 32,
            "analysis.curvature.lanczos_steps": 8, "analysis.curvature.trace_max_probes": 6,
            "analysis.curvature.trace_min_probes": 4,
            "analysis.corruptions.corruptions": ("gaussian_noise", "brightness"),
            "analysis.corruptions.severities": (1, 5), "analysis.corruptions.batch_size": 32,
            "analysis.attacks.norms": ("Linf",), "analysis.attacks.pgd_steps": 3,
            "analysis.attacks.autoattack": False, "analysis.attacks.batch_size": 32,
        }},
        runs=[{{"augment.name": n}} for n in {runs!r}],
        title="tiny sweep",
        num_resamples=100,
    )
"""


def _write_sweep(tmp_path, runs=("none", "standard", "cutout")):
    data = make_idx_dataset(str(tmp_path / "data"), n_train=128, n_test=40)
    path = tmp_path / "tiny_sweep.py"
    path.write_text(
        SWEEP_FILE.format(
            base=os.path.join(REPO, "configs", "fashion_mnist_cnn.py:smoke"), data=data, runs=runs
        )
    )
    return str(path)


@pytest.mark.slow
def test_tiny_sweep_end_to_end_and_no_repeated_work(tmp_path):
    sweep = load_sweep(_write_sweep(tmp_path))
    root = str(tmp_path / "study")
    logs = []
    paths = run_sweep(sweep, root, log=logs.append)
    names = [run_name(r) for r in sweep.runs]
    assert names == ["name=none", "name=standard", "name=cutout"]

    rows = read_rows(paths["results_csv"])
    metrics = {r["metric"] for r in rows}
    for m in (
        "clean/error",
        "curvature/clean/lambda_max",
        "curvature/clean/trace",
        "curvature/augmented/lambda_max",
        "corruptions/mean_corruption_error",
    ):
        assert m in metrics, m
    assert {r["run"] for r in rows} == set(names)
    # The table agrees with each run's analysis.json.
    for name in names:
        with open(os.path.join(root, name, "analysis.json")) as f:
            analysis = json.load(f)
        value = [r["value"] for r in rows if r["run"] == name and r["metric"] == "clean/error"][0]
        assert value == pytest.approx(analysis["clean"]["error"])
        lam = analysis["curvature"]["clean"]["lambda_max"]
        assert np.isfinite(lam) and lam > 0

    report = open(paths["report"]).read()
    assert "tiny sweep" in report and "Pearson" in report
    report_dir = os.path.dirname(paths["report"])
    pngs = [
        os.path.join(r, f) for r, _, fs in os.walk(report_dir) for f in fs if f.endswith(".png")
    ]
    assert any("scatter" in p for p in pngs), pngs
    for png in pngs:
        assert os.path.relpath(png, report_dir) in report  # embedded in the report
        with Image.open(png) as im:
            assert im.size[0] > 100 and im.size[1] > 100

    # A rerun trains and analyzes nothing again.
    again = []
    run_sweep(sweep, root, log=again.append)
    assert sum("name=" in line and "trained already" in line for line in again) == 3
    assert sum("analyzed already" in line for line in again) == 3
    assert not any(line.startswith("training ") for line in again)


@pytest.mark.slow
def test_sweep_killed_midway_completes_on_rerun(tmp_path):
    sweep_file = _write_sweep(tmp_path, runs=("none", "standard"))
    root = str(tmp_path / "study")
    cmd = [sys.executable, "-m", "flatrob_jax.sweep", "--sweep", sweep_file, "--workdir", root]
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = os.path.join(root, "name=none", "summary.json")
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not os.path.exists(first):
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(os.path.join(root, "report", "report.md"))

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "name=none: trained already" in done.stdout
    assert os.path.exists(os.path.join(root, "report", "report.md"))
    for name in ("name=none", "name=standard"):
        assert os.path.exists(os.path.join(root, name, "analysis.json"))


def test_a_warm_start_is_trained_once_and_every_run_starts_from_it(tmp_path):
    from flatrob_jax.configuration import load_run_config

    sweep = load_sweep(_write_sweep(tmp_path, runs=("none", "standard")))
    sweep.warm_start = {"augment.name": "standard", "train.num_steps": 2}
    root = str(tmp_path / "study")
    logs = []
    run_sweep(sweep, root, steps=("train",), log=logs.append)
    warm = os.path.join(root, "warm_start")
    assert json.load(open(os.path.join(warm, "summary.json")))["steps"] == 2
    started = [line.split("] ")[1].split(" (")[0] for line in logs if line.startswith("[")]
    assert started == ["warm_start: warm_start", "name=none: train", "name=standard: train"]
    for name in ("name=none", "name=standard"):
        config = load_run_config(os.path.join(root, name))
        assert config.train.init_from == warm and config.train.num_steps == 4
    again = []
    run_sweep(sweep, root, steps=("train",), log=again.append)
    assert any("warm_start: trained (warm start) already" in line for line in again)
    assert sum("name=" in line and "trained already" in line for line in again) == 2


def test_a_matched_run_stops_at_its_matchs_final_training_loss(tmp_path):
    """``match.loss_of``: the run starts after the run it names and trains with
    train.stop_at_loss = that run's last logged training loss (a matched end point)."""
    from flatrob_jax.configuration import load_run_config
    from flatrob_jax.study import final_train_loss, plan

    sweep = load_sweep(_write_sweep(tmp_path, runs=("standard",)))
    sweep.runs = [{"augment.name": "none", "match.loss_of": "name=standard"}, *sweep.runs]
    root = str(tmp_path / "study")
    jobs = plan(sweep, root).jobs
    assert [j.name for j in jobs] == ["name=standard", "name=none,loss_of=name-standard"]
    assert jobs[1].depends_on == ("name=standard",) and jobs[1].match_loss_of == "name=standard"
    run_sweep(sweep, root, steps=("train",), log=lambda m: None)
    target = final_train_loss(os.path.join(root, "name=standard"))
    matched = load_run_config(os.path.join(root, "name=none,loss_of=name-standard"))
    assert matched.train.stop_at_loss == target and matched.augment.name == "none"
    sweep.runs = [{"augment.name": "none", "match.loss_of": "name=nope"}]
    with pytest.raises(ValueError, match="match.loss_of='name=nope' must name another run"):
        plan(sweep, root)
