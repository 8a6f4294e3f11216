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

import dataclasses
import functools
import itertools
import json
import os
import re
import shlex
import time

import ml_collections

from flatrob_jax import configuration, distributed, fileio
from flatrob_jax.analysis.design import INTERVENTION_KEYS
from flatrob_jax.configuration import apply_overrides, load_config
from flatrob_jax.progress import format_duration
from flatrob_jax.torch_import.sweep_import import SweepImport, config_overrides
from flatrob_jax.workdir_lease import Lease

STEPS = ("train", "analyze", "report")
WARM_START = "warm_start"  # the warm-start run's name and directory under the sweep's root
# A run override naming another run of the sweep: this run stops at that run's final training
# loss (train.stop_at_loss), a matched end point; it starts once that run is trained.
MATCH_LOSS_OF = "match.loss_of"


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
    # Analyze the warm start too, as a run of the study named 'warm_start' (the point every
    # fine-tuned condition started from: the report can measure change from it).
    analyze_warm_start: bool = False
    # Persist compiled programs under <workdir>/.jax_cache (a gs:// root keeps it in the
    # bucket): runs of one model share their eval, curvature and attack programs (weights are
    # arguments), and a rerun compiles little.
    compilation_cache: bool = True
    # Where imported zoo entries are downloaded once (torch_import.fetch): None means
    # $FLATROB_ZOO_CACHE, else ~/.cache/flatrob_jax/zoo.
    zoo_cache: str | None = None
    # What one unit of work (one run: train or import, then analyze) needs from a fleet
    # executor: 'cpu:K', 'gpu:K', 'tpu:K' (chips) or 'tpu:host' (a whole TPU VM); None:
    # 'cpu:1'. ``--resources`` on the command line overrides it (flatrob_jax.fleet).
    resources: str | None = None
    # How to load this sweep again in another process (``--sweep`` of a unit's command):
    # set by load_sweep; None for a Sweep built in code, which runs in-process only.
    spec: str | None = None


def product(**axes) -> list:
    """All combinations: ``product(**{'augment.name': [...], 'seed': [0, 1]})``."""
    keys = list(axes)
    return [dict(zip(keys, values)) for values in itertools.product(*axes.values())]


def run_name(overrides: dict) -> str:
    """A readable, filesystem-safe name from the overrides: 'name=augmix,seed=1'."""
    if not overrides:
        return "base"
    # An imported file is named by its base name, not its whole path; a matched run's target
    # (itself a run name) with '-' for '=' and '+' for ',', so the parts stay apart.
    shown = {
        k: os.path.basename(str(v))
        if k == "import.weights"
        else str(v).replace("=", "-").replace(",", "+")
        if k == MATCH_LOSS_OF
        else v
        for k, v in overrides.items()
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
    path, _, arg = spec.partition(":")
    sweep.spec = (os.path.abspath(path) if _is_path(spec) else path) + (f":{arg}" if arg else "")
    names = [run_name(r) for r in sweep.runs]
    if len(set(names)) != len(names):
        raise ValueError(f"two runs of the sweep have the same overrides: {names}")
    return sweep


# --------------------------------------------------------------------------- the plan


@dataclasses.dataclass(frozen=True)
class Job:
    """One unit of work of a sweep: one run trained (or imported), then analyzed.

    ``kind``: 'warm_start' (trained first; every trained run starts from its weights),
    'train' or 'import'. ``depends_on``: the names of the jobs whose training must be finished
    before this one starts. ``command``: the argv of the process that does the whole unit
    (``python -m flatrob_jax.sweep --sweep S --workdir ROOT --run NAME [--config.a.b=v]``),
    or None for a sweep built in code (no ``spec``: it runs in-process only)."""

    name: str
    kind: str
    workdir: str
    config: ml_collections.ConfigDict
    overrides: dict  # the run's own overrides (its name, the results table)
    depends_on: tuple = ()
    command: tuple | None = None
    analyze: bool = True  # whether its analysis.json is part of the study
    importer: SweepImport | None = None
    match_loss_of: str | None = None  # the run whose final training loss it stops at

    @property
    def command_line(self) -> str | None:
        return None if self.command is None else shlex.join(self.command)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Every job of a sweep under ``root``, in dependency order (the warm start first), with
    ``overrides``, the ``a.b=value`` strings given on the command line for every run."""

    sweep: Sweep
    root: str
    jobs: tuple
    overrides: tuple = ()

    def job(self, name: str) -> Job:
        for job in self.jobs:
            if job.name == name:
                return job
        raise ValueError(f"no run named {name!r} in the sweep; its runs: {list(self.names)}")

    @property
    def names(self) -> tuple:
        return tuple(job.name for job in self.jobs)

    @property
    def runs(self) -> tuple:
        """The jobs whose analysis is part of the study (the warm start only when analyzed)."""
        return tuple(job for job in self.jobs if job.analyze)


def unit_command(spec: str | None, root: str, name: str, overrides=()) -> tuple | None:
    """The argv that runs one unit: ``python -m flatrob_jax.sweep --sweep SPEC --workdir ROOT
    --run NAME`` plus ``--config.a.b=value`` for each command-line override. 'python' is
    replaced by the executor's own interpreter."""
    if spec is None:
        return None
    argv = ["python", "-m", "flatrob_jax.sweep", "--sweep", spec, "--workdir", root]
    argv += ["--run", name, *(f"--config.{o}" for o in overrides)]
    return tuple(argv)


def plan(sweep: Sweep, root: str, overrides=()) -> Plan:
    """The jobs of ``sweep`` under ``root``, checked before anything starts: the warm start
    (if any) first, then one job per run, trained or imported. ``overrides``: ``a.b=value``
    strings (the sweep entry point's ``--config.a.b=value``) applied to every run, the warm
    start included, after the sweep's own overrides (an unknown key or a wrong type fails
    here, naming the valid ones)."""
    overrides = tuple(overrides)
    base = apply_overrides(load_config(sweep.base), dict(sweep.overrides))
    given = configuration.parse_override_strings(base, overrides)  # {key: typed value}
    command = functools.partial(unit_command, sweep.spec, root, overrides=overrides)
    jobs, matched = [], []
    names = [run_name(dict(r)) for r in sweep.runs]
    warm_dir = fileio.join(root, WARM_START)
    if sweep.warm_start is not None:
        config = apply_overrides(base, {**dict(sweep.warm_start), **given})
        jobs.append(
            Job(
                WARM_START,
                "warm_start",
                warm_dir,
                config,
                dict(sweep.warm_start),
                command=command(WARM_START),
                analyze=sweep.analyze_warm_start,
            )
        )
    for run in sweep.runs:
        run = dict(run)
        name = run_name(run)
        match = run.get(MATCH_LOSS_OF)
        if match is not None and (match not in names or match == name):
            raise ValueError(
                f"run {name}: {MATCH_LOSS_OF}={match!r} must name another run of the sweep; "
                f"its runs: {names}"
            )
        own = {k: v for k, v in config_overrides(run).items() if k != MATCH_LOSS_OF}
        config = apply_overrides(base, {**own, **given})
        importer = SweepImport.from_overrides(run)
        if importer is not None:
            importer.check(name, {**sweep.overrides, **run, **given}, config)
            jobs.append(
                Job(
                    name,
                    "import",
                    fileio.join(root, name),
                    config,
                    run,
                    (),
                    command(name),
                    importer=importer,
                )
            )
            continue
        depends = ()
        if sweep.warm_start is not None:
            config = apply_overrides(config, {"train.init_from": warm_dir})
            depends = (WARM_START,)
        if match is not None:
            depends += (match,)
        job = Job(name, "train", fileio.join(root, name), config, run, depends, command(name))
        (matched if match else jobs).append(dataclasses.replace(job, match_loss_of=match))
    return Plan(sweep, root, tuple(jobs + matched), overrides)  # a matched run after its match


def final_train_loss(workdir: str) -> float:
    """The last logged training loss of the run in ``workdir`` (metrics.jsonl)."""
    path = fileio.join(workdir, "metrics.jsonl")
    losses = [
        row["loss"]
        for row in map(
            json.loads, fileio.read_text(path).splitlines() if fileio.exists(path) else []
        )
        if row.get("split") == "train" and row.get("loss") is not None
    ]
    if not losses:
        raise ValueError(f"{workdir} has no logged training loss (metrics.jsonl) to match")
    return float(losses[-1])


def training_config(the_plan: Plan, job: Job):
    """The config ``job`` trains with: with ``match.loss_of``, stopped at that run's final
    training loss (read now: that run is trained first)."""
    if job.match_loss_of is None:
        return job.config
    workdir = the_plan.job(job.match_loss_of).workdir
    target = distributed.decide_on_main(lambda: final_train_loss(workdir), "the loss to stop at")
    return apply_overrides(job.config, {"train.stop_at_loss": target})


# --------------------------------------------------------------------------- what is done


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


def job_done(job: Job) -> bool:
    """Trained (or imported) and, when it is analyzed, its analysis.json current."""
    if not training_finished(job.workdir, job.config):
        return False
    return not job.analyze or analysis_current(job.workdir, job.config)


# --------------------------------------------------------------------------- one unit


class DependencyNotReady(RuntimeError):
    """A unit was started before the runs it starts from were trained."""


def _lease_path(plan: Plan, name: str) -> str:
    return fileio.join(plan.root, ".fanout", "leases", f"{name}.json")


def run_unit(plan: Plan, name: str, *, log=print, attempt: str | None = None, **lease_info):
    """Do everything for the run ``name``, in this process: its dependencies must be trained
    (else :class:`DependencyNotReady`); import or train it unless finished (resuming from its
    checkpoint), then analyze it unless its analysis.json is current. Rerunning it does no
    finished work. It takes the run's lease first (``attempt``, or a new id; ``lease_info``
    is recorded with it) and stops with ``workdir_lease.LeaseLost`` before any write once
    another attempt has taken it. SIGTERM saves and raises ``distributed.Preempted``.

    On a pod (several processes, every one running the same unit) the training uses every
    host, process 0 alone analyzes and there is no lease: the pod is one attempt."""
    import jax

    from flatrob_jax.analysis.runner import analyze_runs
    from flatrob_jax.training.trainer import train_and_evaluate

    job = plan.job(name)
    for dep in job.depends_on:
        other = plan.job(dep)
        if not training_finished(other.workdir, other.config):
            raise DependencyNotReady(
                f"run {name} starts from {dep} ({other.workdir}), which is not trained yet: "
                f"run `{other.command_line or dep}` first"
            )
    fileio.require_support(plan.root, job.config.dataset.data_dir)
    if plan.sweep.compilation_cache:
        _enable_compilation_cache(fileio.join(plan.root, ".jax_cache"))
    check = None
    if jax.process_count() == 1:
        check = Lease.take(_lease_path(plan, name), attempt, **lease_info).check
    trained, current = distributed.decide_on_main(
        lambda: (
            training_finished(job.workdir, job.config),
            analysis_current(job.workdir, job.config),
        ),
        "whether the run is trained and analyzed",
    )
    if trained:
        log(f"{name}: {'imported' if job.importer else 'trained'} already")
    elif job.importer is not None:
        log(f"{name}: importing")

        def write():
            if check is not None:
                check()
            return bool(
                job.importer.write(
                    job.workdir,
                    job.config,
                    _all_overrides(plan, job),
                    zoo_cache=plan.sweep.zoo_cache,
                    log=log,
                )
            )

        distributed.decide_on_main(write, f"the import of {name}")  # process 0 writes
    else:
        log(f"{name}: training")
        train_and_evaluate(training_config(plan, job), job.workdir, before_write=check)
    if job.analyze and not current:
        analyze_runs([(job.workdir, job.config.analysis)], log=log, before_write=check)
    elif job.analyze:
        log(f"{name}: analyzed already")


def _all_overrides(plan: Plan, job: Job) -> dict:
    """Every override that reaches ``job``: the sweep's, the run's and the command line's."""
    base = apply_overrides(load_config(plan.sweep.base), dict(plan.sweep.overrides))
    given = configuration.parse_override_strings(base, plan.overrides)
    return {**plan.sweep.overrides, **job.overrides, **given}


# --------------------------------------------------------------------------- in one process


def run_sweep(sweep: Sweep, root: str, steps=STEPS, log=print, overrides=()) -> dict:
    """Train, analyze and report every run of ``sweep`` under ``root`` in this process (on a
    pod: in every process of it); returns the report's paths. ``overrides``: ``a.b=value``
    strings for every run (see :func:`plan`)."""
    return run_plan(plan(sweep, root, overrides), steps, log)


def run_plan(the_plan: Plan, steps=STEPS, log=print) -> dict:
    """:func:`run_sweep` of a plan: the jobs in order (the warm start first), then the analyses
    (one run per process on a pod; the corrupted test sets made once for all runs), then the
    report. What is done already is read from files on process 0 and broadcast, so every
    process takes the same branches (and reaches the same collectives)."""
    from flatrob_jax.analysis.runner import analyze_runs
    from flatrob_jax.training.trainer import train_and_evaluate

    root, jobs = the_plan.root, the_plan.jobs
    fileio.require_support(root)  # a gs:// root without the storage extra fails before any work
    fileio.require_support(*{job.config.dataset.data_dir for job in jobs})
    fileio.makedirs(root)
    distributed.check_shared_workdir(root)  # several hosts: all must see process 0's files
    if the_plan.sweep.compilation_cache:
        _enable_compilation_cache(fileio.join(root, ".jax_cache"))
    t0 = time.time()
    log(f"sweep of {len(the_plan.runs)} runs in {root}")
    if "train" in steps:
        finished = distributed.decide_on_main(
            lambda: [training_finished(job.workdir, job.config) for job in jobs],
            "which runs are trained",
        )
        for i, job in enumerate(jobs):
            what = {"import": "imported", "warm_start": "trained (warm start)"}
            if finished[i]:
                log(f"[{i + 1}/{len(jobs)}] {job.name}: {what.get(job.kind, 'trained')} already")
                continue
            log(f"[{i + 1}/{len(jobs)}] {job.name}: {job.kind} ({_elapsed(t0)})")
            if job.importer is not None:  # files only: process 0 writes them
                distributed.decide_on_main(
                    lambda job=job: bool(
                        job.importer.write(
                            job.workdir,
                            job.config,
                            _all_overrides(the_plan, job),
                            zoo_cache=the_plan.sweep.zoo_cache,
                            log=log,
                        )
                    ),
                    f"the import of {job.name}",
                )
            else:
                train_and_evaluate(training_config(the_plan, job), job.workdir)
    if "analyze" in steps:
        runs = the_plan.runs
        current = distributed.decide_on_main(
            lambda: [analysis_current(job.workdir, job.config) for job in runs],
            "which runs are analyzed",
        )
        for job, done in zip(runs, current):
            if done:
                log(f"{job.name}: analyzed already")
        todo = [(job.workdir, job.config.analysis) for job, done in zip(runs, current) if not done]
        log(f"analyzing {len(todo)} runs ({_elapsed(t0)})")
        # Several hosts: each analyzes its share of the runs on its own devices (see there).
        analyze_runs(todo, log=log, cache={}, check_shared=False)
    paths = {}
    if "report" in steps:  # written by process 0, its paths given to every process
        paths = distributed.decide_on_main(lambda: write_report(the_plan, log), "the report")
    log(f"sweep done in {_elapsed(t0)}")
    return paths


def _elapsed(t0: float) -> str:
    return f"elapsed {format_duration(time.time() - t0)}"


# --------------------------------------------------------------------------- the report


def report_rows(the_plan: Plan, log=print) -> list:
    """The tidy results rows of every analyzed run of the plan that has an analysis.json."""
    from flatrob_jax.analysis import registry, rows_from_results

    tops = {registry.get(n).where.split("/")[0] for n in registry.names()}
    rows = []
    for job in the_plan.runs:
        results = _read_json(job.workdir, "analysis.json")
        if results is None:
            log(f"{job.name}: no analysis.json yet; left out of the report")
            continue
        keep = {k: v for k, v in results.items() if k in tops}
        rows += rows_from_results(job.name, keep, overrides=job.overrides)
    return rows


def design_notes(the_plan: Plan) -> list:
    """What the report's design section must say about how the runs were trained: a shared
    warm start (and what it makes of ``none``), and AugMix runs without the JSD loss."""
    notes = []
    warm = [job for job in the_plan.jobs if job.kind == "warm_start"]
    if warm:
        given = json.dumps(the_plan.sweep.warm_start, sort_keys=True)
        notes.append(
            f"Warm start: every trained run fine-tunes from one shared warm start ({given}, "
            "trained first), with a fresh optimizer and schedule. The conditions share their "
            "start, seed replicates measure the noise of the fine-tune only, and `none` is the "
            "warm start followed by training without augmentation, not a network never "
            "augmented."
        )
    no_jsd = [
        job.name
        for job in the_plan.runs
        if job.config.augment.name == "augmix" and not job.config.augment.augmix.jsd
    ]
    if no_jsd:
        notes.append(
            f"AugMix without its JSD loss: {len(no_jsd)} AugMix run(s) train on one AugMix "
            "view per image (augment.augmix.jsd = False), without the Jensen-Shannon "
            "consistency loss of the published AugMix."
        )
    return notes


def write_report(the_plan: Plan, log=print, failed: dict | None = None) -> dict:
    """results.csv, results.json and the report from every run's analysis.json; ``failed``:
    {run: why} of the runs a fan-out gave up on (named in the report)."""
    from flatrob_jax.analysis import headline_metrics, write_csv, write_json
    from flatrob_jax.analysis import write_report as write_report_files

    sweep, root = the_plan.sweep, the_plan.root
    paths = {}
    rows = report_rows(the_plan, log)
    have = {r["run"] for r in rows}
    failed = failed or {}
    missing = {
        job.name: f"failed: {failed[job.name]}" if job.name in failed else "not analyzed yet"
        for job in the_plan.runs
        if job.name not in have
    }
    paths["results_csv"] = write_csv(rows, fileio.join(root, "results.csv"))
    paths["results_json"] = write_json(rows, fileio.join(root, "results.json"))
    headlines = headline_metrics(sorted({r["metric"] for r in rows}))
    paths["report"] = write_report_files(
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
        missing=missing,
        notes=design_notes(the_plan),
    )
    log(f"report: {paths['report']}")
    return paths
