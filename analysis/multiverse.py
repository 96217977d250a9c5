r"""The multiverse engine: a grid of analytic choices in, a tidy table of estimates out.

A specification is data. A *grid* maps each choice to the options to try::

    grid = {"outcome": ["unemployment_rate", "poverty_rate"],
            "density": ["assn_per_1k", "log_count_assn"],
            "estimator": ["pooled", "twfe", "fd"],
            "controls": ["none", "civic"],
            "sample": ["all", "balanced", "no1997"],
            "timing": ["same", "lag1"],
            "weights": ["none", "population"]}
    table = run_multiverse(waves, grid)            # local, joblib, cached on disk
    table = run_multiverse(waves, grid, scheduler="tcp://host:8786")   # the same on Dask

:func:`expand_grid` takes the Cartesian product, drops the incoherent combinations listed
in :data:`EXCLUSIONS` (and says which), and :func:`check_grid` checks every choice and
every option against the data, and builds every specification's sample, *before* anything
is fitted: an unknown choice or option (also in a specification table given directly), a
missing column, duplicated or missing (county, wave) keys, an infinite value, an empty
sample, and a degenerate one (a single county, or a density or control that is constant or
absorbed by the estimator's effects) raise :class:`MultiverseError` naming the choice.
:func:`run_multiverse` returns one row per specification: the choices, then ``estimate``,
``se``, ``ci_low``, ``ci_high`` (95%), ``p``, ``nobs``, ``n_units``, and the standardised
estimates of :func:`standardise`.

Choices
-------
``outcome``, ``density``  any numeric column of the panel (outcome :math:`y`, regressor of
    interest :math:`x`, in its units), or for ``density`` one of the *ratio-free* options of
    :data:`RATIO_FREE` (below).
``estimator`` (:data:`ESTIMATORS`), county :math:`i`, wave :math:`t`, state :math:`s(i)`:
    ``pooled``  :math:`y_{it} = \alpha + \beta x_{it} + w_{it}'\gamma + \delta_t + u_{it}`;
    ``fe``  county effects only, :math:`+\alpha_i` instead of :math:`\delta_t`;
    ``twfe``  county and wave effects :math:`\alpha_i + \delta_t`;
    ``state-year``  county and state-by-wave effects :math:`\alpha_i + \delta_{s(i)t}`;
    ``fd``  first differences between consecutive waves of the sample with wave intercepts,
    :math:`\Delta y_{it} = \beta\Delta x_{it} + \Delta w_{it}'\gamma + \delta_t + \Delta u_{it}`;
    ``long-diff``  the long difference 1997-2014 (the first and last waves),
    :math:`y_{i,2014}-y_{i,1997} = \alpha + \beta(x_{i,2014}-x_{i,1997}) + \dots`, one row per
    county.
``controls`` a named set of controls :math:`w` (:data:`CONTROL_SETS`); ``log_population``
    is computed from ``population`` if the panel lacks it.
``sample`` (:data:`SAMPLES`): ``all``; ``balanced`` (counties with every variable of the
    specification in every wave the specification uses); ``pop10k`` (without counties under
    10,000 people in their first wave, so membership does not change over time); ``no2009``
    (without the 2009 recession wave; a difference or lag then spans 2005-2014); ``no1997``
    (without the 1997 wave, whose counts follow the SIC and not the NAICS; a difference or lag
    then starts in 2005).
``timing`` (:data:`TIMINGS`): ``same`` (density and controls of the outcome's wave) or
    ``lag1`` (of the previous wave of the sample, so the first wave's outcome is dropped).
``weights`` (:data:`WEIGHTS`): ``none`` (least squares) or ``population`` (weighted least
    squares with the county's mean population over the waves of the panel,
    :func:`county_mean_population`, as analytic weight). The weight is the county's, not the
    wave's: it is the same in every wave and every sample, so it does not move with the
    denominator of density, it gives differences an unambiguous weight, and under county
    effects the estimate becomes a population-weighted average of within-county slopes (the
    effect for the average resident rather than the average county).

Ratio-free densities
--------------------
A density per 1,000 people is a ratio, and a within-county change in it mixes a change in
the count of organisations with a change in the population (the denominator), which also
moves outcomes (Kronmal 1993). A *ratio-free* density option (:data:`RATIO_FREE`) enters the
count and the population separately: the engine computes :math:`\log(1+c_{it})` of the count
:math:`c_{it}` (the sum of the option's count columns; a missing count column counts as zero,
a row whose counts are all missing is missing; :func:`add_derived_columns`) as the density,
and *forces* its ``forced_controls`` (``log_population``) into every control set of the
specification, after the set's own columns (:func:`spec_controls`). The estimate is then the
change in the outcome per log point of the count with population held fixed. A control set
that already holds a forced control would repeat another set, so those combinations are
excluded (:data:`EXCLUSIONS`). ``log(1 + count)`` rather than ``log(count)`` keeps the few
county-waves without any establishment of the kind.

Estimation and inference
------------------------
Every model is (weighted) least squares after a within transformation
(Frisch-Waugh-Lovell): demeaning by wave (pooled) or county (fe), demeaning by county
followed by the projection on the county-demeaned wave or state-by-wave dummies (twfe,
state-year; the latter block by block, one block per state, since the county effects are
nested in the states), or differencing (fd, long-diff) followed by demeaning by period.
With weights, means are weighted means and every transformed row is multiplied by the square
root of its weight, so the least squares and the clustered scores are those of weighted least
squares. Standard errors are clustered by county (CR1: :math:`\frac{G}{G-1}\frac{n-1}{n-K}`,
with the county effects, nested in the clusters, left out of :math:`K`, and the constant and
every wave or state-by-wave effect counted), p-values and intervals use :math:`t_{G-1}`. These
are the conventions of :func:`analysis.estimation.fit` (linearmodels), which the tests check
this fast path against for every estimator, with and without weights.

What specifications share is computed once (:class:`_Workspace`): a sample's frame and its
columns, each specification's row set, the effects of an estimator on a row set, and every
column already transformed by them, so that specifications differing only in the outcome,
the density or the controls reuse the demeaning of the columns they have in common.

Parallelism and cache
---------------------
Specifications are fitted in chunks, in parallel with joblib (``n_jobs``) and a tqdm
progress bar, or on a Dask cluster when ``scheduler`` is an address or a
``distributed.Client``. The result table is cached on disk under
``data/processed/multiverse/`` (git-ignored), keyed by the SHA-256 of the specification
table, the engine's code and the hash of the data's used columns
(``pandas.util.hash_pandas_object``), and written atomically (a temporary file renamed
into place), so a rebuild with unchanged inputs reads it back instead of refitting.

Reference: Kronmal (1993) "Spurious correlation and the fallacy of the ratio standard
revisited", *JRSS A* 156(3).
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import os
import tempfile
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse, stats

from analysis.panels import ALL_COUNTS, COMMUNITY_COUNTS
from analysis.paths import PROCESSED_DIR

__all__ = [
    "CHOICES",
    "CONTROL_SETS",
    "ENGINE_VERSION",
    "ESTIMATORS",
    "EXCLUSIONS",
    "RATIO_FREE",
    "SAMPLES",
    "THESIS_SIGN",
    "TIMINGS",
    "WEIGHTS",
    "WEIGHT_COLUMN",
    "FastFit",
    "MultiverseError",
    "RatioFreeDensity",
    "add_derived_columns",
    "bench_multiverse",
    "chapter8_grid",
    "check_grid",
    "county_mean_population",
    "curve_summary",
    "data_hash",
    "equivalence_shares",
    "expand_grid",
    "fit_fast",
    "fit_spec",
    "permutation_test",
    "permuted_fits",
    "prepare_sample",
    "run_multiverse",
    "spec_controls",
    "spec_curve_figure",
    "standardise",
]

ENGINE_VERSION = "2"


def _engine_hash() -> str:
    """Hash of the code that produces a result: this module and the estimation layer, so a change
    to either invalidates the cache without anyone remembering to bump ENGINE_VERSION."""
    h = hashlib.sha256(ENGINE_VERSION.encode())
    for name in ("multiverse.py", "estimation.py"):
        h.update((Path(__file__).with_name(name)).read_bytes())
    return h.hexdigest()


CHOICES: tuple[str, ...] = ("outcome", "density", "estimator", "controls", "sample", "timing", "weights")
ESTIMATORS: dict[str, str] = {
    "pooled": "Pooled, year effects",
    "fe": "County FE",
    "twfe": "County + year FE",
    "state-year": "County + state-by-year FE",
    "fd": "First differences",
    "long-diff": "Long difference 1997-2014",
}
CONTROL_SETS: dict[str, tuple[str, ...]] = {
    "none": (),
    "civic": ("turnout_pct", "census_response_pct"),
    "civic+pop": ("turnout_pct", "census_response_pct", "log_population"),
}
SAMPLES: dict[str, str] = {
    "all": "All counties",
    "balanced": "Balanced panel",
    "pop10k": "Without counties under 10,000",
    "no2009": "Without the 2009 wave",
    "no1997": "Without the 1997 wave (SIC counts)",
}
TIMINGS: dict[str, str] = {"same": "Same wave", "lag1": "Density lagged one wave"}
WEIGHTS: dict[str, str] = {"none": "Unweighted", "population": "Weighted by county mean population"}
#: The column of analytic weights that ``weights="population"`` uses (:func:`county_mean_population`).
WEIGHT_COLUMN = "pop_weight"


@dataclass(frozen=True)
class RatioFreeDensity:
    """A density option that enters the count and the population separately (Kronmal 1993).

    ``counts``: the count columns summed into :math:`c` (a missing one counts as zero; a row
    with all of them missing is missing); the density column is :math:`\\log(1+c)`.
    ``forced_controls``: appended to the controls of every specification with this density
    (:func:`spec_controls`), so that the count's coefficient holds them fixed.
    """

    counts: tuple[str, ...]
    label: str
    forced_controls: tuple[str, ...] = ("log_population",)


#: Ratio-free density options: log(1 + count) with log population forced into the controls.
RATIO_FREE: dict[str, RatioFreeDensity] = {
    "log_count_assn": RatioFreeDensity(tuple(ALL_COUNTS), "log(1 + associations), population held fixed"),
    "log_count_community": RatioFreeDensity(tuple(COMMUNITY_COUNTS),
                                            "log(1 + community organisations), population held fixed"),
}
_OPTIONS = {"estimator": ESTIMATORS, "controls": CONTROL_SETS, "sample": SAMPLES, "timing": TIMINGS,
            "weights": WEIGHTS}
_DEFAULTS = {"estimator": ["twfe"], "controls": ["none"], "sample": ["all"], "timing": ["same"],
             "weights": ["none"]}
# The direction in which the thesis predicts each outcome moves as density rises.
THESIS_SIGN: dict[str, int] = {
    "unemployment_rate": -1,
    "poverty_rate": -1,
    "child_poverty_rate": -1,
    "log_median_hh_income": 1,
}


def spec_controls(spec: Mapping) -> tuple[str, ...]:
    """The control columns of a specification: its control set, then the columns its density
    forces (a ratio-free density forces ``log_population``), each once."""
    forced = RATIO_FREE[spec["density"]].forced_controls if spec["density"] in RATIO_FREE else ()
    return tuple(dict.fromkeys((*CONTROL_SETS[spec["controls"]], *forced)))


def _repeats_forced_control(s: Mapping) -> bool:
    return s["density"] in RATIO_FREE and bool(
        set(RATIO_FREE[s["density"]].forced_controls) & set(CONTROL_SETS.get(s["controls"], ())))


# (condition on a specification, why it is dropped): combinations that are not defensible.
EXCLUSIONS: tuple[tuple[Callable[[Mapping], bool], str], ...] = (
    (
        lambda s: s["estimator"] == "long-diff" and s["timing"] == "lag1",
        "a long difference between the first and last waves has no earlier wave to lag to",
    ),
    (
        lambda s: s["estimator"] == "long-diff" and s["sample"] == "no2009",
        "the long difference does not use 2009, so dropping it repeats the 'all' sample",
    ),
    (
        lambda s: s["estimator"] == "long-diff" and s["sample"] == "no1997",
        "the long difference starts in 1997, so there is none without it",
    ),
    (
        _repeats_forced_control,
        ("a ratio-free density already holds log population fixed, so a control set with log population "
         "repeats the one without it"),
    ),
)
ENTITY, TIME, STATE = "fips", "year", "state_fips"
POP_THRESHOLD = 10_000
LONG_DIFF_WAVES = (1997, 2014)


class MultiverseError(ValueError):
    """A grid that cannot be run: raised before any specification is fitted."""


# --------------------------------------------------------------------------------------
# Grid
# --------------------------------------------------------------------------------------


def expand_grid(grid: Mapping[str, Sequence[str]], exclusions=EXCLUSIONS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The specifications of ``grid`` (one row each, a column per choice) and the dropped ones.

    Choices not in ``grid`` take their default (``twfe``, ``none``, ``all``, ``same``,
    ``none``); ``outcome`` and ``density`` are required. Returns ``(specs, dropped)``;
    ``dropped`` has the same columns plus ``reason``. Raises :class:`MultiverseError` for an
    unknown choice, an empty or duplicated option list, or an unknown estimator, control set,
    sample, timing or weighting (the data-dependent options are checked by :func:`check_grid`).
    """
    if not isinstance(grid, Mapping):
        raise MultiverseError(f"A grid is a mapping of choice -> list of options, not {type(grid).__name__}.")
    unknown = [c for c in grid if c not in CHOICES]
    if unknown:
        raise MultiverseError(
            f"Unknown choice {unknown[0]!r} in the grid; the choices are {', '.join(map(repr, CHOICES))}."
        )
    full: dict[str, list[str]] = {}
    for choice in CHOICES:
        if choice in grid:
            opts = grid[choice]
            opts = [opts] if isinstance(opts, str) else list(opts)
        elif choice in _DEFAULTS:
            opts = list(_DEFAULTS[choice])
        else:
            raise MultiverseError(f"The grid needs the choice {choice!r} (a list of column names).")
        if not opts:
            raise MultiverseError(f"Choice {choice!r} has no options.")
        if len(set(opts)) != len(opts):
            raise MultiverseError(f"Choice {choice!r} lists an option twice: {opts}.")
        for o in opts:
            if not isinstance(o, str):
                raise MultiverseError(f"Choice {choice!r}: options are names (str), not {o!r}.")
        _check_options(choice, opts)
        full[choice] = opts
    rows = [dict(zip(CHOICES, combo)) for combo in itertools.product(*(full[c] for c in CHOICES))]
    kept, dropped = [], []
    for r in rows:
        reason = next((why for cond, why in exclusions if cond(r)), None)
        (kept if reason is None else dropped).append(r if reason is None else {**r, "reason": reason})
    specs = pd.DataFrame(kept, columns=list(CHOICES))
    return specs, pd.DataFrame(dropped, columns=[*CHOICES, "reason"])


# --------------------------------------------------------------------------------------
# Derived columns: log population, ratio-free counts, the population weight
# --------------------------------------------------------------------------------------


def county_mean_population(df: pd.DataFrame) -> pd.Series:
    """Each row's county mean of ``population`` over the waves of ``df`` in which it is known
    (aligned with ``df``): the analytic weight of ``weights="population"``."""
    pop = df["population"].astype(float)
    return pop.groupby(df[ENTITY].to_numpy()).transform("mean").rename(WEIGHT_COLUMN)


def _log_count(df: pd.DataFrame, counts: Sequence[str]) -> pd.Series:
    c = df[list(counts)].astype("float64")
    total = c.fillna(0).sum(axis=1).where(c.notna().any(axis=1))
    return np.log1p(total)


def add_derived_columns(df: pd.DataFrame, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """``df`` with the columns the engine derives, where their inputs are there and they are not:
    ``log_population`` (log of ``population``, missing where it is not positive), each
    ratio-free density of :data:`RATIO_FREE` (:math:`\\log(1+c)`, see the module docstring)
    and :data:`WEIGHT_COLUMN` (:func:`county_mean_population`). ``columns`` limits which
    (default: all). The same definitions serve Chapter 3's ratio-free models.
    """
    want = set(columns) if columns is not None else {"log_population", WEIGHT_COLUMN, *RATIO_FREE}
    new = {}
    if "log_population" in want and "log_population" not in df.columns and "population" in df.columns:
        new["log_population"] = np.log(df["population"].astype(float).where(lambda p: p > 0))
    for name, rf in RATIO_FREE.items():
        if name in want and name not in df.columns and all(c in df.columns for c in rf.counts):
            new[name] = _log_count(df, rf.counts)
    if WEIGHT_COLUMN in want and WEIGHT_COLUMN not in df.columns and "population" in df.columns:
        new[WEIGHT_COLUMN] = county_mean_population(df)
    return df.assign(**new) if new else df


def _with_log_population(df: pd.DataFrame) -> pd.DataFrame:
    return add_derived_columns(df, ["log_population"])


def _used_columns(specs: pd.DataFrame) -> list[str]:
    cols = [ENTITY, TIME, STATE, "population"]
    cols += list(specs["outcome"].unique()) + list(specs["density"].unique())
    for rec in specs[["density", "controls"]].drop_duplicates().to_dict("records"):
        cols += list(spec_controls(rec))
    if "weights" in specs.columns and (specs["weights"] == "population").any():
        cols.append(WEIGHT_COLUMN)
    return list(dict.fromkeys(cols))


def _slim(df: pd.DataFrame, specs: pd.DataFrame) -> pd.DataFrame:
    used = _used_columns(specs)
    df = add_derived_columns(df, used)
    return df[[c for c in used if c in df.columns]].copy()


def _did_you_mean(name: str, options) -> str:
    close = difflib.get_close_matches(str(name), [str(o) for o in options], n=3, cutoff=0.5)
    return f" Did you mean {', '.join(map(repr, close))}?" if close else ""


def _check_options(choice: str, opts) -> None:
    """Raise for an option of ``choice`` that the engine does not know (fixed option lists only)."""
    if choice in _OPTIONS:
        bad = [o for o in opts if o not in _OPTIONS[choice]]
        if bad:
            raise MultiverseError(
                f"Choice {choice!r} has unknown option {bad[0]!r}; expected one of "
                f"{', '.join(map(repr, _OPTIONS[choice]))}." + _did_you_mean(bad[0], _OPTIONS[choice])
            )


def _check_specs(specs: pd.DataFrame) -> None:
    """Check a specification table given directly (not built by :func:`expand_grid`).

    Its options are otherwise trusted: an unknown ``sample`` or ``timing`` would run as
    ``all`` or ``same`` under the wrong label, and an unknown ``controls`` raise a KeyError.
    """
    if not isinstance(specs, pd.DataFrame):
        raise MultiverseError(f"A specification table is a pandas DataFrame, not {type(specs).__name__}.")
    for choice in CHOICES:
        if choice not in specs.columns:
            raise MultiverseError(
                f"The specification table has no column {choice!r}; it needs one per choice "
                f"({', '.join(map(repr, CHOICES))})." + _did_you_mean(choice, specs.columns)
            )
    for choice in CHOICES:
        opts = specs[choice].unique()
        odd = [o for o in opts if not isinstance(o, str)]
        if odd:
            raise MultiverseError(f"Choice {choice!r}: options are names (str), not {odd[0]!r}.")
        _check_options(choice, opts)


def _key_examples(df: pd.DataFrame, rows: np.ndarray) -> str:
    """Up to five (county, wave) keys of the rows flagged in ``rows``, for error messages."""
    keys = df.loc[rows, [ENTITY, TIME]].drop_duplicates().head(5)
    return ", ".join(f"({e!r}, {t!r})" for e, t in keys.itertuples(index=False))


def _check_keys(df: pd.DataFrame) -> None:
    """Every row needs a county and a wave, and each (county, wave) once: a duplicated row would
    be fitted as one more observation (and shift the estimate) without any warning."""
    for c in (ENTITY, TIME):
        n_missing = int(df[c].isna().sum())
        if n_missing:
            raise MultiverseError(f"The {c!r} column has {n_missing} missing value(s); every row needs a key.")
    dup = df.duplicated([ENTITY, TIME], keep=False).to_numpy()
    if dup.any():
        n_keys = int(df.loc[dup, [ENTITY, TIME]].drop_duplicates().shape[0])
        raise MultiverseError(
            f"The panel is not uniquely indexed by ({ENTITY}, {TIME}): {int(dup.sum())} rows share {n_keys} "
            f"duplicated key(s), e.g. {_key_examples(df, dup)}. Aggregate or deduplicate before running the "
            "multiverse."
        )


def _check_columns(df: pd.DataFrame, specs: pd.DataFrame) -> pd.DataFrame:
    """Check the data against the specifications' columns; return ``df`` with the derived columns.

    Raises for a missing id column, duplicated or missing keys, an outcome, density or
    control column that is absent (with close matches), not numeric or holds an infinite
    value, a ratio-free density whose count columns are absent, a population weight or
    ``pop10k`` sample without ``population``, and a density that is also the outcome or a
    control (or an outcome that is a control).
    """
    if not isinstance(df, pd.DataFrame):
        raise MultiverseError(f"The data must be a pandas DataFrame, not {type(df).__name__}.")
    for c in (ENTITY, TIME, STATE):
        if c not in df.columns:
            raise MultiverseError(f"The panel needs an id column {c!r}.")
    _check_keys(df)
    for dens in specs["density"].unique():
        if dens in RATIO_FREE and dens not in df.columns:  # derived here unless given (e.g. a slim frame)
            missing = [c for c in RATIO_FREE[dens].counts if c not in df.columns]
            if missing:
                raise MultiverseError(
                    f"Choice 'density' option {dens!r} (ratio-free) needs the count column {missing[0]!r}, which "
                    "is not in the data." + _did_you_mean(missing[0], df.columns)
                )
            if "population" not in df.columns and "log_population" not in df.columns:
                raise MultiverseError(f"Choice 'density' option {dens!r} holds log population fixed and needs a "
                                      "'population' column.")
    if "population" not in df.columns and "population" in set(specs["weights"]):
        raise MultiverseError("Choice 'weights' option 'population' needs a 'population' column.")
    df = add_derived_columns(df, _used_columns(specs))
    for choice in ("outcome", "density"):
        for col in specs[choice].unique():
            if col not in df.columns:
                raise MultiverseError(
                    f"Choice {choice!r} has unknown option {col!r}: it is not a column of the data."
                    + _did_you_mean(col, df.columns)
                )
            if not pd.api.types.is_numeric_dtype(df[col]):
                raise MultiverseError(f"Choice {choice!r}: column {col!r} is not numeric ({df[col].dtype}).")
    for name in specs["controls"].unique():
        for col in CONTROL_SETS[name]:
            if col not in df.columns:
                raise MultiverseError(
                    f"Choice 'controls' option {name!r} needs column {col!r}, which is not in the data."
                    + _did_you_mean(col, df.columns)
                )
            if not pd.api.types.is_numeric_dtype(df[col]):
                raise MultiverseError(
                    f"Choice 'controls' option {name!r}: column {col!r} is not numeric ({df[col].dtype})."
                )
    if "population" not in df.columns and "pop10k" in set(specs["sample"]):
        raise MultiverseError("Choice 'sample' option 'pop10k' needs a 'population' column.")
    # The fast path drops non-finite rows as missing, prepare_sample keeps them: neither should see one.
    pairs = specs[["density", "controls"]].drop_duplicates().to_dict("records")
    model_cols = [*specs["outcome"].unique(), *specs["density"].unique(), *(c for r in pairs for c in spec_controls(r))]
    if "population" in set(specs["weights"]):
        model_cols.append(WEIGHT_COLUMN)
    for col in dict.fromkeys(model_cols):
        bad = np.isinf(df[col].to_numpy(dtype=float, na_value=np.nan))
        if bad.any():
            raise MultiverseError(
                f"Column {col!r} has {int(bad.sum())} infinite value(s) (inf or -inf), e.g. at ({ENTITY}, {TIME}) "
                f"= {_key_examples(df, bad)}. Set them to NaN (missing) or fix the transformation that made them."
            )
    if "population" in set(specs["weights"]):
        w = df[WEIGHT_COLUMN].to_numpy(dtype=float, na_value=np.nan)
        bad = ~(w > 0) & ~np.isnan(w)
        if bad.any():
            raise MultiverseError(f"Choice 'weights' option 'population': the county mean population is not "
                                  f"positive at ({ENTITY}, {TIME}) = {_key_examples(df, bad)}.")
    same = specs["outcome"].to_numpy() == specs["density"].to_numpy()
    if same.any():
        raise MultiverseError(f"Choice 'density': {specs.loc[same, 'density'].iloc[0]!r} is also the outcome.")
    for rec in pairs:
        if rec["density"] in CONTROL_SETS[rec["controls"]]:
            raise MultiverseError(f"Choice 'density': {rec['density']!r} is also a control of {rec['controls']!r}.")
    for rec in specs[["outcome", "density", "controls"]].drop_duplicates().to_dict("records"):
        if rec["outcome"] in spec_controls(rec):
            raise MultiverseError(f"Choice 'outcome': {rec['outcome']!r} is also a control of {rec['controls']!r}.")
    return df


def check_grid(df: pd.DataFrame, specs: pd.DataFrame) -> pd.DataFrame:
    """Check every specification against ``df`` before fitting; return the sample sizes.

    Raises :class:`MultiverseError` naming the choice for: a specification table with a
    missing choice or an unknown option; a missing id column; missing or duplicated
    (county, wave) keys (with examples); an outcome, density or control column that is
    absent (with close matches), not numeric or holds an infinite value; and any
    specification whose sample is empty, has fewer than two counties (to cluster by), no
    more rows than coefficients, or a density or control that is constant or absorbed by
    the estimator's effects (:func:`_why_degenerate`). Each sample (a specification's rows,
    which the estimator and the weights do not change) is checked once. Returns ``specs``
    with ``nobs`` and ``n_units`` of each sample.
    """
    _check_specs(specs)
    df = _check_columns(df, specs)
    return _check_samples(_Workspace(_slim(df, specs)), specs)


def _check_samples(ws: _Workspace, specs: pd.DataFrame) -> pd.DataFrame:
    """The sample checks of :func:`check_grid` on a workspace (whose frames the fits then reuse)."""
    sizes = []
    seen: dict = {}
    # Which estimators use each sample, so each sample's degeneracy is checked once per estimator.
    uses: dict = {}
    degenerate = None
    records = _records(specs)
    for spec in records:
        uses.setdefault(_sample_key(spec), set()).add(spec["estimator"])
    for spec in records:
        skey = _sample_key(spec)
        if skey not in seen:
            rows = ws.rows(spec)
            why = {}
            nobs, n_units = len(rows.idx), rows.n_units
            if nobs:  # checked on the arrays that the fits will use
                why = {e: ws.why_degenerate(spec, rows, e) for e in uses[skey]}
            seen[skey] = (nobs, n_units, why)
        nobs, n_units, why = seen[skey]
        k = 1 + len(spec_controls(spec))
        n_eff = nobs - (n_units if spec["estimator"] in ("fd", "long-diff") else 0)
        where = (f"(with timing {spec['timing']!r}, estimator {spec['estimator']!r}, outcome "
                 f"{spec['outcome']!r}, density {spec['density']!r})")
        j, reason = why.get(spec["estimator"]) or (None, None)
        if nobs and j is None and reason is not None:  # too few counties: say so before counting rows
            raise MultiverseError(f"Choice 'sample' option {spec['sample']!r} {where} leaves {reason}.")
        if n_eff <= k + 1:
            raise MultiverseError(
                f"Choice 'sample' option {spec['sample']!r} {where} leaves "
                f"{'no rows' if nobs == 0 else f'only {n_eff} usable rows'} after its filters."
            )
        if reason is not None and degenerate is None:
            degenerate = _degenerate_message(spec, j, reason)
        sizes.append((nobs, n_units))
    # After every sample's size: a sample that is too small is the more basic fault to report.
    if degenerate is not None:
        raise MultiverseError(degenerate)
    out = specs.copy()
    out["nobs"] = [s[0] for s in sizes]
    out["n_units"] = [s[1] for s in sizes]
    return out


def _sample_key(spec: Mapping) -> tuple:
    """What a specification's rows depend on (all but the estimator, except for long-diff, and the
    weights, which are known wherever the population is)."""
    return (spec["sample"], spec["timing"], spec["estimator"] == "long-diff", spec["outcome"], spec["density"],
            spec["controls"], spec["weights"])


def _degenerate_message(spec: Mapping, j: int, reason: str) -> str:
    """The error for column ``j`` of a specification's regressors (0: the density, then the controls)."""
    lag = " (lagged one wave)" if spec["timing"] == "lag1" else ""
    where = (f"(with estimator {spec['estimator']!r}, sample {spec['sample']!r}, timing {spec['timing']!r}, "
             f"outcome {spec['outcome']!r}")
    if j == 0:
        return f"Choice 'density' option {spec['density']!r} {where}){lag} {reason}: its slope cannot be estimated."
    name = spec_controls(spec)[j - 1]
    return (f"Choice 'controls' option {spec['controls']!r} {where}, density {spec['density']!r}): column "
            f"{name!r}{lag} {reason}: its coefficient cannot be estimated.")


# --------------------------------------------------------------------------------------
# Samples
# --------------------------------------------------------------------------------------

#: Columns of a base frame that are never lagged (ids, and what belongs to the outcome's row).
_NOT_LAGGED = (ENTITY, TIME, STATE, "population", "_unit", "_state", WEIGHT_COLUMN)
_CONTROL_NAME = "w{}"  # the columns of the controls in a prepared sample: w0, w1, ...
WEIGHT_NAME = "weight"  # the column of the analytic weight in a prepared sample


def _is_control(name: str) -> bool:
    return name[:1] == "w" and name[1:].isdigit()


def _base_frame(df: pd.DataFrame, sample: str, timing: str, long_diff: bool = False) -> pd.DataFrame:
    """Rows of the sample filter and, for ``lag1``, every non-id column but the outcomes lagged.

    Lagged columns are suffixed ``@lag``; the lag is the previous wave *of the sample*.
    """
    d = df.sort_values([ENTITY, TIME]).reset_index(drop=True)
    d["_row"] = np.arange(len(d), dtype=float)  # row of the full panel (for permutations)
    d["_unit"] = pd.factorize(d[ENTITY], sort=True)[0]
    d["_state"] = pd.factorize(d[STATE], sort=True)[0]
    if sample == "no2009":
        d = d.loc[d[TIME] != 2009]
    elif sample == "no1997":
        d = d.loc[d[TIME] != 1997]
    elif sample == "pop10k":
        first_pop = d.groupby(ENTITY)["population"].transform("first").astype(float)
        d = d.loc[first_pop >= POP_THRESHOLD]
    if long_diff:
        d = d.loc[d[TIME].isin(LONG_DIFF_WAVES)]
    d = d.reset_index(drop=True)
    if timing == "lag1":
        waves = np.sort(d[TIME].unique())
        pos = np.searchsorted(waves, d[TIME].to_numpy())
        ent = d[ENTITY].to_numpy()
        prev_ok = np.zeros(len(d), dtype=bool)
        prev_ok[1:] = (ent[1:] == ent[:-1]) & (pos[1:] - pos[:-1] == 1)
        lagged_cols = {}
        for c in [c for c in d.columns if c not in _NOT_LAGGED]:
            v = d[c].astype(float).to_numpy()
            lagged = np.full(len(d), np.nan)
            lagged[1:] = v[:-1]
            lagged_cols[c + "@lag"] = np.where(prev_ok, lagged, np.nan)
        d = pd.concat([d, pd.DataFrame(lagged_cols, index=d.index)], axis=1)
    d.attrs["sample"] = sample
    return d


def _rhs(spec: Mapping) -> list[str]:
    cols = [spec["density"], *spec_controls(spec)]
    return [c + "@lag" for c in cols] if spec["timing"] == "lag1" else cols


def _spec_rows(base: pd.DataFrame, spec: Mapping) -> pd.DataFrame:
    """The complete rows of one specification, with columns y, x, w0.. (balanced if asked) and,
    for ``weights="population"``, ``weight``.

    ``src`` is the row of the full (sorted) panel that the density value comes from.
    """
    rhs = _rhs(spec)
    weighted = spec.get("weights", "none") == "population"
    cols = [spec["outcome"], *rhs] + ([WEIGHT_COLUMN] if weighted else [])
    src = "_row@lag" if spec["timing"] == "lag1" else "_row"
    d = base[[ENTITY, TIME, STATE, src, *cols]].dropna(subset=cols)
    names = [ENTITY, TIME, STATE, "src", "y", "x", *[_CONTROL_NAME.format(j) for j in range(len(rhs) - 1)]]
    d = d.set_axis(names + ([WEIGHT_NAME] if weighted else []), axis=1)
    if spec["sample"] == "balanced" and not d.empty:
        n_waves = d[TIME].nunique()
        count = d.groupby(ENTITY)[TIME].transform("size")
        d = d.loc[count == n_waves]
    return d


def _varies_within(M: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """For each column of M: does it vary within at least one group of ``codes``?

    Each value is compared with one row of its group; a column counts as constant when
    every difference is within 1e-12 of its size (at least 1), the tolerance of
    ``analysis.estimation``'s absorption checks.
    """
    member = np.empty(codes.max() + 1, dtype=np.int64)
    member[codes] = np.arange(len(codes))  # some row of each group (which one does not matter)
    spread = np.abs(M - M[member[codes]]).max(axis=0)
    return spread > 1e-12 * np.maximum(np.abs(M).max(axis=0), 1.0)


# What each estimator's effects absorb: (grouping within which a column must vary, why not).
_WAVE = ("wave", "does not vary across counties within any wave, so the wave effects absorb it")
_COUNTY = ("county", "is constant over time within every county, so the county effects absorb it")
_DIFF = ("diff", ("changes by the same amount in every county between each pair of consecutive waves, so the "
                  "period intercepts of the differences absorb it"))
_STATE_WAVE = ("state-wave", ("does not vary across the counties of any state within a wave, so the "
                              "state-by-wave effects absorb it"))
_ABSORBED: dict[str, list[tuple[str, str]]] = {
    "pooled": [_WAVE],
    "fe": [_COUNTY],
    "twfe": [_COUNTY, _WAVE],
    "state-year": [_COUNTY, _STATE_WAVE],
    "fd": [_DIFF],
    "long-diff": [_DIFF],
}


def _why_degenerate(M: np.ndarray, unit: np.ndarray, year: np.ndarray, state: np.ndarray, estimator: str,
                    cache: dict | None = None, names: Sequence | None = None) -> tuple[int | None, str] | None:
    """Why ``estimator`` cannot estimate the slopes of the columns of ``M`` (density, then
    controls; rows sorted by county and wave, as the fits take them), or None.

    Returns ``(None, reason)`` when there are fewer than two county clusters (the CR1
    correction divides by G - 1, the t distribution has G - 1 degrees of freedom), or
    ``(j, reason)`` for a column that is constant or that the estimator's effects absorb
    (:data:`_ABSORBED`): each would make the design singular. These are necessary
    conditions, as in ``analysis.estimation``: a column collinear with the others (say, a
    control equal to the density plus a county level) passes them. ``cache`` holds what
    estimators on the same rows share; with ``names`` (one per column of ``M``) it holds each
    column's answers, so that specifications on the same rows that share a column check it once.
    """
    if estimator not in _ABSORBED:
        raise MultiverseError(f"Choice 'estimator' has unknown option {estimator!r}.")
    c = {} if cache is None else cache
    names = list(range(M.shape[1])) if names is None else list(names)
    diff = estimator in ("fd", "long-diff")
    if diff and "pairs" not in c:
        c["pairs"] = _difference_pairs(unit, year)
    clusters = unit[1:][c["pairs"][0]] if diff else unit  # sorted: count the changes, not np.unique
    G = int(len(clusters) > 0) + int(np.count_nonzero(clusters[1:] != clusters[:-1]))
    if G < 2:
        return None, (f"{'no county' if G == 0 else f'only {G} county'}{' with two consecutive waves' if diff else ''}"
                      ": standard errors clustered by county need at least two")
    for j in range(M.shape[1]):
        if ("ptp", names[j]) not in c:
            c[("ptp", names[j])] = (float(np.ptp(M[:, j])), float(M[0, j]))
        ptp, first = c[("ptp", names[j])]
        if ptp == 0:
            return j, f"is constant in the sample (every value is {first:g})"
    for grouping, reason in _ABSORBED[estimator]:
        for j in range(M.shape[1]):
            key = ("varies within " + grouping, names[j])
            if key not in c:
                col = M[:, j:j + 1]
                if grouping == "diff":
                    sel, per = c["pairs"]
                    c[key] = bool(_varies_within((col[1:] - col[:-1])[sel], per)[0])
                elif grouping == "county":
                    c[key] = bool(_varies_within(col, unit)[0])
                elif grouping == "wave":
                    if "wave codes" not in c:
                        c["wave codes"] = _codes(year)
                    c[key] = bool(_varies_within(col, c["wave codes"])[0])
                else:  # the state-by-wave cells of the fits
                    if "cell codes" not in c:
                        c["cell codes"] = _codes(state.astype(np.int64) * 10_000 + year)
                    c[key] = bool(_varies_within(col, c["cell codes"])[0])
            if not c[key]:
                return j, reason
    return None


def _difference_pairs(unit: np.ndarray, year: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The differences between consecutive waves of the sample (rows sorted by unit, wave): a
    mask of the rows ``1..n-1`` that start one (row ``i+1`` minus row ``i``) and their period codes."""
    pos = np.unique(year, return_inverse=True)[1]
    ok = np.zeros(len(unit), dtype=bool)
    ok[1:] = (unit[1:] == unit[:-1]) & (pos[1:] - pos[:-1] == 1)
    sel = ok[1:]
    return sel, _codes(pos[1:][sel])


def prepare_sample(df: pd.DataFrame, spec: Mapping) -> pd.DataFrame:
    """The estimation sample of one specification (levels; columns ``y``, ``x``, ``w0``... and
    ``weight`` if weighted)."""
    spec = {"weights": "none", **dict(spec)}
    specs = pd.DataFrame([spec], columns=list(CHOICES))
    _check_specs(specs)
    slim = _slim(_check_columns(df, specs), specs)
    return _spec_rows(_base_frame(slim, spec["sample"], spec["timing"], spec["estimator"] == "long-diff"), spec)


# --------------------------------------------------------------------------------------
# Estimation (fast path, checked against analysis.estimation.fit)
# --------------------------------------------------------------------------------------


def _demean(values: np.ndarray, codes: np.ndarray) -> np.ndarray:
    n = codes.max() + 1
    cnt = np.bincount(codes, minlength=n)
    out = values.copy()
    for j in range(values.shape[1]):
        out[:, j] -= (np.bincount(codes, weights=values[:, j], minlength=n) / cnt)[codes]
    return out


def _demean_two(values: np.ndarray, a: np.ndarray, b: np.ndarray, tol: float = 1e-13, maxiter: int = 5000) -> np.ndarray:
    """Residuals of ``values`` on two sets of dummies (alternating projections to ``tol``)."""
    out = values.copy()
    scale = np.maximum(np.abs(values).max(axis=0), 1e-300)
    for _ in range(maxiter):
        prev = out
        out = _demean(_demean(out, a), b)
        if (np.abs(out - prev).max(axis=0) / scale).max() < tol:
            return out
    raise RuntimeError("Alternating projections did not converge.")


def _codes(s) -> np.ndarray:
    return pd.factorize(s, sort=True)[0]


def _run_starts(codes: np.ndarray) -> np.ndarray:
    """First row of each run of equal codes (rows sorted by the codes)."""
    return np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])


def _orthonormal(Z: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the columns of Z (rank-revealing SVD; rank-deficient Z allowed)."""
    if Z.shape[1] == 0 or Z.shape[0] == 0:
        return np.empty((Z.shape[0], 0))
    U, sv, _ = np.linalg.svd(Z, full_matrices=False)
    if sv[0] == 0:
        return np.empty((Z.shape[0], 0))
    return U[:, sv > sv[0] * max(Z.shape) * np.finfo(float).eps * 10]


def _small_codes(v: np.ndarray) -> np.ndarray:
    """Codes 0..k-1 of small non-negative-offset integers (waves, states) in sorted order, in O(n)."""
    off = v.astype(np.int64) - int(v.min())
    present = np.bincount(off) > 0
    return (np.cumsum(present) - 1)[off]


class _Sums:
    """Sums within groups and their expansion back to rows, as sparse one-hot products (much
    faster than ``np.add.reduceat`` on many columns): ``sum(M)`` is groups x columns,
    ``expand(S)`` rows x columns."""

    def __init__(self, codes: np.ndarray):
        n, g = len(codes), int(codes.max()) + 1 if len(codes) else 0
        codes = codes.astype(np.int32)
        ones = np.ones(n)
        self.D = sparse.csr_matrix((ones, codes, np.arange(n + 1, dtype=np.int32)), shape=(n, g))
        order = np.arange(n, dtype=np.int32) if np.all(codes[1:] >= codes[:-1]) else np.argsort(codes, kind="stable")
        indptr = np.r_[0, np.cumsum(np.bincount(codes, minlength=g))].astype(np.int32)
        self.DT = sparse.csr_matrix((ones, order.astype(np.int32), indptr), shape=(g, n))

    def sum(self, M: np.ndarray) -> np.ndarray:
        return self.DT @ M

    def expand(self, S: np.ndarray) -> np.ndarray:
        return self.D @ S


class _GroupMeans:
    """Residuals of columns on group dummies, weighted or not: :math:`v - \\bar v^w_{g(i)}`."""

    def __init__(self, codes: np.ndarray, w: np.ndarray | None, sums: _Sums | None = None):
        self.w = w
        self.sums = _Sums(codes) if sums is None else sums
        self.inv = 1.0 / self.sums.sum(np.ones(len(codes)) if w is None else w)

    def residual(self, v: np.ndarray) -> np.ndarray:
        one = v.ndim == 1
        M = v[:, None] if one else v
        wM = M if self.w is None else M * self.w[:, None]
        out = M - self.sums.expand(self.sums.sum(wM) * self.inv[:, None])
        return out[:, 0] if one else out


class _Absorber:
    r"""The effects of one estimator on one set of rows, optionally weighted: it turns a column
    of the rows (levels, sorted by county and wave) into the transformed column whose least
    squares, by Frisch-Waugh-Lovell, give the estimator's slopes (the module docstring says how).

    ``clusters`` are the county codes of the transformed rows (sorted), ``k_extra`` the absorbed
    coefficients counted in :math:`K` (as :func:`analysis.estimation.fit` counts them).
    """

    def __init__(self, unit: np.ndarray, year: np.ndarray, state: np.ndarray, estimator: str,
                 w: np.ndarray | None = None):
        if estimator not in _ABSORBED:
            raise MultiverseError(f"Choice 'estimator' has unknown option {estimator!r}.")
        self.estimator = estimator
        self.basis = None
        if estimator in ("fd", "long-diff"):
            sel, per = _difference_pairs(unit, year)
            self.sel = sel
            wd = None if w is None else 1.0 / (1.0 / w[1:][sel] + 1.0 / w[:-1][sel])  # linearmodels' rule
            self.groups = _GroupMeans(per, wd)  # the period intercepts of the differences
            self.sw = None if wd is None else np.sqrt(wd)
            self.clusters = unit[1:][sel]
            self.k_extra = int(per.max()) + 1 if len(per) else 0
        else:
            self.sel = None
            self.sw = None if w is None else np.sqrt(w)
            self.clusters = unit
            if estimator == "pooled":
                yc = _small_codes(year)
                self.groups = _GroupMeans(yc, w)
                self.k_extra = int(yc.max()) + 1  # constant + T-1 year dummies
            else:
                self.cluster_sums = _Sums(unit)  # counties: the groups and the clusters
                self.groups = _GroupMeans(unit, w, self.cluster_sums)
                if estimator == "fe":
                    self.k_extra = 1  # the constant; the county effects are nested in the clusters
                else:
                    yc = _small_codes(year)
                    block = np.zeros(len(unit), dtype=np.int64) if estimator == "twfe" else _small_codes(state)
                    n_blocks = int(block.max()) + 1
                    n_cells = int(np.count_nonzero(np.bincount(block * (int(yc.max()) + 1) + yc)))
                    self.k_extra = 1 + n_cells - n_blocks  # constant + dummies, one per block omitted
                    self._build_basis(block, yc)
        self.n = len(self.clusters)
        self.starts = _run_starts(self.clusters)
        self.G = len(self.starts)
        if not hasattr(self, "cluster_sums"):
            self.cluster_sums = _Sums(np.cumsum(np.r_[False, self.clusters[1:] != self.clusters[:-1]]))

    def _build_basis(self, block: np.ndarray, cell: np.ndarray) -> None:
        """An orthonormal basis of the county-demeaned (weighted, scaled) wave dummies of each
        block (counties are nested in the blocks, so the basis is block-diagonal), from the
        eigenvectors of each block's Gram matrix: row i's coordinates ``basis[i]`` on its block's
        basis vectors. Directions with eigenvalue below 1e-10 of the block's largest (the sum of
        the dummies, which the county effects absorb) are dropped."""
        n, T = len(cell), int(cell.max()) + 1
        Z = np.zeros((n, T))
        Z[np.arange(n), cell] = 1.0
        Z = self.groups.residual(Z)
        if self.sw is not None:
            Z *= self.sw[:, None]
        gram = _Sums(block).sum((Z[:, :, None] * Z[:, None, :]).reshape(n, T * T)).reshape(-1, T, T)
        lam, vec = np.linalg.eigh(gram)  # ascending, per block
        keep = lam > lam[:, -1:] * 1e-10
        scale = np.where(keep, 1.0 / np.sqrt(np.where(keep, lam, 1.0)), 0.0)
        coef = vec * scale[:, None, :]  # (blocks, T, T): the basis vectors are Z_b @ coef_b
        basis = np.einsum("it,itk->ik", Z, coef[block])
        basis = basis[:, np.abs(basis).max(axis=0) > 0]
        K = basis.shape[1]
        if int(block.max()) == 0:  # one block: a dense n x K basis
            self.basis, self.basis_t = basis, basis.T.copy()
        else:  # block-diagonal: column (block, k) holds the block's k-th vector on its rows
            cols = (block[:, None] * K + np.arange(K)).ravel()
            self.basis = sparse.csr_matrix((basis.ravel(), (np.repeat(np.arange(n), K), cols)),
                                           shape=(n, (int(block.max()) + 1) * K))
            self.basis_t = self.basis.T.tocsr()

    def _project(self, r: np.ndarray) -> np.ndarray:
        """r minus its projection on the basis (1-d or 2-d)."""
        return r - self.basis @ (self.basis_t @ r)

    def transform(self, v: np.ndarray) -> np.ndarray:
        """The transformed column(s) of ``v`` (levels, one row per row of the set; 1-d or 2-d)."""
        if self.sel is not None:
            v = (v[1:] - v[:-1])[self.sel]
        r = self.groups.residual(v)
        if self.sw is not None:
            r = r * (self.sw if r.ndim == 1 else self.sw[:, None])
        if self.basis is not None:
            r = self._project(r)
        return r


def _ols_cluster(y: np.ndarray, X: np.ndarray, clusters: np.ndarray, k_extra: int,
                 sums: _Sums | None = None) -> tuple[float, float, int]:
    """OLS slope of the first column of X, its CR1 standard error and the number of clusters.

    ``clusters`` are sorted cluster codes (each cluster's rows adjacent; ``sums`` their
    :class:`_Sums` if at hand); ``k_extra`` is the number of absorbed coefficients counted in
    K besides X's columns.
    """
    XtX = X.T @ X
    bread = np.linalg.inv(XtX)
    beta = bread @ (X.T @ y)
    e = y - X @ beta
    if sums is None:
        sums = _Sums(np.cumsum(np.r_[False, clusters[1:] != clusters[:-1]]))
    scores = sums.sum(X * e[:, None])
    meat = scores.T @ scores
    n, K = len(y), X.shape[1] + k_extra
    G = scores.shape[0]
    V = bread @ meat @ bread * (G / (G - 1)) * ((n - 1) / (n - K))
    return float(beta[0]), float(np.sqrt(V[0, 0])), G


@lru_cache(maxsize=4096)
def _t_quantile(df: int) -> float:
    return float(stats.t.ppf(0.975, df))


def _inference(estimate, se, n_units) -> dict:
    """95% interval and two-sided p-value with t(counties - 1) degrees of freedom, as
    analysis.estimation.fit (for differences this counts a county with a single wave, which adds
    no difference). Scalars or arrays."""
    estimate, se, dof = np.asarray(estimate, float), np.asarray(se, float), np.asarray(n_units) - 1
    q = np.vectorize(_t_quantile, otypes=[float])(dof) if dof.ndim else _t_quantile(int(dof))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(se > 0, 2 * stats.t.sf(np.abs(estimate / se), dof), np.nan)
    out = {"ci_low": estimate - q * se, "ci_high": estimate + q * se, "p": p}
    return {k: (float(v) if np.ndim(v) == 0 else v) for k, v in out.items()}


def fit_spec(sample: pd.DataFrame, estimator: str) -> dict:
    """Fit one specification on its sample (from :func:`prepare_sample`).

    Returns ``estimate`` (per unit of density, outcome units), ``se`` (clustered by county,
    CR1), ``ci_low``/``ci_high`` (95%, :math:`t_{G-1}`), ``p``, ``nobs`` (rows in levels),
    ``n_units``. A ``weight`` column makes it weighted least squares. Raises
    :class:`MultiverseError`, before fitting, if the sample is degenerate (fewer than two
    counties, or ``x`` or a control constant or absorbed by the effects).
    """
    d = sample.sort_values([ENTITY, TIME])
    rhs = ["x"] + [c for c in d.columns if _is_control(c)]
    V = d[["y", *rhs]].to_numpy(dtype=float)
    unit, years, state = _codes(d[ENTITY].to_numpy()), d[TIME].to_numpy(dtype=np.int64), _codes(d[STATE].to_numpy())
    w = d[WEIGHT_NAME].to_numpy(dtype=float) if WEIGHT_NAME in d.columns else None
    why = _why_degenerate(V[:, 1:], unit, years, state, estimator) if len(d) else (None, "has no rows")
    if why is not None:
        j, reason = why
        raise MultiverseError(f"The sample {reason}." if j is None else f"Column {rhs[j]!r} {reason}.")
    return _fit_arrays(V, unit, years, state, estimator, w)


#: ModelSpec (estimator, effects) -> the fast path's estimator (the inverse of LINEARMODELS_EQUIVALENT).
_FAST_EQUIVALENT: dict[tuple[str, str], str] = {
    ("pooled", "time"): "pooled", ("fe", "unit"): "fe", ("twfe", "unit+time"): "twfe",
    ("fe", "unit+time"): "twfe", ("twfe", "state-by-year"): "state-year", ("fe", "state-by-year"): "state-year",
    ("fd", "time"): "fd",
}


@dataclass(frozen=True)
class FastFit:
    """The coefficient of a specification's first regressor, as :func:`fit_fast` returns it:
    ``params``, ``std_errors`` and ``pvalues`` (Series of one term, as
    :class:`analysis.estimation.PanelResult` has them), ``conf_int`` (95%), ``nobs``,
    ``n_units`` and the ``spec``."""

    spec: object
    params: pd.Series
    std_errors: pd.Series
    pvalues: pd.Series
    conf_int: pd.DataFrame
    nobs: int
    n_units: int


def fit_fast(spec, df: pd.DataFrame) -> FastFit:
    """The first regressor's coefficient of an :class:`analysis.estimation.ModelSpec`, by this
    module's fast path instead of linearmodels: the same sample (:func:`analysis.estimation.validate`
    builds it), model, weights and CR1 covariance clustered by county, so the same numbers as
    :func:`analysis.estimation.fit` (the tests check both to 1e-9), in a fraction of the time
    for many effect dummies (state-by-year). Models: pooled with period effects, unit (and
    period or state-by-period) effects, first differences with period effects; ``cov`` must be
    ``"cluster-unit"``.
    """
    from analysis.estimation import SpecificationError, validate

    key = (spec.estimator, spec.effects)
    if key not in _FAST_EQUIVALENT or spec.cov != "cluster-unit":
        raise SpecificationError(f"fit_fast() covers {sorted(_FAST_EQUIVALENT)} with cov='cluster-unit', not "
                                 f"{key} with cov={spec.cov!r}; use analysis.estimation.fit.")
    sample = validate(spec, df)  # listwise complete, sorted by entity and time, absorption checked
    V = sample[[spec.outcome, *spec.variables]].to_numpy(dtype=float)
    unit = _codes(sample[spec.entity].to_numpy())
    years = _codes(sample[spec.time].to_numpy()).astype(np.int64)
    state = _codes(sample[spec.state].to_numpy()) if spec.state in sample.columns else np.zeros(len(sample), np.int64)
    w = sample[spec.weights].to_numpy(dtype=float) if spec.weights is not None else None
    r = _fit_arrays(V, unit, years, state, _FAST_EQUIVALENT[key], w)
    x = spec.regressors[0]
    return FastFit(spec=spec, params=pd.Series({x: r["estimate"]}), std_errors=pd.Series({x: r["se"]}),
                   pvalues=pd.Series({x: r["p"]}),
                   conf_int=pd.DataFrame({"lower": [r["ci_low"]], "upper": [r["ci_high"]]}, index=[x]),
                   nobs=int(r["nobs"]), n_units=int(r["n_units"]))


def _fit_arrays(V: np.ndarray, unit: np.ndarray, years: np.ndarray, state: np.ndarray, estimator: str,
                w: np.ndarray | None = None) -> dict:
    """The estimator on arrays: V = [y, x, controls], rows sorted by unit then wave."""
    unit = np.unique(unit, return_inverse=True)[1]
    absorber = _Absorber(unit, years, state, estimator, w)
    R = absorber.transform(V)
    b, se, _ = _ols_cluster(R[:, 0], R[:, 1:], absorber.clusters, absorber.k_extra, absorber.cluster_sums)
    n_units = int(unit.max() + 1)
    return {"estimate": b, "se": se, **_inference(b, se, n_units), "nobs": len(V), "n_units": n_units}


@dataclass(frozen=True)
class _Rows:
    """The rows of one specification in its sample's frame (sorted by county, wave)."""

    key: tuple  # identity of the row set: (frame key, mask)
    idx: np.ndarray  # positions in the frame
    unit: np.ndarray  # county codes 0..n_units-1, adjacent
    year: np.ndarray
    state: np.ndarray
    n_units: int


class _Workspace:
    """What the specifications of one run share, computed once (see the module docstring): the
    sample frames and their columns as arrays, each specification's row set and the checks of
    its columns, the effects of an estimator on a row set (:class:`_Absorber`) and the columns
    already transformed by them. Nothing in it depends on the order of the specifications;
    :meth:`release` frees the absorbers and transformed columns between groups."""

    def __init__(self, slim: pd.DataFrame):
        self.slim = slim
        self.frames: dict = {}
        self.arrays: dict = {}
        self.row_sets: dict = {}
        self.by_spec: dict = {}
        self.checks: dict = {}
        self.absorbers: dict = {}
        self.transformed: dict = {}

    @staticmethod
    def frame_key(spec: Mapping) -> tuple:
        return (spec["sample"], spec["timing"], spec["estimator"] == "long-diff")

    def frame(self, fkey: tuple) -> pd.DataFrame:
        if fkey not in self.frames:
            self.frames[fkey] = _base_frame(self.slim, *fkey)
        return self.frames[fkey]

    def column(self, fkey: tuple, name: str) -> np.ndarray:
        if (fkey, name) not in self.arrays:
            self.arrays[(fkey, name)] = self.frame(fkey)[name].to_numpy(dtype=float, na_value=np.nan)
        return self.arrays[(fkey, name)]

    def ids(self, fkey: tuple) -> tuple:
        if (fkey, "_ids") not in self.arrays:
            base = self.frame(fkey)
            self.arrays[(fkey, "_ids")] = (base["_unit"].to_numpy(), base[TIME].to_numpy(dtype=np.int64),
                                           base["_state"].to_numpy())
        return self.arrays[(fkey, "_ids")]

    @staticmethod
    def columns(spec: Mapping) -> list[str]:
        """outcome, density, controls (lagged names under lag1)."""
        return [spec["outcome"], *_rhs(spec)]

    def rows(self, spec: Mapping) -> _Rows:
        fkey = self.frame_key(spec)
        names = self.columns(spec) + ([WEIGHT_COLUMN] if spec["weights"] == "population" else [])
        skey = (fkey, tuple(names), spec["sample"] == "balanced")
        if skey not in self.by_spec:
            self.by_spec[skey] = self._rows(fkey, names, spec["sample"] == "balanced")
        return self.by_spec[skey]

    def _rows(self, fkey: tuple, names: list[str], balanced: bool) -> _Rows:
        unit, year, state = self.ids(fkey)
        ok = np.ones(len(unit), dtype=bool)
        for c in names:
            ok &= ~np.isnan(self.column(fkey, c))
        if balanced and ok.any():
            n_waves = np.unique(year[ok]).size
            count = np.bincount(unit[ok], minlength=unit.max() + 1)
            ok &= count[unit] == n_waves
        key = (fkey, np.packbits(ok).tobytes())
        if key not in self.row_sets:
            idx = np.flatnonzero(ok)
            u = unit[idx]
            compact = np.cumsum(np.r_[False, u[1:] != u[:-1]]) if len(u) else u
            self.row_sets[key] = _Rows(key, idx, compact, year[idx], state[idx], int(compact[-1]) + 1 if len(u) else 0)
        return self.row_sets[key]

    def matrix(self, spec: Mapping, rows: _Rows, names: Sequence[str]) -> np.ndarray:
        fkey = self.frame_key(spec)
        return np.column_stack([self.column(fkey, c)[rows.idx] for c in names])

    def why_degenerate(self, spec: Mapping, rows: _Rows, estimator: str):
        names = _rhs(spec)
        cache = self.checks.setdefault(rows.key, {})
        key = ("answer", tuple(names), estimator)
        if key not in cache:
            cache[key] = _why_degenerate(self.matrix(spec, rows, names), rows.unit, rows.year, rows.state,
                                         estimator, cache, names)
        return cache[key]

    def absorber(self, spec: Mapping, rows: _Rows) -> tuple[tuple, _Absorber]:
        akey = (rows.key, spec["estimator"], spec["weights"])
        if akey not in self.absorbers:
            w = self.column(self.frame_key(spec), WEIGHT_COLUMN)[rows.idx] if spec["weights"] == "population" else None
            self.absorbers[akey] = _Absorber(rows.unit, rows.year, rows.state, spec["estimator"], w)
        return akey, self.absorbers[akey]

    def transformed_column(self, spec: Mapping, rows: _Rows, name: str) -> np.ndarray:
        akey, absorber = self.absorber(spec, rows)
        if (akey, name) not in self.transformed:
            self.transformed[(akey, name)] = absorber.transform(self.column(self.frame_key(spec), name)[rows.idx])
        return self.transformed[(akey, name)]

    def fit(self, spec: Mapping) -> dict:
        """estimate, se, nobs and n_units of one specification (inference: :func:`_inference`)."""
        rows = self.rows(spec)
        _, absorber = self.absorber(spec, rows)
        names = self.columns(spec)
        R = np.column_stack([self.transformed_column(spec, rows, c) for c in names])
        b, se, _ = _ols_cluster(R[:, 0], R[:, 1:], absorber.clusters, absorber.k_extra, absorber.cluster_sums)
        return {"estimate": b, "se": se, "nobs": len(rows.idx), "n_units": rows.n_units}

    def release(self) -> None:
        self.absorbers.clear()
        self.transformed.clear()


def _records(table: pd.DataFrame) -> list[dict]:
    """The rows of ``table`` as dicts of plain Python values (faster than ``to_dict("records")``)."""
    cols = list(table.columns)
    return [dict(zip(cols, row)) for row in zip(*(table[c].tolist() for c in cols))]


def _group_key(spec: Mapping) -> tuple:
    """Specifications of one group share a frame, an estimator and a weighting (and so absorbers)."""
    return (spec["sample"], spec["timing"], spec["estimator"] == "long-diff", spec["estimator"], spec["weights"])


_RUN_ORDER = ["sample", "timing", "estimator", "weights", "density", "controls", "outcome"]


def _run_chunk(slim: pd.DataFrame, specs: list[dict], ws: _Workspace | None = None) -> list[dict]:
    ws = _Workspace(slim) if ws is None else ws
    out = []
    group = None
    for spec in specs:
        if _group_key(spec) != group:
            ws.release()
            group = _group_key(spec)
        try:
            out.append({**spec, **ws.fit(spec)})
        except np.linalg.LinAlgError as err:
            # check_grid's degeneracy checks are necessary conditions; name what slipped past them
            choices = ", ".join(f"{c}={spec[c]!r}" for c in CHOICES)
            raise MultiverseError(f"The design of the specification ({choices}) is singular: {err}.") from err
    ws.release()
    return out


# --------------------------------------------------------------------------------------
# Running: joblib or Dask, with a disk cache
# --------------------------------------------------------------------------------------


def data_hash(df: pd.DataFrame, columns: Sequence[str] | None = None) -> str:
    """SHA-256 of ``pandas.util.hash_pandas_object`` of ``columns`` (all if None), rows and values."""
    d = df if columns is None else df[list(columns)]
    h = hashlib.sha256()
    h.update(json.dumps([str(c) for c in d.columns]).encode())
    h.update(pd.util.hash_pandas_object(d, index=False).to_numpy().tobytes())
    return h.hexdigest()


def _cache_key(specs: pd.DataFrame, slim: pd.DataFrame, extra: str = "") -> str:
    payload = json.dumps({"engine": _engine_hash(), "specs": specs[list(CHOICES)].to_dict("records"),
                          "controls": CONTROL_SETS, "ratio_free": {k: v.__dict__ for k, v in RATIO_FREE.items()},
                          "extra": extra}, sort_keys=True, default=list)
    return hashlib.sha256((payload + data_hash(slim)).encode()).hexdigest()[:24]


def _atomic_write_parquet(table: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        table.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


DEFAULT_CACHE = PROCESSED_DIR / "multiverse"


def _chunks(records: list[dict], size: int) -> list[list[dict]]:
    """Consecutive records in chunks of at most ``size``, cut where a group (:func:`_group_key`)
    ends when that keeps chunks at least half full, so that a chunk's specifications share work."""
    out: list[list[dict]] = []
    cur: list[dict] = []
    for i, r in enumerate(records):
        cur.append(r)
        nxt = records[i + 1] if i + 1 < len(records) else None
        if len(cur) >= size or nxt is None or (len(cur) >= size // 2 and _group_key(nxt) != _group_key(r)):
            out.append(cur)
            cur = []
    return out


def run_multiverse(
    df: pd.DataFrame,
    grid: Mapping[str, Sequence[str]] | pd.DataFrame,
    n_jobs: int = 2,
    scheduler=None,
    cache_dir: str | Path | None = DEFAULT_CACHE,
    progress: bool = True,
    chunk_size: int = 120,
    standardise_by: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Fit every specification of ``grid`` on ``df``; one row per specification.

    ``grid`` is a mapping choice -> options (see :func:`expand_grid`) or an already expanded
    specification table. The grid is checked (:func:`check_grid`) before anything is fitted.
    ``scheduler`` (a Dask scheduler address or a ``distributed.Client``) runs the chunks on
    that cluster; otherwise joblib with ``n_jobs`` processes (1: in this process, reusing the
    samples that the check built). ``cache_dir`` (``None``: no cache) holds the result, keyed
    by the specifications and the data's hash. The result's ``attrs`` say whether it came from
    the cache (``from_cache``), the key and the fitting time in seconds. Standardised
    estimates are added by :func:`standardise`, on ``standardise_by`` (default ``df``).
    """
    specs = grid if isinstance(grid, pd.DataFrame) else expand_grid(grid)[0]
    _check_specs(specs)
    specs = specs[list(CHOICES)].reset_index(drop=True)
    if specs.empty:
        raise MultiverseError("The grid has no specification left after the exclusions.")
    df = _check_columns(df, specs)
    slim = _slim(df, specs)
    key = _cache_key(specs, slim)
    path = Path(cache_dir) / f"{key}.parquet" if cache_dir is not None else None
    if path is not None and path.exists():
        table = pd.read_parquet(path)
        table.attrs.update(from_cache=True, key=key, seconds=0.0)
        return table
    ws = _Workspace(slim)
    _check_samples(ws, specs)
    t0 = time.perf_counter()
    # Chunks that share a sample, timing, estimator and weighting reuse the prepared frame and
    # the transformed columns.
    order = specs.sort_values(_RUN_ORDER, kind="stable")
    chunks = _chunks(_records(order.reset_index()), chunk_size)
    bar = _progress(len(specs), progress)
    results: list[dict] = []
    if scheduler is not None:
        results = _run_dask(scheduler, slim, chunks, bar)
    elif n_jobs == 1:
        for ch in chunks:
            results += _run_chunk(slim, ch, ws)
            bar.update(len(ch))
    else:
        from joblib import Parallel, delayed

        par = Parallel(n_jobs=n_jobs, return_as="generator_unordered")
        for res in par(delayed(_run_chunk)(slim, ch) for ch in chunks):
            results += res
            bar.update(len(res))
    bar.close()
    table = pd.DataFrame(results).sort_values("index").drop(columns="index").reset_index(drop=True)
    inf = _inference(table["estimate"].to_numpy(), table["se"].to_numpy(), table["n_units"].to_numpy())
    table = table.assign(**inf)[[*CHOICES, "estimate", "se", "ci_low", "ci_high", "p", "nobs", "n_units"]]
    table = standardise(table, df if standardise_by is None else standardise_by)
    seconds = time.perf_counter() - t0
    if path is not None:
        _atomic_write_parquet(table, path)
    table.attrs.update(from_cache=False, key=key, seconds=seconds)
    return table


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, desc="specifications", unit="spec", mininterval=1.0)


def _run_dask(scheduler, slim: pd.DataFrame, chunks: list[list[dict]], bar) -> list[dict]:
    from distributed import Client, as_completed

    own = not isinstance(scheduler, Client)
    client = Client(scheduler) if own else scheduler
    try:
        [data] = client.scatter([slim], broadcast=True)
        futures = [client.submit(_run_chunk, data, ch, pure=False) for ch in chunks]
        results: list[dict] = []
        for fut in as_completed(futures):
            res = fut.result()
            results += res
            bar.update(len(res))
        return results
    finally:
        if own:
            client.close()


# --------------------------------------------------------------------------------------
# Standardisation and summaries
# --------------------------------------------------------------------------------------


def _within_sd(df: pd.DataFrame, col: str, twoway: bool) -> float:
    d = df[[ENTITY, TIME, col]].dropna()
    v = d[[col]].to_numpy(dtype=float)
    unit = _codes(d[ENTITY].to_numpy())
    r = _demean_two(v, unit, _codes(d[TIME].to_numpy()), tol=1e-12) if twoway else _demean(v, unit)
    return float(np.std(r[:, 0], ddof=1))


def standardise(table: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    r"""Add comparable versions of each estimate, from fixed scales of the full panel ``df``.

    ``sd_x``: the within-county SD of the density measure (after removing county means,
    the scale of the equivalence bounds of Chapter 1; for a ratio-free density, of
    :math:`\log(1+c)`); ``sd_y``: the SD of the outcome net of county and wave means.
    ``estimate_sdx`` (and ``ci_low_sdx``, ``ci_high_sdx``) is the effect of a one-``sd_x`` rise
    in outcome units; ``estimate_std`` the same in ``sd_y`` units; ``aligned`` is
    ``estimate_std`` times the thesis's sign (:data:`THESIS_SIGN`), so positive always means
    "as the thesis predicts". ``significant_thesis`` / ``significant_against``: the 95%
    interval excludes zero in / against that direction. ``density_form``: ``ratio`` (a
    density per person) or ``ratio-free`` (:data:`RATIO_FREE`).
    """
    df = add_derived_columns(df, ["log_population", *table["density"].unique()])
    out = table.copy()
    sdx = {c: _within_sd(df, c, twoway=False) for c in out["density"].unique()}
    sdy = {c: _within_sd(df, c, twoway=True) for c in out["outcome"].unique()}
    out["sd_x"] = out["density"].map(sdx)
    out["sd_y"] = out["outcome"].map(sdy)
    for c in ("estimate", "ci_low", "ci_high"):
        out[f"{c}_sdx"] = out[c] * out["sd_x"]
    out["estimate_std"] = out["estimate_sdx"] / out["sd_y"]
    sign = out["outcome"].map(THESIS_SIGN).fillna(1).astype(int)
    out["aligned"] = sign * out["estimate_std"]
    lo, hi = sign * out["ci_low"], sign * out["ci_high"]
    out["significant_thesis"] = np.minimum(lo, hi) > 0
    out["significant_against"] = np.maximum(lo, hi) < 0
    out["density_form"] = np.where(out["density"].isin(list(RATIO_FREE)), "ratio-free", "ratio")
    return out


def curve_summary(table: pd.DataFrame, by: str | None = "outcome") -> pd.DataFrame:
    """Shares of specifications by sign and significance (95%), overall and ``by`` a choice.

    Columns: ``n``, ``share_thesis`` (estimate in the thesis's direction),
    ``share_sig_thesis`` and ``share_sig_against`` (interval excludes zero, each way),
    ``median_aligned`` (median of ``aligned``, in outcome-SD units).
    """

    def one(t: pd.DataFrame) -> pd.Series:
        return pd.Series({
            "n": len(t),
            "share_thesis": float((t["aligned"] > 0).mean()),
            "share_sig_thesis": float(t["significant_thesis"].mean()),
            "share_sig_against": float(t["significant_against"].mean()),
            "median_aligned": float(t["aligned"].median()),
        })

    rows = {"(all)": one(table)}
    if by is not None:
        for k, t in table.groupby(by, sort=False):
            rows[k] = one(t)
    out = pd.DataFrame(rows).T
    out["n"] = out["n"].astype(int)
    return out


# --------------------------------------------------------------------------------------
# The chapter's grid, the figure, the benchmark
# --------------------------------------------------------------------------------------

OUTCOMES_CH8 = ("unemployment_rate", "poverty_rate", "child_poverty_rate", "log_median_hh_income")
DENSITIES_CH8 = (
    "assn_per_1k",
    "civic_religious_per_10k",
    "business_prof_labour_political_per_10k",
    "recreation_sports_per_10k",
    "nonprofits_per_10k",
    "community_per_1k",
    "log_count_assn",
    "log_count_community",
)
#: The options of the first Chapter 8 grid (before issue 12 added community organisations, the
#: ratio-free densities, the no1997 sample and population weights): its specifications keep their
#: estimates, and the permutation test uses its curve of the headline measure.
FIRST_GRID: dict[str, tuple[str, ...]] = {
    "density": DENSITIES_CH8[:5],
    "sample": ("all", "balanced", "pop10k", "no2009"),
    "weights": ("none",),
}


def chapter8_grid() -> dict[str, list[str]]:
    """Every defensible combination of Chapter 8 (before :data:`EXCLUSIONS`)."""
    return {
        "outcome": list(OUTCOMES_CH8),
        "density": list(DENSITIES_CH8),
        "estimator": list(ESTIMATORS),
        "controls": list(CONTROL_SETS),
        "sample": list(SAMPLES),
        "timing": list(TIMINGS),
        "weights": list(WEIGHTS),
    }


def in_first_grid(table: pd.DataFrame) -> pd.Series:
    """Whether each specification of ``table`` was in the first Chapter 8 grid (:data:`FIRST_GRID`)."""
    keep = pd.Series(True, index=table.index)
    for choice, opts in FIRST_GRID.items():
        keep &= table[choice].isin(opts)
    return keep


def spec_curve_figure(table: pd.DataFrame, value: str = "aligned", labels: Mapping[str, Mapping] | None = None,
                      ylabel: str | None = None):
    """Specification curve (Simonsohn, Simmons & Nelson 2020): sorted estimates with 95%
    intervals above, and below a dashboard of the choices that made each (one row per
    option, a mark where the specification used it). ``value`` is ``aligned`` (intervals
    from ``ci_low``/``ci_high`` scaled the same way) or ``estimate_sdx``. Returns the Figure.
    """
    t = table.copy()
    if value == "aligned":
        sign = t["outcome"].map(THESIS_SIGN).fillna(1)
        a, b = sign * t["ci_low_sdx"] / t["sd_y"], sign * t["ci_high_sdx"] / t["sd_y"]
        t["_lo"], t["_hi"] = np.minimum(a, b), np.maximum(a, b)
    else:
        t["_lo"], t["_hi"] = t["ci_low_sdx"], t["ci_high_sdx"]
    t = t.sort_values(value, kind="stable").reset_index(drop=True)
    rank = np.arange(len(t))
    choices = [c for c in CHOICES if t[c].nunique() > 1]
    n_rows = sum(t[c].nunique() for c in choices)
    from analysis.plots import subplots

    # 9 pt dashboard labels need about 0.2 in a row to stay apart
    fig, (ax, dash) = subplots(2, 1, figsize=(9, 3.2 + 0.2 * n_rows), sharex=True,
                               gridspec_kw={"height_ratios": [3.2, 0.2 * n_rows]})
    sig_t = t["significant_thesis"].to_numpy()
    sig_a = t["significant_against"].to_numpy()
    from matplotlib.colors import to_rgba

    # one RGBA row per specification (converting thousands of colour names is the slow part)
    palette = np.array([to_rgba("0.6"), to_rgba("C0"), to_rgba("C3")])
    colour = palette[np.where(sig_t, 1, np.where(sig_a, 2, 0))]
    ax.vlines(rank, t["_lo"], t["_hi"], colors=colour, alpha=0.25, linewidth=0.6)
    ax.scatter(rank, t[value], c=colour, s=2, zorder=3)
    ax.axhline(0, color="k", linewidth=0.8)
    ax.set_ylabel(ylabel or value)
    lo, hi = np.nanpercentile(t["_lo"], 1), np.nanpercentile(t["_hi"], 99)
    ax.set_ylim(min(lo, -0.05), max(hi, 0.05))
    yticks, ylabels, y = [], [], 0
    for c in choices:
        for opt in sorted(t[c].unique()):
            mask = (t[c] == opt).to_numpy()
            dash.scatter(rank[mask], np.full(mask.sum(), y), marker="|", s=12, c=colour[mask], linewidths=0.5)
            yticks.append(y)
            name = (labels or {}).get(c, {}).get(opt, opt)
            ylabels.append(f"{c}: {name}")
            y -= 1
        y -= 0.5
    dash.set_yticks(yticks)
    dash.set_yticklabels(ylabels, fontsize=9)
    dash.set_xlabel(f"Specifications, ranked by estimate (n = {len(t):,})")
    dash.set_xlim(-1, len(t))
    for s in ("top", "right"):
        ax.spines[s].set_visible(False)
        dash.spines[s].set_visible(False)
    fig.tight_layout()
    return fig


def bench_multiverse(df: pd.DataFrame, n_jobs: int = 2) -> tuple[float, int]:
    """Seconds to fit the full Chapter 8 grid without the cache (joblib, ``n_jobs``), and its size."""
    t0 = time.perf_counter()
    table = run_multiverse(df, chapter8_grid(), n_jobs=n_jobs, cache_dir=None, progress=False)
    return time.perf_counter() - t0, len(table)


#: The same models in the estimation layer's terms (estimator, effects): the straightforward path.
LINEARMODELS_EQUIVALENT: dict[str, tuple[str, str]] = {
    "pooled": ("pooled", "time"), "fe": ("fe", "unit"), "twfe": ("twfe", "unit+time"),
    "state-year": ("twfe", "state-by-year"), "fd": ("fd", "time"), "long-diff": ("fd", "time"),
}


def fit_spec_straightforward(sample: pd.DataFrame, estimator: str) -> dict:
    """The same fit as :func:`fit_spec`, by one independent linearmodels fit through
    :func:`analysis.estimation.fit` (no demeaning reused; weighted if ``sample`` has a
    ``weight`` column): the baseline the fast path must beat."""
    from analysis.estimation import ModelSpec, fit

    est, effects = LINEARMODELS_EQUIVALENT[estimator]
    controls = tuple(c for c in sample.columns if _is_control(c))
    weights = WEIGHT_NAME if WEIGHT_NAME in sample.columns else None
    r = fit(ModelSpec(outcome="y", regressors=("x",), controls=controls, estimator=est, effects=effects,
                      cov="cluster-unit", entity=ENTITY, time=TIME, state=STATE, weights=weights), sample)
    return {"estimate": float(r.params["x"]), "se": float(r.std_errors["x"]), "nobs": int(r.nobs)}


def bench_speedup(df: pd.DataFrame, every: int = 10) -> tuple[float, float, int, float]:
    """Seconds of the fast path and of the straightforward loop on the same specifications
    (every ``every``-th of the Chapter 8 grid, in one process), their number, and the largest
    relative difference of the estimates (a check that the two paths agree)."""
    specs = expand_grid(chapter8_grid())[0].iloc[::every].reset_index(drop=True)
    slim = _slim(df, specs)
    samples = [(prepare_sample(slim, rec), rec["estimator"]) for rec in specs.to_dict("records")]
    t0 = time.perf_counter()
    fast = run_multiverse(slim, specs, n_jobs=1, cache_dir=None, progress=False)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    slow = [fit_spec_straightforward(s, est) for s, est in samples]
    t_slow = time.perf_counter() - t0
    gap = max(abs(a - b["estimate"]) / max(abs(b["estimate"]), 1e-12)
              for a, b in zip(fast["estimate"], slow))
    return t_fast, t_slow, len(specs), gap


# --------------------------------------------------------------------------------------
# Permutation test of the whole curve
# --------------------------------------------------------------------------------------

WITHIN_ESTIMATORS = ("fe", "twfe", "state-year", "fd", "long-diff")
_PERMS = {m: np.array(list(itertools.permutations(range(m)))) for m in range(1, 6)}


def _within_permutations(unit: np.ndarray, reps: int, rng: np.random.Generator) -> np.ndarray:
    """Row indices (n x reps) that permute rows within each unit (rows sorted by unit).

    Column 0 is the identity (the observed data); the others are uniform random
    permutations within every unit, drawn independently.
    """
    n = len(unit)
    starts = np.flatnonzero(np.r_[True, unit[1:] != unit[:-1]])
    sizes = np.diff(np.r_[starts, n])
    if sizes.max() >= len(_PERMS) + 1:
        raise MultiverseError(f"Units have up to {sizes.max()} rows; permutations are tabulated up to {len(_PERMS)}.")
    pos = np.arange(n) - np.repeat(starts, sizes)
    size_row = np.repeat(sizes, sizes)
    start_row = np.repeat(starts, sizes)
    out = np.empty((n, reps), dtype=np.int64)
    out[:, 0] = np.arange(n)
    for m in np.unique(sizes):
        table = _PERMS[int(m)]
        units_m = np.flatnonzero(sizes == m)
        draw = rng.integers(0, len(table), size=(len(units_m), reps - 1))
        rows = size_row == m
        unit_idx = np.searchsorted(units_m, np.repeat(np.arange(len(sizes)), sizes)[rows])
        newpos = table[draw[unit_idx], pos[rows][:, None]]  # (rows_m, reps-1)
        out[rows, 1:] = start_row[rows][:, None] + newpos
    return out


def _perm_stats(yt: np.ndarray, Wt: np.ndarray, xt: np.ndarray, absorber: _Absorber, n_units: int) -> pd.DataFrame:
    """Slopes and CR1 standard errors of ``yt`` on each column of ``xt`` (transformed by
    ``absorber``) and the transformed controls ``Wt``, by Frisch-Waugh-Lovell, vectorised over
    the columns of ``xt``."""
    if Wt.shape[1]:
        Qw = _orthonormal(Wt)  # the controls, net of the effects
        yh = yt - Qw @ (Qw.T @ yt)
        xh = xt - Qw @ (Qw.T @ xt)
    else:
        yh, xh = yt, xt
    # Per cluster g: sum(xh * e) = A_g - b B_g with A_g = sum(xh * yh), B_g = sum(xh^2) (e = yh - b xh),
    # so the slopes and scores come from two cluster sums, without forming the residuals.
    A = absorber.cluster_sums.sum(xh * yh[:, None])
    B = absorber.cluster_sums.sum(xh * xh)
    sxx = B.sum(0)
    b = A.sum(0) / sxx
    scores = A - B * b
    n, G = len(yh), absorber.G
    K = 1 + Wt.shape[1] + absorber.k_extra
    var = (scores**2).sum(0) / sxx**2 * (G / (G - 1)) * ((n - 1) / (n - K))
    se = np.sqrt(var)
    q_t = _t_quantile(n_units - 1)  # as fit_spec
    return pd.DataFrame({"rep": np.arange(xt.shape[1]), "estimate": b, "se": se,
                         "ci_low": b - q_t * se, "ci_high": b + q_t * se})


def permuted_fits(sample: pd.DataFrame, estimator: str, reps: int, seed: int,
                  xperm: np.ndarray | None = None) -> pd.DataFrame:
    r"""Estimates and CR1 standard errors with density permuted within county, ``reps`` times.

    Row 0 is the observed data (it equals :func:`fit_spec`); rows 1.. permute the density
    column ``x`` across the waves of each county (controls, outcome and weights untouched),
    which keeps each county's mean density and breaks any within-county link between density
    and the outcome. Only within-county estimators (:data:`WITHIN_ESTIMATORS`). By
    Frisch-Waugh-Lovell, each column is transformed by the estimator's effects
    (:class:`_Absorber`) and residualised on the controls, and the slope and its clustered
    variance come from the transformed data, vectorised over permutations. ``xperm`` (rows of
    ``sample`` sorted by county and wave x reps) supplies the permuted density instead (as
    :func:`permutation_test` does, so that every specification sees the same permuted panel);
    ``reps`` and ``seed`` are then ignored.
    """
    if estimator not in WITHIN_ESTIMATORS:
        raise MultiverseError(f"Choice 'estimator' option {estimator!r} is not a within-county estimator.")
    d = sample.sort_values([ENTITY, TIME]).reset_index(drop=True)
    unit = _codes(d[ENTITY].to_numpy())
    if xperm is None:
        idx = _within_permutations(unit, reps, np.random.default_rng(seed))
        x = d["x"].to_numpy(dtype=float)[idx]  # n x reps
    else:
        x = np.asarray(xperm, dtype=float)
    w = d[WEIGHT_NAME].to_numpy(dtype=float) if WEIGHT_NAME in d.columns else None
    absorber = _Absorber(unit, d[TIME].to_numpy(dtype=np.int64), _codes(d[STATE].to_numpy()), estimator, w)
    W = d[[c for c in d.columns if _is_control(c)]].to_numpy(dtype=float)
    return _perm_stats(absorber.transform(d["y"].to_numpy(dtype=float)), absorber.transform(W),
                       absorber.transform(x), absorber, int(unit.max()) + 1)


def _panel_permutations(slim: pd.DataFrame, measure: str, reps: int, seed: int) -> np.ndarray:
    """Permuted density of the full panel (rows sorted by county, wave) x reps; column 0 observed.

    Within each county the non-missing values are permuted across waves; the same draws
    (seeded by ``seed`` and the measure's name) serve every specification.
    """
    d = slim.sort_values([ENTITY, TIME]).reset_index(drop=True)
    x = d[measure].to_numpy(dtype=float, na_value=np.nan)
    ok = np.flatnonzero(np.isfinite(x))
    unit = pd.factorize(d[ENTITY], sort=True)[0][ok]
    rng = np.random.default_rng([seed, zlib.crc32(measure.encode())])
    idx = _within_permutations(unit, reps, rng)
    out = np.repeat(x[:, None], reps, axis=1)
    out[ok] = x[ok][idx]
    return out


def _perm_chunk(slim: pd.DataFrame, specs: list[dict], perms: Mapping[str, np.ndarray],
                ws: _Workspace | None = None) -> list[pd.DataFrame]:
    """:func:`permuted_fits` of each specification on the shared permuted panels ``perms`` (by
    density), reusing the workspace's rows, absorbers and transformed outcome and controls, and
    the transformed permuted density of the last few row sets."""
    ws = _Workspace(slim) if ws is None else ws
    out = []
    group = None
    recent: dict = {}  # (absorber key, density column) -> transformed permuted density (n x reps)
    for spec in specs:
        if _group_key(spec) != group:
            ws.release()
            recent.clear()
            group = _group_key(spec)
        rows = ws.rows(spec)
        akey, absorber = ws.absorber(spec, rows)
        xname = _rhs(spec)[0]
        if (akey, xname) not in recent:
            src = ws.column(ws.frame_key(spec), "_row@lag" if spec["timing"] == "lag1" else "_row")[rows.idx]
            recent[(akey, xname)] = absorber.transform(perms[spec["density"]][src.astype(np.int64)])
            while len(recent) > 6:
                recent.pop(next(iter(recent)))
        xt = recent[(akey, xname)]
        yt = ws.transformed_column(spec, rows, spec["outcome"])
        controls = _rhs(spec)[1:]
        Wt = (np.column_stack([ws.transformed_column(spec, rows, c) for c in controls]) if controls
              else np.empty((len(yt), 0)))
        r = _perm_stats(yt, Wt, xt, absorber, rows.n_units)
        r["index"] = spec["index"]
        out.append(r)
    ws.release()
    return out


def permutation_test(
    df: pd.DataFrame,
    specs: pd.DataFrame,
    reps: int = 100,
    seed: int = 20261127,
    n_jobs: int = 2,
    cache_dir: str | Path | None = DEFAULT_CACHE,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Permutation test of the whole specification curve of the within-county estimators.

    For each of ``reps - 1`` permutations, each county's density values are permuted across
    its waves in the full panel (one permuted panel per draw, shared by every
    specification, so the null curves keep the correlation between specifications), every
    specification of ``specs`` that uses a within-county estimator is refitted on it, and the
    curve's statistics (:func:`curve_summary`: median aligned estimate, share in the
    thesis's direction, shares significant each way) are recomputed. Returns
    ``(null, tests)``: the statistics of every permutation (rep 0 is the observed curve),
    and for each statistic the observed value, the null median and the one-sided
    permutation p-value, (1 + #{null >= observed}) / reps (#{null <= observed} for the
    share significant against the thesis). Cached like :func:`run_multiverse`.
    """
    _check_specs(specs)
    specs = specs[list(CHOICES)]
    specs = specs.loc[specs["estimator"].isin(WITHIN_ESTIMATORS)].reset_index(drop=True)
    df = _check_columns(df, specs)
    slim = _slim(df, specs)
    key = _cache_key(specs, slim, extra=f"perm:{reps}:{seed}")
    path = Path(cache_dir) / f"perm-{key}.parquet" if cache_dir is not None else None
    if path is not None and path.exists():
        long = pd.read_parquet(path)
    else:
        ws = _Workspace(slim)
        _check_samples(ws, specs)
        # One permuted panel per draw and density, drawn once (the same stream as every chunk saw before).
        perms = {m: _panel_permutations(slim, m, reps, seed) for m in specs["density"].unique()}
        order = specs.reset_index().sort_values(_RUN_ORDER, kind="stable")
        chunks = _chunks(_records(order), 60)
        bar = _progress(len(specs), progress)
        parts: list[pd.DataFrame] = []
        if n_jobs == 1:
            for ch in chunks:
                parts += _perm_chunk(slim, ch, perms, ws)
                bar.update(len(ch))
        else:
            from joblib import Parallel, delayed

            par = Parallel(n_jobs=n_jobs, return_as="generator_unordered")
            for res in par(delayed(_perm_chunk)(slim, ch, {d: perms[d] for d in {s["density"] for s in ch}})
                           for ch in chunks):
                parts += res
                bar.update(len(res))
        bar.close()
        long = pd.concat(parts, ignore_index=True)
        long = long.merge(specs.reset_index(), on="index").sort_values(["index", "rep"]).drop(columns="index")
        long = standardise(long.reset_index(drop=True), df)
        if path is not None:
            _atomic_write_parquet(long, path)
    null = _null_summary(long)
    obs = null.loc[0]
    rest = null.drop(index=0)
    rows = {}
    for stat in ("median_aligned", "share_thesis", "share_sig_thesis", "share_sig_against"):
        extreme = (rest[stat] <= obs[stat]) if stat == "share_sig_against" else (rest[stat] >= obs[stat])
        rows[stat] = {"observed": float(obs[stat]), "null_median": float(rest[stat].median()),
                      "null_p95": float(rest[stat].quantile(0.95)),
                      "p_value": float((1 + extreme.sum()) / (len(rest) + 1))}
    return null, pd.DataFrame(rows).T


def _null_summary(long: pd.DataFrame) -> pd.DataFrame:
    """:func:`curve_summary` of every permutation (``rep``) at once: one row per rep."""
    g = long.assign(_thesis=long["aligned"] > 0).groupby("rep")
    out = pd.DataFrame({
        "n": g.size(),
        "share_thesis": g["_thesis"].mean(),
        "share_sig_thesis": g["significant_thesis"].mean(),
        "share_sig_against": g["significant_against"].mean(),
        "median_aligned": g["aligned"].median(),
    })
    return out.astype({"n": int, "share_thesis": float, "share_sig_thesis": float, "share_sig_against": float})


def equivalence_shares(table: pd.DataFrame, bounds: Mapping[str, float], level: float = 0.90) -> pd.DataFrame:
    """By outcome, the share of specifications whose ``level`` interval for a one-``sd_x`` rise
    (outcome units) lies inside ``(-bound, bound)`` (negligible, an equivalence test at
    :math:`\\alpha = (1-level)/2`), and the shares whose interval excludes zero either way."""
    t = table.copy()
    q = stats.t.ppf(1 - (1 - level) / 2, t["n_units"] - 1)
    lo = t["estimate_sdx"] - q * t["se"] * t["sd_x"]
    hi = t["estimate_sdx"] + q * t["se"] * t["sd_x"]
    bound = t["outcome"].map(bounds)
    if bound.isna().any():
        raise MultiverseError(f"No equivalence bound for outcome(s) {sorted(set(t.loc[bound.isna(), 'outcome']))}.")
    t["negligible"] = (lo > -bound) & (hi < bound)
    g = t.groupby("outcome", sort=False)
    return pd.DataFrame({"n": g.size(), "bound": g["outcome"].first().map(bounds),
                         "median_sdx": g["estimate_sdx"].median(), "share_negligible": g["negligible"].mean()})
