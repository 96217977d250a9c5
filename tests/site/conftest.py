"""Fixtures of the browser tests of the built book (run by `make test-site`, after `make book`).

The site is served from ``_build/html`` (or ``$SITE_DIR``) on 127.0.0.1 at an ephemeral port,
and read by Debian's headless Chromium (/usr/bin/chromium, with a fresh empty profile per launch)
through Playwright. A missing site or browser is a failure with the command that fixes it,
never a skip.

Why Playwright (``executable_path=/usr/bin/chromium``) rather than selenium + chromedriver:
``route()`` lets a test answer the book's MathJax CDN request from a local copy (the machine
has no outside network) and block every other outside request, so formulas really typeset
and TeX errors can be checked; console messages, uncaught exceptions and failed requests
arrive as events (no polling of a log); ``page.pdf()`` prints the book for ``make pdf``; and
no driver binary has to match the browser's version.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from analysis import site
from analysis.paths import ROOT

SITE_DIR = Path(os.environ.get("SITE_DIR", ROOT / "_build" / "html"))
TOC = ROOT / "_toc.yml"


def site_is_built() -> bool:
    return (SITE_DIR / "index.html").is_file()


def built_pages() -> list[str]:
    """Every page of the built site, relative to its root; a placeholder if it is not built
    (so that the tests run and fail through the ``site_root`` fixture instead of being skipped)."""
    if not site_is_built():
        return ["<site not built>"]
    root = SITE_DIR.resolve()
    return [p.relative_to(root).as_posix() for p in site.html_pages(root)]


@pytest.fixture(scope="session")
def site_root() -> Path:
    if not site_is_built():
        pytest.fail(f"the book is not built: {SITE_DIR / 'index.html'} is missing; run `make book` first", pytrace=False)
    return SITE_DIR.resolve()


@pytest.fixture(scope="session")
def base_url(site_root):
    with site.serve(site_root) as url:
        yield url


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(site.CHROMIUM).is_file():
        pytest.fail(f"no Chromium at {site.CHROMIUM}: run `bash .ci/install-browser.sh`", pytrace=False)
    with sync_playwright() as pw:
        chromium = site.launch_chromium(pw)
        try:
            yield chromium
        finally:
            chromium.close()
