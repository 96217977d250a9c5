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


#: Significant digits a glued float keeps. The prose shows at most five; the sixth absorbs the
#: last bits that move with the CPU, BLAS kernel or thread count (a 3e-16 relative difference
#: once failed nbval on another machine), so a glue record is the same on every machine.
GLUE_DIGITS = 6


class GlueError(ValueError):
    """A value that must never reach the prose (NaN, inf, None or an empty string)."""


def stable_number(value: float, digits: int = GLUE_DIGITS) -> float:
    """``value`` rounded to ``digits`` significant digits (up to 8 for large values, so that
    dollars keep their cents' first digit); integral floats are returned unchanged.
    """
    if value == 0 or value == int(value):
        return float(value)
    integer_digits = len(str(int(abs(value)))) if abs(value) >= 1 else 0
    digits = min(8, max(digits, integer_digits + 2))
    return float(f"{value:.{digits - 1}e}")


def glue(name: str, value, display: bool = False):
    """``myst_nb.glue`` for numbers in prose: NumPy scalars become Python numbers, floats are
    rounded to :data:`GLUE_DIGITS` significant digits, and NaN, inf, None or an empty string
    raise :class:`GlueError` naming the key (a missing value must be handled, never printed).

    NumPy 2 writes ``np.float64(1.5)`` as the text of a scalar, which the ``{glue:text}`` role
    cannot format; a plain ``float`` or ``int`` glues cleanly.
    """
    import math

    import numpy as np
    from myst_nb import glue as _glue

    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, str) and not value.strip()):
        raise GlueError(f"glue {name!r}: the value is {value!r}; handle the missing case before gluing")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise GlueError(f"glue {name!r}: the value is {value}; handle the missing case before gluing")
        value = stable_number(value)
    return _glue(name, value, display=display)


class Table:
    """A table for readers and for nbval at once: HTML (a pandas Styler, numbers at ``digits``
    decimals) in the book, and the same numbers as fixed-precision text, which nbval compares.

    The Styler's id is numbered in the order tables are shown in a kernel, so the HTML is the same
    on every run and no two tables of a page share an id.
    """

    _shown = 0

    def __init__(self, frame, digits: int = 3, caption: str | None = None):
        self.frame = frame.to_frame() if hasattr(frame, "to_frame") and frame.ndim == 1 else frame
        self.digits = digits
        self.caption = caption
        Table._shown += 1
        self.uuid = f"tp{Table._shown}"

    def _fmt(self, v) -> str:
        return f"{v:,.{self.digits}f}" if abs(v) >= 10_000 else f"{v:.{self.digits}f}"

    def _repr_html_(self) -> str:
        styler = (self.frame.style.format(self._fmt, subset=self._float_columns(), na_rep="–")
                  .set_uuid(self.uuid)
                  .set_table_attributes('class="tp-table"'))
        if self.caption:
            styler = styler.set_caption(self.caption)
        return styler.to_html()

    def _float_columns(self) -> list:
        return [c for c in self.frame.columns if str(self.frame[c].dtype).lower().startswith("float")]

    def __repr__(self) -> str:
        text = self.frame.to_string(float_format=self._fmt, na_rep="–")
        return f"{self.caption}\n{text}" if self.caption else text


def show_table(frame, digits: int = 3, caption: str | None = None) -> None:
    """Display ``frame`` as an HTML table with ``digits`` decimals (and the same text for nbval)."""
    from IPython.display import display

    display(Table(frame, digits, caption))
