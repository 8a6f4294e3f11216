"""CIFAR-10, ResNet-18 (200 epochs), one run per augmentation; CIFAR-10-C from tfds.

    python -m flatrob_jax.sweep --sweep configs/sweeps/cifar10_resnet18_augmentations.py \
        --workdir /mnt/studies/cifar10_resnet18_augmentations

``--print_commands`` prints the per-run training lines instead, to launch on a pod or cluster
into the same workdirs. ``:seeds`` trains every run with seeds 0, 1 and 2; the intervention arm
(SAM, ASAM, weight decay, lr x batch on the reference augmentation; see paper.py) is part
of the sweep, ``:interventions=false`` leaves it out (17 runs per seed with it, 10 without).
Expected result and runtime: not measured here (needs tfds cifar10 and cifar10_corrupted and
accelerators).
"""

from flatrob_jax.configs.sweeps.paper import paper_sweep


def get_sweep(arg=None):
    return paper_sweep(
        base="../cifar10_resnet18.py",
        title="CIFAR-10, ResNet-18: flatness vs robustness across augmentations",
        extra={"analysis.corruptions.source": "cifar10_corrupted"},
        arg=arg,
    )
