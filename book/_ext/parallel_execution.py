"""Sphinx extension: execute the book's outdated notebooks in parallel, into the cache myst-nb reads.

With ``execute_notebooks: cache`` myst-nb executes every notebook that is missing from its jupyter-cache
while it reads that notebook, so one notebook at a time. The course's notebooks run their networks on one
thread, which leaves the other cores idle. This extension runs before Sphinx reads any document (on
``env-before-read-docs``, when the list of documents to read is known): it looks each notebook among them
up in the same cache, executes the missing ones at the same time, one kernel per core, with myst-nb's own
execution settings (timeout, allow_errors, run_in_temp, exclude patterns, kernel aliases and per-notebook
``mystnb`` metadata), and stores them in the cache exactly as myst-nb would. When myst-nb then reads the
notebooks it finds every one in the cache ("Using cached notebook") and executes nothing.

A notebook whose execution fails stops the build with its traceback, after the notebooks that succeeded
have been cached. Nothing happens unless the execution mode is ``cache``.

Each kernel talks to its client over IPC sockets in a directory of its own rather than over TCP ports on
localhost: a TCP port is chosen by binding port 0 and releasing it, so kernels started at the same moment (two
here, and others in the test suite's workers) can be handed the same port, and a client then waits forever for a
reply that went to another kernel.
"""

from __future__ import annotations

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path, PurePosixPath
from tempfile import TemporaryDirectory

import nbformat
from jupyter_cache import get_cache
from jupyter_cache.base import CacheBundleIn
from jupyter_cache.cache.db import NbProjectRecord
from jupyter_cache.executors.utils import single_nb_execution
from jupyter_client.manager import KernelManager
from sphinx.errors import ExtensionError
from sphinx.util import logging

logger = logging.getLogger(__name__)


def cpu_cores() -> int:
    """The number of cores this process may run on (its CPU affinity where the OS reports one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def notebook_as_myst_nb_reads_it(path: Path, config):
    """``(notebook, execution config)`` as myst-nb prepares them before its cache look-up.

    myst-nb renames the kernel by ``nb_kernel_rgx_aliases`` and applies the notebook's ``mystnb`` metadata to
    its configuration; the cache key depends on the kernelspec, so the same steps are needed for a match.
    """
    nb = nbformat.read(path, as_version=4)
    kernel = nb.metadata.get("kernelspec", {}).get("name")
    if kernel is not None:
        for pattern, alias in (config.kernel_rgx_aliases or {}).items():
            if re.fullmatch(pattern, kernel):
                nb.metadata["kernelspec"]["name"] = alias
                break
    if config.metadata_key in nb.metadata:
        overrides = dict(nb.metadata[config.metadata_key])
        overrides.pop("output_folder", None)
        config = config.copy(**overrides)
    return nb, config


def execute(path: Path, nb, config):
    """Execute ``nb`` (from ``path``) as myst-nb's cache client does; returns jupyter-cache's result."""
    cwd_context = TemporaryDirectory() if config.execution_in_temp else nullcontext(str(path.parent))
    kernel = nb.metadata.get("kernelspec", {}).get("name", "python3")
    with cwd_context as cwd, TemporaryDirectory(prefix="kernel-ipc-") as sockets:
        km = KernelManager(kernel_name=kernel, transport="ipc", ip=os.path.join(sockets, "kernel"))
        try:
            return single_nb_execution(nb, cwd=os.path.abspath(cwd), allow_errors=config.execution_allow_errors,
                                       timeout=config.execution_timeout, meta_override=True, km=km)
        finally:
            if km.has_kernel:
                km.shutdown_kernel(now=True)


def outdated_notebooks(env, docnames, cache) -> list[tuple[Path, object, object]]:
    """The notebooks among ``docnames`` that myst-nb would execute: ``(path, notebook, config)`` each."""
    todo = []
    for docname in sorted(docnames):
        path = Path(env.doc2path(docname))
        if path.suffix != ".ipynb" or not path.is_file():
            continue
        nb, config = notebook_as_myst_nb_reads_it(path, env.mystnb_config)  # per-notebook overrides first
        posix = PurePosixPath(path.as_posix())
        if config.execution_mode != "cache" or any(posix.match(p) for p in config.execution_excludepatterns):
            continue
        try:
            cache.match_cache_notebook(nb)
        except KeyError:
            todo.append((path, nb, config))
    return todo


def fill_cache(app, env, docnames) -> None:
    """``env-before-read-docs`` handler: execute the outdated notebooks in parallel and cache them."""
    config = getattr(env, "mystnb_config", None)
    if config is None or config.execution_mode != "cache":
        return
    cache = get_cache(config.execution_cache_path)
    todo = outdated_notebooks(env, docnames, cache)
    if not todo:
        logger.info("[parallel_execution] every notebook to read is in the cache; nothing to execute")
        return
    jobs = min(cpu_cores(), len(todo))
    names = ", ".join(str(Path(p).relative_to(app.srcdir)) for p, _, _ in todo)
    logger.info(f"[parallel_execution] executing {len(todo)} notebook(s), {jobs} at a time: {names}")
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(lambda job: execute(*job), todo))
    failed = []
    for (path, nb, item_config), result in zip(todo, results):
        rel = Path(path).relative_to(app.srcdir)
        stage = cache.add_nb_to_project(str(path))
        NbProjectRecord.remove_tracebacks([stage.pk], cache.db)
        if result.err is not None:
            NbProjectRecord.set_traceback(stage.uri, result.exc_string, cache.db)
            if item_config.execution_raise_on_error or not item_config.execution_allow_errors:
                logger.error(f"[parallel_execution] executing {rel} failed ({result.err.__class__.__name__}):\n"
                             f"{result.exc_string}")
                failed.append(str(rel))
            else:
                logger.warning(f"[parallel_execution] executing {rel} failed ({result.err.__class__.__name__}); "
                               f"not cached, so the build executes it again while reading it")
            continue
        cache.cache_notebook_bundle(CacheBundleIn(nb, stage.uri, data={"execution_seconds": result.time}),
                                    check_validity=False, overwrite=True)
        logger.info(f"[parallel_execution] executed and cached {rel} in {result.time:.1f} s")
    logger.info(f"[parallel_execution] {len(todo)} notebook(s) in {time.perf_counter() - start:.1f} s wall time")
    if failed:
        raise ExtensionError(f"executing {len(failed)} notebook(s) failed (tracebacks above): {', '.join(failed)}")


def setup(app):
    app.connect("env-before-read-docs", fill_cache)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
