"""Hessian-vector products by forward-over-reverse differentiation.

For a scalar loss ``L(params)`` the Hessian-vector product is the directional
derivative of the gradient, ``H v = d/dt grad L(params + t v) |_{t=0}``. Computing it as
``jax.jvp`` of ``jax.grad`` (forward-over-reverse) costs one forward and one backward pass
carried in forward mode, about 2-3x a gradient, with memory close to a gradient's; this is
the mode the JAX autodiff cookbook recommends for HVPs.

:func:`hvp_block` applies H to ``k`` directions at once: ``jax.vmap`` of the same
forward-over-reverse product over the tangents. The primal forward and backward pass does not
depend on the tangent, so vmap leaves it unbatched and it runs once; only the tangent part is
carried ``k`` times (for a network: the convolutions of ``k`` tangents run as one wider
convolution). Memory: the tangents, their outputs and the tangent activations grow ``k``-fold
(``2 * k * P`` floats for the vectors alone, P = number of parameters), the primal's do not.
"""

from __future__ import annotations

from typing import Any, Callable

import jax

PyTree = Any


def hvp(loss_fn: Callable[[PyTree], jax.Array], params: PyTree, v: PyTree) -> PyTree:
    """Returns ``H(params) @ v`` for the Hessian of the scalar ``loss_fn`` at ``params``.

    Args:
      loss_fn: scalar function of a parameter pytree.
      params: point at which the Hessian is taken.
      v: direction, a pytree with the structure, shapes and dtypes of ``params``.

    Returns:
      A pytree like ``params``. Pure and jittable; wrap the caller in ``jax.jit``.
    """
    params_struct = jax.tree_util.tree_structure(params)
    v_struct = jax.tree_util.tree_structure(v)
    if params_struct != v_struct:
        raise ValueError(
            f"hvp: v must have the pytree structure of params; got {v_struct}, "
            f"expected {params_struct}"
        )
    return jax.jvp(jax.grad(loss_fn), (params,), (v,))[1]


def hvp_block(loss_fn: Callable[[PyTree], jax.Array], params: PyTree, V: PyTree) -> PyTree:
    """Returns ``H(params) @ v_i`` for each of the ``k`` directions stacked in ``V``.

    Args:
      loss_fn: scalar function of a parameter pytree.
      params: point at which the Hessian is taken.
      V: a pytree with the structure of ``params`` whose every leaf has one more, leading axis
        of size ``k`` (direction ``i`` is ``tree_map(lambda a: a[i], V)``).

    Returns:
      A pytree like ``V`` (leading axis ``k``), equal to ``k`` calls of :func:`hvp` up to float
      summation order. The primal pass runs once (see the module docstring).
    """
    params_struct = jax.tree_util.tree_structure(params)
    v_struct = jax.tree_util.tree_structure(V)
    if params_struct != v_struct:
        raise ValueError(
            f"hvp_block: V must have the pytree structure of params; got {v_struct}, "
            f"expected {params_struct}"
        )
    sizes = set()
    for p, v in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(V)):
        if v.shape[1:] != p.shape or v.ndim != p.ndim + 1:
            raise ValueError(
                f"hvp_block: each leaf of V must be [k, *param.shape]; got {v.shape} for a "
                f"parameter of shape {p.shape}"
            )
        sizes.add(v.shape[0])
    if len(sizes) > 1:
        raise ValueError(f"hvp_block: the leaves of V disagree on k: {sorted(sizes)}")
    grad_fn = jax.grad(loss_fn)
    return jax.vmap(lambda v: jax.jvp(grad_fn, (params,), (v,))[1])(V)
