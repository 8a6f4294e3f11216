"""Plots and the Markdown report: files exist, PNGs are real images of the right size and
content, plotted points equal the results table, tiny/degenerate sweeps do not crash."""

import csv
import json
import math
import os
import re

import numpy as np
import pytest
import scipy.stats
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from PIL import Image

from flatrob_jax.analysis import plots, report, results

AUGS = ("none", "standard", "cutout", "autoaugment", "augmix", "mixup")


def _sweep_rows(augs=AUGS, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for aug in augs:
        lam = float(rng.uniform(5.0, 50.0))
        res = {
            "clean": {"error": 0.08 + 0.01 * rng.random()},
            "curvature": {
                "clean": {
                    "lambda_max": {"value": lam, "stderr": 0.05 * lam, "num_matvecs": 40},
                    "trace": {"value": 20 * lam + rng.normal(), "stderr": lam},
                }
            },
            "corruptions": {
                "mean_corruption_error": 0.2 + lam / 200 + 0.02 * rng.normal(),
                "per_severity": [0.1, 0.2],
            },
            "attacks": {
                "Linf_8over255": {
                    "pgd": {"error": 0.5 + lam / 100 + 0.05 * rng.normal(), "accuracy": 0.3}
                }
            },
        }
        rows += results.rows_from_results(
            f"augment={aug}", res, overrides={"augment.name": aug, "seed": 0}
        )
    return rows


FLAT = ["curvature/clean/lambda_max", "curvature/clean/trace"]
ROB = ["corruptions/mean_corruption_error", "attacks/Linf_8over255/pgd/error"]


def test_default_metric_roles_are_the_registered_headlines():
    table = results.pivot(_sweep_rows())
    flat, rob, clean = report.classify_metrics(table.metrics)
    # In table order; num_matvecs, per_severity and accuracy are not declared headlines.
    assert sorted(flat) == sorted(FLAT)
    assert sorted(rob) == sorted(ROB)
    assert clean == "clean/error"
    flat, rob, _ = report.classify_metrics(
        table.metrics,
        flatness_metrics=["curvature/clean/trace"],
        robust_metrics=["corruptions/per_severity/1"],
    )
    assert flat == ["curvature/clean/trace"] and rob == ["corruptions/per_severity/1"]
    with pytest.raises(ValueError, match=r"robust_metrics names unknown metrics \['attacks/aa'\]"):
        report.classify_metrics(table.metrics, robust_metrics=["attacks/aa"])
    assert report.run_labels(table) == list(AUGS)


def _png_size(path):
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.format, im.size, np.asarray(im.convert("RGB"))


def test_scatter_panel_draws_the_table_points_and_the_least_squares_line(tmp_path):
    x = np.array([1.0, 2.0, np.nan, 4.0, 5.5])
    y = np.array([0.2, 0.25, 0.3, 0.41, 0.5])
    labels = ["a", "b", "c", "d", "e"]
    fig = Figure(figsize=(5, 4))
    ax = fig.add_subplot(1, 1, 1)
    data = plots.scatter_panel(
        ax, x, y, labels, xerr=[0.1, 0.1, 0.1, np.nan, 0.2], x_metric="fx", y_metric="ry"
    )
    keep = np.isfinite(x)
    # Read the points back from the Axes' own artists.
    (points,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    np.testing.assert_array_equal(points.get_offsets(), np.c_[x[keep], y[keep]])
    np.testing.assert_array_equal(data.x, x[keep])
    assert data.labels == ("a", "b", "d", "e") and data.dropped == ("c",)
    assert [t.get_text() for t in ax.texts] == ["a", "b", "d", "e"]
    slope, intercept = np.polyfit(x[keep], y[keep], 1)
    (line,) = [ln for ln in ax.get_lines() if ln.get_gid() == plots.FIT_LINE_GID]
    np.testing.assert_allclose(line.get_ydata(), slope * line.get_xdata() + intercept, rtol=1e-12)
    np.testing.assert_allclose([data.slope, data.intercept], [slope, intercept], rtol=1e-12)
    r = scipy.stats.pearsonr(x[keep], y[keep]).statistic
    rho = scipy.stats.spearmanr(x[keep], y[keep]).statistic
    assert ax.get_title() == f"r = {r:+.2f}, rho = {rho:+.2f} (n = 4)"
    assert f"r = {r:+.2f}" in ax.get_legend().get_texts()[0].get_text()

    # The rendered PNG shows the markers where the data say they are.
    path = tmp_path / "scatter.png"
    plots.save_figure(fig, path, dpi=100)
    fmt, size, pixels = _png_size(path)
    assert fmt == "PNG" and size == (500, 400)
    marker_rgb = np.array([31, 119, 180])  # matplotlib's tab:blue
    for px, py in ax.transData.transform(np.c_[x[keep], y[keep]]):
        row, col = int(round(size[1] - py)), int(round(px))
        patch = pixels[row - 1 : row + 2, col - 1 : col + 2].reshape(-1, 3).astype(int)
        assert np.abs(patch - marker_rgb).sum(-1).min() < 30, (px, py)


def test_scatter_with_one_distinct_x_draws_no_line():
    fig = Figure()
    ax = fig.add_subplot(1, 1, 1)
    data = plots.scatter_panel(ax, [2.0, 2.0, 2.0], [0.1, 0.2, 0.3], ["a", "b", "c"])
    assert math.isnan(data.slope) and math.isnan(data.pearson)
    assert not [ln for ln in ax.get_lines() if ln.get_gid() == plots.FIT_LINE_GID]
    assert "n/a" in ax.get_title()


def test_write_report_files_figures_and_tables(tmp_path):
    rows = _sweep_rows()
    path = report.write_report(rows, tmp_path / "rep", num_resamples=200, title="Tiny study")
    out = tmp_path / "rep"
    assert path == str(out / "report.md")
    text = (out / "report.md").read_text()
    assert text.startswith("# Tiny study")
    # Every embedded figure exists and is a real PNG.
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) == 1 + 3 + len(FLAT) * len(ROB)
    for link in links:
        fmt, size, pixels = _png_size(out / link)
        assert fmt == "PNG" and pixels.std() > 5  # not blank
    assert _png_size(out / "figures/scatter_grid.png")[1] == (2 * 320, 2 * 280)
    for link in links:
        if link.startswith("figures/scatter/"):
            assert _png_size(out / link)[1] == (500, 400)
    # Per-run table: one line per run with its augmentation and clean error.
    table = results.pivot(rows)
    for i, aug in enumerate(AUGS):
        clean = table.values[i, table.metrics.index("clean/error")]
        assert f"| augment={aug} | {aug} | {clean:.4g} |" in text
    assert "The sweep has 6 runs" in text and "200 resamples" in text and "95%" in text

    # correlations.csv / .json: every flatness x robust x method, equal to scipy.
    with open(out / "correlations.csv", newline="") as f:
        corr = list(csv.DictReader(f))
    corr_json = json.loads((out / "correlations.json").read_text())
    assert len(corr) == len(corr_json) == len(FLAT) * len(ROB) * 3
    scipy_fn = {
        "pearson": scipy.stats.pearsonr,
        "spearman": scipy.stats.spearmanr,
        "kendall": scipy.stats.kendalltau,
    }
    for row, jrow in zip(corr, corr_json):
        ref = scipy_fn[row["method"]](table.column(row["flatness"]), table.column(row["robust"]))
        assert float(row["statistic"]) == pytest.approx(ref.statistic, abs=1e-12)
        assert float(row["pvalue"]) == pytest.approx(ref.pvalue, rel=1e-9)
        assert float(row["ci_low"]) <= float(row["statistic"]) <= float(row["ci_high"])
        assert jrow["statistic"] == pytest.approx(float(row["statistic"]), abs=0)
        assert row["n"] == "6" and row["num_resamples"] == "200"


def test_plotted_points_equal_the_table(tmp_path):
    rows = _sweep_rows()
    rep = report.build_report(rows, tmp_path, num_resamples=100)
    table = results.pivot(rows)
    assert set(rep.scatter) == set(rep.grid) == {(f, r) for f in FLAT for r in ROB}
    for (f, r), data in (*rep.scatter.items(), *rep.grid.items()):
        np.testing.assert_array_equal(data.x, table.column(f))
        np.testing.assert_array_equal(data.y, table.column(r))
        assert data.labels == AUGS
    for method, matrix in rep.heatmaps.items():
        expected = [
            [
                next(
                    c["statistic"]
                    for c in rep.correlations
                    if (c["flatness"], c["robust"], c["method"]) == (f, r, method)
                )
                for r in ROB
            ]
            for f in FLAT
        ]
        np.testing.assert_allclose(matrix, expected, rtol=0, atol=0)


def test_tiny_and_degenerate_sweeps_report_nan_with_notes(tmp_path):
    two = report.build_report(_sweep_rows(AUGS[:2]), tmp_path / "two", num_resamples=50)
    assert all(math.isnan(c["statistic"]) and "n=2 < 3" in c["note"] for c in two.correlations)
    text = open(two.path).read()
    assert "n=2 < 3 runs" in text and "n/a" in text

    rows = _sweep_rows(AUGS[:4])
    for row in rows:  # a flatness measure that does not vary, and one run missing an attack
        if row["metric"] == "curvature/clean/trace":
            row["value"] = 7.0
        if row["metric"] == "attacks/Linf_8over255/pgd/error" and row["run"] == "augment=cutout":
            row["value"] = math.nan
    rep = report.build_report(rows, tmp_path / "deg", num_resamples=50)
    by_key = {(c["flatness"], c["robust"], c["method"]): c for c in rep.correlations}
    const = by_key[("curvature/clean/trace", "corruptions/mean_corruption_error", "pearson")]
    assert math.isnan(const["statistic"]) and "x is constant" in const["note"]
    partial = by_key[("curvature/clean/lambda_max", "attacks/Linf_8over255/pgd/error", "spearman")]
    assert partial["n"] == 3 and "1 run(s) with a missing" in partial["note"]
    assert rep.scatter[
        ("curvature/clean/lambda_max", "attacks/Linf_8over255/pgd/error")
    ].dropped == ("cutout",)
    assert os.path.exists(rep.correlations_json)
    json.loads(open(rep.correlations_json).read())  # NaN written as null: strict JSON


def test_report_needs_flatness_and_robust_metrics(tmp_path):
    rows = [r for r in _sweep_rows() if not r["metric"].startswith(("corruptions/", "attacks/"))]
    with pytest.raises(ValueError, match="need at least one flatness measure and one robust error"):
        report.write_report(rows, tmp_path)
    with pytest.raises(ValueError, match="empty"):
        report.write_report([], tmp_path)


# --------------------------------------------------------------------------- design statistics


def _study_rows(flatten=True, seed=0):
    """A sweep with the issue's design: reference (3 seeds), none (2 seeds), two augmentation
    families, and SAM / weight-decay interventions. ``flatten``: augmentation strength lowers
    lambda_max (P1 holds) or raises it (P1 fails); robust error rises with lambda_max (P2)."""
    rng = np.random.default_rng(seed)
    runs = [{"augment.name": "standard", "seed": s} for s in (0, 1, 2)]
    runs += [{"augment.name": "none", "seed": s} for s in (0, 1)]
    runs += [
        {"augment.name": "randaugment", "augment.randaugment.magnitude": m, "seed": 0}
        for m in (5, 9, 15)
    ]
    runs += [
        {"augment.name": "gaussian_noise", "augment.gaussian_noise.sigma": s, "seed": 0}
        for s in (0.05, 0.1)
    ]
    runs += [
        {"augment.name": "standard", "optimizer.sam_rho": r, "seed": 0} for r in (0.05, 0.1, 0.2)
    ]
    runs += [
        {"augment.name": "standard", "optimizer.weight_decay": w, "seed": 0} for w in (1e-4, 5e-4)
    ]
    rows = []
    for o in runs:
        strength = {"standard": 1.0, "none": 0.0}.get(o["augment.name"], 0.0)
        strength += o.get("augment.randaugment.magnitude", 0) / 5 + 30 * o.get(
            "augment.gaussian_noise.sigma", 0
        )
        lam = (
            40
            + (-6 if flatten else 6) * strength
            - 60 * o.get("optimizer.sam_rho", 0)
            + rng.normal(0, 0.3)
        )
        clean = 0.1 + 0.005 * strength + rng.normal(0, 0.003)
        res = {
            "clean": {
                "error": clean,
                "calibration": {"confidence": 0.9 - 0.002 * lam + rng.normal(0, 0.01)},
            },
            "curvature": {
                "clean": {"lambda_max": {"value": lam, "stderr": 0.5}, "loss": 0.01 * strength}
            },
            "attacks": {
                "Linf_8over255": {
                    "pgd": {"error": 0.3 + 0.01 * lam + 0.5 * clean + rng.normal(0, 0.003)}
                }
            },
        }
        name = ",".join(f"{k.split('.')[-1]}={v}" for k, v in o.items())
        rows += results.rows_from_results(name, res, overrides=o)
    return rows


LAM, PGD = "curvature/clean/lambda_max", "attacks/Linf_8over255/pgd/error"
# The design of _study_rows, as its sweep declares it.
STUDY_DESIGN = {
    "reference": {"augment.name": "standard"},
    "families": {
        "randaugment": "augment.randaugment.magnitude",
        "gaussian_noise": "augment.gaussian_noise.sigma",
        "sam": "optimizer.sam_rho",
        "weight_decay": "optimizer.weight_decay",
    },
}


def test_plain_sweep_says_which_design_sections_do_not_apply(tmp_path):
    rep = report.build_report(
        _sweep_rows(), tmp_path, num_resamples=100, reference={"augment.name": "standard"}
    )
    text = open(rep.path).read()
    assert (
        text.index("## Primary test")
        < text.index("## Secondary predictions")
        < text.index("## Runs")
    )
    assert "Not applicable: no replicated condition" in text
    assert "Not applicable: the sweep declares no family" in text
    assert "Not applicable: no intervention run" in text
    assert (
        "P1a (curvature/clean/lambda_max): INCONCLUSIVE.** not applicable: no augmentation family"
        in text
    )
    assert "not applicable: no condition with augment.name = 'none'" not in text  # AUGS has 'none'
    assert "interventions" not in rep.figures
    payload = json.loads(open(rep.findings_json).read())
    assert {v["prediction"] for v in payload["verdicts"]} == {"P1a", "P1b", "P2"}


def test_a_sweep_without_a_declared_design_gets_the_pooled_report_and_the_reason(tmp_path):
    rows = _study_rows()
    full = report.build_report(rows, tmp_path / "full", num_resamples=50, **STUDY_DESIGN)
    # A stale study_stats.json from an earlier report with a design is removed.
    pooled = report.build_report(rows, tmp_path / "full", num_resamples=50)
    assert pooled.findings is None and pooled.findings_json == ""
    assert not os.path.exists(full.findings_json)
    text = open(pooled.path).read()
    assert "declares no design" in text and "`Sweep.reference`" in text
    assert "`Sweep.families`" in text
    for section in ("## Primary test", "## Design", "## Seed noise", "Study statistics"):
        assert section not in text
    appendix = "## Appendix: correlations pooled over runs"
    for section in ("## Runs", "## Training end point", appendix, "## Methods"):
        assert section in text
    # The pooled part is the same with or without the design; the points are the runs; it
    # has no p-values.
    assert pooled.correlations == full.correlations
    assert text.split(appendix)[1] == open(full.path).read().split(appendix)[1]
    assert "| p |" not in text.split(appendix)[1]
    assert len(pooled.scatter[(LAM, PGD)].x) == len(results.pivot(rows).runs)
    assert "one point per run labelled by its augmentation" in text
    assert "interventions" not in pooled.figures
    with pytest.raises(ValueError, match="declared without a reference condition"):
        report.build_report(rows, tmp_path / "x", families=STUDY_DESIGN["families"])


def test_replicated_sweep_plots_condition_means_with_seed_sd(tmp_path):
    rows = _study_rows()
    rep = report.build_report(rows, tmp_path, num_resamples=200, **STUDY_DESIGN)
    table = results.pivot(rows)
    d = rep.findings.design
    assert d.replicated == (0, 1) and len(d.conditions) == 12
    data = rep.scatter[(LAM, PGD)]
    lam = table.column(LAM)
    expected = [lam[list(c.runs)].mean() for c in d.conditions]
    np.testing.assert_allclose(data.x, expected, rtol=1e-12)
    assert data.labels[:3] == ("standard", "none", "randaugment, magnitude=5")
    # Error bars: the condition's seed SD, the pooled floor for single runs.
    fig_sd = rep.findings.means[LAM][1]
    assert fig_sd[0] == pytest.approx(np.std(lam[:3], ddof=1))
    floor = rep.findings.floors[LAM].sd
    pooled = math.sqrt((2 * np.var(lam[:3], ddof=1) + np.var(lam[3:5], ddof=1)) / 3)
    assert floor == pytest.approx(pooled, rel=1e-12)
    text = open(rep.path).read()
    assert "one point per condition (its mean over seeds)" in text
    assert "| standard | 3 | reference | - |" in text


def test_predictions_are_judged_and_refuted_ones_said_plainly(tmp_path):
    good = report.build_report(
        _study_rows(flatten=True), tmp_path / "good", num_resamples=300, **STUDY_DESIGN
    )
    verdicts = {(v.prediction, v.robust): v for v in good.findings.verdicts}
    assert verdicts[("P1a", None)].statistic == -1.0
    assert verdicts[("P1b", None)].verdict == "supported"
    assert verdicts[("P2", PGD)].verdict == "supported"
    bad = report.build_report(
        _study_rows(flatten=False), tmp_path / "bad", num_resamples=300, **STUDY_DESIGN
    )
    verdicts = {(v.prediction, v.robust): v for v in bad.findings.verdicts}
    assert verdicts[("P1b", None)].verdict == "refuted"
    text = open(bad.path).read()
    assert "**P1b (curvature/clean/lambda_max): REFUTED.**" in text
    row = next(line for line in text.splitlines() if line.startswith(f"| {LAM} | "))
    p1a, p1b, p2 = row.strip("| ").split(" | ")[1:4]
    assert p1b.startswith("refuted (-") and p2.endswith(
        f" ({verdicts[('P2', PGD)].statistic:+.2g})"
    )
    assert "augmentation gave sharper minima than no augmentation" in text
    assert "In short" not in text  # no tally of measures that contradict each other
    # P2's number is the partial Spearman over condition means, recomputed here by hand.
    table = results.pivot(_study_rows(flatten=False))
    d = bad.findings.design
    m = {
        k: np.array([table.column(k)[list(c.runs)].mean() for c in d.conditions])
        for k in (LAM, PGD, "clean/error")
    }
    rx, ry, rz = (scipy.stats.rankdata(m[k]) for k in (LAM, PGD, "clean/error"))
    Z = np.column_stack([np.ones_like(rz), rz])
    ex = rx - Z @ np.linalg.lstsq(Z, rx, rcond=None)[0]
    ey = ry - Z @ np.linalg.lstsq(Z, ry, rcond=None)[0]
    assert verdicts[("P2", PGD)].statistic == pytest.approx(np.corrcoef(ex, ey)[0, 1], abs=1e-12)


def test_intervention_figure_and_table(tmp_path):
    rows = _study_rows()
    rep = report.build_report(rows, tmp_path, num_resamples=100, **STUDY_DESIGN)
    table = results.pivot(rows)
    fit = rep.findings.interventions[(LAM, PGD)]
    runs = list(table.runs)
    fit_runs = [runs[i] for i in rep.findings.fit_runs]
    assert fit_runs == [r for r in runs if r.startswith("name=standard,")]  # reference + SAM + wd
    eval_runs = [runs[i] for i in rep.findings.eval_runs]
    assert eval_runs == [r for r in runs if not r.startswith("name=standard,")]
    assert fit.n == 8 and fit.dof == 5 and len(fit.z) == 7
    (panel,) = rep.interventions
    np.testing.assert_allclose(panel.fit_x, table.column(LAM)[list(rep.findings.fit_runs)])
    clean = table.column("clean/error")
    centre = clean[list(rep.findings.fit_runs)].mean()
    np.testing.assert_allclose(
        panel.eval_y,
        (table.column(PGD) - fit.coef[2] * (clean - centre))[list(rep.findings.eval_runs)],
        rtol=1e-12,
    )
    fmt, size, pixels = _png_size(tmp_path / rep.figures["interventions"])
    assert fmt == "PNG" and pixels.std() > 5
    text = open(rep.path).read()
    assert (
        "## Interventions on flatness" in text
        and "![intervention line](figures/interventions.png)" in text
    )
    assert "| none, seed=0 |" in text


def test_covariates_and_the_training_end_point_are_reported(tmp_path):
    rows = _study_rows()
    rep = report.build_report(rows, tmp_path, num_resamples=200, **STUDY_DESIGN)
    conf = "clean/calibration/confidence"
    assert rep.findings.covariates == [conf]
    table = results.pivot(rows)
    d = rep.findings.design
    means = {
        k: np.array([table.column(k)[list(c.runs)].mean() for c in d.conditions])
        for k in (conf, LAM, PGD)
    }
    for m in (LAM, PGD):
        got = rep.findings.covariate_corr[(conf, m)].spearman.statistic
        assert got == pytest.approx(scipy.stats.spearmanr(means[conf], means[m])[0], abs=1e-12)
    text = open(rep.path).read()
    assert "## Covariates: confidence and calibration" in text
    assert "## Training end point and covariates" in text
    assert "| run | label | clean/calibration/confidence | curvature/clean/loss |" in text
    payload = json.loads(open(rep.findings_json).read())
    assert {c["metric"] for c in payload["covariates"]} == {LAM, PGD}
    with pytest.raises(ValueError, match=r"covariate_metrics names unknown metrics \['nope'\]"):
        report.build_report(
            rows, tmp_path / "x", covariate_metrics=["nope"], num_resamples=10, **STUDY_DESIGN
        )


MCE = "corruptions/mean_corruption_error"


def _with_corruption_error(rows, seed=1):
    """``_study_rows`` plus a mean corruption error that rises with lambda_max."""
    rng = np.random.default_rng(seed)
    lam = {r["run"]: r for r in rows if r["metric"] == LAM}
    extra = [
        {**r, "metric": MCE, "value": 0.2 + 0.004 * r["value"] + rng.normal(0, 0.002)}
        for r in lam.values()
    ]
    return rows + extra


def test_the_primary_test_opens_the_report_and_matches_scipy_on_condition_means(tmp_path):
    rows = _with_corruption_error(_study_rows())
    rep = report.build_report(rows, tmp_path, num_resamples=100, **STUDY_DESIGN)
    found = rep.findings
    (primary,) = found.primary  # lambda_max only (no trace in these rows)
    d = found.design
    table = results.pivot(rows)
    points = [d.reference, *d.augmentations]
    means = {
        k: np.array([table.column(k)[list(d.conditions[i].runs)].mean() for i in points])
        for k in (LAM, MCE)
    }
    assert primary.conditions == tuple(d.conditions[i].label for i in points)
    want = scipy.stats.pearsonr(means[LAM], means[MCE]).statistic
    assert primary.pearson.statistic == pytest.approx(want, abs=1e-12)
    assert primary.pearson.exact == (len(points) <= 9)
    ref = scipy.stats.permutation_test(
        (means[LAM],),
        lambda a: scipy.stats.pearsonr(a, means[MCE]).statistic,
        permutation_type="pairings",
        n_resamples=np.inf,
    )
    assert primary.pearson.pvalue == pytest.approx(ref.pvalue, rel=1e-9)
    assert primary.adjusted_pvalue == primary.pearson.pvalue  # one primary measure: Holm = raw
    assert primary.verdict == "supported" and primary.power.n == len(points)
    kept = [k for k, i in enumerate(points) if i != found.none_condition]
    assert primary.without_none.statistic == pytest.approx(
        scipy.stats.pearsonr(means[LAM][kept], means[MCE][kept]).statistic, abs=1e-12
    )
    from flatrob_jax.analysis import stats

    assert primary.upper == stats.fisher_bound(want, len(points), 0.95, "upper")
    text = open(rep.path).read()
    assert text.startswith("# ") and text.split("\n## ")[1].startswith("Primary test")
    assert "upper bound of r (Fisher z)" in text
    assert "(paper: > 0.9)" in text and "Power of this design" in text
    # Secondary: P1b contrasts against the replicated none with Holm over every contrast.
    contrasts = found.p1b[LAM]
    adjusted = found.p1b_adjusted[LAM]
    np.testing.assert_allclose(adjusted, stats_holm([c.pvalue for c in contrasts]))
    assert "## P1b: each augmented condition against none" in text
    # Partial correlations side by side: clean error, train loss, confidence.
    assert list(found.partial_covariates) == ["clean error", "train loss", "confidence"]
    assert "## Partial correlations given each covariate" in text
    assert "## Reliability" in text and "## P1a: each step of strength" in text
    payload = json.loads(open(rep.findings_json).read())
    assert payload["primary"][0]["pearson"]["statistic"] == pytest.approx(want, abs=1e-12)
    # Holm within P2: the adjusted p-values are Holm's of the raw ones, in order.
    p2 = [v for v in found.verdicts if v.prediction == "P2"]
    np.testing.assert_allclose([v.adjusted_pvalue for v in p2], stats_holm([v.pvalue for v in p2]))
    # P1a's steps: the change of condition means over floor sqrt(1/n_a + 1/n_b), by hand.
    mean = {c.label: table.column(LAM)[list(c.runs)].mean() for c in d.conditions}
    floor = found.floors[LAM].sd
    step = next(x for x in found.p1a_margins[LAM] if x.family == "randaugment" and x.low == 5)
    diff = mean["randaugment, magnitude=9"] - mean["randaugment, magnitude=5"]
    assert step.difference == pytest.approx(diff) and step.z == pytest.approx(
        diff / (floor * math.sqrt(2))
    )


def stats_holm(p):
    from flatrob_jax.analysis import stats

    return stats.holm(p)


def test_design_notes_are_stated_in_the_design_section(tmp_path):
    notes = ["Every run fine-tunes from a shared warm start.", "AugMix runs without its JSD loss."]
    rep = report.build_report(
        _study_rows(), tmp_path, num_resamples=50, notes=notes, **STUDY_DESIGN
    )
    design = open(rep.path).read().split("## Design")[1].split("\n## ")[0]
    assert all(n in design for n in notes)


def test_the_zoo_section_reads_the_linf_threat_model_at_the_published_radius():
    from flatrob_jax.analysis import zoo_report

    res = {
        "attacks": {
            "Linf_8over255": {"eps": 8 / 255, "pgd": {"error": 0.6}},
            "Linf_2over255": {"eps": 2 / 255, "pgd": {"error": 0.3}, "autoattack": {"error": 0.4}},
        }
    }
    table = results.pivot(results.rows_from_results("r", res, overrides={}))
    assert zoo_report._linf_error(table, 8 / 255) == (
        "attacks/Linf_8over255/pgd/error",
        "PGD",
        pytest.approx(8 / 255),
    )
    # AutoAttack where measured; a radius not measured falls back to the first threat model.
    metric, attack, eps = zoo_report._linf_error(table, 2 / 255)
    assert (metric, attack) == ("attacks/Linf_2over255/autoattack/error", "AutoAttack")
    assert zoo_report._linf_error(table, 4 / 255)[0] in {
        "attacks/Linf_8over255/pgd/error",
        "attacks/Linf_2over255/autoattack/error",
    }
    empty = results.pivot(results.rows_from_results("r", {"clean": {"error": 0.1}}, overrides={}))
    assert zoo_report._linf_error(empty, 8 / 255) == (None, None, None)
