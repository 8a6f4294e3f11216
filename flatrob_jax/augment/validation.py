"""Checks on augmentation parameters, with errors that name the bad value and the valid ones,
and the choice of execution mode ("auto" / "vectorized" / "sequential").

Factories call these with the config path of the field (``augment.<section>.<field>``), so a
bad ``--config.augment.augmix.severity=11`` fails at build time with the path the user typed.
A traced (non-concrete) value is left alone: whoever made it checks it.
"""

import numbers

import jax


def is_concrete(value) -> bool:
    """A plain Python number (checkable now), not a traced or device array."""
    return isinstance(value, (numbers.Number, bool))


def field_path(section: str, field: str) -> str:
    """``augment.<section>.<field>``, or ``augment.<field>`` for a top-level field."""
    return f"augment.{section}.{field}" if section else f"augment.{field}"


def check_range(section: str, field: str, value, low, high=None, integer: bool = False) -> None:
    """Raise ValueError unless low <= value (<= high if given), an integer if ``integer``."""
    if not is_concrete(value):
        return
    if integer and int(value) != value:
        raise ValueError(f"{field_path(section, field)} must be an integer; got {value!r}")
    too_low = value < low
    too_high = high is not None and value > high
    if too_low or too_high:
        valid = f"{low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{field_path(section, field)}={value!r} is out of range; valid: {valid}")


def check_choice(section: str, field: str, value, choices) -> None:
    """Raise ValueError unless ``value`` is one of ``choices``."""
    if value not in choices:
        valid = ", ".join(map(str, choices))
        raise ValueError(
            f"{field_path(section, field)}={value!r} is not valid; valid choices: {valid}"
        )


EXECUTIONS = ("auto", "vectorized", "sequential")


def resolve_execution(execution: str) -> str:
    """ "auto" -> "sequential" on CPU, "vectorized" on GPU/TPU (benchmarks/augment.md: on CPU a
    vmapped gather/scatter costs more than looping over images, and a per-image loop lets
    ``lax.switch`` run only the chosen op; on accelerators the batch must stay vectorized)."""
    check_choice("", "execution", execution, EXECUTIONS)
    if execution == "auto":
        return "sequential" if jax.default_backend() == "cpu" else "vectorized"
    return execution


def op_select(execution: str) -> str:
    """How a policy picks its per-image op (``op_table.SELECTS``) under ``execution``:
    "switch" when images run one at a time, "fused" when they are vmapped."""
    return "switch" if resolve_execution(execution) == "sequential" else "fused"


__all__ = [
    "EXECUTIONS",
    "check_choice",
    "check_range",
    "field_path",
    "is_concrete",
    "op_select",
    "resolve_execution",
]
