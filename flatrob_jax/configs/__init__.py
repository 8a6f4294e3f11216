"""Experiment configs, shipped with the package: ``get_config(arg)`` per file, each starting
from ``common.base_config()`` and setting only what makes the experiment different.

Load one by name from any directory (``configuration.load_config("fashion_mnist_cnn:smoke")``)
or by path from the repository root (``--config configs/fashion_mnist_cnn.py:smoke``; the
top-level ``configs`` is a symlink to this directory).
"""
