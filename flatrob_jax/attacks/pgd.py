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

The whole attack is one jitted program (``lax.fori_loop`` over steps and restarts); example
``i`` draws its starts from ``fold_in(fold_in(key, i), restart)``.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from flatrob_jax import execution
from flatrob_jax.attacks import losses, norms
from flatrob_jax.attacks.apgd import check_inputs

PGD_LOSSES = ("ce", "margin")


def pgd_start(keys: jax.Array, x: jax.Array, eps: float, norm: str) -> jax.Array:
    shape = x.shape[1:]
    if norm == "Linf":
        noise = jax.vmap(lambda k: jax.random.uniform(k, shape, x.dtype, -eps, eps))(keys)
    else:
        def draw(k):
            kz, ku = jax.random.split(k)
            z = jax.random.normal(kz, shape, x.dtype)
            return z / (jnp.sqrt(jnp.sum(z * z)) + 1e-12) * eps * jax.random.uniform(ku, (), x.dtype)
        noise = jax.vmap(draw)(keys)
    return jnp.clip(x + noise, 0.0, 1.0)


def pgd_program(model_fn, valid, x, y, key_data, *, eps: float, norm: str, steps: int,
                step_size: float, restarts: int, random_start: bool, loss: str, key_impl: str):
    """Per-device PGD; returns ``(x_adv, fooled)``."""
    del valid
    keys = execution.wrap_keys(key_data, key_impl)

    def loss_and_grad(z):
        def total(z):
            logits = model_fn(z)
            per_example = losses.attack_loss(loss, logits, y)
            return jnp.sum(per_example), (per_example, logits)
        (_, (per_example, logits)), g = jax.value_and_grad(total, has_aux=True)(z)
        return per_example, logits, g

    def step(_, z):
        _, _, g = loss_and_grad(z)
        direction = jnp.sign(g) if norm == "Linf" else norms.normalize(g, norm)
        return norms.project(z + step_size * direction, x, eps, norm)

    def restart(r, carry):
        best, best_loss, fooled = carry
        if random_start:
            start = pgd_start(jax.vmap(lambda k: jax.random.fold_in(k, r))(keys), x, eps, norm)
        else:
            start = x
        z = jax.lax.fori_loop(0, steps, step, start)
        loss_z, logits, _ = loss_and_grad(z)
        fooled_z = jnp.argmax(logits, axis=1) != y
        take = (~fooled) & (fooled_z | (loss_z > best_loss))
        best = jnp.where(norms.bcast(take, x), z, best)
        return best, jnp.where(take, loss_z, best_loss), fooled | fooled_z

    init = (x, jnp.full(x.shape[:1], -jnp.inf, x.dtype), jnp.zeros(x.shape[:1], bool))
    x_adv, _, fooled = jax.lax.fori_loop(0, restarts, restart, init)
    return x_adv, fooled


def pgd(apply_fn: Callable, x, y, key: jax.Array, *, eps: float, norm: str, steps: int,
        step_size: float, restarts: int = 1, random_start: bool = True, loss: str = "ce",
        batch_size: int = 500, mesh=None, log=None) -> np.ndarray:
    """PGD-``steps`` adversarial examples ``x_adv [N, ...]`` (see the module docstring).

    ``apply_fn(x) -> logits``; ``x`` float32 NHWC in [0, 1]; example ``i`` uses
    ``fold_in(key, i)``.
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
    static = dict(eps=float(eps), norm=norm, steps=int(steps), step_size=float(step_size),
                  restarts=int(restarts), random_start=bool(random_start), loss=loss)
    x_adv, _ = execution.run_batched(pgd_program, static, apply_fn, (x, y), key=key,
                                     batch_size=batch_size, mesh=mesh, log=log, desc="pgd")
    return x_adv


def fgsm(apply_fn: Callable, x, y, *, eps: float, norm: str = "Linf", **kw) -> np.ndarray:
    """FGSM (Goodfellow et al. 2015): one PGD step of size ``eps`` from ``x``."""
    return pgd(apply_fn, x, y, jax.random.key(0), eps=eps, norm=norm, steps=1, step_size=eps,
               random_start=False, **kw)
