"""Sharpness measures: closed forms on quadratics/linear losses, and the reparameterization
check (Dinh et al. 2017) on a ReLU MLP."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from test_curvature_models import float64_problem

from flatrob_jax import curvature
from flatrob_jax.distributed import make_mesh


def _quadratic(dim=30, seed=0):
    rng = np.random.RandomState(seed)
    a = rng.randn(dim, dim)
    matrix = jnp.asarray(a @ a.T / dim)
    center = jnp.asarray(rng.randn(dim))

    def loss(params):
        d = params["w"] - center
        return 0.5 * d @ matrix @ d

    return loss, matrix, center


def test_average_adaptive_sharpness_equals_its_closed_form_on_a_quadratic():
    with jax.enable_x64(True):
        loss, matrix, center = _quadratic()
        w = {"w": center + 0.5}
        rho = 0.1
        result = curvature.adaptive_sharpness_average(
            jax.jit(loss), w, jax.random.key(0), rho=rho, num_samples=400
        )
        exact = (
            0.5 * rho**2 * float(jnp.sum(jnp.diag(matrix) * w["w"] ** 2))
        )  # E[L(w + rho|w|xi)] - L(w)
        assert abs(result.value - exact) <= 4 * result.stderr
        assert result.num_evaluations == 401


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_worst_case_adaptive_sharpness_of_a_linear_loss(norm):
    with jax.enable_x64(True):
        g = jnp.asarray(np.random.RandomState(1).randn(20))
        w = {"w": jnp.asarray(np.random.RandomState(2).randn(20))}
        value_and_grad = jax.jit(jax.value_and_grad(lambda p: g @ p["w"]))
        result = curvature.adaptive_sharpness_worst(value_and_grad, w, rho=0.05, norm=norm, steps=5)
        scaled = jnp.abs(w["w"] * g)
        exact = 0.05 * float(jnp.linalg.norm(scaled) if norm == "l2" else jnp.sum(scaled))
        np.testing.assert_allclose(result.value, exact, rtol=1e-9)


def test_keskar_sharpness_reaches_the_far_corner_of_the_box():
    with jax.enable_x64(True):
        diag = jnp.asarray(np.random.RandomState(3).uniform(0.5, 2.0, 25))
        center = jnp.asarray(np.random.RandomState(4).randn(25))
        w = {"w": center + jnp.asarray(np.random.RandomState(5).randn(25))}

        def loss(p):
            return 0.5 * jnp.sum(diag * (p["w"] - center) ** 2)

        result = curvature.keskar_sharpness(jax.jit(jax.value_and_grad(loss)), w, epsilon=1e-2)
        corner = {"w": w["w"] + jnp.sign(w["w"] - center) * 1e-2 * (jnp.abs(w["w"]) + 1)}
        l0, l1 = float(loss(w)), float(loss(corner))
        np.testing.assert_allclose(result.value, 100 * (l1 - l0) / (1 + l0), rtol=1e-8)


@pytest.mark.parametrize("magnitude_aware", [False, True])
def test_pac_bayes_sigma_solves_the_quadratic_constraint(magnitude_aware):
    with jax.enable_x64(True):
        loss, matrix, center = _quadratic(seed=6)
        w = {"w": center}  # at the minimum: E L(w + u) - L(w) = 0.5 E[u^T A u]
        result = curvature.pac_bayes_sigma(
            jax.jit(loss),
            w,
            jax.random.key(0),
            target=0.2,
            num_samples=200,
            magnitude_aware=magnitude_aware,
            mag_eps=1e-3,
        )
        d = jnp.diag(matrix)
        if magnitude_aware:  # 0.5 * sum_i A_ii (sigma^2 w_i^2 + eps^2) = target
            exact = np.sqrt((2 * 0.2 - float(jnp.sum(d)) * 1e-6) / float(jnp.sum(d * center**2)))
        else:  # 0.5 * sigma^2 tr(A) = target
            exact = np.sqrt(2 * 0.2 / float(jnp.sum(d)))
        assert result.sigma <= result.sigma_upper <= result.sigma * 1.001
        assert result.deviation <= 0.2
        np.testing.assert_allclose(result.sigma, exact, rtol=0.1)  # Monte Carlo with 200 samples
        np.testing.assert_allclose(result.sharpness, 1 / result.sigma**2)


def test_reparameterization_changes_lambda_max_as_predicted_but_not_adaptive_sharpness():
    """ReLU(c W1 x + c b1) = c ReLU(W1 x + b1): scaling layer 1 by c and W2 by 1/c keeps the
    function. In the new coordinates w' = D w the Hessian is D^-1 H D^-1 (at a point where the
    loss is smooth), so lambda_max becomes the top eigenvalue of that matrix."""
    c = 4.0
    with jax.enable_x64(True):
        model, variables, images, labels, h = float64_problem("mlp")
        obj = curvature.from_flax(
            model, variables, images, labels, batch_size=24, mesh=make_mesh(1)
        )
        params = obj.params
        scale = {"hidden": {"bias": c, "kernel": c}, "out": {"bias": 1.0, "kernel": 1.0 / c}}
        reparam = jax.tree_util.tree_map(lambda w, s: w * s, params, scale)
        moved = obj.at(reparam)
        np.testing.assert_allclose(float(obj.loss(reparam)), float(obj.loss(params)), rtol=1e-12)

        d = np.asarray(
            ravel_pytree(jax.tree_util.tree_map(lambda w, s: jnp.full_like(w, s), params, scale))[0]
        )
        predicted = np.linalg.eigvalsh(h / np.outer(d, d))[-1]
        before = curvature.lanczos(obj.hvp, params, jax.random.key(0), num_steps=80, tol=1e-8)
        after = curvature.lanczos(moved.hvp, reparam, jax.random.key(0), num_steps=80, tol=1e-8)
        np.testing.assert_allclose(before.eigenvalues[0], np.linalg.eigvalsh(h)[-1], rtol=1e-6)
        np.testing.assert_allclose(after.eigenvalues[0], predicted, rtol=1e-6)
        assert (
            abs(after.eigenvalues[0] / before.eigenvalues[0] - 1) > 0.5
        )  # the Hessian is not invariant

        key = jax.random.key(1)
        for measure in (
            lambda p: (
                curvature.adaptive_sharpness_average(
                    obj.loss, p, key, rho=0.05, num_samples=4
                ).value
            ),
            lambda p: (
                curvature.adaptive_sharpness_worst(obj.value_and_grad, p, rho=0.05, steps=4).value
            ),
            lambda p: (
                curvature.adaptive_sharpness_worst(
                    obj.value_and_grad, p, rho=0.01, norm="linf", steps=4
                ).value
            ),
        ):
            base = measure(params)
            assert base > 0
            np.testing.assert_allclose(measure(reparam), base, rtol=1e-8)


def test_bad_arguments_raise_clear_errors():
    loss = jax.jit(jax.value_and_grad(lambda p: jnp.sum(p["w"] ** 2)))
    w = {"w": jnp.ones(3)}
    with pytest.raises(ValueError, match="norm='l3'"):
        curvature.adaptive_sharpness_worst(loss, w, rho=0.1, norm="l3")
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        curvature.keskar_sharpness(loss, w, epsilon=0.0)
