"""Importing PyTorch checkpoints (flatrob_jax.torch_import, python -m flatrob_jax.import_torch).

Oracles are PyTorch itself: pyautoattack's shipped CIFAR-10 ResNet-18 (examples/model_test.pt)
and, for every other layout, a PyTorch module of that layout written below from the published
architecture descriptions (key names as in the code bases the layouts name), with random
weights and BatchNorm statistics from train-mode passes; small widths/depths keep the forward
passes fast, the full-size modules are built on torch's meta device for name/shape checks.
"""

import hashlib
import importlib.util
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from flatrob_jax.distributed import make_mesh
from flatrob_jax.execution import Execution
from flatrob_jax.models import get_model
from flatrob_jax.models.resnet import ResNet
from flatrob_jax.models.wide_resnet import WideResNet
from flatrob_jax.torch_import import (
    ChecksumMismatch,
    StateDictMismatch,
    convert,
    layouts,
    loading,
    zoo,
)
from flatrob_jax.torch_import import workdir as import_workdir
from flatrob_jax.training import builders

pytestmark = pytest.mark.peers

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

# ---------------------------------------------------------------------------------------------
# PyTorch modules of the supported layouts


def _conv(cin, cout, k, stride=1):
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)


class CifarBasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1, self.bn1 = _conv(cin, cout, 3, stride), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = _conv(cout, cout, 3), nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(_conv(cin, cout, 1, stride), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """conv1/bn1/layer1-4/linear (ResNet-18: stage_sizes (2, 2, 2, 2), widths 64..512)."""

    def __init__(self, stage_sizes=(2, 2, 2, 2), widths=(64, 128, 256, 512), num_classes=10):
        super().__init__()
        self.conv1, self.bn1 = _conv(3, widths[0], 3), nn.BatchNorm2d(widths[0])
        cin = widths[0]
        for s, (n, w) in enumerate(zip(stage_sizes, widths)):
            blocks = []
            for i in range(n):
                blocks.append(CifarBasicBlock(cin, w, 2 if (s > 0 and i == 0) else 1))
                cin = w
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.num_stages = len(stage_sizes)
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        for s in range(self.num_stages):
            x = getattr(self, f"layer{s + 1}")(x)
        return self.linear(x.mean((2, 3)))


class PreActBlock(nn.Module):
    """Projection shortcut on the pre-activation (RobustBench's PreActBlockV2)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), _conv(cin, cout, 3, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), _conv(cout, cout, 3)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(_conv(cin, cout, 1, stride))

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        return self.conv2(F.relu(self.bn2(self.conv1(out)))) + shortcut


class PreActResNet(nn.Module):
    """conv1/layer1-4/bn/linear with BN + ReLU before the classifier."""

    def __init__(self, stage_sizes=(2, 2, 2, 2), widths=(64, 128, 256, 512), num_classes=10):
        super().__init__()
        self.conv1 = _conv(3, widths[0], 3)
        cin = widths[0]
        for s, (n, w) in enumerate(zip(stage_sizes, widths)):
            blocks = []
            for i in range(n):
                blocks.append(PreActBlock(cin, w, 2 if (s > 0 and i == 0) else 1))
                cin = w
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.num_stages = len(stage_sizes)
        self.bn, self.linear = nn.BatchNorm2d(cin), nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.conv1(x)
        for s in range(self.num_stages):
            x = getattr(self, f"layer{s + 1}")(x)
        return self.linear(F.relu(self.bn(x)).mean((2, 3)))


class WrnBlock(nn.Module):
    """RobustBench's WideResNet BasicBlock: bn1/conv1/bn2/conv2[/convShortcut]."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), _conv(cin, cout, 3, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), _conv(cout, cout, 3)
        self.equal = cin == cout
        self.convShortcut = None if self.equal else _conv(cin, cout, 1, stride)

    def forward(self, x):
        act = F.relu(self.bn1(x))
        y = self.conv2(F.relu(self.bn2(self.conv1(act))))
        return (x if self.equal else self.convShortcut(act)) + y


class WrnGroup(nn.Module):
    def __init__(self, n, cin, cout, stride):
        super().__init__()
        self.layer = nn.Sequential(
            *[WrnBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1) for i in range(n)]
        )

    def forward(self, x):
        return self.layer(x)


class RobustBenchWRN(nn.Module):
    """conv1/block1-3.layer.i/bn1/fc, with RobustBench's optional (unused) sub_block1 and
    classifier without bias (bias_last=False), and optional mu/sigma normalization buffers."""

    def __init__(
        self,
        depth=28,
        widen_factor=10,
        num_classes=10,
        sub_block1=False,
        bias_last=True,
        mu=None,
        sigma=None,
    ):
        super().__init__()
        n = (depth - 4) // 6
        c = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.conv1 = _conv(3, c[0], 3)
        self.block1 = WrnGroup(n, c[0], c[1], 1)
        if sub_block1:
            self.sub_block1 = WrnGroup(n, c[0], c[1], 1)
        self.block2 = WrnGroup(n, c[1], c[2], 2)
        self.block3 = WrnGroup(n, c[2], c[3], 2)
        self.bn1 = nn.BatchNorm2d(c[3])
        self.fc = nn.Linear(c[3], num_classes, bias=bias_last)
        if mu is not None:
            self.register_buffer("mu", torch.tensor(mu).view(1, 3, 1, 1))
            self.register_buffer("sigma", torch.tensor(sigma).view(1, 3, 1, 1))

    def forward(self, x):
        if hasattr(self, "mu"):
            x = (x - self.mu) / self.sigma
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.fc(F.avg_pool2d(F.relu(self.bn1(x)), 8).flatten(1))


class TvBottleneck(nn.Module):
    """torchvision's Bottleneck (stride on the 3x3 conv; inner width scaled for Wide ResNets)."""

    def __init__(self, cin, width, stride, inner_factor):
        super().__init__()
        inner, out = width * inner_factor, width * 4
        self.conv1, self.bn1 = _conv(cin, inner, 1), nn.BatchNorm2d(inner)
        self.conv2, self.bn2 = _conv(inner, inner, 3, stride), nn.BatchNorm2d(inner)
        self.conv3, self.bn3 = _conv(inner, out, 1), nn.BatchNorm2d(out)
        self.downsample = None
        if stride != 1 or cin != out:
            self.downsample = nn.Sequential(_conv(cin, out, 1, stride), nn.BatchNorm2d(out))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class TorchvisionResNet(nn.Module):
    """conv1 (7x7/2)/bn1/maxpool/layer1-4/fc (ResNet-50: (3, 4, 6, 3), widths 64..512;
    Wide ResNet-50-2: inner_factor 2)."""

    def __init__(
        self, stage_sizes=(3, 4, 6, 3), widths=(64, 128, 256, 512), inner_factor=1, num_classes=1000
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        cin = widths[0]
        for s, (n, w) in enumerate(zip(stage_sizes, widths)):
            blocks = []
            for i in range(n):
                blocks.append(TvBottleneck(cin, w, 2 if (s > 0 and i == 0) else 1, inner_factor))
                cin = w * 4
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.num_stages = len(stage_sizes)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        for s in range(self.num_stages):
            x = getattr(self, f"layer{s + 1}")(x)
        return self.fc(x.mean((2, 3)))


# The full-size module of each ARCH of the import, with the classes of its usual dataset.
FULL_SIZE = {
    "resnet18_cifar": lambda: CifarResNet(),
    "preact_resnet18": lambda: PreActResNet(),
    "wrn_28_10": lambda: RobustBenchWRN(28, 10),
    "wrn_34_10": lambda: RobustBenchWRN(34, 10),
    "wrn_70_16": lambda: RobustBenchWRN(70, 16),
    "wrn_40_2": lambda: RobustBenchWRN(40, 2),
    "resnet50": lambda: TorchvisionResNet(),
    "wide_resnet50_2": lambda: TorchvisionResNet(inner_factor=2),
}


def randomize(module, image_size, seed=0, passes=3):
    """Random BN affine parameters and running statistics from a few train-mode passes, and a
    classifier scaled up so the logits are O(1) and differ between inputs (with PyTorch's
    default init they are ~0.1 and nearly constant); the module is returned in eval mode."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
            elif isinstance(m, nn.Linear):
                m.weight.mul_(30.0)
        module.train()
        for _ in range(passes):
            module(torch.rand(8, 3, image_size, image_size))
    return module.eval()


def _nhwc_to_nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def _torch_logits(module, x):
    with torch.no_grad():
        return module(_nhwc_to_nchw(x)).numpy()


def _images(n, size, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, size, size, 3)).astype(np.float32)


def _smooth_images(n, seed):
    """Piecewise-constant 4x4-pixel blocks: less degenerate for a CIFAR model than pixel noise."""
    rng = np.random.default_rng(seed)
    return np.kron(rng.uniform(size=(n, 8, 8, 3)), np.ones((1, 4, 4, 1))).astype(np.float32)


IDENTITY = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)
SMALL_WIDTHS = (8, 16, 32, 64)


def _pyautoattack_weights() -> str:
    spec = importlib.util.find_spec("pyautoattack")
    if spec is None:
        pytest.skip("pyautoattack is not installed (pip install .[peers])")
    path = os.path.join(spec.submodule_search_locations[0], "examples", "model_test.pt")
    if not os.path.exists(path):
        pytest.skip(f"pyautoattack has no {path}")
    return path


# ---------------------------------------------------------------------------------------------
# Every layout: equal logits on small variants; every ARCH: names and shapes at full size

# (id, torch module factory, layout, Flax model, image size, wrap the state_dict like a
# training script would: {'state_dict': {'module.' + name: tensor}})
SMALL_CASES = [
    (
        "cifar_resnet",
        lambda: CifarResNet((2, 1, 1, 1), SMALL_WIDTHS),
        layouts.CIFAR_RESNET,
        lambda: ResNet(10, "basic", (2, 1, 1, 1), SMALL_WIDTHS, "cifar", **IDENTITY),
        32,
        False,
    ),
    (
        "preact_resnet",
        lambda: PreActResNet((2, 1, 1, 1), SMALL_WIDTHS),
        layouts.PREACT_RESNET,
        lambda: ResNet(10, "preact", (2, 1, 1, 1), SMALL_WIDTHS, "cifar", **IDENTITY),
        32,
        True,
    ),
    # WRN-16-2 with RobustBench's wrinkles: unused sub_block1, classifier without bias, mu/sigma
    # normalization buffers in the state_dict.
    (
        "robustbench_wrn_16_2",
        lambda: RobustBenchWRN(
            16, 2, sub_block1=True, bias_last=False, mu=CIFAR_MEAN, sigma=CIFAR_STD
        ),
        layouts.ROBUSTBENCH_WRN,
        lambda: WideResNet(10, depth=16, widen_factor=2, mean=CIFAR_MEAN, std=CIFAR_STD),
        32,
        False,
    ),
    # WRN-10-1: the first stage keeps 16 channels, so it has no shortcut convolution.
    (
        "robustbench_wrn_10_1",
        lambda: RobustBenchWRN(10, 1),
        layouts.ROBUSTBENCH_WRN,
        lambda: WideResNet(10, depth=10, widen_factor=1, **IDENTITY),
        32,
        True,
    ),
    (
        "torchvision_resnet",
        lambda: TorchvisionResNet((2, 1, 1, 1), SMALL_WIDTHS, 1, 10),
        layouts.TORCHVISION_RESNET,
        lambda: ResNet(10, "bottleneck", (2, 1, 1, 1), SMALL_WIDTHS, "imagenet", **IDENTITY),
        32,
        True,
    ),
    (
        "torchvision_wide_resnet",
        lambda: TorchvisionResNet((2, 1, 1, 1), SMALL_WIDTHS, 2, 10),
        layouts.TORCHVISION_RESNET,
        lambda: ResNet(
            10,
            "bottleneck",
            (2, 1, 1, 1),
            SMALL_WIDTHS,
            "imagenet",
            bottleneck_width_factor=2,
            **IDENTITY,
        ),
        32,
        False,
    ),
]


@pytest.mark.parametrize("case", SMALL_CASES, ids=[c[0] for c in SMALL_CASES])
def test_every_layout_imports_with_the_same_logits(case, record_property):
    _, make_torch, layout, make_flax, size, wrap = case
    net = randomize(make_torch(), size)
    state_dict = net.state_dict()
    if wrap:
        state_dict = {"state_dict": {f"module.{k}": v for k, v in state_dict.items()}, "epoch": 7}
    prepared = convert.prepare(loading.read_state_dict(state_dict))
    model = make_flax()
    if prepared.normalization is not None:  # the mu/sigma buffers the WRN case carries
        np.testing.assert_allclose(prepared.normalization[0], model.mean, rtol=1e-6)
        np.testing.assert_allclose(prepared.normalization[1], model.std, rtol=1e-6)
    template = convert.template_variables(model, (size, size, 3))
    variables, ignored = convert.to_flax(prepared.tensors, layout, model, template)
    if layout is layouts.ROBUSTBENCH_WRN and "sub_block1" in dict(net.named_children()):
        assert ignored and all(k.startswith("sub_block1.") for k in ignored)
    x = _smooth_images(4, seed=0)
    ours = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x))
    theirs = _torch_logits(net, x)
    diff = float(np.abs(ours - theirs).max())
    spread = float(np.ptp(theirs, axis=0).max())  # how much the logits depend on the input
    record_property("max_abs_logit_diff", diff)
    record_property("logit_scale", (float(np.abs(theirs).max()), spread))
    assert diff <= 1e-4 and diff <= 1e-3 * spread, (diff, spread)


@pytest.mark.parametrize("arch", layouts.arch_names())
def test_every_arch_matches_its_full_size_pytorch_module(arch):
    """Names and shapes of every tensor, and the parameter count, of the full-size PyTorch
    module (built on the meta device: no memory, no forward pass) against the registered Flax
    model the ARCH becomes."""
    spec = layouts.get_arch(arch)
    num_classes, size = (1000, 224) if spec.layout is layouts.TORCHVISION_RESNET else (10, 32)
    with torch.device("meta"):
        net = FULL_SIZE[arch]()
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    model = get_model(spec.model_name, num_classes, **IDENTITY)
    template = convert.template_variables(model, (size, size, 3))
    rows = convert.plan(spec.layout, model, template)
    assert convert.check(convert.prepare(shapes).tensors, spec.layout, rows, arch) == []
    n_flax = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(template["params"]))
    assert n_flax == sum(p.numel() for p in net.parameters())


AUGMIX_WRN_ENTRIES = (
    "cifar10/corruptions/Hendrycks2020AugMix_WRN",
    "cifar100/corruptions/Hendrycks2020AugMix_WRN",
)


@pytest.mark.parametrize("name", AUGMIX_WRN_ENTRIES)
def test_augmix_wrn_40_2_zoo_entry_gives_robustbenchs_logits(name, tmp_path, record_property):
    """The zoo entry (ARCH wrn_40_2, its normalization and dataset) applied to a random-weight
    WRN-40-2 saved the way AugMix's cifar.py saves it (a checkpoint dict, DataParallel
    'module.' names, no mu/sigma buffers) gives the logits of RobustBench's
    Hendrycks2020AugMixWRNNet: WideResNet(40, 2) on (x - 0.5) / 0.5."""
    entry = zoo.get(name)
    num_classes = {"cifar10": 10, "cifar100": 100}[entry.dataset]
    half = (0.5, 0.5, 0.5)
    net = randomize(RobustBenchWRN(40, 2, num_classes, mu=half, sigma=half), 32)
    state_dict = {f"module.{k}": v for k, v in net.state_dict().items() if k not in ("mu", "sigma")}
    optimizer = torch.optim.SGD(net.parameters(), 0.1, momentum=0.9, nesterov=True)
    path = tmp_path / "checkpoint.pth.tar"
    torch.save(
        {
            "epoch": 99,
            "dataset": entry.dataset,
            "model": "wrn",
            "state_dict": state_dict,
            "best_acc": 0.5,
            "optimizer": optimizer.state_dict(),
        },
        path,
    )
    config, variables, provenance = zoo.prepare_entry(entry, str(path))
    assert (provenance["arch"], provenance["zoo_entry"]) == ("wrn_40_2", name)
    assert provenance["ignored_tensors"] == []
    assert tuple(config.dataset.mean) == half and tuple(config.dataset.std) == half
    model = builders.build_model(config, axis_name=None)
    x = _smooth_images(4, seed=2)
    ours = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x))
    theirs = _torch_logits(net, x)
    assert ours.shape == theirs.shape == (4, num_classes)
    diff = float(np.abs(ours - theirs).max())
    spread = float(np.ptp(theirs, axis=0).max())
    record_property("max_abs_logit_diff", diff)
    record_property("logit_scale", (float(np.abs(theirs).max()), spread))
    assert diff <= 1e-4 and diff <= 1e-3 * spread, (diff, spread)


# ---------------------------------------------------------------------------------------------
# The real ResNet-18 that ships with pyautoattack, through the command line


@pytest.fixture(scope="module")
def imported_resnet18(tmp_path_factory):
    """pyautoattack's model_test.pt imported with `python -m flatrob_jax.import_torch` and
    loaded with load_for_eval, and the same weights in PyTorch."""
    import flatrob_jax

    path = _pyautoattack_weights()
    run = str(tmp_path_factory.mktemp("imported") / "r18")
    cmd = [
        sys.executable,
        "-m",
        "flatrob_jax.import_torch",
        "--arch",
        "resnet18_cifar",
        "--weights",
        path,
        "--dataset",
        "cifar10",
        "--workdir",
        run,
        "--zoo_entry",
        "pyautoattack/examples/model_test.pt",
    ]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    net = CifarResNet()
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return run, path, net.eval(), done.stdout, flatrob_jax.load_for_eval(run)


def test_pyautoattack_resnet18_imports_with_pytorchs_logits(imported_resnet18, record_property):
    run, path, net, stdout, loaded = imported_resnet18
    assert "imported resnet18_cifar" in stdout
    assert loaded.config.model.name == "resnet18" and loaded.config.dataset.name == "cifar10"
    assert tuple(loaded.config.dataset.mean) == (0.0,) * 3
    assert tuple(loaded.config.dataset.std) == (1.0,) * 3
    x = _images(16, 32, seed=1)
    ours = np.asarray(jax.jit(loaded.apply_fn)(x))
    theirs = _torch_logits(net, x)
    diff = float(np.abs(ours - theirs).max())
    record_property("max_abs_logit_diff", diff)
    print(
        f"pyautoattack ResNet-18: max |logit difference| {diff:.2e} over 16 images "
        f"(logits up to {np.abs(theirs).max():.1f})"
    )
    assert diff <= 1e-4, diff
    assert (ours.argmax(1) == theirs.argmax(1)).all()

    with open(os.path.join(run, "provenance.json")) as f:
        provenance = json.load(f)
    with open(path, "rb") as f:
        assert provenance["sha256"] == hashlib.sha256(f.read()).hexdigest()
    assert provenance["source"] == os.path.abspath(path)
    assert provenance["zoo_entry"] == "pyautoattack/examples/model_test.pt"
    assert provenance["torch_version"] == torch.__version__
    assert provenance["arch"] == "resnet18_cifar"
    assert provenance["normalization"]["from"].startswith("identity")
    with open(os.path.join(run, "summary.json")) as f:
        assert json.load(f)["imported"] is True
    assert not [n for n in os.listdir(os.path.dirname(run)) if n.startswith(".")]


def test_normalization_flags_become_the_models_first_layer(tmp_path):
    """--mean/--std: a checkpoint trained on normalized inputs takes [0, 1] images."""
    net = randomize(CifarResNet((1, 1, 1, 1), SMALL_WIDTHS), 32)
    model = ResNet(10, "basic", (1, 1, 1, 1), SMALL_WIDTHS, "cifar", mean=CIFAR_MEAN, std=CIFAR_STD)
    prepared = convert.prepare(loading.read_state_dict(net.state_dict()))
    mean, std, origin = import_workdir.resolve_normalization(
        CIFAR_MEAN, CIFAR_STD, prepared.normalization, 3
    )
    assert (mean, std, origin) == (CIFAR_MEAN, CIFAR_STD, "flags")
    variables, _ = convert.to_flax(
        prepared.tensors,
        layouts.CIFAR_RESNET,
        model,
        convert.template_variables(model, (32, 32, 3)),
    )
    x = _smooth_images(4, seed=1)
    normalized = (x - np.array(CIFAR_MEAN, np.float32)) / np.array(CIFAR_STD, np.float32)
    ours = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
    assert np.abs(np.asarray(ours) - _torch_logits(net, normalized)).max() <= 1e-4


def test_resolve_normalization_rules():
    resolve = import_workdir.resolve_normalization
    assert resolve(None, None, None, 3) == (
        (0.0,) * 3,
        (1.0,) * 3,
        "identity (inputs used as they are)",
    )
    assert resolve(None, None, ((0.5,), (0.25,)), 3)[:2] == ((0.5,) * 3, (0.25,) * 3)
    assert resolve([0.5] * 3, [0.25] * 3, ((0.5,) * 3, (0.25,) * 3), 3)[2] == "flags"
    with pytest.raises(ValueError, match="contradict the normalization buffers"):
        resolve([0.4] * 3, [0.25] * 3, ((0.5,) * 3, (0.25,) * 3), 3)
    with pytest.raises(ValueError, match="--mean=0.5,0.5 has 2 values; .* 3 channels"):
        resolve([0.5, 0.5], [0.2, 0.2], None, 3)
    with pytest.raises(ValueError, match="--mean and --std together"):
        resolve([0.5] * 3, None, None, 3)
    with pytest.raises(ValueError, match="must be > 0"):
        resolve([0.5] * 3, [0.2, 0.0, 0.2], None, 3)


# ---------------------------------------------------------------------------------------------
# Bad input: a clear error, and no workdir


@pytest.fixture(scope="module")
def r18_state_dict():
    return torch.load(_pyautoattack_weights(), map_location="cpu", weights_only=True)


def _fails(tmp_path, exc, match, *args, **kw):
    run = tmp_path / "run"
    with pytest.raises(exc, match=match):
        import_workdir.import_checkpoint(*args, workdir=str(run), **kw)
    assert not run.exists()
    assert os.listdir(tmp_path) == []  # no temporary sibling left either
    return run


def test_unknown_arch_lists_the_known_ones(tmp_path):
    _fails(
        tmp_path,
        ValueError,
        r"unknown architecture 'resnet19'.*resnet18_cifar.*wrn_70_16",
        "resnet19",
        "w.pt",
        "cifar10",
    )


def test_unknown_dataset_lists_the_valid_ones(tmp_path):
    _fails(
        tmp_path,
        ValueError,
        r"unknown dataset 'cifar11'.*cifar10, cifar100, imagenet2012",
        "resnet18_cifar",
        "w.pt",
        "cifar11",
    )


def test_missing_file(tmp_path):
    _fails(
        tmp_path,
        FileNotFoundError,
        "weights file .*nope.pt.* not found",
        "resnet18_cifar",
        str(tmp_path / "nope.pt"),
        "cifar10",
    )


def test_checksum_mismatch(tmp_path, r18_state_dict):
    weights = tmp_path.parent / f"{tmp_path.name}_w.pt"
    torch.save({k: v for k, v in list(r18_state_dict.items())[:3]}, weights)
    _fails(
        tmp_path,
        ChecksumMismatch,
        "has sha256 [0-9a-f]{64}, expected 0{64}",
        "resnet18_cifar",
        str(weights),
        "cifar10",
        sha256="0" * 64,
    )
    _fails(
        tmp_path,
        ValueError,
        "not a sha256",
        "resnet18_cifar",
        str(weights),
        "cifar10",
        sha256="abc",
    )


def test_missing_extra_and_misshaped_tensors_are_named(tmp_path, r18_state_dict):
    bad = dict(r18_state_dict)
    del bad["linear.bias"]
    bad["head.weight"] = torch.zeros(3)
    bad["layer1.0.conv1.weight"] = torch.zeros(64, 64, 5, 5)
    weights = tmp_path.parent / f"{tmp_path.name}_bad.pt"
    torch.save(bad, weights)
    _fails(
        tmp_path,
        StateDictMismatch,
        r"missing 1 tensor\(s\): linear.bias; unexpected 1 tensor\(s\): head.weight; 1 "
        r"tensor\(s\) of the wrong shape: layer1.0.conv1.weight \(64, 64, 5, 5\) "
        r"\(expected \(64, 64, 3, 3\)\)",
        "resnet18_cifar",
        str(weights),
        "cifar10",
    )


def test_wrong_arch_or_class_count_is_a_shape_error(tmp_path):
    weights = _pyautoattack_weights()
    _fails(
        tmp_path,
        StateDictMismatch,
        r"linear.weight \(10, 512\) \(expected \(100, 512\)\)",
        "resnet18_cifar",
        weights,
        "cifar100",
    )
    _fails(
        tmp_path,
        StateDictMismatch,
        "missing .*bn.weight.*unexpected .*bn1.weight",
        "preact_resnet18",
        weights,
        "cifar10",
    )


def test_a_run_is_never_overwritten(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        import_workdir.import_checkpoint(
            "resnet18_cifar", _pyautoattack_weights(), "cifar10", str(run)
        )
    assert os.listdir(run) == ["config.json"] and (run / "config.json").read_text() == "{}"


def test_not_a_state_dict(tmp_path):
    weights = tmp_path.parent / f"{tmp_path.name}_list.pt"
    torch.save([torch.zeros(2)], weights)
    _fails(
        tmp_path,
        ValueError,
        "holds a list, not a state_dict",
        "resnet18_cifar",
        str(weights),
        "cifar10",
    )


def test_without_torch_the_error_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    _fails(
        tmp_path,
        ImportError,
        r"pip install 'flatrob_jax\[torch\]'",
        "resnet18_cifar",
        _pyautoattack_weights(),
        "cifar10",
    )


# ---------------------------------------------------------------------------------------------
# The imported model measured here and by the PyTorch peers


@pytest.mark.slow
def test_imported_model_curvature_and_apgd_match_the_peers(imported_resnet18, record_property):
    """lambda_max and the Hutchinson trace of the imported ResNet-18's loss equal PyHessian's
    on the same 4 examples (the tolerances of test_curvature_pyhessian); APGD-CE robust
    accuracy at a small eps equals pyautoattack's on 8 images up to one image."""
    from flatrob_jax import attacks, curvature

    pyhessian = pytest.importorskip("pyhessian")
    from pyautoattack.autopgd_base import APGDAttack

    _, _, net, _, loaded = imported_resnet18

    x = _smooth_images(4, seed=2)
    y = np.random.default_rng(2).integers(0, 10, 4)
    obj = curvature.from_flax(loaded.model, loaded.variables, x, y, batch_size=4, mesh=make_mesh(1))
    top = curvature.lanczos(obj.hvp, obj.params, jax.random.key(0), num_steps=20, tol=1e-5)
    torch.manual_seed(0)
    ph = pyhessian.hessian(
        net, torch.nn.CrossEntropyLoss(), data=(_nhwc_to_nchw(x), torch.from_numpy(y)), cuda=False
    )
    (top_theirs,), _ = ph.eigenvalues(maxIter=20, tol=1e-4)  # converged by ~15
    record_property("lambda_max", (float(top.eigenvalues[0]), float(top_theirs)))
    np.testing.assert_allclose(top.eigenvalues[0], top_theirs, rtol=1e-3)
    samples = np.asarray(ph.trace(maxIter=10, tol=0.0))
    theirs, theirs_se = samples.mean(), samples.std(ddof=1) / np.sqrt(len(samples))
    tr = curvature.hutchinson_trace(obj.hvp, obj.params, jax.random.key(1), num_probes=10)
    record_property("trace", (float(tr.trace), float(theirs)))
    assert abs(tr.trace - theirs) <= 3 * np.hypot(tr.stderr, theirs_se), (tr.trace, theirs)

    n, eps, steps = 8, 1 / 255, 10
    xa = _smooth_images(n, seed=3)
    ya = _torch_logits(net, xa).argmax(1)  # the model's own labels: clean accuracy 1
    ref = APGDAttack(net, n_iter=steps, norm="Linf", eps=eps, loss="ce", device="cpu", seed=0)
    x_ref = ref.perturb(_nhwc_to_nchw(xa), torch.from_numpy(ya))
    with torch.no_grad():
        acc_theirs = float((net(x_ref).argmax(1).numpy() == ya).mean())
    x_adv = attacks.apgd(
        loaded.apply_fn,
        xa,
        ya,
        jax.random.key(0),
        eps=eps,
        norm="Linf",
        loss="ce",
        steps=steps,
        execution=Execution(batch_size=n),
    )
    assert np.abs(np.asarray(x_adv) - xa).max() <= eps + 1e-6
    acc_ours = float((np.asarray(jax.jit(loaded.apply_fn)(x_adv)).argmax(1) == ya).mean())
    record_property("apgd_robust_accuracy", (acc_ours, acc_theirs))
    print(
        f"imported ResNet-18: lambda_max {top.eigenvalues[0]:.2f} vs PyHessian {top_theirs:.2f}; "
        f"trace {tr.trace:.0f} +- {tr.stderr:.0f} vs {theirs:.0f} +- {theirs_se:.0f}; APGD-CE "
        f"robust accuracy at 1/255: {acc_ours:.3f} vs pyautoattack {acc_theirs:.3f}"
    )
    assert abs(acc_ours - acc_theirs) <= 1 / n + 1e-9
