"""The design of a sweep: its runs grouped into conditions, and the roles the sweep declares.

The report's per-condition statistics need to know which runs are replicates of one
condition, which conditions differ in one factor, which condition is the reference and which
conditions form a dose-response family. Two parts, from two sources:

* **Conditions** (``group_runs``), read from the runs' ``overrides``, with no guess involved.
  Runs whose overrides are equal once ``seed_key`` (``'seed'``) is removed are replicates of
  one condition; a key a run does not override has the base config's value, and "absent" is a
  value of its own. Every override key is a factor, except that keys under a prefix in
  ``factor_prefixes`` (default ``'augment.'``) form one factor together (``'augment'``): the
  augmentation's name and its strength parameters are one choice, the augmentation. Two
  conditions "differ in one factor" when exactly one factor's keys differ.
* **Roles** (``declare_design``), declared by the sweep (``flatrob_jax.study.Sweep``'s
  ``reference`` and ``families``), never inferred:

  - **Reference**: the condition the one-factor-at-a-time axes start from, given by its
    overrides (without the seed).
  - **Families** (dose-response axes), ``{family name: declaration}``; a declaration is a
    strength key (the conditions that override it, which must agree on every other key), a
    pair ``(strength key, reference strength)`` (the same, plus the reference condition, all
    its replicates, at that strength: standard crop+flip is Gaussian noise at sigma 0, so a
    family of two strengths has three dose levels), or a :class:`FamilySpec`, whose
    ``others`` picks the members by their other overrides when conditions that set the key
    differ in them (SAM's rho with and without ``optimizer.sam_adaptive``).
  - **Interventions**: conditions with the reference's augmentation (the ``augment`` factor
    equal) that differ from the reference in one of ``intervention_keys`` (SAM's rho, weight
    decay, learning rate, batch size): they move flatness without changing the augmentation.
    **Augmentation conditions** are the others that differ from the reference in the
    augmentation factor and in no intervention key.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

SEED_KEY = "seed"
AUGMENT_NAME_KEY = "augment.name"
FACTOR_PREFIXES = ("augment.",)
INTERVENTION_KEYS = (
    "optimizer.sam_rho",
    "optimizer.sam_adaptive",
    "optimizer.weight_decay",
    "optimizer.learning_rate",
    "train.batch_size",
)
ABSENT = "<base>"  # how an override a condition does not set is shown


@dataclass(frozen=True)
class Condition:
    """One condition: ``overrides`` without the seed; ``runs`` are indices into the table's runs
    (its replicates, in table order); ``label`` names it in tables and figures."""

    overrides: dict
    runs: tuple
    label: str


@dataclass(frozen=True)
class Conditions:
    """A sweep's runs grouped into conditions (``group_runs``)."""

    conditions: tuple  # Condition, in order of first appearance
    run_condition: np.ndarray  # [num_runs] index of each run's condition
    run_seeds: tuple  # each run's seed value (None when it has none)
    factors: tuple  # factor names, in order of first appearance (the seed is not one)
    seed_key: str
    factor_prefixes: tuple

    @property
    def replicated(self) -> tuple:
        """Indices of the conditions with two or more runs."""
        return tuple(i for i, c in enumerate(self.conditions) if len(c.runs) >= 2)

    def factor_of(self, key: str) -> str:
        return factor_of(key, self.factor_prefixes)

    def factor_value(self, condition: int, factor: str) -> tuple:
        """The canonical value of ``factor`` in ``condition``: its keys and values (absent keys
        left out), comparable between conditions."""
        overrides = self.conditions[condition].overrides
        return tuple(
            sorted((k, _canon(v)) for k, v in overrides.items() if self.factor_of(k) == factor)
        )

    def differing_factors(self, a: int, b: int) -> tuple:
        """The factors in which conditions ``a`` and ``b`` differ."""
        return tuple(f for f in self.factors if self.factor_value(a, f) != self.factor_value(b, f))

    def run_label(self, run: int) -> str:
        """The run's condition label, with its seed when the condition has replicates."""
        c = self.conditions[int(self.run_condition[run])]
        if len(c.runs) < 2:
            return c.label
        return f"{c.label}, {self.seed_key}={self.run_seeds[run]}"


@dataclass(frozen=True)
class FamilySpec:
    """How a sweep declares one dose-response family: the conditions that set
    ``strength_key``, at their values of it; with ``reference_strength``, the reference
    condition too, at that strength; with ``others``, only the conditions whose other
    overrides (without the seed) are exactly ``others``."""

    strength_key: str
    reference_strength: float | None = None
    others: Mapping | None = None


@dataclass(frozen=True)
class Family:
    """A dose-response axis: ``conditions`` (indices into ``Design.conditions``) at
    ``strengths`` of ``strength_key``. ``intervention``: the key is an intervention key."""

    name: str
    strength_key: str
    conditions: tuple
    strengths: tuple
    intervention: bool


@dataclass(frozen=True)
class Design(Conditions):
    """The conditions with the roles the sweep declared (``declare_design``)."""

    reference: int  # index into conditions
    families: tuple  # Family
    interventions: tuple  # condition indices
    augmentations: tuple  # condition indices
    intervention_keys: tuple


def factor_of(key: str, prefixes: Sequence[str] = FACTOR_PREFIXES) -> str:
    """The factor an override key belongs to: its prefix (without the dot) for keys under a
    prefix in ``prefixes``, else the key itself."""
    for p in prefixes:
        if key.startswith(p):
            return p.rstrip(".")
    return key


def _canon(value) -> str:
    """A hashable, comparable form of an override value (9 and 9.0 stay distinct, as in the
    run names; tuples and lists compare equal)."""
    try:
        return json.dumps(value, sort_keys=True)
    except TypeError:
        return repr(value)


def _key(overrides: Mapping) -> tuple:
    return tuple(sorted((k, _canon(v)) for k, v in overrides.items()))


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _labels(conditions: Sequence[dict]) -> list:
    keys = []
    for o in conditions:
        keys += [k for k in o if k not in keys]
    varying = [k for k in keys if len({_canon(o.get(k, ABSENT)) for o in conditions}) > 1]
    if not varying:
        return (
            ["all"] * len(conditions)
            if len(conditions) == 1
            else [str(i) for i in range(len(conditions))]
        )
    labels = []
    for o in conditions:
        present = [k for k in varying if k in o]
        if not present:
            labels.append(ABSENT)
            continue
        parts = [
            str(o[k])
            if k == AUGMENT_NAME_KEY or len(varying) == 1
            else f"{k.split('.')[-1]}={o[k]}"
            for k in present
        ]
        labels.append(", ".join(parts))
    if len(set(labels)) < len(labels):  # short names collide: use the full keys
        labels = [", ".join(f"{k}={o[k]}" for k in varying if k in o) or ABSENT for o in conditions]
    return labels


def group_runs(
    overrides: Sequence[Mapping],
    *,
    seed_key: str = SEED_KEY,
    factor_prefixes: Sequence[str] = FACTOR_PREFIXES,
) -> Conditions:
    """The runs' conditions and factors from their overrides (one dict per run, table order);
    see the module docstring."""
    overrides = [dict(o) for o in overrides]
    if not overrides:
        raise ValueError("no runs: a design needs at least one run")
    factor_prefixes = tuple(factor_prefixes)
    index: dict[tuple, int] = {}
    cond_overrides: list[dict] = []
    cond_runs: list[list] = []
    run_condition = np.zeros(len(overrides), dtype=int)
    for i, o in enumerate(overrides):
        c = {k: v for k, v in o.items() if k != seed_key}
        key = _key(c)
        if key not in index:
            index[key] = len(cond_overrides)
            cond_overrides.append(c)
            cond_runs.append([])
        cond_runs[index[key]].append(i)
        run_condition[i] = index[key]
    labels = _labels(cond_overrides)
    factors = dict.fromkeys(factor_of(k, factor_prefixes) for o in cond_overrides for k in o)
    return Conditions(
        conditions=tuple(
            Condition(o, tuple(r), lab) for o, r, lab in zip(cond_overrides, cond_runs, labels)
        ),
        run_condition=run_condition,
        run_seeds=tuple(o.get(seed_key) for o in overrides),
        factors=tuple(factors),
        seed_key=seed_key,
        factor_prefixes=factor_prefixes,
    )


def declare_design(
    overrides: Sequence[Mapping],
    *,
    reference: Mapping,
    families: Mapping | None = None,
    seed_key: str = SEED_KEY,
    intervention_keys: Sequence[str] = INTERVENTION_KEYS,
    factor_prefixes: Sequence[str] = FACTOR_PREFIXES,
) -> Design:
    """The ``Design`` of a sweep: its runs' conditions (``group_runs``) with the roles it
    declares. ``reference``: the reference condition's overrides (the seed, if given, is
    ignored); ``families``: ``{family name: strength key | (strength key, reference strength) |
    FamilySpec}`` (None: no family). See the module docstring."""
    grouped = group_runs(overrides, seed_key=seed_key, factor_prefixes=factor_prefixes)
    intervention_keys = tuple(intervention_keys)
    cond_overrides = [c.overrides for c in grouped.conditions]
    ref = _reference_index(grouped, reference)
    fams = [
        _declared_family(name, spec, cond_overrides, intervention_keys, ref)
        for name, spec in dict(families or {}).items()
    ]
    ref_o = cond_overrides[ref]

    def diff_keys(o: dict) -> list:
        keys = list(dict.fromkeys([*ref_o, *o]))
        return [k for k in keys if _canon(o.get(k, ABSENT)) != _canon(ref_o.get(k, ABSENT))]

    interventions, augmentations = [], []
    for i, o in enumerate(cond_overrides):
        if i == ref:
            continue
        d = diff_keys(o)
        touches = any(k in intervention_keys for k in d)
        augment_same = not any(factor_of(k, grouped.factor_prefixes) == "augment" for k in d)
        if touches and augment_same:
            interventions.append(i)
        elif not touches and not augment_same:
            augmentations.append(i)
    return Design(
        **{f.name: getattr(grouped, f.name) for f in dataclasses.fields(Conditions)},
        reference=ref,
        families=tuple(fams),
        interventions=tuple(interventions),
        augmentations=tuple(augmentations),
        intervention_keys=intervention_keys,
    )


def _reference_index(grouped: Conditions, reference: Mapping) -> int:
    if reference is None:
        raise ValueError(
            "a design needs its reference condition: pass reference= (Sweep.reference), the "
            "reference condition's overrides"
        )
    want = _key({k: v for k, v in dict(reference).items() if k != grouped.seed_key})
    for i, c in enumerate(grouped.conditions):
        if _key(c.overrides) == want:
            return i
    raise ValueError(
        f"reference {dict(reference)!r} is not a condition of the sweep; its "
        f"conditions are: {[c.overrides for c in grouped.conditions]}"
    )


def _family_spec(name, declared) -> FamilySpec:
    """A family's declaration as a ``FamilySpec`` (see ``declare_design``)."""
    if isinstance(declared, FamilySpec):
        return declared
    if isinstance(declared, str):
        return FamilySpec(declared)
    if (
        isinstance(declared, (tuple, list))
        and len(declared) == 2
        and isinstance(declared[0], str)
        and _is_number(declared[1])
    ):
        return FamilySpec(declared[0], float(declared[1]))
    raise ValueError(
        f"family {name!r}: {declared!r} is neither a strength key, a pair (strength key, "
        "reference strength) nor a FamilySpec"
    )


def _declared_family(name, declared, cond_overrides, intervention_keys, ref: int) -> Family:
    spec = _family_spec(name, declared)
    key, anchor = spec.strength_key, spec.reference_strength

    def others(i: int) -> tuple:
        return _key({k: v for k, v in cond_overrides[i].items() if k != key})

    setting = [i for i, o in enumerate(cond_overrides) if key in o]
    members = setting
    if spec.others is not None:
        members = [i for i in setting if others(i) == _key(spec.others)]
    if anchor is not None and ref in members:
        raise ValueError(
            f"family {name!r}: the reference condition sets {key!r} itself; declare the "
            "family by its key alone"
        )
    if not setting:
        all_keys = sorted({k for o in cond_overrides for k in o})
        raise ValueError(
            f"family {name!r}: no run overrides its strength key {key!r}; the "
            f"override keys are: {all_keys}"
        )
    if not members:
        raise ValueError(
            f"family {name!r}: no condition sets {key!r} with exactly the other overrides "
            f"{dict(spec.others)!r}; the conditions that set it: "
            f"{[cond_overrides[i] for i in setting]}"
        )
    if len({others(i) for i in members}) > 1:
        raise ValueError(
            f"family {name!r}: the runs that set {key!r} differ in other overrides "
            f"too: {[cond_overrides[i] for i in members]}; a family varies one key (a "
            "FamilySpec's others picks the conditions)"
        )
    bad = [cond_overrides[i][key] for i in members if not _is_number(cond_overrides[i][key])]
    if bad:
        raise ValueError(f"family {name!r}: strength key {key!r} has non-numeric values {bad}")
    levels = [(float(cond_overrides[i][key]), i) for i in members]
    if anchor is not None:
        if any(strength == anchor for strength, _ in levels):
            raise ValueError(
                f"family {name!r}: a run already sets {key}={anchor:g}, the strength "
                "declared for the reference condition"
            )
        levels.append((anchor, ref))
    levels.sort()
    return Family(
        str(name),
        key,
        tuple(i for _, i in levels),
        tuple(strength for strength, _ in levels),
        key in intervention_keys,
    )
