"""The AutoAttack cascade (Croce & Hein, ICML 2020) as ``pyautoattack.AutoAttack`` runs it.

Standard version (Linf and L2): APGD-CE (100 iterations, 1 restart), APGD-T (100 iterations,
9 target classes), FAB-T (100 iterations, 9 target classes), Square (5000 queries,
``p_init=0.8``).  As ``AutoAttack.run_standard_evaluation``: clean predictions first; each
attack then runs only on the examples still robust, in fixed padded batches; an example's
adversarial point is the one of the first attack that fools it (clean otherwise); robust
accuracy is reported after every attack (cumulative, the reference's ``robust_accuracy_dict``)
with the reference's sanity checks (``checks.py``) and its final check (max perturbation,
NaNs, range), plus explicit ball and box flags.

Attacks come from the table ``registry.ATTACKS`` (runner, standard settings, key tag) and run
through ``registry.run_attack``, the same path for every entry.
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

from flatrob_jax.attacks import checks
from flatrob_jax.attacks.apgd import check_inputs
from flatrob_jax.attacks.registry import N_TARGET_CLASSES, attack_key, get_attack, run_attack
from flatrob_jax.execution import Execution
from flatrob_jax.execution import predict as predict_logits

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


def predict(apply_fn, x, *, execution: Execution = Execution()):
    """Logits and predicted labels of all examples (``execution.predict``, batched and sharded
    like the attacks)."""
    logits = predict_logits(apply_fn, x, batch_size=execution.batch_size, mesh=execution.mesh())
    return logits, np.argmax(logits, axis=1)


def _say(execution: Execution) -> Callable[[str], None]:
    return execution.log or (lambda line: None)


def _attack_names(version: str, attacks, norm: str) -> tuple[str, ...]:
    """The attacks ``version`` runs, each registered and supporting ``norm``."""
    if version not in VERSIONS:
        raise ValueError(f"unknown AutoAttack version {version!r}; allowed: {VERSIONS}")
    if version == "standard":
        if attacks is not None:
            raise ValueError("attacks can only be given with version='custom'")
        attacks = STANDARD
    elif not attacks:
        raise ValueError("version='custom' needs a non-empty attacks list")
    for a in attacks:
        spec = get_attack(a)
        if norm not in spec.norms:
            raise ValueError(f"attack {a!r} supports norms {spec.norms}, not {norm!r}")
    return tuple(attacks)


def _model_checks(apply_fn, x, y, attacks, execution: Execution) -> dict:
    """The reference's checks of the model on the first batch (``check_randomized``,
    ``check_range_output``, ``check_n_classes``)."""
    first = x[: execution.batch_size]
    outputs = [predict(apply_fn, first, execution=execution)[0] for _ in range(5)]
    n_cls = int(outputs[0].shape[1])
    return {
        "randomized": checks.check_randomized(outputs, y[: execution.batch_size]),
        "range_output": checks.check_range_output(outputs[0]),
        "dynamic": "not applicable: JAX functions are traced, not run eagerly",
        "n_classes": checks.check_n_classes(
            n_cls, list(attacks), N_TARGET_CLASSES, N_TARGET_CLASSES
        ),
    }


@dataclasses.dataclass
class _Cascade:
    """The cascade's running outcome: adversarial points, robust flags and per-attack tallies."""

    x_adv: np.ndarray
    robust: np.ndarray
    after: dict
    fooled_by: dict = dataclasses.field(default_factory=dict)
    times: dict = dataclasses.field(default_factory=dict)
    num_zero_grad: int = 0


def _run_cascade(apply_fn, x, y, key, state: _Cascade, *, eps, norm, attacks, execution):
    """Each attack in turn on the examples still robust (``registry.run_attack``, keyed
    ``attack_key(key, attack)``, example ``i`` by its index in ``x``); the first attack that
    fools an example gives its adversarial point."""
    say = _say(execution)
    start = time.perf_counter()
    for attack in attacks:
        idx = np.flatnonzero(state.robust)
        if idx.size == 0:
            say("no robust examples left, skipping remaining attacks")
            break
        t0 = time.perf_counter()
        out = run_attack(
            attack,
            apply_fn,
            x[idx],
            y[idx],
            attack_key(key, attack),
            eps=float(eps),
            norm=norm,
            indices=idx,
            execution=execution,
        )
        adv, fooled = out[0], out[1]
        if get_attack(attack).counts_zero_grad:
            state.num_zero_grad += int(out[2].sum())
        state.robust[idx[fooled]] = False
        state.x_adv[idx[fooled]] = adv[fooled]
        state.after[attack] = float(state.robust.mean())
        state.fooled_by[attack] = int(fooled.sum())
        state.times[attack] = time.perf_counter() - t0
        say(
            f"robust accuracy after {attack.upper()}: {state.after[attack]:.2%} "
            f"(total time {time.perf_counter() - start:.1f} s)"
        )


def _final_checks(check_results: dict, state: _Cascade, x, *, eps, norm) -> list[str]:
    """Add the checks made after the cascade to ``check_results``; return the warnings."""
    check_results["zero_gradients"] = checks.check_zero_gradients(state.num_zero_grad)
    check_results["square_sr"] = checks.check_square_sr(state.after)
    check_results["final"] = checks.final_check(state.x_adv, x, norm, eps)
    warnings = [
        check_results[name]
        for name in ("randomized", "range_output", "n_classes", "zero_gradients", "square_sr")
        if check_results[name]
    ]
    final = check_results["final"]
    if not (final["in_ball"] and final["in_box"]) or final["num_nan"]:
        warnings.append(f"adversarial examples violate the threat model: {final}")
    return warnings


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
    execution: Execution = Execution(),
) -> AutoAttackResult:
    """Run the AutoAttack cascade on ``x`` (float32 NHWC in [0, 1]) with labels ``y``.

    ``version='standard'`` runs :data:`STANDARD`; ``version='custom'`` runs ``attacks`` (names
    of ``registry.ATTACKS``: ``'apgd-ce', 'apgd-t', 'fab-t', 'square', 'apgd-dlr'`` and any
    registered later, in the given order).  The reference's 'plus' and 'rand' versions are not
    implemented.  ``execution``: batch size, devices, progress log and ``host_loop`` (each
    attack runs as its registry entry declares: the APGD attacks as a Python loop of compiled
    steps where ``host_loop`` resolves True, by default on CPU, where it is faster).
    """
    attacks = _attack_names(version, attacks, norm)
    x, y = check_inputs(x, y, eps, norm)
    if x.shape[0] == 0:
        raise ValueError("autoattack needs at least one example")
    say = _say(execution)
    check_results = _model_checks(apply_fn, x, y, attacks, execution)

    _, pred = predict(apply_fn, x, execution=execution)
    robust = pred == y
    state = _Cascade(x_adv=x.copy(), robust=robust, after={"clean": float(robust.mean())})
    say(f"autoattack {norm} eps={eps:.5f}: clean accuracy {state.after['clean']:.2%}")
    _run_cascade(
        apply_fn, x, y, key, state, eps=eps, norm=norm, attacks=attacks, execution=execution
    )

    warnings = _final_checks(check_results, state, x, eps=eps, norm=norm)
    for w in warnings:
        say(f"WARNING: {w}")
    final = check_results["final"]
    robust_accuracy = float(state.robust.mean())
    say(
        f"max {norm} perturbation: {final['max_perturbation']:.5f}, nan in tensor: "
        f"{final['num_nan']}, max: {final['max']:.5f}, min: {final['min']:.5f}"
    )
    say(f"robust accuracy: {robust_accuracy:.2%}")
    return AutoAttackResult(
        x_adv=state.x_adv,
        robust=state.robust,
        clean_accuracy=state.after["clean"],
        robust_accuracy=robust_accuracy,
        robust_accuracy_after=state.after,
        fooled_by=state.fooled_by,
        time_s=state.times,
        checks=check_results,
        warnings=warnings,
    )
