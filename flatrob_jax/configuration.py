"""Configs: the base config every experiment starts from, loading ``path.py:arg`` files, and
``key=value`` overrides with clear errors.

An experiment config is a file in configs/ with ``get_config(arg=None)`` returning a locked
``ml_collections.ConfigDict``; command lines override fields with ``--config.a.b=value``
(absl's config_flags) and sweeps with the same ``a.b=value`` strings (``apply_overrides``).
"""
import ast
import importlib.util
import os

import ml_collections

from flatrob_jax import analyze, augment


def base_config() -> ml_collections.ConfigDict:
    """Every field the trainer reads, with neutral defaults; experiment files set them all."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_devices = -1  # -1: every device; n: the first n (tests, benchmarks)
    c.dataset = ml_collections.ConfigDict(dict(
        name="fashion_mnist", source="idx", data_dir="/usr/share/datasets/fashion-mnist",
        train_split="train", eval_split="test", image_size=(28, 28, 1),
        mean=(0.2860,), std=(0.3530,), num_train_examples=-1, num_eval_examples=-1))
    c.model = ml_collections.ConfigDict(dict(name="cnn_small", dtype="float32"))
    c.augment = augment.default_config()
    c.optimizer = ml_collections.ConfigDict(dict(
        name="sgd", learning_rate=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
        warmup_epochs=0.0, schedule="cosine"))
    c.train = ml_collections.ConfigDict(dict(
        batch_size=128, eval_batch_size=500, num_epochs=10.0, num_steps=-1,
        label_smoothing=0.0))
    c.log_every_steps = 50
    c.eval_every_steps = -1  # -1: only at the end
    c.checkpoint = ml_collections.ConfigDict(dict(every_steps=500, max_to_keep=2))
    c.analysis = analyze.default_config()  # what `flatrob_jax.analyze` / the sweep measure
    return c


def shrink_for_smoke(c, *, batch_size: int, num_train_examples: int, num_eval_examples: int,
                     num_steps: int, checkpoint_every_steps: int = -1):
    """The ``:smoke`` argument of every config: the same model and pipeline, a few steps on
    the first examples, so a whole run takes seconds on a CPU."""
    c.dataset.num_train_examples = num_train_examples
    c.dataset.num_eval_examples = num_eval_examples
    c.train.batch_size = batch_size
    c.train.eval_batch_size = batch_size * 2 if num_eval_examples >= 2 * batch_size else batch_size
    c.train.num_steps = num_steps
    c.optimizer.warmup_epochs = 0.0
    c.log_every_steps = max(1, num_steps // 2)
    c.eval_every_steps = -1
    c.checkpoint.every_steps = checkpoint_every_steps
    return c


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """``'configs/x.py'`` or ``'configs/x.py:arg'`` -> the file's ``get_config(arg)``, locked."""
    path, _, arg = spec.partition(":")
    if not os.path.exists(path):
        raise FileNotFoundError(f"config file {path!r} not found")
    module_spec = importlib.util.spec_from_file_location(
        "_flatrob_config_" + os.path.basename(path).removesuffix(".py"), path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(arg or None)
    config.lock()
    return config


def _parse_value(text: str, current):
    """Parse ``text`` like absl's config_flags: Python literals, bare strings for str fields."""
    if isinstance(current, str):
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_overrides(config: ml_collections.ConfigDict, overrides) -> ml_collections.ConfigDict:
    """Apply ``{'a.b': value}`` or ``['a.b=value', ...]`` to a copy of ``config``.

    Unknown keys and wrong types raise ValueError naming the key and the valid keys/type."""
    if isinstance(overrides, dict):
        items = list(overrides.items())
        parse = False
    else:
        items = [tuple(o.split("=", 1)) if "=" in o else (o, None) for o in overrides]
        parse = True
    config = config.copy_and_resolve_references()
    config.lock()
    for key, value in items:
        if value is None and parse:
            raise ValueError(f"override {key!r} has no '=value'")
        node = config
        parts = key.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                where = ".".join(parts[:i]) or "<config>"
                valid = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
                raise ValueError(f"unknown config key {key!r}: {where} has no field {part!r}; "
                                 f"valid fields there: {', '.join(valid)}")
            if i < len(parts) - 1:
                node = node[part]
        current = node[parts[-1]]
        if parse:
            value = _parse_value(value, current)
        if isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        try:
            setattr(node, parts[-1], value)
        except TypeError as e:
            raise ValueError(f"config key {key!r} expects {type(current).__name__} "
                             f"(currently {current!r}), got {value!r}: {e}") from None
    return config
