"""The training state: parameters, BatchNorm statistics, optimizer state and step."""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state


class TrainState(train_state.TrainState):
    batch_stats: Any = None


def create_train_state(
    key: jax.Array, model, tx: optax.GradientTransformation, image_shape: tuple
) -> TrainState:
    """Initialize ``model`` on a zero batch of ``image_shape`` (H, W, C)."""
    variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, *image_shape), jnp.float32)))(key)
    return TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        batch_stats=variables.get("batch_stats", flax.core.FrozenDict()),
        tx=tx,
    )


def state_to_tree(state: TrainState) -> dict:
    """The arrays of a TrainState as a plain dict (what checkpoints hold)."""
    return {
        "step": state.step,
        "params": state.params,
        "batch_stats": state.batch_stats,
        "opt_state": state.opt_state,
    }


def tree_to_state(template: TrainState, tree: dict) -> TrainState:
    return template.replace(
        step=tree["step"],
        params=tree["params"],
        batch_stats=tree["batch_stats"],
        opt_state=tree["opt_state"],
    )


def eval_variables(state: TrainState) -> dict:
    return {"params": state.params, "batch_stats": state.batch_stats}
