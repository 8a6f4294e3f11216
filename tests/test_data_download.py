"""dataset.download: off by default, so a missing dataset fails at once naming the path; on, the
IDX files are fetched from a mirror (here a local file:// one) and checked, and tfds is asked to
download and prepare."""

import gzip
import hashlib
import os
import time

import numpy as np
import pytest

from flatrob_jax.configuration import apply_overrides, load_config
from flatrob_jax.data import MissingDatasetError, build_source, load_arrays, sources
from tests.helpers import make_idx_dataset

FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _config(data_dir, **overrides):
    config = load_config("fashion_mnist_cnn:smoke")
    return apply_overrides(config, {"dataset.data_dir": str(data_dir), **overrides})


def _mirror(tmp_path):
    """A fake Fashion-MNIST served from a file:// URL, with its IDX_DOWNLOADS entry."""
    served = make_idx_dataset(str(tmp_path / "mirror"), n_train=40, n_test=20)
    sha = {}
    for f in FILES:
        with gzip.open(os.path.join(served, f + ".gz"), "rb") as fh:
            sha[f] = hashlib.sha256(fh.read()).hexdigest()
    return {"mirrors": ("file:///nonexistent-mirror/", f"file://{served}/"), "sha256": sha}


def test_download_is_off_by_default():
    assert load_config("fashion_mnist_cnn").dataset.download is False


def test_missing_idx_without_download_fails_fast_naming_the_path(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("download=False must not touch the network")

    monkeypatch.setattr(sources.urllib.request, "urlopen", no_network)
    missing = tmp_path / "no-data-here"
    start = time.perf_counter()
    with pytest.raises(MissingDatasetError) as e:
        build_source(_config(missing).dataset, "train", train=True)
    assert time.perf_counter() - start < 5
    message = str(e.value)
    assert str(missing) in message and "train-images-idx3-ubyte" in message
    assert "dataset.download=True" in message and "apt-get install" in message
    assert not missing.exists()


def test_missing_tfds_without_download_fails_fast_naming_the_path(tmp_path):
    config = _config(tmp_path / "tfds", **{"dataset.source": "tfds"})
    start = time.perf_counter()
    with pytest.raises(MissingDatasetError) as e:
        build_source(config.dataset, "test")
    assert time.perf_counter() - start < 30
    assert str(tmp_path / "tfds") in str(e.value) and "dataset.download=True" in str(e.value)


def test_idx_download_fetches_checks_and_loads(tmp_path, monkeypatch):
    monkeypatch.setitem(sources.IDX_DOWNLOADS, "fashion_mnist", _mirror(tmp_path))
    target = tmp_path / "downloaded"
    config = _config(target, **{"dataset.download": True})
    images, labels = load_arrays(config.dataset, "test")
    assert images.shape == (20, 28, 28, 1) and labels.shape == (20,)
    assert sorted(os.listdir(target)) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    # The second split is fetched when asked for; files already there are not fetched again.
    monkeypatch.setitem(sources.IDX_DOWNLOADS["fashion_mnist"], "mirrors", ())
    load_arrays(config.dataset, "test")
    with pytest.raises(MissingDatasetError, match="could not download train-images"):
        load_arrays(config.dataset, "train")


def test_idx_download_rejects_wrong_data_and_leaves_nothing(tmp_path, monkeypatch):
    entry = _mirror(tmp_path)
    entry["sha256"] = {f: "0" * 64 for f in FILES}
    monkeypatch.setitem(sources.IDX_DOWNLOADS, "fashion_mnist", entry)
    target = tmp_path / "downloaded"
    with pytest.raises(MissingDatasetError, match="SHA-256 of the uncompressed data"):
        load_arrays(_config(target, **{"dataset.download": True}).dataset, "test")
    assert os.listdir(target) == []


def test_idx_download_for_a_dataset_without_mirrors_names_the_ones_with(tmp_path):
    with pytest.raises(ValueError, match="available for: fashion_mnist"):
        sources.download_idx("mnist", str(tmp_path))


def test_tfds_download_is_passed_to_tfds(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    calls = []

    def fake_data_source(name, *, split, data_dir, download):
        calls.append((name, split, data_dir, download))
        return [{"image": np.zeros((28, 28, 1), np.uint8), "label": 3}] * 4

    monkeypatch.setattr(tfds, "data_source", fake_data_source)
    config = _config(tmp_path, **{"dataset.source": "tfds", "dataset.download": True})
    images, labels = load_arrays(config.dataset, "test")
    assert images.shape == (4, 28, 28, 1) and list(labels) == [3] * 4
    assert calls == [("fashion_mnist", "test[:256]", str(tmp_path), True)]
