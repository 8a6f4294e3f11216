"""Checkpoints: the only module that touches orbax (``flatrob_jax.runs.load_for_eval`` loads a
run for evaluation through it).

Layout of a workdir (the config files are ``configuration.save_run_config``'s)::

    workdir/checkpoints/<step>/  orbax checkpoints; orbax writes each into a temporary
                                 directory and renames it when complete, so a kill at any
                                 moment leaves every earlier checkpoint intact

The workdir may be a gs:// URI: orbax gets it unchanged and, on an object store where there is
no rename, marks a checkpoint complete with a commit file instead; a checkpoint without it is
ignored when resuming, as a temporary directory is locally.

A checkpoint that cannot be read raises ``CheckpointError`` naming its path; nothing is ever
deleted except by orbax's ``max_to_keep`` after a newer checkpoint is fully written.
"""

import jax
import orbax.checkpoint as ocp

from flatrob_jax import distributed, fileio


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be restored."""


def _multiprocessing_options() -> ocp.options.MultiprocessingOptions:
    """All processes save and restore together (orbax's barriers span them), except inside
    ``distributed.process_local()``, where this process alone reads a run (the analyses of a
    multi-host sweep, one run per process): then orbax's barriers involve no other process."""
    if jax.process_count() > 1 and distributed.is_process_local():
        me = jax.process_index()
        return ocp.options.MultiprocessingOptions(
            primary_host=me, active_processes={me}, barrier_sync_key_prefix=f"process{me}"
        )
    return ocp.options.MultiprocessingOptions()


class Checkpointer:
    """Periodic, atomic checkpoints of a pytree of arrays in ``workdir/checkpoints``."""

    def __init__(self, workdir: str, max_to_keep: int = 2, async_save: bool = True):
        fileio.require_support(workdir)
        # A local path is made absolute (orbax wants one); a URI is passed as it is.
        self.directory = fileio.join(fileio.absolute(workdir), "checkpoints")
        multiprocessing = _multiprocessing_options()
        if multiprocessing.active_processes:  # orbax creates no directory for a subset
            fileio.makedirs(self.directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep,
                create=not multiprocessing.active_processes,
                enable_async_checkpointing=async_save,
                multiprocessing_options=multiprocessing,
            ),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self):
        return list(self.manager.all_steps())

    def save(self, step: int, tree, force: bool = False) -> bool:
        """Start saving ``tree`` as checkpoint ``step`` (the host copy is taken before this
        returns, so the caller may donate the arrays afterwards)."""
        return self.manager.save(step, args=ocp.args.StandardSave(tree), force=force)

    def restore(self, template, step: int | None = None, partial: bool = False):
        """Restore into the structure/shardings of ``template`` (latest step by default).

        ``partial=True`` restores only the entries ``template`` has (e.g. the weights without
        the optimizer state, for evaluation: a run loads for analysis even when the optimizer's
        state layout has changed since it was trained)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory!r}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        if partial:
            args = ocp.args.PyTreeRestore(
                abstract,
                restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
                partial_restore=True,
            )
        else:
            args = ocp.args.StandardRestore(abstract)
        try:
            return self.manager.restore(step, args=args)
        except Exception as e:
            raise CheckpointError(
                f"checkpoint {fileio.join(self.directory, str(step))!r} cannot be restored "
                f"({type(e).__name__}: {str(e)[:500]}). Nothing was deleted. Move that directory "
                f"aside to resume from the previous checkpoint (available steps: "
                f"{self.all_steps()}), or pass a new workdir to start over."
            ) from e

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()
