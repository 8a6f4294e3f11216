"""Released -C loaders (tfds mock data, tiny .npy fixtures), metrics and evaluate()."""

import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flatrob_jax.corruptions import datasets, metrics
from flatrob_jax.corruptions import evaluate as ev
from flatrob_jax.corruptions.severity import BENCHMARK, EXTRA


def test_tfds_config_names():
    assert (
        datasets.tfds_config("cifar10_corrupted", "glass_blur", 3)
        == "cifar10_corrupted/frosted_glass_blur_3"
    )
    assert (
        datasets.tfds_config("cifar10_corrupted", "elastic_transform", 1)
        == "cifar10_corrupted/elastic_1"
    )
    assert (
        datasets.tfds_config("imagenet2012_corrupted", "glass_blur", 5)
        == "imagenet2012_corrupted/glass_blur_5"
    )
    with pytest.raises(ValueError, match="cifar10_corrupted"):
        datasets.tfds_config("cifar100_corrupted", "fog", 1)


@pytest.mark.parametrize(
    "dataset,shape", [("cifar10_corrupted", (32, 32, 3)), ("imagenet2012_corrupted", (224, 224, 3))]
)
def test_tfds_loaders_under_mock_data(dataset, shape):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=6):
        x, y = datasets.load_tfds(dataset, "glass_blur", 2, num_examples=4)
    assert x.shape == (4,) + shape and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert y.shape == (4,) and y.dtype == np.int32


def _npy_fixture(tmp_path, n=3):
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, (5 * n, 32, 32, 3)).astype(np.uint8)
    for s in range(5):  # severity s+1 images are filled with value s+1 in pixel (0, 0, 0)
        images[s * n : (s + 1) * n, 0, 0, 0] = s + 1
    labels = np.tile(np.arange(n), 5).astype(np.uint8)
    np.save(tmp_path / "fog.npy", images)
    np.save(tmp_path / "labels.npy", labels)
    return images


def test_npy_loader_picks_the_severity_block(tmp_path):
    images = _npy_fixture(tmp_path)
    for s in range(1, 6):
        x, y = datasets.load_npy_dir(str(tmp_path), "fog", s)
        assert x.shape == (3, 32, 32, 3)
        np.testing.assert_allclose(x, images[(s - 1) * 3 : s * 3] / 255.0)
        np.testing.assert_array_equal(y, [0, 1, 2])
    x, _ = datasets.load_npy_dir(str(tmp_path), "fog", 4, num_examples=2)
    assert x.shape[0] == 2 and np.allclose(x[:, 0, 0, 0], 4 / 255.0)


def test_npy_loader_errors(tmp_path):
    _npy_fixture(tmp_path)
    with pytest.raises(FileNotFoundError, match="snow.npy not found.*fog.npy"):
        datasets.load_npy_dir(str(tmp_path), "snow", 1)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        datasets.load_npy_dir(str(tmp_path / "missing"), "fog", 1)
    with pytest.raises(ValueError, match="severity"):
        datasets.load_npy_dir(str(tmp_path), "fog", 6)


def test_mce_and_relative_mce_definitions():
    # a model exactly as bad as AlexNet everywhere: mCE = 1, relative mCE = 1
    errors = {k: [metrics.ALEXNET_ERRORS[k]] * 5 for k in BENCHMARK}
    r = metrics.summarize(errors, 1000, metrics.ALEXNET_CLEAN_ERROR, normalize_by_alexnet=True)
    assert r["mce"] == pytest.approx(1.0) and r["relative_mce"] == pytest.approx(1.0)
    # halve every corruption error: mCE halves
    half = {k: [v / 2 for v in e] for k, e in errors.items()}
    assert metrics.summarize(half, 1000, normalize_by_alexnet=True)["mce"] == pytest.approx(0.5)
    # CIFAR mean corruption error is the plain average over corruptions and severities
    r = metrics.summarize({"fog": [0.1, 0.2, 0.3, 0.4, 0.5], "snow": [0.5] * 5}, 100)
    assert r["mean_corruption_error"] == pytest.approx(0.4)
    assert r["mean_corruption_error_stderr"] > 0
    assert metrics.summarize({"fog": [0.1] * 5}, 100, normalize_by_alexnet=True)["mce"] is None


def _tiny_model():
    """A fixed linear classifier on channel means (2 classes)."""

    def apply(x):
        m = x.mean(axis=(1, 2, 3))
        return jnp.stack([0.5 - m, m - 0.5], axis=-1)

    return apply


def test_evaluate_on_the_fly_writes_json_and_heatmap(tmp_path):
    rng = np.random.RandomState(0)
    x = rng.rand(20, 32, 32, 3).astype(np.float32) * 0.6 + 0.2 * rng.randint(0, 2, (20, 1, 1, 1))
    y = (x.mean(axis=(1, 2, 3)) > 0.5).astype(np.int32)
    settings = dict(corruptions=("contrast", "gaussian_noise"), severities=(1, 5), batch_size=8)
    logs = []
    r = ev.evaluate(
        _tiny_model(),
        (x, y),
        key=jax.random.key(0),
        log=logs.append,
        out_dir=str(tmp_path),
        **settings,
    )
    json.dumps(r)
    assert r["clean_error"] == 0.0 and r["resolution"] == "cifar"
    assert set(r["errors"]) == {"contrast", "gaussian_noise"} and len(r["errors"]["contrast"]) == 2
    assert os.path.getsize(r["heatmap_png"]) > 1000
    assert any("images/s" in line and "ETA" in line for line in logs)
    # same key, same numbers; batch size does not matter (per-example keys)
    settings["batch_size"] = 20
    r2 = ev.evaluate(_tiny_model(), (x, y), key=jax.random.key(0), log=lambda s: None, **settings)
    assert r2["errors"] == r["errors"]


def test_evaluate_released_npy(tmp_path):
    _npy_fixture(tmp_path)
    settings = dict(source="npy", data_dir=str(tmp_path), corruptions=("fog",))
    r = ev.evaluate(_tiny_model(), None, key=jax.random.key(0), log=lambda s: None, **settings)
    assert len(r["errors"]["fog"]) == 5 and r["num_examples"] == 3 and "clean_error" not in r
    settings["source"] = "bogus"
    with pytest.raises(ValueError, match="on_the_fly"):
        ev.evaluate(_tiny_model(), None, key=jax.random.key(0), **settings)


def _linear_apply(params, x):
    m = x.mean(axis=(1, 2, 3))
    return m[:, None] * params["w"] + params["b"]


def _data(n=20):
    rng = np.random.RandomState(0)
    x = rng.rand(n, 32, 32, 3).astype(np.float32) * 0.6 + 0.2 * rng.randint(0, 2, (n, 1, 1, 1))
    return x, (x.mean(axis=(1, 2, 3)) > 0.5).astype(np.int32)


def test_corrupted_sets_are_the_corrupt_outputs_and_evaluate_reuses_them():
    """corrupted_sets: cell (name, s) = corrupt(fold_in(fold_in(key, index), s), images)
    whatever the batch size; evaluate on them == evaluate corrupting on the fly, for
    float32 and uint8 storage."""
    from flatrob_jax.corruptions import ALL, corrupt_jit

    x, y = _data()
    key = jax.random.key(3)
    settings = dict(corruptions=("contrast", "gaussian_noise"), severities=(2, 5), batch_size=8)
    sets = ev.corrupted_sets(x, key, **settings)
    assert set(sets) == {(n, s) for n in ("contrast", "gaussian_noise") for s in (2, 5)}
    cell = jax.random.fold_in(jax.random.fold_in(key, ALL.index("gaussian_noise")), 5)
    np.testing.assert_allclose(
        sets[("gaussian_noise", 5)], corrupt_jit(cell, x, "gaussian_noise", 5), atol=1e-6
    )
    model = jax.tree_util.Partial(
        _linear_apply, {"w": jnp.array([-1.0, 1.0]), "b": jnp.array([0.5, -0.5])}
    )
    quiet = dict(key=key, log=lambda s: None)
    for dtype in ("float32", "uint8"):
        settings["corrupted_dtype"] = dtype
        sets = ev.corrupted_sets(x, key, **settings)
        assert sets[("contrast", 2)].dtype == np.dtype(dtype)
        if dtype == "uint8":  # round(255 x) of the float32 corruption
            np.testing.assert_array_equal(
                sets[("gaussian_noise", 5)],
                np.clip(
                    np.round(np.asarray(corrupt_jit(cell, x, "gaussian_noise", 5)) * 255), 0, 255
                ).astype(np.uint8),
            )
        on_the_fly = ev.evaluate(model, (x, y), **settings, **quiet)
        reused = ev.evaluate(model, (x, y), corrupted=sets, **settings, **quiet)
        assert reused["errors"] == on_the_fly["errors"]
        assert 0 < np.mean(on_the_fly["errors"]["gaussian_noise"]) < 1
    with pytest.raises(ValueError, match="lack"):
        ev.evaluate(model, (x[:10], y[:10]), corrupted=sets, **settings, **quiet)
    settings["corrupted_dtype"] = "int8"
    with pytest.raises(ValueError, match="uint8"):
        ev.corrupted_sets(x, key, **settings)


_traced_linear_apply = chex.assert_max_traces(_linear_apply, n=1)


def test_evaluate_compiles_the_model_once_for_all_cells_and_weights():
    """A Partial model's weights are arguments: one trace of the model for the clean error,
    every cell and new weights (the corruption programs are separate, per cell)."""
    x, y = _data()
    settings = dict(corruptions=("contrast",), severities=(1, 3), batch_size=8)
    quiet = dict(key=jax.random.key(0), log=lambda s: None)
    chex.clear_trace_counter()
    params = {"w": jnp.array([-1.0, 1.0]), "b": jnp.array([0.5, -0.5])}
    ev.evaluate(jax.tree_util.Partial(_traced_linear_apply, params), (x, y), **settings, **quiet)
    flipped = {"w": jnp.array([1.0, -1.0]), "b": jnp.array([-0.5, 0.5])}
    r = ev.evaluate(
        jax.tree_util.Partial(_traced_linear_apply, flipped), (x, y), **settings, **quiet
    )
    assert r["clean_error"] == 1.0  # flipped weights: every prediction is wrong


@pytest.mark.parametrize("corrupted", [False, True], ids=["on_the_fly", "stored"])
def test_one_and_four_devices_give_the_same_numbers(corrupted):
    x, y = _data(22)
    key = jax.random.key(1)
    settings = dict(
        corruptions=("gaussian_noise", "contrast"),
        severities=(3,),
        batch_size=6,
        corrupted_dtype="uint8",
    )
    model = jax.tree_util.Partial(
        _linear_apply, {"w": jnp.array([-1.0, 1.0]), "b": jnp.array([0.5, -0.5])}
    )
    out = {}
    for devices in (1, 4):
        sets = ev.corrupted_sets(x, key, num_devices=devices, **settings) if corrupted else None
        out[devices] = ev.evaluate(
            model,
            (x, y),
            key=key,
            log=lambda s: None,
            corrupted=sets,
            num_devices=devices,
            **settings,
        )
    assert out[1]["errors"] == out[4]["errors"] and out[1]["clean_error"] == out[4]["clean_error"]
    assert out[1]["mean_corruption_error"] == out[4]["mean_corruption_error"]


def test_settings_use_the_config_vocabulary():
    x, y = _data(4)
    quiet = dict(key=jax.random.key(0), log=lambda s: None)
    assert ev.parse_corruptions(("extra", "fog", "spatter")) == list(EXTRA) + ["fog"]
    with pytest.raises(ValueError, match="'fog,snow'.*tuple"):
        ev.parse_corruptions("fog,snow")
    with pytest.raises(ValueError, match="num_examples must be None"):
        ev.evaluate(_tiny_model(), (x, y), num_examples=0, **quiet)
    with pytest.raises(ValueError, match="normalize_by_alexnet"):
        ev.evaluate(_tiny_model(), (x, y), normalize_by_alexnet="auto", **quiet)
    with pytest.raises(ValueError, match="severit"):
        ev.evaluate(_tiny_model(), (x, y), severities=(6,), **quiet)


def test_a_missing_released_set_fails_fast_naming_where_it_looked(tmp_path):
    """No download from inside an analysis: the error names the data_dir and how to prepare."""
    from flatrob_jax.corruptions import datasets

    with pytest.raises(
        FileNotFoundError, match=r"cifar10_corrupted/fog_1 is not prepared in data_dir"
    ):
        datasets.load_tfds("cifar10_corrupted", "fog", 1, data_dir=str(tmp_path))
