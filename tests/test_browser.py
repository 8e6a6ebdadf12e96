"""Headless Chromium on the built book: math rendered, images loaded, Colab button right, no network.

Uses the session's book build (tests/conftest.py) served by a local HTTP server on 127.0.0.1, and
the system's Chromium (Debian: `apt-get install chromium`) driven by Playwright for Python, which
never downloads a browser here. Skipped, with the reason, when either is missing.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

from conftest import REPO, chapter_notebooks

pytestmark = pytest.mark.slow

NOTEBOOKS = chapter_notebooks()
#: Pages checked in the browser: every chapter plus the notation page (prose pages without math
#: do not load MathJax at all).
PAGES = [p.relative_to(REPO).with_suffix(".html").as_posix() for p in NOTEBOOKS] + ["book/notation.html"]
#: TeX that must not be visible once MathJax has typeset the page (code blocks excluded).
RAW_TEX = re.compile(
    r"\$\$|\\begin\{|\\end\{|\\\(|\\\[|\\(frac|mathcal|mathbb|mathrm|log|sum|int|theta|phi|mid|left|right)\b"
)


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("playwright (python) is not installed: pip install playwright (no browser download needed)")
    exe = chromium_path()
    if exe is None:
        pytest.skip("Chromium not found on PATH (chromium or chromium-browser); on Debian: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=exe,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"],
        )
        try:
            yield browser
        finally:
            browser.close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture(scope="module")
def server(built_book):
    """Serve the built HTML on 127.0.0.1 (an ephemeral port); yields the base URL."""
    html = built_book.require_html()
    handler = functools.partial(_QuietHandler, directory=str(html))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def open_page(browser, base: str, path: str):
    """Open a page with every non-local request blocked; returns (page, list of blocked URLs)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    blocked: list[str] = []
    page_errors: list[str] = []

    def route(r):
        host = urlparse(r.request.url).hostname
        if host in ("127.0.0.1", None):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    response = page.goto(f"{base}/{path}", wait_until="load")
    assert response is not None and response.ok, f"GET {path}: {response.status if response else 'no response'}"
    # MathJax 3 resolves startup.promise once the initial typesetting is done.
    page.wait_for_function(
        "() => window.MathJax && window.MathJax.startup && window.MathJax.startup.promise", timeout=30_000
    )
    page.evaluate("() => window.MathJax.startup.promise")
    return context, page, blocked, page_errors


VISIBLE_PROSE_JS = """
() => {
  const root = (document.querySelector('main') || document.body).cloneNode(true);
  root.querySelectorAll('pre, code, script, style, mjx-container, .highlight, .cell_output').forEach(e => e.remove());
  return root.textContent;
}
"""

IMAGES_JS = """
async () => {
  const imgs = Array.from(document.images);
  await Promise.all(imgs.map(img => {
    img.loading = 'eager';
    return img.complete ? null : new Promise(r => { img.onload = img.onerror = r; setTimeout(r, 10000); });
  }));
  return imgs.map(img => ({src: img.getAttribute('src'), w: img.naturalWidth, h: img.naturalHeight}));
}
"""


@pytest.mark.parametrize("path", PAGES)
def test_page_renders(browser, server, built_book, path, tmp_path):
    context, page, blocked, page_errors = open_page(browser, server, path)
    try:
        n_math = page.locator("mjx-container").count()
        assert n_math > 0, "no typeset math (mjx-container) on the page"
        assert page.locator("mjx-merror").count() == 0, (
            "MathJax reported TeX errors: " + "; ".join(page.locator("mjx-merror").all_inner_texts()[:5])
        )
        prose = page.evaluate(VISIBLE_PROSE_JS)
        raw = sorted({m.group(0) for m in RAW_TEX.finditer(prose)})
        if raw:
            snippets = [
                prose[max(0, m.start() - 60): m.end() + 60].replace("\n", " ") for m in RAW_TEX.finditer(prose)
            ][:3]
            pytest.fail(f"raw TeX left in the page's text: {raw}; e.g. {snippets}")

        images = page.evaluate(IMAGES_JS)
        broken = [img["src"] for img in images if img["w"] == 0]
        assert not broken, f"images that did not load: {broken}"
        assert not blocked, f"the page tried to load from the network: {blocked[:5]}"
        assert not page_errors, f"JavaScript errors on the page: {page_errors[:3]}"

        shot = tmp_path / (Path(path).stem + ".png")
        page.screenshot(path=str(shot), full_page=False)
        assert shot.stat().st_size > 10_000
        print(f"[browser] {path}: {n_math} formulas, {len(images)} images; screenshot {shot}")
    finally:
        context.close()


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_colab_button(browser, server, notebook):
    rel = notebook.relative_to(REPO).as_posix()
    context, page, _, _ = open_page(browser, server, notebook.relative_to(REPO).with_suffix(".html").as_posix())
    try:
        figures = page.evaluate(IMAGES_JS)
        assert any("_images/" in img["src"] for img in figures), "the chapter shows no figure from its executed cells"
        links = page.locator("a[href*='colab.research.google.com']")
        assert links.count() == 1, f"expected one Colab launch link, found {links.count()}"
        href = links.first.get_attribute("href")
        assert href.startswith("https://colab.research.google.com/github/"), href
        assert href.endswith(f"/blob/main/{rel}"), f"the Colab button opens {href}, not {rel} on main"
        # The launch menu is a dropdown: open it and check the link becomes visible and clickable.
        page.locator("button[aria-label='Launch interactive content']").first.click()
        links.first.wait_for(state="visible", timeout=5_000)
    finally:
        context.close()
