"""Adversarial evaluation: PGD, APGD (CE, DLR, targeted DLR), FAB-T, Square, AutoAttack.

All attacks take ``apply_fn(x) -> logits`` and images float32 NHWC in [0, 1], run over fixed
padded batches sharded on the 1-D mesh (``flatrob_jax.execution``) as their
``execution.Runner`` declares (a whole-attack jitted program, or a host loop of compiled steps
where the attack has one and ``Execution.host_loop`` says so), and draw example ``i``'s
randomness from ``fold_in(key, i)``. How they run (batch size, devices, progress log, host
loop) is one keyword, ``execution=flatrob_jax.execution.Execution(...)``. The attacks the
AutoAttack cascade can run form one table (``registry.ATTACKS``). The
reference for APGD, FAB-T, Square and the cascade is pyautoattack 0.2.0 (fra31/auto-attack);
see each module.
"""

from flatrob_jax.attacks.apgd import apgd
from flatrob_jax.attacks.autoattack import STANDARD, AutoAttackResult, autoattack
from flatrob_jax.attacks.fab import fab_targeted
from flatrob_jax.attacks.pgd import fgsm, pgd
from flatrob_jax.attacks.registry import ATTACKS, Attack, attack_key, register, run_attack
from flatrob_jax.attacks.square import square

__all__ = [
    "pgd",
    "fgsm",
    "apgd",
    "autoattack",
    "fab_targeted",
    "square",
    "attack_key",
    "AutoAttackResult",
    "STANDARD",
    "ATTACKS",
    "Attack",
    "register",
    "run_attack",
]
