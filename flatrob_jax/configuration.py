"""Loading configs and overriding their fields: the bottom layer every entry point shares.

An experiment config is a module with ``get_config(arg=None)`` returning an
``ml_collections.ConfigDict``; the ones that ship live in ``flatrob_jax.configs`` (the
repository's ``configs/`` is a symlink to it), sweeps in ``flatrob_jax.configs.sweeps``.
A config is named by a path (``configs/fashion_mnist_cnn.py:smoke``) or, from any directory,
by its name in the package (``fashion_mnist_cnn:smoke``). The text after the colon is the
config's argument, parsed by ``parse_arg`` (``smoke``, ``smoke,seed=1``).

Command lines override fields with ``--config.a.b=value`` (absl's config_flags); code and
sweeps use the same ``a.b=value`` strings or ``{'a.b': value}`` dicts (``apply_overrides``).

It also reads and writes a run's stored config (``save_run_config`` / ``load_run_config``).
This module imports no flatrob_jax module but ``fileio`` (a run's config files may be in a
gs:// workdir): configs import the library, never the reverse, so loading a config cannot
form an import cycle.
"""

import ast
import copy
import importlib
import importlib.util
import json
import os
import pkgutil

import ml_collections

from flatrob_jax import fileio

CONFIGS_PACKAGE = "flatrob_jax.configs"

_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")


def _parse_typed(key: str, text: str, default):
    """``text`` as the type of ``default`` (bool, int, float, str; None: a Python literal)."""
    if isinstance(default, bool):
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError(
            f"config argument {key}={text!r}: expected a bool "
            f"({'/'.join(_TRUE)} or {'/'.join(_FALSE)})"
        )
    if isinstance(default, (int, float)):
        try:
            return type(default)(text)
        except ValueError as e:
            raise ValueError(
                f"config argument {key}={text!r}: expected {type(default).__name__}"
            ) from e
    if isinstance(default, str):
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """The ``get_config(arg)`` argument as typed values (big_vision's configs/common.parse_arg).

    ``arg`` is comma-separated ``key=value`` pairs (values hold no commas); a bare ``key``
    means ``key=True`` (for bool keys). Every key must be one of ``defaults``, whose values
    give the defaults and the types (a None default takes a Python literal)::

        arg = parse_arg("smoke,seed=1", smoke=False, seed=0)  # arg.smoke, arg.seed == True, 1

    Unknown keys and values of the wrong type raise ValueError naming the valid keys.
    """
    result = ml_collections.ConfigDict(dict(defaults))
    valid = ", ".join(f"{k}={v!r}" for k, v in defaults.items()) or "none"
    for item in (arg or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, has_value, text = item.partition("=")
        key = key.strip()
        if key not in defaults:
            raise ValueError(f"unknown config argument {key!r} (in {arg!r}); valid: {valid}")
        if not has_value:
            if not isinstance(defaults[key], bool):
                raise ValueError(
                    f"config argument {key!r} needs a value ({key}=...); valid: {valid}"
                )
            text = "true"
        result[key] = _parse_typed(key, text.strip(), defaults[key])
    return result


def _is_path(name: str) -> bool:
    return name.endswith(".py") or "/" in name or os.sep in name


def config_names(subpackage: str = "") -> list:
    """The names ``load_config`` (or, with ``subpackage='sweeps'``, ``load_sweep``) accepts:
    the modules of ``flatrob_jax.configs[.subpackage]`` that define ``get_config`` (or
    ``get_sweep``); shared modules such as ``common`` are left out."""
    package = CONFIGS_PACKAGE + (f".{subpackage}" if subpackage else "")
    function = "get_sweep" if subpackage == "sweeps" else "get_config"
    names = []
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        if info.ispkg or info.name.startswith("_"):
            continue
        if hasattr(importlib.import_module(f"{package}.{info.name}"), function):
            names.append(info.name)
    return sorted(names)


def load_config_module(spec: str, subpackage: str = ""):
    """``'path.py[:arg]'`` or ``'name[:arg]'`` -> ``(module, arg or None)``.

    A path (ends in .py or contains a slash) is loaded from the file; a name is a module of
    ``flatrob_jax.configs`` (or of ``flatrob_jax.configs.<subpackage>``: 'sweeps' for sweep
    files), so it resolves from any working directory and in an installed package.
    """
    name, _, arg = spec.partition(":")
    if _is_path(name):
        if not os.path.exists(name):
            raise FileNotFoundError(f"config file {name!r} not found")
        stem = os.path.basename(name).removesuffix(".py")
        module_spec = importlib.util.spec_from_file_location(f"_flatrob_config_{stem}", name)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        return module, arg or None
    package = CONFIGS_PACKAGE + (f".{subpackage}" if subpackage else "")
    full = f"{package}.{name}"
    try:
        return importlib.import_module(full), arg or None
    except ModuleNotFoundError as e:
        if e.name not in (full, package) and not full.startswith(f"{e.name}."):
            raise  # the config exists but imports something missing
        raise FileNotFoundError(
            f"no config named {name!r} in {package}; valid names: "
            f"{', '.join(config_names(subpackage))} (or give a path to a .py file)"
        ) from e


def load_config(spec: str) -> ml_collections.ConfigDict:
    """``'configs/x.py[:arg]'`` or ``'x[:arg]'`` -> the module's ``get_config(arg)``, locked."""
    module, arg = load_config_module(spec)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config {spec!r} ({module.__file__}) has no get_config(arg) function")
    config = module.get_config(arg)
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

    Unknown keys and wrong types raise ValueError naming the key and the valid keys/type.
    Fields that may be None (``placeholder(int)``) keep their type: ``num_devices=2`` and
    ``num_devices=None`` pass, ``num_devices='two'`` does not."""
    if isinstance(overrides, dict):
        items = list(overrides.items())
        parse = False
    else:
        items = [tuple(o.split("=", 1)) if "=" in o else (o, None) for o in overrides]
        parse = True
    config = copy.deepcopy(config)  # keeps placeholders typed (copy_and_resolve would not)
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
                raise ValueError(
                    f"unknown config key {key!r}: {where} has no field {part!r}; "
                    f"valid fields there: {', '.join(valid)}"
                )
            if i < len(parts) - 1:
                node = node[part]
        current = node[parts[-1]]
        if parse:
            value = _parse_value(value, current)
        if isinstance(value, list):
            value = tuple(value)  # lists are tuples in configs
        try:
            setattr(node, parts[-1], value)
        except TypeError as e:
            field = node.get_ref(parts[-1]).get_type() if current is None else type(current)
            raise ValueError(
                f"config key {key!r} expects {field.__name__} "
                f"(currently {current!r}), got {value!r}: {e}"
            ) from e
    return config


def parse_override_strings(config: ml_collections.ConfigDict, items) -> dict:
    """``['a.b=value', ...]`` as ``{'a.b': typed value}``, parsed and checked against
    ``config`` exactly as :func:`apply_overrides` parses them (an unknown key or a wrong type
    raises its error)."""
    items = list(items)
    applied = apply_overrides(config, items)
    out = {}
    for item in items:
        key = item.split("=", 1)[0]
        node = applied
        for part in key.split("."):
            node = node[part]
        out[key] = node
    return out


def split_config_args(argv, prefix: str = "--config.") -> tuple:
    """``argv`` -> ``(['a.b=value', ...], the other arguments)``: the ``--config.a.b=value``
    arguments of an entry point without a config flag of its own (the sweep's apply to every
    run), taken off before absl parses the rest. ``--config.a.b value`` (two arguments) is
    accepted too."""
    argv = list(argv)
    overrides, rest, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith(prefix):
            item = arg[len(prefix) :]
            if "=" not in item:
                if i + 1 >= len(argv):
                    raise ValueError(f"{arg} needs a value: {arg}=VALUE")
                item, i = f"{item}={argv[i + 1]}", i + 1
            overrides.append(item)
        else:
            rest.append(arg)
        i += 1
    return overrides, rest


def _none_or(parser_class):
    class NoneOr(parser_class):
        """``--config.a.b=None`` sets the field to None; other values parse as before."""

        def parse(self, argument):
            if isinstance(argument, str) and argument.strip() in ("None", "none"):
                return None
            return super().parse(argument)

    NoneOr.__name__ = f"NoneOr{parser_class.__name__}"
    return NoneOr()


def accept_none_on_command_line() -> None:
    """Let ``--config.a.b=None`` set int, float and bool fields to None (absl's config_flags
    parses them strictly, so ``placeholder(int)`` fields could be set but never reset to
    "all"). Entry points call this before their flags are parsed."""
    from absl import flags
    from ml_collections import config_flags

    for field_type, parser in (
        (int, flags.IntegerParser),
        (float, flags.FloatParser),
        (bool, flags.BooleanParser),
    ):
        config_flags.register_flag_parser_for_type(field_type, _none_or(parser))


def _tuples(tree):
    """JSON lists back to the tuples configs hold."""
    if isinstance(tree, dict):
        return {k: _tuples(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return tuple(_tuples(v) for v in tree)
    return tree


def config_from_json(text: str) -> ml_collections.ConfigDict:
    """A run's stored ``config.json`` as a ConfigDict (lists as tuples)."""
    try:
        tree = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"stored config is not valid JSON: {e}") from e
    return ml_collections.ConfigDict(_tuples(tree))


# --------------------------------------------------------------------------- a run's config files


def save_run_config(workdir: str, config: ml_collections.ConfigDict) -> str:
    """Write config.json beside the checkpoints; if one exists and differs, keep both."""
    text = config.to_json_best_effort(indent=2, sort_keys=True)
    path = fileio.join(workdir, "config.json")
    if fileio.exists(path):
        if fileio.read_text(path) == text:
            return path
        n = 1
        while fileio.exists(fileio.join(workdir, f"config.{n}.json")):
            n += 1
        path = fileio.join(workdir, f"config.{n}.json")
    fileio.atomic_write_text(path, text)
    return path


def _config_number(name: str) -> int:
    """config.json -> 0, config.<n>.json -> n (the order they were written in)."""
    middle = name[len("config.") : -len(".json")]
    return int(middle) if middle.isdigit() else 0


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run was started with (the latest config.<n>.json if it was changed)."""
    try:
        names = [
            f for f in fileio.listdir(workdir) if f.startswith("config") and f.endswith(".json")
        ]
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"workdir {workdir!r} does not exist: is it a flatrob_jax run?"
        ) from e
    if not names:
        raise FileNotFoundError(f"no config.json in workdir {workdir!r}: is it a flatrob_jax run?")
    latest = max(names, key=lambda f: (_config_number(f), f))
    return config_from_json(fileio.read_text(fileio.join(workdir, latest)))
