"""Teaching material: every chapter has learning objectives and exercises with solutions, and the
citation metadata is valid.

The chapter checks parse the notebook JSON (no execution): a chapter is every ``book/NN_*`` entry of
``_toc.yml``. Exercises are sphinx-exercise directives (``{exercise}`` or ``{exercise-start}`` with
a ``:label:``); a solution (``{solution}`` or ``{solution-start}``) names its exercise's label as its
argument and is hidden in a dropdown (``:class: dropdown``); a gated ``{solution-start}`` must be
closed by a ``{solution-end}``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MIN_EXERCISES = 3

# An opening fence (``` or :::, three or more) followed by {directive} and an optional argument.
DIRECTIVE = re.compile(r"^(?P<fence>`{3,}|:{3,})\{(?P<name>[a-z-]+)\}[ \t]*(?P<arg>.*?)[ \t]*$")
OPTION = re.compile(r"^:(?P<key>[a-z-]+):[ \t]*(?P<value>.*?)[ \t]*$")
OBJECTIVES = re.compile(r"^(?:`{3,}|:{3,})\{admonition\}[ \t]+Learning objectives\b|^#{1,6}[ \t]+Learning objectives\b",
                        re.IGNORECASE | re.MULTILINE)


def toc_chapters(toc_path: Path = ROOT / "_toc.yml") -> list[str]:
    """The chapter files (``book/NN_slug``) listed in the table of contents, in order."""
    toc = yaml.safe_load(toc_path.read_text())
    files: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("file"), str):
                files.append(node["file"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(toc)
    return [f for f in files if re.fullmatch(r"book/\d{2}[a-z]?_[\w-]+", f)]


def directives(markdown: str) -> list[dict]:
    """Every MyST directive in a Markdown string: name, argument and the options that follow it."""
    found = []
    lines = markdown.splitlines()
    for i, line in enumerate(lines):
        m = DIRECTIVE.match(line.strip())
        if not m:
            continue
        options = {}
        for nxt in lines[i + 1:]:
            o = OPTION.match(nxt.strip())
            if not o:
                break
            options[o["key"]] = o["value"]
        found.append({"name": m["name"], "arg": m["arg"], "options": options})
    return found


def teaching_structure(nb: dict) -> dict:
    """Learning objectives, exercises and solutions of a notebook (parsed JSON)."""
    cells = nb.get("cells", [])
    markdown = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                for c in cells if c.get("cell_type") == "markdown"]
    # The Colab setup cell (tagged colab-setup, removed from the book) is not part of the chapter.
    cells = [c for c in cells if "colab-setup" not in c.get("metadata", {}).get("tags", [])]
    first_code = next((i for i, c in enumerate(cells) if c.get("cell_type") == "code"), len(cells))
    opening = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
               for c in cells[:first_code] if c.get("cell_type") == "markdown"]
    found = [d for text in markdown for d in directives(text)]
    exercises = [d for d in found if d["name"] in ("exercise", "exercise-start")]
    solutions = [d for d in found if d["name"] in ("solution", "solution-start")]
    gated_open = 0
    unbalanced = False
    for d in found:
        if d["name"] == "solution-start":
            if gated_open:
                unbalanced = True
            gated_open += 1
        elif d["name"] == "solution-end":
            if not gated_open:
                unbalanced = True
            gated_open = max(gated_open - 1, 0)
    return {
        "objectives_at_start": any(OBJECTIVES.search(t) for t in opening),
        "objectives_anywhere": any(OBJECTIVES.search(t) for t in markdown),
        "exercise_labels": [d["options"].get("label", "") for d in exercises],
        "solutions": solutions,
        "gated_balanced": not unbalanced and gated_open == 0,
    }


def check_chapter(nb: dict) -> list[str]:
    """The problems with a chapter's teaching material; empty if it complies."""
    s = teaching_structure(nb)
    problems = []
    if not s["objectives_anywhere"]:
        problems.append("no 'Learning objectives' block (an admonition or a heading)")
    elif not s["objectives_at_start"]:
        problems.append("the 'Learning objectives' block is not among the opening Markdown cells (before the first code cell)")
    labels = s["exercise_labels"]
    if "" in labels:
        problems.append("an exercise directive has no :label:")
    labelled = [x for x in labels if x]
    if len(set(labelled)) != len(labelled):
        problems.append(f"duplicate exercise labels: {sorted({x for x in labelled if labelled.count(x) > 1})}")
    solved = {d["arg"] for d in s["solutions"]}
    unknown = sorted(solved - set(labelled))
    if unknown:
        problems.append(f"solutions pointing at no exercise of the chapter: {unknown}")
    with_solution = [x for x in set(labelled) if x in solved]
    if len(with_solution) < MIN_EXERCISES:
        problems.append(f"{len(with_solution)} exercise(s) with a matching solution; at least {MIN_EXERCISES} needed")
    not_hidden = sorted(d["arg"] for d in s["solutions"] if "dropdown" not in d["options"].get("class", "").split())
    if not_hidden:
        problems.append(f"solutions not in a dropdown (:class: dropdown): {not_hidden}")
    if not s["gated_balanced"]:
        problems.append("solution-start and solution-end directives do not pair up")
    return problems


# --------------------------------------------------------------------------------------
# The parser on small synthetic notebooks (so that the chapter test can fail)
# --------------------------------------------------------------------------------------


def _nb(*cells):
    return {"cells": [{"cell_type": t, "source": s} for t, s in cells]}


GOOD = _nb(
    ("markdown", "# Title\n\nThe question."),
    ("markdown", ":::{admonition} Learning objectives\n:class: tip\n\n* one\n:::"),
    ("code", "x = 1"),
    *[("markdown", f":::{{exercise}}\n:label: ex-{i}\n\nDo {i}.\n:::") for i in range(3)],
    ("markdown", ":::{solution} ex-0\n:class: dropdown\n\nDone.\n:::"),
    ("markdown", "```{solution} ex-1\n:class: dropdown\n```"),
    ("markdown", ":::{solution-start} ex-2\n:class: dropdown\n:::"),
    ("code", "print(2)"),
    ("markdown", "Text.\n\n:::{solution-end}\n:::"),
)


def test_parser_accepts_a_complete_synthetic_chapter():
    assert check_chapter(GOOD) == []
    s = teaching_structure(GOOD)
    assert s["exercise_labels"] == ["ex-0", "ex-1", "ex-2"]
    assert [d["arg"] for d in s["solutions"]] == ["ex-0", "ex-1", "ex-2"]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c[:1] + c[2:], "no 'Learning objectives'"),
        (lambda c: [c[0], c[2], c[1], *c[3:]], "not among the opening"),
        (lambda c: c[:6] + c[7:], "2 exercise(s) with a matching solution"),
        (lambda c: c[:6] + [{"cell_type": "markdown", "source": ":::{solution} ex-0\n\nDone.\n:::"}] + c[7:],
         "not in a dropdown"),
        (lambda c: c[:6] + [{"cell_type": "markdown", "source": ":::{solution} ex-9\n:class: dropdown\n:::"}] + c[7:],
         "pointing at no exercise"),
        (lambda c: c[:-1], "do not pair up"),
        (lambda c: [*c[:3], {"cell_type": "markdown", "source": ":::{exercise}\n\nNo label.\n:::"}, *c[3:]],
         "has no :label:"),
    ],
)
def test_parser_reports_each_problem(edit, message):
    nb = {"cells": edit(GOOD["cells"])}
    problems = check_chapter(nb)
    assert any(message in p for p in problems), problems


def test_toc_lists_the_chapters():
    chapters = toc_chapters()
    assert "book/01_third_pillar" in chapters
    assert all(not c.startswith("book/appendix") for c in chapters)


# --------------------------------------------------------------------------------------
# The chapters
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("chapter", toc_chapters())
def test_chapter_has_objectives_and_exercises(chapter):
    path = ROOT / f"{chapter}.ipynb"
    assert path.exists(), f"{chapter} is in _toc.yml but {path.name} does not exist"
    problems = check_chapter(json.loads(path.read_text()))
    assert not problems, f"{path.name}: " + "; ".join(problems)


def test_exercise_labels_are_unique_across_the_book():
    seen: dict[str, str] = {}
    clashes = []
    for chapter in toc_chapters():
        path = ROOT / f"{chapter}.ipynb"
        if not path.exists():
            continue
        for label in teaching_structure(json.loads(path.read_text()))["exercise_labels"]:
            if label and label in seen and seen[label] != chapter:
                clashes.append(f"{label} in {seen[label]} and {chapter}")
            seen.setdefault(label, chapter)
    assert not clashes, clashes


# --------------------------------------------------------------------------------------
# CITATION.cff
# --------------------------------------------------------------------------------------


def cff_problems(cff: dict) -> list[str]:
    """Problems with the keys that the Citation File Format 1.2.0 requires (and ``version`` and
    ``date-released``, which this project promises). Empty if none."""
    if not isinstance(cff, dict):
        return ["the file is not a YAML mapping"]
    problems = []
    if str(cff.get("cff-version")) != "1.2.0":
        problems.append(f"cff-version must be '1.2.0', not {cff.get('cff-version')!r}")
    for key in ("message", "title", "version"):
        if not isinstance(cff.get(key), (str, int, float)) or not str(cff.get(key)).strip():
            problems.append(f"{key!r} is missing or empty")
    authors = cff.get("authors")
    if not isinstance(authors, list) or not authors:
        problems.append("'authors' must be a non-empty list")
    else:
        for i, a in enumerate(authors):
            if not isinstance(a, dict) or not any(str(a.get(k, "")).strip() for k in ("name", "family-names", "given-names")):
                problems.append(f"author {i + 1} has no name (name, family-names or given-names)")
    released = cff.get("date-released")
    if isinstance(released, dt.date):
        pass
    elif isinstance(released, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", released):
        try:
            dt.date.fromisoformat(released)
        except ValueError:
            problems.append(f"date-released {released!r} is not a valid date")
    else:
        problems.append(f"date-released must be a date (YYYY-MM-DD), not {released!r}")
    for i, ref in enumerate(cff.get("references", []) or []):
        if not isinstance(ref, dict) or not ref.get("type") or not ref.get("title") or not ref.get("authors"):
            problems.append(f"reference {i + 1} needs type, title and authors")
    return problems


def test_cff_check_can_fail():
    good = {"cff-version": "1.2.0", "message": "Cite it.", "title": "T", "version": "0.1.0",
            "authors": [{"name": "A"}], "date-released": "2026-11-27"}
    assert cff_problems(good) == []
    assert any("date-released" in p for p in cff_problems({**good, "date-released": "2026-13-40"}))
    assert any("date-released" in p for p in cff_problems({**good, "date-released": "27 Nov 2026"}))
    assert any("author 1" in p for p in cff_problems({**good, "authors": [{"affiliation": "X"}]}))
    assert any("cff-version" in p for p in cff_problems({**good, "cff-version": "1.1.0"}))
    assert any("'title'" in p for p in cff_problems({k: v for k, v in good.items() if k != "title"}))


def test_citation_cff_is_valid():
    path = ROOT / "CITATION.cff"
    text = path.read_text()
    try:
        from cffconvert import Citation  # optional: the reference validator, if installed
    except ImportError:
        Citation = None
    if Citation is not None:
        Citation(cffstr=text).validate()
    problems = cff_problems(yaml.safe_load(text))
    assert not problems, problems
