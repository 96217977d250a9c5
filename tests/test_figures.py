"""Figures legible at the book's page width (issue 15).

The book's text column is about 730 px wide, so a PNG wider than that is shrunk, and its text with
it. The rules (see :mod:`analysis.plots`): a figure is at most 10 in wide, i.e. at most 1,000 px
at 100 dpi, so the page shows it at 73% or more; no explicit font size below 9 pt in
``analysis/``; multi-panel figures wrap into rows instead of growing wider. These tests read the
committed notebooks' PNGs and the source, and check the book style's settings.
"""

from __future__ import annotations

import base64
import json
import re
import struct
from pathlib import Path

import matplotlib
import pytest
from matplotlib.font_manager import FontProperties

from analysis import plots
from analysis.paths import ROOT

matplotlib.use("Agg")

NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))
MAX_PX = round(plots.MAX_WIDTH_IN * plots.DPI)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: Chapters whose figures come from modules being changed elsewhere: each is expected to fail
#: until its figure functions follow the rule and the chapter is re-executed (strict, so the
#: test fails as soon as it passes, and the entry must then be removed).
PENDING: dict[str, str] = {}


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG from its IHDR chunk (bytes 16-24, big-endian)."""
    if data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return struct.unpack(">II", data[16:24])


def notebook_images(path: Path):
    """``(cell label, width, height)`` of every image/png output of a notebook."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    for i, cell in enumerate(nb["cells"]):
        if cell.get("cell_type") != "code":
            continue
        label = f"cell {i}" + (f" (id {cell['id']})" if cell.get("id") else "")
        for out in cell.get("outputs", []):
            png = out.get("data", {}).get("image/png")
            if png is None:
                continue
            text = "".join(png) if isinstance(png, list) else png
            yield (label, *png_size(base64.b64decode(text)))


def _params(paths, pending, key):
    """One pytest.param per path; those in ``pending`` are strict expected failures."""
    out = []
    for p in paths:
        marks = [pytest.mark.xfail(strict=True, reason=pending[key(p)])] if key(p) in pending else []
        out.append(pytest.param(p, id=key(p), marks=marks))
    return out


def test_png_size_reads_the_header():
    import io

    import matplotlib.pyplot as plt

    fig, _ = plt.subplots(figsize=(3, 2), dpi=100)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    assert png_size(buf.getvalue()) == (300, 200)
    with pytest.raises(ValueError):
        png_size(b"GIF89a" + b"\0" * 30)


def test_pending_entries_name_real_notebooks():
    assert set(PENDING) <= {p.stem for p in NOTEBOOKS}


@pytest.mark.parametrize("path", _params(NOTEBOOKS, PENDING, lambda p: p.stem))
def test_notebook_figures_fit_the_page(path: Path):
    too_wide = [f"{path.name}, {label}: {w} px wide (at most {MAX_PX})"
                for label, w, _ in notebook_images(path) if w > MAX_PX]
    assert not too_wide, "figures wider than the rule allows:\n" + "\n".join(too_wide)


# --------------------------------------------------------------------------------------
# Explicit font sizes in the code
# --------------------------------------------------------------------------------------

#: A font-size keyword (``fontsize=8``, ``labelsize=7``, ``title_fontsize=7``, ``size=8``, or as a
#: dict key, ``"fontsize": 8``) with a number or a quoted named size.
_SIZE = re.compile(
    r"""(?<![\w])["']?(?P<key>(?:title_)?fontsize|labelsize|size)["']?\s*[=:]\s*"""
    r"""(?:(?P<num>\d+(?:\.\d+)?)(?![\w.])|["'](?P<name>[a-z-]+)["'])"""
)
_SET_SIZE = re.compile(r"\.set_(?:font)?size\(\s*(?P<num>\d+(?:\.\d+)?)\s*\)")
SMALL_NAMES = {"xx-small", "x-small", "small", "smaller"}


def small_font_sizes(text: str) -> list[tuple[int, str]]:
    """``(line number, match)`` of each explicit font size below :data:`analysis.plots.MIN_FONT_PT`."""
    found = []
    for n, line in enumerate(text.splitlines(), start=1):
        code = line.split("#", 1)[0]
        for m in _SIZE.finditer(code):
            if (m["num"] is not None and float(m["num"]) < plots.MIN_FONT_PT) or m["name"] in SMALL_NAMES:
                found.append((n, m.group(0)))
        for m in _SET_SIZE.finditer(code):
            if float(m["num"]) < plots.MIN_FONT_PT:
                found.append((n, m.group(0)))
    return found


def test_small_font_sizes_are_found():
    lines = [
        'ax.legend(fontsize=7, frameon=False)',       # 1
        'ax.tick_params(labelsize=8.5)',              # 2
        'ax.set_title("x", fontsize="x-small")',      # 3
        'leg = dict(title_fontsize=6)',               # 4
        'prop={"size": 8}',                           # 5
        't.set_fontsize(7)',                          # 6
        'ax.legend(fontsize=9); ax.text(0, 0, "a", fontsize=10)',
        'rng.choice([-1, 1], size=G * reps)',         # not a literal
        'ax.plot(x, y, markersize=3, ms=5)',          # marker sizes, not fonts
        'ax.set_title("x", fontsize="medium")',
        'ax.set_title("x")  # fontsize=7 in a comment',
    ]
    text = "\n".join(lines)
    assert [n for n, _ in small_font_sizes(text)] == [1, 2, 3, 4, 5, 6]


MODULES = sorted((ROOT / "analysis").glob("*.py"))
#: Modules being changed elsewhere whose figure functions still set small font sizes (strict: an
#: entry fails once its module is fixed, and must then be removed).
PENDING_MODULES: dict[str, str] = {}


def test_pending_modules_are_real_files():
    assert set(PENDING_MODULES) <= {p.name for p in MODULES}


@pytest.mark.parametrize("path", _params(MODULES, PENDING_MODULES, lambda p: p.name))
def test_no_explicit_font_size_below_the_minimum(path: Path):
    offenders = [f"analysis/{path.name}:{n}: {match}" for n, match in small_font_sizes(path.read_text(encoding="utf-8"))]
    assert not offenders, f"explicit font sizes below {plots.MIN_FONT_PT} pt:\n" + "\n".join(offenders)


# --------------------------------------------------------------------------------------
# The book style
# --------------------------------------------------------------------------------------


def _points(size) -> float:
    """A Matplotlib font size in points, named sizes ('small', ...) resolved against font.size."""
    return FontProperties(size=size).get_size_in_points()


def test_book_style_sets_legible_sizes_and_the_resolution():
    with matplotlib.rc_context():
        matplotlib.rcParams.update({"font.size": 6, "xtick.labelsize": "x-small", "figure.dpi": 72})
        plots.book_style()
        rc = matplotlib.rcParams
        assert rc["font.size"] >= 10
        for key in ("xtick.labelsize", "ytick.labelsize", "legend.fontsize", "axes.labelsize", "axes.titlesize"):
            assert _points(rc[key]) >= plots.MIN_FONT_PT, key
        assert rc["figure.dpi"] == plots.DPI == 100
        assert rc["savefig.dpi"] == plots.DPI


def test_named_sizes_resolve_against_the_base_size():
    with matplotlib.rc_context({"font.size": 10}):
        assert _points("small") == pytest.approx(8.33, abs=0.01)  # why 'small' is not allowed
        assert _points("medium") == 10


def test_subplots_applies_the_style_and_refuses_wide_figures():
    import matplotlib.pyplot as plt

    with matplotlib.rc_context({"figure.dpi": 72, "font.size": 6}):
        fig, _ = plots.subplots(1, 2, figsize=(plots.MAX_WIDTH_IN, 3))
        assert fig.dpi == plots.DPI
        assert matplotlib.rcParams["font.size"] >= 10
        plt.close(fig)
        with pytest.raises(ValueError, match="wrap the panels into rows"):
            plots.subplots(1, 4, figsize=(12, 3))
        with pytest.raises(ValueError, match="wrap the panels into rows"):
            plots.figure(figsize=(10.5, 3))


def test_panel_grid_wraps_into_rows():
    import matplotlib.pyplot as plt

    with matplotlib.rc_context():
        fig, axes = plots.panel_grid(5, max_cols=2, row_height=2.5, sharex=True)
        assert len(axes) == 5
        assert tuple(fig.get_size_inches()) == (plots.MAX_WIDTH_IN, 7.5)
        hidden = [ax for ax in fig.axes if not ax.get_visible()]
        assert len(hidden) == 1
        # the panel above the empty cell keeps its x tick labels (it is the bottom of its column)
        assert axes[3].xaxis.get_tick_params()["labelbottom"]
        plt.close(fig)
