"""The training loss over a whole dataset, and its gradient and Hessian-vector products.

Definition. For examples ``(x_i, y_i), i = 1..N`` and a per-example loss ``l`` (softmax
cross-entropy by default) the objective is

    L(params) = (1 / N) * sum_i l(f(params, state, x_i), y_i),

with ``state`` the non-trained model variables (BatchNorm running statistics), so BatchNorm
runs in eval mode and the loss is a plain average of per-example terms. Every example has
weight exactly ``1 / N``: the N examples are padded to a multiple of
``num_devices * batch_size`` and the padding is masked out, so the value does not depend on
how the examples are split into batches or devices (up to float summation order). This is
the same weighting as PyHessian's ``dataloader_hv_product`` (batch means weighted by batch
size), without its dependence on a full last batch.

Execution. Each quantity is written in the pmap programming model: a per-device function
scans (``lax.scan``) over microbatches of ``batch_size`` examples of the device's shard,
accumulates sums, and ``lax.psum``s them over the mesh axis ``'batch'``; it runs as
``jax.shard_map`` under ``jax.jit`` on a 1-D mesh. The data are placed on the mesh once and
passed to the jitted functions as arguments (never captured as constants).

``DatasetObjective.hvp`` is a ``jax.tree_util.Partial`` (a pytree whose leaves are the
parameters and data), so :func:`flatrob_jax.curvature.lanczos` and the trace estimators can
pass it into their own jitted steps: one compiled call per matvec, data not re-embedded.
``DatasetObjective.hvp_block`` is the same for ``k`` directions at once (``V`` with a leading
axis ``k``): one pass over the data, the primal forward/backward of each microbatch computed
once for all ``k`` tangents (:func:`flatrob_jax.curvature.hvp.hvp_block`); the block solvers
(Hutchinson, Hutch++, SLQ, block Lanczos) take it as their ``block_matvec``.

Compiled once. The jitted functions are built once per (per-example logits function, loss,
N, batch size, mesh) and shared by every objective with that spec (:func:`from_flax` keys
them on the Flax module, which compares by value). Weights and data are their arguments, so
measuring another checkpoint of the same model on as many examples (the next run of a sweep)
traces and compiles nothing again, the solvers' steps included.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from flatrob_jax import distributed, execution
from flatrob_jax.distributed import AXIS, make_mesh
from flatrob_jax.losses import cross_entropy

PyTree = Any

BATCHNORM_MODES = ("eval", "batch")


@dataclasses.dataclass(frozen=True)
class DatasetObjective:
    """Loss over a fixed dataset at fixed ``params``; see the module docstring.

    Attributes:
      params: the point at which curvature is measured.
      state: non-trained variables passed to ``logits_fn`` (e.g. ``{'batch_stats': ...}``).
      num_examples: N, the number of real (unpadded) examples.
      batch_size: microbatch size per device.
      mesh: the 1-D device mesh with axis 'batch'.
      hvp: ``v -> H v`` (pytree in, pytree out), a ``jax.tree_util.Partial``.
      hvp_block: ``V -> H V`` for ``k`` stacked directions (every leaf ``[k, *shape]``), a
        ``Partial``; one pass over the data for the whole block.
      loss: ``params -> L(params)``.
      value_and_grad: ``params -> (L, grad L)``.
      error_rate: ``params -> fraction of misclassified examples`` (argmax of logits).
      source: how it was built (model function, examples, loss...), for :meth:`batches`.
    """

    params: PyTree
    state: PyTree
    num_examples: int
    batch_size: int
    mesh: jax.sharding.Mesh
    hvp: jax.tree_util.Partial
    hvp_block: jax.tree_util.Partial
    loss: Callable[[PyTree], jax.Array]
    value_and_grad: Callable[[PyTree], tuple[jax.Array, PyTree]]
    error_rate: Callable[[PyTree], jax.Array]
    source: "_Source | None" = None

    def at(self, params: PyTree) -> "DatasetObjective":
        """The same objective with the Hessian taken at ``params`` (same structure and dtypes):
        reuses the compiled functions, e.g. to measure a reparameterized network."""
        if jax.tree_util.tree_structure(params) != jax.tree_util.tree_structure(self.params):
            raise ValueError("params must have the structure of the objective's params")
        hvp = jax.tree_util.Partial(self.hvp.func, params, *self.hvp.args[1:])
        block = jax.tree_util.Partial(self.hvp_block.func, params, *self.hvp_block.args[1:])
        return dataclasses.replace(self, params=params, hvp=hvp, hvp_block=block)

    def batches(
        self,
        size: int,
        *,
        num_examples: int | None = None,
        per_example_loss: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    ) -> list["DatasetObjective"]:
        """Objectives over consecutive batches of ``size`` examples of the first
        ``num_examples`` (default all; a multiple of ``size``), at these ``params``, with the
        same state and mesh and ``per_example_loss`` (default this objective's). Microbatches
        of ``min(batch_size, ceil(size / devices))``, so a small batch is not padded to a whole
        microbatch per device. All batches share one set of compiled programs."""
        if self.source is None:
            raise ValueError("this objective was not built by make_dataset_objective")
        src = self.source
        n = self.num_examples if num_examples is None else num_examples
        if size < 1 or not 0 < n <= self.num_examples or n % size:
            raise ValueError(
                f"need batches of size >= 1 that tile num_examples <= {self.num_examples}; "
                f"got size={size}, num_examples={n}"
            )
        micro = min(self.batch_size, math.ceil(size / self.mesh.devices.size))
        return [
            make_dataset_objective(
                src.logits_fn,
                self.params,
                self.state,
                src.images[start : start + size],
                src.labels[start : start + size],
                batch_size=micro,
                mesh=self.mesh,
                per_example_loss=per_example_loss or src.per_example_loss,
                allow_padding=src.allow_padding,
                unroll_microbatches=src.unroll_microbatches,
            )
            for start in range(0, n, size)
        ]

    @property
    def num_params(self) -> int:
        return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(self.params))


class _Source(NamedTuple):
    """What :func:`make_dataset_objective` was given (host arrays), for ``batches``."""

    logits_fn: Callable
    images: np.ndarray
    labels: np.ndarray
    per_example_loss: Callable
    allow_padding: bool
    unroll_microbatches: bool


def make_dataset_objective(
    logits_fn: Callable[[PyTree, PyTree, jax.Array], jax.Array],
    params: PyTree,
    state: PyTree,
    images: Any,
    labels: Any,
    *,
    batch_size: int,
    mesh: jax.sharding.Mesh | None = None,
    per_example_loss: Callable[[jax.Array, jax.Array], jax.Array] = cross_entropy,
    allow_padding: bool = True,
    unroll_microbatches: bool | None = None,
) -> DatasetObjective:
    """Builds the dataset objective for a pure ``logits_fn(params, state, x) -> logits``.

    Args:
      logits_fn: pure model function; ``x`` is a microbatch ``[batch_size, ...]``.
      params, state: trained and non-trained variables (``state`` may be ``{}``).
      images, labels: the N examples (host or device arrays), leading axis N.
      batch_size: examples per device per scan step (memory knob; no effect on the value).
      mesh: 1-D mesh with axis 'batch'; default all devices (``distributed.make_mesh``).
      per_example_loss: ``(logits[B, C], labels[B]) -> [B]``.
      allow_padding: if False, raise unless N divides into whole microbatches (needed when
        ``logits_fn`` mixes examples, e.g. BatchNorm with batch statistics).
      unroll_microbatches: loop over microbatches in straight-line code instead of
        ``lax.scan``. Default: True on the CPU backend only, where (measured with jax 0.10.2)
        convolution gradients inside a while loop, even a one-step scan, run 30-70x slower;
        the cost is compile time linear in the number of microbatches per device.
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    n = images.shape[0]
    if n < 1 or labels.shape[:1] != (n,):
        raise ValueError(
            f"need N >= 1 images and N labels; got images {images.shape}, labels {labels.shape}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    mesh = make_mesh() if mesh is None else mesh
    if unroll_microbatches is None:
        unroll_microbatches = mesh.devices.flat[0].platform == "cpu"
    if mesh.axis_names != (AXIS,):
        raise ValueError(f"mesh must be 1-D with axis name {AXIS!r}, got axes {mesh.axis_names}")
    num_devices = mesh.devices.size
    chunk = num_devices * batch_size
    padded = math.ceil(n / chunk) * chunk
    if padded != n and not allow_padding:
        raise ValueError(
            f"N={n} examples do not fill whole microbatches of {batch_size} "
            f"on {num_devices} devices "
            f"(multiple of {chunk} needed) and padding is not allowed for this model"
        )
    # The execution layer's padding (copies of a real example, masked out) and sharding.
    take, mask = execution.padded_indices(0, n, padded)
    sharding = distributed.batch_sharded(mesh)
    data = tuple(jax.device_put(a, sharding) for a in (images[take], labels[take], mask))

    programs = _programs(logits_fn, per_example_loss, n, batch_size, mesh, unroll_microbatches)
    return DatasetObjective(
        params=params,
        state=state,
        num_examples=n,
        batch_size=batch_size,
        mesh=mesh,
        hvp=jax.tree_util.Partial(programs.hvp, params, state, *data),
        hvp_block=jax.tree_util.Partial(programs.hvp_block, params, state, *data),
        loss=lambda p: programs.loss(p, state, *data),
        value_and_grad=lambda p: programs.value_and_grad(p, state, *data),
        error_rate=lambda p: programs.error_rate(p, state, *data),
        source=_Source(
            logits_fn, images, labels, per_example_loss, allow_padding, unroll_microbatches
        ),
    )


class _Programs(NamedTuple):
    """The objective's jitted functions of ``(params, state, images, labels, mask[, v])``."""

    hvp: Callable
    hvp_block: Callable
    loss: Callable
    value_and_grad: Callable
    error_rate: Callable


def _programs(logits_fn, per_example_loss, n, batch_size, mesh, unroll_microbatches) -> _Programs:
    """The jitted functions for this model, loss, problem size and mesh: the same function
    objects for every objective with an equal (hashable) spec, so a second objective (other
    weights, other images of the same shape) reuses the compiled programs, and the solvers'
    own jitted steps, which take ``hvp`` as a ``Partial`` argument, see an equal tree
    structure and do not retrace either. An unhashable spec (a model with a list field) gets
    fresh functions (they compile again)."""
    spec = (logits_fn, per_example_loss, n, batch_size, mesh, unroll_microbatches)
    try:
        hash(spec)
    except TypeError:
        return _build_programs(*spec)
    return _cached_programs(*spec)


def _build_programs(
    logits_fn, per_example_loss, n, batch_size, mesh, unroll_microbatches
) -> _Programs:
    """The jitted programs (pmap model: per-device sums over microbatches, psum)."""

    def masked_sum_loss(p, st, x, y, m):
        losses = per_example_loss(logits_fn(p, st, x), y)
        return jnp.sum(jnp.where(m, losses, 0.0))

    def dataset_sum(per_batch_fn, init):
        return _dataset_sum(per_batch_fn, init, batch_size, unroll_microbatches)

    def run_sharded(per_device, replicated_args, x, y, m):
        return _run_sharded(mesh, per_device, replicated_args, x, y, m)

    @jax.jit
    def _hvp(p, st, x, y, m, v):
        def per_device(rep):
            p, st, v = rep

            def per_batch(xb, yb, mb):
                grad_fn = jax.grad(lambda q: masked_sum_loss(q, st, xb, yb, mb))
                return jax.jvp(grad_fn, (p,), (v,))[1]

            return dataset_sum(per_batch, _zeros_like(p))

        total = run_sharded(per_device, (p, st, v), x, y, m)
        return jax.tree_util.tree_map(lambda t: t / n, total)

    @jax.jit
    def _hvp_block(p, st, x, y, m, vs):
        # vs: every leaf [k, *shape]; the primal pass of each microbatch runs once for all k.
        def per_device(rep):
            p, st, vs = rep

            def per_batch(xb, yb, mb):
                grad_fn = jax.grad(lambda q: masked_sum_loss(q, st, xb, yb, mb))
                return jax.vmap(lambda v: jax.jvp(grad_fn, (p,), (v,))[1])(vs)

            return dataset_sum(per_batch, _zeros_like(vs))

        total = run_sharded(per_device, (p, st, vs), x, y, m)
        return jax.tree_util.tree_map(lambda t: t / n, total)

    @jax.jit
    def _value_and_grad(p, st, x, y, m):
        def per_device(rep):
            p, st = rep

            def per_batch(xb, yb, mb):
                return jax.value_and_grad(lambda q: masked_sum_loss(q, st, xb, yb, mb))(p)

            return dataset_sum(per_batch, (jnp.zeros((), _float_dtype(p)), _zeros_like(p)))

        total = run_sharded(per_device, (p, st), x, y, m)
        return jax.tree_util.tree_map(lambda t: t / n, total)

    @jax.jit
    def _loss(p, st, x, y, m):
        def per_device(rep):
            p, st = rep
            return dataset_sum(
                lambda xb, yb, mb: masked_sum_loss(p, st, xb, yb, mb),
                jnp.zeros((), _float_dtype(p)),
            )

        return run_sharded(per_device, (p, st), x, y, m) / n

    @jax.jit
    def _error_rate(p, st, x, y, m):
        def per_device(rep):
            p, st = rep

            def per_batch(xb, yb, mb):
                wrong = jnp.argmax(logits_fn(p, st, xb), axis=-1) != yb
                return jnp.sum(jnp.where(mb, wrong, False), dtype=jnp.int32)

            return dataset_sum(per_batch, jnp.zeros((), jnp.int32))

        return run_sharded(per_device, (p, st), x, y, m) / n

    return _Programs(_hvp, _hvp_block, _loss, _value_and_grad, _error_rate)


# Programs of the most recent specs (a sweep measures many checkpoints of one model and shape).
_cached_programs = functools.lru_cache(maxsize=16)(_build_programs)


def _dataset_sum(per_batch_fn, init, batch_size: int, unroll: bool):
    """Per-device sum of ``per_batch_fn(x, y, m)`` over microbatches of ``batch_size`` (a
    ``lax.scan``, or straight-line code if ``unroll``), psum over devices."""

    def per_device(x, y, m):
        def body(acc, batch):
            out = per_batch_fn(*batch)
            return jax.tree_util.tree_map(jnp.add, acc, out), None

        if unroll:  # straight-line code, no while loop (see make_dataset_objective)
            total = init
            for i in range(x.shape[0] // batch_size):
                part = slice(i * batch_size, (i + 1) * batch_size)
                total = jax.tree_util.tree_map(
                    jnp.add, total, per_batch_fn(x[part], y[part], m[part])
                )
        else:
            # The carry becomes device-varying inside the scan; mark its initial value so.
            carry = _to_varying(init)
            total, _ = jax.lax.scan(
                body, carry, tuple(_microbatches(a, batch_size) for a in (x, y, m))
            )
        return jax.lax.psum(total, AXIS)

    return per_device


def _microbatches(x, batch_size: int):
    return x.reshape((-1, batch_size) + x.shape[1:])


def _run_sharded(mesh, per_device, replicated_args, x, y, m):
    """``per_device(replicated_args)(x, y, m)`` under shard_map: data sharded over the mesh,
    the replicated arguments (parameters, state, tangent) on every device."""
    # Replicated inputs are cast to device-varying first: then jax.grad inside the
    # per-device function yields the local gradient (pmap semantics) and the only
    # cross-device reduction is the explicit psum, instead of the implicit psum that
    # differentiating an invariant input inside shard_map would add.
    fn = jax.shard_map(
        lambda rep, x, y, m: per_device(_to_varying(rep))(x, y, m),
        mesh=mesh,
        in_specs=(P(), P(AXIS), P(AXIS), P(AXIS)),
        out_specs=P(),
    )
    return fn(replicated_args, x, y, m)


def _zeros_like(tree):  # device-invariant zeros (jnp.zeros_like would inherit 'varying')
    return jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), tree)


def _to_varying(tree: PyTree) -> PyTree:
    """Marks each (device-invariant) leaf as varying over the 'batch' axis inside shard_map."""
    return jax.tree_util.tree_map(lambda a: jax.lax.pcast(a, (AXIS,), to="varying"), tree)


def _float_dtype(tree: PyTree):
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.result_type(*leaves) if leaves else jnp.float32


@dataclasses.dataclass(frozen=True)
class _FlaxLogits:
    """``(params, state, x) -> logits`` of a Flax ``model``; equal (and equally hashed) for
    equal models, so objectives of one model share their compiled programs."""

    model: Any
    batchnorm: str  # 'eval': running statistics; 'batch': the microbatch's own

    def __call__(self, p, st, x):
        variables = {"params": p, **st}
        if self.batchnorm == "eval":
            return self.model.apply(variables, x, train=False)
        logits, _ = self.model.apply(variables, x, train=True, mutable=list(st))
        return logits


def from_flax(
    model: Any,
    variables: PyTree,
    images: Any,
    labels: Any,
    *,
    batch_size: int,
    mesh: jax.sharding.Mesh | None = None,
    batchnorm: str = "eval",
    per_example_loss: Callable[[jax.Array, jax.Array], jax.Array] = cross_entropy,
    unroll_microbatches: bool | None = None,
) -> DatasetObjective:
    """Dataset objective of a Flax Linen ``model`` with ``variables = {'params': ..., ...}``.

    ``model.apply(variables, x, train=False)`` must return logits (the project's model
    contract). ``batchnorm='eval'`` (default) uses the running statistics in ``variables``;
    ``'batch'`` uses each microbatch's own statistics (``train=True``), which makes the
    objective depend on ``batch_size`` and forbids padding; offered only for comparison.
    """
    if batchnorm not in BATCHNORM_MODES:
        raise ValueError(f"batchnorm={batchnorm!r}; allowed: {BATCHNORM_MODES}")
    if "params" not in variables:
        raise ValueError(f"variables must contain 'params'; got keys {sorted(variables)}")
    params = variables["params"]
    state = {k: v for k, v in variables.items() if k != "params"}
    return make_dataset_objective(
        _FlaxLogits(model, batchnorm),
        params,
        state,
        images,
        labels,
        batch_size=batch_size,
        mesh=mesh,
        per_example_loss=per_example_loss,
        allow_padding=batchnorm == "eval",
        unroll_microbatches=unroll_microbatches,
    )
