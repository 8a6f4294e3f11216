"""What the report says, computed before anything is rendered: typed findings.

``report_findings`` gathers everything report.md, correlations.csv/json and study_stats.json
show: the metric roles, the pooled per-run correlations (``correlations``), the imported
models' measured accuracies (``zoo_report``) and, when the sweep declares its design
(``design.declare_design``), the ``DesignFindings``: the seed-noise floor of every metric, the
per-family dose-response, the granulated Kendall coefficient and the sign-error, the rank and
partial rank correlations across conditions with their leave-one-out influence, the
intervention line, and the verdicts on the paper's predictions (``predictions``).
``design_json`` is the design findings as strict JSON. Definitions are in ``design_stats``,
``design`` and ``predictions``; the Markdown is ``report_markdown`` and ``design_report``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import scipy.stats

from flatrob_jax import fileio
from flatrob_jax.analysis import correlations, design_stats, stats, zoo_report
from flatrob_jax.analysis import predictions as pred
from flatrob_jax.analysis.design import AUGMENT_NAME_KEY, Design, declare_design, group_runs
from flatrob_jax.analysis.markdown import pvalue, signed
from flatrob_jax.analysis.results import MetricTable

NONE_AUGMENT = "none"


@dataclass(frozen=True)
class MetricRoles:
    """Which metrics the report treats as what (``report.classify_metrics``)."""

    flatness: list
    robust: list
    clean: str | None
    covariates: list  # mean confidence, ECE: correlated with every measure across conditions
    endpoint: list  # train loss and error where training ended: tabulated per run

    @property
    def descriptive(self) -> list:
        """The covariates and end-point metrics (without the clean error): the per-run table
        beside the run table."""
        return [m for m in (*self.covariates, *self.endpoint) if m != self.clean]


@dataclass(frozen=True)
class Settings:
    """How the intervals and tests were computed."""

    num_resamples: int
    confidence: float
    ci_method: str  # of the pooled correlations ('bca' or 'percentile')
    seed: int


@dataclass
class DesignFindings:
    """The statistics of the sweep's declared design (``design_findings``)."""

    design: Design
    flatness: list
    robust: list
    clean: str | None
    confidence: float
    floors: dict = field(default_factory=dict)  # metric -> NoiseFloor
    means: dict = field(default_factory=dict)  # metric -> (mean, sd, n) per condition
    dose: list = field(default_factory=list)  # dicts, one per (family, metric)
    granulated: dict = field(default_factory=dict)  # (flat, rob) -> Granulated
    sign_errors: dict = field(default_factory=dict)  # (flat, rob) -> SignError
    across: dict = field(default_factory=dict)  # (flat, rob) -> dict
    interventions: dict = field(default_factory=dict)  # (flat, rob) -> InterventionFit
    fit_runs: tuple = ()
    eval_runs: tuple = ()
    none_condition: int | None = None
    p1a: dict = field(default_factory=dict)  # flat -> StratifiedKendall
    p1b: dict = field(default_factory=dict)  # flat -> SignTest
    verdicts: list = field(default_factory=list)
    covariates: list = field(default_factory=list)  # covariate metrics (confidence, ECE)
    # (covariate, flatness or robust metric) -> {'spearman', 'ci', 'points'} across conditions
    covariate_corr: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ReportFindings:
    """Everything the report renders. ``design_findings`` is None when the sweep declares no
    design (no reference condition): the report then has the pooled correlations only."""

    title: str
    table: MetricTable
    labels: list  # one per run
    roles: MetricRoles
    settings: Settings
    correlations: list  # correlations.COLUMNS dicts
    design_findings: DesignFindings | None
    imported: list  # zoo_report.rows: the imported models, measured vs published
    missing: dict = field(default_factory=dict)  # {run left out: why}

    @property
    def condition_points(self) -> bool:
        """Whether the scatter plots show condition means (a replicated condition exists)."""
        found = self.design_findings
        return found is not None and bool(found.design.replicated)


def report_findings(
    table: MetricTable,
    roles: MetricRoles,
    labels: Sequence[str],
    settings: Settings,
    *,
    title: str,
    reference: Mapping | None,
    families: Mapping | None,
    seed_key: str,
    intervention_keys: Sequence[str],
    none_name: str = NONE_AUGMENT,
    missing: Mapping | None = None,
) -> ReportFindings:
    """The report's findings (see the module docstring); ``reference`` None: no design."""
    if reference is None and families:
        raise ValueError(
            f"families {sorted(families)} were declared without a reference condition; "
            "declare the reference too (Sweep.reference)"
        )
    corr = correlations.correlation_rows(
        table,
        roles.flatness,
        roles.robust,
        num_resamples=settings.num_resamples,
        confidence=settings.confidence,
        ci_method=settings.ci_method,
        seed=settings.seed,
    )
    by_design = None
    if reference is not None:
        design = declare_design(
            table.overrides,
            reference=reference,
            families=families,
            seed_key=seed_key,
            intervention_keys=intervention_keys,
        )
        by_design = design_findings(
            table,
            roles,
            design,
            confidence=settings.confidence,
            num_resamples=settings.num_resamples,
            seed=settings.seed,
            none_name=none_name,
        )
    conditions = by_design.design if by_design else group_runs(table.overrides, seed_key=seed_key)
    imported = zoo_report.rows(table, conditions, roles.clean)
    return ReportFindings(
        title, table, list(labels), roles, settings, corr, by_design, imported, dict(missing or {})
    )


# --------------------------------------------------------------------------- design findings


def find_none(design: Design, none_name: str = NONE_AUGMENT) -> int | None:
    """The condition trained without augmentation (``augment.name == none_name``) that is not
    an intervention; with several, the one with the fewest overrides."""
    found = [
        i
        for i, c in enumerate(design.conditions)
        if c.overrides.get(AUGMENT_NAME_KEY) == none_name and i not in design.interventions
    ]
    return min(found, key=lambda i: len(design.conditions[i].overrides)) if found else None


def design_findings(
    table: MetricTable,
    roles: MetricRoles,
    design: Design,
    *,
    confidence: float = 0.95,
    num_resamples: int = 2000,
    seed: int = 0,
    none_name: str = NONE_AUGMENT,
) -> DesignFindings:
    """Every statistic of the module docstring for one sweep's design. The covariates (mean
    confidence, calibration error) get their noise floor and their rank correlation across
    conditions with every flatness measure and robust error."""
    flatness, robust, clean = roles.flatness, roles.robust, roles.clean
    out = DesignFindings(design, list(flatness), list(robust), clean, confidence)
    out.covariates = [c for c in roles.covariates if c != clean]
    metrics = [*flatness, *robust, *([clean] if clean else []), *out.covariates]
    for m in dict.fromkeys(metrics):
        out.floors[m] = design_stats.noise_floor(table.column(m), design)
        out.means[m] = design_stats.condition_means(table.column(m), design)
    out.dose = _dose_response(table, design, [*flatness, *robust])
    alpha = 1.0 - confidence
    for k, m in enumerate(flatness):
        _p1a(out, table, m, alpha, rng=np.random.default_rng([seed, 1, k]))
    out.none_condition = find_none(design, none_name)
    for m in flatness:
        _p1b(out, m, none_name, alpha)
    for j, cov in enumerate(out.covariates):
        for i, m in enumerate([*flatness, *robust]):
            out.covariate_corr[(cov, m)] = _rank_across(
                out.means[cov][0],
                out.means[m][0],
                num_resamples=num_resamples,
                confidence=confidence,
                rng=np.random.default_rng([seed, 3, j, i]),
            )
    fit_conds = (design.reference, *design.interventions) if design.interventions else ()
    out.fit_runs = tuple(r for ci in fit_conds for r in design.conditions[ci].runs)
    out.eval_runs = tuple(r for ci in design.augmentations for r in design.conditions[ci].runs)
    pairs = [(f, r) for f in flatness for r in robust]
    for k, (f, r) in enumerate(pairs, start=1):
        _pair(out, table, f, r, num_resamples, rng=np.random.default_rng([seed, 2, k]))
        if fit_conds:
            out.interventions[(f, r)] = _intervention_fit(out, table, f, r)
    return out


def _family_runs(design: Design, family) -> tuple[list, np.ndarray]:
    """The runs of a family's conditions and the strength of each."""
    runs = [r for ci in family.conditions for r in design.conditions[ci].runs]
    strength = [
        s for ci, s in zip(family.conditions, family.strengths) for _ in design.conditions[ci].runs
    ]
    return runs, np.array(strength, dtype=float)


def _dose_response(table: MetricTable, design: Design, metrics: Sequence[str]) -> list:
    """Per family, Kendall tau-b of strength vs every measure, runs as points."""
    rows = []
    for fam in design.families:
        runs, strength = _family_runs(design, fam)
        for m in metrics:
            c = stats.kendall(strength, table.column(m)[runs])
            rows.append(
                {
                    "family": fam.name,
                    "strength_key": fam.strength_key,
                    "intervention": fam.intervention,
                    "strengths": list(fam.strengths),
                    "metric": m,
                    "tau": c.statistic,
                    "pvalue": c.pvalue,
                    "n": c.n,
                    "pvalue_method": c.pvalue_method,
                    "note": c.note,
                }
            )
    return rows


def _p1a(out: DesignFindings, table: MetricTable, m: str, alpha: float, rng) -> None:
    """P1a on measure ``m``: the stratified Kendall test over the augmentation families with
    two or more strengths."""
    design = out.design
    fams = [f for f in design.families if not f.intervention and len(set(f.strengths)) >= 2]
    groups = []
    for fam in fams:
        runs, strength = _family_runs(design, fam)
        groups.append((strength, table.column(m)[runs]))
    res = design_stats.stratified_kendall(groups, rng=rng)
    out.p1a[m] = res
    if res.num_groups == 0:
        v = pred.INCONCLUSIVE
        why = "not applicable: no augmentation family with two or more strengths"
    else:
        v = pred.verdict_from_test(res.statistic, res.pvalue, alpha, -1)
        families = "y" if res.num_groups == 1 else "ies"
        why = (
            f"Kendall tau-a of strength vs {m} pooled within {res.num_groups} famil{families} "
            f"({', '.join(f.name for f in fams)}; {res.n} runs) = {signed(res.statistic)}, "
            f"{res.pvalue_method} p = {pvalue(res.pvalue)}; predicted < 0"
        )
        if v == pred.REFUTED:
            why += f": stronger augmentation gave a larger {m} (a sharper minimum)"
    out.verdicts.append(
        pred.Verdict("P1a", m, None, v, res.statistic, math.nan, math.nan, res.pvalue, res.n, why)
    )


def _p1b(out: DesignFindings, m: str, none_name: str, alpha: float) -> None:
    """P1b on measure ``m``: the augmented conditions against the ``none`` condition."""
    design, none = out.design, out.none_condition
    if none is None:
        why = f"not applicable: no condition with augment.name = {none_name!r}"
        nan = math.nan
        verdict = pred.Verdict("P1b", m, None, pred.INCONCLUSIVE, nan, nan, nan, nan, 0, why)
        out.verdicts.append(verdict)
        return
    mean, _, n = out.means[m]
    augmented = [i for i in (design.reference, *design.augmentations) if i != none]
    st = pred.sign_test_vs_none(mean, n, none, augmented, out.floors[m].sd, alpha)
    out.p1b[m] = st
    total = st.flatter + st.sharper + st.within
    why = (
        f"{st.flatter} of {total} augmented condition(s) have a smaller {m} than no "
        f"augmentation beyond the seed noise, {st.sharper} a larger one, {st.within} within "
        f"it; two-sided sign test p = {pvalue(st.pvalue)}"
    )
    if not np.isfinite(out.floors[m].sd):
        why += " (no replicated condition: every difference counted)"
    if st.verdict == pred.REFUTED:
        why += ": augmentation gave sharper minima than no augmentation"
    statistic = float(st.flatter - st.sharper)
    out.verdicts.append(
        pred.Verdict(
            "P1b", m, None, st.verdict, statistic, math.nan, math.nan, st.pvalue, total, why
        )
    )


def _pair(out: DesignFindings, table: MetricTable, f: str, r: str, num_resamples, rng) -> None:
    """For one (flatness, robust error): granulated Kendall, sign-error, the rank statistics
    across conditions, and the P2 verdict."""
    design, clean = out.design, out.clean
    fm, rm = out.means[f][0], out.means[r][0]
    out.granulated[(f, r)] = design_stats.granulated_kendall(fm, rm, design)
    floor = out.floors[r].sd
    thr = math.sqrt(2.0) * floor if np.isfinite(floor) else math.nan
    out.sign_errors[(f, r)] = design_stats.sign_error(table.column(f), table.column(r), design, thr)
    out.across[(f, r)] = _across(
        fm,
        rm,
        out.means[clean][0] if clean else None,
        num_resamples=num_resamples,
        confidence=out.confidence,
        rng=rng,
    )
    out.verdicts.append(_p2(out, f, r))


def _p2(out: DesignFindings, f: str, r: str) -> pred.Verdict:
    """P2 on (f, r): the partial Spearman given clean error across conditions (the plain
    Spearman without a clean error), judged by its bootstrap interval."""
    a = out.across[(f, r)]
    labels = [c.label for c in out.design.conditions]
    if a["partial"] is not None:
        res, ci, infl = a["partial"], a["partial_ci"], a["partial_loo"]
        what = "partial Spearman given clean error"
    else:
        res, ci, infl = a["spearman"], a["spearman_ci"], a["spearman_loo"]
        what = "Spearman (no clean error to control for)"
    v = pred.verdict_from_interval(ci.low, ci.high, +1)
    why = (
        f"{what} of {f} vs {r} across {res.n} conditions = {signed(res.statistic)} "
        f"[{signed(ci.low)}, {signed(ci.high)}] ({100 * out.confidence:g}% bootstrap "
        "percentile); predicted > 0"
    )
    if infl.argmax is not None:
        why += (
            f"; leaving out {labels[a['points'][infl.argmax]]} moves it by "
            f"{signed(infl.deltas[infl.argmax])}"
        )
    if v == pred.REFUTED:
        why += ": flatter minima went with larger robust error"
    return pred.Verdict("P2", f, r, v, res.statistic, ci.low, ci.high, math.nan, res.n, why)


def _intervention_fit(out: DesignFindings, table: MetricTable, f: str, r: str):
    """The intervention line of (f, r): fitted on the reference and intervention runs,
    evaluated on the augmentation runs."""
    fit_mask = np.zeros(len(table.runs), bool)
    fit_mask[list(out.fit_runs)] = True
    eval_mask = np.zeros(len(table.runs), bool)
    eval_mask[list(out.eval_runs)] = True
    return design_stats.intervention_fit(
        table.column(f),
        table.column(r),
        table.column(out.clean) if out.clean else None,
        fit_mask,
        eval_mask,
    )


def _rho(a, b) -> float:
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(scipy.stats.spearmanr(a, b).statistic)


def _partial_rho(a, b, c) -> float:
    if a.size < 4:
        return math.nan
    return design_stats.partial_spearman_value(a, b, c)


def _percentile_ci(x, y, statistic, given, num_resamples, confidence, rng):
    """The percentile bootstrap interval over conditions (``stats.bootstrap_ci``)."""
    return stats.bootstrap_ci(
        x,
        y,
        statistic,
        given=given,
        num_resamples=num_resamples,
        confidence=confidence,
        ci_method="percentile",
        rng=rng,
    )


def _rank_across(x, y, *, num_resamples, confidence, rng) -> dict:
    """Spearman rho of two per-condition means with its bootstrap percentile interval."""
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    return {
        "spearman": stats.spearman(x, y),
        "ci": _percentile_ci(x, y, "spearman", (), num_resamples, confidence, rng),
        "points": np.flatnonzero(keep),
    }


def _across(fm, rm, cm, *, num_resamples, confidence, rng) -> dict:
    """Spearman and partial Spearman across conditions with intervals and LOO influence."""
    keep = np.isfinite(fm) & np.isfinite(rm) & (np.isfinite(cm) if cm is not None else True)
    x, y = fm[keep], rm[keep]
    out = {"points": np.flatnonzero(keep)}
    out["spearman"] = stats.spearman(x, y)
    out["spearman_ci"] = _percentile_ci(x, y, "spearman", (), num_resamples, confidence, rng)
    out["spearman_loo"] = design_stats.leave_one_out(_rho, (x, y))
    if cm is None:
        out["partial"] = out["partial_ci"] = out["partial_loo"] = None
        return out
    z = cm[keep]
    out["partial"] = design_stats.partial_spearman(x, y, z)
    out["partial_ci"] = _percentile_ci(
        x, y, stats.partial_spearman_statistic, (z,), num_resamples, confidence, rng
    )
    out["partial_loo"] = design_stats.leave_one_out(_partial_rho, (x, y, z))
    return out


# --------------------------------------------------------------------------- JSON


def design_json(s: DesignFindings) -> str:
    """The design findings as strict JSON (NaN as null): study_stats.json."""
    payload = {
        **_design_payload(s.design),
        "noise_floor": {
            m: {"sd": fl.sd, "dof": fl.dof, "conditions": fl.num_conditions}
            for m, fl in s.floors.items()
        },
        "dose_response": s.dose,
        "covariates": [
            {
                "covariate": cov,
                "metric": m,
                "spearman": c["spearman"].statistic,
                "pvalue": c["spearman"].pvalue,
                "n": c["spearman"].n,
                "ci": [c["ci"].low, c["ci"].high],
            }
            for (cov, m), c in s.covariate_corr.items()
        ],
        **_within_axis_payload(s),
        "across_conditions": [_across_payload(s, f, r, a) for (f, r), a in s.across.items()],
        "interventions": [
            {
                "flatness": f,
                "robust": r,
                "coef": list(fit.coef),
                "resid_sd": fit.resid_sd,
                "dof": fit.dof,
                "runs": [s.design.run_label(i) for i in s.eval_runs],
                "z": fit.z,
                "t": fit.t,
                "pvalue": fit.pvalue,
            }
            for (f, r), fit in s.interventions.items()
        ],
        "verdicts": [
            {
                "prediction": v.prediction,
                "flatness": v.flatness,
                "robust": v.robust,
                "verdict": v.verdict,
                "statistic": v.statistic,
                "low": v.low,
                "high": v.high,
                "pvalue": v.pvalue,
                "n": v.n,
                "evidence": v.evidence,
            }
            for v in s.verdicts
        ],
    }
    return fileio.dumps_json(payload, indent=1) + "\n"


def _design_payload(d: Design) -> dict:
    labels = [c.label for c in d.conditions]
    return {
        "conditions": [
            {"label": c.label, "overrides": c.overrides, "runs": list(c.runs)} for c in d.conditions
        ],
        "reference": labels[d.reference],
        "families": [
            {
                "name": f.name,
                "strength_key": f.strength_key,
                "intervention": f.intervention,
                "conditions": [labels[i] for i in f.conditions],
                "strengths": list(f.strengths),
            }
            for f in d.families
        ],
    }


def _within_axis_payload(s: DesignFindings) -> dict:
    return {
        "granulated_kendall": [
            {
                "flatness": f,
                "robust": r,
                "value": g.value,
                "per_factor": {a: v[0] for a, v in g.per_factor.items()},
            }
            for (f, r), g in s.granulated.items()
        ],
        "sign_error": [
            {
                "flatness": f,
                "robust": r,
                "value": e.value,
                "pairs": e.num_pairs,
                "dropped": e.num_dropped,
                "threshold": e.threshold,
                "worst_factor": e.worst_factor,
                "worst_value": e.worst_value,
            }
            for (f, r), e in s.sign_errors.items()
        ],
    }


def _across_payload(s: DesignFindings, f: str, r: str, a: dict) -> dict:
    partial = a["partial"]
    return {
        "flatness": f,
        "robust": r,
        "spearman": a["spearman"].statistic,
        "spearman_ci": [a["spearman_ci"].low, a["spearman_ci"].high],
        "partial_spearman": partial.statistic if partial else None,
        "partial_pvalue": partial.pvalue if partial else None,
        "partial_ci": [a["partial_ci"].low, a["partial_ci"].high] if partial else None,
        "partial_loo": list(a["partial_loo"].deltas) if partial else None,
        "conditions": [s.design.conditions[i].label for i in a["points"]],
    }
