"""Imported runs in sweeps: the one place a sweep learns what ``import.*`` overrides mean.

A sweep run whose overrides hold ``import.*`` keys (``KEYS``) is imported instead of trained:
``{'import.zoo': 'cifar10/Linf/Carmon2019Unlabeled'}`` fetches a zoo entry (``zoo``) into the
sweep's zoo cache and imports it; ``{'import.arch': 'resnet18_cifar', 'import.weights':
'model.pt'}`` (optionally ``import.mean``, ``import.std``, ``import.sha256``) imports a local
file. Its dataset is the sweep's, which a zoo entry's must match. The imported run's config is
the import's (the dataset's experiment config with the architecture's model and the
checkpoint's normalization) with the sweep's other overrides applied and the sweep's
``analysis`` section, so they cannot set ``model.*`` or ``dataset.name/mean/std``. The
``import.*`` keys stay in the run's overrides (its name, the results table, the report's
imported-models table).

``SweepImport.from_overrides(overrides)`` is the entry point: None for a trained run; else
``.check(name, overrides, config)`` before anything starts and ``.write(workdir, ...)`` to
import.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime

from flatrob_jax.configuration import apply_overrides

PREFIX = "import."
KEYS = {
    "import.zoo": "a zoo entry name (flatrob_jax.torch_import.zoo.names())",
    "import.arch": "the import's architecture (torch_import.arch_names())",
    "import.weights": "a local .pt/.pth file (a state_dict) of that architecture",
    "import.mean": "its per-channel input mean (tuple); with import.std",
    "import.std": "its per-channel input std (tuple); with import.mean",
    "import.sha256": "the expected sha256 of import.weights",
}
# Config keys an imported run takes from the import, not from overrides.
_FROM_IMPORT = ("model.", "dataset.name", "dataset.mean", "dataset.std")


def config_overrides(overrides: dict) -> dict:
    """``overrides`` without the ``import.*`` keys: what applies to the config. An unknown
    ``import.*`` key raises ValueError naming the valid ones."""
    unknown = [k for k in overrides if k.startswith(PREFIX) and k not in KEYS]
    if unknown:
        raise ValueError(
            f"unknown import keys {unknown}; valid: "
            + "; ".join(f"{k} ({why})" for k, why in KEYS.items())
        )
    return {k: v for k, v in overrides.items() if k not in KEYS}


@dataclasses.dataclass(frozen=True)
class SweepImport:
    """What one sweep run imports: ``source`` is ``{'zoo': name}`` or ``{'arch': ...,
    'weights': ..., ['mean', 'std', 'sha256']}`` (the ``import.*`` keys without the prefix)."""

    source: dict

    @classmethod
    def from_overrides(cls, overrides: dict) -> SweepImport | None:
        """The run's import, or None for a run that is trained."""
        source = {k[len(PREFIX) :]: v for k, v in overrides.items() if k in KEYS}
        return cls(source) if source else None

    def check(self, name: str, overrides: dict, config) -> None:
        """The source is complete and fits the sweep's dataset and ``overrides`` (all the
        overrides that reach the run); a ValueError naming the run otherwise."""
        from flatrob_jax.torch_import import zoo
        from flatrob_jax.torch_import.layouts import arch_names

        source = self.source
        if "zoo" in source:
            if set(source) != {"zoo"}:
                raise ValueError(f"run {name}: import.zoo takes no other import keys: {source}")
            try:
                entry = zoo.get(source["zoo"])
            except KeyError as e:
                raise ValueError(f"run {name}: {e.args[0]}") from e
            if entry.dataset != config.dataset.name:
                raise ValueError(
                    f"run {name}: zoo entry {entry.name} is a {entry.dataset} model; the "
                    f"sweep's dataset is {config.dataset.name!r}"
                )
        elif "arch" not in source or "weights" not in source:
            raise ValueError(
                f"run {name}: an imported run needs import.zoo, or import.arch and "
                f"import.weights; got {sorted(source)}"
            )
        elif source["arch"] not in arch_names():
            raise ValueError(
                f"run {name}: unknown import.arch {source['arch']!r}; known: "
                f"{', '.join(arch_names())}"
            )
        clash = [k for k in overrides if k.startswith(_FROM_IMPORT)]
        if clash:
            raise ValueError(
                f"run {name}: {clash} cannot be overridden for an imported run (its model and "
                f"normalization come from the import)"
            )

    def write(self, workdir: str, config, overrides: dict, *, zoo_cache=None, log=print) -> dict:
        """Import the source into ``workdir`` with ``overrides`` (every override that reaches
        the run) and ``config``'s analysis section; returns the provenance record."""
        from flatrob_jax.torch_import import fetch, zoo
        from flatrob_jax.torch_import import workdir as import_workdir

        source = self.source
        if "zoo" in source:
            entry = zoo.get(source["zoo"])
            path = fetch.fetch_entry(entry, zoo_cache, log=log)
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
        run_config = apply_overrides(imported, config_overrides(overrides))
        run_config.analysis = copy.deepcopy(config.analysis)
        provenance["imported_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        )
        import_workdir.write_workdir(workdir, run_config, variables, provenance)
        return provenance
