"""``build_*`` helpers: the only code below the entry points that reads configs."""

import jax

from flatrob_jax.data import get_info
from flatrob_jax.execution import check_count
from flatrob_jax.models import get_model
from flatrob_jax.training import optimizer
from flatrob_jax.training.state import create_train_state


def build_model(config, axis_name=None):
    """The model of ``config.model`` for ``config.dataset`` (classes, normalization)."""
    info = get_info(config.dataset.name)
    kw = dict(
        mean=tuple(config.dataset.mean),
        std=tuple(config.dataset.std),
        axis_name=axis_name,
        dtype=config.model.dtype,
    )
    return get_model(config.model.name, info.num_classes, **kw)


def build_optimizer(config, total_steps: int, steps_per_epoch: int):
    """``(tx, schedule)`` from ``config.optimizer``: the schedule is built once, used by the
    optimizer and by whatever logs the learning rate. ``optimizer.sam_rho > 0`` wraps it in
    SAM/ASAM (``training.optimizer.with_sam``); the train step then supplies the second
    gradient."""
    return optimizer.build_optimizer(config.optimizer, total_steps, steps_per_epoch)


def initial_state(config, model, total_steps: int = 1, steps_per_epoch: int = 1, *, tx=None):
    """Freshly initialized TrainState from ``config.seed`` (also the restore template).

    ``tx``: the optimizer from ``build_optimizer``; without it one is built for
    ``total_steps`` (a restore template for evaluation needs only its state's structure)."""
    if tx is None:
        tx, _ = build_optimizer(config, total_steps, steps_per_epoch)
    key = jax.random.fold_in(jax.random.key(config.seed), 0)
    return create_train_state(key, model, tx, tuple(config.dataset.image_size))


def training_length(config, steps_per_epoch: int) -> int:
    """Total steps: ``train.num_steps`` if set, else ``train.num_epochs`` epochs."""
    num_steps = check_count("train.num_steps", config.train.num_steps, none_means="derived")
    if num_steps is not None:
        return num_steps
    return int(round(config.train.num_epochs * steps_per_epoch))
