"""Corruption robustness of a trained model: error per corruption x severity, mean corruption
error (CIFAR), mCE and relative mCE normalised by AlexNet (ImageNet), and a heat-map PNG.

Entry point for ``flatrob_jax.analyze``::

    evaluate(eval_model, data, cfg, *, key, log=print, out_dir=None) -> dict

* ``eval_model``: ``fn(images float32 [B, H, W, C] in [0, 1]) -> logits [B, K]``, jittable
  (e.g. ``lambda x: model.apply(variables, x, train=False)``).
* ``data``: ``(images, labels)`` clean test arrays (float32 [N, H, W, C] in [0, 1], int
  labels). They are corrupted on the fly (``cfg.source = 'on_the_fly'``) and give the clean
  error in every mode; may be None with a released source (no clean error, no relative mCE).
* ``cfg``: a ConfigDict like ``default_config()``.

The returned dict is JSON-serialisable; see ``metrics.summarize`` for the metric fields.
"""
from __future__ import annotations

import functools
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


def _count_errors_fn(eval_model: Callable, transform: Optional[Callable]):
    """jit(key, images, labels, valid, offset) -> number of misclassified valid images."""

    def count(key, images, labels, valid, offset):
        x = images if transform is None else transform(key, images, offset)
        pred = jnp.argmax(eval_model(x), axis=-1)
        return jnp.sum((pred != labels) & valid)

    return jax.jit(count)


def _error(count_fn, key, images, labels, batch_size):
    n = images.shape[0]
    wrong = 0
    for start, stop in _batches(n, batch_size):
        xb = _pad(np.asarray(images[start:stop], np.float32), batch_size)
        yb = _pad(np.asarray(labels[start:stop], np.int32), batch_size)
        valid = np.arange(batch_size) < (stop - start)
        wrong += int(count_fn(key, xb, yb, valid, start))
    return wrong / max(n, 1)


def evaluate(eval_model: Callable, data, cfg: ml_collections.ConfigDict, *, key: jax.Array,
             log: Callable = print, out_dir: Optional[str] = None) -> dict:
    if cfg.source not in SOURCES:
        raise ValueError(f"unknown corruption source {cfg.source!r}; valid: {SOURCES}")
    names = parse_corruptions(cfg.corruptions)
    severities = parse_severities(cfg.severities)
    limit = cfg.num_examples if cfg.num_examples > 0 else None
    clean = None
    if data is not None:
        images, labels = data
        images, labels = np.asarray(images)[:limit], np.asarray(labels)[:limit]
        clean = (images, labels)
    elif cfg.source == "on_the_fly":
        raise ValueError("source 'on_the_fly' needs data=(images, labels) to corrupt")

    resolution = None
    if cfg.source == "on_the_fly":
        h, w = clean[0].shape[1:3]
        resolution = sev.default_resolution(h, w) if cfg.resolution == "auto" else cfg.resolution
        sev.check_resolution(resolution)
    normalize = {"yes": True, "no": False}.get(cfg.normalize_by_alexnet)
    if normalize is None:
        if cfg.normalize_by_alexnet != "auto":
            raise ValueError(f"normalize_by_alexnet must be 'auto', 'yes' or 'no', got {cfg.normalize_by_alexnet!r}")
        normalize = resolution == "imagenet" or cfg.source == "imagenet2012_corrupted"

    bs = int(cfg.batch_size)
    clean_error = None
    if clean is not None:
        clean_error = _error(_count_errors_fn(eval_model, None), key, clean[0], clean[1], bs)
        log(f"corruptions: clean error {clean_error:.4f} on {clean[0].shape[0]} images")

    errors = {n: [] for n in names}
    cells = len(names) * len(severities)
    t0, done_images, n_used = time.time(), 0, None
    for ci, name in enumerate(names):
        for si, s in enumerate(severities):
            cell_key = jax.random.fold_in(jax.random.fold_in(key, sev.ALL.index(name)), s)
            if cfg.source == "on_the_fly":
                transform = functools.partial(_corrupt_batch, name=name, severity=s, resolution=resolution)
                x, y = clean
            else:
                transform = None
                x, y = datasets.load_released(cfg.source, name, s, num_examples=limit,
                                              data_dir=cfg.data_dir or None)
            err = _error(_count_errors_fn(eval_model, transform), cell_key, x, y, bs)
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


def _corrupt_batch(key, images, offset, *, name, severity, resolution):
    return corrupt(key, images, name, severity, resolution=resolution, index_offset=offset)
