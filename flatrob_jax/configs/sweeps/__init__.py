"""Sweep configs, shipped with the package: ``get_sweep(arg)`` per file."""
