"""The built book works offline: no page loads a script, stylesheet or image from the network.

Runs on the HTML in ``_build/html`` (``make render`` or ``make book`` writes it). Skipped when
the book has not been built, except when ``REQUIRE_BOOK_HTML=1`` (``.ci/run`` sets it after
rendering), where a missing build is a failure.
"""

from __future__ import annotations

import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
REMOTE = re.compile(r"^\s*(https?:)?//", re.IGNORECASE)

if not (HTML / "index.html").exists():
    if os.environ.get("REQUIRE_BOOK_HTML") == "1":
        raise RuntimeError(f"{HTML} has no built book; run `make render` first")
    pytest.skip("book not built (run `make render`)", allow_module_level=True)


class _Resources(HTMLParser):
    """Collects the URLs a browser would fetch on page load."""

    def __init__(self):
        super().__init__()
        self.urls: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("script", "img", "iframe", "audio", "video", "source") and attrs.get("src"):
            self.urls.append((tag, attrs["src"]))
        if tag == "link" and attrs.get("href") and attrs.get("rel", "") in ("stylesheet", "preload", "icon"):
            self.urls.append((tag, attrs["href"]))


def _pages():
    """The book's pages (theme templates copied into _static are not pages)."""
    return sorted(p for p in HTML.rglob("*.html") if "_static" not in p.relative_to(HTML).parts)


def _toc_files():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    stack = list(toc.get("parts", []))
    while stack:
        item = stack.pop()
        for entry in item.get("chapters", []) + item.get("sections", []):
            files.append(entry["file"])
            stack.append(entry)
    return files


def test_every_toc_entry_was_built():
    missing = [f for f in _toc_files() if not (HTML / f"{f}.html").exists()]
    assert not missing, f"pages missing from the build: {missing}"


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(HTML)))
def test_page_fetches_nothing_remote(page):
    parser = _Resources()
    parser.feed(page.read_text(encoding="utf-8"))
    remote = [(tag, url) for tag, url in parser.urls if REMOTE.match(url)]
    assert not remote, f"{page.name} loads from the network: {remote}"
    # and the local files it refers to exist
    for tag, url in parser.urls:
        local = (page.parent / url.split("?")[0].split("#")[0]).resolve()
        assert local.exists(), f"{page.name}: {tag} refers to missing file {url}"


def test_math_is_typeset_by_a_local_mathjax():
    page = (HTML / "book" / "02_concepts.html").read_text(encoding="utf-8")
    assert "_static/mathjax/tex-chtml.js" in page
    assert (HTML / "_static" / "mathjax" / "tex-chtml.js").stat().st_size > 100_000
    assert "\\operatorname{round}" in page  # the formulas are on the page for MathJax to render
