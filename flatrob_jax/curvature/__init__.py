"""Curvature of the training loss: Hessian-vector products, extreme eigenvalues, trace,
spectral density and perturbation sharpness.

Typical use (a trained Flax model, eval-mode BatchNorm, the loss averaged over a dataset)::

    objective = curvature.from_flax(model, variables, images, labels, batch_size=128)
    top = curvature.lanczos(objective.hvp, objective.params, key, num_steps=100, tol=1e-3)
    tr = curvature.hutchinson_trace(objective.hvp, objective.params, key, num_probes=200,
                                    rel_tol=0.05)
    top.eigenvalues[0], top.residuals[0], tr.trace, tr.stderr

Modules: hvp (forward-over-reverse HVP), dataset_objective (the dataset-level operator,
sharded over devices), lanczos, power_iteration (PyHessian's method), hutchinson (+ Hutch++),
density (stochastic Lanczos quadrature), sharpness (Keskar, adaptive by APGD and by a fast
ascent, average adaptive, PAC-Bayes), measures
(the registry of measures the analysis runs) and evaluate (the analysis's hook: one objective,
then each configured measure).
"""

from flatrob_jax.curvature.dataset_objective import (
    DatasetObjective,
    cross_entropy,
    from_flax,
    make_dataset_objective,
)
from flatrob_jax.curvature.density import SpectralDensity, plot_density, slq_density
from flatrob_jax.curvature.hutchinson import (
    Estimate,
    TraceResult,
    hutchinson_trace,
    hutchpp_trace,
)
from flatrob_jax.curvature.hvp import hvp, hvp_block
from flatrob_jax.curvature.lanczos import (
    BlockLanczosResult,
    LanczosResult,
    block_lanczos,
    lanczos,
)
from flatrob_jax.curvature.power_iteration import PowerIterationResult, power_iteration
from flatrob_jax.curvature.sharpness import (
    NormalizedLogits,
    PacBayesSigma,
    SharpnessResult,
    adaptive_sharpness_apgd,
    adaptive_sharpness_ascent,
    adaptive_sharpness_average,
    keskar_sharpness,
    pac_bayes_sigma,
)

# The project's one mesh helper (``flatrob_jax.distributed.make_mesh``), under its old name here
# for existing callers (benchmarks/bench_curvature.py); new code calls make_mesh.

__all__ = [
    "BlockLanczosResult",
    "DatasetObjective",
    "Estimate",
    "LanczosResult",
    "NormalizedLogits",
    "PacBayesSigma",
    "PowerIterationResult",
    "SharpnessResult",
    "SpectralDensity",
    "TraceResult",
    "adaptive_sharpness_apgd",
    "adaptive_sharpness_ascent",
    "adaptive_sharpness_average",
    "block_lanczos",
    "cross_entropy",
    "from_flax",
    "hutchinson_trace",
    "hutchpp_trace",
    "hvp",
    "hvp_block",
    "keskar_sharpness",
    "lanczos",
    "make_dataset_objective",
    "pac_bayes_sigma",
    "plot_density",
    "power_iteration",
    "slq_density",
]
