"""The long-run county panels (``us_counties_congregations``, ``us_counties_income``).

Builders run on small SYNTHETIC files written to ``tmp_path`` here, in the upstream layouts (the
real column names and codes, made-up values): gisjoin -> FIPS, crosswalked and retired codes,
units without a FIPS, population 0, members above the population, BEA's quoted codes, ``(NA)``,
footnotes, CRLF and Latin-1, combination areas, and every kind of bad input. The last section
checks the real built panels (through ``analysis.panels.load``) against the published national
totals, recomputed from the raw files as well.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis import longrun as lr
from analysis.schemas import (
    CONGREGATION_BUILDER_FLAGS,
    CONGREGATION_SOURCE_FLAGS,
    INCOME_YEARS,
    PanelValidationError,
    RawInputError,
    validate,
)

# ---------------------------------------------------------------------------------------------
# SYNTHETIC religious-census files
# ---------------------------------------------------------------------------------------------

NHGIS_HEADER = [
    "gisjoin", "year", "boundary_year", "area_name", "source_area_name", "state_name", "state_code", "county_name",
    "county_code", "population_total", "population_reference_year", "church_or_edifice_count", "church_count_basis",
    "church_seating_count", "church_seating_per_100_population", "churches_or_edifices_per_10000_residents",
    "church_property_value", "member_count", "members_per_100_population", "land_area_sq_km", "quality_flag",
]
# gisjoin, county, state, population, members (made up)
NHGIS_UNITS = [
    ("G4500010", "Abbeville", "South Carolina", 34_000, 16_000),
    ("G1200250", "Dade", "Florida", 12_000, 4_000),            # retired 12025 -> crosswalk 12086
    ("G1300395", "Campbell", "Georgia", 10_000, 5_000),        # no FIPS
    ("G4601330", "Washington", "South Dakota", 500, 100),      # retired 46133, no crosswalk entry
    ("G4600010", "Armstrong", "South Dakota", 0, 77),          # population 0; 46001 -> 46041
    ("G4600410", "Dewey", "South Dakota", 5_000, 1_000),       # shares 46041 with Armstrong
    ("G4801310", "Duval", "Texas", 8_000, 11_486),             # members above population
]
RCMS_HEADER = ["fips", "name", "state", "cng", "adh", "pop", "quality_flag", "original_fips", "crosswalk_note"]
# fips, name, state, cng, adh, pop, original code (early waves), crosswalked in early waves
RCMS_UNITS = [
    ("45001", "Abbeville", "SC", 40, 10_000, 25_000, "45001", False),
    ("12086", "Miami-Dade", "FL", 900, 700_000, 2_000_000, "12025", True),
    ("30031", "Gallatin", "MT", 60, 20_000, 50_000, "30031, 30113", True),
    ("46041", "Dewey", "SD", 10, 2_000, 5_500, "46001, 46041", True),
    ("48131", "Duval", "TX", 20, 15_000, 12_000, "48131", False),
    ("51600", "Fairfax", "VA", 12, 9_000, 20_000, "51600", False),
]
CROSSWALK_ROWS = [
    "start_year,end_year,old_fips,old_name,new_fips,new_name,note",
    '1952,1990,12025,Dade County,12086,Miami-Dade County,"Name and FIPS changed in 1997."',
    '1952,2020,30113,Yellowstone National Park (part),30031,Gallatin County,"Dissolved in 1997, mapped to Gallatin."',
    "1952,1952,46001,Armstrong County,46041,Dewey County,Absorbed into Dewey County in 1952.",
    "1952,2020,46113,Shannon County,46102,Oglala Lakota County,Renamed 2015.",
]


def nhgis_frame(wave: int) -> pd.DataFrame:
    rows = []
    for g, county, state, pop, members in NHGIS_UNITS:
        per100 = "" if pop == 0 else f"{members / pop * 100:.4f}"
        rows.append({
            "gisjoin": g, "year": wave, "boundary_year": 1930, "area_name": f"{county}, {state}",
            "source_area_name": county, "state_name": state, "state_code": g[1:4], "county_name": county,
            "county_code": g[4:8], "population_total": pop, "population_reference_year": wave + 4,
            "member_count": members, "members_per_100_population": per100, "land_area_sq_km": 1000.5,
            "quality_flag": "wave_coverage_differs;period_boundary_vintage_differs",
        })
    return pd.DataFrame(rows, columns=NHGIS_HEADER)


def rcms_frame(wave: int) -> pd.DataFrame:
    rows = []
    for fips, name, state, cng, adh, pop, orig, crossed in RCMS_UNITS:
        early = wave <= 2000
        flags = (["wave_coverage_differs"] if early else []) + (["boundary_change_crosswalked"] if crossed and wave < 2020 else [])
        row = {"fips": fips, "name": name, "state": state, "cng": cng, "adh": adh, "pop": pop,
               "quality_flag": ";".join(flags), "original_fips": orig if wave < 2020 else fips,
               "crosswalk_note": "Mapped by the publisher." if crossed and wave < 2020 else ""}
        if fips == "51600" and wave == 1971:  # not reported
            row.update({"cng": "", "adh": "", "pop": ""})
        rows.append(row)
    if wave == 2020:  # the 2020 county set also holds Oglala Lakota
        rows.append({"fips": "46102", "name": "Oglala Lakota", "state": "SD", "cng": 30, "adh": 9_000, "pop": 13_000,
                     "quality_flag": "", "original_fips": "46102", "crosswalk_note": ""})
    return pd.DataFrame(rows, columns=RCMS_HEADER)


def write_religion_files(tmp_path, edit=None) -> dict[str, pd.DataFrame]:
    """Write every synthetic input to ``tmp_path`` (``edit(name, frame)`` may alter one) and read it back."""
    frames = {}
    for w, name in lr.NHGIS_SOURCES.items():
        frames[name] = nhgis_frame(w)
    for w, name in lr.RCMS_SOURCES.items():
        frames[name] = rcms_frame(w)
    out = {}
    for name, df in frames.items():
        if edit is not None:
            df = edit(name, df)
        path = tmp_path / f"{name}.csv"
        df.to_csv(path, index=False)
        out[name] = lr.read_longrun_raw(name, path)
    path = tmp_path / "pow_fips_crosswalk_2020.csv"
    path.write_text("\n".join(CROSSWALK_ROWS) + "\n", encoding="utf-8")
    out[lr.CROSSWALK_SOURCE] = lr.read_longrun_raw(lr.CROSSWALK_SOURCE, path)
    return out


@pytest.fixture
def congregations(tmp_path):
    return lr.build_congregations(write_religion_files(tmp_path))


def one(panel: pd.DataFrame, wave: int, code: str) -> pd.Series:
    rows = panel[(panel["wave"] == wave) & (panel["original_code"] == code)]
    assert len(rows) == 1, (wave, code)
    return rows.iloc[0]


# ---------------------------------------------------------------------------------------------
# Congregations: builder on synthetic files
# ---------------------------------------------------------------------------------------------


def test_every_source_row_is_kept_and_the_panel_validates(congregations):
    panel, report = congregations
    expected = len(NHGIS_UNITS) * 4 + len(RCMS_UNITS) * 7 + 1
    assert len(panel) == expected and report["rows"] == expected
    assert list(panel.columns) == lr.CONGREGATION_COLUMNS
    assert report["rows_per_wave"]["1906"] == len(NHGIS_UNITS) and report["rows_per_wave"]["2020"] == len(RCMS_UNITS) + 1
    validate("us_counties_congregations", panel)
    for flag in (*CONGREGATION_SOURCE_FLAGS, *CONGREGATION_BUILDER_FLAGS):
        assert panel[flag].dtype == bool, flag


def test_gisjoin_becomes_fips_and_retired_codes_are_mapped_or_flagged(congregations):
    panel, report = congregations
    abbeville = one(panel, 1906, "G4500010")
    assert abbeville["fips"] == "45001" and abbeville["historical_fips"] == "45001" and not abbeville["fips_crosswalked"]
    dade = one(panel, 1916, "G1200250")
    assert dade["fips"] == "12086" and dade["historical_fips"] == "12025" and dade["fips_crosswalked"]
    assert "12086" in dade["crosswalk_note"] and "Dade" in dade["crosswalk_note"]
    campbell = one(panel, 1926, "G1300395")
    assert pd.isna(campbell["fips"]) and pd.isna(campbell["historical_fips"]) and campbell["no_fips_code"]
    assert campbell["state_fips"] == "13" and campbell["adherents_or_members"] == 5_000  # kept, not dropped
    washington = one(panel, 1936, "G4601330")
    assert washington["fips"] == "46133" and washington["fips_not_2020"] and not washington["fips_crosswalked"]
    assert report["no_fips_code"][0] == "1906 G1300395 Campbell"
    assert "1906 G4600010 Armstrong -> 46041" in report["fips_crosswalked"]


def test_several_1930_counties_share_a_2020_code_and_are_not_aggregated(congregations):
    panel, report = congregations
    shared = panel[(panel["wave"] == 1906) & (panel["fips"] == "46041")]
    assert sorted(shared["original_code"]) == ["G4600010", "G4600410"] and shared["fips_shared_in_wave"].all()
    assert report["fips_shared_in_wave"]["1906"] == ["46041"]
    assert not panel.loc[panel["wave"] >= 1952, "fips_shared_in_wave"].any()


def test_population_zero_gives_missing_rates_and_members_above_population_are_kept(congregations):
    panel, _ = congregations
    armstrong = one(panel, 1906, "G4600010")
    assert armstrong["population"] == 0 and armstrong["population_missing_or_zero"]
    assert math.isnan(armstrong["adherents_per_100"]) and armstrong["adherents_or_members"] == 77
    duval = one(panel, 1906, "G4801310")
    assert duval["adherents_per_100"] == pytest.approx(143.575) and duval["adherents_exceed_population"]
    rcms_duval = one(panel, 1980, "48131")
    assert rcms_duval["adherents_per_100"] == pytest.approx(125.0) and rcms_duval["adherents_exceed_population"]


def test_measures_counts_and_rates_by_era(congregations):
    panel, _ = congregations
    early, late = panel[panel["wave"] < 1950], panel[panel["wave"] >= 1950]
    assert (early["membership_measure"] == "members").all() and (late["membership_measure"] == "adherents").all()
    assert early["congregations"].isna().all() and early["congregations_per_1k"].isna().all()
    assert early["population_year"].tolist() == [w + 4 for w in early["wave"]]
    assert late["population_year"].isna().all()
    abbeville = one(panel, 1980, "45001")
    assert abbeville["congregations_per_1k"] == pytest.approx(40 / 25_000 * 1_000)
    assert abbeville["adherents_per_100"] == pytest.approx(40.0)
    gone = one(panel, 1971, "51600")
    assert gone["not_reported"] and gone["population_missing_or_zero"] and pd.isna(gone["congregations"])


def test_source_flags_and_original_codes_are_kept(congregations):
    panel, report = congregations
    gallatin = one(panel, 1952, "30031, 30113")
    assert gallatin["fips"] == "30031" and pd.isna(gallatin["historical_fips"])
    assert gallatin["boundary_change_crosswalked"] and gallatin["wave_coverage_differs"]
    assert gallatin["crosswalk_note"] == "Mapped by the publisher."
    assert one(panel, 1990, "12025")["fips"] == "12086"
    assert not panel.loc[panel["wave"] == 2020, list(CONGREGATION_SOURCE_FLAGS)].any().any()
    assert panel.loc[panel["wave"] < 1950, "period_boundary_vintage_differs"].all()
    assert report["flag_counts"]["wave_coverage_differs"]["1906"] == len(NHGIS_UNITS)


# ---------------------------------------------------------------------------------------------
# Congregations: bad input gives one clear error (file, column, rows)
# ---------------------------------------------------------------------------------------------


def _edit(target: str, fn):
    return lambda name, df: fn(df.copy()) if name == target else df


def test_renamed_column_names_file_and_column(tmp_path):
    frames = write_religion_files(tmp_path, _edit("nhgis_religious_bodies_1926",
                                                   lambda d: d.rename(columns={"member_count": "members"})))
    with pytest.raises(RawInputError) as exc:
        lr.build_congregations(frames)
    msg = str(exc.value)
    assert msg.startswith("nhgis_religious_bodies_1926:") and "'member_count'" in msg
    assert "us_nhgis_county_1926_extract.csv" in msg and exc.value.missing == ["member_count"]


def _set(df: pd.DataFrame, row: int, column: str, value) -> pd.DataFrame:
    df[column] = df[column].astype(object)
    df.loc[row, column] = value
    return df


def test_unparseable_value_names_file_column_and_line(tmp_path):
    frames = write_religion_files(tmp_path, _edit("rcms_county_1980", lambda d: _set(d, 2, "adh", "2O,000")))
    with pytest.raises(RawInputError) as exc:
        lr.build_congregations(frames)
    msg = str(exc.value)
    assert msg.startswith("rcms_county_1980:") and "us_rcms_county_1980_extract.csv" in msg
    assert "column 'adh'" in msg and "not numbers" in msg and "line 4 ('2O,000')" in msg  # header is line 1


def test_negative_and_fractional_counts_raise(tmp_path):
    frames = write_religion_files(tmp_path, _edit("rcms_county_2010", lambda d: _set(d, 0, "cng", "-3")))
    with pytest.raises(RawInputError, match=r"rcms_county_2010: .*column 'cng': negative values .* line 2"):
        lr.build_congregations(frames)
    frames = write_religion_files(tmp_path, _edit("nhgis_religious_bodies_1906",
                                                   lambda d: _set(d, 1, "population_total", "12000.5")))
    with pytest.raises(RawInputError, match=r"column 'population_total': values that are not whole numbers .* line 3"):
        lr.build_congregations(frames)


def test_duplicated_county_names_the_lines(tmp_path):
    frames = write_religion_files(tmp_path, _edit("rcms_county_2000", lambda d: pd.concat([d, d.iloc[[1]]])))
    with pytest.raises(RawInputError) as exc:
        lr.build_congregations(frames)
    msg = str(exc.value)
    assert msg.startswith("rcms_county_2000:") and "column 'fips': duplicated county on 2 row(s)" in msg
    assert "line 3 ('12086')" in msg and "line 8 ('12086')" in msg
    frames = write_religion_files(tmp_path, _edit("nhgis_religious_bodies_1936", lambda d: pd.concat([d, d.iloc[[0]]])))
    with pytest.raises(RawInputError, match=r"nhgis_religious_bodies_1936: .*column 'gisjoin': duplicated county code"):
        lr.build_congregations(frames)


def test_unknown_quality_flag_and_bad_codes_raise(tmp_path):
    frames = write_religion_files(tmp_path, _edit("rcms_county_1952",
                                                   lambda d: _set(d, 0, "quality_flag", "wave_coverage_differs;new_flag")))
    with pytest.raises(RawInputError, match=r"rcms_county_1952: .*column 'quality_flag': unknown quality flag .* line 2"):
        lr.build_congregations(frames)
    frames = write_religion_files(tmp_path, _edit("nhgis_religious_bodies_1916", lambda d: _set(d, 3, "gisjoin", "G46133")))
    with pytest.raises(RawInputError, match=r"column 'gisjoin': malformed NHGIS code .* line 5 \('G46133'\)"):
        lr.build_congregations(frames)
    frames = write_religion_files(tmp_path, _edit("nhgis_religious_bodies_1916", lambda d: _set(d, 0, "year", 1926)))
    with pytest.raises(RawInputError, match=r"column 'year': year other than the wave 1916"):
        lr.build_congregations(frames)


def test_members_per_100_must_match_the_counts(tmp_path):
    frames = write_religion_files(tmp_path, _edit("nhgis_religious_bodies_1906",
                                                   lambda d: _set(d, 0, "members_per_100_population", "99.0")))
    with pytest.raises(RawInputError, match=r"column 'members_per_100_population': value differs .* line 2"):
        lr.build_congregations(frames)


def test_schema_rejects_inconsistent_flags_and_duplicate_keys(congregations):
    panel, _ = congregations
    bad = panel.copy()
    i = bad.index[(bad["wave"] == 1906) & (bad["original_code"] == "G4801310")][0]
    bad.loc[i, "adherents_exceed_population"] = False
    with pytest.raises(PanelValidationError, match="adherents_exceed_population_flag"):
        validate("us_counties_congregations", bad)
    dup = pd.concat([panel, panel.iloc[[0]]], ignore_index=True)
    with pytest.raises(PanelValidationError) as exc:
        validate("us_counties_congregations", dup)
    assert "not unique" in str(exc.value) and f"original_code={panel['original_code'].iloc[0]}" in str(exc.value)
    assert "wave=1906" in str(exc.value)


# ---------------------------------------------------------------------------------------------
# SYNTHETIC BEA CAINC1 file
# ---------------------------------------------------------------------------------------------

BEA_HEADER = "GeoFIPS,GeoName,Region,TableName,LineCode,IndustryClassification,Description,Unit," + ",".join(
    str(y) for y in INCOME_YEARS)
BEA_DESCRIPTIONS = {1: ('"Personal income (thousands of dollars) "', '"Thousands of dollars"'),
                    2: ('"Population (persons) 1/"', '"Number of persons"'),
                    3: ('"Per capita personal income (dollars) 2/"', '"Dollars"')}
# fips, name, region, population in 1969 (grows 1% a year), pcpi in 1969 (grows 5% a year), first year
BEA_AREAS = [
    ("00000", "United States", " ", 200_000_000, 4_000, 1969),
    ("01000", "Alabama", "5", 3_400_000, 3_000, 1969),
    ("01001", "Autauga, AL", "5", 25_000, 2_800, 1969),
    ("08014", "Broomfield, CO*", "7", 40_000, 30_000, 2002),
    ("35013", "Doña Ana, NM", "6", 70_000, 2_500, 1969),
    ("51907", "Augusta, Staunton + Waynesboro, VA*", "5", 80_000, 3_200, 1969),
    ("91000", "New England", "1", 11_800_000, 4_200, 1969),
]
BEA_FOOTER = ['"Note: See the included footnote file."',
              '"CAINC1: County and MSA personal income summary: personal income, population, per capita personal income "',
              '"Last updated: November 16, 2023-- new statistics for 2022; revised statistics for 1979-2021."',
              '"U.S. Bureau of Economic Analysis"']


def bea_values(pop0: int, pcpi0: int, first: int) -> dict[int, list[str]]:
    out = {1: [], 2: [], 3: []}
    for k, y in enumerate(INCOME_YEARS):
        if y < first:
            for vals in out.values():
                vals.append("(NA)")
            continue
        pop = round(pop0 * 1.01 ** k)
        pcpi = round(pcpi0 * 1.05 ** k)
        out[1].append(str(round(pop * pcpi / 1_000)))
        out[2].append(str(pop))
        out[3].append(str(round(round(pop * pcpi / 1_000) * 1_000 / pop)))
    return out


def bea_lines(areas=BEA_AREAS) -> list[str]:
    lines = [BEA_HEADER]
    for fips, name, region, pop0, pcpi0, first in areas:
        vals = bea_values(pop0, pcpi0, first)
        for line, (desc, unit) in BEA_DESCRIPTIONS.items():
            lines.append(f' "{fips}","{name}",{region},CAINC1,{line},"...",{desc},{unit},' + ",".join(vals[line]))
    return lines + BEA_FOOTER


def write_bea(tmp_path, lines=None):
    path = tmp_path / "bea_cainc1_county.csv"
    path.write_bytes(("\r\n".join(lines or bea_lines()) + "\r\n").encode("latin-1"))  # as BEA: CRLF, Latin-1
    return lr.read_longrun_raw(lr.BEA_SOURCE, path)


@pytest.fixture
def income(tmp_path):
    return lr.build_income(write_bea(tmp_path))


def test_bea_keeps_counties_and_combined_areas_only(income):
    panel, report = income
    assert list(panel.columns) == lr.INCOME_COLUMNS
    assert sorted(panel["fips"].unique()) == ["01001", "08014", "35013", "51907"]
    assert len(panel) == 4 * len(INCOME_YEARS)
    assert report["non_county_rows_dropped"] == {"00000": "United States", "01000": "Alabama", "91000": "New England"}
    validate("us_counties_income", panel)


def test_bea_quotes_latin1_and_na(income):
    panel, report = income
    p = panel.set_index(["fips", "year"])
    assert p.loc[("35013", 1969), "area_name"] == "Doña Ana, NM"
    assert p.loc[("01001", 1969), "population"] == 25_000 and p.loc[("01001", 1969), "pcpi"] == 2_800
    broomfield = panel[panel["fips"] == "08014"]
    early = broomfield[broomfield["year"] < 2002]
    assert early["bea_not_published"].all() and early["pcpi"].isna().all() and early["log_pcpi"].isna().all()
    assert not broomfield.loc[broomfield["year"] >= 2002, "bea_not_published"].any()
    assert report["area_years_not_published"] == 2002 - 1969
    assert p.loc[("08014", 2010), "bea_area_footnote"] and p.loc[("08014", 2010), "area_name"] == "Broomfield, CO"


def test_bea_combined_area_is_mapped_not_dropped(income):
    panel, report = income
    aug = panel[panel["fips"] == "51907"]
    assert len(aug) == len(INCOME_YEARS) and aug["bea_combined_area"].all()
    assert set(aug["bea_component_fips"]) == {"51015;51790;51820"}
    assert report["combined_areas"]["51907"]["components"] == ["51015", "51790", "51820"]
    assert report["combined_areas"]["51907"]["name"] == "Augusta, Staunton + Waynesboro, VA"
    assert not panel.loc[panel["fips"] != "51907", "bea_combined_area"].any()


def test_bea_log_income_relative_to_the_us(income):
    panel, _ = income
    r = panel[(panel["fips"] == "01001") & (panel["year"] == 2000)].iloc[0]
    us_2000 = round(round(round(200_000_000 * 1.01 ** 31) * round(4_000 * 1.05 ** 31) / 1_000) * 1_000
                    / round(200_000_000 * 1.01 ** 31))
    assert r["us_pcpi"] == us_2000
    assert r["log_pcpi"] == pytest.approx(np.log(r["pcpi"]))
    assert r["log_pcpi_rel_us"] == pytest.approx(np.log(r["pcpi"] / us_2000))
    # the relative series removes the common 5% nominal growth: constant over time here
    rel = panel.loc[panel["fips"] == "01001", "log_pcpi_rel_us"]
    assert rel.max() - rel.min() < 1e-3


def _bea_with(tmp_path, fn):
    return write_bea(tmp_path, fn(bea_lines()))


def test_bea_renamed_column_names_file_and_column(tmp_path):
    raw = _bea_with(tmp_path, lambda ls: [ls[0].replace("GeoFIPS", "GeoFips"), *ls[1:]])
    with pytest.raises(RawInputError) as exc:
        lr.build_income(raw)
    assert str(exc.value).startswith("bea_cainc1_county:") and "'GeoFIPS'" in str(exc.value)
    assert "CAINC1__ALL_AREAS_1969_2022.csv" in str(exc.value)


def test_bea_unparseable_value_names_year_column_and_line(tmp_path):
    def corrupt(ls):
        ls = list(ls)
        i = 1 + 2 * 3 + 2  # Autauga, LineCode 3 (header = line 1)
        cells = ls[i].split(",")
        cells[-1 - (2022 - 1990)] = "(D)"  # counted from the end: names contain commas
        ls[i] = ",".join(cells)
        return ls

    with pytest.raises(RawInputError) as exc:
        lr.build_income(_bea_with(tmp_path, corrupt))
    msg = str(exc.value)
    assert "column '1990': values that are not numbers on 1 row(s): line 10 ('(D)')" in msg
    assert msg.startswith("bea_cainc1_county:")


def test_bea_duplicated_county_and_misplaced_footnote_raise(tmp_path):
    dup = lambda ls: [*ls[:10], ls[7], *ls[10:]]  # Autauga's LineCode 1 twice
    with pytest.raises(RawInputError, match=r"column 'GeoFIPS': duplicated area and LineCode on 2 row\(s\): line 8 .*line 11"):
        lr.build_income(_bea_with(tmp_path, dup))
    mid = lambda ls: [*ls[:4], BEA_FOOTER[0], *ls[4:]]
    with pytest.raises(RawInputError, match=r"column 'LineCode': footnote or blank line before the last data row .* line 5"):
        lr.build_income(_bea_with(tmp_path, mid))
    swap = lambda ls: [*ls[:7], ls[7].replace("Personal income (thousands", "Personal income (millions"), *ls[8:]]
    with pytest.raises(RawInputError, match=r"column 'Description': description does not match its LineCode .* line 8"):
        lr.build_income(_bea_with(tmp_path, swap))


def test_bea_unknown_combined_area_is_an_error_not_a_silent_drop(tmp_path):
    areas = [*BEA_AREAS, ("51999", "Nowhere + Somewhere, VA*", "5", 10_000, 3_000, 1969)]
    with pytest.raises(RawInputError, match=r"51999 Nowhere \+ Somewhere, VA\*"):
        lr.build_income(write_bea(tmp_path, bea_lines(areas)))


def test_income_schema_rejects_wrong_logs(income):
    panel, _ = income
    bad = panel.copy()
    bad.loc[bad.index[40], "log_pcpi_rel_us"] += 0.1
    with pytest.raises(PanelValidationError) as exc:
        validate("us_counties_income", bad)
    assert "log_pcpi_rel_us_equals_log_pcpi_minus_log_us_pcpi" in str(exc.value) and "fips=01001" in str(exc.value)


# ---------------------------------------------------------------------------------------------
# The real panels (built from the verified raw cache through analysis.panels.load)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_congregations():
    from analysis.panels import load

    return load("us_counties_congregations")


@pytest.fixture(scope="module")
def real_income():
    from analysis.panels import load

    return load("us_counties_income")


@pytest.fixture(scope="module")
def raw_totals():
    """National totals straight from the raw files (not through the builder)."""
    out = {}
    for w, name in {**lr.NHGIS_SOURCES, **lr.RCMS_SOURCES}.items():
        raw = lr.read_longrun_raw(name)
        cols = ("member_count", "population_total", None) if w < 1950 else ("adh", "pop", "cng")
        num = {c: pd.to_numeric(raw[c].replace("", np.nan)) for c in cols if c}
        out[w] = {"rows": len(raw), "adh": num[cols[0]].sum(), "pop": num[cols[1]].sum(),
                  "cng": num[cols[2]].sum() if cols[2] else None}
    return out


def test_real_congregations_keep_every_source_row(real_congregations, raw_totals):
    per_wave = real_congregations.groupby("wave").size()
    assert {w: int(n) for w, n in per_wave.items()} == {w: t["rows"] for w, t in raw_totals.items()}
    assert per_wave[1906] == 2_902 and per_wave[1936] == 3_098 and per_wave[2020] == 3_143


def test_real_congregations_reproduce_published_national_totals(real_congregations, raw_totals):
    sums = real_congregations.groupby("wave")[["congregations", "adherents_or_members", "population"]].sum()
    # 1980: 231,708 congregations, adherents 49.7% of the population (Glenmary 1980)
    assert sums.loc[1980, "congregations"] == 231_708 == raw_totals[1980]["cng"]
    assert round(sums.loc[1980, "adherents_or_members"] / sums.loc[1980, "population"] * 100, 1) == 49.7
    # 2020: 355,998 congregations assigned to counties (published national total 356,642)
    assert sums.loc[2020, "congregations"] == 355_998 == raw_totals[2020]["cng"]
    # other RCMS waves as stated for the extracts
    assert sums.loc[1990, "congregations"] == 255_173 and sums.loc[2000, "congregations"] == 268_254
    assert sums.loc[2010, "congregations"] == 344_894
    # Census of Religious Bodies: members 32.1M (1906), 41.5M (1916), 54.2M (1926), 55.3M (1936)
    members = {w: round(sums.loc[w, "adherents_or_members"] / 1e6, 1) for w in (1906, 1916, 1926, 1936)}
    assert members == {1906: 32.1, 1916: 41.5, 1926: 54.2, 1936: 55.3}
    for w, t in raw_totals.items():
        assert sums.loc[w, "adherents_or_members"] == t["adh"] and sums.loc[w, "population"] == t["pop"], w


def test_real_congregations_flags(real_congregations):
    c = real_congregations
    no_fips = c[c["no_fips_code"]]
    assert sorted(set(no_fips["original_code"])) == ["G1300395", "G1302015", "G5107805"] and len(no_fips) == 8
    assert set(c.loc[c["fips_not_2020"], "fips"]) == {"46133"}
    dade = c[(c["original_code"] == "G1200250")]
    assert (dade["fips"] == "12086").all() and dade["fips_crosswalked"].all() and len(dade) == 4
    assert c.loc[c["wave"] < 1950, "congregations"].isna().all()
    assert c.loc[c["wave"] < 1950, "period_boundary_vintage_differs"].all()
    assert c.loc[c["wave"].between(1952, 2000), "wave_coverage_differs"].all()
    assert not c.loc[c["wave"] >= 2010, "wave_coverage_differs"].any()
    assert c.loc[c["population_missing_or_zero"], "adherents_per_100"].isna().all()
    assert c["adherents_exceed_population"].sum() > 100  # kept and flagged
    # the RCMS extracts are already on 2020 codes: every 1952-2010 fips is a 2020 county
    f2020 = set(c.loc[c["wave"] == 2020, "fips"])
    assert set(c.loc[c["wave"].between(1952, 2010), "fips"]) <= f2020


def test_real_income_autauga_and_counties_only(real_income):
    inc = real_income
    autauga = inc[(inc["fips"] == "01001") & (inc["year"] == 2022)].iloc[0]
    assert autauga["pcpi"] == 49_391 and autauga["area_name"] == "Autauga, AL"
    assert not inc["fips"].str.endswith("000").any() and (inc["fips"].astype(int) < 90_000).all()
    assert inc["fips"].nunique() == 3_140 and len(inc) == 3_140 * len(INCOME_YEARS)
    assert inc["bea_not_published"].sum() == 1_641
    assert inc.loc[inc["fips"] == "35013", "area_name"].iloc[0] == "Doña Ana, NM"


def test_real_income_virginia_combination_areas(real_income, real_congregations):
    inc = real_income
    va = sorted(inc.loc[inc["bea_combined_area"] & inc["fips"].str.startswith("51"), "fips"].unique())
    assert len(va) == 23 and va[0] == "51901" and va[-1] == "51958"
    report = __import__("analysis.panels", fromlist=["build_report"]).build_report("us_counties_income")
    assert report["combined_areas"]["51901"]["components"] == ["51003", "51540"]
    assert all(not v["components_also_published_same_year"] for v in report["combined_areas"].values())
    # the component lists name the same places as BEA's area names (checked against 2020 county names)
    names = real_congregations[real_congregations["wave"] == 2020].set_index("fips")["county_name"]
    for code, comps in lr.BEA_COMBINED_AREAS.items():
        bea_name = inc.loc[inc["fips"] == code, "area_name"].iloc[0]
        for comp in comps:
            assert names[comp].split()[0] in bea_name, (code, comp, names[comp], bea_name)
    # together, counties and combination areas cover every 2020 county exactly once in 2020
    pub = inc[(inc["year"] == 2020) & ~inc["bea_not_published"]]
    covered = list(pub.loc[~pub["bea_combined_area"], "fips"])
    covered += [c for s in pub["bea_component_fips"].dropna() for c in s.split(";")]
    assert len(covered) == len(set(covered)) and set(covered) == set(names.index)


def test_real_income_relative_log_and_identity(real_income):
    inc = real_income.dropna(subset=["pcpi"])
    implied = inc["personal_income_thousands"].astype(float) * 1_000 / inc["population"].astype(float)
    assert (implied - inc["pcpi"].astype(float)).abs().max() <= 0.5
    assert np.allclose(inc["log_pcpi_rel_us"], np.log(inc["pcpi"].astype(float) / inc["us_pcpi"].astype(float)))
    assert inc.groupby("year")["us_pcpi"].nunique().eq(1).all()


def test_new_manifest_entries_match_the_upstream_files():
    from analysis.manifest import load_manifest

    entries = load_manifest()
    for inputs in lr.INPUTS.values():
        for name in inputs:
            assert entries[name].url.rsplit("/", 1)[-1] == lr.UPSTREAM_FILES[name], name
