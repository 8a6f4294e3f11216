"""The execution layer (padding, masks, per-example keys, sharding, clean predictions), the
progress reporter (rate and ETA on a fake clock) and the one cross-entropy."""

import types

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flatrob_jax import execution, losses
from flatrob_jax.distributed import make_mesh
from flatrob_jax.progress import Progress, format_duration

# --------------------------------------------------------------------------- batching


def test_padded_batch_size_rounds_to_devices_and_shrinks_to_the_data():
    assert execution.padded_batch_size(10, 100, 4) == 12
    assert execution.padded_batch_size(10, 3, 4) == 4
    assert execution.padded_batch_size(8, 100, 1) == 8
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        execution.padded_batch_size(0, 10, 1)


def test_padded_indices_copy_the_first_row_and_mask_it():
    take, valid = execution.padded_indices(8, 11, 6)
    np.testing.assert_array_equal(take, [8, 9, 10, 8, 8, 8])
    np.testing.assert_array_equal(valid, [1, 1, 1, 0, 0, 0])
    with pytest.raises(ValueError, match="do not fit"):
        execution.padded_indices(0, 7, 6)


def _echo_program(model_fn, valid, x):
    return x, valid, model_fn(x)


def test_run_batched_returns_only_real_rows_and_pads_with_valid_false():
    x = np.arange(11, dtype=np.float32)[:, None]
    seen = []

    def spy(model_fn, valid, x):  # records the padded batches the devices got
        jax.debug.callback(lambda v: seen.append(np.asarray(v)), valid)
        return _echo_program(model_fn, valid, x)

    out_x, out_valid, doubled = execution.run_batched(
        spy, {}, lambda z: 2 * z, (x,), batch_size=6, mesh=make_mesh(4)
    )
    np.testing.assert_array_equal(out_x, x)
    np.testing.assert_array_equal(doubled, 2 * x)
    assert out_valid.all() and out_valid.shape == (11,)
    # Batches of 8 (6 rounded up to 4 devices): 8 real rows, then 3 real + 5 padded.
    assert sum(int(v.sum()) for v in seen) == 11 and sum(v.size for v in seen) == 16
    with pytest.raises(ValueError, match="leading axis"):
        execution.run_batched(_echo_program, {}, None, (x, x[:3]), batch_size=4)


def _uniform_program(model_fn, valid, x, key_data, *, key_impl):
    del model_fn, valid
    keys = execution.wrap_keys(key_data, key_impl)
    return (jax.vmap(lambda k: jax.random.uniform(k, (3,)))(keys) + 0 * x[:, :1],)


@pytest.mark.parametrize("batch_size,num_devices", [(1, 1), (4, 1), (5, 4), (16, 4), (3, 2)])
def test_per_example_keys_do_not_depend_on_batch_size_or_devices(batch_size, num_devices):
    x = np.zeros((13, 2), np.float32)
    key = jax.random.key(42)
    (draws,) = execution.run_batched(
        _uniform_program,
        {},
        None,
        (x,),
        key=key,
        batch_size=batch_size,
        mesh=make_mesh(num_devices),
    )
    expected = np.stack([jax.random.uniform(jax.random.fold_in(key, i), (3,)) for i in range(13)])
    np.testing.assert_array_equal(draws, expected)
    # A subset keeps each example's own key (indices = positions in the full dataset).
    idx = np.array([2, 7, 11])
    (sub,) = execution.run_batched(
        _uniform_program,
        {},
        None,
        (x[idx],),
        key=key,
        indices=idx,
        batch_size=batch_size,
        mesh=make_mesh(num_devices),
    )
    np.testing.assert_array_equal(sub, expected[idx])


def test_example_keys_are_fold_in_of_the_global_index():
    key = jax.random.key(3)
    keys = jax.jit(execution.example_keys, static_argnums=1)(key, 5, 7)
    for i in range(5):
        np.testing.assert_array_equal(
            jax.random.key_data(keys[i]), jax.random.key_data(jax.random.fold_in(key, 7 + i))
        )
    data, impl = execution.example_key_data(jax.random.PRNGKey(3), [7, 8])  # raw keys too
    np.testing.assert_array_equal(data, jax.random.key_data(keys[:2]))
    assert impl == str(jax.random.key_impl(key))


def test_check_count_speaks_the_config_vocabulary():
    execution.check_count("num_examples", None)
    execution.check_count("num_examples", np.int64(3))
    for bad in (0, -1, True, 2.5, "all"):
        with pytest.raises(ValueError, match="num_examples must be None"):
            execution.check_count("num_examples", bad)


# --------------------------------------------------------------------------- models


class _Tiny(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        del train
        return nn.Dense(4)(x.reshape(x.shape[0], -1))


def _data(n=19):
    rng = np.random.RandomState(0)
    return rng.rand(n, 4, 4, 1).astype(np.float32), rng.randint(0, 4, n).astype(np.int32)


def test_model_fn_is_one_compilation_for_any_weights_and_equal_models():
    x, _ = _data()
    model = _Tiny()
    first = execution.model_fn(model, model.init(jax.random.key(0), x[:1]))
    second = execution.model_fn(_Tiny(), model.init(jax.random.key(1), x[:1]))
    assert jax.tree_util.tree_structure(first) == jax.tree_util.tree_structure(second)
    chex.clear_trace_counter()
    program = chex.assert_max_traces(_echo_program, n=1)
    for fn in (first, second):
        execution.run_batched(program, {}, fn, (x,), batch_size=8, mesh=make_mesh(4))
    np.testing.assert_allclose(
        execution.predict(second, x, batch_size=8),
        model.apply(second.args[0], x),
        rtol=1e-6,
        atol=1e-6,
    )


def test_as_model_fn_accepts_partials_eval_models_and_callables():
    x, _ = _data(2)
    model = _Tiny()
    variables = model.init(jax.random.key(0), x[:1])
    partial = execution.model_fn(model, variables)
    assert execution.as_model_fn(partial) is partial
    run = types.SimpleNamespace(model=model, variables=variables)
    assert jax.tree_util.tree_structure(execution.as_model_fn(run)) == jax.tree_util.tree_structure(
        partial
    )
    np.testing.assert_allclose(execution.as_model_fn(lambda z: z + 1)(x), x + 1)
    np.testing.assert_array_equal(execution.as_model_fn(None)(x), x)
    with pytest.raises(TypeError, match="got int"):
        execution.as_model_fn(3)


def test_predict_and_error_rate_agree_on_one_and_four_devices_and_read_uint8():
    x, y = _data()
    model = _Tiny()
    fn = execution.model_fn(model, model.init(jax.random.key(0), x[:1]))
    reference = np.asarray(model.apply(fn.args[0], x))
    expected_error = float(np.mean(reference.argmax(1) != y))
    for devices, batch_size in ((1, 5), (4, 8), (4, 100)):
        mesh = make_mesh(devices)
        np.testing.assert_allclose(
            execution.predict(fn, x, batch_size=batch_size, mesh=mesh),
            reference,
            rtol=1e-5,
            atol=1e-6,
        )
        assert execution.error_rate(fn, x, y, batch_size=batch_size, mesh=mesh) == expected_error
    pixels = np.round(x * 255).astype(np.uint8)
    np.testing.assert_allclose(
        execution.predict(fn, pixels, batch_size=8),
        model.apply(fn.args[0], pixels.astype(np.float32) / 255),
        rtol=1e-5,
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="N labels"):
        execution.error_rate(fn, x, y[:3], batch_size=8)


# --------------------------------------------------------------------------- progress


class _FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_progress_rate_and_eta_on_a_fake_clock():
    clock, lines = _FakeClock(), []
    p = Progress(
        100, start=20, unit="step", desc="train", log=lines.append, every_secs=10, clock=clock
    )
    clock.now += 4.0
    assert p.rate(40) == pytest.approx(5.0)  # 20 steps in 4 s
    assert p.eta(40) == pytest.approx(12.0)  # 60 left at 5/s
    assert p.line(40, "loss 1.0") == (
        "train: step 40/100 (40%) 5.00 steps/s elapsed 0:04 ETA 0:12 | loss 1.0"
    )
    assert not p(40) and lines == []  # 4 s < every_secs
    clock.now += 6.0
    assert p(50) and len(lines) == 1  # 10 s since the start
    clock.now += 1.0
    assert not p(55)
    assert p(100) and len(lines) == 2  # the end is always reported
    assert lines[-1].endswith("ETA 0:00")


def test_progress_as_a_solver_callback_and_unknown_rates():
    clock, lines = _FakeClock(), []
    p = Progress(0, unit="HVP", log=lines.append, every_secs=None, clock=clock)
    assert np.isnan(p.rate(0)) and np.isnan(p.eta(0))  # no time has passed
    clock.now += 2.0
    p(3, 10)  # the (done, total) form of lanczos / hutchinson_trace
    assert lines == ["HVP 3/10 (30%) 1.50 HVPs/s elapsed 0:02 ETA 0:05"]
    assert format_duration(3725) == "1:02:05" and format_duration(float("nan")) == "?"
    with pytest.raises(ValueError, match="every_secs"):
        Progress(1, every_secs=-1)


# --------------------------------------------------------------------------- cross-entropy


def test_one_cross_entropy_for_integer_and_soft_labels():
    rng = np.random.RandomState(0)
    logits = jnp.asarray(rng.randn(6, 5).astype(np.float32) * 3)
    labels = jnp.asarray(rng.randint(0, 5, 6))
    np.testing.assert_array_equal(
        losses.cross_entropy(logits, labels),
        optax.softmax_cross_entropy_with_integer_labels(logits, labels),
    )
    np.testing.assert_allclose(
        losses.cross_entropy(logits, jax.nn.one_hot(labels, 5)),
        losses.cross_entropy(logits, labels),
        rtol=1e-6,
    )
    q = jax.nn.softmax(jnp.asarray(rng.randn(6, 5).astype(np.float32)))
    np.testing.assert_allclose(
        losses.cross_entropy(logits, q), optax.softmax_cross_entropy(logits, q), rtol=1e-6
    )
    with pytest.raises(ValueError, match="integer labels must have shape"):
        losses.cross_entropy(logits, labels[:3])
    with pytest.raises(ValueError, match="soft labels"):
        losses.cross_entropy(logits, q[:, :3])
