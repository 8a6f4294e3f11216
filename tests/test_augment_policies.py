"""Policies: fused op table == per-op functions, injected choices == composition of the public
ops, sampled choices follow their distributions, determinism, vmap == loop, no retrace."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from flatrob_jax.augment import augmix, autoaugment, magnitudes, op_table, ops, randaugment
from tests.augment_images import photos

IMAGE = jnp.asarray(photos()["astronaut"][:16, :20], jnp.float32) / 255.0  # 16 x 20 x 3


@functools.lru_cache(maxsize=None)
def public_op(name, interpolation):
    """The public ``ops`` call that ``op_table`` op ``name`` stands for, jitted once, as
    ``f(image, magnitude)`` with the magnitude in ``op_table`` units."""
    calls = {
        "identity": lambda x, m: x,
        "shear_x": lambda x, m: ops.shear_x(x, m, interpolation),
        "shear_y": lambda x, m: ops.shear_y(x, m, interpolation),
        "translate_x": lambda x, m: ops.translate_x(x, m, interpolation),
        "translate_y": lambda x, m: ops.translate_y(x, m, interpolation),
        "rotate": lambda x, m: ops.rotate(x, m, interpolation),
        "brightness": ops.brightness,
        "color": ops.color,
        "contrast": ops.contrast,
        "sharpness": ops.sharpness,
        "posterize": lambda x, m: ops.posterize(x, m.astype(jnp.int32)),
        "solarize": lambda x, m: ops.solarize(x, m / 255.0),
        "autocontrast": lambda x, m: ops.autocontrast(x),
        "equalize": lambda x, m: ops.equalize(x),
        "invert": lambda x, m: ops.invert(x),
    }
    return jax.jit(calls[name])


def compose(image, names, op_indices, mags, interpolation):
    x = image
    for i, m in zip(np.asarray(op_indices), np.asarray(mags)):
        x = public_op(names[i], interpolation)(x, jnp.float32(m))
    return np.asarray(x)


TEST_MAGNITUDES = {
    "shear_x": (-0.3, 0.21), "shear_y": (0.99, -0.05), "translate_x": (-7.0, 3.0),
    "translate_y": (5.0, -2.0), "rotate": (-30.0, 13.5), "brightness": (0.1, 1.9),
    "color": (0.0, 1.6), "contrast": (0.3, 1.99), "sharpness": (0.05, 1.9),
    "posterize": (2.0, 7.0), "solarize": (128.0, 226.66667),
}  # fmt: skip


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_fused_op_table_equals_each_op(interpolation):
    # every op with bilinear geometry; with nearest only the geometric ops differ
    names = op_table.OP_NAMES if interpolation == "bilinear" else ("identity",) + op_table.GEOMETRIC
    idx, mags = [], []
    for k, n in enumerate(names):
        for m in TEST_MAGNITUDES.get(n, (0.0,)):
            idx.append(k)
            mags.append(m)
    levels = jnp.round(IMAGE * 255.0)
    fused = jax.jit(jax.vmap(lambda i, m: op_table.apply_op(levels, i, m, names, interpolation)))
    switch = jax.jit(
        jax.vmap(lambda i, m: op_table.apply_op_switch(levels, i, m, names, interpolation))
    )
    idx, mags = jnp.asarray(idx), jnp.asarray(mags, jnp.float32)
    got = np.asarray(fused(idx, mags))
    np.testing.assert_array_equal(got, switch(idx, mags))
    for j in range(len(idx)):  # and each is the public op
        want = compose(IMAGE, names, [idx[j]], [mags[j]], interpolation) * 255.0
        np.testing.assert_allclose(
            got[j], want, atol=1e-3, err_msg=f"{names[int(idx[j])]}({float(mags[j])})"
        )


@functools.lru_cache(maxsize=None)
def _sampler(kind):
    h, w = IMAGE.shape[:2]
    fns = {
        "autoaugment_cifar10": lambda k: autoaugment.sample(k, "cifar10", h, w),
        "autoaugment_imagenet": lambda k: autoaugment.sample(k, "imagenet", h, w),
        "randaugment": lambda k: randaugment.sample_randaugment(k, 2, 9, 31, h, w),
        "trivialaugment": lambda k: randaugment.sample_trivialaugment(k, 31, h, w),
        "augmix": lambda k: augmix.sample(
            k, h, w, severity=3, width_chains=3, depth=-1, alpha=1.0, all_ops=True
        ),
    }
    return jax.jit(jax.vmap(fns[kind]))


def _samples(kind, n, seed=0):
    return jax.tree.map(np.asarray, _sampler(kind)(jax.random.split(jax.random.key(seed), n)))


@pytest.mark.parametrize("policy", ["cifar10", "imagenet"])
def test_autoaugment_injected_choices_equal_composition(policy):
    params = _samples(f"autoaugment_{policy}", 6, seed=1)
    names = autoaugment.op_names(policy)
    apply = jax.jit(jax.vmap(lambda p: autoaugment.apply(IMAGE, p, policy)))
    got = np.asarray(apply({k: params[k] for k in ("op_indices", "magnitudes")}))
    for b in range(6):
        want = compose(IMAGE, names, params["op_indices"][b], params["magnitudes"][b], "nearest")
        np.testing.assert_allclose(got[b], want, atol=1e-6)


def test_randaugment_and_trivialaugment_injected_choices_equal_composition():
    names = randaugment.OPS
    idx = jnp.asarray([[1, 5], [10, 11], [3, 8], [13, 12], [6, 9], [4, 7]])
    mags = jnp.asarray(
        [[0.2, -17.0], [5.0, 100.0], [-9.0, 1.4], [0, 0], [0.5, 1.7], [6.0, 0.4]], jnp.float32
    )
    got = np.asarray(
        jax.jit(
            jax.vmap(lambda o, m: randaugment.apply(IMAGE, {"op_indices": o, "magnitudes": m}))
        )(idx, mags)
    )
    for b in range(idx.shape[0]):
        np.testing.assert_allclose(
            got[b], compose(IMAGE, names, idx[b], mags[b], "nearest"), atol=1e-6
        )


@pytest.mark.parametrize("select", ["fused", "switch"])
def test_augmix_injected_choices_equal_mixture_of_op_chains(select):
    """Both executions against the composition of the public ops; the injected chains
    include an identity between two ops and an all-identity chain, which the one-by-one
    ("switch") path must not cut short or skip wrongly."""
    params = jax.tree.map(np.array, _samples("augmix", 3, seed=2))  # writable copies
    params["op_indices"][0, 0] = [3, 0, 5]  # identity inside a chain
    params["op_indices"][1, 2] = [0, 0, 0]  # a chain of identities only
    names = augmix.op_names(True)
    apply = jax.jit(
        lambda ps: jax.lax.map(lambda p: augmix.apply(IMAGE, p, all_ops=True, select=select), ps)
    )
    got = np.asarray(apply(params))
    for b in range(3):
        chains = [
            compose(
                IMAGE, names, params["op_indices"][b, c], params["magnitudes"][b, c], "bilinear"
            )
            for c in range(3)
        ]
        mixed = sum(w * ch for w, ch in zip(params["weights"][b], chains))
        m = params["mix"][b]
        np.testing.assert_allclose(got[b], (1 - m) * np.asarray(IMAGE) + m * mixed, atol=1e-5)


def _uniform_counts_ok(values, k):
    counts = np.bincount(np.ravel(values), minlength=k)
    assert counts.shape[0] == k
    return stats.chisquare(counts).pvalue > 1e-4


N = 3000


def test_randaugment_trivialaugment_distributions():
    ra = _samples("randaugment", N)
    assert _uniform_counts_ok(ra["op_indices"], len(randaugment.OPS))
    table, signed = magnitudes.magnitude_table(randaugment.OPS, 31, "autoaugment", *IMAGE.shape[:2])
    ops_, mags = ra["op_indices"].ravel(), ra["magnitudes"].ravel()
    for k, name in enumerate(randaugment.OPS):
        if name in ("shear_x", "rotate"):
            sel = mags[ops_ == k]
            np.testing.assert_array_equal(np.abs(sel), np.float32(table[k, 9]))
            assert stats.binomtest(int((sel < 0).sum()), sel.size).pvalue > 1e-4
        if name == "brightness":  # factor 1 +- 0.27
            m = np.float32(table[k, 9])
            assert set(mags[ops_ == k].tolist()) == {
                float(np.float32(1) - m),
                float(np.float32(1) + m),
            }
    ta = _samples("trivialaugment", N)
    assert _uniform_counts_ok(ta["op_indices"], len(randaugment.OPS))
    assert _uniform_counts_ok(ta["bins"], 31)


def test_autoaugment_distribution_of_sub_policies_and_probabilities():
    aa = _samples("autoaugment_cifar10", N)
    assert _uniform_counts_ok(aa["sub_policy"], 25)
    names = autoaugment.op_names("cifar10")
    for s, pair in enumerate(autoaugment.POLICIES["cifar10"]):
        rows = aa["sub_policy"] == s
        for slot, (op, p, _) in enumerate(pair):
            applied = aa["op_indices"][rows, slot] == names.index(op)
            assert set(np.unique(aa["op_indices"][rows, slot])) <= {0, names.index(op)}
            if 0 < p < 1:
                assert stats.binomtest(int(applied.sum()), int(rows.sum()), p).pvalue > 1e-4, (
                    s,
                    slot,
                    op,
                    p,
                )
            else:
                assert applied.all() == (p == 1.0) and applied.any() == (p > 0)


def test_augmix_distribution_of_choices_and_weights():
    am = _samples("augmix", N)
    assert stats.kstest(am["mix"], "uniform").pvalue > 1e-4  # Beta(1, 1)
    assert (
        stats.kstest(am["weights"][:, 0], stats.beta(1, 2).cdf).pvalue > 1e-4
    )  # Dirichlet(1,1,1) marginal
    np.testing.assert_allclose(am["weights"].sum(axis=1), 1.0, rtol=1e-5)
    assert _uniform_counts_ok(am["depths"] - 1, 3)
    used = np.arange(3)[None, None, :] < am["depths"][..., None]
    assert (am["op_indices"][~used] == 0).all()
    assert _uniform_counts_ok(am["op_indices"][used] - 1, len(augmix.ALL_OPS))
    assert stats.kstest(am["levels"][used], stats.uniform(0.1, 2.9).cdf).pvalue > 1e-4


@pytest.mark.parametrize(
    "name", ["autoaugment", "randaugment", "augmix", "cutout", "gaussian_noise"]
)
def test_same_key_same_output_and_vmap_equals_loop(name):
    """Same keys -> same output; an example's output depends only on its own key and image
    (permuting the batch permutes the output); vmapped execution == one image at a time."""
    from flatrob_jax import augment

    kw = {"execution": "sequential"} if name in ("autoaugment", "randaugment", "augmix") else {}
    sequential = jax.jit(augment.get_augment(name, **kw))
    images = jnp.stack([IMAGE, IMAGE[::-1], 1.0 - IMAGE, IMAGE[:, ::-1]])
    keys = jax.random.split(jax.random.key(3), 4)
    out = np.asarray(sequential(keys, images))
    np.testing.assert_array_equal(out, np.asarray(sequential(keys, images)))
    perm = np.array([2, 0, 3, 1])
    np.testing.assert_allclose(
        np.asarray(sequential(keys[perm], images[perm])), out[perm], atol=1e-6
    )
    assert not np.array_equal(
        out, np.asarray(sequential(jax.random.split(jax.random.key(4), 4), images))
    )
    if kw:
        vectorized = jax.jit(augment.get_augment(name, execution="vectorized"))
        np.testing.assert_allclose(np.asarray(vectorized(keys, images)), out, atol=1e-6)


def test_no_retrace_when_magnitudes_change():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def rotate_then_posterize(x, degrees, bits):
        return ops.posterize(ops.rotate(x, degrees), bits)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def rand_augment(x, params):
        return randaugment.apply(x, params, select="switch")

    @jax.jit
    @chex.assert_max_traces(n=1)
    def sample(key, magnitude, severity):
        h, w = IMAGE.shape[:2]
        return randaugment.sample_randaugment(key, 2, magnitude, 31, h, w), augmix.sample(
            key, h, w, severity=severity
        )

    for deg, bits in [(3.0, 4), (-20.0, 2), (45.0, 7)]:
        rotate_then_posterize(IMAGE, deg, bits)
    for m, s in [(0, 1.0), (9, 3.0), (30, 10.0)]:
        ra, _ = sample(jax.random.key(0), m, s)
        rand_augment(IMAGE, ra)


def test_one_draw_gamma_beta_dirichlet_samplers():
    """sampling.Uniforms' Gamma (Marsaglia-Tsang, 8 proposals; boost below 1), Beta and
    Dirichlet against scipy's distributions (Kolmogorov-Smirnov)."""
    from flatrob_jax.augment import sampling

    def draw(key, a):
        u = sampling.Uniforms(key, 5 * sampling.GAMMA_UNIFORMS)
        return u.gamma(a), u.beta(a, 2.0 * a), u.dirichlet(jnp.stack([a, 1.0]))[0]

    keys = jax.random.split(jax.random.key(7), 4000)
    fn = jax.jit(jax.vmap(draw, in_axes=(0, None)))
    for a in (0.3, 2.5):
        g, b, d = (np.asarray(v) for v in fn(keys, jnp.float32(a)))
        assert stats.kstest(g, stats.gamma(a).cdf).pvalue > 1e-4, a
        assert stats.kstest(b, stats.beta(a, 2 * a).cdf).pvalue > 1e-4, a
        assert stats.kstest(d, stats.beta(a, 1.0).cdf).pvalue > 1e-4, a
