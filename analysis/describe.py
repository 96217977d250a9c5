"""Descriptive statistics and figures of the data chapter (Chapter 2).

Everything here describes; nothing estimates an effect. Figures return the matplotlib Figure so
that a chapter can caption it, and never call ``plt.show``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from analysis.estimation import within_transform

#: Density measures of the wave panel and their labels (units in the label).
WAVE_DENSITIES = {
    "assn_per_1k": "All associations per 1,000 people",
    "civic_religious_per_10k": "Civic and religious per 10,000",
    "business_prof_labour_political_per_10k": "Business, professional, labour, political per 10,000",
    "recreation_sports_per_10k": "Recreation and sports per 10,000",
    "nonprofits_per_10k": "Non-profits (NCCS) per 10,000",
}
#: Outcomes of the wave panel and their labels.
WAVE_OUTCOMES = {
    "unemployment_rate": "Unemployment rate (%)",
    "poverty_rate": "Poverty rate, all ages (%)",
    "child_poverty_rate": "Poverty rate, under 18 (%)",
    "log_median_hh_income": "Log median household income (nominal $)",
}


def variance_shares(df: pd.DataFrame, cols, entity: str = "fips", time: str = "year") -> pd.DataFrame:
    """Split each column's variance into between-county, common-year and within-county parts.

    ``between``: sum of squares of county means around the grand mean; ``common_year``: what
    removing year means as well takes away from the within-county variation (shocks shared by
    all counties in a year); ``within_twoway``: the residual after removing county and year
    means, the only variation a two-way fixed-effects estimate uses. Shares of the total sum
    of squares, so they add to one; computed on each column's non-missing rows.
    """
    rows = []
    for col in [cols] if isinstance(cols, str) else cols:
        d = df[[entity, time, col]].dropna()
        x = d[col].astype(float)
        ss_total = float(((x - x.mean()) ** 2).sum())
        county_mean = x.groupby(d[entity]).transform("mean")
        ss_between = float(((county_mean - x.mean()) ** 2).sum())
        resid = within_transform(d, col, absorb="unit+time", entity=entity, time=time)[col]
        ss_twoway = float((resid ** 2).sum())
        rows.append({
            "variable": col,
            "observations": len(d),
            "counties": d[entity].nunique(),
            "sd_overall": float(x.std()),
            "share_between": ss_between / ss_total,
            "share_common_year": (ss_total - ss_between - ss_twoway) / ss_total,
            "share_within_twoway": ss_twoway / ss_total,
        })
    return pd.DataFrame(rows).set_index("variable")


def summary_by_year(df: pd.DataFrame, cols, time: str = "year") -> pd.DataFrame:
    """Mean, SD and the 10th/50th/90th percentiles of each column by year (long format)."""
    cols = [cols] if isinstance(cols, str) else list(cols)
    long = df.melt(id_vars=[time], value_vars=cols, var_name="variable").dropna()
    g = long.groupby(["variable", time])["value"]
    out = pd.DataFrame({
        "n": g.size(),
        "mean": g.mean(),
        "sd": g.std(),
        "p10": g.quantile(0.10),
        "p50": g.median(),
        "p90": g.quantile(0.90),
    })
    return out.reindex(cols, level="variable")


def density_distribution_figure(waves: pd.DataFrame) -> plt.Figure:
    """Distribution of associations per 1,000 people in each wave (log scale: the tail is long)."""
    d = waves.loc[waves["assn_per_1k"] > 0, ["year", "assn_per_1k"]]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    sns.boxenplot(data=d, x="year", y="assn_per_1k", ax=ax, color="#4C72B0", k_depth="proportion")
    ax.set_yscale("log")
    ax.set_xlabel("Wave")
    ax.set_ylabel("Associations per 1,000 people (log scale)")
    fig.tight_layout()
    return fig


def type_trends_figure(waves: pd.DataFrame) -> plt.Figure:
    """Median county density of each organisation-type group by wave."""
    cols = [c for c in WAVE_DENSITIES if c != "assn_per_1k"]
    med = waves.groupby("year")[cols].median().rename(columns=WAVE_DENSITIES)
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for label in med.columns:
        ax.plot(med.index, med[label], marker="o", label=label)
    ax.set_xticks(med.index)
    ax.set_xlabel("Wave")
    ax.set_ylabel("Median county, per 10,000 people")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def outcome_trends_figure(waves: pd.DataFrame) -> plt.Figure:
    """Median and interquartile range across counties of each outcome by wave."""
    fig, axes = plt.subplots(1, len(WAVE_OUTCOMES), figsize=(11, 3))
    for ax, (col, label) in zip(axes, WAVE_OUTCOMES.items()):
        q = waves.groupby("year")[col].quantile([0.25, 0.5, 0.75]).unstack()
        ax.fill_between(q.index, q[0.25], q[0.75], alpha=0.3)
        ax.plot(q.index, q[0.5], marker="o")
        ax.set_xticks(q.index)
        ax.tick_params(axis="x", labelrotation=45)
        ax.set_title(label, fontsize=9)
    fig.tight_layout()
    return fig


def annual_density_figure(annual: pd.DataFrame, break_year: int = 2017) -> plt.Figure:
    """Median associations per 10,000 (with IQR) and counties with data, 2014-2022."""
    q = annual.groupby("year")["associations_per_10k"].quantile([0.25, 0.5, 0.75]).unstack()
    n = annual.groupby("year")["associations_per_10k"].count()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    ax.fill_between(q.index, q[0.25], q[0.75], alpha=0.3, label="interquartile range")
    ax.plot(q.index, q[0.5], marker="o", label="median county")
    ax2.bar(n.index, n.values, color="#8C8C8C")
    for a in (ax, ax2):
        a.axvline(break_year - 0.5, color="black", linestyle="--", linewidth=1)
        a.set_xlabel("Year")
    ax.text(break_year - 0.4, ax.get_ylim()[1], " NAICS 2017", va="top", fontsize=8)
    ax.set_ylabel("Membership associations per 10,000")
    ax.legend(fontsize=8, frameon=False)
    ax2.set_ylabel("Counties with a value")
    ax2.set_ylim(np.floor(n.min() * 0.95 / 100) * 100, n.max() * 1.01)
    fig.tight_layout()
    return fig


def variance_shares_figure(shares: pd.DataFrame, labels: dict[str, str]) -> plt.Figure:
    """Stacked bars: between-county, common-year and two-way within shares of each variable."""
    parts = {"share_between": "between counties", "share_common_year": "common to a year",
             "share_within_twoway": "within county, net of year"}
    d = shares[list(parts)].rename(columns=parts).rename(index=labels)
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(d) + 1.2))
    left = np.zeros(len(d))
    for col, color in zip(d.columns, ["#4C72B0", "#BBBBBB", "#DD8452"]):
        ax.barh(d.index, d[col], left=left, label=col, color=color)
        left += d[col].to_numpy()
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("Share of total variance")
    ax.legend(ncol=3, fontsize=8, frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout()
    return fig


def series_break_summary(annual: pd.DataFrame, col: str = "associations_per_10k",
                         before: int = 2016, after: int = 2017) -> dict[str, float]:
    """How the annual association series changes across the NAICS 2017 break.

    ``median_ratio``: median over counties with both years of value(after) / value(before);
    ``counties_lost``: counties with a value before the break and none after it.
    """
    wide = annual.pivot(index="fips", columns="year", values=col)
    both = wide[[before, after]].dropna()
    both = both[both[before] > 0]
    return {
        "median_before": float(wide[before].median()),
        "median_after": float(wide[after].median()),
        "median_ratio": float((both[after] / both[before]).median()),
        "counties_before": int(wide[before].notna().sum()),
        "counties_lost": int((wide[before].notna() & wide[after].isna()).sum()),
    }


def crosswalk_summary(report: dict) -> pd.DataFrame:
    """Counties per wave before and after the FIPS crosswalk, from ``panels.build_report``."""
    before = pd.Series(report["counties_per_wave_before_crosswalk"], name="Penn State file")
    after = pd.Series(report["counties_per_wave_after_crosswalk"], name="panel")
    out = pd.concat([before, after], axis=1)
    out.index = out.index.astype(int)
    out.index.name = "wave"
    return out
