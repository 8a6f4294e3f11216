import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flatrob_jax import distributed
from flatrob_jax.augment import build_train_augmentation, default_config
from flatrob_jax.data import ArraySource, EvalBatches
from flatrob_jax.losses import cross_entropy
from flatrob_jax.models import get_model
from flatrob_jax.training import steps as steps_lib
from flatrob_jax.training.losses import jensen_shannon, smooth_labels
from flatrob_jax.training.optimizer import learning_rate_schedule, sgd
from flatrob_jax.training.state import create_train_state
from flatrob_jax.training.steps import make_eval_step, make_train_step
from flatrob_jax.training.trainer import evaluate, train_and_evaluate
from tests.helpers import make_idx_dataset, tiny_config


def _batch(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, (n, 28, 28, 1)).astype(np.uint8),
        "label": rng.integers(0, 10, n).astype(np.int32),
    }


def _run_steps(num_devices, steps=2, augment="standard"):
    mesh = distributed.make_mesh(num_devices)
    cfg = default_config()
    cfg.name = augment
    model = get_model("cnn_tiny", 10, axis_name=distributed.AXIS)
    state = create_train_state(jax.random.key(0), model, optax.sgd(0.1, 0.9), (28, 28, 1))
    state = distributed.replicate(mesh, state)
    step = make_train_step(
        mesh, augmentation=build_train_augmentation(cfg), num_classes=10, label_smoothing=0.1
    )
    key = distributed.replicate(mesh, jax.random.key(7))
    for s in range(steps):
        state, metrics = step(state, distributed.shard_host_batch(mesh, _batch(seed=s)), key)
    return jax.device_get(state), jax.device_get(metrics)


def test_one_device_and_four_devices_take_the_same_steps():
    assert len(jax.devices()) >= 4, "conftest sets 4 fake CPU devices"
    one, m1 = _run_steps(1)
    four, m4 = _run_steps(4)
    chex.assert_trees_all_close(one.params, four.params, atol=2e-6, rtol=1e-5)
    chex.assert_trees_all_close(one.batch_stats, four.batch_stats, atol=2e-6, rtol=1e-5)
    chex.assert_trees_all_close(m1, m4, atol=1e-5)


def test_train_step_compiles_once(monkeypatch):
    # The per-device step may be traced once: a second trace would mean a recompilation.
    monkeypatch.setattr(
        steps_lib,
        "train_step_per_device",
        chex.assert_max_traces(steps_lib.train_step_per_device, n=1),
    )
    mesh = distributed.make_mesh(2)
    model = get_model("cnn_tiny", 10, axis_name=distributed.AXIS)
    state = distributed.replicate(
        mesh, create_train_state(jax.random.key(0), model, optax.sgd(0.1), (28, 28, 1))
    )
    step = make_train_step(
        mesh,
        augmentation=build_train_augmentation(default_config()),
        num_classes=10,
        label_smoothing=0.0,
    )
    key = distributed.replicate(mesh, jax.random.key(0))
    for s in range(3):
        state, _ = step(state, distributed.shard_host_batch(mesh, _batch(8, s)), key)


def test_masked_eval_counts_each_example_once():
    mesh = distributed.make_mesh(4)
    model = get_model("cnn_tiny", 10)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    data = _batch(37, seed=3)
    result = evaluate(
        make_eval_step(mesh, model.apply),
        mesh,
        variables,
        EvalBatches(ArraySource(data["image"], data["label"]), 16),
    )
    logits = model.apply(variables, data["image"].astype(np.float32) / 255.0)
    expected_acc = float(np.mean(np.argmax(logits, -1) == data["label"]))
    expected_loss = float(np.mean(cross_entropy(logits, jax.nn.one_hot(data["label"], 10))))
    assert result["num_examples"] == 37
    assert result["accuracy"] == pytest.approx(expected_acc)
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-5)


def test_losses_against_their_definitions():
    logits = jax.random.normal(jax.random.key(0), (3, 5, 4))
    labels = jnp.array([0, 3, 1, 2, 2])
    q = smooth_labels(labels, 4, 0.1)
    np.testing.assert_allclose(q.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(q[0], [0.925, 0.025, 0.025, 0.025], rtol=1e-6)
    np.testing.assert_allclose(
        cross_entropy(logits[0], q), optax.softmax_cross_entropy(logits[0], q), rtol=1e-6
    )
    # AugMix's JS: mean over views of KL(p_v || M), M the clipped mixture.
    p = np.asarray(jax.nn.softmax(logits, -1), np.float64)
    m = np.clip(p.mean(0), 1e-7, 1)
    expected = np.mean(np.sum(p * (np.log(p) - np.log(m)), -1), 0)
    np.testing.assert_allclose(jensen_shannon(logits), expected, rtol=1e-5, atol=1e-7)
    assert np.all(np.asarray(jensen_shannon(jnp.stack([logits[0]] * 3))) < 1e-6)


def test_schedule_warmup_then_cosine():
    schedule = learning_rate_schedule(0.1, total_steps=100, warmup_steps=10)
    assert schedule(0) == 0.0
    assert schedule(10) == pytest.approx(0.1)
    assert schedule(55) == pytest.approx(0.05, rel=1e-3)
    assert schedule(100) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.peers
def test_sgd_matches_torch_sgd_nesterov_with_weight_decay():
    import torch

    w0 = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    grads = [np.random.default_rng(i + 1).normal(size=(4, 3)).astype(np.float32) for i in range(5)]
    tx = sgd(0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    params = jnp.asarray(w0)
    opt_state = tx.init(params)
    for g in grads:
        updates, opt_state = tx.update(jnp.asarray(g), opt_state, params)
        params = optax.apply_updates(params, updates)
    tw = torch.nn.Parameter(torch.tensor(w0))
    opt = torch.optim.SGD([tw], lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    for g in grads:
        tw.grad = torch.tensor(g)
        opt.step()
    np.testing.assert_allclose(params, tw.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_train_and_evaluate_learns_writes_metrics_and_does_not_repeat(tmp_path):
    data = make_idx_dataset(str(tmp_path / "data"), n_train=256, n_test=100)
    config = tiny_config(
        data,
        **{
            "train.num_steps": 16,
            "checkpoint.every_steps": 8,
            "optimizer.learning_rate": 0.1,
            "optimizer.warmup_epochs": 0.0,
            "augment.name": "none",
        },
    )
    workdir = str(tmp_path / "run")
    summary = train_and_evaluate(config, workdir)
    assert summary["test_accuracy"] > 0.3  # chance is 0.1; intensity classes are easy
    assert summary["num_eval_examples"] == 100
    for name in ("config.json", "summary.json", "metrics.jsonl"):
        assert os.path.exists(os.path.join(workdir, name))
    assert os.listdir(os.path.join(workdir, "tensorboard"))
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train_rows] == list(range(2, 17, 2))
    assert all("steps_per_second" in r and "learning_rate" in r for r in train_rows)
    again = train_and_evaluate(config, workdir)
    assert again["steps_this_session"] == 0
    assert again["test_accuracy"] == summary["test_accuracy"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "policy",
    [
        "augmix",
        "autoaugment",
        "randaugment",
        "trivialaugment",
        "cutout",
        "gaussian_noise",
        "mixup",
        "cutmix",
    ],
)
def test_every_policy_trains_inside_the_data_parallel_step(policy):
    """One step on 2 fake devices; AugMix brings its 3 views and the JSD term."""
    from flatrob_jax.augment import names

    assert policy in names()
    mesh = distributed.make_mesh(2)
    cfg = default_config()
    cfg.name = policy
    augmentation = build_train_augmentation(cfg)
    if policy == "augmix":
        assert augmentation.num_views == 3 and augmentation.consistency_weight == 12.0
    model = get_model("cnn_tiny", 10, axis_name=distributed.AXIS)
    state = distributed.replicate(
        mesh, create_train_state(jax.random.key(0), model, optax.sgd(0.05, 0.9), (28, 28, 1))
    )
    step = make_train_step(mesh, augmentation=augmentation, num_classes=10, label_smoothing=0.0)
    state, metrics = step(
        state,
        distributed.shard_host_batch(mesh, _batch(8)),
        distributed.replicate(mesh, jax.random.key(1)),
    )
    metrics = jax.device_get(metrics)
    assert np.isfinite(metrics["loss"]) and int(state.step) == 1
    if policy == "augmix":
        assert metrics["loss"] > metrics["cross_entropy"]  # the JSD term is in the loss


def test_a_diverging_run_stops_with_an_error_naming_the_step(tmp_path):
    data = make_idx_dataset(str(tmp_path / "data"), n_train=128, n_test=32)
    # lr 1e30: the losses of steps 1 and 2 are finite, from step 3 on they are NaN. Metrics
    # reach the host only at step 6 (the log step); the error still names step 3.
    config = tiny_config(
        data,
        **{
            "train.num_steps": 6,
            "optimizer.learning_rate": 1e30,
            "augment.name": "none",
            "log_every_steps": 6,
            "checkpoint.every_steps": None,
        },
    )
    with pytest.raises(FloatingPointError, match=r"training loss is nan at step 3:"):
        train_and_evaluate(config, str(tmp_path / "run"))
    assert not os.path.exists(os.path.join(tmp_path, "run", "checkpoints", "6"))


def test_a_sam_run_trains_resumes_from_its_checkpoint_and_loads_for_eval(tmp_path):
    """ASAM's optimizer state (optax.contrib.sam's, opaque mode) goes through the checkpoint:
    a run stopped at step 2 resumes there, and load_for_eval rebuilds it from config.json."""
    from flatrob_jax.runs import load_for_eval

    data = make_idx_dataset(str(tmp_path / "data"), n_train=128, n_test=32)
    sam = {
        "optimizer.sam_rho": 0.5,
        "optimizer.sam_adaptive": True,
        "augment.name": "none",
        "checkpoint.every_steps": None,
    }
    workdir = str(tmp_path / "run")
    first = train_and_evaluate(tiny_config(data, **{"train.num_steps": 2, **sam}), workdir)
    assert first["steps"] == 2
    again = train_and_evaluate(tiny_config(data, **{"train.num_steps": 4, **sam}), workdir)
    assert again["steps_this_session"] == 2 and np.isfinite(again["test_loss"])
    run = load_for_eval(workdir)
    assert run.step == 4 and run.config.optimizer.sam_adaptive


def test_init_from_starts_from_another_runs_weights_with_a_fresh_optimizer(tmp_path):
    from flatrob_jax.runs import load_for_eval
    from flatrob_jax.training import builders

    data = make_idx_dataset(str(tmp_path / "data"), n_train=128, n_test=32)
    plain = {"augment.name": "none", "checkpoint.every_steps": None}
    source = str(tmp_path / "source")
    train_and_evaluate(tiny_config(data, **{"train.num_steps": 2, **plain}), source)
    # A learning rate of 0: one step leaves the params at the source's exactly.
    frozen = {**plain, "optimizer.learning_rate": 0.0, "train.num_steps": 1}
    run = str(tmp_path / "run")
    train_and_evaluate(tiny_config(data, **{**frozen, "train.init_from": source}), run)
    a, b = load_for_eval(source), load_for_eval(run)
    assert b.step == 1  # the step (and the schedule) start fresh
    chex.assert_trees_all_equal(a.variables["params"], b.variables["params"])
    # ... which are not the random init of the same seed (the source did train).
    init = builders.initial_state(a.config, a.model, total_steps=1, steps_per_epoch=1)
    first_leaf = lambda tree: np.asarray(jax.tree.leaves(tree)[0])  # noqa: E731
    assert not np.array_equal(first_leaf(init.params), first_leaf(a.variables["params"]))
    with pytest.raises(FileNotFoundError, match=r"train.init_from='.*nowhere': no checkpoint"):
        train_and_evaluate(
            tiny_config(data, **{**frozen, "train.init_from": str(tmp_path / "nowhere")}),
            str(tmp_path / "r2"),
        )
    wider = {**frozen, "model.name": "cnn_small", "train.init_from": source}
    with pytest.raises(ValueError, match=r"do not fit this run's model \(it trained model.name="):
        train_and_evaluate(tiny_config(data, **wider), str(tmp_path / "r3"))


def test_stop_at_loss_ends_the_run_at_the_first_logged_loss_below_it(tmp_path):
    """A matched end point: the run stops at the first log step whose mean loss is <= the
    target, saves its checkpoint there and is finished (summary.json: stopped_at)."""
    from flatrob_jax.runs import load_for_eval

    data = make_idx_dataset(str(tmp_path / "data"), n_train=128, n_test=32)
    full = train_and_evaluate(
        tiny_config(data, **{"train.num_steps": 12, "checkpoint.every_steps": None}),
        str(tmp_path / "full"),
    )
    losses = [
        json.loads(line)
        for line in open(tmp_path / "full" / "metrics.jsonl")
        if json.loads(line)["split"] == "train"
    ]
    target = losses[2]["loss"]  # reached at the third log step (step 6), maybe earlier
    first = next(m["step"] for m in losses if m["loss"] <= target)
    assert first < 12
    workdir = str(tmp_path / "stopped")
    summary = train_and_evaluate(
        tiny_config(
            data,
            **{"train.num_steps": 12, "train.stop_at_loss": target, "checkpoint.every_steps": None},
        ),
        workdir,
    )
    assert summary["stopped_at"] == first and summary["steps"] == 12
    assert summary["steps_this_session"] == first and full["stopped_at"] is None
    assert load_for_eval(workdir).step == first
