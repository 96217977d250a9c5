"""Panel builders on small SYNTHETIC fixtures (written here, not the real files), the cache, and a
few checks on the real built panels.

Synthetic fixtures use the real upstream column names and real FIPS codes (so that the real hand
crosswalk applies) with made-up values.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis import panels
from analysis.panels import (
    PENNSTATE_COLUMNS,
    apply_fips_crosswalk,
    build_annual,
    build_sca,
    build_waves,
    clean_laus,
    clean_saipe,
    load_crosswalk,
    load_states,
    read_raw,
    tidy_pennstate,
)
from analysis.schemas import PanelValidationError, RawInputError


@pytest.fixture(scope="module")
def crosswalk():
    return load_crosswalk()


@pytest.fixture(scope="module")
def states():
    return load_states()


# ---------------------------------------------------------------------------------------------
# Synthetic Penn State / LAUS / SAIPE
# ---------------------------------------------------------------------------------------------

# panel column -> synthetic count for every county (1997 adds the two membership counts)
BASE_COUNTS = {"n_religious": 10, "n_civic": 3, "n_business": 2, "n_political": 1, "n_professional": 1,
               "n_labour": 2, "n_bowling": 1, "n_fitness": 2, "n_golf": 1, "n_sports_clubs": 1}
EXTRA_1997 = {"n_membership_sports": 4, "n_membership_nec": 5}

# (fips, name, population) per wave; Dade keeps its old code in 1997, Shannon its old code
# throughout, Bedford city exists until 2009, Broomfield/Alaska/Hawaii only in 2014
PS_COUNTIES = {
    1997: [(1001, "Autauga, AL", 40_000), (12025, "Dade, FL", 2_000_000), (46113, "Shannon, SD", 12_000),
           (51019, "Bedford, VA", 57_000), (51515, "Bedford, VA", 6_000), (8013, "Boulder, CO", 270_000),
           (51005, "Alleghany, VA", 12_800)],
    2005: [(1001, "Autauga, AL", 49_000), (12086, "Miami-Dade, FL", 2_300_000), (46113, "Shannon, SD", 13_000),
           (51019, "Bedford, VA", 64_000), (51515, "Bedford, VA", 6_100), (8013, "Boulder, CO", 280_000),
           (51005, "Alleghany, VA", 16_500)],
    2009: [(1001, "Autauga, AL", 54_000), (12086, "Miami-Dade, FL", 2_400_000), (46113, "Shannon, SD", 13_500),
           (51019, "Bedford, VA", 68_000), (51515, "Bedford, VA", 6_200), (8013, "Boulder, CO", 293_000),
           (51005, "Alleghany, VA", 16_300)],
    2014: [(1001, "Autauga County, AL", 55_000), (12086, "Miami-Dade County, FL", 2_600_000),
           (46113, "Shannon County, SD", 14_000), (51019, "Bedford County, VA", 77_000),
           (8013, "Boulder County, CO", 313_000), (51005, "Alleghany County, VA", 15_900),
           (8014, "Broomfield County, CO", 62_000), (2013, "Aleutians East Borough, AK", 3_000),
           (15001, "Hawaii County, HI", 190_000)],
}


def pennstate_raw(year: int) -> pd.DataFrame:
    """A synthetic Penn State sheet with the wave's real column names."""
    inverse = {v: k for k, v in PENNSTATE_COLUMNS[year].items()}
    rows = []
    for fips, name, pop in PS_COUNTIES[year]:
        counts = dict(BASE_COUNTS, **(EXTRA_1997 if year == 1997 else {}))
        if fips == 51515:  # Bedford city: different counts, so that the merge is visible
            counts = {k: 1 for k in counts}
        row = {inverse["fips"]: fips, inverse["county_name_src"]: name, inverse["population"]: pop,
               inverse["assn_per_1k"]: sum(counts.values()) / pop * 1000,
               inverse["n_nonprofits"]: 50.0, inverse["turnout_share"]: 0.5 if fips != 51515 else 0.7,
               inverse["census_response_share"]: 0.6}
        row.update({inverse[k]: v for k, v in counts.items()})
        rows.append(row)
    return pd.DataFrame(rows)[list(PENNSTATE_COLUMNS[year])]


LAUS_CODES = ["01001", "12086", "46102", "51019", "08013", "08014", "51005", "02013", "15001", "72001"]


def laus_raw(missing: tuple[str, int] | None = None) -> pd.DataFrame:
    rows = []
    for year in (1996, 1997, 2005, 2009, 2014):
        for code in LAUS_CODES:
            lf, emp = 20_000, 19_000
            row = {"stfips": int(code[:2]), "postal": "XX", "cfips": code, "cntyname": f"County {code}",
                   "year": year, "lf": lf, "emp": emp, "unemp": lf - emp, "ur": 5.0}
            if missing == (code, year):
                row.update(lf=-1, emp=-1, unemp=-1, ur=-1.0)
            rows.append(row)
    return pd.DataFrame(rows)


def saipe_raw() -> pd.DataFrame:
    rows = []
    for year in (1997, 2005, 2009, 2014):
        codes = ["01001", "12086", "46113", "51019", "08013", "51005", "02013", "15001"]
        if year < 2014:
            codes.append("51515")
        if year == 1997:
            codes.append("51560")  # Clifton Forge city, merged into Alleghany in 2001
        else:
            codes.append("08014")
        for code in codes:
            n_poor, rate = (1_000.0, 10.0) if code not in ("51515", "51560") else (1_500.0, 30.0)
            rows.append({"stfips": int(code[:2]), "cfips": code, "postal": "XX", "cntyname": f"Name {code}",
                         "year": float(year), "pov_all_n": n_poor, "pov_all_r": rate,
                         "pov_017_n": n_poor / 4, "pov_017_r": rate * 1.5, "medhhinc": 40_000.0})
    return pd.DataFrame(rows)


def waves_frames() -> dict[str, pd.DataFrame]:
    frames = {f"pennstate_social_capital_{y}": pennstate_raw(y) for y in PS_COUNTIES}
    frames["bls_laus_county"] = laus_raw()
    frames["census_saipe_county"] = saipe_raw()
    return frames


@pytest.fixture(scope="module")
def waves(crosswalk, states):
    return build_waves(waves_frames(), crosswalk, states)


def row(df: pd.DataFrame, fips: str, year: int | None = None) -> pd.Series:
    sel = df[(df["fips"] == fips) & ((df["year"] == year) if year is not None else True)]
    assert len(sel) == 1, f"expected one row for {fips} {year}, got {len(sel)}"
    return sel.iloc[0]


def test_tidy_pennstate_maps_each_wave(states):
    for year in PS_COUNTIES:
        tidy = tidy_pennstate(pennstate_raw(year), year)
        assert list(tidy["year"].unique()) == [year]
        assert tidy["fips"].str.fullmatch(r"\d{5}").all()
        assert tidy.loc[tidy["fips"] == "01001", "n_religious"].item() == 10
        assert tidy.loc[tidy["fips"] == "01001", "turnout_pct"].item() == pytest.approx(50.0)
        membership = tidy["n_membership_sports"].notna().all()
        assert membership == (year == 1997)


def test_tidy_pennstate_renamed_column_names_source_and_column():
    raw = pennstate_raw(2005).rename(columns={"fitns05": "fitness05"})
    with pytest.raises(RawInputError) as exc:
        tidy_pennstate(raw, 2005)
    msg = str(exc.value)
    assert "pennstate_social_capital_2005" in msg and "'fitns05'" in msg
    assert exc.value.missing == ["fitns05"]


def test_renamed_column_in_xlsx_file_gives_error_naming_file_and_column(tmp_path, crosswalk, states):
    path = tmp_path / "pennstate_social_capital_1997.xlsx"
    pennstate_raw(1997).rename(columns={"relig97": "religious97"}).to_excel(path, index=False)
    raw = read_raw("pennstate_social_capital_1997", path)
    frames = waves_frames()
    frames["pennstate_social_capital_1997"] = raw
    with pytest.raises(RawInputError, match=r"pennstate_social_capital_1997: missing column\(s\) 'relig97'"):
        build_waves(frames, crosswalk, states)


def test_unreadable_raw_file_names_manifest_entry(tmp_path):
    path = tmp_path / "x.xlsx"
    path.write_bytes(b"not a spreadsheet")
    with pytest.raises(RawInputError, match="pennstate_social_capital_2009: could not read"):
        read_raw("pennstate_social_capital_2009", path)


def test_laus_minus_one_is_missing():
    out = clean_laus(laus_raw(missing=("01001", 2005)))
    r = out[(out["fips"] == "01001") & (out["year"] == 2005)].iloc[0]
    assert pd.isna(r["unemployment_rate"]) and pd.isna(r["labour_force"]) and pd.isna(r["employment"])
    other = out[(out["fips"] == "01001") & (out["year"] == 2009)].iloc[0]
    assert other["unemployment_rate"] == 5.0 and other["labour_force"] == 20_000
    assert set(out["year"]) == {1997, 2005, 2009, 2014}  # 1996 filtered out


def test_saipe_universe_is_count_over_rate():
    out = clean_saipe(saipe_raw())
    r = out[(out["fips"] == "01001") & (out["year"] == 1997)].iloc[0]
    assert r["poverty_universe"] == pytest.approx(10_000)
    assert r["child_poverty_universe"] == pytest.approx(250 / 0.15)


def test_crosswalk_recodes_merges_drops_and_logs(crosswalk):
    df = pd.DataFrame({
        "fips": ["46113", "51019", "51515", "08014", "02013", "01001"],
        "year": [2005] * 6,
        "n": pd.array([1, 10, 2, 7, 3, 4], dtype="Int64"),
        "rate": [50.0, 10.0, 40.0, 1.0, 1.0, 1.0],
        "median": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        "q": pd.array([1, 1, 3, 1, 1, 2], dtype="Int64"),
        "w": [1.0, 3.0, 1.0, 1.0, 1.0, 1.0],
    })
    out, log = apply_fips_crosswalk(df, crosswalk, scope="waves", source="synthetic",
                                    rules={"n": "sum", "rate": "wmean", "median": "nan", "q": "max"}, weight="w")
    assert list(out["fips"]) == ["01001", "46102", "51019"]
    bedford = out[out["fips"] == "51019"].iloc[0]
    assert bedford["n"] == 12 and bedford["n_source_codes"] == 2
    assert bedford["rate"] == pytest.approx((10 * 3 + 40 * 1) / 4)
    assert pd.isna(bedford["median"]) and bedford["q"] == 3
    assert out.loc[out["fips"] == "46102", "n"].item() == 1
    assert log["dropped"] == {"02 Alaska": 1, "08014 Broomfield County": 1}
    assert log["recoded"] == {"46113->46102": 1, "51515->51019": 1}
    assert log["merged"] == {"51019 <- 51019 + 51515": [2005]}
    assert out["n"].dtype == "Int64"


def test_crosswalk_requires_a_rule_for_every_column(crosswalk):
    df = pd.DataFrame({"fips": ["01001"], "year": [2005], "x": [1.0]})
    with pytest.raises(ValueError, match="no crosswalk aggregation rule"):
        apply_fips_crosswalk(df, crosswalk, scope="waves", rules={}, source="synthetic")


def test_crosswalk_scope_keeps_alaska_and_broomfield_in_annual(crosswalk):
    df = pd.DataFrame({"fips": ["02013", "08014", "09110"], "year": [2022] * 3, "x": [1.0, 2.0, 3.0]})
    out, log = apply_fips_crosswalk(df, crosswalk, scope="annual", rules={"x": "sum"}, source="synthetic")
    assert list(out["fips"]) == ["02013", "08014"]
    assert log["dropped"] == {"09110 Capitol Planning Region": 1}


def test_waves_units_and_balance(waves):
    panel, report = waves
    assert list(panel.columns) == panels.WAVES_COLUMNS
    assert sorted(panel["fips"].unique()) == ["01001", "08013", "12086", "46102", "51005", "51019"]
    assert panel.groupby("fips").size().eq(4).all()
    keys = list(panel[["fips", "year"]].itertuples(index=False))
    assert keys == sorted(keys)
    assert report["counties_per_wave_before_crosswalk"] == {"1997": 7, "2005": 7, "2009": 7, "2014": 9}
    assert report["counties_per_wave_after_crosswalk"] == {"1997": 6, "2005": 6, "2009": 6, "2014": 6}
    assert report["sources"]["pennstate_social_capital_2014"]["dropped"] == {
        "02 Alaska": 1, "08014 Broomfield County": 1, "15 Hawaii": 1}
    assert report["sources"]["bls_laus_county"]["dropped"]["72 Puerto Rico"] == 4
    assert report["balanced"] is True


def test_waves_shannon_becomes_oglala_lakota_and_dade_miami_dade(waves):
    panel, _ = waves
    assert row(panel, "46102", 1997)["county_name"] == "Oglala Lakota County"
    assert row(panel, "12086", 1997)["population"] == 2_000_000
    assert row(panel, "46102", 2005)["unemployment_rate"] == 5.0  # LAUS already uses 46102


def test_waves_merge_sums_counts_and_recomputes_densities(waves):
    panel, report = waves
    b = row(panel, "51019", 1997)
    n_base = sum(BASE_COUNTS.values()) + sum(EXTRA_1997.values())
    n_city = len(BASE_COUNTS) + len(EXTRA_1997)
    assert b["population"] == 63_000
    assert b["n_religious"] == 11 and b["n_membership_nec"] == 6
    assert b["assn_per_1k"] == pytest.approx((n_base + n_city) / 63_000 * 1000)
    assert b["civic_religious_per_10k"] == pytest.approx((3 + 10 + 1 + 1) / 63_000 * 10_000)
    # community organisations: the six non-recreation classes, county and city, per 1,000
    assert b["community_per_1k"] == pytest.approx((10 + 3 + 2 + 1 + 1 + 2 + 6) / 63_000 * 1000)
    assert b["turnout_pct"] == pytest.approx((50 * 57_000 + 70 * 6_000) / 63_000)
    # SAIPE: summed counts over summed universes; the median does not aggregate
    assert b["poverty_rate"] == pytest.approx((1_000 + 1_500) / (10_000 + 5_000) * 100)
    assert pd.isna(b["median_hh_income"]) and pd.isna(b["log_median_hh_income"])
    assert bool(b["geo_adjusted"])
    # 2014: already one code in every source
    b14 = row(panel, "51019", 2014)
    assert not b14["geo_adjusted"] and b14["median_hh_income"] == 40_000
    assert report["sources"]["pennstate_social_capital_1997"]["merged"] == {"51019 <- 51019 + 51515": [1997]}


def test_waves_boundary_flags(waves):
    panel, report = waves
    assert bool(row(panel, "08013", 1997)["geo_adjusted"]) and not row(panel, "08013", 2005)["geo_adjusted"]
    alleghany = row(panel, "51005", 1997)
    assert bool(alleghany["geo_adjusted"]) and pd.isna(alleghany["median_hh_income"])
    assert not row(panel, "01001", 1997)["geo_adjusted"]
    assert report["n_rows_merged"] == 4  # Bedford 1997-2009, Alleghany 1997 (SAIPE)


def test_waves_group_densities_and_membership(waves):
    panel, _ = waves
    a97, a05 = row(panel, "01001", 1997), row(panel, "01001", 2005)
    assert a97["recreation_sports_per_10k"] == pytest.approx((1 + 2 + 1 + 1 + 4) / 40_000 * 10_000)
    assert a05["recreation_sports_per_10k"] == pytest.approx((1 + 2 + 1 + 1) / 49_000 * 10_000)
    assert a05["business_prof_labour_political_per_10k"] == pytest.approx((2 + 1 + 2 + 1) / 49_000 * 10_000)
    assert a05["nonprofits_per_10k"] == pytest.approx(50 / 49_000 * 10_000)
    assert a97["assn_per_1k"] == pytest.approx((sum(BASE_COUNTS.values()) + 9) / 40_000 * 1000)
    assert pd.isna(a05["n_membership_sports"]) and a97["n_membership_sports"] == 4
    assert a05["census_response_pct"] == pytest.approx(60.0)
    assert str(panel["pop_size_class"].dtype) == "category" and panel["pop_size_class"].cat.ordered
    assert row(panel, "01001", 2014)["pop_size_class"] == "10k-50k"  # 1997 population, not 2014


# ---------------------------------------------------------------------------------------------
# Synthetic Urban Institute files
# ---------------------------------------------------------------------------------------------

UI_KEYS = {  # year -> codes present in the Urban Institute files
    2014: ["01001", "46113", "02261", "09001"],
    2017: ["01001", "46102", "02261", "09001"],
    2022: ["01001", "46102", "02063", "02066", "09110"],
    2023: ["01001", "46102", "02063", "02066", "09110"],
}
UI_POP = {"01001": 55_000, "46113": 14_000, "46102": 14_000, "02261": 9_000, "02063": 7_000,
          "02066": 2_000, "09001": 900_000, "09110": 950_000}


def ui_frame(columns: dict[str, float], years=None) -> pd.DataFrame:
    rows = []
    for year, codes in UI_KEYS.items():
        if years is not None and year not in years:
            continue
        for code in codes:
            r = {"year": year, "state": code[:2], "county": code[2:]}
            for c, v in columns.items():
                r[c] = v(code) if callable(v) else v
            rows.append(r)
    return pd.DataFrame(rows)


def annual_frames() -> dict[str, pd.DataFrame]:
    return {
        "ui_county_populations": ui_frame({"state_name": "X", "county_name": lambda c: f" County {c}",
                                           "population": lambda c: UI_POP[c]}),
        "ui_membership_associations": ui_frame({
            "count_membership_associations_per_10k": lambda c: 20.0 if c == "02066" else 10.0,
            "count_membership_associations_per_10k_quality": 1}),
        "ui_employment": ui_frame({"share_employed": 0.7, "share_employed_lb": 0.6, "share_employed_ub": 0.8,
                                   "share_employed_quality": lambda c: 3 if c == "02063" else 1}),
        "ui_income": ui_frame({"pctl_income_20": 20_000.0, "pctl_income_50": 50_000.0, "pctl_income_80": 90_000.0,
                               "pctl_income_20_quality": 1, "pctl_income_50_quality": 1,
                               "pctl_income_80_quality": lambda c: 2 if c == "01001" else 1}),
        "ui_injury_deaths": ui_frame({"rate_injury_death": 80.0, "rate_injury_death_quality": 1}),
        "ui_low_birth_weight": ui_frame({"rate_low_birth_weight": 0.08, "rate_low_birth_weight_quality": 3},
                                        years={2017, 2022, 2023}),
        "ui_poverty_exposure": ui_frame({"share_poverty_exposure": 0.1, "share_poverty_exposure_quality": 1},
                                        years={2014, 2023}),
        "ui_crime_2015_2017": ui_frame({"violent_crime_rate": 300.0, "property_crime_rate": 2_000.0,
                                        "crime_rate_quality": 2}, years={2017}),
        "ui_crime_2021_2023": ui_frame({"rate_crime_violent": 900.0, "rate_crime_property": 2_100.0,
                                        "rate_crime_violent_quality": 1, "rate_crime_property_quality": 1},
                                       years={2022, 2023}),
    }


@pytest.fixture(scope="module")
def annual(crosswalk, states):
    return build_annual(annual_frames(), crosswalk, states)


def test_annual_years_codes_and_flags(annual):
    panel, report = annual
    assert list(panel.columns) == panels.ANNUAL_COLUMNS
    assert sorted(panel["year"].unique()) == [2014, 2017, 2022]  # 2023 dropped
    assert set(panel["fips"]) == {"01001", "46102", "02261", "09001"}
    assert not ((panel["fips"] == "09001") & (panel["year"] == 2022)).any()  # CT 2022: planning regions
    assert report["sources"]["ui_county_populations"]["dropped"] == {"09110 Capitol Planning Region": 1}
    assert report["sources"]["ui_county_populations"]["rows_outside_2014_2022"] == 5
    assert row(panel, "46102", 2014)["population"] == 14_000
    assert list(panel["post_2017_break"]) == list(panel["year"] >= 2017)
    assert row(panel, "01001", 2014)["county_name"] == "County 01001"


def test_annual_merged_unit_weights_rates_and_blanks_percentiles(annual):
    panel, _ = annual
    vc = row(panel, "02261", 2022)
    assert vc["population"] == 9_000
    assert vc["associations_per_10k"] == pytest.approx((10 * 7_000 + 20 * 2_000) / 9_000)
    assert pd.isna(vc["income_p50"]) and bool(vc["geo_adjusted"])
    assert vc["share_employed_quality"] == 3  # worst part
    assert not row(panel, "02261", 2017)["geo_adjusted"]


def test_annual_crime_files_and_quality_merge(annual):
    panel, _ = annual
    assert row(panel, "01001", 2017)["violent_crime_per_100k"] == 300.0
    assert row(panel, "01001", 2022)["violent_crime_per_100k"] == 900.0
    assert pd.isna(row(panel, "01001", 2014)["violent_crime_per_100k"])
    assert row(panel, "01001", 2014)["income_quality"] == 2  # worst of the three percentile flags
    assert pd.isna(row(panel, "01001", 2014)["low_birth_weight_share"])


def test_sca_pads_fips_rescales_civic_and_reports_matches(annual, crosswalk, states):
    annual_panel, _ = annual
    sca_raw = pd.DataFrame({
        "county": [1001, 2261, 56045],
        "county_name": ["Autauga, Alabama", "Valdez-Cordova, Alaska", "Weston, Wyoming"],
        "pop2018": [55_200.0, np.nan, 7_000.0],
        "ec_county": [0.72, 0.9, 0.8], "ec_se_county": [0.008, 0.02, 0.03], "clustering_county": [0.1, 0.2, 0.15],
        "support_ratio_county": [0.99, 1.0, 0.98], "volunteering_rate_county": [0.04, 0.06, 0.05],
        "civic_organizations_county": [0.01518, 0.02, 0.03],
        "ec_grp_mem_county": [0.75, 0.9, 0.8], "exposure_grp_mem_county": [0.8, 1.0, 0.9],
        "bias_grp_mem_county": [0.0625, 0.1, 0.1111],
    })
    # the 2018 join year is absent from the synthetic annual panel: use 2017 as 2018
    a = annual_panel.assign(year=annual_panel["year"].replace({2017: 2018}))
    panel, report = build_sca(sca_raw, a, crosswalk, states)
    assert list(panel.columns) == panels.SCA_COLUMNS
    assert list(panel["fips"]) == ["01001", "02261", "56045"]
    assert panel["civic_organizations_per_1k_users"].iloc[0] == pytest.approx(15.18)
    assert report["matched_annual_2018"] == 2 and report["unmatched_sca_fips"] == ["56045"]
    assert panel.loc[panel["fips"] == "56045", "county_name"].item() == "Weston"
    assert panel.loc[panel["fips"] == "01001", "associations_per_10k"].item() == 10.0
    assert pd.isna(panel.loc[panel["fips"] == "02261", "pop2018"].item())


# ---------------------------------------------------------------------------------------------
# Cache: build once, reuse, rebuild on change, never leave half-written files
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def tiny_cache(tmp_path, monkeypatch):
    calls = []

    def fake_builder():
        calls.append(1)
        return pd.DataFrame({"fips": ["01001", "01003"], "year": [2014, 2014], "x": [1.0, 2.0]}), {"note": "synthetic"}

    monkeypatch.setattr(panels.paths, "PROCESSED_DIR", tmp_path)
    monkeypatch.setitem(panels.BUILDERS, "us_counties_waves", fake_builder)
    monkeypatch.setattr(panels, "validate", lambda name, df: df)
    return tmp_path, calls


def test_cache_builds_once_then_loads(tiny_cache):
    d, calls = tiny_cache
    first = panels.load("us_counties_waves")
    second = panels.load("us_counties_waves")
    assert len(calls) == 1
    pd.testing.assert_frame_equal(first, second)
    meta = json.loads((d / "us_counties_waves.json").read_text())
    assert meta["key"]["inputs"]["bls_laus_county"] and meta["rows"] == 2
    assert panels.build_report("us_counties_waves")["note"] == "synthetic"


def test_cache_rebuilds_when_builder_or_file_changes(tiny_cache, monkeypatch):
    d, calls = tiny_cache
    panels.load("us_counties_waves")
    monkeypatch.setattr(panels, "builder_hash", lambda: "changed")
    panels.load("us_counties_waves")
    assert len(calls) == 2
    (d / "us_counties_waves.parquet").write_bytes(b"corrupt")  # e.g. an interrupted copy
    df = panels.load("us_counties_waves")
    assert len(calls) == 3 and len(df) == 2
    panels.load("us_counties_waves", force=True)
    assert len(calls) == 4


def test_cache_key_follows_input_hashes(monkeypatch):
    key = panels.cache_key("us_counties_annual")
    assert set(key["inputs"]) == set(panels.INPUTS["us_counties_annual"])
    assert set(panels.INPUTS["us_social_capital_atlas"]) >= set(panels.INPUTS["us_counties_annual"])


@pytest.mark.parametrize("failure", ["builder", "validation"])
def test_failed_build_leaves_nothing_written(tiny_cache, monkeypatch, failure):
    d, _ = tiny_cache
    if failure == "builder":
        def broken():
            raise RawInputError("pennstate_social_capital_1997", "missing column(s) 'relig97'")
        monkeypatch.setitem(panels.BUILDERS, "us_counties_waves", broken)
        expected = RawInputError
    else:
        def reject(name, df):
            raise PanelValidationError(name, "synthetic failure")
        monkeypatch.setattr(panels, "validate", reject)
        expected = PanelValidationError
    with pytest.raises(expected):
        panels.load("us_counties_waves")
    leftovers = [p.name for p in d.iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []


def test_unknown_panel():
    with pytest.raises(KeyError, match="unknown panel"):
        panels.load("us_counties_monthly")


# ---------------------------------------------------------------------------------------------
# The real panels (built from the verified raw cache on first use)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real():
    return {name: panels.load(name) for name in panels.PANELS}


def test_real_waves_counties_per_wave(real):
    w = real["us_counties_waves"]
    per_wave = w.groupby("year")["fips"].nunique()
    assert list(per_wave.index) == [1997, 2005, 2009, 2014]
    assert per_wave.between(3_000, 3_150).all() and per_wave.nunique() == 1  # balanced
    assert not w["fips"].str.startswith(("02", "15")).any()
    assert {"12086", "46102", "51019"} <= set(w["fips"]) and not {"12025", "46113", "51515", "08014"} & set(w["fips"])


def test_real_waves_assn_identity(real):
    w = real["us_counties_waves"].dropna(subset=["assn_per_1k"])  # the one source gap (DC 1997)
    counts = w[list(panels.ALL_COUNTS)].astype("float64").fillna(0).sum(axis=1)
    implied = counts / w["population"].astype("float64") * 1_000
    assert np.allclose(implied, w["assn_per_1k"], rtol=1e-9, atol=1e-12)
    # the source value is per 1,000 people: Penn State's published 1997 value for Autauga
    assert row(w, "01001", 1997)["assn_per_1k"] == pytest.approx(1.212474, abs=1e-6)


def test_real_annual_and_sca(real):
    a, s = real["us_counties_annual"], real["us_social_capital_atlas"]
    per_year = a.groupby("year")["fips"].nunique()
    assert list(per_year.index) == list(range(2014, 2023))
    assert per_year.between(3_100, 3_150).all()
    assert 2_950 <= len(s) <= 3_150 and s["fips"].is_unique
    assert s["associations_per_10k"].notna().mean() > 0.9
    assert 5 < s["civic_organizations_per_1k_users"].median() < 50


def test_real_build_reports(real):
    rep = panels.build_report("us_counties_waves")
    assert rep["balanced"] is True
    assert set(rep["counties_per_wave_before_crosswalk"]) == {"1997", "2005", "2009", "2014"}
    assert rep["sources"]["pennstate_social_capital_2014"]["dropped"]["08014 Broomfield County"] == 1
    assert max(rep["assn_identity_max_abs_diff"].values()) < 1e-9
    sca = panels.build_report("us_social_capital_atlas")
    assert sca["matched_annual_2018"] == sca["rows"]


def test_source_gap_is_missing_not_zero():
    """DC's 1997 Penn State row has no establishment of any type for 567,736 people: a gap in the
    source coded as zero. The builder sets its counts and densities missing and reports it."""
    from analysis.panels import build_report, load

    w = load("us_counties_waves")
    assert build_report("us_counties_waves")["source_gaps_set_missing"] == ["11001 1997"]
    row = w[(w["fips"] == "11001") & (w["year"] == 1997)].iloc[0]
    assert pd.isna(row["assn_per_1k"]) and pd.isna(row["n_religious"]) and pd.isna(row["civic_religious_per_10k"])
    assert pd.isna(row["community_per_1k"])
    assert row["population"] > 500_000  # the outcomes and population are kept
    assert w["assn_per_1k"].isna().sum() == 1


def test_half_missing_counts_fail_validation():
    from analysis.panels import load
    from analysis.schemas import PanelValidationError, validate

    w = load("us_counties_waves").copy()
    i = w.index[(w["fips"] == "01001") & (w["year"] == 2005)][0]
    w.loc[i, "n_religious"] = pd.NA  # a count missing while the density is present
    with pytest.raises(PanelValidationError, match="assn_per_1k_equals_counts_over_population_x1000"):
        validate("us_counties_waves", w)
