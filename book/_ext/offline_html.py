"""Sphinx extension: keep the built book free of network resources.

Jupyter Book always loads sphinx-thebe, which writes the address of the thebe bundle on a
CDN into every page (fetched when a reader starts live code through Binder). This book is
read offline, with MathJax served from ``_static``; the thebe scripts are dropped from
every page, and the build fails if any page still points a script or stylesheet at the
network.
"""

from __future__ import annotations

import re

REMOTE = re.compile(r"^(https?:)?//")


def _drop_thebe(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if scripts is None:
        return
    kept = []
    for script in scripts:
        filename = str(script)
        body = getattr(script, "attributes", {}).get("body", "") or ""
        if "thebe" in filename or "THEBE_JS_URL" in body:
            continue
        if REMOTE.match(filename):
            raise RuntimeError(f"{pagename}: remote script {filename} in an offline book")
        kept.append(script)
    context["script_files"] = kept
    for css in context.get("css_files", []):
        if REMOTE.match(str(css)):
            raise RuntimeError(f"{pagename}: remote stylesheet {css} in an offline book")


def setup(app):
    app.connect("html-page-context", _drop_thebe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
