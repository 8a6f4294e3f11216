"""CIFAR-100, WRN-40-2, one run per augmentation; CIFAR-100-C from the released .npy files
(set analysis.corruptions.data_dir to the CIFAR-100-C directory).

    python -m flatrob_jax.sweep --sweep configs/sweeps/cifar100_wrn40_2_augmentations.py \
        --workdir /mnt/studies/cifar100_wrn40_2_augmentations

``--print_commands`` prints the per-run training lines instead, to launch on a pod or cluster
into the same workdirs. ``:seeds`` trains every augmentation with seeds 0, 1 and 2. Expected
result and runtime: not measured here (needs tfds cifar100 and the CIFAR-100-C .npy files and
accelerators).
"""
from flatrob_jax.configs.sweeps.paper import paper_sweep


def get_sweep(arg=None):
    return paper_sweep(
        base="../cifar100_wrn40_2.py",
        title="CIFAR-100, WRN-40-2: flatness vs robustness across augmentations",
        extra={"analysis.corruptions.source": "npy",
               "analysis.corruptions.data_dir": "CIFAR-100-C"},
        arg=arg)
