"""Train and eval steps, written per device (pmap model) and run as jit(shard_map(...)).

Per device: the local slice of the global batch. Gradients and metrics are averaged with
``lax.pmean`` over the mesh axis; BatchNorm averages its batch statistics over the same axis
(``axis_name`` of the model), so 1 and N devices compute the same step for the same global
batch, up to float reassociation.
"""

import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.sharding import PartitionSpec as P

from flatrob_jax.augment import TrainAugmentation
from flatrob_jax.distributed import AXIS, data_parallel
from flatrob_jax.execution import example_keys, to_float_images
from flatrob_jax.losses import cross_entropy
from flatrob_jax.training.losses import jensen_shannon, smooth_labels

__all__ = [
    "eval_step_per_device",
    "make_eval_step",
    "make_train_step",
    "train_step_per_device",
]


def train_step_per_device(
    state,
    batch,
    base_key,
    *,
    augmentation: TrainAugmentation,
    num_classes: int,
    label_smoothing: float,
):
    """One optimizer step on this device's slice ``batch`` ({'image', 'label'}).

    With SAM/ASAM (``training.optimizer.with_sam``) the optimizer asks for a second gradient
    at the ascent point ``w + e`` (``grad_fn``); both gradients are ``lax.pmean``-ed over the
    devices, so ``e`` and the step are those of the global batch on any device count.
    BatchNorm running statistics are updated by the forward pass at ``w`` only (the one whose
    loss and accuracy are reported); the pass at ``w + e`` normalizes with its batch statistics
    and its running-statistic update is discarded.

    Randomness: example i of the global batch at step t augments with
    ``fold_in(fold_in(base_key, t), i)``: independent of the device count."""
    images = to_float_images(batch["image"])
    labels = smooth_labels(batch["label"], num_classes, label_smoothing)
    local_batch = images.shape[0]
    step_key = jax.random.fold_in(base_key, state.step)
    keys = example_keys(step_key, local_batch, lax.axis_index(AXIS) * local_batch)
    images, labels = augmentation.apply(keys, images, labels)
    views = augmentation.num_views
    if views > 1:  # [V, B, H, W, C] with the clean view first
        images = images.reshape((views * local_batch,) + images.shape[2:])

    def loss_fn(params):
        logits, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats},
            images,
            train=True,
            mutable=["batch_stats"],
        )
        ce = jnp.mean(cross_entropy(logits[:local_batch], labels))
        loss = ce
        if views > 1:
            js = jnp.mean(jensen_shannon(logits.reshape(views, local_batch, -1)))
            loss = ce + augmentation.consistency_weight * js
        return loss, (updates["batch_stats"], logits[:local_batch], ce)

    (loss, (batch_stats, logits, ce)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params
    )
    grads = lax.pmean(grads, AXIS)

    def grad_at(params, _):
        """SAM's second gradient (at the ascent point), averaged over devices like the first.
        Same batch, same augmented images, batch statistics in the forward pass; the running
        statistics it would write are dropped (only the pass at ``w`` above updates them)."""
        return lax.pmean(jax.grad(lambda p: loss_fn(p)[0])(params), AXIS)

    # Plain optimizers ignore grad_fn (with_extra_args_support); SAM/ASAM call it once.
    tx = optax.with_extra_args_support(state.tx)
    updates, opt_state = tx.update(grads, state.opt_state, state.params, grad_fn=grad_at)
    state = state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, updates),
        opt_state=opt_state,
        batch_stats=batch_stats,
    )
    accuracy = jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(labels, -1))
    metrics = lax.pmean({"loss": loss, "cross_entropy": ce, "accuracy": accuracy}, AXIS)
    return state, metrics


def eval_step_per_device(variables, batch, *, apply_fn):
    """Masked sums over this device's slice, psum'd over devices: loss, correct, count."""
    images = to_float_images(batch["image"])
    logits = apply_fn(variables, images, train=False)
    mask = batch["mask"]
    losses = cross_entropy(logits, jax.nn.one_hot(batch["label"], logits.shape[-1]))
    correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    sums = {
        "loss": jnp.sum(losses * mask),
        "correct": jnp.sum(correct * mask),
        "count": jnp.sum(mask),
    }
    return lax.psum(sums, AXIS)


def make_train_step(mesh, *, augmentation, num_classes, label_smoothing, donate=True):
    """jit(shard_map(train_step_per_device)): (state, batch, base_key) -> (state, metrics)."""

    def per_device(state, batch, base_key):
        return train_step_per_device(
            state,
            batch,
            base_key,
            augmentation=augmentation,
            num_classes=num_classes,
            label_smoothing=label_smoothing,
        )

    return data_parallel(
        per_device,
        mesh,
        in_specs=(P(), P(AXIS), P()),
        out_specs=(P(), P()),
        donate_argnums=(0,) if donate else (),
    )


def make_eval_step(mesh, apply_fn):
    """jit(shard_map(eval_step_per_device)): (variables, batch) -> summed metrics."""

    def per_device(variables, batch):
        return eval_step_per_device(variables, batch, apply_fn=apply_fn)

    return data_parallel(per_device, mesh, in_specs=(P(), P(AXIS)), out_specs=P())
