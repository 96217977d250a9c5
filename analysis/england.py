"""Build the England panel ``england_lads``: local authority district x year, 2023 boundaries.

One row per English local authority district (LAD) on the **2023 vintage** (296 districts) and
year 1997-2023. Every source is moved onto the 2023 codes before it is joined:

* older codes are aggregated *forward* (many-to-one merges such as Buckinghamshire 2020,
  Northamptonshire 2021, Cumberland/Westmorland and Furness, North Yorkshire and Somerset 2023)
  with ``lad_all_codes`` (each code since 2011 -> its active 2023 successor), cross-checked
  against the ONS list of code changes (``ons_lad_code_changes``). An area is never split;
* counts (pubs and bars, population, charities) are summed, then densities are recomputed from
  the summed counts;
* means and rates (wellbeing, IMD score, social-infrastructure rates) are averaged with population
  weights (mid-year population of the same year on 2021 boundaries; 2020 for later years); if a
  component district is missing (a suppressed value, status ``u``/``x``) the merged value is
  missing too, never averaged over the districts that happen to be reported;
* a file that already carries the 2023 code of an area is used as is for that area (some ONS files
  list both the old and the new codes); codes *newer* than 2023 (Barnsley and Sheffield, 2025) are
  mapped back with the code-change list (those were recodings, not merges).

The builders are pure functions of data frames (``tidy_pubs``, ``tidy_population``,
``tidy_ons_indicator``, ``tidy_imd``, ``tidy_charities``, ``code_map``, ``to_lad23`` and
``build_england``) so that tests can run them on small synthetic files; reading (``read_england_raw``)
and the cache (``analysis.panels.load("england_lads")``) are apart. Variables are documented in
``data/codebook.yml``.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.schemas import RawInputError, require_columns

PANEL = "england_lads"
VINTAGE = 2023
YEARS: tuple[int, ...] = tuple(range(1997, 2024))
IMD_EDITIONS: tuple[int, ...] = (2004, 2007, 2010, 2015, 2019)
PUBS_YEARS: tuple[int, ...] = tuple(range(2001, 2019))
POP_YEARS: tuple[int, ...] = tuple(range(2001, 2021))
PUBS_COVERAGE_BREAK = 2015  # IDBR adds PAYE-only businesses from 2015 (ONS note 4)
PUBS_SIC2007_FROM = 2009  # earlier years converted from SIC 1992/2003 (ONS note 5)

PUBS_SOURCE = "ons_pubs_bars"
POP_SOURCE = "ons_population_lad21"
CODES_SOURCE = "lad_all_codes"
CHANGES_SOURCE = "ons_lad_code_changes"
CHARITY_SOURCE = "ncvo_charity_density"
IMD_SOURCES = {y: f"imd{y}_lad21" for y in IMD_EDITIONS}
WELLBEING_SOURCE = "ons_personal_wellbeing_estimates"
GDHI_SOURCE = "ons_gross_disposable_household_income_per_head"
CLAIMANT_SOURCE = "ons_claimant_count"
EMPLOYMENT_SOURCE = "ons_employment_rate"
LIBRARY_SOURCE = "ons_library_walk"
SPORTS_SOURCE = "ons_sports_facilities"
MUSEUMS_SOURCE = "ons_museums"

INPUTS: tuple[str, ...] = (
    PUBS_SOURCE, POP_SOURCE, CODES_SOURCE, CHANGES_SOURCE, CHARITY_SOURCE, *IMD_SOURCES.values(),
    WELLBEING_SOURCE, GDHI_SOURCE, CLAIMANT_SOURCE, EMPLOYMENT_SOURCE, LIBRARY_SOURCE, SPORTS_SOURCE,
    MUSEUMS_SOURCE,
)

LAD_PATTERN = re.compile(r"^E0[6-9]\d{6}$")
ANY_AREA_PATTERN = re.compile(r"^[EKNSW]\d{8}$")

# indicator (as published) -> panel column, per ONS "Explore local statistics" file
WELLBEING_INDICATORS = {"Satisfaction": "life_satisfaction", "Happiness": "happiness",
                        "Worthwhile": "worthwhile", "Anxiety": "anxiety"}
ONS_INDICATORS: dict[str, dict[str, str]] = {
    WELLBEING_SOURCE: WELLBEING_INDICATORS,
    GDHI_SOURCE: {"Gross disposable household income": "gdhi_per_head"},
    CLAIMANT_SOURCE: {"Claimant Count": "claimant_rate"},
    EMPLOYMENT_SOURCE: {"Employment rate": "employment_rate"},
    LIBRARY_SOURCE: {"Residents within a 30 minute walk of their nearest library": "library_walk_pct_2024"},
    SPORTS_SOURCE: {"Sports facilities": "sports_facilities_per_10k_2023"},
    MUSEUMS_SOURCE: {"museums": "museums_per_100k_2021"},
}
ONS_COLUMNS = ("areacd", "indicator", "period", "observation", "status")
CROSS_SECTIONS = (LIBRARY_SOURCE, SPORTS_SOURCE, MUSEUMS_SOURCE)

PUBS_BANDS = {"Less than 10": "n_pubs_bars_lt10", "10 or more": "n_pubs_bars_10plus",
              "Any number of employees": "n_pubs_bars"}
PUBS_ID_COLUMNS = ("Area code", "Area name", "Number of employees in public house or bar")

PANEL_COLUMNS = [
    "lad_code", "year", "lad_name", "region_name", "n_source_codes", "population",
    "n_pubs_bars", "n_pubs_bars_lt10", "n_pubs_bars_10plus", "pubs_per_10k",
    "pubs_post_2015_coverage", "pubs_pre_2009_sic_conversion",
    "life_satisfaction", "happiness", "worthwhile", "anxiety",
    "gdhi_per_head", "log_gdhi_per_head", "claimant_rate", "employment_rate",
    "imd_score", "imd_rank",
    "n_charities_2020", "charities_per_1k_2020",
    "library_walk_pct_2024", "sports_facilities_per_10k_2023", "museums_per_100k_2021",
]


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def read_england_raw(name: str, path: Path | None = None) -> pd.DataFrame:
    """One raw England file (``fetch``-ed unless ``path`` is given) as text columns.

    A leading byte-order mark is dropped (some ONS files have one), every cell is kept as text
    (codes keep their zeros; numbers are parsed by the tidy functions, which know the formats).
    """
    if path is None:
        from analysis.fetch import fetch

        path = fetch(name)
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""])
    except Exception as exc:  # name the file in any parsing error
        raise RawInputError(name, f"could not read {path.name}: {exc}") from exc


def _clean_codes(values: pd.Series) -> pd.Series:
    # str.strip also removes the non-breaking spaces that trail some codes in the population file
    return values.astype("string").str.strip().astype(object)


def _numbers(values: pd.Series, source: str, column: str, *, thousands: bool = False) -> pd.Series:
    """Text -> float; blanks are missing; anything else unparseable raises naming file and column."""
    text = values.astype("string").str.strip()
    if thousands:
        text = text.str.replace(",", "", regex=False)
    out = pd.to_numeric(text, errors="coerce")
    bad = text.notna() & (text != "") & out.isna()
    if bad.any():
        examples = ", ".join(repr(v) for v in text[bad].unique()[:5])
        raise RawInputError(source, f"column {column!r} has values that are not numbers: {examples}")
    return out.astype("float64")


# --------------------------------------------------------------------------------------------
# Codes: any vintage -> 2023
# --------------------------------------------------------------------------------------------


def code_map(codes: pd.DataFrame, changes: pd.DataFrame | None = None,
             source: str = CODES_SOURCE) -> pd.DataFrame:
    """English LAD codes (any vintage since 2011) -> their 2023 successor, with names and region.

    Columns: ``code``, ``lad_code`` (2023), ``lad_name``, ``region_name``. From ``lad_all_codes``
    (``LADCD`` -> ``LADCD_ACTIVE``). With ``changes`` (ONS code changes), every merger up to 2023 must
    agree with the mapping (else :class:`RawInputError`), and codes introduced *after* 2023 by a
    pure recoding (type ``new_code``) are added, mapped back to the 2023 code they replaced.
    """
    require_columns(source, codes, ["LADCD", "LADCD_ACTIVE", "LADNM_ACTIVE", "RGNNM"], "code lookup")
    c = codes.assign(LADCD=_clean_codes(codes["LADCD"]), LADCD_ACTIVE=_clean_codes(codes["LADCD_ACTIVE"]))
    c = c[c["LADCD"].str.match(LAD_PATTERN) & c["LADCD_ACTIVE"].str.match(LAD_PATTERN)]
    if c["LADCD"].duplicated().any():
        dup = c.loc[c["LADCD"].duplicated(), "LADCD"].unique()[:5]
        raise RawInputError(source, f"codes mapped to more than one successor (would split an area): {list(dup)}")
    active = c[c["LADCD"] == c["LADCD_ACTIVE"]].set_index("LADCD")
    out = pd.DataFrame({"code": c["LADCD"].to_numpy(), "lad_code": c["LADCD_ACTIVE"].to_numpy()})
    if changes is not None:
        require_columns(CHANGES_SOURCE, changes, ["oldcd", "newcd", "type", "start"], "code changes")
        ch = changes.assign(oldcd=_clean_codes(changes["oldcd"]), newcd=_clean_codes(changes["newcd"]),
                            start=pd.to_numeric(changes["start"], errors="coerce"))
        ch = ch[ch["oldcd"].str.match(LAD_PATTERN) & ch["newcd"].str.match(LAD_PATTERN)]
        lookup = dict(zip(out["code"], out["lad_code"]))
        merged = ch[(ch["type"] == "merger") & (ch["start"] <= VINTAGE)]
        for old, new in zip(merged["oldcd"], merged["newcd"]):
            if old in lookup and lookup[old] != lookup.get(new, new):
                raise RawInputError(CHANGES_SOURCE, f"{old} merges into {new}, but {source} maps it to {lookup[old]}")
        later = ch[(ch["type"] == "new_code") & (ch["start"] > VINTAGE) & ch["oldcd"].isin(active.index)]
        later = later[~later["newcd"].isin(out["code"])]
        out = pd.concat([out, pd.DataFrame({"code": later["newcd"].to_numpy(), "lad_code": later["oldcd"].to_numpy()})],
                        ignore_index=True)
    out["lad_name"] = out["lad_code"].map(active["LADNM_ACTIVE"])
    out["region_name"] = out["lad_code"].map(active["RGNNM"])
    if out["lad_name"].isna().any():
        missing = out.loc[out["lad_name"].isna(), "lad_code"].unique()[:5]
        raise RawInputError(source, f"2023 codes without an active row: {list(missing)}")
    return out.reset_index(drop=True)


def to_lad23(df: pd.DataFrame, values: Iterable[str], cmap: pd.DataFrame, *, source: str,
             rule: str = "sum", weights: pd.DataFrame | None = None, by: Iterable[str] = ("year",)) -> pd.DataFrame:
    """Aggregate ``df`` (column ``code`` on any vintage, plus ``by``) onto the 2023 codes.

    ``rule="sum"`` adds the components; ``rule="wmean"`` averages them with ``weights`` (columns
    ``code``, ``year``, ``weight``: population on 2021 codes; the latest year available stands in for
    later years). Either way a merged value is missing if any component is missing. Where ``df``
    already has the 2023 code of an area (in a ``by`` group), that row is used and the older codes
    of the area are dropped. Codes unknown to ``cmap`` raise :class:`RawInputError` naming ``source``.
    Returns ``lad_code``, ``by``..., ``n_source_codes`` and the values.
    """
    values, by = list(values), list(by)
    if rule not in ("sum", "wmean"):
        raise ValueError(f"rule must be 'sum' or 'wmean', not {rule!r}")
    lookup = dict(zip(cmap["code"], cmap["lad_code"]))
    unknown = sorted(set(df["code"]) - set(lookup))
    if unknown:
        raise RawInputError(source, f"{len(unknown)} LAD code(s) not in the code lookup: {unknown[:5]}")
    d = df.assign(lad_code=df["code"].map(lookup))
    # a row already on the 2023 code wins over the old codes of the same area
    own = d["code"] == d["lad_code"]
    has_own = d[own].groupby([*by, "lad_code"]).size().rename("_has_own")
    d = d.join(has_own, on=[*by, "lad_code"])
    d = d[own | d["_has_own"].isna()].drop(columns="_has_own")
    if d.duplicated(["code", *by]).any():
        raise RawInputError(source, "duplicate rows for the same code and period")
    keys = ["lad_code", *by]
    if rule == "wmean":
        if weights is None:
            raise ValueError("rule='wmean' needs weights")
        w = weights.rename(columns={"year": "_wyear"})
        last = int(w["_wyear"].max())
        first = int(w["_wyear"].min())
        wyear = d["year"].clip(lower=first, upper=last) if "year" in by else pd.Series(last, index=d.index)
        d = d.assign(_wyear=wyear.astype("int64")).merge(w, on=["code", "_wyear"], how="left")
        multi = d.groupby(keys)["code"].transform("size") > 1
        if (multi & d["weight"].isna()).any():
            miss = sorted(d.loc[multi & d["weight"].isna(), "code"].unique())[:5]
            raise RawInputError(source, f"no population weight for merged code(s) {miss}")
        d["weight"] = d["weight"].where(multi, 1.0)
    g = d.groupby(keys, sort=True)
    out = g.size().rename("n_source_codes").to_frame()
    for v in values:
        incomplete = d[v].isna().groupby([d[k] for k in keys]).any()
        if rule == "sum":
            agg = g[v].sum(min_count=1)
        else:
            agg = (d[v] * d["weight"]).groupby([d[k] for k in keys]).sum() / d["weight"].groupby([d[k] for k in keys]).sum()
        out[v] = agg.where(~incomplete)
    return out.reset_index()


# --------------------------------------------------------------------------------------------
# Tidy each source
# --------------------------------------------------------------------------------------------


def tidy_pubs(raw: pd.DataFrame, source: str = PUBS_SOURCE) -> pd.DataFrame:
    """ONS public houses and bars: one row per English LAD (2018 codes) and year, three counts.

    Counts as published (rounded to 5, thousands commas removed); footnote and blank rows (no area
    code) dropped; ``n_pubs_bars`` is the published "any number of employees" count (not the sum
    of the rounded bands).
    """
    require_columns(source, raw, PUBS_ID_COLUMNS, "pubs and bars by local authority")
    year_cols = [f"count_{y}" for y in PUBS_YEARS]
    require_columns(source, raw, year_cols, "one count column per year 2001-2018")
    d = raw.assign(code=_clean_codes(raw["Area code"].fillna("")))
    d = d[d["code"].str.match(ANY_AREA_PATTERN)]  # footnotes, source lines and blanks have no code
    d = d[d["code"].str.match(LAD_PATTERN)]
    band = d["Number of employees in public house or bar"].str.strip()
    unknown = sorted(set(band) - set(PUBS_BANDS))
    if unknown:
        raise RawInputError(source, f"unknown employee size band(s) {unknown}")
    long = d.assign(band=band.map(PUBS_BANDS)).melt(id_vars=["code", "band"], value_vars=year_cols,
                                                       var_name="col", value_name="text")
    long["n"] = _numbers(long["text"], source, "count_<year>", thousands=True)
    long["year"] = long["col"].str.slice(6).astype("int64")
    if long.duplicated(["code", "band", "year"]).any():
        raise RawInputError(source, "an area appears twice with the same size band")
    wide = long.pivot(index=["code", "year"], columns="band", values="n").reset_index()
    for c in PUBS_BANDS.values():
        if c not in wide:
            raise RawInputError(source, f"size band for {c} missing")
    wide.columns.name = None
    return wide[["code", "year", *PUBS_BANDS.values()]]


def tidy_population(raw: pd.DataFrame, source: str = POP_SOURCE) -> pd.DataFrame:
    """Mid-year population, English LADs (2021 codes) x 2001-2020, long; junk rows dropped."""
    require_columns(source, raw, ["code", *map(str, POP_YEARS)], "mid-year population, wide by year")
    d = raw.assign(code=_clean_codes(raw["code"].fillna("")))
    d = d[d["code"].str.match(LAD_PATTERN)]
    if d["code"].duplicated().any():
        raise RawInputError(source, f"duplicate codes {sorted(d.loc[d['code'].duplicated(), 'code'])[:5]}")
    long = d.melt(id_vars="code", value_vars=[str(y) for y in POP_YEARS], var_name="year", value_name="text")
    long["population"] = _numbers(long["text"], source, "<year>", thousands=True)
    long["year"] = long["year"].astype("int64")
    if long["population"].isna().any():
        raise RawInputError(source, "missing population for some LAD and year 2001-2020")
    return long[["code", "year", "population"]]


def _period_year(period: pd.Series, source: str) -> pd.Series:
    year = pd.to_numeric(period.astype("string").str.slice(0, 4), errors="coerce")
    if year.isna().any():
        raise RawInputError(source, f"column 'period' has values without a year: {period[year.isna()].unique()[:3]}")
    return year.astype("int64")


def tidy_ons_indicator(raw: pd.DataFrame, source: str, indicators: Mapping[str, str] | None = None) -> pd.DataFrame:
    """ONS "Explore local statistics" long file -> English LAD codes x year, one column per indicator.

    ``year`` is the first year of ``period`` (``2011-04-01/P1Y`` is financial year 2011/12 -> 2011);
    rows with status ``u`` (unreliable) or ``x`` (not available) are missing whatever their value;
    codes of any vintage are kept (``to_lad23`` moves them to 2023). A code listed twice under two
    geography labels must carry the same value.
    """
    indicators = dict(indicators or ONS_INDICATORS[source])
    require_columns(source, raw, ONS_COLUMNS, "ONS Explore local statistics layout")
    d = raw.assign(code=_clean_codes(raw["areacd"].fillna("")))
    d = d[d["code"].str.match(LAD_PATTERN)]
    found = set(d["indicator"])
    missing = [i for i in indicators if i not in found]
    if missing:
        raise RawInputError(source, f"indicator(s) {missing} not in column 'indicator' (found {sorted(found)})")
    d = d[d["indicator"].isin(list(indicators))]
    value = _numbers(d["observation"], source, "observation")
    status = d["status"].fillna("").str.strip().str.lower()
    value = value.where(~status.isin(["u", "x"]))
    long = pd.DataFrame({"code": d["code"].to_numpy(), "year": _period_year(d["period"], source).to_numpy(),
                         "var": d["indicator"].map(indicators).to_numpy(), "value": value.to_numpy()})
    dup = long.duplicated(["code", "year", "var"], keep=False)
    if dup.any():
        conflicting = long[dup].groupby(["code", "year", "var"])["value"].nunique(dropna=False) > 1
        if conflicting.any():
            raise RawInputError(source, f"conflicting duplicate rows, e.g. {conflicting[conflicting].index[0]}")
        long = long.drop_duplicates(["code", "year", "var"])
    wide = long.pivot(index=["code", "year"], columns="var", values="value").reset_index()
    wide.columns.name = None
    return wide[["code", "year", *indicators.values()]]


def tidy_imd(raw: pd.DataFrame, edition: int, source: str | None = None) -> pd.DataFrame:
    """IMD aggregated to 2021 LADs: ``code``, ``year`` (= edition) and ``imd_score`` (average score)."""
    source = source or IMD_SOURCES[edition]
    require_columns(source, raw, ["ltla21_code", "Score"], "IMD by 2021 LAD")
    code = _clean_codes(raw["ltla21_code"].fillna(""))
    out = pd.DataFrame({"code": code, "year": edition, "imd_score": _numbers(raw["Score"], source, "Score")})
    return out[out["code"].str.match(LAD_PATTERN)].reset_index(drop=True)


def tidy_charities(raw: pd.DataFrame, source: str = CHARITY_SOURCE) -> pd.DataFrame:
    """NCVO general charities (2019 codes): ``code``, count and the implied population denominator.

    The denominator (count / density x 1,000) lets merged areas get an exact density: summed
    counts over summed denominators.
    """
    dens_col = "Charity density (per 1,000 people)"
    require_columns(source, raw, ["LAD19CD", "Number of charities", dens_col], "NCVO charity density")
    d = raw.assign(code=_clean_codes(raw["LAD19CD"].fillna("")))
    d = d[d["code"].str.match(LAD_PATTERN)]
    n = _numbers(d["Number of charities"], source, "Number of charities", thousands=True)
    dens = _numbers(d[dens_col], source, dens_col)
    return pd.DataFrame({"code": d["code"].to_numpy(), "n_charities_2020": n.to_numpy(),
                         "charity_denominator": (n / dens * 1_000).to_numpy()})


# --------------------------------------------------------------------------------------------
# The panel
# --------------------------------------------------------------------------------------------


def _static(df: pd.DataFrame, values, cmap, source, weights, rule="wmean") -> pd.DataFrame:
    """A one-period cross-section on 2023 codes (no year key)."""
    d = df.drop(columns=[c for c in ("year",) if c in df])
    d = d.assign(_p=0)
    out = to_lad23(d, values, cmap, source=source, rule=rule, weights=weights, by=("_p",))
    return out.drop(columns=["_p", "n_source_codes"])


def build_england(frames: Mapping[str, pd.DataFrame]) -> tuple[pd.DataFrame, dict]:
    """The ``england_lads`` panel and a build report, from the raw frames keyed by manifest name."""
    missing = [n for n in INPUTS if n not in frames]
    if missing:
        raise KeyError(f"build_england needs the raw frames {missing}")
    cmap = code_map(frames[CODES_SOURCE], frames[CHANGES_SOURCE])
    lads = cmap.drop_duplicates("lad_code").set_index("lad_code")[["lad_name", "region_name"]].sort_index()
    report: dict = {"vintage": VINTAGE, "n_lads": int(len(lads))}

    pop21 = tidy_population(frames[POP_SOURCE])
    weights = pop21.rename(columns={"population": "weight"})
    pop = to_lad23(pop21, ["population"], cmap, source=POP_SOURCE, rule="sum")
    report["population_codes_in"] = int(pop21["code"].nunique())

    pubs18 = tidy_pubs(frames[PUBS_SOURCE])
    pubs = to_lad23(pubs18, list(PUBS_BANDS.values()), cmap, source=PUBS_SOURCE, rule="sum")
    report["pubs_codes_in"] = int(pubs18["code"].nunique())

    panel = pd.MultiIndex.from_product([lads.index, YEARS], names=["lad_code", "year"]).to_frame(index=False)
    panel = panel.join(lads, on="lad_code")
    src_counts = pd.concat([pop[["lad_code", "n_source_codes"]], pubs[["lad_code", "n_source_codes"]]])
    panel["n_source_codes"] = panel["lad_code"].map(src_counts.groupby("lad_code")["n_source_codes"].max()).astype("Int64")
    panel = panel.merge(pop.drop(columns="n_source_codes"), on=["lad_code", "year"], how="left")
    panel = panel.merge(pubs.drop(columns="n_source_codes"), on=["lad_code", "year"], how="left")
    panel["pubs_per_10k"] = panel["n_pubs_bars"] / panel["population"] * 10_000
    panel["pubs_post_2015_coverage"] = panel["year"] >= PUBS_COVERAGE_BREAK
    panel["pubs_pre_2009_sic_conversion"] = panel["year"] < PUBS_SIC2007_FROM

    for source in (WELLBEING_SOURCE, GDHI_SOURCE, CLAIMANT_SOURCE, EMPLOYMENT_SOURCE):
        t = tidy_ons_indicator(frames[source], source)
        cols = list(ONS_INDICATORS[source].values())
        agg = to_lad23(t, cols, cmap, source=source, rule="wmean", weights=weights)
        panel = panel.merge(agg.drop(columns="n_source_codes"), on=["lad_code", "year"], how="left")
        report[f"{source}_codes_in"] = int(t["code"].nunique())
        report[f"{source}_merged_missing"] = int(agg[cols].isna().sum().sum())
    panel["log_gdhi_per_head"] = np.log(panel["gdhi_per_head"])

    imd = pd.concat([tidy_imd(frames[IMD_SOURCES[e]], e) for e in IMD_EDITIONS], ignore_index=True)
    imd = to_lad23(imd, ["imd_score"], cmap, source="imd*_lad21", rule="wmean", weights=weights)
    # rank 1 = most deprived, within each edition, among the 2023 districts
    imd["imd_rank"] = imd.groupby("year")["imd_score"].rank(ascending=False, method="min").astype("Int64")
    panel = panel.merge(imd.drop(columns="n_source_codes"), on=["lad_code", "year"], how="left")

    ch = tidy_charities(frames[CHARITY_SOURCE])
    ch = _static(ch, ["n_charities_2020", "charity_denominator"], cmap, CHARITY_SOURCE, None, rule="sum")
    ch["charities_per_1k_2020"] = ch["n_charities_2020"] / ch["charity_denominator"] * 1_000
    panel = panel.merge(ch.drop(columns="charity_denominator"), on="lad_code", how="left")

    for source in CROSS_SECTIONS:
        t = tidy_ons_indicator(frames[source], source)
        cols = list(ONS_INDICATORS[source].values())
        panel = panel.merge(_static(t, cols, cmap, source, weights), on="lad_code", how="left")

    for c in ("population", "n_pubs_bars", "n_pubs_bars_lt10", "n_pubs_bars_10plus", "n_charities_2020"):
        panel[c] = panel[c].round().astype("Int64")
    panel = panel[PANEL_COLUMNS].sort_values(["lad_code", "year"]).reset_index(drop=True)
    report["rows"] = int(len(panel))
    report["merged_lads"] = int((panel.drop_duplicates("lad_code")["n_source_codes"] > 1).sum())
    report["non_missing"] = {c: int(panel[c].notna().sum()) for c in PANEL_COLUMNS[5:]}
    return panel, report


def build_england_from_cache() -> tuple[pd.DataFrame, dict]:
    """Read every raw input (through ``fetch``) and build the panel."""
    return build_england({n: read_england_raw(n) for n in INPUTS})


def bench_england_build() -> float:
    """Seconds for a cold build of ``england_lads``: read the raw files, build, validate."""
    from analysis.schemas import validate

    t0 = time.perf_counter()
    df, _ = build_england_from_cache()
    validate(PANEL, df)
    return time.perf_counter() - t0


# --------------------------------------------------------------------------------------------
# Views of the panel used by Chapter 10
# --------------------------------------------------------------------------------------------


def england_cross_section(panel: pd.DataFrame) -> pd.DataFrame:
    """One row per LAD: the cross-sections, IMD ranks 2004 and 2019, the rank change and pubs.

    ``imd_rank_change_2004_2019`` = rank 2004 - rank 2019: positive means the district moved towards
    the most deprived end of the ranking (rank 1). ``pubs_per_10k_2018`` and the change since 2009
    (the first year on SIC 2007) come from the panel.
    """
    first = panel.groupby("lad_code").first()
    cols = ["lad_name", "region_name", "n_charities_2020", "charities_per_1k_2020", "library_walk_pct_2024",
            "sports_facilities_per_10k_2023", "museums_per_100k_2021"]
    cs = first[cols].copy()
    imd = panel.pivot(index="lad_code", columns="year", values="imd_rank")
    score = panel.pivot(index="lad_code", columns="year", values="imd_score")
    cs["imd_score_2019"] = score[2019]
    for e in (2004, 2019):
        cs[f"imd_rank_{e}"] = imd[e].astype("float64")
    cs["imd_rank_change_2004_2019"] = cs["imd_rank_2004"] - cs["imd_rank_2019"]
    pubs = panel.pivot(index="lad_code", columns="year", values="pubs_per_10k")
    cs["pubs_per_10k_2018"] = pubs[2018]
    cs["pubs_change_2009_2018"] = pubs[2018] - pubs[2009]
    return cs.reset_index()


def cross_section_ols(cs: pd.DataFrame, y: str, x: str) -> dict:
    """OLS of ``y`` on a constant and ``x`` (one row per LAD, complete cases), HC1 standard errors.

    Returns slope, HC1 SE, t, p (normal), n, Pearson r, Spearman rho, and the slope per SD of x.
    """
    import statsmodels.api as sm
    from scipy import stats

    d = cs[[y, x]].dropna()
    if len(d) < 3:
        raise ValueError(f"cross_section_ols: fewer than 3 complete rows for {y} on {x}")
    res = sm.OLS(d[y].to_numpy(), sm.add_constant(d[x].to_numpy())).fit(cov_type="HC1")
    return {"y": y, "x": x, "slope": float(res.params[1]), "se_hc1": float(res.bse[1]), "t": float(res.tvalues[1]),
            "p": float(res.pvalues[1]), "n": int(len(d)), "pearson_r": float(np.corrcoef(d[x], d[y])[0, 1]),
            "spearman_rho": float(stats.spearmanr(d[x], d[y]).statistic),
            "slope_per_sd_x": float(res.params[1] * d[x].std(ddof=1))}


TWFE_OUTCOMES = {"life_satisfaction": "Life satisfaction (0-10)", "log_gdhi_per_head": "Log GDHI per head",
                 "claimant_rate": "Claimant rate (%)", "employment_rate": "Employment rate (%)"}
TWFE_WINDOWS = {"2009-2018 (SIC 2007 years)": (2009, 2018), "2009-2014 (before the 2015 coverage break)": (2009, 2014),
                "2001-2018 (all years)": (2001, 2018)}


# City of London (about 8,000 residents, hundreds of pubs serving commuters) and the Isles of
# Scilly (about 2,000): per-resident densities there measure daytime or visitor demand, not local
# social infrastructure, and their swings dominate within-district variation.
SMALL_RESIDENT_LADS: tuple[str, ...] = ("E09000001", "E06000053")


def pubs_twfe(panel: pd.DataFrame, outcomes: Mapping[str, str] = TWFE_OUTCOMES,
              windows: Mapping[str, tuple[int, int]] = TWFE_WINDOWS,
              exclude: Iterable[str] = SMALL_RESIDENT_LADS) -> pd.DataFrame:
    """TWFE (LAD + year effects, SEs clustered by LAD) of each outcome on pubs per 10,000, by window.

    Districts in ``exclude`` are dropped (default :data:`SMALL_RESIDENT_LADS`). One row per
    (outcome, window): coefficient, SE, p, 95% CI, nobs, LADs, years, and the coefficient per
    within-LAD SD of pubs per 10,000.
    """
    from analysis.estimation import ModelSpec, effect_sizes, fit

    panel = panel[~panel["lad_code"].isin(list(exclude))]
    rows = []
    for y in outcomes:
        for label, (a, b) in windows.items():
            d = panel[panel["year"].between(a, b)]
            r = fit(ModelSpec(outcome=y, regressors=("pubs_per_10k",), estimator="twfe", cov="cluster-unit",
                              entity="lad_code", time="year"), d)
            ci = r.ci(0.95).loc["pubs_per_10k"]
            sd = effect_sizes(r, d).loc["per within-unit SD", "scale"]
            rows.append({"outcome": y, "window": label, "coef": r.params["pubs_per_10k"],
                         "se": r.std_errors["pubs_per_10k"], "p": r.pvalues["pubs_per_10k"],
                         "ci_low": ci.iloc[0], "ci_high": ci.iloc[1], "per_within_sd": r.params["pubs_per_10k"] * sd,
                         "nobs": r.nobs, "n_lads": r.n_units, "n_years": r.n_periods})
    return pd.DataFrame(rows).set_index(["outcome", "window"])


#: The sign of a change in each outcome that the thesis predicts for more pubs per resident.
THESIS_SIGN: dict[str, int] = {"life_satisfaction": 1, "log_gdhi_per_head": 1, "claimant_rate": -1,
                               "employment_rate": 1}

#: Outcomes of :data:`TWFE_OUTCOMES` whose definition changed within the pubs years. From 2013
#: Universal Credit replaced Jobseeker's Allowance district by district ("full service" mostly
#: 2016-2018) and required more claimants to look for work, so it raised the claimant count where
#: it arrived, at different dates in different districts. The employment rate (APS, ILO
#: definition), GDHI (revisions are carried back through the series) and life satisfaction
#: (the same APS question since 2011) kept their definitions.
DEFINITION_CHANGED: dict[str, str] = {
    "claimant_rate": "Universal Credit, rolled out by district from 2013, widened who counts as a claimant",
}

#: The two segments of the main window either side of the 2015 coverage change of the pubs count.
BREAK_SEGMENTS: dict[str, tuple[int, int]] = {"2009-2014": (2009, 2014), "2015-2018": (2015, 2018)}


def _segment_design(panel: pd.DataFrame, y: str, segments: Mapping[str, tuple[int, int]]) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Rows of ``segments`` with ``y`` and pubs observed; one pubs column and the year dummies per segment.

    Each segment keeps its own district effects (entity ``lad_code:segment``) and year dummies
    for every year but its first, so no comparison crosses from one segment to the other.
    """
    parts, slopes, years = [], [], []
    for label, (a, b) in segments.items():
        d = panel[panel["year"].between(a, b)].dropna(subset=[y, "pubs_per_10k"]).copy()
        d["segment"] = d["lad_code"] + ":" + label
        parts.append(d.assign(_seg=label))
    d = pd.concat(parts, ignore_index=True)
    for label in segments:
        col = f"pubs_{label}"
        d[col] = d["pubs_per_10k"].where(d["_seg"] == label, 0.0)
        slopes.append(col)
        seg_years = sorted(d.loc[d["_seg"] == label, "year"].unique())
        for t in seg_years[1:]:
            d[f"year_{t}"] = (d["year"] == t).astype(float)
            years.append(f"year_{t}")
    return d.drop(columns="_seg"), slopes, years


def pubs_break_test(panel: pd.DataFrame, outcomes: Mapping[str, str] = TWFE_OUTCOMES,
                    segments: Mapping[str, tuple[int, int]] = BREAK_SEGMENTS,
                    exclude: Iterable[str] = SMALL_RESIDENT_LADS) -> pd.DataFrame:
    r"""Slopes on pubs per 10,000 within each segment of the 2015 break, their difference, and across it.

    One regression per outcome, on the years of both ``segments`` (default 2009-2014 and 2015-2018):

    .. math:: y_{it} = \beta_{pre}\,p_{it}1[t\le 2014] + \beta_{post}\,p_{it}1[t\ge 2015] + \alpha_{i,s(t)} + \delta_t + u_{it}

    with district-by-segment effects :math:`\alpha_{i,s}` and year effects, so each slope uses only
    changes within its segment (and equals the TWFE estimate on that window alone); standard errors
    clustered by district (CR1, :math:`t` with :math:`G-1` df), which estimates the covariance of
    the two slopes, so the difference :math:`\beta_{post}-\beta_{pre}` has a proper test.
    ``across`` is what the segments leave out: across districts, the slope of the change in the
    outcome's segment mean on the change in the pubs segment mean (HC1), the comparison that a
    TWFE on the whole window adds and that spans the break. Districts in ``exclude`` are dropped.
    Returns one row per outcome.
    """
    from scipy import stats

    from analysis.estimation import ModelSpec, fit

    if len(segments) != 2:
        raise ValueError("pubs_break_test compares exactly two segments")
    panel = panel[~panel["lad_code"].isin(list(exclude))]
    (s0, s1) = list(segments)
    rows = []
    for y in outcomes:
        d, slopes, years = _segment_design(panel, y, segments)
        r = fit(ModelSpec(outcome=y, regressors=tuple(slopes), controls=tuple(years), estimator="fe",
                          cov="cluster-state", entity="segment", time="year", state="lad_code"), d)
        b, V = r.params, r.cov
        diff = float(b[slopes[1]] - b[slopes[0]])
        diff_se = float(np.sqrt(V.loc[slopes[0], slopes[0]] + V.loc[slopes[1], slopes[1]] - 2 * V.loc[slopes[0], slopes[1]]))
        means = d.groupby(["lad_code", "segment"])[[y, "pubs_per_10k"]].mean().reset_index()
        means["seg"] = means["segment"].str.split(":").str[1]
        wide = means.pivot(index="lad_code", columns="seg", values=[y, "pubs_per_10k"]).dropna()
        changes = pd.DataFrame({"d_y": wide[(y, s1)] - wide[(y, s0)],
                                "d_pubs": wide[("pubs_per_10k", s1)] - wide[("pubs_per_10k", s0)]})
        across = cross_section_ols(changes, "d_y", "d_pubs")
        rows.append({"outcome": y,
                     "pre": float(b[slopes[0]]), "pre_se": float(r.std_errors[slopes[0]]), "pre_p": float(r.pvalues[slopes[0]]),
                     "post": float(b[slopes[1]]), "post_se": float(r.std_errors[slopes[1]]), "post_p": float(r.pvalues[slopes[1]]),
                     "diff": diff, "diff_se": diff_se,
                     "diff_p": float(2 * stats.t.sf(abs(diff / diff_se), r.df_inference)),
                     "across": across["slope"], "across_se": across["se_hc1"], "across_p": across["p"],
                     "nobs": r.nobs, "n_lads": int(d["lad_code"].nunique())})
    return pd.DataFrame(rows).set_index("outcome")


def pubs_changes_by_year(panel: pd.DataFrame, outcome: str, years: Iterable[int] = range(2010, 2019),
                         exclude: Iterable[str] = SMALL_RESIDENT_LADS) -> pd.DataFrame:
    """For each year t, across districts: slope of the change in ``outcome`` from t-1 to t on the
    change in pubs per 10,000 over the same year (:func:`cross_section_ols`, HC1).

    Year by year, the one-year first differences that a TWFE model averages; a break shows as the
    years whose changes carry the association. One row per year: slope, se, p, n.
    """
    panel = panel[~panel["lad_code"].isin(list(exclude))]
    wide = panel.pivot(index="lad_code", columns="year", values=["pubs_per_10k", outcome])
    rows = {}
    for t in years:
        ch = pd.DataFrame({"d_y": wide[(outcome, t)] - wide[(outcome, t - 1)],
                           "d_pubs": wide[("pubs_per_10k", t)] - wide[("pubs_per_10k", t - 1)]})
        r = cross_section_ols(ch, "d_y", "d_pubs")
        rows[t] = {"slope": r["slope"], "se": r["se_hc1"], "p": r["p"], "n": r["n"]}
    out = pd.DataFrame(rows).T
    out.index.name = "year"
    return out.astype({"n": int})


def count_significant(table: pd.DataFrame, outcomes: Iterable[str], coef: str = "coef", p: str = "p",
                      alpha: float = 0.05, sign: Mapping[str, int] = THESIS_SIGN) -> dict[str, int]:
    """Of ``outcomes`` (index of ``table``), how many have ``p < alpha`` with the thesis's sign and
    how many with the opposite sign: ``{"thesis": ..., "against": ..., "n": ...}``."""
    outcomes = list(outcomes)
    t = table.loc[outcomes]
    sig = t[p] < alpha
    direction = np.sign(t[coef]) * pd.Series(sign).reindex(outcomes).to_numpy()
    return {"thesis": int((sig & (direction > 0)).sum()), "against": int((sig & (direction < 0)).sum()),
            "n": len(outcomes)}
