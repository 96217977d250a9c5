"""Replications of published work on associations and their dark side (Chapter 11).

* Satyanath, Voigtlaender and Voth (2017, JPE), "Bowling for Fascism": Table 3, Panel A,
  columns 3-5. OLS of standardised Nazi party entry 1925-33 (``pcNSentry_std``) on association
  density per 1,000 inhabitants in 229 German towns, HC1 standard errors.
* Guiso, Sapienza and Zingales (2016, JEEA), "Long-Term Persistence": non-profit organisations
  per 1,000 inhabitants (``totassoc_p``) of Centre-North Italian municipalities by whether the
  town was a medieval free city (``libero_comune_allnord``), described only.

The authors' files are read from the manifest (``svv_bowling_for_fascism``,
``gsz_long_term_persistence``) through :func:`analysis.fetch.fetch`; a required column that is
missing raises :class:`ReplicationDataError` naming the file and the column.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from analysis.atlas import OLSResult, ols

__all__ = [
    "ReplicationDataError",
    "read_replication",
    "SVV_FILE",
    "SVV_CONTROLS",
    "SVV_TABLE3A",
    "SVV_PUBLISHED",
    "load_svv",
    "svv_table3a",
    "svv_table3a_frame",
    "GSZ_FILE",
    "GSZ_SIZE_BANDS",
    "load_gsz",
    "group_means",
    "gsz_free_city_table",
    "gsz_figure",
]


class ReplicationDataError(ValueError):
    """A replication file lacks a column that the analysis needs."""


def read_replication(name: str, columns: Sequence[str], path: str | Path | None = None) -> pd.DataFrame:
    """The columns ``columns`` of the Stata file of manifest entry ``name`` (or of ``path``).

    Raises :class:`ReplicationDataError` naming the file and every missing column.
    """
    if path is None:
        from analysis.fetch import fetch

        path = fetch(name)
    path = Path(path)
    with pd.io.stata.StataReader(path) as reader:
        available = list(reader.variable_labels())
    missing = [c for c in columns if c not in available]
    if missing:
        raise ReplicationDataError(
            f"{name} ({path.name}): missing column(s) {', '.join(repr(c) for c in missing)}; "
            f"the file has {len(available)} columns. Is it the authors' replication file?"
        )
    return pd.read_stata(path, columns=list(columns), convert_categoricals=False)


# --------------------------------------------------------------------------------------
# Satyanath, Voigtlaender and Voth (2017)
# --------------------------------------------------------------------------------------

SVV_FILE = "svv_bowling_for_fascism"
#: Controls of Table 3, columns 4-5: log 1925 population, Catholic share, blue-collar share.
SVV_CONTROLS = ("ln_pop25", "share_cath25", "bcollar25")
#: Table 3, Panel A: column -> (association measure, controls). Dependent variable pcNSentry_std.
SVV_TABLE3A: dict[int, tuple[str, tuple[str, ...]]] = {
    3: ("clubs_all_pc", ()),
    4: ("clubs_all_pc", SVV_CONTROLS),
    5: ("clubs_civic_pc", SVV_CONTROLS),
}
#: Published values (strings, at printed precision); only column 3 is held here.
SVV_PUBLISHED: dict[int, dict[str, str | int]] = {
    3: {"coef": "0.12588", "se": "0.05065", "nobs": 229},
}
_SVV_RAW = ["cityid", "landweimar", "pcNSentry_std", "clubs_all_pc", "clubs_civic_pc", "pop25",
            "share_cath25", "bcollar25"]


def load_svv(path: str | Path | None = None) -> pd.DataFrame:
    """The SVV town file with the columns of Table 3 and ``ln_pop25`` = log(pop25)."""
    d = read_replication(SVV_FILE, _SVV_RAW, path)
    d["ln_pop25"] = np.log(d["pop25"].astype(float))
    return d


def svv_table3a(df: pd.DataFrame) -> dict[int, OLSResult]:
    """OLS with HC1 SEs for Table 3, Panel A, columns 3-5 (listwise deletion within each column)."""
    return {
        col: ols(df, "pcNSentry_std", [x, *controls], cov="HC1")
        for col, (x, controls) in SVV_TABLE3A.items()
    }


def svv_table3a_frame(results: dict[int, OLSResult]) -> pd.DataFrame:
    """One row per column: association measure, our coefficient, SE and N, and the published ones."""
    rows = []
    for col, r in results.items():
        x, controls = SVV_TABLE3A[col]
        pub = SVV_PUBLISHED.get(col, {})
        rows.append({
            "column": col,
            "association measure": x,
            "controls": "yes" if controls else "no",
            "coef": float(r.params[x]),
            "se": float(r.std_errors[x]),
            "N": r.nobs,
            "published coef": pub.get("coef", ""),
            "published se": pub.get("se", ""),
            "published N": pub.get("nobs", ""),
        })
    return pd.DataFrame(rows).set_index("column")


# --------------------------------------------------------------------------------------
# Guiso, Sapienza and Zingales (2016)
# --------------------------------------------------------------------------------------

GSZ_FILE = "gsz_long_term_persistence"
#: Municipality size bands (inhabitants) for comparisons among towns of similar size.
GSZ_SIZE_BANDS = (0, 10_000, 50_000, 100_000, np.inf)
_GSZ_RAW = ["istcom", "totassoc_p", "libero_comune_allnord", "population"]


def load_gsz(path: str | Path | None = None) -> pd.DataFrame:
    """Centre-North municipalities with a free-city code and a non-profit density.

    Columns: ``istcom``, ``nonprofits_per_1k`` (the file's ``totassoc_p``, labelled "per capita"
    but per 1,000 inhabitants: median about 4.7), ``free_city`` (``libero_comune_allnord``, 0/1;
    the code exists only for the Centre-North), ``population`` (inhabitants; the file stores
    millions) and ``size_band``.
    """
    d = read_replication(GSZ_FILE, _GSZ_RAW, path)
    d = d.dropna(subset=["totassoc_p", "libero_comune_allnord", "population"])
    out = pd.DataFrame({
        "istcom": d["istcom"],
        "nonprofits_per_1k": d["totassoc_p"].astype(float),
        "free_city": d["libero_comune_allnord"].astype(int),
        "population": (d["population"].astype(float) * 1e6).round(),
    })
    labels = ["under 10k", "10k-50k", "50k-100k", "100k and over"]
    out["size_band"] = pd.cut(out["population"], GSZ_SIZE_BANDS, right=False, labels=labels)
    return out.reset_index(drop=True)


def group_means(df: pd.DataFrame, value: str, by: str | Sequence[str], level: float = 0.95) -> pd.DataFrame:
    """Mean of ``value`` by group with a t interval: n, mean, sd, se, lower, upper, median.

    The interval is mean +/- t(n-1) * sd/sqrt(n) (NaN for a group of one).
    """
    for c in [value, *([by] if isinstance(by, str) else by)]:
        if c not in df.columns:
            raise ReplicationDataError(f"group_means: no column {c!r} in the data.")
    g = df.groupby(by, observed=True)[value]
    t = g.agg(n="count", mean="mean", sd="std", median="median")
    t["se"] = t["sd"] / np.sqrt(t["n"])
    q = stats.t.ppf(0.5 + level / 2, t["n"] - 1)
    t["lower"] = t["mean"] - q * t["se"]
    t["upper"] = t["mean"] + q * t["se"]
    return t[["n", "mean", "sd", "se", "lower", "upper", "median"]]


def gsz_free_city_table(df: pd.DataFrame) -> pd.DataFrame:
    """Non-profits per 1,000 by free-city history: all municipalities, then by size band."""
    overall = group_means(df, "nonprofits_per_1k", "free_city")
    overall.index = pd.MultiIndex.from_product([["all"], overall.index], names=["size_band", "free_city"])
    bands = group_means(df, "nonprofits_per_1k", ["size_band", "free_city"])
    bands.index = bands.index.set_levels(bands.index.levels[0].astype(str), level=0)
    return pd.concat([overall, bands])


def gsz_figure(table: pd.DataFrame, ax=None):
    """Means with 95% intervals of non-profits per 1,000, former free cities against the rest."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4))
    bands = list(dict.fromkeys(table.index.get_level_values(0)))
    x = np.arange(len(bands))
    for k, (fc, label, colour) in enumerate(((0, "other municipalities", "C0"), (1, "former free cities", "C1"))):
        rows = [table.loc[(b, fc)] if (b, fc) in table.index else None for b in bands]
        xs = [xi + (k - 0.5) * 0.25 for xi, r in zip(x, rows, strict=True) if r is not None]
        rr = [r for r in rows if r is not None]
        means = np.array([r["mean"] for r in rr])
        lo = means - np.array([r["lower"] for r in rr])
        hi = np.array([r["upper"] for r in rr]) - means
        ax.errorbar(xs, means, yerr=[lo, hi], fmt="o", color=colour, capsize=3, label=label)
        for xi, r in zip(xs, rr, strict=True):
            ax.annotate(f"n={int(r['n']):,}", (xi, r["upper"]), textcoords="offset points", xytext=(0, 3),
                        ha="center", fontsize=7, color=colour)
    ax.set_xticks(x)
    ax.set_xticklabels(["all sizes" if b == "all" else b for b in bands], fontsize=8)
    ax.set_xlabel("Municipality size (inhabitants)")
    ax.set_ylabel("Non-profits per 1,000 inhabitants")
    ax.legend(frameon=False, fontsize=8, loc="lower left")
    return ax
