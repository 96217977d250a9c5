"""Checks of the built HTML book, and the headless browser that reads and prints it.

Two halves:

* pure-HTML checks of a built site (``_build/html``), no browser needed: every internal link,
  image and script resolves to a file of the site and every ``#anchor`` to an ``id`` of its
  target page (:func:`check_links`); every figure has a real alt text (:func:`check_alt_text`);
  no cross-reference, citation or figure number was left unresolved by Sphinx
  (:func:`check_xrefs`). :func:`check_site` runs them all; each returns a list of
  :class:`Problem` (empty = clean) so that a test can print every defect at once;
* the browser side (Playwright driving Debian's ``/usr/bin/chromium``; never a downloaded
  browser): :func:`serve` serves a folder on 127.0.0.1, :func:`launch_chromium` starts Chromium
  with the flags this machine needs, :func:`route_mathjax` answers the book's MathJax CDN
  requests from the local copy of the same MathJax release (PyPI ``django-static-mathjax``), and
  :func:`print_pdf` prints a page (the single-page book) to PDF once MathJax has typeset it.

It is also a tiny Sphinx extension (``extra_extensions: [analysis.site]``): :func:`setup`
removes inline scripts that Sphinx 7.4 writes twice into every page (see
:func:`dedupe_script_files`), and sets the repository and launch buttons from the build's
environment (:func:`configure_repository`): in GitHub Actions they name the repository and
branch being built; anywhere else there are none, and no repository URL is invented. It also
writes bibliography entries as list items (:func:`citation_list_roles`, an accessibility fix).

``python -m analysis.site check [--require-pdf] [_build/html]`` prints the pure-HTML problems
(``--require-pdf``: the published PDF must be there, as after ``make publish``);
``python -m analysis.site book-pdf`` prints ``_build/singlehtml`` (the toc's root document) to
``_build/pdf/third-pillar-tested.pdf``; ``python -m analysis.site pdf PAGE.html OUT.pdf
[ASSET_ROOT]`` prints any page.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import yaml
from bs4 import BeautifulSoup

from analysis.paths import ROOT

#: The book's table of contents, and where `make pdf` writes the PDF.
TOC_PATH = ROOT / "_toc.yml"
PDF_PATH = ROOT / "_build" / "pdf" / "third-pillar-tested.pdf"
#: Where the published site holds the PDF (`make publish` copies it there; the preface links it).
PUBLISHED_PDF = "_downloads/third-pillar-tested.pdf"
#: Internal link targets that a local build may lack: the PDF exists only after `make pdf` and
#: `make publish`. A link to a missing optional target is not a problem unless it is required
#: (``check_links(optional=())``, ``check --require-pdf``); one that exists is checked as usual.
OPTIONAL_TARGETS = (PUBLISHED_PDF,)
#: Folders of a Sphinx build that hold assets, not pages.
ASSET_DIRS = ("_static", "_sources", "_images", "_downloads", ".doctrees")
#: (tag, attribute) pairs whose value is a URL the page needs or offers.
URL_ATTRS = (
    ("a", "href"),
    ("link", "href"),
    ("img", "src"),
    ("script", "src"),
    ("source", "src"),
    ("iframe", "src"),
    ("embed", "src"),
    ("video", "src"),
    ("audio", "src"),
)
_IMAGE_FILE = re.compile(r"\.(png|jpe?g|gif|svg|webp|bmp|tiff?)$", re.IGNORECASE)
_NO_TEXT_CHECK = {"pre", "code", "script", "style", "textarea", "kbd", "samp"}


@dataclass(frozen=True)
class Problem:
    """One defect of the built site: the page (relative to the site root), what, and where."""

    page: str
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.page}: {self.kind}: {self.detail}"


def _site_root(root) -> Path:
    root = Path(root)
    if not (root / "index.html").is_file():
        raise FileNotFoundError(
            f"{root} is not a built HTML site (no index.html): run `make book` first"
        )
    return root.resolve()


def html_pages(root) -> list[Path]:
    """Every HTML page of the built site at ``root``, sorted.

    Asset folders and hidden folders (leftovers such as ``.pytest_cache/README.html`` from an
    old build) are excluded.
    """
    root = _site_root(root)
    pages = []
    for path in sorted(root.rglob("*.html")):
        rel = path.relative_to(root)
        if rel.parts[0] in ASSET_DIRS or any(part.startswith(".") for part in rel.parts[:-1]):
            continue
        pages.append(path)
    return pages


@functools.lru_cache(maxsize=512)
def _soup_cached(path: str, mtime: float) -> BeautifulSoup:
    with open(path, encoding="utf-8") as fh:
        return BeautifulSoup(fh.read(), "lxml")


def parse_page(path) -> BeautifulSoup:
    """The parsed page (lxml parser), cached on path and modification time."""
    path = Path(path).resolve()
    return _soup_cached(str(path), path.stat().st_mtime)


def page_ids(path) -> set[str]:
    """Every fragment a link can target on the page: ``id`` attributes and ``<a name=...>``."""
    soup = parse_page(path)
    ids = {tag["id"] for tag in soup.find_all(id=True)}
    ids |= {tag["name"] for tag in soup.find_all("a", attrs={"name": True})}
    return ids


def is_internal(url: str) -> bool:
    """True for a URL relative to the site (no scheme, no host)."""
    parts = urlsplit(url.strip())
    return not parts.scheme and not parts.netloc


def resolve_url(page: Path, url: str, root: Path) -> tuple[Path, str]:
    """The file an internal ``url`` on ``page`` points to, and its (decoded) fragment.

    A URL with an empty path is the page itself; a folder means its ``index.html``; the query
    string (Sphinx's ``?v=...`` cache busters) is ignored.
    """
    parts = urlsplit(url.strip())
    path = unquote(parts.path)
    if path == "":
        target = page
    elif path.startswith("/"):
        target = root / path.lstrip("/")
    else:
        target = page.parent / path
    target = Path(os.path.normpath(target))
    if path.endswith("/") or target.is_dir():
        target = target / "index.html"
    return target, unquote(parts.fragment)


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _describe(tag) -> str:
    text = " ".join(tag.get_text(" ", strip=True).split())
    return f"<{tag.name}>{(' ' + repr(text[:60])) if text else ''}"


def _parsed_pages(root, pages=None):
    """``(page, its path relative to the site, parsed page)`` for ``pages`` (default: every page)."""
    root = _site_root(root)
    pages = html_pages(root) if pages is None else [Path(p).resolve() for p in pages]
    for page in pages:
        yield page, _rel(page, root), parse_page(page)


def check_links(root, pages=None, optional=OPTIONAL_TARGETS) -> list[Problem]:
    """Broken internal links, images and scripts, and ``#anchors`` that name no element.

    External URLs (http, https, mailto, ...) are left to ``make linkcheck``. A link to one of the
    ``optional`` targets (paths relative to the site) that is missing is not reported: by default
    the PDF, which only a published build has (see :data:`OPTIONAL_TARGETS`).
    """
    root = _site_root(root)
    optional = {root / rel for rel in optional}
    problems = []
    for page, rel_page, soup in _parsed_pages(root, pages):
        for tag_name, attr in URL_ATTRS:
            for tag in soup.find_all(tag_name, attrs={attr: True}):
                url = tag[attr]
                if not is_internal(url):
                    continue
                target, fragment = resolve_url(page, url, root)
                try:
                    target.relative_to(root)
                except ValueError:
                    problems.append(Problem(rel_page, "link outside the site", f"{_describe(tag)} {attr}={url!r}"))
                    continue
                if not target.is_file() and target in optional:
                    continue
                if not target.is_file():
                    kind = "broken image" if tag_name == "img" else "broken link"
                    problems.append(Problem(rel_page, kind, f"{_describe(tag)} {attr}={url!r} (no file {_rel(target, root)})"))
                    continue
                if fragment and target.suffix == ".html" and fragment not in page_ids(target):
                    problems.append(
                        Problem(rel_page, "missing anchor", f"{_describe(tag)} {attr}={url!r} (no id {fragment!r} in {_rel(target, root)})")
                    )
    return problems


def _in_figure_or_output(img) -> bool:
    for parent in img.parents:
        if parent.name == "figure":
            return True
        classes = parent.get("class") or []
        if any(c in ("cell_output", "output") for c in classes):
            return True
    return False


def alt_text_problem(img) -> str | None:
    """Why an ``<img>``'s alt text is not a real description, or None if it is.

    Missing, empty, or just a file name: docutils writes the image path as the alt text when a
    figure has none, so ``alt="../_images/abc.png"`` counts as missing.
    """
    if not img.has_attr("alt"):
        return "no alt attribute"
    alt = " ".join(img["alt"].split())
    if not alt:
        return "empty alt text"
    src = img.get("src", "")
    if alt == src or alt == src.rsplit("/", 1)[-1] or _IMAGE_FILE.search(alt):
        return f"alt text is a file name ({alt!r})"
    return None


def check_alt_text(root, pages=None) -> list[Problem]:
    """Figures (``<img>`` in a ``<figure>`` or a cell output) without a real alt text.

    Any other image (a logo, an icon) must at least have an ``alt`` attribute, which may be
    empty for a decorative image.
    """
    problems = []
    for page, rel_page, soup in _parsed_pages(root, pages):
        for img in soup.find_all("img"):
            where = img.get("src", "?")
            if _in_figure_or_output(img):
                why = alt_text_problem(img)
                if why:
                    fig = img.find_parent("figure")
                    if fig is not None and fig.get("id"):
                        where += f" (figure #{fig['id']})"
                    problems.append(Problem(rel_page, "figure without alt text", f"{where}: {why}"))
            elif not img.has_attr("alt"):
                problems.append(Problem(rel_page, "image without alt attribute", where))
    return problems


def _has_link_ancestor(tag) -> bool:
    return any(p.name == "a" and p.has_attr("href") for p in tag.parents)


def check_xrefs(root, pages=None) -> list[Problem]:
    """Cross-references, citations and numbers that Sphinx left unresolved.

    Sphinx renders a resolved reference as a link (``<a class="reference ...">``) and leaves
    an unresolved one as its bare ``xref`` node (``<span class="xref std std-ref">label``), or
    marks it ``missing``; an unresolved citation is a ``bibtex-citation`` with no link in it
    (``[]``); an unnumbered ``numref`` shows ``???``.
    """
    problems = []
    for page, rel_page, soup in _parsed_pages(root, pages):
        for tag in soup.find_all(class_=True):
            classes = tag.get("class") or []
            is_link = tag.name == "a" and tag.has_attr("href")  # e.g. {nb-exec-table}'s document links
            if "xref" in classes and ("missing" in classes or not (is_link or _has_link_ancestor(tag))):
                problems.append(Problem(rel_page, "unresolved cross-reference", f"{' '.join(classes)}: {tag.get_text(strip=True)!r}"))
            elif "bibtex-citation" in classes and tag.find("a", href=True) is None:
                problems.append(Problem(rel_page, "unresolved citation", f"{_describe(tag)} id={tag.get('id')!r}"))
        for text in soup.find_all(string=re.compile(r"\?\?\?")):
            if any(p.name in _NO_TEXT_CHECK for p in text.parents):
                continue
            problems.append(Problem(rel_page, "unresolved number (???)", repr(" ".join(str(text).split())[:80])))
    return problems


_MISSING_NUMBER = re.compile(r"^[-+]?(nan|inf|infinity|none)%?$|^$", re.IGNORECASE)


def check_glue_text(root, pages=None) -> list[Problem]:
    """Glued values in the prose (myst-nb's ``<span class="pasted-text">``) that read as a missing
    number: ``nan``, ``inf``, ``None`` or nothing at all.
    """
    problems = []
    for page, rel_page, soup in _parsed_pages(root, pages):
        for span in soup.find_all("span", class_="pasted-text"):
            text = span.get_text(strip=True)
            if _MISSING_NUMBER.match(text):
                problems.append(Problem(rel_page, "missing value in the prose", repr(text)))
    return problems


def check_site(root, require_pdf: bool = False) -> list[Problem]:
    """All pure-HTML checks of the built site at ``root``; with ``require_pdf``, a link to the
    published PDF must resolve too (as on the published site)."""
    links = check_links(root, optional=() if require_pdf else OPTIONAL_TARGETS)
    return links + check_alt_text(root) + check_xrefs(root) + check_glue_text(root)


# ---------------------------------------------------------------------------------------------
# Table of contents


def toc_docnames(toc_path) -> list[str]:
    """The documents of a Jupyter Book ``_toc.yml`` (jb-book or jb-article), in reading order."""
    toc = yaml.safe_load(Path(toc_path).read_text(encoding="utf-8"))
    if not isinstance(toc, dict) or "root" not in toc:
        raise ValueError(f"{toc_path}: not a Jupyter Book table of contents (no `root:` key)")

    names = [str(toc["root"])]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                names.append(str(entry["file"]))
            for key in ("sections", "chapters"):
                walk(entry.get(key))
            for part in entry.get("parts", []) or []:
                walk(part.get("chapters"))

    walk(toc.get("chapters") or toc.get("sections"))
    for part in toc.get("parts", []) or []:
        walk(part.get("chapters"))
    return [re.sub(r"\.(md|ipynb|rst)$", "", n) for n in names]


def source_title(path) -> str:
    """The title of a chapter source: the first level-1 heading (``# ...``) of a MyST Markdown
    file or of a notebook's first Markdown cell that has one; emphasis marks removed."""
    path = Path(path)
    if path.suffix == ".ipynb":
        import json

        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
        texts = ["".join(c.get("source", "")) for c in cells if c.get("cell_type") == "markdown"]
    else:
        texts = [path.read_text(encoding="utf-8")]
    for text in texts:
        for line in text.splitlines():
            if line.startswith("# "):
                return " ".join(re.sub(r"[*`]", "", line[2:]).split())
    raise ValueError(f"{path}: no level-1 heading ('# Title')")


def toc_titles(toc_path, source_root=None) -> list[tuple[str, str]]:
    """(docname, title) of every document of the toc, in reading order, from the sources."""
    toc_path = Path(toc_path)
    source_root = toc_path.parent if source_root is None else Path(source_root)
    out = []
    for name in toc_docnames(toc_path):
        for ext in (".ipynb", ".md", ".rst"):
            if (source_root / f"{name}{ext}").is_file():
                out.append((name, source_title(source_root / f"{name}{ext}")))
                break
        else:
            raise FileNotFoundError(f"{toc_path}: no source for {name!r} (.ipynb or .md)")
    return out


_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u00a0": " ", "\u2013": "-", "\u2014": "-"})


def normalise_text(text: str) -> str:
    """Text for matching across renderings: NFKC, straight quotes and dashes, one space."""
    import unicodedata

    return " ".join(unicodedata.normalize("NFKC", text).translate(_QUOTES).split())


def missing_chapters(text: str, titles) -> list[str]:
    """Titles not found, in reading order, in the body of a printed book's ``text``.

    The printed book opens with its contents (every title once) and then the chapters, each
    under its title (matched by its first four words): the search starts after the contents' last entry (the first occurrence of
    the last title) and finds each title after the previous one. Both sides are normalised
    (:func:`normalise_text`).
    """
    text = normalise_text(text)
    # A long title wraps in a printed heading and PDF text extraction may move its second line
    # elsewhere, so each title is matched by its first four words.
    titles = [" ".join(normalise_text(t).split()[:4]) for t in titles]
    if not titles:
        raise ValueError("no titles to look for")
    start = text.find(titles[-1])
    if start < 0:
        return list(titles)
    pos, missing = start + len(titles[-1]), []
    for title in titles:
        found = text.find(title, pos)
        if found < 0:
            missing.append(title)
        else:
            pos = found + len(title)
    return missing


def page_title(path) -> str:
    """The first ``<h1>`` of a built page, without its section number and ``#`` link."""
    soup = parse_page(path)
    h1 = soup.find("h1")
    if h1 is None:
        raise ValueError(f"{path}: no <h1> title")
    h1 = BeautifulSoup(str(h1), "lxml").find("h1")  # a copy: do not edit the cached tree
    for tag in h1.find_all(class_=("headerlink", "section-number")):
        tag.decompose()
    return " ".join(h1.get_text(" ", strip=True).split())


# ---------------------------------------------------------------------------------------------
# Browser side: server, Chromium, MathJax, PDF

#: Debian's Chromium; override with $CHROMIUM. Never a browser downloaded by a test tool.
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
#: Flags for Chromium as root on a machine with no outside network: without the
#: background-networking ones it keeps trying (and failing) to reach Google's hosts.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
#: The MathJax that Sphinx's default ``mathjax_path`` loads (``mathjax@3`` = 3.2.2, the last 3.x).
MATHJAX_CDN = "https://cdn.jsdelivr.net/npm/mathjax@3/"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        pass


@contextlib.contextmanager
def serve(directory):
    """Serve ``directory`` on 127.0.0.1 at an ephemeral port; yields the base URL (ends in /)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"cannot serve {directory}: no such folder")
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="site-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def launch_chromium(playwright, executable: str | None = None):
    """Headless Debian Chromium through Playwright (a fresh, empty profile per launch)."""
    executable = executable or CHROMIUM
    if not Path(executable).is_file():
        raise FileNotFoundError(
            f"no Chromium at {executable}: run `bash .ci/install-browser.sh` (Debian chromium and chromium-driver)"
        )
    return playwright.chromium.launch(executable_path=executable, headless=True, args=list(CHROMIUM_ARGS))


def local_mathjax_dir() -> Path:
    """The ``es5`` folder of the local MathJax 3.2.2 (PyPI ``django-static-mathjax``)."""
    try:
        import mathjax  # django-static-mathjax's package: MathJax's files under static/mathjax
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the local MathJax is missing: pip install django-static-mathjax (see requirements.lock)") from exc
    root = Path(mathjax.__file__).parent / "static" / "mathjax"
    if not (root / "es5" / "tex-mml-chtml.js").is_file():
        raise FileNotFoundError(f"{root}: no es5/tex-mml-chtml.js in the local MathJax")
    return root


def route_mathjax(target) -> None:
    """Answer ``target``'s (a Playwright page or context) MathJax CDN requests from the local copy.

    The machine that tests the book has no outside network; the same MathJax release served
    locally lets the test check that every formula typesets. A file the local copy lacks gets
    a 404, which the console check reports.
    """
    root = local_mathjax_dir().resolve()

    def handle(route):
        rel = urlsplit(route.request.url).path.split("/mathjax@3/", 1)[-1]
        path = (root / unquote(rel)).resolve()
        if path.is_file() and root in path.parents:
            ctype = "application/javascript" if path.suffix == ".js" else None
            route.fulfill(path=str(path), content_type=ctype, headers={"access-control-allow-origin": "*"})
        else:
            route.fulfill(status=404, body=f"not in the local MathJax: {rel}")

    target.route(MATHJAX_CDN + "**", handle)


#: Resolves once MathJax (if the page loads it) has typeset the page; at most ``ms`` to wait.
WAIT_FOR_MATHJAX_JS = """async (ms) => {
  const hasMathJax = !!document.querySelector('script[src*="mathjax"]');
  if (!hasMathJax) return 'none';
  const t0 = Date.now();
  while (!(window.MathJax && window.MathJax.startup && window.MathJax.startup.promise)) {
    if (Date.now() - t0 > ms) return 'not loaded';
    await new Promise(r => setTimeout(r, 50));
  }
  await window.MathJax.startup.promise;
  if (window.MathJax.typesetPromise) await window.MathJax.typesetPromise();
  return 'typeset';
}"""


#: The TeX source of every formula MathJax could not typeset: a TeX error (``merror``) or an
#: undefined macro (which MathJax's ``noundefined`` package shows in red instead of failing).
MATHJAX_ERRORS_JS = r"""() => {
  const out = [];
  if (!(window.MathJax && MathJax.startup && MathJax.startup.document && MathJax.startup.toMML)) return out;
  for (const item of MathJax.startup.document.math) {
    if (item.inputJax && item.inputJax.name !== "TeX") continue;
    const mml = MathJax.startup.toMML(item.root);
    if (/<merror/.test(mml) || /mathcolor="red"[^>]*>\\/.test(mml)) out.push(item.math);
  }
  return out;
}"""


def mathjax_errors(page) -> list[str]:
    """The TeX of each formula on a typeset ``page`` that failed (see ``MATHJAX_ERRORS_JS``)."""
    return page.evaluate(MATHJAX_ERRORS_JS)


def wait_for_mathjax(page, timeout_ms: int = 20000) -> str:
    """Wait until MathJax has typeset ``page``: 'typeset', 'none' (no MathJax) or 'not loaded'."""
    return page.evaluate(WAIT_FOR_MATHJAX_JS, timeout_ms)


#: Print-only style: the full page width for the text, wrapped code and output lines (the
#: screen layout scrolls them sideways; paper would cut them off), smaller wide tables.
PRINT_CSS = """
@media print {
  .bd-page-width, .bd-main .bd-content .bd-article-container { max-width: none !important; }
  pre { white-space: pre-wrap !important; overflow-wrap: anywhere !important; overflow: visible !important; }
  table { max-width: 100% !important; }
  div.cell_output table, .output table, table.dataframe { font-size: 70% !important; width: 100% !important; table-layout: auto !important; }
  div.cell_output td, div.cell_output th { white-space: normal !important; padding: 0.15em 0.3em !important; }
  div.cell_output td { overflow-wrap: anywhere !important; }
  div.cell_output div.output { overflow: visible !important; }
  .pst-scrollable-table-container, .table-wrapper, div.output_area { overflow: visible !important; }
}
"""


def print_pdf(html_file, pdf_file, root=None, timeout_ms: int = 180000) -> Path:
    """Print a built page (the single-page book) to PDF in headless Chromium.

    ``root`` is the folder the page's relative asset paths start from (default: the page's
    own folder). Sphinx's singlehtml builder writes the book to ``book/preface.html`` (the
    toc's root document) but links its assets as if it sat at the top (``_static/...``,
    ``_images/...``), so for it pass the build folder. The folder is served on 127.0.0.1 and
    the page's HTML is answered at its top; MathJax is served locally and waited for. Fails
    if an image, style sheet, font or MathJax file fails to load (a hole in the PDF). A4 at 85% scale, backgrounds,
    no browser header or footer. Returns the PDF's path.
    """
    from playwright.sync_api import sync_playwright

    html_file = Path(html_file).resolve()
    if not html_file.is_file():
        raise FileNotFoundError(f"{html_file}: no such page (build it with the singlehtml builder first)")
    root = html_file.parent if root is None else Path(root).resolve()
    pdf_file = Path(pdf_file)
    pdf_file.parent.mkdir(parents=True, exist_ok=True)
    html = html_file.read_text(encoding="utf-8")
    failures: list[str] = []
    with serve(root) as base, sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            page = browser.new_page()
            page.set_default_timeout(timeout_ms)
            page.route(re.compile(r"^(?!http://127\.0\.0\.1[:/])"), lambda route: route.abort("blockedbyclient"))
            route_mathjax(page)
            url = base + "__print__.html"
            page.route(url, lambda route: route.fulfill(body=html, content_type="text/html; charset=utf-8"))
            # what the printed page shows: images, styles, fonts (the singlehtml page also asks
            # for a searchindex.js it does not have; the search box is not printed)
            shown = {"image", "stylesheet", "font"}

            def failed(req, why):
                if req.resource_type in shown or req.url.startswith(MATHJAX_CDN):
                    failures.append(f"{req.resource_type} {req.url} ({why})")

            page.on("requestfailed", lambda req: failed(req, req.failure))
            page.on("response", lambda resp: resp.status >= 400 and failed(resp.request, f"HTTP {resp.status}"))
            page.goto(url, wait_until="load")
            state = wait_for_mathjax(page, timeout_ms)
            if state == "not loaded":
                raise RuntimeError(f"{html_file}: MathJax did not load; the PDF would show raw TeX")
            if failures:
                raise RuntimeError(f"{html_file}: resources failed to load:\n  " + "\n  ".join(failures))
            page.add_style_tag(content=PRINT_CSS)
            page.emulate_media(media="print")
            page.pdf(
                path=str(pdf_file),
                format="A4",
                print_background=True,
                display_header_footer=False,
                scale=0.85,
                margin={"top": "18mm", "bottom": "18mm", "left": "15mm", "right": "15mm"},
            )
        finally:
            browser.close()
    return pdf_file


# ---------------------------------------------------------------------------------------------
# Sphinx extension: one copy of each script


def dedupe_script_files(scripts) -> list:
    """``scripts`` without repeats, where a filename of ``None`` and ``''`` count as the same.

    Sphinx 7.4 adds an inline script that an extension registers after the builder starts
    (``app.add_js_file(None, body=...)``) to the builder as ``_JavaScript(None, ...)``, then
    re-adds it from the registry as ``_JavaScript('', ...)`` in ``prepare_writing``; the two
    compare unequal, so the page carries it twice. sphinx-thebe's
    ``const THEBE_JS_URL = ...`` twice is an uncaught SyntaxError on every page.
    """
    seen, out = set(), []
    for js in scripts:
        filename = getattr(js, "filename", js) or ""
        attrs = getattr(js, "attributes", {}) or {}
        key = (str(filename), getattr(js, "priority", None), tuple(sorted((k, str(v)) for k, v in attrs.items())))
        if key not in seen:
            seen.add(key)
            out.append(js)
    return out


def _dedupe_page_scripts(app, pagename, templatename, context, doctree):
    if "script_files" in context:
        context["script_files"] = dedupe_script_files(context["script_files"])


# ---------------------------------------------------------------------------------------------
# Sphinx extension: repository and launch buttons only where the repository is known

#: The repository URL that jupyter-book's default configuration gives every book that names none
#: (``repository: url:`` in its default_config.yml). It is not this book's repository.
JUPYTER_BOOK_DEFAULT_REPOSITORY = "https://github.com/executablebooks/jupyter-book"
BINDERHUB_URL = "https://mybinder.org"
COLAB_URL = "https://colab.research.google.com"
#: The variables GitHub Actions sets in every job (server, owner/name, branch or tag).
GITHUB_VARIABLES = ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_REF_NAME")


def repository_options(environ=None) -> dict:
    """The theme options that name the book's repository, from the environment of a build.

    In GitHub Actions (``GITHUB_SERVER_URL``, ``GITHUB_REPOSITORY`` and ``GITHUB_REF_NAME`` all
    set) the repository is known: the repository, issues and edit buttons and the Binder and
    Colab launch buttons point to it at the branch being built (JupyterHub too when
    ``BOOK_JUPYTERHUB_URL`` names a hub). Anywhere else the repository is not known, and the
    options switch every button that would need it off, with an empty ``repository_url``
    (never jupyter-book's default, which is another project's repository). The book's files sit
    at the top of the repository (``_toc.yml`` names ``book/...``), so ``path_to_docs`` is empty.
    """
    env = os.environ if environ is None else environ
    server, repository, branch = (env.get(k, "").strip() for k in GITHUB_VARIABLES)
    if not (server and repository and branch):
        return {
            "repository_url": "",
            "repository_branch": "",
            "path_to_docs": "",
            "use_repository_button": False,
            "use_issues_button": False,
            "use_edit_page_button": False,
            "launch_buttons": {},
        }
    launch = {
        "notebook_interface": "jupyterlab",
        "binderhub_url": BINDERHUB_URL,
        "colab_url": COLAB_URL,
    }
    hub = env.get("BOOK_JUPYTERHUB_URL", "").strip()
    if hub:
        launch["jupyterhub_url"] = hub.rstrip("/")
    return {
        "repository_url": f"{server.rstrip('/')}/{repository.strip('/')}",
        "repository_branch": branch,
        "path_to_docs": "",
        "use_repository_button": True,
        "use_issues_button": True,
        "use_edit_page_button": True,
        "launch_buttons": launch,
    }


def base_url(environ=None) -> str:
    """The published site's address (``BOOK_BASE_URL``, which the Pages workflow sets from
    ``actions/configure-pages``), with a trailing slash; empty when not set."""
    env = os.environ if environ is None else environ
    url = env.get("BOOK_BASE_URL", "").strip()
    return url.rstrip("/") + "/" if url else ""


def configure_repository(app, config, environ=None) -> None:
    """``config-inited``: set the repository, launch buttons and base URL from the environment.

    jupyter-book 1 turns ``_config.yml`` into ``html_theme_options`` before Sphinx starts, and
    fills in its own repository (``executablebooks/jupyter-book``) when the book names none;
    this replaces those options with :func:`repository_options` so that a button or link never
    names a repository that is not the book's. ``html_baseurl`` (the canonical address of each
    page) is set from ``BOOK_BASE_URL`` when given.
    """
    options = dict(config.html_theme_options or {})
    options.update(repository_options(environ))
    config.html_theme_options = options
    url = base_url(environ)
    if url:
        config.html_baseurl = url


def citation_list_roles(body: str) -> str:
    """A page's HTML with each bibliography entry in the role its list needs.

    docutils writes the bibliography as ``<div role="list">`` of ``<div role="doc-biblioentry">``;
    DPUB-ARIA 1.1 deprecated ``doc-biblioentry`` (an entry of a list is a ``listitem``), so
    assistive technology and axe (rule aria-required-children, critical) see a list whose
    children are the entries' DOI links.
    """
    return body.replace('role="doc-biblioentry"', 'role="listitem"')


def _fix_citation_roles(app, pagename, templatename, context, doctree):
    if "doc-biblioentry" in context.get("body", ""):
        context["body"] = citation_list_roles(context["body"])


def setup(app):
    """Sphinx entry point: write each script once per page; repository and launch buttons
    from the build's environment (:func:`configure_repository`); bibliography entries as list
    items (:func:`citation_list_roles`)."""
    app.connect("config-inited", configure_repository)
    app.connect("html-page-context", _dedupe_page_scripts, priority=900)
    app.connect("html-page-context", _fix_citation_roles)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["check"]:
        require_pdf = "--require-pdf" in argv
        rest = [a for a in argv[1:] if a != "--require-pdf"]
        root = rest[0] if rest else "_build/html"
        problems = check_site(root, require_pdf=require_pdf)
        for p in problems:
            print(p)
        print(f"{len(html_pages(root))} pages, {len(problems)} problems")
        return 1 if problems else 0
    if argv[:1] == ["book-pdf"]:
        build = Path(argv[1] if len(argv) > 1 else "_build/singlehtml")
        out = Path(argv[2] if len(argv) > 2 else PDF_PATH)
        root_doc = toc_docnames(TOC_PATH)[0]
        out = print_pdf(build / f"{root_doc}.html", out, root=build)
        print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
        return 0
    if argv[:1] == ["pdf"] and len(argv) in (3, 4):
        out = print_pdf(argv[1], argv[2], root=argv[3] if len(argv) == 4 else None)
        print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
        return 0
    print("usage: python -m analysis.site check [--require-pdf] [SITE_DIR] | book-pdf [SINGLEHTML_DIR] [OUT.pdf] | pdf HTML_FILE OUT.pdf [ASSET_ROOT]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
