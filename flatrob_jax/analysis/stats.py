"""Correlation statistics across the runs of a sweep, with p-values and bootstrap intervals.

Definitions (all two-sided, following the conventions of ``scipy.stats``, which the tests
use as the oracle):

* Pearson r = cov(x, y) / (sd(x) sd(y)). p-value from Student's t with n - 2 degrees of
  freedom, t = r sqrt((n - 2) / (1 - r^2)) (exact under bivariate normality; equal to
  ``scipy.stats.pearsonr``'s beta-distribution form).
* Spearman rho = Pearson r of the ranks, ties given their average rank. p-value from the same
  t approximation with n - 2 degrees of freedom (as ``scipy.stats.spearmanr``).
* Kendall tau-b = (C - D) / sqrt((n0 - n1)(n0 - n2)), with C/D the concordant/discordant
  pairs, n0 = n(n-1)/2 and n1/n2 the pairs tied in x/y. p-value: without ties and n <= 33
  (or when at most one pair is discordant/concordant) the exact null distribution of the
  number of discordant pairs (inversions of a random permutation); otherwise the normal
  approximation of C - D with the tie-corrected variance (Kendall 1970), as
  ``scipy.stats.kendalltau(method='auto')``.

Bootstrap confidence intervals resample the runs (pairs (x_i, y_i)) with replacement using a
seeded ``numpy.random.Generator``; all resamples are evaluated at once (vectorised over the
resample axis). Intervals: percentile, and BCa (bias-corrected and accelerated, Efron 1987;
bias correction counts resamples equal to the estimate as one half, acceleration from the
jackknife). Resamples on which the statistic is undefined (e.g. a constant resample) are
dropped and counted in the note.

Degenerate input never raises: n < 3 or a constant x or y gives NaN with a ``note`` that says
why.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy import special

METHODS = ("pearson", "spearman", "kendall")
CI_METHODS = ("bca", "percentile")
MIN_N = 3
_MAX_BATCH_ELEMENTS = 4_000_000  # bound on B * n * n for the pairwise (Kendall) computation


# --------------------------------------------------------------------------- coefficients
# Each *_batched function takes x, y of shape [..., n] and returns the coefficient per row,
# NaN where it is undefined (a constant row).


def rankdata_average(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n along the last axis; ties get the average of the ranks they span."""
    a = np.asarray(a, dtype=float)
    less = (a[..., None, :] < a[..., :, None]).sum(-1)
    equal = (a[..., None, :] == a[..., :, None]).sum(-1)
    return less + (equal + 1) / 2.0


def pearson_batched(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    xc = x - x.mean(-1, keepdims=True)
    yc = y - y.mean(-1, keepdims=True)
    sxx = (xc * xc).sum(-1)
    syy = (yc * yc).sum(-1)
    sxy = (xc * yc).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = sxy / np.sqrt(sxx * syy)
    constant = (np.ptp(x, axis=-1) == 0) | (np.ptp(y, axis=-1) == 0)
    return np.where(constant, np.nan, np.clip(r, -1.0, 1.0))


def spearman_batched(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return pearson_batched(rankdata_average(x), rankdata_average(y))


def _kendall_counts(x: np.ndarray, y: np.ndarray):
    """(C - D, pairs tied in x, pairs tied in y, total pairs) along the last axis."""
    sx = np.sign(x[..., :, None] - x[..., None, :])
    sy = np.sign(y[..., :, None] - y[..., None, :])
    n = x.shape[-1]
    con_minus_dis = (sx * sy).sum((-1, -2)) / 2.0
    xtie = ((sx == 0).sum((-1, -2)) - n) / 2.0
    ytie = ((sy == 0).sum((-1, -2)) - n) / 2.0
    return con_minus_dis, xtie, ytie, n * (n - 1) / 2.0


def kendall_batched(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    con_minus_dis, xtie, ytie, total = _kendall_counts(x, y)
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = con_minus_dis / np.sqrt((total - xtie) * (total - ytie))
    constant = (xtie == total) | (ytie == total)
    return np.where(constant, np.nan, np.clip(tau, -1.0, 1.0))


_BATCHED: dict[str, Callable] = {
    "pearson": pearson_batched,
    "spearman": spearman_batched,
    "kendall": kendall_batched,
}


# --------------------------------------------------------------------------- p-values


def _t_pvalue(r: float, n: int) -> float:
    """Two-sided p of H0: rho = 0 from t = r sqrt(df / (1 - r^2)), df = n - 2."""
    df = n - 2
    r2 = min(r * r, 1.0)
    # P(|T| >= |t|) = I_{df/(df+t^2)}(df/2, 1/2) and df/(df+t^2) = 1 - r^2.
    return float(np.clip(special.betainc(df / 2.0, 0.5, 1.0 - r2), 0.0, 1.0))


def _inversion_distribution(n: int, upto: int | None = None) -> np.ndarray:
    """P(K = k) for k = 0..upto (default: all of 0..n(n-1)/2), K the number of inversions of a
    uniform random permutation of n items (Mahonian numbers / n!).

    Built one item at a time: inserting item j adds 0..j-1 inversions with equal probability,
    so P_j(k) = (P_{j-1}(k) + ... + P_{j-1}(k-j+1)) / j; entries above ``upto`` never feed the
    ones below, so truncating keeps the cost at O(n * upto).
    """
    total = n * (n - 1) // 2
    size = (total if upto is None else min(int(upto), total)) + 1
    dist = np.zeros(size)
    dist[0] = 1.0
    for j in range(2, n + 1):
        cum = np.cumsum(dist)
        shifted = np.zeros_like(cum)
        shifted[j:] = cum[:-j]
        dist = (cum - shifted) / j
    return dist


def _kendall_exact_pvalue(n: int, discordant: int) -> float:
    """Two-sided exact p: twice the smaller tail of the inversion-count distribution."""
    total = n * (n - 1) // 2
    c = min(discordant, total - discordant)
    if 4 * c == n * (n - 1):
        return 1.0
    return float(min(1.0, 2.0 * _inversion_distribution(n, upto=c).sum()))


def _kendall_pvalue(x: np.ndarray, y: np.ndarray) -> tuple[float, str]:
    n = x.shape[-1]
    con_minus_dis, xtie, ytie, total = _kendall_counts(x, y)
    con_minus_dis, xtie, ytie = float(con_minus_dis), int(round(xtie)), int(round(ytie))
    total = int(total)
    if xtie == 0 and ytie == 0:
        discordant = int(round((total - con_minus_dis) / 2))
        if n <= 33 or min(discordant, total - discordant) <= 1:
            return _kendall_exact_pvalue(n, discordant), "exact"
    x_counts = np.unique(x, return_counts=True)[1].astype(float)
    y_counts = np.unique(y, return_counts=True)[1].astype(float)
    m = n * (n - 1.0)
    var = (
        (m * (2 * n + 5) - (x_counts * (x_counts - 1) * (2 * x_counts + 5)).sum()
         - (y_counts * (y_counts - 1) * (2 * y_counts + 5)).sum()) / 18.0
        + 2.0 * xtie * ytie / m
        + (x_counts * (x_counts - 1) * (x_counts - 2)).sum()
        * (y_counts * (y_counts - 1) * (y_counts - 2)).sum() / (9.0 * m * (n - 2))
    )
    z = con_minus_dis / math.sqrt(var)
    return float(np.clip(special.erfc(abs(z) / math.sqrt(2.0)), 0.0, 1.0)), "normal"


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Correlation:
    """One correlation coefficient with its p-value and (optional) bootstrap interval.

    ``pvalue_method``: 't' (Student's t, n - 2 df), 'exact' (Kendall, permutation
    distribution) or 'normal' (Kendall, tie-corrected normal approximation)."""

    method: str
    statistic: float
    pvalue: float
    n: int
    ci_low: float = math.nan
    ci_high: float = math.nan
    ci_method: str = ""
    confidence: float = math.nan
    num_resamples: int = 0
    pvalue_method: str = ""
    note: str = ""

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class BootstrapInterval:
    low: float
    high: float
    method: str
    confidence: float
    num_resamples: int
    num_valid: int
    note: str = ""
    distribution: np.ndarray = field(default=None, repr=False, compare=False)


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown correlation method {method!r}; allowed: {', '.join(METHODS)}")


def _clean_pair(x, y) -> tuple[np.ndarray, np.ndarray, str]:
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    note = ""
    if not keep.all():
        note = f"{int((~keep).sum())} run(s) with a missing (NaN/inf) value dropped"
    return x[keep], y[keep], note


def _degenerate_note(x: np.ndarray, y: np.ndarray) -> str:
    n = x.size
    if n < MIN_N:
        return f"n={n} < {MIN_N} runs: correlation and p-value not computed"
    for name, v in (("x", x), ("y", y)):
        if np.ptp(v) == 0:
            return f"{name} is constant (all {n} values equal {v[0]:.6g}): correlation undefined"
    return ""


def _join_notes(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def correlation(x, y, method: str = "pearson") -> Correlation:
    """Correlation coefficient and two-sided p-value (see the module docstring).

    Pairs where x or y is NaN/inf are dropped first; n < 3 or a constant input gives NaN with
    a note.
    """
    _check_method(method)
    x, y, note = _clean_pair(x, y)
    n = x.size
    degenerate = _degenerate_note(x, y)
    if degenerate:
        return Correlation(method, math.nan, math.nan, n, note=_join_notes(note, degenerate))
    stat = float(_BATCHED[method](x, y))
    if method == "kendall":
        p, how = _kendall_pvalue(x, y)
    else:
        p, how = _t_pvalue(stat, n), "t"
    return Correlation(method, stat, p, n, pvalue_method=how, note=note)


def pearson(x, y) -> Correlation:
    return correlation(x, y, "pearson")


def spearman(x, y) -> Correlation:
    return correlation(x, y, "spearman")


def kendall(x, y) -> Correlation:
    return correlation(x, y, "kendall")


# --------------------------------------------------------------------------- bootstrap


def _as_generator(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be a numpy Generator, an int seed or None, got {type(rng).__name__}")


def _evaluate_resamples(statistic: Callable, x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> np.ndarray:
    n = x.size
    rows_per_chunk = max(1, _MAX_BATCH_ELEMENTS // max(1, n * n))
    out = np.empty(idx.shape[0])
    for start in range(0, idx.shape[0], rows_per_chunk):
        sl = idx[start:start + rows_per_chunk]
        out[start:start + rows_per_chunk] = statistic(x[sl], y[sl])
    return out


def bootstrap_ci(
    x,
    y,
    statistic: str | Callable = "pearson",
    *,
    num_resamples: int = 2000,
    confidence: float = 0.95,
    ci_method: str = "bca",
    rng=0,
) -> BootstrapInterval:
    """Bootstrap confidence interval of a paired statistic, resampling the pairs (runs).

    ``statistic``: a name in ``METHODS`` or a vectorised function ``f(x[..., n], y[..., n]) ->
    [...]`` (NaN where undefined). ``rng``: a ``numpy.random.Generator`` or an int seed.
    Returns NaN bounds with a note when the data are degenerate or (BCa) the bias correction
    is infinite because every resample lies on one side of the estimate.
    """
    if ci_method not in CI_METHODS:
        raise ValueError(f"unknown ci_method {ci_method!r}; allowed: {', '.join(CI_METHODS)}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if int(num_resamples) < 1:
        raise ValueError(f"num_resamples must be >= 1, got {num_resamples!r}")
    if isinstance(statistic, str):
        _check_method(statistic)
        statistic = _BATCHED[statistic]
    gen = _as_generator(rng)
    x, y, note = _clean_pair(x, y)
    n = x.size

    def nan_interval(why: str, dist=None, valid=0) -> BootstrapInterval:
        return BootstrapInterval(math.nan, math.nan, ci_method, confidence, int(num_resamples), valid,
                                 _join_notes(note, why), dist)

    degenerate = _degenerate_note(x, y)
    if degenerate:
        return nan_interval(degenerate)
    estimate = float(statistic(x, y))
    idx = gen.integers(0, n, size=(int(num_resamples), n))
    dist = _evaluate_resamples(statistic, x, y, idx)
    valid = np.isfinite(dist)
    num_valid = int(valid.sum())
    if num_valid < int(num_resamples):
        note = _join_notes(note, f"{int(num_resamples) - num_valid} of {int(num_resamples)} resamples "
                                 "undefined (constant resample) and dropped")
    if num_valid == 0:
        return nan_interval("no valid resample", dist, 0)
    theta = dist[valid]
    alpha = (1.0 - confidence) / 2.0
    if ci_method == "percentile":
        probs = np.array([alpha, 1.0 - alpha])
    else:
        below = np.mean(theta < estimate) + 0.5 * np.mean(theta == estimate)
        if below <= 0.0 or below >= 1.0:
            return nan_interval(f"BCa undefined: every resample lies on one side of the estimate "
                                f"{estimate:.6g}", dist, num_valid)
        z0 = special.ndtri(below)
        accel = _jackknife_acceleration(statistic, x, y)
        z = special.ndtri(np.array([alpha, 1.0 - alpha]))
        probs = special.ndtr(z0 + (z0 + z) / (1.0 - accel * (z0 + z)))
    low, high = np.quantile(theta, probs)
    return BootstrapInterval(float(low), float(high), ci_method, confidence, int(num_resamples), num_valid,
                             note, dist)


def _jackknife_acceleration(statistic: Callable, x: np.ndarray, y: np.ndarray) -> float:
    """a = sum(d^3) / (6 (sum d^2)^1.5), d = mean(jackknife) - jackknife; 0 if undefined."""
    n = x.size
    keep = ~np.eye(n, dtype=bool)
    loo = np.broadcast_to(np.arange(n), (n, n))[keep].reshape(n, n - 1)
    jack = statistic(x[loo], y[loo])
    jack = jack[np.isfinite(jack)]
    if jack.size < 2:
        return 0.0
    d = jack.mean() - jack
    denom = 6.0 * (d * d).sum() ** 1.5
    return float((d ** 3).sum() / denom) if denom > 0 else 0.0


def correlate(
    x,
    y,
    method: str = "pearson",
    *,
    num_resamples: int = 2000,
    confidence: float = 0.95,
    ci_method: str = "bca",
    rng=0,
) -> Correlation:
    """``correlation`` plus its bootstrap interval in one ``Correlation`` record.
    ``num_resamples=0`` skips the bootstrap."""
    point = correlation(x, y, method)
    if num_resamples == 0 or math.isnan(point.statistic):
        return Correlation(**{**point.as_dict(), "ci_method": ci_method if num_resamples else "",
                              "confidence": confidence, "num_resamples": int(num_resamples)})
    ci = bootstrap_ci(x, y, method, num_resamples=num_resamples, confidence=confidence,
                      ci_method=ci_method, rng=rng)
    return Correlation(
        method=method,
        statistic=point.statistic,
        pvalue=point.pvalue,
        n=point.n,
        pvalue_method=point.pvalue_method,
        ci_low=ci.low,
        ci_high=ci.high,
        ci_method=ci_method,
        confidence=confidence,
        num_resamples=int(num_resamples),
        note=_join_notes(point.note, *(part for part in ci.note.split("; ") if part not in point.note)),
    )
