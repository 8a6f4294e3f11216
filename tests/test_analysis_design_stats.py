"""Each design statistic against an independent computation: scipy, numpy, a hand-checked
case or the formula written out here; and the verdict rules of the predictions."""

import itertools
import math

import numpy as np
import pytest
import scipy.stats

from flatrob_jax.analysis import design as dz
from flatrob_jax.analysis import design_stats as ss
from flatrob_jax.analysis import predictions as pred


def test_noise_floor_is_the_pooled_seed_sd():
    d = dz.group_runs(
        [
            {"a": 1, "seed": 0},
            {"a": 1, "seed": 1},
            {"a": 2, "seed": 0},
            {"a": 2, "seed": 1},
            {"a": 2, "seed": 2},
            {"a": 3, "seed": 0},
        ]
    )
    v = np.array([1.0, 3.0, 2.0, 4.0, 6.0, 100.0])
    fl = ss.noise_floor(v, d)
    # Hand: variances 2 (dof 1) and 4 (dof 2): sqrt((2 + 8) / 3).
    assert (
        fl.sd == pytest.approx(math.sqrt(10 / 3), rel=1e-12)
        and fl.dof == 3
        and fl.num_conditions == 2
    )
    assert fl.per_condition[0] == (2, pytest.approx(np.std([1, 3], ddof=1)))
    one = ss.noise_floor(np.array([1.0, 3.0, np.nan, np.nan, 5.0, 0.0]), d)
    assert one.sd == pytest.approx(np.std([1.0, 3.0], ddof=1)) and one.num_conditions == 1
    plain = dz.group_runs([{"a": i} for i in range(3)])
    none = ss.noise_floor([1.0, 2.0, 3.0], plain)
    assert math.isnan(none.sd) and "no replicated condition" in none.note
    mean, sd, n = ss.condition_means(v, d)
    np.testing.assert_allclose(mean, [2.0, 4.0, 100.0])
    np.testing.assert_allclose(sd[:2], [math.sqrt(2), 2.0])
    assert math.isnan(sd[2])
    np.testing.assert_array_equal(n, [2, 3, 1])


def test_kendall_tau_a_matches_scipy_without_ties_and_the_hand_count_with_ties():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=9), rng.normal(size=9)
    assert ss.kendall_tau_a(x, y) == pytest.approx(
        scipy.stats.kendalltau(x, y).statistic, abs=1e-12
    )
    # Ties: pairs (0,1) tie in x -> 0, (0,2) and (1,2) concordant: S = 2 of 3 pairs
    # (tau-b would be 0.816).
    assert ss.kendall_tau_a([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / 3)
    assert math.isnan(ss.kendall_tau_a([1.0], [2.0]))


def test_granulated_kendall_on_a_grid_against_scipy_per_group():
    rng = np.random.default_rng(1)
    grid = [{"p": p, "q": q} for p in (1, 2, 3) for q in (0.1, 0.2)]
    d = dz.group_runs(grid)
    fm, rm = rng.normal(size=6), rng.normal(size=6)
    g = ss.granulated_kendall(fm, rm, d)
    # Independent: axis p varies within each q (3 points), axis q within each p (2 points).
    psi_p = np.mean(
        [
            scipy.stats.kendalltau(
                [fm[i] for i in range(6) if grid[i]["q"] == q],
                [rm[i] for i in range(6) if grid[i]["q"] == q],
            ).statistic
            for q in (0.1, 0.2)
        ]
    )
    psi_q = np.mean(
        [np.sign(fm[2 * k] - fm[2 * k + 1]) * np.sign(rm[2 * k] - rm[2 * k + 1]) for k in range(3)]
    )
    assert g.per_factor["p"][0] == pytest.approx(psi_p) and g.per_factor["p"][1:] == (2, [3, 3])
    assert g.per_factor["q"][0] == pytest.approx(psi_q) and g.per_factor["q"][1] == 3
    assert g.value == pytest.approx((psi_p + psi_q) / 2)
    lone = ss.granulated_kendall(
        [1.0, 2.0], [1.0, 2.0], dz.group_runs([{"p": 1, "q": 1}, {"p": 2, "q": 2}])
    )
    assert math.isnan(lone.value) and "not applicable" in lone.note


def test_sign_error_counts_pairs_that_differ_in_one_factor_and_drops_noise():
    runs = [
        {"p": 1, "seed": 0},
        {"p": 1, "seed": 1},
        {"p": 2, "seed": 0},
        {"p": 3, "seed": 0},
        {"p": 3, "q": 1, "seed": 0},
    ]
    d = dz.group_runs(runs)
    c = np.array([1.0, 1.2, 2.0, 0.5, 9.0])
    g = np.array([0.10, 0.11, 0.20, 0.30, 0.305])
    e = ss.sign_error(c, g, d, threshold=0.02)
    # Pairs differing in p only: (0,2) (1,2) (0,3) (1,3) (2,3); in q only: (3,4). Seeds (0,1) and
    # (p=1 or 2, q) pairs are not compared. (3,4): |dg| = 0.005 <= 0.02: dropped.
    # Losses: (0,2) c up g up -> 0; (1,2) 0; (0,3) c down g up -> 1; (1,3) 1;
    # (2,3) c down g up -> 1.
    assert e.num_pairs == 5 and e.num_dropped == 1 and e.value == pytest.approx(3 / 5)
    assert e.per_factor == {
        "p": (pytest.approx(0.6), 5, 0),
        "q": (pytest.approx(math.nan, nan_ok=True), 0, 1),
    }
    assert e.worst_factor == "p"
    # A tie in the measure costs 1/2 (Dziugaite et al.'s (1 - sign sign) / 2).
    tie = ss.sign_error(
        [1.0, 1.0], [0.1, 0.2], dz.group_runs([{"p": 1}, {"p": 2}]), threshold=math.nan
    )
    assert tie.value == 0.5 and tie.threshold == 0.0
    empty = ss.sign_error(
        [1.0, 2.0], [0.1, 0.2], dz.group_runs([{"p": 1, "q": 1}, {"p": 2, "q": 2}]), 0.0
    )
    assert math.isnan(empty.value) and "no two runs differ in exactly one factor" in empty.note


def test_stratified_kendall_exact_and_monte_carlo():
    rng = np.random.default_rng(2)
    x, y = np.arange(7.0), rng.normal(size=7)
    one = ss.stratified_kendall([(x, y)])
    ref = scipy.stats.kendalltau(x, y, method="exact")
    assert one.statistic == pytest.approx(ref.statistic) and one.pvalue == pytest.approx(
        ref.pvalue, rel=1e-12
    )
    assert one.pvalue_method == "exact"
    # Two groups of two, both concordant: S in {-2, 0, 2} with prob 1/4, 1/2, 1/4;
    # P(|S| >= 2) = 1/2.
    two = ss.stratified_kendall([([1, 2], [5, 6]), ([1, 2], [0, 3]), ([1.0], [2.0])])
    assert (
        two.s == 2
        and two.num_groups == 2
        and two.pvalue == pytest.approx(0.5)
        and two.statistic == 1.0
    )
    # S_max = 2 pairs; the smallest attainable p is P(|S| = 2) = 1/2; one group of 7: 2 / 7!.
    assert two.s_max == 2 and two.min_pvalue == pytest.approx(0.5)
    assert one.s_max == 21 and one.min_pvalue == pytest.approx(2 / math.factorial(7))
    # Replicates at one strength: the pair (0, 0) adds 0 whatever y does, so |S| <= 2 of the
    # 3 pairs; of the 6 arrangements of y = (1, 2, 3), S = +2 for (1,2,3) and (2,1,3), -2 for
    # (3,2,1) and (2,3,1), 0 otherwise: P(|S| >= 2) = 4/6.
    tied = ss.stratified_kendall([([0.0, 0.0, 1.0], [1.0, 2.0, 3.0])])
    assert tied.s == 2 and tied.s_max == 2 and tied.num_pairs == 3
    assert tied.pvalue == pytest.approx(4 / 6) and tied.min_pvalue == pytest.approx(4 / 6)
    # Too many arrangements (10! > 200000): Monte Carlo, close to scipy's exact p.
    x, y = np.arange(10.0), np.arange(10.0) + rng.normal(scale=4.0, size=10)
    mc = ss.stratified_kendall([(x, y)], rng=0)
    assert mc.pvalue_method.startswith("monte carlo")
    assert mc.pvalue == pytest.approx(
        scipy.stats.kendalltau(x, y, method="exact").pvalue, abs=0.015
    )
    assert math.isnan(ss.stratified_kendall([([1.0], [1.0])]).statistic)


def test_leave_one_out_against_direct_recomputation():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=6), rng.normal(size=6)

    def rho(a, b):
        return scipy.stats.spearmanr(a, b).statistic

    infl = ss.leave_one_out(rho, (x, y))
    full = rho(x, y)
    direct = [rho(np.delete(x, i), np.delete(y, i)) - full for i in range(6)]
    np.testing.assert_allclose(infl.deltas, direct, atol=1e-12)
    assert infl.argmax == int(np.argmax(np.abs(direct))) and infl.max_abs == pytest.approx(
        max(map(abs, direct))
    )


def test_intervention_fit_against_the_normal_equations():
    rng = np.random.default_rng(5)
    n = 10
    f, c = rng.normal(size=n), rng.normal(size=n)
    y = 1.0 + 2.0 * f + 3.0 * c + rng.normal(scale=0.1, size=n)
    fit_mask = np.arange(n) < 7
    fit = ss.intervention_fit(f, y, c, fit_mask, ~fit_mask)
    X = np.column_stack([np.ones(n), f, c])
    Xf, yf = X[fit_mask], y[fit_mask]
    beta = np.linalg.solve(Xf.T @ Xf, Xf.T @ yf)
    resid = yf - Xf @ beta
    s = math.sqrt(resid @ resid / (7 - 3))
    np.testing.assert_allclose(fit.coef, beta, rtol=1e-10)
    assert fit.resid_sd == pytest.approx(s) and fit.dof == 4 and fit.n == 7
    e = y[~fit_mask] - X[~fit_mask] @ beta
    np.testing.assert_allclose(fit.z, e / s, rtol=1e-9)
    inv = np.linalg.inv(Xf.T @ Xf)
    se = np.array([s * math.sqrt(1 + x0 @ inv @ x0) for x0 in X[~fit_mask]])
    np.testing.assert_allclose(fit.t, e / se, rtol=1e-9)
    np.testing.assert_allclose(fit.pvalue, 2 * scipy.stats.t.sf(np.abs(e / se), 4), rtol=1e-9)
    # Without a clean error: y ~ 1 + f, the same check with two columns (np.polyfit).
    lone = ss.intervention_fit(f, y, None, fit_mask, ~fit_mask)
    slope, intercept = np.polyfit(f[fit_mask], y[fit_mask], 1)
    np.testing.assert_allclose(lone.coef[:2], [intercept, slope], rtol=1e-10)
    assert math.isnan(lone.coef[2])
    few = ss.intervention_fit(f, y, c, np.arange(n) < 3, ~fit_mask)
    assert "need at least 4" in few.note and np.isnan(few.z).all()
    collinear = ss.intervention_fit(f, y, 2 * f, fit_mask, ~fit_mask)
    assert "do not vary independently" in collinear.note


def test_verdict_rules_and_the_contrasts_against_none_against_scipy():
    assert pred.verdict_from_interval(0.1, 0.5, +1) == pred.SUPPORTED
    assert pred.verdict_from_interval(-0.5, -0.1, +1) == pred.REFUTED
    assert pred.verdict_from_interval(-0.1, 0.5, +1) == pred.INCONCLUSIVE
    assert pred.verdict_from_interval(math.nan, 0.5, +1) == pred.INCONCLUSIVE
    assert pred.verdict_from_test(-0.8, 0.01, 0.05, -1) == pred.SUPPORTED
    assert pred.verdict_from_test(0.8, 0.01, 0.05, -1) == pred.REFUTED
    assert pred.verdict_from_test(0.8, 0.2, 0.05, -1) == pred.INCONCLUSIVE
    # P1b contrasts against a replicated none (condition 0, 2 runs), floor 0.2 on 6 dof.
    means = np.array([10.0, 5.0, 10.3, 9.9])
    counts = np.array([2, 2, 1, 3])
    cs = pred.contrasts_vs_none(means, counts, 0, [1, 2, 3], 0.2, 6)
    for c, d, n_a in zip(cs, (-5.0, 0.3, -0.1), (2, 1, 3)):
        se = 0.2 * math.sqrt(1 / n_a + 1 / 2)
        assert c.difference == pytest.approx(d) and c.stderr == pytest.approx(se)
        assert c.pvalue == pytest.approx(2 * scipy.stats.t.sf(abs(d / se), 6), rel=1e-12)
    p = [c.pvalue for c in cs]
    assert p[0] < 0.05 and p[1] > 0.05  # flatter, and within the noise
    assert pred.contrasts_verdict(cs, p, 0.05) == pred.SUPPORTED
    assert pred.contrasts_verdict(cs, [0.01, 0.01, 1.0], 0.05) == pred.INCONCLUSIVE  # mixed
    assert pred.contrasts_verdict(cs, [1.0, 0.01, 1.0], 0.05) == pred.REFUTED
    # One none run: not testable, no p-value.
    single = pred.contrasts_vs_none(means, np.array([1, 2, 1, 3]), 0, [1, 2, 3], 0.2, 6)
    assert all(math.isnan(c.pvalue) and "not testable: none has 1 run" in c.note for c in single)
    assert pred.contrasts_verdict(single, [c.pvalue for c in single], 0.05) == pred.INCONCLUSIVE


def test_s_distribution_is_the_permutation_distribution():
    x, y = np.array([1.0, 2.0, 2.0, 3.0]), np.array([0.3, 0.1, 0.2, 0.2])
    dist = ss._s_distribution(x, y)
    brute = {}
    for p in itertools.permutations(range(4)):
        s = sum(
            np.sign(x[i] - x[j]) * np.sign(y[p[i]] - y[p[j]])
            for i in range(4)
            for j in range(i + 1, 4)
        )
        brute[int(s)] = brute.get(int(s), 0) + 1
    assert dict(dist) == brute


def test_reliability_and_correlation_ceiling_by_hand():
    d = dz.group_runs([{"a": a, "seed": s} for a in (1, 2, 3) for s in (0, 1)])
    v = np.array([1.0, 3.0, 4.0, 6.0, 10.0, 12.0])
    rel = ss.reliability(v, d)
    # Seed variance: each pair differs by 2 -> s^2 = 2. Means 2, 5, 11: variance 21.
    # Between = 21 - 2 / 2 = 20; SNR = 20 / 2 = 10; R = 20 / 21.
    assert rel.seed_var == pytest.approx(2.0) and rel.between_var == pytest.approx(20.0)
    assert rel.snr == pytest.approx(10.0) and rel.reliability == pytest.approx(20 / 21)
    noisy = ss.reliability(np.array([0.0, 4.0, 1.0, 3.0, 2.0, 2.0]), d)
    # Means all 2: observed variance 0 -> between 0 (floored), R undefined (0/0).
    assert noisy.between_var == 0.0 and noisy.snr == 0.0 and math.isnan(noisy.reliability)
    half = ss.Reliability(1.0, 1.0, 1.0, 0.5, 3)
    assert ss.correlation_ceiling(rel, half) == pytest.approx(math.sqrt(20 / 21 * 0.5))
    single = ss.reliability([1.0, 2.0, 3.0], dz.group_runs([{"a": i} for i in range(3)]))
    assert math.isnan(single.reliability) and "no replicated" in single.note


def test_families_and_strength_as_the_axes_of_granulated_kendall_and_sign_error():
    runs = [{"augment.name": "standard"}, {"augment.name": "none"}]
    runs += [{"augment.name": "noise", "augment.noise.sigma": s} for s in (0.1, 0.2)]
    runs += [{"augment.name": "ra", "augment.ra.m": m} for m in (5, 9, 15)]
    d = dz.declare_design(
        runs,
        reference={"augment.name": "standard"},
        families={"noise": ("augment.noise.sigma", 0.0), "ra": "augment.ra.m"},
    )
    axes = ss.family_axes(d)
    # standard = noise at rank 0; none is in no family (left out); ra ranks 0, 1, 2.
    assert axes.values == (
        ("noise", 0),
        None,
        ("noise", 1),
        ("noise", 2),
        ("ra", 0),
        ("ra", 1),
        ("ra", 2),
    )
    fm = np.array([5.0, 0.0, 4.0, 3.0, 2.0, 1.0, 7.0])
    rm = np.array([0.5, 9.0, 0.4, 0.45, 0.3, 0.2, 0.1])
    g = ss.granulated_kendall(fm, rm, d, axes)
    # strength: tau within noise (3 points) and within ra (3 points), by scipy; family: tau
    # within each rank (2 points each: noise vs ra).
    tau = scipy.stats.kendalltau
    psi_s = np.mean([tau(fm[[0, 2, 3]], rm[[0, 2, 3]])[0], tau(fm[[4, 5, 6]], rm[[4, 5, 6]])[0]])
    psi_f = np.mean(
        [np.sign(fm[a] - fm[b]) * np.sign(rm[a] - rm[b]) for a, b in ((0, 4), (2, 5), (3, 6))]
    )
    assert g.per_factor["strength"][0] == pytest.approx(psi_s)
    assert g.per_factor["family"][0] == pytest.approx(psi_f)
    assert g.value == pytest.approx((psi_s + psi_f) / 2)
    # Sign-error over runs (one per condition): pairs differing in strength only, or in
    # family only (same rank); none is never paired.
    e = ss.sign_error(fm, rm, d, 0.0, axes)
    assert e.per_factor["strength"][1] == 6 and e.per_factor["family"][1] == 3
    # The default axes are the factors: one factor (augment), every pair of conditions.
    assert ss.granulated_kendall(fm, rm, d).per_factor.keys() == {"augment"}


def test_stratified_kendall_monte_carlo_is_within_its_error_of_the_exact_p(monkeypatch):
    rng = np.random.default_rng(6)
    groups = [(np.arange(5.0), rng.normal(size=5)), (np.arange(4.0), rng.normal(size=4))]
    groups[0] = (groups[0][0], groups[0][0] + rng.normal(scale=2.0, size=5))
    exact = ss.stratified_kendall(groups)
    assert exact.pvalue_method == "exact"
    monkeypatch.setattr(ss, "EXACT_MAX_PERMUTATIONS", 0)
    mc = ss.stratified_kendall(groups, rng=3)
    b = ss.MONTE_CARLO_PERMUTATIONS
    assert mc.pvalue_method.startswith("monte carlo") and mc.s == exact.s
    p = exact.pvalue
    assert abs(mc.pvalue - p) < 4 * math.sqrt(p * (1 - p) / b) + 2 / b
