"""Wide ResNet WRN-d-k (Zagoruyko & Komodakis 2016), as used by AugMix for CIFAR
(WRN-40-2) and by much of the robustness literature (WRN-28-10): pre-activation basic blocks
(the same block as PreAct-ResNet), (d - 4) / 6 blocks per stage, widths 16k, 32k, 64k."""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from flatrob_jax.models.layers import batch_norm, conv_init
from flatrob_jax.models.normalization import Normalize
from flatrob_jax.models.resnet import PreActBlock


class WideResNet(nn.Module):
    num_classes: int
    depth: int = 40
    widen_factor: int = 2
    mean: Sequence[float] = (0.4914, 0.4822, 0.4465)
    std: Sequence[float] = (0.2470, 0.2435, 0.2616)
    axis_name: str | None = None
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        if (self.depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n+4 (e.g. 16, 28, 40), got {self.depth}")
        n = (self.depth - 4) // 6
        norm = batch_norm(train, self.axis_name, self.dtype)
        x = Normalize(self.mean, self.std)(x).astype(self.dtype)
        x = nn.Conv(
            16,
            (3, 3),
            padding=1,
            use_bias=False,
            kernel_init=conv_init,
            dtype=self.dtype,
            name="stem_conv",
        )(x)
        for stage, width in enumerate(
            (16 * self.widen_factor, 32 * self.widen_factor, 64 * self.widen_factor)
        ):
            for i in range(n):
                x = PreActBlock(width, 2 if (stage > 0 and i == 0) else 1, norm, self.dtype)(x)
        x = nn.relu(norm(name="final_bn")(x))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)
