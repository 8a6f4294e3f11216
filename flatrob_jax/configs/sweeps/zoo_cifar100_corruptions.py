"""RobustBench's CIFAR-100 corruptions zoo, the entries of supported layouts
(``flatrob_jax.torch_import.zoo``; today AugMix's WRN-40-2, Hendrycks2020AugMix_WRN): each run
imports one checkpoint instead of training it; clean and CIFAR-100-C accuracy on the full test
set (the released CIFAR-100-C .npy files, 15 corruptions x 5 severities, as RobustBench
measures it; read from ./CIFAR-100-C: change analysis.corruptions.data_dir below for another
place), flatness on 2000 training images, PGD and AutoAttack at Linf 8/255 on 1000 test images.

    python -m flatrob_jax.sweep --sweep configs/sweeps/zoo_cifar100_corruptions.py \\
        --workdir /mnt/studies/zoo_cifar100_corruptions

Needs torch for the import (``pip install 'flatrob_jax[torch]'``) and the network once to fetch
the checkpoints into the zoo cache ($FLATROB_ZOO_CACHE, default ~/.cache/flatrob_jax/zoo;
offline, the error names the file to place there). ``:ARCH`` keeps the entries of one
architecture (e.g. ``:wrn_40_2``). The report's "Imported models" table puts the measured
clean and corruption accuracy next to RobustBench's. Expected result and runtime: not measured
here (no network, GPU or CIFAR-100-C on this machine).
"""

from flatrob_jax.configs.sweeps.zoo_common import zoo_sweep


def get_sweep(arg=None):
    return zoo_sweep(
        base="../cifar100_wrn40_2.py",
        dataset="cifar100",
        threat_model="corruptions",
        arch=arg,
        title="RobustBench CIFAR-100 corruptions zoo: flatness vs robustness",
        extra={
            "analysis.num_test_examples": None,  # the whole test set, as RobustBench
            "analysis.corruptions.source": "npy",
            "analysis.corruptions.data_dir": "CIFAR-100-C",
            "analysis.attacks.num_examples": 1000,
        },
    )
