"""Long-run US county panels: religious congregations and membership 1906-2020, personal income 1969-2022.

Two panels, registered in :mod:`analysis.panels` like ``england_lads``:

``us_counties_congregations``
    county x wave, every source row kept (selection happens in the chapter):

    * 1906, 1916, 1926, 1936: US Census of Religious Bodies via IPUMS NHGIS (extracts published by
      go-bayes/places-of-worship), church **members** of all denominations and the population of
      the nearest census (1910, 1920, 1930, 1940), on **1930 county boundaries**. There are no
      church counts in these files (``congregations`` is missing). The NHGIS code ``gisjoin`` is
      ``G`` + state FIPS x 10 + county FIPS x 10 (``G4500010`` -> ``45001``); a code whose last digit
      is not 0 has no FIPS (Campbell and Milton, GA; South Norfolk city, VA): ``fips`` is missing
      and ``no_fips_code`` set. Historical codes that are not 2020 county codes are mapped to their
      successor with the places-of-worship crosswalk (``fips_crosswalk_to_2020``: Dade -> Miami-Dade,
      Shannon -> Oglala Lakota, Ormsby -> Carson City, old Virginia counties ...), flagged
      ``fips_crosswalked``; a retired code without a crosswalk entry (Washington County, SD) is
      kept as it is, flagged ``fips_not_2020``. Several 1930 counties can share one 2020 code
      (``fips_shared_in_wave``): the builder never aggregates.
    * 1952, 1971, 1980, 1990, 2000, 2010, 2020: Churches and Church Membership / U.S. Religion
      Census county extracts (congregations, **adherents**, population), already crosswalked to
      2020 FIPS by the publisher; ``original_code`` keeps the source's own code(s).

    Every source quality flag is its own boolean column (an unknown flag is an error). Rates are
    missing where the population is 0 or missing (``population_missing_or_zero``); adherents or
    members per 100 people above 100 are kept and flagged (``adherents_exceed_population``).

``us_counties_income``
    BEA county area x year 1969-2022 from table CAINC1 (personal income, population, per-capita
    personal income). US, state and region rows are dropped by rule (GeoFIPS ending 000, or
    90000 and above); BEA's combined areas (the Virginia independent cities folded into their
    counties, 51901-51958; Maui + Kalawao, HI; Shawano + Menominee, WI, to 1988) are kept,
    flagged ``bea_combined_area`` with their component FIPS (:data:`BEA_COMBINED_AREAS`; also in
    the build report). No national price index is among the pinned files, so no real-dollar
    series is made up: ``log_pcpi`` is nominal and ``log_pcpi_rel_us`` is the log of the county's
    per-capita income relative to BEA's US value of the same year (removes national inflation
    and growth, which is what a within-county model with year effects identifies anyway).

Bad input gives one :class:`~analysis.schemas.RawInputError` naming the manifest entry, the
upstream file, the column and the rows (line numbers of the file, header = line 1): a renamed
column, an unparseable value, a duplicated county, an unknown quality flag.

The builders are pure functions of data frames (``tidy_nhgis``, ``tidy_rcms``,
``tidy_fips_crosswalk``, ``build_congregations``, ``tidy_bea``, ``build_income``) so that tests run
them on small synthetic files; reading (:func:`read_longrun_raw`) and the cache
(``analysis.panels.load``) are apart. Variables are documented in ``data/codebook.yml``.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.schemas import (
    CONGREGATION_BUILDER_FLAGS,
    CONGREGATION_SOURCE_FLAGS,
    INCOME_YEARS,
    NHGIS_WAVES,
    RCMS_WAVES,
    RawInputError,
    require_columns,
)

PANEL_CONGREGATIONS = "us_counties_congregations"
PANEL_INCOME = "us_counties_income"

NHGIS_SOURCES: dict[int, str] = {y: f"nhgis_religious_bodies_{y}" for y in NHGIS_WAVES}
RCMS_SOURCES: dict[int, str] = {y: f"rcms_county_{y}" for y in RCMS_WAVES}
CROSSWALK_SOURCE = "pow_fips_crosswalk_2020"
BEA_SOURCE = "bea_cainc1_county"

# manifest name -> upstream file name (named in every error message)
UPSTREAM_FILES: dict[str, str] = {
    **{s: f"us_nhgis_county_{y}_extract.csv" for y, s in NHGIS_SOURCES.items()},
    **{s: f"us_rcms_county_{y}_extract.csv" for y, s in RCMS_SOURCES.items()},
    CROSSWALK_SOURCE: "fips_crosswalk_to_2020.csv",
    BEA_SOURCE: "CAINC1__ALL_AREAS_1969_2022.csv",
}

INPUTS: dict[str, tuple[str, ...]] = {
    PANEL_CONGREGATIONS: (*NHGIS_SOURCES.values(), *RCMS_SOURCES.values(), CROSSWALK_SOURCE),
    PANEL_INCOME: (BEA_SOURCE,),
}

NHGIS_COLUMNS = (
    "gisjoin", "year", "boundary_year", "county_name", "state_code", "county_code", "population_total",
    "population_reference_year", "church_or_edifice_count", "member_count", "members_per_100_population",
    "quality_flag",
)
RCMS_COLUMNS = ("fips", "name", "state", "cng", "adh", "pop", "quality_flag", "original_fips", "crosswalk_note")
CROSSWALK_COLUMNS = ("old_fips", "old_name", "new_fips", "new_name")
NHGIS_BOUNDARY_YEAR = 1930
MEMBERS_PER_100_TOLERANCE = 0.001  # the extract rounds members per 100 to 4 decimals

GISJOIN = re.compile(r"^G\d{7}$")
GISJOIN_FIPS = r"^G(\d{2})0(\d{3})0$"
FIPS = r"^\d{5}$"
FIPS_LIST = r"^\d{5}(, \d{5})*$"

BUILDER_FLAGS = CONGREGATION_BUILDER_FLAGS
CONGREGATION_COLUMNS = [
    "fips", "original_code", "historical_fips", "wave", "source", "state_fips", "county_name",
    "membership_measure", "congregations", "adherents_or_members", "population", "population_year",
    "congregations_per_1k", "adherents_per_100", "crosswalk_note",
    *CONGREGATION_SOURCE_FLAGS, *BUILDER_FLAGS,
]

# BEA CAINC1
BEA_LINES = {  # LineCode -> (panel column, how the Description starts)
    "1": ("personal_income_thousands", "Personal income (thousands of dollars)"),
    "2": ("population", "Population (persons)"),
    "3": ("pcpi", "Per capita personal income (dollars)"),
}
BEA_NA = "(NA)"
US_FIPS = "00000"
# BEA combination areas and their components (BEA, "Regional Data: county and MSA definitions";
# the names in GeoName list the same units, which the builder checks by count). Virginia: an
# independent city (under 100,000 people in 1980) is combined with the county that surrounds it.
BEA_COMBINED_AREAS: dict[str, tuple[str, ...]] = {
    "15901": ("15005", "15009"),  # Maui + Kalawao, HI
    "51901": ("51003", "51540"),  # Albemarle + Charlottesville
    "51903": ("51005", "51580"),  # Alleghany + Covington (Clifton Forge 51560 part of Alleghany since 2001)
    "51907": ("51015", "51790", "51820"),  # Augusta, Staunton + Waynesboro
    "51911": ("51031", "51680"),  # Campbell + Lynchburg
    "51913": ("51035", "51640"),  # Carroll + Galax
    "51918": ("51053", "51570", "51730"),  # Dinwiddie, Colonial Heights + Petersburg
    "51919": ("51059", "51600", "51610"),  # Fairfax, Fairfax City + Falls Church
    "51921": ("51069", "51840"),  # Frederick + Winchester
    "51923": ("51081", "51595"),  # Greensville + Emporia
    "51929": ("51089", "51690"),  # Henry + Martinsville
    "51931": ("51095", "51830"),  # James City + Williamsburg
    "51933": ("51121", "51750"),  # Montgomery + Radford
    "51939": ("51143", "51590"),  # Pittsylvania + Danville
    "51941": ("51149", "51670"),  # Prince George + Hopewell
    "51942": ("51153", "51683", "51685"),  # Prince William, Manassas + Manassas Park
    "51944": ("51161", "51775"),  # Roanoke (county) + Salem
    "51945": ("51163", "51530", "51678"),  # Rockbridge, Buena Vista + Lexington
    "51947": ("51165", "51660"),  # Rockingham + Harrisonburg
    "51949": ("51175", "51620"),  # Southampton + Franklin (city)
    "51951": ("51177", "51630"),  # Spotsylvania + Fredericksburg
    "51953": ("51191", "51520"),  # Washington + Bristol
    "51955": ("51195", "51720"),  # Wise + Norton
    "51958": ("51199", "51735"),  # York + Poquoson
    "55901": ("55078", "55115"),  # Shawano (includes Menominee), WI: 1969-1988
}
INCOME_COLUMNS = [
    "fips", "year", "state_fips", "area_name", "bea_combined_area", "bea_component_fips", "bea_area_footnote",
    "bea_not_published", "personal_income_thousands", "population", "pcpi", "us_pcpi", "log_pcpi",
    "log_pcpi_rel_us",
]
MAX_LINES = 5


# --------------------------------------------------------------------------------------------
# Reading and error helpers
# --------------------------------------------------------------------------------------------


def read_longrun_raw(name: str, path: Path | None = None) -> pd.DataFrame:
    """One raw file (``fetch``-ed unless ``path`` is given) as text columns, as published.

    UTF-8 (a byte-order mark is dropped), else Latin-1 (BEA writes "Doña Ana" in Latin-1); blanks
    stay empty strings; a space before a quoted field is skipped (BEA's `` "01001"``); CRLF is fine.
    The index is the row's line number in the file (header = line 1), for error messages.
    """
    if path is None:
        from analysis.fetch import fetch

        path = fetch(name)
    path = Path(path)
    try:
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, skipinitialspace=True)
    except Exception as exc:  # name the file in any parsing error
        raise RawInputError(name, f"could not read {path.name}: {exc}") from exc
    df.index = pd.RangeIndex(2, len(df) + 2)
    return df


def _file(source: str) -> str:
    return f"file {UPSTREAM_FILES[source]}" if source in UPSTREAM_FILES else "file"


def _line_list(index: Iterable, values: Iterable | None = None) -> str:
    idx = list(index)
    vals = list(values) if values is not None else [None] * len(idx)
    parts = [f"line {i}" + (f" ({v!r})" if v is not None else "") for i, v in zip(idx[:MAX_LINES], vals[:MAX_LINES])]
    more = f" and {len(idx) - MAX_LINES} more" if len(idx) > MAX_LINES else ""
    return ", ".join(parts) + more


def _fail(source: str, column: str, mask: pd.Series, values: pd.Series | None, what: str) -> None:
    """Raise naming the file, the column and the failing rows (line numbers) if ``mask`` has any."""
    if not mask.any():
        return
    rows = mask[mask].index
    shown = values[mask] if values is not None else None
    raise RawInputError(source, f"{_file(source)}, column {column!r}: {what} on {int(mask.sum())} row(s): "
                                f"{_line_list(rows, shown)}")


def _text(df: pd.DataFrame, column: str) -> pd.Series:
    return df[column].fillna("").astype(str).str.strip()


def _numbers(text: pd.Series, source: str, column: str, *, integer: bool = True,
             na_tokens: Iterable[str] = ()) -> pd.Series:
    """Text -> Int64 (or float64); blanks and ``na_tokens`` are missing; anything else raises."""
    text = text.fillna("").astype(str).str.strip()
    missing = (text == "") | text.isin(list(na_tokens))
    num = pd.to_numeric(text.where(~missing), errors="coerce")
    _fail(source, column, ~missing & num.isna(), text, "values that are not numbers")
    _fail(source, column, num < 0, text, "negative values")
    if integer:
        _fail(source, column, num.notna() & (num % 1 != 0), text, "values that are not whole numbers")
        return num.astype("Int64")
    return num.astype("float64")


def _duplicates(source: str, column: str, keys: pd.Series | pd.DataFrame, what: str) -> None:
    dup = keys.duplicated(keep=False)
    shown = keys if isinstance(keys, pd.Series) else keys.astype(str).agg(" ".join, axis=1)
    _fail(source, column, dup, shown, f"duplicated {what}")


def _source_flags(values: pd.Series, source: str) -> pd.DataFrame:
    """``a;b`` quality flags -> one boolean column per known flag; an unknown flag raises."""
    tokens = values.fillna("").astype(str).str.split(";").map(lambda t: [x.strip() for x in t if x.strip()])
    unknown = tokens.map(lambda t: any(x not in CONGREGATION_SOURCE_FLAGS for x in t))
    _fail(source, "quality_flag", unknown, values,
          f"unknown quality flag (known: {', '.join(CONGREGATION_SOURCE_FLAGS)}; add a column for a new one)")
    return pd.DataFrame({f: tokens.map(lambda t, f=f: f in t).astype(bool) for f in CONGREGATION_SOURCE_FLAGS},
                        index=values.index)


# --------------------------------------------------------------------------------------------
# Congregations and membership  ->  us_counties_congregations
# --------------------------------------------------------------------------------------------


def tidy_nhgis(raw: pd.DataFrame, wave: int, source: str | None = None) -> pd.DataFrame:
    """One NHGIS religious-bodies extract (1930 boundaries) -> panel rows before the FIPS mapping.

    Checks: ``gisjoin`` well formed, unique, and equal to ``G`` + ``state_code`` + ``county_code``;
    ``year`` is the wave; ``boundary_year`` is 1930; counts are whole non-negative numbers;
    ``members_per_100_population`` agrees with members / population x 100 (to the file's
    rounding). Church counts are not used (empty in every year; see the codebook); how many are
    present is in the ``church_counts_present`` attribute for the build report.
    """
    source = source or NHGIS_SOURCES[wave]
    require_columns(source, raw, NHGIS_COLUMNS, f"NHGIS religious bodies extract, {_file(source)}")
    gis = _text(raw, "gisjoin")
    _fail(source, "gisjoin", ~gis.str.match(GISJOIN), gis, "malformed NHGIS code (expected G + 7 digits)")
    _duplicates(source, "gisjoin", gis, "county code")
    parts = "G" + _text(raw, "state_code") + _text(raw, "county_code")
    _fail(source, "gisjoin", parts != gis, gis, "code differs from G + state_code + county_code")
    year = _text(raw, "year")
    _fail(source, "year", year != str(wave), year, f"year other than the wave {wave}")
    by = _text(raw, "boundary_year")
    _fail(source, "boundary_year", by != str(NHGIS_BOUNDARY_YEAR), by, f"boundaries other than {NHGIS_BOUNDARY_YEAR}")

    members = _numbers(raw["member_count"], source, "member_count")
    pop = _numbers(raw["population_total"], source, "population_total")
    pop_year = _numbers(raw["population_reference_year"], source, "population_reference_year")
    per100 = _numbers(raw["members_per_100_population"], source, "members_per_100_population", integer=False)
    church = _numbers(raw["church_or_edifice_count"], source, "church_or_edifice_count")
    implied = members.astype("float64") / pop.astype("float64").where(pop > 0) * 100
    off = (implied - per100).abs() > MEMBERS_PER_100_TOLERANCE
    _fail(source, "members_per_100_population", off.fillna(False).astype(bool), per100,
          "value differs from member_count / population_total x 100")

    hist = gis.str.extract(GISJOIN_FIPS)
    historical = (hist[0] + hist[1]).astype(object).where(hist[0].notna(), None)
    out = pd.DataFrame({
        "original_code": gis,
        "historical_fips": historical,
        "wave": wave,
        "source": source,
        "state_fips": gis.str.slice(1, 3),
        "county_name": _text(raw, "county_name"),
        "membership_measure": "members",
        "congregations": pd.array([pd.NA] * len(raw), dtype="Int64"),
        "adherents_or_members": members,
        "population": pop,
        "population_year": pop_year,
        "crosswalk_note": None,
    }, index=raw.index)
    out = pd.concat([out, _source_flags(raw["quality_flag"], source)], axis=1)
    out.attrs["church_counts_present"] = int(church.notna().sum())
    return out


def tidy_rcms(raw: pd.DataFrame, wave: int, source: str | None = None) -> pd.DataFrame:
    """One RCMS county extract (already on 2020 FIPS) -> panel rows.

    ``fips`` must be 5 digits and unique; ``original_fips`` one or more 5-digit codes (``30031,
    30113`` for merged source units); ``cng``, ``adh``, ``pop`` whole non-negative numbers or
    empty (not reported).
    """
    source = source or RCMS_SOURCES[wave]
    require_columns(source, raw, RCMS_COLUMNS, f"RCMS county extract, {_file(source)}")
    fips = _text(raw, "fips")
    _fail(source, "fips", ~fips.str.match(FIPS), fips, "malformed county code (expected 5 digits)")
    _duplicates(source, "fips", fips, "county")
    orig = _text(raw, "original_fips")
    _fail(source, "original_fips", ~orig.str.match(FIPS_LIST), orig, "malformed code list (expected 5-digit codes)")
    _duplicates(source, "original_fips", orig, "source code")
    note = _text(raw, "crosswalk_note")
    out = pd.DataFrame({
        "fips": fips,
        "original_code": orig,
        "historical_fips": orig.astype(object).where(orig.str.match(FIPS), None),
        "wave": wave,
        "source": source,
        "state_fips": fips.str.slice(0, 2),
        "county_name": _text(raw, "name"),
        "membership_measure": "adherents",
        "congregations": _numbers(raw["cng"], source, "cng"),
        "adherents_or_members": _numbers(raw["adh"], source, "adh"),
        "population": _numbers(raw["pop"], source, "pop"),
        "population_year": pd.array([pd.NA] * len(raw), dtype="Int64"),
        "crosswalk_note": note.astype(object).where(note != "", None),
    }, index=raw.index)
    return pd.concat([out, _source_flags(raw["quality_flag"], source)], axis=1)


def tidy_fips_crosswalk(raw: pd.DataFrame, source: str = CROSSWALK_SOURCE) -> pd.DataFrame:
    """The places-of-worship crosswalk: one row per retired code (``old_fips`` unique) -> 2020 code."""
    require_columns(source, raw, CROSSWALK_COLUMNS, f"FIPS crosswalk, {_file(source)}")
    old, new = _text(raw, "old_fips"), _text(raw, "new_fips")
    _fail(source, "old_fips", ~old.str.match(FIPS), old, "malformed code")
    _fail(source, "new_fips", ~new.str.match(FIPS), new, "malformed code")
    _duplicates(source, "old_fips", old, "old code (one code may have one successor only)")
    return pd.DataFrame({"old_fips": old, "old_name": _text(raw, "old_name"), "new_fips": new,
                         "new_name": _text(raw, "new_name")}).reset_index(drop=True)


def map_nhgis_fips(rows: pd.DataFrame, crosswalk: pd.DataFrame, fips_2020: Iterable[str]) -> pd.DataFrame:
    """Set ``fips`` on tidy NHGIS rows: the historical code if it is a 2020 county code, else its
    successor in ``crosswalk`` (``fips_crosswalked``), else the historical code (``fips_not_2020``);
    missing if the NHGIS code has no FIPS (``no_fips_code``)."""
    current = set(fips_2020)
    succ = crosswalk.set_index("old_fips")
    hist = rows["historical_fips"]
    has = hist.notna()
    in_2020 = has & hist.isin(current)
    mapped = has & ~in_2020 & hist.isin(succ.index)
    out = rows.copy()
    out["fips"] = hist.where(~mapped, hist.map(succ["new_fips"]))
    out["no_fips_code"] = ~has
    out["fips_crosswalked"] = mapped
    out["fips_not_2020"] = has & ~in_2020 & ~mapped
    notes = [f"1930 county {name} ({h}) coded {succ.at[h, 'new_fips']} {succ.at[h, 'new_name']} "
             f"by fips_crosswalk_to_2020 (applied by code, outside the crosswalk's year range)"
             for name, h in zip(out.loc[mapped, "county_name"], hist[mapped])]
    out["crosswalk_note"] = out["crosswalk_note"].astype(object)
    out.loc[mapped, "crosswalk_note"] = notes
    return out


def build_congregations(frames: Mapping[str, pd.DataFrame]) -> tuple[pd.DataFrame, dict]:
    """``us_counties_congregations`` from the raw frames (keyed by manifest name) and a build report."""
    missing = [n for n in INPUTS[PANEL_CONGREGATIONS] if n not in frames]
    if missing:
        raise KeyError(f"{PANEL_CONGREGATIONS}: raw frames missing for {missing}")
    crosswalk = tidy_fips_crosswalk(frames[CROSSWALK_SOURCE])
    rcms = {w: tidy_rcms(frames[s], w, s) for w, s in RCMS_SOURCES.items()}
    fips_2020 = set(rcms[2020]["fips"])
    parts, church_counts = [], {}
    for w, s in NHGIS_SOURCES.items():
        t = tidy_nhgis(frames[s], w, s)
        church_counts[str(w)] = t.attrs.get("church_counts_present", 0)
        parts.append(map_nhgis_fips(t, crosswalk, fips_2020))
    for w, t in rcms.items():
        t = t.copy()
        t["no_fips_code"] = False
        t["fips_crosswalked"] = False
        t["fips_not_2020"] = ~t["fips"].isin(fips_2020)
        parts.append(t)
    for p in parts:
        p.attrs = {}
    panel = pd.concat(parts, ignore_index=True)

    panel["wave"] = panel["wave"].astype("int64")
    for c in ("fips", "historical_fips", "crosswalk_note"):
        panel[c] = panel[c].astype(object).where(panel[c].notna(), None)
    has_fips = panel["fips"].notna()
    panel["fips_shared_in_wave"] = (has_fips & panel[has_fips].duplicated(["wave", "fips"], keep=False)
                                    .reindex(panel.index, fill_value=False)).astype(bool)
    rcms_rows = panel["membership_measure"] == "adherents"
    panel["not_reported"] = (panel["adherents_or_members"].isna()
                             | (rcms_rows & panel["congregations"].isna())).astype(bool)
    pop = panel["population"].astype("float64")
    no_pop = pop.isna() | (pop == 0)
    panel["population_missing_or_zero"] = no_pop.astype(bool)
    denom = pop.where(~no_pop)
    panel["congregations_per_1k"] = (panel["congregations"].astype("float64") / denom * 1_000).astype("float64")
    panel["adherents_per_100"] = (panel["adherents_or_members"].astype("float64") / denom * 100).astype("float64")
    panel["adherents_exceed_population"] = (panel["adherents_per_100"] > 100).fillna(False).astype(bool)
    for c in (*CONGREGATION_SOURCE_FLAGS, *BUILDER_FLAGS):
        panel[c] = panel[c].astype(bool)
    panel = (panel[CONGREGATION_COLUMNS]
             .sort_values(["wave", "fips", "original_code"], na_position="last", kind="stable")
             .reset_index(drop=True))
    for c in ("fips", "historical_fips", "crosswalk_note"):
        panel[c] = panel[c].astype("str")  # missing stays missing (pandas' str dtype)
    return panel, congregations_report(panel, church_counts)


def _labels(df: pd.DataFrame) -> list[str]:
    return [f"{w} {c} {n}" for w, c, n in zip(df["wave"], df["original_code"], df["county_name"])]


def congregations_report(panel: pd.DataFrame, church_counts: Mapping[str, int] | None = None) -> dict:
    """Rows, national sums and flag counts per wave; the rows behind each geographic flag."""
    g = panel.groupby("wave")
    sums = g[["congregations", "adherents_or_members", "population"]].sum(min_count=1)
    both = panel.dropna(subset=["adherents_or_members", "population"])
    report = {
        "panel": PANEL_CONGREGATIONS,
        "rows": int(len(panel)),
        "rows_per_wave": {str(k): int(v) for k, v in g.size().items()},
        "national_sums": {
            str(w): {c: (None if pd.isna(v) else int(v)) for c, v in r.items()} for w, r in sums.iterrows()
        },
        "adherents_or_members_per_100_national": {
            str(w): round(float(r["adherents_or_members"]) / float(r["population"]) * 100, 3)
            for w, r in sums.iterrows() if pd.notna(r["population"]) and r["population"]
        },
        "adherents_or_members_per_100_national_rows_with_both": {
            str(w): round(float(d["adherents_or_members"].sum()) / float(d["population"].sum()) * 100, 3)
            for w, d in both.groupby("wave")
        },
        "flag_counts": {
            c: {str(w): int(n) for w, n in panel.groupby("wave")[c].sum().items() if n}
            for c in (*CONGREGATION_SOURCE_FLAGS, *BUILDER_FLAGS)
        },
        "no_fips_code": _labels(panel[panel["no_fips_code"]]),
        "fips_crosswalked": [f"{lab} -> {f}" for lab, f in
                             zip(_labels(panel[panel["fips_crosswalked"]]), panel.loc[panel["fips_crosswalked"], "fips"])],
        "fips_not_2020": _labels(panel[panel["fips_not_2020"]]),
        "fips_shared_in_wave": {
            str(w): sorted(set(d["fips"])) for w, d in panel[panel["fips_shared_in_wave"]].groupby("wave")
        },
        "population_missing_or_zero": _labels(panel[panel["population_missing_or_zero"]]),
        "church_counts_present_nhgis": dict(church_counts or {}),
    }
    return report


def build_congregations_from_cache() -> tuple[pd.DataFrame, dict]:
    """Read every raw input (through ``fetch``) and build ``us_counties_congregations``."""
    return build_congregations({n: read_longrun_raw(n) for n in INPUTS[PANEL_CONGREGATIONS]})


# --------------------------------------------------------------------------------------------
# BEA personal income  ->  us_counties_income
# --------------------------------------------------------------------------------------------


def tidy_bea(raw: pd.DataFrame, source: str = BEA_SOURCE, years: Iterable[int] = INCOME_YEARS) -> pd.DataFrame:
    """CAINC1 (three LineCode rows per area) -> one row per area and year, values as numbers.

    ``GeoFIPS`` loses its quotes and spaces; ``(NA)`` is missing; the footnote lines at the end
    (text in the first column only) are dropped, but such a line before the last data row, an
    unknown ``LineCode``, a ``Description`` that does not match its line, a duplicated
    area-line or an area without all three lines raise, naming the column and the lines.
    Columns: ``fips``, ``geo_name``, ``year`` and the three values.
    """
    years = [str(y) for y in years]
    require_columns(source, raw, ["GeoFIPS", "GeoName", "LineCode", "Description", *years],
                    f"BEA CAINC1, {_file(source)}")
    line = _text(raw, "LineCode")
    values = raw[years].fillna("").astype(str).apply(lambda s: s.str.strip())
    footer = (line == "") & (values == "").all(axis=1) & (_text(raw, "GeoName") == "")
    data_rows = ~footer
    if data_rows.any():
        last = data_rows[data_rows].index.max()
        _fail(source, "LineCode", footer & (footer.index < last), _text(raw, "GeoFIPS"),
              "footnote or blank line before the last data row")
    d = raw[data_rows]
    line, values = line[data_rows], values[data_rows]
    fips = _text(d, "GeoFIPS").str.replace('"', "", regex=False).str.strip()
    _fail(source, "GeoFIPS", ~fips.str.match(FIPS), fips, "malformed area code (expected 5 digits)")
    _fail(source, "LineCode", ~line.isin(list(BEA_LINES)), line, f"unknown line code (expected {', '.join(BEA_LINES)})")
    desc = _text(d, "Description")
    expected = line.map({k: v[1] for k, v in BEA_LINES.items()})
    _fail(source, "Description", ~pd.Series([a.startswith(b) for a, b in zip(desc, expected)], index=d.index),
          desc, "description does not match its LineCode (1 personal income, 2 population, 3 per capita)")
    _duplicates(source, "GeoFIPS", pd.DataFrame({"GeoFIPS": fips, "LineCode": line}), "area and LineCode")
    n_lines = fips.map(fips.value_counts())
    _fail(source, "LineCode", n_lines != len(BEA_LINES), fips, "area without all three lines")

    long = []
    for y in years:
        long.append(pd.DataFrame({"fips": fips, "line": line, "year": int(y),
                                  "value": _numbers(values[y], source, y, integer=True, na_tokens=(BEA_NA,))}))
    long = pd.concat(long)
    wide = long.pivot(index=["fips", "year"], columns="line", values="value")
    wide = wide.rename(columns={k: v[0] for k, v in BEA_LINES.items()}).reset_index()
    wide.columns.name = None
    names = pd.Series(_text(d, "GeoName").to_numpy(), index=fips.to_numpy())
    wide["geo_name"] = wide["fips"].map(names[~names.index.duplicated()])
    for c, _ in BEA_LINES.values():
        wide[c] = wide[c].astype("Int64")
    return wide[["fips", "geo_name", "year", *[v[0] for v in BEA_LINES.values()]]]


def is_county_code(fips: pd.Series) -> pd.Series:
    """BEA county areas: not ``xx000`` (US, states) and below 90000 (regions 91000-98000)."""
    return (~fips.str.endswith("000") & (fips.astype(int) < 90_000)).astype(bool)


def build_income(raw: pd.DataFrame, source: str = BEA_SOURCE,
                 years: Iterable[int] = INCOME_YEARS) -> tuple[pd.DataFrame, dict]:
    """``us_counties_income`` from the raw CAINC1 frame, and a build report."""
    t = tidy_bea(raw, source, years)
    us = t[t["fips"] == US_FIPS].set_index("year")["pcpi"]
    no_us = [y for y in t["year"].unique() if pd.isna(us.get(y, pd.NA))]
    if no_us:
        raise RawInputError(source, f"{_file(source)}: no United States (GeoFIPS {US_FIPS}) per-capita income "
                                    f"for year(s) {sorted(no_us)[:MAX_LINES]}; needed for log_pcpi_rel_us")
    county = is_county_code(t["fips"])
    dropped = t[~county].drop_duplicates("fips")
    p = t[county].copy()

    combined_code = p["fips"].str.slice(2).astype(int) >= 900
    alaska = p["fips"].str.startswith("02")  # 029xx: Alaska's 1969-78 census divisions, not combinations
    unknown = combined_code & ~alaska & ~p["fips"].isin(list(BEA_COMBINED_AREAS))
    if unknown.any():
        codes = sorted(set(p.loc[unknown, "fips"] + " " + p.loc[unknown, "geo_name"]))
        raise RawInputError(source, f"{_file(source)}, column 'GeoFIPS': BEA combined area(s) without a component "
                                    f"list in analysis.longrun.BEA_COMBINED_AREAS: {codes[:MAX_LINES]}")
    p["bea_combined_area"] = p["fips"].isin(list(BEA_COMBINED_AREAS)).astype(bool)
    comp = {k: ";".join(v) for k, v in BEA_COMBINED_AREAS.items()}
    p["bea_component_fips"] = p["fips"].map(comp)
    # the name lists the same number of units ("Augusta, Staunton + Waynesboro" = 3)
    for f, name in p.loc[p["bea_combined_area"], ["fips", "geo_name"]].drop_duplicates("fips").itertuples(index=False):
        n_named = len(re.split(r",\s*|\s*\+\s*", re.sub(r",\s*[A-Z]{2}\*?$", "", name)))
        if "(includes" in name:
            n_named = 2
        if n_named != len(BEA_COMBINED_AREAS[f]):
            raise RawInputError(source, f"{_file(source)}, column 'GeoName': {f} {name!r} names {n_named} units but "
                                        f"BEA_COMBINED_AREAS lists {len(BEA_COMBINED_AREAS[f])}")
    p["bea_area_footnote"] = p["geo_name"].str.rstrip().str.endswith("*").astype(bool)
    p["area_name"] = p["geo_name"].str.rstrip().str.rstrip("*").str.rstrip()
    p["state_fips"] = p["fips"].str.slice(0, 2)
    vals = ["personal_income_thousands", "population", "pcpi"]
    p["bea_not_published"] = p[vals].isna().all(axis=1).astype(bool)
    p["us_pcpi"] = p["year"].map(us).astype("Int64")
    pcpi = p["pcpi"].astype("float64")
    p["log_pcpi"] = np.log(pcpi.where(pcpi > 0))
    p["log_pcpi_rel_us"] = p["log_pcpi"] - np.log(p["us_pcpi"].astype("float64"))
    p["year"] = p["year"].astype("int64")

    implied = p["personal_income_thousands"].astype("float64") * 1_000 / p["population"].astype("float64")
    gap = (implied - pcpi).abs()
    bad = gap > 1.0
    if bad.any():
        rows = p[bad]
        examples = [f"fips={f} year={y}" for f, y in zip(rows["fips"], rows["year"])][:MAX_LINES]
        raise RawInputError(source, f"{_file(source)}, columns <year>: per-capita income differs from personal "
                                    f"income / population by more than $1 on {int(bad.sum())} row(s): {examples}")
    p = p[INCOME_COLUMNS].sort_values(["fips", "year"], kind="stable").reset_index(drop=True)
    p["bea_component_fips"] = p["bea_component_fips"].astype("str")
    return p, income_report(p, dropped, gap)


def income_report(panel: pd.DataFrame, dropped: pd.DataFrame, gap: pd.Series) -> dict:
    """Areas, dropped non-county rows, the combined areas and their components, missing counts."""
    published = panel[~panel["bea_not_published"]]
    combined = {}
    for f, d in panel[panel["bea_combined_area"]].groupby("fips"):
        yrs = d.loc[~d["bea_not_published"], "year"]
        comps = BEA_COMBINED_AREAS[f]
        overlap = published[published["fips"].isin(comps) & published["year"].isin(yrs)]
        combined[f] = {"name": d["area_name"].iloc[0], "components": list(comps),
                       "years": f"{int(yrs.min())}-{int(yrs.max())}" if len(yrs) else None,
                       "components_also_published_same_year": sorted(set(overlap["fips"]))}
    return {
        "panel": PANEL_INCOME,
        "rows": int(len(panel)),
        "areas": int(panel["fips"].nunique()),
        "areas_published_per_year": {str(y): int(n) for y, n in published.groupby("year")["fips"].nunique().items()},
        "area_years_not_published": int(panel["bea_not_published"].sum()),
        "non_county_rows_dropped": {f: n for f, n in zip(dropped["fips"], dropped["geo_name"])},
        "combined_areas": combined,
        "missing": {c: int(n) for c, n in panel.isna().sum().items() if n and c != "bea_component_fips"},
        "pcpi_identity_max_abs_diff_dollars": round(float(gap.max()), 4) if gap.notna().any() else None,
    }


def build_income_from_cache() -> tuple[pd.DataFrame, dict]:
    """Read the raw CAINC1 file (through ``fetch``) and build ``us_counties_income``."""
    return build_income(read_longrun_raw(BEA_SOURCE))
