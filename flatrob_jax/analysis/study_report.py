"""The study statistics of one sweep, computed together and rendered as report sections.

``compute(table, flatness, robust, clean, design)`` gathers, for the report: the seed-noise
floor of every metric, the per-family dose-response, the granulated Kendall coefficient and
the sign-error, the rank and partial rank correlations across conditions with their
leave-one-out influence, the intervention line, and the verdicts on the paper's predictions
(``predictions``). ``render_*`` turn them into Markdown; ``to_json`` into a strict-JSON
payload. Definitions are in ``study_stats``, ``design`` and ``predictions``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import scipy.stats

from flatrob_jax.analysis import predictions as pred
from flatrob_jax.analysis import stats, study_stats, zoo_report
from flatrob_jax.analysis.design import AUGMENT_NAME_KEY, Design
from flatrob_jax.analysis.results import MetricTable

NONE_AUGMENT = "none"


@dataclass
class StudyStats:
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


def _fmt(v, digits=3) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.{digits}g}"


def _signed(v, digits=2) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:+.{digits}f}"


def _p(p) -> str:
    if p is None or not np.isfinite(p):
        return "n/a"
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def find_none(design: Design, none_name: str = NONE_AUGMENT) -> int | None:
    """The condition trained without augmentation (``augment.name == none_name``) that is not
    an intervention; with several, the one with the fewest overrides."""
    found = [
        i
        for i, c in enumerate(design.conditions)
        if c.overrides.get(AUGMENT_NAME_KEY) == none_name and i not in design.interventions
    ]
    return min(found, key=lambda i: len(design.conditions[i].overrides)) if found else None


def compute(
    table: MetricTable,
    flatness: Sequence[str],
    robust: Sequence[str],
    clean: str | None,
    design: Design,
    *,
    confidence: float = 0.95,
    num_resamples: int = 2000,
    seed: int = 0,
    none_name: str = NONE_AUGMENT,
    covariates: Sequence[str] = (),
) -> StudyStats:
    """Every statistic of the module docstring for one sweep. ``covariates`` (mean confidence,
    calibration error) get their noise floor and their rank correlation across conditions with
    every flatness measure and robust error."""
    alpha = 1.0 - confidence
    out = StudyStats(design, list(flatness), list(robust), clean, confidence)
    out.covariates = [c for c in covariates if c != clean]
    metrics = list(
        dict.fromkeys([*flatness, *robust, *([clean] if clean else []), *out.covariates])
    )
    for m in metrics:
        out.floors[m] = study_stats.noise_floor(table.column(m), design)
        out.means[m] = study_stats.condition_means(table.column(m), design)

    # Dose-response: per family, Kendall tau-b of strength vs every measure, runs as points.
    for fam in design.families:
        runs = [r for ci in fam.conditions for r in design.conditions[ci].runs]
        strength = np.array(
            [s for ci, s in zip(fam.conditions, fam.strengths) for _ in design.conditions[ci].runs],
            dtype=float,
        )
        for m in [*flatness, *robust]:
            c = stats.kendall(strength, table.column(m)[runs])
            out.dose.append(
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

    # P1a: stratified Kendall over augmentation families (two or more strengths).
    aug_fams = [f for f in design.families if not f.intervention and len(set(f.strengths)) >= 2]
    for k, m in enumerate(flatness):
        groups = []
        for fam in aug_fams:
            runs = [r for ci in fam.conditions for r in design.conditions[ci].runs]
            strength = [
                s
                for ci, s in zip(fam.conditions, fam.strengths)
                for _ in design.conditions[ci].runs
            ]
            groups.append((np.array(strength, dtype=float), table.column(m)[runs]))
        res = study_stats.stratified_kendall(groups, rng=np.random.default_rng([seed, 1, k]))
        out.p1a[m] = res
        if res.num_groups == 0:
            v, why = (
                pred.INCONCLUSIVE,
                "not applicable: no augmentation family with two or more strengths",
            )
        else:
            v = pred.verdict_from_test(res.statistic, res.pvalue, alpha, -1)
            why = (
                f"Kendall tau-a of strength vs {m} pooled within {res.num_groups} famil"
                f"{'y' if res.num_groups == 1 else 'ies'} ({', '.join(f.name for f in aug_fams)}; "
                f"{res.n} runs) = {_signed(res.statistic)}, {res.pvalue_method} p = "
                f"{_p(res.pvalue)}; "
                "predicted < 0"
            )
            if v == pred.REFUTED:
                why += f": stronger augmentation gave a larger {m} (a sharper minimum)"
        out.verdicts.append(
            pred.Verdict(
                "P1a", m, None, v, res.statistic, math.nan, math.nan, res.pvalue, res.n, why
            )
        )

    # P1b: augmented conditions vs none.
    none = find_none(design, none_name)
    out.none_condition = none
    augmented = [i for i in (design.reference, *design.augmentations) if i != none]
    for m in flatness:
        mean, _, n = out.means[m]
        if none is None:
            out.verdicts.append(
                pred.Verdict(
                    "P1b",
                    m,
                    None,
                    pred.INCONCLUSIVE,
                    math.nan,
                    math.nan,
                    math.nan,
                    math.nan,
                    0,
                    f"not applicable: no condition with augment.name = {none_name!r}",
                )
            )
            continue
        st = pred.sign_test_vs_none(mean, n, none, augmented, out.floors[m].sd, alpha)
        out.p1b[m] = st
        total = st.flatter + st.sharper + st.within
        why = (
            f"{st.flatter} of {total} augmented condition(s) have a smaller {m} than no "
            "augmentation "
            f"beyond the seed noise, {st.sharper} a larger one, {st.within} within it; two-sided "
            "sign "
            f"test p = {_p(st.pvalue)}"
        )
        if not np.isfinite(out.floors[m].sd):
            why += " (no replicated condition: every difference counted)"
        if st.verdict == pred.REFUTED:
            why += ": augmentation gave sharper minima than no augmentation"
        out.verdicts.append(
            pred.Verdict(
                "P1b",
                m,
                None,
                st.verdict,
                float(st.flatter - st.sharper),
                math.nan,
                math.nan,
                st.pvalue,
                total,
                why,
            )
        )

    # Covariates: does a flatness measure or robust error move with confidence or calibration?
    for j, cov in enumerate(out.covariates):
        for i, m in enumerate([*flatness, *robust]):
            out.covariate_corr[(cov, m)] = _rank_across(
                out.means[cov][0],
                out.means[m][0],
                num_resamples=num_resamples,
                confidence=confidence,
                rng=np.random.default_rng([seed, 3, j, i]),
            )

    # Per pair: granulated Kendall, sign-error, across-condition rank statistics, interventions.
    fit_conds = (design.reference, *design.interventions) if design.interventions else ()
    out.fit_runs = tuple(r for ci in fit_conds for r in design.conditions[ci].runs)
    out.eval_runs = tuple(r for ci in design.augmentations for r in design.conditions[ci].runs)
    labels = [c.label for c in design.conditions]
    k = 0
    for f in flatness:
        for r in robust:
            k += 1
            fm, rm = out.means[f][0], out.means[r][0]
            out.granulated[(f, r)] = study_stats.granulated_kendall(fm, rm, design)
            floor = out.floors[r].sd
            thr = math.sqrt(2.0) * floor if np.isfinite(floor) else math.nan
            out.sign_errors[(f, r)] = study_stats.sign_error(
                table.column(f), table.column(r), design, thr
            )
            out.across[(f, r)] = _across(
                fm,
                rm,
                out.means[clean][0] if clean else None,
                labels,
                num_resamples=num_resamples,
                confidence=confidence,
                rng=np.random.default_rng([seed, 2, k]),
            )
            a = out.across[(f, r)]
            if a["partial"] is not None:
                v = pred.verdict_from_interval(a["partial_ci"].low, a["partial_ci"].high, +1)
                stat, ci, what = (
                    a["partial"].statistic,
                    a["partial_ci"],
                    "partial Spearman given clean error",
                )
                n = a["partial"].n
            else:
                v = pred.verdict_from_interval(a["spearman_ci"].low, a["spearman_ci"].high, +1)
                stat, ci, what = (
                    a["spearman"].statistic,
                    a["spearman_ci"],
                    "Spearman (no clean error to control for)",
                )
                n = a["spearman"].n
            why = (
                f"{what} of {f} vs {r} across {n} conditions = {_signed(stat)} "
                f"[{_signed(ci.low)}, {_signed(ci.high)}] ({100 * confidence:g}% bootstrap "
                "percentile); "
                "predicted > 0"
            )
            infl = a["partial_loo" if a["partial"] is not None else "spearman_loo"]
            if infl.argmax is not None:
                why += (
                    f"; leaving out {labels[a['points'][infl.argmax]]} moves it by "
                    f"{_signed(infl.deltas[infl.argmax])}"
                )
            if v == pred.REFUTED:
                why += ": flatter minima went with larger robust error"
            out.verdicts.append(
                pred.Verdict("P2", f, r, v, stat, ci.low, ci.high, math.nan, n, why)
            )
            if fit_conds:
                fit_mask = np.zeros(len(table.runs), bool)
                fit_mask[list(out.fit_runs)] = True
                eval_mask = np.zeros(len(table.runs), bool)
                eval_mask[list(out.eval_runs)] = True
                out.interventions[(f, r)] = study_stats.intervention_fit(
                    table.column(f),
                    table.column(r),
                    table.column(clean) if clean else None,
                    fit_mask,
                    eval_mask,
                )
    return out


def _rho(a, b) -> float:
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(scipy.stats.spearmanr(a, b).statistic)


def _rank_across(x, y, *, num_resamples, confidence, rng) -> dict:
    """Spearman rho of two per-condition means with its bootstrap percentile interval."""
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    return {
        "spearman": stats.spearman(x, y),
        "ci": study_stats.bootstrap_percentile(
            _rho, (x, y), num_resamples=num_resamples, confidence=confidence, rng=rng
        ),
        "points": np.flatnonzero(keep),
    }


def _across(fm, rm, cm, labels, *, num_resamples, confidence, rng) -> dict:
    """Spearman and partial Spearman across conditions with intervals and LOO influence."""
    keep = np.isfinite(fm) & np.isfinite(rm) & (np.isfinite(cm) if cm is not None else True)
    points = np.flatnonzero(keep)
    x, y = fm[keep], rm[keep]
    out = {"points": points}
    out["spearman"] = stats.spearman(x, y)
    out["spearman_ci"] = study_stats.bootstrap_percentile(
        _rho, (x, y), num_resamples=num_resamples, confidence=confidence, rng=rng
    )
    out["spearman_loo"] = study_stats.leave_one_out(_rho, (x, y))
    if cm is None:
        out["partial"] = out["partial_ci"] = out["partial_loo"] = None
        return out
    z = cm[keep]

    def partial(a, b, c):
        if a.size < 4:
            return math.nan
        return study_stats.partial_spearman_value(a, b, c)

    out["partial"] = study_stats.partial_spearman(x, y, z)
    out["partial_ci"] = study_stats.bootstrap_percentile(
        partial, (x, y, z), num_resamples=num_resamples, confidence=confidence, rng=rng
    )
    out["partial_loo"] = study_stats.leave_one_out(partial, (x, y, z))
    return out


# --------------------------------------------------------------------------- Markdown


def _table(header, body) -> str:
    cell = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = [
        "| " + " | ".join(cell(h) for h in header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def render_predictions(s: StudyStats) -> list:
    """The report's opening section: the predictions, the rule, and each verdict in words."""
    level = f"{100 * s.confidence:g}%"
    parts = [
        "## Predictions and verdicts",
        "",
        "Written down before the numbers:",
        "",
        f"- {pred.P1_TEXT}",
        f"- {pred.P2_TEXT}",
        "",
        f"Rule: **supported** when the {level} interval (or the two-sided test at level "
        f"{1 - s.confidence:.2g}) excludes 0 on the predicted side, **refuted** when it excludes 0 "
        "on the "
        "opposite side, **inconclusive** otherwise. A refuted prediction is a result.",
        "",
    ]
    for key, text in (
        ("P1", "P1 (augmentation -> flatter)"),
        ("P2", "P2 (flatter -> more robust)"),
    ):
        vs = [v for v in s.verdicts if v.prediction.startswith(key)]
        counts = {
            k: sum(v.verdict == k for v in vs)
            for k in (pred.SUPPORTED, pred.REFUTED, pred.INCONCLUSIVE)
        }
        parts.append(
            f"In short, {text}: {counts[pred.SUPPORTED]} supported, {counts[pred.REFUTED]} "
            "refuted, "
            f"{counts[pred.INCONCLUSIVE]} inconclusive of {len(vs)} test(s)."
        )
    parts.append("")
    parts += verdict_table(s)
    parts += ["The numbers behind each verdict:", ""]
    for v in s.verdicts:
        what = v.flatness if v.robust is None else f"{v.flatness} vs {v.robust}"
        parts.append(f"- **{v.prediction} ({what}): {v.verdict.upper()}.** {v.evidence}.")
    parts.append("")
    return parts


def verdict_table(s: StudyStats) -> list:
    """One row per flatness measure, one column per test: P1a, P1b, then P2 against each
    robust error; each cell the verdict and its statistic."""
    if not s.verdicts:
        return []
    columns = ["P1a", "P1b"] + [f"P2 vs {r}" for r in s.robust]
    cells = {}
    for v in s.verdicts:
        column = v.prediction if v.robust is None else f"P2 vs {v.robust}"
        stat = "" if not np.isfinite(v.statistic) else f" ({v.statistic:+.2g})"
        cells[(v.flatness, column)] = f"{v.verdict}{stat}"
    body = [[f] + [cells.get((f, c), "-") for c in columns] for f in s.flatness]
    return [
        "Verdicts at a glance (statistic in brackets: P1a Kendall tau of strength vs measure, "
        "P1b flatter minus sharper conditions than none, P2 the partial Spearman):",
        "",
        _table(["flatness measure", *columns], body),
        "",
    ]


def render_covariates(s: StudyStats) -> list:
    """Rank correlation of each covariate (mean confidence, ECE) with every flatness measure and
    robust error across conditions: a flatness measure that tracks confidence as closely as the
    robust error does cannot tell flatness from confidence."""
    if not s.covariates:
        return []
    parts = ["## Covariates: confidence and calibration", ""]
    body = []
    for (cov, m), c in s.covariate_corr.items():
        sp, ci = c["spearman"], c["ci"]
        role = "flatness" if m in s.flatness else "robust error"
        body.append(
            [
                cov,
                m,
                role,
                sp.n,
                f"{_signed(sp.statistic)} [{_signed(ci.low)}, {_signed(ci.high)}]",
                _p(sp.pvalue),
            ]
        )
    parts += [
        "One point per condition (its mean over seeds): Spearman rho of each covariate with each "
        f"flatness measure and robust error, {100 * s.confidence:g}% bootstrap percentile "
        "interval over conditions. A flatness measure that tracks a covariate as closely as the "
        "robust error does cannot, on these runs, be told apart from that covariate.",
        "",
        _table(["covariate", "metric", "role", "conditions", "Spearman rho [CI]", "p"], body),
        "",
    ]
    return parts


def render_sections(s: StudyStats, figures: dict) -> list:
    """The statistics sections between the run table and the pooled correlations."""
    d = s.design
    labels = [c.label for c in d.conditions]
    parts = ["## Design", ""]
    ref = d.conditions[d.reference]
    parts += [
        f"{len(d.conditions)} condition(s) from {len(d.run_condition)} run(s); runs whose "
        "overrides differ "
        f"only in `{d.seed_key}` are replicates. Reference condition: {ref.label} "
        f"({json.dumps(ref.overrides, sort_keys=True)}; {d.reference_why}). Factors: "
        f"{', '.join(d.factors) or 'none'}.",
        "",
    ]
    body = []
    for i, c in enumerate(d.conditions):
        role = (
            "reference"
            if i == d.reference
            else "intervention"
            if i in d.interventions
            else "augmentation"
            if i in d.augmentations
            else "other"
        )
        fams = [f.name for f in d.families if i in f.conditions]
        body.append([c.label, len(c.runs), role, ", ".join(fams) or "-"])
    parts += [_table(["condition", "runs", "role", "family"], body), ""]

    parts += ["## Seed noise", ""]
    if not d.replicated:
        parts += [
            "Not applicable: no replicated condition (every condition has one run), so there is no "
            "seed-noise floor; no pair is dropped from the sign-error and no error bars are drawn "
            "from "
            "seeds.",
            "",
        ]
    else:
        body = [[m, _fmt(fl.sd), fl.dof, fl.num_conditions] for m, fl in s.floors.items()]
        parts += [
            f"Pooled standard deviation across seeds of the {len(d.replicated)} replicated "
            "condition(s) "
            "(the noise floor):",
            "",
            _table(["metric", "seed SD", "dof", "conditions"], body),
            "",
        ]

    parts += ["## Dose-response within families", ""]
    if not s.dose:
        parts += [
            "Not applicable: no family (a set of conditions that differ from the reference in one "
            "numeric strength) was found or declared.",
            "",
        ]
    else:
        body = [
            [
                r["family"],
                r["strength_key"],
                ", ".join(f"{v:g}" for v in r["strengths"]),
                r["metric"],
                _signed(r["tau"]),
                _p(r["pvalue"]),
                r["n"],
                r["note"] or "",
            ]
            for r in s.dose
        ]
        parts += [
            "Kendall tau-b of strength vs each measure over the family's runs (scipy; "
            "p two-sided, exact without ties and n <= 33, else normal):",
            "",
            _table(
                ["family", "strength key", "strengths", "metric", "tau-b", "p", "n", "note"], body
            ),
            "",
        ]

    parts += ["## Within-axis rank statistics", ""]
    body = []
    for (f, r), g in s.granulated.items():
        se = s.sign_errors[(f, r)]
        axes = "; ".join(f"{a}: {_signed(v[0])} ({v[1]} group(s))" for a, v in g.per_factor.items())
        worst = f"{se.worst_factor}: {_fmt(se.worst_value, 2)}" if se.worst_factor else "n/a"
        body.append(
            [
                f,
                r,
                _signed(g.value),
                axes or g.note,
                _fmt(se.value, 2),
                se.num_pairs,
                se.num_dropped,
                worst,
                se.note,
            ]
        )
    parts += [
        "Granulated Kendall (Jiang et al. 2020): the mean over axes of tau-a within groups where "
        "only "
        "that axis varies (condition means). Sign-error (Dziugaite et al. 2020): the fraction of "
        "pairs of "
        "runs differing in one factor that the measure orders opposite to the robust error (ties "
        "1/2); "
        "pairs whose robust-error difference is within sqrt(2) x the seed SD are dropped.",
        "",
        _table(
            [
                "flatness",
                "robust error",
                "granulated tau",
                "per axis",
                "sign-error",
                "pairs kept",
                "pairs dropped",
                "worst axis",
                "note",
            ],
            body,
        ),
        "",
    ]

    parts += ["## Rank correlation across conditions", ""]
    body = []
    for (f, r), a in s.across.items():
        sp, ci, loo = a["spearman"], a["spearman_ci"], a["spearman_loo"]
        row = [
            f,
            r,
            sp.n,
            f"{_signed(sp.statistic)} [{_signed(ci.low)}, {_signed(ci.high)}]",
            _p(sp.pvalue),
            _loo(loo, a["points"], labels),
        ]
        if a["partial"] is not None:
            pc, pci, ploo = a["partial"], a["partial_ci"], a["partial_loo"]
            row += [
                f"{_signed(pc.statistic)} [{_signed(pci.low)}, {_signed(pci.high)}]",
                _p(pc.pvalue),
                _loo(ploo, a["points"], labels),
            ]
        else:
            row += ["n/a (no clean error)", "", ""]
        body.append(row)
    parts += [
        "One point per condition (its mean over seeds). Spearman rho and the partial Spearman "
        f"coefficient controlling for clean error, with {100 * s.confidence:g}% bootstrap "
        "percentile "
        "intervals over conditions; 'max LOO' is the largest change of the coefficient when one "
        "condition is left out, and which.",
        "",
        _table(
            [
                "flatness",
                "robust error",
                "conditions",
                "Spearman rho [CI]",
                "p",
                "max LOO",
                "partial rho | clean [CI]",
                "p",
                "max LOO",
            ],
            body,
        ),
        "",
    ]

    parts += render_covariates(s)

    parts += ["## Interventions on flatness", ""]
    if not s.interventions:
        parts += [
            "Not applicable: no intervention run (a run with the reference augmentation that "
            "changes "
            f"{', '.join(d.intervention_keys)}).",
            "",
        ]
    else:
        parts += [
            f"Least squares robust error ~ 1 + flatness + clean error on the {len(s.fit_runs)} "
            "runs of the "
            "reference and intervention conditions; for each augmentation run its residual in "
            "units of the "
            "fit's residual SD (z) and its prediction t (with the fit's uncertainty). |z| or |t| "
            "above "
            "about 2 means the run does not lie on the intervention line.",
            "",
        ]
        body = []
        for (f, r), fit in s.interventions.items():
            off = int(np.sum(np.abs(fit.t) > 2)) if np.isfinite(fit.t).any() else 0
            body.append(
                [
                    f,
                    r,
                    fit.n,
                    _fmt(fit.coef[1]),
                    _fmt(fit.coef[2]),
                    _fmt(fit.resid_sd),
                    f"{off} of {len(fit.t)}" if np.isfinite(fit.t).any() else "n/a",
                    fit.note,
                ]
            )
        parts += [
            _table(
                [
                    "flatness",
                    "robust error",
                    "fit runs",
                    "slope flatness",
                    "slope clean",
                    "resid SD",
                    "augmentation runs with abs(t) > 2",
                    "note",
                ],
                body,
            ),
            "",
        ]
        for (f, r), fit in s.interventions.items():
            if not np.isfinite(fit.z).any():
                continue
            rows = [
                [d.run_label(run), _signed(z), _signed(t), _p(p)]
                for run, z, t, p in zip(s.eval_runs, fit.z, fit.t, fit.pvalue)
            ]
            parts += [f"{f} vs {r}:", "", _table(["augmentation run", "z", "t", "p"], rows), ""]
        if "interventions" in figures:
            parts += [f"![intervention line]({figures['interventions']})", ""]
    parts += zoo_report.render(s)  # imported models: measured vs published (none: no lines)
    return parts


def _loo(infl, points, labels) -> str:
    if infl is None or infl.argmax is None:
        return "n/a"
    return f"{_signed(infl.deltas[infl.argmax])} ({labels[points[infl.argmax]]})"


def render_methods(s: StudyStats) -> str:
    return (
        "Study statistics. Conditions are runs grouped by their overrides without the seed; the "
        "seed-noise "
        "floor of a metric is the pooled SD over the replicated conditions, sqrt(sum (n_g - 1) "
        "s_g^2 / "
        "sum (n_g - 1)). Scatter plots show condition means with error bars of the condition's "
        "seed SD (the "
        "pooled floor for a condition with one run) when any condition is replicated, else one "
        "point per run "
        "with its measurement's standard error. Factors: each override key, with the augment.* "
        "keys one "
        "factor (the augmentation). Families: conditions differing from the reference in one "
        "numeric "
        "strength (declared by the sweep or inferred). Dose-response: Kendall tau-b of strength vs "
        "measure "
        "over the family's runs. P1a: the stratified Kendall test, S = sum over augmentation "
        "families of "
        "sum_{i<j} sign(d strength) sign(d measure), p from the exact distribution of S with "
        "measures "
        "permuted within families (Monte Carlo when too many arrangements). P1b: two-sided sign "
        "test of "
        "augmented conditions flatter vs sharper than `none`, leaving out differences within floor "
        "x "
        "sqrt(1/n_a + 1/n_none); the comparisons share the one `none` condition, so they are not "
        "independent. Granulated Kendall: Jiang et al. (2020), tau-a within groups where only one "
        "factor "
        "varies, averaged per factor, then over factors. Sign-error: Dziugaite et al. (2020), (1 - "
        "sign(d "
        "measure) sign(d robust)) / 2 over pairs of runs whose conditions differ in one factor, "
        "dropping "
        "pairs with |d robust| <= sqrt(2) x floor (one SD of the difference of two runs). Partial "
        "Spearman: "
        "Pearson r of the residuals of rank(flatness) and rank(robust) after least squares on [1, "
        "rank(clean)] (equal to the partial-correlation formula on Spearman coefficients), p from "
        "t with n - 3 "
        "degrees of freedom; P2 is judged by its bootstrap percentile interval over conditions "
        "(resamples "
        "with an undefined coefficient dropped). Leave-one-out influence: the coefficient without "
        "each "
        "condition minus the coefficient. Intervention line: least squares on the reference and "
        "intervention runs; z = residual / residual SD; t = residual / (SD sqrt(1 + leverage)) "
        "with n - 3 "
        "degrees of freedom."
    )


# --------------------------------------------------------------------------- JSON


def _clean(v):
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, np.ndarray):
        return [_clean(x) for x in v.tolist()]
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    return v


def to_json(s: StudyStats) -> str:
    """The statistics as strict JSON (NaN as null)."""
    d = s.design
    labels = [c.label for c in d.conditions]
    payload = {
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
        "across_conditions": [
            {
                "flatness": f,
                "robust": r,
                "spearman": a["spearman"].statistic,
                "spearman_ci": [a["spearman_ci"].low, a["spearman_ci"].high],
                "partial_spearman": a["partial"].statistic if a["partial"] else None,
                "partial_pvalue": a["partial"].pvalue if a["partial"] else None,
                "partial_ci": [a["partial_ci"].low, a["partial_ci"].high] if a["partial"] else None,
                "partial_loo": list(a["partial_loo"].deltas) if a["partial"] else None,
                "conditions": [labels[i] for i in a["points"]],
            }
            for (f, r), a in s.across.items()
        ],
        "interventions": [
            {
                "flatness": f,
                "robust": r,
                "coef": list(fit.coef),
                "resid_sd": fit.resid_sd,
                "dof": fit.dof,
                "runs": [d.run_label(i) for i in s.eval_runs],
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
    return json.dumps(_clean(payload), indent=1, allow_nan=False) + "\n"
