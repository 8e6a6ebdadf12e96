"""Sphinx extension: drop duplicate inline <script> tags from the HTML pages.

Sphinx 7.4 (the version jupyter-book 1.x uses) emits an inline script twice when an extension
registers it with ``app.add_js_file(None, body=...)`` after the builder is initialised: once with
filename ``None`` (added to the builder directly) and once with filename ``''`` (re-added from the
registry before writing), and the two compare unequal. sphinx-thebe's configuration script declares
``const THEBE_JS_URL``, so its copy raises "Identifier 'THEBE_JS_URL' has already been declared" in
every page's console (sphinx-togglebutton's ``var`` copy is merely redundant). This extension removes
the second copy of any script with the same source, priority and attributes, page by page.
"""

from __future__ import annotations


def _key(js):
    filename = getattr(js, "filename", js) or ""
    attributes = getattr(js, "attributes", {}) or {}
    return (str(filename), getattr(js, "priority", 500), tuple(sorted((k, str(v)) for k, v in attributes.items())))


def _dedupe(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for js in scripts:
        key = _key(js)
        if key not in seen:
            seen.add(key)
            unique.append(js)
    scripts[:] = unique


def setup(app):
    app.connect("html-page-context", _dedupe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
