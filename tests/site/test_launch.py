"""Repository and launch buttons in a real build (`make test-launch`, part of `make test`).

Two one-page books are built with jupyter-book from the book's own ``_config.yml`` (execution
off, so no kernel runs) and its ``book/_static``: one with the variables GitHub Actions sets
(``GITHUB_SERVER_URL``, ``GITHUB_REPOSITORY``, ``GITHUB_REF_NAME``) and the Pages base URL, one
without. With them, the chapter links Binder and Colab to that repository and branch; without
them, no page names any repository: not the book's (unknown), and never jupyter-book's default
(executablebooks/jupyter-book). Both builds run at once and take about 10 s.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from analysis import site
from analysis.paths import ROOT

JUPYTER_BOOK = Path(sys.executable).parent / "jupyter-book"
GITHUB = {
    "GITHUB_SERVER_URL": "https://github.com",
    "GITHUB_REPOSITORY": "octo/third-pillar",
    "GITHUB_REF_NAME": "teach-2026",
    "BOOK_BASE_URL": "https://octo.github.io/third-pillar",
}
CHAPTER = "book/01_tiny"
#: Variables that would name a repository or a site; cleared for the build without them.
CLEARED = ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_REF_NAME", "GITHUB_HEAD_REF", "BOOK_BASE_URL", "BOOK_JUPYTERHUB_URL")


def make_tiny_book(dst: Path) -> Path:
    """A copy of the book's configuration with one Markdown page and one notebook chapter."""
    (dst / "book").mkdir(parents=True)
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"] = {"execute_notebooks": "off"}
    (dst / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    (dst / "_toc.yml").write_text(yaml.safe_dump({"format": "jb-book", "root": "book/preface", "chapters": [{"file": CHAPTER}]}))
    shutil.copy(ROOT / "references.bib", dst / "references.bib")
    shutil.copytree(ROOT / "book" / "_static", dst / "book" / "_static")
    (dst / "book" / "preface.md").write_text("# A tiny book\n\nOne page and {doc}`01_tiny`.\n")
    nb = {
        "cells": [
            {"cell_type": "markdown", "id": "t0", "metadata": {}, "source": "# A tiny chapter\n\nIt runs one cell."},
            {"cell_type": "code", "id": "t1", "metadata": {}, "execution_count": None, "outputs": [], "source": "print(1 + 1)"},
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (dst / f"{CHAPTER}.ipynb").write_text(json.dumps(nb))
    return dst


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> dict[str, Path]:
    """{"with": site root, "without": site root}: the tiny book built in both environments."""
    base = {k: v for k, v in os.environ.items() if k not in CLEARED}
    envs = {"with": dict(base, **GITHUB), "without": base}
    procs = {}
    for name, env in envs.items():
        book = make_tiny_book(tmp_path_factory.mktemp(f"tiny-{name}"))
        cmd = [str(JUPYTER_BOOK), "build", str(book), "-W", "-n", "--keep-going"]
        procs[name] = (book, subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    out = {}
    for name, (book, proc) in procs.items():
        log, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"the tiny book ({name} GitHub variables) did not build:\n{log[-4000:]}"
        out[name] = book / "_build" / "html"
    return out


def _hrefs(path: Path) -> set[str]:
    soup = site.parse_page(path)
    return {a["href"] for a in soup.find_all(["a", "link"], href=True)}


def test_with_github_variables_the_chapter_launches_this_repository(builds):
    page = builds["with"] / f"{CHAPTER}.html"
    hrefs = _hrefs(page)
    repo, branch = GITHUB["GITHUB_REPOSITORY"], GITHUB["GITHUB_REF_NAME"]
    assert f"https://mybinder.org/v2/gh/{repo}/{branch}?urlpath=lab/tree/{CHAPTER}.ipynb" in hrefs
    assert f"https://colab.research.google.com/github/{repo}/blob/{branch}/{CHAPTER}.ipynb" in hrefs
    assert f"https://github.com/{repo}" in hrefs
    assert f"https://github.com/{repo}/edit/{branch}/{CHAPTER}.ipynb" in hrefs
    assert any(h.startswith(f"https://github.com/{repo}/issues/new") for h in hrefs)
    assert f"{GITHUB['BOOK_BASE_URL']}/{CHAPTER}.html" in hrefs  # <link rel="canonical">
    # no other repository, and never jupyter-book's own
    others = {h for h in hrefs if "github.com" in h and f"github.com/{repo}" not in h}
    assert not others, others
    assert "executablebooks" not in page.read_text()


def test_without_github_variables_no_page_names_a_repository(builds):
    root = builds["without"]
    pages = site.html_pages(root)
    assert {p.relative_to(root).as_posix() for p in pages} >= {f"{CHAPTER}.html", "book/preface.html"}
    for page in pages:
        html = page.read_text()
        for needle in ("executablebooks", "jupyter-book/issues", "github.com", "mybinder.org", "colab.research.google.com"):
            assert needle not in html, f"{page.relative_to(root)} names {needle!r}"
        assert not any("launch" in (b.get("aria-label") or "").lower() or "launch-buttons" in " ".join(b.get("class") or [])
                       for b in site.parse_page(page).find_all(["button", "div", "ul"])), page
    assert 'rel="canonical"' not in (root / f"{CHAPTER}.html").read_text()


def test_both_builds_have_the_logo_favicon_and_licence_footer(builds):
    for root in builds.values():
        soup = site.parse_page(root / f"{CHAPTER}.html")
        assert soup.find("link", rel="icon", href=lambda h: h and h.endswith("favicon.png"))
        logo = soup.find("img", class_="logo__image")
        assert logo is not None and logo["src"].endswith("logo.svg") and logo.get("alt")
        footer = soup.find(class_="tp-licence")
        assert footer is not None and "MIT" in footer.get_text() and "CC BY 4.0" in footer.get_text()
