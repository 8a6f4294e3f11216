"""Same weights in both frameworks (a tiny Fashion-MNIST CNN ported from Flax to PyTorch):
APGD from the same start follows pyautoattack's trajectory, and FAB-T (deterministic in the
standard version) finds the same adversarial points."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from attacks_support import (
    apply_fn_of,
    fashion_mnist,
    to_nchw,
    to_nhwc,
    torch_twin,
    trained_tiny_cnn,
)

from flatrob_jax.attacks import losses

# The package exports functions named like their modules (apgd): import the modules for the
# building blocks compared here, which have no public name.
apgd_lib = importlib.import_module("flatrob_jax.attacks.apgd")
fab_lib = importlib.import_module("flatrob_jax.attacks.fab")

pytestmark = pytest.mark.peers
N = 32
RECORD = 10
# With 100 iterations the first checkpoint is at iteration 21, so the RECORD compared iterates
# are pure gradient/momentum steps; at checkpoints a halving decision can flip between
# frameworks on an example whose consecutive losses differ only by float noise (the decision
# logic itself is tested exactly on shared loss sequences in test_attacks_units.py).
N_ITER = 100


@pytest.fixture(scope="module")
def setup():
    model, params = trained_tiny_cnn()
    x, y = fashion_mnist("test", N)
    return apply_fn_of(model, params), torch_twin(params), x, y


def test_ported_weights_give_the_same_logits(setup):
    f, net, x, _ = setup
    np.testing.assert_allclose(np.asarray(f(x)), net(to_nchw(x)).detach().numpy(), atol=2e-5)


def _recording(net):
    import torch

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inputs = []

        def forward(self, z):
            self.inputs.append(z.detach().clone())
            return net(z)

    return Recorder()


# Each case compiles a 100-iteration APGD and runs the reference: slow.
_CASES = [
    pytest.param(n, e, loss, marks=pytest.mark.slow)
    for n, e in (("Linf", 8 / 255), ("L2", 0.5))
    for loss in ("ce", "dlr", "dlr-targeted")
]


@pytest.mark.parametrize("norm,eps,loss", _CASES)
def test_apgd_follows_the_reference_trajectory(setup, norm, eps, loss):
    import torch
    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted

    f, net, x, y = setup
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(1), i))(jnp.arange(N))
    x0 = apgd_lib.random_start(keys, jnp.asarray(x), eps, norm)
    target = np.argsort(np.asarray(f(x)), axis=1)[:, -2].astype(np.int32)
    y_target = jnp.asarray(target) if loss == "dlr-targeted" else None
    ours = jax.jit(
        lambda x0: apgd_lib.single_run(
            f,
            jnp.asarray(x),
            jnp.asarray(y),
            x0,
            y_target,
            eps=eps,
            norm=norm,
            loss=loss,
            n_iter=N_ITER,
            record=RECORD,
        )
    )(x0)

    rec = _recording(net)
    if loss == "dlr-targeted":
        ref = APGDAttack_targeted(rec, n_iter=N_ITER, norm=norm, eps=eps, device="cpu")
        ref.y_target = torch.from_numpy(target).long()
    else:
        ref = APGDAttack(rec, n_iter=N_ITER, norm=norm, eps=eps, loss=loss, device="cpu")
    ref.init_hyperparam(to_nchw(x))
    _, acc, _, x_best_adv = ref.attack_single_run(
        to_nchw(x), torch.from_numpy(y).long(), x_init=to_nchw(np.asarray(x0))
    )
    ref_iterates = np.stack([to_nhwc(t) for t in rec.inputs[1 : 1 + RECORD]])

    # Shift-invariant losses (DLR) can have a gradient that cancels to rounding noise
    # (~1e-8); its sign then differs between frameworks.  Compare the other examples.
    # An example is regular if the gradient is not negligible at the start nor at any of the
    # compared iterates.
    grad_fn = jax.jit(
        jax.grad(lambda z: losses.attack_loss(loss, f(z), jnp.asarray(y), y_target).sum())
    )
    points = [x0] + [ours.iterates[i] for i in range(RECORD)]
    grad_size = np.stack([np.abs(np.asarray(grad_fn(p))).reshape(N, -1).max(1) for p in points])
    regular = grad_size.min(0) > 1e-6
    assert regular.sum() >= N // 2
    diff = np.abs(np.asarray(ours.iterates) - ref_iterates).reshape(RECORD, N, -1).max(2)
    assert diff[:, regular].max() < 1e-5, diff.max(0)
    # Over all N_ITER iterations the outcome agrees on all regular examples.
    np.testing.assert_array_equal(np.asarray(ours.robust)[regular], acc.numpy()[regular])


@pytest.mark.slow
@pytest.mark.parametrize("norm,eps", [("Linf", 8 / 255), ("L2", 0.5)])
def test_fab_targeted_single_run_matches_reference(setup, norm, eps):
    import torch
    from pyautoattack.fab_pt import FABAttack_PT

    f, net, x, y = setup
    correct = np.asarray(f(x)).argmax(1) == y
    xs, ys = x[correct], y[correct]
    ref = FABAttack_PT(net, norm=norm, n_iter=100, eps=eps, targeted=True, device="cpu")
    ref.target_class = 2
    want = to_nhwc(
        ref.attack_single_run(
            to_nchw(xs), torch.from_numpy(ys).long(), use_rand_start=False, is_targeted=True
        )
    )
    target = np.argsort(np.asarray(f(xs)), axis=1)[:, -2]
    adv, res2 = jax.jit(
        lambda: fab_lib.single_run_targeted(
            f,
            jnp.asarray(xs),
            jnp.asarray(ys),
            jnp.asarray(target),
            norm=norm,
            n_iter=100,
            alpha_max=0.1,
            eta=1.05,
            beta=0.9,
        )
    )()
    got = np.where((np.asarray(res2) < 1e10)[:, None, None, None], np.asarray(adv), xs)
    dist = np.abs(got - want).reshape(len(xs), -1).max(1)
    # FAB's iterates are continuous in the gradient; float differences stay small on
    # (almost) every example.
    assert np.mean(dist < 1e-3) >= 0.9, dist
