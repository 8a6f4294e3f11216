"""Checkpoints: the only module that touches orbax.

Layout of a workdir::

    workdir/config.json          the run's config (written once; a changed config on resume is
                                 kept beside it as config.<n>.json, never overwriting)
    workdir/checkpoints/<step>/  orbax checkpoints; orbax writes each into a temporary
                                 directory and renames it when complete, so a kill at any
                                 moment leaves every earlier checkpoint intact

A checkpoint that cannot be read raises ``CheckpointError`` naming its path; nothing is ever
deleted except by orbax's ``max_to_keep`` after a newer checkpoint is fully written.
"""
import functools
import json
import os

import jax
import ml_collections
import orbax.checkpoint as ocp

from flatrob_jax.atomic_files import atomic_write_text


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be restored."""


def save_config(workdir: str, config: ml_collections.ConfigDict) -> str:
    """Write config.json beside the checkpoints; if one exists and differs, keep both."""
    text = config.to_json_best_effort(indent=2, sort_keys=True)
    path = os.path.join(workdir, "config.json")
    if os.path.exists(path):
        with open(path) as f:
            if f.read() == text:
                return path
        n = 1
        while os.path.exists(os.path.join(workdir, f"config.{n}.json")):
            n += 1
        path = os.path.join(workdir, f"config.{n}.json")
    atomic_write_text(path, text)
    return path


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run was started with (the latest config.<n>.json if it was changed)."""
    names = [f for f in os.listdir(workdir) if f.startswith("config") and f.endswith(".json")]
    if not names:
        raise FileNotFoundError(f"no config.json in workdir {workdir!r}: is it a flatrob_jax run?")
    latest = max(names, key=lambda f: (f.count("."), f))
    with open(os.path.join(workdir, latest)) as f:
        return ml_collections.ConfigDict(json.load(f))


class Checkpointer:
    """Periodic, atomic checkpoints of a pytree of arrays in ``workdir/checkpoints``."""

    def __init__(self, workdir: str, max_to_keep: int = 2, async_save: bool = True):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=True,
                enable_async_checkpointing=async_save))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self):
        return list(self.manager.all_steps())

    def save(self, step: int, tree, force: bool = False) -> bool:
        """Start saving ``tree`` as checkpoint ``step`` (the host copy is taken before this
        returns, so the caller may donate the arrays afterwards)."""
        return self.manager.save(step, args=ocp.args.StandardSave(tree), force=force)

    def restore(self, template, step: int | None = None):
        """Restore into the structure/shardings of ``template`` (latest step by default)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory!r}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        try:
            return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception as e:
            raise CheckpointError(
                f"checkpoint {os.path.join(self.directory, str(step))!r} cannot be restored "
                f"({type(e).__name__}: {str(e)[:500]}). Nothing was deleted. Move that directory "
                f"aside to resume from the previous checkpoint (available steps: "
                f"{self.all_steps()}), or pass a new workdir to start over.") from None

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()


class EvalModel:
    """What analysis needs from a finished (or running) run: config, model, variables."""

    def __init__(self, config, model, variables, step):
        self.config = config
        self.model = model
        self.variables = variables
        self.step = step

    @property
    def apply_fn(self):
        """``x -> logits`` (float32 NHWC in [0, 1], BatchNorm in eval mode), as a
        ``jax.tree_util.Partial`` whose leaves are the weights: jitted consumers that take it
        as an argument compile once for any weights of the same model."""
        return jax.tree_util.Partial(functools.partial(_apply_eval, self.model), self.variables)


def _apply_eval(model, variables, x):
    return model.apply(variables, x, train=False)


def load_for_eval(workdir: str, step: int | None = None) -> EvalModel:
    """Load the run's config, rebuild its model and restore params + BatchNorm statistics."""
    from flatrob_jax.training import builders  # late import: builders imports this module
    from flatrob_jax.training.state import eval_variables, state_to_tree, tree_to_state

    config = load_config(workdir)
    model = builders.build_model(config, axis_name=None)
    template = builders.initial_state(config, model, total_steps=1, steps_per_epoch=1)
    ckpt = Checkpointer(workdir, async_save=False)
    try:
        tree = ckpt.restore(state_to_tree(template), step)
        restored_step = int(tree["step"])
    finally:
        ckpt.close()
    state = tree_to_state(template, tree)
    # Host arrays: each consumer (curvature, attacks, corruptions) places them on its own mesh.
    variables = jax.device_get(eval_variables(state))
    return EvalModel(config, model, variables, restored_step)
