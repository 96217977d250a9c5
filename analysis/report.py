"""Tables and small formatting helpers that chapters share (provenance, coverage, glue values)."""

from __future__ import annotations

import pandas as pd

from analysis.manifest import load_manifest


def provenance_table(prefixes: tuple[str, ...] | None = None) -> pd.DataFrame:
    """The data manifest as a table: file, description, licence, size (kB) and SHA-256 prefix.

    ``prefixes`` keeps only files whose short name starts with one of them (e.g. US sources).
    """
    rows = []
    for e in load_manifest().values():
        if prefixes and not e.name.startswith(prefixes):
            continue
        rows.append({
            "file": e.name,
            "description": e.description,
            "licence or terms": e.licence,
            "size (kB)": round(e.size / 1000),
            "sha256 (first 12)": e.sha256[:12],
            "citation": e.citation,
        })
    return pd.DataFrame(rows).set_index("file")


def coverage_table(df: pd.DataFrame, columns: list[str], time: str = "year") -> pd.DataFrame:
    """Non-missing observations of each column by year (rows: columns, columns: years)."""
    counts = df.groupby(time)[columns].count().T
    counts.columns = [str(c) for c in counts.columns]
    return counts


def fmt(x: float, digits: int = 2) -> str:
    """Fixed-precision text for glue: the same digits on every machine."""
    return f"{x:,.{digits}f}"


def pct(x: float, digits: int = 0) -> str:
    """A share in [0, 1] as a percentage string."""
    return f"{100 * x:.{digits}f}%"


def glue(name: str, value, display: bool = False):
    """``myst_nb.glue`` for numbers in prose, with NumPy scalars turned into Python numbers.

    NumPy 2 writes ``np.float64(1.5)`` as the text of a scalar, which the ``{glue:text}`` role
    cannot format; a plain ``float`` or ``int`` glues cleanly.
    """
    import numpy as np
    from myst_nb import glue as _glue

    if isinstance(value, np.generic):
        value = value.item()
    return _glue(name, value, display=display)
