"""Per-example attack losses on logits, as defined in pyautoattack 0.2.0.

Every function maps ``logits[B, K]`` (and integer labels) to a loss ``[B]`` that the attack
*maximises*.  Definitions follow ``pyautoattack/autopgd_base.py`` (CE, DLR, targeted DLR) and
``pyautoattack/square.py`` (margin), including their ``1e-12`` stabilisers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# ``logsumexp(z) - z_y`` (``torch.nn.CrossEntropyLoss(reduction='none')``): the project's one
# cross-entropy, re-exported here as the attacks' CE loss.
from flatrob_jax.losses import cross_entropy

LOSSES = ("ce", "dlr", "dlr-targeted", "margin")


def _take(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return jnp.take_along_axis(logits, labels[:, None].astype(jnp.int32), axis=1)[:, 0]


def dlr(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Difference of Logits Ratio (Croce & Hein 2020), ``APGDAttack.dlr_loss``.

    ``-(z_y - max_{i != y} z_i) / (z_(1) - z_(3) + 1e-12)`` with ``z_(k)`` the k-th largest
    logit.  Whether ``y`` is the top class is decided, as in the reference, by the index the
    ascending sort puts last (the *last* index among tied maxima, a stable sort).
    """
    z_sorted = jnp.sort(logits, axis=1)
    top_is_y = (jnp.argsort(logits, axis=1)[:, -1] == y).astype(logits.dtype)
    z_y = _take(logits, y)
    numerator = z_y - z_sorted[:, -2] * top_is_y - z_sorted[:, -1] * (1.0 - top_is_y)
    return -numerator / (z_sorted[:, -1] - z_sorted[:, -3] + 1e-12)


def dlr_targeted(logits: jax.Array, y: jax.Array, y_target: jax.Array) -> jax.Array:
    """Targeted DLR, ``APGDAttack_targeted.dlr_loss_targeted``.

    ``-(z_y - z_t) / (z_(1) - (z_(3) + z_(4)) / 2 + 1e-12)``; needs at least 4 classes.
    """
    z_sorted = jnp.sort(logits, axis=1)
    numerator = _take(logits, y) - _take(logits, y_target)
    return -numerator / (z_sorted[:, -1] - 0.5 * (z_sorted[:, -3] + z_sorted[:, -4]) + 1e-12)


def margin(logits: jax.Array, y: jax.Array) -> jax.Array:
    """``z_y - max_{i != y} z_i`` (positive while correctly classified), Square's margin."""
    z_y = _take(logits, y)
    others = jnp.where(jax.nn.one_hot(y, logits.shape[1], dtype=bool), -jnp.inf, logits)
    return z_y - jnp.max(others, axis=1)


def attack_loss(name: str, logits: jax.Array, y: jax.Array, y_target: jax.Array | None = None):
    """The loss an attack maximises, by name (``'margin'`` is ``-margin``, i.e. CW loss)."""
    if name == "ce":
        return cross_entropy(logits, y)
    if name == "dlr":
        return dlr(logits, y)
    if name == "dlr-targeted":
        return dlr_targeted(logits, y, y_target)
    if name == "margin":
        return -margin(logits, y)
    raise ValueError(f"unknown attack loss {name!r}; allowed: {LOSSES}")
