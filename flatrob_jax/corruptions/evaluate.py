"""Corruption robustness of a trained model: error per corruption x severity, mean corruption
error (CIFAR), mCE and relative mCE normalised by AlexNet (ImageNet), and a heat-map PNG.

Entry point for ``flatrob_jax.analyze``::

    evaluate(eval_model, data, cfg, *, key, log=print, out_dir=None, corrupted=None) -> dict
    corrupted_sets(images, key, cfg) -> {(name, severity): array [N, H, W, C]}

* ``eval_model``: ``fn(images float32 [B, H, W, C] in [0, 1]) -> logits [B, K]``, jittable;
  preferably a ``jax.tree_util.Partial`` holding the weights, e.g.
  ``Partial(functools.partial(apply, model), variables)`` with
  ``apply(model, variables, x) = model.apply(variables, x, train=False)``: the weights are
  then arguments of one compiled counting function, shared by all cells and all runs with
  the same architecture and batch shape (a plain callable is compiled once per callable,
  with whatever it closes over as constants).
* ``corrupted``: optional output of ``corrupted_sets(images, key, cfg)`` for the same
  images, key and cfg: a sweep corrupts its test set once and evaluates every model on it
  (results identical to corrupting on the fly).
* ``data``: ``(images, labels)`` clean test arrays (float32 [N, H, W, C] in [0, 1], int
  labels). They are corrupted on the fly (``cfg.source = 'on_the_fly'``) and give the clean
  error in every mode; may be None with a released source (no clean error, no relative mCE).
* ``cfg``: a ConfigDict like ``default_config()``.

The returned dict is JSON-serialisable; see ``metrics.summarize`` for the metric fields.
"""
from __future__ import annotations

import os
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from flatrob_jax.corruptions import datasets, heatmap, metrics
from flatrob_jax.corruptions import severity as sev
from flatrob_jax.corruptions.corrupt import corrupt

SOURCES = ("on_the_fly", "cifar10_corrupted", "imagenet2012_corrupted", "npy")


def default_config() -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()
    cfg.source = "on_the_fly"      # one of SOURCES
    cfg.data_dir = ""              # 'npy': directory of <corruption>.npy + labels.npy; TFDS: data_dir ('' = default)
    cfg.corruptions = "benchmark"  # 'benchmark' (15), 'extra' (4), 'all' (19) or comma-separated names
    cfg.severities = "1,2,3,4,5"
    cfg.resolution = "auto"        # on the fly: 'cifar', 'imagenet' or 'auto' (from image size)
    cfg.num_examples = 0           # per corruption and severity; 0 = all
    cfg.batch_size = 250
    cfg.normalize_by_alexnet = "auto"  # 'auto' (ImageNet-sized / ImageNet-C), 'yes' or 'no'
    cfg.heatmap_dir = ""           # where corruption_heatmap.png goes ('' = out_dir argument or none)
    cfg.corrupted_dtype = "float32"  # on the fly: corrupted images are rounded to this before the model;
    # 'uint8' (round(255 x), like the released -C sets, 4x less memory for corrupted_sets) or 'float16'
    return cfg


def parse_corruptions(spec: str):
    groups = {"benchmark": sev.BENCHMARK, "extra": sev.EXTRA, "all": sev.ALL}
    if spec in groups:
        return list(groups[spec])
    names = [s.strip() for s in spec.split(",") if s.strip()]
    for n in names:
        sev.check_name(n)
    return names


def parse_severities(spec) -> list:
    values = [int(s) for s in str(spec).split(",") if s.strip()] if not isinstance(spec, (list, tuple)) else list(spec)
    for s in values:
        sev.check_severity(s)
    return values


def _batches(n: int, batch_size: int):
    for start in range(0, n, batch_size):
        yield start, min(start + batch_size, n)


def _pad(x, size):
    if x.shape[0] == size:
        return x
    return np.concatenate([x, np.repeat(x[-1:], size - x.shape[0], axis=0)], axis=0)


STORAGE_DTYPES = ("float32", "float16", "uint8")


def _to_storage(x: np.ndarray, dtype: str) -> np.ndarray:
    """float32 [0, 1] images -> the storage dtype (uint8: round(255 x), as the released
    -C sets are stored; float16: nearest half)."""
    if dtype == "uint8":
        return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)
    return x.astype(dtype)


def _from_storage(x: np.ndarray) -> np.ndarray:
    """Stored images -> the float32 [0, 1] model input."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    return x.astype(np.float32)


def _model_fn(eval_model) -> jax.tree_util.Partial:
    """``eval_model`` as a ``jax.tree_util.Partial`` so that it is an ARGUMENT of the one
    compiled counting function: its bound arrays (the weights) are traced, not baked in as
    constants, and calls with new weights of the same shapes reuse the compilation. A
    plain callable becomes ``Partial(fn)`` (compiled once per distinct callable)."""
    if isinstance(eval_model, jax.tree_util.Partial):
        return eval_model
    if callable(eval_model):
        return jax.tree_util.Partial(eval_model)
    raise TypeError(f"eval_model must be a callable images -> logits or a jax.tree_util.Partial, "
                    f"got {type(eval_model).__name__}")


@jax.jit
def _count_errors(model_fn, images, labels, valid):
    """Number of misclassified valid images; compiled once per (model structure, batch shape)."""
    pred = jnp.argmax(model_fn(images), axis=-1)
    return jnp.sum((pred != labels) & valid)


_corrupt = jax.jit(corrupt, static_argnames=("name", "severity", "resolution"))


def _cell_key(key, name, severity):
    return jax.random.fold_in(jax.random.fold_in(key, sev.ALL.index(name)), severity)


def _corrupted_batches(images, cell_key, name, severity, resolution, batch_size, storage):
    """Yield (start, stop, stored corrupted batch padded to batch_size). Example i of the
    data set uses fold_in(cell_key, i) whatever the batch size."""
    for start, stop in _batches(images.shape[0], batch_size):
        xb = _pad(np.asarray(images[start:stop], np.float32), batch_size)
        out = _corrupt(cell_key, xb, name=name, severity=severity, resolution=resolution,
                       index_offset=jnp.int32(start))
        yield start, stop, _to_storage(np.asarray(out), storage)


def _error(model_fn, batches, labels, batch_size):
    """Error rate over ``batches`` = iterable of (start, stop, stored images padded)."""
    n = labels.shape[0]
    wrong = 0
    for start, stop, xb in batches:
        yb = _pad(np.asarray(labels[start:stop], np.int32), batch_size)
        valid = np.arange(batch_size) < (stop - start)
        wrong += int(_count_errors(model_fn, _from_storage(xb), yb, valid))
    return wrong / max(n, 1)


def _stored_batches(x, batch_size):
    for start, stop in _batches(x.shape[0], batch_size):
        yield start, stop, _pad(x[start:stop], batch_size)


def _resolution(images, cfg):
    h, w = images.shape[1:3]
    resolution = sev.default_resolution(h, w) if cfg.resolution == "auto" else cfg.resolution
    sev.check_resolution(resolution)
    return resolution


def _storage(cfg):
    if cfg.corrupted_dtype not in STORAGE_DTYPES:
        raise ValueError(f"corrupted_dtype must be one of {STORAGE_DTYPES}, got {cfg.corrupted_dtype!r}")
    return cfg.corrupted_dtype


def corrupted_sets(images, key: jax.Array, cfg: ml_collections.ConfigDict) -> dict:
    """The on-the-fly corrupted test sets, independent of any model, for reuse across the
    runs of a sweep: ``{(name, severity): array [N, H, W, C]}`` in ``cfg.corrupted_dtype``
    (float32, float16, or uint8 = round(255 x)) for the corruptions, severities,
    resolution and ``num_examples`` of ``cfg``. Deterministic for a key; cell (name, s)
    uses ``fold_in(fold_in(key, ALL.index(name)), s)`` and example i ``fold_in(cell_key, i)``,
    exactly as ``evaluate`` does, so ``evaluate(..., corrupted=corrupted_sets(images, key,
    cfg))`` returns what ``evaluate(...)`` returns with the same key and cfg."""
    names = parse_corruptions(cfg.corruptions)
    severities = parse_severities(cfg.severities)
    storage = _storage(cfg)
    limit = cfg.num_examples if cfg.num_examples > 0 else None
    images = np.asarray(images)[:limit]
    resolution = _resolution(images, cfg)
    bs = int(cfg.batch_size)
    out = {}
    for name in names:
        for s in severities:
            parts = [xb[:stop - start] for start, stop, xb in _corrupted_batches(
                images, _cell_key(key, name, s), name, s, resolution, bs, storage)]
            out[(name, s)] = np.concatenate(parts)
    return out


def evaluate(eval_model, data, cfg: ml_collections.ConfigDict, *, key: jax.Array,
             log: Callable = print, out_dir: Optional[str] = None,
             corrupted: Optional[dict] = None) -> dict:
    if cfg.source not in SOURCES:
        raise ValueError(f"unknown corruption source {cfg.source!r}; valid: {SOURCES}")
    names = parse_corruptions(cfg.corruptions)
    severities = parse_severities(cfg.severities)
    storage = _storage(cfg)
    model_fn = _model_fn(eval_model)
    limit = cfg.num_examples if cfg.num_examples > 0 else None
    clean = None
    if data is not None:
        images, labels = data
        images, labels = np.asarray(images)[:limit], np.asarray(labels)[:limit]
        clean = (images, labels)
    elif cfg.source == "on_the_fly":
        raise ValueError("source 'on_the_fly' needs data=(images, labels) to corrupt")
    if corrupted is not None and cfg.source != "on_the_fly":
        raise ValueError(f"corrupted sets are for source 'on_the_fly', not {cfg.source!r}")

    resolution = _resolution(clean[0], cfg) if cfg.source == "on_the_fly" else None
    normalize = {"yes": True, "no": False}.get(cfg.normalize_by_alexnet)
    if normalize is None:
        if cfg.normalize_by_alexnet != "auto":
            raise ValueError(f"normalize_by_alexnet must be 'auto', 'yes' or 'no', got {cfg.normalize_by_alexnet!r}")
        normalize = resolution == "imagenet" or cfg.source == "imagenet2012_corrupted"

    bs = int(cfg.batch_size)
    clean_error = None
    if clean is not None:
        clean_error = _error(model_fn, _stored_batches(clean[0].astype(np.float32), bs), clean[1], bs)
        log(f"corruptions: clean error {clean_error:.4f} on {clean[0].shape[0]} images")

    errors = {n: [] for n in names}
    cells = len(names) * len(severities)
    t0, done_images, n_used = time.time(), 0, None
    for ci, name in enumerate(names):
        for si, s in enumerate(severities):
            if cfg.source == "on_the_fly":
                x, y = clean
                if corrupted is None:
                    batches = _corrupted_batches(x, _cell_key(key, name, s), name, s, resolution, bs, storage)
                else:
                    if (name, s) not in corrupted or corrupted[(name, s)].shape != x.shape:
                        raise ValueError(f"corrupted sets lack ({name!r}, {s}) for images of shape {x.shape}; "
                                         "make them with corrupted_sets(images, key, cfg) and the same cfg")
                    batches = _stored_batches(corrupted[(name, s)], bs)
            else:
                x, y = datasets.load_released(cfg.source, name, s, num_examples=limit,
                                              data_dir=cfg.data_dir or None)
                batches = _stored_batches(np.asarray(x, np.float32), bs)
            err = _error(model_fn, batches, y, bs)
            errors[name].append(err)
            n_used = x.shape[0]
            done_images += x.shape[0]
            k = ci * len(severities) + si + 1
            elapsed = time.time() - t0
            log(f"corruptions: {name} s{s} error {err:.4f} [{k}/{cells}] "
                f"{done_images / max(elapsed, 1e-9):.1f} images/s, ETA {elapsed / k * (cells - k):.0f}s")

    result = metrics.summarize(errors, n_used or 0, clean_error, normalize_by_alexnet=normalize)
    result.update(source=cfg.source, resolution=resolution, severities=severities,
                  num_examples=int(n_used or 0), seconds=time.time() - t0)
    png_dir = cfg.heatmap_dir or out_dir
    if png_dir:
        path = os.path.join(png_dir, "corruption_heatmap.png")
        title = f"top-1 error ({cfg.source}{', ' + resolution if resolution else ''})"
        result["heatmap_png"] = heatmap.write_heatmap(errors, path, title)
        log(f"corruptions: heat map written to {path}")
    return result

