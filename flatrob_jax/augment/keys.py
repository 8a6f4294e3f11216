"""Per-example random keys.

A result must not depend on batch size or device count, so every example draws its
randomness from its own key: ``fold_in(key, global_example_index)``.
"""

import jax

from flatrob_jax.execution import example_keys  # the one definition: fold_in(key, offset + i)


def as_example_keys(key: jax.Array, batch_size: int) -> jax.Array:
    """Accept one key (derive per-example keys from it) or a batch of keys (shape [B])."""
    shape = key.shape if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key.shape[:-1]
    if len(shape) == 0:
        return example_keys(key, batch_size)
    if shape != (batch_size,):
        raise ValueError(
            f"expected one key or {batch_size} per-example keys, got key shape {shape}"
        )
    return key
