"""The robustness zoo: the catalogue, fetching into the cache (no network: a fake downloader
and local files), imported runs in a sweep (flatrob_jax.study) and the report's
measured-vs-published table."""

import dataclasses
import hashlib
import importlib.util
import os
import shutil
import urllib.error

import numpy as np
import pytest

from flatrob_jax import study
from flatrob_jax.torch_import import ChecksumMismatch, arch_names, fetch, zoo

# ---------------------------------------------------------------------------------------------
# The catalogue

SUPPORTED_CIFAR10_LINF = {"resnet18_cifar", "preact_resnet18", "wrn_28_10", "wrn_34_10"}


def test_catalogue_is_consistent():
    zoo.check_catalogue()
    assert len({e.filename for e in zoo.ENTRIES.values()}) == len(
        {(e.filename, e.url) for e in zoo.ENTRIES.values()}
    ), "two entries share a cache file but not a URL"
    linf = [zoo.get(n) for n in zoo.names(dataset="cifar10", threat_model=zoo.LINF)]
    assert linf and {e.arch for e in linf} <= SUPPORTED_CIFAR10_LINF | {"wrn_70_16"}
    assert all(e.published.eps is not None and e.published.source for e in linf)
    imagenet = zoo.names(dataset="imagenet2012", arch="resnet50")
    assert "torchvision/ResNet50_Weights.IMAGENET1K_V2" in imagenet
    assert all(zoo.get(n).sha256_prefix for n in imagenet if n.startswith("torchvision/"))
    # No entry claims a checksum RobustBench does not publish.
    assert all(e.sha256 is None for e in zoo.ENTRIES.values())
    with pytest.raises(KeyError, match="known entries"):
        zoo.get("cifar10/Linf/NoSuchModel")
    with pytest.raises(ValueError, match="unknown threat model"):
        zoo.names(threat_model="L3")


# ---------------------------------------------------------------------------------------------
# Fetching into the cache


def _entry(**kw):
    published = zoo.Published(None, None, zoo.NONE, None, "none published", "test fixture")
    fields = dict(
        name="test/fake",
        url="https://example.invalid/fake.pt",
        arch="resnet18_cifar",
        dataset="cifar10",
        mean=None,
        std=None,
        filename="test/fake.pt",
        published=published,
    )
    fields.update(kw)
    return zoo.ZooEntry(**fields)


def _writer(payload: bytes, calls: list):
    def download(url, dest):
        calls.append(url)
        with open(dest, "wb") as f:
            f.write(payload)

    return download


def test_download_once_then_cache_hit_trust_on_first_use(tmp_path):
    entry, calls = _entry(), []
    path = fetch.fetch_entry(entry, str(tmp_path), download=_writer(b"weights", calls))
    assert path == str(tmp_path / "test" / "fake.pt") and open(path, "rb").read() == b"weights"
    digest = hashlib.sha256(b"weights").hexdigest()
    assert fetch.read_lock(str(tmp_path))["test/fake.pt"]["sha256"] == digest
    # A second fetch is a cache hit: no download.
    assert fetch.fetch_entry(entry, str(tmp_path), download=_writer(b"other", calls)) == path
    assert calls == [entry.url]
    # The cached file changed: the recorded digest no longer matches.
    with open(path, "wb") as f:
        f.write(b"tampered")
    with pytest.raises(ChecksumMismatch, match="recorded on first download"):
        fetch.fetch_entry(entry, str(tmp_path), download=_writer(b"weights", calls))


def test_file_placed_by_hand_is_used_and_the_env_var_names_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(fetch.CACHE_ENV, str(tmp_path))
    entry = _entry()
    os.makedirs(tmp_path / "test")
    (tmp_path / "test" / "fake.pt").write_bytes(b"by hand")

    def no_network(url, dest):
        raise AssertionError("downloaded although the file is in the cache")

    assert fetch.fetch_entry(entry, download=no_network) == str(tmp_path / "test" / "fake.pt")


def test_published_checksums_mismatch_leaves_nothing_in_the_cache(tmp_path):
    good = hashlib.sha256(b"weights").hexdigest()
    for kw, match in (
        ({"sha256": "0" * 64}, "published sha256"),
        ({"sha256_prefix": "0" * 8}, "prefix"),
    ):
        with pytest.raises(ChecksumMismatch, match=match):
            fetch.fetch_entry(_entry(**kw), str(tmp_path), download=_writer(b"weights", []))
        assert not os.path.exists(tmp_path / "test" / "fake.pt")
        assert os.listdir(tmp_path / "test") == []  # no partial download left behind
    for kw in ({"sha256": good}, {"sha256_prefix": good[:8]}):
        shutil.rmtree(tmp_path)
        path = fetch.fetch_entry(_entry(**kw), str(tmp_path), download=_writer(b"weights", []))
        assert open(path, "rb").read() == b"weights"


def test_offline_error_names_the_file_to_place_and_the_url(tmp_path):
    def offline(url, dest):
        raise urllib.error.URLError("Temporary failure in name resolution")

    entry = _entry()
    with pytest.raises(fetch.FetchError) as info:
        fetch.fetch_entry(entry, str(tmp_path), download=offline)
    message = str(info.value)
    assert str(tmp_path / "test" / "fake.pt") in message and entry.url in message
    assert not os.path.exists(tmp_path / "test" / "fake.pt")


def test_google_drive_confirm_page_gives_the_download_url():
    page = """<html><body><p>Google Drive can't scan this file for viruses.</p>
    <form id="download-form" action="https://drive.usercontent.google.com/download" method="get">
    <input type="submit" value="Download anyway"/>
    <input type="hidden" name="id" value="ABC"><input type="hidden" name="export" value="download">
    <input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="u-1">
    </form></body></html>"""
    url = fetch.confirm_url(page, "https://drive.google.com/uc?export=download&id=ABC")
    assert url == (
        "https://drive.usercontent.google.com/download?id=ABC&export=download&confirm=t&uuid=u-1"
    )
    assert fetch.confirm_url("<html>quota exceeded</html>", "https://x") is None


# ---------------------------------------------------------------------------------------------
# Imported runs in a sweep


def _sweep(runs, **kw):
    return study.Sweep(base="cifar10_resnet18", runs=runs, **kw)


def test_import_runs_are_validated_before_anything_starts():
    (ok,) = study.plan(_sweep([{"import.zoo": "cifar10/Linf/Carmon2019Unlabeled"}]), "/r").jobs
    assert ok.name == "zoo=cifar10_Linf_Carmon2019Unlabeled" and ok.kind == "import"
    assert ok.importer.source == {"zoo": "cifar10/Linf/Carmon2019Unlabeled"}
    named = _sweep([{"import.arch": "resnet18_cifar", "import.weights": "/a/b/model.pt"}])
    assert study.plan(named, "/r").jobs[0].name == "arch=resnet18_cifar,weights=model.pt"
    bad = [
        ({"import.zoo": "cifar10/Linf/Nope"}, "known entries"),
        ({"import.zoo": "imagenet/corruptions/Hendrycks2020AugMix"}, "imagenet2012 model"),
        ({"import.arch": "resnet18_cifar"}, "import.arch and import.weights"),
        ({"import.arch": "vgg16", "import.weights": "x.pt"}, "known: " + arch_names()[0]),
        ({"import.zoo": "cifar10/Linf/Standard", "model.name": "resnet18"}, "cannot be overridden"),
        ({"import.zoo": "cifar10/Linf/Standard", "import.arch": "wrn_28_10"}, "no other"),
        ({"import.weight": "x.pt"}, "unknown import keys"),
    ]
    for run, match in bad:
        with pytest.raises(ValueError, match=match):
            study.plan(_sweep([run]), "/r")


def _pyautoattack_weights() -> str:
    spec = importlib.util.find_spec("pyautoattack")
    if spec is None:
        pytest.skip("pyautoattack is not installed (pip install .[peers])")
    path = os.path.join(spec.submodule_search_locations[0], "examples", "model_test.pt")
    if not os.path.exists(path):
        pytest.skip(f"pyautoattack has no {path}")
    return path


TINY_ANALYSIS = {
    "analysis.measures": ("clean", "curvature", "corruptions", "attacks"),
    "analysis.num_train_examples": 8,
    "analysis.num_test_examples": 8,
    "analysis.clean.batch_size": 8,
    "analysis.curvature.batch_size": 8,
    "analysis.curvature.lanczos_steps": 3,
    "analysis.curvature.trace": False,  # lambda_max is the flatness measure the report needs
    "analysis.corruptions.corruptions": ("gaussian_noise",),
    "analysis.corruptions.severities": (3,),
    "analysis.corruptions.batch_size": 8,
    "analysis.attacks.norms": ("Linf",),
    "analysis.attacks.pgd_steps": 2,
    "analysis.attacks.autoattack": False,
    "analysis.attacks.batch_size": 8,
    # One device: four fake ones only make XLA compile sharded ResNet-18 programs.
    "analysis.curvature.num_devices": 1,
    "analysis.corruptions.num_devices": 1,
    "analysis.attacks.num_devices": 1,
}


@pytest.mark.peers
def test_sweep_over_two_imported_models_produces_a_report(tmp_path, monkeypatch):
    """pyautoattack's CIFAR-10 ResNet-18 through the zoo path (a catalogue entry fetched into
    the cache by a fake downloader that copies the local file) and a random-weight ResNet-18
    through import.arch/import.weights: imported, analyzed on mock CIFAR-10, reported with the
    imported-models table; a rerun imports nothing again."""
    torch = pytest.importorskip("torch")
    import tensorflow_datasets as tfds

    real = _pyautoattack_weights()
    generator = torch.Generator().manual_seed(0)
    random_weights = {
        k: (
            torch.rand(v.shape, generator=generator) + 0.5
            if k.endswith("running_var")
            else 0.05 * torch.randn(v.shape, generator=generator)
        )
        if v.is_floating_point()
        else v
        for k, v in torch.load(real, map_location="cpu", weights_only=True).items()
    }
    random_path = str(tmp_path / "random_r18.pt")
    torch.save(random_weights, random_path)

    # Published clean accuracy: a test fixture, to check how the table shows it.
    published = zoo.Published(0.5, None, zoo.NONE, None, "none published", "test fixture")
    entry = dataclasses.replace(
        _entry(name="test/pyautoattack_r18", filename="test/model_test.pt", mean=(0.0,) * 3),
        std=(1.0,) * 3,
        published=published,
    )
    monkeypatch.setitem(zoo.ENTRIES, entry.name, entry)
    downloads = []

    def copy_local(url, dest):
        downloads.append(url)
        shutil.copyfile(real, dest)

    monkeypatch.setattr(fetch, "http_download", copy_local)
    sweep = _sweep(
        [
            {"import.zoo": entry.name},
            {"import.arch": "resnet18_cifar", "import.weights": random_path},
        ],
        overrides={"num_devices": 1, **TINY_ANALYSIS},
        title="imported zoo",
        num_resamples=50,
        compilation_cache=False,
        zoo_cache=str(tmp_path / "cache"),
    )
    root = str(tmp_path / "study")
    logs = []
    with tfds.testing.mock_data(num_examples=16):
        paths = study.run_sweep(sweep, root, log=logs.append)
        again = []
        study.run_sweep(sweep, root, steps=("train", "analyze"), log=again.append)
    assert downloads == [entry.url]
    assert sum("imported already" in line for line in again) == 2
    assert sum("analyzed already" in line for line in again) == 2

    import flatrob_jax

    names = list(study.plan(sweep, root).names)
    for name in names:
        loaded = flatrob_jax.load_for_eval(os.path.join(root, name))
        assert loaded.config.model.name == "resnet18" and loaded.step == 0
        assert loaded.config.analysis.num_test_examples == 8  # the sweep's analysis settings
    zoo_run = flatrob_jax.load_for_eval(os.path.join(root, names[0]))
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype(np.float32)
    net_out = np.asarray(zoo_run.apply_fn(x))
    assert np.isfinite(net_out).all()

    report = open(paths["report"]).read()
    assert "imported zoo" in report
    assert "## Imported models: measured vs published" in report
    assert "zoo test/pyautoattack_r18 (resnet18_cifar)" in report
    assert "file random_r18.pt (resnet18_cifar; no published numbers)" in report
    table = report.split("## Imported models")[1]
    assert "published 50.00%" in table and "(none published)" in table
    assert "PGD" in table  # AutoAttack was off: the Linf column says which attack


@pytest.mark.peers
def test_import_entry_from_a_file_placed_in_the_cache(tmp_path, monkeypatch):
    """zoo.import_entry (what `import_torch --zoo` runs): the file placed in the cache by
    hand is verified (trust on first use), imported with the entry's normalization, and the
    provenance names the entry and its published numbers."""
    import json

    import flatrob_jax

    real = _pyautoattack_weights()
    entry = _entry(name="test/r18", filename="test/r18.pt", mean=(0.5,) * 3, std=(0.25,) * 3)
    monkeypatch.setitem(zoo.ENTRIES, entry.name, entry)
    os.makedirs(tmp_path / "cache" / "test")
    shutil.copyfile(real, tmp_path / "cache" / "test" / "r18.pt")
    monkeypatch.setenv(fetch.CACHE_ENV, str(tmp_path / "cache"))

    def no_network(url, dest):
        raise AssertionError("downloaded although the file is in the cache")

    monkeypatch.setattr(fetch, "http_download", no_network)
    run = str(tmp_path / "run")
    record = zoo.import_entry(entry.name, run)
    assert record["zoo_entry"] == entry.name and record["zoo_checksum"] == zoo.NO_CHECKSUM
    assert record["sha256"] == fetch.read_lock()["test/r18.pt"]["sha256"]
    with open(os.path.join(run, "provenance.json")) as f:
        assert json.load(f)["published"]["source"] == "test fixture"
    loaded = flatrob_jax.load_for_eval(run)
    assert tuple(loaded.config.dataset.mean) == (0.5,) * 3
    assert tuple(loaded.config.dataset.std) == (0.25,) * 3
    with pytest.raises(FileExistsError):  # an existing run is never overwritten
        zoo.import_entry(entry.name, run)


def test_zoo_sweeps_import_one_entry_per_run():
    for spec, dataset, count in (
        (
            "zoo_cifar10_corruptions",
            "cifar10",
            len(zoo.names(dataset="cifar10", threat_model=zoo.CORRUPTIONS)),
        ),
        ("zoo_cifar10_linf", "cifar10", len(zoo.names(dataset="cifar10", threat_model=zoo.LINF))),
        ("zoo_cifar10_corruptions:wrn_40_2", "cifar10", 1),
        (
            "zoo_cifar100_corruptions",
            "cifar100",
            len(zoo.names(dataset="cifar100", threat_model=zoo.CORRUPTIONS)),
        ),
        ("zoo_cifar10_linf:resnet18_cifar", "cifar10", 3),
        (
            "zoo_imagenet_resnet50",
            "imagenet2012",
            len(zoo.names(dataset="imagenet2012", arch="resnet50")),
        ),
    ):
        jobs = study.plan(study.load_sweep(spec), "/r").jobs
        assert len(jobs) == count, spec
        for job in jobs:
            assert zoo.get(job.overrides["import.zoo"]).dataset == job.config.dataset.name
            assert job.config.dataset.name == dataset and job.kind == "import"
            config = job.config
            assert config.analysis.attacks.autoattack and "corruptions" in config.analysis.measures
    with pytest.raises(ValueError, match="unknown architecture"):
        study.load_sweep("zoo_cifar10_linf:vgg16")


def test_the_import_command_takes_one_source():
    from flatrob_jax.torch_import import command

    with pytest.raises(command.ArgumentError, match=r"--zoo takes .* also given: \['--arch'\]"):
        command.import_run("/w", zoo_name="cifar10/Linf/Standard", arch="resnet18_cifar")
    with pytest.raises(command.ArgumentError, match=r"all of --arch, --weights, --dataset: \["):
        command.import_run("/w", arch="resnet18_cifar")
    with pytest.raises(command.ArgumentError, match="unknown zoo entry|nope"):
        command.import_run("/w", zoo_name="nope")
    with pytest.raises(command.ArgumentError, match=r"--mean=a,b: expected numbers"):
        command.parse_floats("mean", ["a", "b"])
