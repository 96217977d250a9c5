"""Accessibility of the built book: axe-core (bundled by axe-playwright-python, so nothing is
fetched) on a representative set of pages, in the light and the dark theme, in headless Debian
Chromium. Any violation of impact "serious" or "critical" fails, with the rule, the help text
and the elements; "moderate" and "minor" ones are printed, not failed.

Pages: the landing page, the first chapter of every part of ``_toc.yml`` (the last part is the
appendices), the execution statistics appendix (a table) and the bibliography (a citation list).
Every page of the book was checked this way once, in both themes, when the test was written. The theme is chosen as a reader's
choice is remembered: ``localStorage`` ``mode`` (and ``theme``) before the page loads, which the
theme (pydata-sphinx-theme) applies as ``<html data-theme=...>`` (checked). Run by `make test-site` after `make book`.
"""

from __future__ import annotations

import re

import pytest
import yaml
from conftest import TOC

from analysis import site

OUTSIDE = re.compile(r"^(?!http://127\.0\.0\.1[:/])")
TIMEOUT_MS = 30_000
FAILING_IMPACTS = ("serious", "critical")


def representative_pages() -> list[str]:
    toc = yaml.safe_load(TOC.read_text())
    docs = [toc["root"]] + [part["chapters"][0]["file"] for part in toc.get("parts", []) if part.get("chapters")]
    docs += ["book/appendix_execution", "book/bibliography"]
    return [f"{re.sub(r'[.](md|ipynb)$', '', d)}.html" for d in dict.fromkeys(docs)]


def violation_report(violations) -> str:
    lines = []
    for v in violations:
        lines.append(f"{v['id']} ({v['impact']}): {v['help']} [{v.get('helpUrl', '')}]")
        for node in v["nodes"][:5]:
            lines.append(f"    {', '.join(map(str, node['target']))}: {node.get('failureSummary', '').splitlines()[-1:]}")
            lines.append(f"      {node.get('html', '')[:200]}")
        if len(v["nodes"]) > 5:
            lines.append(f"    ... and {len(v['nodes']) - 5} more")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def axe():
    from axe_playwright_python.sync_playwright import Axe

    return Axe()


@pytest.mark.parametrize("mode", ["light", "dark"])
@pytest.mark.parametrize("rel", representative_pages())
def test_no_serious_accessibility_violations(rel, mode, site_root, base_url, browser, axe):
    assert (site_root / rel).is_file(), f"{rel} is not in the built site"
    context = browser.new_context()
    try:
        context.set_default_timeout(TIMEOUT_MS)
        context.route(OUTSIDE, lambda route: route.abort("blockedbyclient"))
        site.route_mathjax(context)
        context.add_init_script(f"localStorage.setItem('mode', '{mode}'); localStorage.setItem('theme', '{mode}');")
        page = context.new_page()
        page.goto(base_url + rel, wait_until="load")
        site.wait_for_mathjax(page, TIMEOUT_MS)
        assert page.evaluate("document.documentElement.dataset.theme") == mode
        results = axe.run(page, options={"resultTypes": ["violations"]}).response
    finally:
        context.close()
    violations = results["violations"]
    failing = [v for v in violations if v["impact"] in FAILING_IMPACTS]
    others = [v for v in violations if v["impact"] not in FAILING_IMPACTS]
    if others:
        print(f"{rel} ({mode}), not failing:\n" + violation_report(others))
    assert not failing, f"{rel} ({mode} theme): accessibility violations\n" + violation_report(failing)
