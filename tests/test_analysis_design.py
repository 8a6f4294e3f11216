"""The sweep's design read from overrides: replicates, factors, reference, families,
interventions; declared families and references; errors that name the bad value."""

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


def test_replicates_reference_families_and_interventions_are_inferred():
    d = dz.infer_design(_study_overrides())
    labels = [c.label for c in d.conditions]
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
    assert d.conditions[0].runs == (0, 1, 2) and d.replicated == (0,)
    np.testing.assert_array_equal(d.run_condition, [0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    assert d.reference == 0 and "most replicates (3 runs)" in d.reference_why
    assert d.factors == ("augment", "optimizer.sam_rho", "optimizer.weight_decay")
    fams = {f.name: f for f in d.families}
    assert set(fams) == {
        "randaugment",
        "gaussian_noise",
        "optimizer.sam_rho",
        "optimizer.weight_decay",
    }
    ra = fams["randaugment"]
    assert ra.strength_key == "augment.randaugment.magnitude" and ra.strengths == (5.0, 9.0, 15.0)
    assert [labels[i] for i in ra.conditions] == [
        "randaugment, magnitude=5",
        "randaugment, magnitude=9",
        "randaugment, magnitude=15",
    ]
    assert not ra.intervention and fams["optimizer.sam_rho"].intervention and not ra.declared
    assert [labels[i] for i in d.interventions] == [
        "standard, sam_rho=0.05",
        "standard, sam_rho=0.1",
        "standard, weight_decay=0.0005",
    ]
    assert [labels[i] for i in d.augmentations] == labels[1:7]
    # One factor: two randaugment strengths differ in 'augment' only; randaugment vs SAM in two.
    assert d.differing_factors(2, 3) == ("augment",)
    assert d.differing_factors(2, 7) == ("augment", "optimizer.sam_rho")
    assert d.run_label(1) == "standard, seed=1" and d.run_label(3) == "none"


def test_plain_sweep_one_seed_no_families():
    d = dz.infer_design([{"augment.name": a, "seed": 0} for a in ("none", "standard", "cutout")])
    assert [c.label for c in d.conditions] == ["none", "standard", "cutout"]
    assert d.replicated == () and d.families == () and d.interventions == ()
    assert d.reference == 1  # ties broken by augment.name == 'standard'
    assert d.augmentations == (0, 2)


def test_declared_families_and_reference():
    runs = _study_overrides()
    d = dz.infer_design(
        runs, families={"RA": "augment.randaugment.magnitude"}, reference={"augment.name": "none"}
    )
    assert [f.name for f in d.families] == ["RA"] and d.families[0].declared
    assert d.families[0].strengths == (5.0, 9.0, 15.0)
    assert d.reference == 1 and d.reference_why == "given by the sweep"
    # With `none` as the reference, the SAM runs change the augmentation too: not interventions.
    assert d.interventions == ()
    with pytest.raises(
        ValueError, match=r"no run overrides its strength key 'augment.mixup.alpha'"
    ):
        dz.infer_design(runs, families={"mixup": "augment.mixup.alpha"})
    bad = runs + [{"augment.name": "other", "augment.randaugment.magnitude": 3, "seed": 0}]
    with pytest.raises(ValueError, match="differ in other overrides too"):
        dz.infer_design(bad, families={"RA": "augment.randaugment.magnitude"})
    with pytest.raises(
        ValueError, match=r"reference \{'augment.name': 'mixup'\} is not a condition"
    ):
        dz.infer_design(runs, reference={"augment.name": "mixup"})
    with pytest.raises(ValueError, match="no runs"):
        dz.infer_design([])


def test_absent_keys_and_custom_seed_key():
    runs = [
        {"rep": 0},
        {"rep": 1},
        {"optimizer.sam_rho": 0.1, "rep": 0},
        {"optimizer.sam_rho": 0.2, "rep": 0},
    ]
    d = dz.infer_design(runs, seed_key="rep")
    assert [c.label for c in d.conditions] == [dz.ABSENT, "0.1", "0.2"]
    assert d.reference == 0 and d.interventions == (1, 2) and d.augmentations == ()
    assert d.families[0].strength_key == "optimizer.sam_rho" and d.families[0].intervention
    assert dz.factor_of("augment.randaugment.magnitude") == "augment"
    assert dz.factor_of("train.batch_size") == "train.batch_size"


def test_a_declared_family_can_hold_the_reference_at_a_strength():
    runs = _study_overrides()
    d = dz.infer_design(
        runs,
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
        dz.infer_design(runs, families={"noise": ("augment.gaussian_noise.sigma", 0.1)})
    with pytest.raises(ValueError, match="neither a strength key nor a pair"):
        dz.infer_design(runs, families={"noise": ("augment.gaussian_noise.sigma",)})
    ref_sets_it = [{**o, "augment.gaussian_noise.sigma": 0.2} for o in runs[:3]] + runs[3:]
    with pytest.raises(ValueError, match="reference condition sets"):
        dz.infer_design(
            ref_sets_it,
            reference={"augment.name": "standard", "augment.gaussian_noise.sigma": 0.2},
            families={"noise": ("augment.gaussian_noise.sigma", 0.0)},
        )
