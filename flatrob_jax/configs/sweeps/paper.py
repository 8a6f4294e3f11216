"""Shared pieces of the paper-scale sweeps: the augmentations compared and the analysis run
on every checkpoint (the sweep files beside it import this module)."""
from flatrob_jax.configuration import parse_arg
from flatrob_jax.study import Sweep, product

# Label-preserving augmentations of the paper, plus the label-mixing ones for contrast.
AUGMENTATIONS = ("none", "standard", "cutout", "gaussian_noise", "autoaugment", "randaugment",
                 "trivialaugment", "augmix", "mixup", "cutmix")

# Flatness on 5000 training examples (eval-mode BatchNorm), robustness on 10000 test images
# (corruptions) and 1000 (AutoAttack, as RobustBench reports).
ANALYSIS = {
    "analysis.measures": ("clean", "curvature", "curvature_augmented", "corruptions", "attacks"),
    "analysis.num_train_examples": 5000,
    "analysis.num_test_examples": 10000,
    "analysis.curvature.lanczos_steps": 100,
    "analysis.curvature.lanczos_tol": 1e-3,
    "analysis.curvature.trace_max_probes": 200,
    "analysis.curvature.trace_rel_tol": 0.02,
    "analysis.curvature.sharpness": True,
    "analysis.attacks.num_examples": 1000,
    "analysis.attacks.autoattack": True,
}


def paper_sweep(base: str, title: str, extra: dict, arg=None) -> Sweep:
    """One run per augmentation of ``base`` (``arg='seeds'``: x3 seeds) with the analysis
    above plus the ``extra`` overrides."""
    arg = parse_arg(arg, seeds=False)
    seeds = (0, 1, 2) if arg.seeds else (0,)
    return Sweep(base=base, overrides={**ANALYSIS, **extra}, title=title,
                 runs=product(**{"augment.name": AUGMENTATIONS, "seed": seeds}))
