"""Build, validate and cache the processed US county panels.

Three panels, each one parquet file under ``data/processed/`` (git-ignored) with a JSON sidecar:

``us_counties_waves``
    county x {1997, 2005, 2009, 2014}: Penn State NERCRD establishment counts and densities, BLS
    LAUS annual averages, Census SAIPE poverty and median household income.
``us_counties_annual``
    county x 2014-2022: Urban Institute Upward Mobility county metrics.
``us_social_capital_atlas``
    one row per county: Social Capital Atlas (Chetty et al. 2022) joined with the annual panel's
    2018 values.
``england_lads``
    English local authority district (2023 boundaries) x 1997-2023: pubs and bars, population,
    wellbeing, GDHI, claimant and employment rates, IMD, and social-infrastructure cross-sections;
    built by :mod:`analysis.england`.
``us_counties_congregations``
    county x wave 1906-2020: church members (Census of Religious Bodies 1906-1936, NHGIS, 1930
    boundaries) and congregations and adherents (RCMS 1952-2020, 2020 FIPS), every source row kept
    with its quality flags; built by :mod:`analysis.longrun`.
``us_counties_income``
    BEA county area x year 1969-2022: personal income, population, per-capita personal income
    (CAINC1), Virginia combination areas kept; built by :mod:`analysis.longrun`.

Public API: :func:`load`, :func:`build_all`, :func:`build_report`, :data:`PANELS`. Variables are
documented in ``data/codebook.yml``; geographic decisions in
``data/crosswalks/county_fips_crosswalk.csv``.

The builders are pure functions of data frames (``build_waves``, ``build_annual``, ``build_sca``,
with ``tidy_pennstate``, ``clean_laus``, ``clean_saipe``, ``tidy_ui``, ``tidy_sca`` and
``apply_fips_crosswalk`` as steps) so that tests can run them on small synthetic fixtures; the
I/O (``read_raw``, the cache) is kept apart.

Cache: a panel is rebuilt when the SHA-256 of one of its raw inputs (as pinned in the manifest;
``fetch`` refuses any other file) or the builder source (this file, ``schemas.py`` and every file
in ``data/crosswalks/``) changes; otherwise it is read from parquet. Writes go to temporary files
moved into place only after validation, so an error never leaves a half-written panel.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import england, longrun, paths
from analysis.schemas import (
    ANNUAL_YEARS,
    COUNT_COLUMNS,
    COUNT_COLUMNS_1997,
    POP_SIZE_BREAKS,
    POP_SIZE_CLASSES,
    WAVE_YEARS,
    RawInputError,
    require_columns,
    validate,
)

PANELS: tuple[str, ...] = ("us_counties_waves", "us_counties_annual", "us_social_capital_atlas", "england_lads",
                           "us_counties_congregations", "us_counties_income")
SCA_JOIN_YEAR = 2018
CACHE_FORMAT = 1
CROSSWALK_FILE = "county_fips_crosswalk.csv"
STATES_FILE = "us_states.csv"

PENNSTATE_SOURCES = {y: f"pennstate_social_capital_{y}" for y in WAVE_YEARS}
LAUS_SOURCE = "bls_laus_county"
SAIPE_SOURCE = "census_saipe_county"
UI_POPULATION_SOURCE = "ui_county_populations"
SCA_SOURCE = "sca_county"

# Upstream column -> panel column, explicitly per wave (names differ by wave). `sk` (the
# within-wave principal component) is deliberately not read: it is not comparable across waves.
PENNSTATE_COLUMNS: dict[int, dict[str, str]] = {
    1997: {
        "fips": "fips", "areaname": "county_name_src", "relig97": "n_religious", "civic97": "n_civic",
        "bus97": "n_business", "pol97": "n_political", "prof97": "n_professional", "labor97": "n_labour",
        "bowl97": "n_bowling", "fitnes97": "n_fitness", "golf97": "n_golf", "sport97": "n_sports_clubs",
        "memspt97": "n_membership_sports", "memnec97": "n_membership_nec", "pop97": "population",
        "assn97": "assn_per_1k", "nccs97": "n_nonprofits", "pvote96": "turnout_share",
        "respn00": "census_response_share",
    },
    2005: {
        "fips": "fips", "areaname": "county_name_src", "relig05": "n_religious", "civic05": "n_civic",
        "bus05": "n_business", "pol05": "n_political", "prof05": "n_professional", "labor05": "n_labour",
        "bowl05": "n_bowling", "fitns05": "n_fitness", "golf05": "n_golf", "sport05": "n_sports_clubs",
        "pop05": "population", "assn05": "assn_per_1k", "nccs05": "n_nonprofits",
        "pvote04": "turnout_share", "respn05": "census_response_share",
    },
    2009: {
        "fips": "fips", "areaname": "county_name_src", "relig09": "n_religious", "civic09": "n_civic",
        "bus09": "n_business", "pol09": "n_political", "prof09": "n_professional", "labor09": "n_labour",
        "bowl09": "n_bowling", "fitns09": "n_fitness", "golf09": "n_golf", "sport09": "n_sports_clubs",
        "pop09": "population", "assn09": "assn_per_1k", "nccs09": "n_nonprofits",
        "pvote08": "turnout_share", "respn10": "census_response_share",
    },
    2014: {
        "FIPS": "fips", "County_Name": "county_name_src", "Religious2014": "n_religious",
        "Civic2014": "n_civic", "Business2014": "n_business", "Political2014": "n_political",
        "Professional2014": "n_professional", "Labor2014": "n_labour", "Bowling2014": "n_bowling",
        "Recreational2014": "n_fitness", "Golf2014": "n_golf", "Sports2014": "n_sports_clubs",
        "pop2014": "population", "assn2014": "assn_per_1k", "nccs2014": "n_nonprofits",
        "pvote2012": "turnout_share", "respn2010": "census_response_share",
    },
}
ALL_COUNTS = COUNT_COLUMNS + COUNT_COLUMNS_1997
# Community organisations: every Penn State class except commercial recreation (golf courses,
# fitness centres, bowling centres and sports teams, which include commercial and professional
# ones). Per 1,000 people, the unit of assn_per_1k, so the two can stand side by side.
COMMUNITY_COUNTS: tuple[str, ...] = ("n_religious", "n_civic", "n_business", "n_professional", "n_labour",
                                     "n_political")
# Density groups (numerators); 1997 membership sports clubs (SIC 7997) join recreation, whose NAICS
# successors (713910, 713940) hold them from 2005 on. n_membership_nec is in no group.
DENSITY_GROUPS: dict[str, tuple[str, ...]] = {
    "civic_religious_per_10k": ("n_civic", "n_religious"),
    "business_prof_labour_political_per_10k": ("n_business", "n_professional", "n_labour", "n_political"),
    "recreation_sports_per_10k": ("n_bowling", "n_fitness", "n_golf", "n_sports_clubs", "n_membership_sports"),
}

# State-waves whose published turnout is implausible as a whole and is set missing: in the 2014
# wave (2012 election) Wyoming's county turnouts average 101% of the voting-age population (64-66%
# in the other waves; 12 of 23 counties above 100%), a denominator problem in the source.
TURNOUT_SET_MISSING: dict[tuple[str, int], str] = {("56", 2014): "Wyoming 2014 wave: turnout ~100% in every county"}

UI_SPECS: dict[str, dict[str, str]] = {
    "ui_membership_associations": {
        "count_membership_associations_per_10k": "associations_per_10k",
        "count_membership_associations_per_10k_quality": "associations_quality",
    },
    "ui_employment": {"share_employed": "share_employed", "share_employed_quality": "share_employed_quality"},
    "ui_income": {
        "pctl_income_20": "income_p20", "pctl_income_50": "income_p50", "pctl_income_80": "income_p80",
        "pctl_income_20_quality": "_q20", "pctl_income_50_quality": "_q50", "pctl_income_80_quality": "_q80",
    },
    "ui_injury_deaths": {
        "rate_injury_death": "injury_death_rate_per_100k", "rate_injury_death_quality": "injury_death_quality",
    },
    "ui_low_birth_weight": {
        "rate_low_birth_weight": "low_birth_weight_share",
        "rate_low_birth_weight_quality": "low_birth_weight_quality",
    },
    "ui_poverty_exposure": {
        "share_poverty_exposure": "poverty_exposure_share",
        "share_poverty_exposure_quality": "poverty_exposure_quality",
    },
    "ui_crime_2015_2017": {
        "violent_crime_rate": "violent_crime_per_100k", "property_crime_rate": "property_crime_per_100k",
        "crime_rate_quality": "crime_quality",
    },
    "ui_crime_2021_2023": {
        "rate_crime_violent": "violent_crime_per_100k", "rate_crime_property": "property_crime_per_100k",
        "rate_crime_violent_quality": "_qv", "rate_crime_property_quality": "_qp",
    },
}
# Several upstream quality flags collapse into one column: the worst (highest) code wins.
UI_QUALITY_MERGE = {"income_quality": ("_q20", "_q50", "_q80"), "crime_quality": ("_qv", "_qp")}
UI_SOURCES: tuple[str, ...] = (UI_POPULATION_SOURCE, *UI_SPECS)

ANNUAL_COLUMNS = [
    "fips", "year", "state_fips", "county_name", "state_name", "census_region", "population",
    "associations_per_10k", "associations_quality", "share_employed", "share_employed_quality",
    "income_p20", "income_p50", "income_p80", "income_quality",
    "injury_death_rate_per_100k", "injury_death_quality", "low_birth_weight_share", "low_birth_weight_quality",
    "poverty_exposure_share", "poverty_exposure_quality",
    "violent_crime_per_100k", "property_crime_per_100k", "crime_quality",
    "post_2017_break", "geo_adjusted",
]
WAVES_COLUMNS = [
    "fips", "year", "state_fips", "state_abbr", "county_name", "census_region", "census_division",
    "pop_size_class", "population", *ALL_COUNTS, "n_nonprofits",
    "assn_per_1k", "community_per_1k", *DENSITY_GROUPS, "nonprofits_per_10k", "turnout_pct", "census_response_pct",
    "unemployment_rate", "labour_force", "employment", "poverty_rate", "child_poverty_rate",
    "median_hh_income", "log_median_hh_income", "geo_adjusted",
]
SCA_COLUMNS_RAW = {
    "ec_county": "economic_connectedness", "ec_se_county": "economic_connectedness_se",
    "clustering_county": "clustering", "support_ratio_county": "support_ratio",
    "volunteering_rate_county": "volunteering_rate",
    "civic_organizations_county": "civic_organizations_per_1k_users",
    # Chetty et al. (2022b): connectedness in groups = exposure x (1 - friending bias)
    "ec_grp_mem_county": "economic_connectedness_groups", "exposure_grp_mem_county": "high_ses_exposure",
    "bias_grp_mem_county": "friending_bias",
}
SCA_ANNUAL_COLUMNS = [
    "associations_per_10k", "associations_quality", "share_employed", "share_employed_quality",
    "income_p20", "income_p50", "income_p80", "income_quality",
    "injury_death_rate_per_100k", "injury_death_quality", "low_birth_weight_share", "low_birth_weight_quality",
    "poverty_exposure_share", "poverty_exposure_quality",
]
SCA_COLUMNS = [
    "fips", "state_fips", "county_name", "state_name", "census_region", "pop2018",
    *SCA_COLUMNS_RAW.values(), *SCA_ANNUAL_COLUMNS,
]

INPUTS: dict[str, tuple[str, ...]] = {
    "us_counties_waves": (*PENNSTATE_SOURCES.values(), LAUS_SOURCE, SAIPE_SOURCE),
    "us_counties_annual": UI_SOURCES,
    "us_social_capital_atlas": (SCA_SOURCE, *UI_SOURCES),
    # England: builders in analysis/england.py (LAD x year on 2023 boundaries)
    "england_lads": england.INPUTS,
    # long-run US county panels: builders in analysis/longrun.py
    "us_counties_congregations": longrun.INPUTS["us_counties_congregations"],
    "us_counties_income": longrun.INPUTS["us_counties_income"],
}


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _pad_fips(values: pd.Series, width: int, source: str, column: str) -> pd.Series:
    """Zero-padded string codes from integer-like or string values (``1001`` -> ``"01001"``)."""
    if pd.api.types.is_numeric_dtype(values):
        num = pd.to_numeric(values, errors="coerce")
        bad = num.isna() | (num % 1 != 0)
        if bad.any():
            raise RawInputError(source, f"column {column!r} has {int(bad.sum())} non-integer code(s)")
        out = num.astype("int64").astype(str).str.zfill(width)
    else:
        out = values.astype(str).str.strip().str.zfill(width)
    bad = ~out.str.fullmatch(rf"\d{{{width}}}")
    if bad.any():
        raise RawInputError(source, f"column {column!r} has malformed code(s), e.g. {out[bad].iloc[0]!r}")
    return out.astype(str)


def _as_int(values: pd.Series, source: str, column: str) -> pd.Series:
    """Nullable integer column; a non-integer value is a raw-input error, not silently rounded."""
    num = pd.to_numeric(values, errors="coerce")
    frac = num.notna() & (num % 1 != 0)
    if frac.any():
        raise RawInputError(source, f"column {column!r} has non-integer value(s), e.g. {num[frac].iloc[0]}")
    return num.astype("Int64")


def load_crosswalk(path: Path | None = None) -> pd.DataFrame:
    """The hand-made FIPS crosswalk (``data/crosswalks/county_fips_crosswalk.csv``).

    Columns: ``fips_from`` (5 digits, or 2 for a whole state), ``fips_to`` (empty for drops),
    ``name`` (name of the target unit), ``action`` (recode | merge | drop | flag),
    ``effective_year``, ``scope`` (all | waves | annual) and ``reason``.
    """
    path = path or paths.CROSSWALK_DIR / CROSSWALK_FILE
    cw = pd.read_csv(path, dtype=str, keep_default_na=False)
    require_columns(str(path.name), cw,
                    ["fips_from", "fips_to", "name", "action", "effective_year", "scope", "reason"])
    bad = ~cw["action"].isin(["recode", "merge", "drop", "flag"])
    if bad.any():
        raise ValueError(f"{path}: unknown action(s) {sorted(cw.loc[bad, 'action'])}")
    if (~cw["scope"].isin(["all", "waves", "annual"])).any():
        raise ValueError(f"{path}: scope must be all, waves or annual")
    cw["effective_year"] = pd.to_numeric(cw["effective_year"].replace("", np.nan)).astype("Int64")
    return cw


def load_states(path: Path | None = None) -> pd.DataFrame:
    """State FIPS -> abbreviation, name, Census region and division (hand table, 50 states + DC)."""
    path = path or paths.CROSSWALK_DIR / STATES_FILE
    return pd.read_csv(path, dtype=str, keep_default_na=False)


# --------------------------------------------------------------------------------------------
# Crosswalk
# --------------------------------------------------------------------------------------------

RULES = ("sum", "wmean", "nan", "max", "first")


def apply_fips_crosswalk(
    df: pd.DataFrame,
    crosswalk: pd.DataFrame,
    *,
    scope: str,
    rules: Mapping[str, str],
    source: str,
    weight: str | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Map ``df`` (keyed by ``fips``, ``year``) onto the panel's consistent set of counties.

    Rows whose code (or state) the crosswalk drops are removed; ``recode``/``merge`` codes are
    mapped to ``fips_to``; rows that then share a (fips, year) are aggregated column by column with
    ``rules``: ``sum`` (missing if any part is missing), ``wmean`` (mean weighted by ``weight``,
    missing if any part or weight is missing), ``nan`` (set missing: e.g. medians, which do not
    aggregate, or rates the caller recomputes), ``max`` (e.g. quality flags: the worst part) or
    ``first``. Every non-key column must have a rule. Adds ``n_source_codes`` (1 unless merged).

    Returns the mapped frame (sorted by fips, year) and a log: rows in/out, rows recoded per code
    pair (``"51515->51019": 3``), merged units with their years (``"51019 <- 51019 + 51515":
    [1997, ...]``), dropped rows per crosswalk entry (``"02 Alaska": 29``), and the crosswalk's
    reason for each recode and drop.
    """
    keys = ["fips", "year"]
    unknown = [c for c in df.columns if c not in keys and c not in rules and c != weight]
    if unknown:
        raise ValueError(f"{source}: no crosswalk aggregation rule for column(s) {unknown}")
    bad_rules = {c: r for c, r in rules.items() if r not in RULES}
    if bad_rules:
        raise ValueError(f"{source}: unknown aggregation rule(s) {bad_rules}")
    if any(r == "wmean" for r in rules.values()) and weight is None:
        raise ValueError(f"{source}: a 'wmean' rule needs a weight column")
    dup = df.duplicated(keys, keep=False)
    if dup.any():  # duplicates in the source would otherwise be silently "merged"
        raise RawInputError(source, f"duplicate (fips, year) rows, e.g. {_row_labels(df[dup])[:3]}")

    cw = crosswalk[crosswalk["scope"].isin(["all", scope])]
    log: dict = {"source": source, "rows_in": int(len(df)), "recoded": {}, "merged": {}, "dropped": {}}

    drops = cw[cw["action"] == "drop"]
    code_drop = drops[drops["fips_from"].str.len() == 5]
    state_drop = drops[drops["fips_from"].str.len() == 2]
    drop_label = {r.fips_from: f"{r.fips_from} {r.name}" for r in drops.itertuples()}
    by_code = df["fips"].where(df["fips"].isin(code_drop["fips_from"]))
    by_state = df["fips"].str[:2].where(df["fips"].str[:2].isin(state_drop["fips_from"]))
    dropped_key = by_code.fillna(by_state)
    reason = dict(zip(cw["fips_from"], cw["reason"], strict=True))
    log["reasons"] = {}
    for key, n in dropped_key.dropna().value_counts().sort_index().items():
        log["dropped"][drop_label[key]] = int(n)
        log["reasons"][drop_label[key]] = reason[key]
    df = df[dropped_key.isna()].copy()

    mapping = cw[cw["action"].isin(["recode", "merge"])].set_index("fips_from")["fips_to"]
    df["_fips_src"] = df["fips"]
    new = df["fips"].map(mapping)
    for (a, b), n in df.loc[new.notna()].assign(_to=new).groupby(["_fips_src", "_to"]).size().items():
        log["recoded"][f"{a}->{b}"] = int(n)
        log["reasons"][f"{a}->{b}"] = reason[a]
    df["fips"] = new.fillna(df["fips"]).astype(str)

    size = df.groupby(keys)["fips"].transform("size")
    singles = df[size == 1].copy()
    singles["n_source_codes"] = 1
    multi = df[size > 1]
    merged_rows = []
    for (f, y), g in multi.groupby(keys, sort=True):
        row: dict = {"fips": f, "year": y, "n_source_codes": len(g)}
        w = g[weight].astype("float64") if weight else None
        for col, rule in rules.items():
            v = g[col]
            complete = bool(v.notna().all())
            if rule == "sum":
                row[col] = v.sum() if complete else pd.NA
            elif rule == "max":
                row[col] = v.max() if complete else pd.NA
            elif rule == "first":
                row[col] = v.iloc[0]
            elif rule == "nan":
                row[col] = pd.NA
            else:  # wmean
                ok = complete and bool(w.notna().all()) and float(w.sum()) > 0
                row[col] = float((v.astype("float64") * w).sum() / w.sum()) if ok else np.nan
        merged_rows.append(row)
        label = f"{f} <- {' + '.join(sorted(map(str, g['_fips_src'])))}"
        log["merged"].setdefault(label, []).append(int(y))
    out_cols = [*keys, *rules, "n_source_codes"]
    out = singles[out_cols]
    if merged_rows:
        merged = pd.DataFrame(merged_rows, columns=out_cols)
        for col in out_cols:
            dtype = out[col].dtype
            if pd.api.types.is_float_dtype(dtype):
                merged[col] = pd.to_numeric(merged[col], errors="coerce").astype(dtype)
            else:
                merged[col] = merged[col].astype(dtype)
        out = pd.concat([out, merged], ignore_index=True)
    out = out.sort_values(keys, kind="stable").reset_index(drop=True)
    log["rows_out"] = int(len(out))
    return out, log


def boundary_flags(df: pd.DataFrame, crosswalk: pd.DataFrame, scope: str) -> pd.Series:
    """True for rows the crosswalk ``flag``s: ``fips_to`` in a year before ``effective_year``."""
    cw = crosswalk[crosswalk["scope"].isin(["all", scope]) & (crosswalk["action"] == "flag")]
    flag = pd.Series(False, index=df.index)
    for r in cw.itertuples():
        flag |= (df["fips"] == r.fips_to) & (df["year"] < int(r.effective_year))
    return flag


def _crosswalk_names(crosswalk: pd.DataFrame, scope: str) -> dict[str, str]:
    cw = crosswalk[crosswalk["scope"].isin(["all", scope]) & crosswalk["action"].isin(["recode", "merge"])]
    return dict(zip(cw["fips_to"], cw["name"], strict=True))


def _add_states(df: pd.DataFrame, states: pd.DataFrame, cols: Iterable[str]) -> pd.DataFrame:
    df = df.copy()
    df["state_fips"] = df["fips"].str[:2]
    st = states.set_index("state_fips")
    missing = sorted(set(df["state_fips"]) - set(st.index))
    if missing:
        raise ValueError(f"state FIPS {missing} not in {STATES_FILE}")
    for c in cols:
        df[c] = df["state_fips"].map(st[c]).astype(str)
    return df


# --------------------------------------------------------------------------------------------
# Penn State, LAUS, SAIPE  ->  us_counties_waves
# --------------------------------------------------------------------------------------------


def tidy_pennstate(df: pd.DataFrame, year: int, source: str | None = None) -> pd.DataFrame:
    """One Penn State wave in panel names: fips, year, counts, population, assn_per_1k (as published),
    n_nonprofits, turnout_pct and census_response_pct (published shares x 100; a published
    response rate of 0, Duchesne UT in the 2010 census, is treated as missing).
    """
    source = source or PENNSTATE_SOURCES[year]
    spec = PENNSTATE_COLUMNS[year]
    require_columns(source, df, spec, what=f"expected in the {year} wave")
    out = df[list(spec)].rename(columns=spec)
    out["fips"] = _pad_fips(out["fips"], 5, source, "fips")
    out.insert(1, "year", np.int64(year))
    for c in ALL_COUNTS:
        if c in out:
            out[c] = _as_int(out[c], source, c)
        else:
            out[c] = pd.array([pd.NA] * len(out), dtype="Int64")
    for c in ("population", "n_nonprofits"):
        out[c] = _as_int(out[c], source, c)
    out["assn_per_1k"] = pd.to_numeric(out["assn_per_1k"], errors="coerce").astype("float64")
    out["turnout_pct"] = pd.to_numeric(out.pop("turnout_share"), errors="coerce") * 100
    resp = pd.to_numeric(out.pop("census_response_share"), errors="coerce") * 100
    out["census_response_pct"] = resp.where(resp > 0)
    out["county_name_src"] = out["county_name_src"].astype(str)
    if out["fips"].duplicated().any():
        raise RawInputError(source, f"duplicate fips {sorted(out.loc[out['fips'].duplicated(), 'fips'])[:5]}")
    cols = ["fips", "year", *ALL_COUNTS, "population", "n_nonprofits", "assn_per_1k", "turnout_pct",
            "census_response_pct", "county_name_src"]
    return out[cols].reset_index(drop=True)


LAUS_COLUMNS = {"cfips": "fips", "year": "year", "lf": "labour_force", "emp": "employment",
                "unemp": "unemployed", "ur": "unemployment_rate"}


def clean_laus(df: pd.DataFrame, years: Iterable[int] = WAVE_YEARS, source: str = LAUS_SOURCE) -> pd.DataFrame:
    """LAUS county annual averages for ``years``; ``-1`` (no estimate: Louisiana parishes after the
    2005 hurricanes) becomes missing in every column.
    """
    require_columns(source, df, LAUS_COLUMNS)
    out = df[list(LAUS_COLUMNS)].rename(columns=LAUS_COLUMNS)
    out["year"] = pd.to_numeric(out["year"]).astype("int64")
    out = out[out["year"].isin(list(years))].copy()
    out["fips"] = _pad_fips(out["fips"], 5, source, "cfips")
    for c in ("labour_force", "employment", "unemployed"):
        v = _as_int(out[c], source, c)
        out[c] = v.mask(v < 0)
    ur = pd.to_numeric(out["unemployment_rate"], errors="coerce").astype("float64")
    out["unemployment_rate"] = ur.mask(ur < 0)
    return out.sort_values(["fips", "year"]).reset_index(drop=True)


SAIPE_COLUMNS = {"cfips": "fips", "year": "year", "pov_all_n": "n_poor", "pov_all_r": "poverty_rate",
                 "pov_017_n": "n_poor_children", "pov_017_r": "child_poverty_rate", "medhhinc": "median_hh_income"}


def clean_saipe(df: pd.DataFrame, years: Iterable[int] = WAVE_YEARS, source: str = SAIPE_SOURCE) -> pd.DataFrame:
    """SAIPE for ``years``: poverty counts and rates (all ages, under 18), median household income,
    and the implied poverty universes (count / rate x 100) so that merged units get exact rates.
    """
    require_columns(source, df, SAIPE_COLUMNS)
    out = df[list(SAIPE_COLUMNS)].rename(columns=SAIPE_COLUMNS)
    out["year"] = pd.to_numeric(out["year"]).astype("int64")
    out = out[out["year"].isin(list(years))].copy()
    out["fips"] = _pad_fips(out["fips"], 5, source, "cfips")
    for c in ("n_poor", "poverty_rate", "n_poor_children", "child_poverty_rate", "median_hh_income"):
        out[c] = pd.to_numeric(out[c], errors="coerce").astype("float64")
    # Stata float32 storage: 14.3 arrives as 14.300000190734863
    for c in ("poverty_rate", "child_poverty_rate"):
        out[c] = out[c].round(1)
    out["median_hh_income"] = out["median_hh_income"].mask(out["median_hh_income"] <= 0)
    out["poverty_universe"] = (out["n_poor"] / (out["poverty_rate"] / 100)).where(out["poverty_rate"] > 0)
    out["child_poverty_universe"] = (out["n_poor_children"] / (out["child_poverty_rate"] / 100)).where(
        out["child_poverty_rate"] > 0)
    return out.sort_values(["fips", "year"]).reset_index(drop=True)


def pop_size_class(population: pd.Series) -> pd.Series:
    """Ordered size class ("<10k", "10k-50k", "50k-250k", "250k+"); lower bounds inclusive."""
    return pd.cut(population.astype("float64"), bins=list(POP_SIZE_BREAKS), labels=list(POP_SIZE_CLASSES),
                  right=False).astype(pd.CategoricalDtype(list(POP_SIZE_CLASSES), ordered=True))


def _row_labels(df: pd.DataFrame) -> list[str]:
    """``["51019 1997", ...]`` from a frame of fips, year."""
    return [f"{f} {y}" for f, y in df[["fips", "year"]].itertuples(index=False)]


def _counts_by_year(df: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in df.groupby("year").size().items()}


#: Population above which "no establishment of any type" is read as a gap in the source file.
SOURCE_GAP_MIN_POPULATION = 100_000


def build_waves(frames: Mapping[str, pd.DataFrame], crosswalk: pd.DataFrame, states: pd.DataFrame
                ) -> tuple[pd.DataFrame, dict]:
    """``us_counties_waves`` from raw frames keyed by manifest name. Returns (panel, report)."""
    report: dict = {"panel": "us_counties_waves", "sources": {}}
    ps_parts, ps_logs = [], {}
    ps_rules = {c: "sum" for c in (*ALL_COUNTS, "population", "n_nonprofits")}
    ps_rules.update({"assn_per_1k": "nan", "turnout_pct": "wmean", "census_response_pct": "wmean",
                     "county_name_src": "first"})
    identity = {}
    for year, name in PENNSTATE_SOURCES.items():
        tidy = tidy_pennstate(frames[name], year, name)
        implied = tidy[list(ALL_COUNTS)].astype("float64").sum(axis=1) / tidy["population"] * 1_000
        identity[str(year)] = float((implied - tidy["assn_per_1k"]).abs().max())
        mapped, log = apply_fips_crosswalk(tidy.assign(_w=tidy["population"].astype("float64")), crosswalk,
                                           scope="waves", rules=ps_rules, source=name, weight="_w")
        ps_parts.append(mapped)
        ps_logs[name] = log
    ps = pd.concat(ps_parts, ignore_index=True)
    merged_ps = ps["n_source_codes"] > 1
    counts = ps[list(ALL_COUNTS)].astype("float64").sum(axis=1)
    recomputed = counts / ps["population"].astype("float64") * 1_000
    ps["assn_per_1k"] = ps["assn_per_1k"].where(~merged_ps, recomputed)
    report["assn_identity_max_abs_diff"] = identity
    turnout_missing = {}
    for (state, year), why in TURNOUT_SET_MISSING.items():
        m = (ps["fips"].str[:2] == state) & (ps["year"] == year)
        ps.loc[m, "turnout_pct"] = np.nan
        turnout_missing[why] = int(m.sum())
    report["turnout_set_missing"] = turnout_missing

    laus = clean_laus(frames[LAUS_SOURCE])
    laus_rules = {"labour_force": "sum", "employment": "sum", "unemployed": "sum", "unemployment_rate": "nan"}
    laus, laus_log = apply_fips_crosswalk(laus, crosswalk, scope="waves", rules=laus_rules, source=LAUS_SOURCE)
    m = laus["n_source_codes"] > 1
    laus.loc[m, "unemployment_rate"] = (laus.loc[m, "unemployed"] / laus.loc[m, "labour_force"] * 100).round(1)

    saipe = clean_saipe(frames[SAIPE_SOURCE])
    saipe_names = frames[SAIPE_SOURCE][["cfips", "year", "cntyname"]].copy()
    saipe_rules = {"n_poor": "sum", "poverty_rate": "nan", "n_poor_children": "sum", "child_poverty_rate": "nan",
                   "median_hh_income": "nan", "poverty_universe": "sum", "child_poverty_universe": "sum"}
    saipe, saipe_log = apply_fips_crosswalk(saipe, crosswalk, scope="waves", rules=saipe_rules, source=SAIPE_SOURCE)
    m = saipe["n_source_codes"] > 1
    saipe.loc[m, "poverty_rate"] = saipe.loc[m, "n_poor"] / saipe.loc[m, "poverty_universe"] * 100
    saipe.loc[m, "child_poverty_rate"] = (saipe.loc[m, "n_poor_children"]
                                          / saipe.loc[m, "child_poverty_universe"] * 100)

    # Join the outcomes onto the Penn State county set
    keys = ["fips", "year"]
    panel = ps.rename(columns={"n_source_codes": "_n_ps"})
    laus_keep = laus[[*keys, "unemployment_rate", "labour_force", "employment", "n_source_codes"]]
    saipe_keep = saipe[[*keys, "poverty_rate", "child_poverty_rate", "median_hh_income", "n_source_codes"]]
    panel = panel.merge(laus_keep.rename(columns={"n_source_codes": "_n_laus"}), on=keys, how="left",
                        validate="one_to_one", indicator="_laus")
    panel = panel.merge(saipe_keep.rename(columns={"n_source_codes": "_n_saipe"}), on=keys, how="left",
                        validate="one_to_one", indicator="_saipe")

    def join_report(src: pd.DataFrame, indicator: str) -> dict:
        matched = panel[panel[indicator] == "both"]
        unmatched_panel = panel[panel[indicator] == "left_only"]
        src_keys = set(map(tuple, src[keys].itertuples(index=False)))
        panel_keys = set(map(tuple, panel[keys].itertuples(index=False)))
        src_only = sorted(k for k in src_keys - panel_keys)
        return {
            "matched_by_year": _counts_by_year(matched),
            "panel_rows_without_match": _row_labels(unmatched_panel),
            "source_rows_outside_panel": len(src_only),
            "source_codes_outside_panel": sorted({f for f, _ in src_only}),
        }

    report["join"] = {LAUS_SOURCE: join_report(laus, "_laus"), SAIPE_SOURCE: join_report(saipe, "_saipe")}

    # Geography, names, size class
    panel = _add_states(panel, states, ["state_abbr", "census_region", "census_division"])
    names = _crosswalk_names(crosswalk, "waves")
    sn = saipe_names.assign(fips=_pad_fips(saipe_names["cfips"], 5, SAIPE_SOURCE, "cfips"),
                            year=pd.to_numeric(saipe_names["year"]).astype("int64"))
    sn = sn.sort_values("year").drop_duplicates("fips", keep="last").set_index("fips")["cntyname"]
    ps_latest = (panel.sort_values("year").drop_duplicates("fips", keep="last").set_index("fips")["county_name_src"]
                 .str.replace(r",\s*[A-Z]{2}(,\s*[A-Z]{2})?$", "", regex=True))
    name = panel["fips"].map(names)
    name = name.fillna(panel["fips"].map(sn)).fillna(panel["fips"].map(ps_latest))
    panel["county_name"] = name.astype(str).str.strip()
    base_pop = panel.sort_values("year").drop_duplicates("fips", keep="first").set_index("fips")["population"]
    panel["pop_size_class"] = pop_size_class(panel["fips"].map(base_pop))

    # Densities (per 10,000 people); nonprofits: NCCS count over population
    pop = panel["population"].astype("float64")
    for col, parts in DENSITY_GROUPS.items():
        panel[col] = panel[list(parts)].astype("float64").fillna(0).sum(axis=1) / pop * 10_000
    panel["community_per_1k"] = panel[list(COMMUNITY_COUNTS)].astype("float64").fillna(0).sum(axis=1) / pop * 1_000
    panel["nonprofits_per_10k"] = panel["n_nonprofits"].astype("float64") / pop * 10_000
    panel["log_median_hh_income"] = np.log(panel["median_hh_income"])
    # A county of SOURCE_GAP_MIN_POPULATION+ people with no establishment of any type is a hole in
    # the source coded as zero (the District of Columbia in the 1997 file), not an absence of
    # organisations: its counts and densities are set missing, never read as zero.
    gap = panel[list(ALL_COUNTS)].astype("float64").fillna(0).eq(0).all(axis=1) & (pop >= SOURCE_GAP_MIN_POPULATION)
    panel.loc[gap, [*ALL_COUNTS, "assn_per_1k", "community_per_1k", *DENSITY_GROUPS]] = np.nan
    report["source_gaps_set_missing"] = _row_labels(panel[gap])
    merged_any = (panel["_n_ps"] > 1) | (panel["_n_laus"].fillna(1) > 1) | (panel["_n_saipe"].fillna(1) > 1)
    flagged = boundary_flags(panel, crosswalk, "waves")
    panel["geo_adjusted"] = (merged_any | flagged).astype(bool)
    panel = panel[WAVES_COLUMNS].sort_values(keys, kind="stable").reset_index(drop=True)

    # Report
    per_unit = panel.groupby("fips").size()
    report["sources"] = {
        **{name: {"rows_raw": log["rows_in"], "rows_after_crosswalk": log["rows_out"], "dropped": log["dropped"],
                  "recoded": log["recoded"], "merged": log["merged"]} for name, log in ps_logs.items()},
        LAUS_SOURCE: {"rows_in_wave_years": laus_log["rows_in"], "rows_after_crosswalk": laus_log["rows_out"],
                      "dropped": laus_log["dropped"], "recoded": laus_log["recoded"], "merged": laus_log["merged"]},
        SAIPE_SOURCE: {"rows_in_wave_years": saipe_log["rows_in"], "rows_after_crosswalk": saipe_log["rows_out"],
                       "dropped": saipe_log["dropped"], "recoded": saipe_log["recoded"],
                       "merged": saipe_log["merged"]},
    }
    report["crosswalk_reasons"] = {k: v for log in (*ps_logs.values(), laus_log, saipe_log)
                                   for k, v in sorted(log["reasons"].items())}
    flags = crosswalk[crosswalk["scope"].isin(["all", "waves"]) & (crosswalk["action"] == "flag")]
    report["crosswalk_reasons"].update({f"{r.fips_to} flag": r.reason for r in flags.itertuples()})
    report["counties_per_wave_before_crosswalk"] = {str(y): ps_logs[n]["rows_in"]
                                                    for y, n in PENNSTATE_SOURCES.items()}
    report["counties_per_wave_after_crosswalk"] = _counts_by_year(panel)
    report["n_counties"] = int(panel["fips"].nunique())
    report["n_rows"] = int(len(panel))
    report["balanced"] = bool((per_unit == len(WAVE_YEARS)).all())
    report["n_rows_merged"] = int(merged_any.sum())
    report["n_rows_boundary_flagged"] = int(flagged.sum())
    report["geo_adjusted_rows"] = _row_labels(panel.loc[panel["geo_adjusted"], keys])
    report["missing"] = {c: int(n) for c, n in panel.isna().sum().items() if n and c not in COUNT_COLUMNS_1997}
    report["missing_by_year"] = {c: _counts_by_year(panel[panel[c].isna()])
                                 for c, n in report["missing"].items()}
    report["turnout_over_100_rows"] = int((panel["turnout_pct"] > 100).sum())
    first_wave = panel[panel["year"] == WAVE_YEARS[0]]
    report["pop_size_class_counts"] = {str(k): int(v) for k, v in
                                       first_wave["pop_size_class"].value_counts(sort=False).items()}
    return panel, report


# --------------------------------------------------------------------------------------------
# Urban Institute  ->  us_counties_annual
# --------------------------------------------------------------------------------------------


def _ui_keys(df: pd.DataFrame, source: str) -> pd.DataFrame:
    require_columns(source, df, ["year", "state", "county"])
    out = pd.DataFrame({
        "fips": _pad_fips(df["state"], 2, source, "state") + _pad_fips(df["county"], 3, source, "county"),
        "year": pd.to_numeric(df["year"], errors="raise").astype("int64"),
    }, index=df.index)
    return out


def tidy_ui(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """One Urban Institute metric file in panel names (all years kept: the builder filters)."""
    spec = UI_SPECS[source]
    require_columns(source, df, spec)
    out = _ui_keys(df, source)
    for raw, new in spec.items():
        v = pd.to_numeric(df[raw], errors="coerce")
        out[new] = _as_int(v, source, raw) if "quality" in raw else v.astype("float64")
    for merged, parts in UI_QUALITY_MERGE.items():
        if all(p in out for p in parts):
            out[merged] = out[list(parts)].max(axis=1, skipna=False).astype("Int64")
            out = out.drop(columns=list(parts))
    if out.duplicated(["fips", "year"]).any():
        raise RawInputError(source, "duplicate (state, county, year) rows")
    return out.reset_index(drop=True)


def tidy_ui_populations(df: pd.DataFrame, source: str = UI_POPULATION_SOURCE) -> pd.DataFrame:
    """County populations (the annual panel's denominators and its set of counties) and names."""
    require_columns(source, df, ["population", "county_name"])
    out = _ui_keys(df, source)
    out["population"] = _as_int(df["population"], source, "population")
    out["county_name"] = df["county_name"].astype("string").str.strip().astype(object)
    if out.duplicated(["fips", "year"]).any():
        raise RawInputError(source, "duplicate (state, county, year) rows")
    return out.reset_index(drop=True)


def _quality_disagreements(df: pd.DataFrame, source: str) -> int:
    spec = UI_SPECS[source]
    for parts in UI_QUALITY_MERGE.values():
        raws = [r for r, n in spec.items() if n in parts]
        if raws:
            q = df[raws].apply(pd.to_numeric, errors="coerce")
            return int((q.nunique(axis=1, dropna=False) > 1).sum())
    return 0


def build_annual(frames: Mapping[str, pd.DataFrame], crosswalk: pd.DataFrame, states: pd.DataFrame
                 ) -> tuple[pd.DataFrame, dict]:
    """``us_counties_annual`` from raw frames keyed by manifest name. Returns (panel, report)."""
    keys = ["fips", "year"]
    years = list(ANNUAL_YEARS)
    report: dict = {"panel": "us_counties_annual", "sources": {}}

    pop_raw = tidy_ui_populations(frames[UI_POPULATION_SOURCE])
    pop_in = pop_raw[pop_raw["year"].isin(years)]
    pop, pop_log = apply_fips_crosswalk(pop_in, crosswalk, scope="annual",
                                        rules={"population": "sum", "county_name": "first"},
                                        source=UI_POPULATION_SOURCE)
    logs = [pop_log]
    report["sources"][UI_POPULATION_SOURCE] = {
        "years_in_file": sorted(map(int, pop_raw["year"].unique())),
        "rows_outside_2014_2022": int((~pop_raw["year"].isin(years)).sum()),
        "rows_after_crosswalk": pop_log["rows_out"], "dropped": pop_log["dropped"],
        "recoded": pop_log["recoded"], "merged": pop_log["merged"],
    }
    panel = pop.rename(columns={"n_source_codes": "_n_pop"})
    weights = pop_raw.set_index(keys)["population"].astype("float64")
    n_src_cols = ["_n_pop"]

    crime_parts = []
    for source in UI_SPECS:
        raw = frames[source]
        tidy = tidy_ui(raw, source)
        info: dict = {"years_in_file": sorted(map(int, tidy["year"].unique())),
                      "rows_outside_2014_2022": int((~tidy["year"].isin(years)).sum())}
        if (q := _quality_disagreements(raw, source)):
            info["rows_with_disagreeing_quality_flags"] = q
        tidy = tidy[tidy["year"].isin(years)]
        tidy = tidy.assign(_w=tidy.set_index(keys).index.map(weights).astype("float64"))
        rules = {}
        for c in tidy.columns:
            if c in (*keys, "_w"):
                continue
            if c.endswith("_quality"):
                rules[c] = "max"
            elif c.startswith("income_p"):
                rules[c] = "nan"  # percentiles do not aggregate
            else:
                rules[c] = "wmean"
        mapped, log = apply_fips_crosswalk(tidy, crosswalk, scope="annual", rules=rules, source=source, weight="_w")
        logs.append(log)
        info.update({"rows_after_crosswalk": log["rows_out"], "dropped": log["dropped"], "recoded": log["recoded"],
                     "merged": log["merged"]})
        report["sources"][source] = info
        if source.startswith("ui_crime"):
            crime_parts.append(mapped)
            continue
        ncol = f"_n_{source}"
        mapped = mapped.rename(columns={"n_source_codes": ncol})
        n_src_cols.append(ncol)
        panel = panel.merge(mapped, on=keys, how="left", validate="one_to_one")
        info["matched_rows"] = int(panel[ncol].notna().sum())
        info["source_rows_outside_panel"] = int(len(mapped) - info["matched_rows"])
    crime = pd.concat(crime_parts, ignore_index=True).rename(columns={"n_source_codes": "_n_crime"})
    if crime.duplicated(keys).any():
        raise ValueError("the two crime files overlap in years")
    panel = panel.merge(crime, on=keys, how="left", validate="one_to_one")
    n_src_cols.append("_n_crime")
    report["sources"]["ui_crime"] = {"matched_rows": int(panel["_n_crime"].notna().sum()),
                                     "source_rows_outside_panel": int(len(crime) - panel["_n_crime"].notna().sum())}

    panel = _add_states(panel, states, ["state_name", "census_region"])
    names = _crosswalk_names(crosswalk, "annual")
    latest = (panel.dropna(subset=["county_name"]).sort_values("year").drop_duplicates("fips", keep="last")
              .set_index("fips")["county_name"])
    panel["county_name"] = panel["fips"].map(names).fillna(panel["fips"].map(latest)).astype(str)
    panel["post_2017_break"] = (panel["year"] >= 2017).astype(bool)
    merged_any = (panel[n_src_cols].fillna(1) > 1).any(axis=1)
    panel["geo_adjusted"] = (merged_any | boundary_flags(panel, crosswalk, "annual")).astype(bool)
    panel = panel[ANNUAL_COLUMNS].sort_values(keys, kind="stable").reset_index(drop=True)

    report["crosswalk_reasons"] = {}
    for log in logs:
        report["crosswalk_reasons"].update(log["reasons"])
    report["counties_per_year"] = _counts_by_year(panel)
    report["n_counties"] = int(panel["fips"].nunique())
    report["n_rows"] = int(len(panel))
    report["n_rows_merged"] = int(merged_any.sum())
    report["geo_adjusted_rows"] = _row_labels(panel.loc[panel["geo_adjusted"], keys])
    report["non_missing_by_year"] = {
        c: _counts_by_year(panel[panel[c].notna()]) for c in ANNUAL_COLUMNS
        if c not in (*keys, "state_fips", "county_name", "state_name", "census_region", "post_2017_break",
                     "geo_adjusted") and not c.endswith("_quality")
    }
    report["missing"] = {c: int(n) for c, n in panel.isna().sum().items() if n}
    qual = {}
    for c in [c for c in ANNUAL_COLUMNS if c.endswith("_quality")]:
        qual[c] = {str(k): int(v) for k, v in panel[c].value_counts(dropna=True).sort_index().items()}
    report["quality_counts"] = qual
    # 2021+ crime comes from a different (NIBRS-era) file: its level is not comparable with 2015/2017
    c = panel.pivot_table(index="fips", columns="year", values=["violent_crime_per_100k", "property_crime_per_100k"])
    ratio = {}
    for v in ("violent_crime_per_100k", "property_crime_per_100k"):
        if v in c and 2017 in c[v] and 2021 in c[v]:
            r = (c[v][2021] / c[v][2017]).replace([np.inf, -np.inf], np.nan).dropna()
            ratio[v] = round(float(r.median()), 3) if len(r) else None
    report["crime_median_ratio_2021_to_2017"] = ratio
    return panel, report


# --------------------------------------------------------------------------------------------
# Social Capital Atlas  ->  us_social_capital_atlas
# --------------------------------------------------------------------------------------------


def tidy_sca(df: pd.DataFrame, source: str = SCA_SOURCE) -> pd.DataFrame:
    """SCA county file: fips padded (the file stores ``1001``), measures renamed.

    ``civic_organizations_county`` is stored as civic pages per Facebook user (median ~0.018): it is
    multiplied by 1,000 to give ``civic_organizations_per_1k_users``.
    """
    require_columns(source, df, ["county", "county_name", "pop2018", *SCA_COLUMNS_RAW])
    out = pd.DataFrame({"fips": _pad_fips(df["county"], 5, source, "county")})
    out["sca_name"] = df["county_name"].astype(str)
    out["pop2018"] = _as_int(pd.to_numeric(df["pop2018"], errors="coerce").round(), source, "pop2018")
    for raw, new in SCA_COLUMNS_RAW.items():
        out[new] = pd.to_numeric(df[raw], errors="coerce").astype("float64")
    out["civic_organizations_per_1k_users"] = out["civic_organizations_per_1k_users"] * 1_000
    if out["fips"].duplicated().any():
        raise RawInputError(source, "duplicate county codes")
    return out


def build_sca(sca_raw: pd.DataFrame, annual: pd.DataFrame, crosswalk: pd.DataFrame, states: pd.DataFrame
              ) -> tuple[pd.DataFrame, dict]:
    """``us_social_capital_atlas``: SCA left-joined with the annual panel's 2018 values."""
    sca = tidy_sca(sca_raw).assign(year=SCA_JOIN_YEAR)
    rules = {c: "nan" for c in SCA_COLUMNS_RAW.values()}
    rules.update({"pop2018": "sum", "sca_name": "first"})
    sca, log = apply_fips_crosswalk(sca, crosswalk, scope="annual", rules=rules, source=SCA_SOURCE)
    a = annual[annual["year"] == SCA_JOIN_YEAR][["fips", "county_name", *SCA_ANNUAL_COLUMNS]]
    panel = sca.merge(a, on="fips", how="left", validate="one_to_one", indicator="_m")
    matched = panel["_m"] == "both"
    panel = _add_states(panel, states, ["state_name", "census_region"])
    fallback = panel["sca_name"].str.split(",").str[0].str.strip()
    panel["county_name"] = panel["county_name"].fillna(fallback).astype(str)
    report = {
        "panel": "us_social_capital_atlas",
        "rows_sca": log["rows_in"],
        "rows": int(len(panel)),
        "crosswalk": {"dropped": log["dropped"], "recoded": log["recoded"], "merged": log["merged"]},
        "matched_annual_2018": int(matched.sum()),
        "unmatched_sca_fips": sorted(panel.loc[~matched, "fips"]),
        "annual_2018_counties_not_in_sca": int((~a["fips"].isin(panel["fips"])).sum()),
        "missing": {c: int(n) for c, n in panel[SCA_COLUMNS].isna().sum().items() if n},
    }
    panel = panel[SCA_COLUMNS].sort_values("fips", kind="stable").reset_index(drop=True)
    return panel, report


# --------------------------------------------------------------------------------------------
# Reading raw files
# --------------------------------------------------------------------------------------------


def _decode_mixed(raw: bytes) -> str:
    """UTF-8, falling back line by line to cp1252 (one UI file mixes both encodings)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        lines = []
        for line in raw.splitlines(keepends=True):
            try:
                lines.append(line.decode("utf-8"))
            except UnicodeDecodeError:
                lines.append(line.decode("cp1252", errors="replace"))
        return "".join(lines)


def read_raw(name: str, path: Path | None = None) -> pd.DataFrame:
    """Read one raw file (``fetch``-ed unless ``path`` is given) into a data frame, as published.

    xlsx: first sheet; zip: the one Stata file inside; csv: ``state``/``county`` kept as text.
    """
    if path is None:
        from analysis.fetch import fetch

        path = fetch(name)
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".xlsx":
            return pd.read_excel(path, sheet_name=0, engine="openpyxl")
        if suffix == ".zip":
            with zipfile.ZipFile(path) as zf:
                members = [m for m in zf.namelist() if m.lower().endswith(".dta")]
                if len(members) != 1:
                    raise RawInputError(name, f"expected one .dta file in {path.name}, found {members}")
                with zf.open(members[0]) as fh:
                    return pd.read_stata(io.BytesIO(fh.read()))
        if suffix == ".csv":
            text = _decode_mixed(path.read_bytes())
            return pd.read_csv(io.StringIO(text), dtype={"state": str, "county": str})
    except RawInputError:
        raise
    except Exception as exc:  # name the file in any parsing error
        raise RawInputError(name, f"could not read {path.name}: {exc}") from exc
    raise RawInputError(name, f"no reader for {path.name}")


# --------------------------------------------------------------------------------------------
# Cache: load / build_all / build_report
# --------------------------------------------------------------------------------------------


def _build_waves_from_cache() -> tuple[pd.DataFrame, dict]:
    frames = {n: read_raw(n) for n in INPUTS["us_counties_waves"]}
    return build_waves(frames, load_crosswalk(), load_states())


def _build_annual_from_cache() -> tuple[pd.DataFrame, dict]:
    frames = {n: read_raw(n) for n in UI_SOURCES}
    return build_annual(frames, load_crosswalk(), load_states())


def _build_sca_from_cache() -> tuple[pd.DataFrame, dict]:
    return build_sca(read_raw(SCA_SOURCE), load("us_counties_annual"), load_crosswalk(), load_states())


BUILDERS: dict[str, Callable[[], tuple[pd.DataFrame, dict]]] = {
    "us_counties_waves": _build_waves_from_cache,
    "us_counties_annual": _build_annual_from_cache,
    "us_social_capital_atlas": _build_sca_from_cache,
    "england_lads": england.build_england_from_cache,
    "us_counties_congregations": longrun.build_congregations_from_cache,
    "us_counties_income": longrun.build_income_from_cache,
}


def _processed_dir() -> Path:
    return Path(paths.PROCESSED_DIR)


def _builder_files() -> list[Path]:
    here = Path(__file__).resolve().parent
    files = [here / "panels.py", here / "schemas.py", here / "england.py", here / "longrun.py"]
    files += sorted(p for p in Path(paths.CROSSWALK_DIR).glob("*") if p.is_file())
    return files


def builder_hash() -> str:
    """SHA-256 over the builder source: this module, ``england.py``, ``longrun.py``, the schemas and every
    crosswalk file."""
    h = hashlib.sha256()
    for p in _builder_files():
        h.update(p.name.encode())
        h.update(b"\0")
        h.update(p.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def cache_key(name: str) -> dict:
    """What a cached panel must match: input SHA-256s (manifest pins), builder hash, format."""
    from analysis.manifest import load_manifest

    _check_name(name)
    manifest = load_manifest()
    return {
        "panel": name,
        "format": CACHE_FORMAT,
        "inputs": {src: manifest[src].sha256 for src in INPUTS[name]},
        "builder": builder_hash(),
    }


def _check_name(name: str) -> None:
    if name not in PANELS:
        raise KeyError(f"unknown panel {name!r}; known: {', '.join(PANELS)}")


def _files(name: str) -> tuple[Path, Path]:
    d = _processed_dir()
    return d / f"{name}.parquet", d / f"{name}.json"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_sidecar(name: str) -> dict | None:
    """The panel's JSON sidecar as a dict; ``None`` if it is missing, unreadable or malformed.

    The sidecar is derived: a damaged one (a non-UTF-8 byte, invalid JSON, a string or list where
    a dict belongs) only means the panel is out of date, so it is rebuilt rather than raised.
    """
    _, side = _files(name)
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # ValueError covers JSONDecodeError and UnicodeDecodeError
        return None
    return meta if isinstance(meta, dict) else None


def _is_current(name: str, key: dict) -> bool:
    """Whether the cached parquet matches ``key`` and the hash its sidecar vouches for."""
    parquet, _ = _files(name)
    meta = _read_sidecar(name)
    if not meta or meta.get("key") != key:
        return False
    try:
        return meta.get("parquet_sha256") == _sha256(parquet)
    except OSError:  # missing or unreadable parquet: out of date, rebuild
        return False


def _atomic_write_bytes(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` through a temp file moved into place; all or nothing.

    An ``OSError`` (read-only directory, disk full, file-size limit) leaves no temp file and names
    ``target``, not the temp file, which means nothing to the user.
    """
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; derived files are not secret
        os.replace(tmp, target)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(target)) from exc
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def _build_and_write(name: str, key: dict) -> pd.DataFrame:
    t0 = time.perf_counter()
    df, report = BUILDERS[name]()
    validate(name, df)
    seconds = time.perf_counter() - t0
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    data = buf.getvalue()
    parquet, side = _files(name)
    parquet.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "key": key,
        "parquet_sha256": hashlib.sha256(data).hexdigest(),
        "rows": int(len(df)),
        "columns": list(map(str, df.columns)),
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(seconds, 3),
        "versions": {"pandas": pd.__version__, "pyarrow": __import__("pyarrow").__version__},
        "report": report,
    }
    # parquet first, then the sidecar that vouches for it (by hash): a crash in between leaves a
    # parquet whose sidecar does not match, which the next load rebuilds.
    _atomic_write_bytes(parquet, data)
    _atomic_write_bytes(side, (json.dumps(meta, indent=1, sort_keys=False, default=str) + "\n").encode())
    return df


def _lock(name: str):
    """A context manager that holds panel ``name``'s lock and, once it holds it, deletes the
    ``.<name>.parquet.*.part`` / ``.<name>.json.*.part`` temp files a killed build left behind.

    Only a lock holder writes those temp files, so while we hold the lock any that exist are stale.
    """
    from contextlib import contextmanager

    from filelock import FileLock

    d = _processed_dir()
    d.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def held():
        with FileLock(str(d / f".{name}.lock")):
            for stale in [*d.glob(f".{name}.parquet.*.part"), *d.glob(f".{name}.json.*.part")]:
                stale.unlink(missing_ok=True)
            yield

    return held()


def load(name: str, *, force: bool = False) -> pd.DataFrame:
    """Panel ``name`` as a data frame, sorted by fips (and year); built from the raw cache if the
    cached parquet is missing or stale (or ``force``), else read from ``data/processed/``.

    A damaged sidecar counts as stale; temp files left by a killed build are removed (under the lock).
    """
    _check_name(name)
    key = cache_key(name)
    parquet, _ = _files(name)
    # Leftover temp files send even a current panel through the lock, whose holder removes them.
    leftovers = any(parquet.parent.glob(f".{name}.parquet.*.part")) or any(parquet.parent.glob(f".{name}.json.*.part"))
    if not force and not leftovers and _is_current(name, key):
        return pd.read_parquet(parquet)
    with _lock(name):
        if not force and _is_current(name, key):  # another process built it meanwhile
            return pd.read_parquet(parquet)
        return _build_and_write(name, key)


def build_all(force: bool = False) -> dict:
    """Build (or confirm) every panel; per panel: rows, whether it was rebuilt, seconds, path.

    Every panel is tried. If the file system refuses some (read-only ``data/processed``, disk full,
    file-size limit), one :class:`analysis.fetch.DataAccessError` follows, one line per file.
    """
    from analysis.fetch import AccessFailure, DataAccessError, DataUnavailableError, describe_os_error

    out = {}
    failures: list[AccessFailure] = []
    for name in PANELS:
        t0 = time.perf_counter()
        try:
            current = not force and _is_current(name, cache_key(name))
            df = load(name, force=force)
        except DataUnavailableError:  # a missing raw file is not a disk problem: its own message
            raise
        except DataAccessError as exc:  # a raw file the OS refused, already one line
            failures += exc.failures
            continue
        except OSError as exc:
            path = Path(exc.filename) if exc.filename else _files(name)[0]
            if any(f.path == path and f.error.errno == exc.errno for f in failures):
                continue  # e.g. a panel built on one that already failed: said once is enough
            todo = describe_os_error(exc, path, "or set THIRD_PILLAR_PROCESSED=DIR to build the panels elsewhere")
            failures.append(AccessFailure(name, path, exc, f"panel {name}: {todo}"))
            continue
        out[name] = {"rows": int(len(df)), "built": not current, "seconds": round(time.perf_counter() - t0, 3),
                     "path": str(_files(name)[0])}
    if failures:
        raise DataAccessError(failures)
    return out


def build_report(name: str) -> dict:
    """Facts about how panel ``name`` was built (counties per wave before/after the crosswalk, merges,
    drops with reasons, join match counts, missing counts), as stored beside the cached panel.
    """
    load(name)
    meta = _read_sidecar(name)
    if meta is None:  # pragma: no cover - load() just wrote it
        raise RuntimeError(f"{name}: no build metadata beside the cached panel")
    return {**meta["report"], "built_at": meta["built_at"], "build_seconds": meta["build_seconds"]}
