"""The attacks' host-driven loops (``Execution(host_loop=True)``, the CPU default: a Python
loop of compiled steps) against the compiled loops (``host_loop=False``): the same decisions
(fooled, zero-gradient flags, the runs taken), the same points up to float rounding (XLA
compiles a step alone and inside a loop body with different fusions), on 1 and 4 devices;
each step compiles once."""

import importlib

import chex
import jax
import numpy as np
import pytest
from attacks_support import apply_fn_of, fashion_mnist, trained_tiny_cnn

from flatrob_jax import attacks
from flatrob_jax.distributed import make_mesh
from flatrob_jax.execution import Execution

apgd_lib = importlib.import_module("flatrob_jax.attacks.apgd")
N = 24


@pytest.fixture(scope="module")
def setup():
    model, params = trained_tiny_cnn()
    x, y = fashion_mnist("test", N)
    return apply_fn_of(model, params), x, y


@pytest.mark.parametrize(
    "norm,eps,loss,devices",
    [("Linf", 8 / 255, "ce", 4), ("L2", 0.5, "dlr", 1), ("Linf", 8 / 255, "dlr-targeted", 4)],
)
def test_apgd_host_loop_takes_the_compiled_loops_decisions(setup, norm, eps, loss, devices):
    f, x, y = setup
    out = {}
    for host in (False, True):
        out[host] = attacks.apgd(
            f,
            x,
            y,
            jax.random.key(3),
            eps=eps,
            norm=norm,
            loss=loss,
            steps=20,
            n_restarts=2,
            n_target_classes=3,
            return_info=True,
            execution=Execution(batch_size=12, num_devices=devices, host_loop=host),
        )
    (x_lax, info_lax), (x_host, info_host) = out[False], out[True]
    np.testing.assert_array_equal(info_host["fooled"], info_lax["fooled"])
    np.testing.assert_array_equal(info_host["zero_grad"], info_lax["zero_grad"])
    assert 0 < info_host["fooled"].sum() < N  # the case decides something
    np.testing.assert_allclose(x_host, x_lax, atol=1e-4)
    assert np.abs(x_host - x).reshape(N, -1).max() <= eps + 1e-5 or norm == "L2"


def test_pgd_host_loop_equals_the_compiled_loops(setup):
    f, x, y = setup
    kw = dict(eps=8 / 255, norm="Linf", steps=5, step_size=2 / 255, restarts=2)
    lax_adv = attacks.pgd(
        f,
        x,
        y,
        jax.random.key(1),
        execution=Execution(batch_size=8, num_devices=4, host_loop=False),
        **kw,
    )
    host_adv = attacks.pgd(
        f,
        x,
        y,
        jax.random.key(1),
        execution=Execution(batch_size=8, num_devices=4, host_loop=True),
        **kw,
    )
    np.testing.assert_allclose(host_adv, lax_adv, atol=1e-6)


def test_host_loop_steps_compile_once_and_auto_means_cpu(setup, monkeypatch):
    """13 iterations x 2 runs x 3 batches, twice: one trace of the iteration step."""
    f, x, y = setup
    chex.clear_trace_counter()
    monkeypatch.setattr(
        apgd_lib, "run_iteration", chex.assert_max_traces(apgd_lib.run_iteration, n=1)
    )
    for _ in range(2):
        auto = attacks.apgd(
            f,
            x[:20],
            y[:20],
            jax.random.key(0),
            eps=0.3,
            norm="L2",
            loss="ce",
            steps=13,
            n_restarts=2,
            execution=Execution(batch_size=8, num_devices=2),
        )
    assert Execution().runs_on_host(make_mesh(1)) is True  # tests run on CPU
    with pytest.raises(ValueError, match="host_loop must be True, False or None"):
        Execution(host_loop="yes")
    monkeypatch.undo()
    compiled = attacks.apgd(
        f,
        x[:20],
        y[:20],
        jax.random.key(0),
        eps=0.3,
        norm="L2",
        loss="ce",
        steps=13,
        n_restarts=2,
        execution=Execution(batch_size=8, num_devices=2, host_loop=False),
    )
    np.testing.assert_allclose(auto, compiled, atol=1e-4)


def test_the_execution_value_names_a_bad_field():
    for bad, match in (
        (dict(batch_size=0), "batch_size must be an int >= 1, got 0"),
        (dict(batch_size=2.5), "batch_size must be an int >= 1, got 2.5"),
        (dict(num_devices=0), "num_devices must be None"),
        (dict(host_loop=1), "host_loop must be True, False or None"),
        (dict(log="stdout"), "log must be None or a callable"),
    ):
        with pytest.raises(ValueError, match=match):
            Execution(**bad)
    assert Execution(host_loop=False).runs_on_host(make_mesh(1)) is False


@pytest.mark.slow
def test_autoattack_host_loop_gives_the_same_cascade(setup):
    f, x, y = setup
    res = {
        host: attacks.autoattack(
            f,
            x[:12],
            y[:12],
            jax.random.key(0),
            eps=0.1,
            norm="Linf",
            version="custom",
            attacks=("apgd-ce", "apgd-t"),
            execution=Execution(batch_size=12, num_devices=2, host_loop=host),
        )
        for host in (False, True)
    }
    assert res[True].robust_accuracy_after == res[False].robust_accuracy_after
    np.testing.assert_array_equal(res[True].robust, res[False].robust)
    np.testing.assert_allclose(res[True].x_adv, res[False].x_adv, atol=1e-4)
    assert res[True].checks["zero_gradients"] == res[False].checks["zero_gradients"]
