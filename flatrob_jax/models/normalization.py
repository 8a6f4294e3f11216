"""Per-channel input normalization, the first layer of every model.

Inputs are float32 NHWC in [0, 1]; attacks and corruptions work in that pixel space, so an
eps of 8/255 means what the literature means.
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


class Normalize(nn.Module):
    mean: Sequence[float]
    std: Sequence[float]

    @nn.compact
    def __call__(self, x):
        mean = jnp.asarray(self.mean, x.dtype)
        std = jnp.asarray(self.std, x.dtype)
        if mean.shape[0] != x.shape[-1]:
            raise ValueError(
                f"normalization has {mean.shape[0]} channel statistics but the input has "
                f"{x.shape[-1]} channels (input shape {x.shape})"
            )
        return (x - mean) / std
