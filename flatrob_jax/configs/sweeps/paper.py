"""Shared pieces of the paper-scale sweeps (imported by the sweep files beside it)."""

# Label-preserving augmentations of the paper, plus the label-mixing ones for contrast.
AUGMENTATIONS = ("none", "standard", "cutout", "gaussian_noise", "autoaugment", "randaugment",
                 "trivialaugment", "augmix", "mixup", "cutmix")

# Flatness on 5000 training examples (eval-mode BatchNorm), robustness on 10000 test images
# (corruptions) and 1000 (AutoAttack, as RobustBench reports).
ANALYSIS = {
    "analysis.measures": "clean,curvature,curvature_augmented,corruptions,attacks",
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


def paper_sweep(base: str, title: str, extra: dict, arg=None):
    """One run per augmentation (``arg='seeds'``: x3 seeds) of ``base`` with the analysis
    above plus ``extra`` overrides."""
    from flatrob_jax.sweep import Sweep, product

    if arg not in (None, "", "seeds"):
        raise ValueError(f"unknown sweep argument {arg!r}; valid: 'seeds' or none")
    seeds = (0, 1, 2) if arg == "seeds" else (0,)
    return Sweep(base=base, overrides={**ANALYSIS, **extra}, title=title,
                 runs=product(**{"augment.name": list(AUGMENTATIONS), "seed": list(seeds)}))
