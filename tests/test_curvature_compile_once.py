"""The curvature programs compile once per (model, shapes, mesh): the next checkpoint of the
same model (a sweep's next run) traces and compiles nothing, and its values are its own."""

import collections
import contextlib
import json
import types

import chex
import jax
import numpy as np

from flatrob_jax import curvature
from flatrob_jax.analysis.analyses import curvature_config
from flatrob_jax.curvature import evaluate as curvature_evaluate
from flatrob_jax.distributed import make_mesh
from flatrob_jax.models import get_model

TRACE = "/jax/core/compile/jaxpr_trace_duration"
COMPILE = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def jax_compile_events():
    """Counts of JAX's own tracing and XLA compilation events inside the block."""
    counts = collections.Counter()

    def listener(event, duration, **kwargs):
        counts[event] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield counts
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def _model_and_weights(seeds):
    model = get_model("cnn_tiny", 3)
    x = np.zeros((1, 8, 8, 1), np.float32)
    return model, [model.init(jax.random.key(s), x) for s in seeds]


def _data(n, seed):
    rng = np.random.RandomState(seed)
    return rng.rand(n, 8, 8, 1).astype(np.float32), rng.randint(0, 3, n).astype(np.int32)


def test_a_second_objective_of_the_same_model_traces_nothing():
    """Each of the four programs (HVP, loss, value-and-gradient, error rate) traces the model
    once (one microbatch per device, unrolled); two objectives at other weights and on other
    images of the same shape would trace it eight times if the programs were rebuilt."""
    model, (first, second) = _model_and_weights((0, 1))

    @chex.assert_max_traces(n=4)
    def logits_fn(p, st, x):
        return model.apply({"params": p, **st}, x, train=False)

    values = []
    for variables, seed in ((first, 0), (second, 1)):
        params = variables["params"]
        state = {k: v for k, v in variables.items() if k != "params"}
        obj = curvature.make_dataset_objective(
            logits_fn, params, state, *_data(11, seed), batch_size=3, mesh=make_mesh(4)
        )
        ones = jax.tree_util.tree_map(np.ones_like, params)
        values.append(
            (
                float(obj.loss(params)),
                float(obj.value_and_grad(params)[0]),
                float(obj.error_rate(params)),
                float(sum(np.sum(x) for x in jax.tree_util.tree_leaves(obj.hvp(ones)))),
            )
        )
    assert values[0] != values[1]  # each objective measured its own weights and images


def test_a_second_evaluate_of_the_same_model_compiles_nothing(tmp_path):
    """Every measure on, through from_flax (the analysis path): the second checkpoint's run
    records no JAX trace and no XLA compilation, and equals a run on fresh programs."""
    model, (first, second) = _model_and_weights((2, 3))
    data = _data(13, 0)  # a size no other test uses: the first run has to compile
    settings = dict(
        batch_size=4,
        lanczos_steps=5,
        trace_max_probes=4,
        trace_min_probes=2,
        density=True,
        density_steps=4,
        density_png="",
        sharpness=True,
        keskar_iters=2,
        adaptive_ascent=True,
        adaptive_ascent_steps=2,
        adaptive_samples=2,
        adaptive_worst=("linf_0.002", "l2_0.5_normlogits"),
        adaptive_worst_iters=2,
        adaptive_worst_batch=4,
        adaptive_worst_random_start=True,
        pac_bayes=True,
        pac_bayes_samples=1,
        pac_bayes_metric="loss",
    )

    def run(variables):
        view = types.SimpleNamespace(model=model, variables=variables)
        out = curvature_evaluate.evaluate(
            view, data, curvature_config(), key=jax.random.key(0), log=lambda _: None, **settings
        )
        out.pop("seconds")
        return json.dumps(out, sort_keys=True)

    with jax_compile_events() as first_events:
        run(first)
    with jax_compile_events() as second_events:
        again = run(second)
    assert first_events[TRACE] > 0 and first_events[COMPILE] > 0
    assert second_events[TRACE] == 0 and second_events[COMPILE] == 0, second_events
    # The shared programs change no value: the same result from a cold cache.
    from flatrob_jax.curvature import dataset_objective

    dataset_objective._cached_programs.cache_clear()
    with jax_compile_events() as cold_events:
        assert run(second) == again
    assert cold_events[COMPILE] > 0
