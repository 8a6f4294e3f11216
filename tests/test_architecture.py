"""The shape of the code: no import cycle, imports only go downward (import-linter's layers
contract in pyproject.toml), thin entry points, the public names docs/design.md promises."""

import os
import shutil
import subprocess
import sys

import grimp
import pytest

from tests.helpers import REPO

ENTRY_POINTS = ("train", "analyze", "sweep", "import_torch")


def _cycles(graph) -> list:
    """Strongly connected components with more than one module (Tarjan), i.e. import cycles;
    imports inside functions count (grimp reads every import statement)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return out


def test_no_import_cycle():
    assert _cycles(grimp.build_graph("flatrob_jax")) == []


def test_the_cycle_check_finds_a_cycle(tmp_path, monkeypatch):
    pkg = tmp_path / "cyclic_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from cyclic_pkg import b\n")
    (pkg / "b.py").write_text("import cyclic_pkg.a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _cycles(grimp.build_graph("cyclic_pkg")) == [["cyclic_pkg.a", "cyclic_pkg.b"]]


def test_imports_only_go_downward():
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.fail("lint-imports (import-linter, in the test extra) is not installed")
    done = subprocess.run([exe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_entry_points_are_thin(name):
    with open(os.path.join(REPO, "flatrob_jax", f"{name}.py")) as f:
        lines = f.read().splitlines()
    assert len(lines) <= 60, (
        f"flatrob_jax/{name}.py has {len(lines)} lines; keep the logic in the library"
    )


def test_public_names():
    import flatrob_jax
    from flatrob_jax import attacks, corruptions, curvature
    from flatrob_jax.augment import get_augment, ops
    from flatrob_jax.models import get_model

    assert callable(flatrob_jax.load_for_eval)
    for fn in (
        get_augment,
        get_model,
        curvature.hvp,
        curvature.lanczos,
        curvature.hutchinson_trace,
        attacks.pgd,
        attacks.apgd,
        attacks.autoattack,
        corruptions.corrupt,
    ):
        assert callable(fn)
    for op in (
        "posterize",
        "solarize",
        "equalize",
        "autocontrast",
        "invert",
        "rotate",
        "shear_x",
        "shear_y",
        "translate_x",
        "translate_y",
        "contrast",
        "brightness",
        "color",
        "sharpness",
        "cutout",
    ):
        assert callable(getattr(ops, op)), op
    assert len(corruptions.BENCHMARK) == 15 and len(corruptions.EXTRA) == 4


@pytest.mark.parametrize("command", (["check", "."], ["format", "--check", "."]))
def test_ruff_lint_and_format(command):
    """One line length (pyproject's [tool.ruff]) for the formatter and the linter."""
    exe = shutil.which("ruff")
    if exe is None:
        pytest.fail("ruff (in the test extra) is not installed")
    done = subprocess.run([exe, *command], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
