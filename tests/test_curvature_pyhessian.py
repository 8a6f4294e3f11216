"""Against PyHessian (Yao et al. 2020) on the same weights and data: a Flax BatchNorm CNN ported
to PyTorch (NHWC -> NCHW, HWIO -> OIHW kernels, the flatten order of the classifier's rows)."""

import jax
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from test_curvature_models import BnCnn, float64_problem, init

from flatrob_jax import curvature
from flatrob_jax.distributed import make_mesh

pytestmark = pytest.mark.peers

torch = pytest.importorskip("torch")
pyhessian = pytest.importorskip("pyhessian")
from pyhessian.utils import hessian_vector_product  # noqa: E402


class TorchBnCnn(torch.nn.Module):
    """BnCnn of test_curvature_models, in PyTorch (NCHW)."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.bn1 = torch.nn.BatchNorm2d(4, eps=1e-5)
        self.conv2 = torch.nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.bn2 = torch.nn.BatchNorm2d(6, eps=1e-5)
        self.out = torch.nn.Linear(96, 3)

    def forward(self, x):
        x = (x - 0.5) / 0.25
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.out(x.flatten(1))


def _torch_layout(tree):
    """Flax parameter pytree -> list of numpy arrays in TorchBnCnn.parameters() order."""
    dense = np.asarray(tree["out"]["kernel"])  # rows in (h, w, c) order; torch flattens (c, h, w)
    dense = dense.reshape(4, 4, 6, 3).transpose(2, 0, 1, 3).reshape(96, 3).T

    def conv(k):
        return np.asarray(k).transpose(3, 2, 0, 1)  # HWIO -> OIHW

    return [
        conv(tree["conv1"]["kernel"]),
        np.asarray(tree["conv1"]["bias"]),
        np.asarray(tree["bn1"]["scale"]),
        np.asarray(tree["bn1"]["bias"]),
        conv(tree["conv2"]["kernel"]),
        np.asarray(tree["conv2"]["bias"]),
        np.asarray(tree["bn2"]["scale"]),
        np.asarray(tree["bn2"]["bias"]),
        dense,
        np.asarray(tree["out"]["bias"]),
    ]


def _port(variables):
    model = TorchBnCnn()
    with torch.no_grad():
        for p, value in zip(model.parameters(), _torch_layout(variables["params"])):
            p.copy_(torch.from_numpy(np.array(value, dtype=np.float32)))
        for name in ("bn1", "bn2"):
            bn = getattr(model, name)
            bn.running_mean.copy_(
                torch.from_numpy(np.array(variables["batch_stats"][name]["mean"], np.float32))
            )
            bn.running_var.copy_(
                torch.from_numpy(np.array(variables["batch_stats"][name]["var"], np.float32))
            )
    return model.eval()


@pytest.fixture(scope="module")
def problem():
    variables = init(BnCnn())  # float32, the values float64_problem casts
    with jax.enable_x64(True):
        _, _, images, labels, h = float64_problem("bn_cnn")
    obj = curvature.from_flax(BnCnn(), variables, images, labels, batch_size=10, mesh=make_mesh(1))
    torch_model = _port(variables)
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    y = torch.from_numpy(labels.astype(np.int64))
    return obj, variables, images, labels, h, torch_model, x, y


def test_port_gives_the_same_logits(problem):
    obj, variables, images, _, _, torch_model, x, _ = problem
    expected = np.asarray(BnCnn().apply(variables, images, train=False))
    with torch.no_grad():
        np.testing.assert_allclose(torch_model(x).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_hvp_equals_pyhessians_single_batch_and_dataloader_products(problem):
    obj, variables, _, _, _, torch_model, x, y = problem
    flat, unravel = ravel_pytree(obj.params)
    v = unravel(jax.random.normal(jax.random.key(0), flat.shape))
    v_torch = [torch.from_numpy(np.array(a)) for a in _torch_layout(v)]
    ours = _torch_layout(obj.hvp(v))
    criterion = torch.nn.CrossEntropyLoss()
    single = pyhessian.hessian(torch_model, criterion, data=(x, y), cuda=False)
    theirs = [
        t.detach().numpy() for t in hessian_vector_product(single.gradsH, single.params, v_torch)
    ]
    scale = max(np.max(np.abs(t)) for t in theirs)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale)
    # PyHessian's dataloader mode weights batch means by batch size: 10 + 10 + 4 examples
    loader = [(x[i : i + 10], y[i : i + 10]) for i in range(0, 24, 10)]
    full = pyhessian.hessian(torch_model, criterion, dataloader=loader, cuda=False)
    _, thv = full.dataloader_hv_product(v_torch)
    for a, b in zip(ours, thv):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.slow
def test_top_eigenvalue_and_trace_agree_with_pyhessian(problem):
    obj, _, _, _, h, torch_model, x, y = problem
    torch.manual_seed(0)
    ph = pyhessian.hessian(torch_model, torch.nn.CrossEntropyLoss(), data=(x, y), cuda=False)
    (top_theirs,), _ = ph.eigenvalues(maxIter=200, tol=1e-6)
    ours = curvature.lanczos(obj.hvp, obj.params, jax.random.key(0), num_steps=40, tol=1e-5)
    exact = np.linalg.eigvalsh(h)
    np.testing.assert_allclose(ours.eigenvalues[0], top_theirs, rtol=1e-3)
    np.testing.assert_allclose(ours.eigenvalues[0], exact[-1], rtol=1e-4)

    samples = np.asarray(ph.trace(maxIter=100, tol=0.0))  # tol=0: all 100 probes
    theirs, theirs_se = samples.mean(), samples.std(ddof=1) / np.sqrt(len(samples))
    tr = curvature.hutchinson_trace(obj.hvp, obj.params, jax.random.key(1), num_probes=100)
    assert abs(tr.trace - theirs) <= 3 * np.hypot(tr.stderr, theirs_se), (tr.trace, theirs)
    assert abs(theirs - np.trace(h)) <= 3 * theirs_se
    lo, hi = tr.interval()
    assert lo <= np.trace(h) <= hi
