"""flatrob_jax: flat minima, augmentations and robustness, in JAX/Flax.

Subpackages (each one concern): data, models, augment, training, curvature, attacks,
corruptions, analysis. Entry points: flatrob_jax.train, flatrob_jax.analyze, flatrob_jax.sweep.
"""

__version__ = "0.1.0"
