"""A trained (or imported) run, loaded for evaluation: ``load_for_eval(workdir)``.

Every analysis (curvature, corruptions, attacks) needs the same three things from a workdir:
the config the run was trained with, the Flax module it describes, and the restored weights
(parameters and BatchNorm running statistics). ``EvalModel`` bundles them, with
``apply_fn(x) -> logits`` for x float32 NHWC in [0, 1] and BatchNorm in eval mode.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections

from flatrob_jax import checkpoint as ckpt_lib
from flatrob_jax import configuration, execution
from flatrob_jax.training import builders


@dataclasses.dataclass
class EvalModel:
    """What analysis needs from a run: its config, its model and its variables."""

    config: ml_collections.ConfigDict
    model: Any  # flax.linen.Module with apply(variables, x, train=False)
    variables: dict  # {'params': ..., 'batch_stats': ...} as host arrays
    step: int

    @property
    def apply_fn(self) -> jax.tree_util.Partial:
        """``x -> logits`` (BatchNorm in eval mode) as a ``jax.tree_util.Partial`` whose leaves
        are the weights: jitted consumers that take it as an argument compile once for any
        weights of the same model."""
        return execution.model_fn(self.model, self.variables)


def variable_shapes(model, config) -> dict:
    """``{'params', 'batch_stats'}`` of ``model`` as shapes (``jax.eval_shape`` of its init on
    one image of ``config.dataset.image_size``: nothing is computed or compiled). The restore
    template of evaluation: the weights only, never the optimizer's state, so loading a run
    does not build (or need) its optimizer."""
    image = jax.ShapeDtypeStruct((1, *config.dataset.image_size), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), image)
    return {
        "params": shapes["params"],
        "batch_stats": shapes.get("batch_stats", flax.core.FrozenDict()),
    }


def load_for_eval(workdir: str, step: int | None = None) -> EvalModel:
    """Load the run's config, rebuild its model and restore params + BatchNorm statistics
    (the latest checkpoint unless ``step`` is given); the optimizer state in the checkpoint is
    not read."""
    config = configuration.load_run_config(workdir)
    model = builders.build_model(config, axis_name=None)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    wanted = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
        {"step": jax.ShapeDtypeStruct((), jnp.int32), **variable_shapes(model, config)},
    )
    checkpointer = ckpt_lib.Checkpointer(workdir, async_save=False)
    try:
        tree = checkpointer.restore(wanted, step, partial=True)
        restored_step = int(tree["step"])
    finally:
        checkpointer.close()
    # Host arrays: each consumer (curvature, attacks, corruptions) places them on its own mesh.
    variables = jax.device_get({"params": tree["params"], "batch_stats": tree["batch_stats"]})
    return EvalModel(config, model, variables, restored_step)
