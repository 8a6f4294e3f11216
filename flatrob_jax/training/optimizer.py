"""SGD with (Nesterov) momentum, coupled weight decay and a warmup + cosine schedule, optionally
wrapped in sharpness-aware minimization (SAM, Foret et al. 2021) or adaptive SAM (ASAM, Kwon
et al. 2021).

The SGD update matches ``torch.optim.SGD(lr, momentum, weight_decay, nesterov)``: the decay is
added to the gradient before momentum (L2 regularization), on every parameter.

SAM (``sam_rho > 0``): each step takes the gradient ``g`` at ``w``, moves to the ascent point
``w + e`` and hands the gradient there to the SGD above (which decays ``w``, not ``w + e``):

    SAM:  e = rho * g / ||g||                          (Foret et al. 2021, eq. 2)
    ASAM: e = rho * T^2 g / ||T g||,  T = |w| + eta    (Kwon et al. 2021, eq. 8, elementwise)

The ascent uses the gradient of the loss only (weight decay is the base optimizer's, as in the
PyTorch reference implementations of SAM and ASAM). Built on ``optax.contrib.sam`` in opaque
mode: the caller passes ``grad_fn(params, i)`` to ``update`` (see
``flatrob_jax.training.steps``, which averages that gradient over devices, so the ascent point
and the step are the same on 1 and on N devices).
"""

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ("sgd",)


def learning_rate_schedule(
    peak: float, total_steps: int, warmup_steps: int, schedule: str = "cosine"
) -> optax.Schedule:
    """Linear warmup from 0 to ``peak`` over ``warmup_steps``, then cosine to 0 at
    ``total_steps`` (or constant)."""
    if schedule == "cosine":
        if warmup_steps > 0:
            return optax.warmup_cosine_decay_schedule(
                0.0, peak, warmup_steps, max(total_steps, warmup_steps + 1), 0.0
            )
        return optax.cosine_decay_schedule(peak, max(total_steps, 1))
    if schedule == "constant":
        if warmup_steps > 0:
            return optax.join_schedules(
                [optax.linear_schedule(0.0, peak, warmup_steps), optax.constant_schedule(peak)],
                [warmup_steps],
            )
        return optax.constant_schedule(peak)
    raise ValueError(f"unknown schedule {schedule!r}; valid: 'cosine', 'constant'")


def sgd(schedule, momentum: float, nesterov: bool, weight_decay: float):
    parts = []
    if weight_decay:
        parts.append(optax.add_decayed_weights(weight_decay))
    parts.append(optax.sgd(schedule, momentum=momentum or None, nesterov=nesterov))
    return optax.chain(*parts)


def sam_ascent(
    rho: float, *, adaptive: bool = False, eta: float = 0.01, eps: float = 1e-12
) -> optax.GradientTransformation:
    """The ascent step of SAM / ASAM as an optax transformation: gradient ``g`` at ``w``
    (``params``) -> ``-e`` with ``e = rho g / (||g|| + eps)`` or, adaptive,
    ``e = rho T^2 g / (||T g|| + eps)``, ``T = |w| + eta`` (the norms over the whole pytree).

    The sign is optax's: ``optax.contrib.sam`` negates its adversarial optimizer's output, so
    the ascent point is ``w + e``. Written here rather than as
    ``chain(optax.contrib.normalize(), optax.sgd(rho))`` because (1) ASAM needs the parameters
    ``w`` inside the transform, which optax.contrib offers no normalizer for, and (2)
    ``optax.contrib.normalize`` divides by ``||g||`` without an epsilon, which turns an exactly
    zero gradient (a converged or dead network) into NaN; the references add 1e-12 / 1e-16.
    ``eta`` is ASAM's (its default 0.01); it keeps zero weights (and biases initialised at 0)
    perturbable."""
    if not rho > 0:
        raise ValueError(f"SAM rho must be > 0, got {rho!r}")
    if adaptive and not eta >= 0:
        raise ValueError(f"ASAM eta must be >= 0, got {eta!r}")

    def update_fn(updates, state, params=None):
        if adaptive:
            if params is None:
                raise ValueError("adaptive SAM needs the parameters: call update(g, state, params)")
            scale = jax.tree.map(lambda w: jnp.abs(w) + eta, params)
            scaled = jax.tree.map(jnp.multiply, scale, updates)  # T g
            norm = optax.tree.norm(scaled)
            direction = jax.tree.map(jnp.multiply, scale, scaled)  # T^2 g
        else:
            norm = optax.tree.norm(updates)
            direction = updates
        factor = -rho / (norm + eps)
        return jax.tree.map(lambda d: (factor * d).astype(d.dtype), direction), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def with_sam(
    base: optax.GradientTransformation, rho: float, *, adaptive: bool = False, eta: float = 0.01
) -> optax.GradientTransformationExtraArgs:
    """``base`` (the outer optimizer) with SAM's (or ASAM's) ascent step before each update.

    ``optax.contrib.sam(base, sam_ascent(...), sync_period=2, opaque_mode=True)``: one ascent
    step, then one ``base`` update with the gradient at the ascent point, per ``update`` call
    (the step counter and schedule advance once per training step). ``update`` must be called
    with ``grad_fn=(params, i) -> gradient`` (the caller's gradient at the ascent point, already
    averaged over devices). Opaque mode keeps the parameters the rest of the system sees at
    ``w``: the ascent point never leaves the update, so BatchNorm statistics and checkpoints
    belong to ``w``."""
    return optax.contrib.sam(
        base,
        sam_ascent(rho, adaptive=adaptive, eta=eta),
        sync_period=2,
        reset_state=True,
        opaque_mode=True,
    )


def build_optimizer(opt_cfg, total_steps: int, steps_per_epoch: int):
    """From ``config.optimizer``: returns (tx, schedule). ``sam_rho > 0`` wraps the SGD in SAM
    (``sam_adaptive``: ASAM with ``sam_eta``)."""
    if opt_cfg.name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {opt_cfg.name!r}; valid: {', '.join(OPTIMIZERS)}")
    if not opt_cfg.sam_rho >= 0:
        raise ValueError(f"optimizer.sam_rho={opt_cfg.sam_rho!r}: must be >= 0 (0 = plain SGD)")
    if opt_cfg.sam_adaptive and not opt_cfg.sam_rho > 0:
        raise ValueError(
            "optimizer.sam_adaptive=True needs optimizer.sam_rho > 0 (ASAM's "
            "radius, e.g. 0.5 or 1.0); sam_rho=0 means no SAM at all"
        )
    warmup = int(round(opt_cfg.warmup_epochs * steps_per_epoch))
    schedule = learning_rate_schedule(opt_cfg.learning_rate, total_steps, warmup, opt_cfg.schedule)
    tx = sgd(schedule, opt_cfg.momentum, opt_cfg.nesterov, opt_cfg.weight_decay)
    if opt_cfg.sam_rho > 0:
        tx = with_sam(tx, opt_cfg.sam_rho, adaptive=opt_cfg.sam_adaptive, eta=opt_cfg.sam_eta)
    return tx, schedule
