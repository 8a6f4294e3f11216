"""The notebooks: each runs top to bottom in a real Jupyter kernel (nbclient + ipykernel, this
interpreter) with ``SMOKE = True`` injected after its ``parameters`` cell (papermill's
convention), from a temporary directory outside the repository, on a tiny fake Fashion-MNIST:
the quickstart keeps its study at the ``STUDY`` location given and explore_study opens it from
there; explore_study alone, with no study there, opens the example study shipped with the
package and says so. Plus static checks (no stored outputs, ``SMOKE = None`` by default, the
analysis notebooks set full matmul precision on a TPU, the Colab badges and install URL match
``[project.urls]``, the README's Colab section lists exactly these notebooks, shell and magic
lines only under the Colab guard) and the error a bad parameter gives."""

import ast
import json
import os
import re
import resource
import sys
import time
import tomllib

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from tests.helpers import REPO, make_idx_dataset

NOTEBOOK_DIR = os.path.join(REPO, "notebooks")
NOTEBOOKS = sorted(f for f in os.listdir(NOTEBOOK_DIR) if f.endswith(".ipynb"))
KERNEL = "flatrob-notebook-test"
GUARD = "if IN_COLAB:"
# The notebooks each execution test runs (a new notebook must be added to one of them).
EXECUTED = {"quickstart.ipynb", "explore_study.ipynb", "curvature.ipynb", "robustness.ipynb"}


def _read(name):
    return nbformat.read(os.path.join(NOTEBOOK_DIR, name), as_version=4)


def _code(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _repository_url():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]["urls"]["Repository"]


def _parameters_index(nb):
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    if len(tagged) != 1:
        pytest.fail(f"a notebook needs exactly one cell tagged 'parameters', found {len(tagged)}")
    return tagged[0]


# --------------------------------------------------------------------------- static checks


def test_every_notebook_is_executed_by_a_test():
    assert NOTEBOOKS, "no notebooks found"
    assert set(NOTEBOOKS) == EXECUTED, (
        f"notebooks without an execution test: {sorted(set(NOTEBOOKS) - EXECUTED)}; "
        f"tests for missing notebooks: {sorted(EXECUTED - set(NOTEBOOKS))}"
    )


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_valid_and_has_no_stored_outputs(name):
    nb = _read(name)
    nbformat.validate(nb)
    for i, cell in enumerate(_code(nb)):
        assert cell.outputs == [] and cell.execution_count is None, (
            f"{name}: code cell {i} has stored outputs; clear them before committing"
        )


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_smoke_defaults_to_the_runtime(name):
    """SMOKE = None in the parameters cell: colab.default_smoke decides (True on a CPU)."""
    nb = _read(name)
    index = _parameters_index(nb)
    cell = nb.cells[index]
    assert cell.cell_type == "code"
    values = {
        t.id: ast.literal_eval(node.value)
        for node in ast.parse(cell.source).body
        if isinstance(node, ast.Assign)
        for t in node.targets
    }
    assert "SMOKE" in values and values["SMOKE"] is None, f"{name}: set SMOKE = None"
    after = next(c.source for c in nb.cells[index + 1 :] if c.cell_type == "code")
    assert "SMOKE = colab.default_smoke(RUNTIME) if SMOKE is None else SMOKE" in after


# What each analysis notebook computes first (curvature, corruptions, attacks).
FIRST_ANALYSIS = {
    "quickstart.ipynb": "curvature.from_flax(",
    "curvature.ipynb": "curvature.from_flax(",
    "robustness.ipynb": "corrupted_sets(",
}


@pytest.mark.parametrize("name", sorted(FIRST_ANALYSIS))
def test_analysis_notebooks_use_full_matmul_precision_on_a_tpu(name):
    sources = [c.source for c in _code(_read(name))]
    call = "colab.full_precision_on_tpu(RUNTIME)"
    first = next(i for i, s in enumerate(sources) if FIRST_ANALYSIS[name] in s)
    at = next((i for i, s in enumerate(sources) if call in s), len(sources))
    assert at < first or (
        at == first and sources[at].index(call) < sources[at].index(FIRST_ANALYSIS[name])
    ), f"{name}: {call} must come before the first analysis ({FIRST_ANALYSIS[name]})"


def test_the_example_study_is_the_quickstarts_smoke_study():
    """tools/make_example_study.py makes the example study with the quickstart's SMOKE sizes."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_example_study", os.path.join(REPO, "tools", "make_example_study.py")
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    (cell,) = [
        c.source
        for c in _code(_read("quickstart.ipynb"))
        if "if SMOKE:  # the smoke sweep" in c.source
    ]
    call = next(
        node
        for node in ast.walk(ast.parse(cell))
        if isinstance(node, ast.Call)
        and getattr(node.func, "attr", "") == "update"
        and isinstance(node.args[0], ast.Dict)
    )
    assert ast.literal_eval(call.args[0]) == tool.QUICKSTART_SMOKE


def _readme_colab_rows():
    """The table rows of the README's Colab section."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = re.search(r"^### Colab\n(.*?)^#", text, re.S | re.M).group(1)
    return [line for line in section.splitlines() if line.startswith("| [")]


def test_readme_colab_section_lists_every_notebook_with_its_badge():
    repository = _repository_url()
    owner_repo = re.fullmatch(r"https://github\.com/([^/]+/[^/]+?)/?", repository).group(1)
    rows = _readme_colab_rows()
    listed = [re.match(r"\| \[[^\]]+\]\(notebooks/([^)]+)\)", row).group(1) for row in rows]
    assert sorted(listed) == NOTEBOOKS, f"README's Colab section lists {listed}"
    for name, row in zip(listed, rows):
        badges = re.findall(r"\[!\[[^\]]*\]\(([^)]+)\)\]\(([^)]+)\)", row)
        assert len(badges) == 1, f"{name}: one Open in Colab badge per row: {row}"
        image, link = badges[0]
        assert image == "https://colab.research.google.com/assets/colab-badge.svg"
        assert re.fullmatch(
            rf"https://colab\.research\.google\.com/github/{re.escape(owner_repo)}/blob/"
            rf"[^/]+/notebooks/{re.escape(name)}",
            link,
        ), f"{name}: badge link {link} does not match [project.urls] Repository {repository}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_badge_and_install_url_match_project_urls(name):
    repository = _repository_url()
    owner_repo = re.fullmatch(r"https://github\.com/([^/]+/[^/]+?)/?", repository).group(1)
    nb = _read(name)
    setup = next((c.source for c in _code(nb) if "REPO_URL" in c.source), None)
    assert setup is not None, f"{name}: no setup cell (REPO_URL = ...)"
    assert re.search(rf'^REPO_URL = "{re.escape(repository)}"', setup, re.M), setup
    ref = re.search(r'^REF = "([^"]+)"', setup, re.M).group(1)
    assert '"flatrob_jax @ git+{REPO_URL}@{REF}"' in setup
    badge = f"https://colab.research.google.com/github/{owner_repo}/blob/{ref}/notebooks/{name}"
    first = nb.cells[0]
    assert first.cell_type == "markdown" and badge in first.source, (
        f"{name}: the first cell must hold the Open in Colab badge linking {badge}"
    )
    assert "colab-badge.svg" in first.source


def _guarded(lines, i):
    """Whether line i sits in a block opened by the Colab guard (at any depth)."""
    indent = len(lines[i]) - len(lines[i].lstrip())
    for j in range(i - 1, -1, -1):
        text = lines[j].strip()
        if not text or text.startswith("#"):
            continue
        level = len(lines[j]) - len(lines[j].lstrip())
        if level < indent:
            if text == GUARD:
                return True
            indent = level
            if level == 0:
                return False
    return False


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_shell_and_magic_lines_only_under_the_colab_guard(name):
    found = 0
    for cell in _code(_read(name)):
        lines = cell.source.splitlines()
        for i, line in enumerate(lines):
            if line.lstrip().startswith(("!", "%")):
                found += 1
                assert _guarded(lines, i), f"{name}: {line.strip()!r} is not under {GUARD!r}"
        if GUARD in cell.source:
            assert 'IN_COLAB = "google.colab" in sys.modules' in cell.source
    assert found, f"{name}: the setup cell should install the package in Colab (%pip)"


def test_guard_check_catches_an_unguarded_line():
    assert _guarded(["if IN_COLAB:", "    %pip install x"], 1)
    assert _guarded(["if IN_COLAB:", "    if True:", "        !ls"], 2)
    assert not _guarded(["if IN_COLAB:", "    pass", "!ls"], 2)
    assert not _guarded(["if OTHER:", "    !ls"], 1)


# --------------------------------------------------------------------------- execution


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    """A kernel spec for this interpreter (so the test needs no installed 'python3' spec)."""
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "flatrob_jax tests",
                "language": "python",
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return KERNEL


@pytest.fixture
def workdir(tmp_path):
    """The directory the notebooks run in (outside the repository) and the fake data."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    assert not str(cwd).startswith(REPO)
    data = make_idx_dataset(str(tmp_path / "fashion_mnist"), n_train=256, n_test=64)
    return cwd, data


def execute(name, kernel_name, cwd, **parameters):
    """Run notebooks/<name> in a fresh kernel in ``cwd`` with ``parameters`` injected after
    its parameters cell; returns (executed notebook, seconds)."""
    nb = _read(name)
    index = _parameters_index(nb)
    injected = nbformat.v4.new_code_cell(
        "# Parameters injected by tests/test_notebooks.py\n"
        + "".join(f"{k} = {v!r}\n" for k, v in parameters.items())
    )
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(index + 1, injected)
    client = NotebookClient(
        nb, timeout=600, kernel_name=kernel_name, resources={"metadata": {"path": str(cwd)}}
    )
    start, cpu = time.perf_counter(), _children_cpu()
    try:
        client.execute()
    finally:  # kept beside the run for a look at what failed
        nbformat.write(nb, os.path.join(cwd, f"executed-{name}"))
    seconds = time.perf_counter() - start
    print(
        f"{name}: executed in {seconds:.1f} s wall, {_children_cpu() - cpu:.1f} s CPU "
        f"(the kernel's)"
    )
    return nb, seconds


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def assert_clean(nb, name):
    """No error output and nothing on stderr that looks like an error."""
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            assert out.output_type != "error", f"{name} cell {i}: {out.ename}: {out.evalue}"
            if out.output_type == "stream" and out.name == "stderr":
                assert not re.search(r"Traceback|Error|Exception", out.text), (
                    f"{name} cell {i} wrote to stderr:\n{out.text[-3000:]}"
                )


def _text(nb):
    return "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))


@pytest.mark.slow
def test_quickstart_keeps_its_study_where_told_and_explore_study_opens_it(
    kernel, workdir, tmp_path
):
    cwd, data = workdir
    kept = tmp_path / "kept" / "quickstart"  # as a Drive folder or a bucket would be
    nb, _ = execute("quickstart.ipynb", kernel, cwd, SMOKE=True, DATA_DIR=data, STUDY=str(kept))
    assert_clean(nb, "quickstart.ipynb")
    assert (kept / "results.csv").exists() and (kept / "report" / "report.md").exists()
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "the quickstart shows the study's figures inline"

    nb, _ = execute("explore_study.ipynb", kernel, cwd, SMOKE=True, STUDY=str(kept))
    assert_clean(nb, "explore_study.ipynb")
    assert f"{kept}: 3 runs" in _text(nb) and "EXAMPLE" not in _text(nb)
    assert str(kept) in (cwd / "flatrob_explore" / "report.md").read_text()


@pytest.mark.slow
def test_explore_study_alone_opens_the_example_study_and_says_so(kernel, workdir, tmp_path):
    cwd, _ = workdir
    nothing = tmp_path / "no_study_here"
    nb, _ = execute("explore_study.ipynb", kernel, cwd, SMOKE=True, STUDY=str(nothing))
    assert_clean(nb, "explore_study.ipynb")
    said = _text(nb)
    assert f"No study at '{nothing}'" in said and "Opening the EXAMPLE study" in said
    assert "example_study: 3 runs" in said
    assert "example_study (rebuilt)" in (cwd / "flatrob_explore" / "report.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["curvature.ipynb", "robustness.ipynb"])
def test_checkpoint_notebook_runs(name, kernel, workdir):
    cwd, data = workdir
    nb, _ = execute(name, kernel, cwd, SMOKE=True, DATA_DIR=data)
    assert_clean(nb, name)
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 3, f"{name}: expected its plots inline, got {len(images)} images"


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, parameters, ename, message",
    [
        (
            "quickstart.ipynb",
            {"CONFIG": "no_such_config"},
            "FileNotFoundError",
            "no config named 'no_such_config' in flatrob_jax.configs; valid names: ",
        ),
    ],
)
def test_bad_parameter_gives_the_library_error(
    name, parameters, ename, message, kernel, workdir, tmp_path
):
    cwd, _ = workdir
    parameters = {k: v.format(tmp=tmp_path) for k, v in parameters.items()}
    with pytest.raises(CellExecutionError) as e:
        execute(name, kernel, cwd, SMOKE=True, **parameters)
    assert e.value.ename == ename
    assert message.format(tmp=tmp_path) in e.value.evalue
    if "valid names" in message:
        assert "fashion_mnist_cnn" in e.value.evalue
