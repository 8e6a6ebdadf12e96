"""Shared fixtures: the book built once per test session (used by test_book.py and test_browser.py), and the
scheduling of the suite over several pytest-xdist workers.

The book is built exactly as `make book` builds it, but under the ``smoke`` profile, with warnings as
errors, into a temporary directory (so the session has its own fresh execution cache and never reuses
the ``cpu`` results in ``_build``).

Set ``DGM_TEST_BOOK_HTML=/path/to/_build/html`` to reuse an existing build instead (for iterating on
the HTML tests only; the build test then reports that it was skipped).

`make test` runs the suite on every core with ``-n auto --dist loadfile --no-loadscope-reorder``: each
file is one unit of work that stays on one worker, in order, which nbval needs (a notebook's cells share
one kernel). Two refinements, below: test_book.py and test_browser.py are one unit, so that the session's
book build (the longest single test) happens once, and that unit is handed out first, followed by the
notebooks, so that it is not queued behind the rest of the suite.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
BUILD_TIMEOUT_S = 1800

#: The test files that use the session's book build (the ``built_book`` fixture): one xdist unit of work.
BOOK_TEST_FILES = ("tests/test_book.py", "tests/test_browser.py")


def _xdist_rank(item) -> int:
    """Order of the units of work under xdist: the book build first, then the notebooks, then the rest."""
    path = item.nodeid.split("::", 1)[0]
    return 0 if path in BOOK_TEST_FILES else 1 if path.endswith(".ipynb") else 2


def pytest_collection_modifyitems(config, items):
    # Only on xdist workers (every worker sorts its collection the same way, as xdist requires). The sort is
    # stable: the tests of one file, and the cells of one notebook, keep their order.
    if hasattr(config, "workerinput"):
        items.sort(key=_xdist_rank)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Under ``--dist loadfile``: file-level units, except that the book's test files form one unit."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling  # only reached when pytest-xdist is running

    class BookFilesTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            return BOOK_TEST_FILES[0] if scope in BOOK_TEST_FILES else scope

    return BookFilesTogether(config, log)


@dataclasses.dataclass
class BookBuild:
    """Result of building the book: the HTML directory, the return code and the log."""

    html: Path
    returncode: int | None  # None when an existing build was reused
    log: str
    seconds: float

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.log.splitlines()[-n:])

    def warnings(self) -> list[str]:
        return [line for line in self.log.splitlines() if "WARNING" in line or "ERROR" in line]

    def require_html(self) -> Path:
        """The HTML directory, or fail the calling test if the build produced none."""
        if not (self.html / "index.html").exists():
            pytest.fail(f"the book build produced no HTML in {self.html}; build log tail:\n{self.tail()}")
        return self.html


def chapter_notebooks() -> list[Path]:
    """The chapter notebooks (``notebooks/NN_topic.ipynb``), sorted."""
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def _jupyter_book_command() -> list[str]:
    exe = Path(sys.executable).parent / "jupyter-book"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("jupyter-book")
    if found is None:
        pytest.fail("jupyter-book is not installed in this environment (pip install -e '.[book]')")
    return [found]


@pytest.fixture(scope="session")
def built_book(tmp_path_factory) -> BookBuild:
    """Build the book under COURSEKIT_PROFILE=smoke with `-W -n --keep-going` (once per session)."""
    reuse = os.environ.get("DGM_TEST_BOOK_HTML")
    if reuse:
        return BookBuild(html=Path(reuse), returncode=None, log=f"(reused {reuse})", seconds=0.0)
    out = tmp_path_factory.mktemp("book")
    env = dict(os.environ)
    env["COURSEKIT_PROFILE"] = "smoke"
    # The notebook kernels inherit this environment; a non-interactive MPLBACKEND (e.g. Agg, which
    # the test command sets for the unit tests) would stop plt.show() from producing inline figures.
    env.pop("MPLBACKEND", None)
    cmd = _jupyter_book_command() + ["build", str(REPO), "--path-output", str(out), "-W", "-n", "--keep-going"]
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, check=False, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            timeout=BUILD_TIMEOUT_S,
        )
        returncode, log = proc.returncode, proc.stdout
    except subprocess.TimeoutExpired as exc:
        returncode = -1
        log = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        log += f"\n[test] book build timed out after {BUILD_TIMEOUT_S} s"
    seconds = time.perf_counter() - start
    (out / "build.log").write_text(log)
    print(f"\n[built_book] {' '.join(cmd)}: rc={returncode} in {seconds:.1f} s; log in {out / 'build.log'}")
    return BookBuild(html=out / "_build" / "html", returncode=returncode, log=log, seconds=seconds)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """The tests use tiny tensors: one intra-op thread is faster, and far faster on a shared 2-core machine."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
