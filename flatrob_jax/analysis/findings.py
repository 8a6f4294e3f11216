"""What the report says, computed before anything is rendered: typed findings.

``report_findings`` gathers everything report.md, correlations.csv/json and study_stats.json
show: the metric roles, the pooled per-run correlations (``correlations``), the imported
models' measured accuracies (``zoo_report``) and, when the sweep declares its design
(``design.declare_design``), the ``DesignFindings``: the seed-noise floor of every metric, the
per-family dose-response, the granulated Kendall coefficient and the sign-error, the rank and
partial rank correlations across conditions with their leave-one-out influence, the
intervention line, the declared primary test (``PrimaryTest``), the reliability of every
metric, and the verdicts on the paper's predictions (``predictions``), raw and Holm-adjusted
within each prediction.
``design_json`` is the design findings as strict JSON. Definitions are in ``design_stats``,
``design`` and ``predictions``; the Markdown is ``report_markdown`` and ``design_report``.
"""

from __future__ import annotations

import dataclasses
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


# The primary test, declared before the numbers: the paper's statistic.
PAPER_R = 0.9  # the paper reports Pearson r > 0.9
PRIMARY_FLATNESS = (
    ("curvature/augmented/lambda_max", "curvature/clean/lambda_max"),
    ("curvature/augmented/trace", "curvature/clean/trace"),
)  # per measure: the augmented-data metric, else the clean-data one
PRIMARY_ROBUST = "corruptions/mean_corruption_error"
POWER_TRUE_R, POWER_NULL_R = 0.9, 0.7  # the design's power: exclude r <= 0.7 when r is 0.9


@dataclass(frozen=True)
class PrimaryTest:
    """The paper's test on one measure: Pearson r (and Spearman) of the measure vs mean
    corruption error across condition means (reference and augmentation conditions), exact
    permutation p; Holm over the primary measures; the same without ``none`` (a declared
    sensitivity row); the design's power for it."""

    flatness: str
    robust: str
    conditions: tuple  # condition labels, the points
    pearson: stats.PermutationTest
    spearman: stats.PermutationTest
    without_none: stats.PermutationTest | None
    adjusted_pvalue: float
    verdict: str
    adjusted_verdict: str
    power: stats.Power | None
    # The one-sided Fisher-z upper confidence bound of r: below PAPER_R, the data exclude the
    # paper's value.
    upper: float = math.nan


@dataclass(frozen=True)
class Margin:
    """P1a: one adjacent pair of strengths in a family, the measure's change between their
    condition means in units of the seed noise of that difference."""

    family: str
    low: float
    high: float
    difference: float
    z: float


@dataclass(frozen=True)
class DoseResponse:
    """Kendall tau-a of strength vs one metric over one family's runs, with its permutation
    p (``design_stats.stratified_kendall`` on the one family)."""

    family: str
    strength_key: str
    intervention: bool
    strengths: list
    metric: str
    tau_a: float
    s: int
    s_max: int
    pvalue: float
    min_pvalue: float
    n: int
    pvalue_method: str
    note: str


@dataclass(frozen=True)
class RankAcross:
    """Spearman rho of two per-condition means (``points``: the conditions used) with its
    permutation test and bootstrap percentile interval."""

    spearman: stats.PermutationTest
    ci: stats.BootstrapInterval
    points: np.ndarray


@dataclass(frozen=True)
class Across:
    """One (flatness, robust error) across condition means: Spearman and the partial
    Spearman given clean error (None without one), each with its permutation test, bootstrap
    percentile interval and leave-one-out influence."""

    points: np.ndarray
    spearman: stats.PermutationTest
    spearman_ci: stats.BootstrapInterval
    spearman_loo: design_stats.Influence
    partial: stats.PermutationTest | None = None
    partial_ci: stats.BootstrapInterval | None = None
    partial_loo: design_stats.Influence | None = None


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
    dose: list = field(default_factory=list)  # DoseResponse, one per (family, metric)
    granulated: dict = field(default_factory=dict)  # (flat, rob) -> Granulated
    sign_errors: dict = field(default_factory=dict)  # (flat, rob) -> SignError
    # The same with the augmentation families and their strength as the axes (family_axes):
    granulated_families: dict = field(default_factory=dict)  # (flat, rob) -> Granulated
    sign_errors_families: dict = field(default_factory=dict)  # (flat, rob) -> SignError
    across: dict = field(default_factory=dict)  # (flat, rob) -> Across
    interventions: dict = field(default_factory=dict)  # (flat, rob) -> InterventionFit
    fit_runs: tuple = ()
    eval_runs: tuple = ()
    none_condition: int | None = None
    p1a: dict = field(default_factory=dict)  # flat -> StratifiedKendall
    p1a_margins: dict = field(default_factory=dict)  # flat -> [Margin]
    p1b: dict = field(default_factory=dict)  # flat -> [predictions.Contrast]
    p1b_adjusted: dict = field(default_factory=dict)  # flat -> [Holm-adjusted p per contrast]
    verdicts: list = field(default_factory=list)
    primary: list = field(default_factory=list)  # PrimaryTest, one per primary measure
    reliability: dict = field(default_factory=dict)  # metric -> design_stats.Reliability
    # (flat, rob) -> {covariate name: stats.PermutationTest} (Freedman-Lane partial Spearman)
    partials: dict = field(default_factory=dict)
    partial_covariates: dict = field(default_factory=dict)  # label -> metric name
    notes: list = field(default_factory=list)  # the sweep's design notes (warm start, JSD)
    covariates: list = field(default_factory=list)  # covariate metrics (confidence, ECE)
    # (covariate, flatness or robust metric) -> RankAcross across conditions
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
    notes: Sequence[str] = (),
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
        by_design.notes = list(notes)
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
    _p1b(out, none_name, alpha)
    for j, cov in enumerate(out.covariates):
        for i, m in enumerate([*flatness, *robust]):
            out.covariate_corr[(cov, m)] = _rank_across(
                out.means[cov][0],
                out.means[m][0],
                num_resamples=num_resamples,
                confidence=confidence,
                rng=np.random.default_rng([seed, 3, j, i]),
            )
    out.partial_covariates = _partial_covariates(roles, table)
    for m in out.partial_covariates.values():
        if m not in out.means:
            out.means[m] = design_stats.condition_means(table.column(m), design)
    fit_conds = (design.reference, *design.interventions) if design.interventions else ()
    out.fit_runs = tuple(r for ci in fit_conds for r in design.conditions[ci].runs)
    out.eval_runs = tuple(r for ci in design.augmentations for r in design.conditions[ci].runs)
    pairs = [(f, r) for f in flatness for r in robust]
    for k, (f, r) in enumerate(pairs, start=1):
        _pair(out, table, f, r, num_resamples, rng=np.random.default_rng([seed, 2, k]), seed=seed)
        if fit_conds:
            out.interventions[(f, r)] = _intervention_fit(out, table, f, r)
    _holm(out, ("P1a", "P2"), alpha)
    for m, fl in out.floors.items():
        out.reliability[m] = design_stats.reliability(table.column(m), design, fl)
    out.primary = _primary(out, table, alpha, seed)
    return out


def _partial_covariates(roles: MetricRoles, table: MetricTable) -> dict:
    """The covariates P2's partial correlation is given side by side: clean error, the train
    loss on the run's own augmented data (else clean), mean confidence; those measured."""
    found = {}
    if roles.clean:
        found["clean error"] = roles.clean
    for suffix, label in (("augmented/loss", "own-augmented train loss"), ("/loss", "train loss")):
        hit = [m for m in roles.endpoint if m.endswith(suffix) and m in table.metrics]
        if hit:
            found[label] = hit[0]
            break
    conf = [m for m in roles.covariates if m.endswith("calibration/confidence")]
    if conf:
        found["confidence"] = conf[0]
    return found


def _holm(out: DesignFindings, predictions: Sequence[str], alpha: float) -> None:
    """Holm-adjust the p-values within each of ``predictions`` and judge again."""
    for key in predictions:
        idx = [i for i, v in enumerate(out.verdicts) if v.prediction == key]
        adjusted = stats.holm([out.verdicts[i].pvalue for i in idx])
        sign = -1 if key == "P1a" else +1
        for i, p in zip(idx, adjusted):
            v = out.verdicts[i]
            out.verdicts[i] = dataclasses.replace(
                v,
                adjusted_pvalue=float(p),
                adjusted_verdict=pred.verdict_from_test(v.statistic, p, alpha, sign),
            )


def _primary_points(out: DesignFindings) -> list:
    """The primary test's points: the reference and the augmentation conditions that differ
    from it in the augmentation alone (not, e.g., a run stopped at a matched loss)."""
    d = out.design
    only_augment = [
        i for i in d.augmentations if d.differing_factors(i, d.reference) == ("augment",)
    ]
    return [d.reference, *only_augment]


def _primary(out: DesignFindings, table: MetricTable, alpha: float, seed: int) -> list:
    """The primary test on each primary measure the study measured (``PrimaryTest``)."""
    if PRIMARY_ROBUST not in table.metrics:
        return []
    labels = [c.label for c in out.design.conditions]
    rows = []
    for k, choices in enumerate(PRIMARY_FLATNESS):
        f = next((m for m in choices if m in table.metrics), None)
        if f is None:
            continue
        fm = design_stats.condition_means(table.column(f), out.design)[0]
        rm = design_stats.condition_means(table.column(PRIMARY_ROBUST), out.design)[0]
        points = [i for i in _primary_points(out) if np.isfinite(fm[i]) and np.isfinite(rm[i])]
        rng = [seed, 4, k]
        pearson = stats.permutation_correlation(fm[points], rm[points], "pearson", rng=rng)
        spear = stats.permutation_correlation(fm[points], rm[points], "spearman", rng=rng)
        without = None
        if out.none_condition in points:
            kept = [i for i in points if i != out.none_condition]
            without = stats.permutation_correlation(fm[kept], rm[kept], "pearson", rng=rng)
        power = (
            stats.correlation_power(
                len(points),
                true_r=POWER_TRUE_R,
                null_r=POWER_NULL_R,
                confidence=1 - alpha,
                rng=seed,
            )
            if len(points) >= 4
            else None
        )
        rows.append((f, tuple(labels[i] for i in points), pearson, spear, without, power))
    adjusted = stats.holm([r[2].pvalue for r in rows])
    return [
        PrimaryTest(
            f,
            PRIMARY_ROBUST,
            pts,
            pearson,
            spear,
            without,
            float(p),
            pred.verdict_from_test(pearson.statistic, pearson.pvalue, alpha, +1),
            pred.verdict_from_test(pearson.statistic, p, alpha, +1),
            power,
            stats.fisher_bound(pearson.statistic, pearson.n, 1 - alpha, "upper"),
        )
        for (f, pts, pearson, spear, without, power), p in zip(rows, adjusted)
    ]


def _family_runs(design: Design, family) -> tuple[list, np.ndarray]:
    """The runs of a family's conditions and the strength of each."""
    runs = [r for ci in family.conditions for r in design.conditions[ci].runs]
    strength = [
        s for ci, s in zip(family.conditions, family.strengths) for _ in design.conditions[ci].runs
    ]
    return runs, np.array(strength, dtype=float)


def _dose_response(table: MetricTable, design: Design, metrics: Sequence[str]) -> list:
    """Per family, Kendall tau-a of strength vs every measure, runs as points, with its exact
    permutation p (``design_stats.stratified_kendall`` on the one family): the same statistic
    and p as P1a."""
    rows = []
    for fam in design.families:
        runs, strength = _family_runs(design, fam)
        for m in metrics:
            k = design_stats.stratified_kendall([(strength, table.column(m)[runs])])
            rows.append(
                DoseResponse(
                    fam.name,
                    fam.strength_key,
                    fam.intervention,
                    list(fam.strengths),
                    m,
                    k.statistic,
                    k.s,
                    k.s_max,
                    k.pvalue,
                    k.min_pvalue,
                    k.n,
                    k.pvalue_method,
                    k.note,
                )
            )
    return rows


def _margins(out: DesignFindings, m: str, fams) -> list:
    """Each adjacent pair of strengths in each family: the change of the condition means of
    ``m`` over its seed-noise SE ``floor sqrt(1/n_a + 1/n_b)`` (NaN z without a floor)."""
    mean, _, n = out.means[m]
    floor = out.floors[m].sd
    found = []
    for fam in fams:
        levels = list(zip(fam.strengths, fam.conditions))
        for (s_lo, a), (s_hi, b) in zip(levels, levels[1:]):
            d = float(mean[b] - mean[a])
            se = floor * math.sqrt(1 / n[a] + 1 / n[b]) if n[a] and n[b] else math.nan
            z = d / se if np.isfinite(se) and se > 0 else math.nan
            found.append(Margin(fam.name, s_lo, s_hi, d, z))
    return found


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
    out.p1a_margins[m] = _margins(out, m, fams)
    if res.num_groups == 0:
        v = pred.INCONCLUSIVE
        why = "not applicable: no augmentation family with two or more strengths"
    else:
        v = pred.verdict_from_test(res.statistic, res.pvalue, alpha, -1)
        families = "y" if res.num_groups == 1 else "ies"
        why = (
            f"Kendall tau-a of strength vs {m} pooled within {res.num_groups} famil{families} "
            f"({', '.join(f.name for f in fams)}; {res.n} runs) = {signed(res.statistic)} "
            f"(S = {res.s} of S_max = {res.s_max}), {res.pvalue_method} p = "
            f"{pvalue(res.pvalue)} (the smallest attainable: {pvalue(res.min_pvalue)}); "
            "predicted < 0"
        )
        if v == pred.REFUTED:
            why += f": stronger augmentation gave a larger {m} (a sharper minimum)"
    out.verdicts.append(
        pred.Verdict("P1a", m, None, v, res.statistic, math.nan, math.nan, res.pvalue, res.n, why)
    )


def _p1b(out: DesignFindings, none_name: str, alpha: float) -> None:
    """P1b on every flatness measure: each augmented condition against a replicated ``none``
    (``predictions.contrasts_vs_none``), Holm over every contrast of every measure."""
    design, none = out.design, out.none_condition
    nan = math.nan
    if none is None:
        why = f"not applicable: no condition with augment.name = {none_name!r}"
        for m in out.flatness:
            out.verdicts.append(
                pred.Verdict("P1b", m, None, pred.INCONCLUSIVE, nan, nan, nan, nan, 0, why)
            )
        return
    augmented = [i for i in (design.reference, *design.augmentations) if i != none]
    for m in out.flatness:
        mean, _, n = out.means[m]
        fl = out.floors[m]
        out.p1b[m] = pred.contrasts_vs_none(mean, n, none, augmented, fl.sd, fl.dof)
    flat_p = [c.pvalue for m in out.flatness for c in out.p1b[m]]
    adjusted = iter(stats.holm(flat_p))
    for m in out.flatness:
        cs = out.p1b[m]
        out.p1b_adjusted[m] = [float(next(adjusted)) for _ in cs]
        raw = [c.pvalue for c in cs]
        testable = [c for c in cs if np.isfinite(c.pvalue)]
        flatter = sum(c.pvalue < alpha and c.difference < 0 for c in testable)
        sharper = sum(c.pvalue < alpha and c.difference > 0 for c in testable)
        if not testable:
            why = cs[0].note if cs else "no augmented condition with a value"
        else:
            why = (
                f"{len(testable)} augmented condition(s) against none ({int(n[none])} seeds) on "
                f"{m}: {flatter} significantly flatter, {sharper} significantly sharper at "
                f"{alpha:.2g} (t on the pooled seed noise, {testable[0].dof} dof; smallest p "
                f"{pvalue(min(c.pvalue for c in testable))}); predicted flatter"
            )
            if sharper and not flatter:
                why += ": augmentation gave sharper minima than no augmentation"
        p_min = min((c.pvalue for c in testable), default=nan)
        adj_min = min((p for p in out.p1b_adjusted[m] if np.isfinite(p)), default=nan)
        out.verdicts.append(
            pred.Verdict(
                "P1b",
                m,
                None,
                pred.contrasts_verdict(cs, raw, alpha),
                float(flatter - sharper) if testable else nan,
                nan,
                nan,
                p_min,
                len(testable),
                why,
                adjusted_pvalue=adj_min,
                adjusted_verdict=pred.contrasts_verdict(cs, out.p1b_adjusted[m], alpha),
            )
        )


def _pair(
    out: DesignFindings, table: MetricTable, f: str, r: str, num_resamples, rng, seed: int
) -> None:
    """For one (flatness, robust error): granulated Kendall, sign-error, the rank statistics
    across conditions, the partial correlations given each covariate, and the P2 verdict."""
    design, clean = out.design, out.clean
    fm, rm = out.means[f][0], out.means[r][0]
    out.granulated[(f, r)] = design_stats.granulated_kendall(fm, rm, design)
    floor = out.floors[r].sd
    thr = math.sqrt(2.0) * floor if np.isfinite(floor) else math.nan
    out.sign_errors[(f, r)] = design_stats.sign_error(table.column(f), table.column(r), design, thr)
    axes = design_stats.family_axes(design)
    if sum(v is not None for v in axes.values) >= 2:
        out.granulated_families[(f, r)] = design_stats.granulated_kendall(fm, rm, design, axes)
        out.sign_errors_families[(f, r)] = design_stats.sign_error(
            table.column(f), table.column(r), design, thr, axes
        )
    out.partials[(f, r)] = {
        label: stats.freedman_lane(fm, rm, out.means[m][0], "spearman", rng=[seed, 5])
        for label, m in out.partial_covariates.items()
    }
    out.across[(f, r)] = _across(
        fm,
        rm,
        out.means[clean][0] if clean else None,
        out.partials[(f, r)].get("clean error"),
        num_resamples=num_resamples,
        confidence=out.confidence,
        rng=rng,
    )
    out.verdicts.append(_p2(out, f, r))


def _p2(out: DesignFindings, f: str, r: str) -> pred.Verdict:
    """P2 on (f, r): the partial Spearman given clean error across conditions with its
    Freedman-Lane permutation p (the plain Spearman with its permutation p without a clean
    error)."""
    a = out.across[(f, r)]
    labels = [c.label for c in out.design.conditions]
    alpha = 1.0 - out.confidence
    if a.partial is not None:
        test = a.partial
        ci, infl = a.partial_ci, a.partial_loo
        what = "partial Spearman given clean error"
    else:
        test = a.spearman
        ci, infl = a.spearman_ci, a.spearman_loo
        what = "Spearman (no clean error to control for)"
    v = pred.verdict_from_test(test.statistic, test.pvalue, alpha, +1)
    if not np.isfinite(test.statistic):
        why = f"{what} of {f} vs {r} not computed across {test.n} conditions: {test.note}"
        return pred.Verdict("P2", f, r, v, math.nan, ci.low, ci.high, math.nan, test.n, why)
    fl = " (Freedman-Lane)" if a.partial is not None else ""
    why = (
        f"{what} of {f} vs {r} across {test.n} conditions = {signed(test.statistic)}, "
        f"{test.pvalue_method} permutation p{fl} = {pvalue(test.pvalue)}; "
        f"{100 * out.confidence:g}% bootstrap percentile interval [{signed(ci.low)}, "
        f"{signed(ci.high)}]; predicted > 0"
    )
    if infl.argmax is not None:
        why += (
            f"; leaving out {labels[a.points[infl.argmax]]} moves it by "
            f"{signed(infl.deltas[infl.argmax])}"
        )
    if v == pred.REFUTED:
        why += ": flatter minima went with larger robust error"
    return pred.Verdict("P2", f, r, v, test.statistic, ci.low, ci.high, test.pvalue, test.n, why)


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


def _rank_across(x, y, *, num_resamples, confidence, rng) -> RankAcross:
    """Spearman rho of two per-condition means with its permutation test and bootstrap
    percentile interval."""
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    return RankAcross(
        stats.permutation_correlation(x, y, "spearman", rng=rng),
        _percentile_ci(x, y, "spearman", (), num_resamples, confidence, rng),
        np.flatnonzero(keep),
    )


def _across(fm, rm, cm, partial, *, num_resamples, confidence, rng) -> Across:
    """Spearman and partial Spearman across conditions with intervals and LOO influence;
    ``partial``: the partial Spearman's Freedman-Lane test given ``cm``, computed already."""
    keep = np.isfinite(fm) & np.isfinite(rm) & (np.isfinite(cm) if cm is not None else True)
    x, y = fm[keep], rm[keep]
    plain = dict(
        points=np.flatnonzero(keep),
        spearman=stats.permutation_correlation(x, y, "spearman", rng=rng),
        spearman_ci=_percentile_ci(x, y, "spearman", (), num_resamples, confidence, rng),
        spearman_loo=design_stats.leave_one_out(_rho, (x, y)),
    )
    if cm is None:
        return Across(**plain)
    z = cm[keep]
    return Across(
        **plain,
        partial=partial,
        partial_ci=_percentile_ci(
            x, y, stats.partial_spearman_statistic, (z,), num_resamples, confidence, rng
        ),
        partial_loo=design_stats.leave_one_out(_partial_rho, (x, y, z)),
    )


# --------------------------------------------------------------------------- JSON


def design_json(s: DesignFindings) -> str:
    """The design findings as strict JSON (NaN as null): study_stats.json."""
    payload = {
        **_design_payload(s.design),
        "noise_floor": {
            m: {"sd": fl.sd, "dof": fl.dof, "conditions": fl.num_conditions}
            for m, fl in s.floors.items()
        },
        "dose_response": [dataclasses.asdict(d) for d in s.dose],
        "covariates": [
            {
                "covariate": cov,
                "metric": m,
                "spearman": c.spearman.statistic,
                "pvalue": c.spearman.pvalue,
                "n": c.spearman.n,
                "ci": [c.ci.low, c.ci.high],
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
                "adjusted_pvalue": v.adjusted_pvalue,
                "adjusted_verdict": v.adjusted_verdict,
            }
            for v in s.verdicts
        ],
        "primary": [_primary_payload(t) for t in s.primary],
        "p1a_margins": {
            m: [dataclasses.asdict(x) for x in margins] for m, margins in s.p1a_margins.items()
        },
        "p1b_contrasts": {
            m: [
                {
                    **dataclasses.asdict(c),
                    "condition": s.design.conditions[c.condition].label,
                    "adjusted_pvalue": p,
                }
                for c, p in zip(cs, s.p1b_adjusted.get(m, []))
            ]
            for m, cs in s.p1b.items()
        },
        "partial_correlations": [
            {"flatness": f, "robust": r, "given": label, **_permutation_payload(t)}
            for (f, r), tests in s.partials.items()
            for label, t in tests.items()
        ],
        "reliability": {m: dataclasses.asdict(x) for m, x in s.reliability.items()},
        "notes": list(s.notes),
    }
    return fileio.dumps_json(payload, indent=1) + "\n"


def _permutation_payload(t) -> dict:
    return {
        "statistic": t.statistic,
        "pvalue": t.pvalue,
        "n": t.n,
        "pvalue_method": t.pvalue_method,
        "min_pvalue": t.min_pvalue,
        "note": t.note,
    }


def _primary_payload(t: PrimaryTest) -> dict:
    return {
        "flatness": t.flatness,
        "robust": t.robust,
        "conditions": list(t.conditions),
        "paper_r": PAPER_R,
        "pearson": _permutation_payload(t.pearson),
        "spearman": _permutation_payload(t.spearman),
        "without_none": _permutation_payload(t.without_none) if t.without_none else None,
        "adjusted_pvalue": t.adjusted_pvalue,
        "verdict": t.verdict,
        "adjusted_verdict": t.adjusted_verdict,
        "power": dataclasses.asdict(t.power) if t.power else None,
        "upper_bound": t.upper,
    }


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
        "granulated_kendall_families": [
            {
                "flatness": f,
                "robust": r,
                "value": g.value,
                "per_axis": {a: v[0] for a, v in g.per_factor.items()},
                "sign_error": s.sign_errors_families[(f, r)].value,
                "sign_error_per_axis": {
                    a: v[0] for a, v in s.sign_errors_families[(f, r)].per_factor.items()
                },
            }
            for (f, r), g in s.granulated_families.items()
        ],
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


def _across_payload(s: DesignFindings, f: str, r: str, a: Across) -> dict:
    partial = a.partial
    return {
        "flatness": f,
        "robust": r,
        "spearman": a.spearman.statistic,
        "spearman_pvalue": a.spearman.pvalue,
        "spearman_ci": [a.spearman_ci.low, a.spearman_ci.high],
        "partial_spearman": partial.statistic if partial else None,
        "partial_pvalue": partial.pvalue if partial else None,
        "partial_ci": [a.partial_ci.low, a.partial_ci.high] if partial else None,
        "partial_loo": list(a.partial_loo.deltas) if partial else None,
        "conditions": [s.design.conditions[i].label for i in a.points],
    }
