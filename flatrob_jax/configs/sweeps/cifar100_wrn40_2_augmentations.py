"""CIFAR-100, WRN-40-2, the paper-scale design; CIFAR-100-C from the released .npy files
(set analysis.corruptions.data_dir to the CIFAR-100-C directory).

    python -m flatrob_jax.sweep --sweep configs/sweeps/cifar100_wrn40_2_augmentations.py \
        --workdir /mnt/studies/cifar100_wrn40_2_augmentations

``--print_commands`` prints one line per run in dependency order (the same units a fleet
executor runs). The design is paper.py's: 17 label-preserving conditions, 3 seeds (5 for none
and crop + flip), none at the reference's training loss, and the intervention arm; 82 runs, 58
with ``:interventions=false``, 26 with ``:seeds=1``. Cost: about 17 H100-hours (estimated in
paper.py, as for CIFAR-10: 82 runs of 100 epochs). Expected result: not measured here (needs
tfds cifar100 and the CIFAR-100-C .npy files and accelerators).
"""

from flatrob_jax.configs.sweeps.paper import paper_sweep


def get_sweep(arg=None):
    return paper_sweep(
        base="../cifar100_wrn40_2.py",
        title="CIFAR-100, WRN-40-2: flatness vs robustness across augmentations",
        extra={
            "analysis.corruptions.source": "npy",
            "analysis.corruptions.data_dir": "CIFAR-100-C",
        },
        arg=arg,
    )
