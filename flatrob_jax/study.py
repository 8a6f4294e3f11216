"""Sweeps as a library: train one model per set of overrides, analyze every checkpoint, report.

A sweep file defines ``get_sweep(arg=None)`` returning a :class:`Sweep`: ``base`` (an
experiment config: a name such as ``'fashion_mnist_cnn:smoke'``, or a path, relative to the
sweep file or absolute), ``overrides`` (applied to every run), ``runs`` (one ``{'a.b': value}``
dict per run, e.g. from :func:`product`) and the report settings.

Every step is resumable: a run whose summary.json says it finished is not trained again (an
unfinished one resumes from its checkpoint), a run whose analysis.json matches the current
analysis settings is not analyzed again, and the report is rebuilt from the analysis files.
``command_line`` gives the per-run training commands, so the same runs can be launched
elsewhere (a TPU pod, a cluster) into the same workdirs; the report step then picks them up.

The root may be a gs:// URI: the runs, the report, results.csv and JAX's compilation cache
then all live in the bucket (``flatrob_jax.fileio``); nothing is written locally.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
import shlex
import sys
import time

from flatrob_jax import distributed, fileio
from flatrob_jax.analysis.design import INTERVENTION_KEYS
from flatrob_jax.configuration import apply_overrides, load_config_file
from flatrob_jax.progress import format_duration

STEPS = ("train", "analyze", "report")


@dataclasses.dataclass
class Sweep:
    base: str  # experiment config: a name ('x[:arg]') or a path, relative to the sweep file
    runs: list  # one {'a.b': value} dict of overrides per run
    overrides: dict = dataclasses.field(default_factory=dict)  # applied to every run
    title: str = "Flatness vs. robustness across augmentations"
    flatness_metrics: tuple = ()  # () = the headline ones the analyses declare
    robust_metrics: tuple = ()  # () = the headline ones the analyses declare
    num_resamples: int = 2000  # bootstrap resamples for the confidence intervals
    # The design the report's statistics read (analysis/design.py): the reference condition's
    # overrides (None: inferred), {family name: strength key} (None: inferred), and the keys
    # whose runs are interventions on flatness at the reference augmentation.
    reference: dict | None = None
    families: dict | None = None
    intervention_keys: tuple = INTERVENTION_KEYS
    # Persist compiled programs under <workdir>/.jax_cache (a gs:// root keeps it in the
    # bucket): runs of one model share their eval, curvature and attack programs (weights are
    # arguments), and a rerun compiles little.
    compilation_cache: bool = True


def product(**axes) -> list:
    """All combinations: ``product(**{'augment.name': [...], 'seed': [0, 1]})``."""
    keys = list(axes)
    return [dict(zip(keys, values)) for values in itertools.product(*axes.values())]


def run_name(overrides: dict) -> str:
    """A readable, filesystem-safe name from the overrides: 'name=augmix,seed=1'."""
    if not overrides:
        return "base"
    parts = [f"{k.split('.')[-1]}={v}" for k, v in overrides.items()]
    if len({k.split(".")[-1] for k in overrides}) < len(overrides):
        parts = [f"{k}={v}" for k, v in overrides.items()]
    return re.sub(r"[^A-Za-z0-9._=,+-]", "_", ",".join(parts))


def _is_path(spec: str) -> bool:
    return spec.partition(":")[0].endswith(".py") or os.sep in spec.partition(":")[0]


def load_sweep(spec: str) -> Sweep:
    """``path.py[:arg]`` or a sweep name in flatrob_jax.configs.sweeps (``'name[:arg]'``) ->
    its ``get_sweep(arg)``, with ``base`` resolved to a path or a config name."""
    from flatrob_jax.configuration import load_config_module

    module, arg = load_config_module(spec, subpackage="sweeps")
    sweep = module.get_sweep(arg or None)
    if not isinstance(sweep, Sweep):
        raise TypeError(
            f"{spec}: get_sweep() must return flatrob_jax.study.Sweep, got {type(sweep).__name__}"
        )
    if _is_path(sweep.base):
        base_path, _, base_arg = sweep.base.partition(":")
        if not os.path.isabs(base_path):
            # The sweep file is Python code imported from local disk, never a URI.
            here = os.path.dirname(os.path.abspath(module.__file__))
            base_path = os.path.normpath(os.path.join(here, base_path))
        sweep.base = base_path + (f":{base_arg}" if base_arg else "")
    names = [run_name(r) for r in sweep.runs]
    if len(set(names)) != len(names):
        raise ValueError(f"two runs of the sweep have the same overrides: {names}")
    return sweep


def run_configs(sweep) -> list:
    """[(name, overrides, config)] for every run, validated before anything starts."""
    base = apply_overrides(load_config_file(sweep.base), dict(sweep.overrides))
    out = []
    for overrides in sweep.runs:
        overrides = dict(overrides)
        out.append((run_name(overrides), overrides, apply_overrides(base, overrides)))
    return out


def command_line(sweep, overrides: dict, workdir: str) -> str:
    """The ``python -m flatrob_jax.train`` line that trains one run of the sweep."""
    parts = [
        os.path.basename(sys.executable),
        "-m",
        "flatrob_jax.train",
        "--config",
        sweep.base,
        "--workdir",
        workdir,
    ]
    for k, v in {**dict(sweep.overrides), **overrides}.items():
        parts.append(f"--config.{k}={v}")
    return " ".join(shlex.quote(p) for p in parts)


def _read_json(workdir: str, name: str):
    """The JSON file ``workdir/name``, or None when it does not exist yet."""
    path = fileio.join(workdir, name)
    if not fileio.exists(path):
        return None
    return json.loads(fileio.read_text(path))


def training_finished(workdir: str, config) -> bool:
    summary = _read_json(workdir, "summary.json")
    if summary is None:
        return False
    if summary.get("imported"):  # an imported checkpoint (python -m flatrob_jax.import_torch)
        return True
    want = config.train.num_steps if (config.train.num_steps or 0) > 0 else None
    return want is None or summary.get("steps") == want


def analysis_current(workdir: str, config) -> bool:
    stored = _read_json(workdir, "analysis.json")
    if stored is None:
        return False
    return stored.get("analysis_config") == json.loads(config.analysis.to_json(sort_keys=True))


def _enable_compilation_cache(directory: str) -> None:
    import jax

    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def report_rows(sweep_runs, root: str, log=print) -> list:
    """The tidy results rows of every run of the sweep that has an analysis.json."""
    from flatrob_jax.analysis import registry, rows_from_results

    tops = {registry.get(n).where.split("/")[0] for n in registry.names()}
    rows = []
    for name, overrides, _ in sweep_runs:
        results = _read_json(fileio.join(root, name), "analysis.json")
        if results is None:
            log(f"{name}: no analysis.json yet; left out of the report")
            continue
        keep = {k: v for k, v in results.items() if k in tops}
        rows += rows_from_results(name, keep, overrides=overrides)
    return rows


def run_sweep(sweep, root: str, steps=STEPS, log=print) -> dict:
    """Train, analyze and report every run of ``sweep`` under ``root``; returns the paths."""
    from flatrob_jax.analysis.runner import analyze_runs
    from flatrob_jax.training.trainer import train_and_evaluate

    fileio.require_support(root)  # a gs:// root without the storage extra fails before any work
    runs = run_configs(sweep)
    fileio.require_support(*{c.dataset.data_dir for _, _, c in runs})
    fileio.makedirs(root)
    distributed.check_shared_workdir(root)  # several hosts: all must see process 0's files
    if sweep.compilation_cache:
        _enable_compilation_cache(fileio.join(root, ".jax_cache"))
    t0 = time.time()
    log(f"sweep of {len(runs)} runs in {root}; per-run training commands:")
    for name, overrides, _ in runs:
        log("  " + command_line(sweep, overrides, fileio.join(root, name)))
    # What is done already is read from files on process 0 and broadcast: every process
    # takes the same branches (and so reaches the same collectives).
    if "train" in steps:
        finished = distributed.decide_on_main(
            lambda: [
                training_finished(fileio.join(root, name), config) for name, _, config in runs
            ],
            "which runs are trained",
        )
        for i, (name, _, config) in enumerate(runs):
            workdir = fileio.join(root, name)
            if finished[i]:
                log(f"[{i + 1}/{len(runs)}] {name}: trained already")
                continue
            log(
                f"[{i + 1}/{len(runs)}] {name}: training "
                f"(elapsed {format_duration(time.time() - t0)})"
            )
            train_and_evaluate(config, workdir)
    if "analyze" in steps:
        cache: dict = {}  # model-independent analysis work shared by the runs (corrupted sets)
        current = distributed.decide_on_main(
            lambda: [analysis_current(fileio.join(root, name), config) for name, _, config in runs],
            "which runs are analyzed",
        )
        jobs = []
        for i, (name, _, config) in enumerate(runs):
            workdir = fileio.join(root, name)
            if current[i]:
                log(f"[{i + 1}/{len(runs)}] {name}: analyzed already")
                continue
            jobs.append((workdir, config.analysis))
        log(f"analyzing {len(jobs)} runs (elapsed {format_duration(time.time() - t0)})")
        # Several hosts: each analyzes its share of the runs on its own devices (see there).
        analyze_runs(jobs, log=log, cache=cache, check_shared=False)
    paths = {}
    if "report" in steps:  # written by process 0, its paths given to every process
        paths = distributed.decide_on_main(
            lambda: _write_report(sweep, runs, root, log), "the report"
        )
    log(f"sweep done in {format_duration(time.time() - t0)}")
    return paths


def _write_report(sweep, runs, root: str, log) -> dict:
    """results.csv, results.json and the report from every run's analysis.json."""
    from flatrob_jax.analysis import headline_metrics, write_csv, write_json, write_report

    paths = {}
    rows = report_rows(runs, root, log)
    paths["results_csv"] = write_csv(rows, fileio.join(root, "results.csv"))
    paths["results_json"] = write_json(rows, fileio.join(root, "results.json"))
    headlines = headline_metrics(sorted({r["metric"] for r in rows}))
    paths["report"] = write_report(
        rows,
        fileio.join(root, "report"),
        title=sweep.title,
        flatness_metrics=list(sweep.flatness_metrics) or headlines.flatness,
        robust_metrics=list(sweep.robust_metrics) or headlines.robustness,
        clean_metric=headlines.clean,
        num_resamples=sweep.num_resamples,
        reference=sweep.reference,
        families=sweep.families,
        intervention_keys=tuple(sweep.intervention_keys),
    )
    log(f"report: {paths['report']}")
    return paths
