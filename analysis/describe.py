"""Descriptive statistics and figures of the data chapter (Chapter 2), and the measurement checks
of the annual series used by Chapter 6.

Everything here describes; nothing estimates an effect. Figures return the matplotlib Figure so
that a chapter can caption it, and never call ``plt.show``. Every figure is made with the
:mod:`analysis.plots` helpers, so it gets the book style (issue 15: at most 10 in wide, text of
9 pt or more) whatever theme the chapter set before.

What the counts are
-------------------
The Penn State counts are County Business Patterns (CBP) *employer establishments*: locations
with paid employees at some time in the year, classified by industry (:data:`ESTABLISHMENT_CLASSES`).
Six classes are membership organisations (congregations, civic and social, business,
professional, labour and political organisations with payroll); four are recreation businesses
(golf courses and country clubs, fitness centres, bowling centres, sports teams and clubs,
professional ones included). ``community_per_1k`` counts the six; ``assn_per_1k`` all of them
(plus, in 1997, two SIC-only classes). Volunteer-run groups without payroll are not counted.

The 2017 break of the annual series
-----------------------------------
From reference year 2017 CBP publishes a county x industry cell only if it holds three or more
establishments (earlier years published every cell with its count). The Urban Institute's
series sums the published cells of the ten industries, so from 2017 every industry with one or
two establishments in a county drops out of its count, and a county with no cell of three or
more has no value. :func:`suppression_test` checks this against the data: it applies the rule to
the 2014 Penn State cell counts (CBP 2014, the same ten industries) and compares the predicted
loss with the observed 2016 -> 2017 change, county by county.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from analysis import plots
from analysis.estimation import within_transform

#: The establishment classes of the Penn State wave files (County Business Patterns, employer
#: establishments): panel column -> (title, NAICS code 2005-2014, SIC code 1997, group).
ESTABLISHMENT_CLASSES: dict[str, tuple[str, str, str, str]] = {
    "n_religious": ("Religious organisations (congregations with payroll)", "813110", "8661", "community"),
    "n_civic": ("Civic and social organisations", "813410", "8641", "community"),
    "n_business": ("Business associations (chambers of commerce, trade groups)", "813910", "8611", "community"),
    "n_professional": ("Professional organisations", "813920", "8621", "community"),
    "n_labour": ("Labour unions and similar organisations", "813930", "8631", "community"),
    "n_political": ("Political organisations", "813940", "8651", "community"),
    "n_golf": ("Golf courses and country clubs", "713910", "7992", "recreation business"),
    "n_fitness": ("Fitness and recreational sports centres (commercial gyms included)", "713940", "7991",
                  "recreation business"),
    "n_bowling": ("Bowling centres", "713950", "7933", "recreation business"),
    "n_sports_clubs": ("Sports teams and clubs (professional ones included)", "711211", "7941",
                       "recreation business"),
    "n_membership_sports": ("Membership sports and recreation clubs", "none (SIC only)", "7997", "1997 only"),
    "n_membership_nec": ("Membership organisations not elsewhere classified", "none (SIC only)", "8699",
                         "1997 only"),
}
#: The six membership classes of ``community_per_1k`` and the ten classes of every wave.
COMMUNITY_CLASSES: tuple[str, ...] = tuple(k for k, v in ESTABLISHMENT_CLASSES.items() if v[3] == "community")
TEN_CLASSES: tuple[str, ...] = tuple(k for k, v in ESTABLISHMENT_CLASSES.items() if v[3] != "1997 only")
SIC_ONLY_CLASSES: tuple[str, ...] = tuple(k for k, v in ESTABLISHMENT_CLASSES.items() if v[3] == "1997 only")
#: CBP's publication threshold from reference year 2017: establishments per county x industry cell.
CBP_MIN_CELL_2017 = 3

#: Density measures of the wave panel and their labels (units in the label).
WAVE_DENSITIES = {
    "assn_per_1k": "All associations per 1,000 people",
    "community_per_1k": "Community organisations (six membership classes) per 1,000 people",
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
    fig, ax = plots.subplots(figsize=(7, 3.8))
    sns.boxenplot(data=d, x="year", y="assn_per_1k", ax=ax, color="#4C72B0", k_depth="proportion")
    ax.set_yscale("log")
    ax.set_xlabel("Wave")
    ax.set_ylabel("Associations per 1,000 people (log scale)")
    fig.tight_layout()
    return fig


def type_trends_figure(waves: pd.DataFrame) -> plt.Figure:
    """Median county density of each organisation-type group by wave."""
    cols = [c for c in WAVE_DENSITIES if not c.endswith("_per_1k")]  # the per-10,000 type groups
    med = waves.groupby("year")[cols].median().rename(columns=WAVE_DENSITIES)
    fig, ax = plots.subplots(figsize=(7, 3.8))
    for label in med.columns:
        ax.plot(med.index, med[label], marker="o", label=label)
    ax.set_xticks(med.index)
    ax.set_xlabel("Wave")
    ax.set_ylabel("Median county, per 10,000 people")
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def outcome_trends_figure(waves: pd.DataFrame) -> plt.Figure:
    """Median and interquartile range across counties of each outcome by wave, one panel per
    outcome in a 2 x 2 grid (reading order: unemployment, poverty, child poverty, income)."""
    fig, axes = plots.panel_grid(len(WAVE_OUTCOMES), max_cols=2, row_height=2.8)
    for ax, (col, label) in zip(axes, WAVE_OUTCOMES.items()):
        q = waves.groupby("year")[col].quantile([0.25, 0.5, 0.75]).unstack()
        ax.fill_between(q.index, q[0.25], q[0.75], alpha=0.3)
        ax.plot(q.index, q[0.5], marker="o")
        ax.set_xticks(q.index)
        ax.set_title(label)
    fig.tight_layout()
    return fig


def annual_density_figure(annual: pd.DataFrame, break_year: int = 2017) -> plt.Figure:
    """Median associations per 10,000 (with IQR) and counties with data, 2014-2022; the dashed line
    marks CBP's three-establishment publication rule (from reference year 2017)."""
    q = annual.groupby("year")["associations_per_10k"].quantile([0.25, 0.5, 0.75]).unstack()
    n = annual.groupby("year")["associations_per_10k"].count()
    fig, (ax, ax2) = plots.subplots(1, 2, figsize=(10, 3.5))
    ax.fill_between(q.index, q[0.25], q[0.75], alpha=0.3, label="interquartile range")
    ax.plot(q.index, q[0.5], marker="o", label="median county")
    ax2.bar(n.index, n.values, color="#8C8C8C")
    for a in (ax, ax2):
        a.axvline(break_year - 0.5, color="black", linestyle="--", linewidth=1)
        a.set_xlabel("Year")
    ax.text(break_year - 0.4, ax.get_ylim()[1], " 3-establishment rule", va="top", fontsize=9)
    ax.set_ylabel("Membership associations per 10,000")
    # upper right, just below the rule's label (which runs from the dashed line to the right)
    ax.legend(fontsize=9, frameon=False, loc="upper right", bbox_to_anchor=(1.0, 0.93))
    ax2.set_ylabel("Counties with a value")
    ax2.set_ylim(np.floor(n.min() * 0.95 / 100) * 100, n.max() * 1.01)
    fig.tight_layout()
    return fig


def variance_shares_figure(shares: pd.DataFrame, labels: dict[str, str]) -> plt.Figure:
    """Stacked bars: between-county, common-year and two-way within shares of each variable."""
    parts = {"share_between": "between counties", "share_common_year": "common to a year",
             "share_within_twoway": "within county, net of year"}
    d = shares[list(parts)].rename(columns=parts).rename(index=labels)
    fig, ax = plots.subplots(figsize=(8, 0.45 * len(d) + 1.2))
    left = np.zeros(len(d))
    for col, color in zip(d.columns, ["#4C72B0", "#BBBBBB", "#DD8452"]):
        ax.barh(d.index, d[col], left=left, label=col, color=color)
        left += d[col].to_numpy()
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("Share of total variance")
    # above the bars, right-aligned with them: the long variable labels leave the bars a narrow
    # axes, and a legend centred on it would stick out of the figure (and widen the PNG)
    ax.legend(ncol=3, fontsize=9, frameon=False, loc="lower right", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def series_break_summary(annual: pd.DataFrame, col: str = "associations_per_10k",
                         before: int = 2016, after: int = 2017) -> dict[str, float]:
    """How the annual association series changes across the 2017 break (CBP's publication rule).

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


# --------------------------------------------------------------------------------------------
# What the counts are (Chapter 2)
# --------------------------------------------------------------------------------------------


def establishment_classes_table() -> pd.DataFrame:
    """:data:`ESTABLISHMENT_CLASSES` as a table, one row per panel column."""
    return pd.DataFrame.from_dict(ESTABLISHMENT_CLASSES, orient="index",
                                  columns=["establishments", "NAICS (2005-2014)", "SIC (1997)", "group"]
                                  ).rename_axis("column")


def community_vs_all(waves: pd.DataFrame, measures=("assn_per_1k", "community_per_1k"),
                     entity: str = "fips", time: str = "year") -> pd.DataFrame:
    """The two density measures side by side, on the county-waves where both are observed.

    Rows: the measures. Columns: ``mean``, ``sd_within`` (SD after removing county and wave
    means, the variation a two-way fixed-effects estimate uses), ``share_of_count`` (the
    measure's establishments as a share of all establishments counted in ``assn_per_1k``,
    pooled over county-waves), ``corr_levels`` and ``corr_within`` (correlation with the first
    measure, in levels and net of county and wave means).
    """
    measures = list(measures)
    d = waves.dropna(subset=measures)
    resid = within_transform(d, measures, absorb="unit+time", entity=entity, time=time)
    total = float((d[measures[0]] * d["population"]).sum())
    rows = {}
    for m in measures:
        rows[m] = {
            "mean": float(d[m].mean()),
            "sd_within": float(resid[m].std()),
            "share_of_count": float((d[m] * d["population"]).sum()) / total,
            "corr_levels": float(np.corrcoef(d[measures[0]], d[m])[0, 1]),
            "corr_within": float(np.corrcoef(resid[measures[0]], resid[m])[0, 1]),
        }
    return pd.DataFrame(rows).T


def sic_only_share(waves: pd.DataFrame, year: int = 1997) -> pd.Series:
    """Share of each county's ``year`` establishments in the two SIC-only classes (membership sports
    and recreation clubs, SIC 7997; membership organisations n.e.c., SIC 8699), which have no NAICS
    successor in the later waves: the part of the 1997 count that later waves do not count.
    Counties with no establishment (or a source gap) are left out. Indexed by county."""
    d = waves.loc[waves["year"] == year].set_index("fips")
    counts = d[list(TEN_CLASSES + SIC_ONLY_CLASSES)].astype("float64")
    total = counts.sum(axis=1, min_count=1)
    ok = total > 0
    return (counts.loc[ok, list(SIC_ONLY_CLASSES)].sum(axis=1) / total[ok]).rename("sic_only_share")


def nonprofit_medians(waves: pd.DataFrame) -> pd.Series:
    """Median county NCCS non-profits per 10,000 residents in each wave."""
    return waves.groupby("year")["nonprofits_per_10k"].median().rename("median_nonprofits_per_10k")


# --------------------------------------------------------------------------------------------
# The 2017 break of the annual series: CBP's three-establishment publication rule
# --------------------------------------------------------------------------------------------


def implied_counts(annual: pd.DataFrame, col: str = "associations_per_10k", per: float = 1e4,
                   exact_below: int = 100_000) -> pd.Series:
    """Establishments behind each annual density: density x population / ``per``.

    The Urban Institute publishes the density rounded to 0.1 per 10,000, so the implied count is
    within 0.05 x population / 10,000 of an integer: below ``exact_below`` residents that is
    less than 0.5 and the count is rounded to the integer it must be; above, the (large) count is
    left unrounded.
    """
    raw = annual[col].astype(float) * annual["population"].astype(float) / per
    return raw.where(annual["population"] >= exact_below, raw.round()).rename("establishments")


def small_totals_by_year(annual: pd.DataFrame, below: int = CBP_MIN_CELL_2017) -> pd.DataFrame:
    """Counties whose implied annual count is 1 to ``below`` - 1 establishments, by year, beside the
    counties with a value. Under a rule that publishes only cells of ``below`` or more, a county's
    published total can never be 1 or 2: such totals must vanish from the first year of the rule."""
    n = implied_counts(annual)
    g = pd.DataFrame({"year": annual["year"], "n": n})
    out = g.groupby("year").agg(counties_with_value=("n", "count"))
    out[f"total_1_to_{below - 1}"] = g.loc[(g["n"] >= 1) & (g["n"] < below)].groupby("year").size()
    return out.fillna(0).astype(int)


def suppression_exposure(waves: pd.DataFrame, year: int = 2014, threshold: int = CBP_MIN_CELL_2017) -> pd.DataFrame:
    """Each county's establishments in ``year`` (the ten classes) and the share CBP would still
    publish under a ``threshold`` rule: ``total``, ``published`` (sum of classes with at least
    ``threshold`` establishments), ``retained`` = published / total and ``lost_entirely``
    (no class reaches the threshold). Indexed by county."""
    cells = waves.loc[waves["year"] == year].set_index("fips")[list(TEN_CLASSES)].astype("float64")
    total = cells.sum(axis=1)
    published = cells.where(cells >= threshold, 0.0).sum(axis=1)
    out = pd.DataFrame({"total": total, "published": published})
    out = out[out["total"] > 0]
    out["retained"] = out["published"] / out["total"]
    out["lost_entirely"] = out["published"] == 0
    return out


@dataclass
class SuppressionTest:
    """The 2016 -> 2017 change of the annual series against CBP's three-establishment rule.

    ``by_size``: one row per quarter of 2016 population: counties with a 2016 value, counties
    that lose it in 2017 (observed) and that the rule predicts to lose (no 2014 class of three
    or more), the median observed 2017/2016 ratio of counts and the median predicted retained
    share. ``lost``: cross-table of observed and predicted losses. ``slope``, ``slope_se``,
    ``intercept``, ``intercept_se``: OLS (HC1) of the log observed ratio on the log predicted
    retained share across counties (a rule that explains the break gives a slope near one and
    an intercept near zero; a reclassification that cut every county by the same share would
    give a slope of zero and an intercept equal to the log of that share). ``corr``: their
    correlation. ``unaffected_median_ratio``: the median observed ratio among counties with no
    class of one or two establishments in 2014 (the rule removes nothing there), ``n_unaffected``.
    """

    by_size: pd.DataFrame
    lost: pd.DataFrame
    slope: float
    slope_se: float
    intercept: float
    intercept_se: float
    corr: float
    unaffected_median_ratio: float
    n_unaffected: int
    n_counties: int


def suppression_test(annual: pd.DataFrame, waves: pd.DataFrame, before: int = 2016, after: int = 2017,
                     exposure_year: int = 2014, threshold: int = CBP_MIN_CELL_2017) -> SuppressionTest:
    """Compare the observed ``before`` -> ``after`` change of the annual count with the loss the
    publication rule predicts from the ``exposure_year`` class counts (see :class:`SuppressionTest`)."""
    import statsmodels.api as sm

    counts = annual.assign(n=implied_counts(annual)).pivot(index="fips", columns="year", values="n")
    pop = annual.loc[annual["year"] == before].set_index("fips")["population"]
    obs = pd.DataFrame({"before": counts[before], "after": counts[after], "population": pop}).dropna(
        subset=["before"])
    obs = obs[obs["before"] > 0]
    exp = suppression_exposure(waves, exposure_year, threshold)
    d = obs.join(exp, how="inner")
    d["ratio"] = d["after"] / d["before"]
    d["lost_observed"] = d["after"].isna()
    d["size"] = pd.qcut(d["population"], 4, labels=["smallest quarter", "second", "third", "largest quarter"])
    by_size = d.groupby("size", observed=True).agg(
        counties=("before", "size"), lost_observed=("lost_observed", "sum"), lost_predicted=("lost_entirely", "sum"),
        median_ratio_observed=("ratio", "median"), median_retained_predicted=("retained", "median"))
    lost = pd.crosstab(d["lost_observed"].rename("lost in 2017 (observed)"),
                       d["lost_entirely"].rename("no class of 3+ in 2014 (predicted lost)"))
    ok = d["ratio"].notna() & (d["retained"] > 0)
    x, y = np.log(d.loc[ok, "retained"]), np.log(d.loc[ok, "ratio"])
    ols = sm.OLS(y.to_numpy(), sm.add_constant(x.to_numpy())).fit(cov_type="HC1")
    unaffected = d.loc[d["retained"] == 1, "ratio"].dropna()
    return SuppressionTest(
        by_size=by_size, lost=lost, slope=float(ols.params[1]), slope_se=float(ols.bse[1]),
        intercept=float(ols.params[0]), intercept_se=float(ols.bse[0]), corr=float(np.corrcoef(x, y)[0, 1]),
        unaffected_median_ratio=float(unaffected.median()), n_unaffected=int(unaffected.size), n_counties=len(d),
    )


# --------------------------------------------------------------------------------------------
# Chapter 6: what the publication rule does to year-on-year changes and events
# --------------------------------------------------------------------------------------------


def count_changes_by_size(annual: pd.DataFrame, break_year: int = 2017, jump: int = CBP_MIN_CELL_2017
                          ) -> pd.DataFrame:
    """Year-on-year changes of the implied annual count, by county size (halves of mean population)
    and series segment (the change across the break is left out). ``share_jump`` is the share of
    changes of ``jump`` establishments or more in either direction: a class crossing the
    publication threshold (2 -> 3 or 3 -> 2) moves the published count by three at once, so
    after the break such jumps should become more frequent where counts are small, and only there.
    ``sd_log_change``: SD of the year-on-year log change of the density."""
    d = annual[["fips", "year", "population", "associations_per_10k"]].assign(n=implied_counts(annual))
    d = d.sort_values(["fips", "year"])
    g = d.groupby("fips")
    consecutive = g["year"].diff() == 1
    d["dn"] = g["n"].diff().where(consecutive & (d["year"] != break_year))
    d["dlog"] = np.log(d["associations_per_10k"]).groupby(d["fips"]).diff().where(d["dn"].notna())
    mean_pop = g["population"].transform("mean")
    d["size"] = np.where(mean_pop < mean_pop.groupby(d["fips"]).first().median(), "smaller half", "larger half")
    d["segment"] = np.where(d["year"] >= break_year, f"{break_year} on", f"before {break_year}")
    v = d.dropna(subset=["dn"])
    return v.groupby(["size", "segment"]).agg(
        changes=("dn", "size"), share_jump=("dn", lambda s: float((s.abs() >= jump).mean())),
        sd_log_change=("dlog", "std")).sort_index(ascending=[False, False])


def events_by_size_and_segment(changes: pd.DataFrame, break_year: int = 2017, small_classes: int = 5
                               ) -> pd.DataFrame:
    """Where a Chapter 6 event definition's events fall: counties' first events by size (the
    ``small_classes`` smallest of the definition's size classes, i.e. the smaller half of ten)
    and by segment. ``changes`` is ``EventDefinition.changes``."""
    first = changes.loc[changes["event"]].sort_values("year").drop_duplicates("fips")
    size = np.where(first["size_class"] < small_classes, "smaller half", "larger half")
    seg = np.where(first["year"] >= break_year, f"{break_year} on", f"before {break_year}")
    return pd.crosstab(pd.Series(size, name="size"), pd.Series(seg, name="segment"))
