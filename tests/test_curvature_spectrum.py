"""Lanczos, power iteration, Hutchinson / Hutch++ and SLQ against exact (dense) answers."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from PIL import Image
from test_curvature_models import float64_problem

from flatrob_jax import curvature
from flatrob_jax.distributed import make_mesh


@functools.lru_cache(maxsize=None)
def _objective(name):
    """Cached, so that each solver's jitted step compiles once for all tests (float64)."""
    model, variables, images, labels, h = float64_problem(name)
    obj = curvature.from_flax(model, variables, images, labels, batch_size=12, mesh=make_mesh(1))
    return obj, h


# Lanczos on the BN CNN converges (top-2 and bottom, tol 1e-7) in ~22 steps; SLQ uses the same
# basis size so the jitted Lanczos step compiles once for both tests.
SLQ_STEPS = 40


def _dense_operator(matrix, dtype=jnp.float64):
    """A pytree operator ``{'a': [..], 'b': [..]}`` for a dense symmetric matrix."""
    n = matrix.shape[0]
    params = {"a": jnp.zeros((n // 2,), dtype), "b": jnp.zeros((n - n // 2,), dtype)}
    unravel = ravel_pytree(params)[1]
    m = jnp.asarray(matrix, dtype)
    return (lambda v: unravel(m @ ravel_pytree(v)[0])), params


@pytest.mark.parametrize("name", [pytest.param("mlp", marks=pytest.mark.slow), "bn_cnn"])
def test_lanczos_top_and_bottom_eigenvalues_match_eigh(name):
    with jax.enable_x64(True):
        obj, h = _objective(name)
        exact = np.linalg.eigh(h)[0]
        result = curvature.lanczos(
            obj.hvp,
            obj.params,
            jax.random.key(0),
            num_steps=SLQ_STEPS,
            k=2,
            tol=1e-7,
            smallest=True,
            return_eigenvectors=True,
        )
        assert result.converged and result.num_matvecs < SLQ_STEPS
        np.testing.assert_allclose(result.eigenvalues, exact[::-1][:2], rtol=1e-4)
        np.testing.assert_allclose(result.smallest_eigenvalue, exact[0], rtol=1e-4)
        assert np.all(np.diff(result.eigenvalues) <= 0)
        # the reported residuals are the true |H y - theta y| of the returned Ritz vectors
        y = np.asarray(jax.vmap(lambda t: ravel_pytree(t)[0])(result.eigenvectors))
        true_residuals = np.linalg.norm(y @ h - result.eigenvalues[:, None] * y, axis=1)
        np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, rtol=1e-8)
        np.testing.assert_allclose(true_residuals, result.residuals, rtol=1e-3, atol=1e-9)
        assert np.all(result.residuals <= 1e-7 * np.abs(result.eigenvalues))


def test_lanczos_stops_on_the_residual_test_and_reports_hvps():
    spectrum = np.concatenate([[10.0, 7.0, 5.0], np.linspace(-1.0, 1.0, 297)])
    q = np.linalg.qr(np.random.RandomState(0).randn(300, 300))[0]
    with jax.enable_x64(True):
        matvec, params = _dense_operator(q @ np.diag(spectrum) @ q.T)
        calls = []
        result = curvature.lanczos(matvec, params, jax.random.key(1), num_steps=300, k=3, tol=1e-6)
        assert result.converged and result.num_matvecs < 60
        np.testing.assert_allclose(result.eigenvalues, [10.0, 7.0, 5.0], rtol=1e-6)
        assert result.num_matvecs == len(result.alphas) == len(result.betas)
        capped = curvature.lanczos(matvec, params, jax.random.key(1), num_steps=5, k=1, tol=1e-12)
        assert not capped.converged and capped.num_matvecs == 5
        del calls


def test_power_iteration_follows_pyhessians_rule_and_deflates():
    spectrum = np.concatenate([[10.0, 6.0], np.linspace(-1.0, 3.0, 98)])
    q = np.linalg.qr(np.random.RandomState(3).randn(100, 100))[0]
    with jax.enable_x64(True):
        matvec, params = _dense_operator(q @ np.diag(spectrum) @ q.T)
        result = curvature.power_iteration(
            matvec, params, jax.random.key(0), k=2, max_iters=500, tol=1e-9
        )
    np.testing.assert_allclose(result.eigenvalues, [10.0, 6.0], rtol=1e-6)
    assert result.converged.all()
    for history in result.history:  # PyHessian's rule: stop at the first small relative change
        changes = np.abs(np.diff(history)) / (np.abs(history[:-1]) + 1e-6)
        assert changes[-1] < 1e-9 and np.all(changes[:-1] >= 1e-9)
    assert result.num_matvecs == sum(len(x) for x in result.history)
    np.testing.assert_allclose(result.residuals, 0.0, atol=1e-3)


@pytest.mark.slow
def test_power_iteration_finds_lambda_max_of_the_network():
    with jax.enable_x64(True):
        obj, h = _objective("bn_cnn")
        result = curvature.power_iteration(
            obj.hvp, obj.params, jax.random.key(0), max_iters=300, tol=1e-8
        )
        np.testing.assert_allclose(result.eigenvalues[0], np.linalg.eigh(h)[0][-1], rtol=1e-4)


def test_hutchinson_interval_covers_the_exact_trace_and_its_parts():
    with jax.enable_x64(True):
        obj, h = _objective("bn_cnn")
        result = curvature.hutchinson_trace(obj.hvp, obj.params, jax.random.key(0), num_probes=60)
        lo, hi = result.interval()
        assert lo <= np.trace(h) <= hi, (result.trace, result.ci_halfwidth, np.trace(h))
        assert result.num_matvecs == 60 and result.confidence == 0.95
        sq = result.trace_of_square
        assert abs(sq.value - np.sum(h * h)) <= 2.1 * sq.stderr
        # per-layer traces: diagonal blocks of H, in the ravel_pytree (sorted key) order
        sizes = [int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(obj.params)]
        names = [
            n for n, s in zip(curvature.hutchinson.layer_names(obj.params), sizes) for _ in range(s)
        ]
        for layer, estimate in result.per_layer.items():
            idx = [i for i, n in enumerate(names) if n == layer]
            exact = np.trace(h[np.ix_(idx, idx)])
            assert abs(estimate.value - exact) <= 3.5 * estimate.stderr + 1e-12, (
                layer
            )  # 5 layers: 3.5 sigma
        np.testing.assert_allclose(
            sum(e.value for e in result.per_layer.values()), result.trace, rtol=1e-10
        )


def test_hutchinson_interval_has_nominal_coverage_on_a_dense_matrix():
    rng = np.random.RandomState(0)
    a = rng.randn(60, 60)
    matrix = a @ a.T / 60 - 0.5 * np.eye(60)
    with jax.enable_x64(True):
        matvec, params = _dense_operator(matrix)
        matvec = jax.tree_util.Partial(matvec)
        covered = [
            curvature.hutchinson_trace(
                matvec, params, jax.random.key(seed), num_probes=20
            ).interval()
            for seed in range(100)
        ]
    rate = np.mean([lo <= np.trace(matrix) <= hi for lo, hi in covered])
    assert 0.88 <= rate <= 1.0, rate


def test_hutchinson_stops_on_the_relative_interval_width():
    rng = np.random.RandomState(1)
    a = rng.randn(80, 80)
    with jax.enable_x64(True):
        matvec, params = _dense_operator(a @ a.T / 80)
        result = curvature.hutchinson_trace(
            matvec, params, jax.random.key(0), num_probes=500, rel_tol=0.05
        )
        assert 10 <= result.num_matvecs < 500
        assert result.ci_halfwidth <= 0.05 * abs(result.trace)


def test_hutchpp_is_exact_on_low_rank_and_reduces_variance():
    rng = np.random.RandomState(2)
    u = np.linalg.qr(rng.randn(200, 8))[0]
    low_rank = u @ np.diag(np.arange(1.0, 9.0) * 10) @ u.T
    with jax.enable_x64(True):
        matvec, params = _dense_operator(low_rank)
        result = curvature.hutchpp_trace(matvec, params, jax.random.key(0), num_matvecs=30)
        np.testing.assert_allclose(result.trace, np.trace(low_rank), rtol=1e-9)
        assert result.num_matvecs == 30
        # a dominant top plus a flat tail: Hutch++'s error is far below Hutchinson's
        decaying = low_rank + 0.01 * np.eye(200)
        matvec, params = _dense_operator(decaying)
        plus = [
            curvature.hutchpp_trace(matvec, params, jax.random.key(s), num_matvecs=30).trace
            for s in range(10)
        ]
        plain = [
            curvature.hutchinson_trace(matvec, params, jax.random.key(s), num_probes=30).trace
            for s in range(10)
        ]
        exact = np.trace(decaying)
        assert np.sqrt(np.mean((np.array(plus) - exact) ** 2)) < 0.01 * np.sqrt(
            np.mean((np.array(plain) - exact) ** 2)
        )


@pytest.mark.slow
def test_hutchpp_interval_covers_the_trace_on_a_network():
    with jax.enable_x64(True):
        obj, h = _objective("bn_cnn")
        net = curvature.hutchpp_trace(obj.hvp, obj.params, jax.random.key(0), num_matvecs=60)
        lo, hi = net.interval()
        assert lo <= np.trace(h) <= hi


def test_slq_first_moment_matches_the_trace_and_the_plot_is_written(tmp_path):
    with jax.enable_x64(True):
        obj, h = _objective("bn_cnn")
        exact = np.linalg.eigh(h)[0]
        density = curvature.slq_density(
            obj.hvp, obj.params, jax.random.key(0), num_steps=SLQ_STEPS, num_runs=12
        )
        trace, stderr = density.trace()
        assert abs(trace - np.trace(h)) <= 2.2 * stderr, (trace, stderr, np.trace(h))
        np.testing.assert_allclose(density.weights.sum(axis=1), 1.0, rtol=1e-10)
        np.testing.assert_allclose(density.nodes.max(), exact[-1], rtol=1e-6)  # extremes converge
        assert density.num_matvecs == 12 * SLQ_STEPS
        path = curvature.plot_density(density, str(tmp_path / "density.png"))
        with Image.open(path) as png:
            assert png.format == "PNG" and png.size == (720, 480)


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda mv, p: curvature.lanczos(mv, p, jax.random.key(0), num_steps=3, k=4),
            "k must be in 1..num_steps=3",
        ),
        (
            lambda mv, p: curvature.lanczos(mv, p, jax.random.key(0), num_steps=0),
            "num_steps must be >= 1",
        ),
        (
            lambda mv, p: curvature.hutchinson_trace(
                mv, p, jax.random.key(0), num_probes=5, confidence=1.5
            ),
            "confidence",
        ),
        (
            lambda mv, p: curvature.hutchpp_trace(mv, p, jax.random.key(0), num_matvecs=2),
            "num_matvecs >= 3",
        ),
        (
            lambda mv, p: curvature.lanczos(
                mv, {"i": jnp.zeros(3, jnp.int32)}, jax.random.key(0), num_steps=2
            ),
            "floating",
        ),
    ],
)
def test_bad_arguments_raise_clear_errors(call, message):
    matvec, params = _dense_operator(np.eye(4), jnp.float32)
    with pytest.raises(ValueError, match=message):
        call(matvec, params)
