"""Sweeps: train one model per set of overrides, analyze every checkpoint, report.

    python -m flatrob_jax.sweep --sweep configs/sweeps/fashion_mnist_augmentations.py \
        --workdir workdirs/fm_study [--only train|analyze|report] [--print_commands]

A sweep file defines ``get_sweep(arg=None)`` returning a ``Sweep``: ``base`` (an experiment
config spec, relative to the sweep file or absolute), ``overrides`` (applied to every run),
``runs`` (a list of ``{'a.b': value}`` dicts, e.g. from ``product``) and the report settings.

Every step is resumable: a run whose summary.json says it finished is not trained again (an
unfinished one resumes from its checkpoint), a run whose analysis.json matches the current
analysis settings is not analyzed again, and the report is rebuilt from the analysis files.
The per-run command lines are printed so the same runs can be launched elsewhere (a TPU pod,
a cluster) into the same workdirs; the report step then picks them up.
"""
import dataclasses
import itertools
import json
import os
import re
import shlex
import sys
import time

from flatrob_jax.configuration import apply_overrides, load_config_file
from flatrob_jax.metrics_log import format_duration

STEPS = ("train", "analyze", "report")


@dataclasses.dataclass
class Sweep:
    base: str  # experiment config spec 'path.py[:arg]', relative to the sweep file
    runs: list  # one {'a.b': value} dict of overrides per run
    overrides: dict = dataclasses.field(default_factory=dict)  # applied to every run
    title: str = "Flatness vs. robustness across augmentations"
    flatness_metrics: tuple = ()  # () = the headline ones (see headline_metrics)
    robust_metrics: tuple = ()  # () = the headline ones (see headline_metrics)
    num_resamples: int = 2000  # bootstrap resamples for the confidence intervals
    # Persist compiled programs under <workdir>/.jax_cache: runs of one model share their
    # eval, curvature and attack programs (weights are arguments), and a rerun compiles little.
    compilation_cache: bool = True


def _enable_compilation_cache(directory: str) -> None:
    import jax

    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


FLATNESS_HEADLINES = ("lambda_max", "trace", "keskar_sharpness", "adaptive_sharpness_worst",
                      "adaptive_sharpness_average", "pac_bayes_sigma")
ROBUST_HEADLINES = ("corruptions/mean_corruption_error", "corruptions/mCE",
                    "corruptions/relative_mCE")


def headline_metrics(metrics) -> tuple:
    """The measures a report correlates by default: lambda_max, trace and the sharpness
    measures (on clean and augmented data) against the mean corruption error / mCE and the
    PGD and AutoAttack errors. Bookkeeping (residuals, per-layer traces, timings) is left out."""
    flat = [m for m in metrics if m.startswith("curvature/") and "/seconds/" not in m
            and any(m.endswith("/" + h) or m.endswith("/" + h + "/value") for h in FLATNESS_HEADLINES)]
    robust = [m for m in metrics if m in ROBUST_HEADLINES or (
        m.startswith("attacks/") and (m.endswith("/pgd/error") or m.endswith("/autoattack/error")))]
    return flat, robust


def product(**axes) -> list:
    """All combinations: ``product(**{'augment.name': [...], 'seed': [0, 1]})``."""
    keys = list(axes)
    return [dict(zip(keys, values)) for values in itertools.product(*axes.values())]


def run_name(overrides: dict) -> str:
    """A readable, filesystem-safe name from the overrides: 'name=augmix,seed=1'."""
    if not overrides:
        return "base"
    parts = [f"{k.split('.')[-1]}={v}" for k, v in overrides.items()]
    if len({k.split('.')[-1] for k in overrides}) < len(overrides):
        parts = [f"{k}={v}" for k, v in overrides.items()]
    return re.sub(r"[^A-Za-z0-9._=,+-]", "_", ",".join(parts))


def load_sweep(spec: str) -> Sweep:
    """``path.py[:arg]`` -> the sweep file's ``get_sweep(arg)``, with ``base`` resolved."""
    import importlib.util

    path, _, arg = spec.partition(":")
    if not os.path.exists(path):
        raise FileNotFoundError(f"sweep file {path!r} not found")
    module_spec = importlib.util.spec_from_file_location("_flatrob_sweep", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    sweep = module.get_sweep(arg or None)
    if not isinstance(sweep, Sweep):
        raise TypeError(f"{path}: get_sweep() must return flatrob_jax.sweep.Sweep, got "
                        f"{type(sweep).__name__}")
    base_path, _, base_arg = sweep.base.partition(":")
    if not os.path.isabs(base_path):
        base_path = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), base_path))
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
    parts = [sys.executable.split("/")[-1], "-m", "flatrob_jax.train", "--config", sweep.base,
             "--workdir", workdir]
    for k, v in {**dict(sweep.overrides), **overrides}.items():
        parts.append(f"--config.{k}={v}")
    return " ".join(shlex.quote(p) for p in parts)


def _read_json(workdir: str, name: str):
    """The JSON file ``workdir/name``, or None when it does not exist yet."""
    path = os.path.join(workdir, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def training_finished(workdir: str, config) -> bool:
    summary = _read_json(workdir, "summary.json")
    if summary is None:
        return False
    want = config.train.num_steps if config.train.num_steps > 0 else None
    return want is None or summary.get("steps") == want


def analysis_current(workdir: str, config) -> bool:
    stored = _read_json(workdir, "analysis.json")
    if stored is None:
        return False
    return stored.get("analysis_config") == json.loads(config.analysis.to_json(sort_keys=True))


def run_sweep(sweep, root: str, steps=STEPS, log=print) -> dict:
    """Train, analyze and report every run of ``sweep`` under ``root``; returns the paths."""
    from flatrob_jax.analysis import rows_from_results, write_csv, write_json, write_report
    from flatrob_jax.analyze import analyze_run
    from flatrob_jax.training.trainer import train_and_evaluate

    runs = run_configs(sweep)
    os.makedirs(root, exist_ok=True)
    if sweep.compilation_cache:
        _enable_compilation_cache(os.path.join(root, ".jax_cache"))
    t0 = time.time()
    log(f"sweep of {len(runs)} runs in {root}; per-run training commands:")
    for name, overrides, _ in runs:
        log("  " + command_line(sweep, overrides, os.path.join(root, name)))
    if "train" in steps:
        for i, (name, _, config) in enumerate(runs):
            workdir = os.path.join(root, name)
            if training_finished(workdir, config):
                log(f"[{i + 1}/{len(runs)}] {name}: trained already")
                continue
            log(f"[{i + 1}/{len(runs)}] {name}: training (elapsed {format_duration(time.time() - t0)})")
            train_and_evaluate(config, workdir)
    if "analyze" in steps:
        cache: dict = {}  # model-independent analysis work shared by the runs (corrupted sets)
        for i, (name, _, config) in enumerate(runs):
            workdir = os.path.join(root, name)
            if analysis_current(workdir, config):
                log(f"[{i + 1}/{len(runs)}] {name}: analyzed already")
                continue
            log(f"[{i + 1}/{len(runs)}] {name}: analyzing (elapsed {format_duration(time.time() - t0)})")
            analyze_run(workdir, config.analysis, log=log, cache=cache)
    paths = {}
    if "report" in steps:
        rows = []
        for name, overrides, _ in runs:
            path = os.path.join(root, name, "analysis.json")
            if not os.path.exists(path):
                log(f"{name}: no analysis.json yet; left out of the report")
                continue
            with open(path) as f:
                results = json.load(f)
            keep = {k: v for k, v in results.items()
                    if k in ("clean", "curvature", "corruptions", "attacks")}
            rows += rows_from_results(name, keep, overrides=overrides)
        paths["results_csv"] = write_csv(rows, os.path.join(root, "results.csv"))
        paths["results_json"] = write_json(rows, os.path.join(root, "results.json"))
        flat, robust = headline_metrics(sorted({r["metric"] for r in rows}))
        paths["report"] = write_report(
            rows, os.path.join(root, "report"), title=sweep.title,
            flatness_metrics=list(sweep.flatness_metrics) or flat,
            robust_metrics=list(sweep.robust_metrics) or robust,
            num_resamples=sweep.num_resamples)
        log(f"report: {paths['report']}")
    log(f"sweep done in {format_duration(time.time() - t0)}")
    return paths


def main(argv):
    del argv
    from absl import flags, logging

    logging.set_verbosity(logging.WARNING)
    FLAGS = flags.FLAGS
    sweep = load_sweep(FLAGS.sweep)
    if FLAGS.print_commands:
        for name, overrides, _ in run_configs(sweep):
            print(command_line(sweep, overrides, os.path.join(FLAGS.workdir, name)))
        return
    steps = STEPS if FLAGS.only is None else (FLAGS.only,)
    run_sweep(sweep, FLAGS.workdir, steps)


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("sweep", None, "sweep file, path.py[:arg]")
    flags.DEFINE_string("workdir", None, "root directory; one subdirectory per run")
    flags.DEFINE_enum("only", None, list(STEPS), "run only this step")
    flags.DEFINE_bool("print_commands", False, "print the per-run training commands and exit")
    flags.mark_flags_as_required(["sweep", "workdir"])
    # Run the importable module's main, so sweep files' `Sweep` is this module's class.
    from flatrob_jax import sweep as _module

    app.run(_module.main)
