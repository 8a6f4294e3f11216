"""The one cross-entropy: per-example softmax cross-entropy of logits.

Training (soft, smoothed or mixed labels), the curvature objective (integer labels), the
attacks (APGD-CE, PGD: integer labels) and the eval step all use :func:`cross_entropy`, so the
loss whose flatness is measured is the loss that was trained and attacked.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example cross-entropy ``[..., K] -> [...]`` (natural log).

    ``labels`` are either integer class indices ``[...]`` -- then the value is
    ``logsumexp(z) - z_y``, as ``optax.softmax_cross_entropy_with_integer_labels`` and
    ``torch.nn.CrossEntropyLoss(reduction='none')`` compute it -- or a distribution over the
    classes ``[..., K]`` (one-hot, smoothed or mixed labels) -- then
    ``-sum_k q_k log softmax(z)_k``.
    """
    labels = jnp.asarray(labels)
    if jnp.issubdtype(labels.dtype, jnp.integer):
        if labels.shape != logits.shape[:-1]:
            raise ValueError(
                f"integer labels must have shape {logits.shape[:-1]} (logits "
                f"{logits.shape}), got {labels.shape}"
            )
        label_logits = jnp.take_along_axis(logits, labels[..., None].astype(jnp.int32), axis=-1)[
            ..., 0
        ]
        return jax.nn.logsumexp(logits, axis=-1) - label_logits
    if labels.shape != logits.shape:
        raise ValueError(
            f"soft labels must have the logits' shape {logits.shape}, got {labels.shape}"
        )
    return -jnp.sum(labels * jax.nn.log_softmax(logits), axis=-1)


__all__ = ["cross_entropy"]
