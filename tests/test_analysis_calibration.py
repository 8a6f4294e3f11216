"""Mean confidence, expected calibration error and NLL (analysis/calibration.py) against a
hand-checked case and an independent computation with scipy.stats.binned_statistic."""

import numpy as np
import pytest
import scipy.special
import scipy.stats

from flatrob_jax.analysis.calibration import calibration


def test_hand_checked_case():
    # Confidences 0.9, 0.9, 0.6, 0.6 (two classes); bins of width 0.5 (M = 2): all four in
    # (0.5, 1]; accuracy 3/4 (the third is wrong), mean confidence 0.75 -> ECE 0.
    # With M = 10: bin (0.8, 0.9] holds two correct at 0.9 (gap 0.1 each), bin (0.5, 0.6]
    # one right and one wrong at 0.6 (gaps 0.4 and -0.6) -> ECE = (0.2 + 0.2) / 4 = 0.1.
    p = np.array([0.9, 0.9, 0.6, 0.6])
    logits = np.stack([np.log(p), np.log(1 - p)], axis=1)
    labels = np.array([0, 0, 1, 0])
    two = calibration(logits, labels, num_bins=2)
    ten = calibration(logits, labels, num_bins=10)
    assert two["confidence"] == pytest.approx(0.75) and two["ece"] == pytest.approx(0.0)
    assert ten["ece"] == pytest.approx(0.1)
    assert ten["accuracy"] == pytest.approx(0.75)
    assert ten["nll"] == pytest.approx(-np.mean(np.log([0.9, 0.9, 0.4, 0.6])))
    assert ten["bin_counts"] == [0, 0, 0, 0, 0, 2, 0, 0, 2, 0]


@pytest.mark.parametrize("num_bins", [1, 15, 40])
def test_equals_a_binned_statistic_computation(num_bins):
    rng = np.random.default_rng(num_bins)
    logits = rng.normal(size=(500, 10)) * 3
    labels = np.where(rng.random(500) < 0.6, logits.argmax(1), rng.integers(0, 10, 500))
    probs = scipy.special.softmax(logits, axis=1)
    conf, correct = probs.max(1), (probs.argmax(1) == labels).astype(float)
    # Right-closed bins (m-1)/M < c <= m/M: bin the negated confidences with left-closed edges.
    edges = -np.linspace(1, 0, num_bins + 1)
    mean_acc = scipy.stats.binned_statistic(-conf, correct, "mean", bins=edges).statistic
    mean_conf = scipy.stats.binned_statistic(-conf, conf, "mean", bins=edges).statistic
    count = scipy.stats.binned_statistic(-conf, conf, "count", bins=edges).statistic
    expected = np.nansum(count / 500 * np.abs(mean_acc - mean_conf))
    out = calibration(logits, labels, num_bins=num_bins)
    assert out["ece"] == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert out["confidence"] == pytest.approx(conf.mean(), rel=1e-12)
    assert out["nll"] == pytest.approx(-np.log(probs[np.arange(500), labels]).mean(), rel=1e-10)
    if num_bins == 1:
        assert out["ece"] == pytest.approx(abs(correct.mean() - conf.mean()), rel=1e-12)


def test_bad_input_names_the_value():
    with pytest.raises(ValueError, match=r"logits \(3,\)"):
        calibration(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="num_bins=0"):
        calibration(np.zeros((3, 2)), np.zeros(3, int), num_bins=0)
