"""Keep XLA from recomputing a small array inside every consumer of it.

XLA fuses cheap elementwise producers into their consumers. When the consumer reads the
producer at many positions per output element (a table lookup, a gather) or several
consumers each get their own copy of it, the producer runs once per *use*: the ops that
build an equalize or autocontrast table ran once per pixel on CPU (4-8x slower at 224x224,
measured), and the sample coordinates of a warp were computed twice with different
rounding. ``materialized`` writes the array to its own buffer first.
"""

import jax.numpy as jnp


def materialized(array: jnp.ndarray) -> jnp.ndarray:
    """``array`` unchanged, computed into its own buffer before it is read.

    A scatter is never fused into its consumers, so an identity scatter does it on every
    backend; ``lax.optimization_barrier`` does not (XLA:CPU drops barriers before fusion)."""
    flat = array.reshape(-1)
    index = jnp.arange(flat.shape[0])
    out = jnp.zeros_like(flat).at[index].set(flat, unique_indices=True, indices_are_sorted=True)
    return out.reshape(array.shape)


__all__ = ["materialized"]
