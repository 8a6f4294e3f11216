"""The sweep's design: conditions, replicates and factors read from the overrides; the
reference, families and interventions the sweep declares (nothing inferred); errors that name
the bad value."""

import numpy as np
import pytest

from flatrob_jax.analysis import design as dz


def _study_overrides():
    runs = [{"augment.name": "standard", "seed": s} for s in (0, 1, 2)]
    runs += [{"augment.name": "none", "seed": 0}]
    runs += [
        {"augment.name": "randaugment", "augment.randaugment.magnitude": m, "seed": 0}
        for m in (15, 5, 9)
    ]
    runs += [
        {"augment.name": "gaussian_noise", "augment.gaussian_noise.sigma": s, "seed": 0}
        for s in (0.05, 0.1)
    ]
    runs += [{"augment.name": "standard", "optimizer.sam_rho": r, "seed": 0} for r in (0.05, 0.1)]
    runs += [{"augment.name": "standard", "optimizer.weight_decay": 5e-4, "seed": 0}]
    return runs


REFERENCE = {"augment.name": "standard"}
FAMILIES = {
    "randaugment": "augment.randaugment.magnitude",
    "gaussian_noise": "augment.gaussian_noise.sigma",
    "sam": "optimizer.sam_rho",
}


def test_runs_group_into_conditions_with_replicates_and_factors():
    c = dz.group_runs(_study_overrides())
    labels = [k.label for k in c.conditions]
    assert labels == [
        "standard",
        "none",
        "randaugment, magnitude=15",
        "randaugment, magnitude=5",
        "randaugment, magnitude=9",
        "gaussian_noise, sigma=0.05",
        "gaussian_noise, sigma=0.1",
        "standard, sam_rho=0.05",
        "standard, sam_rho=0.1",
        "standard, weight_decay=0.0005",
    ]
    assert c.conditions[0].runs == (0, 1, 2) and c.replicated == (0,)
    np.testing.assert_array_equal(c.run_condition, [0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    assert c.factors == ("augment", "optimizer.sam_rho", "optimizer.weight_decay")
    # One factor: two randaugment strengths differ in 'augment' only; randaugment vs SAM in two.
    assert c.differing_factors(2, 3) == ("augment",)
    assert c.differing_factors(2, 7) == ("augment", "optimizer.sam_rho")
    assert c.run_label(1) == "standard, seed=1" and c.run_label(3) == "none"
    with pytest.raises(ValueError, match="no runs"):
        dz.group_runs([])


def test_declared_reference_and_families_give_the_roles():
    d = dz.declare_design(_study_overrides(), reference=REFERENCE, families=FAMILIES)
    labels = [c.label for c in d.conditions]
    assert d.reference == 0 and d.replicated == (0,)
    fams = {f.name: f for f in d.families}
    assert list(fams) == ["randaugment", "gaussian_noise", "sam"]
    ra = fams["randaugment"]
    assert ra.strength_key == "augment.randaugment.magnitude" and ra.strengths == (5.0, 9.0, 15.0)
    assert [labels[i] for i in ra.conditions] == [
        "randaugment, magnitude=5",
        "randaugment, magnitude=9",
        "randaugment, magnitude=15",
    ]
    assert not ra.intervention and fams["sam"].intervention
    assert [labels[i] for i in d.interventions] == [
        "standard, sam_rho=0.05",
        "standard, sam_rho=0.1",
        "standard, weight_decay=0.0005",
    ]
    assert [labels[i] for i in d.augmentations] == labels[1:7]
    # Nothing is inferred: without families there are none, whatever the overrides suggest.
    assert dz.declare_design(_study_overrides(), reference=REFERENCE).families == ()


def test_the_reference_decides_the_roles_and_must_be_a_condition():
    runs = _study_overrides()
    d = dz.declare_design(runs, reference={"augment.name": "none", "seed": 5})  # seed ignored
    assert d.reference == 1
    # With `none` as the reference, the SAM runs change the augmentation too: not interventions.
    assert d.interventions == ()
    plain = dz.declare_design(
        [{"augment.name": a, "seed": 0} for a in ("none", "standard", "cutout")],
        reference=REFERENCE,
    )
    assert plain.replicated == () and plain.families == () and plain.interventions == ()
    assert plain.reference == 1 and plain.augmentations == (0, 2)
    with pytest.raises(
        ValueError, match=r"reference \{'augment.name': 'mixup'\} is not a condition"
    ):
        dz.declare_design(runs, reference={"augment.name": "mixup"})
    with pytest.raises(ValueError, match="a design needs its reference condition"):
        dz.declare_design(runs, reference=None)


def test_declared_family_errors_name_the_bad_value():
    runs = _study_overrides()
    with pytest.raises(
        ValueError, match=r"no run overrides its strength key 'augment.mixup.alpha'"
    ):
        dz.declare_design(runs, reference=REFERENCE, families={"mixup": "augment.mixup.alpha"})
    bad = runs + [{"augment.name": "other", "augment.randaugment.magnitude": 3, "seed": 0}]
    with pytest.raises(ValueError, match="differ in other overrides too"):
        dz.declare_design(
            bad, reference=REFERENCE, families={"RA": "augment.randaugment.magnitude"}
        )


def test_a_family_spec_picks_its_members_by_their_other_overrides():
    """SAM's rho with and without sam_adaptive: two families on one key (paper.py's arm)."""
    runs = [{"augment.name": "standard", "seed": 0}]
    runs += [{"augment.name": "standard", "optimizer.sam_rho": r, "seed": 0} for r in (0.05, 0.1)]
    runs += [
        {"augment.name": "standard", "optimizer.sam_rho": r, "optimizer.sam_adaptive": True}
        for r in (0.5, 1.0)
    ]
    with pytest.raises(ValueError, match="differ in other overrides too"):
        dz.declare_design(runs, reference=REFERENCE, families={"sam": "optimizer.sam_rho"})
    asam_others = {**REFERENCE, "optimizer.sam_adaptive": True}
    d = dz.declare_design(
        runs,
        reference=REFERENCE,
        families={
            "sam": dz.FamilySpec("optimizer.sam_rho", others=REFERENCE),
            "asam": dz.FamilySpec("optimizer.sam_rho", 0.0, others=asam_others),
        },
    )
    sam, asam = d.families
    assert sam.conditions == (1, 2) and sam.strengths == (0.05, 0.1) and sam.intervention
    assert asam.conditions == (0, 3, 4) and asam.strengths == (0.0, 0.5, 1.0)
    assert d.interventions == (1, 2, 3, 4)
    with pytest.raises(ValueError, match="no condition sets 'optimizer.sam_rho' with exactly"):
        dz.declare_design(
            runs,
            reference=REFERENCE,
            families={"x": dz.FamilySpec("optimizer.sam_rho", others={"augment.name": "none"})},
        )


def test_absent_keys_and_custom_seed_key():
    runs = [
        {"rep": 0},
        {"rep": 1},
        {"optimizer.sam_rho": 0.1, "rep": 0},
        {"optimizer.sam_rho": 0.2, "rep": 0},
    ]
    d = dz.declare_design(runs, reference={}, families={"sam": "optimizer.sam_rho"}, seed_key="rep")
    assert [c.label for c in d.conditions] == [dz.ABSENT, "0.1", "0.2"]
    assert d.reference == 0 and d.interventions == (1, 2) and d.augmentations == ()
    assert d.families[0].strength_key == "optimizer.sam_rho" and d.families[0].intervention
    assert d.run_label(1) == f"{dz.ABSENT}, rep=1"
    assert dz.factor_of("augment.randaugment.magnitude") == "augment"
    assert dz.factor_of("train.batch_size") == "train.batch_size"


def test_a_declared_family_can_hold_the_reference_at_a_strength():
    runs = _study_overrides()
    d = dz.declare_design(
        runs,
        reference=REFERENCE,
        families={
            "noise": ("augment.gaussian_noise.sigma", 0.0),
            "RA": "augment.randaugment.magnitude",
        },
    )
    noise, ra = d.families
    assert d.conditions[d.reference].label == "standard"
    # The reference (3 replicates) is sigma 0, below the two noise conditions.
    assert noise.strengths == (0.0, 0.05, 0.1) and noise.conditions[0] == d.reference
    assert ra.strengths == (5.0, 9.0, 15.0) and d.reference not in ra.conditions
    with pytest.raises(ValueError, match="already sets augment.gaussian_noise.sigma=0.1"):
        dz.declare_design(
            runs,
            reference=REFERENCE,
            families={"noise": ("augment.gaussian_noise.sigma", 0.1)},
        )
    with pytest.raises(ValueError, match="neither a strength key, a pair"):
        dz.declare_design(
            runs, reference=REFERENCE, families={"noise": ("augment.gaussian_noise.sigma",)}
        )
    ref_sets_it = [{**o, "augment.gaussian_noise.sigma": 0.2} for o in runs[:3]] + runs[3:]
    with pytest.raises(ValueError, match="reference condition sets"):
        dz.declare_design(
            ref_sets_it,
            reference={"augment.name": "standard", "augment.gaussian_noise.sigma": 0.2},
            families={"noise": ("augment.gaussian_noise.sigma", 0.0)},
        )


SWEEPS = [
    "fashion_mnist_augmentations",
    "fashion_mnist_augmentations:smoke",
    "cifar10_resnet18_augmentations",
    "cifar10_resnet18_augmentations:interventions=false",
    "cifar100_wrn40_2_augmentations",
    "imagenet_resnet50_augmentations",
    "zoo_cifar10_linf",
    "zoo_imagenet_resnet50",
]


@pytest.mark.parametrize("spec", SWEEPS)
def test_every_shipped_sweep_declares_a_design_that_resolves(spec):
    from flatrob_jax.study import load_sweep

    sweep = load_sweep(spec)
    assert sweep.reference is not None, f"{spec}: its report would have no design"
    d = dz.declare_design(
        sweep.runs,
        reference=sweep.reference,
        families=sweep.families,
        intervention_keys=sweep.intervention_keys,
    )
    labels = [c.label for c in d.conditions]
    if spec.startswith("cifar10_resnet18_augmentations") and "false" not in spec:
        # paper.py: four augmentation families (3-4 strengths each), and the intervention
        # arm's SAM rho (without the ASAM runs) and weight decay.
        by_key = {f.strength_key: f for f in d.families}
        assert {k: len(f.conditions) for k, f in by_key.items()} == {
            "augment.gaussian_noise.sigma": 5,  # the reference is sigma 0
            "augment.randaugment.magnitude": 3,
            "augment.augmix.severity": 3,
            "augment.cutout.length": 3,
            "optimizer.sam_rho": 2,
            "optimizer.weight_decay": 2,
        }
        sam = by_key["optimizer.sam_rho"]
        assert [labels[i] for i in sam.conditions] == [
            "standard, sam_rho=0.05",
            "standard, sam_rho=0.1",
        ]
        assert len(d.interventions) == 8 and labels[d.reference] == "standard"


def test_design_notes_state_the_warm_start_and_augmix_without_jsd():
    from flatrob_jax.study import design_notes, load_sweep, plan

    default = design_notes(plan(load_sweep("fashion_mnist_augmentations"), "/tmp/unused"))
    assert len(default) == 2
    assert default[0].startswith("Warm start:") and '"train.num_steps": 1500' in default[0]
    assert "2 AugMix run(s)" in default[1] and "jsd = False" in default[1]
    # The paper-scale design trains from scratch and keeps AugMix's JSD loss: nothing to say.
    assert design_notes(plan(load_sweep("cifar10_resnet18_augmentations"), "/tmp/unused")) == []
