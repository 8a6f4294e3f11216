"""Models trained elsewhere: PyTorch ``state_dict``s into this library's Flax models and runs.

    python -m flatrob_jax.import_torch --arch resnet18_cifar --weights model.pt \\
        --dataset cifar10 --workdir runs/imported_r18 [--mean m1,m2,m3 --std s1,s2,s3]

writes a run directory that ``flatrob_jax.load_for_eval``, ``analyze``, sweeps and the report
treat like a trained run. Modules: ``layouts`` (which PyTorch tensor fills which Flax variable,
per architecture), ``convert`` (checked conversion of NumPy tensors), ``loading`` (reading the
file with torch, imported lazily: only the import needs ``pip install 'flatrob_jax[torch]'``),
``workdir`` (the atomic run directory with its provenance).
"""

from flatrob_jax.torch_import.convert import StateDictMismatch, prepare, to_flax
from flatrob_jax.torch_import.layouts import ARCHS, arch_names, get_arch
from flatrob_jax.torch_import.loading import ChecksumMismatch, read_state_dict
from flatrob_jax.torch_import.workdir import dataset_names, import_checkpoint, prepare_import

__all__ = [
    "ARCHS",
    "ChecksumMismatch",
    "StateDictMismatch",
    "arch_names",
    "dataset_names",
    "get_arch",
    "import_checkpoint",
    "prepare",
    "prepare_import",
    "read_state_dict",
    "to_flax",
]
