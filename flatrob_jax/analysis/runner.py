"""Analyze one run: every configured analysis on its latest checkpoint, into
``workdir/analysis.json`` (plots beside it in ``workdir/analysis/``).

``analyze_run(workdir, cfg)`` is what ``python -m flatrob_jax.analyze`` and the sweep call;
``analysis_config_for(workdir, overrides)`` is the run's stored ``analysis`` section completed
with today's defaults, plus ``analysis.x=v`` overrides.
"""
from __future__ import annotations

import json
import os
import time

import jax
import ml_collections
import numpy as np

from flatrob_jax import fileio
from flatrob_jax.analysis import registry
from flatrob_jax.analysis.config import default_config
from flatrob_jax.configuration import apply_overrides, load_run_config
from flatrob_jax.runs import load_for_eval


def _set_in(results: dict, path: str, value: dict) -> None:
    *parents, leaf = path.split("/")
    node = results
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value


def analyze_run(workdir: str, cfg: ml_collections.ConfigDict, log=print,
                cache: dict | None = None) -> dict:
    """Run the analyses ``cfg.measures`` on the latest checkpoint of ``workdir``; return the
    results dict and write it atomically to ``workdir/analysis.json``.

    ``cache``: a dict the caller keeps across runs (the sweep does); model-independent work,
    the corrupted test sets, is done once and reused from it."""
    from flatrob_jax.data import load_arrays

    t0 = time.time()
    fileio.require_support(workdir)  # a gs:// workdir without the storage extra fails now
    measures = registry.check_measures(cfg.measures)
    entries = [registry.get(m) for m in measures]
    run = load_for_eval(workdir)
    config = run.config
    results = {"step": run.step, "workdir": os.fspath(workdir),
               "augment": config.augment.name, "model": config.model.name,
               "dataset": config.dataset.name, "measures": list(measures),
               "analysis_config": json.loads(cfg.to_json(sort_keys=True))}
    out_dir = fileio.join(workdir, "analysis")
    fileio.makedirs(out_dir)
    needs = {e.data for e in entries}
    test = train = None
    if "test" in needs:
        test = load_arrays(config.dataset, config.dataset.eval_split, cfg.num_test_examples)
    if "train" in needs:
        train = load_arrays(config.dataset, config.dataset.train_split, cfg.num_train_examples)
    inputs = registry.Inputs(model=run, test=test, train=train, key=jax.random.key(cfg.seed),
                             out_dir=out_dir, cache=cache)
    for entry in entries:
        settings = cfg[entry.section].to_dict() if entry.section else {}
        prefixed = lambda msg, name=entry.name: log(f"[{workdir}] {name}: {msg}")  # noqa: E731
        _set_in(results, entry.where, entry.run(inputs, log=prefixed, **settings))
    results["seconds"] = time.time() - t0
    fileio.atomic_write_text(fileio.join(workdir, "analysis.json"),
                             json.dumps(_jsonable(results), indent=2))
    log(f"[{workdir}] analysis done in {results['seconds']:.0f}s -> analysis.json")
    return results


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.generic, np.ndarray)) or hasattr(x, "__array__"):
        arr = np.asarray(x)
        return arr.item() if arr.ndim == 0 else arr.tolist()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def analysis_config_for(workdir: str, overrides=()) -> ml_collections.ConfigDict:
    """The run's stored ``analysis`` section (read in today's vocabulary), completed with
    today's defaults, plus ``['analysis.x=v', ...]`` overrides. Stored fields that no longer
    exist are ignored."""
    cfg = ml_collections.ConfigDict({"analysis": default_config()})
    stored = load_run_config(workdir)
    if "analysis" in stored:
        known = _flatten("analysis", stored.analysis.to_dict())
        cfg = apply_overrides(cfg, {k: v for k, v in known.items() if _has(cfg, k)})
    return apply_overrides(cfg, list(overrides)).analysis


def _has(cfg, dotted: str) -> bool:
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            return False
        node = node[part]
    return True


def _flatten(prefix, d):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(f"{prefix}.{k}", v))
        else:
            out[f"{prefix}.{k}"] = tuple(v) if isinstance(v, list) else v
    return out
