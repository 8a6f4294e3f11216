"""Sharpness measures: closed forms on quadratics/linear losses, and the reparameterization
check (Dinh et al. 2017) on a ReLU MLP."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.special
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
def test_fast_adaptive_ascent_of_a_linear_loss(norm):
    with jax.enable_x64(True):
        g = jnp.asarray(np.random.RandomState(1).randn(20))
        w = {"w": jnp.asarray(np.random.RandomState(2).randn(20))}
        value_and_grad = jax.jit(jax.value_and_grad(lambda p: g @ p["w"]))
        result = curvature.adaptive_sharpness_ascent(
            value_and_grad, w, rho=0.05, norm=norm, steps=5
        )
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
                curvature.adaptive_sharpness_ascent(obj.value_and_grad, p, rho=0.05, steps=4).value
            ),
            lambda p: (
                curvature.adaptive_sharpness_ascent(
                    obj.value_and_grad, p, rho=0.01, norm="linf", steps=4
                ).value
            ),
            lambda p: (
                curvature.adaptive_sharpness_apgd(
                    [b.value_and_grad for b in obj.batches(12)],
                    p,
                    key,
                    rho=0.5,
                    norm="l2",
                    iters=5,
                    random_start=True,
                ).value
            ),
            lambda p: (
                curvature.adaptive_sharpness_apgd(
                    [obj.value_and_grad], p, key, rho=0.002, norm="linf", iters=5
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
        curvature.adaptive_sharpness_ascent(loss, w, rho=0.1, norm="l3")
    with pytest.raises(ValueError, match="norm=.l3."):
        curvature.adaptive_sharpness_apgd([loss], w, jax.random.key(0), rho=0.1, norm="l3")
    with pytest.raises(ValueError, match="l2_geometry=.ball."):
        curvature.adaptive_sharpness_apgd([loss], w, jax.random.key(0), rho=0.1, l2_geometry="ball")
    with pytest.raises(ValueError, match="rho=-0.1"):
        curvature.adaptive_sharpness_apgd([loss], w, jax.random.key(0), rho=-0.1)
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        curvature.keskar_sharpness(loss, w, epsilon=0.0)


# --------------------------------------------------------------------------- APGD adaptive
# A 3-parameter, 3-class model on 6 examples: logits (w0 x0, w1 x1, w2 (x0 + x1)). The
# reference is written here in NumPy from the definition (Andriushchenko et al. 2023):
# mean over batches of m = 3 of max_{||u||_p <= rho} L_B(w + |w| u) - L_B(w), the max by an
# exhaustive grid over the box / ball (plus 20000 points on the sphere), refined by SciPy.
X3 = np.array([[1.0, 0.5], [-0.3, 1.2], [0.8, -1.0], [0.2, 0.4], [-1.1, -0.2], [0.6, 0.9]])
Y3 = np.array([0, 1, 2, 1, 0, 2])
W3 = np.array([0.9, -1.4, 0.6])


def _logits3(p, st, x):
    w = p["w"]
    return jnp.stack([w[0] * x[:, 0], w[1] * x[:, 1], w[2] * (x[:, 0] + x[:, 1])], -1)


def _numpy_loss3(w, x, y, normalize):
    """Mean cross-entropy for a batch of weight vectors ``w [..., 3]``."""
    z = np.stack(
        [w[..., 0, None] * x[:, 0], w[..., 1, None] * x[:, 1], w[..., 2, None] * x.sum(1)], -1
    )
    if normalize:  # centred, unit l2 norm per example
        z = z - z.mean(-1, keepdims=True)
        z = z / np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-10)
    log_p = z - scipy.special.logsumexp(z, axis=-1, keepdims=True)
    picked = np.take_along_axis(log_p, np.broadcast_to(y[:, None], log_p.shape[:-1] + (1,)), -1)
    return -picked[..., 0].mean(-1)


def _reference_sharpness(rho, norm, normalize, w=W3, m=3):
    scale, values = np.abs(w), []
    for start in range(0, len(Y3), m):
        x, y = X3[start : start + m], Y3[start : start + m]

        def f(u, x=x, y=y):
            return _numpy_loss3(w + scale * u, x, y, normalize)

        axis = np.linspace(-rho, rho, 61)
        grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
        if norm == "l2":
            sphere = np.random.RandomState(0).randn(20000, 3)
            sphere *= rho / np.linalg.norm(sphere, axis=-1, keepdims=True)
            grid = np.concatenate([grid[np.linalg.norm(grid, axis=-1) <= rho], sphere])
        losses = f(grid)
        start_point = grid[np.argmax(losses)]
        if norm == "linf":
            refined = scipy.optimize.minimize(
                lambda u: -f(u),
                start_point,
                method="L-BFGS-B",
                bounds=[(-rho, rho)] * 3,
                options={"ftol": 1e-15, "gtol": 1e-12},
            )
        else:
            refined = scipy.optimize.minimize(
                lambda u: -f(u),
                start_point,
                method="SLSQP",
                constraints=[{"type": "ineq", "fun": lambda u: rho**2 - u @ u}],
                options={"ftol": 1e-15, "maxiter": 500},
            )
        values.append(max(-refined.fun, losses.max()) - f(np.zeros(3)))
    return float(np.mean(values))


def _batches3(normalize, w=W3, m=3):
    """Per-batch value_and_grad of the project's dataset objective (its ``batches``)."""
    obj = curvature.make_dataset_objective(
        _logits3, {"w": jnp.asarray(w)}, {}, X3, Y3, batch_size=3, mesh=make_mesh(1)
    )
    loss = curvature.NormalizedLogits(curvature.cross_entropy) if normalize else None
    return obj.params, [b.value_and_grad for b in obj.batches(m, per_example_loss=loss)]


@pytest.mark.parametrize(
    "norm, rho, iters",
    [("linf", 0.008, 20), ("linf", 0.1, 20), ("l2", 0.25, 20), ("l2", 0.5, 20), ("l2", 1.0, 100)],
)
@pytest.mark.parametrize("normalize", [False, True], ids=["logits", "normlogits"])
def test_apgd_adaptive_sharpness_equals_the_exhaustive_maximum(norm, rho, iters, normalize):
    with jax.enable_x64(True):
        params, batches = _batches3(normalize)
        result = curvature.adaptive_sharpness_apgd(
            batches, params, jax.random.key(0), rho=rho, norm=norm, iters=iters
        )
        expected = _reference_sharpness(rho, norm, normalize)
    assert expected > 1e-3  # a maximum well above the tolerance
    np.testing.assert_allclose(result.value, expected, rtol=0, atol=1e-5)
    assert result.num_evaluations == 2 * (iters + 1)  # 2 batches of m = 3
    unperturbed = np.mean(
        [_numpy_loss3(W3, X3[s : s + 3], Y3[s : s + 3], normalize) for s in (0, 3)]
    )
    np.testing.assert_allclose(result.loss, unperturbed, rtol=1e-12)


def test_apgd_adaptive_sharpness_properties():
    """rho = 0 gives 0; the value grows with rho; ||u||_2 <= rho lies inside ||u||_inf <= rho,
    which lies inside ||u||_2 <= sqrt(3) rho; a random start stays feasible (<= the max)."""
    with jax.enable_x64(True):
        params, batches = _batches3(False)

        def value(rho, norm, **kw):
            return curvature.adaptive_sharpness_apgd(
                batches, params, jax.random.key(0), rho=rho, norm=norm, **kw
            ).value

        for norm in ("linf", "l2"):
            assert value(0.0, norm) == 0.0
            values = [value(rho, norm) for rho in (0.001, 0.002, 0.004, 0.008)]
            assert 0 < values[0] and np.all(np.diff(values) > 0), values
        for rho in (0.004, 0.05):
            assert value(rho, "l2") < value(rho, "linf") < value(np.sqrt(3) * rho, "l2")
        rho = 0.05
        exact = _reference_sharpness(rho, "linf", False)
        for seed in range(3):
            started = curvature.adaptive_sharpness_apgd(
                batches, params, jax.random.key(seed), rho=rho, norm="linf", random_start=True
            )
            assert started.value <= exact + 1e-12 and started.num_evaluations == 2 * 22
            np.testing.assert_allclose(started.value, exact, atol=1e-5)


def test_apgd_in_their_weight_space_geometry():
    """Their l2 step (weight space, ellipsoid projection) gives a feasible point, so at most
    the maximum, below it where the |w_i| differ; with equal |w_i| the two geometries are the
    same algorithm (ellipsoid = ball up to scale)."""
    with jax.enable_x64(True):
        params, batches = _batches3(False)
        theirs = curvature.adaptive_sharpness_apgd(
            batches, params, jax.random.key(0), rho=0.5, norm="l2", l2_geometry="weights"
        ).value
        exact = _reference_sharpness(0.5, "l2", False)
        assert 0 < theirs <= exact + 1e-12
        equal = np.array([0.8, -0.8, 0.8])
        params, batches = _batches3(False, w=equal)
        values = [
            curvature.adaptive_sharpness_apgd(
                batches, params, jax.random.key(0), rho=0.5, norm="l2", l2_geometry=g
            ).value
            for g in ("weights", "scaled")
        ]
        np.testing.assert_allclose(values[0], values[1], rtol=1e-10)
        np.testing.assert_allclose(
            values[1], _reference_sharpness(0.5, "l2", False, w=equal), atol=1e-5
        )


def test_apgd_checkpoints_are_croce_and_hein_schedule():
    # p: 0, .22, .41, .57, .70, .80, .87, .93, .99, 1.05 (ceil(p * 20); 0.70 * 20 rounds up)
    assert curvature.sharpness.apgd_checkpoints(20) == (5, 9, 12, 15, 16, 18, 19, 20)
    assert curvature.sharpness.apgd_checkpoints(100) == (22, 41, 58, 70, 80, 87, 93, 99, 105)


def test_keskar_runs_keskar_et_al_10_lbfgsb_iterations_by_default():
    """Keskar et al. 2017 run 10 L-BFGS-B iterations: the function's, the config's and the
    default study's default. On a logistic loss whose box maximum needs more than 5 iterations,
    the value and the evaluations are SciPy's own L-BFGS-B run on the same problem."""
    import inspect

    from flatrob_jax.analysis.analyses import curvature_config
    from flatrob_jax.study import load_sweep

    assert inspect.signature(curvature.keskar_sharpness).parameters["max_iters"].default == 10
    assert curvature_config().keskar_iters == 10
    study = load_sweep("configs/sweeps/fashion_mnist_augmentations.py")
    assert "analysis.curvature.keskar_iters" not in study.overrides
    with jax.enable_x64(True):
        rng = np.random.RandomState(7)
        features, signs = rng.randn(40, 12), rng.choice([-1.0, 1.0], 40)
        w = {"w": jnp.asarray(rng.randn(12))}

        def loss(p):
            return jnp.mean(jnp.logaddexp(0.0, -signs * (features @ p["w"])))

        result = curvature.keskar_sharpness(jax.jit(jax.value_and_grad(loss)), w, epsilon=0.3)
        w0 = np.asarray(w["w"])
        seen = []

        def negative(z):
            seen.append(float(loss({"w": jnp.asarray(w0 + z)})))
            return -seen[-1], -np.asarray(jax.grad(loss)({"w": jnp.asarray(w0 + z)})["w"])

        bound = 0.3 * (np.abs(w0) + 1)
        ref = scipy.optimize.minimize(
            negative,
            np.zeros(12),
            jac=True,
            method="L-BFGS-B",
            bounds=list(zip(-bound, bound)),
            options={"maxiter": 10},
        )
        base = float(loss(w))
    assert 5 < ref.nit <= 10  # 5 iterations would stop short of where 10 get
    np.testing.assert_allclose(result.value, 100 * (max(seen) - base) / (1 + base), rtol=1e-10)
    assert result.num_evaluations == ref.nfev
