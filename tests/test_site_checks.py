"""The pure-HTML checks of the built book (analysis.site), on small SYNTHETIC sites.

Each fixture page is a hand-written imitation of Sphinx/Jupyter Book output (the unresolved
forms were copied from a real Jupyter Book 1.0.4 build with broken references); every check
must catch its defect and stay quiet on the clean site.
"""

from __future__ import annotations

import urllib.request

import pytest

from analysis import site

PAGE = """<!DOCTYPE html><html><head><title>{title}</title>
<link rel="stylesheet" href="{up}_static/style.css?v=abc123" />
<script src="{up}_static/app.js?digest=1"></script>
<script defer="defer" src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>
</head><body><a class="skip-link" href="#main-content">Skip</a>
<img class="logo" src="{up}_static/logo.png" alt="" />
<main id="main-content"><h1><span class="section-number">{num}</span>{title}<a class="headerlink" href="#{slug}">#</a></h1>
<section id="{slug}">{body}</section></main></body></html>"""

CH1_BODY = """
<p>See <a class="reference internal" href="ch2.html#sec-data"><span class="std std-ref">the data</span></a>,
<a class="reference internal" href="#fig-a"><span class="std std-numref">Fig. 1</span></a>,
<a class="reference internal" href="../index.html">home</a>, <a href="../">the root</a>,
<a href="my%20notes.html">notes</a>, <a href="https://example.org/x#y">outside</a>,
<a href="mailto:a@b.c">mail</a>, a citation
<span class="bibtex-citation" id="id1">[<a class="reference internal" href="ch2.html#key">A, 2000</a>]</span>
and a function <a class="reference internal" href="ch2.html#f"><code class="xref py py-func docutils literal notranslate"><span class="pre">f()</span></code></a>.</p>
<figure class="align-default" id="fig-a"><img alt="Rates fall as density rises." src="../_images/a.png" />
<figcaption><p><span class="caption-number">Fig. 1 </span>Caption</p></figcaption></figure>
<div class="cell_output docutils container"><div class="output text_plain"><pre>a ??? in code is fine</pre></div>
<img alt="A bar chart of shares." src="../_images/b.png" /></div>
"""
CH2_BODY = """<span id="sec-data"></span><p id="key">Data.</p><dl><dt id="f">f</dt></dl>"""


def write_site(root, ch1_body=CH1_BODY, ch2_body=CH2_BODY):
    """A SYNTHETIC two-chapter built site under ``root``; returns ``root``."""
    (root / "_static").mkdir(parents=True)
    (root / "_images").mkdir()
    (root / "book").mkdir()
    for name in ("_static/style.css", "_static/app.js", "_static/logo.png", "_images/a.png", "_images/b.png"):
        (root / name).write_bytes(b"x")
    (root / "index.html").write_text('<meta http-equiv="Refresh" content="0; url=book/ch1.html" />')
    (root / "book" / "ch1.html").write_text(PAGE.format(title="First", num="1. ", slug="first", up="../", body=ch1_body))
    (root / "book" / "ch2.html").write_text(PAGE.format(title="Second", num="2. ", slug="second", up="../", body=ch2_body))
    (root / "book" / "my notes.html").write_text(PAGE.format(title="Notes", num="", slug="notes", up="../", body=""))
    # a leftover in a hidden folder and a source copy: not pages of the book
    (root / ".pytest_cache").mkdir()
    (root / ".pytest_cache" / "README.html").write_text('<a href="missing.html">x</a>')
    (root / "_sources").mkdir()
    (root / "_sources" / "x.html").write_text('<a href="missing.html">x</a>')
    return root


def kinds(problems):
    return sorted(p.kind for p in problems)


def test_clean_site_has_no_problems(tmp_path):
    root = write_site(tmp_path)
    assert [p.relative_to(root).as_posix() for p in site.html_pages(root)] == [
        "book/ch1.html",
        "book/ch2.html",
        "book/my notes.html",
        "index.html",
    ]
    assert site.check_site(root) == []


def test_broken_link_is_caught(tmp_path):
    root = write_site(tmp_path, ch1_body=CH1_BODY + '<a class="reference internal" href="ch3.html">three</a>')
    problems = site.check_links(root)
    assert len(problems) == 1
    (p,) = problems
    assert (p.page, p.kind) == ("book/ch1.html", "broken link")
    assert "href='ch3.html'" in p.detail and "book/ch3.html" in p.detail


def test_missing_anchor_is_caught(tmp_path):
    body = CH1_BODY + '<a href="ch2.html#sec-nowhere">x</a><a href="#no-such-id">y</a>'
    root = write_site(tmp_path, ch1_body=body)
    problems = site.check_links(root)
    assert kinds(problems) == ["missing anchor", "missing anchor"]
    details = " ".join(p.detail for p in problems)
    assert "'sec-nowhere' in book/ch2.html" in details
    assert "'no-such-id' in book/ch1.html" in details


def test_unresolved_myst_link_is_a_missing_anchor(tmp_path):
    # MyST leaves an unresolved [text](nowhere.md) as a link to the fragment "#nowhere.md"
    body = CH1_BODY + '<a class="reference internal" href="#nowhere.md"><span class="xref myst">to nowhere</span></a>'
    root = write_site(tmp_path, ch1_body=body)
    assert kinds(site.check_site(root)) == ["missing anchor"]


def test_broken_image_and_script_are_caught(tmp_path):
    body = CH1_BODY + '<figure><img alt="A map." src="../_images/gone.png" /></figure><script src="../_static/gone.js"></script>'
    root = write_site(tmp_path, ch1_body=body)
    assert kinds(site.check_links(root)) == ["broken image", "broken link"]


def test_link_outside_the_site_is_caught(tmp_path):
    root = write_site(tmp_path / "html", ch1_body=CH1_BODY + '<a href="../../secret.html">x</a>')
    (tmp_path / "secret.html").write_text("x")
    assert kinds(site.check_links(root)) == ["link outside the site"]


@pytest.mark.parametrize(
    "img, why",
    [
        ('<img src="../_images/a.png" />', "no alt attribute"),
        ('<img alt="  " src="../_images/a.png" />', "empty alt text"),
        # docutils writes the path as the alt text when a figure has none
        ('<img alt="../_images/a.png" src="../_images/a.png" />', "alt text is a file name"),
        ('<img alt="a.png" src="../_images/a.png" />', "alt text is a file name"),
    ],
)
@pytest.mark.parametrize("wrap", ['<figure class="align-default" id="fig-x">{}</figure>', '<div class="cell_output docutils container">{}</div>'])
def test_missing_alt_text_is_caught(tmp_path, img, why, wrap):
    root = write_site(tmp_path, ch1_body=CH1_BODY + wrap.format(img))
    problems = site.check_alt_text(root)
    assert len(problems) == 1
    (p,) = problems
    assert (p.page, p.kind) == ("book/ch1.html", "figure without alt text")
    assert why in p.detail and "../_images/a.png" in p.detail
    if "figure" in wrap:
        assert "figure #fig-x" in p.detail


def test_decorative_image_needs_only_an_alt_attribute(tmp_path):
    root = write_site(tmp_path, ch1_body=CH1_BODY + '<p><img src="../_static/logo.png" /></p>')
    assert [str(p) for p in site.check_alt_text(root)] == ["book/ch1.html: image without alt attribute: ../_static/logo.png"]


@pytest.mark.parametrize(
    "snippet, kind",
    [
        # copied from Jupyter Book 1.0.4 output for {ref}, {numref}, {doc}, {eq}, {term}
        ('<span class="xref std std-ref">no-such-label</span>', "unresolved cross-reference"),
        ('<code class="xref std std-numref docutils literal notranslate"><span class="pre">fig-nope</span></code>', "unresolved cross-reference"),
        ('<span class="xref std std-doc">nope</span>', "unresolved cross-reference"),
        ('<code class="xref eq docutils literal notranslate"><span class="pre">eq-nope</span></code>', "unresolved cross-reference"),
        ('<a href="#first"><span class="xref std std-ref missing">x</span></a>', "unresolved cross-reference"),
        ('<span class="bibtex-citation" id="id9">[]</span>', "unresolved citation"),
        ("<p>as shown in Fig. ??? below</p>", "unresolved number (???)"),
    ],
)
def test_unresolved_xref_is_caught(tmp_path, snippet, kind):
    root = write_site(tmp_path, ch1_body=CH1_BODY + snippet)
    problems = site.check_xrefs(root)
    assert [p.kind for p in problems] == [kind]
    assert problems[0].page == "book/ch1.html"


def test_resolve_url_rules(tmp_path):
    root = write_site(tmp_path).resolve()
    page = root / "book" / "ch1.html"
    assert site.resolve_url(page, "#x", root) == (page, "x")
    assert site.resolve_url(page, "ch2.html?v=1#a%20b", root) == (root / "book" / "ch2.html", "a b")
    assert site.resolve_url(page, "../", root) == (root / "index.html", "")
    assert site.resolve_url(page, "/book/ch2.html", root) == (root / "book" / "ch2.html", "")
    assert site.is_internal("ch2.html") and site.is_internal("#x")
    assert not any(map(site.is_internal, ["https://a.b/c", "//cdn.x/y.js", "mailto:a@b.c", "data:image/png;base64,xx"]))


def test_site_not_built_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a built HTML site.*make book"):
        site.check_site(tmp_path)


def test_toc_docnames_and_titles(tmp_path):
    toc = tmp_path / "_toc.yml"
    toc.write_text(
        "format: jb-book\nroot: book/ch1\nparts:\n  - caption: A\n    chapters:\n"
        "      - file: book/ch2.ipynb\n        sections:\n          - file: book/ch2a\n"
        "  - caption: B\n    chapters:\n      - file: book/app.md\n"
    )
    assert site.toc_docnames(toc) == ["book/ch1", "book/ch2", "book/ch2a", "book/app"]
    toc.write_text("- just a list\n")
    with pytest.raises(ValueError, match="no `root:` key"):
        site.toc_docnames(toc)
    root = write_site(tmp_path / "html")
    assert site.page_title(root / "book" / "ch2.html") == "Second"
    with pytest.raises(ValueError, match="no <h1>"):
        site.page_title(root / "index.html")


def test_serve_serves_the_folder(tmp_path):
    root = write_site(tmp_path)
    with site.serve(root) as base:
        assert base.startswith("http://127.0.0.1:") and base.endswith("/")
        with urllib.request.urlopen(base + "book/ch2.html", timeout=10) as resp:
            assert b"<h1>" in resp.read()
    with pytest.raises(FileNotFoundError, match="no such folder"):
        with site.serve(tmp_path / "nope"):
            pass


def test_source_titles_from_notebooks_and_markdown(tmp_path):
    import nbformat

    (tmp_path / "book").mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_markdown_cell("# Which *way* does it run?\n\nText.")]
    nbformat.write(nb, tmp_path / "book" / "ch1.ipynb")
    (tmp_path / "book" / "pre.md").write_text("(label)=\n# The `Book`, Tested\n\n## Not this\n")
    (tmp_path / "book" / "app.md").write_text("No title here\n")
    toc = tmp_path / "_toc.yml"
    toc.write_text("format: jb-book\nroot: book/pre\nchapters:\n  - file: book/ch1\n")
    assert site.toc_titles(toc) == [("book/pre", "The Book, Tested"), ("book/ch1", "Which way does it run?")]
    with pytest.raises(ValueError, match="no level-1 heading"):
        site.source_title(tmp_path / "book" / "app.md")
    toc.write_text("format: jb-book\nroot: book/pre\nchapters:\n  - file: book/gone\n")
    with pytest.raises(FileNotFoundError, match="no source for 'book/gone'"):
        site.toc_titles(toc)


def test_missing_chapters_in_printed_text():
    titles = ["The third pillar", "Rajan's claim", "References"]
    contents = "Contents The third pillar Rajan\u2019s claim References "
    body = "The third\npillar text... Rajan\u2019s  claim text... References Haldane 2014"
    assert site.missing_chapters(contents + body, titles) == []
    # a chapter listed in the contents but absent from the body is caught
    assert site.missing_chapters(contents + "The third pillar ... References x", titles) == ["Rajan's claim"]
    # out of order
    assert site.missing_chapters(contents + "Rajan's claim The third pillar References", titles) == ["Rajan's claim"]
    assert site.missing_chapters("nothing at all", titles) == ["The third pillar", "Rajan's claim", "References"]
    with pytest.raises(ValueError, match="no titles"):
        site.missing_chapters("x", [])


def test_dedupe_script_files_treats_none_and_empty_filename_alike():
    from sphinx.builders.html._assets import _JavaScript

    body = 'const THEBE_JS_URL = "x"'
    scripts = [
        _JavaScript("_static/doctools.js", priority=200),
        _JavaScript(None, priority=500, body=body),  # added by the extension
        _JavaScript("_static/sphinx-thebe.js", priority=500, **{"async": "async"}),
        _JavaScript("", priority=500, body=body),  # re-added from the registry by Sphinx 7.4
        _JavaScript("", priority=500, body="const other = 1"),
    ]
    out = site.dedupe_script_files(scripts)
    assert [str(js.filename) if js.filename else js.attributes["body"] for js in out] == [
        "_static/doctools.js",
        body,
        "_static/sphinx-thebe.js",
        "const other = 1",
    ]
    context = {"script_files": scripts}
    site._dedupe_page_scripts(None, "p", "page.html", context, None)
    assert len(context["script_files"]) == 4


def test_missing_chapters_tolerates_a_wrapped_long_title():
    """Synthetic printed text: the second line of a long heading was extracted elsewhere."""
    from analysis.site import missing_chapters

    titles = ["One", "Simulation lab: what each estimator can and cannot see", "Verdict"]
    contents = "One Simulation lab: what each estimator can and cannot see Verdict "
    body = "One text. 12. Simulation lab: what each estimator Alone, the coefficient... can and cannot see Verdict"
    assert missing_chapters(contents + body, titles) == []
    assert missing_chapters(contents + "One text. Verdict", titles) == ["Simulation lab: what each"]


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf", "None", "nan%", ""])
def test_missing_value_in_glued_prose_is_caught(tmp_path, text):
    body = CH1_BODY + f'<p>its correlation is <span class="pasted-text">{text}</span>.</p>'
    root = write_site(tmp_path, ch1_body=body)
    assert kinds(site.check_site(root)) == ["missing value in the prose"]


def test_glued_numbers_and_words_pass(tmp_path):
    body = CH1_BODY + ('<p><span class="pasted-text">-0.39</span> <span class="pasted-text">p &lt; 0.001</span>'
                       ' <span class="pasted-text">infinite</span> <span class="pasted-text">12,428</span></p>')
    root = write_site(tmp_path, ch1_body=body)
    assert site.check_glue_text(root) == []
