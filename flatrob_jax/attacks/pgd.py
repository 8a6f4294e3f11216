"""Projected gradient descent (Madry et al. 2018), Linf and L2, with FGSM as its 1-step case.

Not part of AutoAttack; conventions follow the common PyTorch implementations
(torchattacks ``PGD``/``PGDL2``):

* random start: Linf ``x + U[-eps, eps]``; L2 ``x + eps * u * z / ||z||`` with ``z ~ N(0, I)``
  and ``u ~ U[0, 1]`` (torchattacks' PGDL2 start); clipped to [0, 1];
* step: Linf ``x + step_size * sign(g)``; L2 ``x + step_size * g / (||g|| + 1e-12)``; then
  projection onto the ball and the box (:func:`flatrob_jax.attacks.norms.project`);
* loss ``'ce'`` (cross-entropy) or ``'margin'`` (``max_{i != y} z_i - z_y``, the CW loss);
* restarts: each example keeps the final iterate of its first restart that misclassifies
  it, otherwise the final iterate with the highest loss;
* FGSM: ``steps=1, step_size=eps, random_start=False``.

The whole attack is one jitted program (``lax.fori_loop`` over steps and restarts,
:func:`pgd_program`) or, by default on CPU, a Python loop of one jitted call per step
(:func:`pgd_driver`, the same :func:`pgd_iteration`; :data:`PGD_RUNNER`, chosen by
``Execution.host_loop``); example ``i`` draws its starts from
``fold_in(fold_in(key, i), restart)``.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from flatrob_jax import execution
from flatrob_jax.attacks import losses, norms
from flatrob_jax.attacks.apgd import check_inputs
from flatrob_jax.execution import Execution

PGD_LOSSES = ("ce", "margin")


def pgd_start(keys: jax.Array, x: jax.Array, eps: float, norm: str) -> jax.Array:
    shape = x.shape[1:]
    if norm == "Linf":
        noise = jax.vmap(lambda k: jax.random.uniform(k, shape, x.dtype, -eps, eps))(keys)
    else:

        def draw(k):
            kz, ku = jax.random.split(k)
            z = jax.random.normal(kz, shape, x.dtype)
            u = jax.random.uniform(ku, (), x.dtype)
            return z / (jnp.sqrt(jnp.sum(z * z)) + 1e-12) * eps * u

        noise = jax.vmap(draw)(keys)
    return jnp.clip(x + noise, 0.0, 1.0)


def _loss_and_grad(model_fn, z, y, loss):
    def total(z):
        logits = model_fn(z)
        per_example = losses.attack_loss(loss, logits, y)
        return jnp.sum(per_example), (per_example, logits)

    (_, (per_example, logits)), g = jax.value_and_grad(total, has_aux=True)(z)
    return per_example, logits, g


def pgd_iteration(model_fn, x, y, z, *, eps: float, norm: str, step_size: float, loss: str):
    """One PGD step from ``z``: gradient (sign for Linf), projection on the ball and box."""
    _, _, g = _loss_and_grad(model_fn, z, y, loss)
    direction = jnp.sign(g) if norm == "Linf" else norms.normalize(g, norm)
    return norms.project(z + step_size * direction, x, eps, norm)


def _restart_start(keys, x, r, *, eps: float, norm: str, random_start: bool):
    if not random_start:
        return x
    return pgd_start(jax.vmap(lambda k: jax.random.fold_in(k, r))(keys), x, eps, norm)


def _restart_end(model_fn, x, y, z, best, best_loss, fooled, *, loss: str):
    """Keep the first restart's final iterate that fools the example, else the highest loss."""
    loss_z, logits, _ = _loss_and_grad(model_fn, z, y, loss)
    fooled_z = jnp.argmax(logits, axis=1) != y
    take = (~fooled) & (fooled_z | (loss_z > best_loss))
    best = jnp.where(norms.bcast(take, x), z, best)
    return best, jnp.where(take, loss_z, best_loss), fooled | fooled_z


def _init(x):
    return x, jnp.full(x.shape[:1], -jnp.inf, x.dtype), jnp.zeros(x.shape[:1], bool)


def pgd_program(
    model_fn,
    valid,
    x,
    y,
    key_data,
    *,
    eps: float,
    norm: str,
    steps: int,
    step_size: float,
    restarts: int,
    random_start: bool,
    loss: str,
    key_impl: str,
):
    """Per-device PGD compiled as one program (``lax.fori_loop`` over restarts and steps);
    returns ``(x_adv, fooled)``."""
    del valid
    keys = execution.wrap_keys(key_data, key_impl)

    def step(_, z):
        return pgd_iteration(model_fn, x, y, z, eps=eps, norm=norm, step_size=step_size, loss=loss)

    def restart(r, carry):
        start = _restart_start(keys, x, r, eps=eps, norm=norm, random_start=random_start)
        z = jax.lax.fori_loop(0, steps, step, start)
        return _restart_end(model_fn, x, y, z, *carry, loss=loss)

    x_adv, _, fooled = jax.lax.fori_loop(0, restarts, restart, _init(x))
    return x_adv, fooled


def _host_start(r, x, key_data, *, eps, norm, random_start, key_impl):
    keys = execution.wrap_keys(key_data, key_impl)
    return _restart_start(keys, x, r, eps=eps, norm=norm, random_start=random_start)


def _host_end(model_fn, x, y, z, best, best_loss, fooled, *, loss):
    return _restart_end(model_fn, x, y, z, best, best_loss, fooled, loss=loss)


def pgd_driver(
    model_fn,
    valid,
    x,
    y,
    key_data,
    *,
    mesh,
    eps: float,
    norm: str,
    steps: int,
    step_size: float,
    restarts: int,
    random_start: bool,
    loss: str,
    key_impl: str,
):
    """:func:`pgd_program` with its loops on the host: one compiled call per step (the same
    :func:`pgd_iteration`), see ``Execution.host_loop``."""
    del valid
    R, B = P(), P(execution.AXIS)
    step = functools.partial(execution.sharded_step, mesh=mesh)
    start = step(
        _host_start,
        dict(eps=eps, norm=norm, random_start=random_start, key_impl=key_impl),
        in_specs=(R, B, B),
        out_specs=B,
    )
    iteration = step(
        pgd_iteration,
        dict(eps=eps, norm=norm, step_size=step_size, loss=loss),
        in_specs=(R, B, B, B),
        out_specs=B,
    )
    end = step(_host_end, dict(loss=loss), in_specs=(R,) + (B,) * 6, out_specs=(B, B, B))
    best, best_loss, fooled = step(_init, {}, in_specs=(B,), out_specs=(B, B, B))(x)
    for r in range(restarts):
        z = start(jnp.int32(r), x, key_data)
        for _ in range(steps):
            z = iteration(model_fn, x, y, z)
        best, best_loss, fooled = end(model_fn, x, y, z, best, best_loss, fooled)
    return best, fooled


#: PGD's two ways to run (:func:`pgd` uses it).
PGD_RUNNER = execution.Runner(pgd_program, host_loop=pgd_driver)


def pgd(
    apply_fn: Callable,
    x,
    y,
    key: jax.Array,
    *,
    eps: float,
    norm: str,
    steps: int,
    step_size: float,
    restarts: int = 1,
    random_start: bool = True,
    loss: str = "ce",
    execution: Execution = Execution(),
) -> np.ndarray:
    """PGD-``steps`` adversarial examples ``x_adv [N, ...]`` (see the module docstring).

    ``apply_fn(x) -> logits``; ``x`` float32 NHWC in [0, 1]; example ``i`` uses
    ``fold_in(key, i)``. ``execution``: batch size, devices, progress log and ``host_loop``
    (the steps as a Python loop of compiled steps or one compiled program; default: the loop
    on the CPU backend only, where it is faster, benchmarks/attacks.md); the same steps
    either way.
    """
    if loss not in PGD_LOSSES:
        raise ValueError(f"unknown PGD loss {loss!r}; allowed: {PGD_LOSSES}")
    if steps < 1 or restarts < 1:
        raise ValueError(f"steps and restarts must be >= 1, got {steps} and {restarts}")
    if not step_size > 0:
        raise ValueError(f"step_size must be > 0, got {step_size!r}")
    x, y = check_inputs(x, y, eps, norm)
    if x.shape[0] == 0:
        return x
    static = dict(
        eps=float(eps),
        norm=norm,
        steps=int(steps),
        step_size=float(step_size),
        restarts=int(restarts),
        random_start=bool(random_start),
        loss=loss,
    )
    x_adv, _ = PGD_RUNNER.run(static, apply_fn, (x, y), execution=execution, key=key, desc="pgd")
    return x_adv


def fgsm(
    apply_fn: Callable,
    x,
    y,
    *,
    eps: float,
    norm: str = "Linf",
    loss: str = "ce",
    execution: Execution = Execution(),
) -> np.ndarray:
    """FGSM (Goodfellow et al. 2015): one PGD step of size ``eps`` from ``x``, no random start
    (so no key)."""
    return pgd(
        apply_fn,
        x,
        y,
        jax.random.key(0),
        eps=eps,
        norm=norm,
        steps=1,
        step_size=eps,
        random_start=False,
        loss=loss,
        execution=execution,
    )
