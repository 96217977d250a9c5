"""Figures for panel estimates: coefficient plots and binned scatters, and the book's figure style.

Each function draws on a Matplotlib ``ax`` (a new figure if none is given) and returns it,
so a chapter can compose panels; the numbers behind a binned scatter come from
:func:`binned_means`, which a test or a ``glue`` can use without drawing.

The book style (issue 15). The book's text column is about 730 px wide and a chapter's PNG is
shown at that width at most, so a figure's pixel width decides how much its text is shrunk. A
figure function in :mod:`analysis` makes its figure with :func:`subplots`, :func:`panel_grid` or
:func:`figure`, which apply :func:`book_style` and refuse a figure wider than :data:`MAX_WIDTH_IN`
(the modules not converted yet are the expected failures of ``tests/test_figures.py``). The rules:

* at most 10 inches wide, i.e. at most 1,000 px at :data:`DPI` = 100, so the page shows it at
  73% or more (a 7-inch figure is shown at full size);
* no explicit font size below :data:`MIN_FONT_PT` (9 pt) anywhere in ``analysis/``;
* a multi-panel figure wraps its panels into rows (2 x 2 rather than 1 x 4) instead of growing wider.

``tests/test_figures.py`` checks all three, on the code and on the committed notebooks' PNGs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.estimation import PanelResult, SpecificationError, within_transform

__all__ = [
    "BOOK_RC", "DPI", "MAX_WIDTH_IN", "MIN_FONT_PT", "BinnedMeans", "binned_means", "binned_scatter",
    "book_style", "coef_plot", "figure", "panel_grid", "subplots",
]

#: Pixels per inch of the PNGs the notebooks save (the inline backend draws at ``figure.dpi``).
DPI = 100
#: Widest figure, in inches: 1,000 px at :data:`DPI`, shown at >= 73% in a ~730 px text column.
MAX_WIDTH_IN = 10.0
#: Smallest explicit font size allowed in ``analysis/`` (points).
MIN_FONT_PT = 9

#: The book's Matplotlib settings: legible text at the page width and a stated resolution, so that
#: a figure of w inches is w x 100 px wide (before the inline backend's tight crop).
BOOK_RC = {
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 9,
    "legend.title_fontsize": 9,
    "figure.titlesize": 12,
}


def book_style() -> None:
    """Apply :data:`BOOK_RC` to Matplotlib's global settings (idempotent).

    Called by :func:`subplots`, :func:`panel_grid` and every plotting function of this module
    before it makes a figure, so a chapter gets the style from whichever figure it draws first,
    whatever it imported (and after, e.g., a seaborn theme that changed the font sizes).
    """
    import matplotlib

    matplotlib.rcParams.update(BOOK_RC)


def subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float], **kwargs):
    """:func:`matplotlib.pyplot.subplots` in the book style; a figure wider than
    :data:`MAX_WIDTH_IN` is refused (wrap the panels into rows instead)."""
    import matplotlib.pyplot as plt

    _check_width(figsize)
    book_style()
    return plt.subplots(nrows, ncols, figsize=figsize, **kwargs)


def _check_width(figsize) -> None:
    width = float(figsize[0])
    if width > MAX_WIDTH_IN + 1e-9:
        raise ValueError(
            f"A figure {width:g} in wide would be {width * DPI:.0f} px, shown at {730 / (width * DPI):.0%} in the "
            f"book's ~730 px column: keep it at most {MAX_WIDTH_IN:g} in and wrap the panels into rows."
        )


def figure(*, figsize: tuple[float, float], **kwargs):
    """An empty :class:`~matplotlib.figure.Figure` (for a GridSpec layout) in the book style, with
    the width rule of :func:`subplots`."""
    import matplotlib.pyplot as plt

    _check_width(figsize)
    book_style()
    return plt.figure(figsize=figsize, **kwargs)


def panel_grid(n: int, *, max_cols: int = 2, width: float = MAX_WIDTH_IN, row_height: float, **kwargs):
    """A figure of ``n`` panels in rows of at most ``max_cols``, ``width`` inches wide and
    ``row_height`` inches per row. Returns ``(fig, axes)``, ``axes`` a list of the ``n`` panels in
    reading order; the unused cells of the last row are hidden. ``kwargs`` go to :func:`subplots`."""
    if n < 1:
        raise ValueError("panel_grid needs at least one panel")
    ncols = max(1, min(int(max_cols), n))
    nrows = -(-n // ncols)
    fig, axes = subplots(nrows, ncols, figsize=(width, row_height * nrows), squeeze=False, **kwargs)
    flat = list(np.asarray(axes).ravel())
    for i, ax in enumerate(flat[n:], start=n):
        ax.set_visible(False)
        # with a shared x axis, the panel above an empty cell is the bottom of its column
        flat[i - ncols].xaxis.set_tick_params(labelbottom=True)
    return fig, flat[:n]


def _axes(ax):
    if ax is None:
        _, ax = subplots(figsize=(6, 4))
    return ax


def coef_plot(
    results: Mapping[str, PanelResult] | Sequence[PanelResult] | PanelResult,
    regressor: str,
    ax=None,
    level: float = 0.95,
    xlabel: str | None = None,
):
    """Point estimate and confidence interval of ``regressor`` in each model, one row per model.

    ``results`` is a dict (row labels = keys), a sequence (rows (1), (2), ...) or one result.
    Models without ``regressor`` are skipped. The interval is at ``level`` with each
    model's own reference distribution (:meth:`PanelResult.ci`). A dashed line marks zero.
    """
    if isinstance(results, PanelResult):
        results = {results.spec.estimator: results}
    elif not isinstance(results, Mapping):
        results = {f"({i + 1})": r for i, r in enumerate(results)}
    rows = [(name, r) for name, r in results.items() if regressor in r.params.index]
    if not rows:
        raise SpecificationError(f"No model has a coefficient on {regressor!r}.")
    ax = _axes(ax)
    ypos = np.arange(len(rows))[::-1]  # first model on top
    est = np.array([float(r.params[regressor]) for _, r in rows])
    ci = np.array([r.ci(level).loc[regressor, ["lower", "upper"]].to_numpy(dtype=float) for _, r in rows])
    ax.hlines(ypos, ci[:, 0], ci[:, 1], color="C0", linewidth=2)
    ax.plot(est, ypos, "o", color="C0", markersize=6, zorder=3)
    ax.axvline(0, color="0.4", linestyle="--", linewidth=1)
    ax.set_yticks(ypos)
    ax.set_yticklabels([name for name, _ in rows])
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel(xlabel or f"Coefficient on {regressor} ({level:.0%} CI)")
    return ax


@dataclass(frozen=True)
class BinnedMeans:
    """Bin means of a (possibly residualised) scatter and the OLS line through the microdata.

    ``bins`` has one row per quantile bin of x: ``x_mean``, ``y_mean``, ``n``. ``slope`` and
    ``intercept`` are the OLS fit of y on x over all observations (after residualisation,
    when ``absorb`` is set, ``slope`` equals the two-way fixed-effects coefficient of a
    model without controls, by Frisch-Waugh-Lovell). With ``absorb``, the overall means of
    x and y are added back so that the axes stay in the variables' units.
    """

    bins: pd.DataFrame
    slope: float
    intercept: float
    nobs: int
    absorb: str | None


def binned_means(
    df: pd.DataFrame,
    x: str,
    y: str,
    bins: int = 20,
    absorb: str | None = None,
    entity: str = "fips",
    time: str = "year",
) -> BinnedMeans:
    """Quantile-binned means of ``y`` against ``x``, pooled or net of unit (and period) means.

    ``absorb`` is ``None`` (pooled), ``"unit"``, ``"time"`` or ``"unit+time"``; the
    demeaning handles unbalanced panels by alternating projections
    (:func:`analysis.estimation.within_transform`). Rows missing x or y are dropped.
    """
    for c in (x, y):
        if c not in df.columns:
            raise SpecificationError(f"Unknown variable {c!r}: it is not a column of the data.")
    if bins < 2:
        raise ValueError("bins must be at least 2")
    d = df.dropna(subset=[x, y])
    if absorb is None:
        xv = d[x].to_numpy(dtype=float)
        yv = d[y].to_numpy(dtype=float)
    else:
        resid = within_transform(d, [x, y], absorb=absorb, entity=entity, time=time)
        xv = resid[x].to_numpy() + float(d[x].mean())
        yv = resid[y].to_numpy() + float(d[y].mean())
    if len(xv) < 2 or np.ptp(xv) == 0:
        raise SpecificationError(f"{x!r} has no variation{' after removing the effects' if absorb else ''}.")
    xc = xv - xv.mean()
    slope = float((xc * (yv - yv.mean())).sum() / (xc**2).sum())
    intercept = float(yv.mean() - slope * xv.mean())
    codes = pd.qcut(xv, q=bins, labels=False, duplicates="drop")
    table = (
        pd.DataFrame({"bin": codes, "x": xv, "y": yv})
        .groupby("bin")
        .agg(x_mean=("x", "mean"), y_mean=("y", "mean"), n=("x", "size"))
    )
    return BinnedMeans(bins=table, slope=slope, intercept=intercept, nobs=len(xv), absorb=absorb)


def binned_scatter(
    df: pd.DataFrame,
    x: str,
    y: str,
    bins: int = 20,
    absorb: str | None = None,
    entity: str = "fips",
    time: str = "year",
    ax=None,
    xlabel: str | None = None,
    ylabel: str | None = None,
):
    """Binned scatter of ``y`` on ``x`` with the fitted OLS line (see :func:`binned_means`).

    With ``absorb="unit+time"`` the points and line are net of unit and period means
    (recentred on the overall means), so the slope of the line is the TWFE coefficient.
    """
    bm = binned_means(df, x, y, bins=bins, absorb=absorb, entity=entity, time=time)
    ax = _axes(ax)
    ax.scatter(bm.bins["x_mean"], bm.bins["y_mean"], color="C0", s=25, zorder=3)
    lo, hi = float(bm.bins["x_mean"].min()), float(bm.bins["x_mean"].max())
    xs = np.array([lo, hi])
    ax.plot(xs, bm.intercept + bm.slope * xs, color="C1", linewidth=1.5, label=f"OLS slope {bm.slope:.3g}")
    suffix = {
        None: "",
        "unit": f" (net of {entity} means)",
        "time": f" (net of {time} means)",
        "unit+time": f" (net of {entity} and {time} means)",
    }[absorb]
    ax.set_xlabel((xlabel or x) + suffix)
    ax.set_ylabel((ylabel or y) + suffix)
    ax.legend(frameon=False, loc="best")
    return ax
