"""Confidence and calibration of a classifier's predictions (covariates of robustness).

A model's robust error moves with how confident it is, not only with how flat its minimum is
(a sharper softmax makes small input changes flip fewer and larger decisions), so the study
measures the mean confidence and the expected calibration error beside the clean error and
lets the report control for them.

* mean confidence: the average over examples of ``max_k softmax(logits)_k``;
* expected calibration error (Naeini et al. 2015; Guo et al. 2017, "On calibration of modern
  neural networks", eq. 3): the examples are put into ``num_bins`` equal-width bins of
  confidence, ``B_m = {i : (m - 1) / M < conf_i <= m / M}`` (the first bin also holds
  confidence 0), and ``ECE = sum_m |B_m| / n * |acc(B_m) - conf(B_m)|``; 15 bins as in Guo et
  al.;
* negative log-likelihood: the mean cross-entropy of the true label.
"""

from __future__ import annotations

import numpy as np
import scipy.special


def calibration(logits, labels, *, num_bins: int = 15) -> dict:
    """``{'confidence', 'ece', 'nll', 'accuracy', 'num_bins', 'num_examples'}`` of ``logits``
    ``[N, K]`` for integer ``labels`` ``[N]`` (float64 softmax)."""
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels)
    if logits.ndim != 2 or labels.shape != logits.shape[:1] or logits.shape[0] == 0:
        raise ValueError(
            f"need logits [N, K] and labels [N] with N >= 1; got logits {logits.shape}, "
            f"labels {labels.shape}"
        )
    if not isinstance(num_bins, (int, np.integer)) or num_bins < 1:
        raise ValueError(f"num_bins={num_bins!r}: must be an integer >= 1")
    log_probs = scipy.special.log_softmax(logits, axis=-1)
    confidence = np.exp(log_probs.max(axis=-1))
    correct = (np.argmax(logits, axis=-1) == labels).astype(np.float64)
    # Bin m (1-based) holds (m - 1) / M < conf <= m / M; ceil(conf * M) is m, 0 joins bin 1.
    bins = np.clip(np.ceil(confidence * num_bins).astype(np.int64), 1, num_bins) - 1
    counts = np.bincount(bins, minlength=num_bins)
    gap = np.bincount(bins, weights=correct - confidence, minlength=num_bins)
    n = logits.shape[0]
    return {
        "confidence": float(confidence.mean()),
        "ece": float(np.abs(gap).sum() / n),
        "nll": float(-log_probs[np.arange(n), labels].mean()),
        "accuracy": float(correct.mean()),
        "num_bins": int(num_bins),
        "num_examples": int(n),
        "bin_counts": counts.tolist(),
    }
