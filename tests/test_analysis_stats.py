"""Correlation statistics against scipy.stats, hand-computed values, and bootstrap coverage."""
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
        "negative_n7": (np.arange(7.0), -np.arange(7.0) ** 1.5 + rng.normal(size=7)),
        "n3": (np.array([0.3, 0.1, 0.2]), np.array([1.0, 3.0, 2.5])),
        "ties_n10": (np.array([1, 2, 2, 3, 3, 3, 4, 5, 5, 6.0]), np.array([2, 1, 2, 2, 4, 3, 3, 5, 5, 4.0])),
        "ties_in_one_n9": (np.array([1, 1, 1, 2, 2, 3, 4, 5, 6.0]), rng.normal(size=9)),
        "monotone_n8": (np.arange(8.0), np.exp(np.arange(8.0))),  # Kendall exact, c = 0
        "one_swap_n40": (np.arange(40.0), np.r_[np.arange(38.0), 39.0, 38.0]),  # exact beyond 33
        "no_ties_n45": (rng.normal(size=45), rng.normal(size=45)),  # Kendall normal approx.
        "ties_n60": (rng.integers(0, 6, 60).astype(float), rng.integers(0, 4, 60).astype(float)),
    }
    return cases


_SCIPY = {
    "pearson": scipy.stats.pearsonr,
    "spearman": scipy.stats.spearmanr,
    "kendall": scipy.stats.kendalltau,
}


@pytest.mark.parametrize("case", sorted(_datasets()))
@pytest.mark.parametrize("method", stats.METHODS)
def test_coefficients_and_pvalues_match_scipy(case, method):
    x, y = _datasets()[case]
    ours = stats.correlation(x, y, method)
    ref = _SCIPY[method](x, y)
    assert ours.n == x.size
    np.testing.assert_allclose(ours.statistic, ref.statistic, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ours.pvalue, ref.pvalue, rtol=1e-9, atol=1e-15)


def test_hand_computed_values():
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


def test_inversion_distribution_is_mahonian():
    # Permutations of 4 items by number of inversions: 1, 3, 5, 6, 5, 3, 1 (of 24).
    np.testing.assert_allclose(stats._inversion_distribution(4) * 24, [1, 3, 5, 6, 5, 3, 1], atol=1e-12)
    assert stats._inversion_distribution(30).sum() == pytest.approx(1.0)
    # The truncated tail used for p-values equals the head of the full distribution.
    full = stats._inversion_distribution(12)
    for upto in (0, 1, 7, 40, 66, 100):
        np.testing.assert_allclose(stats._inversion_distribution(12, upto=upto), full[: upto + 1], rtol=1e-12)


def test_average_ranks_match_scipy():
    a = np.array([[3.0, 1.0, 3.0, 2.0, 3.0, 1.0], [0.5, 0.5, 0.5, 0.5, 0.5, 0.5]])
    np.testing.assert_array_equal(stats.rankdata_average(a), scipy.stats.rankdata(a, axis=-1))


@pytest.mark.parametrize("method", stats.METHODS)
def test_degenerate_inputs_give_nan_with_a_note_and_no_warning(method):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        small = stats.correlation([1.0, 2.0], [3.0, 1.0], method)
        assert math.isnan(small.statistic) and math.isnan(small.pvalue)
        assert small.n == 2 and "n=2 < 3" in small.note
        const = stats.correlation([1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0], method)
        assert math.isnan(const.statistic) and "y is constant" in const.note
        empty = stats.correlate([], [], method, num_resamples=50)
        assert math.isnan(empty.statistic) and math.isnan(empty.ci_low) and empty.n == 0
        ci = stats.bootstrap_ci([2.0, 2.0, 2.0], [1.0, 2.0, 3.0], method, num_resamples=50)
        assert math.isnan(ci.low) and math.isnan(ci.high) and "x is constant" in ci.note


def test_nan_pairs_are_dropped_and_counted():
    x = np.array([1.0, 2.0, np.nan, 4.0, 5.0, 6.0])
    y = np.array([1.0, 3.0, 2.0, np.nan, 4.0, 7.0])
    ours = stats.correlate(x, y, "spearman", num_resamples=100)
    keep = np.isfinite(x) & np.isfinite(y)
    assert ours.n == 4
    assert ours.statistic == pytest.approx(scipy.stats.spearmanr(x[keep], y[keep]).statistic)
    assert "2 run(s) with a missing" in ours.note


def test_constant_resamples_are_dropped_not_fatal():
    # n = 3: about 1/9 of resamples repeat a single run and are undefined.
    ci = stats.bootstrap_ci([0.0, 1.0, 2.0], [0.0, 2.0, 1.0], "pearson", num_resamples=900,
                            ci_method="percentile", rng=1)
    assert 0 < ci.num_valid < 900
    assert "undefined (constant resample) and dropped" in ci.note
    assert -1.0 <= ci.low <= ci.high <= 1.0


def test_bad_arguments_name_the_allowed_values():
    with pytest.raises(ValueError, match="unknown correlation method 'pearsonr'.*pearson, spearman, kendall"):
        stats.correlation([1, 2, 3], [1, 2, 3], "pearsonr")
    with pytest.raises(ValueError, match="unknown ci_method 'bc'.*bca, percentile"):
        stats.bootstrap_ci([1, 2, 3], [1, 2, 3], ci_method="bc")
    with pytest.raises(ValueError, match="same length"):
        stats.correlation([1, 2, 3], [1, 2], "kendall")


def test_bootstrap_is_reproducible_from_its_seed():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(2, 15))
    a = stats.bootstrap_ci(x, y, "kendall", num_resamples=300, rng=7)
    b = stats.bootstrap_ci(x, y, "kendall", num_resamples=300, rng=np.random.default_rng(7))
    c = stats.bootstrap_ci(x, y, "kendall", num_resamples=300, rng=8)
    assert (a.low, a.high) == (b.low, b.high)
    np.testing.assert_array_equal(a.distribution, b.distribution)
    assert not np.array_equal(a.distribution, c.distribution)


@pytest.mark.parametrize("ci_method,scipy_method", [("percentile", "percentile"), ("bca", "BCa")])
@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_bootstrap_interval_agrees_with_scipy_bootstrap(method, ci_method, scipy_method):
    rng = np.random.default_rng(11)
    x = rng.normal(size=25)
    y = 0.5 * x + rng.normal(size=25)
    ours = stats.bootstrap_ci(x, y, method, num_resamples=4000, ci_method=ci_method, rng=0)
    ref = scipy.stats.bootstrap(
        (x, y), lambda a, b, axis: stats._BATCHED[method](a, b), paired=True, vectorized=True,
        n_resamples=4000, method=scipy_method, random_state=1,
    ).confidence_interval
    # Two independent Monte Carlo estimates of the same interval.
    assert ours.low == pytest.approx(ref.low, abs=0.04)
    assert ours.high == pytest.approx(ref.high, abs=0.04)


def _coverage(method, true_value, rho, n, num_datasets, confidence, ci_method, num_resamples=500, seed=0):
    rng = np.random.default_rng(seed)
    cov = np.array([[1.0, rho], [rho, 1.0]])
    hits = 0
    for i in range(num_datasets):
        xy = rng.multivariate_normal([0.0, 0.0], cov, size=n)
        ci = stats.bootstrap_ci(xy[:, 0], xy[:, 1], method, num_resamples=num_resamples,
                                confidence=confidence, ci_method=ci_method, rng=np.random.default_rng([seed, i]))
        hits += ci.low <= true_value <= ci.high
    return hits / num_datasets


@pytest.mark.parametrize("ci_method", stats.CI_METHODS)
def test_bootstrap_covers_true_pearson_at_nominal_rate(ci_method):
    # 400 datasets: the binomial standard error of a 0.95 coverage is 0.011. Bootstrap intervals
    # for r at n = 40 under-cover slightly, so the band is asymmetric.
    coverage = _coverage("pearson", 0.6, 0.6, n=40, num_datasets=400, confidence=0.95, ci_method=ci_method)
    assert 0.91 <= coverage <= 0.985, coverage
    # The level is honoured, not just "wide": at 80% nominal the coverage drops accordingly.
    coverage80 = _coverage("pearson", 0.6, 0.6, n=40, num_datasets=400, confidence=0.80, ci_method=ci_method)
    assert 0.74 <= coverage80 <= 0.86, coverage80


def test_bootstrap_covers_true_kendall_tau_at_nominal_rate():
    # Population Kendall tau of a bivariate normal: (2 / pi) arcsin(rho) (Greiner's relation).
    rho = 0.5
    coverage = _coverage("kendall", 2.0 / math.pi * math.asin(rho), rho, n=30, num_datasets=200,
                         confidence=0.90, ci_method="bca", num_resamples=400, seed=1)
    assert 0.84 <= coverage <= 0.96, coverage
