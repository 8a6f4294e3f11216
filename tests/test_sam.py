"""SAM and adaptive SAM (ASAM) as optimizer options: the update against its formula on a
quadratic, the flatter minimum they reach, and the data-parallel step on 1 and 4 devices."""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from flatrob_jax import curvature, distributed
from flatrob_jax.augment import build_train_augmentation, default_config
from flatrob_jax.models import get_model
from flatrob_jax.training.optimizer import build_optimizer, sam_ascent
from flatrob_jax.training.state import create_train_state
from flatrob_jax.training.steps import make_train_step


def _opt_cfg(rho=0.0, adaptive=False, lr=0.1, eta=0.01, **kw):
    c = dict(
        name="sgd",
        learning_rate=lr,
        momentum=0.0,
        nesterov=False,
        weight_decay=0.0,
        warmup_epochs=0.0,
        schedule="constant",
        sam_rho=rho,
        sam_adaptive=adaptive,
        sam_eta=eta,
    )
    c.update(kw)
    return ml_collections.ConfigDict(c)


# A quadratic L(w) = 1/2 w^T A w + b^T w over a two-leaf pytree (the norms are over the tree).
_RNG = np.random.default_rng(0)
_M = _RNG.normal(size=(5, 5))
A = _M @ _M.T / 5 + np.eye(5)
B = _RNG.normal(size=5)
W0 = {"a": np.array([0.5, -1.0, 0.0]), "b": np.array([2.0, -0.3])}


def _flat(tree):
    return np.concatenate([np.asarray(tree["a"], np.float64), np.asarray(tree["b"], np.float64)])


def _tree(v):
    return {"a": v[:3], "b": v[3:]}


def _grad64(w):
    return A @ w + B


def _grad_tree(params):
    w = jnp.concatenate([params["a"], params["b"]])
    g = jnp.asarray(A, jnp.float32) @ w + jnp.asarray(B, jnp.float32)
    return _tree(g)


def _steps(cfg, num_steps):
    tx, _ = build_optimizer(cfg, total_steps=100, steps_per_epoch=10)
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), W0)
    state = tx.init(params)
    for _ in range(num_steps):
        updates, state = tx.update(
            _grad_tree(params), state, params, grad_fn=lambda p, i: _grad_tree(p)
        )
        params = optax.apply_updates(params, updates)
    return _flat(params)


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_update_is_the_formula_on_a_quadratic(adaptive):
    """w' = w - lr * grad(w + e), e = rho g/|g| (SAM) or rho T^2 g/|T g|, T = |w| + eta (ASAM),
    computed in float64 with numpy, over three steps."""
    lr, rho, eta = 0.1, (0.5 if adaptive else 0.05), 0.01
    w = _flat(W0)
    for _ in range(3):
        g = _grad64(w)
        if adaptive:
            t = np.abs(w) + eta
            e = rho * t**2 * g / np.linalg.norm(t * g)
        else:
            e = rho * g / np.linalg.norm(g)
        w = w - lr * _grad64(w + e)
    got = _steps(_opt_cfg(rho, adaptive, lr, eta), 3)
    np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)
    plain = _steps(_opt_cfg(0.0, lr=lr), 3)
    assert np.max(np.abs(got - plain)) > 1e-3  # the ascent step matters here


def test_sam_keeps_weight_decay_on_w_and_momentum_in_the_base_optimizer():
    """With decay and momentum: the ascent uses the loss gradient only; the base SGD decays
    w (not w + e) and accumulates the gradients at the ascent points."""
    lr, rho, mu, wd = 0.1, 0.05, 0.9, 0.01
    w, buf = _flat(W0), None
    for _ in range(2):
        g = _grad64(w)
        d = _grad64(w + rho * g / np.linalg.norm(g)) + wd * w
        buf = d if buf is None else mu * buf + d
        w = w - lr * buf
    got = _steps(_opt_cfg(rho, lr=lr, momentum=mu, weight_decay=wd), 2)
    np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)


def test_sam_ascent_of_a_zero_gradient_is_zero_not_nan():
    params = {"w": jnp.ones(3)}
    for adaptive in (False, True):
        tx = sam_ascent(0.1, adaptive=adaptive)
        out, _ = tx.update({"w": jnp.zeros(3)}, tx.init(params), params)
        np.testing.assert_array_equal(out["w"], 0.0)


def test_bad_sam_settings_name_the_value():
    with pytest.raises(ValueError, match=r"sam_rho=-0.1"):
        build_optimizer(_opt_cfg(-0.1), 10, 1)
    with pytest.raises(ValueError, match=r"sam_adaptive=True needs optimizer.sam_rho > 0"):
        build_optimizer(_opt_cfg(0.0, adaptive=True), 10, 1)


class _MLP(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        x = nn.relu(nn.Dense(32)(x))
        x = nn.relu(nn.Dense(32)(x))
        return nn.Dense(4)(x)


def test_sam_and_asam_reach_a_lower_lambda_max_than_sgd():
    """Full-batch training of a small MLP on 256 noisy-label points, 300 steps at lr 0.5 from
    the same initialization: both reach a low training loss; SAM (rho 0.1) and ASAM (rho 0.5)
    end at a smaller top Hessian eigenvalue (measured: SGD 2.58, SAM 1.39, ASAM 1.97)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype(np.float32)
    y = np.argmax(x @ rng.normal(size=(8, 4)) + rng.normal(size=(256, 4)), -1).astype(np.int32)
    model = _MLP()
    params0 = model.init(jax.random.key(0), x[:1])["params"]

    def loss(p):
        logits = model.apply({"params": p}, x)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

    grad = jax.grad(loss)

    def train(cfg, steps=300):
        tx, _ = build_optimizer(cfg, steps, 1)
        tx = optax.with_extra_args_support(tx)

        @jax.jit
        def run(p, s):
            def body(carry, _):
                p, s = carry
                u, s = tx.update(grad(p), s, p, grad_fn=lambda q, i: grad(q))
                return (optax.apply_updates(p, u), s), None

            return jax.lax.scan(body, (p, s), None, length=steps)[0][0]

        p = run(params0, tx.init(params0))
        objective = curvature.from_flax(
            model, {"params": p}, x, y, batch_size=256, mesh=distributed.make_mesh(1)
        )
        top = curvature.lanczos(objective.hvp, p, jax.random.key(1), num_steps=30)
        return float(loss(p)), float(top.eigenvalues[0])

    sgd_loss, sgd_lmax = train(_opt_cfg(0.0, lr=0.5))
    sam_loss, sam_lmax = train(_opt_cfg(0.1, lr=0.5))
    asam_loss, asam_lmax = train(_opt_cfg(0.5, adaptive=True, lr=0.5))
    assert max(sgd_loss, sam_loss, asam_loss) < 0.1, (sgd_loss, sam_loss, asam_loss)
    assert sam_lmax < 0.75 * sgd_lmax, (sam_lmax, sgd_lmax)
    assert asam_lmax < 0.9 * sgd_lmax, (asam_lmax, sgd_lmax)


def _batch(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, (n, 28, 28, 1)).astype(np.uint8),
        "label": rng.integers(0, 10, n).astype(np.int32),
    }


@functools.lru_cache(maxsize=None)
def _sam_steps(num_devices, rho, adaptive=False, steps=2):
    """[(state, metrics)] after each of ``steps`` data-parallel steps of the tiny CNN (cached:
    the tests below share the compiled runs)."""
    mesh = distributed.make_mesh(num_devices)
    cfg = default_config()
    cfg.name = "standard"
    model = get_model("cnn_tiny", 10, axis_name=distributed.AXIS)
    tx, _ = build_optimizer(_opt_cfg(rho, adaptive, lr=0.1, momentum=0.9, weight_decay=5e-4), 10, 5)
    state = distributed.replicate(
        mesh, create_train_state(jax.random.key(0), model, tx, (28, 28, 1))
    )
    step = make_train_step(
        mesh,
        augmentation=build_train_augmentation(cfg),
        num_classes=10,
        label_smoothing=0.1,
        donate=False,
    )
    key = distributed.replicate(mesh, jax.random.key(7))
    out = []
    for s in range(steps):
        state, metrics = step(state, distributed.shard_host_batch(mesh, _batch(seed=s)), key)
        out.append(jax.device_get((state, metrics)))
    return out


@pytest.mark.parametrize("adaptive", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_sam_step_is_the_same_on_one_and_four_devices(adaptive):
    """Both gradients are averaged over devices: the ascent point, the step and the BatchNorm
    statistics are those of the global batch."""
    rho = 0.5 if adaptive else 0.05
    one, m1 = _sam_steps(1, rho, adaptive)[-1]
    four, m4 = _sam_steps(4, rho, adaptive)[-1]
    chex.assert_trees_all_close(one.params, four.params, atol=2e-6, rtol=1e-5)
    chex.assert_trees_all_close(one.batch_stats, four.batch_stats, atol=2e-6, rtol=1e-5)
    chex.assert_trees_all_close(m1, m4, atol=1e-5)
    assert int(one.step) == int(four.step) == 2


def test_sam_step_updates_batchnorm_statistics_from_the_pass_at_w_only():
    """One step from the same state on the same batch: SAM's parameters differ from SGD's, its
    BatchNorm running statistics and reported loss do not (both come from the pass at w)."""
    sam, m_sam = _sam_steps(1, 0.05)[0]
    plain, m_plain = _sam_steps(1, 0.0)[0]
    chex.assert_trees_all_close(sam.batch_stats, plain.batch_stats, atol=1e-7)
    np.testing.assert_allclose(m_sam["loss"], m_plain["loss"], rtol=1e-6)
    diff = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), sam.params, plain.params)
    assert max(jax.tree.leaves(diff)) > 1e-6


def test_paper_sweeps_carry_the_design_and_the_intervention_arm():
    """Every paper sweep: 17 label-preserving conditions (3 seeds, 5 for none and standard),
    none stopped at the reference's end point (3 seeds), and 8 interventions on the reference
    augmentation (3 seeds), each changing one factor of its base config."""
    from flatrob_jax.configs.sweeps import paper
    from flatrob_jax.study import load_sweep, plan

    for name in (
        "cifar10_wrn40_2",
        "cifar100_wrn40_2",
        "cifar10_resnet18",
        "cifar10_preact_resnet18",
    ):
        sweep = load_sweep(f"{name}_augmentations")
        assert len(sweep.runs) == 15 * 3 + 2 * 5 + 3 + 8 * 3, name
        assert len(load_sweep(f"{name}_augmentations:seeds=1").runs) == 17 + 1 + 8
        assert len(load_sweep(f"{name}_augmentations:interventions=false").runs) == 58
    jobs = plan(load_sweep("cifar10_preact_resnet18_augmentations"), "/r").jobs

    def intervention(overrides):
        return any(k.startswith(("optimizer.", "train.")) for k in overrides)

    conditions = {
        tuple(sorted((k, v) for k, v in j.overrides.items() if k != "seed"))
        for j in jobs
        if not intervention(j.overrides) and not j.match_loss_of
    }
    assert len(conditions) == 17
    matched = [j for j in jobs if j.match_loss_of]
    assert len(matched) == 3 and {j.match_loss_of for j in matched} == {"name=standard,seed=0"}
    assert list(jobs[-3:]) == matched  # after the run they match
    configs = {job.name: job.config for job in jobs if job.overrides.get("seed") == 0}
    ref = configs["name=standard,seed=0"]
    assert ref.model.name == "preact_resnet18" and ref.optimizer.sam_rho == 0.0
    arm = [c for n, c in configs.items() if n.startswith("name=standard,") and c is not ref]
    assert len(arm) == 8 and all(c.augment.name == "standard" for c in arm)
    sam = sorted(
        (c.optimizer.sam_rho, c.optimizer.sam_adaptive) for c in arm if c.optimizer.sam_rho > 0
    )
    assert sam == [(0.05, False), (0.1, False), (0.5, True), (1.0, True)]
    assert sorted(
        c.optimizer.weight_decay / ref.optimizer.weight_decay
        for c in arm
        if c.optimizer.weight_decay != ref.optimizer.weight_decay
    ) == [0.5, 2.0]
    scaled = [c for c in arm if c.train.batch_size != ref.train.batch_size]
    for c in scaled:  # lr and batch move together, nothing else does
        f = c.train.batch_size / ref.train.batch_size
        assert c.optimizer.learning_rate == pytest.approx(ref.optimizer.learning_rate * f)
    assert sorted(c.train.batch_size for c in scaled) == [64, 256]
    with pytest.raises(ValueError, match=r"factor 0.3 gives batch size"):
        paper.lr_batch_scaled(0.1, 128, (0.3,))
