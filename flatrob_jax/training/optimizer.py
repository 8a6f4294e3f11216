"""SGD with (Nesterov) momentum, coupled weight decay and a warmup + cosine schedule.

The update matches ``torch.optim.SGD(lr, momentum, weight_decay, nesterov)``: the decay is
added to the gradient before momentum (L2 regularization), on every parameter.
"""
import optax

OPTIMIZERS = ("sgd",)


def learning_rate_schedule(peak: float, total_steps: int, warmup_steps: int,
                           schedule: str = "cosine") -> optax.Schedule:
    """Linear warmup from 0 to ``peak`` over ``warmup_steps``, then cosine to 0 at
    ``total_steps`` (or constant)."""
    if schedule == "cosine":
        if warmup_steps > 0:
            return optax.warmup_cosine_decay_schedule(0.0, peak, warmup_steps,
                                                      max(total_steps, warmup_steps + 1), 0.0)
        return optax.cosine_decay_schedule(peak, max(total_steps, 1))
    if schedule == "constant":
        if warmup_steps > 0:
            return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup_steps),
                                         optax.constant_schedule(peak)], [warmup_steps])
        return optax.constant_schedule(peak)
    raise ValueError(f"unknown schedule {schedule!r}; valid: 'cosine', 'constant'")


def sgd(schedule, momentum: float, nesterov: bool, weight_decay: float):
    parts = []
    if weight_decay:
        parts.append(optax.add_decayed_weights(weight_decay))
    parts.append(optax.sgd(schedule, momentum=momentum or None, nesterov=nesterov))
    return optax.chain(*parts)


def build_optimizer(opt_cfg, total_steps: int, steps_per_epoch: int):
    """From ``config.optimizer``: returns (tx, schedule)."""
    if opt_cfg.name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {opt_cfg.name!r}; valid: {', '.join(OPTIMIZERS)}")
    warmup = int(round(opt_cfg.warmup_epochs * steps_per_epoch))
    schedule = learning_rate_schedule(opt_cfg.learning_rate, total_steps, warmup, opt_cfg.schedule)
    return sgd(schedule, opt_cfg.momentum, opt_cfg.nesterov, opt_cfg.weight_decay), schedule
