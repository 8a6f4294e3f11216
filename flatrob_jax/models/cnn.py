"""Small CPU-friendly CNNs (strided convolutions and global average pooling: on CPU, max-pool
backward costs ~100x its forward)."""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from flatrob_jax.models.layers import batch_norm, conv_init
from flatrob_jax.models.normalization import Normalize


class SmallCNN(nn.Module):
    """conv-BN-ReLU blocks; each stage after the first halves the resolution with a stride-2
    conv; then global average pooling and a linear classifier."""

    num_classes: int
    widths: Sequence[int] = (32, 64, 128)
    convs_per_stage: int = 2
    mean: Sequence[float] = (0.5,)
    std: Sequence[float] = (0.5,)
    axis_name: str | None = None
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        norm = batch_norm(train, self.axis_name, self.dtype)
        x = Normalize(self.mean, self.std)(x).astype(self.dtype)
        for stage, width in enumerate(self.widths):
            for i in range(self.convs_per_stage):
                stride = 2 if (stage > 0 and i == 0) else 1
                x = nn.Conv(
                    width,
                    (3, 3),
                    (stride, stride),
                    use_bias=False,
                    kernel_init=conv_init,
                    dtype=self.dtype,
                )(x)
                x = nn.relu(norm()(x))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)
