"""ResNets: ResNet-18 with the CIFAR stem (3x3 conv, no max-pool; He et al. / the common CIFAR
code), PreAct-ResNet-18 (He et al. 2016, identity mappings), and ResNet-50 with the ImageNet
stem (7x7/2 conv + 3x3/2 max-pool; torchvision layout, stride on the 3x3 conv as in v1.5), and
Wide ResNet-50-2 (torchvision's wide_resnet50_2: ResNet-50 with twice the channels inside each
bottleneck, ``bottleneck_width_factor=2``; Zagoruyko & Komodakis 2016)."""

import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from flatrob_jax.models import layers
from flatrob_jax.models.layers import batch_norm, conv_init
from flatrob_jax.models.normalization import Normalize


class BasicBlock(nn.Module):
    width: int
    stride: int
    norm: callable
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(layers.conv, dtype=self.dtype)
        y = nn.relu(self.norm()(conv(self.width, 3, self.stride)(x)))
        y = self.norm()(conv(self.width, 3, 1)(y))
        if self.stride != 1 or x.shape[-1] != self.width:
            x = self.norm(name="shortcut_bn")(conv(self.width, 1, self.stride, "shortcut_conv")(x))
        return nn.relu(x + y)


class PreActBlock(nn.Module):
    width: int
    stride: int
    norm: callable
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(layers.conv, dtype=self.dtype)
        out = nn.relu(self.norm()(x))
        shortcut = x
        if self.stride != 1 or x.shape[-1] != self.width:
            shortcut = conv(self.width, 1, self.stride, "shortcut_conv")(out)
        y = conv(self.width, 3, self.stride)(out)
        y = conv(self.width, 3, 1)(nn.relu(self.norm()(y)))
        return y + shortcut


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 with ``width * inner_factor`` channels inside and
    ``width * expansion`` out (``inner_factor=2``: torchvision's wide_resnet50_2)."""

    width: int
    stride: int
    norm: callable
    dtype: jnp.dtype
    expansion: int = 4
    inner_factor: int = 1

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(layers.conv, dtype=self.dtype)
        out_width = self.width * self.expansion
        inner = self.width * self.inner_factor
        y = nn.relu(self.norm()(conv(inner, 1, 1)(x)))
        y = nn.relu(self.norm()(conv(inner, 3, self.stride)(y)))
        # Zero-init of the last BN scale in each residual branch (Goyal et al.).
        y = self.norm(scale_init=nn.initializers.zeros)(conv(out_width, 1, 1)(y))
        if self.stride != 1 or x.shape[-1] != out_width:
            x = self.norm(name="shortcut_bn")(conv(out_width, 1, self.stride, "shortcut_conv")(x))
        return nn.relu(x + y)


class ResNet(nn.Module):
    """ResNet family. ``stem='cifar'``: 3x3/1 conv; ``stem='imagenet'``: 7x7/2 conv + max-pool."""

    num_classes: int
    block: str = "basic"  # basic | preact | bottleneck
    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    widths: Sequence[int] = (64, 128, 256, 512)
    stem: str = "cifar"
    # Channels inside each bottleneck block relative to ``widths`` (2: Wide ResNet-50-2).
    bottleneck_width_factor: int = 1
    mean: Sequence[float] = (0.4914, 0.4822, 0.4465)
    std: Sequence[float] = (0.2470, 0.2435, 0.2616)
    axis_name: str | None = None
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        norm = batch_norm(train, self.axis_name, self.dtype)
        block_cls = {"basic": BasicBlock, "preact": PreActBlock, "bottleneck": Bottleneck}[
            self.block
        ]
        x = Normalize(self.mean, self.std)(x).astype(self.dtype)
        if self.stem == "imagenet":
            x = nn.Conv(
                self.widths[0],
                (7, 7),
                (2, 2),
                padding=3,
                use_bias=False,
                kernel_init=conv_init,
                dtype=self.dtype,
                name="stem_conv",
            )(x)
            x = nn.relu(norm(name="stem_bn")(x))
            x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        elif self.stem == "cifar":
            x = nn.Conv(
                self.widths[0],
                (3, 3),
                (1, 1),
                padding=1,
                use_bias=False,
                kernel_init=conv_init,
                dtype=self.dtype,
                name="stem_conv",
            )(x)
            if self.block != "preact":
                x = nn.relu(norm(name="stem_bn")(x))
        else:
            raise ValueError(f"unknown stem {self.stem!r}; valid: 'cifar', 'imagenet'")
        for stage, (size, width) in enumerate(zip(self.stage_sizes, self.widths)):
            for i in range(size):
                stride = 2 if (stage > 0 and i == 0) else 1
                if self.block == "bottleneck":
                    x = block_cls(
                        width, stride, norm, self.dtype, inner_factor=self.bottleneck_width_factor
                    )(x)
                else:
                    x = block_cls(width, stride, norm, self.dtype)(x)
        if self.block == "preact":
            x = nn.relu(norm(name="final_bn")(x))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)
