"""flatrob_jax.colab (runtime report, installation next to a preinstalled JAX, data in Colab)
and flatrob_jax.analysis.open_study (opening a study)."""

import os
import sys
import types

import numpy as np
import pytest

from flatrob_jax import colab
from flatrob_jax.analysis import open_study
from flatrob_jax.analysis.results import rows_from_results, write_csv


@pytest.fixture
def in_colab(monkeypatch):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))


def test_colab_module_imports_nothing_but_the_standard_library_at_module_level():
    """The setup cell imports it right after `pip install --no-deps`, before flax & co."""
    import ast

    with open(colab.__file__) as f:
        tree = ast.parse(f.read())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {a.name.split(".")[0] for n in top if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in top if isinstance(n, ast.ImportFrom)}
    assert names <= set(sys.stdlib_module_names) | {"__future__"}, names


def test_in_colab(monkeypatch, in_colab):
    assert colab.in_colab()
    monkeypatch.delitem(sys.modules, "google.colab")
    assert not colab.in_colab()


def test_report_runtime_on_a_cpu_machine_does_not_warn(monkeypatch, recwarn):
    monkeypatch.setattr(colab, "accelerator_present", lambda: None)
    lines = []
    info = colab.report_runtime(log=lines.append)
    assert info.backend == "cpu" and info.device_count >= 1 and not info.fell_back
    assert "backend 'cpu'" in lines[0] and str(info.device_count) in lines[0]
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


@pytest.mark.parametrize("accelerator, fix", [("gpu", "jax[cuda12]"), ("tpu", "jax[tpu]")])
def test_report_runtime_warns_loudly_when_jax_fell_back_to_the_cpu(monkeypatch, accelerator, fix):
    monkeypatch.setattr(colab, "accelerator_present", lambda: accelerator)
    lines = []
    with pytest.warns(RuntimeWarning, match=f"has a {accelerator.upper()} but JAX"):
        info = colab.report_runtime(log=lines.append)
    assert info.fell_back
    banner = "\n".join(lines)
    assert "!" * 40 in banner and "WARNING" in banner and fix in banner


def test_accelerator_present_reads_colab_variables(monkeypatch):
    for name in ("COLAB_TPU_ADDR", "TPU_ACCELERATOR_TYPE", "TPU_NAME", "COLAB_GPU"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(colab.os.path, "exists", lambda p: False)
    monkeypatch.setattr(colab.shutil, "which", lambda name: None)
    assert colab.accelerator_present() is None
    # TPU_NAME names a TPU somewhere (tools/tpu_vm.sh reads it), not one on this machine.
    monkeypatch.setenv("TPU_NAME", "flatrob")
    assert colab.accelerator_present() is None
    monkeypatch.setenv("COLAB_GPU", "1")
    assert colab.accelerator_present() == "gpu"
    monkeypatch.setenv("TPU_ACCELERATOR_TYPE", "v5e-1")
    assert colab.accelerator_present() == "tpu"


def _info(backend, accelerator=None):
    return colab.RuntimeInfo("0.0", backend, "d", 1, 1, accelerator, False)


def test_smoke_by_default_where_jax_runs_on_the_cpu():
    assert colab.default_smoke(_info("cpu"))
    assert colab.default_smoke(_info("cpu", accelerator="gpu"))  # fell back: still slow
    assert not colab.default_smoke(_info("gpu", accelerator="gpu"))
    assert not colab.default_smoke(_info("tpu", accelerator="tpu"))


def test_full_precision_on_a_tpu_only():
    import jax

    before = jax.config.jax_default_matmul_precision
    lines = []
    try:
        assert not colab.full_precision_on_tpu(_info("cpu"), log=lines.append)
        assert jax.config.jax_default_matmul_precision == before and not lines
        assert colab.full_precision_on_tpu(_info("tpu", accelerator="tpu"), log=lines.append)
        assert jax.config.jax_default_matmul_precision == "highest"
        assert "matmul precision set to 'highest'" in lines[0]
    finally:
        jax.config.update("jax_default_matmul_precision", before)


def _command(monkeypatch, jax_version, accelerator=None):
    monkeypatch.setattr(colab, "jax_check", lambda: jax_version)
    monkeypatch.setattr(colab, "accelerator_present", lambda: accelerator)
    command = colab.install_dependencies(dry_run=True, log=lambda s: None)
    assert command[:5] == [sys.executable, "-m", "pip", "install", "-q"]
    return command


def test_install_dependencies_pins_a_working_jax(monkeypatch):
    command = _command(monkeypatch, "0.10.2")
    constraints = command[command.index("-c") + 1]
    with open(constraints) as f:
        pins = f.read().split()
    os.remove(constraints)
    assert f"jax=={colab._installed_version('jax')}" in pins
    assert f"jaxlib=={colab._installed_version('jaxlib')}" in pins
    requested = command[command.index("-c") + 2 :]
    assert "flax>=0.10" in requested and "ml-collections>=1.0" in requested
    assert not [r for r in requested if colab._requirement_name(r) in colab.JAX_STACK]
    assert not [r for r in requested if "torch" in r or "pytest" in r]  # no extras


@pytest.mark.parametrize(
    "version, accelerator, spec",
    [
        (None, "gpu", "jax[cuda12]>=0.7"),
        (None, None, "jax>=0.7"),
        ("0.4.30", "tpu", "jax[tpu]>=0.7"),
    ],
)
def test_install_dependencies_installs_jax_only_without_a_usable_one(
    monkeypatch, version, accelerator, spec
):
    command = _command(monkeypatch, version, accelerator)
    assert "-c" not in command and spec in command


def test_jax_check_finds_this_interpreters_jax():
    import jax

    assert colab.jax_check() == jax.__version__
    assert colab.jax_check("/nonexistent/python") is None


def test_data_overrides(monkeypatch, in_colab):
    assert colab.data_overrides("/data/fm") == {"dataset.data_dir": "/data/fm"}
    assert colab.data_overrides() == {
        "dataset.data_dir": "/content/datasets/fashion_mnist",
        "dataset.download": True,
    }
    monkeypatch.delitem(sys.modules, "google.colab")
    assert colab.data_overrides() == {}


def test_authenticate_for_is_a_no_op_outside_colab():
    colab.authenticate_for("gs://bucket/study")  # would import google.colab in Colab


def test_study_location_outside_colab():
    assert (
        colab.study_location("drive://flatrob_studies/quickstart") == "flatrob_studies/quickstart"
    )
    assert colab.study_location("gs://bucket/study") == "gs://bucket/study"
    assert colab.study_location("/data/study") == "/data/study"
    with pytest.raises(ValueError, match="name a directory in your Drive"):
        colab.study_location("drive://")


def test_study_location_in_colab_mounts_google_drive_once(monkeypatch, in_colab, tmp_path):
    mounted = []

    def mount(point):
        mounted.append(point)
        os.makedirs(os.path.join(point, "MyDrive"))

    drive = types.ModuleType("google.colab.drive")
    drive.mount = mount
    monkeypatch.setitem(sys.modules, "google.colab.drive", drive)
    sys.modules["google.colab"].drive = drive
    monkeypatch.setattr(colab, "DRIVE_MOUNT", str(tmp_path / "drive"))
    where = str(tmp_path / "drive" / "MyDrive" / "studies" / "a")
    assert colab.study_location("drive://studies/a", log=lambda m: None) == where
    assert colab.study_location("drive://studies/a", log=lambda m: None) == where
    assert mounted == [str(tmp_path / "drive")]


# --------------------------------------------------------------------------- the example study


def test_missing_study_opens_the_example_and_says_so(tmp_path):
    lines = []
    missing = str(tmp_path / "nothing")
    study, opened = colab.open_study_or_example(missing, log=lines.append)
    assert opened == colab.example_study_path() and len(study.runs) == 3
    assert f"No study at {missing!r}" in lines[0] and "EXAMPLE study" in lines[0]
    with pytest.raises(FileNotFoundError, match="no study at .*nothing.*does not exist"):
        colab.open_study_or_example(missing, example=False)
    existing, opened = colab.open_study_or_example(colab.example_study_path(), log=lines.append)
    assert opened == colab.example_study_path() and len(lines) == 1  # no message: it is there


def test_example_study_is_small_real_and_shipped_as_package_data():
    import fnmatch
    import tomllib

    root = colab.example_study_path()
    files = [
        os.path.relpath(os.path.join(d, n), root) for d, _, names in os.walk(root) for n in names
    ]
    assert {"results.csv", "results.json", "ABOUT.md", "report/report.md"} <= set(files)
    assert sum(os.path.getsize(os.path.join(root, f)) for f in files) < 200_000
    with open(os.path.join(os.path.dirname(colab.__file__), "..", "pyproject.toml"), "rb") as f:
        patterns = tomllib.load(f)["tool"]["setuptools"]["package-data"]["flatrob_jax"]
    for name in files:
        assert any(fnmatch.fnmatch("example_study/" + name, p) for p in patterns), name
    with open(os.path.join(root, "ABOUT.md")) as f:
        assert "tools/make_example_study.py" in f.read()  # made by code, not by hand


# --------------------------------------------------------------------------- open_study


def test_open_study_reads_the_results_table(tmp_path):
    rows = []
    for run, value in (("name=none", 3.0), ("name=cutout", 2.0)):
        rows += rows_from_results(
            run,
            {"curvature": {"clean": {"lambda_max": value}}, "clean": {"error": value / 10}},
            overrides={"augment.name": run.split("=")[1]},
        )
    write_csv(rows, tmp_path / "results.csv")
    study = open_study(str(tmp_path))
    assert study.runs == ("name=none", "name=cutout")
    wide = study.wide()
    assert list(wide.index) == ["name=none", "name=cutout"]
    np.testing.assert_allclose(wide["curvature/clean/lambda_max"], [3.0, 2.0])
    assert len(study.frame()) == 4


def test_open_study_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no study at .*missing.*does not exist"):
        open_study(str(tmp_path / "missing"))
    (tmp_path / "name=none").mkdir()
    with pytest.raises(FileNotFoundError, match=r"neither results.csv nor results.json.*name=none"):
        open_study(str(tmp_path))
