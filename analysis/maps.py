"""Choropleth maps of English local authority districts (geopandas, ONS TopoJSON boundaries).

Boundaries come from the ONS ``uk-topojson`` file (manifest ``ons_uk_topojson``): simplified
boundaries of every vintage 2014-2025 in one TopoJSON topology, each area with ``areacd``,
``areanm`` and optional ``start``/``end`` years (``end`` is the last year an area existed). GDAL's
TopoJSON driver (through pyogrio) decodes the quantised, delta-encoded arcs; the object ``ltla``
holds the lower-tier districts. :func:`england_lad_boundaries` keeps the English districts that
existed in a given year and projects them to the British National Grid (EPSG:27700), so that
areas are drawn without the stretch of longitude/latitude.

Values are shown in quantile classes (:func:`quantile_classes`): the City of London and the Isles
of Scilly have tiny resident populations, so per-resident densities have extreme outliers that a
continuous scale would turn into one dark area and a pale country.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

LAD_LAYER = "ltla"
BNG = "EPSG:27700"
MISSING_COLOUR = "#d9d9d9"

__all__ = ["england_lad_boundaries", "quantile_classes", "choropleth", "england_maps"]


def england_lad_boundaries(year: int = 2023, path: str | Path | None = None, *, crs: str | None = BNG):
    """English LADs in ``year`` as a GeoDataFrame (``lad_code``, ``lad_name``, ``geometry``).

    An area is kept if ``start`` is missing or <= ``year`` and ``end`` is missing or >= ``year``.
    ``path`` defaults to the fetched ``ons_uk_topojson``; ``crs=None`` keeps WGS84 longitude/latitude.
    """
    import geopandas as gpd

    if path is None:
        from analysis.fetch import fetch

        path = fetch("ons_uk_topojson")
    g = gpd.read_file(path, layer=LAD_LAYER)
    for col in ("areacd", "areanm"):
        if col not in g.columns:
            raise ValueError(f"{Path(path).name}: layer {LAD_LAYER!r} has no column {col!r}")
    start = pd.to_numeric(g["start"], errors="coerce") if "start" in g else pd.Series(np.nan, index=g.index)
    end = pd.to_numeric(g["end"], errors="coerce") if "end" in g else pd.Series(np.nan, index=g.index)
    keep = g["areacd"].str.match(r"^E0[6-9]\d{6}$") & (start.isna() | (start <= year)) & (end.isna() | (end >= year))
    out = g.loc[keep, ["areacd", "areanm", "geometry"]].rename(columns={"areacd": "lad_code", "areanm": "lad_name"})
    if out["lad_code"].duplicated().any():
        raise ValueError(f"{Path(path).name}: more than one boundary for {out.loc[out['lad_code'].duplicated(), 'lad_code'].tolist()[:5]} in {year}")
    if out.crs is None:
        out = out.set_crs("EPSG:4326")
    if crs is not None:
        out = out.to_crs(crs)
    return out.sort_values("lad_code").reset_index(drop=True)


def quantile_classes(values: pd.Series, k: int = 5, digits: int = 1) -> pd.Series:
    """``values`` in ``k`` quantile classes, as an ordered categorical labelled "low-high".

    Missing values stay missing. Ties can merge classes (fewer than ``k``).
    """
    v = pd.Series(values, dtype="float64")
    edges = np.unique(np.nanquantile(v.dropna(), np.linspace(0, 1, k + 1)))
    if len(edges) < 2:
        raise ValueError("quantile_classes: fewer than two distinct values")
    labels = [f"{edges[i]:,.{digits}f}-{edges[i + 1]:,.{digits}f}" for i in range(len(edges) - 1)]
    return pd.cut(v, edges, labels=labels, include_lowest=True, ordered=True)


def choropleth(boundaries, values: pd.Series, *, ax=None, title: str = "", k: int = 5, digits: int = 1,
               cmap: str = "viridis", reverse: bool = False, legend_title: str = ""):
    """Draw ``values`` (indexed by ``lad_code``) on ``boundaries`` in quantile classes; return ``ax``.

    Districts without a value are drawn grey and counted in the legend. ``reverse`` flips the
    colour order (e.g. so that rank 1 = most deprived is the darkest).
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from analysis.plots import subplots

    if ax is None:
        _, ax = subplots(figsize=(5, 6))
    classes = quantile_classes(values.reindex(boundaries["lad_code"]).set_axis(boundaries.index), k, digits)
    cats = list(classes.cat.categories)
    colours = plt.get_cmap(cmap)(np.linspace(0.1, 0.95, len(cats)))
    if reverse:
        colours = colours[::-1]
    colour_of = dict(zip(cats, colours))
    face = [colour_of[c] if isinstance(c, str) else MISSING_COLOUR for c in classes.astype(object)]
    boundaries.plot(ax=ax, color=face, edgecolor="white", linewidth=0.15)
    handles = [Patch(facecolor=colour_of[c], label=c) for c in cats]
    n_missing = int(classes.isna().sum())
    if n_missing:
        handles.append(Patch(facecolor=MISSING_COLOUR, label=f"no data ({n_missing})"))
    ax.legend(handles=handles, title=legend_title, loc="upper left", frameon=False,
              handlelength=1.2, handletextpad=0.5, borderaxespad=0.0)
    ax.set_title(title, fontsize=10)
    ax.set_axis_off()
    return ax


def england_maps(boundaries, data: pd.DataFrame, columns: Mapping[str, dict], max_cols: int = 3):
    """Choropleths in rows of at most ``max_cols``, one per entry of ``columns`` (column -> keyword
    arguments of :func:`choropleth`, e.g. ``title``, ``reverse``); ``data`` is indexed by
    ``lad_code``. The figure is the book's full width (10 in); long titles are wrapped to the
    panel. Returns the Figure.
    """
    import textwrap

    from analysis.plots import MAX_WIDTH_IN, panel_grid

    ncols = min(max_cols, len(columns))
    panel_in = MAX_WIDTH_IN / ncols
    fig, axes = panel_grid(len(columns), max_cols=ncols, row_height=panel_in * 1.35)
    for ax, (col, kw) in zip(axes, columns.items(), strict=True):
        kw = dict(kw)
        if kw.get("title"):  # about 11 characters of 10-pt text per inch
            kw["title"] = textwrap.fill(kw["title"], width=max(12, int(panel_in * 11)))
        choropleth(boundaries, data[col], ax=ax, **kw)
    fig.tight_layout()
    return fig
