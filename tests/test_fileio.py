"""The file layer (flatrob_jax/fileio.py): local guarantees, the same calls on gs:// against a
local Cloud Storage emulator (tests/gcs_emulator.py, no network), clear errors naming the path,
and a guard that library code does its file access through the layer."""

import ast
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from flatrob_jax import fileio
from flatrob_jax.metrics_log import MetricWriter
from tests.gcs_emulator import emulator  # noqa: F401 (the fixture)
from tests.helpers import REPO

# --------------------------------------------------------------------------- paths


def test_paths_keep_uris_intact(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert fileio.join("gs://b/run", "checkpoints", "3") == "gs://b/run/checkpoints/3"
    assert fileio.join("gs://b/run/", "x") == "gs://b/run/x"
    assert fileio.absolute("gs://b/run") == "gs://b/run"
    assert fileio.absolute("run") == os.path.join(str(tmp_path), "run")
    assert fileio.dirname("gs://b/run/x.json") == "gs://b/run"
    assert fileio.dirname("gs://b") == "gs://b"
    assert fileio.basename("gs://b/run/") == "run"
    assert fileio.is_uri("gs://b/x") and fileio.scheme("GS://b") == "gs"
    assert not fileio.is_uri("/tmp/gs:/b") and not fileio.is_uri("relative/gs:x")
    fileio.makedirs("gs://b/never/created")  # directories do not exist on an object store
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- local guarantees


def test_local_atomic_write_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    path = str(tmp_path / "sub" / "a.json")
    assert fileio.atomic_write_text(path, "old") == path
    assert fileio.read_text(path) == "old"

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(fileio.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        fileio.atomic_write_text(path, "new")
    assert fileio.read_text(path) == "old"
    assert os.listdir(tmp_path / "sub") == ["a.json"]  # no temporary file left behind


def test_local_queries_and_appender(tmp_path):
    d = str(tmp_path / "d")
    assert not fileio.exists(d)
    fileio.makedirs(fileio.join(d, "x"))
    assert fileio.isdir(d) and not fileio.isfile(d)
    log = fileio.Appender(fileio.join(d, "m.jsonl"))
    assert log.read() == ""
    log.append("1\n")
    log.append("2\n")
    assert fileio.read_text(fileio.join(d, "m.jsonl")) == "1\n2\n"  # written, no flush needed
    log.rewrite("1\n")
    assert log.read() == "1\n"
    assert fileio.listdir(d) == ["m.jsonl", "x"]
    with fileio.open(fileio.join(d, "t.csv"), "w", newline="") as f:
        f.write("a,b\r\n")
    with fileio.open(fileio.join(d, "t.csv"), newline="") as f:
        assert f.read() == "a,b\r\n"
    with pytest.raises(FileNotFoundError, match="nope"):
        fileio.read_text(fileio.join(d, "nope"))


# --------------------------------------------------------------------------- gs:// (emulator)


def test_gs_reads_writes_listings(emulator):  # noqa: F811
    root = emulator.uri("unit")
    path = fileio.join(root, "a", "b.json")
    assert fileio.atomic_write_text(path, '{"x": 1}') == path
    assert json.loads(fileio.read_text(path)) == {"x": 1}
    assert fileio.exists(path) and fileio.isfile(path)
    assert fileio.isdir(fileio.join(root, "a")) and not fileio.exists(fileio.join(root, "z"))
    assert fileio.listdir(root) == ["a"]
    with fileio.open(fileio.join(root, "c.bin"), "wb") as f:
        f.write(b"\x00\x01")
    with fileio.open(fileio.join(root, "c.bin"), "rb") as f:
        f.seek(1)
        assert f.read() == b"\x01"
    fileio.remove(fileio.join(root, "c.bin"))
    assert not fileio.exists(fileio.join(root, "c.bin"))
    fileio.rmtree(fileio.join(root, "a"))
    assert fileio.listdir(root) == [] if fileio.exists(root) else True


def test_gs_appender_buffers_and_rewrites(emulator):  # noqa: F811
    path = emulator.uri("append", "metrics.jsonl")
    log = fileio.Appender(path, min_interval_s=3600)
    log.append("1\n")  # the first append uploads (nothing was uploaded yet)
    log.append("2\n")  # within the interval: buffered
    assert fileio.read_text(path) == "1\n"
    log.flush()
    assert fileio.read_text(path) == "1\n2\n"
    again = fileio.Appender(path, min_interval_s=0)  # a resumed run: nothing earlier is lost
    again.append("3\n")
    assert fileio.read_text(path) == "1\n2\n3\n"


def test_gs_metric_writer_and_tensorboard(emulator):  # noqa: F811
    workdir = emulator.uri("metrics_run")
    writer = MetricWriter(workdir)
    for step in (1, 2, 3):
        writer.write(step, "train", {"loss": 1.0 / step})
    writer.flush()
    writer.truncate_after(2)
    writer.close()
    rows = [
        json.loads(x) for x in fileio.read_text(fileio.join(workdir, "metrics.jsonl")).splitlines()
    ]
    assert [r["step"] for r in rows] == [1, 2]
    events = fileio.listdir(fileio.join(workdir, "tensorboard"))
    assert len(events) == 1 and events[0].startswith("events.out.tfevents")
    data = fileio.read_bytes(fileio.join(workdir, "tensorboard", events[0]))
    assert b"train/loss" in data


def test_gs_missing_object_and_missing_bucket_name_the_path(emulator):  # noqa: F811
    kept = emulator.uri("errors", "kept.json")
    fileio.atomic_write_text(kept, "earlier")
    missing = emulator.uri("errors", "missing.json")
    with pytest.raises(FileNotFoundError, match="gs://bkt/errors/missing.json"):
        fileio.read_text(missing)
    with pytest.raises(OSError, match="gs://no-such-bucket/run/a.json"):
        fileio.atomic_write_text("gs://no-such-bucket/run/a.json", "x")
    with pytest.raises(OSError, match="gs://no-such-bucket/run"):
        fileio.listdir("gs://no-such-bucket/run")
    assert fileio.read_text(kept) == "earlier"  # nothing written earlier is lost


def test_gs_npy_directory_reads_only_the_severity(emulator, tmp_path):  # noqa: F811
    from flatrob_jax.corruptions import datasets

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (15, 4, 4, 3), dtype=np.uint8)
    np.save(tmp_path / "fog.npy", images)
    np.save(tmp_path / "labels.npy", np.arange(15) % 10)
    bucket_dir = fileio.copytree(str(tmp_path), emulator.uri("cifar10c"))
    x, y = datasets.load_npy_dir(bucket_dir, "fog", 3, num_examples=2)
    np.testing.assert_array_equal(x, images[6:8] / np.float32(255))
    np.testing.assert_array_equal(y, [6, 7])
    with pytest.raises(FileNotFoundError, match="gs://bkt/cifar10c/snow.npy"):
        datasets.load_npy_dir(bucket_dir, "snow", 1)


# --------------------------------------------------------------------------- missing extra


BLOCK_GCSFS = "import sys; sys.modules['gcsfs'] = None\n"


def test_gs_without_the_extra_fails_with_the_pip_command(tmp_path):
    """In a fresh interpreter where `import gcsfs` fails: a gs:// path raises
    MissingExtraError naming the path and the pip command; local paths still work."""
    code = BLOCK_GCSFS + (
        "from flatrob_jax import fileio\n"
        f"fileio.atomic_write_text({str(tmp_path / 'local.txt')!r}, 'ok')\n"
        "try:\n"
        "    fileio.exists('gs://bkt/run/config.json')\n"
        "except fileio.MissingExtraError as e:\n"
        "    print('ERROR', e)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ERROR 'gs://bkt/run/config.json'" in done.stdout
    assert "pip install 'flatrob_jax[gcp]'" in done.stdout
    assert (tmp_path / "local.txt").read_text() == "ok"


# --------------------------------------------------------------------------- the guard

# Calls that touch files directly; outside fileio.py each needs an entry below.
GUARDED = {
    "open",
    "io.open",
    "gzip.open",
    "os.makedirs",
    "os.mkdir",
    "os.replace",
    "os.rename",
    "os.remove",
    "os.unlink",
    "os.rmdir",
    "os.listdir",
    "os.scandir",
    "os.walk",
    "os.path.exists",
    "os.path.isfile",
    "os.path.isdir",
    "os.path.abspath",
    "shutil.rmtree",
    "shutil.copyfile",
    "shutil.copytree",
    "shutil.move",
    "tempfile.mkstemp",
    "tempfile.mkdtemp",
    "np.load",
    "numpy.load",
    "np.save",
    "numpy.save",
}

# (file, enclosing function, call) -> why it may touch the local file system directly.
ALLOWED = {
    (
        "flatrob_jax/fleet/attempts.py",
        "run_attempt",
        "os.remove",
    ): "the unit's output captured in a local temporary file, removed once copied to the root",
    (
        "flatrob_jax/fleet/slurm.py",
        "default_folder",
        "os.path.abspath",
    ): "submitit's folder must be a shared mount (a URI is refused before this)",
    (
        "flatrob_jax/colab.py",
        "study_location",
        "os.path.isdir",
    ): "is Google Drive mounted on this Colab VM (a local mount point)",
    (
        "flatrob_jax/colab.py",
        "example_study_path",
        "os.path.abspath",
    ): "the example study is package data next to this module",
    (
        "flatrob_jax/torch_import/fetch.py",
        "cache_directory",
        "os.path.abspath",
    ): "the zoo cache is a local directory (torch.load reads local files); URIs are refused",
    (
        "flatrob_jax/torch_import/fetch.py",
        "fetch_entry",
        "os.replace",
    ): "a verified download renamed into the local zoo cache (atomic on one filesystem)",
    (
        "flatrob_jax/configuration.py",
        "load_config_module",
        "os.path.exists",
    ): "a config file is Python code that importlib loads: always a local file",
    (
        "flatrob_jax/study.py",
        "load_sweep",
        "os.path.abspath",
    ): "the directory of a sweep file, Python code imported from local disk",
    (
        "flatrob_jax/distributed.py",
        "_on_cloud_tpu_vm",
        "open",
    ): "reads the local machine's PCI vendor ids under /sys (is this a Cloud TPU VM?)",
    (
        "flatrob_jax/colab.py",
        "accelerator_present",
        "os.path.exists",
    ): "probes /dev device files of the local machine",
    (
        "flatrob_jax/colab.py",
        "install_dependencies",
        "tempfile.mkstemp",
    ): "a pip constraints file for a local pip subprocess",
    (
        "flatrob_jax/colab.py",
        "install_dependencies",
        "os.remove",
    ): "removes that local constraints file",
}


def _dotted(node) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def _aliases(tree) -> dict:
    """Local names of imported modules/functions -> their full dotted names."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                names[a.asname or a.name.split(".")[0]] = (
                    a.name if a.asname else a.name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                names[a.asname or a.name] = f"{node.module}.{a.name}"
    return names


def file_access_sites(root: str) -> set:
    """{(file, enclosing function, call)} of every guarded call under ``root``."""
    sites = set()
    for directory, _, files in os.walk(os.path.join(root, "flatrob_jax")):
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = os.path.join(directory, name)
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            if rel == "flatrob_jax/fileio.py":
                continue
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read(), rel)
            aliases = _aliases(tree)

            def visit(node, function):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    function = node.name
                if isinstance(node, ast.Call):
                    dotted = _dotted(node.func)
                    if dotted is not None:
                        head, _, rest = dotted.partition(".")
                        full = aliases.get(head, head) + (f".{rest}" if rest else "")
                        if full.startswith("numpy."):
                            full = "np." + full[len("numpy.") :]
                        if full in GUARDED or dotted in GUARDED:
                            sites.add((rel, function, full if full in GUARDED else dotted))
                for child in ast.iter_child_nodes(node):
                    visit(child, function)

            visit(tree, "<module>")
    return sites


def test_library_file_access_goes_through_fileio():
    sites = file_access_sites(REPO)
    unexpected = sorted(s for s in sites if s not in ALLOWED)
    assert not unexpected, (
        "direct file access outside flatrob_jax/fileio.py (use fileio.*, which works for "
        f"gs:// too, or add the site to ALLOWED with the reason): {unexpected}"
    )


def test_the_guard_finds_direct_access(tmp_path):
    pkg = tmp_path / "flatrob_jax"
    pkg.mkdir()
    (pkg / "bad.py").write_text(
        "import os\nfrom os import path as p\nimport numpy\n\n"
        "def save(workdir):\n    os.makedirs(workdir)\n    with open(p.abspath(workdir)) as f:\n"
        "        return numpy.load(f)\n"
    )
    assert file_access_sites(str(tmp_path)) == {
        ("flatrob_jax/bad.py", "save", "os.makedirs"),
        ("flatrob_jax/bad.py", "save", "open"),
        ("flatrob_jax/bad.py", "save", "os.path.abspath"),
        ("flatrob_jax/bad.py", "save", "np.load"),
    }
