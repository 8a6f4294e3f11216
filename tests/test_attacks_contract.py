"""One contract for every attack in the table ``attacks.ATTACKS`` (like optax's
contrib/_common_test.py): on a tiny linear model and tiny images, each registered attack

* returns points in the eps ball around x and in [0, 1], without NaN;
* is deterministic for a key;
* never raises the accuracy (where it fails it returns the clean image);
* gives the same result sharded over 1 and 4 devices, with different batch sizes;
* runs as its ``execution.Runner`` declares (its host loop where it has one and
  ``Execution.host_loop`` says so, else its compiled program), and both ways take the same
  decisions;
* runs in the AutoAttack cascade exactly as ``run_attack`` runs it alone.

A new ``register``-ed attack is checked here without writing a test for it."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flatrob_jax import attacks, execution
from flatrob_jax.execution import Execution

N, H, W, K = 10, 8, 8, 10
# Small budgets: the contract does not depend on them.
FAST = {"n_iter": 5, "n_queries": 20, "n_target_classes": 3}
KEY = jax.random.key(5)


def _linear(params, x):
    return x.reshape(x.shape[0], -1) @ params["w"] + params["b"]


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    params = {
        "w": jnp.asarray(rng.normal(0, 0.3, (H * W, K)), jnp.float32),
        "b": jnp.zeros((K,), jnp.float32),
    }
    x = rng.uniform(0, 1, (N, H, W, 1)).astype(np.float32)
    f = jax.tree_util.Partial(_linear, params)
    y = np.asarray(f(x)).argmax(1).astype(np.int32)
    y[:2] = (y[:2] + 1) % K  # two examples misclassified from the start
    return f, x, y


def _settings(attack):
    return {k: v for k, v in FAST.items() if k in attack.settings}


def _run(name, f, x, y, norm, eps, batch_size, num_devices, host_loop=None):
    return attacks.run_attack(
        name,
        f,
        x,
        y,
        attacks.attack_key(KEY, name),
        eps=eps,
        norm=norm,
        execution=Execution(batch_size=batch_size, num_devices=num_devices, host_loop=host_loop),
        **_settings(attacks.ATTACKS[name]),
    )


@pytest.fixture
def programs_run(monkeypatch):
    """The programs that ``execution.run_batched`` / ``run_batched_driver`` were asked to run."""
    ran = []
    for fn in ("run_batched", "run_batched_driver"):
        original = getattr(execution, fn)

        def spy(program, *args, _original=original, **kw):
            ran.append(program)
            return _original(program, *args, **kw)

        monkeypatch.setattr(execution, fn, spy)
    return ran


def _accuracy(f, x, y):
    return float((np.asarray(f(x)).argmax(1) == y).mean())


@pytest.mark.parametrize(
    "norm,eps", [("Linf", 8 / 255), pytest.param("L2", 0.5, marks=pytest.mark.slow)]
)
@pytest.mark.parametrize("name", sorted(attacks.ATTACKS))
def test_every_registered_attack_keeps_the_contract(
    problem, programs_run, monkeypatch, name, norm, eps
):
    f, x, y = problem
    runner = attacks.ATTACKS[name].runner
    if norm not in attacks.ATTACKS[name].norms:
        pytest.skip(f"{name} does not support {norm}")
    assert isinstance(runner, execution.Runner)
    x_adv, fooled, *_ = _run(name, f, x, y, norm, eps, batch_size=8, num_devices=4)
    # The tests run on CPU, where host_loop=None (auto) takes the host loop if there is one.
    assert programs_run == [runner.host_loop or runner.program]
    assert x_adv.shape == x.shape and x_adv.dtype == np.float32 and fooled.shape == (N,)
    assert not np.isnan(x_adv).any() and x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    d = (x_adv - x).reshape(N, -1).astype(np.float64)
    size = np.abs(d).max(1) if norm == "Linf" else np.sqrt((d**2).sum(1))
    assert size.max() <= eps + 1e-5
    # Where it fails, the clean image: never more accurate than clean.
    np.testing.assert_array_equal(x_adv[~fooled], x[~fooled])
    assert _accuracy(f, x_adv, y) <= _accuracy(f, x, y)
    pred_adv = np.asarray(f(x_adv)).argmax(1)
    assert (pred_adv[fooled] != y[fooled]).all()
    assert not fooled[:2].any()  # misclassified before the attack: not counted as fooled
    again = _run(name, f, x, y, norm, eps, batch_size=8, num_devices=4)
    np.testing.assert_array_equal(again[0], x_adv)
    one_device = _run(name, f, x, y, norm, eps, batch_size=3, num_devices=1)
    np.testing.assert_array_equal(one_device[1], fooled)
    np.testing.assert_allclose(one_device[0], x_adv, atol=1e-6)
    # The compiled program, asked for: the same decisions (points up to float rounding).
    del programs_run[:]
    compiled = _run(name, f, x, y, norm, eps, batch_size=8, num_devices=4, host_loop=False)
    assert programs_run == [runner.program]
    np.testing.assert_array_equal(compiled[1], fooled)
    np.testing.assert_allclose(compiled[0], x_adv, atol=1e-5)
    if runner.host_loop is None:  # nothing else to run: host_loop=True changes nothing
        host = _run(name, f, x, y, norm, eps, batch_size=8, num_devices=4, host_loop=True)
        np.testing.assert_array_equal(host[0], compiled[0])
    # The AutoAttack cascade runs it as run_attack does (key attack_key(KEY, name), example i
    # by its index): alone, with the small budgets as its settings, the same points.
    spec = attacks.ATTACKS[name]
    fast = dataclasses.replace(spec, settings=dict(spec.settings, **_settings(spec)))
    monkeypatch.setitem(attacks.ATTACKS, name, fast)
    cascade = attacks.autoattack(
        f,
        x,
        y,
        KEY,
        eps=eps,
        norm=norm,
        version="custom",
        attacks=(name,),
        execution=Execution(batch_size=8, num_devices=4),
    )
    clean = np.asarray(f(x)).argmax(1) == y
    np.testing.assert_array_equal(cascade.robust, clean & ~fooled)
    np.testing.assert_allclose(cascade.x_adv, x_adv, atol=1e-6)


def test_the_table_rejects_duplicates_and_unknown_names():
    spec = attacks.ATTACKS["apgd-ce"]
    with pytest.raises(ValueError, match="already registered"):
        attacks.register(spec)
    with pytest.raises(ValueError, match="tag 0 .* already used by 'apgd-ce'"):
        attacks.register(
            attacks.Attack(
                "apgd-ce2", spec.runner, spec.settings, tag=0, keyed=True, targeted=False
            )
        )
    with pytest.raises(TypeError, match="'apgd-ce3': runner must be an execution.Runner"):
        attacks.register(
            attacks.Attack(
                "apgd-ce3", spec.runner.program, spec.settings, tag=99, keyed=True, targeted=False
            )
        )
    with pytest.raises(ValueError, match="'pgd-x'.*apgd-ce"):
        attacks.attack_key(jax.random.key(0), "pgd-x")
    with pytest.raises(ValueError, match=r"unknown settings \['steps'\]"):
        attacks.run_attack(
            "apgd-ce",
            lambda z: z,
            np.zeros((1, 8, 8, 1), np.float32),
            np.zeros(1, np.int32),
            jax.random.key(0),
            eps=0.1,
            norm="Linf",
            steps=3,
        )
