"""The paper-scale design, shared by the CIFAR-10, CIFAR-100, ResNet and ImageNet sweeps beside it.

What it is for: a test of the paper's claim a referee accepts, with the power to tell. The
pre-registered PRIMARY test is the paper's: across the label-preserving condition means,
Pearson's r between lambda_max (and the trace) on the run's own augmented training data and the
mean corruption error (the paper reports r > 0.9); the report opens with it, everything else
is secondary and Holm-adjusted within its prediction. Its power with the 17 condition means
(``flatrob_jax.analysis.stats.correlation_power(17)``, 20000 simulated studies): when the true
r is 0.9, a one-sided 95% Fisher-z bound excludes r <= 0.7 in 78% of them (± 0.3%); with 8
conditions (the default Fashion-MNIST study) in 45%, with 25 in 91%.

Design (one sweep, one results table, one report):

* augmentation arm, 17 label-preserving conditions trained from scratch to the recipe's end
  point: ``none``, ``standard`` (crop + flip, the reference), and families with 3-4 strengths
  (``FAMILIES``): Gaussian noise sigma 0.05 / 0.1 / 0.2 / 0.3 (the reference is sigma 0),
  RandAugment magnitude 5 / 9 / 15 (2 ops), AugMix severity 1 / 3 / 5 (with its JSD loss, as
  published), Cutout length 8 / 16 / 24, plus AutoAugment (CIFAR-10 policy) and
  TrivialAugment; 3 seeds each, 5 for ``none`` and ``standard`` (the seed-noise floor and the
  replicated ``none`` that P1b's contrasts need);
* matched end point: ``none`` stopped at the reference's final training loss
  (``match.loss_of``, 3 seeds), so flatness can be compared at equal training loss;
* intervention arm (``INTERVENTIONS``; ``:interventions=false`` drops it): the reference
  augmentation with SAM (rho 0.05, 0.1), ASAM (rho 0.5, 1.0), weight decay x 0.5 and x 2, and
  learning rate and batch size x 0.5 and x 2 together, 3 seeds each: these move flatness
  without changing the augmentation;
* ``:seeds=N`` sets the seeds per condition (5 stays 5 for none/standard when N < 5);
  ``:seeds=1`` is a one-seed pilot (no seed noise: the report then says what it cannot test).

Runs with the defaults: 15 x 3 + 2 x 5 = 55 augmentation runs, 3 matched, 8 x 3 = 24
interventions: 82 (the 6 SAM/ASAM runs of each seed cost two passes per step);
``:interventions=false`` 58, ``:seeds=1`` 26.

Cost, estimated (not measured end to end: no sweep of this size has run here). From step times
measured on one H100 (benchmarks/training.md, benchmarks/curvature.md): a ResNet-18 training
step at batch 128 takes 4.7 ms (27071 img/s); WRN-40-2's gradient costs 1.33x ResNet-18's
(0.008 vs 0.006 s per 128 images), so about 6.3 ms a step; an HVP over 128 images costs
0.011 s (ResNet-18) and 0.016 s (WRN-40-2). Per run on CIFAR (50000 images): training
0.07 h (WRN-40-2, 100 epochs) or 0.10 h (ResNet-18, 200 epochs); the Hessian measures above
(at most 100 Lanczos + 200 Hutch++ HVPs over 5000 images, clean and augmented) 0.11 h or
0.07 h. For the 82 runs, with AugMix's JSD (3 passes) and SAM (2 passes) on top: about
8 + 9 = 17 H100-hours for WRN-40-2 and 11 + 6 = 17 for ResNet-18, a lower bound: the input
pipeline, the sharpness measures and AutoAttack are not in it (AutoAttack stops early on
non-robust points; its cost on 1000 images has not been measured on a GPU here). ImageNet:
not estimated (no ResNet-50 step time measured).
"""

from flatrob_jax.analysis.design import FamilySpec
from flatrob_jax.configuration import load_config, parse_arg
from flatrob_jax.study import Sweep, run_name

# The augmentation arm: {family: (strength key, strengths)}; the single-setting policies;
# `none` and the reference. Every condition is label-preserving (mixup and cutmix are not).
FAMILIES = {
    "gaussian_noise": ("augment.gaussian_noise.sigma", (0.05, 0.1, 0.2, 0.3)),
    "randaugment": ("augment.randaugment.magnitude", (5, 9, 15)),
    "augmix": ("augment.augmix.severity", (1, 3, 5)),
    "cutout": ("augment.cutout.length", (8, 16, 24)),
}
SINGLE_POLICIES = ("autoaugment", "trivialaugment")
REPLICATED = ("none", "standard")  # with more seeds: the noise floor and P1b's `none`
REFERENCE_AUGMENTATION = "standard"  # what every intervention run trains with
# The report's design (flatrob_jax.study.Sweep.reference / families): the reference condition,
# and the intervention arm's two dose-response families, SAM's rho (the SAM runs, not ASAM's,
# which also set optimizer.sam_adaptive) and the weight decay.
REFERENCE = {"augment.name": REFERENCE_AUGMENTATION}
INTERVENTION_FAMILIES = {
    "optimizer.sam_rho": FamilySpec("optimizer.sam_rho", others=REFERENCE),
    "optimizer.weight_decay": "optimizer.weight_decay",
}
SAM_RHOS = (0.05, 0.1)  # Foret et al.'s CIFAR range
ASAM_RHOS = (0.5, 1.0)  # Kwon et al.'s CIFAR range (ASAM's radius is relative to |w|)
WEIGHT_DECAY_FACTORS = (0.5, 2.0)  # x the base config's optimizer.weight_decay
LR_BATCH_FACTORS = (0.5, 2.0)  # lr and batch size x f together (f = 1 is the reference run)

ADAPTIVE_LINF_RHOS = (0.001, 0.002, 0.004, 0.008)
ADAPTIVE_L2_RHOS = (0.25, 0.5, 1.0, 2.0)
ADAPTIVE_WORST_GRID = tuple(
    f"{norm}_{rho:g}{suffix}"
    for norm, rhos in (("linf", ADAPTIVE_LINF_RHOS), ("l2", ADAPTIVE_L2_RHOS))
    for suffix in ("", "_normlogits")
    for rho in rhos
)

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
    "analysis.curvature.sharpness": True,  # Keskar (10 L-BFGS-B iterations), average adaptive
    # Andriushchenko et al.'s worst-case adaptive sharpness grids for CNNs (their
    # sh/eval_sharpness_final.sh): APGD, 20 iterations, m = 128 on 1024 training examples,
    # l-inf and l2, each with and without normalized logits.
    "analysis.curvature.adaptive_worst": ADAPTIVE_WORST_GRID,
    "analysis.curvature.adaptive_worst_iters": 20,
    "analysis.curvature.adaptive_worst_batch": 128,
    "analysis.curvature.adaptive_worst_examples": 1024,
    "analysis.attacks.num_examples": 1000,
    "analysis.attacks.autoattack": True,
}


def lr_batch_scaled(learning_rate: float, batch_size: int, factors=LR_BATCH_FACTORS) -> list:
    """One override dict per factor f: learning rate and global batch size both x f (the SGD
    noise scale lr / B stays fixed while the step size, and with it the curvature SGD can
    settle in, about 2 / lr, changes). The epochs stay fixed, so the number of steps is / f.

    Raises ValueError for a factor that is not positive or gives a fractional batch."""
    runs = []
    for f in factors:
        scaled = batch_size * f
        if not f > 0 or scaled != int(scaled) or scaled < 1:
            raise ValueError(
                f"lr x batch factor {f!r} gives batch size {scaled!r} from "
                f"{batch_size}: factors must be > 0 and give a whole batch"
            )
        runs.append({"optimizer.learning_rate": learning_rate * f, "train.batch_size": int(scaled)})
    return runs


def intervention_runs(
    base_config,
    *,
    sam_rhos=SAM_RHOS,
    asam_rhos=ASAM_RHOS,
    weight_decay_factors=WEIGHT_DECAY_FACTORS,
    lr_batch_factors=LR_BATCH_FACTORS,
) -> list:
    """The intervention arm as override dicts (without the seed), each on the reference
    augmentation and changing one factor of ``base_config``'s optimizer or batch."""
    opt = base_config.optimizer
    runs = [{**REFERENCE, "optimizer.sam_rho": rho} for rho in sam_rhos]
    runs += [
        {**REFERENCE, "optimizer.sam_rho": rho, "optimizer.sam_adaptive": True} for rho in asam_rhos
    ]
    runs += [
        {**REFERENCE, "optimizer.weight_decay": opt.weight_decay * f} for f in weight_decay_factors
    ]
    runs += [
        {**REFERENCE, **scaled}
        for scaled in lr_batch_scaled(
            opt.learning_rate, base_config.train.batch_size, lr_batch_factors
        )
    ]
    return runs


def augmentation_runs(seeds, replicated_seeds) -> list:
    """The augmentation arm and the matched end point, as override dicts with their seeds."""
    runs = [{"augment.name": n, "seed": s} for n in REPLICATED for s in replicated_seeds]
    for name, (key, strengths) in FAMILIES.items():
        runs += [{"augment.name": name, key: v, "seed": s} for v in strengths for s in seeds]
    runs += [{"augment.name": n, "seed": s} for n in SINGLE_POLICIES for s in seeds]
    match = {"augment.name": "standard", "seed": replicated_seeds[0]}
    runs += [{"augment.name": "none", "match.loss_of": run_name(match), "seed": s} for s in seeds]
    return runs


def design_families(interventions: bool) -> dict:
    """The report's families: each augmentation family with the reference at strength 0 for
    Gaussian noise (sigma 0 is crop + flip alone), and the intervention arm's."""
    families = {
        name: (key, 0.0) if name == "gaussian_noise" else FamilySpec(key)
        for name, (key, _) in FAMILIES.items()
    }
    return {**families, **(INTERVENTION_FAMILIES if interventions else {})}


def paper_sweep(base: str, title: str, extra: dict, arg=None) -> Sweep:
    """The design above on ``base`` (the experiment file relative to this directory,
    ``../<name>.py``; its config gives the learning rate, batch size and weight decay the
    intervention factors scale), with the analysis above and the ``extra`` overrides.
    ``arg``: ``seeds=N`` (default 3), ``interventions=false``."""
    arg = parse_arg(arg, seeds=3, interventions=True)
    if arg.seeds < 1:
        raise ValueError(f"seeds={arg.seeds}: need at least 1")
    seeds = tuple(range(arg.seeds))
    runs = augmentation_runs(seeds, tuple(range(max(arg.seeds, 5 if arg.seeds > 1 else 1))))
    if arg.interventions:
        name = base.rsplit("/", 1)[-1].removesuffix(".py")
        for overrides in intervention_runs(load_config(name)):
            runs += [{**overrides, "seed": s} for s in seeds]
    return Sweep(
        base=base,
        overrides={**ANALYSIS, **extra},
        title=title,
        runs=runs,
        reference=REFERENCE,
        families=design_families(arg.interventions),
    )
