"""The tidy results table: flattening, CSV/JSON round trips, atomic writes, pivot."""

import json
import math
import os

import jax.numpy as jnp
import numpy as np
import pytest

from flatrob_jax.analysis import results


def _evaluate_like_output():
    return {
        "clean": {"error": 0.0812},
        "curvature": {
            "lambda_max": {"value": 41.25, "stderr": 0.75, "num_matvecs": 40},
            "trace": {"value": np.float32(812.5), "stderr": None},
            "method": "lanczos",  # metadata: skipped
        },
        "corruptions": {
            "mean_error": 0.312,
            "mean_error_stderr": 0.004,
            "per_severity": [0.1, 0.2, 0.3],
        },
        "attacks": {"pgd_linf_8/255": {"error": jnp.asarray(0.75), "converged": True}},
        "missing": None,
    }


def test_flattening_rule_gives_stable_readable_names():
    flat = results.flatten_results(_evaluate_like_output())
    assert list(flat) == [
        "clean/error",
        "curvature/lambda_max",
        "curvature/lambda_max/num_matvecs",
        "curvature/trace",
        "corruptions/mean_error",
        "corruptions/per_severity/0",
        "corruptions/per_severity/1",
        "corruptions/per_severity/2",
        "attacks/pgd_linf_8/255/error",
        "missing",
    ]
    assert flat["curvature/lambda_max"] == (41.25, 0.75)
    assert flat["curvature/trace"][0] == 812.5 and math.isnan(flat["curvature/trace"][1])
    assert flat["corruptions/mean_error"] == (0.312, 0.004)
    assert flat["attacks/pgd_linf_8/255/error"][0] == 0.75
    assert math.isnan(flat["missing"][0])
    assert all(isinstance(v, float) and isinstance(s, float) for v, s in flat.values())


def test_flattening_handles_arrays_and_rejects_ambiguity():
    flat = results.flatten_results({"eig": jnp.array([3.0, 2.0]), "n": np.int64(7)})
    assert flat == {
        "eig/0": (3.0, flat["eig/0"][1]),
        "eig/1": (2.0, flat["eig/1"][1]),
        "n": (7.0, flat["n"][1]),
    }
    with pytest.raises(ValueError, match="'a/b' appears twice"):
        results.flatten_results({"a/b": 1.0, "a": {"b": 2.0}})
    with pytest.raises(TypeError, match="'value' must be a number"):
        results.flatten_results({"x": {"value": "high"}})
    with pytest.raises(TypeError, match="mapping"):
        results.flatten_results([1.0, 2.0])


def test_rows_from_results_carry_run_overrides_and_extra_columns():
    rows = results.rows_from_results(
        "augment=cutout",
        {"clean": {"error": 0.1}},
        overrides={"augment.name": "cutout"},
        extra={"seed": 3, "split": "test"},
    )
    assert rows == [
        {
            "run": "augment=cutout",
            "overrides": {"augment.name": "cutout"},
            "metric": "clean/error",
            "value": 0.1,
            "stderr": rows[0]["stderr"],
            "seed": 3,
            "split": "test",
        }
    ]
    assert math.isnan(rows[0]["stderr"])
    with pytest.raises(ValueError, match="clash"):
        results.rows_from_results("r", {"a": 1.0}, extra={"metric": "x"})
    with pytest.raises(ValueError, match="non-empty string"):
        results.rows_from_results("", {"a": 1.0})


def _sample_rows():
    rows = []
    for run, aug, seed in (
        ("augment=none", "none", 0),
        ("augment=mixup,alpha=0.2", 'mixup "a=0.2", b', 1),
        ("aug=éß|x", "ünïcode", 2),
    ):
        res = _evaluate_like_output()
        res["clean"]["error"] = 0.1 + 0.2 + seed  # not exactly representable in short decimal
        res["curvature"]["lambda_max"]["value"] = 1e-300 * (seed + 1)
        rows += results.rows_from_results(
            run,
            res,
            overrides={"augment.name": aug, "lr": 0.1, "seed": seed},
            extra={"seed": seed, "split": "test"},
        )
    return rows


def _assert_rows_equal(a, b):
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert set(ra) == set(rb)
        for key in ra:
            va, vb = ra[key], rb[key]
            if isinstance(va, float) and math.isnan(va):
                assert isinstance(vb, float) and math.isnan(vb), (key, va, vb)
            else:
                assert va == vb, (key, va, vb)


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_round_trip_is_exact(tmp_path, fmt):
    rows = _sample_rows()
    path = tmp_path / f"results.{fmt}"
    (results.write_csv if fmt == "csv" else results.write_json)(rows, path)
    back = results.read_rows(path)
    _assert_rows_equal(rows, back)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_json_is_strict_and_csv_overrides_are_json():
    rows = _sample_rows()
    text = results.rows_to_json(rows)
    assert "NaN" not in text
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    csv_text = results.rows_to_csv(rows)
    assert csv_text.splitlines()[0] == "run,overrides,metric,value,stderr,seed,split"
    # Overrides may be passed as the JSON string found in a CSV cell.
    again = results.validate_rows([{**rows[0], "overrides": json.dumps(rows[0]["overrides"])}])
    assert again[0]["overrides"] == rows[0]["overrides"]


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "results.csv"
    results.write_csv(_sample_rows()[:2], path)
    before = path.read_bytes()

    def failing_replace(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(results.os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        results.write_csv(_sample_rows(), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["results.csv"]  # no temporary file left behind
    # A row that cannot be serialised fails before anything is written.
    with pytest.raises(ValueError, match="must be a number"):
        results.write_json([{"run": "r", "metric": "m", "value": "oops"}], path)
    assert path.read_bytes() == before


def test_pivot_to_run_by_metric_matrix():
    rows = [
        {
            "run": "b",
            "overrides": {"augment.name": "x"},
            "metric": "m2",
            "value": 2.0,
            "stderr": 0.2,
        },
        {"run": "a", "overrides": {}, "metric": "m1", "value": 1.0, "stderr": None},
        {
            "run": "b",
            "overrides": {"augment.name": "x"},
            "metric": "m1",
            "value": 3.0,
            "stderr": 0.3,
        },
    ]
    table = results.pivot(rows)
    assert table.runs == ("b", "a") and table.metrics == ("m2", "m1")
    np.testing.assert_array_equal(table.values, [[2.0, 3.0], [np.nan, 1.0]])
    np.testing.assert_array_equal(table.stderrs, [[0.2, 0.3], [np.nan, np.nan]])
    np.testing.assert_array_equal(table.column("m1"), [3.0, 1.0])
    assert table.overrides == ({"augment.name": "x"}, {})
    with pytest.raises(KeyError, match="unknown metric 'm3'.*m2, m1"):
        table.column("m3")
    with pytest.raises(ValueError, match="run 'a' has metric 'm1' more than once"):
        results.pivot(rows + [rows[1]])


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"lacks columns \['metric'\]"):
        results.validate_rows([{"run": "r", "value": 1.0}])
    with pytest.raises(ValueError, match="unknown results file extension '.txt'"):
        results.read_rows("results.txt")
    with pytest.raises(ValueError, match="CSV lacks columns"):
        results.rows_from_csv("run,metric\nr,m\n")
