"""The PDF of the whole book (`make pdf`): every document of `_toc.yml` is in it, in order,
with its figures. Run by `make test-pdf` (which `make pdf` calls after printing); not by
`make test`, since the single-page build and the printing add about a minute.

Titles come from the chapter sources (their `# Title`), so chapters added to the toc are
checked without editing this file.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from analysis import site
from conftest import TOC

PDF = Path(os.environ.get("PDF_FILE", site.PDF_PATH))
SINGLEHTML = Path(os.environ.get("SINGLEHTML_DIR", site.ROOT / "_build" / "singlehtml"))


@pytest.fixture(scope="module")
def reader():
    from pypdf import PdfReader

    if not PDF.is_file():
        pytest.fail(f"no PDF at {PDF}: run `make pdf`", pytrace=False)
    return PdfReader(str(PDF))


@pytest.fixture(scope="module")
def text(reader):
    return site.normalise_text(" ".join(page.extract_text() or "" for page in reader.pages))


def test_pdf_has_every_chapter_in_toc_order(text):
    titles = site.toc_titles(TOC)
    root_title, chapters = titles[0], titles[1:]
    assert site.normalise_text(root_title[1]) in text, f"the book's title {root_title[1]!r} is not in the PDF"
    missing = site.missing_chapters(text, [title for _, title in chapters])
    assert not missing, "chapters missing from the PDF body (or out of order): " + "; ".join(missing)


def test_pdf_has_the_figures(reader):
    """At least as many embedded images as distinct figures in the single-page book."""
    root_doc = site.toc_docnames(TOC)[0]
    page = SINGLEHTML / f"{root_doc}.html"
    if not page.is_file():
        pytest.fail(f"no single-page build at {page}: run `make pdf`", pytrace=False)
    figures = {img.get("src") for img in site.parse_page(page).find_all("img") if "_images/" in img.get("src", "")}
    images = set()

    def collect(resources):
        for ref in ((resources or {}).get("/XObject") or {}).values():
            obj = ref.get_object()
            if obj.get("/Subtype") == "/Image":
                images.add(getattr(ref, "idnum", id(obj)))
            elif obj.get("/Subtype") == "/Form":
                collect(obj.get("/Resources"))

    for pdf_page in reader.pages:
        collect(pdf_page.get("/Resources"))
    assert len(images) >= len(figures) > 0, f"{len(figures)} figures in the book, {len(images)} distinct images in the PDF"
