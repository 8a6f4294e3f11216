"""Experiment configs, shipped with the package: ``get_config(arg)`` per file.

Load one by name from anywhere (``flatrob_jax.configuration.load_config("fashion_mnist_cnn:smoke")``)
or by path from the repository root (``--config configs/fashion_mnist_cnn.py:smoke``; the
top-level ``configs`` is a symlink to this directory).
"""
