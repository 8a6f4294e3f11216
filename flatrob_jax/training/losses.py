"""Training-only losses on logits: label smoothing and AugMix's Jensen-Shannon consistency (the
cross-entropy itself is the project's one, ``flatrob_jax.losses.cross_entropy``)."""

import jax
import jax.numpy as jnp

__all__ = ["jensen_shannon", "smooth_labels"]


def smooth_labels(labels: jax.Array, num_classes: int, smoothing: float = 0.0) -> jax.Array:
    """Integer labels -> one-hot with ``smoothing`` spread uniformly: (1-s) e_y + s/K."""
    onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    return onehot * (1.0 - smoothing) + smoothing / num_classes


def jensen_shannon(logits_views: jax.Array) -> jax.Array:
    """Per-example Jensen-Shannon divergence among V predictive distributions
    (``logits_views``: [V, B, K]), as AugMix defines it: with p_v = softmax(z_v) and
    M = clip(mean_v p_v, 1e-7, 1), JS = mean_v KL(p_v || M).

    The AugMix reference writes it as F.kl_div(log M, p_v, reduction='batchmean') summed over
    views / 3; this is the per-example version (its batch mean equals the reference)."""
    probs = jax.nn.softmax(logits_views, axis=-1)
    log_mixture = jnp.log(jnp.clip(jnp.mean(probs, axis=0), 1e-7, 1.0))
    kl = jnp.sum(jax.scipy.special.xlogy(probs, probs) - probs * log_mixture, axis=-1)
    return jnp.mean(kl, axis=0)
