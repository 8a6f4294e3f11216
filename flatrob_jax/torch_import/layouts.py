"""The PyTorch ``state_dict`` layouts the import knows, one per architecture name (ARCH).

A layout says which registered Flax model an ARCH becomes and, for a model of that family,
which PyTorch tensor fills which Flax variable. It reads no tensors and needs no torch: it is a
table of names built from the model's hyperparameters, so the same layout serves the full-size
model (``wrn_70_16``) and the small variants tests use (a WRN-16-2 of the same layout).

The layouts, with where each comes from (key names as in the PyTorch code):

- ``cifar_resnet`` (ARCH ``resnet18_cifar``): the common CIFAR ResNet (Kuang Liu's
  pytorch-cifar, RobustBench's ``ResNet18``, pyautoattack's ``examples/model_test.pt``):
  ``conv1 bn1 layer{1-4}.{i}.{conv1,bn1,conv2,bn2,shortcut.0,shortcut.1} linear``.
- ``preact_resnet`` (ARCH ``preact_resnet18``): PreAct ResNet-18 with a BN + ReLU before the
  classifier (RobustBench's ``PreActResNet(PreActBlockV2, bn_before_fc=True)``: Rice et al.
  2020, Kireev et al. 2021): ``conv1 layer{1-4}.{i}.{bn1,conv1,bn2,conv2,shortcut.0} bn
  linear``, the projection shortcut on the pre-activation ``relu(bn1(x))``.
- ``robustbench_wrn`` (ARCH ``wrn_28_10``, ``wrn_34_10``, ``wrn_70_16``, ``wrn_40_2``):
  RobustBench's ``WideResNet`` (from TRADES): ``conv1 block{1-3}.layer.{i}.{bn1,conv1,bn2,
  conv2,convShortcut} bn1 fc``; its unused ``sub_block1`` tensors are ignored and a classifier
  without bias (``bias_last=False``) gets a zero bias. AugMix's own CIFAR WRN-40-2
  (google-research/augmix ``third_party/WideResNet_pytorch/wideresnet.py``; RobustBench's
  ``Hendrycks2020AugMixWRNNet`` is its ``WideResNet(depth=40, widen_factor=2)``) has the
  same module names, BN placement and a classifier with bias (no ``sub_block1``).
  AugMix trained on ``Normalize([0.5] * 3, [0.5] * 3)`` inputs; RobustBench's subclass adds
  that as ``mu``/``sigma`` buffers, which files saved by AugMix's training script do not
  carry (RobustBench loads them non-strictly), so the normalization comes with the import
  (``--mean/--std 0.5,0.5,0.5``; the zoo entries give it).
- ``torchvision_resnet`` (ARCH ``resnet50``, ``wide_resnet50_2``): torchvision's ResNet:
  ``conv1 bn1 layer{1-4}.{i}.{conv1,bn1,conv2,bn2,conv3,bn3,downsample.0,downsample.1} fc``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

# Kinds of a mapped module: how its PyTorch tensors become Flax variables.
CONV, BN, LINEAR = "conv", "bn", "linear"


@dataclasses.dataclass(frozen=True)
class Entry:
    """One PyTorch module (``torch_prefix``) filling one Flax module (``flax_path``)."""

    torch_prefix: str  # e.g. 'layer1.0.conv1' (tensors are torch_prefix + '.weight' ...)
    flax_path: tuple  # path of the Flax module inside 'params' / 'batch_stats'
    kind: str  # CONV | BN | LINEAR


@dataclasses.dataclass(frozen=True)
class Layout:
    """How the tensors of one PyTorch code base map onto one Flax model family."""

    name: str
    source: str  # where the PyTorch layout comes from, for messages and provenance
    entries: Callable  # model -> [Entry]; model: the Flax module (its hyperparameters)
    ignored_prefixes: tuple = ()  # tensors present in some checkpoints but unused by forward
    optional_bias: tuple = ()  # LINEAR prefixes whose bias may be absent (then zero)


@dataclasses.dataclass(frozen=True)
class Arch:
    """An architecture name of the import: its layout and registered Flax model."""

    name: str
    layout: Layout
    model_name: str  # a name of flatrob_jax.models.get_model
    description: str


def _bn_suffixes():
    return ("weight", "bias", "running_mean", "running_var")


def _resnet_blocks(model):
    """(global block index, stage, index within stage) for a flatrob_jax ResNet."""
    k = 0
    for stage, size in enumerate(model.stage_sizes):
        for i in range(size):
            yield k, stage, i
            k += 1


def _block_has_projection(model, stage: int, i: int) -> bool:
    """Whether block (stage, i) of a flatrob_jax ResNet has a projection shortcut (the same
    rule as the model: stride 2, or a channel change)."""
    expansion = 4 if model.block == "bottleneck" else 1
    if i > 0:
        return False
    if stage > 0:
        return True
    return model.widths[0] != model.widths[0] * expansion


def _cifar_resnet_entries(model):
    out = [Entry("conv1", ("stem_conv",), CONV), Entry("bn1", ("stem_bn",), BN)]
    for k, stage, i in _resnet_blocks(model):
        t, f = f"layer{stage + 1}.{i}", f"BasicBlock_{k}"
        out += [
            Entry(f"{t}.conv1", (f, "Conv_0"), CONV),
            Entry(f"{t}.bn1", (f, "BatchNorm_0"), BN),
            Entry(f"{t}.conv2", (f, "Conv_1"), CONV),
            Entry(f"{t}.bn2", (f, "BatchNorm_1"), BN),
        ]
        if _block_has_projection(model, stage, i):
            out += [
                Entry(f"{t}.shortcut.0", (f, "shortcut_conv"), CONV),
                Entry(f"{t}.shortcut.1", (f, "shortcut_bn"), BN),
            ]
    return out + [Entry("linear", ("Dense_0",), LINEAR)]


def _preact_resnet_entries(model):
    out = [Entry("conv1", ("stem_conv",), CONV)]
    for k, stage, i in _resnet_blocks(model):
        t, f = f"layer{stage + 1}.{i}", f"PreActBlock_{k}"
        out += [
            Entry(f"{t}.bn1", (f, "BatchNorm_0"), BN),
            Entry(f"{t}.conv1", (f, "Conv_0"), CONV),
            Entry(f"{t}.bn2", (f, "BatchNorm_1"), BN),
            Entry(f"{t}.conv2", (f, "Conv_1"), CONV),
        ]
        if _block_has_projection(model, stage, i):
            out.append(Entry(f"{t}.shortcut.0", (f, "shortcut_conv"), CONV))
    return out + [Entry("bn", ("final_bn",), BN), Entry("linear", ("Dense_0",), LINEAR)]


def _torchvision_resnet_entries(model):
    out = [Entry("conv1", ("stem_conv",), CONV), Entry("bn1", ("stem_bn",), BN)]
    for k, stage, i in _resnet_blocks(model):
        t, f = f"layer{stage + 1}.{i}", f"Bottleneck_{k}"
        for j in range(3):
            out += [
                Entry(f"{t}.conv{j + 1}", (f, f"Conv_{j}"), CONV),
                Entry(f"{t}.bn{j + 1}", (f, f"BatchNorm_{j}"), BN),
            ]
        if _block_has_projection(model, stage, i):
            out += [
                Entry(f"{t}.downsample.0", (f, "shortcut_conv"), CONV),
                Entry(f"{t}.downsample.1", (f, "shortcut_bn"), BN),
            ]
    return out + [Entry("fc", ("Dense_0",), LINEAR)]


def _robustbench_wrn_entries(model):
    if (model.depth - 4) % 6:
        raise ValueError(f"WRN depth must be 6n+4, got {model.depth}")
    n = (model.depth - 4) // 6
    widths = (16, 16 * model.widen_factor, 32 * model.widen_factor, 64 * model.widen_factor)
    out = [Entry("conv1", ("stem_conv",), CONV)]
    for stage in range(3):
        for i in range(n):
            t, f = f"block{stage + 1}.layer.{i}", f"PreActBlock_{stage * n + i}"
            out += [
                Entry(f"{t}.bn1", (f, "BatchNorm_0"), BN),
                Entry(f"{t}.conv1", (f, "Conv_0"), CONV),
                Entry(f"{t}.bn2", (f, "BatchNorm_1"), BN),
                Entry(f"{t}.conv2", (f, "Conv_1"), CONV),
            ]
            # RobustBench: a 1x1 convShortcut exactly where channels change (the first block
            # of each stage, except stage 1 of a WRN-d-1); flatrob_jax's PreActBlock agrees.
            if i == 0 and widths[stage] != widths[stage + 1]:
                out.append(Entry(f"{t}.convShortcut", (f, "shortcut_conv"), CONV))
    return out + [Entry("bn1", ("final_bn",), BN), Entry("fc", ("Dense_0",), LINEAR)]


CIFAR_RESNET = Layout(
    "cifar_resnet",
    "the common CIFAR ResNet (pytorch-cifar; RobustBench ResNet18; "
    "pyautoattack examples/model_test.pt)",
    _cifar_resnet_entries,
)
PREACT_RESNET = Layout(
    "preact_resnet",
    "RobustBench PreActResNet(PreActBlockV2, bn_before_fc=True)",
    _preact_resnet_entries,
)
ROBUSTBENCH_WRN = Layout(
    "robustbench_wrn",
    "RobustBench WideResNet (model_zoo/architectures/wide_resnet.py)",
    _robustbench_wrn_entries,
    ignored_prefixes=("sub_block1.",),
    optional_bias=("fc",),
)
TORCHVISION_RESNET = Layout(
    "torchvision_resnet", "torchvision.models.resnet", _torchvision_resnet_entries
)

LAYOUTS = {
    lay.name: lay for lay in (CIFAR_RESNET, PREACT_RESNET, ROBUSTBENCH_WRN, TORCHVISION_RESNET)
}

ARCHS = {
    a.name: a
    for a in (
        Arch(
            "resnet18_cifar",
            CIFAR_RESNET,
            "resnet18",
            "CIFAR ResNet-18 (conv1/bn1/layer1-4/linear; e.g. pyautoattack's model_test.pt)",
        ),
        Arch(
            "preact_resnet18",
            PREACT_RESNET,
            "preact_resnet18",
            "PreAct ResNet-18 with BN before the classifier (RobustBench PreActResNet)",
        ),
        Arch("wrn_28_10", ROBUSTBENCH_WRN, "wrn28_10", "RobustBench WideResNet-28-10"),
        Arch("wrn_34_10", ROBUSTBENCH_WRN, "wrn34_10", "RobustBench WideResNet-34-10"),
        Arch(
            "wrn_70_16",
            ROBUSTBENCH_WRN,
            "wrn70_16",
            "RobustBench WideResNet-70-16 "
            "(the TRADES-style WideResNet; not DeepMind's DMWideResNet)",
        ),
        Arch(
            "wrn_40_2",
            ROBUSTBENCH_WRN,
            "wrn40_2",
            "WideResNet-40-2 in RobustBench's layout (AugMix's CIFAR WRN, "
            "RobustBench Hendrycks2020AugMixWRNNet)",
        ),
        Arch("resnet50", TORCHVISION_RESNET, "resnet50", "torchvision ResNet-50"),
        Arch(
            "wide_resnet50_2", TORCHVISION_RESNET, "wide_resnet50_2", "torchvision Wide ResNet-50-2"
        ),
    )
}


def arch_names() -> list:
    return sorted(ARCHS)


def get_arch(name: str) -> Arch:
    """The ARCH ``name``; unknown names raise ValueError listing the known ones."""
    if name not in ARCHS:
        known = "; ".join(f"{a.name} ({a.description})" for a in ARCHS.values())
        raise ValueError(f"unknown architecture {name!r} for the PyTorch import; known: {known}")
    return ARCHS[name]


def get_layout(name: str) -> Layout:
    if name not in LAYOUTS:
        raise ValueError(f"unknown state_dict layout {name!r}; known: {', '.join(sorted(LAYOUTS))}")
    return LAYOUTS[name]


def tensor_names(entry: Entry) -> tuple:
    """The PyTorch tensor names one entry reads."""
    if entry.kind == BN:
        return tuple(f"{entry.torch_prefix}.{s}" for s in _bn_suffixes())
    if entry.kind == LINEAR:
        return (f"{entry.torch_prefix}.weight", f"{entry.torch_prefix}.bias")
    return (f"{entry.torch_prefix}.weight",)
