"""Auto-PGD (Croce & Hein, ICML 2020) exactly as pyautoattack 0.2.0 runs it, Linf and L2.

Reference: ``pyautoattack/autopgd_base.py`` (``APGDAttack.attack_single_run``/``perturb`` and
``APGDAttack_targeted.perturb``).  Two ways to run the same attack (:data:`APGD_RUNNER`;
``Execution.host_loop`` chooses):

* one jitted program for the whole attack (all restarts / target classes and all
  iterations): ``lax.fori_loop`` over iterations, ``lax.while_loop`` over runs (stopping once
  every example of the device's batch is fooled) -- :func:`apgd_program`, the default on
  GPU/TPU;
* a Python loop of jitted steps (:func:`apgd_driver`: one compiled call per iteration, the
  same :func:`run_iteration`), the default on CPU, where XLA runs a convolution network's
  gradient inside a compiled loop about 2x slower than the same step called from the host
  (ResNet-18, benchmarks/attacks.md).

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
* returned point: the latest iterate found misclassified (``x_best_adv``); QUIRK: examples
  that are never misclassified are returned *clean* (not the highest-loss point), and
  examples misclassified before the attack are returned clean too;
* APGD-T (``loss='dlr-targeted'``) runs ``n_restarts`` runs for each of the target classes
  ranked 2nd, 3rd, ..., ``(n_target_classes + 1)``-th by the clean logits, on the examples
  still robust.

Randomness differs from the reference by design: each example's starts come from
``fold_in(fold_in(key, example_index), run_index)`` (torch's global RNG cannot be matched).

Runs side by side (``runs_per_pass = T > 1``): the runs (APGD-T's target classes times
restarts) go ``T`` at a time as one batched program over (run, example) rows: ``T`` copies of
the batch, row ``t * B + i`` being run ``g * T + t`` of example ``i`` with that run's own start
and target, then the ``T`` outcomes are folded in run order (the first run that fools an
example gives its point). Every row is the same computation on the same key as in the
one-run-at-a-time loop, so the decisions and results are the same; only the stopping test
(every example fooled) is taken between groups instead of between runs. It is meant for
batches too small to fill an accelerator (not measured there: the last robust examples,
small evaluations); :func:`runs_per_pass_for` picks ``T`` so that ``T`` times the batch stays
within the execution's ``batch_size`` on GPU/TPU, and 1 on CPU, where it measured slower
(XLA:CPU runs a 9x larger batch more than 9x slower here: on 30 examples APGD-T 0.68x, FAB-T
0.35x, benchmarks/attacks.md).
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from flatrob_jax import execution
from flatrob_jax.attacks import losses, norms
from flatrob_jax.execution import Execution

APGD_LOSSES = ("ce", "dlr", "dlr-targeted")


class Schedule(NamedTuple):
    """Checkpoint constants of ``APGDAttack.__init__`` for ``n_iter`` iterations."""

    first_interval: int  # n_iter_2
    min_interval: int  # n_iter_min
    decrement: int  # size_decr


def schedule(n_iter: int) -> Schedule:
    return Schedule(
        max(int(0.22 * n_iter), 1), max(int(0.06 * n_iter), 1), max(int(0.03 * n_iter), 1)
    )


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

    counter: jax.Array  # iterations since the last checkpoint (counter3)
    interval: jax.Array  # current checkpoint interval k
    loss_best_last: jax.Array  # [B] best loss at the last checkpoint
    reduced_last: jax.Array  # [B] bool, halved at the last checkpoint


def init_check_state(loss_best: jax.Array, n_iter: int) -> CheckState:
    return CheckState(
        jnp.int32(0),
        jnp.int32(schedule(n_iter).first_interval),
        loss_best,
        jnp.ones(loss_best.shape, bool),
    )


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


def checkpoint_step(
    state: CheckState,
    loss_steps: jax.Array,
    loss_best: jax.Array,
    i: jax.Array,
    *,
    n_iter: int,
    rho: float,
) -> tuple[jax.Array, CheckState]:
    """One iteration of the step-size logic; returns (halve[B], new state)."""
    s = schedule(n_iter)
    counter = state.counter + 1
    at_check = counter == state.interval
    no_improvement = (~state.reduced_last) & (state.loss_best_last >= loss_best)
    flag = oscillation(loss_steps, i, state.interval, rho) | no_improvement
    halve = at_check & flag
    new = CheckState(
        counter=jnp.where(at_check, 0, counter),
        interval=jnp.where(
            at_check, jnp.maximum(state.interval - s.decrement, s.min_interval), state.interval
        ),
        loss_best_last=jnp.where(at_check, loss_best, state.loss_best_last),
        reduced_last=jnp.where(at_check, flag, state.reduced_last),
    )
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
    x_best: jax.Array  # highest-loss point
    robust: jax.Array  # [B] never misclassified during the run (acc)
    loss_best: jax.Array  # [B]
    x_best_adv: jax.Array  # latest misclassified iterate (or the start)
    zero_grad: jax.Array  # [B] the gradient at the start is exactly zero
    iterates: jax.Array  # [record, B, ...] the first `record` iterates (diagnostics)
    step_sizes: jax.Array  # [n_iter, B] step size used at each iteration (diagnostics)


def _loss_and_grad(model_fn, z, y, y_target, loss):
    def total(z):
        logits = model_fn(z)
        per_example = losses.attack_loss(loss, logits, y, y_target)
        return jnp.sum(per_example), (per_example, logits)

    (_, (per_example, logits)), g = jax.value_and_grad(total, has_aux=True)(z)
    return per_example, logits, g


def init_run_state(
    model_fn: Callable,
    x: jax.Array,
    y: jax.Array,
    x_init: jax.Array,
    y_target: jax.Array | None,
    *,
    eps: float,
    loss: str,
    n_iter: int,
    record: int = 0,
) -> tuple[dict, jax.Array]:
    """The state of :func:`single_run` before its first iteration, and the zero-gradient flag.

    Every entry has the batch axis first except ``loss_steps``, ``step_sizes`` (``[n_iter,
    B]``), ``iterates`` (``[record, B, ...]``) and the two scalars of ``check`` (see
    :data:`STATE_BATCH_AXIS`)."""
    x_adv = jnp.clip(x_init, 0.0, 1.0)
    loss0, logits0, grad0 = _loss_and_grad(model_fn, x_adv, y, y_target, loss)
    batch = x.shape[0]
    zero_grad = jnp.sum(jnp.abs(grad0.reshape(batch, -1)), axis=1) == 0
    state = dict(
        x_adv=x_adv,
        x_adv_old=x_adv,
        grad=grad0,
        x_best=x_adv,
        grad_best=grad0,
        loss_best=loss0,
        x_best_adv=x_adv,
        robust=jnp.argmax(logits0, axis=1) == y,
        step_size=jnp.full((batch,), 2.0 * eps, x.dtype),
        loss_steps=jnp.zeros((n_iter, batch), x.dtype),
        check=init_check_state(loss0, n_iter),
        iterates=jnp.zeros((record,) + x.shape, x.dtype),
        step_sizes=jnp.zeros((n_iter, batch), x.dtype),
    )
    return state, zero_grad


#: The batch axis of each entry of the run state (None: the same on every example/device);
#: the host-driven loop shards the state over the mesh accordingly.
STATE_BATCH_AXIS = dict(
    x_adv=0,
    x_adv_old=0,
    grad=0,
    x_best=0,
    grad_best=0,
    loss_best=0,
    x_best_adv=0,
    robust=0,
    step_size=0,
    loss_steps=1,
    check=CheckState(None, None, 0, 0),
    iterates=1,
    step_sizes=1,
)


def run_iteration(
    model_fn: Callable,
    x: jax.Array,
    y: jax.Array,
    y_target: jax.Array | None,
    i: jax.Array,
    s: dict,
    *,
    eps: float,
    norm: str,
    loss: str,
    n_iter: int,
    rho: float = 0.75,
    record: int = 0,
) -> dict:
    """Iteration ``i`` of ``APGDAttack.attack_single_run`` on the run state ``s``: the body
    of :func:`single_run`'s loop, compiled inside a ``lax.fori_loop`` or called once per
    iteration from the host (the same function either way, so the same decisions)."""
    a = jnp.where(i > 0, 0.75, 1.0).astype(x.dtype)
    x_new = apgd_step(
        s["x_adv"], x, s["grad"], s["x_adv"] - s["x_adv_old"], s["step_size"], a, eps=eps, norm=norm
    )
    iterates = s["iterates"]
    if record:
        updated = jax.lax.dynamic_update_index_in_dim(
            iterates, x_new, jnp.minimum(i, record - 1), 0
        )
        iterates = jnp.where(i < record, updated, iterates)
    step_sizes = s["step_sizes"].at[i].set(s["step_size"])
    loss_i, logits, grad = _loss_and_grad(model_fn, x_new, y, y_target, loss)
    pred_ok = jnp.argmax(logits, axis=1) == y
    fooled_now = norms.bcast(~pred_ok, x)
    improved = loss_i > s["loss_best"]
    imp = norms.bcast(improved, x)
    x_best = jnp.where(imp, x_new, s["x_best"])
    grad_best = jnp.where(imp, grad, s["grad_best"])
    loss_best = jnp.where(improved, loss_i, s["loss_best"])
    loss_steps = s["loss_steps"].at[i].set(loss_i)
    halve, check = checkpoint_step(s["check"], loss_steps, loss_best, i, n_iter=n_iter, rho=rho)
    h = norms.bcast(halve, x)
    return dict(
        x_adv=jnp.where(h, x_best, x_new),
        x_adv_old=s["x_adv"],
        grad=jnp.where(h, grad_best, grad),
        x_best=x_best,
        grad_best=grad_best,
        loss_best=loss_best,
        x_best_adv=jnp.where(fooled_now, x_new, s["x_best_adv"]),
        robust=s["robust"] & pred_ok,
        step_size=jnp.where(halve, s["step_size"] / 2.0, s["step_size"]),
        loss_steps=loss_steps,
        check=check,
        iterates=iterates,
        step_sizes=step_sizes,
    )


def single_run(
    model_fn: Callable,
    x: jax.Array,
    y: jax.Array,
    x_init: jax.Array,
    y_target: jax.Array | None,
    *,
    eps: float,
    norm: str,
    loss: str,
    n_iter: int,
    rho: float = 0.75,
    record: int = 0,
) -> RunResult:
    """``APGDAttack.attack_single_run`` from the given start (after clipping to the box)."""
    init, zero_grad = init_run_state(
        model_fn, x, y, x_init, y_target, eps=eps, loss=loss, n_iter=n_iter, record=record
    )

    def body(i, s):
        return run_iteration(
            model_fn,
            x,
            y,
            y_target,
            i,
            s,
            eps=eps,
            norm=norm,
            loss=loss,
            n_iter=n_iter,
            rho=rho,
            record=record,
        )

    s = jax.lax.fori_loop(0, n_iter, body, init)
    return RunResult(
        s["x_best"],
        s["robust"],
        s["loss_best"],
        s["x_best_adv"],
        zero_grad,
        s["iterates"],
        s["step_sizes"],
    )


def target_labels(clean_logits: jax.Array, run: jax.Array, n_restarts: int) -> jax.Array:
    """Target of run ``run``: the class ranked ``2 + run // n_restarts`` by the clean logits
    (``output.sort(dim=1)[1][:, -target_class]``; ties in stable ascending order)."""
    order = jnp.argsort(clean_logits, axis=1)
    rank = 2 + run // n_restarts
    return jnp.take(order, order.shape[1] - rank, axis=1)


def _clean(model_fn, valid, x, y, *, loss: str, n_target_classes: int):
    """Clean logits, the examples to attack, and the class-count check of the loss."""
    clean_logits = model_fn(x)
    num_classes = clean_logits.shape[1]
    min_classes = {"ce": 2, "dlr": 3, "dlr-targeted": max(4, n_target_classes + 1)}[loss]
    if num_classes < min_classes:
        raise ValueError(
            f"loss {loss!r} with n_target_classes={n_target_classes} needs at "
            f"least {min_classes} classes; the model has {num_classes}"
        )
    return clean_logits, (jnp.argmax(clean_logits, axis=1) == y) & valid


def _num_runs(loss: str, n_restarts: int, n_target_classes: int) -> int:
    return n_restarts * (n_target_classes if loss == "dlr-targeted" else 1)


def runs_per_pass_for(
    batch_size: int,
    num_examples: int,
    *,
    platform: str,
    loss: str,
    n_restarts: int,
    n_target_classes: int,
) -> int:
    """Runs side by side: 1 on the CPU backend (measured slower there, module doc); else as
    many as keep the rows (runs x the padded batch) within ``batch_size``:
    ``min(num_runs, batch_size // min(batch_size, num_examples))``."""
    if platform == "cpu":
        return 1
    num_runs = _num_runs(loss, n_restarts, n_target_classes)
    batch = max(1, min(batch_size, num_examples))
    return max(1, min(num_runs, batch_size // batch))


def resolve_runs_per_pass(static: dict, how: Execution, num_examples: int) -> dict:
    """``static`` with its ``runs_per_pass`` checked (an int >= 1) or, where None, chosen by
    :func:`runs_per_pass_for` for ``how`` (its batch size and backend; APGD's and FAB-T's
    settings, FAB-T has no restarts)."""
    value = static["runs_per_pass"]
    if value is None:
        value = runs_per_pass_for(
            how.batch_size,
            num_examples,
            platform=how.mesh().devices.flat[0].platform,
            loss=static.get("loss", "dlr-targeted"),
            n_restarts=static.get("n_restarts", 1),
            n_target_classes=static["n_target_classes"],
        )
    elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"runs_per_pass must be None (auto) or an int >= 1, got {value!r}")
    return {**static, "runs_per_pass": int(value)}


def _replicate(a, times: int):
    """``times`` copies of ``a`` along a new leading axis, flattened into axis 0."""
    return jnp.concatenate([a] * times, axis=0) if times > 1 else a


def _group_start(keys, clean_logits, x, y, first, *, eps, norm, loss, n_restarts, runs):
    """Rows of runs ``first .. first + runs - 1`` (run-major): starts, labels, targets."""
    starts, targets = [], []
    for t in range(runs):
        x_init, y_target = _run_start(
            keys, clean_logits, x, first + t, eps=eps, norm=norm, loss=loss, n_restarts=n_restarts
        )
        starts.append(x_init)
        targets.append(y_target)
    y_target = None if targets[0] is None else jnp.concatenate(targets, axis=0)
    return (
        jnp.concatenate(starts, axis=0),
        _replicate(x, runs),
        _replicate(y, runs),
        y_target,
    )


def _group_end(
    x,
    robust,
    x_adv,
    zero_grad,
    first,
    run_robust,
    run_x_best_adv,
    run_zero_grad,
    *,
    runs: int,
    num_runs: int,
):
    """Fold the ``runs`` outcomes of a group, in run order (runs past ``num_runs`` of the last
    group are padding and change nothing)."""
    batch = x.shape[0]
    for t in range(runs):
        rows = slice(t * batch, (t + 1) * batch)
        real = first + t < num_runs
        robust, x_adv, zero_grad = _run_end(
            x,
            robust,
            x_adv,
            zero_grad,
            run_robust[rows] | ~real,
            run_x_best_adv[rows],
            run_zero_grad[rows] & real,
        )
    return robust, x_adv, zero_grad


def _run_start(keys, clean_logits, x, run, *, eps: float, norm: str, loss: str, n_restarts: int):
    """Random start and target labels (or None) of run ``run``."""
    run_keys = jax.vmap(lambda k: jax.random.fold_in(k, run))(keys)
    y_target = target_labels(clean_logits, run, n_restarts) if loss == "dlr-targeted" else None
    return random_start(run_keys, x, eps, norm), y_target


def _run_end(x, robust, x_adv, zero_grad, run_robust, run_x_best_adv, run_zero_grad):
    """Fold a finished run into the outcome (``APGDAttack.perturb``'s bookkeeping)."""
    fooled = robust & ~run_robust
    x_adv = jnp.where(norms.bcast(fooled, x), run_x_best_adv, x_adv)
    return robust & ~fooled, x_adv, zero_grad | (robust & run_zero_grad)


def apgd_program(
    model_fn,
    valid,
    x,
    y,
    key_data,
    *,
    eps: float,
    norm: str,
    loss: str,
    n_iter: int,
    n_restarts: int,
    n_target_classes: int,
    rho: float,
    key_impl: str,
    runs_per_pass: int = 1,
):
    """Per-device program of :func:`apgd` (``APGDAttack.perturb``/``APGDAttack_targeted``),
    the whole attack compiled as one program (``lax`` loops); ``runs_per_pass`` runs side by
    side (module doc).

    Returns ``(x_adv, fooled, zero_grad)`` per example: the adversarial example (clean where
    not fooled), whether it was fooled, whether some run met an all-zero gradient at its start.
    """
    keys = execution.wrap_keys(key_data, key_impl)
    clean_logits, robust = _clean(
        model_fn, valid, x, y, loss=loss, n_target_classes=n_target_classes
    )
    num_runs = _num_runs(loss, n_restarts, n_target_classes)
    runs = min(runs_per_pass, num_runs)

    def cond(c):
        run, robust, _, _ = c
        return (run < num_runs) & jnp.any(robust)

    def body(c):
        run, robust, x_adv, zero_grad = c
        x_init, xs, ys, y_target = _group_start(
            keys,
            clean_logits,
            x,
            y,
            run,
            eps=eps,
            norm=norm,
            loss=loss,
            n_restarts=n_restarts,
            runs=runs,
        )
        res = single_run(
            model_fn,
            xs,
            ys,
            x_init,
            y_target,
            eps=eps,
            norm=norm,
            loss=loss,
            n_iter=n_iter,
            rho=rho,
        )
        return (run + runs,) + _group_end(
            x,
            robust,
            x_adv,
            zero_grad,
            run,
            res.robust,
            res.x_best_adv,
            res.zero_grad,
            runs=runs,
            num_runs=num_runs,
        )

    init = (jnp.int32(0), robust, x, jnp.zeros_like(robust))
    _, still_robust, x_adv, zero_grad = jax.lax.while_loop(cond, body, init)
    fooled = (jnp.argmax(clean_logits, axis=1) == y) & ~still_robust & valid
    return x_adv, fooled, zero_grad


# ------------------------------------------------------------------ the host-driven loop
# The same attack as apgd_program, its loops in Python around compiled steps (CPU default,
# see execution.Execution.host_loop): each step below is run as jit(shard_map(...)) over the mesh.


def _host_clean(model_fn, valid, x, y, *, loss, n_target_classes):
    return _clean(model_fn, valid, x, y, loss=loss, n_target_classes=n_target_classes)


def _host_start(
    model_fn,
    run,
    x,
    y,
    key_data,
    clean_logits,
    *,
    eps,
    norm,
    loss,
    n_iter,
    n_restarts,
    key_impl,
    runs,
):
    keys = execution.wrap_keys(key_data, key_impl)
    x_init, xs, ys, y_target = _group_start(
        keys,
        clean_logits,
        x,
        y,
        run,
        eps=eps,
        norm=norm,
        loss=loss,
        n_restarts=n_restarts,
        runs=runs,
    )
    state, zero_grad = init_run_state(
        model_fn, xs, ys, x_init, y_target, eps=eps, loss=loss, n_iter=n_iter
    )
    return state, xs, ys, ys if y_target is None else y_target, zero_grad


def _host_iteration(model_fn, i, x, y, y_target, state, *, eps, norm, loss, n_iter, rho):
    y_target = y_target if loss == "dlr-targeted" else None
    return run_iteration(
        model_fn, x, y, y_target, i, state, eps=eps, norm=norm, loss=loss, n_iter=n_iter, rho=rho
    )


def _host_end(
    run,
    x,
    robust,
    x_adv,
    zero_grad,
    run_robust,
    run_x_best_adv,
    run_zero_grad,
    *,
    runs,
    num_runs,
):
    return _group_end(
        x,
        robust,
        x_adv,
        zero_grad,
        run,
        run_robust,
        run_x_best_adv,
        run_zero_grad,
        runs=runs,
        num_runs=num_runs,
    )


def _host_fooled(clean_logits, valid, y, still_robust):
    return (jnp.argmax(clean_logits, axis=1) == y) & ~still_robust & valid


def _state_specs():
    batch = {None: P(), 0: P(execution.AXIS), 1: P(None, execution.AXIS)}
    return jax.tree_util.tree_map(lambda a: batch[a], STATE_BATCH_AXIS, is_leaf=lambda a: a is None)


def apgd_driver(
    model_fn,
    valid,
    x,
    y,
    key_data,
    *,
    mesh,
    eps: float,
    norm: str,
    loss: str,
    n_iter: int,
    n_restarts: int,
    n_target_classes: int,
    rho: float,
    key_impl: str,
    runs_per_pass: int = 1,
):
    """:func:`apgd_program` with its loops on the host (``execution.run_batched_driver``):
    the same functions compiled per step (clean pass, run start, one iteration, run end)
    and called ``n_iter`` times per run. Same decisions as the compiled loops: runs stop
    once no example of the batch is left robust (the compiled program stops per device;
    a device whose examples are all fooled changes nothing in further runs)."""
    step = functools.partial(execution.sharded_step, mesh=mesh)
    R, B, S = P(), P(execution.AXIS), _state_specs()
    num_runs = _num_runs(loss, n_restarts, n_target_classes)
    runs = min(runs_per_pass, num_runs)
    clean = step(
        _host_clean,
        dict(loss=loss, n_target_classes=n_target_classes),
        in_specs=(R, B, B, B),
        out_specs=(B, B),
    )
    start = step(
        _host_start,
        dict(
            eps=eps,
            norm=norm,
            loss=loss,
            n_iter=n_iter,
            n_restarts=n_restarts,
            key_impl=key_impl,
            runs=runs,
        ),
        in_specs=(R, R, B, B, B, B),
        out_specs=(S, B, B, B, B),
    )
    iteration = step(
        _host_iteration,
        dict(eps=eps, norm=norm, loss=loss, n_iter=n_iter, rho=rho),
        in_specs=(R, R, B, B, B, S),
        out_specs=S,
    )
    end = step(
        _host_end,
        dict(runs=runs, num_runs=num_runs),
        in_specs=(R,) + (B,) * 7,
        out_specs=(B, B, B),
    )
    clean_logits, robust = clean(model_fn, valid, x, y)
    x_adv, zero_grad = x, jnp.zeros_like(robust)
    for run in range(0, num_runs, runs):
        if not bool(jnp.any(robust)):
            break
        state, xs, ys, y_target, run_zero_grad = start(
            model_fn, jnp.int32(run), x, y, key_data, clean_logits
        )
        for i in range(n_iter):
            state = iteration(model_fn, jnp.int32(i), xs, ys, y_target, state)
        robust, x_adv, zero_grad = end(
            jnp.int32(run),
            x,
            robust,
            x_adv,
            zero_grad,
            state["robust"],
            state["x_best_adv"],
            run_zero_grad,
        )
    fooled = step(_host_fooled, {}, in_specs=(B,) * 4, out_specs=B)(clean_logits, valid, y, robust)
    return x_adv, fooled, zero_grad


#: APGD's two ways to run (``registry.ATTACKS``' APGD entries and :func:`apgd` use it).
APGD_RUNNER = execution.Runner(apgd_program, host_loop=apgd_driver)


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


def apgd(
    apply_fn: Callable,
    x,
    y,
    key: jax.Array,
    *,
    eps: float,
    norm: str,
    loss: str = "ce",
    steps: int = 100,
    n_restarts: int = 1,
    n_target_classes: int = 9,
    rho: float = 0.75,
    runs_per_pass: int | None = 1,
    return_info: bool = False,
    execution: Execution = Execution(),
):
    """APGD with loss ``'ce'``, ``'dlr'`` or ``'dlr-targeted'`` (APGD-T), as pyautoattack.

    Args:
      apply_fn: ``x -> logits`` (a ``jax.tree_util.Partial`` keeps weights out of the program).
      x, y: images float32 ``[N, H, W, C]`` in [0, 1] and integer labels ``[N]``.
      key: PRNG key; example ``i`` uses ``fold_in(key, i)``.
      eps, norm: the threat model (``'Linf'`` or ``'L2'``).
      loss, steps, n_restarts, n_target_classes, rho: as ``APGDAttack``/``APGDAttack_targeted``
        (AutoAttack's standard version: 100 steps, 1 restart, 9 target classes, rho 0.75).
      runs_per_pass: runs (target classes x restarts) side by side as one batched program
        (same results, see the module doc); None: 1 on CPU, else as many as keep the rows
        within ``execution.batch_size`` (:func:`runs_per_pass_for`).
      execution: batch size, devices, progress log and ``host_loop`` (the iterations as a
        Python loop of compiled steps or as one compiled program; default: the loop on the
        CPU backend only, where it is faster, benchmarks/attacks.md). Both give the same
        decisions and results.
    Returns:
      ``x_adv [N, ...]`` (clean images where the attack failed, like the reference), or
      ``(x_adv, info)`` with ``info = {'fooled': bool[N], 'zero_grad': bool[N]}``.
    """
    if loss not in APGD_LOSSES:
        raise ValueError(f"unknown APGD loss {loss!r}; allowed: {APGD_LOSSES}")
    if steps < 1 or n_restarts < 1:
        raise ValueError(f"steps and n_restarts must be >= 1, got {steps} and {n_restarts}")
    x, y = check_inputs(x, y, eps, norm)
    static = dict(
        eps=float(eps),
        norm=norm,
        loss=loss,
        n_iter=int(steps),
        n_restarts=int(n_restarts),
        n_target_classes=int(n_target_classes),
        rho=float(rho),
        runs_per_pass=runs_per_pass,
    )
    static = resolve_runs_per_pass(static, execution, x.shape[0])
    if x.shape[0] == 0:
        out = (x, np.zeros(0, bool), np.zeros(0, bool))
    else:
        out = APGD_RUNNER.run(
            static, apply_fn, (x, y), execution=execution, key=key, desc=f"apgd-{loss}"
        )
    x_adv, fooled, zero_grad = out
    if return_info:
        return x_adv, {"fooled": fooled, "zero_grad": zero_grad}
    return x_adv
