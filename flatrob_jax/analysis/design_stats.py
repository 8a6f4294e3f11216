"""The statistics of a sweep's design beyond one pooled coefficient: seed noise, within-axis
rank statistics, partial rank correlation with leave-one-out influence, and the intervention
line.

Every function takes plain arrays (one entry per run or per condition) plus, where it needs
the sweep's structure, its ``design.Conditions`` (a ``design.Design`` is one); none raises
on degenerate data: a NaN result with a ``note`` that says why. Definitions:

* **Seed-noise floor** (``noise_floor``): per metric, the pooled standard deviation across
  the seeds of every replicated condition, ``sqrt(sum_g (n_g - 1) s_g^2 / sum_g (n_g - 1))``
  with ``s_g`` the sample SD (ddof 1) of condition g; its degrees of freedom
  ``sum_g (n_g - 1)``.
* **Kendall tau-a** (``kendall_tau_a``): ``sum_{i<j} sign(x_i - x_j) sign(y_i - y_j) /
  (n (n - 1) / 2)``, the coefficient of Jiang et al. (2020), eq. 2 (a tie contributes 0).
* **Granulated Kendall** (``granulated_kendall``, Jiang et al. 2020, sec. 4): for each factor
  (axis) i, the conditions are grouped by the values of every other factor; psi_i is the mean
  of tau-a over the groups with at least two conditions (one point per condition: its mean
  over seeds); Psi is the mean of psi_i over the axes that have such a group.
* **Sign-error** (``sign_error``, Dziugaite et al. 2020): over every pair of runs whose
  conditions differ in exactly one factor, the loss ``(1 - sign(dc) sign(dg)) / 2`` (0 when
  the measure orders the pair as the robust error does, 1 when opposite, 1/2 on a tie of the
  measure); pairs with ``|dg| <= threshold`` are dropped (their order is within the seed
  noise) and counted. Reported as the mean over all kept pairs, per factor, and the worst
  factor (Dziugaite et al.'s robust, worst-environment view).
* **Stratified Kendall test** (``stratified_kendall``): S = sum over groups of
  ``sum_{i<j} sign(dx) sign(dy)``; its null distribution permutes y within each group
  independently (exact by enumeration when small, else Monte Carlo); the estimate is
  ``S / sum_groups n_g (n_g - 1) / 2`` (pooled tau-a).
* **Partial Spearman** (``partial_spearman_value``): ``stats.partial_spearman_statistic``,
  Pearson r of the residuals of rank(x) and rank(y) after least squares on [1, rank(z)]
  (average ranks); its test is ``stats.freedman_lane``.
* **Leave-one-out influence** (``leave_one_out``): the coefficient recomputed without each
  point; the influence of point i is ``coef_without_i - coef``.
* **Intervention line** (``intervention_fit``): least squares ``robust = a + b flatness +
  c clean`` on the fit runs; for each other run its residual in units of the fit's residual
  SD ``s = sqrt(RSS / (n - 3))`` and its prediction t statistic ``resid / (s sqrt(1 + x0'
  (X'X)^-1 x0))`` with n - 3 degrees of freedom.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import scipy.stats

from flatrob_jax.analysis import stats
from flatrob_jax.analysis.design import Conditions

EXACT_MAX_PERMUTATIONS = 200_000  # stratified_kendall enumerates at most this many arrangements
MONTE_CARLO_PERMUTATIONS = 20_000


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def _clean_pair(x, y) -> tuple[np.ndarray, np.ndarray, str]:
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    return (
        x[keep],
        y[keep],
        "" if keep.all() else f"{int((~keep).sum())} point(s) with a missing value dropped",
    )


def _as_generator(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be a numpy Generator, an int seed or None, got {type(rng).__name__}")


# --------------------------------------------------------------------------- replicates


@dataclass(frozen=True)
class NoiseFloor:
    """Pooled seed SD of one metric; ``per_condition`` maps condition index -> (n, SD)."""

    sd: float
    dof: int
    num_conditions: int
    per_condition: dict = field(default_factory=dict)
    note: str = ""


def noise_floor(values, design: Conditions) -> NoiseFloor:
    """The seed-noise floor of one metric (``values``: one per run, NaN = missing)."""
    values = np.asarray(values, dtype=float)
    per, ss, dof = {}, 0.0, 0
    for ci in design.replicated:
        v = values[list(design.conditions[ci].runs)]
        v = v[np.isfinite(v)]
        if v.size < 2:
            continue
        sd = float(np.std(v, ddof=1))
        per[ci] = (int(v.size), sd)
        ss += (v.size - 1) * sd * sd
        dof += v.size - 1
    if dof == 0:
        return NoiseFloor(math.nan, 0, 0, per, "not applicable: no replicated condition")
    return NoiseFloor(math.sqrt(ss / dof), dof, len(per), per)


def condition_means(values, design: Conditions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per condition: (mean over its runs, sample SD over its runs (NaN below 2), number of
    finite runs)."""
    values = np.asarray(values, dtype=float)
    k = len(design.conditions)
    mean, sd, n = np.full(k, np.nan), np.full(k, np.nan), np.zeros(k, dtype=int)
    for ci, c in enumerate(design.conditions):
        v = values[list(c.runs)]
        v = v[np.isfinite(v)]
        n[ci] = v.size
        if v.size:
            mean[ci] = v.mean()
        if v.size >= 2:
            sd[ci] = np.std(v, ddof=1)
    return mean, sd, n


# --------------------------------------------------------------------------- Kendall


def _sign_sum(x: np.ndarray, y: np.ndarray) -> int:
    dx = np.sign(x[:, None] - x[None, :])
    dy = np.sign(y[:, None] - y[None, :])
    return int(np.triu(dx * dy, 1).sum())


def kendall_tau_a(x, y) -> float:
    """Kendall tau-a over the pairs where x and y are finite; NaN below 2 points."""
    x, y, _ = _clean_pair(x, y)
    n = x.size
    if n < 2:
        return math.nan
    return _sign_sum(x, y) / (n * (n - 1) / 2)


@dataclass(frozen=True)
class Axes:
    """The axes granulated Kendall and sign-error vary one at a time: ``names``, and per
    condition its value on each axis (a tuple), or None when the condition is on none of them
    (it is left out)."""

    names: tuple
    values: tuple

    def differing(self, a: int, b: int) -> tuple | None:
        """The axes on which conditions a and b differ (None if either is left out)."""
        va, vb = self.values[a], self.values[b]
        if va is None or vb is None:
            return None
        return tuple(n for n, x, y in zip(self.names, va, vb) if x != y)


def factor_axes(design: Conditions) -> Axes:
    """The design's factors as the axes (every condition on them)."""
    values = tuple(
        tuple(design.factor_value(ci, f) for f in design.factors)
        for ci in range(len(design.conditions))
    )
    return Axes(tuple(design.factors), values)


def family_axes(design) -> Axes:
    """The augmentation families and their strength as the two axes: a condition of a
    (non-intervention) family is at (family name, its strength's rank in the family, 0 the
    weakest); the reference, when a family holds it, at that family's rank; other conditions
    are left out. A condition in several families takes the first. Along 'strength' the
    conditions of one family are compared; along 'family' those at the same strength rank."""
    values: list = [None] * len(design.conditions)
    for fam in design.families:
        if fam.intervention:
            continue
        ranks = {s: r for r, s in enumerate(sorted(set(fam.strengths)))}
        for ci, strength in zip(fam.conditions, fam.strengths):
            if values[ci] is None:
                values[ci] = (fam.name, ranks[strength])
    return Axes(("family", "strength"), tuple(values))


@dataclass(frozen=True)
class Granulated:
    """Granulated Kendall: ``value`` (Psi); ``per_factor[f] = (psi_f, num_groups, [group
    sizes])`` for the factors with at least one group of two or more conditions."""

    value: float
    per_factor: dict
    note: str = ""


def granulated_kendall(
    flat_means, robust_means, design: Conditions, axes: Axes | None = None
) -> Granulated:
    """Jiang et al.'s granulated Kendall coefficient over ``axes`` (default: the design's
    factors, ``factor_axes``), one point per condition (``flat_means``/``robust_means``: one
    per condition)."""
    fm = np.asarray(flat_means, dtype=float)
    rm = np.asarray(robust_means, dtype=float)
    axes = axes or factor_axes(design)
    per = {}
    for k, f in enumerate(axes.names):
        groups: dict[tuple, list] = {}
        for ci, v in enumerate(axes.values):
            if v is not None and np.isfinite(fm[ci]) and np.isfinite(rm[ci]):
                key = v[:k] + v[k + 1 :]
                groups.setdefault(key, []).append(ci)
        taus, sizes = [], []
        for members in groups.values():
            if len(members) >= 2:
                taus.append(kendall_tau_a(fm[members], rm[members]))
                sizes.append(len(members))
        if taus:
            per[f] = (float(np.mean(taus)), len(taus), sizes)
    if not per:
        return Granulated(
            math.nan, per, "not applicable: no factor has two conditions that differ in it alone"
        )
    return Granulated(float(np.mean([v[0] for v in per.values()])), per)


@dataclass(frozen=True)
class SignError:
    """Mean sign-error over the kept pairs; ``per_factor[f] = (mean, kept, dropped)``;
    ``worst_factor`` the factor with the largest mean."""

    value: float
    num_pairs: int
    num_dropped: int
    threshold: float
    per_factor: dict
    worst_factor: str | None
    worst_value: float
    note: str = ""


def sign_error(
    flat_runs, robust_runs, design: Conditions, threshold: float, axes: Axes | None = None
) -> SignError:
    """Dziugaite et al.'s sign-error of a flatness measure against a robust error, over pairs
    of runs whose conditions differ in exactly one of ``axes`` (default: the design's
    factors) (``*_runs``: one value per run). Pairs with ``|robust difference| <= threshold``
    are dropped (NaN threshold: 0)."""
    axes = axes or factor_axes(design)
    c = np.asarray(flat_runs, dtype=float)
    g = np.asarray(robust_runs, dtype=float)
    thr = float(threshold) if np.isfinite(threshold) else 0.0
    per: dict[str, list] = {}
    dropped: Counter = Counter()
    cache: dict[tuple, tuple] = {}
    for i, j in itertools.combinations(range(c.size), 2):
        a, b = int(design.run_condition[i]), int(design.run_condition[j])
        if a == b or not (
            np.isfinite(c[i]) and np.isfinite(c[j]) and np.isfinite(g[i]) and np.isfinite(g[j])
        ):
            continue
        key = (min(a, b), max(a, b))
        if key not in cache:
            cache[key] = axes.differing(a, b)
        diff = cache[key]
        if diff is None or len(diff) != 1:
            continue
        if abs(g[i] - g[j]) <= thr:
            dropped[diff[0]] += 1
            continue
        loss = (1.0 - np.sign(c[i] - c[j]) * np.sign(g[i] - g[j])) / 2.0
        per.setdefault(diff[0], []).append(float(loss))
    kept = sum(len(v) for v in per.values())
    num_dropped = sum(dropped.values())
    table = {
        f: (float(np.mean(per[f])) if f in per else math.nan, len(per.get(f, [])), dropped[f])
        for f in axes.names
        if f in per or f in dropped
    }
    if kept == 0:
        why = (
            "not applicable: no two runs differ in exactly one factor"
            if num_dropped == 0
            else f"every one of the {num_dropped} pair(s) differing in one factor is within the "
            "noise floor"
        )
        return SignError(math.nan, 0, num_dropped, thr, table, None, math.nan, why)
    worst = max((f for f in table if table[f][1] > 0), key=lambda f: table[f][0])
    values = [v for f in per for v in per[f]]
    return SignError(float(np.mean(values)), kept, num_dropped, thr, table, worst, table[worst][0])


def _s_distribution(x: np.ndarray, y: np.ndarray) -> Counter:
    """Exact null distribution of S = sum_{i<j} sign(dx) sign(dy) under permutations of y."""
    counts: Counter = Counter()
    for perm in itertools.permutations(range(y.size)):
        counts[_sign_sum(x, y[list(perm)])] += 1
    return counts


@dataclass(frozen=True)
class StratifiedKendall:
    statistic: float  # pooled tau-a: S / total pairs
    s: int
    num_pairs: int
    n: int
    num_groups: int
    pvalue: float
    pvalue_method: str  # 'exact' or 'monte carlo (N permutations)'
    note: str = ""
    # The smallest two-sided p the test can give with these groups (exact: P(|S| = its
    # largest attainable value); Monte Carlo: 1 / (N + 1)).
    min_pvalue: float = math.nan
    # The largest attainable |S|: the pairs whose x (strength) differ (a pair of replicates at
    # one strength adds 0 whatever the measure does), when the measure has no ties.
    s_max: int = 0


def stratified_kendall(groups: Sequence[tuple], *, rng=0) -> StratifiedKendall:
    """Kendall's S summed over groups ``[(x, y), ...]`` with its two-sided permutation p-value
    (y permuted within each group; see the module docstring). Groups with < 2 finite points
    are left out."""
    clean = []
    for x, y in groups:
        x, y, _ = _clean_pair(x, y)
        if x.size >= 2:
            clean.append((x, y))
    if not clean:
        return StratifiedKendall(math.nan, 0, 0, 0, 0, math.nan, "", "no group has two points")
    s = sum(_sign_sum(x, y) for x, y in clean)
    pairs = sum(x.size * (x.size - 1) // 2 for x, _ in clean)
    n = sum(x.size for x, _ in clean)
    arrangements = math.prod(math.factorial(x.size) for x, _ in clean)
    if arrangements <= EXACT_MAX_PERMUTATIONS:
        dist: Counter = Counter({0: 1})
        for x, y in clean:
            one = _s_distribution(x, y)
            new: Counter = Counter()
            for a, pa in dist.items():
                for b, pb in one.items():
                    new[a + b] += pa * pb
            dist = new
        total = sum(dist.values())
        p = sum(cnt for v, cnt in dist.items() if abs(v) >= abs(s)) / total
        top = max(abs(v) for v in dist)
        min_p = sum(cnt for v, cnt in dist.items() if abs(v) >= top) / total
        method = "exact"
    else:
        gen = _as_generator(rng)
        null = np.zeros(MONTE_CARLO_PERMUTATIONS, dtype=np.int64)
        for x, y in clean:  # y permuted within each group, independently, all draws at once
            i, j = np.triu_indices(x.size, 1)
            dx = np.sign(x[i] - x[j])
            yp = gen.permuted(np.broadcast_to(y, (MONTE_CARLO_PERMUTATIONS, y.size)), axis=1)
            null += (np.sign(yp[:, i] - yp[:, j]) * dx).sum(axis=1).astype(np.int64)
        hits = int(np.sum(np.abs(null) >= abs(s)))
        p = (hits + 1) / (MONTE_CARLO_PERMUTATIONS + 1)
        min_p = 1 / (MONTE_CARLO_PERMUTATIONS + 1)
        method = f"monte carlo ({MONTE_CARLO_PERMUTATIONS} permutations)"
    note = "" if s or pairs else "no pairs"
    s_max = sum(int((np.triu(x[:, None] != x[None, :], 1)).sum()) for x, _ in clean)
    return StratifiedKendall(
        s / pairs if pairs else math.nan,
        s,
        pairs,
        n,
        len(clean),
        float(p),
        method,
        note,
        float(min_p),
        s_max,
    )


# ------------------------------------------------------------------- partial rank correlation


def partial_spearman_value(x, y, z) -> float:
    """The partial Spearman coefficient of x and y given z on finite arrays (NaN when a
    residual is constant): ``stats.partial_spearman_statistic``."""
    return float(stats.partial_spearman_statistic(x, y, z))


@dataclass(frozen=True)
class Influence:
    """Leave-one-out: ``deltas[i] = coef without point i - coef`` (NaN where undefined);
    ``max_abs`` and ``argmax`` the largest |delta| and its point."""

    deltas: np.ndarray
    max_abs: float
    argmax: int | None


def leave_one_out(statistic: Callable, arrays: Sequence) -> Influence:
    """Leave-one-out influence of each point on ``statistic(*arrays)`` (arrays already clean)."""
    arrays = [np.asarray(a, dtype=float) for a in arrays]
    n = arrays[0].size
    full = statistic(*arrays)
    deltas = np.full(n, np.nan)
    for i in range(n):
        keep = np.arange(n) != i
        deltas[i] = statistic(*(a[keep] for a in arrays)) - full
    if not np.isfinite(deltas).any():
        return Influence(deltas, math.nan, None)
    k = int(np.nanargmax(np.abs(deltas)))
    return Influence(deltas, float(abs(deltas[k])), k)


# --------------------------------------------------------------------------- interventions


@dataclass(frozen=True)
class InterventionFit:
    """``coef = (intercept, slope on flatness, slope on clean error)`` (the last NaN when no
    clean error was used); ``resid_sd`` and ``dof`` of the fit; per evaluated point its
    standardized residual ``z`` and prediction t / two-sided p."""

    coef: tuple
    resid_sd: float
    dof: int
    n: int
    z: np.ndarray
    t: np.ndarray
    pvalue: np.ndarray
    used_clean: bool
    note: str = ""


def intervention_fit(flat, robust, clean, fit_mask, eval_mask) -> InterventionFit:
    """Fit ``robust ~ 1 + flat + clean`` by least squares on the points of ``fit_mask``;
    evaluate the points of ``eval_mask`` against it. ``clean=None`` fits ``robust ~ 1 +
    flat``."""
    f = np.asarray(flat, dtype=float)
    r = np.asarray(robust, dtype=float)
    used_clean = clean is not None
    cols = [np.ones_like(f), f] + ([np.asarray(clean, dtype=float)] if used_clean else [])
    x = np.column_stack(cols)
    fit = np.asarray(fit_mask, dtype=bool) & np.isfinite(x).all(1) & np.isfinite(r)
    ev = np.asarray(eval_mask, dtype=bool)
    nan = np.full(ev.sum(), np.nan)
    p = x.shape[1]
    n = int(fit.sum())
    coef_nan = (math.nan,) * 3
    if n <= p:
        return InterventionFit(
            coef_nan,
            math.nan,
            max(n - p, 0),
            n,
            nan,
            nan,
            nan,
            used_clean,
            f"{n} fit point(s) for {p} coefficients: need at least {p + 1}",
        )
    xf, rf = x[fit], r[fit]
    coef, _, rank, _ = np.linalg.lstsq(xf, rf, rcond=None)
    if rank < p:
        return InterventionFit(
            coef_nan,
            math.nan,
            n - p,
            n,
            nan,
            nan,
            nan,
            used_clean,
            "the fit points do not vary independently in flatness and clean error",
        )
    dof = n - p
    resid = rf - xf @ coef
    s = math.sqrt(float(resid @ resid) / dof)
    xe, re = x[ev], r[ev]
    res_e = re - xe @ coef
    xtx_inv = np.linalg.inv(xf.T @ xf)
    lev = np.einsum("ij,jk,ik->i", xe, xtx_inv, xe)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = res_e / s if s > 0 else np.full_like(res_e, np.nan)
        t = res_e / (s * np.sqrt(1.0 + lev)) if s > 0 else np.full_like(res_e, np.nan)
    pv = 2.0 * scipy.stats.t.sf(np.abs(t), dof)
    full = tuple(float(c) for c in coef) + (() if used_clean else (math.nan,))
    note = "" if s > 0 else "the fit is exact (residual SD 0): residuals cannot be scaled"
    return InterventionFit(full, s, dof, n, z, t, pv, used_clean, note)


# --------------------------------------------------------------------------- reliability


@dataclass(frozen=True)
class Reliability:
    """How well a metric's condition means are measured against its seed noise.

    ``between_var``: the variance of the true condition means, estimated as the variance of
    the observed means (ddof 1) minus the seed variance they carry, ``floor^2 mean(1/n_g)``
    (floored at 0); ``snr = between_var / floor^2`` (signal-to-noise per run);
    ``reliability = between_var / var(observed means)``, the share of the condition means'
    variance that is not seed noise. Two metrics with reliabilities R_a and R_b cannot
    correlate across condition means beyond ``sqrt(R_a R_b)`` in expectation (Spearman's
    attenuation)."""

    between_var: float
    seed_var: float
    snr: float
    reliability: float
    num_conditions: int
    note: str = ""


def reliability(values, design: Conditions, floor: NoiseFloor | None = None) -> Reliability:
    """The ``Reliability`` of one metric (``values``: one per run) over the design's
    conditions; NaN with a note without a seed-noise floor or with fewer than 2 conditions."""
    floor = floor or noise_floor(values, design)
    mean, _, n = condition_means(values, design)
    keep = np.isfinite(mean) & (n > 0)
    k = int(keep.sum())
    nan = math.nan
    if not np.isfinite(floor.sd):
        return Reliability(nan, nan, nan, nan, k, "no replicated condition: no seed variance")
    if k < 2:
        return Reliability(nan, floor.sd**2, nan, nan, k, f"{k} condition(s) with a value")
    observed = float(np.var(mean[keep], ddof=1))
    seed_var = float(floor.sd**2)
    between = max(observed - seed_var * float(np.mean(1.0 / n[keep])), 0.0)
    snr = between / seed_var if seed_var > 0 else math.inf
    rel = between / observed if observed > 0 else nan
    return Reliability(between, seed_var, snr, rel, k)


def correlation_ceiling(a: Reliability, b: Reliability) -> float:
    """The largest correlation two metrics' condition means can show in expectation,
    ``sqrt(R_a R_b)``."""
    return (
        math.sqrt(a.reliability * b.reliability)
        if a.reliability >= 0 <= b.reliability
        else math.nan
    )
