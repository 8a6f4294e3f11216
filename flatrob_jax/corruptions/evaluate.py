"""Corruption robustness of a trained model: error per corruption x severity, mean corruption
error (CIFAR), mCE and relative mCE normalised by AlexNet (ImageNet), and a heat-map PNG.

Entry points for the analysis (plain keyword settings, no config objects)::

    evaluate(apply_fn, data, *, key, log=print, out_dir=None, corrupted=None, **settings)
    corrupted_sets(images, key, **settings) -> {(name, severity): array [N, H, W, C]}

* ``apply_fn``: the model, ``fn(images float32 [B, H, W, C] in [0, 1]) -> logits [B, K]``:
  anything ``flatrob_jax.execution.as_model_fn`` takes; preferably a
  ``jax.tree_util.Partial`` holding the weights (``load_for_eval(...).apply_fn``,
  ``execution.model_fn(model, variables)``): the weights are then arguments of one compiled
  counting program, shared by all cells and all runs with the same architecture.
* ``corrupted``: optional output of ``corrupted_sets(images, key, ...)`` for the same images,
  key and settings: a sweep corrupts its test set once and evaluates every model on it
  (results identical to corrupting on the fly).
* ``data``: ``(images, labels)`` clean test arrays (float32 [N, H, W, C] in [0, 1], int
  labels). They are corrupted on the fly (``source='on_the_fly'``) and give the clean error
  in every mode; may be None with a released source (no clean error, no relative mCE).

Execution: corrupting and counting errors run through ``flatrob_jax.execution`` in fixed
padded batches sharded over the devices; example ``i`` of cell ``(name, s)`` draws its noise
from ``fold_in(fold_in(fold_in(key, ALL.index(name)), s), i)``, so the numbers do not depend on
the batch size or the device count.

The returned dict is JSON-serialisable; see ``metrics.summarize`` for the metric fields.
"""

from __future__ import annotations

import os
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from flatrob_jax import distributed, execution
from flatrob_jax.corruptions import datasets, heatmap, metrics
from flatrob_jax.corruptions import severity as sev
from flatrob_jax.corruptions.corrupt import corrupt_examples
from flatrob_jax.progress import Progress

SOURCES = ("on_the_fly", "cifar10_corrupted", "imagenet2012_corrupted", "npy")
GROUPS = {"benchmark": sev.BENCHMARK, "extra": sev.EXTRA, "all": sev.ALL}
STORAGE_DTYPES = ("float32", "float16", "uint8")


def parse_corruptions(spec) -> list:
    """Names and/or groups (``'benchmark'`` (15), ``'extra'`` (4), ``'all'`` (19)) -> the list
    of corruption names, groups expanded in place, duplicates dropped. A single string is
    one entry."""
    entries = (spec,) if isinstance(spec, str) else tuple(spec)
    if not entries:
        raise ValueError(
            f"corruptions is empty; give names and/or groups {tuple(GROUPS)} (e.g. ('benchmark',))"
        )
    names: list = []
    for entry in entries:
        if entry in GROUPS:
            names.extend(GROUPS[entry])
        else:
            try:
                sev.check_name(entry)
            except ValueError as e:
                raise ValueError(
                    f"{e} (or a group: {tuple(GROUPS)}; several entries go in a "
                    "tuple, not a comma-separated string)"
                ) from e
            names.append(entry)
    return list(dict.fromkeys(names))


def parse_severities(spec) -> list:
    """A tuple of severities 1..5 (one int is one severity) -> list of ints."""
    values = [spec] if isinstance(spec, (int, np.integer)) else list(spec)
    if not values:
        raise ValueError(f"severities is empty; allowed values: {sev.SEVERITIES}")
    for s in values:
        sev.check_severity(s)
    return [int(s) for s in values]


def _resolution(images, resolution) -> str:
    if resolution in (None, "auto"):
        return sev.default_resolution(*images.shape[1:3])
    sev.check_resolution(resolution)
    return resolution


def _check_storage(corrupted_dtype: str) -> str:
    if corrupted_dtype not in STORAGE_DTYPES:
        raise ValueError(
            f"corrupted_dtype must be one of {STORAGE_DTYPES}, got {corrupted_dtype!r}"
        )
    return corrupted_dtype


def _to_storage(x: jax.Array, dtype: str) -> jax.Array:
    """float32 [0, 1] images -> the storage dtype (uint8: round(255 x), as the released -C
    sets are stored; float16: nearest half)."""
    if dtype == "uint8":
        return jnp.clip(jnp.round(x * 255.0), 0, 255).astype(jnp.uint8)
    return x.astype(dtype)


def _corrupt_program(
    model_fn,
    valid,
    x,
    y,
    key_data,
    *,
    name: str,
    severity: int,
    resolution: str,
    storage: str,
    key_impl: str,
):
    """Per-device: corrupt each image with its own key, round to the storage dtype; the
    labels pass through so that the counting program gets them padded and sharded alike."""
    del model_fn, valid
    keys = execution.wrap_keys(key_data, key_impl)
    out = corrupt_examples(keys, x, name, severity, resolution=resolution)
    return _to_storage(out, storage), y


def _cell_key(key, name, severity):
    return jax.random.fold_in(jax.random.fold_in(key, sev.ALL.index(name)), severity)


def _corrupt_static(name, severity, resolution, storage) -> dict:
    return dict(name=name, severity=int(severity), resolution=resolution, storage=storage)


def _error_on_the_fly(model, images, labels, cell_key, static, batch_size, mesh) -> float:
    """Error on the corrupted cell without materialising it: each padded batch is corrupted
    and counted on the devices (two programs: the model's is shared by every cell)."""
    count = execution.sharded(execution.misclassified, {}, mesh, 2)
    model = jax.device_put(model, distributed.replicated(mesh))
    wrong = 0
    for batch in execution.iter_batched(
        _corrupt_program,
        static,
        None,
        (images, labels),
        batch_size=batch_size,
        mesh=mesh,
        key=cell_key,
    ):
        (flags,) = count(model, batch.valid, *batch.outputs)
        wrong += int(np.asarray(flags)[: batch.hi - batch.lo].sum())
    return wrong / images.shape[0]


def corrupted_sets(
    images,
    key: jax.Array,
    *,
    corruptions=("benchmark",),
    severities=(1, 2, 3, 4, 5),
    resolution: Optional[str] = "auto",
    num_examples: Optional[int] = None,
    batch_size: int = 250,
    corrupted_dtype: str = "float32",
    num_devices: Optional[int] = None,
) -> dict:
    """The on-the-fly corrupted test sets, independent of any model, for reuse across the
    runs of a sweep: ``{(name, severity): array [N, H, W, C]}`` in ``corrupted_dtype``
    (float32, float16, or uint8 = round(255 x)) for the ``corruptions``, ``severities``,
    ``resolution`` and first ``num_examples`` images (None: all). Deterministic for a key;
    cell (name, s) uses ``fold_in(fold_in(key, ALL.index(name)), s)`` and example i
    ``fold_in(cell_key, i)``, exactly as :func:`evaluate` does, so ``evaluate(...,
    corrupted=corrupted_sets(images, key, **same))`` returns what ``evaluate(...)`` returns."""
    names = parse_corruptions(corruptions)
    levels = parse_severities(severities)
    storage = _check_storage(corrupted_dtype)
    execution.check_count("num_examples", num_examples)
    execution.check_count("num_devices", num_devices, none_means="all devices")
    images = np.asarray(images, np.float32)[:num_examples]
    res = _resolution(images, resolution)
    mesh = execution.make_mesh(num_devices)
    labels = np.zeros(images.shape[0], np.int32)
    out = {}
    for name in names:
        for s in levels:
            stored, _ = execution.run_batched(
                _corrupt_program,
                _corrupt_static(name, s, res, storage),
                None,
                (images, labels),
                batch_size=batch_size,
                mesh=mesh,
                key=_cell_key(key, name, s),
            )
            out[(name, s)] = stored
    return out


def evaluate(
    apply_fn,
    data,
    *,
    key: jax.Array,
    log: Callable[[str], None] = print,
    out_dir: Optional[str] = None,
    corrupted: Optional[dict] = None,
    source: str = "on_the_fly",
    data_dir: Optional[str] = "",
    corruptions=("benchmark",),
    severities=(1, 2, 3, 4, 5),
    resolution: Optional[str] = "auto",
    num_examples: Optional[int] = None,
    batch_size: int = 250,
    normalize_by_alexnet: Optional[bool] = None,
    heatmap_dir: Optional[str] = "",
    corrupted_dtype: str = "float32",
    num_devices: Optional[int] = None,
) -> dict:
    """Errors of ``apply_fn`` on every corruption x severity (see the module docstring).

    Settings:
      source: one of :data:`SOURCES`: ``'on_the_fly'`` corrupts ``data``; the others read the
        released sets (TFDS ``cifar10_corrupted``/``imagenet2012_corrupted``, or ``'npy'``: a
        directory ``data_dir`` of ``<corruption>.npy`` + ``labels.npy``).
      data_dir: the ``'npy'`` directory, or TFDS's data_dir ('' or None: TFDS's default).
      corruptions: names and/or groups ``'benchmark'``, ``'extra'``, ``'all'`` (a tuple).
      severities: a tuple of severities 1..5.
      resolution: on the fly: ``'cifar'``, ``'imagenet'`` or ``'auto'``/None (from the size).
      num_examples: per cell, the first examples; None: all.
      batch_size: fixed global batch (rounded up to the device count).
      normalize_by_alexnet: mCE normalised by AlexNet's errors; None: auto (ImageNet-sized
        images on the fly, or ImageNet-C).
      heatmap_dir: where ``corruption_heatmap.png`` goes ('' or None: ``out_dir``, or none).
      corrupted_dtype: on the fly: corrupted images are rounded to ``'float32'``,
        ``'float16'`` or ``'uint8'`` (round(255 x), like the released sets) before the model.
      num_devices: devices of the mesh; None: all.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown corruption source {source!r}; valid: {SOURCES}")
    names = parse_corruptions(corruptions)
    levels = parse_severities(severities)
    storage = _check_storage(corrupted_dtype)
    execution.check_count("num_examples", num_examples)
    execution.check_count("num_devices", num_devices, none_means="all devices")
    if normalize_by_alexnet not in (None, True, False):
        raise ValueError(
            f"normalize_by_alexnet must be None (auto), True or False, got {normalize_by_alexnet!r}"
        )
    model = execution.as_model_fn(apply_fn)
    mesh = execution.make_mesh(num_devices)
    clean = None
    if data is not None:
        images, labels = data
        clean = (
            np.asarray(images, np.float32)[:num_examples],
            np.asarray(labels, np.int32)[:num_examples],
        )
    elif source == "on_the_fly":
        raise ValueError("source 'on_the_fly' needs data=(images, labels) to corrupt")
    if corrupted is not None and source != "on_the_fly":
        raise ValueError(f"corrupted sets are for source 'on_the_fly', not {source!r}")

    res = _resolution(clean[0], resolution) if source == "on_the_fly" else None
    normalize = normalize_by_alexnet
    if normalize is None:
        normalize = res == "imagenet" or source == "imagenet2012_corrupted"

    clean_error = None
    if clean is not None:
        clean_error = execution.error_rate(model, *clean, batch_size=batch_size, mesh=mesh)
        log(f"corruptions: clean error {clean_error:.4f} on {clean[0].shape[0]} images")

    errors = {n: [] for n in names}
    cells = len(names) * len(levels)
    progress = Progress(
        cells * (clean[0].shape[0] if clean is not None else 0),
        unit="image",
        desc="corruptions",
        log=log,
    )
    done_images, n_used = 0, None
    for name in names:
        for s in levels:
            if source == "on_the_fly":
                x, y = clean
                if corrupted is None:
                    err = _error_on_the_fly(
                        model,
                        x,
                        y,
                        _cell_key(key, name, s),
                        _corrupt_static(name, s, res, storage),
                        batch_size,
                        mesh,
                    )
                else:
                    if (name, s) not in corrupted or corrupted[(name, s)].shape != x.shape:
                        raise ValueError(
                            f"corrupted sets lack ({name!r}, {s}) for images of shape "
                            f"{x.shape}; make them with corrupted_sets(images, key, ...) and "
                            "the same settings"
                        )
                    err = execution.error_rate(
                        model, corrupted[(name, s)], y, batch_size=batch_size, mesh=mesh
                    )
            else:
                x, y = datasets.load_released(
                    source, name, s, num_examples=num_examples, data_dir=data_dir or None
                )
                if clean is None and done_images == 0:
                    progress.total = cells * x.shape[0]
                err = execution.error_rate(model, x, y, batch_size=batch_size, mesh=mesh)
            errors[name].append(err)
            n_used = x.shape[0]
            done_images += x.shape[0]
            progress.report(done_images, f"{name} s{s} error {err:.4f}")

    result = metrics.summarize(errors, n_used or 0, clean_error, normalize_by_alexnet=normalize)
    result.update(
        source=source,
        resolution=res,
        severities=levels,
        num_examples=int(n_used or 0),
        seconds=progress.elapsed(),
    )
    png_dir = heatmap_dir or out_dir
    if png_dir:
        path = os.path.join(png_dir, "corruption_heatmap.png")
        title = f"top-1 error ({source}{', ' + res if res else ''})"
        result["heatmap_png"] = heatmap.write_heatmap(errors, path, title)
        log(f"corruptions: heat map written to {path}")
    return result
