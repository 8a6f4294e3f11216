"""CIFAR-100, WRN-40-2, one run per augmentation; CIFAR-100-C from the released .npy files
(set analysis.corruptions.data_dir to the CIFAR-100-C directory).

    python -m flatrob_jax.sweep --sweep configs/sweeps/cifar100_wrn40_2_augmentations.py \
        --workdir /mnt/studies/cifar100_wrn40_2_augmentations

``--print_commands`` prints the per-run training lines instead, to launch on a pod or cluster
into the same workdirs. ``:seeds`` trains every run with seeds 0, 1 and 2; the intervention arm
(SAM, ASAM, weight decay, lr x batch on the reference augmentation; see paper.py) is part
of the sweep, ``:interventions=false`` leaves it out (17 runs per seed with it, 10 without).
Expected result and runtime: not measured here (needs tfds cifar100 and the CIFAR-100-C .npy
files and accelerators).
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
