"""Analyze one run: every configured analysis on its latest checkpoint, into
``workdir/analysis.json`` (plots beside it in ``workdir/analysis/``).

``analyze_run(workdir, cfg)`` analyzes one run; ``analyze_runs(jobs)``, what
``python -m flatrob_jax.analyze`` and the sweep call, several (on several hosts, one run per
process, each on its own devices);
``analysis_config_for(workdir, overrides)`` is the run's stored ``analysis`` section completed
with today's defaults, plus ``analysis.x=v`` overrides.
"""

from __future__ import annotations

import json
import os
import time

import jax
import ml_collections

from flatrob_jax import distributed, fileio
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


def analyze_run(
    workdir: str,
    cfg: ml_collections.ConfigDict,
    log=print,
    cache: dict | None = None,
    before_write=None,
) -> dict:
    """Run the analyses ``cfg.measures`` on the latest checkpoint of ``workdir``; return the
    results dict and write it atomically to ``workdir/analysis.json``.

    ``cache``: a dict the caller keeps across runs (the sweep does); model-independent work,
    the corrupted test sets, is done once and reused from it. ``before_write``: called before
    analysis.json is written; it raises to stop without writing (a sweep unit's lease)."""
    from flatrob_jax.data import load_arrays

    t0 = time.time()
    fileio.require_support(workdir)  # a gs:// workdir without the storage extra fails now
    measures = registry.check_measures(cfg.measures)
    entries = [registry.get(m) for m in measures]
    run = load_for_eval(workdir)
    config = run.config
    results = {
        "step": run.step,
        "workdir": os.fspath(workdir),
        "augment": config.augment.name,
        "model": config.model.name,
        "dataset": config.dataset.name,
        "measures": list(measures),
        "analysis_config": json.loads(cfg.to_json(sort_keys=True)),
        # What the numbers were computed on: on TPU the default matmul precision is
        # bf16-based (docs/cloud_tpu.md); JAX_DEFAULT_MATMUL_PRECISION=highest raises it.
        "platform": jax.default_backend(),
        "matmul_precision": jax.config.jax_default_matmul_precision or "default",
    }
    out_dir = fileio.join(workdir, "analysis")
    fileio.makedirs(out_dir)
    needs = {e.data for e in entries}
    test = train = None
    if "test" in needs:
        test = load_arrays(config.dataset, config.dataset.eval_split, cfg.num_test_examples)
    if "train" in needs:
        train = load_arrays(config.dataset, config.dataset.train_split, cfg.num_train_examples)
    inputs = registry.Inputs(
        model=run,
        test=test,
        train=train,
        key=jax.random.key(cfg.seed),
        out_dir=out_dir,
        cache=cache,
    )
    for entry in entries:
        settings = cfg[entry.section].to_dict() if entry.section else {}
        prefixed = lambda msg, name=entry.name: log(f"[{workdir}] {name}: {msg}")  # noqa: E731
        _set_in(results, entry.where, entry.run(inputs, log=prefixed, **settings))
    results["seconds"] = time.time() - t0
    if before_write is not None:
        before_write()
    fileio.write_json(fileio.join(workdir, "analysis.json"), results, indent=2)
    log(f"[{workdir}] analysis done in {results['seconds']:.0f}s -> analysis.json")
    return results


def analyze_runs(
    jobs, log=print, cache: dict | None = None, check_shared: bool = True, before_write=None
) -> list:
    """:func:`analyze_run` for each ``(workdir, cfg)`` of ``jobs``; returns their results, None
    for runs another process analyzed.

    Several processes (one per host of a pod): run ``i`` is analyzed by process ``i % P`` alone,
    over its own devices (``distributed.process_local``), and that process writes the run's
    analysis.json; the call returns on every process once every run is done. Why one run per
    process rather than every run over the global mesh: an analysis is a long chain of small
    host-driven steps (attack iterations with early exits, Lanczos steps, per-severity
    corruption passes) on a few thousand examples, so across hosts each step would wait on
    cross-host collectives and any data-dependent branch would have to be agreed on; run per
    process, analyses need no collective at all (nothing can hang), a sweep's runs proceed
    P at a time, and each result is what one host alone computes. A failure on one process
    raises on every process once the others are done, instead of leaving them waiting.
    ``before_write``: see :func:`analyze_run`."""
    jobs = list(jobs)
    if check_shared:
        for workdir in dict.fromkeys(w for w, _ in jobs):
            distributed.check_shared_workdir(workdir)
    index, count = jax.process_index(), jax.process_count()
    results, error = [None] * len(jobs), None
    with distributed.process_local():
        for i, (workdir, cfg) in enumerate(jobs):
            if i % count != index:
                continue
            try:
                results[i] = analyze_run(
                    workdir, cfg, log=log, cache=cache, before_write=before_write
                )
            except Exception as e:  # noqa: BLE001 - raised below, after the others are told
                error = e
                break
    failed = distributed.gather_flags(error is not None)  # also the barrier after the writes
    if error is not None:
        raise error
    if any(failed):
        raise RuntimeError(
            f"analysis failed on process(es) "
            f"{[i for i, f in enumerate(failed) if f]}; see their logs"
        )
    return results


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
