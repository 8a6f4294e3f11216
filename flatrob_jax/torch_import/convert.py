"""PyTorch tensors -> this library's Flax variables, with every name and shape checked first.

Works on a ``state_dict`` already turned into NumPy arrays (``loading.read_state_dict``), so it
needs no torch. Conventions: convolution weights OIHW -> HWIO; linear weights (out, in) ->
(in, out); BatchNorm weight/bias/running_mean/running_var -> params scale/bias and batch_stats
mean/var (both frameworks use eps 1e-5 and the biased running variance in eval mode).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from flatrob_jax.torch_import import layouts
from flatrob_jax.torch_import.layouts import CONV, LINEAR

# Wrappers that prefix every key: nn.DataParallel ('module.') and RobustBench's normalizing
# wrappers ('model.').
WRAPPER_PREFIXES = ("module.", "model.")
# Input-normalization buffers some checkpoints carry (RobustBench's mu/sigma and
# normalize.mean/std, DeepMind's mean/std), as (mean name, std name).
NORMALIZATION_BUFFERS = (("mu", "sigma"), ("mean", "std"), ("normalize.mean", "normalize.std"))
_MAX_LISTED = 20


class StateDictMismatch(ValueError):
    """The state_dict's tensors do not match the architecture (missing, extra, mis-shaped)."""


@dataclasses.dataclass
class Prepared:
    """A state_dict with wrappers removed and non-weight entries set aside."""

    tensors: dict  # name -> np.ndarray (or a shape tuple, for shape-only checks)
    normalization: tuple | None  # (mean, std) tuples found in the checkpoint, or None
    dropped: list  # names set aside: num_batches_tracked, stripped prefixes' notes


def _shape(value) -> tuple:
    return tuple(value) if isinstance(value, tuple) else tuple(np.shape(value))


def prepare(state_dict: dict) -> Prepared:
    """Strip wrapper prefixes, set aside BatchNorm counters and normalization buffers."""
    tensors = dict(state_dict)
    dropped = []
    for _ in range(3):  # e.g. 'module.model.' : strip repeatedly while every key has one
        for prefix in WRAPPER_PREFIXES:
            keys = list(tensors)
            if keys and all(k.startswith(prefix) for k in keys):
                tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
                dropped.append(f"prefix {prefix!r} removed from every name")
    normalization = None
    for mean_name, std_name in NORMALIZATION_BUFFERS:
        if mean_name in tensors and std_name in tensors:
            mean = np.asarray(tensors.pop(mean_name), np.float64).reshape(-1)
            std = np.asarray(tensors.pop(std_name), np.float64).reshape(-1)
            normalization = (tuple(float(m) for m in mean), tuple(float(s) for s in std))
            dropped.append(f"normalization buffers {mean_name!r}, {std_name!r}")
            break
    for k in [k for k in tensors if k.endswith(".num_batches_tracked")]:
        del tensors[k]
    return Prepared(tensors, normalization, dropped)


def _torch_shape(kind: str, suffix: str, flax_shape: tuple) -> tuple:
    """The PyTorch shape of the tensor that fills a Flax variable of ``flax_shape``."""
    if kind == CONV:
        kh, kw, cin, cout = flax_shape
        return (cout, cin, kh, kw)
    if kind == LINEAR and suffix == "weight":
        return tuple(reversed(flax_shape))
    return flax_shape


def _target(entry, suffix: str):
    """(collection, flax leaf name) that the tensor ``prefix.suffix`` fills."""
    if entry.kind == CONV:
        return "params", "kernel"
    if entry.kind == LINEAR:
        return "params", {"weight": "kernel", "bias": "bias"}[suffix]
    return {
        "weight": ("params", "scale"),
        "bias": ("params", "bias"),
        "running_mean": ("batch_stats", "mean"),
        "running_var": ("batch_stats", "var"),
    }[suffix]


def _lookup(tree, path):
    for p in path:
        tree = tree[p]
    return tree


def _listing(names) -> str:
    names = sorted(names)
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f", ... ({len(names) - _MAX_LISTED} more)" if len(names) > _MAX_LISTED else "")


def template_variables(model, image_shape: tuple):
    """Shapes and dtypes of ``model``'s variables (no memory, no compute)."""
    x = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    return jax.eval_shape(model.init, jax.random.key(0), x)


def plan(layout: layouts.Layout, model, template) -> list:
    """[(tensor name, (collection, *flax path, leaf), torch shape, kind)] for every tensor the
    layout reads; checks that the plan fills every variable of ``template`` exactly once."""
    rows, filled = [], set()
    for entry in layout.entries(model):
        for name in layouts.tensor_names(entry):
            suffix = name.rsplit(".", 1)[1]
            collection, leaf = _target(entry, suffix)
            path = (collection, *entry.flax_path, leaf)
            try:
                flax_shape = tuple(_lookup(template, path).shape)
            except KeyError as e:
                raise RuntimeError(
                    f"layout {layout.name!r} maps {name!r} to {path}, which "
                    f"{type(model).__name__} does not have"
                ) from e
            rows.append((name, path, _torch_shape(entry.kind, suffix, flax_shape), entry.kind))
            filled.add(path)
    leaves = {
        tuple(getattr(k, "key", k) for k in p)
        for p, _ in jax.tree_util.tree_flatten_with_path(template)[0]
    }
    if leaves != filled:
        raise RuntimeError(
            f"layout {layout.name!r} does not fill {sorted(leaves - filled)} of "
            f"{type(model).__name__} (a bug in the layout)"
        )
    return rows


def check(tensors: dict, layout: layouts.Layout, rows: list, arch_label: str) -> list:
    """Raise StateDictMismatch naming every missing, extra and mis-shaped tensor; return the
    names of tensors deliberately ignored (the layout's unused ones)."""
    expected = {name: shape for name, _, shape, _ in rows}
    ignored = sorted(k for k in tensors if k.startswith(layout.ignored_prefixes or ("\0",)))
    present = {k: _shape(v) for k, v in tensors.items() if k not in ignored}
    optional = {f"{p}.bias" for p in layout.optional_bias}
    missing = [k for k in expected if k not in present and k not in optional]
    extra = [k for k in present if k not in expected]
    wrong = [
        f"{k} {present[k]} (expected {expected[k]})"
        for k in expected
        if k in present and present[k] != expected[k]
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensor(s): {_listing(missing)}")
    if extra:
        problems.append(f"unexpected {len(extra)} tensor(s): {_listing(extra)}")
    if wrong:
        problems.append(f"{len(wrong)} tensor(s) of the wrong shape: {_listing(wrong)}")
    if problems:
        raise StateDictMismatch(
            f"the state_dict does not match {arch_label} (layout {layout.name}: "
            f"{layout.source}): " + "; ".join(problems)
        )
    return ignored


def _convert_value(kind: str, suffix: str, value) -> np.ndarray:
    value = np.asarray(value, dtype=np.float32)
    if kind == CONV:
        return np.ascontiguousarray(value.transpose(2, 3, 1, 0))  # OIHW -> HWIO
    if kind == LINEAR and suffix == "weight":
        return np.ascontiguousarray(value.T)
    return value


def _set(tree: dict, path: tuple, value):
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value


def to_flax(
    tensors: dict, layout: layouts.Layout, model, template, *, arch_label: str = "the architecture"
) -> tuple:
    """``(variables, ignored)``: the Flax variables ({'params', 'batch_stats'} of NumPy
    float32) that ``tensors`` (a prepared state_dict) define for ``model``, after checking
    every name and shape against ``template`` (from ``template_variables``)."""
    rows = plan(layout, model, template)
    ignored = check(tensors, layout, rows, arch_label)
    variables: dict = {}
    for name, path, torch_shape, kind in rows:
        if name in tensors:
            value = _convert_value(kind, name.rsplit(".", 1)[1], tensors[name])
        else:  # an optional bias (checked above): the module had none
            value = np.zeros(torch_shape, np.float32)
        _set(variables, path, value)
    return variables, ignored
