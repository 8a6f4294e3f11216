"""Atomic file writes, kept importable here for existing importers; they live in
``flatrob_jax.fileio`` (the one file layer, local paths and gs:// alike)."""

from flatrob_jax.fileio import atomic_write_bytes, atomic_write_text

__all__ = ["atomic_write_bytes", "atomic_write_text"]
