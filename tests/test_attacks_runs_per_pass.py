"""APGD-T's and FAB-T's target classes (and APGD's restarts) run side by side as one batched
program over (run, example) rows (``runs_per_pass``): the same decisions and points as one run
at a time, with the compiled loops and the host loop, on the same per-example keys."""

import jax
import numpy as np
import pytest
from attacks_support import apply_fn_of, fashion_mnist, trained_tiny_cnn

from flatrob_jax import attacks
from flatrob_jax.attacks.apgd import runs_per_pass_for
from flatrob_jax.attacks.fab import fab_targeted
from flatrob_jax.execution import Execution

N = 12


@pytest.fixture(scope="module")
def setup():
    model, params = trained_tiny_cnn()
    x, y = fashion_mnist("test", N)
    return apply_fn_of(model, params), x, y


@pytest.mark.parametrize("host_loop", [True, False])
def test_apgd_t_runs_side_by_side_take_the_same_decisions(setup, host_loop):
    f, x, y = setup
    out = {}
    # 3 targets x 2 restarts = 6 runs: 1 at a time, and 4 (then a padded last group of 2)
    for runs in (1, 4):
        out[runs] = attacks.apgd(
            f,
            x,
            y,
            jax.random.key(3),
            eps=8 / 255,
            norm="Linf",
            loss="dlr-targeted",
            steps=10,
            n_restarts=2,
            n_target_classes=3,
            runs_per_pass=runs,
            return_info=True,
            execution=Execution(batch_size=N, num_devices=2, host_loop=host_loop),
        )
    x_one, info_one = out[1]
    assert 0 < info_one["fooled"].sum() < N  # the case decides something
    for runs in (4,):
        x_side, info_side = out[runs]
        np.testing.assert_array_equal(info_side["fooled"], info_one["fooled"])
        np.testing.assert_array_equal(info_side["zero_grad"], info_one["zero_grad"])
        np.testing.assert_allclose(x_side, x_one, atol=1e-5)


def test_fab_t_target_classes_side_by_side_give_the_same_points(setup):
    f, x, y = setup
    kw = dict(eps=0.1, norm="Linf", n_iter=10, n_target_classes=3, return_info=True)
    how = Execution(batch_size=N, num_devices=2)
    x_one, info_one = fab_targeted(f, x, y, runs_per_pass=1, execution=how, **kw)
    x_side, info_side = fab_targeted(f, x, y, runs_per_pass=2, execution=how, **kw)
    assert 0 < info_one["fooled"].sum() < N
    np.testing.assert_array_equal(info_side["fooled"], info_one["fooled"])
    np.testing.assert_allclose(x_side, x_one, atol=1e-5)


def test_runs_per_pass_keeps_the_rows_within_the_batch_size():
    kw = dict(platform="gpu", loss="dlr-targeted", n_restarts=1, n_target_classes=9)
    assert runs_per_pass_for(500, 1000, **kw) == 1  # full batches: one run at a time
    assert runs_per_pass_for(500, 100, **kw) == 5  # 5 x 100 rows
    assert runs_per_pass_for(500, 8, **kw) == 9  # every target at once
    assert runs_per_pass_for(500, 8, **dict(kw, loss="ce")) == 1  # one run only
    assert runs_per_pass_for(500, 8, **dict(kw, platform="cpu")) == 1  # slower on CPU


def test_runs_per_pass_must_be_a_positive_int_or_none(setup):
    f, x, y = setup
    with pytest.raises(
        ValueError, match=r"runs_per_pass must be None \(auto\) or an int >= 1, got 0"
    ):
        attacks.apgd(f, x, y, jax.random.key(0), eps=0.1, norm="Linf", runs_per_pass=0)
