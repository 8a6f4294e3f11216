"""A trained (or imported) run, loaded for evaluation: ``load_for_eval(workdir)``.

Every analysis (curvature, corruptions, attacks) needs the same three things from a workdir:
the config the run was trained with, the Flax module it describes, and the restored weights
(parameters and BatchNorm running statistics). ``EvalModel`` bundles them, with
``apply_fn(x) -> logits`` for x float32 NHWC in [0, 1] and BatchNorm in eval mode.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import ml_collections

from flatrob_jax import checkpoint as ckpt_lib
from flatrob_jax import configuration, execution
from flatrob_jax.training import builders
from flatrob_jax.training.state import eval_variables


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


def load_for_eval(workdir: str, step: int | None = None) -> EvalModel:
    """Load the run's config, rebuild its model and restore params + BatchNorm statistics
    (the latest checkpoint unless ``step`` is given)."""
    config = configuration.load_run_config(workdir)
    model = builders.build_model(config, axis_name=None)
    # Shapes only (no compilation of the model's init), on one device; only the step and the
    # weights are restored, not the optimizer state (which evaluation does not need).
    template = jax.eval_shape(
        lambda: builders.initial_state(config, model, total_steps=1, steps_per_epoch=1)
    )
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    wanted = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
        {"step": template.step, **eval_variables(template)},
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
