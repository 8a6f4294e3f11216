"""Function-preserving reparameterizations of a trained network, and the audit of which
flatness measures they move (Dinh et al. 2017, "Sharp minima can generalize for deep nets":
the Hessian and the Keskar sharpness are not invariant to rescalings that leave the function,
hence every robustness number, unchanged; the adaptive sharpness of Kwon et al. 2021 and
Andriushchenko et al. 2023 is).

Two rescalings, by a factor ``alpha > 0``, on the eval-mode network (BatchNorm with running
statistics, as every measure here uses it):

* ``bn_scale``: every convolution (or dense layer) whose output feeds only a BatchNorm gets its
  kernel (and bias) multiplied by ``alpha``; the BatchNorm's running statistics follow:
  ``mean -> alpha mean``, ``var -> alpha^2 (var + eps) - eps``, so that
  ``(alpha z - alpha mean) / sqrt(var' + eps) == (z - mean) / sqrt(var + eps)`` exactly, eps
  included (``var'`` may fall below 0 for alpha << 1; ``var' + eps`` stays positive, and it is
  only ever used as ``var' + eps``). The loss is then constant along the scaled weights' rays,
  and their Hessian block shrinks by ``1 / alpha^2``. Every model of ``flatrob_jax.models``
  has such layers (conv -> BatchNorm).
* ``relu_rescale``: the last BatchNorm's affine output (scale and bias) times ``alpha``, the
  classifier's kernel times ``1 / alpha``. Valid where that BatchNorm reaches the classifier
  only through ReLU and global average pooling (both positively homogeneous): the small CNNs
  (``cnn_*``), ``preact_resnet18`` and the Wide ResNets (``wrn*``), whose last BatchNorm is
  followed by ReLU, pooling and the dense layer. Not the post-activation ResNets (``resnet18``,
  ``resnet50``, ``wide_resnet50_2``), where the shortcut is added after the last BatchNorm; for
  them ``relu_rescale`` raises ValueError. The classifier's Hessian block grows by
  ``alpha^2``, the BatchNorm's shrinks by ``1 / alpha^2``.

Which layers qualify is found by tracing one forward pass (``flax.linen.intercept_methods``:
a convolution whose output object is a BatchNorm's input) and then checked numerically: each
candidate is rescaled alone and kept only if the logits on a probe batch do not change (a
convolution whose output also feeds a residual sum, like the stem of a PreAct ResNet, fails
and is left out). The audit reports the largest logit difference of the full rescaling.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import time
import types
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

TRANSFORMS = ("bn_scale", "relu_rescale")
# The measures the audit compares: fnmatch patterns of curvature.evaluate.evaluate's results,
# nested keys '/'-joined (the adaptive ones are named by their setting: 'adaptive_ascent/l2_0.05').
MEASURES = (
    "lambda_max",
    "trace",
    "keskar_sharpness",
    "adaptive_ascent/*",
    "adaptive_average/*",
    "adaptive_worst/*",
)
# Measures that are invariant to both rescalings by construction (perturbations scaled by |w|).
INVARIANT = ("adaptive_ascent/*", "adaptive_average/*", "adaptive_worst/*")

PyTree = Any


@dataclasses.dataclass(frozen=True)
class Rescaled:
    """A rescaled network: ``variables`` (same structure as the original), the ``transform``
    and ``alpha``, ``layers`` (the parameter paths it changed, '/'-joined) and, where
    candidates were rejected, ``excluded`` (their paths and why)."""

    variables: dict
    transform: str
    alpha: float
    layers: tuple
    excluded: tuple = ()


@dataclasses.dataclass(frozen=True)
class _Call:
    kind: str  # 'conv' | 'dense' | 'batchnorm'
    path: tuple  # the module's path = its key path in variables['params']
    inputs: Any
    output: Any
    epsilon: float | None


def _kind(module) -> str | None:
    if isinstance(module, (nn.Conv, nn.ConvTranspose)):
        return "conv"
    if isinstance(module, nn.Dense):
        return "dense"
    if isinstance(module, nn.BatchNorm):
        return "batchnorm"
    return None


def trace_calls(model, variables: dict, images) -> list:
    """The conv / dense / BatchNorm calls of one eval-mode forward pass, in call order, with
    their input and output arrays (concrete, on ``images``)."""
    calls = []

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        kind = _kind(context.module)
        if kind and context.method_name == "__call__" and args:
            calls.append(
                _Call(
                    kind,
                    tuple(context.module.path),
                    args[0],
                    out,
                    getattr(context.module, "epsilon", None),
                )
            )
        return out

    with nn.intercept_methods(interceptor):
        model.apply(variables, jnp.asarray(images), train=False)
    return calls


def _get(tree, path):
    for p in path:
        tree = tree[p]
    return tree


def _set(tree: dict, path: tuple, value) -> dict:
    """A copy of the nested dict ``tree`` with ``path`` replaced (unflattened plain dicts)."""
    if not path:
        return value
    out = dict(tree)
    out[path[0]] = _set(tree[path[0]], path[1:], value)
    return out


def _plain(variables) -> dict:
    """Nested plain dicts (FrozenDicts unfrozen), the leaves shared."""
    return flax.core.unfreeze(variables)


def _scale_linear(variables: dict, path: tuple, factor: float, names=("kernel", "bias")) -> dict:
    params = variables["params"]
    layer = dict(_get(params, path))
    for name in names:
        if name in layer:
            layer[name] = layer[name] * np.asarray(factor, layer[name].dtype)
    return {**variables, "params": _set(params, path, layer)}


def _scale_batchnorm_input(variables: dict, path: tuple, alpha: float, eps: float) -> dict:
    stats = dict(_get(variables["batch_stats"], path))
    mean, var = stats["mean"], stats["var"]
    a = np.asarray(alpha, var.dtype)
    stats["mean"] = mean * a
    stats["var"] = (a * a) * (var + np.asarray(eps, var.dtype)) - np.asarray(eps, var.dtype)
    return {**variables, "batch_stats": _set(variables["batch_stats"], path, stats)}


def _scale_batchnorm_output(variables: dict, path: tuple, alpha: float) -> dict:
    params = variables["params"]
    layer = dict(_get(params, path))
    for name in ("scale", "bias"):
        if name not in layer:
            raise ValueError(
                f"relu_rescale needs the BatchNorm at {'/'.join(path)} to have a "
                f"learned {name} (use_scale and use_bias); it has {sorted(layer)}"
            )
        layer[name] = layer[name] * np.asarray(alpha, layer[name].dtype)
    return {**variables, "params": _set(params, path, layer)}


def _logits_fn(model):
    """Eval-mode logits as one jitted function of (variables, images): every candidate and
    variant of the same model reuses its compilation."""
    return jax.jit(lambda v, x: model.apply(v, x, train=False))


def max_abs_logit_difference(
    model, a: dict, b: dict, images, batch_size: int = 256, *, logits_fn=None
) -> float:
    """max |f_a(x) - f_b(x)| over ``images`` (eval mode), in float64 on the host."""
    fn = logits_fn or _logits_fn(model)
    worst = 0.0
    for start in range(0, len(images), batch_size):
        x = jnp.asarray(images[start : start + batch_size])
        diff = np.abs(np.asarray(fn(a, x), np.float64) - np.asarray(fn(b, x), np.float64))
        worst = max(worst, float(diff.max()))
    return worst


class _Checker:
    """Does a candidate rescaling keep the logits on the probe images? Within
    ``tol * (1 + max |logit|)`` of the original's."""

    def __init__(self, model, variables, images, tol):
        self.fn = _logits_fn(model)
        self.images = jnp.asarray(images)
        self.ref = np.asarray(self.fn(variables, self.images), np.float64)
        self.bound = tol * (1.0 + np.abs(self.ref).max())

    def __call__(self, candidate) -> tuple[bool, float]:
        diff = float(
            np.abs(np.asarray(self.fn(candidate, self.images), np.float64) - self.ref).max()
        )
        return diff <= self.bound, diff


def _check_alpha(alpha):
    if not (isinstance(alpha, (int, float)) and np.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha={alpha!r}: the rescaling factor must be a finite number > 0")


def bn_scale(model, variables: dict, alpha: float, probe_images, *, tol: float = 1e-4) -> Rescaled:
    """Every conv/dense that feeds only a BatchNorm times ``alpha``, that BatchNorm's running
    statistics adjusted (module docstring). ``probe_images`` (a few images, float32 NHWC in
    [0, 1]) find the layers and check each one: a candidate whose rescaling alone changes the
    logits by more than ``tol * (1 + max |logit|)`` is left out (``excluded``)."""
    _check_alpha(alpha)
    variables = _plain(variables)
    if "batch_stats" not in variables:
        raise ValueError(
            "bn_scale needs a model with BatchNorm (variables have no "
            f"'batch_stats'; keys {sorted(variables)})"
        )
    calls = trace_calls(model, variables, probe_images)
    preserves = _Checker(model, variables, probe_images, tol)
    layers, excluded, out = [], [], variables
    for bn in (c for c in calls if c.kind == "batchnorm"):
        feeders = [c for c in calls if c.kind in ("conv", "dense") and c.output is bn.inputs]
        if not feeders:
            continue
        lin = feeders[0]
        single = _scale_batchnorm_input(
            _scale_linear(variables, lin.path, alpha), bn.path, alpha, bn.epsilon
        )
        ok, diff = preserves(single)
        name = "/".join(lin.path)
        if not ok:
            excluded.append(
                (
                    name,
                    f"its output is used besides {'/'.join(bn.path)} (logits moved by {diff:.3g})",
                )
            )
            continue
        out = _scale_batchnorm_input(
            _scale_linear(out, lin.path, alpha), bn.path, alpha, bn.epsilon
        )
        layers.append(name)
    if not layers:
        raise ValueError(
            f"bn_scale: {type(model).__name__} has no convolution or dense layer "
            f"that feeds only a BatchNorm (excluded: {excluded})"
        )
    return Rescaled(out, "bn_scale", float(alpha), tuple(layers), tuple(excluded))


def relu_rescale(
    model, variables: dict, alpha: float, probe_images, *, tol: float = 1e-4
) -> Rescaled:
    """The last BatchNorm's scale and bias times ``alpha``, the classifier (the last dense
    layer) times ``1 / alpha`` (module docstring); raises ValueError for a model whose last
    BatchNorm does not reach the classifier through ReLU and average pooling only."""
    _check_alpha(alpha)
    variables = _plain(variables)
    calls = trace_calls(model, variables, probe_images)
    dense = [i for i, c in enumerate(calls) if c.kind == "dense"]
    norms = [i for i, c in enumerate(calls) if c.kind == "batchnorm"]
    name = type(model).__name__
    if not dense or not norms or norms[-1] > dense[-1]:
        raise ValueError(f"relu_rescale: {name} has no BatchNorm before its last dense layer")
    bn, fc = calls[norms[-1]], calls[dense[-1]]
    # The classifier's input must be mean_spatial(relu(BN output)): homogeneous of degree 1.
    h = np.maximum(np.asarray(bn.output, np.float64), 0.0)
    pooled = h.mean(axis=tuple(range(1, h.ndim - 1))) if h.ndim > 2 else h
    fc_in = np.asarray(fc.inputs, np.float64)
    if pooled.shape != fc_in.shape or not np.allclose(pooled, fc_in, rtol=1e-4, atol=1e-5):
        raise ValueError(
            f"relu_rescale: in {name} the last BatchNorm ({'/'.join(bn.path)}) does not reach "
            f"the classifier ({'/'.join(fc.path)}) through ReLU and average pooling only (e.g. "
            "a shortcut is added after it, as in post-activation ResNets); models that allow "
            "it: cnn_*, preact_resnet18, wrn*"
        )
    # The classifier's kernel only: its bias is added after the (rescaled) features.
    out = _scale_linear(
        _scale_batchnorm_output(variables, bn.path, alpha), fc.path, 1.0 / alpha, names=("kernel",)
    )
    ok, diff = _Checker(model, variables, probe_images, tol)(out)
    if not ok:
        raise ValueError(
            f"relu_rescale: rescaling {'/'.join(bn.path)} and "
            f"{'/'.join(fc.path)} of {name} moved the logits by {diff:.3g}"
        )
    return Rescaled(out, "relu_rescale", float(alpha), ("/".join(bn.path), "/".join(fc.path)))


def rescale(transform: str, model, variables: dict, alpha: float, probe_images) -> Rescaled:
    """``bn_scale`` or ``relu_rescale`` by name."""
    fns = {"bn_scale": bn_scale, "relu_rescale": relu_rescale}
    if transform not in fns:
        raise ValueError(f"unknown rescaling {transform!r}; allowed: {TRANSFORMS}")
    return fns[transform](model, variables, alpha, probe_images)


def is_measure(name: str, patterns=MEASURES) -> bool:
    """Whether the '/'-joined result name ``name`` matches one of ``patterns``."""
    return not name.endswith("_stderr") and any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _flat_numbers(result: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in result.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat_numbers(value, name + "/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = value
    return out


def _measures(result: dict) -> dict:
    """The audited measures of an ``evaluate`` result ('/'-joined names; the adaptive average
    with its ``_stderr``), with the trace's stderr, the loss and lambda_max's residual."""
    flat = _flat_numbers(result)
    out = {m: v for m, v in flat.items() if is_measure(m)}
    for m in list(out):
        if f"{m}_stderr" in flat:
            out[f"{m}_stderr"] = flat[f"{m}_stderr"]
    for extra in ("loss", "lambda_max_residual"):
        if extra in flat:
            out[extra] = flat[extra]
    return out


def audit(
    eval_model,
    data,
    settings,
    *,
    key: jax.Array,
    alpha: float = 4.0,
    transforms=TRANSFORMS,
    move_tol: float = 0.05,
    probe_examples: int = 32,
    log: Callable = print,
    **overrides,
) -> dict:
    """Measure flatness on ``eval_model`` and on each rescaled copy (same data, same keys,
    same settings) and report which measures move while the function does not.

    Args:
      eval_model: ``.model`` and ``.variables`` (``flatrob_jax.load_for_eval``'s EvalModel).
      data: ``(images, labels)``, the examples the measures average over.
      key: the measures' key (every variant uses the same one: the same Lanczos start, trace
        probes and noise samples).
      alpha: the rescaling factor.
      transforms: names from ``TRANSFORMS``.
      move_tol: a measure "moved" when ``|value / original - 1| > move_tol``.
      probe_examples: images of ``data`` used to find and check the layers.
      settings: every setting of ``flatrob_jax.curvature.evaluate.evaluate`` (e.g.
        ``flatrob_jax.analysis.analyses.curvature_config()``); the audit switches on the
        trace, the sharpness measures and the fast adaptive ascent, and off the density and
        the PAC-Bayes sigma (the APGD settings ``adaptive_worst`` run as given).
      overrides: settings that replace those in ``settings`` (lanczos_*, trace_*, ...).

    Returns a dict: ``alpha``, ``original`` (the measures), and per transform ``layers``,
    ``excluded``, ``max_abs_logit_diff`` (over all of ``data``), ``values``, ``ratio``
    (value / original; None where the original is 0) and ``moved`` (per measure), or
    ``{'unsupported': why}`` for a transform the model does not allow; plus
    ``invariant_measures`` (those that moved under no applied transform)."""
    from flatrob_jax.curvature.evaluate import evaluate, resolve_settings

    _check_alpha(alpha)
    transforms = tuple(transforms)
    for t in transforms:
        if t not in TRANSFORMS:
            raise ValueError(f"unknown rescaling {t!r} in transforms; allowed: {TRANSFORMS}")
    images, labels = data
    probe = np.asarray(images[:probe_examples])
    switches = {
        "trace": True,
        "sharpness": True,
        "adaptive_ascent": True,
        "density": False,
        "pac_bayes": False,
    }
    settings = resolve_settings(settings, {**overrides, **switches})

    def measure(variables, which):
        t0 = time.time()
        view = types.SimpleNamespace(model=eval_model.model, variables=variables)
        result = evaluate(view, (images, labels), settings, key=key, log=log)
        log(f"reparam audit: {which} measured in {time.time() - t0:.1f} s")
        return _measures(result)

    original_vars = _plain(eval_model.variables)
    logits_fn = _logits_fn(eval_model.model)
    original = measure(original_vars, "original")
    out = {"alpha": float(alpha), "move_tol": move_tol, "original": original}
    names = [m for m in original if is_measure(m)]
    moved_any = {m: False for m in names}
    for t in transforms:
        try:
            r = rescale(t, eval_model.model, original_vars, alpha, probe)
        except ValueError as e:  # this model has no such layers (e.g. relu_rescale, ResNet-18)
            out[t] = {"unsupported": str(e)}
            log(f"reparam audit: {t} does not apply: {e}")
            continue
        diff = max_abs_logit_difference(
            eval_model.model, original_vars, r.variables, images, logits_fn=logits_fn
        )
        log(
            f"reparam audit: {t} x{alpha:g} on {len(r.layers)} layers, max |logit difference| "
            f"{diff:.3g}"
        )
        values = measure(r.variables, t)
        ratio, moved = {}, {}
        for m in names:
            a, b = original.get(m), values.get(m)
            if a is None or b is None:
                continue
            if a == 0:  # no ratio; moved unless it stayed exactly 0
                ratio[m], moved[m] = None, b != 0
            else:
                ratio[m] = b / a
                moved[m] = bool(abs(ratio[m] - 1.0) > move_tol)
            moved_any[m] |= moved[m]
        out[t] = {
            "layers": list(r.layers),
            "excluded": [list(e) for e in r.excluded],
            "max_abs_logit_diff": diff,
            "values": values,
            "ratio": ratio,
            "moved": moved,
        }
        log(
            f"reparam audit: {t}: "
            + ", ".join(f"{m} x{v:.3g}" for m, v in ratio.items() if v is not None)
        )
    out["invariant_measures"] = [m for m in names if not moved_any[m]]
    return out
