"""The codebook of the processed panels (``data/codebook.yml``): read it, tabulate it, check it.

Each panel lists every column with ``name``, ``label``, ``unit``, ``source`` (manifest short names,
``derived``, or ``crosswalks/<file>`` for the hand tables in ``data/crosswalks/``), ``years`` and
``notes``. :func:`check_codebook` compares a built panel's columns with its entries both ways.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from analysis import paths

FIELDS = ("name", "label", "unit", "source", "years", "notes")
FRAME_COLUMNS = ("panel", *FIELDS)


class CodebookMismatchError(ValueError):
    """Panel columns and codebook entries disagree (``missing_in_codebook``, ``missing_in_data``)."""

    def __init__(self, panel: str, mismatches: dict[str, list[str]]):
        parts = []
        if mismatches["missing_in_codebook"]:
            parts.append(f"columns without a codebook entry: {', '.join(mismatches['missing_in_codebook'])}")
        if mismatches["missing_in_data"]:
            parts.append(f"codebook entries without a column: {', '.join(mismatches['missing_in_data'])}")
        super().__init__(f"{panel}: " + "; ".join(parts) + f" (edit {paths.CODEBOOK_PATH.name})")
        self.panel = panel
        self.mismatches = mismatches


def load_codebook(path: Path | None = None) -> dict[str, dict]:
    """The codebook as ``{panel: {title, key, builder, description, variables: [...]}}``.

    Checks the structure: every variable has all of :data:`FIELDS`, names are unique within a
    panel, and ``source`` is a non-empty list.
    """
    path = Path(path or paths.CODEBOOK_PATH)
    with open(path, encoding="utf-8") as fh:
        raw = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    panels = raw.get("panels")
    if not isinstance(panels, dict) or not panels:
        raise ValueError(f"{path}: expected a top-level 'panels' mapping")
    for panel, spec in panels.items():
        variables = spec.get("variables") or []
        seen: set[str] = set()
        for i, var in enumerate(variables):
            missing = [f for f in FIELDS if f not in var]
            if missing:
                raise ValueError(f"{path}: {panel} variable {i} ({var.get('name', '?')}) lacks {missing}")
            if var["name"] in seen:
                raise ValueError(f"{path}: {panel}: duplicate variable {var['name']!r}")
            seen.add(var["name"])
            if not isinstance(var["source"], list) or not var["source"]:
                raise ValueError(f"{path}: {panel}.{var['name']}: source must be a non-empty list")
    return panels


def codebook_frame(panel: str | None = None, path: Path | None = None) -> pd.DataFrame:
    """Tidy table of the codebook (one row per variable; ``source`` joined with ", ") for rendering.

    ``panel`` selects one panel (KeyError if unknown); ``None`` gives all, in file order.
    """
    book = load_codebook(path)
    if panel is not None and panel not in book:
        raise KeyError(f"{panel!r} is not in the codebook; known: {', '.join(book)}")
    rows = []
    for name, spec in book.items():
        if panel is not None and name != panel:
            continue
        for var in spec["variables"]:
            row = {"panel": name, **{f: var[f] for f in FIELDS}}
            row["source"] = ", ".join(map(str, var["source"]))
            row["years"] = str(var["years"])
            row["notes"] = " ".join(str(var["notes"] or "").split())
            rows.append(row)
    return pd.DataFrame(rows, columns=list(FRAME_COLUMNS))


def check_codebook(panel: str, df: pd.DataFrame, *, raise_on_mismatch: bool = True,
                   path: Path | None = None) -> dict[str, list[str]]:
    """Compare ``df``'s columns with the codebook entries of ``panel``.

    Returns ``{"missing_in_codebook": [...], "missing_in_data": [...]}`` (empty lists when they
    agree); raises :class:`CodebookMismatchError` on any mismatch unless ``raise_on_mismatch`` is
    False.
    """
    book = load_codebook(path)
    if panel not in book:
        raise KeyError(f"{panel!r} is not in the codebook; known: {', '.join(book)}")
    documented = [v["name"] for v in book[panel]["variables"]]
    columns = [str(c) for c in df.columns]
    mismatches = {
        "missing_in_codebook": [c for c in columns if c not in documented],
        "missing_in_data": [c for c in documented if c not in columns],
    }
    if raise_on_mismatch and (mismatches["missing_in_codebook"] or mismatches["missing_in_data"]):
        raise CodebookMismatchError(panel, mismatches)
    return mismatches
