"""flatrob_jax: flat minima, augmentations and robustness, in JAX/Flax.

Subpackages (each one concern): data, models, augment, training, curvature, attacks,
corruptions, analysis; ``study`` runs sweeps as a library. Entry points (thin absl mains):
``python -m flatrob_jax.train``, ``flatrob_jax.analyze``, ``flatrob_jax.sweep``.

``flatrob_jax.load_for_eval(workdir)`` loads any run (trained or imported) for evaluation.
"""

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy, so that `import flatrob_jax` (e.g. for a config file) does not import JAX.
    if name in ("load_for_eval", "EvalModel"):
        from flatrob_jax import runs

        return getattr(runs, name)
    raise AttributeError(f"module 'flatrob_jax' has no attribute {name!r}")


__all__ = ["EvalModel", "load_for_eval"]
