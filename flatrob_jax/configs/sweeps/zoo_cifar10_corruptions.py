"""RobustBench's CIFAR-10 corruptions zoo, the entries of supported layouts
(``flatrob_jax.torch_import.zoo``): each run imports one checkpoint instead of training it;
clean and CIFAR-10-C accuracy on the full test set (the released CIFAR-10-C through tfds
``cifar10_corrupted``, 15 corruptions x 5 severities, as RobustBench measures it), flatness on
2000 training images, PGD and AutoAttack at Linf 8/255 on 1000 test images.

    python -m flatrob_jax.sweep --sweep configs/sweeps/zoo_cifar10_corruptions.py \\
        --workdir /mnt/studies/zoo_cifar10_corruptions

Needs torch for the import (``pip install 'flatrob_jax[torch]'``) and the network once to fetch
the checkpoints into the zoo cache ($FLATROB_ZOO_CACHE, default ~/.cache/flatrob_jax/zoo;
offline, the error names the file to place there). ``:ARCH`` keeps the entries of one
architecture (e.g. ``:preact_resnet18``). The report's "Imported models" table puts the
measured clean and corruption accuracy next to RobustBench's. Expected result and runtime: not
measured here (no network, GPU or CIFAR-10-C on this machine).
"""

from flatrob_jax.configs.sweeps.zoo_common import zoo_sweep


def get_sweep(arg=None):
    return zoo_sweep(
        base="../cifar10_resnet18.py",
        dataset="cifar10",
        threat_model="corruptions",
        arch=arg,
        title="RobustBench CIFAR-10 corruptions zoo: flatness vs robustness",
        extra={
            "analysis.num_test_examples": None,  # the whole test set, as RobustBench
            "analysis.corruptions.source": "cifar10_corrupted",
            "analysis.attacks.num_examples": 1000,
        },
    )
