"""One contract for every registered augmentation (like optax's contrib/_common_test.py), and
``register()``: an augmentation added at run time is selectable from a config."""

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flatrob_jax import augment, execution
from flatrob_jax.augment import registry

B, K = 4, 5
DETERMINISTIC = {"none"}  # the same output for every key (the identity)


def _images(channels, size=16, seed=0):
    """B random images on the uint8 grid (16 x 16: Cutout's default 16-px square does not
    cover the whole image wherever it lands, as it would at 8 x 8)."""
    rng = np.random.default_rng(seed)
    return jnp.asarray(np.round(rng.random((B, size, size, channels)) * 255.0) / 255.0, jnp.float32)


def _labels():
    return jax.nn.one_hot(jnp.arange(B) % K, K)


@pytest.mark.parametrize("name", augment.names())
def test_every_registered_augmentation_meets_the_contract(name):
    """Default parameters, 3- and 1-channel batches, and the train hook built from the default
    config, all in ONE jitted program per entry (compiled once, run for keys 1, 1, 2): shapes
    and dtypes kept (the hook's as its spec declares), values in [0, 1], the same key gives the
    same output, another key another one (unless the augmentation is deterministic),
    label-mixing entries return soft labels that sum to 1, the others leave labels alone."""
    spec = augment.spec_of(name)
    fn = augment.get_augment(name)
    cfg = augment.default_config()
    cfg.name = name
    hook = augment.build_train_augmentation(cfg)
    batches = {c: _images(c, seed=c) for c in (3, 1)}
    labels = _labels()

    @jax.jit
    def run(key):
        direct = {}
        for c, images in batches.items():
            out = fn(key, images, labels) if spec.label_mixing else (fn(key, images), labels)
            direct[c] = out
        return direct, hook.apply(execution.example_keys(key, B), batches[3], labels)

    results = [run(jax.random.key(k)) for k in (1, 1, 2)]  # keys 1, 1 (again), 2 (another)
    views = () if hook.num_views == 1 else (hook.num_views,)
    cases = {c: ([r[0][c] for r in results], images.shape) for c, images in batches.items()}
    cases["hook"] = ([r[1] for r in results], views + batches[3].shape)
    for what, ((first, again, other), shape) in cases.items():
        out, labels_out = first
        assert out.shape == shape and out.dtype == jnp.float32, (what, out.shape, out.dtype)
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0, what
        labels_out = np.asarray(labels_out)
        np.testing.assert_allclose(labels_out.sum(axis=1), 1.0, rtol=1e-5)
        if spec.label_mixing:
            assert labels_out.min() >= 0.0 and np.any((labels_out > 0.0) & (labels_out < 1.0)), what
        else:
            np.testing.assert_array_equal(labels_out, labels)
        np.testing.assert_array_equal(out, again[0], err_msg=f"{what}: same key, different output")
        if name in DETERMINISTIC:
            np.testing.assert_array_equal(out, other[0])
        else:
            assert not np.array_equal(out, other[0]), (
                f"{name} {what}: keys 1 and 2 give the same batch"
            )
    assert hook.label_preserving == (not spec.label_mixing) == (name not in augment.LABEL_MIXING)
    if hook.num_views > 1:
        assert spec.num_views == hook.num_views and hook.consistency_weight > 0.0
    assert spec.section is None or spec.config is None or spec.section in cfg


def test_every_config_section_is_accepted_by_its_factory():
    """default_config's section for each name builds with get_augment (no stray field)."""
    cfg = augment.default_config()
    for name in augment.names():
        spec = augment.spec_of(name)
        if spec.section is not None and spec.section in cfg:
            augment.get_augment(name, **cfg[spec.section])


# --- register(): a new augmentation, built on dm-pix, selectable from a config -----------------


def _brightness_jitter(max_delta: float = 0.25):
    """A dm-pix augmentation: ``pix.random_brightness`` per example, clipped to [0, 1]."""

    def fn(key, images):
        keys = execution.as_example_keys(key, images.shape[0])
        return jax.vmap(lambda k, x: jnp.clip(pix.random_brightness(k, x, max_delta), 0.0, 1.0))(
            keys, images
        )

    return fn


@pytest.fixture
def registered():
    """Register augmentations for one test and remove them afterwards."""
    added = []

    def add(name, factory, **kw):
        added.append(name)
        return augment.register(name, factory, **kw)

    yield add
    for name in added:
        augment.unregister(name)


def _reference(name, cfg, keys, images, **kw):
    """What the hook must compute: the shared crop/flip with keys fold_in(k, 0), then the
    augmentation with fold_in(k, v)."""
    crop_flip = augment.get_augment("standard", padding=cfg.crop_padding, flip=cfg.flip)
    x = crop_flip(jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys), images)
    fn = augment.get_augment(name, **kw)
    return x, lambda v: fn(jax.vmap(lambda k: jax.random.fold_in(k, v))(keys), x)


def test_registered_augmentation_is_selectable_from_a_config(registered):
    registered("brightness_jitter", _brightness_jitter)
    assert "brightness_jitter" in augment.names()
    cfg = augment.default_config()
    assert "brightness_jitter" not in cfg  # no section: the factory's defaults apply
    cfg.lock()
    cfg.name = "brightness_jitter"
    hook = augment.build_train_augmentation(cfg)
    assert (hook.num_views, hook.consistency_weight, hook.label_preserving) == (1, 0.0, True)
    images, labels = _images(3), _labels()
    keys = execution.example_keys(jax.random.key(0), B)
    x, y = jax.jit(hook.apply)(keys, images, labels)
    _, want = _reference("brightness_jitter", cfg, keys, images)
    np.testing.assert_allclose(x, want(1), atol=1e-6)
    np.testing.assert_array_equal(y, labels)


def test_registered_section_joins_the_default_config_and_is_read(registered):
    registered("brightness_jitter", _brightness_jitter, config={"max_delta": 0.25})
    cfg = augment.default_config()
    assert cfg.brightness_jitter.max_delta == 0.25
    cfg.lock()
    cfg.name = "brightness_jitter"
    cfg.brightness_jitter.max_delta = 0.6  # as --config.augment.brightness_jitter.max_delta=0.6
    images, labels = _images(3), _labels()
    keys = execution.example_keys(jax.random.key(0), B)
    x, _ = augment.build_train_augmentation(cfg).apply(keys, images, labels)
    _, want = _reference("brightness_jitter", cfg, keys, images, max_delta=0.6)
    np.testing.assert_allclose(x, want(1), atol=1e-6)


def test_registered_multi_view_and_label_mixing_entries_are_handled_generically(registered):
    registered("two_views", _brightness_jitter, num_views=2, consistency_weight=3.0)
    cfg = augment.default_config()
    cfg.name = "two_views"
    hook = augment.build_train_augmentation(cfg)
    assert (hook.num_views, hook.consistency_weight) == (2, 3.0)
    images, labels = _images(1), _labels()
    keys = execution.example_keys(jax.random.key(0), B)
    x, _ = hook.apply(keys, images, labels)
    clean, want = _reference("two_views", cfg, keys, images)
    np.testing.assert_array_equal(x[0], clean)
    np.testing.assert_allclose(x[1], want(1), atol=1e-6)

    def swap_halves(alpha=1.0):
        def fn(key, images, labels):
            del key
            return alpha * images[::-1], labels[::-1]

        return fn

    registered("swap", swap_halves, label_mixing=True)
    assert "swap" in augment.LABEL_MIXING
    cfg.name = "swap"
    hook = augment.build_train_augmentation(cfg)
    assert not hook.label_preserving
    with pytest.raises(ValueError, match="label_mixing with num_views=2"):
        augment.register("bad", swap_halves, label_mixing=True, num_views=2)
    assert "bad" not in augment.names()


def test_augmix_views_come_from_its_spec():
    spec = augment.spec_of("augmix")
    assert (spec.num_views, spec.views_field, spec.consistency_weight_field) == (
        3,
        "jsd",
        "consistency_weight",
    )
    cfg = augment.default_config()
    cfg.name = "augmix"
    cfg.augmix.consistency_weight = 5.0
    assert augment.build_train_augmentation(cfg)[1:] == (3, 5.0, True)
    cfg.augmix.jsd = False
    assert augment.build_train_augmentation(cfg)[1:] == (1, 0.0, True)
    cfg.augmix.consistency_weight = -1.0
    with pytest.raises(ValueError, match=r"augment\.augmix\.consistency_weight=-1\.0"):
        augment.build_train_augmentation(cfg)
    # the train-only fields are accepted (and ignored) by get_augment
    augment.get_augment("augmix", **cfg.augmix.to_dict() | {"consistency_weight": 1.0})


def test_unknown_names_fail_clearly():
    with pytest.raises(ValueError, match="unknown augmentation 'nope'; valid choices: augmix"):
        augment.unregister("nope")
    with pytest.raises(ValueError, match="unknown augmentation 'nope'"):
        augment.spec_of("nope")
    assert registry.LABEL_MIXING is augment.LABEL_MIXING
