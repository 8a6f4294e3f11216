import ast
import glob
import os

import pytest

from flatrob_jax import configuration
from flatrob_jax.configuration import (
    apply_overrides,
    config_from_json,
    config_names,
    load_config,
    parse_arg,
)
from flatrob_jax.data import get_info
from tests.helpers import REPO

NAMES = config_names()
PACKAGE_DIR = os.path.join(REPO, "flatrob_jax", "configs")


def _flat(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _differences(a, b) -> set:
    fa, fb = _flat(a.to_dict()), _flat(b.to_dict())
    return {k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k)}


def test_the_expected_configs_exist():
    assert {
        "fashion_mnist_cnn",
        "cifar10_resnet18",
        "cifar10_wrn40_2",
        "cifar100_wrn40_2",
        "imagenet_resnet50",
    } <= set(NAMES)
    assert "common" not in NAMES
    assert "fashion_mnist_augmentations" in config_names("sweeps")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("arg", ["", ":smoke"])
def test_configs_load_locked_with_every_field(name, arg):
    config = load_config(name + arg)
    assert config.is_locked
    with pytest.raises(AttributeError):
        config.not_a_field = 1
    for section in ("dataset", "model", "augment", "optimizer", "train", "checkpoint", "analysis"):
        assert section in config


@pytest.mark.parametrize("name", NAMES)
def test_a_name_and_a_path_give_the_same_config(name):
    by_name = load_config(f"{name}:smoke")
    by_path = load_config(os.path.join(REPO, "configs", f"{name}.py:smoke"))
    assert by_name.to_dict() == by_path.to_dict()


@pytest.mark.parametrize("name", NAMES)
def test_dataset_shape_and_normalization_come_from_the_catalog(name):
    config = load_config(name)
    info = get_info(config.dataset.name)
    assert config.dataset.image_size == info.image_shape
    assert config.dataset.mean == info.mean and config.dataset.std == info.std


def test_experiment_files_state_only_their_differences():
    wrn, r18 = load_config("cifar10_wrn40_2"), load_config("cifar10_resnet18")
    assert _differences(wrn, r18) == {"model.name", "train.num_epochs"}
    c100 = load_config("cifar100_wrn40_2")
    assert _differences(wrn, c100) == {"dataset.name", "dataset.mean", "dataset.std"}


def test_smoke_and_seed_arguments():
    config = load_config("fashion_mnist_cnn:smoke,seed=3")
    assert config.seed == 3 and config.train.num_steps == 4
    assert config.dataset.num_train_examples == 512
    full = load_config("fashion_mnist_cnn")
    assert full.seed == 0 and full.train.num_steps is None
    assert full.dataset.num_train_examples is None and full.num_devices is None


def test_unknown_config_argument_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown config argument 'huge'.*smoke=False, seed=0"):
        load_config(os.path.join(REPO, "configs", "fashion_mnist_cnn.py:huge"))


def test_parse_arg_types_values_like_the_defaults():
    arg = parse_arg(
        "smoke,seed=2,lr=0.5,name=x,size=224", smoke=False, seed=0, lr=0.1, name="a", size=None
    )
    assert arg.smoke is True and arg.seed == 2 and arg.lr == 0.5 and arg.name == "x"
    assert arg.size == 224  # a None default takes a Python literal
    assert parse_arg(None, smoke=False).smoke is False
    assert parse_arg("smoke=no", smoke=True).smoke is False
    with pytest.raises(ValueError, match=r"seed='x': expected int") as e:
        parse_arg("seed=x", seed=0)
    assert e.value.__cause__ is not None
    with pytest.raises(ValueError, match=r"'seed' needs a value"):
        parse_arg("seed", seed=0)


def test_unknown_name_lists_the_config_names():
    with pytest.raises(FileNotFoundError, match=r"no config named 'cifar11'.*cifar10_wrn40_2"):
        load_config("cifar11")
    with pytest.raises(FileNotFoundError, match=r"config file .*nowhere.py"):
        load_config("nowhere.py")


def test_overrides_parse_by_field_type():
    config = load_config("fashion_mnist_cnn")
    new = apply_overrides(
        config,
        [
            "optimizer.learning_rate=0.3",
            "model.name=cnn_tiny",
            "train.num_steps=7",
            "augment.flip=False",
            "dataset.image_size=(28, 28, 1)",
            "num_devices=2",
            "eval_every_steps=None",
        ],
    )
    assert new.optimizer.learning_rate == 0.3 and new.model.name == "cnn_tiny"
    assert new.train.num_steps == 7 and new.augment.flip is False
    assert new.num_devices == 2 and new.eval_every_steps is None
    assert config.optimizer.learning_rate != 0.3  # the original is untouched
    assert config.train.num_steps is None and config.num_devices is None
    # A field that is None by default stays typed after a copy: back to None, then an int.
    again = apply_overrides(new, {"num_devices": None, "train.num_steps": 3})
    assert again.num_devices is None and again.train.num_steps == 3


def test_unknown_key_names_the_valid_fields():
    config = load_config("fashion_mnist_cnn")
    with pytest.raises(ValueError, match=r"optimizer has no field 'lr'.*learning_rate"):
        apply_overrides(config, ["optimizer.lr=0.1"])


@pytest.mark.parametrize(
    "override,expected", [("train.num_steps=many", "int"), ("num_devices=two", "int")]
)
def test_wrong_type_names_the_expected_type_and_keeps_the_cause(override, expected):
    config = load_config("fashion_mnist_cnn")
    with pytest.raises(ValueError, match=rf"{override.split('=')[0]}.*expects {expected}") as e:
        apply_overrides(config, [override])
    assert isinstance(e.value.__cause__, TypeError)


def test_stored_config_round_trips_through_json():
    config = load_config("cifar10_wrn40_2:smoke")
    loaded = config_from_json(config.to_json_best_effort(indent=2))
    assert loaded.to_dict() == config.to_dict()
    assert isinstance(loaded.dataset.mean, tuple)


def _imports(path):
    with open(path) as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield node.module or ""


def test_configuration_is_the_bottom_layer():
    """It imports no flatrob_jax module but the file layer below it, so no config import can
    form a cycle (the layers contract in pyproject.toml checks the whole package)."""
    import re

    with open(configuration.__file__) as f:
        text = f.read()
    imported = re.findall(r"^\s*(?:from|import) (flatrob_jax\S*)(?: import (\w+))?", text, re.M)
    modules = {f"{m}.{name}" if m == "flatrob_jax" and name else m for m, name in imported}
    assert modules <= {"flatrob_jax.fileio"}, modules


def test_config_and_sweep_files_import_normally():
    files = glob.glob(os.path.join(PACKAGE_DIR, "*.py")) + glob.glob(
        os.path.join(PACKAGE_DIR, "sweeps", "*.py")
    )
    assert len(files) >= 12
    for path in files:
        with open(path) as f:
            text = f.read()
        assert "importlib" not in text and "sys.path" not in text, path
        assert not [m for m in _imports(path) if m in ("paper", "common")], path


def test_configs_directory_is_the_package():
    link = os.path.join(REPO, "configs")
    assert os.path.islink(link) and os.path.samefile(link, PACKAGE_DIR)
