"""Shared pieces of the paper-scale sweeps: the augmentations compared, the interventions on
flatness that leave the augmentation alone, and the analysis run on every checkpoint (the sweep
files beside it import this module).

Two arms in one sweep, so one results table and one report hold both:

* augmentation arm: one run per augmentation (``AUGMENTATIONS``);
* intervention arm (``INTERVENTIONS``, on by default; ``:interventions=false`` drops it): the
  reference augmentation (``standard``, crop + flip) trained with SAM (rho 0.05, 0.1), ASAM
  (rho 0.5), weight decay x 0.5 and x 2, and learning rate and batch size scaled together by
  0.5 and 2 (``lr_batch_scaled``). These move flatness (and robustness) without changing the
  augmentation: the report fits robust error against flatness and clean error on them and
  asks whether the augmentation runs lie on that line. Factor 1 of every axis is the
  augmentation arm's ``standard`` run, shared by both arms.

Run count per seed: 10 augmentations + 7 interventions = 17 (the 3 SAM/ASAM runs cost two
forward/backward passes per step: about 20 plain-run equivalents); ``:seeds`` (0, 1, 2)
triples it to 51. The arm is on by default because without it the sweep cannot separate
"the augmentation helps through flatness" from "flatness moves along with it" (issue 13);
``:interventions=false`` is the 10-run (30 with seeds) augmentation-only sweep of before.
"""

from flatrob_jax.analysis.design import FamilySpec
from flatrob_jax.configuration import load_config, parse_arg
from flatrob_jax.study import Sweep, product

# Label-preserving augmentations of the paper, plus the label-mixing ones for contrast.
AUGMENTATIONS = (
    "none",
    "standard",
    "cutout",
    "gaussian_noise",
    "autoaugment",
    "randaugment",
    "trivialaugment",
    "augmix",
    "mixup",
    "cutmix",
)

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
ASAM_RHOS = (0.5,)  # Kwon et al.'s CIFAR value (ASAM's radius is relative to |w|)
WEIGHT_DECAY_FACTORS = (0.5, 2.0)  # x the base config's optimizer.weight_decay
LR_BATCH_FACTORS = (0.5, 2.0)  # lr and batch size x f together (f = 1 is the reference run)

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


def paper_sweep(base: str, title: str, extra: dict, arg=None) -> Sweep:
    """One run per augmentation of ``base`` plus the intervention arm (``arg``: ``seeds`` for
    seeds 0, 1, 2; ``interventions=false`` to leave the arm out), with the analysis above and
    the ``extra`` overrides. ``base`` is the experiment file relative to this directory
    (``../<name>.py``); its config gives the learning rate, batch size and weight decay the
    intervention factors scale."""
    arg = parse_arg(arg, seeds=False, interventions=True)
    seeds = (0, 1, 2) if arg.seeds else (0,)
    runs = product(**{"augment.name": AUGMENTATIONS, "seed": seeds})
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
        families=INTERVENTION_FAMILIES if arg.interventions else None,
    )
