"""Auto-PGD (Croce & Hein, ICML 2020) exactly as pyautoattack 0.2.0 runs it, Linf and L2.

Reference: ``pyautoattack/autopgd_base.py`` (``APGDAttack.attack_single_run``/``perturb`` and
``APGDAttack_targeted.perturb``).  The whole attack (all restarts / target classes and all
iterations) is one jitted program: ``lax.fori_loop`` over iterations, ``lax.while_loop`` over
runs (stopping once every example of the device's batch is fooled).

Reference behaviour reproduced on purpose (quirks that change results are marked QUIRK):

* start: ``x + eps * t / (||t|| + 1e-12)`` with ``t ~ U[-1, 1]`` (Linf) or ``N(0, 1)`` (L2),
  then clipped to [0, 1] -- for Linf the start touches the sphere, it is not uniform in the ball;
* first step size ``2 * eps``; the first iteration has no momentum (``a = 1``), later ones use
  ``a = 0.75`` (hard-coded, independent of ``rho``);
* checkpoints: the first after ``p1 = max(int(0.22 n), 1)`` iterations, then the interval
  shrinks by ``max(int(0.03 n), 1)`` down to ``max(int(0.06 n), 1)`` (iterations 21, 40, 56,
  69, 79, 86, 92, 98 for ``n = 100``);
* at a checkpoint the step size of an example halves if the loss increased in at most
  ``rho * k`` of the last ``k`` iterations, or if it was not halved at the previous checkpoint
  and the best loss did not improve since; halving moves the iterate and its gradient back to
  the best point.  QUIRK: the previous iterate used by the momentum term is *not* reset, so
  the next step's momentum is ``x_best - x_{i}``;
* QUIRK: the oscillation count at the first checkpoint compares the first loss with
  ``loss_steps[-1]``, a not yet written (zero) entry, as Python's negative index does;
* returned point: the latest iterate found misclassified (``x_best_adv``); QUIRK: examples that are never
  misclassified are returned *clean* (not the highest-loss point), and examples misclassified
  before the attack are returned clean too;
* APGD-T (``loss='dlr-targeted'``) runs ``n_restarts`` runs for each of the target classes
  ranked 2nd, 3rd, ..., ``(n_target_classes + 1)``-th by the clean logits, on the examples
  still robust.

Randomness differs from the reference by design: each example's starts come from
``fold_in(fold_in(key, example_index), run_index)`` (torch's global RNG cannot be matched).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from flatrob_jax import execution
from flatrob_jax.attacks import losses, norms

APGD_LOSSES = ("ce", "dlr", "dlr-targeted")


class Schedule(NamedTuple):
    """Checkpoint constants of ``APGDAttack.__init__`` for ``n_iter`` iterations."""
    first_interval: int  # n_iter_2
    min_interval: int    # n_iter_min
    decrement: int       # size_decr


def schedule(n_iter: int) -> Schedule:
    return Schedule(max(int(0.22 * n_iter), 1), max(int(0.06 * n_iter), 1),
                    max(int(0.03 * n_iter), 1))


def checkpoint_iterations(n_iter: int) -> list[int]:
    """Iterations (0-based) at which step sizes are checked: ``[21, 40, ..., 98]`` for 100."""
    s = schedule(n_iter)
    out, k, counter = [], s.first_interval, 0
    for i in range(n_iter):
        counter += 1
        if counter == k:
            out.append(i)
            k = max(k - s.decrement, s.min_interval)
            counter = 0
    return out


class CheckState(NamedTuple):
    """Per-run bookkeeping of the step-size checkpoints."""
    counter: jax.Array          # iterations since the last checkpoint (counter3)
    interval: jax.Array         # current checkpoint interval k
    loss_best_last: jax.Array   # [B] best loss at the last checkpoint
    reduced_last: jax.Array     # [B] bool, halved at the last checkpoint


def init_check_state(loss_best: jax.Array, n_iter: int) -> CheckState:
    return CheckState(jnp.int32(0), jnp.int32(schedule(n_iter).first_interval), loss_best,
                      jnp.ones(loss_best.shape, bool))


def oscillation(loss_steps: jax.Array, i: jax.Array, k: jax.Array, rho: float) -> jax.Array:
    """``APGDAttack.check_oscillation``: loss rose in at most ``rho * k`` of the last ``k``
    steps.  ``loss_steps[n_iter, B]``; indices wrap like Python's (QUIRK, see module doc)."""
    n_iter = loss_steps.shape[0]
    c = jnp.arange(n_iter)
    cur = jnp.mod(i - c, n_iter)
    prev = jnp.mod(i - c - 1, n_iter)
    rose = (loss_steps[cur] > loss_steps[prev]) & (c < k)[:, None]
    count = jnp.sum(rose.astype(jnp.float32), axis=0)
    return count <= k.astype(jnp.float32) * jnp.float32(rho)


def checkpoint_step(state: CheckState, loss_steps: jax.Array, loss_best: jax.Array,
                    i: jax.Array, *, n_iter: int, rho: float) -> tuple[jax.Array, CheckState]:
    """One iteration of the step-size logic; returns (halve[B], new state)."""
    s = schedule(n_iter)
    counter = state.counter + 1
    at_check = counter == state.interval
    no_improvement = (~state.reduced_last) & (state.loss_best_last >= loss_best)
    flag = oscillation(loss_steps, i, state.interval, rho) | no_improvement
    halve = at_check & flag
    new = CheckState(
        counter=jnp.where(at_check, 0, counter),
        interval=jnp.where(at_check, jnp.maximum(state.interval - s.decrement, s.min_interval),
                           state.interval),
        loss_best_last=jnp.where(at_check, loss_best, state.loss_best_last),
        reduced_last=jnp.where(at_check, flag, state.reduced_last))
    return halve, new


def random_start(keys: jax.Array, x: jax.Array, eps: float, norm: str) -> jax.Array:
    """APGD's start ``clip(x + eps * normalize(t), 0, 1)``, one key per example."""
    shape = x.shape[1:]
    if norm == "Linf":
        t = jax.vmap(lambda k: jax.random.uniform(k, shape, x.dtype, -1.0, 1.0))(keys)
    else:
        t = jax.vmap(lambda k: jax.random.normal(k, shape, x.dtype))(keys)
    return jnp.clip(x + eps * norms.normalize(t, norm), 0.0, 1.0)


def apgd_step(x_adv, x, grad, momentum_dir, step_size, a, *, eps: float, norm: str):
    """One APGD update: gradient step, projection, momentum ``a``, projection again."""
    step = norms.bcast(step_size, x)
    if norm == "Linf":
        z = norms.project(x_adv + step * jnp.sign(grad), x, eps, norm)
    else:
        z = norms.project(x_adv + step * norms.normalize(grad, norm), x, eps, norm)
    return norms.project(x_adv + (z - x_adv) * a + momentum_dir * (1.0 - a), x, eps, norm)


class RunResult(NamedTuple):
    x_best: jax.Array       # highest-loss point
    robust: jax.Array       # [B] never misclassified during the run (acc)
    loss_best: jax.Array    # [B]
    x_best_adv: jax.Array   # latest misclassified iterate (or the start)
    zero_grad: jax.Array    # [B] the gradient at the start is exactly zero
    iterates: jax.Array     # [record, B, ...] the first `record` iterates (diagnostics)
    step_sizes: jax.Array   # [n_iter, B] step size used at each iteration (diagnostics)


def single_run(model_fn: Callable, x: jax.Array, y: jax.Array, x_init: jax.Array,
               y_target: jax.Array | None, *, eps: float, norm: str, loss: str, n_iter: int,
               rho: float = 0.75, record: int = 0) -> RunResult:
    """``APGDAttack.attack_single_run`` from the given start (after clipping to the box)."""

    def loss_and_grad(z):
        def total(z):
            logits = model_fn(z)
            per_example = losses.attack_loss(loss, logits, y, y_target)
            return jnp.sum(per_example), (per_example, logits)
        (_, (per_example, logits)), g = jax.value_and_grad(total, has_aux=True)(z)
        return per_example, logits, g

    x_adv = jnp.clip(x_init, 0.0, 1.0)
    loss0, logits0, grad0 = loss_and_grad(x_adv)
    batch = x.shape[0]
    zero_grad = jnp.sum(jnp.abs(grad0.reshape(batch, -1)), axis=1) == 0
    init = dict(
        x_adv=x_adv, x_adv_old=x_adv, grad=grad0, x_best=x_adv, grad_best=grad0,
        loss_best=loss0, x_best_adv=x_adv, robust=jnp.argmax(logits0, axis=1) == y,
        step_size=jnp.full((batch,), 2.0 * eps, x.dtype),
        loss_steps=jnp.zeros((n_iter, batch), x.dtype),
        check=init_check_state(loss0, n_iter),
        iterates=jnp.zeros((record,) + x.shape, x.dtype),
        step_sizes=jnp.zeros((n_iter, batch), x.dtype))

    def body(i, s):
        a = jnp.where(i > 0, 0.75, 1.0).astype(x.dtype)
        x_new = apgd_step(s["x_adv"], x, s["grad"], s["x_adv"] - s["x_adv_old"], s["step_size"],
                          a, eps=eps, norm=norm)
        if record:
            iterates = jax.lax.dynamic_update_index_in_dim(
                s["iterates"], x_new, jnp.minimum(i, record - 1), 0)
            s["iterates"] = jnp.where(i < record, iterates, s["iterates"])
        step_sizes = s["step_sizes"].at[i].set(s["step_size"])
        loss_i, logits, grad = loss_and_grad(x_new)
        pred_ok = jnp.argmax(logits, axis=1) == y
        fooled_now = norms.bcast(~pred_ok, x)
        improved = loss_i > s["loss_best"]
        imp = norms.bcast(improved, x)
        x_best = jnp.where(imp, x_new, s["x_best"])
        grad_best = jnp.where(imp, grad, s["grad_best"])
        loss_best = jnp.where(improved, loss_i, s["loss_best"])
        loss_steps = s["loss_steps"].at[i].set(loss_i)
        halve, check = checkpoint_step(s["check"], loss_steps, loss_best, i, n_iter=n_iter,
                                       rho=rho)
        h = norms.bcast(halve, x)
        return dict(
            x_adv=jnp.where(h, x_best, x_new), x_adv_old=s["x_adv"],
            grad=jnp.where(h, grad_best, grad), x_best=x_best, grad_best=grad_best,
            loss_best=loss_best, x_best_adv=jnp.where(fooled_now, x_new, s["x_best_adv"]),
            robust=s["robust"] & pred_ok,
            step_size=jnp.where(halve, s["step_size"] / 2.0, s["step_size"]),
            loss_steps=loss_steps, check=check, iterates=s["iterates"], step_sizes=step_sizes)

    s = jax.lax.fori_loop(0, n_iter, body, init)
    return RunResult(s["x_best"], s["robust"], s["loss_best"], s["x_best_adv"], zero_grad,
                     s["iterates"], s["step_sizes"])


def target_labels(clean_logits: jax.Array, run: jax.Array, n_restarts: int) -> jax.Array:
    """Target of run ``run``: the class ranked ``2 + run // n_restarts`` by the clean logits
    (``output.sort(dim=1)[1][:, -target_class]``; ties in stable ascending order)."""
    order = jnp.argsort(clean_logits, axis=1)
    rank = 2 + run // n_restarts
    return jnp.take(order, order.shape[1] - rank, axis=1)


def apgd_program(model_fn, valid, x, y, key_data, *, eps: float, norm: str, loss: str,
                 n_iter: int, n_restarts: int, n_target_classes: int, rho: float,
                 key_impl: str):
    """Per-device program of :func:`apgd` (``APGDAttack.perturb``/``APGDAttack_targeted``).

    Returns ``(x_adv, fooled, zero_grad)`` per example: the adversarial example (clean where
    not fooled), whether it was fooled, whether some run met an all-zero gradient at its start.
    """
    keys = execution.wrap_keys(key_data, key_impl)
    clean_logits = model_fn(x)
    robust = (jnp.argmax(clean_logits, axis=1) == y) & valid
    targeted = loss == "dlr-targeted"
    num_classes = clean_logits.shape[1]
    min_classes = {"ce": 2, "dlr": 3, "dlr-targeted": max(4, n_target_classes + 1)}[loss]
    if num_classes < min_classes:
        raise ValueError(f"loss {loss!r} with n_target_classes={n_target_classes} needs at "
                         f"least {min_classes} classes; the model has {num_classes}")
    num_runs = n_restarts * (n_target_classes if targeted else 1)

    def cond(c):
        run, robust, _, _ = c
        return (run < num_runs) & jnp.any(robust)

    def body(c):
        run, robust, x_adv, zero_grad = c
        run_keys = jax.vmap(lambda k: jax.random.fold_in(k, run))(keys)
        y_target = target_labels(clean_logits, run, n_restarts) if targeted else None
        res = single_run(model_fn, x, y, random_start(run_keys, x, eps, norm), y_target,
                         eps=eps, norm=norm, loss=loss, n_iter=n_iter, rho=rho)
        fooled = robust & ~res.robust
        x_adv = jnp.where(norms.bcast(fooled, x), res.x_best_adv, x_adv)
        return run + 1, robust & ~fooled, x_adv, zero_grad | (robust & res.zero_grad)

    init = (jnp.int32(0), robust, x, jnp.zeros_like(robust))
    _, still_robust, x_adv, zero_grad = jax.lax.while_loop(cond, body, init)
    fooled = (jnp.argmax(clean_logits, axis=1) == y) & ~still_robust & valid
    return x_adv, fooled, zero_grad


def check_inputs(x, y, eps: float, norm: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert (float32 NHWC in [0, 1], int labels)."""
    norms.check_norm_and_eps(norm, eps)
    x = np.asarray(x, np.float32)
    y = np.asarray(y)
    if x.ndim < 2 or y.shape != (x.shape[0],):
        raise ValueError(f"x must be [N, ...] and y [N]; got x {x.shape} and y {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {y.dtype}")
    if x.size and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"images must lie in [0, 1]; got range [{x.min()}, {x.max()}]")
    return x, y.astype(np.int32)


def apgd(apply_fn: Callable, x, y, key: jax.Array, *, eps: float, norm: str, loss: str = "ce",
         steps: int = 100, n_restarts: int = 1, n_target_classes: int = 9, rho: float = 0.75,
         batch_size: int = 500, mesh=None, log=None, return_info: bool = False):
    """APGD with loss ``'ce'``, ``'dlr'`` or ``'dlr-targeted'`` (APGD-T), as pyautoattack.

    Args:
      apply_fn: ``x -> logits`` (a ``jax.tree_util.Partial`` keeps weights out of the program).
      x, y: images float32 ``[N, H, W, C]`` in [0, 1] and integer labels ``[N]``.
      key: PRNG key; example ``i`` uses ``fold_in(key, i)``.
      eps, norm: the threat model (``'Linf'`` or ``'L2'``).
      loss, steps, n_restarts, n_target_classes, rho: as ``APGDAttack``/``APGDAttack_targeted``
        (AutoAttack's standard version: 100 steps, 1 restart, 9 target classes, rho 0.75).
      batch_size, mesh: fixed global batch size and 1-D ``'batch'`` mesh (all devices).
    Returns:
      ``x_adv [N, ...]`` (clean images where the attack failed, like the reference), or
      ``(x_adv, info)`` with ``info = {'fooled': bool[N], 'zero_grad': bool[N]}``.
    """
    if loss not in APGD_LOSSES:
        raise ValueError(f"unknown APGD loss {loss!r}; allowed: {APGD_LOSSES}")
    if steps < 1 or n_restarts < 1:
        raise ValueError(f"steps and n_restarts must be >= 1, got {steps} and {n_restarts}")
    x, y = check_inputs(x, y, eps, norm)
    static = dict(eps=float(eps), norm=norm, loss=loss, n_iter=int(steps),
                  n_restarts=int(n_restarts), n_target_classes=int(n_target_classes),
                  rho=float(rho))
    if x.shape[0] == 0:
        out = (x, np.zeros(0, bool), np.zeros(0, bool))
    else:
        out = execution.run_batched(apgd_program, static, apply_fn, (x, y), key=key,
                                    batch_size=batch_size, mesh=mesh, log=log,
                                    desc=f"apgd-{loss}")
    x_adv, fooled, zero_grad = out
    if return_info:
        return x_adv, {"fooled": fooled, "zero_grad": zero_grad}
    return x_adv
