"""The analysis registry: one contract test over every registered analysis, the headline
declarations the report reads, and the ``analyze`` command line."""

import json
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from flatrob_jax import fileio
from flatrob_jax.analysis import analyze_run, default_config, registry
from flatrob_jax.analysis.results import flatten_results
from flatrob_jax.runs import load_for_eval
from flatrob_jax.training.trainer import train_and_evaluate
from tests.helpers import REPO, make_idx_dataset, tiny_config

# Per-analysis settings that keep each one to seconds on the tiny model, with every optional
# measure switched on (so every declared headline metric must appear).
TINY = {
    "clean": {"batch_size": 16},
    "curvature": {
        "lanczos_steps": 6,
        "trace_max_probes": 4,
        "trace_min_probes": 2,
        "batch_size": 16,
        "sharpness": True,
        "keskar_iters": 2,
        "adaptive_ascent": True,
        "adaptive_ascent_steps": 2,
        "adaptive_samples": 2,
        "adaptive_worst": ("linf_0.002",),
        "adaptive_worst_iters": 2,
        "adaptive_worst_batch": 8,
        "augment_draws": 2,
        "pac_bayes": True,
        "pac_bayes_samples": 2,
        "pac_bayes_metric": "loss",
    },
    "corruptions": {
        "corruptions": ("gaussian_noise", "contrast"),
        "severities": (1, 5),
        "batch_size": 16,
        "normalize_by_alexnet": True,
    },
    # A large eps: APGD-CE fools every example, so the rest of the cascade has nothing to do.
    "reparam_audit": {
        "batch_size": 16,
        "lanczos_steps": 6,
        "trace_probes": 2,
        "keskar_iters": 2,
        "adaptive_ascent_steps": 2,
        "adaptive_samples": 2,
        "probe_examples": 8,
    },
    "attacks": {
        "norms": ("Linf",),
        "pgd_steps": 2,
        "autoattack": True,
        "linf_eps": 0.5,
        "extra_linf_eps": (2 / 255,),
        "batch_size": 16,
    },
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("registry")
    data = make_idx_dataset(str(tmp / "data"), n_train=64, n_test=32)
    workdir = str(tmp / "run")
    train_and_evaluate(tiny_config(data, **{"train.num_steps": 2}), workdir)
    return workdir


def _inputs(workdir, tmp_path):
    from flatrob_jax.data import load_arrays

    run = load_for_eval(workdir)
    test = load_arrays(run.config.dataset, "test", 16)
    train = load_arrays(run.config.dataset, "train", 16)
    return registry.Inputs(
        model=run, test=test, train=train, key=jax.random.key(0), out_dir=str(tmp_path), cache={}
    )


def _settings(entry):
    cfg = entry.default_config() if entry.default_config else ml_collections.ConfigDict()
    cfg.update(TINY.get(entry.section, {}))
    return cfg.to_dict()


@pytest.mark.parametrize("name", registry.names())
def test_every_registered_analysis_honours_the_contract(name, trained, tmp_path):
    entry = registry.get(name)
    assert entry.data in registry.DATA
    inputs = _inputs(trained, tmp_path)
    logs = []
    out = entry.run(inputs, log=logs.append, **_settings(entry))
    assert isinstance(out, dict) and out
    assert logs, "an analysis reports progress through log"
    json.loads(fileio.dumps_json(out))  # strict JSON through the library's one sanitiser
    # Every declared headline pattern names at least one metric the analysis produces.
    metrics = [f"{entry.where}/{m}" for m in flatten_results(out)]
    for role in ("flatness", "robustness", "clean", "covariates", "endpoint"):
        for pattern in getattr(entry, role):
            tmp = registry.Analysis(
                entry.name, entry.run, entry.data, path=entry.where, **{role: (pattern,)}
            )
            found = [m for m in metrics if registry._matches(m, tmp.where, (pattern,))]
            assert found, f"{name}: declared {role} pattern {pattern!r} matches none of {metrics}"
    # Headline values are finite numbers, or missing with a '<name>_note' saying why (mCE
    # needs all 15 corruptions at 5 severities).
    flat = dict(flatten_results(out))
    heads = registry.headline_metrics(metrics)
    clean = [heads.clean] if heads.clean else []
    for m in heads.flatness + heads.robustness + clean + heads.covariates + heads.endpoint:
        leaf = m[len(entry.where) + 1 :]
        value = flat[leaf][0]
        note = _lookup(out, leaf + "_note")
        assert np.isfinite(value) or note, (m, value)


def _lookup(tree, path):
    for part in path.split("/"):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def test_headline_metrics_come_from_the_declarations():
    metrics = [
        "clean/error",
        "clean/num_examples",
        "curvature/clean/lambda_max",
        "curvature/clean/lambda_max_residual",
        "curvature/augmented/trace",
        "curvature/augmented/trace_stderr",
        "corruptions/mce",
        "corruptions/mean_corruption_error",
        "corruptions/errors/fog/0",
        "attacks/Linf_8over255/pgd/error",
        "attacks/Linf_8over255/pgd/accuracy",
        "attacks/L2_0.5/autoattack/error",
        "attacks/clean/error",
    ]
    heads = registry.headline_metrics(metrics)
    assert heads.flatness == ["curvature/clean/lambda_max", "curvature/augmented/trace"]
    assert heads.robustness == [
        "corruptions/mce",
        "corruptions/mean_corruption_error",
        "attacks/Linf_8over255/pgd/error",
        "attacks/L2_0.5/autoattack/error",
    ]
    assert heads.clean == "clean/error"


def test_costly_analyses_are_opt_in():
    assert "reparam_audit" in registry.names()
    assert "reparam_audit" not in default_config().measures
    assert default_config().measures == (
        "clean",
        "curvature",
        "curvature_augmented",
        "corruptions",
        "attacks",
    )


def test_registry_errors_name_the_bad_value_and_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown analysis 'hessian'.*clean, curvature"):
        registry.get("hessian")
    with pytest.raises(TypeError, match="tuple of names"):
        registry.check_measures("clean,curvature")
    with pytest.raises(ValueError, match="already registered"):
        registry.register(registry.get("clean"))


def test_a_registered_analysis_runs_from_the_config(trained, tmp_path):
    """Adding an analysis is one register() call; analysis.measures then selects it."""

    def loss_gap(inputs, *, log):
        log("measuring")
        return {"gap": float(inputs.test[0].mean() - inputs.train[0].mean())}

    name = "test_mean_gap"
    if name not in registry.names():
        registry.register(registry.Analysis(name, loss_gap, data="test", robustness=("gap",)))
        registry.register(
            registry.Analysis(name + "_train", lambda i, *, log: {"n": 1}, data="train")
        )
    try:
        cfg = default_config()
        cfg.measures = (name, name + "_train")
        cfg.num_test_examples = 8
        cfg.num_train_examples = 8
        results = analyze_run(trained, cfg, log=lambda s: None)
        assert np.isfinite(results[name]["gap"])
        stored = json.load(open(os.path.join(trained, "analysis.json")))
        assert stored["measures"] == [name, name + "_train"]
    finally:
        registry._REGISTRY.pop(name, None)
        registry._REGISTRY.pop(name + "_train", None)


@pytest.mark.slow
def test_analyze_command_line(trained):
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    cmd = [
        sys.executable,
        "-m",
        "flatrob_jax.analyze",
        "--workdir",
        trained,
        "--config.analysis.measures=('clean',)",
        "--config.analysis.num_test_examples=16",
        "--config.analysis.clean.batch_size=8",
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    stored = json.load(open(os.path.join(trained, "analysis.json")))
    assert stored["measures"] == ["clean"] and stored["clean"]["num_examples"] == 16
    assert stored["analysis_config"]["clean"]["batch_size"] == 8
    bad = subprocess.run(
        cmd[:5] + ["--config.analysis.nope=1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert bad.returncode != 0
    assert "unknown config key 'analysis.nope'" in bad.stderr


def test_augmented_curvature_averages_k_draws_and_one_draw_is_as_before(trained, tmp_path):
    """augment_draws=1 is the one augmented copy the analysis always measured (same images,
    same result as evaluate on it); k draws concatenate k copies (draw 0 first), so the
    measured loss is the mean of the draws' losses."""
    from flatrob_jax.analysis import analyses
    from flatrob_jax.curvature import evaluate as curvature_evaluate

    entry = registry.get("curvature_augmented")
    inputs = _inputs(trained, tmp_path)
    config, (images, labels) = inputs.model.config, inputs.train
    key = jax.random.fold_in(inputs.key, 2)
    before = analyses.augmented_copy(config, images, labels, key)
    one = analyses.augmented_draws(config, images, labels, key, 1)
    two = analyses.augmented_draws(config, images, labels, key, 2)
    for a, b in zip(one, before):
        np.testing.assert_array_equal(a, b)
    n = images.shape[0]
    assert two[0].shape[0] == 2 * n
    np.testing.assert_array_equal(two[0][:n], before[0])
    assert not np.allclose(two[0][n:], before[0])  # a second, different draw

    settings = dict(_settings(entry), sharpness=False, pac_bayes=False, trace=False)
    settings["lanczos_steps"] = 3

    def measure(draws):
        out = entry.run(inputs, log=lambda _: None, **dict(settings, augment_draws=draws))
        out.pop("seconds")
        return out

    direct = curvature_evaluate.evaluate(
        inputs.model,
        before,
        settings,
        key=jax.random.fold_in(inputs.key, 1),
        log=lambda _: None,
    )
    direct.pop("seconds")
    assert measure(1) == direct
    second = curvature_evaluate.evaluate(
        inputs.model,
        (two[0][n:], two[1][n:]),
        settings,
        key=jax.random.fold_in(inputs.key, 1),
        log=lambda _: None,
    )
    averaged = measure(2)
    assert averaged["num_examples"] == 2 * n
    np.testing.assert_allclose(averaged["loss"], (direct["loss"] + second["loss"]) / 2, rtol=1e-5)
    with pytest.raises(ValueError, match="augment_draws=0"):
        measure(0)
