"""CIFAR-10, WRN-40-2 (AugMix's recipe, 100 epochs), the paper-scale design; CIFAR-10-C
from tfds (cifar10_corrupted) and AutoAttack at 8/255 and 0.5.

    python -m flatrob_jax.sweep --sweep configs/sweeps/cifar10_wrn40_2_augmentations.py \
        --workdir /mnt/studies/cifar10_wrn40_2_augmentations

``--print_commands`` prints one line per run in dependency order (the same units a fleet
executor runs). The design is paper.py's: 17 label-preserving conditions, 3 seeds (5 for none
and crop + flip), none at the reference's training loss, and the intervention arm; 82 runs, 58
with ``:interventions=false``, 26 with ``:seeds=1``. Cost: about 17 H100-hours (estimated in
paper.py: 82 runs of 100 epochs). Expected result: not measured here (needs tfds cifar10 and
cifar10_corrupted and accelerators).
"""

from flatrob_jax.configs.sweeps.paper import paper_sweep


def get_sweep(arg=None):
    return paper_sweep(
        base="../cifar10_wrn40_2.py",
        title="CIFAR-10, WRN-40-2: flatness vs robustness across augmentations",
        extra={"analysis.corruptions.source": "cifar10_corrupted"},
        arg=arg,
    )
