"""The design of a sweep, read from its runs' overrides: replicates, factors, families,
the reference condition and the intervention runs.

The report's statistics need to know which runs are replicates of one condition, which runs
differ in one factor, and which runs form a dose-response family. Sweeps do not declare this
separately: it is in the overrides each run was trained with. The rules, applied to the
``overrides`` dicts of a ``results.MetricTable``:

* **Conditions and replicates.** Runs whose overrides are equal once ``seed_key`` (``'seed'``)
  is removed are replicates of one condition. A key a run does not override has the base
  config's value, and "absent" is a value of its own.
* **Factors.** Every override key is a factor, except that keys under a prefix in
  ``factor_prefixes`` (default ``'augment.'``) form one factor together (``'augment'``): the
  augmentation's name and its strength parameters are one choice, the augmentation. Two
  conditions "differ in one factor" when exactly one factor's keys differ.
* **Reference.** The condition the one-factor-at-a-time axes start from: given explicitly
  (its overrides, without the seed), else the condition with the most replicates, then the
  fewest override keys, then ``augment.name == 'standard'``, then the first in table order.
* **Families** (dose-response axes). Given explicitly as ``{family name: strength key}``:
  the conditions that override the strength key, which must agree on every other key; or as
  ``{family name: (strength key, reference strength)}``, which also puts the reference
  condition (all its replicates) into the family at that strength (standard crop+flip is
  Gaussian noise at sigma 0), so a family of two strengths has three dose levels. Else
  inferred: a condition that differs from the reference in ``augment.name`` plus one numeric
  ``augment.*`` key belongs to the family ``<augment.name value>`` with that strength key; a
  condition that differs from the reference in one numeric key only belongs to the family
  named after that key.
* **Interventions.** Conditions with the reference's augmentation (the ``augment`` factor
  equal) that differ from the reference in one of ``intervention_keys`` (SAM's rho, weight
  decay, learning rate, batch size): they move flatness without changing the augmentation.
  **Augmentation conditions** are the others that differ from the reference in the
  augmentation factor and in no intervention key.
"""

from __future__ import annotations

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
class Family:
    """A dose-response axis: ``conditions`` (indices into ``Design.conditions``) at
    ``strengths`` of ``strength_key``. ``intervention``: the key is an intervention key."""

    name: str
    strength_key: str
    conditions: tuple
    strengths: tuple
    intervention: bool
    declared: bool


@dataclass(frozen=True)
class Design:
    conditions: tuple  # Condition, in order of first appearance
    run_condition: np.ndarray  # [num_runs] index of each run's condition
    reference: int  # index into conditions
    reference_why: str
    factors: tuple  # factor names, in order of first appearance (the seed is not one)
    families: tuple  # Family
    interventions: tuple  # condition indices
    augmentations: tuple  # condition indices
    seed_key: str
    factor_prefixes: tuple
    intervention_keys: tuple
    run_seeds: tuple = ()  # each run's seed value (None when it has none)

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


def infer_design(
    overrides: Sequence[Mapping],
    *,
    seed_key: str = SEED_KEY,
    reference: Mapping | None = None,
    families: Mapping[str, str] | None = None,
    intervention_keys: Sequence[str] = INTERVENTION_KEYS,
    factor_prefixes: Sequence[str] = FACTOR_PREFIXES,
) -> Design:
    """The ``Design`` of a sweep from its runs' overrides (one dict per run, table order); see
    the module docstring for the rules. ``reference``: the reference condition's overrides
    (without the seed); ``families``: ``{family name: strength key}`` replaces the inference."""
    overrides = [dict(o) for o in overrides]
    if not overrides:
        raise ValueError("no runs: a design needs at least one run")
    factor_prefixes = tuple(factor_prefixes)
    intervention_keys = tuple(intervention_keys)
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
    conditions = tuple(
        Condition(o, tuple(r), lab) for o, r, lab in zip(cond_overrides, cond_runs, labels)
    )

    factors: list[str] = []
    for o in cond_overrides:
        for k in o:
            f = factor_of(k, factor_prefixes)
            if f not in factors:
                factors.append(f)

    if reference is not None:
        want = _key({k: v for k, v in dict(reference).items() if k != seed_key})
        if want not in index:
            raise ValueError(
                f"reference {dict(reference)!r} is not a condition of the sweep; its "
                f"conditions are: {[c.overrides for c in conditions]}"
            )
        ref = index[want]
        why = "given by the sweep"
    else:

        def rank(i):
            o = cond_overrides[i]
            return (-len(cond_runs[i]), len(o), o.get(AUGMENT_NAME_KEY) != "standard", i)

        ref = min(range(len(conditions)), key=rank)
        why = (
            f"inferred: the condition with the most replicates ({len(cond_runs[ref])} runs), "
            "then the fewest overrides, then augment.name = 'standard', then the first"
        )
    ref_o = cond_overrides[ref]

    def diff_keys(o: dict) -> list:
        keys = list(dict.fromkeys([*ref_o, *o]))
        return [k for k in keys if _canon(o.get(k, ABSENT)) != _canon(ref_o.get(k, ABSENT))]

    def augment_same(o: dict) -> bool:
        return not any(factor_of(k, factor_prefixes) == "augment" for k in diff_keys(o))

    if families is not None:
        fams = _declared_families(families, cond_overrides, intervention_keys, ref)
    else:
        fams = _inferred_families(
            cond_overrides, ref, diff_keys, factor_prefixes, intervention_keys
        )

    interventions, augmentations = [], []
    for i, o in enumerate(cond_overrides):
        if i == ref:
            continue
        d = diff_keys(o)
        touches = any(k in intervention_keys for k in d)
        if touches and augment_same(o):
            interventions.append(i)
        elif not touches and not augment_same(o):
            augmentations.append(i)
    return Design(
        conditions,
        run_condition,
        ref,
        why,
        tuple(factors),
        tuple(fams),
        tuple(interventions),
        tuple(augmentations),
        seed_key,
        factor_prefixes,
        intervention_keys,
        tuple(o.get(seed_key) for o in overrides),
    )


def _declared_families(families, cond_overrides, intervention_keys, ref: int) -> list:
    out = []
    all_keys = sorted({k for o in cond_overrides for k in o})
    for name, declared in dict(families).items():
        if isinstance(declared, str):
            key, anchor = declared, None
        elif (
            isinstance(declared, (tuple, list))
            and len(declared) == 2
            and isinstance(declared[0], str)
            and _is_number(declared[1])
        ):
            key, anchor = declared[0], float(declared[1])
        else:
            raise ValueError(
                f"family {name!r}: {declared!r} is neither a strength key nor a pair "
                "(strength key, reference strength)"
            )
        members = [i for i, o in enumerate(cond_overrides) if key in o]
        if anchor is not None and ref in members:
            raise ValueError(
                f"family {name!r}: the reference condition sets {key!r} itself; declare the "
                "family by its key alone"
            )
        if not members:
            raise ValueError(
                f"family {name!r}: no run overrides its strength key {key!r}; the "
                f"override keys are: {all_keys}"
            )
        rests = {_key({k: v for k, v in cond_overrides[i].items() if k != key}) for i in members}
        if len(rests) > 1:
            raise ValueError(
                f"family {name!r}: the runs that set {key!r} differ in other overrides "
                f"too: {[cond_overrides[i] for i in members]}; a family varies one key"
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
        out.append(
            Family(
                str(name),
                key,
                tuple(i for _, i in levels),
                tuple(strength for strength, _ in levels),
                key in intervention_keys,
                True,
            )
        )
    return out


def _inferred_families(cond_overrides, ref, diff_keys, factor_prefixes, intervention_keys) -> list:
    groups: dict[tuple, list] = {}
    for i, o in enumerate(cond_overrides):
        if i == ref:
            continue
        d = diff_keys(o)
        if AUGMENT_NAME_KEY in d:
            rest = [k for k in d if k != AUGMENT_NAME_KEY]
            if (
                len(rest) == 1
                and factor_of(rest[0], factor_prefixes) == "augment"
                and rest[0] in o
                and _is_number(o[rest[0]])
            ):
                groups.setdefault((str(o.get(AUGMENT_NAME_KEY, ABSENT)), rest[0]), []).append(i)
        elif len(d) == 1 and d[0] in o and _is_number(o[d[0]]):
            groups.setdefault((d[0], d[0]), []).append(i)
    out = []
    for (name, key), members in groups.items():
        members.sort(key=lambda i: cond_overrides[i][key])
        out.append(
            Family(
                name,
                key,
                tuple(members),
                tuple(float(cond_overrides[i][key]) for i in members),
                key in intervention_keys,
                False,
            )
        )
    return out
