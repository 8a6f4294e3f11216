"""Corruption error metrics (Hendrycks & Dietterich, ICLR 2019).

With E[c][s] the top-1 error on corruption c at severity s (s = 1..5) and E_clean the
clean error:

* mean corruption error (CIFAR convention): the plain average of E over the benchmark
  corruptions and severities;
* corruption error normalised by AlexNet: ``CE_c = sum_s E[c][s] / sum_s E_AlexNet[c][s]``
  and ``mCE`` = the mean of CE_c over the 15 benchmark corruptions (ImageNet convention);
* relative CE: ``sum_s (E[c][s] - E_clean) / sum_s (E_AlexNet[c][s] - E_AlexNet_clean)``
  and relative mCE its mean.

AlexNet's errors on ImageNet-C are the per-corruption averages over the 5 severities
measured with torchvision's AlexNet by hendrycks/robustness ImageNet-C/test.py, as
tabulated in google-research/augmix imagenet.py (``ALEXNET_ERR``); its clean top-1 error
0.43478 is torchvision's published 56.522 % top-1 accuracy for those weights. Values here are
fractions (multiply by 100 for the papers' percentages).

Standard errors are binomial (``sqrt(e (1 - e) / n)`` per cell) and propagated through the
averages as if the cells were independent; the cells share test images, so read them as
a guide to the Monte-Carlo/sampling noise, not as exact intervals.
"""

from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Sequence

from flatrob_jax.corruptions.severity import BENCHMARK

ALEXNET_ERRORS = dict(
    zip(
        BENCHMARK,
        (
            0.886428,
            0.894468,
            0.922640,
            0.819880,
            0.826268,
            0.785948,
            0.798360,
            0.866816,
            0.826572,
            0.819324,
            0.564592,
            0.853204,
            0.646056,
            0.717840,
            0.606500,
        ),
    )
)
ALEXNET_CLEAN_ERROR = 1.0 - 0.56522


def binomial_stderr(error: float, n: int) -> float:
    return math.sqrt(max(error * (1.0 - error), 0.0) / n) if n > 0 else float("nan")


def _mean_and_stderr(values: Sequence[float], stderrs: Sequence[float]):
    k = len(values)
    return sum(values) / k, math.sqrt(sum(s * s for s in stderrs)) / k


def summarize(
    errors: Mapping[str, Sequence[float]],
    n: int,
    clean_error: Optional[float] = None,
    normalize_by_alexnet: bool = False,
) -> Dict:
    """Metrics from ``errors[name] = [E_1, ..., E_5]`` (fractions) measured on n images each."""
    out = {
        "errors": {k: list(map(float, v)) for k, v in errors.items()},
        "errors_stderr": {k: [binomial_stderr(e, n) for e in v] for k, v in errors.items()},
    }
    per = {k: sum(v) / len(v) for k, v in errors.items()}
    out["per_corruption_error"] = per
    bench = [k for k in BENCHMARK if k in errors]
    names = bench if bench else list(errors)
    cells = [e for k in names for e in errors[k]]
    cells_se = [s for k in names for s in out["errors_stderr"][k]]
    if cells:
        out["mean_corruption_error"], out["mean_corruption_error_stderr"] = _mean_and_stderr(
            cells, cells_se
        )
        out["mean_corruption_error_over"] = names
    if clean_error is not None:
        out["clean_error"] = float(clean_error)
        out["clean_error_stderr"] = binomial_stderr(clean_error, n)
    complete = all(k in errors and len(errors[k]) == 5 for k in BENCHMARK)
    if normalize_by_alexnet:
        if not complete:
            out["mce"] = None
            out["mce_note"] = "mCE needs all 15 benchmark corruptions at all 5 severities"
            if clean_error is not None:
                out["relative_mce"] = None
                out["relative_mce_note"] = out["mce_note"]
        else:
            ce = {k: per[k] / ALEXNET_ERRORS[k] for k in BENCHMARK}
            ce_se = {
                k: math.sqrt(sum(s * s for s in out["errors_stderr"][k])) / 5 / ALEXNET_ERRORS[k]
                for k in BENCHMARK
            }
            out["ce"] = ce
            out["mce"], out["mce_stderr"] = _mean_and_stderr(
                list(ce.values()), list(ce_se.values())
            )
            if clean_error is not None:
                rce = {
                    k: (per[k] - clean_error) / (ALEXNET_ERRORS[k] - ALEXNET_CLEAN_ERROR)
                    for k in BENCHMARK
                }
                out["relative_ce"] = rce
                out["relative_mce"] = sum(rce.values()) / len(rce)
    return out
