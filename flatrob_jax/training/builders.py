"""``build_*`` helpers: the only code below the entry points that reads configs."""
import jax

from flatrob_jax.data import get_info
from flatrob_jax.models import get_model
from flatrob_jax.training.optimizer import build_optimizer
from flatrob_jax.training.state import create_train_state


def build_model(config, axis_name=None):
    """The model of ``config.model`` for ``config.dataset`` (classes, normalization)."""
    info = get_info(config.dataset.name)
    kw = dict(mean=tuple(config.dataset.mean), std=tuple(config.dataset.std),
              axis_name=axis_name, dtype=config.model.dtype)
    return get_model(config.model.name, info.num_classes, **kw)


def initial_state(config, model, total_steps: int, steps_per_epoch: int):
    """Freshly initialized TrainState from ``config.seed`` (also the restore template)."""
    tx, _ = build_optimizer(config.optimizer, total_steps, steps_per_epoch)
    key = jax.random.fold_in(jax.random.key(config.seed), 0)
    return create_train_state(key, model, tx, tuple(config.dataset.image_size))


def training_length(config, steps_per_epoch: int) -> int:
    """Total steps: ``train.num_steps`` if > 0, else ``train.num_epochs`` epochs."""
    if config.train.num_steps > 0:
        return int(config.train.num_steps)
    return int(round(config.train.num_epochs * steps_per_epoch))
