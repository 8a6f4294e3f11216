import os

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from flatrob_jax.data import (
    ArraySource,
    EvalBatches,
    MissingDatasetError,
    TrainBatches,
    build_source,
    get_info,
    load_arrays,
    read_idx,
)
from tests.helpers import make_idx_dataset, write_idx

REAL_FASHION = "/usr/share/datasets/fashion-mnist"


def _dataset_cfg(**kw):
    base = dict(
        name="fashion_mnist",
        source="idx",
        data_dir=REAL_FASHION,
        train_split="train",
        eval_split="test",
        image_size=(28, 28, 1),
        mean=(0.286,),
        std=(0.353,),
        num_train_examples=None,
        num_eval_examples=None,
    )
    base.update(kw)
    return ml_collections.ConfigDict(base)


def test_idx_round_trip(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (5, 3, 4)).astype(np.uint8)
    write_idx(str(tmp_path / "x"), array)
    np.testing.assert_array_equal(read_idx(str(tmp_path / "x")), array)


@pytest.mark.skipif(not os.path.isdir(REAL_FASHION), reason="apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist_from_debian_package():
    images, labels = load_arrays(_dataset_cfg(), "test", num_examples=1000)
    assert images.shape == (1000, 28, 28, 1) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert set(np.unique(labels)) == set(range(10))
    # The known statistics of Fashion-MNIST.
    assert abs(images.mean() - 0.286) < 0.01


def test_missing_dataset_says_how_to_get_it(tmp_path):
    with pytest.raises(MissingDatasetError, match="apt-get install dataset-fashion-mnist"):
        build_source(_dataset_cfg(data_dir=str(tmp_path / "nowhere")), "train")


def test_unknown_dataset_and_source_name_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar11'.*cifar10"):
        get_info("cifar11")
    with pytest.raises(ValueError, match=r"unknown data source 'csv'.*idx, tfds"):
        build_source(_dataset_cfg(source="csv"), "train")
    with pytest.raises(ValueError, match=r"cannot be read from source 'idx'"):
        build_source(_dataset_cfg(name="cifar10"), "train")


def _source(n):
    images = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1).repeat(2, 1)
    return ArraySource(images, np.arange(n) % 10)


def test_train_batches_are_a_pure_function_of_seed_and_step():
    a, b = TrainBatches(_source(100), 16, seed=3), TrainBatches(_source(100), 16, seed=3)
    np.testing.assert_array_equal(a.batch(11)["image"], b.batch(11)["image"])
    assert a.steps_per_epoch == 6
    # One epoch visits distinct examples; the next epoch is a different permutation.
    epoch0 = np.concatenate([a.indices(s) for s in range(6)])
    assert len(set(epoch0.tolist())) == 96
    assert not np.array_equal(a.indices(0), a.indices(6))
    # Resuming the iterator at step 7 gives the same batches as reading them directly.
    resumed = list(a.iterate(7, 9))
    np.testing.assert_array_equal(resumed[0]["image"], a.batch(7)["image"])


def test_processes_split_the_global_batch():
    full = TrainBatches(_source(100), 16, seed=1)
    parts = [
        TrainBatches(_source(100), 16, seed=1, process_index=p, process_count=4) for p in range(4)
    ]
    for step in (0, 5, 13):
        np.testing.assert_array_equal(
            np.concatenate([p.indices(step) for p in parts]), full.indices(step)
        )


@pytest.mark.parametrize("n,batch,processes", [(10, 4, 1), (100, 32, 2), (64, 16, 4)])
def test_eval_batches_count_every_example_once(n, batch, processes):
    seen = []
    for p in range(processes):
        for b in EvalBatches(_source(n), batch, process_index=p, process_count=processes):
            assert b["image"].shape[0] == batch // processes
            seen.extend(b["image"][b["mask"] > 0, 0, 0, 0].tolist())
    assert sorted(seen) == list(range(n))


def test_tfds_cifar10_under_mock_data():
    cfg = _dataset_cfg(
        name="cifar10", source="tfds", data_dir="", image_size=(32, 32, 3), num_train_examples=24
    )
    with tfds.testing.mock_data(num_examples=40):
        train = build_source(cfg, "train", train=True)
        test = build_source(cfg, "test")
    assert len(train) == 24 and len(test) == 40
    images, labels = train.gather(np.arange(5))
    assert images.shape == (5, 32, 32, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int32 and labels.max() < 10
    batches = list(EvalBatches(test, 16))
    assert sum(b["mask"].sum() for b in batches) == 40


def test_tfds_cifar10_corrupted_under_mock_data():
    cfg = _dataset_cfg(
        name="cifar10_corrupted/gaussian_noise_3",
        source="tfds",
        data_dir="",
        image_size=(32, 32, 3),
    )
    with tfds.testing.mock_data(num_examples=12):
        images, labels = load_arrays(cfg, "test")
    assert images.shape == (12, 32, 32, 3) and labels.shape == (12,)
    assert 0.0 <= images.min() <= images.max() <= 1.0


def test_tfds_missing_dataset_says_how_to_get_it(tmp_path):
    cfg = _dataset_cfg(name="cifar10", source="tfds", data_dir=str(tmp_path))
    with pytest.raises(MissingDatasetError, match="download_and_prepare"):
        build_source(cfg, "train")


def test_fake_idx_fixture_is_readable(tmp_path):
    make_idx_dataset(str(tmp_path), n_train=50, n_test=20)
    train = build_source(_dataset_cfg(data_dir=str(tmp_path)), "train")
    assert len(train) == 50 and train.images.shape[1:] == (28, 28, 1)
