"""CIFAR-100 with WRN-40-2: the CIFAR-10 WRN-40-2 recipe (AugMix's) on CIFAR-100."""
import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "cifar10_wrn40_2", os.path.join(os.path.dirname(os.path.abspath(__file__)), "cifar10_wrn40_2.py"))
_cifar10 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_cifar10)


def get_config(arg=None):
    c = _cifar10.get_config(arg)
    c.dataset.name = "cifar100"
    c.dataset.mean = (0.5071, 0.4865, 0.4409)
    c.dataset.std = (0.2673, 0.2564, 0.2762)
    return c
