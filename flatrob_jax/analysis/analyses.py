"""The built-in analyses, registered in ``registry``: clean, curvature, curvature_augmented,
corruptions, attacks.

Each is one function ``run(inputs, *, log, **settings) -> dict`` and one ``register`` call
declaring its data, its config section and its headline metrics. Keys (kept from the first
version of the analysis, so results do not move): the root key ``k`` of the analysis gives
curvature ``fold_in(k, 1)`` (on clean and on augmented data alike), the augmented copy of the
training images ``fold_in(k, 2)``, corruptions ``fold_in(k, 3)``, attacks ``fold_in(k, 4)``.
"""

from __future__ import annotations

import os

import jax
import ml_collections
import numpy as np

from flatrob_jax.analysis.registry import Analysis, register
from flatrob_jax.curvature import measures as curvature_measures

# --------------------------------------------------------------------------- settings


def clean_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "batch_size": 500,  # fixed global batch (rounded up to the device count)
            "calibration_bins": 15,  # equal-width confidence bins of the ECE (Guo et al.)
        }
    )


def curvature_config() -> ml_collections.ConfigDict:
    """Settings of both curvature analyses (clean and augmented training data): the objective's
    and every curvature measure's (``curvature.measures``), each with its one default. A
    direct caller of ``curvature.evaluate`` starts from this config too."""
    c = ml_collections.ConfigDict()
    c.batch_size = 128  # examples per device per microbatch (memory only; no effect on values)
    c.num_devices = ml_collections.config_dict.placeholder(int)  # None: all devices
    c.batchnorm = "eval"  # 'eval' (running statistics) or 'batch'
    # Hutchinson/Hutch++ probes and SLQ runs applied this many at a time (objective.hvp_block:
    # one pass over the data, the primal once per block). 4: 1.22x per HVP on ResNet-18 on the
    # 2-core CPU (docs/benchmarks.md). Memory grows with it: 2 x block x params floats plus the
    # tangent activations (+1.2 GiB at 4 on ResNet-18, 8 images); SLQ with density_runs > 1
    # also holds block x (density_steps + 1) basis vectors
    c.probe_block_size = 4
    c.lanczos_steps = 100  # lambda_max by Lanczos: max Hessian-vector products
    c.lanczos_tol = 1e-3  # stop when |Hv - theta v| <= tol * |theta|
    c.top_k = 1  # converge the top-k eigenvalues
    c.smallest = False  # also converge the smallest eigenvalue
    c.trace = True  # estimate tr(H)
    c.trace_method = "hutchinson"  # 'hutchinson' or 'hutch++'
    c.trace_max_probes = 200  # Hutchinson: max probes; Hutch++: the matvec budget
    c.trace_min_probes = 10  # Hutchinson: probes before the stopping rule is checked
    # Hutchinson: stop when the CI half-width <= rel_tol * |trace|; None: use every probe
    c.trace_rel_tol = ml_collections.config_dict.placeholder(float)
    c.trace_rel_tol = 0.05
    c.confidence = 0.95  # level of the trace's confidence interval
    c.density = False  # stochastic Lanczos quadrature eigenvalue density (and its PNG)
    c.density_steps = 80  # Lanczos steps per SLQ run
    c.density_runs = 1  # SLQ runs (probe vectors)
    c.density_png = ""  # path of the density plot; '' = beside analysis.json
    # Keskar and the average adaptive sharpness (adaptive_average/gauss_<rho>), whole objective
    c.sharpness = False
    c.keskar_epsilon = 1e-3  # Keskar: box radius relative to |w| + 1
    c.keskar_iters = 10  # Keskar: L-BFGS-B iterations (Keskar et al. 2017 use 10)
    c.adaptive_average_rho = 0.1  # adaptive average: Gaussian sigma of |w|-scaled noise
    c.adaptive_samples = 10  # adaptive average: noise samples
    # Worst-case adaptive m-sharpness by APGD (Andriushchenko et al. 2023), one result
    # adaptive_worst/<setting> per setting '<l2|linf>_<rho>[_normlogits]' (normlogits: logits
    # centred and scaled to unit norm); () = off. Their grids: configs/sweeps/paper.py.
    c.adaptive_worst = ()
    c.adaptive_worst_iters = 20  # APGD iterations per batch (theirs: 20)
    c.adaptive_worst_batch = 128  # m: the max is taken per batch of m examples (theirs: 128)
    # examples used (the first ones, whole batches only; theirs: 1024); None: all
    c.adaptive_worst_examples = ml_collections.config_dict.placeholder(int)
    c.adaptive_worst_examples = 1024
    c.adaptive_worst_random_start = False  # start at a random feasible point (theirs: at 0)
    c.adaptive_worst_step_mult = 1.0  # APGD's first step is 2 * rho * this (theirs: 1)
    # l2 steps: 'scaled' (in delta / |w|, converges to the maximum) or 'weights' (their code's
    # weight-space step and ellipsoid projection, which stops below it; curvature.sharpness)
    c.adaptive_worst_l2_geometry = "scaled"
    # The fast worst-case adaptive ascent (adaptive_ascent/l2_<rho>; not a published solver:
    # a few projected l2 steps from 0 on the whole objective; adaptive_worst is the published)
    c.adaptive_ascent = False
    c.adaptive_ascent_rho = 0.05  # fast ascent: l2 radius of |w|-scaled perturbations
    c.adaptive_ascent_steps = 10  # fast ascent: projected ascent steps
    # curvature_augmented: the loss averaged over this many augmentation draws per image
    c.augment_draws = 1
    c.pac_bayes = False  # PAC-Bayes sigma by bisection (many loss evaluations)
    c.pac_bayes_metric = "error"  # 'error' (Jiang et al.) or 'loss'
    c.pac_bayes_target = 0.1  # the rise of the metric that defines sigma
    c.pac_bayes_samples = 5  # noise samples per bisection step
    return c


def corruptions_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # 'on_the_fly', 'cifar10_corrupted', 'imagenet2012_corrupted' (tfds) or 'npy' (-C dirs)
    c.source = "on_the_fly"
    c.data_dir = ""  # 'npy': directory of <corruption>.npy + labels.npy; tfds: '' = default
    # names and/or groups: 'benchmark' (15), 'extra' (4), 'all' (19)
    c.corruptions = ("benchmark",)
    c.severities = (1, 2, 3, 4, 5)
    c.resolution = "auto"  # on the fly: 'cifar', 'imagenet' or 'auto' (from the image size)
    c.num_examples = ml_collections.config_dict.placeholder(int)  # per cell; None: all
    c.batch_size = 250  # fixed global batch
    c.num_devices = ml_collections.config_dict.placeholder(int)  # None: all devices
    # mCE normalised by AlexNet's errors: None = auto (ImageNet-sized / ImageNet-C)
    c.normalize_by_alexnet = ml_collections.config_dict.placeholder(bool)
    c.heatmap_dir = ""  # where corruption_heatmap.png goes ('' = beside analysis.json)
    # on the fly: corrupted images rounded to 'float32', 'float16' or 'uint8' (round(255 x),
    # like the released -C sets; 4x less memory for the sweep's shared corrupted sets)
    c.corrupted_dtype = "float32"
    return c


def attacks_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.num_examples = ml_collections.config_dict.placeholder(int)
    c.num_examples = 1000  # first examples of the test subset; None: all
    c.batch_size = 500  # fixed global batch (rounded up to the device count)
    c.num_devices = ml_collections.config_dict.placeholder(int)  # None: all devices
    c.norms = ("Linf", "L2")  # threat models, reported as 'Linf_8over255', 'L2_0.5' (norm_radius)
    c.linf_eps = 8 / 255
    c.l2_eps = 0.5
    c.extra_linf_eps = ()  # further Linf radii (e.g. (2 / 255,)), reported as 'Linf_2over255'
    c.pgd_steps = 20
    c.pgd_rel_step_size = 0.25  # PGD step = pgd_rel_step_size * eps (2/255 at 8/255)
    c.pgd_restarts = 1
    c.pgd_loss = "ce"  # 'ce' or 'margin'
    c.autoattack = True  # also the AutoAttack cascade
    c.autoattack_version = "standard"
    return c


# --------------------------------------------------------------------------- analyses


def clean(inputs, *, log=print, batch_size: int, calibration_bins: int) -> dict:
    """Top-1 error on the test subset (sharded, fixed padded batches), with the mean
    confidence, expected calibration error and NLL of the same predictions (covariates)."""
    from flatrob_jax import execution
    from flatrob_jax.analysis.calibration import calibration

    images, labels = inputs.test
    logits = execution.predict(inputs.model.apply_fn, images, batch_size=batch_size)
    calib = calibration(logits, labels, num_bins=calibration_bins)
    error = 1.0 - calib.pop("accuracy")
    log(
        f"clean error {error:.4f} on {images.shape[0]} test images; mean confidence "
        f"{calib['confidence']:.4f}, ECE {calib['ece']:.4f}, NLL {calib['nll']:.4f}"
    )
    return {"error": error, "num_examples": int(images.shape[0]), "calibration": calib}


def _curvature(inputs, data, which: str, log, settings) -> dict:
    from flatrob_jax.curvature import evaluate as curvature_eval

    settings = dict(settings)
    if settings["density"] and not settings["density_png"]:
        settings["density_png"] = os.path.join(inputs.out_dir, f"hessian_density_{which}.png")
    log(f"curvature on {data[0].shape[0]} {which} training images")
    return curvature_eval.evaluate(
        inputs.model, data, settings, key=jax.random.fold_in(inputs.key, 1), log=log
    )


def curvature_clean(inputs, *, log=print, **settings) -> dict:
    """Hessian lambda_max, trace, density and sharpness on clean training examples."""
    return _curvature(inputs, inputs.train, "clean", log, settings)


def augmented_copy(config, images: np.ndarray, labels: np.ndarray, key) -> tuple:
    """The run's own training augmentation applied once to ``images`` (per-example keys).

    Multi-view policies (AugMix with JSD) contribute their first augmented view; label-mixing
    policies keep the label of the dominant component (argmax of the mixed label)."""
    from flatrob_jax.augment import build_train_augmentation
    from flatrob_jax.data import get_info
    from flatrob_jax.execution import example_keys

    hook = build_train_augmentation(config.augment)
    num_classes = get_info(config.dataset.name).num_classes

    @jax.jit
    def apply(key, x, y):
        keys = example_keys(key, x.shape[0])
        out, soft = hook.apply(keys, x, jax.nn.one_hot(y, num_classes))
        if hook.num_views > 1:
            out = out[1]
        return out, jax.numpy.argmax(soft, -1)

    out_images, out_labels = [], []
    for start in range(0, images.shape[0], 500):
        x, y = apply(
            jax.random.fold_in(key, start), images[start : start + 500], labels[start : start + 500]
        )
        out_images.append(np.asarray(x))
        out_labels.append(np.asarray(y))
    return np.concatenate(out_images), np.concatenate(out_labels)


def augmented_draws(config, images: np.ndarray, labels: np.ndarray, key, draws: int) -> tuple:
    """``draws`` augmented copies of the examples, concatenated (draw-major): draw 0 is
    :func:`augmented_copy` with ``key`` (what one draw has always been), draw j >= 1 with
    ``fold_in(key, j)``. The mean loss over them is the augmented loss averaged over
    ``draws`` augmentations of every image, so its curvature is that of the average."""
    if not isinstance(draws, int) or draws < 1:
        raise ValueError(f"curvature.augment_draws={draws!r}: must be an integer >= 1")
    copies = [
        augmented_copy(config, images, labels, key if j == 0 else jax.random.fold_in(key, j))
        for j in range(draws)
    ]
    return tuple(np.concatenate(parts) for parts in zip(*copies))


def curvature_augmented(inputs, *, log=print, **settings) -> dict:
    """The same measures on the training examples augmented by the run's own policy (the
    loss averaged over ``augment_draws`` draws per image)."""
    config = inputs.model.config
    draws = settings["augment_draws"]
    data = augmented_draws(config, *inputs.train, jax.random.fold_in(inputs.key, 2), draws)
    if draws > 1:
        log(f"curvature_augmented: {draws} augmentation draws per image")
    return _curvature(inputs, data, "augmented", log, settings)


def corruptions(inputs, *, log=print, **settings) -> dict:
    """Error per corruption x severity, mean CE, mCE (and a heat map)."""
    from flatrob_jax.corruptions import evaluate as corruptions_eval

    key = jax.random.fold_in(inputs.key, 3)
    corrupted = None
    if inputs.cache is not None and settings["source"] == "on_the_fly":
        cache_key = repr(
            (
                inputs.model.config.dataset.name,
                inputs.test[0].shape,
                float(np.sum(inputs.test[0], dtype=np.float64)),
                sorted(settings.items()),
                np.asarray(jax.random.key_data(key)).tolist(),
            )
        )
        if cache_key not in inputs.cache:
            log(f"corrupting {inputs.test[0].shape[0]} test images once for the sweep")
            corrupt_settings = {
                k: settings[k]
                for k in (
                    "corruptions",
                    "severities",
                    "resolution",
                    "num_examples",
                    "batch_size",
                    "corrupted_dtype",
                )
            }
            inputs.cache[cache_key] = corruptions_eval.corrupted_sets(
                inputs.test[0], key, **corrupt_settings
            )
        corrupted = inputs.cache[cache_key]
    if not settings["heatmap_dir"]:
        settings = dict(settings, heatmap_dir=inputs.out_dir)
    return corruptions_eval.evaluate(
        inputs.model.apply_fn, inputs.test, key=key, log=log, corrupted=corrupted, **settings
    )


def attacks(inputs, *, log=print, **settings) -> dict:
    """PGD (and AutoAttack) robust error for each configured threat model."""
    from flatrob_jax.attacks import evaluate as attacks_eval

    return attacks_eval.evaluate(
        inputs.model.apply_fn,
        inputs.test,
        key=jax.random.fold_in(inputs.key, 4),
        log=log,
        **settings,
    )


# The headline flatness measures: those the curvature measures declare (lambda_max, trace,
# Keskar, the adaptive ascent, average and APGD worst case by setting, PAC-Bayes sigma).
_FLATNESS = curvature_measures.headline_metrics()

register(
    Analysis(
        "clean",
        clean,
        data="test",
        section="clean",
        default_config=clean_config,
        clean=("error",),
        covariates=("calibration/confidence", "calibration/ece"),
    )
)
# Where training ended, at the weights the flatness is measured at: the loss and error, and
# the diagnostics that say how far that point is from a minimum and how far to trust
# lambda_max (the gradient norm, the smallest Ritz value, lambda_max's Ritz residual).
_ENDPOINT = ("loss", "error_rate", "grad_norm", "lambda_min", "lambda_max_residual")
register(
    Analysis(
        "curvature",
        curvature_clean,
        data="train",
        section="curvature",
        default_config=curvature_config,
        path="curvature/clean",
        flatness=_FLATNESS,
        endpoint=_ENDPOINT,
    )
)
register(
    Analysis(
        "curvature_augmented",
        curvature_augmented,
        data="train",
        section="curvature",
        default_config=curvature_config,
        path="curvature/augmented",
        flatness=_FLATNESS,
        endpoint=_ENDPOINT,
    )
)
register(
    Analysis(
        "corruptions",
        corruptions,
        data="test",
        section="corruptions",
        default_config=corruptions_config,
        robustness=("mean_corruption_error", "mce", "relative_mce"),
    )
)
register(
    Analysis(
        "attacks",
        attacks,
        data="test",
        section="attacks",
        default_config=attacks_config,
        robustness=("*/pgd/error", "*/autoattack/error"),
    )
)


# --------------------------------------------------------------------------- reparam audit


# The measures' settings the audit has its own section for; their defaults are the curvature
# analysis's (written once, in curvature_config).
_AUDIT_CURVATURE_SETTINGS = (
    "batch_size",
    "num_devices",
    "lanczos_steps",
    "lanczos_tol",
    "keskar_epsilon",
    "keskar_iters",
    "adaptive_ascent_rho",
    "adaptive_ascent_steps",
    "adaptive_average_rho",
    "adaptive_samples",
    "adaptive_worst",
    "adaptive_worst_iters",
    "adaptive_worst_batch",
)


def reparam_audit_config() -> ml_collections.ConfigDict:
    """Settings of the reparameterization audit (``curvature.reparam``): which flatness
    measures move under function-preserving rescalings of the checkpoint. The measures'
    settings it exposes (batch size, devices, Lanczos, Keskar, adaptive sharpness) default to
    the values in ``curvature_config`` (meanings there); those it does not expose are
    ``curvature_config``'s defaults, fixed."""
    c = ml_collections.ConfigDict()
    c.alpha = 4.0  # the rescaling factor (a power of 2 keeps the logits bit-identical)
    c.transforms = ("bn_scale", "relu_rescale")  # rescalings of curvature.reparam.TRANSFORMS
    c.move_tol = 0.05  # a measure moved when |value / original - 1| > move_tol
    c.probe_examples = 32  # training images that find and check the rescaled layers
    c.trace_probes = 30  # Hutchinson probes, the same ones for every variant
    curvature = curvature_config()
    for name in _AUDIT_CURVATURE_SETTINGS:  # a copy (same type), not a link to curvature's
        c[name] = ml_collections.FieldReference(
            curvature[name], field_type=curvature.get_ref(name).get_type()
        )
    return c


def reparam_audit(
    inputs,
    *,
    log=print,
    alpha: float,
    transforms,
    move_tol: float,
    probe_examples: int,
    trace_probes: int,
    **settings,
) -> dict:
    """lambda_max, trace, Keskar and adaptive sharpness of the checkpoint and of its
    function-preserving rescalings (BatchNorm-scale, ReLU layer rescaling) on the clean
    training subset, with the largest logit difference and per-measure ratios. Key: the
    measures use ``fold_in(k, 5)``, the same for every variant. Its metrics are no headline
    flatness measures: they audit the measures, they do not rank runs."""
    from flatrob_jax.curvature import reparam

    if trace_probes < 1:
        raise ValueError(f"reparam_audit.trace_probes={trace_probes!r}: must be >= 1")
    return reparam.audit(
        inputs.model,
        inputs.train,
        curvature_config(),
        key=jax.random.fold_in(inputs.key, 5),
        alpha=alpha,
        transforms=tuple(transforms),
        move_tol=move_tol,
        probe_examples=probe_examples,
        log=log,
        trace_max_probes=trace_probes,
        trace_min_probes=trace_probes,
        trace_rel_tol=None,
        **settings,
    )


register(
    Analysis(
        "reparam_audit",
        reparam_audit,
        data="train",
        section="reparam_audit",
        default_config=reparam_audit_config,
        default=False,
    )
)
