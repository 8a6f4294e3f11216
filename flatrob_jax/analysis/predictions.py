"""The paper's predictions, written down before the numbers, and the rule that judges them.

* **P1, augmentation -> flatter.** (a) Within each augmentation family, a stronger
  augmentation gives a smaller flatness measure (lambda_max, trace, sharpness): Kendall's
  association of strength with the measure is negative, tested over all augmentation
  families at once by the stratified Kendall test (``design_stats.stratified_kendall``, runs as
  points, strengths permuted within families). (b) Every augmented condition is flatter than
  the ``none`` condition: a two-sided sign test (``scipy.stats.binomtest``, p = 1/2) over
  the augmented conditions whose mean differs from ``none``'s by more than the seed noise
  ``floor * sqrt(1/n_a + 1/n_none)``.
* **P2, flatter -> more robust.** Across conditions (one point each: its mean over seeds),
  the flatness measure and the robust error have a positive rank association controlling for
  clean error (partial Spearman, ``design_stats.partial_spearman``), judged by its bootstrap
  percentile interval over conditions.

The rule (``verdict``): a prediction is **supported** when the interval (or the test at
level ``1 - confidence``) excludes 0 on the predicted side, **refuted** when it excludes 0 on
the opposite side, and **inconclusive** otherwise, including when there is nothing to test.
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


@dataclass(frozen=True)
class SignTest:
    flatter: int
    sharper: int
    within: int
    pvalue: float
    verdict: str
    per_condition: (
        list  # (condition index, difference to none, threshold, 'flatter'/'sharper'/'within')
    )


def sign_test_vs_none(means, counts, none: int, augmented, floor: float, alpha: float) -> SignTest:
    """P1b: compare each augmented condition's mean with the ``none`` condition's; a difference
    within ``floor * sqrt(1/n_a + 1/n_none)`` counts as 'within' (NaN floor: 0)."""
    means = np.asarray(means, dtype=float)
    per, flatter, sharper, within = [], 0, 0, 0
    for ci in augmented:
        if ci == none or not (np.isfinite(means[ci]) and np.isfinite(means[none])):
            continue
        d = float(means[ci] - means[none])
        thr = (
            float(floor) * math.sqrt(1.0 / counts[ci] + 1.0 / counts[none])
            if np.isfinite(floor) and counts[ci] and counts[none]
            else 0.0
        )
        kind = "flatter" if d < -thr else ("sharper" if d > thr else "within")
        flatter += kind == "flatter"
        sharper += kind == "sharper"
        within += kind == "within"
        per.append((ci, d, thr, kind))
    m = flatter + sharper
    p = float(scipy.stats.binomtest(flatter, m, 0.5).pvalue) if m else math.nan
    # Predicted: flatter, i.e. the share of flatter conditions above 1/2.
    est = (flatter - sharper) if m else math.nan
    return SignTest(flatter, sharper, within, p, verdict_from_test(est, p, alpha, +1), per)
