"""RobustBench's CIFAR-10 Linf zoo, the entries whose architecture the import supports
(ResNet-18, WRN-28-10, WRN-34-10, WRN-70-16 in RobustBench's layouts; the DMWideResNet ones are
not, ``flatrob_jax.torch_import.zoo`` lists them): each run imports one checkpoint instead of
training it; AutoAttack (standard) at Linf 8/255 and clean accuracy on the full test set, as
RobustBench's leaderboard, CIFAR-10-C computed on the fly on 1000 test images, flatness on 2000
training images.

    python -m flatrob_jax.sweep --sweep configs/sweeps/zoo_cifar10_linf.py \\
        --workdir /mnt/studies/zoo_cifar10_linf

``:ARCH`` keeps the entries of one architecture (``:resnet18_cifar`` for the three ResNet-18s,
the cheapest). Needs torch for the import and the network once to fetch the checkpoints into
the zoo cache ($FLATROB_ZOO_CACHE, default ~/.cache/flatrob_jax/zoo; offline, the error names
the file to place there). A few entries were published at eps 0.031 (the report shows the
published eps beside ours). Expected result and runtime: not measured here (no network or GPU
on this machine).
"""

from flatrob_jax.configs.sweeps.zoo_common import zoo_sweep


def get_sweep(arg=None):
    return zoo_sweep(
        base="../cifar10_resnet18.py",
        dataset="cifar10",
        threat_model="Linf",
        arch=arg,
        title="RobustBench CIFAR-10 Linf zoo: flatness vs robustness",
        extra={
            "analysis.num_test_examples": None,
            "analysis.attacks.num_examples": None,  # the whole test set, as the leaderboard
            "analysis.corruptions.num_examples": 1000,
        },
    )
