"""The table of attacks the AutoAttack cascade can run: name -> how it runs (an
``execution.Runner``), its standard settings, key tag, targeted or not, threat models.

Adding an attack: write its per-device program (``program(model_fn, valid, x, y[, key_data],
*, eps, norm, ..., [key_impl]) -> (x_adv, fooled, ...)`` with ``x_adv`` clean where the attack
failed, see ``flatrob_jax.execution``) and, if its loop is faster driven from the host on some
backend, the same attack as a host loop of compiled steps (``driver(model_fn, valid, x, y[,
key_data], *, mesh, ...)``, see ``execution.run_batched_driver``); ``register`` it here with
``execution.Runner(program[, host_loop=driver])``. :func:`run_attack` runs every entry the same
way (so does ``autoattack(..., version='custom', attacks=(name, ...))``, through it), and
``tests/test_attacks_contract.py`` checks it like every other entry.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from flatrob_jax import execution
from flatrob_jax.attacks.apgd import APGD_RUNNER, check_inputs, resolve_runs_per_pass
from flatrob_jax.attacks.fab import FAB_TARGETED_RUNNER
from flatrob_jax.attacks.norms import NORMS
from flatrob_jax.attacks.square import SQUARE_RUNNER
from flatrob_jax.execution import Execution

N_TARGET_CLASSES = 9  # AutoAttack's standard version: target classes ranked 2nd..10th
# Runs (target classes, restarts) side by side in the cascade's APGD and FAB-T (same results):
# None = 1 on CPU (slower there), else as many as keep (runs x batch) within
# Execution.batch_size (apgd.runs_per_pass_for).
RUNS_PER_PASS = None


@dataclasses.dataclass(frozen=True)
class Attack:
    """One entry of the table.

    Attributes:
      name: the name ``autoattack(attacks=...)`` takes (pyautoattack's spelling).
      runner: how it runs: its per-device program (one compiled program per padded batch)
        and, optionally, the same attack as a host loop of compiled steps, taken where
        ``Execution.host_loop`` says; both return ``(x_adv, fooled, ...)``.
      settings: its static settings in AutoAttack's standard version (besides eps and norm).
      tag: the cascade derives the attack's key as ``fold_in(key, tag)``; unique and fixed
        forever (a result is reproducible only while its tag stays).
      keyed: its programs take per-example keys (``key_data`` and ``key_impl``).
      targeted: runs over target classes (needs ``n_target_classes + 1`` classes).
      norms: the threat models it supports.
      counts_zero_grad: its third output flags examples with a zero gradient, which the
        cascade's sanity check counts (pyautoattack's ``check_zero_gradients``).
    """

    name: str
    runner: execution.Runner
    settings: dict
    tag: int
    keyed: bool
    targeted: bool
    norms: tuple = NORMS
    counts_zero_grad: bool = False


ATTACKS: dict[str, Attack] = {}


def register(attack: Attack) -> Attack:
    """Add ``attack`` to the table; its name and tag must be new."""
    if not isinstance(attack.runner, execution.Runner):
        raise TypeError(
            f"attack {attack.name!r}: runner must be an execution.Runner (its program and "
            f"optional host loop), got {type(attack.runner).__name__}"
        )
    if attack.name in ATTACKS:
        raise ValueError(f"attack {attack.name!r} is already registered")
    used = {a.tag: a.name for a in ATTACKS.values()}
    if attack.tag in used:
        raise ValueError(
            f"tag {attack.tag} of {attack.name!r} is already used by {used[attack.tag]!r}"
        )
    bad = [n for n in attack.norms if n not in NORMS]
    if bad:
        raise ValueError(f"attack {attack.name!r}: unknown norms {bad}; allowed: {NORMS}")
    ATTACKS[attack.name] = attack
    return attack


def get_attack(name: str) -> Attack:
    """The entry named ``name``; a clear error lists the registered names otherwise."""
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; allowed: {tuple(ATTACKS)}")
    return ATTACKS[name]


def attack_key(key: jax.Array, attack: str) -> jax.Array:
    """Key that attack ``attack`` of the cascade uses (pass it to the standalone attack)."""
    return jax.random.fold_in(execution.typed_key(key), get_attack(attack).tag)


def run_attack(
    name: str,
    apply_fn,
    x,
    y,
    key: jax.Array | None,
    *,
    eps: float,
    norm: str,
    indices=None,
    execution: Execution = Execution(),
    **settings,
) -> tuple[np.ndarray, ...]:
    """Run registered attack ``name`` on ``x`` (float32 NHWC in [0, 1]) and labels ``y``, the
    way its ``runner`` declares (the host loop where it has one and ``execution`` says so).

    ``key`` is the attack's own key (the cascade passes ``attack_key(key, name)``); example
    ``i`` draws from ``fold_in(key, indices[i])`` (``indices`` default ``0..N-1``).
    ``execution``: batch size, devices, progress log, host loop. ``settings`` override the
    standard ones (e.g. ``n_iter=10``). Returns the attack's outputs ``(x_adv, fooled, ...)``
    as host arrays.
    """
    attack = get_attack(name)
    if norm not in attack.norms:
        raise ValueError(f"attack {name!r} supports norms {attack.norms}, not {norm!r}")
    unknown = sorted(set(settings) - set(attack.settings))
    if unknown:
        raise ValueError(
            f"unknown settings {unknown} for attack {name!r}; allowed: {sorted(attack.settings)}"
        )
    x, y = check_inputs(x, y, eps, norm)
    static = dict(attack.settings, **settings, eps=float(eps), norm=norm)
    if "runs_per_pass" in static:  # runs side by side: None = as many as the batch allows
        static = resolve_runs_per_pass(static, execution, x.shape[0])
    if attack.keyed and key is None:
        raise ValueError(f"attack {name!r} draws random numbers: pass a key")
    return attack.runner.run(
        static,
        apply_fn,
        (x, y),
        execution=execution,
        key=key if attack.keyed else None,
        indices=indices if attack.keyed else None,
        desc=name,
    )


def _apgd(loss: str) -> dict:
    return dict(
        loss=loss,
        n_iter=100,
        n_restarts=1,
        n_target_classes=N_TARGET_CLASSES,
        rho=0.75,
        runs_per_pass=RUNS_PER_PASS,
    )


register(Attack("apgd-ce", APGD_RUNNER, _apgd("ce"), tag=0, keyed=True, targeted=False))
register(
    Attack(
        "apgd-t",
        APGD_RUNNER,
        _apgd("dlr-targeted"),
        tag=1,
        keyed=True,
        targeted=True,
        counts_zero_grad=True,
    )
)
register(
    Attack(
        "fab-t",
        FAB_TARGETED_RUNNER,
        dict(
            n_iter=100,
            n_target_classes=N_TARGET_CLASSES,
            alpha_max=0.1,
            eta=1.05,
            beta=0.9,
            runs_per_pass=RUNS_PER_PASS,
        ),
        tag=2,
        keyed=False,
        targeted=True,
    )
)
register(
    Attack(
        "square",
        SQUARE_RUNNER,
        dict(n_queries=5000, p_init=0.8),
        tag=3,
        keyed=True,
        targeted=False,
    )
)
register(
    Attack(
        "apgd-dlr",
        APGD_RUNNER,
        _apgd("dlr"),
        tag=4,
        keyed=True,
        targeted=False,
        counts_zero_grad=True,
    )
)
