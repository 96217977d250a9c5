"""What nbval checks must not depend on the machine, and nothing missing may reach the prose.

nbval compares every output of a checked cell with the committed one, glue records included
(``application/papermill.record/text/plain``, whether or not the value is displayed). A float
printed or glued at full precision differs in its last bits across CPUs, BLAS kernels and thread
counts, so a reviewer's ``make test`` would fail on a correct book. The rule: a checked cell
(tagged ``nbval-check-output``) shows numbers at the precision the book reports, and every glued
float is rounded by :func:`analysis.report.glue`. These tests read the committed notebooks.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from analysis.paths import ROOT
from analysis.report import stable_number

NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))
RECORD = "application/papermill.record/text/plain"
CHECK_TAG = "nbval-check-output"
#: More significant digits than this in a checked output is a full-precision float.
MAX_DIGITS = 8
#: A non-zero number below this is the size of a rounding error, not a result.
NOISE = 1e-10
_FLOAT = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?(?![\w.])")


def significant_digits(token: str) -> int:
    """Significant digits of a number as written (``0.0121477`` -> 6, ``1.50e-3`` -> 3)."""
    mantissa = re.split(r"[eE]", token.lstrip("+-"))[0]
    digits = mantissa.replace(".", "").lstrip("0")
    if "." not in mantissa:
        digits = digits.rstrip("0") or digits
    return len(digits)


def float_problems(text: str) -> list[str]:
    """Numbers in printed text that carry machine noise: too many digits, or a rounding error."""
    problems = []
    for token in _FLOAT.findall(text):
        if "." not in token and "e" not in token.lower():
            continue  # integers (counts, years, FIPS codes) are exact
        if significant_digits(token) > MAX_DIGITS:
            problems.append(f"{token} has more than {MAX_DIGITS} significant digits")
        elif 0 < abs(float(token)) < NOISE:
            problems.append(f"{token} is below {NOISE:g}: a rounding error, not a result")
    return problems


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def _cells(path: Path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            yield i, cell


def _checked(cell) -> bool:
    return CHECK_TAG in cell.get("metadata", {}).get("tags", [])


def _printed(cell) -> list[str]:
    out = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            out.append(_text(o.get("text", "")))
        data = o.get("data", {})
        if "text/plain" in data and RECORD not in data:
            out.append(_text(data["text/plain"]))
    return out


def _records(cell) -> list[str]:
    return [_text(o["data"][RECORD]) for o in cell.get("outputs", []) if RECORD in o.get("data", {})]


def checked_output_problems(path: Path) -> list[str]:
    problems = []
    for i, cell in _cells(path):
        if not _checked(cell):
            continue
        for text in _printed(cell):
            problems += [f"{path.name} cell {i}: printed {p}" for p in float_problems(text)]
        for rec in _records(cell):
            try:
                value = float(rec)
            except ValueError:
                continue  # a glued string (e.g. 'p < 0.001') is formatted already
            if "." in rec or "e" in rec.lower():
                if significant_digits(rec) > MAX_DIGITS or stable_number(value) != value:
                    problems.append(f"{path.name} cell {i}: glue record {rec} is not rounded "
                                    "(glue with analysis.report.glue)")
    return problems


def missing_glue_problems(path: Path) -> list[str]:
    problems = []
    for i, cell in _cells(path):
        for rec in _records(cell):
            if rec.strip().strip("'\"").lower() in ("nan", "inf", "-inf", "none", ""):
                problems.append(f"{path.name} cell {i}: a glued value is {rec!r}")
    return problems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_checked_outputs_are_rounded(path):
    assert checked_output_problems(path) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_missing_value_is_glued(path):
    assert missing_glue_problems(path) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_nbval_markers_are_tags(path):
    # A visible `# NBVAL_CHECK_OUTPUT` comment is shown to readers; the tag is not.
    visible = [i for i, c in _cells(path) if "NBVAL_" in "".join(c["source"])]
    assert visible == []


def test_the_book_has_checked_cells():
    assert sum(_checked(c) for p in NOTEBOOKS for _, c in _cells(p)) >= 60


# The rule itself, on synthetic outputs: each check must be able to fail.
def _nb(tmp_path, outputs, tags=(CHECK_TAG,)) -> Path:
    cell = {"cell_type": "code", "metadata": {"tags": list(tags)}, "source": "x", "outputs": outputs,
            "execution_count": 1}
    p = tmp_path / "synthetic.ipynb"
    p.write_text(json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return p


def _record(text):
    return {"output_type": "display_data", "metadata": {}, "data": {RECORD: text}}


def test_full_precision_glue_in_a_checked_cell_fails(tmp_path):
    assert checked_output_problems(_nb(tmp_path, [_record("0.01214769124660495")]))
    assert checked_output_problems(_nb(tmp_path, [_record("0.1234567")]))  # 7 digits, not rounded
    assert checked_output_problems(_nb(tmp_path, [_record("0.0121477")])) == []
    assert checked_output_problems(_nb(tmp_path, [_record("12428")])) == []
    assert checked_output_problems(_nb(tmp_path, [_record("'p < 0.001'")])) == []
    unchecked = _nb(tmp_path, [_record("0.01214769124660495")], tags=())
    assert checked_output_problems(unchecked) == []


def test_full_precision_print_in_a_checked_cell_fails(tmp_path):
    stream = {"output_type": "stream", "name": "stdout", "text": "slope  -0.178612345678\n"}
    assert checked_output_problems(_nb(tmp_path, [stream]))
    noise = {"output_type": "stream", "name": "stdout", "text": "largest difference 3.2e-15\n"}
    assert checked_output_problems(_nb(tmp_path, [noise]))
    fine = {"output_type": "stream", "name": "stdout", "text": "fips 01001 year 2014 slope -0.179 n 12,428\n"}
    assert checked_output_problems(_nb(tmp_path, [fine])) == []


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "None", "''", ""])
def test_missing_glue_fails(tmp_path, text):
    assert missing_glue_problems(_nb(tmp_path, [_record(text)], tags=()))


def test_significant_digits():
    assert [significant_digits(t) for t in ("0.0121477", "1.50e-3", "120", "25881.0", "-0.178612")] == [
        6, 3, 2, 6, 6]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_glue_goes_through_the_rounding_wrapper(path):
    # myst_nb.glue would store a float's full precision; analysis.report.glue rounds it.
    direct = [i for i, c in _cells(path) if re.search(r"from myst_nb import .*\bglue\b|myst_nb\.glue\(",
                                                     "".join(c["source"]))]
    assert direct == []
