"""The AutoAttack cascade (Croce & Hein, ICML 2020) as ``pyautoattack.AutoAttack`` runs it.

Standard version (Linf and L2): APGD-CE (100 iterations, 1 restart), APGD-T (100 iterations,
9 target classes), FAB-T (100 iterations, 9 target classes), Square (5000 queries,
``p_init=0.8``).  As ``AutoAttack.run_standard_evaluation``: clean predictions first; each
attack then runs only on the examples still robust, in fixed padded batches; an example's
adversarial point is the one of the first attack that fools it (clean otherwise); robust
accuracy is reported after every attack (cumulative, the reference's ``robust_accuracy_dict``)
with the reference's sanity checks (``checks.py``) and its final check (max perturbation,
NaNs, range), plus explicit ball and box flags.

Attacks come from the table ``registry.ATTACKS`` (program, standard settings, key tag).
Keys: attack ``a`` uses ``fold_in(key, ATTACKS[a].tag)`` and example ``i`` (its index in ``x``) gets
``fold_in(that, i)``, exactly like a standalone call ``apgd(..., key=attack_key(key, a))``, so
the cascade's accuracy is at most each single attack's on the same key.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import jax
import numpy as np

from flatrob_jax import execution
from flatrob_jax.attacks import checks
from flatrob_jax.attacks.apgd import apgd_program, check_inputs, run_apgd, use_host_loop
from flatrob_jax.attacks.registry import ATTACKS, N_TARGET_CLASSES, attack_key, run_attack

STANDARD = ("apgd-ce", "apgd-t", "fab-t", "square")
VERSIONS = ("standard", "custom")


@dataclasses.dataclass
class AutoAttackResult:
    """Outcome of the cascade.

    ``robust_accuracy_after`` maps ``'clean'`` and each attack run to the robust accuracy
    after it (cumulative); ``fooled_by`` to how many examples it fooled;
    ``time_s`` to its wall time; ``warnings`` lists the sanity checks that fired.
    """

    x_adv: np.ndarray
    robust: np.ndarray
    clean_accuracy: float
    robust_accuracy: float
    robust_accuracy_after: dict
    fooled_by: dict
    time_s: dict
    checks: dict
    warnings: list

    def to_dict(self) -> dict:
        """JSON-serialisable summary (no arrays)."""
        n = int(self.robust.shape[0])
        return {
            "num_examples": n,
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": self.robust_accuracy,
            "robust_error": 1.0 - self.robust_accuracy,
            "stderr": _stderr(self.robust_accuracy, n),
            "robust_accuracy_after": dict(self.robust_accuracy_after),
            "fooled_by": dict(self.fooled_by),
            "time_s": dict(self.time_s),
            "checks": dict(self.checks),
            "warnings": list(self.warnings),
        }


def _stderr(p: float, n: int) -> float:
    return float(np.sqrt(p * (1.0 - p) / n)) if n else float("nan")


def predict(apply_fn, x, *, batch_size: int = 500, mesh=None):
    """Logits and predicted labels of all examples (``execution.predict``, batched and sharded
    like the attacks)."""
    logits = execution.predict(apply_fn, x, batch_size=batch_size, mesh=mesh)
    return logits, np.argmax(logits, axis=1)


def autoattack(
    apply_fn: Callable,
    x,
    y,
    key: jax.Array,
    *,
    eps: float,
    norm: str,
    version: str = "standard",
    attacks: tuple[str, ...] | None = None,
    batch_size: int = 500,
    mesh=None,
    log: Callable[[str], None] | None = None,
    host_loop: bool | None = None,
) -> AutoAttackResult:
    """Run the AutoAttack cascade on ``x`` (float32 NHWC in [0, 1]) with labels ``y``.

    ``version='standard'`` runs :data:`STANDARD`; ``version='custom'`` runs ``attacks`` (names
    of ``registry.ATTACKS``: ``'apgd-ce', 'apgd-t', 'fab-t', 'square', 'apgd-dlr'`` and any
    registered later, in the given order).  The reference's 'plus' and 'rand' versions are not
    implemented.  ``host_loop`` (None: auto, True on CPU) runs the APGD attacks' iterations
    as a Python loop of compiled steps (``apgd.apgd_driver``), faster on the CPU backend;
    the other attacks run as registered.
    """
    if version not in VERSIONS:
        raise ValueError(f"unknown AutoAttack version {version!r}; allowed: {VERSIONS}")
    if version == "standard":
        if attacks is not None:
            raise ValueError("attacks can only be given with version='custom'")
        attacks = STANDARD
    elif not attacks:
        raise ValueError("version='custom' needs a non-empty attacks list")
    for a in attacks:
        if a not in ATTACKS:
            raise ValueError(f"unknown attack {a!r}; allowed: {tuple(ATTACKS)}")
        if norm not in ATTACKS[a].norms:
            raise ValueError(f"attack {a!r} supports norms {ATTACKS[a].norms}, not {norm!r}")
    x, y = check_inputs(x, y, eps, norm)
    n = x.shape[0]
    if n == 0:
        raise ValueError("autoattack needs at least one example")
    mesh = execution.make_mesh() if mesh is None else mesh
    host = use_host_loop(host_loop, mesh)
    say = log or (lambda s: None)
    warnings: list[str] = []

    # Sanity checks on the first batch (check_randomized, check_range_output, check_n_classes).
    first = x[:batch_size]
    outputs = [predict(apply_fn, first, batch_size=batch_size, mesh=mesh)[0] for _ in range(5)]
    n_cls = int(outputs[0].shape[1])
    check_results = {
        "randomized": checks.check_randomized(outputs, y[:batch_size]),
        "range_output": checks.check_range_output(outputs[0]),
        "dynamic": "not applicable: JAX functions are traced, not run eagerly",
        "n_classes": checks.check_n_classes(
            n_cls, list(attacks), N_TARGET_CLASSES, N_TARGET_CLASSES
        ),
    }

    start = time.perf_counter()
    _, pred = predict(apply_fn, x, batch_size=batch_size, mesh=mesh)
    robust = pred == y
    x_adv = x.copy()
    after = {"clean": float(robust.mean())}
    fooled_by, times = {}, {}
    num_zero_grad = 0
    say(f"autoattack {norm} eps={eps:.5f}: clean accuracy {after['clean']:.2%}")
    for attack in attacks:
        idx = np.flatnonzero(robust)
        if idx.size == 0:
            say("no robust examples left, skipping remaining attacks")
            break
        t0 = time.perf_counter()
        spec = ATTACKS[attack]
        attack_k = attack_key(key, attack) if spec.keyed else None
        if spec.program is apgd_program and host:
            # registry.run_attack runs the compiled program; the same settings, host loop
            static = dict(spec.settings, eps=float(eps), norm=norm)
            out = run_apgd(
                static,
                apply_fn,
                x[idx],
                y[idx],
                attack_k,
                indices=idx,
                batch_size=batch_size,
                mesh=mesh,
                log=log,
                desc=attack,
                host_loop=True,
            )
        else:
            out = run_attack(
                attack,
                apply_fn,
                x[idx],
                y[idx],
                attack_k,
                eps=float(eps),
                norm=norm,
                indices=idx,
                batch_size=batch_size,
                mesh=mesh,
                log=log,
            )
        adv, fooled = out[0], out[1]
        if spec.counts_zero_grad:
            num_zero_grad += int(out[2].sum())
        robust[idx[fooled]] = False
        x_adv[idx[fooled]] = adv[fooled]
        after[attack] = float(robust.mean())
        fooled_by[attack] = int(fooled.sum())
        times[attack] = time.perf_counter() - t0
        say(
            f"robust accuracy after {attack.upper()}: {after[attack]:.2%} "
            f"(total time {time.perf_counter() - start:.1f} s)"
        )

    check_results["zero_gradients"] = checks.check_zero_gradients(num_zero_grad)
    check_results["square_sr"] = checks.check_square_sr(after)
    check_results["final"] = checks.final_check(x_adv, x, norm, eps)
    for name in ("randomized", "range_output", "n_classes", "zero_gradients", "square_sr"):
        if check_results[name]:
            warnings.append(check_results[name])
    final = check_results["final"]
    if not (final["in_ball"] and final["in_box"]) or final["num_nan"]:
        warnings.append(f"adversarial examples violate the threat model: {final}")
    for w in warnings:
        say(f"WARNING: {w}")
    robust_accuracy = float(robust.mean())
    say(
        f"max {norm} perturbation: {final['max_perturbation']:.5f}, nan in tensor: "
        f"{final['num_nan']}, max: {final['max']:.5f}, min: {final['min']:.5f}"
    )
    say(f"robust accuracy: {robust_accuracy:.2%}")
    return AutoAttackResult(
        x_adv=x_adv,
        robust=robust,
        clean_accuracy=after["clean"],
        robust_accuracy=robust_accuracy,
        robust_accuracy_after=after,
        fooled_by=fooled_by,
        time_s=times,
        checks=check_results,
        warnings=warnings,
    )
