"""The training loop: ``train_and_evaluate(config, workdir)``.

Thin by design: build everything from the config, restore the latest checkpoint if the workdir
has one, run the jitted data-parallel step, log, evaluate, checkpoint. A run killed at any
point and restarted ends with parameters identical to an uninterrupted run: batches and
augmentation keys are pure functions of (seed, step), and the state comes from the last
complete checkpoint. A non-finite training loss stops the run with a FloatingPointError that
names the step. The workdir and the data directory may be gs:// URIs (``flatrob_jax.fileio``).

Multi-host (one process per host, ``flatrob_jax.distributed``): the workdir must be shared
(checked at start), process 0 writes config, metrics and summary and decides the resume step
for all; SIGTERM/SIGHUP/SIGINT save a checkpoint at a step all processes agree on and raise
``distributed.Preempted`` (exit status ``distributed.PREEMPTED_EXIT_CODE`` from the entry points).
"""

import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from flatrob_jax import checkpoint as ckpt_lib
from flatrob_jax import configuration, distributed, fileio
from flatrob_jax.augment import build_train_augmentation
from flatrob_jax.data import EvalBatches, TrainBatches, build_source, get_info
from flatrob_jax.execution import check_count
from flatrob_jax.metrics_log import MetricWriter
from flatrob_jax.progress import Progress, format_duration
from flatrob_jax.training import builders
from flatrob_jax.training.state import eval_variables, state_to_tree, tree_to_state
from flatrob_jax.training.steps import make_eval_step, make_train_step


def evaluate(eval_step, mesh, variables, batches: EvalBatches) -> dict:
    """Accuracy and mean loss over every example of ``batches`` exactly once."""
    totals = None
    for batch in batches:
        sums = eval_step(variables, distributed.shard_host_batch(mesh, batch))
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    totals = jax.tree.map(float, jax.device_get(totals))
    count = max(totals["count"], 1.0)
    return {
        "accuracy": totals["correct"] / count,
        "loss": totals["loss"] / count,
        "error": 1.0 - totals["correct"] / count,
        "num_examples": int(totals["count"]),
    }


def check_finite_loss(metrics: list, first_step: int) -> None:
    """Stop a diverged run: ``metrics`` are the host copies of the metrics of steps
    ``first_step``, ``first_step + 1``, ... (numbered as in the logs); the first non-finite
    loss raises FloatingPointError naming its step and value. Called where metrics reach the
    host anyway (logging, checkpoints), so it adds no device sync."""
    for i, m in enumerate(metrics):
        loss = float(m["loss"])
        if not np.isfinite(loss):
            raise FloatingPointError(
                f"training loss is {loss} at step {first_step + i}: the run diverged. Lower "
                f"optimizer.learning_rate (or add warmup) and train again in a new workdir."
            )


def _log(msg: str) -> None:
    if jax.process_index() == 0:
        print(msg, flush=True)


def _log_any(msg: str) -> None:
    print(msg, flush=True)  # from whichever process it concerns (e.g. the one signalled)


def _preempted(step, state, pending, writer, checkpointer, guard, workdir, before_write):
    """Save ``state`` as checkpoint ``step`` (unless just saved), wait until it is complete on
    every process, and raise ``distributed.Preempted``: the entry points exit with
    ``distributed.PREEMPTED_EXIT_CODE`` and the same command resumes from here."""
    check_finite_loss(jax.device_get(pending), first_step=step - len(pending) + 1)
    before_write()
    writer.flush()
    if step not in checkpointer.all_steps():
        checkpointer.save(step, state_to_tree(state), force=True)
    checkpointer.close()  # waits for the save to finish (a collective on several hosts)
    writer.close()
    guard.close()  # the previous signal handlers again
    _log(
        f"preempted ({guard.reason}): checkpoint saved at step "
        f"{step} in {workdir}; exit status {distributed.PREEMPTED_EXIT_CODE}"
    )
    raise distributed.Preempted(step, workdir)


def warm_start(state, source: str):
    """``state`` with the params and BatchNorm statistics of the run in workdir ``source``
    (its latest checkpoint); the step, optimizer state and schedule stay fresh. Returns the
    new state and the source's step."""
    checkpointer = ckpt_lib.Checkpointer(source, async_save=False)
    try:
        step = checkpointer.latest_step()
        if step is None:
            raise FileNotFoundError(
                f"train.init_from={source!r}: no checkpoint there (train that run first)"
            )
        try:
            tree = checkpointer.restore(eval_variables(state), step, partial=True)
        except ckpt_lib.CheckpointError as e:
            raise ValueError(
                f"train.init_from={source!r}: its weights do not fit this run's model "
                f"({_model_hint(source)}); init_from needs the same model"
            ) from e
    finally:
        checkpointer.close()
    return state.replace(params=tree["params"], batch_stats=tree["batch_stats"]), int(step)


def _model_hint(workdir: str) -> str:
    try:
        return f"it trained model.name={configuration.load_run_config(workdir).model.name!r}"
    except Exception as e:  # a hint only: the restore error is the cause
        return f"its config cannot be read: {type(e).__name__}"


def train_and_evaluate(config, workdir: str, *, before_write=None) -> dict:
    """Train ``config`` in ``workdir`` (resuming from its latest checkpoint) and return the
    final summary (also written to workdir/summary.json).

    ``before_write``: called before every write into ``workdir`` after the start (metrics,
    checkpoints, summary.json); it raises to stop the run without writing (a sweep unit's
    ``workdir_lease.Lease.check``, when another attempt has taken the run over)."""
    before_write = before_write or (lambda: None)
    t_start = time.time()
    # A gs:// workdir or data_dir without the storage extra fails here, before any work.
    fileio.require_support(workdir, config.dataset.data_dir)
    fileio.makedirs(workdir)
    distributed.check_shared_workdir(workdir)  # several hosts: all see process 0's files
    is_main = jax.process_index() == 0
    if is_main:
        configuration.save_run_config(workdir, config)
    mesh = distributed.make_mesh(
        check_count("num_devices", config.num_devices, none_means="all devices")
    )
    num_devices = mesh.devices.size
    if config.train.batch_size % num_devices:
        raise ValueError(
            f"train.batch_size={config.train.batch_size} is not divisible by the "
            f"{num_devices} devices"
        )
    info = get_info(config.dataset.name)

    train_source = build_source(config.dataset, config.dataset.train_split, train=True)
    eval_source = build_source(config.dataset, config.dataset.eval_split, train=False)
    pidx, pcount = jax.process_index(), jax.process_count()
    train_batches = TrainBatches(train_source, config.train.batch_size, config.seed, pidx, pcount)
    eval_batches = EvalBatches(eval_source, config.train.eval_batch_size, pidx, pcount)
    steps_per_epoch = train_batches.steps_per_epoch
    total_steps = builders.training_length(config, steps_per_epoch)

    model = builders.build_model(config, axis_name=distributed.AXIS)
    tx, schedule = builders.build_optimizer(config, total_steps, steps_per_epoch)
    # Replicated on the (global) mesh first: a checkpoint is restored straight into it, each
    # process reading its own shards (no host-local copy to transfer across hosts).
    state = distributed.replicate(mesh, builders.initial_state(config, model, tx=tx))
    checkpointer = ckpt_lib.Checkpointer(workdir, max_to_keep=config.checkpoint.max_to_keep)
    start_step = 0
    # Process 0 reads the checkpoint directory; every process resumes from the step it saw.
    latest = distributed.decide_on_main(checkpointer.latest_step, "the step to resume from")
    if latest is not None:
        tree = checkpointer.restore(state_to_tree(state), latest)
        state = tree_to_state(state, tree)
        start_step = int(state.step)
        _log(f"resumed from {checkpointer.directory}/{start_step}")
    elif config.train.init_from:
        state, source_step = warm_start(state, config.train.init_from)
        _log(f"initialized from {config.train.init_from} (step {source_step}): weights only")

    writer = MetricWriter(workdir, enabled=is_main)
    writer.truncate_after(start_step)
    augmentation = build_train_augmentation(config.augment)
    train_step = make_train_step(
        mesh,
        augmentation=augmentation,
        num_classes=info.num_classes,
        label_smoothing=config.train.label_smoothing,
    )
    eval_step = make_eval_step(mesh, model.apply)
    base_key = distributed.replicate(mesh, jax.random.fold_in(jax.random.key(config.seed), 1))

    _log(
        f"training {config.model.name} on {config.dataset.name} with augmentation "
        f"{config.augment.name!r}: {total_steps} steps ({steps_per_epoch}/epoch), global "
        f"batch {config.train.batch_size} on {num_devices} device(s), workdir {workdir}"
    )
    progress = Progress(total_steps, start_step)
    log_every = max(1, config.log_every_steps)
    ckpt_every = check_count(
        "checkpoint.every_steps", config.checkpoint.every_steps, none_means="at the end only"
    )
    eval_every = check_count("eval_every_steps", config.eval_every_steps, none_means="at the end")
    pending, t_train = [], time.perf_counter()
    step = start_step
    stop_at, stopped = config.train.stop_at_loss, None
    # SIGTERM/SIGHUP/SIGINT: save at a step every process agrees on, then raise Preempted.
    guard = distributed.PreemptionGuard(check_every=log_every, log=_log_any)
    for batch in guard.watch(train_batches.iterate(start_step, total_steps)):
        state, metrics = train_step(state, distributed.shard_host_batch(mesh, batch), base_key)
        step += 1
        pending.append(metrics)
        if step % log_every == 0 or step == total_steps:
            fetched = jax.device_get(pending)
            check_finite_loss(fetched, first_step=step - len(fetched) + 1)
            means = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
            means["learning_rate"] = float(schedule(step - 1))
            means["steps_per_second"] = progress.rate(step)
            means["images_per_second"] = means["steps_per_second"] * config.train.batch_size
            before_write()
            writer.write(step, "train", means)
            pending = []
            _log(progress.line(step, f"loss {means['loss']:.4f} acc {means['accuracy']:.4f}"))
            if stop_at is not None and means["loss"] <= stop_at and step < total_steps:
                stopped = step  # the same on every process (the loss is a global mean)
                _log(f"train loss {means['loss']:.4f} <= train.stop_at_loss {stop_at}: stopping")
                break
        if eval_every is not None and step % eval_every == 0 and step < total_steps:
            result = evaluate(eval_step, mesh, eval_variables(state), eval_batches)
            writer.write(step, "eval", result)
            _log(
                f"eval at step {step}: accuracy {result['accuracy']:.4f} loss {result['loss']:.4f}"
            )
        if ckpt_every is not None and step % ckpt_every == 0 and step < total_steps:
            # Saving waits for the state anyway: check the losses not yet logged first, so a
            # run that has visibly diverged writes no new checkpoint.
            check_finite_loss(jax.device_get(pending), first_step=step - len(pending) + 1)
            before_write()
            writer.flush()  # the metrics of the steps up to this checkpoint are durable first
            checkpointer.save(step, state_to_tree(state))
        if guard.should_stop(step) and step < total_steps:
            _preempted(step, state, pending, writer, checkpointer, guard, workdir, before_write)
    train_seconds = time.perf_counter() - t_train

    before_write()
    end = stopped or total_steps
    if checkpointer.latest_step() != end:
        checkpointer.save(end, state_to_tree(state), force=True)
    checkpointer.wait()
    final = evaluate(eval_step, mesh, eval_variables(state), eval_batches)
    writer.write(end, "eval", final)
    trained_steps = end - start_step
    summary = {
        "test_accuracy": final["accuracy"],
        "test_loss": final["loss"],
        "num_eval_examples": final["num_examples"],
        "steps": total_steps,
        "stopped_at": stopped,  # the step train.stop_at_loss ended the run at (None: it did not)
        "steps_this_session": trained_steps,
        "train_seconds_this_session": train_seconds,
        "wall_seconds_this_session": time.time() - t_start,
        "images_per_second": trained_steps * config.train.batch_size / train_seconds
        if trained_steps
        else None,
        "num_devices": num_devices,
        "model": config.model.name,
        "dataset": config.dataset.name,
        "augment": config.augment.name,
    }
    before_write()
    writer.close()  # every metric is in storage before summary.json marks the run finished
    if is_main:
        fileio.atomic_write_text(
            fileio.join(workdir, "summary.json"), json.dumps(summary, indent=2)
        )
    checkpointer.close()
    # No process returns (or exits) before summary.json exists: a relaunch loop on any host
    # reads it to know the run is done.
    distributed.barrier("flatrob_jax:train:summary_written")
    _log(
        f"done: test accuracy {final['accuracy']:.4f} after {end} steps; "
        f"{trained_steps} steps this session in {format_duration(train_seconds)}"
        + (f" ({summary['images_per_second']:.0f} images/s)" if trained_steps else "")
    )
    return summary
