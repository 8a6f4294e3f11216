"""The paper's predictions, written down before the numbers, and the rule that judges them.

* **P1, augmentation -> flatter.** (a) Within each augmentation family, a stronger
  augmentation gives a smaller flatness measure (lambda_max, trace, sharpness): Kendall's
  association of strength with the measure is negative, tested over all augmentation
  families at once by the stratified Kendall test (``design_stats.stratified_kendall``, runs as
  points, strengths permuted within families). (b) Every augmented condition is flatter than
  the ``none`` condition: one contrast per augmented condition against a replicated
  ``none`` (``contrasts_vs_none``: t on the pooled seed noise), Holm-adjusted over every
  contrast of P1b; with one ``none`` run the contrasts are not testable and say so.
* **P2, flatter -> more robust.** Across conditions (one point each: its mean over seeds),
  the flatness measure and the robust error have a positive rank association controlling for
  clean error (partial Spearman), tested by Freedman-Lane permutation
  (``stats.freedman_lane``).

The primary test, declared before the others, is the paper's: Pearson r of lambda_max (and
the trace) on augmented data vs mean corruption error across condition means, with its exact
permutation p (``findings.PrimaryTest``). Everything above is secondary.

The rule (``verdict_from_test``): a prediction is **supported** when the two-sided test at
level ``1 - confidence`` is significant with the predicted sign, **refuted** when significant
with the opposite sign, and **inconclusive** otherwise, including when there is nothing to
test. Each verdict is given raw and after Holm's adjustment within its prediction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.stats

SUPPORTED, REFUTED, INCONCLUSIVE = "supported", "refuted", "inconclusive"
VERDICTS = (SUPPORTED, REFUTED, INCONCLUSIVE)

P1_TEXT = (
    "P1, augmentation -> flatter: a stronger augmentation in a family gives a smaller "
    "flatness measure (Kendall tau of strength vs measure < 0), and augmented conditions are "
    "flatter than no augmentation."
)
P2_TEXT = (
    "P2, flatter -> more robust: across conditions, a flatter minimum (smaller measure) "
    "goes with a smaller robust error, controlling for clean error (partial Spearman > 0)."
)


def verdict_from_interval(low: float, high: float, predicted_sign: int) -> str:
    """supported / refuted / inconclusive from an interval and the predicted sign (+1 / -1)."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return INCONCLUSIVE
    if low > 0 or high < 0:
        return SUPPORTED if (1 if low > 0 else -1) == predicted_sign else REFUTED
    return INCONCLUSIVE


def verdict_from_test(estimate: float, pvalue: float, alpha: float, predicted_sign: int) -> str:
    """supported / refuted / inconclusive from a two-sided test at level ``alpha``: significant
    with the predicted sign, significant with the other, or not significant (or undefined)."""
    if not (np.isfinite(estimate) and np.isfinite(pvalue)) or pvalue >= alpha or estimate == 0:
        return INCONCLUSIVE
    return SUPPORTED if np.sign(estimate) == predicted_sign else REFUTED


@dataclass(frozen=True)
class Verdict:
    """One prediction judged on one measure (or measure pair): ``verdict`` and the numbers
    behind it in ``evidence`` (plain words)."""

    prediction: str  # 'P1a', 'P1b', 'P2'
    flatness: str
    robust: str | None
    verdict: str
    statistic: float
    low: float
    high: float
    pvalue: float
    n: int
    evidence: str
    # Holm-adjusted within the prediction (P1a over the measures, P1b over every contrast
    # with none, P2 over every measure x robust error), and the verdict at that p.
    adjusted_pvalue: float = math.nan
    adjusted_verdict: str = INCONCLUSIVE


@dataclass(frozen=True)
class Contrast:
    """One augmented condition against ``none`` on one measure: the difference of their means
    (augmented - none), its standard error from the seed noise ``floor sqrt(1/n_a +
    1/n_none)``, Student's t with the floor's degrees of freedom and its two-sided p; NaN with
    a ``note`` when not testable."""

    condition: int
    difference: float
    stderr: float
    t: float
    dof: int
    pvalue: float
    note: str = ""


def contrasts_vs_none(means, counts, none: int, augmented, floor_sd: float, floor_dof: int) -> list:
    """P1b: each augmented condition's mean against the ``none`` condition's, with the pooled
    seed noise (``floor_sd`` on ``floor_dof`` degrees of freedom). A contrast needs ``none``
    replicated (two or more runs): with one run, ``none``'s own seed noise is unmeasured and
    the one run would be counted in every contrast, so each contrast says it is not testable
    instead of giving a p-value."""
    means = np.asarray(means, dtype=float)
    out = []
    for ci in augmented:
        if ci == none:
            continue
        d = float(means[ci] - means[none])
        nan = math.nan
        if counts[none] < 2:
            why = (
                f"not testable: none has {int(counts[none])} run(s); a contrast against it "
                "needs >= 2 seeds of none"
            )
            out.append(Contrast(ci, d, nan, nan, 0, nan, why))
            continue
        if not (np.isfinite(d) and np.isfinite(floor_sd) and floor_dof > 0 and counts[ci] > 0):
            out.append(
                Contrast(ci, d, nan, nan, 0, nan, "not testable: a mean or the floor is missing")
            )
            continue
        se = float(floor_sd) * math.sqrt(1.0 / counts[ci] + 1.0 / counts[none])
        if se == 0:
            out.append(Contrast(ci, d, 0.0, nan, floor_dof, nan, "not testable: zero seed noise"))
            continue
        t = d / se
        p = float(2.0 * scipy.stats.t.sf(abs(t), floor_dof))
        out.append(Contrast(ci, d, se, t, int(floor_dof), p))
    return out


def contrasts_verdict(contrasts, pvalues, alpha: float) -> str:
    """P1b on one measure from its contrasts at (raw or adjusted) ``pvalues``: supported when
    at least one augmented condition is significantly flatter than none and none is
    significantly sharper, refuted when the reverse, inconclusive otherwise (mixed, nothing
    significant, or nothing testable)."""
    flatter = sum(p < alpha and c.difference < 0 for c, p in zip(contrasts, pvalues))
    sharper = sum(p < alpha and c.difference > 0 for c, p in zip(contrasts, pvalues))
    if flatter and not sharper:
        return SUPPORTED
    if sharper and not flatter:
        return REFUTED
    return INCONCLUSIVE
