"""Schemas of the processed panels, and the two errors the data stage raises.

One pandera ``DataFrameSchema`` per panel (:data:`PANEL_SCHEMAS`): unique keys, dtypes, ranges
(percentages in [0, 100], shares in [0, 1], densities >= 0, years in the allowed set), which columns
may be missing and how much. :func:`validate` runs a schema lazily and turns pandera's
``SchemaErrors`` into one readable :class:`PanelValidationError` that names the panel, each failing
column and check, and up to five failing rows as ``fips``/``year``/``value``.

:class:`RawInputError` is for upstream files that do not look as expected (a renamed or missing
column): its message names the manifest entry and the missing columns.

pandera is imported lazily (first :func:`validate` call) so that loading cached panels stays fast.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    import pandera.pandas as pa

WAVE_YEARS: tuple[int, ...] = (1997, 2005, 2009, 2014)
ANNUAL_YEARS: tuple[int, ...] = tuple(range(2014, 2023))
CENSUS_REGIONS = ("Northeast", "Midwest", "South", "West")
CENSUS_DIVISIONS = (
    "New England", "Middle Atlantic", "East North Central", "West North Central", "South Atlantic",
    "East South Central", "West South Central", "Mountain", "Pacific",
)
# Size classes of county population: 10k is the smallest urban core of a micropolitan area, 50k the
# urbanised-area core of a metropolitan area, 250k the metro-size break of the USDA Rural-Urban
# Continuum Codes (see the codebook, variable pop_size_class).
POP_SIZE_CLASSES = ("<10k", "10k-50k", "50k-250k", "250k+")
POP_SIZE_BREAKS = (0, 10_000, 50_000, 250_000, float("inf"))
MAX_EXAMPLES = 5


class PanelValidationError(ValueError):
    """A processed panel failed its schema.

    Attributes: ``panel`` (name), ``columns`` (failing columns), ``checks`` (failing checks) and
    ``failure_cases`` (pandera's table of failures, one row per failing value).
    """

    def __init__(self, panel: str, message: str, failure_cases: pd.DataFrame | None = None, *,
                 columns: Iterable[str] = (), checks: Iterable[str] = ()):
        super().__init__(message)
        self.panel = panel
        self.failure_cases = failure_cases if failure_cases is not None else pd.DataFrame()
        self.columns = list(columns)
        self.checks = list(checks)


class RawInputError(ValueError):
    """An upstream file does not have the columns (or values) its reader expects."""

    def __init__(self, source: str, message: str, missing: Iterable[str] = ()):
        super().__init__(f"{source}: {message}")
        self.source = source
        self.missing = list(missing)


def require_columns(source: str, df: pd.DataFrame, columns: Iterable[str], what: str = "") -> None:
    """Raise :class:`RawInputError` naming ``source`` (a manifest name) and every missing column."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        found = ", ".join(map(str, df.columns))
        extra = f" ({what})" if what else ""
        raise RawInputError(
            source,
            f"missing column(s) {', '.join(repr(m) for m in missing)}{extra}; the file has: {found}",
            missing,
        )


# --------------------------------------------------------------------------------------------
# Schemas
# --------------------------------------------------------------------------------------------


def _max_missing(share: float) -> pa.Check:
    import pandera.pandas as pa

    return pa.Check(lambda s: bool(s.isna().mean() <= share), ignore_na=False, element_wise=False,
                    name=f"max_missing_share({share})")


def _num(lo: float | None = None, hi: float | None = None, *, nullable: bool = True,
          max_missing: float | None = None, dtype: str = "float64") -> pa.Column:
    import pandera.pandas as pa

    checks = []
    if lo is not None and hi is not None:
        checks.append(pa.Check.in_range(lo, hi))
    elif lo is not None:
        checks.append(pa.Check.ge(lo))
    if max_missing is not None:
        checks.append(_max_missing(max_missing))
    return pa.Column(dtype, checks, nullable=nullable)


def _count(*, nullable: bool = True, max_missing: float | None = None, positive: bool = False) -> pa.Column:
    return _num(1 if positive else 0, None, nullable=nullable, max_missing=max_missing, dtype="Int64")


def _quality() -> pa.Column:
    import pandera.pandas as pa

    return pa.Column("Int64", pa.Check.isin([1, 2, 3]), nullable=True)


def _str(pattern: str | None = None, *, isin: Iterable[str] | None = None, nullable: bool = False) -> pa.Column:
    import pandera.pandas as pa

    checks = []
    if pattern:
        checks.append(pa.Check.str_matches(pattern))
    if isin is not None:
        checks.append(pa.Check.isin(list(isin)))
    return pa.Column(str, checks, nullable=nullable)


def _frame_check(fn, name: str) -> pa.Check:
    """A data-frame-level check: ``fn(df)`` returns one boolean per row (False = failing row)."""
    import pandera.pandas as pa

    return pa.Check(fn, name=name)


def _le_or_missing(a: pd.Series, b: pd.Series) -> pd.Series:
    return ((a <= b) | a.isna() | b.isna()).astype(bool)


COUNT_COLUMNS = (
    "n_religious", "n_civic", "n_business", "n_political", "n_professional", "n_labour",
    "n_bowling", "n_fitness", "n_golf", "n_sports_clubs",
)
COUNT_COLUMNS_1997 = ("n_membership_sports", "n_membership_nec")


def _assn_identity(df: pd.DataFrame) -> pd.Series:
    """assn_per_1k = sum of all establishment counts / population x 1,000 (relative tol 1e-6)."""
    counts = df[list(COUNT_COLUMNS + COUNT_COLUMNS_1997)].astype("float64").sum(axis=1)
    implied = counts / df["population"].astype("float64") * 1_000
    ok = ((implied - df["assn_per_1k"]).abs() <= 1e-6 * implied.abs().clip(lower=1)).fillna(False)
    # a source gap (counts and density all missing together) is allowed; a half-missing row is not
    gap = df["assn_per_1k"].isna() & df[list(COUNT_COLUMNS)].isna().all(axis=1)
    return ok | gap


def _waves_schema() -> pa.DataFrameSchema:
    import pandera.pandas as pa

    cols: dict[str, pa.Column] = {
        "fips": _str(r"^\d{5}$"),
        "year": pa.Column("int64", pa.Check.isin(list(WAVE_YEARS))),
        "state_fips": _str(r"^\d{2}$"),
        "state_abbr": _str(r"^[A-Z]{2}$"),
        "county_name": _str(),
        "census_region": _str(isin=CENSUS_REGIONS),
        "census_division": _str(isin=CENSUS_DIVISIONS),
        "pop_size_class": pa.Column(pd.CategoricalDtype(list(POP_SIZE_CLASSES), ordered=True)),
        "population": _count(nullable=False, positive=True),
    }
    # counts and densities may be missing only for source gaps (panels.SOURCE_GAP_MIN_POPULATION)
    cols.update({c: _count(max_missing=0.001) for c in COUNT_COLUMNS})
    cols.update({c: _count(nullable=True) for c in COUNT_COLUMNS_1997})
    cols.update({
        "n_nonprofits": _count(max_missing=0.01),
        "assn_per_1k": _num(0, max_missing=0.001),
        "community_per_1k": _num(0, max_missing=0.001),
        "civic_religious_per_10k": _num(0, max_missing=0.001),
        "business_prof_labour_political_per_10k": _num(0, max_missing=0.001),
        "recreation_sports_per_10k": _num(0, max_missing=0.001),
        "nonprofits_per_10k": _num(0, max_missing=0.01),
        # votes cast / voting-age population: small counties exceed 100 (see codebook)
        "turnout_pct": _num(0, 250, max_missing=0.01),
        "census_response_pct": _num(0, 100, max_missing=0.01),
        "unemployment_rate": _num(0, 100, max_missing=0.01),
        "labour_force": _count(max_missing=0.01, positive=True),
        "employment": _count(max_missing=0.01),
        "poverty_rate": _num(0, 100, max_missing=0.01),
        "child_poverty_rate": _num(0, 100, max_missing=0.01),
        "median_hh_income": _num(1, max_missing=0.01),
        "log_median_hh_income": _num(0, 15, max_missing=0.01),
        "geo_adjusted": pa.Column(bool),
    })
    checks = [
        _frame_check(_assn_identity, "assn_per_1k_equals_counts_over_population_x1000"),
        _frame_check(lambda d: d["assn_per_1k"].isna()  # a source gap has no counts at all
                     | ((d["n_membership_sports"].notna() == (d["year"] == 1997))
                        & (d["n_membership_nec"].notna() == (d["year"] == 1997))),
                     "membership_counts_present_in_1997_only"),
        _frame_check(lambda d: _le_or_missing(d["employment"].astype("float64"), d["labour_force"].astype("float64")),
                     "employment_le_labour_force"),
    ]
    return pa.DataFrameSchema(cols, checks=checks, unique=["fips", "year"], strict=True, ordered=True,
                              name="us_counties_waves")


ANNUAL_OUTCOMES: dict[str, tuple[float | None, float | None]] = {
    "associations_per_10k": (0, None),
    "share_employed": (0, 1),
    "income_p20": (0, None),
    "income_p50": (0, None),
    "income_p80": (0, None),
    "injury_death_rate_per_100k": (0, 100_000),
    "low_birth_weight_share": (0, 1),
    "poverty_exposure_share": (0, 1),
    "violent_crime_per_100k": (0, None),
    "property_crime_per_100k": (0, None),
}


def _annual_outcome_columns(with_crime: bool = True) -> dict[str, pa.Column]:
    quality_after = {
        "associations_per_10k": "associations_quality",
        "share_employed": "share_employed_quality",
        "income_p80": "income_quality",
        "injury_death_rate_per_100k": "injury_death_quality",
        "low_birth_weight_share": "low_birth_weight_quality",
        "poverty_exposure_share": "poverty_exposure_quality",
        "property_crime_per_100k": "crime_quality",
    }
    cols: dict[str, pa.Column] = {}
    for name, (lo, hi) in ANNUAL_OUTCOMES.items():
        if not with_crime and "crime" in name:
            continue
        cols[name] = _num(lo, hi)
        if name in quality_after:
            cols[quality_after[name]] = _quality()
    return cols


def _annual_schema() -> pa.DataFrameSchema:
    import pandera.pandas as pa

    cols: dict[str, pa.Column] = {
        "fips": _str(r"^\d{5}$"),
        "year": pa.Column("int64", pa.Check.isin(list(ANNUAL_YEARS))),
        "state_fips": _str(r"^\d{2}$"),
        "county_name": _str(),
        "state_name": _str(),
        "census_region": _str(isin=CENSUS_REGIONS),
        "population": _count(nullable=False, positive=True),
    }
    cols.update(_annual_outcome_columns())
    cols["post_2017_break"] = pa.Column(bool)
    cols["geo_adjusted"] = pa.Column(bool)
    checks = [
        _frame_check(lambda d: d["post_2017_break"] == (d["year"] >= 2017), "post_2017_break_equals_year_ge_2017"),
        _frame_check(lambda d: _le_or_missing(d["income_p20"], d["income_p50"])
                     & _le_or_missing(d["income_p50"], d["income_p80"]),
                     "income_percentiles_ordered_p20_le_p50_le_p80"),
    ]
    return pa.DataFrameSchema(cols, checks=checks, unique=["fips", "year"], strict=True, ordered=True,
                              name="us_counties_annual")


def _sca_schema() -> pa.DataFrameSchema:
    import pandera.pandas as pa

    cols: dict[str, pa.Column] = {
        "fips": pa.Column(str, pa.Check.str_matches(r"^\d{5}$"), unique=True),
        "state_fips": _str(r"^\d{2}$"),
        "county_name": _str(),
        "state_name": _str(),
        "census_region": _str(isin=CENSUS_REGIONS),
        "pop2018": _count(max_missing=0.05, positive=True),
        "economic_connectedness": _num(0, 5, max_missing=0.05),
        "economic_connectedness_se": _num(0, None, max_missing=0.05),
        "clustering": _num(0, 1, nullable=False),
        "support_ratio": _num(0, 1, nullable=False),
        "volunteering_rate": _num(0, 1, nullable=False),
        "civic_organizations_per_1k_users": _num(0, 1_000, nullable=False),
        "economic_connectedness_groups": _num(0, 5, max_missing=0.05),
        "high_ses_exposure": _num(0, 5, max_missing=0.05),
        "friending_bias": _num(-1, 1, max_missing=0.05),
    }
    cols.update(_annual_outcome_columns(with_crime=False))
    return pa.DataFrameSchema(cols, strict=True, ordered=True, name="us_social_capital_atlas")


ENGLAND_YEARS: tuple[int, ...] = tuple(range(1997, 2024))
ENGLAND_IMD_EDITIONS: tuple[int, ...] = (2004, 2007, 2010, 2015, 2019)
ENGLAND_N_LADS = 296  # English local authority districts on 2023 boundaries


def _present_only_in(col: str, years: Iterable[int]):
    """Row check: ``col`` is missing outside ``years`` (it may also be missing inside them)."""
    years = list(years)
    return lambda d: (d[col].isna() | d["year"].isin(years)).astype(bool)


def _near_or_missing(a: pd.Series, b: pd.Series, tol: float = 1e-9) -> pd.Series:
    diff = (a.astype("float64") - b.astype("float64")).abs()
    return (diff.isna() | (diff <= tol)).astype(bool)


def _england_schema() -> pa.DataFrameSchema:
    """``england_lads``: LAD (2023 codes) x 1997-2023, balanced, one boundary vintage."""
    import pandera.pandas as pa

    pubs_years, pop_years = range(2001, 2019), range(2001, 2021)
    cols: dict[str, pa.Column] = {
        "lad_code": _str(r"^E0[6-9]\d{6}$"),
        "year": pa.Column("int64", pa.Check.isin(list(ENGLAND_YEARS))),
        "lad_name": _str(),
        "region_name": _str(),
        "n_source_codes": _count(nullable=False, positive=True),
        "population": _count(positive=True),
        "n_pubs_bars": _count(),
        "n_pubs_bars_lt10": _count(),
        "n_pubs_bars_10plus": _count(),
        "pubs_per_10k": _num(0),
        "pubs_post_2015_coverage": pa.Column(bool),
        "pubs_pre_2009_sic_conversion": pa.Column(bool),
        "life_satisfaction": _num(0, 10),
        "happiness": _num(0, 10),
        "worthwhile": _num(0, 10),
        "anxiety": _num(0, 10),
        "gdhi_per_head": _num(1),
        "log_gdhi_per_head": _num(0, 15),
        "claimant_rate": _num(0, 100),
        "employment_rate": _num(0, 100),
        "imd_score": _num(0, 100),
        "imd_rank": _num(1, ENGLAND_N_LADS, dtype="Int64"),
        "n_charities_2020": _count(nullable=False),
        "charities_per_1k_2020": _num(0, nullable=False),
        "library_walk_pct_2024": _num(0, 100, max_missing=0.0),
        "sports_facilities_per_10k_2023": _num(0, max_missing=0.0),
        "museums_per_100k_2021": _num(0, max_missing=0.0),
    }
    checks = [
        _frame_check(lambda d: d.groupby("year")["lad_code"].transform("size") == ENGLAND_N_LADS,
                     "balanced_296_lads_every_year"),
        _frame_check(lambda d: d["pubs_post_2015_coverage"] == (d["year"] >= 2015), "pubs_post_2015_coverage_equals_year_ge_2015"),
        _frame_check(lambda d: d["pubs_pre_2009_sic_conversion"] == (d["year"] < 2009),
                     "pubs_pre_2009_sic_conversion_equals_year_lt_2009"),
        _frame_check(lambda d: (d["population"].notna() == d["year"].isin(list(pop_years))).astype(bool),
                     "population_present_exactly_2001_2020"),
        _frame_check(lambda d: (d["n_pubs_bars"].notna() == d["year"].isin(list(pubs_years))).astype(bool),
                     "pubs_present_exactly_2001_2018"),
        _frame_check(lambda d: (d["imd_rank"].notna() == d["year"].isin(list(ENGLAND_IMD_EDITIONS))).astype(bool),
                     "imd_present_exactly_in_edition_years"),
        _frame_check(lambda d: _near_or_missing(d["pubs_per_10k"], d["n_pubs_bars"].astype("float64")
                                                / d["population"].astype("float64") * 1e4),
                     "pubs_per_10k_equals_count_over_population_x10000"),
        _frame_check(_present_only_in("life_satisfaction", range(2011, 2023)), "wellbeing_only_2011_2022"),
    ]
    return pa.DataFrameSchema(cols, checks=checks, unique=["lad_code", "year"], strict=True, ordered=True,
                              name="england_lads")


@cache
def panel_schema(name: str) -> pa.DataFrameSchema:
    """The pandera schema of panel ``name``."""
    builders = {
        "us_counties_waves": _waves_schema,
        "us_counties_annual": _annual_schema,
        "us_social_capital_atlas": _sca_schema,
        "england_lads": _england_schema,
        "us_counties_congregations": _congregations_schema,
        "us_counties_income": _income_schema,
    }
    if name not in builders:
        raise KeyError(f"no schema for panel {name!r}; known: {', '.join(builders)}")
    return builders[name]()


SCHEMA_NAMES = ("us_counties_waves", "us_counties_annual", "us_social_capital_atlas", "england_lads",
                "us_counties_congregations", "us_counties_income")


# --------------------------------------------------------------------------------------------
# Validation with readable errors
# --------------------------------------------------------------------------------------------


def _row_label(df: pd.DataFrame, idx) -> str:
    """``fips=01001 year=1997`` for positional row ``idx`` of ``df`` (empty if not a row)."""
    try:
        i = int(idx)
    except (TypeError, ValueError):
        return ""
    if not 0 <= i < len(df):
        return ""
    keys = ("fips", "lad_code", "original_code", "year", "wave")
    return " ".join(f"{k}={df[k].iloc[i]}" for k in keys if k in df.columns)


STRUCTURAL_CHECKS = ("column_in_dataframe", "column_in_schema", "column_ordered")


def _rows(grp: pd.DataFrame) -> list:
    return list(dict.fromkeys(i for i in grp["index"] if i is not None and not (isinstance(i, float) and pd.isna(i))))


def format_failures(panel: str, df: pd.DataFrame, failure_cases: pd.DataFrame) -> tuple[str, list[str], list[str]]:
    """One readable message from pandera's failure cases, plus the failing columns and checks.

    Per failing column and check: how many rows fail and up to five examples
    (``fips=... year=... value=...``). Data-frame-level checks (key uniqueness, cross-column
    identities) are reported once, with the failing rows, not once per column.
    """
    fc = failure_cases.copy()
    fc["column"] = fc["column"].astype(object).where(fc["column"].notna(), None)
    fc["check"] = fc["check"].astype(str)
    fc["_order"] = range(len(fc))
    lines: list[str] = []
    columns: list[str] = []
    checks: list[str] = []

    def add(col=None, check=None):
        if col is not None and col not in columns:
            columns.append(str(col))
        if check is not None and check not in checks:
            checks.append(check)

    structural = fc[fc["check"].isin(STRUCTURAL_CHECKS)]
    for check, grp in structural.groupby("check", sort=False):
        names = list(dict.fromkeys(map(str, grp["failure_case"])))
        for n in names:
            add(n, check)
        if check == "column_in_dataframe":
            lines.append(f"  - missing column(s) {', '.join(map(repr, names))} (check column_in_dataframe)")
        elif check == "column_in_schema":
            lines.append(f"  - unexpected column(s) {', '.join(map(repr, names))} not in the schema "
                         f"(check column_in_schema)")
        else:
            lines.append(f"  - columns out of order: {', '.join(map(repr, names))} (check {check})")

    frame_level = fc[(fc["schema_context"] == "DataFrameSchema") & ~fc["check"].isin(STRUCTURAL_CHECKS)]
    for check, grp in frame_level.groupby("check", sort=False):
        rows = _rows(grp)
        involved = [c for c in dict.fromkeys(grp["column"]) if c is not None]
        add(None, check)
        if not rows:  # the check could not run (e.g. a column it needs is missing)
            cases = "; ".join(dict.fromkeys(str(c) for c in grp["failure_case"]))
            lines.append(f"  - check {check} could not be evaluated: {cases}")
            continue
        if check == "multiple_fields_uniqueness":
            for c in involved:
                add(c)
            what = f"key ({', '.join(map(str, involved))}) not unique"
        else:
            what = "row-level check across columns failed"
        examples = "; ".join(e for e in (_row_label(df, i) for i in rows[:MAX_EXAMPLES]) if e)
        lines.append(f"  - {what} (check {check}): {len(rows)} failing row(s), e.g. {examples}")

    column_level = fc[(fc["schema_context"] != "DataFrameSchema") & ~fc["check"].isin(STRUCTURAL_CHECKS)]
    for (column, check), grp in column_level.groupby(["column", "check"], sort=False, dropna=False):
        grp = grp.sort_values("_order")
        add(column, check)
        rows = _rows(grp)
        if not rows:  # a check on the whole column (dtype, missing share)
            cases = ", ".join(str(c) for c in grp["failure_case"].head(MAX_EXAMPLES))
            lines.append(f"  - column {column!r}, check {check}: failed (failure case: {cases})")
            continue
        examples = []
        for _, r in grp.head(MAX_EXAMPLES).iterrows():
            examples.append(f"{_row_label(df, r['index'])} value={r['failure_case']}".strip())
        lines.append(f"  - column {column!r}, check {check}: {len(rows)} failing row(s), e.g. "
                     + "; ".join(examples))
    head = f"panel {panel!r} failed validation on column(s) {', '.join(columns) or '-'}:"
    return "\n".join([head, *lines]), columns, checks


def validate(name: str, df: pd.DataFrame) -> pd.DataFrame:
    """Validate panel ``name`` (lazily: every failure at once); return ``df`` unchanged if it passes.

    Raises :class:`PanelValidationError` whose message names the panel, each failing column and
    check, and up to five failing rows (``fips``, ``year``, ``value``).
    """
    import pandera.pandas as pa

    schema = panel_schema(name)
    checked = df.reset_index(drop=True)
    try:
        schema.validate(checked, lazy=True)
    except pa.errors.SchemaErrors as err:
        fc = err.failure_cases
        message, columns, checks = format_failures(name, checked, fc)
        raise PanelValidationError(name, message, fc, columns=columns, checks=checks) from None
    except pa.errors.SchemaError as err:  # pragma: no cover - lazy=True collects, but be safe
        raise PanelValidationError(name, f"panel {name!r} failed validation: {err}") from None
    return df


# --------------------------------------------------------------------------------------------
# Long-run US county panels (built by analysis/longrun.py)
# --------------------------------------------------------------------------------------------

NHGIS_WAVES: tuple[int, ...] = (1906, 1916, 1926, 1936)
RCMS_WAVES: tuple[int, ...] = (1952, 1971, 1980, 1990, 2000, 2010, 2020)
CONGREGATION_WAVES: tuple[int, ...] = NHGIS_WAVES + RCMS_WAVES
# every quality flag the places-of-worship extracts use (an unknown one is a RawInputError)
CONGREGATION_SOURCE_FLAGS: tuple[str, ...] = (
    "wave_coverage_differs", "boundary_change_crosswalked", "period_boundary_vintage_differs",
)
CONGREGATION_BUILDER_FLAGS: tuple[str, ...] = (
    "no_fips_code", "fips_crosswalked", "fips_not_2020", "fips_shared_in_wave", "not_reported",
    "population_missing_or_zero", "adherents_exceed_population",
)
INCOME_YEARS: tuple[int, ...] = tuple(range(1969, 2023))


def _flag() -> pa.Column:
    import pandera.pandas as pa

    return pa.Column(bool)


def _congregations_schema() -> pa.DataFrameSchema:
    """``us_counties_congregations``: every source row, key (original_code, wave)."""
    import pandera.pandas as pa

    def f64(s: pd.Series) -> pd.Series:
        return s.astype("float64")

    cols: dict[str, pa.Column] = {
        "fips": _str(r"^\d{5}$", nullable=True),
        "original_code": _str(r"^(G\d{7}|\d{5}(, \d{5})*)$"),
        "historical_fips": _str(r"^\d{5}$", nullable=True),
        "wave": pa.Column("int64", pa.Check.isin(list(CONGREGATION_WAVES))),
        "source": _str(r"^(nhgis_religious_bodies|rcms_county)_\d{4}$"),
        "state_fips": _str(r"^\d{2}$"),
        "county_name": _str(),
        "membership_measure": _str(isin=("members", "adherents")),
        "congregations": _count(),
        "adherents_or_members": _count(max_missing=0.05),  # not reported: 0.3% of the real rows
        "population": _count(max_missing=0.05),
        "population_year": _num(1900, 1950, dtype="Int64"),
        "congregations_per_1k": _num(0),
        "adherents_per_100": _num(0),
        "crosswalk_note": _str(nullable=True),
    }
    cols.update({c: _flag() for c in (*CONGREGATION_SOURCE_FLAGS, *CONGREGATION_BUILDER_FLAGS)})
    def nhgis(d: pd.DataFrame) -> pd.Series:
        return d["wave"].isin(list(NHGIS_WAVES))

    def pop(d: pd.DataFrame) -> pd.Series:  # the rate denominator: missing where 0 or missing
        return f64(d["population"]).where(f64(d["population"]) > 0)

    checks = [
        _frame_check(lambda d: (d["membership_measure"] == "members") == nhgis(d),
                     "members_in_1906_1936_adherents_from_1952"),
        _frame_check(lambda d: d["congregations"].isna() | ~nhgis(d), "no_congregation_counts_1906_1936"),
        _frame_check(lambda d: d["population_year"].isna() | nhgis(d), "population_year_only_1906_1936"),
        _frame_check(lambda d: d["source"].str.slice(-4) == d["wave"].astype(str), "source_file_of_the_wave"),
        _frame_check(lambda d: d["fips"].isna() == d["no_fips_code"], "fips_missing_exactly_when_no_fips_code"),
        _frame_check(lambda d: ~d["fips_crosswalked"] | (d["fips"] != d["historical_fips"]),
                     "crosswalked_fips_differs_from_historical"),
        _frame_check(lambda d: d["fips_shared_in_wave"] == (d["fips"].notna()
                                                            & d.duplicated(["wave", "fips"], keep=False)),
                     "fips_shared_in_wave_equals_duplicate_fips"),
        _frame_check(lambda d: d["population_missing_or_zero"] == pop(d).isna(),
                     "population_missing_or_zero_flag"),
        _frame_check(lambda d: _near_or_missing(d["congregations_per_1k"], f64(d["congregations"]) / pop(d) * 1_000)
                     & (d["congregations_per_1k"].isna() | pop(d).notna()),
                     "congregations_per_1k_equals_count_over_population_x1000"),
        _frame_check(lambda d: _near_or_missing(d["adherents_per_100"], f64(d["adherents_or_members"]) / pop(d) * 100)
                     & (d["adherents_per_100"].isna() | pop(d).notna()),
                     "adherents_per_100_equals_count_over_population_x100"),
        _frame_check(lambda d: d["adherents_exceed_population"] == (d["adherents_per_100"] > 100).fillna(False),
                     "adherents_exceed_population_flag"),
    ]
    return pa.DataFrameSchema(cols, checks=checks, unique=["original_code", "wave"], strict=True, ordered=True,
                              name="us_counties_congregations")


def _income_schema() -> pa.DataFrameSchema:
    """``us_counties_income``: BEA county area x year 1969-2022, key (fips, year)."""
    import numpy as np
    import pandera.pandas as pa

    def f64(s: pd.Series) -> pd.Series:
        return s.astype("float64")

    cols: dict[str, pa.Column] = {
        # a county area: not xx000 (US, states) and below 90000 (BEA regions)
        "fips": _str(r"^[0-8]\d(?!000)\d{3}$"),
        "year": pa.Column("int64", pa.Check.isin(list(INCOME_YEARS))),
        "state_fips": _str(r"^\d{2}$"),
        "area_name": _str(),
        "bea_combined_area": _flag(),
        "bea_component_fips": _str(r"^\d{5}(;\d{5})+$", nullable=True),
        "bea_area_footnote": _flag(),
        "bea_not_published": _flag(),
        # missing only in area-years BEA does not publish (checked below)
        "personal_income_thousands": _count(),
        "population": _count(),
        "pcpi": _count(),
        "us_pcpi": _count(nullable=False, positive=True),
        "log_pcpi": _num(0, 15),
        "log_pcpi_rel_us": _num(-5, 5),
    }
    checks = [
        _frame_check(lambda d: d["bea_combined_area"] == d["bea_component_fips"].notna(),
                     "combined_area_exactly_when_components_listed"),
        _frame_check(lambda d: d["bea_not_published"] == d[["personal_income_thousands", "population", "pcpi"]]
                     .isna().all(axis=1), "not_published_equals_all_three_values_missing"),
        _frame_check(lambda d: (d[["personal_income_thousands", "population", "pcpi", "log_pcpi", "log_pcpi_rel_us"]]
                                .isna().any(axis=1) == d["bea_not_published"]),
                     "values_missing_only_when_not_published"),
        _frame_check(lambda d: _near_or_missing(f64(d["personal_income_thousands"]) * 1_000 / f64(d["population"]),
                                                d["pcpi"], tol=1.0),
                     "pcpi_equals_personal_income_over_population_within_1_dollar"),
        _frame_check(lambda d: _near_or_missing(d["log_pcpi"], np.log(f64(d["pcpi"]))), "log_pcpi_equals_log_of_pcpi"),
        _frame_check(lambda d: _near_or_missing(d["log_pcpi_rel_us"], d["log_pcpi"] - np.log(f64(d["us_pcpi"]))),
                     "log_pcpi_rel_us_equals_log_pcpi_minus_log_us_pcpi"),
        _frame_check(lambda d: d.groupby("year")["us_pcpi"].transform("nunique") == 1, "one_us_pcpi_per_year"),
    ]
    return pa.DataFrameSchema(cols, checks=checks, unique=["fips", "year"], strict=True, ordered=True,
                              name="us_counties_income")
