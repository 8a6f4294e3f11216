"""AutoAttack's sanity checks (``pyautoattack/checks.py``), on host arrays, as data.

Each check returns a warning string or None; :func:`final_check` summarises the adversarial
examples as the reference's last log line does (max perturbation norm, NaNs, range).  The
reference's ``check_dynamic`` (a Python trace of ``backward`` calls inside the forward pass)
has no meaning for a traced JAX function and is reported as not applicable.
"""

from __future__ import annotations

import numpy as np

DOC = "flags_doc.md of fra31/auto-attack"


def check_randomized(outputs: list[np.ndarray], y: np.ndarray, alpha: float = 1e-4):
    """Several forward passes of the same inputs must agree (else: randomized defense)."""
    correct = [int((o.argmax(1) == y).sum()) for o in outputs]
    normed = [o / (np.sqrt((o**2).sum(1, keepdims=True)) + 1e-10) for o in outputs]
    max_diff = 0.0
    for i in range(len(normed)):
        for j in range(i + 1, len(normed)):
            max_diff = max(max_diff, float(np.sqrt(((normed[i] - normed[j]) ** 2).sum(1)).max()))
    if len(set(correct)) > 1 or max_diff > alpha:
        return (
            "it seems to be a randomized defense! Please use version='rand'. "
            f"See {DOC} for details."
        )
    return None


def check_range_output(logits: np.ndarray, alpha: float = 1e-5):
    """Warn if the model seems to output probabilities instead of logits."""
    if (
        logits.max() < 1.0 + alpha
        and logits.min() > -alpha
        and bool((np.abs(logits.sum(-1) - 1.0) < alpha).all())
    ):
        return (
            "it seems that the output is a probability distribution, please be sure that "
            f"the logits are used! See {DOC} for details."
        )
    return None


def check_n_classes(n_cls: int, attacks: list[str], apgd_targets: int, fab_targets: int):
    """Warn if DLR needs more classes than there are, or too many target classes are used."""
    msg = None
    if "apgd-dlr" in attacks or "apgd-t" in attacks:
        if n_cls <= 2:
            msg = f"with only {n_cls} classes it is not possible to use the DLR loss!"
        elif n_cls == 3:
            msg = f"with only {n_cls} classes it is not possible to use the targeted DLR loss!"
        elif "apgd-t" in attacks and apgd_targets + 1 > n_cls:
            msg = (
                f"it seems that more target classes ({apgd_targets}) than possible "
                f"({n_cls - 1}) are used in APGD-T!"
            )
    if "fab-t" in attacks and fab_targets + 1 > n_cls:
        extra = (
            f"it seems that more target classes ({fab_targets}) than possible "
            f"({n_cls - 1}) are used in FAB-T!"
        )
        msg = extra if msg is None else f"{msg} Also, {extra}"
    return msg


def check_zero_gradients(num_zero: int):
    if num_zero:
        return (
            f"there are {num_zero} points with zero gradient! This might lead to unreliable "
            f"evaluation with gradient-based attacks. See {DOC} for details."
        )
    return None


def check_square_sr(acc_dict: dict, alpha: float = 0.002):
    """Warn if Square lowered the robust accuracy by more than ``alpha`` below the others."""
    if "square" in acc_dict and len(acc_dict) > 2:
        acc = min(v for k, v in acc_dict.items() if k != "square")
        if acc_dict["square"] < acc - alpha:
            return (
                f"Square Attack has decreased the robust accuracy of "
                f"{acc - acc_dict['square']:.2%}. This might indicate that the robustness "
                "evaluation using AutoAttack is unreliable. Consider running Square Attack "
                "with more iterations and restarts or an adaptive attack. "
                f"See {DOC} for details."
            )
    return None


def final_check(x_adv: np.ndarray, x: np.ndarray, norm: str, eps: float) -> dict:
    """Max perturbation, NaN count and range of the adversarial examples, and whether every
    example lies in the eps-ball (tolerance 1e-6 Linf, 1e-5 L2) and in [0, 1]."""
    delta = (x_adv - x).reshape(x.shape[0], -1).astype(np.float64)
    if norm == "Linf":
        res = np.abs(delta).max(1) if delta.size else np.zeros(0)
        tol = 1e-6
    else:
        res = np.sqrt((delta**2).sum(1))
        tol = 1e-5
    max_pert = float(res.max()) if res.size else 0.0
    return {
        "max_perturbation": max_pert,
        "num_nan": int(np.isnan(x_adv).sum()),
        "max": float(x_adv.max()) if x_adv.size else 0.0,
        "min": float(x_adv.min()) if x_adv.size else 0.0,
        "in_ball": bool(max_pert <= eps + tol),
        "in_box": bool(x_adv.size == 0 or (x_adv.min() >= 0.0 and x_adv.max() <= 1.0)),
    }
