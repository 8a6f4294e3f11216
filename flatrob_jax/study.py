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

Models trained elsewhere: a run whose overrides hold ``import.*`` keys (``IMPORT_KEYS``) is
imported (``flatrob_jax.torch_import``) instead of trained, in the train step, and then
analyzed and reported like any run: ``{'import.zoo': 'cifar10/Linf/Carmon2019Unlabeled'}``
fetches a zoo entry (``torch_import.zoo``) into the sweep's ``zoo_cache`` and imports it;
``{'import.arch': 'resnet18_cifar', 'import.weights': 'model.pt'}`` (optionally
``import.mean``, ``import.std``, ``import.sha256``) imports a local file. Its dataset is the
base config's, which a zoo entry's must match. The imported run's config is the import's (the
dataset's experiment config with the architecture's model and the checkpoint's normalization)
with the sweep's other overrides applied and the sweep's ``analysis`` section, so they cannot
set ``model.*`` or ``dataset.name/mean/std``. The ``import.*`` keys stay in the run's
overrides (its name, the results table, the report's imported-models table).

The root may be a gs:// URI: the runs, the report, results.csv and JAX's compilation cache
then all live in the bucket (``flatrob_jax.fileio``); nothing is written locally.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
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
IMPORT_PREFIX = "import."
# The overrides that make a run imported instead of trained (see the module docstring).
IMPORT_KEYS = {
    "import.zoo": "a zoo entry name (flatrob_jax.torch_import.zoo.names())",
    "import.arch": "the import's architecture (torch_import.arch_names())",
    "import.weights": "a local .pt/.pth file (a state_dict) of that architecture",
    "import.mean": "its per-channel input mean (tuple); with import.std",
    "import.std": "its per-channel input std (tuple); with import.mean",
    "import.sha256": "the expected sha256 of import.weights",
}
# Config keys an imported run takes from the import, not from overrides.
_IMPORTED_FIELDS = ("model.", "dataset.name", "dataset.mean", "dataset.std")


@dataclasses.dataclass
class Sweep:
    base: str  # experiment config: a name ('x[:arg]') or a path, relative to the sweep file
    runs: list  # one {'a.b': value} dict of overrides per run
    overrides: dict = dataclasses.field(default_factory=dict)  # applied to every run
    title: str = "Flatness vs. robustness across augmentations"
    flatness_metrics: tuple = ()  # () = the headline ones the analyses declare
    robust_metrics: tuple = ()  # () = the headline ones the analyses declare
    num_resamples: int = 2000  # bootstrap resamples for the confidence intervals
    # The design the report's per-condition statistics read (analysis/design.py), declared
    # here, never inferred: the reference condition's overrides (None: no design, the report
    # gives the pooled per-run correlations only and says so), the dose-response families
    # {family name: strength key | (strength key, reference strength) | design.FamilySpec}
    # (None: none), and the keys whose runs are interventions on flatness at the reference
    # augmentation.
    reference: dict | None = None
    families: dict | None = None
    intervention_keys: tuple = INTERVENTION_KEYS
    # Shared warm start: overrides (on top of the base config and ``overrides``) of a run
    # trained first into <root>/warm_start; every trained run then starts from its weights
    # (``train.init_from``) with a fresh optimizer and schedule. None: random init per run.
    warm_start: dict | None = None
    # Persist compiled programs under <workdir>/.jax_cache (a gs:// root keeps it in the
    # bucket): runs of one model share their eval, curvature and attack programs (weights are
    # arguments), and a rerun compiles little.
    compilation_cache: bool = True
    # Where imported zoo entries are downloaded once (torch_import.fetch): None means
    # $FLATROB_ZOO_CACHE, else ~/.cache/flatrob_jax/zoo.
    zoo_cache: str | None = None


def product(**axes) -> list:
    """All combinations: ``product(**{'augment.name': [...], 'seed': [0, 1]})``."""
    keys = list(axes)
    return [dict(zip(keys, values)) for values in itertools.product(*axes.values())]


def run_name(overrides: dict) -> str:
    """A readable, filesystem-safe name from the overrides: 'name=augmix,seed=1'."""
    if not overrides:
        return "base"
    # An imported file is named by its base name, not its whole path.
    shown = {
        k: os.path.basename(str(v)) if k == "import.weights" else v for k, v in overrides.items()
    }
    parts = [f"{k.split('.')[-1]}={v}" for k, v in shown.items()]
    if len({k.split(".")[-1] for k in overrides}) < len(overrides):
        parts = [f"{k}={v}" for k, v in shown.items()]
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


def import_source(overrides: dict) -> dict | None:
    """The run's ``import.*`` overrides without the prefix (``{'zoo': name}`` or ``{'arch':
    ..., 'weights': ...}``), or None for a run that is trained."""
    source = {k[len(IMPORT_PREFIX) :]: v for k, v in overrides.items() if k in IMPORT_KEYS}
    return source or None


def config_overrides(overrides: dict) -> dict:
    """The overrides without the ``import.*`` keys: what applies to the config."""
    unknown = [k for k in overrides if k.startswith(IMPORT_PREFIX) and k not in IMPORT_KEYS]
    if unknown:
        raise ValueError(
            f"unknown import keys {unknown}; valid: "
            + "; ".join(f"{k} ({why})" for k, why in IMPORT_KEYS.items())
        )
    return {k: v for k, v in overrides.items() if k not in IMPORT_KEYS}


def _check_import(name: str, source: dict, overrides: dict, config) -> None:
    """An imported run's source is complete and fits the sweep's dataset and overrides."""
    from flatrob_jax.torch_import import arch_names, zoo

    if "zoo" in source:
        if set(source) != {"zoo"}:
            raise ValueError(f"run {name}: import.zoo takes no other import keys: {source}")
        try:
            entry = zoo.get(source["zoo"])
        except KeyError as e:
            raise ValueError(f"run {name}: {e.args[0]}") from e
        if entry.dataset != config.dataset.name:
            raise ValueError(
                f"run {name}: zoo entry {entry.name} is a {entry.dataset} model; the sweep's "
                f"dataset is {config.dataset.name!r}"
            )
    elif "arch" not in source or "weights" not in source:
        raise ValueError(
            f"run {name}: an imported run needs import.zoo, or import.arch and import.weights; "
            f"got {sorted(source)}"
        )
    elif source["arch"] not in arch_names():
        raise ValueError(
            f"run {name}: unknown import.arch {source['arch']!r}; known: {', '.join(arch_names())}"
        )
    clash = [k for k in overrides if k.startswith(_IMPORTED_FIELDS)]
    if clash:
        raise ValueError(
            f"run {name}: {clash} cannot be overridden for an imported run (its model and "
            f"normalization come from the import)"
        )


def run_configs(sweep) -> list:
    """[(name, overrides, config)] for every run, validated before anything starts."""
    base = apply_overrides(load_config_file(sweep.base), dict(sweep.overrides))
    out = []
    for overrides in sweep.runs:
        overrides = dict(overrides)
        name = run_name(overrides)
        config = apply_overrides(base, config_overrides(overrides))
        source = import_source(overrides)
        if source is not None:
            _check_import(name, source, {**sweep.overrides, **overrides}, config)
        out.append((name, overrides, config))
    return out


def command_line(sweep, overrides: dict, workdir: str) -> str:
    """The ``python -m flatrob_jax.train`` line that trains one run of the sweep (for an
    imported run, the ``python -m flatrob_jax.import_torch`` line that imports it)."""
    source = import_source(overrides)
    if source is not None:
        return _import_command_line(source, workdir)
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


def _import_command_line(source: dict, workdir: str) -> str:
    parts = [os.path.basename(sys.executable), "-m", "flatrob_jax.import_torch"]
    if "zoo" in source:
        parts += ["--zoo", source["zoo"]]
    else:
        parts += ["--arch", source["arch"], "--weights", str(source["weights"])]
        for key in ("mean", "std"):
            if source.get(key) is not None:
                parts += [f"--{key}", ",".join(map(str, source[key]))]
        if source.get("sha256"):
            parts += ["--sha256", source["sha256"]]
    parts += ["--workdir", workdir]
    return " ".join(shlex.quote(p) for p in parts)


def import_run(sweep, overrides: dict, config, workdir: str, log=print) -> dict:
    """Import the run's source (``import_source(overrides)``) into ``workdir``, with the
    sweep's overrides and analysis settings (see the module docstring); returns the
    provenance record."""
    from flatrob_jax.torch_import import fetch, zoo
    from flatrob_jax.torch_import import workdir as import_workdir

    source = import_source(overrides)
    if "zoo" in source:
        entry = zoo.get(source["zoo"])
        path = fetch.fetch_entry(entry, sweep.zoo_cache, log=log)
        imported, variables, provenance = zoo.prepare_entry(entry, path)
    else:
        imported, variables, provenance = import_workdir.prepare_import(
            source["arch"],
            source["weights"],
            config.dataset.name,
            mean=source.get("mean"),
            std=source.get("std"),
            sha256=source.get("sha256"),
        )
    run_config = apply_overrides(imported, config_overrides({**sweep.overrides, **overrides}))
    run_config.analysis = copy.deepcopy(config.analysis)
    provenance["imported_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"
    )
    import_workdir.write_workdir(workdir, run_config, variables, provenance)
    return provenance


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


WARM_START = "warm_start"  # the warm-start run's directory under the sweep's root


def warm_start_config(sweep):
    """The config of the sweep's warm-start run (None when it has none)."""
    if sweep.warm_start is None:
        return None
    base = apply_overrides(load_config_file(sweep.base), dict(sweep.overrides))
    return apply_overrides(base, dict(sweep.warm_start))


def _from_warm_start(runs: list, warm_dir: str) -> list:
    """Every trained run (not the imported ones) initialized from ``warm_dir``."""
    return [
        (n, o, c if import_source(o) else apply_overrides(c, {"train.init_from": warm_dir}))
        for n, o, c in runs
    ]


def run_sweep(sweep, root: str, steps=STEPS, log=print) -> dict:
    """Train, analyze and report every run of ``sweep`` under ``root``; returns the paths."""
    from flatrob_jax.analysis.runner import analyze_runs
    from flatrob_jax.training.trainer import train_and_evaluate

    fileio.require_support(root)  # a gs:// root without the storage extra fails before any work
    runs = run_configs(sweep)
    warm_config, warm_dir = warm_start_config(sweep), fileio.join(root, WARM_START)
    if warm_config is not None:
        runs = _from_warm_start(runs, warm_dir)
    fileio.require_support(*{c.dataset.data_dir for _, _, c in runs})
    fileio.makedirs(root)
    distributed.check_shared_workdir(root)  # several hosts: all must see process 0's files
    if sweep.compilation_cache:
        _enable_compilation_cache(fileio.join(root, ".jax_cache"))
    t0 = time.time()
    log(f"sweep of {len(runs)} runs in {root}; per-run training commands:")
    if warm_config is not None:
        log("  " + command_line(sweep, sweep.warm_start, warm_dir) + "  # the warm start, first")
    for name, overrides, config in runs:
        if config.train.init_from and not import_source(overrides):
            overrides = {**overrides, "train.init_from": config.train.init_from}
        log("  " + command_line(sweep, overrides, fileio.join(root, name)))
    # What is done already is read from files on process 0 and broadcast: every process
    # takes the same branches (and so reaches the same collectives).
    if "train" in steps and warm_config is not None:
        if distributed.decide_on_main(
            lambda: training_finished(warm_dir, warm_config), "whether the warm start is trained"
        ):
            log(f"warm start {warm_dir}: trained already")
        else:
            log(f"warm start: training {warm_dir} (every run starts from its weights)")
            train_and_evaluate(warm_config, warm_dir)
    if "train" in steps:
        finished = distributed.decide_on_main(
            lambda: [
                training_finished(fileio.join(root, name), config) for name, _, config in runs
            ],
            "which runs are trained",
        )
        for i, (name, overrides, config) in enumerate(runs):
            workdir = fileio.join(root, name)
            imported = import_source(overrides) is not None
            if finished[i]:
                log(
                    f"[{i + 1}/{len(runs)}] {name}: {'imported' if imported else 'trained'} already"
                )
                continue
            what = "importing" if imported else "training"
            log(
                f"[{i + 1}/{len(runs)}] {name}: {what} "
                f"(elapsed {format_duration(time.time() - t0)})"
            )
            if imported:  # files only: process 0 writes them, the others wait for it
                distributed.decide_on_main(
                    lambda: bool(import_run(sweep, overrides, config, workdir, log)),
                    f"the import of {name}",
                )
            else:
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
