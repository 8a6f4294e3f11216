"""The report's sections on the sweep's declared design, rendered from ``DesignFindings``
(``findings``): the predictions and their verdicts (the report's opening), then the design,
seed noise, dose-response, within-axis rank statistics, rank correlation across conditions,
covariates and interventions (one function returning Markdown lines each), and the paragraph
of Methods that defines them (``METHODS``)."""

from __future__ import annotations

import json

import numpy as np

from flatrob_jax.analysis import predictions as pred
from flatrob_jax.analysis.findings import DesignFindings
from flatrob_jax.analysis.markdown import number, pvalue, signed, table


def render_predictions(s: DesignFindings) -> list:
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
        f"{1 - s.confidence:.2g}) excludes 0 on the predicted side, **refuted** when it "
        "excludes 0 on the opposite side, **inconclusive** otherwise. A refuted prediction is "
        "a result.",
        "",
    ]
    for key, text in (
        ("P1", "P1 (augmentation -> flatter)"),
        ("P2", "P2 (flatter -> more robust)"),
    ):
        vs = [v for v in s.verdicts if v.prediction.startswith(key)]
        count = {k: sum(v.verdict == k for v in vs) for k in pred.VERDICTS}
        parts.append(
            f"In short, {text}: {count[pred.SUPPORTED]} supported, {count[pred.REFUTED]} "
            f"refuted, {count[pred.INCONCLUSIVE]} inconclusive of {len(vs)} test(s)."
        )
    parts.append("")
    parts += verdict_table(s)
    parts += ["The numbers behind each verdict:", ""]
    for v in s.verdicts:
        what = v.flatness if v.robust is None else f"{v.flatness} vs {v.robust}"
        parts.append(f"- **{v.prediction} ({what}): {v.verdict.upper()}.** {v.evidence}.")
    parts.append("")
    return parts


def verdict_table(s: DesignFindings) -> list:
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
        table(["flatness measure", *columns], body),
        "",
    ]


def render_sections(s: DesignFindings, figures: dict) -> list:
    """The design sections between the run tables and the pooled correlations."""
    return [
        *design_section(s),
        *seed_noise_section(s),
        *dose_response_section(s),
        *within_axis_section(s),
        *across_section(s),
        *covariates_section(s),
        *interventions_section(s, figures),
    ]


def design_section(s: DesignFindings) -> list:
    """The conditions, their runs, roles and families."""
    d = s.design
    ref = d.conditions[d.reference]
    body = []
    for i, c in enumerate(d.conditions):
        if i == d.reference:
            role = "reference"
        elif i in d.interventions:
            role = "intervention"
        elif i in d.augmentations:
            role = "augmentation"
        else:
            role = "other"
        fams = [f.name for f in d.families if i in f.conditions]
        body.append([c.label, len(c.runs), role, ", ".join(fams) or "-"])
    return [
        "## Design",
        "",
        f"{len(d.conditions)} condition(s) from {len(d.run_condition)} run(s); runs whose "
        f"overrides differ only in `{d.seed_key}` are replicates. Reference condition: "
        f"{ref.label} ({json.dumps(ref.overrides, sort_keys=True)}; given by the sweep). "
        f"Factors: {', '.join(d.factors) or 'none'}.",
        "",
        table(["condition", "runs", "role", "family"], body),
        "",
    ]


def seed_noise_section(s: DesignFindings) -> list:
    """The pooled seed SD of every metric."""
    parts = ["## Seed noise", ""]
    if not s.design.replicated:
        return parts + [
            "Not applicable: no replicated condition (every condition has one run), so there "
            "is no seed-noise floor; no pair is dropped from the sign-error and no error bars "
            "are drawn from seeds.",
            "",
        ]
    body = [[m, number(fl.sd), fl.dof, fl.num_conditions] for m, fl in s.floors.items()]
    return parts + [
        f"Pooled standard deviation across seeds of the {len(s.design.replicated)} replicated "
        "condition(s) (the noise floor):",
        "",
        table(["metric", "seed SD", "dof", "conditions"], body),
        "",
    ]


def dose_response_section(s: DesignFindings) -> list:
    """Kendall tau-b of strength vs every measure within each family."""
    parts = ["## Dose-response within families", ""]
    if not s.dose:
        return parts + [
            "Not applicable: the sweep declares no family (a set of conditions that differ "
            "from the reference in one numeric strength; Sweep.families).",
            "",
        ]
    body = [
        [
            r["family"],
            r["strength_key"],
            ", ".join(f"{v:g}" for v in r["strengths"]),
            r["metric"],
            signed(r["tau"]),
            pvalue(r["pvalue"]),
            r["n"],
            r["note"] or "",
        ]
        for r in s.dose
    ]
    header = ["family", "strength key", "strengths", "metric", "tau-b", "p", "n", "note"]
    return parts + [
        "Kendall tau-b of strength vs each measure over the family's runs (scipy; p two-sided, "
        "exact without ties and n <= 33, else normal):",
        "",
        table(header, body),
        "",
    ]


def within_axis_section(s: DesignFindings) -> list:
    """Granulated Kendall and sign-error per (flatness, robust error)."""
    body = []
    for (f, r), g in s.granulated.items():
        se = s.sign_errors[(f, r)]
        axes = "; ".join(f"{a}: {signed(v[0])} ({v[1]} group(s))" for a, v in g.per_factor.items())
        worst = f"{se.worst_factor}: {number(se.worst_value, 2)}" if se.worst_factor else "n/a"
        body.append(
            [
                f,
                r,
                signed(g.value),
                axes or g.note,
                number(se.value, 2),
                se.num_pairs,
                se.num_dropped,
                worst,
                se.note,
            ]
        )
    header = [
        "flatness",
        "robust error",
        "granulated tau",
        "per axis",
        "sign-error",
        "pairs kept",
        "pairs dropped",
        "worst axis",
        "note",
    ]
    return [
        "## Within-axis rank statistics",
        "",
        "Granulated Kendall (Jiang et al. 2020): the mean over axes of tau-a within groups "
        "where only that axis varies (condition means). Sign-error (Dziugaite et al. 2020): "
        "the fraction of pairs of runs differing in one factor that the measure orders "
        "opposite to the robust error (ties 1/2); pairs whose robust-error difference is "
        "within sqrt(2) x the seed SD are dropped.",
        "",
        table(header, body),
        "",
    ]


def _interval(res, ci) -> str:
    return f"{signed(res.statistic)} [{signed(ci.low)}, {signed(ci.high)}]"


def _loo(infl, points, labels) -> str:
    if infl is None or infl.argmax is None:
        return "n/a"
    return f"{signed(infl.deltas[infl.argmax])} ({labels[points[infl.argmax]]})"


def across_section(s: DesignFindings) -> list:
    """Spearman and partial Spearman across conditions, with leave-one-out influence."""
    labels = [c.label for c in s.design.conditions]
    body = []
    for (f, r), a in s.across.items():
        sp, points = a["spearman"], a["points"]
        row = [f, r, sp.n, _interval(sp, a["spearman_ci"]), pvalue(sp.pvalue)]
        row.append(_loo(a["spearman_loo"], points, labels))
        if a["partial"] is not None:
            pc = a["partial"]
            row += [_interval(pc, a["partial_ci"]), pvalue(pc.pvalue)]
            row.append(_loo(a["partial_loo"], points, labels))
        else:
            row += ["n/a (no clean error)", "", ""]
        body.append(row)
    header = [
        "flatness",
        "robust error",
        "conditions",
        "Spearman rho [CI]",
        "p",
        "max LOO",
        "partial rho | clean [CI]",
        "p",
        "max LOO",
    ]
    return [
        "## Rank correlation across conditions",
        "",
        "One point per condition (its mean over seeds). Spearman rho and the partial Spearman "
        f"coefficient controlling for clean error, with {100 * s.confidence:g}% bootstrap "
        "percentile intervals over conditions; 'max LOO' is the largest change of the "
        "coefficient when one condition is left out, and which.",
        "",
        table(header, body),
        "",
    ]


def covariates_section(s: DesignFindings) -> list:
    """Rank correlation of each covariate (mean confidence, ECE) with every flatness measure and
    robust error across conditions: a flatness measure that tracks confidence as closely as the
    robust error does cannot tell flatness from confidence."""
    if not s.covariates:
        return []
    body = []
    for (cov, m), c in s.covariate_corr.items():
        sp = c["spearman"]
        role = "flatness" if m in s.flatness else "robust error"
        body.append([cov, m, role, sp.n, _interval(sp, c["ci"]), pvalue(sp.pvalue)])
    header = ["covariate", "metric", "role", "conditions", "Spearman rho [CI]", "p"]
    return [
        "## Covariates: confidence and calibration",
        "",
        "One point per condition (its mean over seeds): Spearman rho of each covariate with "
        f"each flatness measure and robust error, {100 * s.confidence:g}% bootstrap percentile "
        "interval over conditions. A flatness measure that tracks a covariate as closely as "
        "the robust error does cannot, on these runs, be told apart from that covariate.",
        "",
        table(header, body),
        "",
    ]


def interventions_section(s: DesignFindings, figures: dict) -> list:
    """The intervention line's fit and where each augmentation run lies relative to it."""
    d = s.design
    parts = ["## Interventions on flatness", ""]
    if not s.interventions:
        return parts + [
            "Not applicable: no intervention run (a run with the reference augmentation that "
            f"changes {', '.join(d.intervention_keys)}).",
            "",
        ]
    body = []
    for (f, r), fit in s.interventions.items():
        measured = np.isfinite(fit.t).any()
        off = f"{int(np.sum(np.abs(fit.t) > 2))} of {len(fit.t)}" if measured else "n/a"
        slopes = [number(fit.coef[1]), number(fit.coef[2]), number(fit.resid_sd)]
        body.append([f, r, fit.n, *slopes, off, fit.note])
    header = [
        "flatness",
        "robust error",
        "fit runs",
        "slope flatness",
        "slope clean",
        "resid SD",
        "augmentation runs with abs(t) > 2",
        "note",
    ]
    parts += [
        f"Least squares robust error ~ 1 + flatness + clean error on the {len(s.fit_runs)} "
        "runs of the reference and intervention conditions; for each augmentation run its "
        "residual in units of the fit's residual SD (z) and its prediction t (with the fit's "
        "uncertainty). |z| or |t| above about 2 means the run does not lie on the "
        "intervention line.",
        "",
        table(header, body),
        "",
    ]
    for (f, r), fit in s.interventions.items():
        if not np.isfinite(fit.z).any():
            continue
        rows = [
            [d.run_label(run), signed(z), signed(t), pvalue(p)]
            for run, z, t, p in zip(s.eval_runs, fit.z, fit.t, fit.pvalue)
        ]
        parts += [f"{f} vs {r}:", "", table(["augmentation run", "z", "t", "p"], rows), ""]
    if "interventions" in figures:
        parts += [f"![intervention line]({figures['interventions']})", ""]
    return parts


# The Methods paragraph of the design statistics.
METHODS = (
    "Study statistics. Conditions are runs grouped by their overrides without the seed; the "
    "seed-noise floor of a metric is the pooled SD over the replicated conditions, "
    "sqrt(sum (n_g - 1) s_g^2 / sum (n_g - 1)). Scatter plots show condition means with error "
    "bars of the condition's seed SD (the pooled floor for a condition with one run) when any "
    "condition is replicated, else one point per run with its measurement's standard error. "
    "Factors: each override key, with the augment.* keys one factor (the augmentation). "
    "Families: conditions differing from the reference in one numeric strength (declared by "
    "the sweep). Dose-response: Kendall tau-b of strength vs measure over the family's runs. "
    "P1a: the stratified Kendall test, S = sum over augmentation families of "
    "sum_{i<j} sign(d strength) sign(d measure), p from the exact distribution of S with "
    "measures permuted within families (Monte Carlo when too many arrangements). P1b: "
    "two-sided sign test of augmented conditions flatter vs sharper than `none`, leaving out "
    "differences within floor x sqrt(1/n_a + 1/n_none); the comparisons share the one `none` "
    "condition, so they are not independent. Granulated Kendall: Jiang et al. (2020), tau-a "
    "within groups where only one factor varies, averaged per factor, then over factors. "
    "Sign-error: Dziugaite et al. (2020), (1 - sign(d measure) sign(d robust)) / 2 over pairs "
    "of runs whose conditions differ in one factor, dropping pairs with |d robust| <= sqrt(2) "
    "x floor (one SD of the difference of two runs). Partial Spearman: Pearson r of the "
    "residuals of rank(flatness) and rank(robust) after least squares on [1, rank(clean)] "
    "(equal to the partial-correlation formula on Spearman coefficients), p from t with n - 3 "
    "degrees of freedom; P2 is judged by its bootstrap percentile interval over conditions "
    "(resamples with an undefined coefficient dropped). Leave-one-out influence: the "
    "coefficient without each condition minus the coefficient. Intervention line: least "
    "squares on the reference and intervention runs; z = residual / residual SD; t = residual "
    "/ (SD sqrt(1 + leverage)) with n - 3 degrees of freedom."
)
