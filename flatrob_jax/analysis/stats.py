"""Correlation statistics across the runs of a sweep, with p-values and bootstrap intervals.

A thin wrapper over ``scipy.stats``: the coefficients, p-values and bootstrap intervals are
scipy's (``pearsonr``, ``spearmanr``, ``kendalltau``, ``bootstrap(..., paired=True)``). What
the wrapper adds is the behaviour a sweep report needs, where a run may lack a metric and a
metric may be constant across runs:

* Pairs where x or y is NaN/inf are dropped first, and the ``note`` says how many.
* Fewer than ``MIN_N`` pairs or a constant x or y gives a NaN coefficient (and interval) with a
  ``note`` that says why, never an exception or a warning.
* scipy's warnings on degenerate data become notes.

Definitions (all two-sided): Pearson r with the p-value from its exact null distribution under
bivariate normality (equal to Student's t with n - 2 degrees of freedom, ``pvalue_method``
't'); Spearman rho = Pearson r of the average ranks, p-value from the same t approximation
('t'); Kendall tau-b with scipy's ``method='auto'`` choice of p-value, made explicit here so
the result can say which one was used: the exact permutation distribution ('exact') when
there are no ties and n <= 33 or at most one pair is discordant (or concordant), otherwise the
tie-corrected normal approximation ('normal', scipy's 'asymptotic').

Bootstrap intervals (``bootstrap_ci``, ``correlate``) resample the runs, i.e. the pairs
(x_i, y_i), with replacement: ``scipy.stats.bootstrap(paired=True, vectorized=True)`` with a
seeded ``numpy.random.Generator`` (it draws ``rng.integers(0, n, (num_resamples, n))``), and
a percentile or BCa interval (jackknife acceleration). Two adjustments, both in the note when
they apply:

* Resamples on which the coefficient is undefined (a constant resample) are dropped; the
  interval is scipy's interval of the remaining resamples (``bootstrap_result=`` with
  ``n_resamples=0``).
* Resample values within 1e-12 of the estimate are set to the estimate, so that BCa counts
  exact ties as ties (see ``_as_statistic``).

When every resample gives the estimate (e.g. rho = 1 on a monotone relation) the interval is
[estimate, estimate] with a note (scipy's BCa is 0/0 there). Where BCa is undefined (every
resample on one side of the estimate, a coefficient undefined on a leave-one-out sample) or
scipy's bootstrap raises, the interval is NaN with a note.
"""

from __future__ import annotations

import math
import types
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.stats

METHODS = ("pearson", "spearman", "kendall")
CI_METHODS = ("bca", "percentile")
MIN_N = 3
_SCIPY_CI_METHOD = {"bca": "BCa", "percentile": "percentile"}
# Kendall's exact p-value is used up to this n without ties (scipy's method='auto' rule).
_KENDALL_EXACT_MAX_N = 33
# Bootstrap values this close to the estimate (relative to max(1, |estimate|)) are ties with
# it (see _as_statistic).
_TIE_TOLERANCE = 1e-12


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Correlation:
    """One correlation coefficient with its p-value and (optional) bootstrap interval.

    ``pvalue_method``: 't' (Pearson, Spearman), 'exact' (Kendall, permutation distribution) or
    'normal' (Kendall, tie-corrected normal approximation); '' when not computed."""

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
    """A bootstrap interval; ``distribution`` holds every resample's value (NaN where the
    statistic is undefined), ``num_valid`` how many of them the interval used."""

    low: float
    high: float
    method: str
    confidence: float
    num_resamples: int
    num_valid: int
    note: str = ""
    distribution: np.ndarray = field(default=None, repr=False, compare=False)


# --------------------------------------------------------------------------- helpers


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


def _clean(x, y, given: Sequence = ()) -> tuple[np.ndarray, np.ndarray, tuple, str]:
    """``_clean_pair`` over x, y and the covariates ``given`` together."""
    if not given:
        x, y, note = _clean_pair(x, y)
        return x, y, (), note
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    given = tuple(np.asarray(g, dtype=float).ravel() for g in given)
    if any(a.shape != x.shape for a in (y, *given)):
        sizes = [a.size for a in (x, y, *given)]
        raise ValueError(f"x, y and given must have the same length, got {sizes}")
    keep = np.isfinite(x) & np.isfinite(y)
    for g in given:
        keep &= np.isfinite(g)
    note = (
        ""
        if keep.all()
        else f"{int((~keep).sum())} point(s) with a missing (NaN/inf) value dropped"
    )
    return x[keep], y[keep], tuple(g[keep] for g in given), note


def _degenerate_note(x: np.ndarray, y: np.ndarray) -> str:
    n = x.size
    if n < MIN_N:
        return f"n={n} < {MIN_N} runs: correlation and p-value not computed"
    for name, v in (("x", x), ("y", y)):
        if np.ptp(v) == 0:
            return f"{name} is constant (all {n} values equal {v[0]:.6g}): correlation undefined"
    return ""


def _join_notes(*notes: str) -> str:
    out = []
    for note in notes:
        if note and note not in out:
            out.append(note)
    return "; ".join(out)


def _quietly(fn: Callable, *args, **kwargs):
    """Call ``fn``; return (result, the messages of the DegenerateDataWarnings it raised).

    scipy signals degenerate data (constant or nearly constant input) with
    ``scipy.stats.DegenerateDataWarning`` and its subclasses; the report wants them as notes.
    Other warnings pass through."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn(*args, **kwargs)
    messages = []
    for w in caught:
        if issubclass(w.category, scipy.stats.DegenerateDataWarning):
            if str(w.message) not in messages:
                messages.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return result, messages


def _bootstrap(*args, **kwargs):
    """``scipy.stats.bootstrap`` without its warnings: on degenerate data it warns (numpy's
    invalid-value warnings, DegenerateDataWarning) and returns NaN bounds, which
    ``bootstrap_ci`` turns into a note."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return scipy.stats.bootstrap(*args, **kwargs)


# --------------------------------------------------------------------------- coefficients
# Statistics for the bootstrap: f(x, y, axis) -> coefficient along ``axis`` (scipy calls them
# with axis=-1 on [..., n] arrays), NaN where undefined (a constant resample), no warnings.


def _pearson_statistic(x, y, axis=-1):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return scipy.stats.pearsonr(x, y, axis=axis).statistic


def _spearman_statistic(x, y, axis=-1):
    # spearmanr's own ``axis`` means "variables along this axis" (a correlation matrix), so the
    # row-wise coefficient is Pearson r of scipy's average ranks (Spearman's definition).
    return _pearson_statistic(
        scipy.stats.rankdata(x, axis=axis), scipy.stats.rankdata(y, axis=axis), axis=axis
    )


def _kendall_statistic(x, y, axis=-1):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return scipy.stats.kendalltau(x, y, axis=axis).statistic


def _residualize(v: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Residuals of v after least squares on [1, z] along the last axis (one covariate z)."""
    vc = v - v.mean(axis=-1, keepdims=True)
    zc = z - z.mean(axis=-1, keepdims=True)
    zz = (zc * zc).sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        beta = np.where(zz > 0, (vc * zc).sum(axis=-1, keepdims=True) / zz, 0.0)
    return vc - beta * zc


def _corr_last_axis(a: np.ndarray, b: np.ndarray, scale_a, scale_b) -> np.ndarray:
    """Pearson r along the last axis; NaN where a or b is constant: its norm at most 1e-9
    times ``scale_*`` (the size of the values it was computed from) times sqrt(n)."""
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    sa = np.sqrt((a * a).sum(axis=-1))
    sb = np.sqrt((b * b).sum(axis=-1))
    root_n = np.sqrt(a.shape[-1])
    ok = (sa > 1e-9 * scale_a * root_n) & (sb > 1e-9 * scale_b * root_n)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (a * b).sum(axis=-1) / (sa * sb)
    return np.where(ok, np.clip(r, -1.0, 1.0), np.nan)


def partial_pearson_statistic(x, y, z, axis=-1):
    """Partial Pearson correlation of x and y given one covariate z, along ``axis``
    (vectorised): Pearson r of the residuals of x and y after least squares on [1, z]. NaN
    where a residual is constant."""
    x, y, z = (np.moveaxis(np.asarray(a, dtype=float), axis, -1) for a in (x, y, z))
    scale_x = np.maximum(np.abs(x).max(axis=-1), 1e-300)
    scale_y = np.maximum(np.abs(y).max(axis=-1), 1e-300)
    return _corr_last_axis(_residualize(x, z), _residualize(y, z), scale_x, scale_y)


def partial_spearman_statistic(x, y, z, axis=-1):
    """Partial Spearman correlation (vectorised): ``partial_pearson_statistic`` of the average
    ranks of x, y and z along ``axis``."""
    x, y, z = (scipy.stats.rankdata(np.asarray(a, dtype=float), axis=axis) for a in (x, y, z))
    return partial_pearson_statistic(x, y, z, axis=axis)


_STATISTICS: dict[str, Callable] = {
    "pearson": _pearson_statistic,
    "spearman": _spearman_statistic,
    "kendall": _kendall_statistic,
}


def _kendall_pvalue_method(x: np.ndarray, y: np.ndarray, tau: float) -> str:
    """scipy's method='auto' choice, as 'exact' or 'asymptotic' (scipy's names).

    Without ties tau = (C - D) / n0 and C + D = n0 = n(n-1)/2, so D = n0 (1 - tau) / 2."""
    n = x.size
    if np.unique(x).size < n or np.unique(y).size < n:
        return "asymptotic"
    total = n * (n - 1) // 2
    discordant = round(total * (1.0 - tau) / 2.0)
    if n <= _KENDALL_EXACT_MAX_N or min(discordant, total - discordant) <= 1:
        return "exact"
    return "asymptotic"


def correlation(x, y, method: str = "pearson") -> Correlation:
    """Correlation coefficient and two-sided p-value from scipy (see the module docstring).

    Pairs where x or y is NaN/inf are dropped first; n < ``MIN_N`` or a constant input gives
    NaN with a note.
    """
    _check_method(method)
    x, y, note = _clean_pair(x, y)
    n = x.size
    degenerate = _degenerate_note(x, y)
    if degenerate:
        return Correlation(method, math.nan, math.nan, n, note=_join_notes(note, degenerate))
    if method == "pearson":
        res, msgs = _quietly(scipy.stats.pearsonr, x, y)
        how = "t"
    elif method == "spearman":
        res, msgs = _quietly(scipy.stats.spearmanr, x, y)
        how = "t"
    else:
        tau, _ = _quietly(scipy.stats.kendalltau, x, y)
        scipy_method = _kendall_pvalue_method(x, y, float(tau.statistic))
        res, msgs = _quietly(scipy.stats.kendalltau, x, y, method=scipy_method)
        how = "exact" if scipy_method == "exact" else "normal"
    return Correlation(
        method,
        float(res.statistic),
        float(res.pvalue),
        n,
        pvalue_method=how,
        note=_join_notes(note, *msgs),
    )


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


def _as_statistic(statistic: str | Callable, x: np.ndarray, y: np.ndarray, given=()):
    """(the statistic scipy's bootstrap calls, f(x, y, axis); its value on the data).

    Values within ``_TIE_TOLERANCE`` of the estimate are set to the estimate exactly. Why: BCa's
    bias correction counts resamples equal to the estimate as one half (scipy and Efron alike).
    A resample that uses every run once, or (Kendall) one with the same pair counts, equals the
    estimate in exact arithmetic but can differ from it in the last bit, which moves it to one
    side: with 8 runs and a discrete statistic such as Kendall's tau, that floating-point noise
    moved BCa bounds by up to 0.08. The estimate is the one ``correlation`` reports (for
    Spearman, spearmanr's), so an interval of identical resamples is exactly [estimate,
    estimate] and contains it.
    """
    if isinstance(statistic, str):
        _check_method(statistic)
        fn = _STATISTICS[statistic]
        estimate = correlation(x, y, statistic).statistic
    else:

        def fn(*arrays, axis=-1):
            return statistic(*(np.moveaxis(a, axis, -1) for a in arrays))

        estimate = float(fn(x, y, *given))
    tolerance = _TIE_TOLERANCE * max(1.0, abs(estimate)) if math.isfinite(estimate) else 0.0

    def snapped(*arrays, axis=-1):
        values = np.asarray(fn(*arrays, axis=axis), dtype=float)
        return np.where(np.abs(values - estimate) <= tolerance, estimate, values)

    return snapped, estimate


def bootstrap_ci(
    x,
    y,
    statistic: str | Callable = "pearson",
    *,
    given: Sequence = (),
    num_resamples: int = 2000,
    confidence: float = 0.95,
    ci_method: str = "bca",
    rng=0,
) -> BootstrapInterval:
    """Bootstrap confidence interval of a paired statistic, resampling the pairs (runs), with
    ``scipy.stats.bootstrap``: the one bootstrap of the analysis package.

    ``statistic``: a name in ``METHODS`` or a vectorised function ``f(x[..., n], y[..., n],
    *given) -> [...]`` (NaN where undefined; e.g. ``partial_spearman_statistic``).
    ``given``: further arrays, one value per pair (covariates), resampled with the pairs and
    passed to a function ``statistic``; a point where any of them is NaN/inf is dropped.
    ``rng``: a ``numpy.random.Generator`` (used as it is, so consecutive calls draw different
    resamples) or an int seed. Never raises on degenerate data: NaN bounds with a note instead
    (see the module docstring).
    """
    _check_bootstrap_settings(statistic, ci_method, confidence, num_resamples)
    if given and isinstance(statistic, str):
        raise ValueError(f"given= covariates need a function statistic, got the name {statistic!r}")
    num_resamples = int(num_resamples)
    gen = _as_generator(rng)
    x, y, given, note = _clean(x, y, given)

    def interval(low, high, why="", dist=None, valid=0) -> BootstrapInterval:
        return BootstrapInterval(
            float(low),
            float(high),
            ci_method,
            confidence,
            num_resamples,
            valid,
            _join_notes(note, why),
            dist,
        )

    degenerate = _degenerate_note(x, y)
    if degenerate:
        return interval(math.nan, math.nan, degenerate)
    stat_fn, estimate = _as_statistic(statistic, x, y, given)
    kwargs = {
        "paired": True,
        "vectorized": True,
        "confidence_level": confidence,
        "method": _SCIPY_CI_METHOD[ci_method],
    }
    try:
        res = _bootstrap((x, y, *given), stat_fn, n_resamples=num_resamples, rng=gen, **kwargs)
        dist = np.asarray(res.bootstrap_distribution, dtype=float)
        valid = np.isfinite(dist)
        num_valid = int(valid.sum())
        if num_valid < num_resamples:
            note = _join_notes(
                note,
                f"{num_resamples - num_valid} of {num_resamples} resamples "
                "undefined (constant resample) and dropped",
            )
            if num_valid == 0:
                return interval(math.nan, math.nan, "no valid resample", dist, 0)
            # scipy's interval of the valid resamples: no new draws, same data and statistic.
            kept = types.SimpleNamespace(bootstrap_distribution=dist[valid])
            res = _bootstrap(
                (x, y, *given), stat_fn, n_resamples=0, bootstrap_result=kept, **kwargs
            )
    except (ValueError, ArithmeticError) as e:
        return interval(math.nan, math.nan, f"scipy.stats.bootstrap failed: {e}")
    low, high, why = _interval_bounds(res, dist[valid], estimate, ci_method)
    return interval(low, high, why, dist, num_valid)


def _check_bootstrap_settings(statistic, ci_method: str, confidence: float, num_resamples):
    if ci_method not in CI_METHODS:
        raise ValueError(f"unknown ci_method {ci_method!r}; allowed: {', '.join(CI_METHODS)}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if int(num_resamples) < 1:
        raise ValueError(f"num_resamples must be >= 1, got {num_resamples!r}")
    if isinstance(statistic, str):
        _check_method(statistic)


def _interval_bounds(res, theta: np.ndarray, estimate: float, ci_method: str) -> tuple:
    """scipy's interval ``res`` of the valid resamples ``theta`` as (low, high, note), NaN
    bounds with the reason where it is not an interval."""
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if ci_method == "bca" and (np.all(theta < estimate) or np.all(theta > estimate)):
        # An infinite bias correction: scipy returns NaN, or the extreme resample when the
        # acceleration happens to be 0; either way there is no BCa interval.
        why = "BCa interval undefined: every resample lies on one side of the estimate"
        return math.nan, math.nan, f"{why} {estimate:.6g}"
    if np.all(theta == estimate):
        # Every quantile of a point mass is that point (BCa's acceleration is 0/0 here, and
        # scipy returns NaN).
        why = f"every resample gives {estimate:.6g} (a degenerate bootstrap distribution)"
        return estimate, estimate, why
    if not (math.isfinite(low) and math.isfinite(high)):
        why = (
            f"{_SCIPY_CI_METHOD[ci_method]} interval undefined: scipy.stats.bootstrap returned "
            "a non-finite bound (e.g. the coefficient is undefined on a leave-one-out sample)"
        )
        return math.nan, math.nan, why
    return low, high, ""


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
        return Correlation(
            **{
                **point.as_dict(),
                "ci_method": ci_method if num_resamples else "",
                "confidence": confidence,
                "num_resamples": int(num_resamples),
            }
        )
    ci = bootstrap_ci(
        x,
        y,
        method,
        num_resamples=num_resamples,
        confidence=confidence,
        ci_method=ci_method,
        rng=rng,
    )
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
        note=_join_notes(*point.note.split("; "), *ci.note.split("; ")),
    )


# --------------------------------------------------------------------------- permutation tests

# Up to this many points a permutation test enumerates all n! arrangements (9! = 362880).
EXACT_PERMUTATION_MAX_N = 9
PERMUTATION_RESAMPLES = 9999  # Monte Carlo permutations above EXACT_PERMUTATION_MAX_N


@dataclass(frozen=True)
class PermutationTest:
    """A permutation test of an association. ``pvalue`` two-sided (scipy's: twice the smaller
    one-sided p, at most 1); ``exact`` says whether every one of the n! arrangements was
    enumerated (then ``pvalue_method`` is 'exact (n! permutations)') or ``num_permutations``
    were drawn with a seeded generator ('monte carlo (B permutations, seed s)', p = (hits + 1)
    / (B + 1)); ``min_pvalue`` the smallest two-sided p the test can give on these data."""

    method: str
    statistic: float
    pvalue: float
    n: int
    exact: bool
    num_permutations: int
    pvalue_method: str
    min_pvalue: float
    note: str = ""


def _kendall_vectorised(x, y, axis=-1):
    """Kendall tau-b along ``axis`` (vectorised; tau-a when there are no ties)."""
    x = np.moveaxis(np.asarray(x, dtype=float), axis, -1)
    y = np.moveaxis(np.asarray(y, dtype=float), axis, -1)
    n = x.shape[-1]
    i, j = np.triu_indices(n, 1)
    dx = np.sign(x[..., i] - x[..., j])
    dy = np.sign(y[..., i] - y[..., j])
    with np.errstate(divide="ignore", invalid="ignore"):
        return (dx * dy).sum(-1) / np.sqrt((dx * dx).sum(-1) * (dy * dy).sum(-1))


def _permutation(statistic, data, n, *, exact_max_n, num_resamples, rng) -> tuple:
    """scipy.stats.permutation_test over 'pairings' of ``data`` (the first array permuted);
    (statistic, p, exact, num_permutations, pvalue_method, min_p)."""
    # scipy enumerates whenever n! <= n_resamples: say so.
    exact = n <= exact_max_n or math.factorial(n) <= num_resamples
    seed = rng if isinstance(rng, (int, np.integer, list, tuple)) else None
    gen = np.random.default_rng(rng) if isinstance(rng, (list, tuple)) else _as_generator(rng)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = scipy.stats.permutation_test(
            data,
            statistic,
            permutation_type="pairings",
            vectorized=True,
            n_resamples=np.inf if exact else int(num_resamples),
            alternative="two-sided",
            rng=gen,
        )
    null = np.asarray(res.null_distribution, dtype=float)
    total = null.size
    if exact:
        how = f"exact ({total} permutations)"
        tol = 1e-12 * max(1.0, float(np.nanmax(np.abs(null))))
        top = np.sum(null >= np.nanmax(null) - tol)
        bottom = np.sum(null <= np.nanmin(null) + tol)
        min_p = min(1.0, 2.0 * min(top, bottom) / total)
    else:
        how = f"monte carlo ({total} permutations" + (
            f", seed {seed})" if seed is not None else ")"
        )
        min_p = min(1.0, 2.0 / (total + 1))
    return float(res.statistic), float(res.pvalue), exact, int(total), how, float(min_p)


def permutation_correlation(
    x,
    y,
    method: str = "pearson",
    *,
    exact_max_n: int = EXACT_PERMUTATION_MAX_N,
    num_resamples: int = PERMUTATION_RESAMPLES,
    rng=0,
) -> PermutationTest:
    """The correlation of x and y (``method`` in ``METHODS``; Kendall's tau-b) with its
    permutation p-value: y held, x permuted (``scipy.stats.permutation_test``, 'pairings').
    Exact enumeration of the n! arrangements when n <= ``exact_max_n`` (or n! <=
    ``num_resamples``), else ``num_resamples`` Monte Carlo permutations from ``rng`` (an
    int seed, a list of ints (numpy's seed sequence) or a Generator). NaN/inf pairs are
    dropped; fewer than ``MIN_N`` pairs or a constant input gives NaN with a note."""
    _check_method(method)
    x, y, note = _clean_pair(x, y)
    n = x.size
    degenerate = _degenerate_note(x, y)
    if degenerate:
        nan = math.nan
        return PermutationTest(
            method, nan, nan, n, False, 0, "", nan, _join_notes(note, degenerate)
        )
    if method == "kendall":

        def statistic(a, axis=-1):
            return _kendall_vectorised(a, np.broadcast_to(y, a.shape), axis=axis)

    else:
        # Pearson r along the last axis, without scipy's p-value per permutation; Spearman is
        # the same on the ranks (a permutation of x permutes its ranks).
        if method == "spearman":
            x, y = scipy.stats.rankdata(x), scipy.stats.rankdata(y)
        scale_x, scale_y = float(np.abs(x).max()), float(np.abs(y).max())

        def statistic(a, axis=-1):
            a = np.moveaxis(a, axis, -1)
            return _corr_last_axis(a, np.broadcast_to(y, a.shape), scale_x, scale_y)

    stat, p, exact, total, how, min_p = _permutation(
        statistic,
        (x,),
        n,
        exact_max_n=exact_max_n,
        num_resamples=num_resamples,
        rng=rng,
    )
    return PermutationTest(method, stat, p, n, exact, total, how, min_p, note)


def freedman_lane(
    x,
    y,
    given,
    method: str = "spearman",
    *,
    exact_max_n: int = EXACT_PERMUTATION_MAX_N,
    num_resamples: int = PERMUTATION_RESAMPLES,
    rng=0,
) -> PermutationTest:
    """The partial correlation of x and y given one covariate ``given`` (``method``
    'pearson', or 'spearman': the same on average ranks) with the Freedman-Lane (1983)
    permutation p-value: y's residuals e from least squares on [1, given] are permuted, y* =
    fitted + P e, and the statistic recomputed on (x, y*, given); that is, r(x|z, P e|z).
    Exact over the n! arrangements when n <= ``exact_max_n``, else Monte Carlo."""
    if method not in ("pearson", "spearman"):
        raise ValueError(
            f"unknown partial correlation method {method!r}; allowed: pearson, spearman"
        )
    x, y, (z,), note = _clean(x, y, (given,))
    n = x.size
    nan = math.nan
    if n < 4:
        return PermutationTest(
            f"partial {method}",
            nan,
            nan,
            n,
            False,
            0,
            "",
            nan,
            _join_notes(note, f"n={n} < 4 points"),
        )
    if method == "spearman":
        x, y, z = (scipy.stats.rankdata(a) for a in (x, y, z))
    ex = _residualize(x, z)
    ey = _residualize(y, z)
    estimate = partial_pearson_statistic(x, y, z)
    if not np.isfinite(estimate):
        why = "a residual is constant (x or y is a function of the covariate)"
        return PermutationTest(
            f"partial {method}", nan, nan, n, False, 0, "", nan, _join_notes(note, why)
        )
    scale_x = np.abs(x).max()
    scale_y = np.abs(y).max()

    def statistic(e, axis=-1):
        e = np.moveaxis(e, axis, -1)
        return _corr_last_axis(np.broadcast_to(ex, e.shape), _residualize(e, z), scale_x, scale_y)

    stat, p, exact, total, how, min_p = _permutation(
        statistic,
        (ey,),
        n,
        exact_max_n=exact_max_n,
        num_resamples=num_resamples,
        rng=rng,
    )
    return PermutationTest(f"partial {method}", stat, p, n, exact, total, how, min_p, note)


# --------------------------------------------------------------------------- multiplicity


def holm(pvalues) -> np.ndarray:
    """Holm's (1979) step-down adjusted p-values, in the input order: with the m finite
    p-values sorted, p_(1) <= ... <= p_(m), adjusted p_(i) = max_{j <= i} min(1, (m - j + 1)
    p_(j)). NaN entries stay NaN and do not count in m. Reject at level alpha where the
    adjusted p < alpha (controls the family-wise error rate)."""
    p = np.asarray(pvalues, dtype=float).ravel()
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = finite.size
    if m == 0:
        return out
    order = finite[np.argsort(p[finite], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


# --------------------------------------------------------------------------- design power


def fisher_bound(r: float, n: int, confidence: float = 0.95, side: str = "upper") -> float:
    """The one-sided Fisher-z confidence bound of a Pearson r from n points: ``tanh(atanh(r)
    +- z_confidence / sqrt(n - 3))`` (``side`` 'upper' or 'lower'); NaN for n < 4 or a NaN
    r."""
    if side not in ("upper", "lower"):
        raise ValueError(f"unknown side {side!r}; allowed: upper, lower")
    if n < 4 or not math.isfinite(r):
        return math.nan
    z = math.atanh(min(max(r, -1 + 1e-15), 1 - 1e-15))
    step = scipy.stats.norm.ppf(confidence) / math.sqrt(n - 3)
    return math.tanh(z + step if side == "upper" else z - step)


@dataclass(frozen=True)
class Power:
    """How often a design of ``n`` points excludes r <= ``null_r`` (one-sided Fisher-z lower
    bound at ``confidence``) when the true Pearson r is ``true_r``: ``power`` from
    ``num_sims`` simulated bivariate normal samples, with its Monte Carlo standard error."""

    n: int
    true_r: float
    null_r: float
    confidence: float
    power: float
    stderr: float
    num_sims: int


def correlation_power(
    n: int,
    *,
    true_r: float = 0.9,
    null_r: float = 0.7,
    confidence: float = 0.95,
    num_sims: int = 20_000,
    rng=0,
) -> Power:
    """The power of the primary test's design by simulation (see ``Power``): draw ``n``
    bivariate normal points with correlation ``true_r``, compute Pearson r, and count how
    often ``atanh(r) - z_{confidence} / sqrt(n - 3) > atanh(null_r)``."""
    if n < 4:
        raise ValueError(f"n must be >= 4 for the Fisher-z bound, got {n!r}")
    for name, r in (("true_r", true_r), ("null_r", null_r)):
        if not -1.0 < r < 1.0:
            raise ValueError(f"{name} must be in (-1, 1), got {r!r}")
    gen = _as_generator(rng)
    a = gen.standard_normal((int(num_sims), n))
    b = true_r * a + math.sqrt(1.0 - true_r**2) * gen.standard_normal((int(num_sims), n))
    r = _corr_last_axis(a, b, 1.0, 1.0)
    bound = np.arctanh(np.clip(r, -1 + 1e-15, 1 - 1e-15)) - scipy.stats.norm.ppf(
        confidence
    ) / math.sqrt(n - 3)
    hit = bound > math.atanh(null_r)
    power = float(hit.mean())
    return Power(
        n,
        true_r,
        null_r,
        confidence,
        power,
        math.sqrt(power * (1 - power) / num_sims),
        int(num_sims),
    )
