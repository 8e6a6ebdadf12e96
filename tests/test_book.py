"""The book: configuration in step with the notebooks, and the HTML built under `smoke` with -W.

Fast tests read `_config.yml`, `_toc.yml` and the notebooks. Tests marked ``slow`` use the
session's book build (tests/conftest.py: ``built_book``), which executes every chapter.
"""

from __future__ import annotations

import ast
import os
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlparse

import nbformat
import pytest
import yaml

from conftest import REPO, chapter_notebooks

CONFIG = yaml.safe_load((REPO / "_config.yml").read_text())
TOC = yaml.safe_load((REPO / "_toc.yml").read_text())
NOTEBOOKS = chapter_notebooks()
NB_IDS = [p.stem for p in NOTEBOOKS]
MATHJAX_SCRIPT = "_static/mathjax/tex-chtml.js"


# --------------------------------------------------------------------------------------------
# helpers


def toc_files() -> list[str]:
    """Every ``file:`` entry of _toc.yml (root first), without suffix."""
    files = [TOC["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))

    for part in TOC.get("parts", []):
        walk(part.get("chapters"))
    walk(TOC.get("chapters"))
    return files


def resolve_source(entry: str) -> Path | None:
    for suffix in ("", ".md", ".ipynb"):
        path = REPO / f"{entry}{suffix}"
        if path.is_file():
            return path
    return None


def repo_url() -> str:
    return CONFIG["repository"]["url"].rstrip("/")


def expected_colab_url(notebook: Path) -> str:
    """The Colab URL for a chapter, built the way Colab expects: /github/<org>/<repo>/blob/<branch>/<path>."""
    org_repo = urlparse(repo_url()).path.strip("/")
    prefix = CONFIG["repository"].get("path_to_book", "").strip("/")
    rel = notebook.relative_to(REPO).as_posix()
    path = f"{prefix}/{rel}" if prefix else rel
    colab = CONFIG["launch_buttons"]["colab_url"].rstrip("/")
    return f"{colab}/github/{org_repo}/blob/{CONFIG['repository']['branch']}/{path}"


def install_cell(nb) -> tuple[int, str]:
    """(index, source) of the code cell that assigns REPO_URL."""
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and re.search(r"^\s*REPO_URL\s*=", cell.source, re.MULTILINE):
            return i, cell.source
    raise AssertionError("no code cell assigns REPO_URL (the install cell of the notebook template)")


def repo_url_value(source: str) -> str:
    """The string assigned to REPO_URL, parsed with `ast` (IPython magics and shell lines become `pass`)."""
    python = "\n".join(
        line[: len(line) - len(line.lstrip())] + "pass" if line.lstrip().startswith(("%", "!")) else line
        for line in source.splitlines()
    )
    for node in ast.walk(ast.parse(python)):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "REPO_URL" for t in node.targets):
            assert isinstance(node.value, ast.Constant) and isinstance(node.value.value, str), (
                "REPO_URL must be assigned a plain string literal"
            )
            return node.value.value
    raise AssertionError("REPO_URL is not assigned in the install cell")


class _Tags(HTMLParser):
    """Collects script srcs, stylesheet hrefs, image srcs and anchors of one HTML page."""

    def __init__(self):
        super().__init__()
        self.scripts: list[str] = []
        self.stylesheets: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script" and a.get("src"):
            self.scripts.append(a["src"])
        elif tag == "link" and "stylesheet" in (a.get("rel") or "") and a.get("href"):
            self.stylesheets.append(a["href"])
        elif tag == "img" and a.get("src"):
            self.images.append(a["src"])
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"])


def parse_page(path: Path) -> _Tags:
    tags = _Tags()
    tags.feed(path.read_text(encoding="utf-8"))
    return tags


def is_remote(url: str) -> bool:
    return url.startswith(("http://", "https://", "//"))


def page_html(html_dir: Path, source: Path) -> Path:
    return html_dir / source.relative_to(REPO).with_suffix(".html")


PART = re.compile(r"^\*\*(Part [IVX]+: [^*]+)\*\*$")
CHAPTER = re.compile(r"^- (\d\d) (?:\[([^\]]+)\]\(\.\./(notebooks/[^)]+\.ipynb)\)|(.+))")


def landing_page_plan() -> list[tuple[str, list[tuple[str, str, str | None]]]]:
    """The plan on book/intro.md: ``[(part caption, [(chapter number, title, linked notebook or None)])]``."""
    plan: list[tuple[str, list]] = []
    for line in (REPO / "book" / "intro.md").read_text(encoding="utf-8").splitlines():
        if m := PART.match(line.strip()):
            plan.append((m.group(1), []))
        elif plan and (m := CHAPTER.match(line)):
            number, linked_title, link, plain_title = m.groups()
            plan[-1][1].append((number, linked_title or plain_title.strip(), link))
    return plan


def toc_parts() -> list[tuple[str, list[str]]]:
    """``[(caption, [file, ...])]`` of the _toc.yml parts that are course parts ("Part ...")."""
    return [(p["caption"], [c["file"] for c in p.get("chapters", [])])
            for p in TOC.get("parts", []) if p.get("caption", "").startswith("Part ")]


# --------------------------------------------------------------------------------------------
# fast: configuration and notebooks


def test_toc_entries_exist():
    missing = [entry for entry in toc_files() if resolve_source(entry) is None]
    assert not missing, f"_toc.yml lists files that do not exist: {missing}"


def test_every_chapter_is_in_the_toc():
    listed = {resolve_source(e) for e in toc_files()}
    unlisted = [p.name for p in NOTEBOOKS if p not in listed]
    assert not unlisted, f"chapter notebooks missing from _toc.yml: {unlisted}"


def test_book_pages_in_toc():
    listed = set(toc_files())
    for page in ("book/how-to-use", "book/notation", "book/bibliography"):
        assert page in listed, f"{page} is not in _toc.yml"
    assert TOC["root"] == "book/intro"


def test_config_policy():
    """Settings the course relies on: only toc files, cached execution that fails on errors, offline MathJax."""
    assert CONFIG["only_build_toc_files"] is True
    execute = CONFIG["execute"]
    assert execute["execute_notebooks"] == "cache"
    assert execute["allow_errors"] is False
    assert execute["timeout"] >= 600
    extensions = CONFIG["sphinx"]["extra_extensions"]
    for ext in ("sphinx_proof", "sphinx_exercise", "sphinx-mathjax-offline"):
        assert ext in extensions, f"{ext} missing from sphinx.extra_extensions"
    assert CONFIG["bibtex_bibfiles"] == ["references.bib"]
    assert (REPO / "references.bib").is_file(), "references.bib (the bibliography's source) is missing"


def test_repository_url_is_a_github_repo():
    url = urlparse(repo_url())
    assert url.scheme == "https" and url.netloc == "github.com"
    assert len(url.path.strip("/").split("/")) == 2, f"expected https://github.com/<org>/<repo>, got {repo_url()}"
    assert CONFIG["launch_buttons"]["colab_url"] == "https://colab.research.google.com"


def test_landing_page_plans_fourteen_chapters_in_six_parts():
    plan = landing_page_plan()
    numerals = ["I", "II", "III", "IV", "V", "VI"]
    assert [caption.split(":")[0] for caption, _ in plan] == [f"Part {n}" for n in numerals]
    numbers = [number for _, chapters in plan for number, _, _ in chapters]
    assert numbers == [f"{i:02d}" for i in range(1, 15)]


def test_landing_page_links_exactly_the_written_chapters():
    """A chapter with a notebook is a link to it; a chapter still to be written is a plain title."""
    for _, chapters in landing_page_plan():
        for number, title, link in chapters:
            written = sorted(p.relative_to(REPO).as_posix() for p in NOTEBOOKS if p.name.startswith(f"{number}_"))
            assert [link] == written if written else link is None, (
                f"book/intro.md, chapter {number} {title!r}: links {link}, but the notebooks are {written}"
            )


def test_toc_parts_follow_the_landing_page():
    """Each _toc.yml part has the caption of a part of the plan, in the plan's order, and lists that part's
    written chapters; a part with no written chapter is left out."""
    plan = {caption: [link.removesuffix(".ipynb") for _, _, link in chapters if link]
            for caption, chapters in landing_page_plan()}
    expected = [(caption, files) for caption, files in plan.items() if files]
    assert toc_parts() == expected


def test_there_are_chapters():
    assert NOTEBOOKS, "no chapter notebooks in notebooks/"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=NB_IDS)
def test_install_cell_uses_the_repository_url(notebook):
    """The install cell's REPO_URL is _config.yml's repository.url, and the pip install uses it."""
    nb = nbformat.read(notebook, as_version=4)
    index, source = install_cell(nb)
    first_code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    assert index == first_code, f"the install cell (cell {index}) must be the first code cell ({first_code})"
    assert repo_url_value(source).rstrip("/") == repo_url(), (
        f"{notebook.name}: REPO_URL = {repo_url_value(source)!r} but _config.yml has repository.url = {repo_url()!r}"
    )
    assert "git+" in source and len(re.findall(r"\bREPO_URL\b", source)) >= 2, (
        f"{notebook.name}: the install cell must pip-install coursekit from git+REPO_URL"
    )


# --------------------------------------------------------------------------------------------
# slow: the built book


@pytest.mark.slow
def test_book_builds_without_warnings(built_book):
    if built_book.returncode is None:
        pytest.skip("DGM_TEST_BOOK_HTML is set: reusing an existing build, not building")
    assert built_book.returncode == 0, (
        f"jupyter-book build -W -n --keep-going failed (rc={built_book.returncode}).\n"
        "Warnings/errors:\n" + "\n".join(built_book.warnings()[:40]) + "\n\nLog tail:\n" + built_book.tail(80)
    )


@pytest.mark.slow
def test_build_executes_the_chapters_in_parallel_then_reads_them_from_the_cache(built_book):
    """The session's build starts with an empty cache: book/_ext/parallel_execution.py executes every chapter,
    one per core, before the pages are read, and myst-nb then takes every chapter from the cache."""
    if built_book.returncode is None:
        pytest.skip("DGM_TEST_BOOK_HTML is set: reusing an existing build, not building")
    log = built_book.log
    started = re.search(r"\[parallel_execution\] executing (\d+) notebook\(s\), (\d+) at a time", log)
    assert started, f"the build did not execute the notebooks in parallel; log tail:\n{built_book.tail()}"
    assert int(started.group(1)) == len(NOTEBOOKS)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert int(started.group(2)) == min(len(NOTEBOOKS), cores)
    from_cache = {Path(p).name for p in re.findall(r"(\S+\.ipynb): Using cached notebook", log)}
    assert from_cache == {p.name for p in NOTEBOOKS}
    assert "Executing notebook using" not in log, "myst-nb executed a notebook itself"


@pytest.mark.slow
@pytest.mark.parametrize("source", [p for e in toc_files() if (p := resolve_source(e))], ids=lambda p: p.stem)
def test_every_toc_page_is_built(built_book, source):
    assert page_html(built_book.require_html(), source).is_file()


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=NB_IDS)
def test_chapter_page(built_book, notebook):
    """The chapter was executed under `smoke`, its figures were written, and its solutions are dropdowns."""
    page = page_html(built_book.require_html(), notebook)
    assert page.is_file(), f"no HTML for {notebook.name}"
    text = page.read_text(encoding="utf-8")
    if built_book.returncode is not None:
        assert "profile=smoke" in text, "the set-up cell's output should show the smoke profile"
    tags = parse_page(page)
    figures = [src for src in tags.images if "_images/" in src]
    assert figures, "the chapter shows no figure from its executed cells (is MPLBACKEND set to a non-inline backend?)"
    for src in figures:
        assert (page.parent / src).resolve().is_file(), f"missing image file {src}"
    nb = nbformat.read(notebook, as_version=4)
    gates = sum(
        len(re.findall(r"^ {0,3}(`{3,}|:{3,})\{solution-start\}", c.source, re.MULTILINE))
        for c in nb.cells if c.cell_type == "markdown"
    )
    dropdowns = len(re.findall(r'class="solution dropdown', text))
    assert dropdowns == gates, f"{gates} gated solutions in the notebook but {dropdowns} solution dropdowns in the page"
    assert 'class="cell tag_solution' in text or gates == 0


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=NB_IDS)
def test_colab_button_opens_the_chapter_notebook(built_book, notebook):
    page = page_html(built_book.require_html(), notebook)
    colab = [href for href in parse_page(page).links if "colab.research.google.com" in href]
    assert colab == [expected_colab_url(notebook)], f"Colab links on the page: {colab}"


@pytest.mark.slow
def test_bibliography_page(built_book):
    page = built_book.require_html() / "book" / "bibliography.html"
    assert page.is_file()
    cites = any("{cite" in c.source for p in NOTEBOOKS for c in nbformat.read(p, as_version=4).cells)
    if cites:
        assert 'class="citation"' in page.read_text(encoding="utf-8"), "the bibliography page lists no entries"


@pytest.mark.slow
def test_mathjax_is_served_locally(built_book):
    """Every page loads MathJax from _static/mathjax (present in the build), and no script or stylesheet from the
    network."""
    html = built_book.require_html()
    assert (html / MATHJAX_SCRIPT).is_file(), "MathJax was not copied into the build"
    assert (html / "_static/mathjax/output/chtml/fonts/woff-v2").is_dir(), "MathJax's fonts were not copied"
    for entry in toc_files():
        page = page_html(html, resolve_source(entry))
        tags = parse_page(page)
        remote = [u for u in tags.scripts + tags.stylesheets if is_remote(u)]
        assert not remote, f"{page.name} loads from the network: {remote}"
        mathjax = [s for s in tags.scripts if "mathjax" in s.lower()]
        # Sphinx adds MathJax only where there is math
        if 'class="math notranslate' in page.read_text(encoding="utf-8"):
            assert mathjax, f"{page.name} has math but does not load MathJax"
        for src in mathjax:
            assert src.split("?")[0].endswith(MATHJAX_SCRIPT), f"{page.name}: unexpected MathJax script {src}"
            assert (page.parent / src.split("?")[0]).resolve().is_file(), f"{page.name}: {src} does not exist"
