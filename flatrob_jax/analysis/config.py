"""The ``analysis`` section of every run config: which analyses run, on how many examples,
and one settings section per registered analysis (``registry.sections()``)."""

from __future__ import annotations

import ml_collections

from flatrob_jax.analysis import (
    analyses,  # noqa: F401  (registers the built-in analyses)
    registry,
)


def default_config() -> ml_collections.ConfigDict:
    """Every analysis field, with its default (the ``analysis`` section of a run config)."""
    c = ml_collections.ConfigDict()
    c.measures = registry.names(default_only=True)  # the analyses to run, by registered name
    c.seed = 0  # root key of the analysis (each analysis derives its own keys from it)
    # flatness: the first n training examples; None: all
    c.num_train_examples = ml_collections.config_dict.placeholder(int)
    c.num_train_examples = 2000
    # clean / corruption / attack error: the first n test examples; None: all
    c.num_test_examples = ml_collections.config_dict.placeholder(int)
    c.num_test_examples = 1000
    for name, section in registry.sections().items():
        c[name] = section
    return c
