"""Schemas on small SYNTHETIC panels: valid frames pass; duplicate keys, out-of-range values,
renamed or missing columns and wrong dtypes raise a PanelValidationError that names the panel, the
column, the check and example rows."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis import panels
from analysis.schemas import (
    POP_SIZE_CLASSES,
    PanelValidationError,
    RawInputError,
    panel_schema,
    require_columns,
    validate,
)

FIPS = ["01001", "01003", "56045"]


def synthetic_waves() -> pd.DataFrame:
    rows = []
    for f in FIPS:
        for y in (1997, 2005, 2009, 2014):
            r = {"fips": f, "year": y, "state_fips": f[:2], "state_abbr": "AL" if f[:2] == "01" else "WY",
                 "county_name": f"County {f}", "census_region": "South" if f[:2] == "01" else "West",
                 "census_division": "East South Central" if f[:2] == "01" else "Mountain",
                 "pop_size_class": "10k-50k", "population": 40_000}
            for c in panels.ALL_COUNTS:
                r[c] = 2 if (c not in ("n_membership_sports", "n_membership_nec") or y == 1997) else None
            n = sum(v for k, v in r.items() if k.startswith("n_") and v is not None)
            r.update({"n_nonprofits": 100, "assn_per_1k": n / 40_000 * 1000,
                      "community_per_1k": 0.3, "civic_religious_per_10k": 1.0, "business_prof_labour_political_per_10k": 2.0,
                      "recreation_sports_per_10k": 2.0, "nonprofits_per_10k": 25.0, "turnout_pct": 55.0,
                      "census_response_pct": 70.0, "unemployment_rate": 5.0, "labour_force": 20_000,
                      "employment": 19_000, "poverty_rate": 15.0, "child_poverty_rate": 20.0,
                      "median_hh_income": 40_000.0, "log_median_hh_income": 10.6, "geo_adjusted": False})
            rows.append(r)
    df = pd.DataFrame(rows)[panels.WAVES_COLUMNS]
    for c in (*panels.ALL_COUNTS, "population", "n_nonprofits", "labour_force", "employment"):
        df[c] = df[c].astype("Int64")
    df["pop_size_class"] = df["pop_size_class"].astype(pd.CategoricalDtype(list(POP_SIZE_CLASSES), ordered=True))
    df["fips"] = df["fips"].astype(str)
    return df


def synthetic_annual() -> pd.DataFrame:
    rows = []
    for f in FIPS:
        for y in range(2014, 2023):
            r = {"fips": f, "year": y, "state_fips": f[:2], "county_name": f"County {f}", "state_name": "Alabama",
                 "census_region": "South", "population": 40_000}
            for c in panels.ANNUAL_COLUMNS:
                if c.endswith("_quality"):
                    r[c] = 1
            r.update({"associations_per_10k": 12.0, "share_employed": 0.75, "income_p20": 20_000.0,
                      "income_p50": 50_000.0, "income_p80": 100_000.0, "injury_death_rate_per_100k": 80.0,
                      "low_birth_weight_share": 0.08, "poverty_exposure_share": 0.05,
                      "violent_crime_per_100k": 300.0, "property_crime_per_100k": 2_000.0,
                      "post_2017_break": y >= 2017, "geo_adjusted": False})
            rows.append(r)
    df = pd.DataFrame(rows)[panels.ANNUAL_COLUMNS]
    for c in df.columns:
        if c.endswith("_quality") or c == "population":
            df[c] = df[c].astype("Int64")
    return df


def synthetic_sca() -> pd.DataFrame:
    a = synthetic_annual()
    a = a[a["year"] == 2018]
    df = pd.DataFrame({"fips": FIPS, "state_fips": [f[:2] for f in FIPS], "county_name": ["A", "B", "C"],
                       "state_name": ["Alabama", "Alabama", "Wyoming"], "census_region": ["South", "South", "West"],
                       "pop2018": pd.array([55_000, 200_000, 7_000], dtype="Int64"),
                       "economic_connectedness": [0.7, 0.9, 1.1], "economic_connectedness_se": [0.01, 0.01, 0.02],
                       "clustering": [0.1, 0.12, 0.2], "support_ratio": [0.99, 0.98, 1.0],
                       "volunteering_rate": [0.04, 0.06, 0.1], "civic_organizations_per_1k_users": [15.0, 18.0, 30.0],
                       "economic_connectedness_groups": [0.75, 0.9, 0.8], "high_ses_exposure": [0.8, 1.0, 0.9],
                       "friending_bias": [0.0625, 0.1, 0.1111]})
    df = df.merge(a[["fips", *panels.SCA_ANNUAL_COLUMNS]], on="fips")
    return df[panels.SCA_COLUMNS]


BUILDERS = {"us_counties_waves": synthetic_waves, "us_counties_annual": synthetic_annual,
            "us_social_capital_atlas": synthetic_sca}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_valid_synthetic_panels_pass(name):
    df = BUILDERS[name]()
    assert validate(name, df) is df


def test_duplicate_key_names_panel_columns_and_rows():
    df = synthetic_waves()
    df = pd.concat([df, df.iloc[[0]]], ignore_index=True)
    with pytest.raises(PanelValidationError) as exc:
        validate("us_counties_waves", df)
    msg = str(exc.value)
    assert "us_counties_waves" in msg and "not unique" in msg and "fips=01001 year=1997" in msg
    assert {"fips", "year"} <= set(exc.value.columns) and "multiple_fields_uniqueness" in exc.value.checks


def test_out_of_range_value_names_column_check_and_row():
    df = synthetic_waves()
    df.loc[(df["fips"] == "01003") & (df["year"] == 2009), "unemployment_rate"] = 140.0
    df.loc[(df["fips"] == "56045") & (df["year"] == 2014), "poverty_rate"] = -1.0
    with pytest.raises(PanelValidationError) as exc:
        validate("us_counties_waves", df)
    msg = str(exc.value)
    assert "column 'unemployment_rate', check in_range(0, 100)" in msg
    assert "fips=01003 year=2009 value=140.0" in msg
    assert "fips=56045 year=2014 value=-1.0" in msg
    assert exc.value.panel == "us_counties_waves" and set(exc.value.columns) == {"unemployment_rate", "poverty_rate"}


def test_examples_are_capped_at_five():
    df = synthetic_annual()
    df["share_employed"] = 1.5
    with pytest.raises(PanelValidationError) as exc:
        validate("us_counties_annual", df)
    line = next(ln for ln in str(exc.value).splitlines() if "share_employed'" in ln)
    assert "27 failing row(s)" in line and line.count("value=1.5") == 5


def test_renamed_column_is_reported_missing_and_unexpected():
    df = synthetic_annual().rename(columns={"associations_per_10k": "assoc_per_10k"})
    with pytest.raises(PanelValidationError) as exc:
        validate("us_counties_annual", df)
    msg = str(exc.value)
    assert "us_counties_annual" in msg
    assert "missing column(s) 'associations_per_10k'" in msg and "'assoc_per_10k'" in msg


def test_missing_column_and_wrong_dtype():
    df = synthetic_sca().drop(columns=["clustering"])
    df["pop2018"] = df["pop2018"].astype("float64")
    with pytest.raises(PanelValidationError) as exc:
        validate("us_social_capital_atlas", df)
    msg = str(exc.value)
    assert "'clustering'" in msg and "column 'pop2018'" in msg and "Int64" in msg


def test_cross_column_checks():
    df = synthetic_waves()
    df.loc[0, "assn_per_1k"] = 99.0  # breaks the Penn State identity
    df.loc[5, "n_membership_sports"] = 3  # a 1997-only count in 2005
    with pytest.raises(PanelValidationError) as exc:
        validate("us_counties_waves", df)
    msg = str(exc.value)
    assert "assn_per_1k_equals_counts_over_population_x1000" in msg and "fips=01001 year=1997" in msg
    assert "membership_counts_present_in_1997_only" in msg and "fips=01003 year=2005" in msg


def test_missing_share_limit():
    df = synthetic_waves()
    df.loc[:1, "unemployment_rate"] = float("nan")  # 2 of 12 rows
    with pytest.raises(PanelValidationError, match=r"unemployment_rate', check max_missing_share\(0.01\)"):
        validate("us_counties_waves", df)


def test_year_outside_panel_and_break_flag():
    df = synthetic_annual()
    df.loc[0, "year"] = 2023
    df.loc[3, "post_2017_break"] = False
    with pytest.raises(PanelValidationError) as exc:
        validate("us_counties_annual", df)
    msg = str(exc.value)
    assert "column 'year', check isin" in msg and "value=2023" in msg
    assert "post_2017_break_equals_year_ge_2017" in msg


def test_unknown_schema():
    with pytest.raises(KeyError):
        panel_schema("us_counties_monthly")


def test_require_columns_names_source_and_columns():
    df = pd.DataFrame({"a": [1]})
    with pytest.raises(RawInputError, match=r"ui_income: missing column\(s\) 'pctl_income_20', 'b'"):
        require_columns("ui_income", df, ["a", "pctl_income_20", "b"])
