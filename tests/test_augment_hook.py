"""The training hook built from each policy's config: runs inside jit + shard_map on 4 fake
devices, gives the shapes the train step expects, and does not depend on the device count.
Also: config validation errors and the batch-level ops (mixup, cutmix, cutout, noise)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from flatrob_jax import augment
from flatrob_jax.augment import mixing, regularizers

BATCH, H, W, C, K = 8, 12, 12, 3, 10


def _batch(seed=0):
    images = jax.random.uniform(jax.random.key(seed), (BATCH, H, W, C))
    images = jnp.round(images * 255.0) / 255.0
    labels = jax.nn.one_hot(jnp.arange(BATCH) % K, K)
    return images, labels


def _run(hook, num_devices, images, labels, key):
    mesh = jax.make_mesh((num_devices,), ("batch",), devices=jax.devices()[:num_devices])
    local = BATCH // num_devices

    def per_device(key, x, y):
        index = jax.lax.axis_index("batch") * local + jnp.arange(local)
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(index)
        return hook.apply(keys, x, y)

    image_spec = P(None, "batch") if hook.num_views > 1 else P("batch")
    fn = jax.jit(
        jax.shard_map(
            per_device,
            mesh=mesh,
            in_specs=(P(), P("batch"), P("batch")),
            out_specs=(image_spec, P("batch")),
        )
    )
    batch_sharding = jax.sharding.NamedSharding(mesh, P("batch"))
    images, labels = jax.device_put((images, labels), batch_sharding)
    return fn(key, images, labels)


def _config(name):
    cfg = augment.default_config()
    cfg.lock()
    cfg.name = name
    return cfg


@pytest.mark.parametrize("name", augment.names())
def test_hook_runs_under_shard_map_on_4_devices(name):
    hook = augment.build_train_augmentation(_config(name))
    images, labels = _batch()
    out, out_labels = _run(hook, 4, images, labels, jax.random.key(1))
    want_shape = (hook.num_views, BATCH, H, W, C) if hook.num_views > 1 else (BATCH, H, W, C)
    assert out.shape == want_shape and out.dtype == jnp.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    np.testing.assert_allclose(np.asarray(out_labels).sum(axis=1), 1.0, rtol=1e-5)
    assert hook.label_preserving == (name not in ("mixup", "cutmix"))
    if hook.label_preserving:
        np.testing.assert_array_equal(out_labels, labels)
    if name == "augmix":
        assert (hook.num_views, hook.consistency_weight) == (3, 12.0)
        standard = augment.build_train_augmentation(_config("standard"))
        clean, _ = _run(standard, 4, images, labels, jax.random.key(1))
        np.testing.assert_array_equal(out[0], clean)  # clean view first: crop/flip only
        assert not np.allclose(out[1], out[2])
    if name == "none":
        np.testing.assert_array_equal(out, images)


@pytest.mark.parametrize("name", ["mixup", "cutmix"])
def test_hook_result_does_not_depend_on_device_count(name):
    hook = augment.build_train_augmentation(_config(name))
    images, labels = _batch(2)
    four = _run(hook, 4, images, labels, jax.random.key(5))
    one = _run(hook, 1, images, labels, jax.random.key(5))
    for a, b in zip(four, one):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_every_policy_has_its_config_section():
    cfg = augment.default_config()
    for name in augment.names():
        spec = augment.spec_of(name)
        assert (spec.section is None) == (name in ("none", "standard")), name
        assert spec.section is None or spec.section in cfg, name


@pytest.mark.parametrize(
    "name, field, value, message",
    [
        ("augmix", "severity", 11, "valid: 1..10"),
        ("augmix", "depth", 0, "valid: -1"),
        ("augmix", "interpolation", "bicubic", "valid choices: nearest, bilinear"),
        ("randaugment", "magnitude", 31, "valid: 0..30"),
        ("randaugment", "num_ops", -1, "valid: >= 0"),
        ("autoaugment", "policy", "cifar100", "valid choices: cifar10, imagenet, svhn"),
        ("trivialaugment", "num_magnitude_bins", 0, "valid: >= 1"),
        ("mixup", "alpha", -1.0, "augment.mixup.alpha=-1.0"),
        ("cutout", "length", -4, "augment.cutout.length=-4"),
        ("gaussian_noise", "sigma", -0.1, "augment.gaussian_noise.sigma=-0.1"),
    ],
)
def test_out_of_range_parameters_fail_clearly(name, field, value, message):
    cfg = augment.default_config()
    cfg.name = name
    cfg[name][field] = value
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        augment.build_train_augmentation(cfg)


def test_unknown_name_lists_the_valid_ones():
    cfg = augment.default_config()
    cfg.name = "augmax"
    with pytest.raises(
        ValueError, match="unknown augmentation 'augmax'; valid choices: augmix, autoaugment"
    ):
        augment.build_train_augmentation(cfg)
    with pytest.raises(ValueError, match="valid choices"):
        augment.get_augment("rand_augment")


def test_mixup_and_cutmix_mix_images_and_labels_consistently():
    b = 6
    values = jnp.arange(1, b + 1, dtype=jnp.float32) / 10.0
    images = jnp.broadcast_to(values[:, None, None, None], (b, 16, 16, 1))
    labels = jax.nn.one_hot(jnp.arange(b), b)
    keys = jax.random.split(jax.random.key(0), b)
    j = np.asarray(mixing.partner_index(b))
    np.testing.assert_array_equal(j, [1, 0, 3, 2, 5, 4])
    x, y = jax.jit(mixing.mixup)(keys, images, labels, 1.0)
    lam = np.asarray(y)[np.arange(b), np.arange(b)]
    np.testing.assert_allclose(np.asarray(y)[np.arange(b), j], 1 - lam, atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(x)[:, 0, 0, 0], lam * values + (1 - lam) * values[j], atol=1e-6
    )
    x, y = jax.jit(mixing.cutmix)(keys, images, labels, 1.0)
    from_partner = np.mean(
        np.isclose(np.asarray(x)[..., 0], np.asarray(values)[j][:, None, None]), axis=(1, 2)
    )
    np.testing.assert_allclose(np.asarray(y)[np.arange(b), j], from_partner, atol=1e-6)
    np.testing.assert_array_equal(mixing.partner_index(5), [1, 0, 3, 2, 4])


def test_cutout_and_noise():
    image = jnp.full((32, 32, 3), 0.5)
    cutout = jax.jit(lambda k, x: regularizers.cutout(k, x, 16, 0.0))
    for seed in range(5):
        out = np.asarray(cutout(jax.random.key(seed), image))
        rows, cols = np.nonzero(out[..., 0] == 0.0)
        assert rows.max() - rows.min() < 16 and cols.max() - cols.min() < 16 and rows.size <= 256
        assert (out[out[..., 0] != 0.0] == 0.5).all()
    noisy = np.asarray(jax.jit(regularizers.gaussian_noise)(jax.random.key(0), image, 0.05))
    assert abs(np.std(noisy - 0.5) - 0.05) < 0.003 and abs(np.mean(noisy - 0.5)) < 0.003
