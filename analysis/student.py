"""Chapters for students: notebooks without solutions, and what a hosted notebook needs.

Three things a teacher hands out or a student runs:

* **Student notebooks** (:func:`student_notebook`, :func:`write_student_notebooks`): every chapter
  of ``_toc.yml`` (``book/NN_*.ipynb``) with every exercise kept and every solution removed, and
  no outputs. Solutions are the sphinx-exercise directives the chapters use: a ``{solution}``
  block (``:::{solution} label`` or a backtick fence) inside a Markdown cell, and a *gated*
  solution that opens with ``{solution-start}`` and closes with ``{solution-end}``, possibly
  cells later, with the code cells between them (a solution's code). Markdown is parsed with
  MyST's own parser (markdown-it with the colon-fence plugin), so a fence closes exactly where it
  closes in the book. ``make student`` (and ``make book``, after the build) writes them into
  ``_build/html/_downloads/student/`` with a zip and an index page, so they ship with the site.
* **Colab pins** (:func:`colab_requirements`): the lock's pins of the scientific packages only.
  ``pip install -r requirements.lock`` on a hosted notebook re-pins the Jupyter stack that runs
  the notebook itself (``ipykernel``, ``tornado``, ``pyzmq``, ...) and can crash the runtime;
  the book's build and test tools are not needed there either.
* **A Colab setup cell** (:func:`colab_cell_source`, :func:`ensure_colab_cell`): a first cell,
  hidden in the book (``remove-cell``), that on Colab only clones the repository, installs the
  Colab pins and the package and fetches the data, and elsewhere does nothing. The repository's
  address is read from ``CITATION.cff`` (``repository-code``), never invented; without it the
  cell says on Colab that the repository is not public yet.

Command line::

    python -m analysis.student notebooks [OUT_DIR]        # default _build/html/_downloads/student
    python -m analysis.student colab-requirements [LOCK]  # the pins to install on Colab
    python -m analysis.student colab-cell [--repository URL] [--branch NAME] NOTEBOOK...
                                                          # insert or update the Colab setup cell

This module imports only the standard library (and ``analysis.envfiles``, which needs PyYAML) at
import time, so that ``python -m analysis.student colab-requirements`` runs in a fresh clone on a
hosted notebook before anything is installed.
"""

from __future__ import annotations

import copy
import json
import re
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from analysis.envfiles import _PIN, canonical, requirement_lines

ROOT = Path(__file__).resolve().parent.parent
TOC_PATH = ROOT / "_toc.yml"
LOCK_PATH = ROOT / "requirements.lock"
CITATION_PATH = ROOT / "CITATION.cff"
#: Where `make student` writes the notebooks: inside the built site, so that they are published.
STUDENT_DIR = ROOT / "_build" / "html" / "_downloads" / "student"
ZIP_NAME = "third-pillar-student-notebooks.zip"
#: A chapter is a notebook ``book/NN_name.ipynb`` or ``book/NNx_name.ipynb`` (appendices are not).
CHAPTER = re.compile(r"^book/\d\d[a-z]?_\w+$")

# ---------------------------------------------------------------------------------------------
# Solutions and exercises in a notebook

_DIRECTIVE = re.compile(r"^\{([A-Za-z0-9_:-]+)\}\s*(.*)$")
_LABEL = re.compile(r"^\s*:label:\s*(\S+)\s*$", re.MULTILINE)


@dataclass
class Solution:
    """One solution removed from a notebook: the exercise it answers, its kind (``block`` for a
    ``{solution}`` directive, ``gated`` for ``{solution-start}`` ... ``{solution-end}``), and the
    text removed (Markdown lines and code cell sources, in order)."""

    label: str
    kind: str
    parts: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.parts)


def _markdown_parser():
    from markdown_it import MarkdownIt
    from mdit_py_plugins.colon_fence import colon_fence_plugin

    return MarkdownIt("commonmark").use(colon_fence_plugin)


def directives(text: str) -> list[tuple[str, str, int, int, str]]:
    """The top-level MyST directives of a Markdown text: ``(name, argument, first line, end line,
    content)`` for each ``:::{name} argument`` or backtick ``{name}`` fence, in order; lines are
    0-based and ``end`` is exclusive. An unclosed fence runs to the end of the text, as in MyST."""
    out = []
    for tok in _markdown_parser().parse(text):
        if tok.level != 0 or tok.type not in ("fence", "colon_fence") or tok.map is None:
            continue
        m = _DIRECTIVE.match(tok.info.strip())
        if m:
            out.append((m.group(1), m.group(2).strip(), tok.map[0], tok.map[1], tok.content))
    return out


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def exercise_labels(nb) -> list[str]:
    """The labels of the notebook's exercises (``{exercise}`` and ``{exercise-start}``), in order;
    an exercise without a label counts as ``""``."""
    labels = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        for name, _arg, _s, _e, content in directives(_source(cell)):
            if name in ("exercise", "exercise-start"):
                m = _LABEL.search(content)
                labels.append(m.group(1) if m else "")
    return labels


def split_solutions(nb) -> tuple[dict, list[Solution]]:
    """The notebook without its solutions, and the solutions removed (see the module's doc).

    Markdown before a solution in the same cell (a heading, the exercise) and after a
    ``{solution-end}`` is kept; a cell left empty is dropped; code and raw cells between a
    ``{solution-start}`` and its ``{solution-end}`` are dropped. A gated solution left open at the
    end of the notebook is an error (the book would not build either).
    """
    out = copy.deepcopy(nb)
    cells, removed = [], []
    gated: Solution | None = None
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            if gated is not None:
                gated.parts.append(_source(cell))
            else:
                cells.append(copy.deepcopy(cell))
            continue
        text = _source(cell)
        lines = text.splitlines(keepends=True)
        keep = [gated is None] * len(lines)
        start = 0
        for name, arg, s, e, _content in directives(text):
            if gated is not None:
                if name == "solution-end":
                    keep[start:e] = [False] * (e - start)
                    gated.parts.append("".join(lines[start:e]))
                    removed.append(gated)
                    gated = None
                    keep[e:] = [True] * (len(lines) - e)
            elif name == "solution":
                keep[s:e] = [False] * (e - s)
                removed.append(Solution(arg, "block", ["".join(lines[s:e])]))
            elif name == "solution-start":
                gated, start = Solution(arg, "gated"), s
                keep[s:] = [False] * (len(lines) - s)
        if gated is not None:
            gated.parts.append("".join(lines[start:]))
            start = 0  # the next cell continues the open solution from its first line
        kept = "".join(line for line, k in zip(lines, keep) if k)
        kept = re.sub(r"\n{3,}", "\n\n", kept).strip("\n")
        if kept.strip():
            new = copy.deepcopy(cell)
            new["source"] = kept
            cells.append(new)
    if gated is not None:
        raise ValueError(f"solution {gated.label!r}: {{solution-start}} without {{solution-end}}")
    out["cells"] = cells
    return out, removed


STUDENT_NOTE = (
    "*Student version.* The exercises of this chapter are here and their solutions are not; "
    "no cell has been run. Run it inside a clone of the book's repository after `make data` "
    "(see the book's appendix *Teaching with this book*)."
)


def student_notebook(nb) -> dict:
    """The student version of a chapter notebook (a dict in nbformat 4): no solutions
    (:func:`split_solutions`), no outputs or execution counts, a short note as the first cell."""
    out, _removed = split_solutions(nb)
    for cell in out["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        meta = cell.get("metadata", {})
        for key in ("execution", "scrolled", "collapsed"):
            meta.pop(key, None)
    note = {"cell_type": "markdown", "id": "student-note", "metadata": {"tags": ["student-note"]}, "source": STUDENT_NOTE}
    out["cells"].insert(0, note)
    out.setdefault("metadata", {}).pop("widgets", None)
    return out


def _dump(nb) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def chapter_notebooks(toc_path=TOC_PATH) -> list[Path]:
    """Every chapter notebook of the table of contents (``book/NN_*.ipynb``), in reading order."""
    from analysis.site import toc_docnames

    toc_path = Path(toc_path)
    out = []
    for name in toc_docnames(toc_path):
        path = toc_path.parent / f"{name}.ipynb"
        if CHAPTER.match(name) and path.is_file():
            out.append(path)
    return out


def write_student_notebooks(out_dir=STUDENT_DIR, toc_path=TOC_PATH) -> list[Path]:
    """Write the student version of every chapter into ``out_dir``, with the zip of them all
    (:data:`ZIP_NAME`, with fixed timestamps, so the same chapters give the same file) and an
    ``index.html`` that lists them. Returns the notebooks written."""
    import nbformat

    from analysis.site import source_title

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in chapter_notebooks(toc_path):
        nb = student_notebook(json.loads(path.read_text(encoding="utf-8")))
        nbformat.validate(nbformat.from_dict(nb))
        target = out_dir / path.name
        target.write_text(_dump(nb), encoding="utf-8")
        written.append(target)
    if not written:
        raise FileNotFoundError(f"{toc_path}: no chapter notebooks (book/NN_*.ipynb)")
    with zipfile.ZipFile(out_dir / ZIP_NAME, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for target in written:
            info = zipfile.ZipInfo(f"third-pillar-student/{target.name}", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, target.read_bytes())
    items = "\n".join(
        f'      <li><a href="{t.name}" download>{_html_escape(source_title(s))}</a> <code>{t.name}</code></li>'
        for t, s in zip(written, chapter_notebooks(toc_path))
    )
    (out_dir / "index.html").write_text(INDEX_HTML.format(zip=ZIP_NAME, items=items), encoding="utf-8")
    return written


def _html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


INDEX_HTML = """<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>Student notebooks - The Third Pillar, Tested</title>
    <style>body {{ font-family: system-ui, sans-serif; max-width: 44rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.5; color: #1a1a1a; background: #fff; }} a {{ color: #0b4f8a; }}</style>
  </head>
  <body>
    <main>
      <h1>Student notebooks</h1>
      <p>Every chapter of <a href="../../index.html">The Third Pillar, Tested</a> with its exercises
      and without their solutions or outputs. Run them inside a clone of the book's repository
      after <code>make data</code>, as the book's appendix <em>Teaching with this book</em> describes.</p>
      <p><a href="{zip}" download>All chapters (zip)</a></p>
      <ul>
{items}
      </ul>
    </main>
  </body>
</html>
"""

# ---------------------------------------------------------------------------------------------
# What to install on a hosted notebook (Colab)

#: The Jupyter stack: the kernel, the notebook server and front ends, the notebook format and
#: what they are built on. A hosted notebook runs its own; re-pinning it under the running server
#: can crash the runtime. (Names are canonical; a prefix ends with "-" or is a family name.)
JUPYTER_STACK_PREFIXES = ("jupyter", "ipy", "nb", "notebook", "nest-asyncio", "argon2-cffi", "jsonschema", "rfc3")
JUPYTER_STACK = frozenset({
    "tornado", "pyzmq", "traitlets", "comm", "debugpy", "matplotlib-inline", "prompt-toolkit",
    "pexpect", "ptyprocess", "jedi", "parso", "stack-data", "executing", "asttokens", "pure-eval",
    "wcwidth", "decorator", "psutil", "pygments", "platformdirs", "jinja2", "markupsafe",
    "terminado", "send2trash", "prometheus-client", "json5", "async-lru", "overrides",
    "websocket-client", "python-json-logger", "fqdn", "isoduration", "uri-template", "webcolors",
    "jsonpointer", "arrow", "lark", "referencing", "rpds-py", "fastjsonschema", "mistune", "bleach",
    "tinycss2", "pandocfilters", "defusedxml", "webencodings", "entrypoints", "pywinpty",
    "appnope", "anyio", "httpx", "httpcore", "h11", "babel", "widgetsnbextension",
})
#: The book's build, test and lint tools: needed to build and check the book, not to run a chapter.
TOOLING_PREFIXES = ("sphinx", "myst", "pytest", "pybtex")
TOOLING = frozenset({
    "pydata-sphinx-theme", "accessible-pygments", "alabaster", "docutils", "latexcodec",
    "snowballstemmer", "imagesize", "markdown-it-py", "mdit-py-plugins", "mdurl", "linkify-it-py",
    "uc-micro-py", "sqlalchemy", "greenlet", "pluggy", "iniconfig", "coverage", "execnet",
    "playwright", "pyee", "axe-playwright-python", "django-static-mathjax", "pypdf", "ruff",
    "beautifulsoup4", "soupsieve", "papermill", "tenacity", "ansicolors", "aiohttp",
    "aiohappyeyeballs", "aiosignal", "frozenlist", "multidict", "propcache", "yarl", "attrs",
    "setuptools", "wheel", "pip", "uv", "six",
})


def is_jupyter_stack(name: str) -> bool:
    name = canonical(name)
    return name in JUPYTER_STACK or name.startswith(JUPYTER_STACK_PREFIXES)


def is_tooling(name: str) -> bool:
    name = canonical(name)
    return name in TOOLING or name.startswith(TOOLING_PREFIXES)


def colab_requirements(lock_path=LOCK_PATH) -> list[str]:
    """The lock's pins of the scientific packages: ``name==version`` (with the lock's environment
    marker, if any), in the lock's order, without hashes (the hosted service's own packages are
    not hash-locked, so hash-checking mode would refuse to resolve against them). Everything in
    the Jupyter stack (:func:`is_jupyter_stack`) and the book's tools (:func:`is_tooling`) is left
    out; pip resolves what remains against the packages the service already has."""
    out = []
    for _i, line in requirement_lines(Path(lock_path).read_text().splitlines()):
        if not line or line.startswith("#"):
            continue
        m = _PIN.match(line)
        if not m:
            raise ValueError(f"{lock_path}: not an exact pin: {line!r}")
        if is_jupyter_stack(m.group(1)) or is_tooling(m.group(1)):
            continue
        out.append(line)
    return out


# ---------------------------------------------------------------------------------------------
# The Colab setup cell

COLAB_TAGS = ["remove-cell", "colab-setup"]
CLONE_DIR = "third-pillar"


def repository_url_from_citation(path=CITATION_PATH) -> str | None:
    """The repository's address from ``CITATION.cff`` (``repository-code``), or None."""
    import yaml

    path = Path(path)
    if not path.is_file():
        return None
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    url = str(data.get("repository-code") or "").strip()
    return url or None


_NOT_PUBLIC = (
    "This book's repository is not public yet, so this notebook cannot set itself up here: "
    "run it from a clone of the repository (make data, then .venv/bin/jupyter lab), "
    "as the book's appendix 'Teaching with this book' describes."
)


def colab_cell_source(repository_url: str | None, branch: str | None = None) -> str:
    """The source of the Colab setup cell (see the module's doc).

    Outside Colab it does nothing: it binds no name, prints nothing and runs nothing (it reads
    ``sys.modules`` through ``__import__`` so that not even ``sys`` is added to the namespace).
    On Colab it clones ``repository_url`` (at ``branch``, else the default branch) into
    ``third-pillar`` unless already there, installs the lock's scientific pins
    (``python -m analysis.student colab-requirements``) and the package, fetches the data
    (``python -m analysis data``) and moves into the clone's ``book/``, where the chapters run in
    the book. Without a repository URL it prints one line saying the repository is not public
    yet and does nothing else.
    """
    head = (
        "# Colab setup (hidden in the book). On Google Colab only: clone the book's repository, install\n"
        "# the scientific packages its lock pins (not the Jupyter stack) and fetch the data.\n"
        "# Anywhere else this cell does nothing.\n"
    )
    if not repository_url:
        return head + f'if "google.colab" in __import__("sys").modules:\n    print({_NOT_PUBLIC!r})\n'
    clone = ["git", "clone", "--depth", "1"] + (["--branch", branch] if branch else []) + [repository_url, CLONE_DIR]
    return head + f'''if "google.colab" in __import__("sys").modules:
    import os, subprocess, sys
    _clone = os.path.abspath({CLONE_DIR!r}) if os.path.basename(os.getcwd()) != "book" else os.path.dirname(os.getcwd())
    _loaded = [m for m in ("numpy", "pandas", "scipy", "matplotlib") if m in sys.modules]
    if not os.path.isdir(_clone):
        subprocess.run({clone!r}, cwd=os.path.dirname(_clone), check=True)
    _pins = subprocess.run([sys.executable, "-m", "analysis.student", "colab-requirements"],
                           cwd=_clone, check=True, capture_output=True, text=True).stdout
    with open(os.path.join(_clone, "colab-requirements.txt"), "w") as _fh:
        _fh.write(_pins)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-r", "colab-requirements.txt"], cwd=_clone, check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "-e", "."], cwd=_clone, check=True)
    subprocess.run([sys.executable, "-m", "analysis", "data"], cwd=_clone, check=True)
    if _clone not in sys.path:
        sys.path.insert(0, _clone)
    os.chdir(os.path.join(_clone, "book"))
    if _loaded:
        print("Installed. Restart the session (Runtime > Restart session) and run all cells again.")
'''


def ensure_colab_cell(nb_path, repository_url: str | None = None, branch: str | None = None,
                      citation_path=CITATION_PATH) -> bool:
    """Insert the Colab setup cell as the first cell of a notebook, or update it in place (it is
    found by its ``colab-setup`` tag). The repository defaults to ``CITATION.cff``'s
    ``repository-code``. Returns True if the file changed. The cell has no outputs and is tagged
    ``remove-cell``, so the book does not show it."""
    nb_path = Path(nb_path)
    raw = nb_path.read_text(encoding="utf-8")
    nb = json.loads(raw)
    url = repository_url or repository_url_from_citation(citation_path)
    source = colab_cell_source(url, branch)
    cell = {
        "cell_type": "code",
        "execution_count": None,
        "id": "colab-setup",
        "metadata": {"tags": list(COLAB_TAGS)},
        "outputs": [],
        "source": source.splitlines(keepends=True),
    }
    existing = [i for i, c in enumerate(nb["cells"]) if "colab-setup" in c.get("metadata", {}).get("tags", [])]
    if existing:
        old = nb["cells"][existing[0]]
        cell["id"] = old.get("id", cell["id"])
        nb["cells"][existing[0]] = cell
    else:
        nb["cells"].insert(0, cell)
    # written as nbformat writes a notebook (sorted keys, one-space indent), keeping the file's
    # final newline or its absence, so that the diff is the cell alone
    text = json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + ("\n" if raw.endswith("\n") else "")
    if text == raw:
        return False
    nb_path.write_text(text, encoding="utf-8")
    return True


# ---------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["notebooks"] and len(argv) <= 2:
        out = Path(argv[1]) if len(argv) > 1 else STUDENT_DIR
        written = write_student_notebooks(out)
        print(f"wrote {len(written)} student notebooks and {ZIP_NAME} into {out}")
        return 0
    if argv[:1] == ["colab-requirements"] and len(argv) <= 2:
        lock = Path(argv[1]) if len(argv) > 1 else LOCK_PATH
        print("\n".join(colab_requirements(lock)))
        return 0
    if argv[:1] == ["colab-cell"]:
        import argparse

        parser = argparse.ArgumentParser(prog="python -m analysis.student colab-cell")
        parser.add_argument("--repository", help="the repository's URL (default: CITATION.cff's repository-code)")
        parser.add_argument("--branch", help="the branch to clone (default: the repository's default branch)")
        parser.add_argument("notebooks", nargs="+", type=Path)
        args = parser.parse_args(argv[1:])
        for path in args.notebooks:
            changed = ensure_colab_cell(path, repository_url=args.repository, branch=args.branch)
            print(f"{path}: {'updated' if changed else 'unchanged'}")
        return 0
    print("usage: python -m analysis.student notebooks [OUT_DIR] | colab-requirements [LOCK]"
          " | colab-cell [--repository URL] [--branch NAME] NOTEBOOK...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
