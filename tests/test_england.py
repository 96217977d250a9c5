"""The England panel (analysis/england.py), its maps (analysis/maps.py) and the Chapter 10 TWFE.

Fixtures are SYNTHETIC small files written by the tests (codes are real ONS codes so that the
lookups look like the real ones; every number is made up). The real panel is only read through
``analysis.panels.load``.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis import england as en
from analysis.schemas import RawInputError

# pyfixest 0.60 calls pandas methods with inplace=True, which pandas 3.1 deprecates
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword")

# ----------------------------------------------------------------------------------------------
# Synthetic fixtures
# ----------------------------------------------------------------------------------------------

PUBS_CSV = (
    "Area code,Area name,Number of employees in public house or bar,"
    + ",".join(f"count_{y}" for y in en.PUBS_YEARS) + "\n"
    + "E92000001,England,Any number of employees," + ",".join(['"1,205"'] * 18) + "\n"
    + "E06000001,Hartlepool,Less than 10," + ",".join(["50"] * 18) + "\n"
    + "E06000001,Hartlepool,10 or more," + ",".join(["35"] * 18) + "\n"
    + "E06000001,Hartlepool,Any number of employees," + ",".join(["85"] * 17 + ['"1,000"']) + "\n"
    + "".join(f"{c},{n},{b}," + ",".join([v] * 18) + "\n"
              for c, n in (("E07000004", "Aylesbury Vale"), ("E07000005", "Chiltern"))
              for b, v in (("Less than 10", "20"), ("10 or more", "10"), ("Any number of employees", "30")))
    + "W06000001,Isle of Anglesey,Any number of employees," + ",".join(["40"] * 18) + "\n"
    + "," * 20 + "\n"
    + "Source: Inter-Departmental Business Register" + "," * 20 + "\n"
    + '"1. ""Public houses and bars"" covers workplaces classified as subclass 56.30/2",' + "," * 19 + "\n"
    + "2. All figures have been rounded to the nearest 5." + "," * 20 + "\n"
)

CODES = pd.DataFrame({
    "LADCD": ["E06000001", "E07000004", "E07000005", "E06000060", "E08000016"],
    "LADCD_ACTIVE": ["E06000001", "E06000060", "E06000060", "E06000060", "E08000016"],
    "LADNM_ACTIVE": ["Hartlepool", "Buckinghamshire", "Buckinghamshire", "Buckinghamshire", "Barnsley"],
    "RGNNM": ["North East", "South East", "South East", "South East", "Yorkshire and The Humber"],
})
CHANGES = pd.DataFrame({
    "oldcd": ["E07000004", "E07000005", "E08000016", "E06000057"],
    "newcd": ["E06000060", "E06000060", "E08000038", "E47000011"],
    "type": ["merger", "merger", "new_code", "new_geo"],
    "start": ["2020", "2020", "2025", "2018"],
})


def _write(tmp_path, name, text, bom=False):
    p = tmp_path / name
    p.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return p


def _ons_csv(rows):
    head = "areacd,areanm,geography,indicator,period,observation,measure,unit,lci_95,uci_95,status,notes\n"
    return head + "".join(f"{c},Name,LAD,{i},{p},{v},m,u,,,{s},\n" for c, i, p, v, s in rows)


# ----------------------------------------------------------------------------------------------
# Reading and tidying
# ----------------------------------------------------------------------------------------------


def test_pubs_commas_footnotes_and_bands(tmp_path):
    raw = en.read_england_raw("ons_pubs_bars", _write(tmp_path, "pubs.csv", PUBS_CSV))
    pubs = en.tidy_pubs(raw)
    assert sorted(pubs["code"].unique()) == ["E06000001", "E07000004", "E07000005"]  # no England/Wales/footnotes
    assert len(pubs) == 3 * 18
    h = pubs.set_index(["code", "year"]).loc["E06000001"]
    assert h.loc[2001, "n_pubs_bars"] == 85 and h.loc[2018, "n_pubs_bars"] == 1000  # "1,000" parsed
    assert h.loc[2001, "n_pubs_bars_lt10"] == 50 and h.loc[2001, "n_pubs_bars_10plus"] == 35


def test_pubs_bad_count_names_file_and_column(tmp_path):
    bad = PUBS_CSV.replace('"1,000"', "n/a")
    raw = en.read_england_raw("ons_pubs_bars", _write(tmp_path, "pubs.csv", bad))
    with pytest.raises(RawInputError, match=r"ons_pubs_bars: column 'count_<year>' has values that are not numbers: 'n/a'"):
        en.tidy_pubs(raw)


def test_renamed_column_raises_naming_file_and_column(tmp_path):
    text = _ons_csv([("E06000001", "Claimant Count", "2001-01-01/P1Y", "2.5", "")]).replace("observation", "value")
    raw = en.read_england_raw("ons_claimant_count", _write(tmp_path, "cc.csv", text, bom=True))
    with pytest.raises(RawInputError) as exc:
        en.tidy_ons_indicator(raw, "ons_claimant_count")
    assert str(exc.value).startswith("ons_claimant_count: missing column(s) 'observation'")
    assert exc.value.missing == ["observation"]
    renamed = PUBS_CSV.replace("count_2007", "yr_2007")
    raw = en.read_england_raw("ons_pubs_bars", _write(tmp_path, "pubs2.csv", renamed))
    with pytest.raises(RawInputError, match=r"ons_pubs_bars: missing column\(s\) 'count_2007'"):
        en.tidy_pubs(raw)


def test_bom_and_status_codes(tmp_path):
    rows = [
        ("E06000001", "Satisfaction", "2011-04-01/P1Y", "7.5", ""),
        ("E06000001", "Satisfaction", "2012-04-01/P1Y", "7.9", "u"),  # value given but unreliable
        ("E06000001", "Satisfaction", "2013-04-01/P1Y", "", "x"),
        ("E06000001", "Happiness", "2011-04-01/P1Y", "7.1", ""),
        ("E06000001", "Worthwhile", "2011-04-01/P1Y", "7.7", ""),
        ("E06000001", "Anxiety", "2011-04-01/P1Y", "3.0", ""),
        ("E12000001", "Satisfaction", "2011-04-01/P1Y", "7.4", ""),  # a region: dropped
    ]
    path = _write(tmp_path, "wb.csv", _ons_csv(rows), bom=True)
    raw = en.read_england_raw("ons_personal_wellbeing_estimates", path)
    assert raw.columns[0] == "areacd"  # BOM stripped
    t = en.tidy_ons_indicator(raw, "ons_personal_wellbeing_estimates").set_index("year")
    assert t.loc[2011, "life_satisfaction"] == 7.5 and t.loc[2011, "anxiety"] == 3.0
    assert np.isnan(t.loc[2012, "life_satisfaction"]) and np.isnan(t.loc[2013, "life_satisfaction"])
    assert list(t["code"].unique()) == ["E06000001"]


def test_conflicting_duplicates_raise(tmp_path):
    rows = [("E06000001", "Claimant Count", "2001-01-01/P1Y", "2.5", ""),
            ("E06000001", "Claimant Count", "2001-01-01/P1Y", "2.7", "")]
    raw = en.read_england_raw("ons_claimant_count", _write(tmp_path, "cc.csv", _ons_csv(rows)))
    with pytest.raises(RawInputError, match="conflicting duplicate"):
        en.tidy_ons_indicator(raw, "ons_claimant_count")


def test_population_strips_nbsp_and_junk():
    raw = pd.DataFrame({"code": ["E06000001", "E06000060\xa0", "NA", None],
                        **{str(y): ["1,000", "2000", "", ""] for y in en.POP_YEARS}})
    pop = en.tidy_population(raw)
    assert sorted(pop["code"].unique()) == ["E06000001", "E06000060"]
    assert pop.loc[pop["code"] == "E06000001", "population"].eq(1000).all()


# ----------------------------------------------------------------------------------------------
# Codes and many-to-one aggregation
# ----------------------------------------------------------------------------------------------


def test_code_map_merges_and_later_codes():
    cmap = en.code_map(CODES, CHANGES).set_index("code")
    assert cmap.loc["E07000004", "lad_code"] == "E06000060" and cmap.loc["E07000005", "lad_name"] == "Buckinghamshire"
    assert cmap.loc["E08000038", "lad_code"] == "E08000016"  # 2025 recoding mapped back
    assert "E47000011" not in cmap.index  # combined authorities are not districts


def test_code_map_rejects_disagreeing_change_list():
    changes = CHANGES.copy()
    changes.loc[0, "newcd"] = "E06000001"
    with pytest.raises(RawInputError, match="E07000004 merges into E06000001"):
        en.code_map(CODES, changes)


def test_to_lad23_sum_wmean_missing_and_own_code():
    cmap = en.code_map(CODES, CHANGES)
    df = pd.DataFrame({"code": ["E06000001", "E07000004", "E07000005", "E07000004", "E07000005", "E08000038"],
                       "year": [2011, 2011, 2011, 2012, 2012, 2011],
                       "v": [5.0, 6.0, 9.0, 6.0, np.nan, 1.0]})
    w = pd.DataFrame({"code": ["E07000004", "E07000005"] * 2, "year": [2011, 2011, 2012, 2012],
                      "weight": [200.0, 100.0, 100.0, 100.0]})
    s = en.to_lad23(df, ["v"], cmap, source="synthetic", rule="sum").set_index(["lad_code", "year"])
    assert s.loc[("E06000060", 2011), "v"] == 15.0 and s.loc[("E06000060", 2011), "n_source_codes"] == 2
    assert np.isnan(s.loc[("E06000060", 2012), "v"])  # one component suppressed -> merged value missing
    assert s.loc[("E08000016", 2011), "v"] == 1.0
    m = en.to_lad23(df, ["v"], cmap, source="synthetic", rule="wmean", weights=w).set_index(["lad_code", "year"])
    assert m.loc[("E06000060", 2011), "v"] == pytest.approx((200 * 6 + 100 * 9) / 300, abs=1e-12)
    assert m.loc[("E06000001", 2011), "v"] == 5.0
    # a file that has both the old codes and the 2023 code of an area: the 2023 row wins
    both = pd.concat([df, pd.DataFrame({"code": ["E06000060"], "year": [2011], "v": [100.0]})])
    s2 = en.to_lad23(both, ["v"], cmap, source="synthetic").set_index(["lad_code", "year"])
    assert s2.loc[("E06000060", 2011), "v"] == 100.0 and s2.loc[("E06000060", 2011), "n_source_codes"] == 1


def test_to_lad23_unknown_code_names_source():
    cmap = en.code_map(CODES, CHANGES)
    df = pd.DataFrame({"code": ["E07099999"], "year": [2011], "v": [1.0]})
    with pytest.raises(RawInputError, match=r"ons_museums: 1 LAD code\(s\) not in the code lookup: \['E07099999'\]"):
        en.to_lad23(df, ["v"], cmap, source="ons_museums")


# ----------------------------------------------------------------------------------------------
# The real panel (through load) and the Chapter 10 model
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def panel():
    from analysis.panels import load

    return load("england_lads")  # `make test` builds the data first; never skipped


def test_real_panel_shape_and_aggregates(panel):
    assert panel["lad_code"].nunique() == 296 and len(panel) == 296 * 27
    p = panel.set_index(["lad_code", "year"])
    # Buckinghamshire 2001 = Aylesbury Vale 165 + Chiltern 90 + South Bucks 65 + Wycombe 170 (ONS file)
    assert p.loc[("E06000060", 2001), "n_pubs_bars"] == 490 and p.loc[("E06000060", 2001), "n_source_codes"] == 4
    assert p.loc[("E06000001", 2001), "n_pubs_bars"] == 85
    assert p.loc[("E06000001", 2001), "pubs_per_10k"] == pytest.approx(85 / 90152 * 1e4, rel=1e-12)
    ranks = panel.dropna(subset=["imd_rank"]).groupby("year")["imd_rank"]
    assert ranks.min().eq(1).all() and ranks.max().eq(296).all()


def test_schema_rejects_unbalanced_panel(panel):
    from analysis.schemas import PanelValidationError, validate

    with pytest.raises(PanelValidationError, match="balanced_296_lads_every_year"):
        validate("england_lads", panel.iloc[1:].reset_index(drop=True))


def test_england_twfe_matches_pyfixest(panel):
    """TWFE of life satisfaction on pubs per 10,000 (LAD + year, clustered by LAD) = pyfixest at 1e-8.

    Small-sample corrections as in tests/test_crosslibrary_pyfixest.py: pyfixest's default
    ssc (k_fixef="nonnested", G_adj) equals linearmodels' debiased/group_debias/auto_df with the unit
    effects absorbed and the year effects as dummies.
    """
    import pyfixest as pf
    from analysis.estimation import ModelSpec, fit

    d = panel[panel["year"].between(2009, 2018)].dropna(subset=["life_satisfaction", "pubs_per_10k"])
    ours = fit(ModelSpec(outcome="life_satisfaction", regressors=("pubs_per_10k",), estimator="twfe",
                         cov="cluster-unit", entity="lad_code", time="year"), d)
    theirs = pf.feols("life_satisfaction ~ pubs_per_10k | lad_code + year", data=d, vcov={"CRV1": "lad_code"},
                      ssc=pf.ssc(k_adj=True, k_fixef="nonnested", G_adj=True, G_df="min"), fixef_rm="none",
                      demeaner=pf.MapDemeaner(fixef_tol=1e-13))
    np.testing.assert_allclose(ours.params["pubs_per_10k"], theirs.coef()["pubs_per_10k"], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours.std_errors["pubs_per_10k"], theirs.se()["pubs_per_10k"], rtol=1e-8, atol=1e-10)
    assert ours.nobs == theirs._N



def test_break_test_slopes_equal_window_twfe_and_pyfixest(panel):
    """Within-segment slopes = TWFE on each window alone (1e-8); SEs = pyfixest's stacked model.

    Reference: pyfixest ``y ~ pre + post | segment + year``, CRV1 by district, default ssc. pyfixest
    counts 9 of the 10 year levels; one more is redundant (each segment's first year is absorbed by
    the district-by-segment effects) and ours drops it, so K differs by one: ours = pyfixest x
    sqrt((n-11)/(n-10)). Tolerance 1e-6: pyfixest's alternating projections over two crossed effects
    stop at about 6e-8; a K off by one would move the SEs by 1.7e-4.
    """
    import pyfixest as pf

    bt = en.pubs_break_test(panel)
    windows = en.pubs_twfe(panel, windows={"pre": (2009, 2014), "post": (2015, 2018)})
    for y in en.TWFE_OUTCOMES:
        np.testing.assert_allclose(bt.loc[y, "pre"], windows.loc[(y, "pre"), "coef"], rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(bt.loc[y, "post"], windows.loc[(y, "post"), "coef"], rtol=1e-8, atol=1e-12)
    assert bt.loc["claimant_rate", "diff"] == pytest.approx(bt.loc["claimant_rate", "post"] - bt.loc["claimant_rate", "pre"])
    d, slopes, _ = en._segment_design(panel[~panel["lad_code"].isin(en.SMALL_RESIDENT_LADS)], "claimant_rate",
                                      en.BREAK_SEGMENTS)
    d = d.rename(columns=dict(zip(slopes, ["pre", "post"])))
    m = pf.feols("claimant_rate ~ pre + post | segment + year", data=d, vcov={"CRV1": "lad_code"},
                 ssc=pf.ssc(k_adj=True, k_fixef="nonnested", G_adj=True, G_df="min"), fixef_rm="none",
                 demeaner=pf.MapDemeaner(fixef_tol=1e-13))
    n = len(d)
    scale = np.sqrt((n - 11) / (n - 10))
    V = np.asarray(m._vcov)
    np.testing.assert_allclose(bt.loc["claimant_rate", ["pre_se", "post_se"]].to_numpy(float),
                               m.se().to_numpy() * scale, rtol=1e-6)
    np.testing.assert_allclose(bt.loc["claimant_rate", "diff_se"], np.sqrt(V[0, 0] + V[1, 1] - 2 * V[0, 1]) * scale,
                               rtol=1e-6)
    assert bt.loc["claimant_rate", "nobs"] == n == 2940 and bt.loc["claimant_rate", "n_lads"] == 294


def test_break_test_across_component_is_the_change_in_segment_means(panel):
    bt = en.pubs_break_test(panel, outcomes={"employment_rate": "Employment rate (%)"})
    p = panel[~panel["lad_code"].isin(en.SMALL_RESIDENT_LADS)].dropna(subset=["employment_rate", "pubs_per_10k"])
    means = {s: p[p["year"].between(a, b)].groupby("lad_code")[["employment_rate", "pubs_per_10k"]].mean()
             for s, (a, b) in en.BREAK_SEGMENTS.items()}
    ch = (means["2015-2018"] - means["2009-2014"]).dropna()
    slope = np.polyfit(ch["pubs_per_10k"], ch["employment_rate"], 1)[0]
    assert bt.loc["employment_rate", "across"] == pytest.approx(slope, rel=1e-10)


def test_changes_by_year_is_the_one_year_difference_slope(panel):
    out = en.pubs_changes_by_year(panel, "claimant_rate", years=[2015])
    p = panel[~panel["lad_code"].isin(en.SMALL_RESIDENT_LADS)].set_index(["lad_code", "year"])
    ch = pd.DataFrame({"dy": p.xs(2015, level="year")["claimant_rate"] - p.xs(2014, level="year")["claimant_rate"],
                       "dp": p.xs(2015, level="year")["pubs_per_10k"] - p.xs(2014, level="year")["pubs_per_10k"]}).dropna()
    assert out.loc[2015, "slope"] == pytest.approx(np.polyfit(ch["dp"], ch["dy"], 1)[0], rel=1e-10)
    assert out.loc[2015, "n"] == len(ch) == 294


def test_count_significant_uses_the_thesis_sign():
    t = pd.DataFrame({"coef": [-0.1, 0.2, 0.3, -0.4], "p": [0.01, 0.01, 0.5, 0.04]},
                     index=["claimant_rate", "employment_rate", "log_gdhi_per_head", "life_satisfaction"])
    assert en.count_significant(t, t.index) == {"thesis": 2, "against": 1, "n": 4}
    no_break = [o for o in t.index if o not in en.DEFINITION_CHANGED]
    assert en.count_significant(t, no_break) == {"thesis": 1, "against": 1, "n": 3}

def test_cross_section_ols_against_scipy_and_hc1():
    from scipy import stats

    rng = np.random.default_rng(7)  # synthetic
    cs = pd.DataFrame({"x": rng.normal(size=50), "y": rng.normal(size=50)})
    cs.loc[3, "x"] = np.nan
    out = en.cross_section_ols(cs, "y", "x")
    d = cs.dropna()
    ref = stats.linregress(d["x"], d["y"])
    assert out["slope"] == pytest.approx(ref.slope, rel=1e-12) and out["pearson_r"] == pytest.approx(ref.rvalue, rel=1e-12)
    X = np.column_stack([np.ones(len(d)), d["x"]])
    e = d["y"].to_numpy() - X @ np.array([ref.intercept, ref.slope])
    bread = np.linalg.inv(X.T @ X)
    hc1 = bread @ (X.T * e**2) @ X @ bread * len(d) / (len(d) - 2)
    assert out["se_hc1"] == pytest.approx(np.sqrt(hc1[1, 1]), rel=1e-10) and out["n"] == 49


# ----------------------------------------------------------------------------------------------
# Maps: TopoJSON decoding on a tiny synthetic topology
# ----------------------------------------------------------------------------------------------


def _topology(tmp_path):
    # two unit squares side by side sharing one arc (quantised, delta-encoded), plus an old
    # district that ended in 2019 and a Welsh area
    topo = {
        "type": "Topology",
        "transform": {"scale": [0.5, 0.25], "translate": [-2.0, 50.0]},
        "arcs": [
            [[2, 0], [0, 4]],                    # shared edge, q = (2, 0) -> (2, 4)
            [[2, 4], [-2, 0], [0, -4], [2, 0]],  # left square's other three edges
            [[2, 0], [2, 0], [0, 4], [-2, 0]],   # right square's other three edges
        ],
        "objects": {"ltla": {"type": "GeometryCollection", "geometries": [
            {"type": "Polygon", "arcs": [[0, 1]], "properties": {"areacd": "E06000001", "areanm": "Left"}},
            {"type": "Polygon", "arcs": [[2, -1]], "properties": {"areacd": "E06000002", "areanm": "Right", "start": 2020}},
            {"type": "Polygon", "arcs": [[2, -1]], "properties": {"areacd": "E07000004", "areanm": "Old", "end": 2019}},
            {"type": "Polygon", "arcs": [[0, 1]], "properties": {"areacd": "W06000001", "areanm": "Wales"}},
        ]}},
    }
    p = tmp_path / "topo.json"
    p.write_text(json.dumps(topo))
    return p


def test_topojson_boundaries_and_vintage(tmp_path):
    from analysis.maps import england_lad_boundaries

    path = _topology(tmp_path)
    g = england_lad_boundaries(2023, path, crs=None)
    assert g["lad_code"].tolist() == ["E06000001", "E06000002"]
    left = g.geometry.iloc[0]
    # decoded: x = -2 + 0.5 * q, y = 50 + 0.25 * q (q the running sum of the deltas): the shared
    # edge is x = -1, the left square [-2, -1] x [50, 51], the right one [-1, 0] x [50, 51]
    assert left.bounds == pytest.approx((-2.0, 50.0, -1.0, 51.0))
    assert left.area == pytest.approx(1.0) and g.geometry.iloc[1].bounds == pytest.approx((-1.0, 50.0, 0.0, 51.0))
    g2018 = england_lad_boundaries(2018, path, crs=None)
    assert g2018["lad_code"].tolist() == ["E06000001", "E07000004"]


def test_quantile_classes():
    from analysis.maps import quantile_classes

    c = quantile_classes(pd.Series([1.0, 2.0, 3.0, 4.0, np.nan]), k=2, digits=0)
    assert c.astype(object).tolist()[:4] == ["1-2", "1-2", "2-4", "2-4"] and pd.isna(c.iloc[4])
