"""The built book in a browser: every page loads cleanly in headless Chromium, every internal
link, image and cross-reference resolves, every figure has alt text, and search works.

Run by `make test-site` after `make book` (not by `make test-unit`: it needs the built site).
Pages are discovered from the built site and `_toc.yml`, never listed here.

Nothing is allowlisted: any console error (Chromium's "error" level, i.e. what ChromeDriver
calls SEVERE, including failed resource loads), uncaught exception, failed request or HTTP
error fails the page. Requests outside 127.0.0.1 are blocked (this machine has no outside
network; blocking makes the result the same everywhere), except the book's MathJax CDN script,
which is answered from the same MathJax release installed locally (analysis.site.route_mathjax)
so that every formula is really typeset and TeX errors are caught.
"""

from __future__ import annotations

import re

import pytest

from analysis import site
from conftest import TOC, built_pages

#: Every request that is not to the local server. Registered first, so the MathJax route
#: (registered after it) takes precedence for the CDN's MathJax URLs.
OUTSIDE = re.compile(r"^(?!http://127\.0\.0\.1[:/])")
#: How long a page may take to load and typeset (ms).
TIMEOUT_MS = 30_000


class PageRecorder:
    """A fresh browser context (empty storage, as on a reader's first visit) that records
    everything that went wrong while a page loaded."""

    def __init__(self, browser):
        self.context = browser.new_context()
        self.context.set_default_timeout(TIMEOUT_MS)
        self.context.route(OUTSIDE, lambda route: route.abort("blockedbyclient"))
        site.route_mathjax(self.context)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"uncaught exception: {exc}"))
        self.page.on("requestfailed", lambda req: self.errors.append(f"request failed: {req.url} ({req.failure})"))
        self.page.on("response", self._response)

    def _console(self, msg):
        if msg.type == "error":
            loc = msg.location or {}
            where = f" [{loc.get('url', '')}:{loc.get('lineNumber', '')}]" if loc.get("url") else ""
            self.errors.append(f"console error: {msg.text}{where}")

    def _response(self, resp):
        if resp.status >= 400:
            self.errors.append(f"HTTP {resp.status}: {resp.url}")

    def close(self):
        self.context.close()


@pytest.fixture
def recorder(browser):
    rec = PageRecorder(browser)
    yield rec
    rec.close()


def meta_refresh_target(path) -> str | None:
    """The URL a ``<meta http-equiv="Refresh">`` page sends the reader to, if any."""
    meta = site.parse_page(path).find("meta", attrs={"http-equiv": re.compile("^refresh$", re.I)})
    if meta is None:
        return None
    match = re.search(r"url=(.+)$", meta.get("content", ""), re.I)
    return match.group(1).strip() if match else None


@pytest.mark.parametrize("rel", built_pages())
def test_page_loads_in_chromium_without_errors(rel, site_root, base_url, recorder):
    page = recorder.page
    response = page.goto(base_url + rel, wait_until="load")
    assert response is not None and response.ok, f"{rel}: HTTP {response and response.status}"
    redirect = meta_refresh_target(site_root / rel)
    if redirect:
        # the root index.html only forwards the reader to the first page
        page.wait_for_url("**/" + redirect.lstrip("./"), wait_until="load")
    mathjax = site.wait_for_mathjax(page, TIMEOUT_MS)
    assert mathjax != "not loaded", f"{rel}: the page loads MathJax but it never started"
    if page.locator(".math").count():
        assert mathjax == "typeset" and page.locator("mjx-container").count(), f"{rel}: the page has math that MathJax did not typeset"
    tex_errors = site.mathjax_errors(page) or page.locator("mjx-merror").all_text_contents()
    assert not tex_errors, f"{rel}: MathJax could not typeset: {tex_errors}"
    assert page.title().strip(), f"{rel}: the page has no title"
    assert not recorder.errors, f"{rel}:\n  " + "\n  ".join(recorder.errors)


def test_every_toc_entry_is_a_built_page_with_a_title(site_root):
    docnames = site.toc_docnames(TOC)
    missing = [d for d in docnames if not (site_root / f"{d}.html").is_file()]
    assert not missing, f"in _toc.yml but not built: {missing}"
    untitled = [d for d in docnames if not site.page_title(site_root / f"{d}.html")]
    assert not untitled, f"pages without an <h1> title: {untitled}"


def test_internal_links_images_and_anchors_resolve(site_root):
    problems = site.check_links(site_root)
    assert not problems, "\n".join(map(str, problems))


def test_every_figure_has_alt_text(site_root):
    problems = site.check_alt_text(site_root)
    assert not problems, "\n".join(map(str, problems))


def test_no_missing_value_in_the_prose(site_root):
    problems = site.check_glue_text(site_root)
    assert not problems, "\n".join(map(str, problems))


def test_no_unresolved_cross_references(site_root):
    problems = site.check_xrefs(site_root)
    assert not problems, "\n".join(map(str, problems))


def test_search_finds_fixed_effects(base_url, recorder):
    page = recorder.page
    page.goto(base_url + "search.html?q=fixed+effects", wait_until="load")
    summary = page.locator("#search-results .search-summary")
    summary.wait_for(state="attached")
    page.wait_for_function(
        "() => /Search finished|did not match/.test(document.querySelector('#search-results .search-summary').textContent)",
        timeout=TIMEOUT_MS,
    )
    results = page.locator("#search-results ul.search li")
    titles = [t.strip() for t in page.locator("#search-results ul.search li > a").all_text_contents()]
    assert results.count() >= 1, f"no results for 'fixed effects': {summary.text_content()!r}"
    assert all(titles), f"a search result without a title: {titles}"
    # a result links to a page of the book that exists
    href = page.locator("#search-results ul.search li > a").first.get_attribute("href")
    assert href and not href.startswith("http"), href
    assert not recorder.errors, "search page:\n  " + "\n  ".join(recorder.errors)
