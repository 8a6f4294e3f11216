"""The analysis hook: evaluate() on the project's tiny CNN, JSON-serialisable results."""

import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from flatrob_jax.analysis.analyses import curvature_config
from flatrob_jax.curvature import evaluate as curvature_evaluate
from flatrob_jax.curvature import measures
from flatrob_jax.models import get_model


def _eval_model():
    model = get_model("cnn_tiny", 3)
    variables = model.init(jax.random.key(0), np.zeros((1, 8, 8, 1), np.float32))
    return types.SimpleNamespace(model=model, variables=variables)


def test_evaluate_returns_json_with_uncertainties(tmp_path):
    rng = np.random.RandomState(0)
    data = (rng.rand(20, 8, 8, 1).astype(np.float32), rng.randint(0, 3, 20).astype(np.int32))
    settings = dict(
        batch_size=5,  # one microbatch per device on the 4 test devices
        lanczos_steps=30,
        smallest=True,
        trace_max_probes=20,
        trace_min_probes=5,
        trace_rel_tol=None,
        density=True,
        density_steps=30,
        density_png=str(tmp_path / "density.png"),
        sharpness=True,
        keskar_iters=2,
        adaptive_ascent=True,
        adaptive_ascent_steps=2,
        adaptive_samples=2,
        adaptive_worst=("linf_0.004", "linf_0.002"),
        adaptive_worst_iters=3,
        adaptive_worst_batch=6,
        pac_bayes=True,
        pac_bayes_samples=1,
        pac_bayes_metric="loss",  # the untrained model's error is at chance: cannot rise by 0.1
    )
    lines = []
    out = curvature_evaluate.evaluate(
        _eval_model(), data, curvature_config(), key=jax.random.key(0), log=lines.append, **settings
    )
    out = json.loads(json.dumps(out))
    assert out["num_examples"] == 20 and out["num_devices"] == jax.device_count()
    assert out["lambda_max"] > 0 and out["lambda_max_residual"] >= 0
    assert out["lambda_min"] <= out["lambda_max"]
    assert out["trace_hvps"] == 20 and out["trace_stderr"] > 0
    # tr(H) <= P * lambda_max and every eigenvalue >= lambda_min
    assert out["num_params"] * out["lambda_min"] <= out["trace"] + 4 * out["trace_stderr"]
    assert out["trace"] - 4 * out["trace_stderr"] <= out["num_params"] * out["lambda_max"]
    np.testing.assert_allclose(
        sum(v["value"] for v in out["trace_per_layer"].values()), out["trace"], rtol=1e-4
    )
    np.testing.assert_allclose(max(out["density"]["nodes"][0]), out["lambda_max"], rtol=1e-2)
    with Image.open(out["density"]["png"]) as png:
        assert png.format == "PNG"
    assert out["pac_bayes_sigma"] > 0 and out["pac_bayes_deviation"] <= 0.1
    assert np.isfinite(
        [
            out["keskar_sharpness"],
            out["adaptive_ascent"]["l2_0.05"],
            out["adaptive_average"]["gauss_0.1"],
            out["adaptive_average"]["gauss_0.1_stderr"],
        ]
    ).all()
    # APGD (l2 and normalized logits: test_curvature_sharpness), one result per setting,
    # named by norm and radius; 18 of the 20 examples used
    # (3 batches of 6); every setting from the same start, so the larger l-inf ball gives more.
    worst = out["adaptive_worst"]
    assert sorted(worst) == ["linf_0.002", "linf_0.004"]
    assert out["adaptive_worst_num_examples"] == 18
    assert 0 < worst["linf_0.002"] < worst["linf_0.004"]
    # Where the measures are taken: the gradient norm, against jax.grad of the plain loss.
    variables = _eval_model().variables
    model = _eval_model().model

    def loss(p):
        logits = model.apply({**variables, "params": p}, data[0], train=False)
        return -jnp.mean(jax.nn.log_softmax(logits)[np.arange(20), data[1]])

    grad = jax.grad(loss)(variables["params"])
    expected = float(jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree_util.tree_leaves(grad))))
    np.testing.assert_allclose(out["grad_norm"], expected, rtol=1e-4)
    assert out["lambda_min_residual"] >= 0
    assert any("lambda_max" in line for line in lines) and any(
        "HVPs/s" in line and "ETA" in line for line in lines
    )


def test_evaluate_rejects_bad_settings():
    data = (np.zeros((2, 8, 8, 1), np.float32), np.zeros(2, np.int32))
    config = curvature_config()
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="trace_method='exact'"):
        curvature_evaluate.evaluate(_eval_model(), data, config, key=key, trace_method="exact")
    with pytest.raises(ValueError, match="pac_bayes_metric='accuracy'"):
        curvature_evaluate.evaluate(
            _eval_model(), data, config, key=key, pac_bayes_metric="accuracy"
        )
    with pytest.raises(ValueError, match="num_devices must be None"):
        curvature_evaluate.evaluate(_eval_model(), data, config, key=key, num_devices=0)
    for bad in ("linf", "l1_0.1", "l2_-1", "l2_0.5_norm", "linf_x", "l2_1e999"):
        with pytest.raises(ValueError, match=f"adaptive_worst setting '{bad}'; allowed: '<l2"):
            curvature_evaluate.evaluate(_eval_model(), data, config, key=key, adaptive_worst=(bad,))
    with pytest.raises(ValueError, match="names one setting twice"):
        curvature_evaluate.evaluate(
            _eval_model(), data, config, key=key, adaptive_worst=("l2_0.5", "l2_0.50")
        )
    with pytest.raises(ValueError, match="adaptive_worst_l2_geometry='ball'"):
        curvature_evaluate.evaluate(
            _eval_model(), data, config, key=key, adaptive_worst_l2_geometry="ball"
        )
    with pytest.raises(ValueError, match=r"unknown curvature settings \['lanczos_stpes'\]"):
        curvature_evaluate.evaluate(_eval_model(), data, config, key=key, lanczos_stpes=3)
    partial = {k: v for k, v in config.items() if k not in ("top_k", "confidence")}
    with pytest.raises(ValueError, match=r"\['top_k', 'confidence'\] missing.*curvature_config"):
        curvature_evaluate.evaluate(_eval_model(), data, partial, key=key)


def test_the_config_holds_every_setting_once_and_nothing_else():
    """The config is where each setting's default lives: exactly the objective's settings and
    every registered measure's switch and settings."""
    names = curvature_evaluate.setting_names()
    assert len(set(names)) == len(names)
    assert sorted(curvature_config().keys()) == sorted(names)
    indices = [m.key_index for m in measures.measures()]
    assert indices == [0, 1, 2, 3, 4, 5, 6]  # the fold_in of each measure, as it has always been
    assert [m.name for m in measures.measures()] == [
        "lanczos",
        "trace",
        "density",
        "sharpness",
        "pac_bayes",
        "adaptive_worst",
        "adaptive_ascent",
    ]
    with pytest.raises(ValueError, match="key_index=1 is 'trace'"):
        measures.register(measures.Measure("copy", measures.trace, key_index=1))
    with pytest.raises(ValueError, match=r"settings \['top_k'\] are 'lanczos'"):
        measures.register(measures.Measure("k", measures.trace, key_index=9, settings=("top_k",)))


@pytest.mark.slow
def test_pac_bayes_on_a_saturated_error_is_reported_not_raised():
    rng = np.random.RandomState(0)
    data = (rng.rand(6, 8, 8, 1).astype(np.float32), rng.randint(0, 3, 6).astype(np.int32))
    out = curvature_evaluate.evaluate(
        _eval_model(),
        data,
        curvature_config(),
        key=jax.random.key(0),
        log=lambda _: None,
        lanczos_steps=2,
        trace=False,
        pac_bayes=True,
        pac_bayes_samples=1,
        pac_bayes_target=0.9,
    )
    assert out["pac_bayes_sigma"] is None and "target=0.9" in out["pac_bayes_failure"]


def test_the_gradient_at_the_weights_is_computed_once_and_reused_unchanged():
    """The end point's gradient norm, Keskar's and the fast ascent's first point ask for
    (L, grad L) at the weights: computed once, the same numbers as computing it again."""
    import dataclasses

    from flatrob_jax import curvature
    from flatrob_jax.distributed import make_mesh

    rng = np.random.RandomState(1)
    data = (rng.rand(12, 8, 8, 1).astype(np.float32), rng.randint(0, 3, 12).astype(np.int32))
    view = _eval_model()
    obj = curvature.from_flax(view.model, view.variables, *data, batch_size=6, mesh=make_mesh(1))
    calls = []

    def counted(p):
        calls.append(1)
        return obj.value_and_grad(p)

    reusing = curvature_evaluate.reusing_gradient_at_params(
        dataclasses.replace(obj, value_and_grad=counted)
    )
    assert len(calls) == 1
    copy = jax.tree_util.tree_map(lambda x: x + 0.0, obj.params)
    again = reusing.value_and_grad(copy)
    assert len(calls) == 1
    fresh = obj.value_and_grad(obj.params)
    for a, b in zip(jax.tree_util.tree_leaves(again), jax.tree_util.tree_leaves(fresh)):
        np.testing.assert_array_equal(a, b)
    reusing.value_and_grad(jax.tree_util.tree_map(lambda x: x + 1e-3, obj.params))
    assert len(calls) == 2
    keskar = curvature.keskar_sharpness(reusing.value_and_grad, obj.params, max_iters=3)
    assert len(calls) == 1 + keskar.num_evaluations  # its first point was reused
    plain = curvature.keskar_sharpness(obj.value_and_grad, obj.params, max_iters=3)
    assert keskar.value == plain.value
