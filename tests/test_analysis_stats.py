"""The statistics wrapper over scipy.stats: scipy as the oracle where the wrapper only passes
through, hand-computed values and plain-numpy resampling where an independent computation
exists, and the NaN-and-note behaviour on degenerate input."""

import itertools
import math
import warnings

import numpy as np
import pytest
import scipy.stats

from flatrob_jax.analysis import stats


def _datasets():
    rng = np.random.default_rng(0)
    x = rng.normal(size=12)
    cases = {
        "continuous_n12": (x, 0.6 * x + rng.normal(size=12)),
        "negative_n7": (np.arange(7.0), -(np.arange(7.0) ** 1.5) + rng.normal(size=7)),
        "n3": (np.array([0.3, 0.1, 0.2]), np.array([1.0, 3.0, 2.5])),
        "ties_n10": (
            np.array([1, 2, 2, 3, 3, 3, 4, 5, 5, 6.0]),
            np.array([2, 1, 2, 2, 4, 3, 3, 5, 5, 4.0]),
        ),
        "ties_in_one_n9": (np.array([1, 1, 1, 2, 2, 3, 4, 5, 6.0]), rng.normal(size=9)),
        "monotone_n8": (np.arange(8.0), np.exp(np.arange(8.0))),  # Kendall exact, no discordant
        "one_swap_n40": (np.arange(40.0), np.r_[np.arange(38.0), 39.0, 38.0]),  # exact beyond 33
        "no_ties_n45": (rng.normal(size=45), rng.normal(size=45)),  # Kendall normal approx.
        "ties_n60": (rng.integers(0, 6, 60).astype(float), rng.integers(0, 4, 60).astype(float)),
    }
    return cases


# Which p-value scipy's kendalltau(method='auto') uses on each case, by its documented rule.
_KENDALL_PVALUE_METHOD = {
    "continuous_n12": "exact",
    "negative_n7": "exact",
    "n3": "exact",
    "ties_n10": "normal",
    "ties_in_one_n9": "normal",
    "monotone_n8": "exact",
    "one_swap_n40": "exact",
    "no_ties_n45": "normal",
    "ties_n60": "normal",
}

_SCIPY = {
    "pearson": scipy.stats.pearsonr,
    "spearman": scipy.stats.spearmanr,
    "kendall": scipy.stats.kendalltau,
}


# --------------------------------------------------------------------------- coefficients


@pytest.mark.parametrize("case", sorted(_datasets()))
@pytest.mark.parametrize("method", stats.METHODS)
def test_coefficients_and_pvalues_match_scipy(case, method):
    x, y = _datasets()[case]
    ours = stats.correlation(x, y, method)
    ref = _SCIPY[method](x, y)
    assert ours.n == x.size
    np.testing.assert_allclose(ours.statistic, ref.statistic, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ours.pvalue, ref.pvalue, rtol=1e-12, atol=1e-300)
    expected_how = _KENDALL_PVALUE_METHOD[case] if method == "kendall" else "t"
    assert ours.pvalue_method == expected_how


def test_pvalue_method_names_the_distribution_used():
    # The label is not just a guess at scipy's choice: forcing the other method changes p.
    x, y = _datasets()["continuous_n12"]
    ours = stats.kendall(x, y)
    assert ours.pvalue_method == "exact"
    assert ours.pvalue == scipy.stats.kendalltau(x, y, method="exact").pvalue
    assert ours.pvalue != scipy.stats.kendalltau(x, y, method="asymptotic").pvalue
    x, y = _datasets()["no_ties_n45"]
    assert stats.kendall(x, y).pvalue == scipy.stats.kendalltau(x, y, method="asymptotic").pvalue


def test_perfectly_linear_data():
    x = np.array([0.5, 1.0, 2.0, 4.0, 8.0, 9.0])
    for sign in (1.0, -1.0):
        y = sign * 3.0 * x + 2.0
        for method in stats.METHODS:
            c = stats.correlation(x, y, method)
            assert c.statistic == pytest.approx(sign, abs=1e-12), method
        # Kendall: no discordant (concordant) pair among 15, so p = 2 / 6!.
        assert stats.kendall(x, y).pvalue == pytest.approx(2.0 / math.factorial(6), rel=1e-12)
        assert stats.pearson(x, y).pvalue < 1e-12


def test_hand_computed_n3():
    # x = (1, 2, 3), y = (1, 3, 2): r = rho = 1/2; t = 1/sqrt(3) with 1 df, so
    # p = 1 - (2/pi) atan(1/sqrt(3)) = 2/3. Kendall: 2 concordant, 1 discordant -> tau = 1/3;
    # exact two-sided p = 2 P(K <= 1) = 2 * (1 + 2) / 3! = 1.
    x, y = [1.0, 2.0, 3.0], [1.0, 3.0, 2.0]
    assert stats.pearson(x, y).statistic == pytest.approx(0.5)
    assert stats.pearson(x, y).pvalue == pytest.approx(2.0 / 3.0)
    assert stats.spearman(x, y).statistic == pytest.approx(0.5)
    k = stats.kendall(x, y)
    assert k.statistic == pytest.approx(1.0 / 3.0)
    assert k.pvalue == pytest.approx(1.0)
    assert k.pvalue_method == "exact"


def test_hand_computed_permutation_n5():
    # y is the permutation (2, 1, 4, 3, 5) of x = (1..5): 2 inversions among 10 pairs.
    x, y = np.arange(1.0, 6.0), np.array([2.0, 1.0, 4.0, 3.0, 5.0])
    # Kendall: C = 8, D = 2 -> tau = 0.6. Exact p = P(K <= 2) + P(K >= 8) for K the inversion
    # count of a uniform permutation of 5: Mahonian numbers 1, 4, 9, 15, 20, 22, 20, 15, 9, 4, 1
    # -> (14 + 14) / 120 = 7/30; and the same count by enumerating all 120 permutations.
    inversions = [
        sum(p[i] > p[j] for i in range(5) for j in range(i + 1, 5))
        for p in itertools.permutations(range(5))
    ]
    extreme = sum(k <= 2 or k >= 8 for k in inversions)
    assert extreme == 28
    k = stats.kendall(x, y)
    assert k.statistic == pytest.approx(0.6, abs=1e-15)
    assert k.pvalue == pytest.approx(7.0 / 30.0, rel=1e-12) == extreme / 120
    assert k.pvalue_method == "exact"
    # Spearman: sum d^2 = 4 -> rho = 1 - 6 * 4 / (5 * 24) = 0.8 (and Pearson of these ranks).
    # t = 0.8 sqrt(3 / 0.36), u = t / sqrt(3) = 4/3, and Student's t with 3 df has the closed
    # form P(|T| >= t) = 1 - (2/pi) (u / (1 + u^2) + atan(u)).
    p = 1.0 - 2.0 / math.pi * (12.0 / 25.0 + math.atan(4.0 / 3.0))
    for method in ("spearman", "pearson"):
        c = stats.correlation(x, y, method)
        assert c.statistic == pytest.approx(0.8, abs=1e-15)
        assert c.pvalue == pytest.approx(p, rel=1e-12)


@pytest.mark.parametrize("method", stats.METHODS)
def test_degenerate_inputs_give_nan_with_a_note_and_no_warning(method):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        small = stats.correlation([1.0, 2.0], [3.0, 1.0], method)
        assert math.isnan(small.statistic) and math.isnan(small.pvalue)
        assert small.n == 2 and "n=2 < 3" in small.note and small.pvalue_method == ""
        const = stats.correlation([1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0], method)
        assert math.isnan(const.statistic) and "y is constant" in const.note
        empty = stats.correlate([], [], method, num_resamples=50)
        assert math.isnan(empty.statistic) and math.isnan(empty.ci_low) and empty.n == 0
        nans = stats.correlate(
            [np.nan, 1.0, 2.0, 3.0], [1.0, 2.0, np.inf, np.nan], method, num_resamples=50
        )
        assert nans.n == 1 and math.isnan(nans.statistic) and math.isnan(nans.ci_high)
        assert "3 run(s) with a missing" in nans.note and "n=1 < 3" in nans.note
        ci = stats.bootstrap_ci([2.0, 2.0, 2.0], [1.0, 2.0, 3.0], method, num_resamples=50)
        assert math.isnan(ci.low) and math.isnan(ci.high) and "x is constant" in ci.note
        ci = stats.bootstrap_ci([2.0, 1.0], [1.0, 2.0], method, num_resamples=50)
        assert math.isnan(ci.low) and "n=2 < 3" in ci.note


def test_nearly_constant_input_warning_becomes_a_note():
    x = 1e8 + np.array([0.0, 1e-7, 2e-7, 3e-7, 5e-7])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = stats.pearson(x, np.arange(5.0))
    assert np.isfinite(c.statistic) and "nearly constant" in c.note


def test_nan_pairs_are_dropped_and_counted():
    x = np.array([1.0, 2.0, np.nan, 4.0, 5.0, 6.0])
    y = np.array([1.0, 3.0, 2.0, np.nan, 4.0, 7.0])
    ours = stats.correlate(x, y, "spearman", num_resamples=100)
    keep = np.isfinite(x) & np.isfinite(y)
    assert ours.n == 4
    assert ours.statistic == pytest.approx(scipy.stats.spearmanr(x[keep], y[keep]).statistic)
    assert "2 run(s) with a missing" in ours.note
    assert ours.note.count("2 run(s) with a missing") == 1  # not repeated by the bootstrap


def test_bad_arguments_name_the_allowed_values():
    with pytest.raises(
        ValueError, match="unknown correlation method 'pearsonr'.*pearson, spearman, kendall"
    ):
        stats.correlation([1, 2, 3], [1, 2, 3], "pearsonr")
    with pytest.raises(ValueError, match="unknown ci_method 'bc'.*bca, percentile"):
        stats.bootstrap_ci([1, 2, 3], [1, 2, 3], ci_method="bc")
    with pytest.raises(ValueError, match="same length"):
        stats.correlation([1, 2, 3], [1, 2], "kendall")
    with pytest.raises(ValueError, match="confidence must be in"):
        stats.bootstrap_ci([1, 2, 3], [1, 2, 3], confidence=95)
    with pytest.raises(TypeError, match="rng must be"):
        stats.bootstrap_ci([1, 2, 3], [1, 3, 2], rng="seed")


# --------------------------------------------------------------------------- bootstrap


def _tau_b(x, y):
    """Kendall tau-b along the last axis from the pair signs (independent of scipy)."""
    sx = np.sign(x[..., :, None] - x[..., None, :])
    sy = np.sign(y[..., :, None] - y[..., None, :])
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sx * sy).sum((-1, -2)) / np.sqrt((sx * sx).sum((-1, -2)) * (sy * sy).sum((-1, -2)))


def _numpy_statistic(method, x, y):
    if method == "pearson":
        return np.array(
            [np.corrcoef(a, b)[0, 1] if np.ptp(a) and np.ptp(b) else np.nan for a, b in zip(x, y)]
        )
    if method == "spearman":
        return _numpy_statistic(
            "pearson", scipy.stats.rankdata(x, axis=-1), scipy.stats.rankdata(y, axis=-1)
        )
    return _tau_b(x, y)


@pytest.mark.parametrize("method", stats.METHODS)
def test_percentile_interval_equals_a_hand_resampling(method):
    # scipy's paired bootstrap draws the resampled indices as rng.integers(0, n, (B, n)).
    rng = np.random.default_rng(5)
    x = np.round(rng.normal(size=9), 1)  # ties in x, so the ranks/tau-b tie corrections matter
    y = x + rng.normal(size=9)
    b = 600
    idx = np.random.default_rng(42).integers(0, x.size, (b, x.size))
    theta = _numpy_statistic(method, x[idx], y[idx])
    ours = stats.bootstrap_ci(
        x,
        y,
        method,
        num_resamples=b,
        ci_method="percentile",
        confidence=0.9,
        rng=np.random.default_rng(42),
    )
    np.testing.assert_allclose(ours.distribution, theta, rtol=0, atol=1e-11)
    valid = theta[np.isfinite(theta)]
    assert ours.num_valid == valid.size
    np.testing.assert_allclose(
        [ours.low, ours.high], np.quantile(valid, [0.05, 0.95]), rtol=0, atol=1e-11
    )


@pytest.mark.parametrize("n", [8, 15])
@pytest.mark.parametrize("method", stats.METHODS)
def test_bca_matches_scipy_bootstrap_called_directly(method, n):
    rng = np.random.default_rng(11)
    x = rng.normal(size=n)
    y = 0.5 * x + rng.normal(size=n)
    scipy_fn = {
        "pearson": lambda a, b, axis: scipy.stats.pearsonr(a, b, axis=axis).statistic,
        "spearman": lambda a, b, axis: (
            scipy.stats.pearsonr(
                scipy.stats.rankdata(a, axis=axis), scipy.stats.rankdata(b, axis=axis), axis=axis
            ).statistic
        ),
        "kendall": lambda a, b, axis: scipy.stats.kendalltau(a, b, axis=axis).statistic,
    }[method]
    # The wrapper's one change to the statistic: values within 1e-12 of the estimate are ties.
    estimate = _SCIPY[method](x, y).statistic

    def snapped(a, b, axis):
        v = scipy_fn(a, b, axis)
        return np.where(np.abs(v - estimate) <= 1e-12, estimate, v)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant resamples in scipy's call
        ref = scipy.stats.bootstrap(
            (x, y),
            snapped,
            paired=True,
            vectorized=True,
            n_resamples=500,
            method="BCa",
            confidence_level=0.9,
            rng=np.random.default_rng(3),
        )
    ours = stats.bootstrap_ci(x, y, method, num_resamples=500, confidence=0.9, rng=3)
    assert ours.num_valid == 500
    np.testing.assert_allclose(ours.distribution, ref.bootstrap_distribution, rtol=0, atol=0)
    ref_ci = ref.confidence_interval
    np.testing.assert_allclose([ours.low, ours.high], [ref_ci.low, ref_ci.high], rtol=0, atol=0)


def test_ties_with_the_estimate_count_half_in_bca():
    # At n = 8 about 0.24% of resamples use every run once and equal the estimate in exact
    # arithmetic; Kendall's tau is discrete, so more do. scipy's values for them can differ from
    # the estimate in the last bit; the wrapper makes them ties, counted half by BCa's bias
    # correction (checked here against the BCa formula written out, Efron & Tibshirani 14.3).
    rng = np.random.default_rng(2024)
    for _ in range(29):  # the 29th of these draws is a case where the two differ
        x = rng.normal(size=8)
        y = rng.uniform(-1, 1) * x + rng.normal(size=8)
    ours = stats.bootstrap_ci(
        x, y, "kendall", num_resamples=2000, rng=np.random.default_rng([0, 28])
    )
    estimate = scipy.stats.kendalltau(x, y).statistic
    ties = np.isclose(ours.distribution, estimate, rtol=0, atol=1e-12)
    assert ties.sum() > 20
    assert np.all(ours.distribution[ties] == estimate)
    theta = ours.distribution
    below = (np.sum(theta < estimate) + 0.5 * ties.sum()) / theta.size
    z0 = scipy.special.ndtri(below)
    a = _jackknife_acceleration(x, y)
    z = scipy.special.ndtri([0.025, 0.975])
    probs = scipy.special.ndtr(z0 + (z0 + z) / (1.0 - a * (z0 + z)))
    np.testing.assert_allclose([ours.low, ours.high], np.quantile(theta, probs), atol=1e-12)


def _jackknife_acceleration(x, y):
    """Efron's a = sum(d^3) / (6 (sum d^2)^1.5), d = mean(jackknife) - jackknife, for tau-b."""
    n = x.size
    loo = np.array([np.delete(np.arange(n), i) for i in range(n)])
    jack = _tau_b(x[loo], y[loo])
    d = jack.mean() - jack
    return (d**3).sum() / (6.0 * (d * d).sum() ** 1.5)


@pytest.mark.parametrize("ci_method", stats.CI_METHODS)
@pytest.mark.parametrize("method", stats.METHODS)
def test_interval_contains_the_estimate_on_a_well_behaved_sample(method, ci_method):
    rng = np.random.default_rng(7)
    x = rng.normal(size=20)
    y = 0.7 * x + 0.5 * rng.normal(size=20)
    c = stats.correlate(x, y, method, num_resamples=400, ci_method=ci_method, rng=1)
    assert -1.0 <= c.ci_low < c.statistic < c.ci_high <= 1.0
    assert c.note == "" and c.ci_method == ci_method and c.num_resamples == 400


def test_bootstrap_is_reproducible_from_its_seed():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(2, 15))
    a = stats.bootstrap_ci(x, y, "kendall", num_resamples=300, rng=7)
    b = stats.bootstrap_ci(x, y, "kendall", num_resamples=300, rng=np.random.default_rng(7))
    c = stats.bootstrap_ci(x, y, "kendall", num_resamples=300, rng=8)
    assert (a.low, a.high) == (b.low, b.high)
    np.testing.assert_array_equal(a.distribution, b.distribution)
    assert not np.array_equal(a.distribution, c.distribution)
    # A Generator is used as it is: a second call continues its stream.
    gen = np.random.default_rng(7)
    first = stats.bootstrap_ci(x, y, "kendall", num_resamples=300, rng=gen)
    second = stats.bootstrap_ci(x, y, "kendall", num_resamples=300, rng=gen)
    np.testing.assert_array_equal(first.distribution, a.distribution)
    assert not np.array_equal(second.distribution, a.distribution)


@pytest.mark.parametrize("ci_method", stats.CI_METHODS)
def test_constant_resamples_are_dropped_not_fatal(ci_method):
    # n = 3: about 1/9 of resamples repeat a single run and are undefined. The interval is
    # scipy's interval of the other resamples.
    x, y = np.array([0.0, 1.0, 2.0]), np.array([0.0, 2.0, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ci = stats.bootstrap_ci(x, y, "pearson", num_resamples=900, ci_method=ci_method, rng=1)
    assert 0 < ci.num_valid < 900
    assert "undefined (constant resample) and dropped" in ci.note
    assert -1.0 <= ci.low <= ci.high <= 1.0
    valid = ci.distribution[np.isfinite(ci.distribution)]
    if ci_method == "percentile":
        np.testing.assert_allclose([ci.low, ci.high], np.quantile(valid, [0.025, 0.975]))


@pytest.mark.parametrize("ci_method", stats.CI_METHODS)
@pytest.mark.parametrize("method", ["spearman", "kendall"])
def test_a_degenerate_bootstrap_distribution_gives_the_point_with_a_note(method, ci_method):
    # A monotone relation: every defined resample has rho = tau = 1. Every quantile of that
    # point mass is 1; BCa's acceleration is 0/0 and scipy returns NaN (and warns).
    x = np.arange(8.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = stats.correlate(x, np.exp(x), method, num_resamples=300, ci_method=ci_method)
    assert c.statistic == pytest.approx(1.0)
    assert c.ci_low == c.ci_high == c.statistic  # contains the estimate, to the last bit
    assert "every resample gives 1 (a degenerate bootstrap distribution)" in c.note


def test_bca_with_an_undefined_jackknife_value_is_nan_with_a_note():
    # Leaving out the one x that differs makes x constant: a NaN jackknife value.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ci = stats.bootstrap_ci(
            [1.0, 1.0, 1.0, 1.0, 1.0, 2.0], np.arange(6.0), "pearson", num_resamples=200, rng=1
        )
    assert math.isnan(ci.low) and math.isnan(ci.high)
    assert "BCa interval undefined" in ci.note and "leave-one-out" in ci.note


def test_bca_with_every_resample_on_one_side_is_nan_with_a_note():
    # A custom statistic: the number of distinct x values. A resample has fewer than the data
    # unless it uses every run once (probability 10!/10^10 = 0.04%), so all 200 lie below.
    def distinct(x, y):
        return (np.diff(np.sort(x, axis=-1), axis=-1) != 0).sum(-1) + 1.0

    x = np.arange(10.0)
    ci = stats.bootstrap_ci(x, x, distinct, num_resamples=200, rng=0)
    assert np.all(ci.distribution < 10)
    assert math.isnan(ci.low) and "every resample lies on one side of the estimate 10" in ci.note
    pct = stats.bootstrap_ci(x, x, distinct, num_resamples=200, ci_method="percentile", rng=0)
    np.testing.assert_allclose([pct.low, pct.high], np.quantile(ci.distribution, [0.025, 0.975]))


def test_a_failing_scipy_bootstrap_gives_nan_with_a_note(monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("boom")

    monkeypatch.setattr(scipy.stats, "bootstrap", broken)
    c = stats.correlate(
        np.arange(5.0), np.array([1.0, 3.0, 2.0, 5.0, 4.0]), "pearson", num_resamples=10
    )
    assert np.isfinite(c.statistic) and math.isnan(c.ci_low)
    assert "scipy.stats.bootstrap failed: boom" in c.note


# --------------------------------------------------------------------------- coverage


def _coverage(
    method, true_value, rho, n, num_datasets, confidence, ci_method, num_resamples=500, seed=0
):
    rng = np.random.default_rng(seed)
    cov = np.array([[1.0, rho], [rho, 1.0]])
    hits = 0
    for i in range(num_datasets):
        xy = rng.multivariate_normal([0.0, 0.0], cov, size=n)
        ci = stats.bootstrap_ci(
            xy[:, 0],
            xy[:, 1],
            method,
            num_resamples=num_resamples,
            confidence=confidence,
            ci_method=ci_method,
            rng=np.random.default_rng([seed, i]),
        )
        hits += ci.low <= true_value <= ci.high
    return hits / num_datasets


@pytest.mark.parametrize("ci_method", stats.CI_METHODS)
def test_bootstrap_covers_true_pearson_at_nominal_rate(ci_method):
    # 400 datasets: the binomial standard error of a 0.95 coverage is 0.011. Bootstrap intervals
    # for r at n = 40 under-cover slightly, so the band is asymmetric.
    coverage = _coverage(
        "pearson", 0.6, 0.6, n=40, num_datasets=400, confidence=0.95, ci_method=ci_method
    )
    assert 0.91 <= coverage <= 0.985, coverage
    # The level is honoured, not just "wide": at 80% nominal the coverage drops accordingly.
    coverage80 = _coverage(
        "pearson", 0.6, 0.6, n=40, num_datasets=400, confidence=0.80, ci_method=ci_method
    )
    assert 0.74 <= coverage80 <= 0.86, coverage80


def test_bootstrap_covers_true_kendall_tau_at_nominal_rate():
    # Population Kendall tau of a bivariate normal: (2 / pi) arcsin(rho) (Greiner's relation).
    rho = 0.5
    coverage = _coverage(
        "kendall",
        2.0 / math.pi * math.asin(rho),
        rho,
        n=30,
        num_datasets=200,
        confidence=0.90,
        ci_method="bca",
        num_resamples=300,
        seed=1,
    )
    assert 0.84 <= coverage <= 0.96, coverage


def test_partial_statistics_match_the_formula_and_the_bootstrap_resamples_covariates_with_pairs():
    rng = np.random.default_rng(8)
    x, z = rng.normal(size=(2, 9))
    y = x + z + rng.normal(size=9)
    # The partial-correlation formula on Pearson / Spearman coefficients.
    for fn, coef in (
        (stats.partial_pearson_statistic, lambda a, b: np.corrcoef(a, b)[0, 1]),
        (stats.partial_spearman_statistic, lambda a, b: scipy.stats.spearmanr(a, b).statistic),
    ):
        rxy, rxz, ryz = coef(x, y), coef(x, z), coef(y, z)
        formula = (rxy - rxz * ryz) / math.sqrt((1 - rxz**2) * (1 - ryz**2))
        assert fn(x, y, z) == pytest.approx(formula, abs=1e-12)
    assert math.isnan(stats.partial_pearson_statistic(x, 2 * z + 1, z))  # y a function of z
    b = 400
    idx = np.random.default_rng(3).integers(0, 9, (b, 9))
    theta = np.array([stats.partial_spearman_statistic(x[i], y[i], z[i]) for i in idx])
    ci = stats.bootstrap_ci(
        x,
        y,
        stats.partial_spearman_statistic,
        given=(z,),
        num_resamples=b,
        confidence=0.9,
        ci_method="percentile",
        rng=3,
    )
    np.testing.assert_allclose(ci.distribution, theta, atol=1e-11)
    valid = theta[np.isfinite(theta)]
    assert ci.num_valid == valid.size
    np.testing.assert_allclose([ci.low, ci.high], np.quantile(valid, [0.05, 0.95]), atol=1e-11)
    z_missing = z.copy()
    z_missing[0] = np.nan
    dropped = stats.bootstrap_ci(
        x, y, stats.partial_spearman_statistic, given=(z_missing,), num_resamples=50
    )
    assert "1 point(s) with a missing" in dropped.note
    with pytest.raises(ValueError, match="given= covariates need a function"):
        stats.bootstrap_ci(x, y, "spearman", given=(z,))


def _enumerated_p(statistic, n):
    """Two-sided p by enumerating all n! permutations here (scipy's convention: twice the
    smaller one-sided p, at most 1)."""
    null = np.array([statistic(np.array(p)) for p in itertools.permutations(range(n))])
    obs = statistic(np.arange(n))
    tol = 1e-12
    return min(1.0, 2 * min(np.mean(null >= obs - tol), np.mean(null <= obs + tol)))


@pytest.mark.parametrize("method", stats.METHODS)
def test_permutation_correlation_exact_equals_enumeration_and_monte_carlo_is_within_its_error(
    method,
):
    rng = np.random.default_rng(12)
    x = rng.normal(size=7)
    y = 0.6 * x + rng.normal(size=7)
    coef = {
        "pearson": lambda a, b: np.corrcoef(a, b)[0, 1],
        "spearman": lambda a, b: scipy.stats.spearmanr(a, b).statistic,
        "kendall": lambda a, b: scipy.stats.kendalltau(a, b).statistic,
    }[method]
    want = _enumerated_p(lambda perm: coef(x[perm], y), 7)
    exact = stats.permutation_correlation(x, y, method)
    assert exact.exact and exact.num_permutations == 5040 and "exact" in exact.pvalue_method
    assert exact.statistic == pytest.approx(coef(x, y), abs=1e-12)
    assert exact.pvalue == pytest.approx(want, abs=1e-12)
    assert exact.min_pvalue == pytest.approx(2 / 5040)
    b = 3000
    mc = stats.permutation_correlation(x, y, method, exact_max_n=0, num_resamples=b, rng=1)
    assert not mc.exact and mc.pvalue_method == f"monte carlo ({b} permutations, seed 1)"
    assert abs(mc.pvalue - want) < 4 * math.sqrt(want * (1 - want) / b) + 2 / b
    assert math.isnan(stats.permutation_correlation([1, 2], [2, 1]).pvalue)


def test_freedman_lane_exact_equals_an_enumeration_of_permuted_residuals():
    rng = np.random.default_rng(13)
    x, z = rng.normal(size=(2, 7))
    y = x + 2 * z + rng.normal(size=7)

    def partial(a, b, c):  # residuals by numpy least squares, then Pearson r
        design = np.column_stack([np.ones_like(c), c])
        ra = a - design @ np.linalg.lstsq(design, a, rcond=None)[0]
        rb = b - design @ np.linalg.lstsq(design, b, rcond=None)[0]
        return np.corrcoef(ra, rb)[0, 1]

    for method in ("pearson", "spearman"):
        a, b, c = (x, y, z) if method == "pearson" else map(scipy.stats.rankdata, (x, y, z))
        design = np.column_stack([np.ones(7), c])
        fitted = design @ np.linalg.lstsq(design, b, rcond=None)[0]
        resid = b - fitted
        want = _enumerated_p(lambda perm: partial(a, fitted + resid[perm], c), 7)
        res = stats.freedman_lane(x, y, z, method)
        assert res.exact and res.num_permutations == 5040
        assert res.statistic == pytest.approx(partial(a, b, c), abs=1e-12)
        assert res.pvalue == pytest.approx(want, abs=1e-12)
        b_mc = 4000
        mc = stats.freedman_lane(x, y, z, method, exact_max_n=0, num_resamples=b_mc, rng=2)
        assert abs(mc.pvalue - want) < 4 * math.sqrt(want * (1 - want) / b_mc) + 2 / b_mc
    assert "n=3 < 4" in stats.freedman_lane([1, 2, 3], [3, 1, 2], [1, 1, 2]).note
    assert "constant" in stats.freedman_lane(x, 2 * z, z).note
    with pytest.raises(ValueError, match="'kendall'.*pearson, spearman"):
        stats.freedman_lane(x, y, z, "kendall")


def test_holm_against_hand_computed_adjustments():
    # Sorted 0.005, 0.01, 0.03, 0.04 -> 4 x 0.005 = 0.02, 3 x 0.01 = 0.03, 2 x 0.03 = 0.06,
    # 1 x 0.04 = 0.04 raised to the running maximum 0.06.
    np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    # Capped at 1; a NaN stays NaN and does not count: m = 2 -> 2 x 0.3 = 0.6, max(0.6, 0.7).
    np.testing.assert_allclose(stats.holm([0.7, np.nan, 0.3]), [0.7, np.nan, 0.6])
    np.testing.assert_allclose(stats.holm([0.6, 0.5]), [1.0, 1.0])
    assert stats.holm([]).size == 0


def test_correlation_power_agrees_with_the_fisher_normal_approximation():
    # atanh(r) ~ N(atanh(rho) + rho / (2 (n - 1)), 1 / (n - 3)) (Fisher, with his bias term):
    # power = Phi((atanh(.9) + .9 / (2 (n - 1)) - atanh(.7)) sqrt(n - 3) - z_.95).
    for n in (10, 40):
        p = stats.correlation_power(n, num_sims=20_000, rng=0)
        mean = math.atanh(0.9) + 0.9 / (2 * (n - 1))
        approx = scipy.stats.norm.cdf(
            (mean - math.atanh(0.7)) * math.sqrt(n - 3) - scipy.stats.norm.ppf(0.95)
        )
        assert abs(p.power - approx) < 4 * p.stderr + 0.015
    assert stats.correlation_power(40, rng=0).power > stats.correlation_power(10, rng=0).power
    with pytest.raises(ValueError, match="true_r must be in"):
        stats.correlation_power(10, true_r=1.0)


def test_fisher_bound_by_hand():
    # r = 0.09, n = 8: tanh(atanh(0.09) + 1.6449 / sqrt(5)) = tanh(0.0902 + 0.7356) = 0.678.
    assert stats.fisher_bound(0.09, 8) == pytest.approx(
        math.tanh(math.atanh(0.09) + scipy.stats.norm.ppf(0.95) / math.sqrt(5)), abs=1e-12
    )
    assert stats.fisher_bound(0.09, 8) == pytest.approx(0.678, abs=1e-3)
    assert stats.fisher_bound(0.5, 20, 0.9, "lower") == pytest.approx(
        math.tanh(math.atanh(0.5) - scipy.stats.norm.ppf(0.9) / math.sqrt(17)), abs=1e-12
    )
    assert math.isnan(stats.fisher_bound(0.5, 3))
    with pytest.raises(ValueError, match="'both'.*upper, lower"):
        stats.fisher_bound(0.5, 10, side="both")
