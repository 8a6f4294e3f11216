"""Unit exactness of the attack building blocks against pyautoattack 0.2.0: losses, FAB
projections, APGD's checkpoint schedule and step-size halving decisions, Square's schedule
and eta patterns."""

import importlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flatrob_jax.attacks import fab_projections, losses, norms

# The package exports functions named like their modules (apgd, square): import the modules.
apgd_lib = importlib.import_module("flatrob_jax.attacks.apgd")
square = importlib.import_module("flatrob_jax.attacks.square")


def _logits(seed, n=64, k=10):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)).astype(np.float32) * 3
    y = rng.integers(0, k, n).astype(np.int32)
    z[: n // 2, :] += 5 * np.eye(k, dtype=np.float32)[y[: n // 2]]  # half: y is the top class
    return z, y


def test_checkpoint_iterations_match_the_paper():
    assert apgd_lib.checkpoint_iterations(100) == [21, 40, 56, 69, 79, 86, 92, 98]


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_projection_stays_in_ball_and_box(norm):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(0, 1, (8, 6, 6, 1)).astype(np.float32))
    z = x + jnp.asarray(rng.normal(size=x.shape).astype(np.float32))
    eps = 0.1
    p = norms.project(z, x, eps, norm)
    tol = 1e-6 if norm == "Linf" else 1e-5
    assert float(norms.lp_norm(p - x, norm).max()) <= eps + tol
    assert float(p.min()) >= 0.0 and float(p.max()) <= 1.0


@pytest.mark.peers
def test_losses_match_pyautoattack():
    import torch
    import torch.nn.functional as F
    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted

    z, y = _logits(0)
    zt, yt = torch.from_numpy(z), torch.from_numpy(y).long()
    ref = APGDAttack(lambda v: v, eps=0.1)
    np.testing.assert_allclose(
        losses.cross_entropy(jnp.asarray(z), jnp.asarray(y)),
        F.cross_entropy(zt, yt, reduction="none").numpy(),
        rtol=1e-6,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        losses.dlr(jnp.asarray(z), jnp.asarray(y)),
        ref.dlr_loss(zt, yt).numpy(),
        rtol=1e-6,
        atol=1e-6,
    )
    ref_t = APGDAttack_targeted(lambda v: v, eps=0.1)
    target = (y + 1 + np.arange(len(y)) % 9) % 10
    ref_t.y_target = torch.from_numpy(target).long()
    np.testing.assert_allclose(
        losses.dlr_targeted(jnp.asarray(z), jnp.asarray(y), jnp.asarray(target)),
        ref_t.dlr_loss_targeted(zt, yt).numpy(),
        rtol=1e-6,
        atol=1e-6,
    )


@pytest.mark.peers
def test_margin_matches_square_attack():
    import torch
    from pyautoattack.square import SquareAttack

    z, y = _logits(1)
    ref = SquareAttack(lambda v: v.clone(), eps=0.1)
    margin, loss = ref.margin_and_loss(torch.from_numpy(z), torch.from_numpy(y).long())
    np.testing.assert_allclose(
        losses.margin(jnp.asarray(z), jnp.asarray(y)), margin.numpy(), rtol=1e-6, atol=1e-6
    )
    np.testing.assert_array_equal(margin.numpy(), loss.numpy())


@pytest.mark.peers
@pytest.mark.parametrize("name", ["projection_linf", "projection_l2"])
@pytest.mark.parametrize("dim", [50, 784])
def test_fab_projections_match_pyautoattack(name, dim):
    import torch
    from pyautoattack import fab_projections as ref

    rng = np.random.default_rng(dim)
    n = 64
    t = rng.uniform(0, 1, (n, dim)).astype(np.float32)
    t[:, : dim // 3] = 0.0  # background pixels: ties among the break points
    w = rng.normal(size=(n, dim)).astype(np.float32)
    w[:, ::7] = 0.0
    b = (rng.normal(size=n) * 3).astype(np.float32)
    want = getattr(ref, name)(*(torch.from_numpy(a) for a in (t, w, b))).numpy()
    got = np.asarray(getattr(fab_projections, name)(*(jnp.asarray(a) for a in (t, w, b))))
    np.testing.assert_allclose(got, want, atol=1e-6)


class _LogitTable:
    """A torch 'model' returning a fixed logit table per call (ignoring x except for a zero
    gradient path) and recording the step size APGD uses at each iteration."""

    def __init__(self, table):
        self.table = table
        self.calls = 0
        self.step_sizes = []

    def __call__(self, x):
        frame = sys._getframe(1)
        if frame.f_code.co_name == "attack_single_run" and "step_size" in frame.f_locals:
            self.step_sizes.append(frame.f_locals["step_size"].flatten().clone().numpy())
        out = self.table[self.calls] + 0.0 * x.sum(dim=(1, 2, 3))[:, None]
        self.calls += 1
        return out


def _loss_patterns(n_iter, rng):
    """Per-example logit sequences z_t (loss softplus(z_t) with y=0, logits [0, z_t])."""
    t = np.arange(n_iter + 2, dtype=np.float32)
    patterns = [
        0.05 * t,  # steady rise: few halvings
        -0.01 * t,  # steady fall: halve at every checkpoint
        np.zeros_like(t),  # flat
        rng.normal(size=t.shape),  # noise: oscillation
        np.where(t < 40, 0.05 * t, 2.0),  # rise then plateau
        np.where(t % 2 == 0, 0.02 * t, -1.0),  # zig-zag with a rising envelope
        np.cumsum(rng.normal(size=t.shape) * 0.1),  # random walk
        np.where(t < 60, np.sin(t / 3.0), 0.03 * t),
    ]
    z = np.stack(patterns, axis=1).astype(np.float32) - 3.0  # call 0 classifies correctly
    z[0] = -5.0
    return z


@pytest.mark.peers
@pytest.mark.parametrize("n_iter", [100, 37])
def test_step_size_halving_decisions_match_pyautoattack(n_iter):
    import torch
    import torch.nn.functional as F
    from pyautoattack.autopgd_base import APGDAttack

    z = _loss_patterns(n_iter, np.random.default_rng(n_iter))
    b = z.shape[1]
    table = torch.from_numpy(np.stack([np.zeros_like(z), z], axis=-1))  # [calls, B, 2]
    model = _LogitTable(table)
    eps = 0.25
    attack = APGDAttack(model, n_iter=n_iter, norm="Linf", eps=eps, loss="ce", seed=0, device="cpu")
    y = torch.zeros(b, dtype=torch.long)
    attack.perturb(torch.full((b, 1, 2, 2), 0.5), y)
    ref_steps = np.stack(model.step_sizes)  # [n_iter, B]: step size used at iteration i
    assert ref_steps.shape == (n_iter, b)

    # Our checkpoint logic, driven by the same losses (calls 1.. are the attack's).
    seq = (
        F.cross_entropy(table.reshape(-1, 2), y.repeat(table.shape[0]), reduction="none")
        .reshape(table.shape[0], b)
        .numpy()
    )
    loss_best = jnp.asarray(seq[1])
    state = apgd_lib.init_check_state(loss_best, n_iter)
    loss_steps = jnp.zeros((n_iter, b), jnp.float32)
    step = np.full(b, 2 * eps, np.float32)
    check = jax.jit(
        lambda st, ls, lb, i: apgd_lib.checkpoint_step(st, ls, lb, i, n_iter=n_iter, rho=0.75)
    )
    ours = []
    for i in range(n_iter):
        ours.append(step.copy())
        loss_i = jnp.asarray(seq[2 + i])
        loss_steps = loss_steps.at[i].set(loss_i)
        loss_best = jnp.where(loss_i > loss_best, loss_i, loss_best)
        halve, state = check(state, loss_steps, loss_best, jnp.int32(i))
        step = np.where(np.asarray(halve), step / 2, step)
    ours = np.stack(ours)
    np.testing.assert_array_equal(ours, ref_steps)
    assert len(np.unique(ours[-1])) > 2  # the patterns exercise different decisions


@pytest.mark.peers
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_square_schedule_matches_pyautoattack(norm):
    import math

    from pyautoattack.square import SquareAttack

    ref = SquareAttack(
        lambda v: v, norm=norm, eps=0.1, p_init=0.8, n_queries=5000, resc_schedule=False
    )
    h = w = 28
    sizes = square.square_sizes(norm, 0.8, 5000, h, w)
    for it in range(5000):
        p = ref.p_selection(it)
        assert p == square.p_selection(0.8, it, 5000)
        s = int(round(math.sqrt(p * h * w)))
        s = max(s, 1) if norm == "Linf" else max(s, 3) + (max(s, 3) % 2 == 0)
        assert sizes[it] == min(s, h)


@pytest.mark.peers
@pytest.mark.parametrize("s", [3, 5, 7, 11, 25])
def test_square_eta_matches_pyautoattack(s):
    import torch
    from pyautoattack.square import SquareAttack

    ref = SquareAttack(lambda v: v, norm="L2", eps=0.1, device="cpu")
    torch.manual_seed(0)
    got = [ref.eta(s).numpy() for _ in range(8)]  # random transposes
    mine = square.eta(s)
    for g in got:
        assert np.allclose(g, mine, atol=1e-6) or np.allclose(g, mine.T, atol=1e-6)
