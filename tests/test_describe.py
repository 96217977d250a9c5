"""analysis.describe: what the counts are, the 1997 SIC classes, and the test of CBP's 2017
three-establishment publication rule against the annual series. All fixtures are SYNTHETIC panels
made here, with the panels' column names."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import describe

TEN = list(describe.TEN_CLASSES)


def test_establishment_classes_are_the_penn_state_codes():
    t = describe.establishment_classes_table()
    assert len(t) == 12
    assert t.loc["n_religious", "NAICS (2005-2014)"] == "813110" and t.loc["n_religious", "SIC (1997)"] == "8661"
    assert t.loc["n_sports_clubs", "NAICS (2005-2014)"] == "711211"
    assert t.loc["n_fitness", "NAICS (2005-2014)"] == "713940"
    assert set(describe.SIC_ONLY_CLASSES) == {"n_membership_sports", "n_membership_nec"}
    assert {t.loc[c, "SIC (1997)"] for c in describe.SIC_ONLY_CLASSES} == {"7997", "8699"}
    # community_per_1k's classes, as the panel builder defines them
    from analysis.panels import COMMUNITY_COUNTS

    assert set(describe.COMMUNITY_CLASSES) == set(COMMUNITY_COUNTS)
    assert len(describe.TEN_CLASSES) == 10


def _waves(counts_by_county: dict[str, dict[str, int]], year: int = 2014) -> pd.DataFrame:
    rows = []
    for k, (fips, counts) in enumerate(counts_by_county.items()):
        row = {"fips": fips, "year": year, "population": 5_000 + 100 * k, **{c: 0 for c in TEN},
               "n_membership_sports": np.nan, "n_membership_nec": np.nan, **counts}
        rows.append(row)
    return pd.DataFrame(rows)


def test_sic_only_share():
    w = _waves({"a": {"n_religious": 8, "n_membership_sports": 1, "n_membership_nec": 1},
                "b": {"n_religious": 3, "n_civic": 1},
                "z": {}}, year=1997)
    w.loc[w["fips"] == "b", ["n_membership_sports", "n_membership_nec"]] = 0
    s = describe.sic_only_share(w)
    assert s.loc["a"] == pytest.approx(0.2)
    assert s.loc["b"] == 0
    assert "z" not in s.index  # no establishment at all: left out, not a share of zero


def test_community_vs_all():
    rng = np.random.default_rng(0)
    rows = []
    for i in range(30):
        for t in (1997, 2005, 2009, 2014):
            comm, rec = rng.integers(5, 20), rng.integers(0, 6)
            pop = 10_000
            rows.append({"fips": f"{i:03d}", "year": t, "population": pop,
                         "assn_per_1k": 1000 * (comm + rec) / pop, "community_per_1k": 1000 * comm / pop,
                         "_comm": comm, "_all": comm + rec})
    d = pd.DataFrame(rows)
    out = describe.community_vs_all(d)
    assert out.loc["community_per_1k", "share_of_count"] == pytest.approx(d["_comm"].sum() / d["_all"].sum())
    assert out.loc["assn_per_1k", "share_of_count"] == 1 and out.loc["assn_per_1k", "corr_within"] == pytest.approx(1)
    assert out.loc["community_per_1k", "corr_levels"] == pytest.approx(np.corrcoef(d["assn_per_1k"], d["community_per_1k"])[0, 1])


def test_implied_counts_round_only_where_exact():
    annual = pd.DataFrame({"associations_per_10k": [12.3, 12.3], "population": [4_070, 1_000_001]})
    n = describe.implied_counts(annual)
    assert n.iloc[0] == 5  # 12.3 x 0.407 = 5.006: the count it must be
    assert n.iloc[1] == pytest.approx(12.3 * 100.0001)  # large county: left as published


def _annual_from(waves2014: pd.DataFrame, threshold: int = 3) -> pd.DataFrame:
    """SYNTHETIC annual series: 2016 sums every class, 2017 only classes of ``threshold`` or more,
    as the Urban Institute sums CBP's published cells; no value where nothing is published."""
    rows = []
    for _, r in waves2014.iterrows():
        cells, pop = r[TEN].astype(float), int(r["population"])
        for year, total in ((2016, cells.sum()), (2017, cells[cells >= threshold].sum())):
            rows.append({"fips": r["fips"], "year": year, "population": pop,
                         "associations_per_10k": round(total / pop * 1e4, 1) if total > 0 else np.nan})
    return pd.DataFrame(rows)


def test_suppression_test_recovers_the_rule():
    rng = np.random.default_rng(3)
    counts = {}
    for i in range(200):
        lam = rng.uniform(0.3, 8)
        counts[f"{i:05d}"] = {c: int(v) for c, v in zip(TEN, rng.poisson(lam, 10))}
    w = _waves(counts)
    annual = _annual_from(w)
    t = describe.suppression_test(annual, w)
    # the series was built by the rule, so the prediction is exact
    assert t.slope == pytest.approx(1.0, abs=1e-9) and t.intercept == pytest.approx(0.0, abs=1e-9)
    lost = t.lost.reindex(index=[False, True], columns=[False, True], fill_value=0)
    assert lost.loc[True, True] > 0 and lost.loc[True, False] == 0 and lost.loc[False, True] == 0
    assert t.unaffected_median_ratio == pytest.approx(1.0)
    assert t.by_size["counties"].sum() == t.n_counties
    # a uniform reclassification (every county loses 10%) gives a slope of zero and intercept log(0.9)
    uniform = annual.copy()
    is17 = uniform["year"] == 2017
    uniform.loc[is17, "associations_per_10k"] = (
        0.9 * uniform.loc[~is17, "associations_per_10k"].to_numpy())
    u = describe.suppression_test(uniform, w)
    assert abs(u.slope) < 0.05 and u.intercept == pytest.approx(np.log(0.9), abs=0.02)


def test_small_totals_vanish_under_the_rule():
    w = _waves({"a": {"n_religious": 2}, "b": {"n_religious": 1, "n_golf": 1}, "c": {"n_religious": 5}})
    annual = _annual_from(w)
    t = describe.small_totals_by_year(annual)
    assert t.loc[2016, "total_1_to_2"] == 2 and t.loc[2017, "total_1_to_2"] == 0
    assert t.loc[2016, "counties_with_value"] == 3 and t.loc[2017, "counties_with_value"] == 1
    exp = describe.suppression_exposure(w)
    assert exp.loc["b", "retained"] == 0 and bool(exp.loc["b", "lost_entirely"])
    assert exp.loc["c", "retained"] == 1


def test_count_changes_by_size_and_events_by_size_and_segment():
    # a small county (pop 1,000) whose count steps by three after 2017 and by one before;
    # a large county (pop 100,000) whose count moves by one every year
    rows = []
    for y, n_small, n_big in zip(range(2014, 2023), [4, 5, 4, 3, 6, 3, 6, 3, 6], range(50, 59)):
        rows.append({"fips": "s", "year": y, "population": 1_000, "associations_per_10k": n_small * 10.0})
        rows.append({"fips": "b", "year": y, "population": 100_000, "associations_per_10k": n_big / 10.0})
    annual = pd.DataFrame(rows)
    t = describe.count_changes_by_size(annual)
    assert t.loc[("smaller half", "before 2017"), "share_jump"] == 0
    assert t.loc[("smaller half", "2017 on"), "share_jump"] == 1
    assert t.loc[("smaller half", "2017 on"), "changes"] == 5  # 2018-2022; the 2017 change is left out
    assert t.loc[("larger half", "2017 on"), "share_jump"] == 0
    changes = pd.DataFrame({"fips": ["s", "s", "b", "c"], "year": [2016, 2019, 2020, 2015], "size_class": [0, 0, 9, 7],
                            "event": [False, True, True, True]})
    e = describe.events_by_size_and_segment(changes)
    assert e.loc["smaller half", "2017 on"] == 1 and e.loc["larger half", "2017 on"] == 1
    assert e.loc["larger half", "before 2017"] == 1 and e.to_numpy().sum() == 3


def test_outcome_figure_wraps_into_rows_in_the_book_style():
    """Issue 15: the four outcome panels are 2 x 2 at the page width, and the book style wins over
    the seaborn theme a chapter sets first (Chapter 2 calls ``sns.set_theme(context="notebook")``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    from analysis import plots

    rng = np.random.default_rng(0)
    waves = pd.DataFrame([{"fips": f, "year": y, **{c: rng.normal() for c in describe.WAVE_OUTCOMES}}
                          for f in range(20) for y in (1997, 2005, 2009, 2014)])
    with matplotlib.rc_context():
        sns.set_theme(style="whitegrid", context="notebook")  # font.size 12, legend 11, ...
        fig = describe.outcome_trends_figure(waves)
        try:
            assert tuple(fig.get_size_inches()) == (plots.MAX_WIDTH_IN, 5.6)
            visible = [ax for ax in fig.axes if ax.get_visible()]
            assert len(visible) == 4
            assert len({round(ax.get_position().y0, 3) for ax in visible}) == 2  # two rows
            assert [ax.get_title() for ax in visible] == list(describe.WAVE_OUTCOMES.values())
            assert matplotlib.rcParams["font.size"] == plots.BOOK_RC["font.size"]
            assert fig.dpi == plots.DPI
        finally:
            plt.close(fig)
