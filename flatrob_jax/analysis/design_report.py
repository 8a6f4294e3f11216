"""The report's sections on the sweep's declared design, rendered from ``DesignFindings``
(``findings``): the predictions and their verdicts (the report's opening), then the design,
seed noise, dose-response, within-axis rank statistics, rank correlation across conditions,
covariates and interventions (one function returning Markdown lines each), and the paragraph
of Methods that defines them (``METHODS``)."""

from __future__ import annotations

import json

import numpy as np

from flatrob_jax.analysis import design_stats
from flatrob_jax.analysis import predictions as pred
from flatrob_jax.analysis.findings import PAPER_R, PRIMARY_ROBUST, DesignFindings
from flatrob_jax.analysis.markdown import number, pvalue, signed, table


def _verdict_pair(raw: str, adjusted: str) -> str:
    return raw if raw == adjusted else f"{raw} (Holm: {adjusted})"


def render_predictions(s: DesignFindings) -> list:
    """The report's opening: the primary test and its verdict, then the secondary
    predictions with their raw and Holm-adjusted verdicts."""
    return [*primary_section(s), *secondary_section(s)]


def _without_none(test) -> str:
    if test is None:
        return "n/a (no none)"
    if not np.isfinite(test.statistic):
        return f"n/a (n = {test.n})"
    return f"{signed(test.statistic)} (p {pvalue(test.pvalue)})"


def primary_section(s: DesignFindings) -> list:
    """The declared primary test: the paper's Pearson r across condition means, beside the
    paper's > 0.9, with its permutation p, Holm over the primary measures, the
    without-none sensitivity row and the design's power."""
    parts = [
        "## Primary test",
        "",
        "Declared before the numbers, the paper's own statistic: Pearson r of the flatness "
        "measure on augmented data (lambda_max, and the trace) vs mean corruption error "
        f"across condition means (the reference and the augmentation conditions); the paper "
        f"reports r > {PAPER_R:g}. Two-sided permutation p (exact over all n! arrangements up "
        f"to n = 9 conditions, else Monte Carlo), Holm-adjusted over the primary measures; "
        f"supported when significant at {1 - s.confidence:.2g} with r > 0.",
        "",
    ]
    if not s.primary:
        return parts + [
            f"Not computable: the study lacks {PRIMARY_ROBUST} or a lambda_max / trace measure.",
            "",
        ]
    body = []
    for t in s.primary:
        wn = t.without_none
        body.append(
            [
                t.flatness,
                len(t.conditions),
                f"{signed(t.pearson.statistic)} (paper: > {PAPER_R:g})",
                f"{pvalue(t.pearson.pvalue)} ({t.pearson.pvalue_method})",
                pvalue(t.adjusted_pvalue),
                _verdict_pair(t.verdict, t.adjusted_verdict).upper(),
                f"{signed(t.spearman.statistic)} (p {pvalue(t.spearman.pvalue)})",
                _without_none(wn),
            ]
        )
    header = [
        "measure",
        "conditions",
        "Pearson r",
        "p",
        "Holm p",
        "verdict",
        "Spearman rho",
        "without none: r",
    ]
    parts += [table(header, body), ""]
    for t in s.primary:
        if not np.isfinite(t.upper):
            continue
        against = "excludes" if t.upper < PAPER_R else "does not exclude"
        parts.append(
            f"- {t.flatness}: one-sided {100 * s.confidence:g}% upper bound of r (Fisher z) "
            f"{signed(t.upper)}, which {against} the paper's r > {PAPER_R:g}."
        )
    parts.append("")
    power = s.primary[0].power
    if power is not None:
        parts += [
            f"Power of this design ({power.n} conditions): when the true r is "
            f"{power.true_r:g}, a one-sided {100 * power.confidence:g}% Fisher-z bound excludes "
            f"r <= {power.null_r:g} in {100 * power.power:.0f}% of {power.num_sims} simulated "
            f"studies (± {100 * power.stderr:.1f}%). The row without none is a declared "
            "sensitivity analysis, not a second test.",
            "",
        ]
    return parts


def secondary_section(s: DesignFindings) -> list:
    """The secondary predictions, the rule, and each verdict raw and Holm-adjusted."""
    level = f"{1 - s.confidence:.2g}"
    parts = [
        "## Secondary predictions (Holm within each prediction)",
        "",
        "Written down before the numbers:",
        "",
        f"- {pred.P1_TEXT}",
        f"- {pred.P2_TEXT}",
        "",
        f"Rule: **supported** when the two-sided test at level {level} is significant with "
        "the predicted sign, **refuted** when significant with the opposite sign, "
        "**inconclusive** otherwise. P1a: stratified Kendall tau-a, permutation p (exact, or "
        "Monte Carlo when the arrangements are too many; the evidence says which). P1b: "
        "each augmented condition against a replicated none (t on the seed noise); supported "
        "when some are significantly flatter and none significantly sharper. P2: partial "
        "Spearman given clean error, Freedman-Lane permutation p. Each verdict is given raw "
        "and, where it differs, after Holm's adjustment within its prediction (P1a over the "
        "measures, P1b over every contrast, P2 over every measure x robust error). A refuted "
        "prediction is a result.",
        "",
    ]
    parts += verdict_table(s)
    parts += ["The numbers behind each verdict:", ""]
    for v in s.verdicts:
        what = v.flatness if v.robust is None else f"{v.flatness} vs {v.robust}"
        verdict = _verdict_pair(v.verdict, v.adjusted_verdict).upper()
        holm = f" Holm-adjusted p = {pvalue(v.adjusted_pvalue)}." if np.isfinite(v.pvalue) else ""
        parts.append(f"- **{v.prediction} ({what}): {verdict}.** {v.evidence}.{holm}")
    parts.append("")
    return parts


def verdict_table(s: DesignFindings) -> list:
    """One row per flatness measure, one column per test: P1a, P1b, then P2 against each
    robust error; each cell the verdict (Holm's where it differs) and its statistic."""
    if not s.verdicts:
        return []
    columns = ["P1a", "P1b"] + [f"P2 vs {r}" for r in s.robust]
    cells = {}
    for v in s.verdicts:
        column = v.prediction if v.robust is None else f"P2 vs {v.robust}"
        stat = "" if not np.isfinite(v.statistic) else f" ({v.statistic:+.2g})"
        cells[(v.flatness, column)] = f"{_verdict_pair(v.verdict, v.adjusted_verdict)}{stat}"
    body = [[f] + [cells.get((f, c), "-") for c in columns] for f in s.flatness]
    return [
        "Verdicts at a glance (statistic in brackets: P1a Kendall tau-a of strength vs "
        "measure, P1b significantly flatter minus sharper conditions than none, P2 the "
        "partial Spearman):",
        "",
        table(["flatness measure", *columns], body),
        "",
    ]


def render_sections(s: DesignFindings, figures: dict) -> list:
    """The design sections between the run tables and the pooled correlations."""
    return [
        *design_section(s),
        *seed_noise_section(s),
        *reliability_section(s),
        *dose_response_section(s),
        *p1a_margins_section(s),
        *p1b_section(s),
        *within_axis_section(s),
        *across_section(s),
        *partials_section(s),
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
        *[line for note in s.notes for line in (note, "")],
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


def reliability_section(s: DesignFindings) -> list:
    """Signal-to-noise per metric and the correlation ceiling it implies."""
    rel = {m: r for m, r in s.reliability.items() if m in (*s.flatness, *s.robust)}
    if not rel or not any(np.isfinite(r.reliability) for r in rel.values()):
        return []
    body = [
        [m, number(r.between_var), number(r.seed_var), number(r.snr), number(r.reliability)]
        for m, r in rel.items()
    ]
    ceilings = []
    for f in s.flatness:
        for r in s.robust:
            c = design_stats.correlation_ceiling(rel[f], rel[r])
            ceilings.append([f, r, number(c, 2)])
    return [
        "## Reliability",
        "",
        "Per metric: the variance of the true condition means (the observed means' variance "
        "less the seed variance they carry), the seed variance, their ratio (signal-to-noise "
        "per run) and the reliability of the condition means (the share of their variance that "
        "is not seed noise). Two metrics with reliabilities R_a, R_b cannot correlate across "
        "condition means beyond sqrt(R_a R_b) in expectation (the ceiling).",
        "",
        table(["metric", "between-condition var", "seed var", "SNR", "reliability"], body),
        "",
        table(["flatness", "robust error", "correlation ceiling"], ceilings),
        "",
    ]


def dose_response_section(s: DesignFindings) -> list:
    """Kendall tau-a of strength vs every measure within each family, permutation p."""
    parts = ["## Dose-response within families", ""]
    if not s.dose:
        return parts + [
            "Not applicable: the sweep declares no family (a set of conditions that differ "
            "from the reference in one numeric strength; Sweep.families).",
            "",
        ]
    body = [
        [
            r.family,
            r.strength_key,
            ", ".join(f"{v:g}" for v in r.strengths),
            r.metric,
            signed(r.tau_a),
            f"{r.s} / {r.s_max}",
            f"{pvalue(r.pvalue)} ({r.pvalue_method})",
            pvalue(r.min_pvalue),
            r.n,
            r.note or "",
        ]
        for r in s.dose
    ]
    header = [
        "family",
        "strength key",
        "strengths",
        "metric",
        "tau-a",
        "S / S_max",
        "p",
        "smallest attainable p",
        "n",
        "note",
    ]
    return parts + [
        "Kendall tau-a of strength vs each measure over the family's runs, with the "
        "permutation p of S (measures permuted over the runs, exact when the arrangements are "
        "few; the statistic and p of P1a on one family):",
        "",
        table(header, body),
        "",
    ]


def p1a_margins_section(s: DesignFindings) -> list:
    """Each adjacent pair of strengths: the change in seed-noise units."""
    rows = [
        [m, x.family, f"{x.low:g} -> {x.high:g}", number(x.difference), signed(x.z, 1)]
        for m, margins in s.p1a_margins.items()
        for x in margins
    ]
    if not rows:
        return []
    return [
        "## P1a: each step of strength in seed-noise units",
        "",
        "The change of the condition mean between adjacent strengths of a family, and that "
        "change over its seed-noise standard error floor x sqrt(1/n_a + 1/n_b) (z; n/a without "
        "a replicated condition). |z| below about 2 is a step within the seed noise.",
        "",
        table(["measure", "family", "strengths", "change", "z"], rows),
        "",
    ]


def p1b_section(s: DesignFindings) -> list:
    """Each augmented condition against none, per flatness measure."""
    if not s.p1b:
        return []
    labels = [c.label for c in s.design.conditions]
    rows = []
    for m, cs in s.p1b.items():
        for c, adj in zip(cs, s.p1b_adjusted[m]):
            if not np.isfinite(c.pvalue):
                rows.append([m, labels[c.condition], number(c.difference), "", "", "", c.note])
                continue
            rows.append(
                [
                    m,
                    labels[c.condition],
                    number(c.difference),
                    signed(c.t),
                    pvalue(c.pvalue),
                    pvalue(adj),
                    "",
                ]
            )
    return [
        "## P1b: each augmented condition against none",
        "",
        "Difference of condition means (augmented - none), t on the pooled seed noise and "
        "its two-sided p, Holm-adjusted over every contrast of P1b. A contrast needs none "
        "replicated: with one none run its seed noise is unmeasured, so no p-value is given.",
        "",
        table(["measure", "condition", "difference", "t", "p", "Holm p", "note"], rows),
        "",
    ]


def _within_axis_rows(granulated: dict, sign_errors: dict) -> list:
    body = []
    for (f, r), g in granulated.items():
        se = sign_errors[(f, r)]
        axes = "; ".join(f"{a}: {signed(v[0])} ({v[1]} group(s))" for a, v in g.per_factor.items())
        if len(g.per_factor) == 1:
            axes = f"plain Kendall tau-a (one axis: {axes})"
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
    return body


def within_axis_section(s: DesignFindings) -> list:
    """Granulated Kendall and sign-error per (flatness, robust error), over the design's
    factors and over the augmentation families and their strength."""
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
    parts = [
        "## Within-axis rank statistics",
        "",
        "Granulated Kendall (Jiang et al. 2020): the mean over axes of tau-a within groups "
        "where only that axis varies (condition means); with a single axis it is plain "
        "Kendall tau-a, and the table says so. Sign-error (Dziugaite et al. 2020): the "
        "fraction of pairs of runs differing in one axis that the measure orders opposite to "
        "the robust error (ties 1/2); pairs whose robust-error difference is within sqrt(2) x "
        "the seed SD are dropped. Axes: the design's factors (override keys, the augment.* keys "
        "one factor).",
        "",
        table(header, _within_axis_rows(s.granulated, s.sign_errors)),
        "",
    ]
    if s.granulated_families:
        parts += [
            "The same with the augmentation families and their strength as the two axes: along "
            "'strength' the conditions of one family (the reference where a family holds it), "
            "along 'family' the families at the same strength rank (0 the weakest); conditions "
            "in no family (none) are left out.",
            "",
            table(header, _within_axis_rows(s.granulated_families, s.sign_errors_families)),
            "",
        ]
    return parts


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
        sp, points = a.spearman, a.points
        row = [f, r, sp.n, _interval(sp, a.spearman_ci), pvalue(sp.pvalue)]
        row.append(_loo(a.spearman_loo, points, labels))
        if a.partial is not None:
            pc = a.partial
            row += [_interval(pc, a.partial_ci), pvalue(pc.pvalue)]
            row.append(_loo(a.partial_loo, points, labels))
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
        "percentile intervals over conditions and permutation p-values (Freedman-Lane for the "
        "partial; exact up to 9 conditions); 'max LOO' is the largest change of the "
        "coefficient when one condition is left out, and which.",
        "",
        table(header, body),
        "",
    ]


def partials_section(s: DesignFindings) -> list:
    """Partial Spearman given each covariate, side by side, Freedman-Lane p."""
    if not s.partials or not s.partial_covariates:
        return []
    labels = list(s.partial_covariates)
    body = []
    for (f, r), tests in s.partials.items():
        row = [f, r]
        for label in labels:
            t = tests[label]
            row.append(f"{signed(t.statistic)} (p {pvalue(t.pvalue)})")
        body.append(row)
    given = ", ".join(f"{k} = {v}" for k, v in s.partial_covariates.items())
    method = next(iter(next(iter(s.partials.values())).values())).pvalue_method
    return [
        "## Partial correlations given each covariate",
        "",
        f"Partial Spearman across condition means given one covariate at a time ({given}), "
        f"each with its Freedman-Lane permutation p ({method}); raw p-values, secondary. A "
        "measure whose association with the robust error vanishes given the train loss "
        "tracks where training ended rather than flatness as such.",
        "",
        table(["flatness", "robust error", *[f"given {k}" for k in labels]], body),
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
        sp = c.spearman
        role = "flatness" if m in s.flatness else "robust error"
        body.append([cov, m, role, sp.n, _interval(sp, c.ci), pvalue(sp.pvalue)])
    header = ["covariate", "metric", "role", "conditions", "Spearman rho [CI]", "p"]
    return [
        "## Covariates: confidence and calibration",
        "",
        "One point per condition (its mean over seeds): Spearman rho of each covariate with "
        f"each flatness measure and robust error, {100 * s.confidence:g}% bootstrap percentile "
        "interval over conditions, permutation p. A flatness measure that tracks a covariate "
        "as closely as the robust error does cannot, on these runs, be told apart from that "
        "covariate.",
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
    "the sweep). Primary test: Pearson r across condition means with the two-sided "
    "permutation p of scipy.stats.permutation_test (exact over the n! pairings up to n = 9, "
    "else 9999 seeded Monte Carlo permutations), Holm over the primary measures; its power "
    "by simulation of bivariate normal samples. Dose-response and P1a: Kendall tau-a, S = "
    "sum over families of sum_{i<j} sign(d strength) sign(d measure), p from the exact "
    "distribution of S with measures permuted within families (Monte Carlo when too many "
    "arrangements); S_max the number of pairs. P1b: (mean_a - mean_none) / (floor sqrt(1/n_a "
    "+ 1/n_none)) against Student's t with the floor's degrees of freedom, only with a "
    "replicated none. P2: partial Spearman (Pearson r of the residuals of rank(flatness) and "
    "rank(robust) after least squares on [1, rank(covariate)]) with the Freedman-Lane "
    "permutation p (the robust error's residuals on the covariate permuted). Holm's "
    "step-down adjustment within each prediction. Reliability: (var of condition means - "
    "floor^2 mean(1/n_g)) / var of condition means; the ceiling sqrt(R_a R_b). Granulated "
    "Kendall: Jiang et al. (2020), tau-a within groups where only one factor varies, "
    "averaged per factor, then over factors. Sign-error: Dziugaite et al. (2020), (1 - "
    "sign(d measure) sign(d robust)) / 2 over pairs of runs whose conditions differ in one "
    "factor, dropping pairs with |d robust| <= sqrt(2) x floor. Bootstrap intervals over "
    "conditions: percentile, scipy.stats.bootstrap (resamples with an undefined coefficient "
    "dropped); descriptive. Leave-one-out influence: the coefficient without each condition "
    "minus the coefficient. Intervention line: least squares on the reference and "
    "intervention runs; z = residual / residual SD; t = residual / (SD sqrt(1 + leverage)) "
    "with n - 3 degrees of freedom."
)
