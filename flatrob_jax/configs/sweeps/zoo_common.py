"""What the zoo sweeps share: one imported run per zoo entry (``import.zoo``, see
``flatrob_jax.study``) and the analyses of the report's measured-vs-published table."""

from flatrob_jax.study import Sweep
from flatrob_jax.torch_import import arch_names, zoo


def zoo_sweep(*, base, dataset, threat_model, arch, title, extra) -> Sweep:
    """A sweep importing every zoo entry of ``dataset``, published ``threat_model`` (None: any)
    and ``arch`` (None: any supported)."""
    if arch is not None and arch not in arch_names():
        raise ValueError(f"unknown architecture {arch!r}; valid: {', '.join(arch_names())}")
    names = zoo.names(dataset=dataset, threat_model=threat_model, arch=arch)
    if not names:
        raise ValueError(f"no zoo entry of {dataset}, {threat_model}, {arch}")
    return Sweep(
        base=base,
        runs=[{"import.zoo": name} for name in names],
        overrides={
            "analysis.measures": ("clean", "curvature", "corruptions", "attacks"),
            "analysis.attacks.norms": ("Linf",),
            "analysis.attacks.linf_eps": 8 / 255,
            "analysis.attacks.autoattack": True,
            **extra,
        },
        title=title,
        # The entries are compared side by side (P2 across the imported models, the
        # measured-vs-published table); none is special, and no family or intervention rests
        # on the reference: the first entry is the one the report's design table names.
        reference={"import.zoo": names[0]},
    )
