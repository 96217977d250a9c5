r"""The multiverse engine: a grid of analytic choices in, a tidy table of estimates out.

A specification is data. A *grid* maps each choice to the options to try::

    grid = {"outcome": ["unemployment_rate", "poverty_rate"],
            "density": ["assn_per_1k"],
            "estimator": ["pooled", "twfe", "fd"],
            "controls": ["none", "civic"],
            "sample": ["all", "balanced"],
            "timing": ["same", "lag1"]}
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
    interest :math:`x`, in its units).
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
    (without the 2009 recession wave; a difference or lag then spans 2005-2014).
``timing`` (:data:`TIMINGS`): ``same`` (density and controls of the outcome's wave) or
    ``lag1`` (of the previous wave of the sample, so the first wave's outcome is dropped).

Estimation and inference
------------------------
Every model is OLS after a within transformation (Frisch-Waugh-Lovell): demeaning by wave
(pooled), county (fe), alternating projections over county and wave or state-by-wave cells
(twfe, state-year; Guimarães & Portugal 2010), or differencing (fd, long-diff). Standard
errors are clustered by county (CR1: :math:`\frac{G}{G-1}\frac{n-1}{n-K}`, with the county
effects, nested in the clusters, left out of :math:`K`, and the constant and every wave or
state-by-wave effect counted), p-values and intervals use :math:`t_{G-1}`. These are
the conventions of :func:`analysis.estimation.fit` (linearmodels), which the tests check
this fast path against for every estimator.

Parallelism and cache
---------------------
Specifications are fitted in chunks, in parallel with joblib (``n_jobs``) and a tqdm
progress bar, or on a Dask cluster when ``scheduler`` is an address or a
``distributed.Client``. The result table is cached on disk under
``data/processed/multiverse/`` (git-ignored), keyed by the SHA-256 of the specification
table, the engine version and the hash of the data's used columns
(``pandas.util.hash_pandas_object``), and written atomically (a temporary file renamed
into place), so a rebuild with unchanged inputs reads it back instead of refitting.
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
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from analysis.paths import PROCESSED_DIR

__all__ = [
    "CHOICES",
    "CONTROL_SETS",
    "ENGINE_VERSION",
    "ESTIMATORS",
    "EXCLUSIONS",
    "MultiverseError",
    "SAMPLES",
    "THESIS_SIGN",
    "TIMINGS",
    "bench_multiverse",
    "chapter8_grid",
    "check_grid",
    "curve_summary",
    "data_hash",
    "equivalence_shares",
    "permutation_test",
    "permuted_fits",
    "expand_grid",
    "fit_spec",
    "prepare_sample",
    "run_multiverse",
    "spec_curve_figure",
    "standardise",
]

ENGINE_VERSION = "1"


def _engine_hash() -> str:
    """Hash of the code that produces a result: this module and the estimation layer, so a change
    to either invalidates the cache without anyone remembering to bump ENGINE_VERSION."""
    h = hashlib.sha256(ENGINE_VERSION.encode())
    for name in ("multiverse.py", "estimation.py"):
        h.update((Path(__file__).with_name(name)).read_bytes())
    return h.hexdigest()
CHOICES: tuple[str, ...] = ("outcome", "density", "estimator", "controls", "sample", "timing")
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
}
TIMINGS: dict[str, str] = {"same": "Same wave", "lag1": "Density lagged one wave"}
_OPTIONS = {"estimator": ESTIMATORS, "controls": CONTROL_SETS, "sample": SAMPLES, "timing": TIMINGS}
_DEFAULTS = {"estimator": ["twfe"], "controls": ["none"], "sample": ["all"], "timing": ["same"]}
# The direction in which the thesis predicts each outcome moves as density rises.
THESIS_SIGN: dict[str, int] = {
    "unemployment_rate": -1,
    "poverty_rate": -1,
    "child_poverty_rate": -1,
    "log_median_hh_income": 1,
}
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

    Choices not in ``grid`` take their default (``twfe``, ``none``, ``all``, ``same``);
    ``outcome`` and ``density`` are required. Returns ``(specs, dropped)``; ``dropped`` has
    the same columns plus ``reason``. Raises :class:`MultiverseError` for an unknown choice,
    an empty or duplicated option list, or an unknown estimator, control set, sample or
    timing (the data-dependent options are checked by :func:`check_grid`).
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


def _with_log_population(df: pd.DataFrame) -> pd.DataFrame:
    if "log_population" not in df.columns and "population" in df.columns:
        df = df.assign(log_population=np.log(df["population"].astype(float).where(lambda p: p > 0)))
    return df


def _used_columns(specs: pd.DataFrame) -> list[str]:
    cols = [ENTITY, TIME, STATE, "population"]
    cols += list(specs["outcome"].unique()) + list(specs["density"].unique())
    for c in specs["controls"].unique():
        cols += list(CONTROL_SETS[c])
    return list(dict.fromkeys(cols))


def _slim(df: pd.DataFrame, specs: pd.DataFrame) -> pd.DataFrame:
    df = _with_log_population(df)
    return df[[c for c in _used_columns(specs) if c in df.columns]].copy()


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
    """Check the data against the specifications' columns; return ``df`` with ``log_population``.

    Raises for a missing id column, duplicated or missing keys, an outcome, density or
    control column that is absent (with close matches), not numeric or holds an infinite
    value, and a density that is also the outcome or a control (or an outcome that is a control).
    """
    if not isinstance(df, pd.DataFrame):
        raise MultiverseError(f"The data must be a pandas DataFrame, not {type(df).__name__}.")
    df = _with_log_population(df)
    for c in (ENTITY, TIME, STATE):
        if c not in df.columns:
            raise MultiverseError(f"The panel needs an id column {c!r}.")
    _check_keys(df)
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
    model_cols = [*specs["outcome"].unique(), *specs["density"].unique(),
                  *(c for name in specs["controls"].unique() for c in CONTROL_SETS[name])]
    for col in dict.fromkeys(model_cols):
        bad = np.isinf(df[col].to_numpy(dtype=float, na_value=np.nan))
        if bad.any():
            raise MultiverseError(
                f"Column {col!r} has {int(bad.sum())} infinite value(s) (inf or -inf), e.g. at ({ENTITY}, {TIME}) "
                f"= {_key_examples(df, bad)}. Set them to NaN (missing) or fix the transformation that made them."
            )
    same = specs[["outcome", "density"]].apply(lambda r: r.iloc[0] == r.iloc[1], axis=1)
    if same.any():
        raise MultiverseError(f"Choice 'density': {specs.loc[same, 'density'].iloc[0]!r} is also the outcome.")
    for (dens, name), _ in specs.groupby(["density", "controls"], sort=False):
        if dens in CONTROL_SETS[name]:
            raise MultiverseError(f"Choice 'density': {dens!r} is also a control of {name!r}.")
    for (outcome, name), _ in specs.groupby(["outcome", "controls"], sort=False):
        if outcome in CONTROL_SETS[name]:
            raise MultiverseError(f"Choice 'outcome': {outcome!r} is also a control of {name!r}.")
    return df


def check_grid(df: pd.DataFrame, specs: pd.DataFrame) -> pd.DataFrame:
    """Check every specification against ``df`` before fitting; return the sample sizes.

    Raises :class:`MultiverseError` naming the choice for: a specification table with a
    missing choice or an unknown option; a missing id column; missing or duplicated
    (county, wave) keys (with examples); an outcome, density or control column that is
    absent (with close matches), not numeric or holds an infinite value; and any
    specification whose sample is empty, has fewer than two counties (to cluster by), no
    more rows than coefficients, or a density or control that is constant or absorbed by
    the estimator's effects (:func:`_why_degenerate`). Returns ``specs`` with ``nobs`` and
    ``n_units`` of each sample.
    """
    _check_specs(specs)
    df = _check_columns(df, specs)
    slim = _slim(df, specs)
    frames: dict = {}
    sizes = []
    seen: dict = {}
    # Which estimators use each sample, so each sample's degeneracy is checked once per estimator.
    uses: dict = {}
    degenerate = None
    for spec in specs.to_dict("records"):
        uses.setdefault(_sample_key(spec), set()).add(spec["estimator"])
    for spec in specs.to_dict("records"):
        key = (spec["sample"], spec["timing"], spec["estimator"] == "long-diff")
        if key not in frames:
            frames[key] = (_base_frame(slim, *key), {})
        base, memo = frames[key]
        skey = _sample_key(spec)
        if skey not in seen:
            d = _spec_rows(base, spec)
            why = {}
            if len(d):  # checked on the arrays that _run_chunk will fit
                V, unit, year, state = _spec_arrays(base, spec, memo)
                cache: dict = {}
                why = {e: _why_degenerate(V[:, 1:], unit, year, state, e, cache) for e in uses[skey]}
            seen[skey] = (len(d), d[ENTITY].nunique(), why)
        nobs, n_units, why = seen[skey]
        k = 1 + len(CONTROL_SETS[spec["controls"]])
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
    """What a specification's rows depend on (all but the estimator, except for long-diff)."""
    return (spec["sample"], spec["timing"], spec["estimator"] == "long-diff", spec["outcome"], spec["density"],
            spec["controls"])


def _degenerate_message(spec: Mapping, j: int, reason: str) -> str:
    """The error for column ``j`` of a specification's regressors (0: the density, then the controls)."""
    lag = " (lagged one wave)" if spec["timing"] == "lag1" else ""
    where = (f"(with estimator {spec['estimator']!r}, sample {spec['sample']!r}, timing {spec['timing']!r}, "
             f"outcome {spec['outcome']!r}")
    if j == 0:
        return f"Choice 'density' option {spec['density']!r} {where}){lag} {reason}: its slope cannot be estimated."
    name = CONTROL_SETS[spec["controls"]][j - 1]
    return (f"Choice 'controls' option {spec['controls']!r} {where}, density {spec['density']!r}): column "
            f"{name!r}{lag} {reason}: its coefficient cannot be estimated.")


# --------------------------------------------------------------------------------------
# Samples
# --------------------------------------------------------------------------------------


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
        for c in [c for c in d.columns if c not in (ENTITY, TIME, STATE, "population", "_unit", "_state")]:
            v = d[c].astype(float).to_numpy()
            lagged = np.full(len(d), np.nan)
            lagged[1:] = v[:-1]
            d[c + "@lag"] = np.where(prev_ok, lagged, np.nan)
    d.attrs["sample"] = sample
    return d


def _rhs(spec: Mapping) -> list[str]:
    cols = [spec["density"], *CONTROL_SETS[spec["controls"]]]
    return [c + "@lag" for c in cols] if spec["timing"] == "lag1" else cols


def _spec_rows(base: pd.DataFrame, spec: Mapping) -> pd.DataFrame:
    """The complete rows of one specification, with columns y, x, w0.. (balanced if asked).

    ``src`` is the row of the full (sorted) panel that the density value comes from.
    """
    rhs = _rhs(spec)
    cols = [spec["outcome"], *rhs]
    src = "_row@lag" if spec["timing"] == "lag1" else "_row"
    d = base[[ENTITY, TIME, STATE, src, *cols]].dropna(subset=cols)
    d = d.set_axis([ENTITY, TIME, STATE, "src", "y", "x", *[f"w{j}" for j in range(len(rhs) - 1)]], axis=1)
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
                    cache: dict | None = None) -> tuple[int | None, str] | None:
    """Why ``estimator`` cannot estimate the slopes of the columns of ``M`` (density, then
    controls; rows sorted by county and wave, as :func:`_fit_arrays` takes them), or None.

    Returns ``(None, reason)`` when there are fewer than two county clusters (the CR1
    correction divides by G - 1, the t distribution has G - 1 degrees of freedom), or
    ``(j, reason)`` for a column that is constant or that the estimator's effects absorb
    (:data:`_ABSORBED`): each would make the design singular. These are necessary
    conditions, as in ``analysis.estimation``: a column collinear with the others (say, a
    control equal to the density plus a county level) passes them. ``cache`` holds what
    estimators on the same rows share.
    """
    if estimator not in _ABSORBED:
        raise MultiverseError(f"Choice 'estimator' has unknown option {estimator!r}.")
    c = {} if cache is None else cache
    diff = estimator in ("fd", "long-diff")
    if diff and "differences" not in c:
        c["differences"] = _differences(M, unit, year)
    clusters = c["differences"][2] if diff else unit  # sorted: count the changes, not np.unique
    G = int(len(clusters) > 0) + int(np.count_nonzero(clusters[1:] != clusters[:-1]))
    if G < 2:
        return None, (f"{'no county' if G == 0 else f'only {G} county'}{' with two consecutive waves' if diff else ''}"
                      ": standard errors clustered by county need at least two")
    for j in range(M.shape[1]):
        if np.ptp(M[:, j]) == 0:
            return j, f"is constant in the sample (every value is {M[0, j]:g})"
    for grouping, reason in _ABSORBED[estimator]:
        key = "varies within " + grouping
        if key not in c:
            if grouping == "diff":
                c[key] = _varies_within(*c["differences"][:2])
            elif grouping == "county":
                c[key] = _varies_within(M, unit)
            elif grouping == "wave":
                c[key] = _varies_within(M, _codes(year))
            else:  # the state-by-wave cells of _fit_arrays
                c[key] = _varies_within(M, _codes(state.astype(np.int64) * 10_000 + year))
        bad = np.flatnonzero(~c[key])
        if bad.size:
            return int(bad[0]), reason
    return None


def _differences(M: np.ndarray, unit: np.ndarray, year: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Differences of M between consecutive waves of the sample (rows sorted by unit, wave), as
    :func:`_fit_arrays` takes them: the differences, their period codes and their units."""
    pos = np.unique(year, return_inverse=True)[1]
    ok = np.zeros(len(M), dtype=bool)
    ok[1:] = (unit[1:] == unit[:-1]) & (pos[1:] - pos[:-1] == 1)
    return (M[1:] - M[:-1])[ok[1:]], _codes(pos[1:][ok[1:]]), unit[1:][ok[1:]]


def prepare_sample(df: pd.DataFrame, spec: Mapping) -> pd.DataFrame:
    """The estimation sample of one specification (levels; columns ``y``, ``x``, ``w0``...)."""
    specs = pd.DataFrame([dict(spec)], columns=list(CHOICES))
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


def _ols_cluster(y: np.ndarray, X: np.ndarray, clusters: np.ndarray, k_extra: int) -> tuple[float, float, int]:
    """OLS slope of the first column of X, its CR1 standard error and the number of clusters.

    ``k_extra`` is the number of absorbed coefficients counted in K besides X's columns.
    """
    XtX = X.T @ X
    bread = np.linalg.inv(XtX)
    beta = bread @ (X.T @ y)
    e = y - X @ beta
    g = clusters
    n_g = g.max() + 1
    scores = np.column_stack([np.bincount(g, weights=X[:, j] * e, minlength=n_g) for j in range(X.shape[1])])
    meat = scores.T @ scores
    n, K = len(y), X.shape[1] + k_extra
    G = int(np.unique(g).size)
    V = bread @ meat @ bread * (G / (G - 1)) * ((n - 1) / (n - K))
    return float(beta[0]), float(np.sqrt(V[0, 0])), G


def _codes(s) -> np.ndarray:
    return pd.factorize(s, sort=True)[0]


def fit_spec(sample: pd.DataFrame, estimator: str) -> dict:
    """Fit one specification on its sample (from :func:`prepare_sample`).

    Returns ``estimate`` (per unit of density, outcome units), ``se`` (clustered by county,
    CR1), ``ci_low``/``ci_high`` (95%, :math:`t_{G-1}`), ``p``, ``nobs`` (rows in levels),
    ``n_units``. Raises :class:`MultiverseError`, before fitting, if the sample is degenerate
    (fewer than two counties, or ``x`` or a control constant or absorbed by the effects).
    """
    d = sample.sort_values([ENTITY, TIME])
    rhs = ["x"] + [c for c in d.columns if c.startswith("w")]
    V = d[["y", *rhs]].to_numpy(dtype=float)
    unit, years, state = _codes(d[ENTITY].to_numpy()), d[TIME].to_numpy(dtype=np.int64), _codes(d[STATE].to_numpy())
    why = _why_degenerate(V[:, 1:], unit, years, state, estimator) if len(d) else (None, "has no rows")
    if why is not None:
        j, reason = why
        raise MultiverseError(f"The sample {reason}." if j is None else f"Column {rhs[j]!r} {reason}.")
    return _fit_arrays(V, unit, years, state, estimator)


def _fit_arrays(V: np.ndarray, unit: np.ndarray, years: np.ndarray, state: np.ndarray, estimator: str) -> dict:
    """The estimator on arrays: V = [y, x, controls], rows sorted by unit then wave."""
    unit = np.unique(unit, return_inverse=True)[1]
    year = np.unique(years, return_inverse=True)[1]
    nobs, n_units = len(V), int(unit.max() + 1)
    if estimator == "pooled":
        R = _demean(V, year)
        k_extra = int(year.max() + 1)  # constant + T-1 year dummies
        cl = unit
    elif estimator == "fe":
        R = _demean(V, unit)
        k_extra = 1  # the constant; the county effects are nested in the clusters
        cl = unit
    elif estimator in ("twfe", "state-year"):
        if estimator == "twfe":
            cells, n_groups = year, 1
        else:
            cells = np.unique(state.astype(np.int64) * 10_000 + year, return_inverse=True)[1]
            n_groups = int(np.unique(state).size)
        R = _demean_two(V, unit, cells)
        k_extra = 1 + int(cells.max() + 1) - n_groups  # constant + wave (state-by-wave) dummies, one per state omitted
        cl = unit
    elif estimator in ("fd", "long-diff"):
        pos = np.unique(years, return_inverse=True)[1]
        ok = np.zeros(len(V), dtype=bool)
        ok[1:] = (unit[1:] == unit[:-1]) & (pos[1:] - pos[:-1] == 1)
        D = (V[1:] - V[:-1])[ok[1:]]
        per = np.unique(pos[1:][ok[1:]], return_inverse=True)[1]
        R = np.column_stack([D, np.eye(per.max() + 1)[per]])
        k_extra = 0
        cl = np.unique(unit[1:][ok[1:]], return_inverse=True)[1]
    else:
        raise MultiverseError(f"Choice 'estimator' has unknown option {estimator!r}.")
    y, X = R[:, 0], R[:, 1:]
    b, se, _ = _ols_cluster(y, X, cl, k_extra)
    # t with (counties in the sample) - 1 degrees of freedom, as analysis.estimation.fit
    # (for differences this counts a county with a single wave, which adds no difference)
    q = float(stats.t.ppf(0.975, n_units - 1))
    p = float(2 * stats.t.sf(abs(b / se), n_units - 1)) if se > 0 else float("nan")
    return {"estimate": b, "se": se, "ci_low": b - q * se, "ci_high": b + q * se, "p": p,
            "nobs": nobs, "n_units": n_units}


def _spec_arrays(base: pd.DataFrame, spec: Mapping, memo: dict) -> tuple:
    """(V, unit, year, state) of one specification from a base frame, without pandas overhead."""
    cols = [spec["outcome"], *_rhs(spec)]
    for c in cols:
        if c not in memo:
            memo[c] = base[c].to_numpy(dtype=float, na_value=np.nan)
    if "_ids" not in memo:
        memo["_ids"] = (base["_unit"].to_numpy(), base[TIME].to_numpy(dtype=np.int64), base["_state"].to_numpy())
    unit, year, state = memo["_ids"]
    V = np.column_stack([memo[c] for c in cols])
    ok = np.isfinite(V).all(axis=1)
    if spec["sample"] == "balanced" and ok.any():
        n_waves = np.unique(year[ok]).size
        count = np.bincount(unit[ok], minlength=unit.max() + 1)
        ok &= count[unit] == n_waves
    return V[ok], unit[ok], year[ok], state[ok]


def _run_chunk(slim: pd.DataFrame, specs: list[dict]) -> list[dict]:
    frames: dict = {}
    out = []
    for spec in specs:
        key = (spec["sample"], spec["timing"], spec["estimator"] == "long-diff")
        if key not in frames:
            frames[key] = (_base_frame(slim, *key), {})
        base, memo = frames[key]
        try:
            out.append({**spec, **_fit_arrays(*_spec_arrays(base, spec, memo), spec["estimator"])})
        except np.linalg.LinAlgError as err:
            # check_grid's degeneracy checks are necessary conditions; name what slipped past them
            choices = ", ".join(f"{c}={spec[c]!r}" for c in CHOICES)
            raise MultiverseError(f"The design of the specification ({choices}) is singular: {err}.") from err
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
                          "controls": CONTROL_SETS, "extra": extra}, sort_keys=True)
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
    return [records[i : i + size] for i in range(0, len(records), size)]


def run_multiverse(
    df: pd.DataFrame,
    grid: Mapping[str, Sequence[str]] | pd.DataFrame,
    n_jobs: int = 2,
    scheduler=None,
    cache_dir: str | Path | None = DEFAULT_CACHE,
    progress: bool = True,
    chunk_size: int = 60,
    standardise_by: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Fit every specification of ``grid`` on ``df``; one row per specification.

    ``grid`` is a mapping choice -> options (see :func:`expand_grid`) or an already expanded
    specification table. The grid is checked (:func:`check_grid`) before anything is fitted.
    ``scheduler`` (a Dask scheduler address or a ``distributed.Client``) runs the chunks on
    that cluster; otherwise joblib with ``n_jobs`` processes (1: in this process).
    ``cache_dir`` (``None``: no cache) holds the result, keyed by the specifications and
    the data's hash. The result's ``attrs`` say whether it came from the cache
    (``from_cache``), the key and the fitting time in seconds. Standardised estimates are
    added by :func:`standardise`, on ``standardise_by`` (default ``df``).
    """
    specs = grid if isinstance(grid, pd.DataFrame) else expand_grid(grid)[0]
    _check_specs(specs)
    specs = specs[list(CHOICES)].reset_index(drop=True)
    if specs.empty:
        raise MultiverseError("The grid has no specification left after the exclusions.")
    check_grid(df, specs)
    slim = _slim(df, specs)
    key = _cache_key(specs, slim)
    path = Path(cache_dir) / f"{key}.parquet" if cache_dir is not None else None
    if path is not None and path.exists():
        table = pd.read_parquet(path)
        table.attrs.update(from_cache=True, key=key, seconds=0.0)
        return table
    t0 = time.perf_counter()
    # Chunks that share a sample and timing reuse the prepared frame.
    order = specs.sort_values(["sample", "timing", "estimator", "controls"], kind="stable")
    chunks = _chunks(order.reset_index().to_dict("records"), chunk_size)
    bar = _progress(len(specs), progress)
    results: list[dict] = []
    if scheduler is not None:
        results = _run_dask(scheduler, slim, chunks, bar)
    elif n_jobs == 1:
        for ch in chunks:
            results += _run_chunk(slim, ch)
            bar.update(len(ch))
    else:
        from joblib import Parallel, delayed

        par = Parallel(n_jobs=n_jobs, return_as="generator_unordered")
        for res in par(delayed(_run_chunk)(slim, ch) for ch in chunks):
            results += res
            bar.update(len(res))
    bar.close()
    table = pd.DataFrame(results).sort_values("index").drop(columns="index").reset_index(drop=True)
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
    the scale of the equivalence bounds of Chapter 1); ``sd_y``: the SD of the outcome net
    of county and wave means. ``estimate_sdx`` (and ``ci_low_sdx``, ``ci_high_sdx``) is the
    effect of a one-``sd_x`` rise in outcome units; ``estimate_std`` the same in ``sd_y``
    units; ``aligned`` is ``estimate_std`` times the thesis's sign (:data:`THESIS_SIGN`), so
    positive always means "as the thesis predicts". ``significant_thesis`` /
    ``significant_against``: the 95% interval excludes zero in / against that direction.
    """
    df = _with_log_population(df)
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
)


def chapter8_grid() -> dict[str, list[str]]:
    """Every defensible combination of Chapter 8 (before :data:`EXCLUSIONS`)."""
    return {
        "outcome": list(OUTCOMES_CH8),
        "density": list(DENSITIES_CH8),
        "estimator": list(ESTIMATORS),
        "controls": list(CONTROL_SETS),
        "sample": list(SAMPLES),
        "timing": list(TIMINGS),
    }


def spec_curve_figure(table: pd.DataFrame, value: str = "aligned", labels: Mapping[str, Mapping] | None = None,
                      ylabel: str | None = None):
    """Specification curve (Simonsohn, Simmons & Nelson 2020): sorted estimates with 95%
    intervals above, and below a dashboard of the choices that made each (one row per
    option, a mark where the specification used it). ``value`` is ``aligned`` (intervals
    from ``ci_low``/``ci_high`` scaled the same way) or ``estimate_sdx``. Returns the Figure.
    """
    import matplotlib.pyplot as plt

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
    fig, (ax, dash) = plt.subplots(2, 1, figsize=(9, 3.2 + 0.16 * n_rows), sharex=True,
                                   gridspec_kw={"height_ratios": [3.2, 0.16 * n_rows]})
    sig_t = t["significant_thesis"].to_numpy()
    sig_a = t["significant_against"].to_numpy()
    colour = np.where(sig_t, "C0", np.where(sig_a, "C3", "0.6"))
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
    dash.set_yticklabels(ylabels, fontsize=6)
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
    :func:`analysis.estimation.fit` (no demeaning reused): the baseline the fast path must beat."""
    from analysis.estimation import ModelSpec, fit

    est, effects = LINEARMODELS_EQUIVALENT[estimator]
    controls = tuple(c for c in sample.columns if c.startswith("w"))
    r = fit(ModelSpec(outcome="y", regressors=("x",), controls=controls, estimator=est, effects=effects,
                      cov="cluster-unit", entity=ENTITY, time=TIME, state=STATE), sample)
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


def _resid(Q: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Residuals of M on the orthonormal columns Q."""
    return M if Q.shape[1] == 0 else M - Q @ (Q.T @ M)


def _demean_sorted(M: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """Unit-demeaned columns of M, rows sorted by unit."""
    starts = np.flatnonzero(np.r_[True, unit[1:] != unit[:-1]])
    sizes = np.diff(np.r_[starts, len(unit)])
    means = np.add.reduceat(M, starts, axis=0) / sizes[:, None]
    return M - np.repeat(means, sizes, axis=0)


def permuted_fits(sample: pd.DataFrame, estimator: str, reps: int, seed: int,
                  xperm: np.ndarray | None = None) -> pd.DataFrame:
    r"""Estimates and CR1 standard errors with density permuted within county, ``reps`` times.

    Row 0 is the observed data (it equals :func:`fit_spec`); rows 1.. permute the density
    column ``x`` across the waves of each county (controls and outcome untouched), which
    keeps each county's mean density and breaks any within-county link between density
    and the outcome. Only within-county estimators (:data:`WITHIN_ESTIMATORS`). By
    Frisch-Waugh-Lovell, each column is residualised on the effects and controls and the
    slope and its clustered variance come from the residualised data, vectorised over
    permutations. ``xperm`` (rows of ``sample`` sorted by county and wave x reps) supplies the
    permuted density instead (as :func:`permutation_test` does, so that every
    specification sees the same permuted panel); ``reps`` and ``seed`` are then ignored.
    """
    if estimator not in WITHIN_ESTIMATORS:
        raise MultiverseError(f"Choice 'estimator' option {estimator!r} is not a within-county estimator.")
    d = sample.sort_values([ENTITY, TIME]).reset_index(drop=True)
    unit = _codes(d[ENTITY].to_numpy())
    year = _codes(d[TIME].to_numpy())
    if xperm is None:
        idx = _within_permutations(unit, reps, np.random.default_rng(seed))
        x = d["x"].to_numpy(dtype=float)[idx]  # n x reps
    else:
        x = np.asarray(xperm, dtype=float)
        reps = x.shape[1]
    y = d[["y"]].to_numpy(dtype=float)
    W = d[[c for c in d.columns if c.startswith("w")]].to_numpy(dtype=float)
    if estimator in ("fd", "long-diff"):
        waves = np.sort(d[TIME].unique())
        pos = np.searchsorted(waves, d[TIME].to_numpy())
        ok = np.zeros(len(d), dtype=bool)
        ok[1:] = (unit[1:] == unit[:-1]) & (pos[1:] - pos[:-1] == 1)
        sel = ok[1:]
        diff = lambda M: (M[1:] - M[:-1])[sel]  # noqa: E731
        per = _codes(pos[1:][sel])
        Z = np.column_stack([diff(W), np.eye(per.max() + 1)[per]])
        yt, xt = diff(y), diff(x)
        cl = _codes(unit[1:][sel])
        k_extra = 0
    else:
        if estimator == "fe":
            D = np.empty((len(d), 0))
            k_extra = 1
        else:
            cells = year if estimator == "twfe" else _codes(d[STATE].astype(str) + ":" + d[TIME].astype(str))
            n_groups = 1 if estimator == "twfe" else d[STATE].nunique()
            D = np.eye(cells.max() + 1)[cells][:, 1:]
            k_extra = 1 + int(cells.max() + 1) - n_groups
        Z = _demean_sorted(np.column_stack([D, W]), unit)
        yt, xt = _demean_sorted(y, unit), _demean_sorted(x, unit)
        cl = unit
    # An orthonormal basis of the effects and controls (some state-by-wave dummies are
    # absorbed by the county effects, so Z need not have full rank).
    if Z.shape[1]:
        U, sv, _ = np.linalg.svd(Z, full_matrices=False)
        Z = U[:, sv > sv[0] * max(Z.shape) * np.finfo(float).eps * 10]
    yh = _resid(Z, yt)[:, 0]
    xh = _resid(Z, xt)
    sxx = (xh**2).sum(0)
    b = (xh * yh[:, None]).sum(0) / sxx
    e = yh[:, None] - xh * b
    starts = np.flatnonzero(np.r_[True, cl[1:] != cl[:-1]])
    scores = np.add.reduceat(xh * e, starts, axis=0)
    n, G = len(yh), len(starts)
    K = 1 + W.shape[1] + k_extra + (int(per.max() + 1) if estimator in ("fd", "long-diff") else 0)
    var = (scores**2).sum(0) / sxx**2 * (G / (G - 1)) * ((n - 1) / (n - K))
    se = np.sqrt(var)
    q_t = float(stats.t.ppf(0.975, int(unit.max() + 1) - 1))  # as fit_spec
    return pd.DataFrame({"rep": np.arange(reps), "estimate": b, "se": se,
                         "ci_low": b - q_t * se, "ci_high": b + q_t * se})


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


def _perm_chunk(slim: pd.DataFrame, specs: list[dict], reps: int, seed: int) -> list[pd.DataFrame]:
    frames: dict = {}
    perms: dict = {}
    out = []
    for spec in specs:
        key = (spec["sample"], spec["timing"], spec["estimator"] == "long-diff")
        if key not in frames:
            frames[key] = _base_frame(slim, *key)
        if spec["density"] not in perms:
            perms[spec["density"]] = _panel_permutations(slim, spec["density"], reps, seed)
        rows = _spec_rows(frames[key], spec).sort_values([ENTITY, TIME])
        xperm = perms[spec["density"]][rows["src"].to_numpy().astype(np.int64)]
        r = permuted_fits(rows, spec["estimator"], reps, seed, xperm=xperm)
        r["index"] = spec["index"]
        out.append(r)
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
    check_grid(df, specs)
    slim = _slim(df, specs)
    key = _cache_key(specs, slim, extra=f"perm:{reps}:{seed}")
    path = Path(cache_dir) / f"perm-{key}.parquet" if cache_dir is not None else None
    if path is not None and path.exists():
        long = pd.read_parquet(path)
    else:
        chunks = _chunks(specs.reset_index().to_dict("records"), 40)
        bar = _progress(len(specs), progress)
        parts: list[pd.DataFrame] = []
        if n_jobs == 1:
            for ch in chunks:
                parts += _perm_chunk(slim, ch, reps, seed)
                bar.update(len(ch))
        else:
            from joblib import Parallel, delayed

            par = Parallel(n_jobs=n_jobs, return_as="generator_unordered")
            for res in par(delayed(_perm_chunk)(slim, ch, reps, seed) for ch in chunks):
                parts += res
                bar.update(len(res))
        bar.close()
        long = pd.concat(parts, ignore_index=True)
        long = long.merge(specs.reset_index(), on="index").drop(columns="index")
        long = standardise(long, df)
        if path is not None:
            _atomic_write_parquet(long, path)
    null = long.groupby("rep").apply(lambda t: curve_summary(t, by=None).loc["(all)"], include_groups=False)
    obs = null.loc[0]
    rest = null.drop(index=0)
    rows = {}
    for stat in ("median_aligned", "share_thesis", "share_sig_thesis", "share_sig_against"):
        extreme = (rest[stat] <= obs[stat]) if stat == "share_sig_against" else (rest[stat] >= obs[stat])
        rows[stat] = {"observed": float(obs[stat]), "null_median": float(rest[stat].median()),
                      "null_p95": float(rest[stat].quantile(0.95)),
                      "p_value": float((1 + extreme.sum()) / (len(rest) + 1))}
    return null, pd.DataFrame(rows).T


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
