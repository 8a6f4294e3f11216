"""Per-example programs over a dataset: fixed padded batches, sharded over the mesh,
per-example keys.

Attacks, corruption evaluation, clean error/predictions and the curvature data path all run
through this module, so three conventions hold for each of them (docs/design.md) and the outcome
for an example does not depend on the batch size or the device count:

* per-example keys: example ``i`` of a dataset draws all its randomness from
  ``fold_in(key, i)`` (:func:`example_keys`, :func:`example_key_data`);
* fixed padded batches: the host cuts the examples into batches of one fixed global size
  (:func:`padded_batch_size`), pads the last one with copies of a real example flagged
  ``valid=False`` (:func:`padded_indices`), so one compiled program serves every batch;
* the program is written in the pmap model (a per-device function) and runs as
  ``jax.shard_map`` under ``jax.jit`` over the 1-D mesh of ``flatrob_jax.distributed``
  (axis :data:`AXIS`).

A *program* is a module-level function ``program(model_fn, valid, *batched, **static)``
returning a tuple of per-example arrays; ``model_fn`` is a ``jax.tree_util.Partial``
(:func:`as_model_fn`), so model weights travel as replicated arguments, not as constants
baked into the compiled program: new weights of the same model reuse the compilation.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from flatrob_jax import distributed
from flatrob_jax.distributed import AXIS, make_mesh
from flatrob_jax.progress import Progress

# --------------------------------------------------------------------------- keys


def typed_key(key: jax.Array) -> jax.Array:
    """Accept a new-style typed key or a raw ``uint32[2]`` PRNGKey; return a typed key."""
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    return jax.random.wrap_key_data(jnp.asarray(key, jnp.uint32))


def example_keys(key: jax.Array, n: int, offset=0) -> jax.Array:
    """Keys ``fold_in(key, offset + i)`` for ``i in range(n)``; jittable (``offset`` may be
    traced, e.g. a device's first global index inside shard_map)."""
    idx = offset + jnp.arange(n)
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(idx)


def as_example_keys(key: jax.Array, batch_size: int) -> jax.Array:
    """One key (per-example keys are derived from it, :func:`example_keys`) or a batch of
    ``batch_size`` per-example keys (returned as they are)."""
    shape = key.shape if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key.shape[:-1]
    if len(shape) == 0:
        return example_keys(key, batch_size)
    if shape != (batch_size,):
        raise ValueError(
            f"expected one key or {batch_size} per-example keys, got key shape {shape}"
        )
    return key


@jax.jit
def _fold_in_indices(key: jax.Array, indices: jax.Array) -> jax.Array:
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(indices)


def example_key_data(key: jax.Array, indices) -> tuple[np.ndarray, str]:
    """Raw data of ``fold_in(key, i)`` for each example index ``i`` (host array, one row per
    index) and the key implementation's name: the form in which per-example keys travel
    through :func:`run_batched` (a typed key array cannot be gathered and padded on the host).
    """
    key = typed_key(key)
    keys = _fold_in_indices(key, jnp.asarray(np.asarray(indices), jnp.uint32))
    return np.asarray(jax.random.key_data(keys)), str(jax.random.key_impl(key))


def wrap_keys(key_data: jax.Array, impl: str) -> jax.Array:
    """Inverse of :func:`example_key_data` inside a program."""
    return jax.random.wrap_key_data(key_data, impl=impl)


# --------------------------------------------------------------------------- models


@dataclasses.dataclass(frozen=True)
class _EvalApply:
    """``(variables, x) -> model.apply(variables, x, train=False)``; equal for equal models,
    so jit caches keyed on a :func:`model_fn` Partial hit across runs of one architecture."""

    model: Any

    def __call__(self, variables, x):
        return self.model.apply(variables, x, train=False)


def model_fn(model, variables) -> jax.tree_util.Partial:
    """``x -> logits`` of a Flax Linen ``model`` (BatchNorm in eval mode: running statistics),
    as a ``jax.tree_util.Partial`` whose leaves are ``variables``: the one apply-function
    wrapper of the project (``load_for_eval(...).apply_fn`` is one)."""
    return jax.tree_util.Partial(_EvalApply(model), variables)


def _identity(x):
    return x


def as_model_fn(apply_fn) -> jax.tree_util.Partial:
    """Whatever names a model, as a ``jax.tree_util.Partial`` that jit takes as an argument.

    * a ``Partial`` is returned as is (its leaves, the weights, are traced: one compilation
      for any weights of the same model);
    * an object with ``.model`` and ``.variables`` (an ``EvalModel``) becomes
      :func:`model_fn` of them;
    * a plain callable ``x -> logits`` becomes ``Partial(fn)`` (compiled once per distinct
      callable, with the arrays it closes over as constants);
    * None becomes the identity (programs that use no model, e.g. corrupting images).
    """
    if isinstance(apply_fn, jax.tree_util.Partial):
        return apply_fn
    if apply_fn is None:
        return jax.tree_util.Partial(_identity)
    if hasattr(apply_fn, "model") and hasattr(apply_fn, "variables"):
        return model_fn(apply_fn.model, apply_fn.variables)
    if not callable(apply_fn):
        raise TypeError(
            "apply_fn must be a callable x -> logits, a jax.tree_util.Partial or an "
            f"object with .model and .variables; got {type(apply_fn).__name__}"
        )
    return jax.tree_util.Partial(apply_fn)


def to_float_images(images: jax.Array) -> jax.Array:
    """Stored pixels -> float32 model input: uint8 as ``x / 255``, other dtypes cast."""
    if images.dtype == jnp.uint8:
        return images.astype(jnp.float32) / jnp.float32(255.0)
    return images.astype(jnp.float32)


# --------------------------------------------------------------------------- batching


def check_count(name: str, value, *, none_means: str = "all") -> int | None:
    """The one validator of the config vocabulary for counts: None means ``none_means`` (all
    examples, all devices, derived, never); otherwise an int >= 1. Returns the value (an int
    or None); anything else raises ValueError naming ``name`` and the value."""
    if value is None:
        return None
    try:
        ok = not isinstance(value, bool) and operator.index(value) >= 1
    except TypeError as e:
        raise ValueError(f"{name} must be None ({none_means}) or an int >= 1, got {value!r}") from e
    if not ok:
        raise ValueError(f"{name} must be None ({none_means}) or an int >= 1, got {value!r}")
    return operator.index(value)


def padded_batch_size(batch_size: int, num_examples: int, num_devices: int) -> int:
    """Global batch size: ``batch_size`` rounded up to a multiple of the device count, and no
    larger than needed for ``num_examples``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    per_device = math.ceil(min(batch_size, max(num_examples, 1)) / num_devices)
    return per_device * num_devices


def padded_indices(lo: int, hi: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``lo..hi-1`` of a dataset padded to ``size`` rows with copies of row ``lo``:
    ``(take, valid)`` with ``take`` the row indices to gather and ``valid`` False on padding.
    Copies of a real example (not zeros) keep every padded row a valid model input."""
    if not 0 <= hi - lo <= size:
        raise ValueError(f"rows {lo}..{hi} do not fit a batch of {size}")
    take = np.concatenate([np.arange(lo, hi), np.full(size - (hi - lo), lo)]).astype(np.int64)
    return take, np.arange(size) < (hi - lo)


class Batch(NamedTuple):
    """One padded batch of :func:`iter_batched`: rows ``lo..hi-1`` of the dataset, its
    ``valid`` mask and the program's outputs (device arrays, padded, sharded over the mesh)."""

    lo: int
    hi: int
    valid: jax.Array
    outputs: tuple


@functools.lru_cache(maxsize=256)
def _compiled(program: Callable, static: tuple, mesh: jax.sharding.Mesh, num_batched: int):
    fn = functools.partial(program, **dict(static))
    in_specs = (P(), P(AXIS)) + (P(AXIS),) * num_batched
    # check_vma=False: pmap semantics; programs use no collectives, and their device-local
    # while_loop predicates (e.g. an attack's early exit once a device's examples are all
    # fooled) are allowed.
    mapped = jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=P(AXIS), check_vma=False)
    return jax.jit(mapped)


def sharded(program: Callable, static: dict, mesh: jax.sharding.Mesh, num_batched: int):
    """The compiled ``jit(shard_map(program))`` for ``mesh``: called as
    ``fn(model_fn, valid, *batched)`` on arrays sharded over :data:`AXIS` (one cached program
    per ``(program, static, mesh, num_batched)``)."""
    return _compiled(program, tuple(sorted(static.items())), mesh, num_batched)


def _key_inputs(key, indices, n, static):
    if key is None:
        if indices is not None:
            raise ValueError("indices are the example indices of per-example keys; pass key too")
        return (), static
    indices = np.arange(n) if indices is None else np.asarray(indices)
    if indices.shape != (n,):
        raise ValueError(f"indices must have shape ({n},), one per example; got {indices.shape}")
    key_data, impl = example_key_data(key, indices)
    return (key_data,), dict(static, key_impl=impl)


def _placed_batches(
    static: dict,
    apply_fn,
    inputs: Sequence[np.ndarray],
    *,
    batch_size: int,
    mesh: jax.sharding.Mesh | None,
    key: jax.Array | None,
    indices,
):
    """The batching every per-example program shares: check the inputs, append per-example
    key data (``key``), cut fixed padded batches and place them sharded on ``mesh``.

    Returns ``(mesh, static, model, num_batched, batches)`` where ``batches`` yields
    ``(lo, hi, valid, args)`` with ``valid`` and ``args`` on the devices and ``model`` is the
    replicated model function."""
    mesh = make_mesh() if mesh is None else mesh
    n = int(inputs[0].shape[0])
    for a in inputs:
        if a.shape[:1] != (n,):
            raise ValueError(
                f"inputs must share the leading axis {n}; got shapes "
                f"{[np.shape(b) for b in inputs]}"
            )
    extra, static = _key_inputs(key, indices, n, static)
    inputs = tuple(inputs) + extra
    bs = padded_batch_size(batch_size, n, int(mesh.devices.size))
    model = jax.device_put(as_model_fn(apply_fn), distributed.replicated(mesh))
    sharding = distributed.batch_sharded(mesh)

    def batches():
        for lo in range(0, n, bs):
            hi = min(lo + bs, n)
            take, valid = padded_indices(lo, hi, bs)
            args = [jax.device_put(np.asarray(a)[take], sharding) for a in inputs]
            yield lo, hi, jax.device_put(valid, sharding), args

    return mesh, static, model, len(inputs), batches()


def _collect(results, n: int, log, desc: str, every_secs) -> tuple[np.ndarray, ...]:
    """Concatenate ``(lo, hi, outputs)`` batch results without their padding, as host
    arrays, reporting progress (examples/s, ETA) through ``log`` if given."""
    progress = (
        None
        if log is None
        else Progress(n, unit="example", desc=desc, log=log, every_secs=every_secs)
    )
    outputs: list[tuple] = []
    for lo, hi, out in results:
        outputs.append(tuple(np.asarray(o)[: hi - lo] for o in out))
        if progress is not None:
            progress(hi)
    if not outputs:
        return ()
    return tuple(np.concatenate(parts, axis=0) for parts in zip(*outputs))


def iter_batched(
    program: Callable,
    static: dict,
    apply_fn,
    inputs: Sequence[np.ndarray],
    *,
    batch_size: int,
    mesh: jax.sharding.Mesh | None = None,
    key: jax.Array | None = None,
    indices=None,
) -> Iterator[Batch]:
    """Run ``program`` batch by batch over ``inputs`` (host arrays with a common leading axis
    ``N``) and yield each padded :class:`Batch` with its outputs still on the devices.

    ``key``: if given, per-example key data of ``fold_in(key, indices[i])`` (``indices``
    defaults to ``0..N-1``) is appended as the last batched input and ``key_impl`` to
    ``static``; the program rebuilds the keys with :func:`wrap_keys`.
    """
    mesh, static, model, num_batched, batches = _placed_batches(
        static, apply_fn, inputs, batch_size=batch_size, mesh=mesh, key=key, indices=indices
    )
    fn = sharded(program, static, mesh, num_batched)
    for lo, hi, valid, args in batches:
        yield Batch(lo, hi, valid, tuple(fn(model, valid, *args)))


def run_batched(
    program: Callable,
    static: dict,
    apply_fn,
    inputs: Sequence[np.ndarray],
    *,
    batch_size: int,
    mesh: jax.sharding.Mesh | None = None,
    key: jax.Array | None = None,
    indices=None,
    log: Callable[[str], None] | None = None,
    desc: str = "",
    every_secs: float | None = 10.0,
) -> tuple[np.ndarray, ...]:
    """Run ``program`` over all examples of ``inputs`` (see :func:`iter_batched`) and return
    its outputs, without padding, as host arrays. ``log``: progress lines (examples/s, ETA)
    at most every ``every_secs`` seconds and after the last batch."""
    batches = iter_batched(
        program,
        static,
        apply_fn,
        inputs,
        batch_size=batch_size,
        mesh=mesh,
        key=key,
        indices=indices,
    )
    results = ((b.lo, b.hi, b.outputs) for b in batches)
    return _collect(results, int(inputs[0].shape[0]), log, desc, every_secs)


# --------------------------------------------------------------------------- host-driven programs


def _is_spec(s) -> bool:
    return isinstance(s, P) or s is None


@functools.lru_cache(maxsize=256)
def _compiled_step(step: Callable, static: tuple, mesh: jax.sharding.Mesh, specs: tuple):
    (in_leaves, in_def), (out_leaves, out_def) = specs
    in_specs = jax.tree_util.tree_unflatten(in_def, in_leaves)
    out_specs = jax.tree_util.tree_unflatten(out_def, out_leaves)
    fn = functools.partial(step, **dict(static))
    return jax.jit(
        jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
    )


def sharded_step(step: Callable, static: dict, mesh: jax.sharding.Mesh, in_specs, out_specs):
    """``jit(shard_map(step))`` with explicit specs, cached: one step of a *host-driven*
    program (:func:`run_batched_driver`), which calls it once per iteration instead of
    compiling a whole loop.

    ``in_specs``/``out_specs`` are tuples (or pytrees) of ``PartitionSpec``s as
    ``jax.shard_map`` takes them: ``P()`` for replicated arguments (the model, an iteration
    counter), ``P(AXIS)`` for per-example arrays, ``P(None, AXIS)`` for a per-iteration
    history ``[steps, B]``. Like :func:`sharded`, pmap semantics (``check_vma=False``): a
    ``P()`` output must be equal on every device. One compilation per
    ``(step, static, mesh, specs)``; pass iteration counters as arrays (not Python ints)
    so that they do not recompile.
    """
    specs = tuple(jax.tree_util.tree_flatten(s, is_leaf=_is_spec) for s in (in_specs, out_specs))
    specs = tuple((tuple(leaves), treedef) for leaves, treedef in specs)
    return _compiled_step(step, tuple(sorted(static.items())), mesh, specs)


def run_batched_driver(
    driver: Callable,
    static: dict,
    apply_fn,
    inputs: Sequence[np.ndarray],
    *,
    batch_size: int,
    mesh: jax.sharding.Mesh | None = None,
    key: jax.Array | None = None,
    indices=None,
    log: Callable[[str], None] | None = None,
    desc: str = "",
    every_secs: float | None = 10.0,
) -> tuple[np.ndarray, ...]:
    """:func:`run_batched` for a host-driven program: the same fixed padded batches,
    sharding, per-example keys and progress, but instead of one compiled program per batch
    the Python ``driver(model_fn, valid, *batched, mesh=mesh, **static)`` is called with the
    batch's device arrays and runs its own loop of compiled steps (:func:`sharded_step`);
    it returns a tuple of per-example arrays sharded like its inputs.

    Why: on the CPU backend a convolution network's gradient inside a compiled while loop
    runs far slower than the same compiled step called from a Python loop (measured in
    benchmarks/attacks.md), so the attacks' loops run on the host there.
    """
    mesh, static, model, _, batches = _placed_batches(
        static, apply_fn, inputs, batch_size=batch_size, mesh=mesh, key=key, indices=indices
    )
    results = (
        (lo, hi, driver(model, valid, *args, mesh=mesh, **static))
        for lo, hi, valid, args in batches
    )
    return _collect(results, int(inputs[0].shape[0]), log, desc, every_secs)


# --------------------------------------------------------------------------- how a program runs


@dataclasses.dataclass(frozen=True, kw_only=True)
class Execution:
    """How per-example programs run over a dataset: the one value the attacks (and anything
    else built on :class:`Runner`) take instead of loose batching arguments.

    Attributes:
      batch_size: fixed global batch size (rounded up to a multiple of the device count).
      num_devices: devices of the 1-D mesh (:func:`make_mesh`); None: all.
      log: where progress lines go (examples/s, ETA); None: nowhere.
      host_loop: run a :class:`Runner` that has a host loop as that loop of compiled steps
        (True) or as its whole compiled program (False); None (auto): the host loop on the
        CPU backend only, where XLA runs a convolution network's gradient inside a compiled
        loop several times slower than the same step called from Python (benchmarks/attacks.md).
        Both give the same decisions; runners without a host loop ignore it.
    """

    batch_size: int = 500
    num_devices: int | None = None
    log: Callable[[str], None] | None = None
    host_loop: bool | None = None

    def __post_init__(self):
        try:
            ok = not isinstance(self.batch_size, bool) and operator.index(self.batch_size) >= 1
        except TypeError:
            ok = False
        if not ok:
            raise ValueError(f"batch_size must be an int >= 1, got {self.batch_size!r}")
        check_count("num_devices", self.num_devices, none_means="all devices")
        if not (self.host_loop is None or isinstance(self.host_loop, bool)):
            raise ValueError(
                f"host_loop must be True, False or None (auto), got {self.host_loop!r}"
            )
        if self.log is not None and not callable(self.log):
            raise ValueError(f"log must be None or a callable taking a line, got {self.log!r}")

    def mesh(self) -> jax.sharding.Mesh:
        """The 1-D mesh over :attr:`num_devices` devices."""
        return make_mesh(self.num_devices)

    def runs_on_host(self, mesh: jax.sharding.Mesh) -> bool:
        """:attr:`host_loop` resolved for ``mesh`` (None: True on the CPU backend)."""
        if self.host_loop is None:
            return mesh.devices.flat[0].platform == "cpu"
        return self.host_loop


@dataclasses.dataclass(frozen=True)
class Runner:
    """A per-example computation and the ways it can run over a dataset.

    Attributes:
      program: the whole computation as one per-device program, compiled once and called on
        every padded batch (:func:`run_batched`).
      host_loop: optionally the same computation as a host-driven program
        (:func:`run_batched_driver`: a Python loop of compiled steps, :func:`sharded_step`),
        taking the same decisions; used where :meth:`Execution.runs_on_host` says so.
    """

    program: Callable
    host_loop: Callable | None = None

    def uses_host_loop(self, execution: Execution, mesh: jax.sharding.Mesh) -> bool:
        """Whether :meth:`run` takes the host loop under ``execution`` on ``mesh``."""
        return self.host_loop is not None and execution.runs_on_host(mesh)

    def run(
        self,
        static: dict,
        apply_fn,
        inputs: Sequence[np.ndarray],
        *,
        execution: Execution,
        key: jax.Array | None = None,
        indices=None,
        desc: str = "",
    ) -> tuple[np.ndarray, ...]:
        """Run over all examples of ``inputs`` as ``execution`` says; per-example keys
        ``fold_in(key, indices[i])`` as :func:`iter_batched`; outputs without padding, as
        host arrays (:func:`run_batched`)."""
        mesh = execution.mesh()
        if self.uses_host_loop(execution, mesh):
            run, program = run_batched_driver, self.host_loop
        else:
            run, program = run_batched, self.program
        return run(
            program,
            static,
            apply_fn,
            inputs,
            batch_size=execution.batch_size,
            mesh=mesh,
            key=key,
            indices=indices,
            log=execution.log,
            desc=desc,
        )


# --------------------------------------------------------------------------- clean evaluation


def _logits_program(model_fn, valid, x):
    del valid
    return (model_fn(to_float_images(x)),)


def misclassified(model_fn, valid, x, y):
    """Program: per-example ``argmax(logits) != label`` (padding included; cut by the caller)."""
    del valid
    return (jnp.argmax(model_fn(to_float_images(x)), axis=-1) != y,)


def predict(
    apply_fn, images, *, batch_size: int = 500, mesh: jax.sharding.Mesh | None = None
) -> np.ndarray:
    """Logits ``[N, K]`` (host array) of ``images`` ``[N, H, W, C]`` (float in [0, 1], or
    uint8 read as ``x / 255``), in fixed padded batches sharded over ``mesh`` (default: all
    devices). ``apply_fn``: anything :func:`as_model_fn` takes."""
    images = np.asarray(images)
    if images.shape[0] == 0:
        raise ValueError("predict needs at least one image")
    (logits,) = run_batched(
        _logits_program, {}, apply_fn, (images,), batch_size=batch_size, mesh=mesh
    )
    return logits


def error_rate(
    apply_fn, images, labels, *, batch_size: int = 500, mesh: jax.sharding.Mesh | None = None
) -> float:
    """Top-1 error (fraction of ``argmax(logits) != label``) of ``apply_fn`` on ``images``
    (as :func:`predict`) and integer ``labels`` ``[N]``."""
    images, labels = np.asarray(images), np.asarray(labels)
    if images.shape[0] == 0 or labels.shape != images.shape[:1]:
        raise ValueError(
            f"need N >= 1 images and N labels; got images {images.shape}, labels {labels.shape}"
        )
    (wrong,) = run_batched(
        misclassified,
        {},
        apply_fn,
        (images, labels.astype(np.int32)),
        batch_size=batch_size,
        mesh=mesh,
    )
    return float(np.mean(wrong))


__all__ = [
    "AXIS",
    "Batch",
    "Execution",
    "Runner",
    "as_example_keys",
    "as_model_fn",
    "check_count",
    "error_rate",
    "example_key_data",
    "example_keys",
    "iter_batched",
    "make_mesh",
    "misclassified",
    "model_fn",
    "padded_batch_size",
    "padded_indices",
    "predict",
    "run_batched",
    "run_batched_driver",
    "sharded",
    "sharded_step",
    "to_float_images",
    "typed_key",
    "wrap_keys",
]
