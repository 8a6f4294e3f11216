"""The documentation holds together: every relative link in README.md and docs/*.md reaches a
file of the repository (and, with ``#anchor``, a heading of it, by GitHub's slug rules);
repository paths written as code spans exist; links to the project's repository use
``[project.urls] Repository``; README.md stays short and shows the test command CI runs."""

import glob
import os
import re
import sys
import tomllib
import urllib.parse

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")
DOCS = [README] + sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))
README_MAX_LINES = 260

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
# The end of every inline link or image, `[text](target)` / `![alt](target "title")`: nested
# links (a badge inside a link) give one match each.
INLINE_TARGET = re.compile(
    r"\]\(\s*<?([^()\s<>]*(?:\([^()\s]*\)[^()\s<>]*)*)>?(?:\s+[\"'(][^)]*)?\)"
)
REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?")
HTML_TARGET = re.compile(r"\b(?:href|src)\s*=\s*[\"']([^\"']+)[\"']")
ATX_HEADING = re.compile(r"^ {0,3}#{1,6}(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
REPO_PATH = re.compile(
    r"^(?:flatrob_jax|tests|benchmarks|tools|notebooks|docs|configs|\.ci)/[\w./-]*$"
)
GITHUB = re.compile(r"^https?://(?:www\.)?github\.com/([^/#?]+)/([^/#?]+)", re.I)
COLAB = re.compile(
    r"^https?://colab\.research\.google\.com/github/([^/]+)/([^/]+)/blob/[^/]+/([^#?]+)"
)


def _rel(path):
    return os.path.relpath(path, REPO)


def _prose(text):
    """(line number, line) outside fenced code blocks."""
    fence = None
    for number, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)
        elif fence is not None and line.strip().startswith(fence[0] * len(fence)):
            fence = None
        elif fence is None:
            yield number, line


def links(path):
    """[(line number, target)] of the Markdown and HTML links of a file."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    out = []
    for number, line in _prose(text):
        line = CODE_SPAN.sub("", line)
        for pattern in (INLINE_TARGET, REFERENCE_DEFINITION, HTML_TARGET):
            out += [(number, t) for t in pattern.findall(line)]
    return out


def code_spans(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return [(n, m.group(2).strip()) for n, line in _prose(text) for m in CODE_SPAN.finditer(line)]


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: link and HTML markup dropped, lower case, every
    character but letters, digits, '_', '-' and spaces removed, each space a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path):
    """Every heading anchor of a Markdown file (repeated slugs get -1, -2, ... as on GitHub)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    seen, out = {}, set()
    for _, line in _prose(text):
        m = ATX_HEADING.match(line)
        if not m:
            continue
        slug = github_slug(m.group(1) or "")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def _external(target):
    return re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) is not None


def check_link(source, target):
    """None if ``target`` (linked from file ``source``) resolves, else why not."""
    if _external(target):
        return None
    location, _, anchor = target.partition("#")
    location = urllib.parse.unquote(location)
    if location.startswith("/"):
        return "an absolute path (GitHub resolves it from the site root, not the repository)"
    resolved = os.path.normpath(os.path.join(os.path.dirname(source), location))
    if os.path.commonpath([resolved, REPO]) != REPO:
        return "points outside the repository"
    if not os.path.exists(resolved):
        return f"{_rel(resolved)} does not exist"
    if anchor and resolved.endswith(".md"):
        if urllib.parse.unquote(anchor) not in anchors(resolved):
            return f"{_rel(resolved)} has no heading with anchor #{anchor}"
    return None


def _repository_url():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]["urls"]["Repository"].rstrip("/")


def check_project_url(url, repository):
    """None if ``url`` is no link into the project's repository or uses ``repository``."""
    owner_repo = "/".join(repository.split("/")[-2:]).lower()
    m = COLAB.match(url)
    if m:
        if f"{m.group(1)}/{m.group(2)}".lower() != owner_repo:
            return f"Colab link to {m.group(1)}/{m.group(2)}, not {owner_repo}"
        if not os.path.exists(os.path.join(REPO, m.group(3))):
            return f"Colab link to {m.group(3)}, which does not exist"
        return None
    m = GITHUB.match(url)
    if m and re.sub(r"\.git$", "", m.group(2)).lower().replace("-", "_") == "flatrob_jax":
        if not (url == repository or url.startswith(repository + "/")):
            return f"not under [project.urls] Repository {repository}"
    return None


# --------------------------------------------------------------------------- the checks


@pytest.mark.parametrize("path", DOCS, ids=_rel)
def test_every_relative_link_resolves(path):
    found = links(path)
    bad = [f"line {n}: ({t}): {why}" for n, t in found if (why := check_link(path, t))]
    assert not bad, f"{_rel(path)}: broken links:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", DOCS, ids=_rel)
def test_repository_paths_in_code_spans_exist(path):
    bad = []
    for n, span in code_spans(path):
        candidate = span.split(":", 1)[0]  # configs/x.py:smoke names configs/x.py
        if REPO_PATH.match(candidate) and not os.path.exists(os.path.join(REPO, candidate)):
            bad.append(f"line {n}: `{span}`")
    assert not bad, f"{_rel(path)}: repository paths that do not exist:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", DOCS, ids=_rel)
def test_links_to_the_project_use_its_repository_url(path):
    repository = _repository_url()
    bad = [
        f"line {n}: {t}: {why}"
        for n, t in links(path)
        if _external(t) and (why := check_project_url(t, repository))
    ]
    assert not bad, f"{_rel(path)}:\n" + "\n".join(bad)


def test_every_docs_page_is_linked_from_the_readme():
    linked = {
        os.path.normpath(os.path.join(REPO, t.partition("#")[0]))
        for _, t in links(README)
        if not _external(t)
    }
    missing = [_rel(p) for p in DOCS[1:] if p not in linked]
    assert not missing, f"docs pages the README does not link: {missing}"


def test_readme_is_short():
    with open(README, encoding="utf-8") as f:
        n = len(f.read().splitlines())
    assert n < README_MAX_LINES, (
        f"README.md has {n} lines; keep it under {README_MAX_LINES} and move detail to docs/"
    )


def test_readme_shows_the_test_command_ci_runs():
    with open(os.path.join(REPO, ".ci", "run"), encoding="utf-8") as f:
        ci = [line.strip() for line in f if line.strip().startswith("bash .ci/setup --test &&")]
    assert len(ci) == 1, f".ci/run: expected one 'bash .ci/setup --test && ...' line, got {ci}"
    command = ci[0].split("&&", 1)[1].strip()
    assert command.startswith("python3 -m pytest"), command
    with open(README, encoding="utf-8") as f:
        readme = [line.strip() for line in f]
    assert ci[0] in readme, f"README.md lacks the line .ci/run runs, verbatim: {ci[0]!r}"


def test_readme_main_job_runs_a_sweep_that_exists():
    with open(README, encoding="utf-8") as f:
        jobs = re.findall(r"^ {4}bash \.ci/setup && .*--sweep (\S+)", f.read(), re.M)
    assert len(jobs) == 1, f"expected one main-job command in README.md, found {jobs}"
    assert os.path.isfile(os.path.join(REPO, jobs[0].split(":", 1)[0])), jobs[0]


# --------------------------------------------------------------------------- the checker itself


def test_github_slugs():
    assert (
        github_slug("Storage: local disk, mounts and gs://") == "storage-local-disk-mounts-and-gs"
    )
    assert (
        github_slug("Getting a dataset: `dataset.download`") == "getting-a-dataset-datasetdownload"
    )
    assert (
        github_slug("Two commands (fresh Debian machine, root, Python >= 3.11)")
        == "two-commands-fresh-debian-machine-root-python--311"
    )
    assert github_slug("A [linked](x.md) heading_name") == "a-linked-heading_name"


def test_the_checker_finds_broken_links(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "REPO", str(tmp_path))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Same\n\n## Same\n")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/a.md#a-page) [ok](docs/a.md#same-1) [![b](docs/a.md)](docs/a.md)\n"
        "[gone](docs/missing.md) [no heading](docs/a.md#nope) [out](../x.md)\n"
        "```\n[in a fence](nowhere.md)\n```\n`[in code](nowhere.md)` [web](https://example.org)\n"
    )
    why = {t: check_link(str(page), t) for _, t in links(str(page))}
    assert why == {
        "docs/a.md#a-page": None,
        "docs/a.md#same-1": None,
        "docs/a.md": None,
        "docs/missing.md": "docs/missing.md does not exist",
        "docs/a.md#nope": "docs/a.md has no heading with anchor #nope",
        "../x.md": "points outside the repository",
        "https://example.org": None,
    }


def test_the_checker_finds_links_to_another_repository():
    repository = "https://github.com/flatrob-jax/flatrob_jax"
    colab = "https://colab.research.google.com/github/{}/blob/main/notebooks/quickstart.ipynb"
    assert check_project_url(repository + "/issues", repository) is None
    assert check_project_url(colab.format("flatrob-jax/flatrob_jax"), repository) is None
    assert check_project_url("https://github.com/google/flax", repository) is None
    assert check_project_url("https://github.com/someone/flatrob-jax", repository)
    assert check_project_url(colab.format("someone/flatrob_jax"), repository)
    missing = colab.format("flatrob-jax/flatrob_jax").replace("quickstart", "gone")
    assert "does not exist" in check_project_url(missing, repository)
