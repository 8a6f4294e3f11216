import glob
import os

import pytest

from flatrob_jax.configuration import apply_overrides, load_config_file
from tests.helpers import REPO

CONFIGS = sorted(p for p in glob.glob(os.path.join(REPO, "configs", "*.py"))
                 if not os.path.basename(p).startswith("_"))


def test_the_expected_configs_exist():
    names = {os.path.basename(p) for p in CONFIGS}
    assert {"fashion_mnist_cnn.py", "cifar10_resnet18.py", "cifar10_wrn40_2.py",
            "cifar100_wrn40_2.py", "imagenet_resnet50.py"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
@pytest.mark.parametrize("arg", ["", ":smoke"])
def test_configs_load_locked_with_every_field(path, arg):
    config = load_config_file(path + arg)
    assert config.is_locked
    with pytest.raises(AttributeError):
        config.not_a_field = 1
    for section in ("dataset", "model", "augment", "optimizer", "train", "checkpoint"):
        assert section in config


def test_unknown_config_argument_is_an_error():
    with pytest.raises(ValueError, match="unknown config argument 'huge'"):
        load_config_file(os.path.join(REPO, "configs", "fashion_mnist_cnn.py:huge"))


def test_overrides_parse_by_field_type():
    config = load_config_file(os.path.join(REPO, "configs", "fashion_mnist_cnn.py"))
    new = apply_overrides(config, ["optimizer.learning_rate=0.3", "model.name=cnn_tiny",
                                   "train.num_steps=7", "augment.flip=False",
                                   "dataset.image_size=(28, 28, 1)"])
    assert new.optimizer.learning_rate == 0.3 and new.model.name == "cnn_tiny"
    assert new.train.num_steps == 7 and new.augment.flip is False
    assert config.optimizer.learning_rate != 0.3  # the original is untouched


def test_unknown_key_names_the_valid_fields():
    config = load_config_file(os.path.join(REPO, "configs", "fashion_mnist_cnn.py"))
    with pytest.raises(ValueError, match=r"optimizer has no field 'lr'.*learning_rate"):
        apply_overrides(config, ["optimizer.lr=0.1"])


def test_wrong_type_names_the_expected_type():
    config = load_config_file(os.path.join(REPO, "configs", "fashion_mnist_cnn.py"))
    with pytest.raises(ValueError, match=r"train.num_steps.*expects int"):
        apply_overrides(config, ["train.num_steps=many"])
