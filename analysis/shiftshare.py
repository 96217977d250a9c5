r"""A shift-share (Bartik) instrument for the change in organisation density, and its diagnostics.

The instrument (Chapter 5)
--------------------------
County :math:`i`, organisation type :math:`k` (the ten types counted in every wave,
:data:`TYPES`), a *share* year :math:`t_0` and a period from a *base* year :math:`t_1` to an
*end* year :math:`t_2` (:math:`t_0 \le t_1 < t_2`, all waves of the panel).

* Type density in the share year, organisations per 1,000 residents of that year:
  :math:`d_{ik} = 1000\, n_{ik,t_0} / \mathrm{pop}_{i,t_0}`. Its sum over the ten types is
  the county's ten-type density :math:`D_i` ("sum of shares"); the composition is
  :math:`s_{ik} = d_{ik}/D_i` (shares of the county's ten-type establishments).
* Leave-one-out national growth of type :math:`k` over the period, excluding county
  :math:`i` itself: :math:`g_{k,-i} = \frac{N_{k,t_2} - n_{ik,t_2}}{N_{k,t_1} - n_{ik,t_1}} - 1`,
  :math:`N_{k,t}` the sum over all counties of the panel (a proportion: 0.10 is 10%).
* The instrument, in organisations per 1,000 residents:
  :math:`Z_i = \sum_k d_{ik}\, g_{k,-i} = D_i \sum_k s_{ik} g_{k,-i}`, the change in the
  county's density had each of its share-year type counts grown at the type's national rate
  over the period, with the population held at its share-year value (so that the
  county's own population growth, which is itself an outcome, is not in the instrument).
  Its components :math:`B_{ik} = d_{ik} g_{k,-i}` sum to :math:`Z_i`.

Types that exist in only some waves cannot have a national growth rate: the Penn State 1997
counts include two SIC classes (``n_membership_sports``, SIC 7997; ``n_membership_nec``,
SIC 8699) that have no counterpart in the NAICS-based 2005-2014 counts.
:func:`shift_share` refuses a type whose national base-year count is zero or missing, and
these two enter neither :math:`d_{ik}` nor :math:`D_i`.

Two-stage least squares (:func:`iv_2sls`) with linearmodels ``IV2SLS``: outcome
:math:`y_i` on one endogenous regressor :math:`x_i`, exogenous controls :math:`w_i`
(constant, controls, dummies of an absorbed grouping), excluded instruments :math:`z_i`.
Covariances: ``"robust"`` (HC1-type, linearmodels ``robust`` with ``debiased=True``:
:math:`n/(n-K)`), ``"cluster"`` (CR1: :math:`\frac{G}{G-1}\frac{n-1}{n-K}`) or
``"unadjusted"``; all debiased, with Student-t (clustered: :math:`G-1` degrees of freedom)
intervals.

Weak instruments: :func:`effective_f` is the effective first-stage F of Montiel Olea and
Pflueger (2013), :math:`F_{\mathrm{eff}} = \hat\pi' \tilde Z'\tilde Z \hat\pi /
\operatorname{tr}(\tilde Z'\tilde Z\, \hat V_\pi)` (:math:`\tilde Z` the instruments net of
the controls, :math:`\hat V_\pi` the robust or clustered covariance of the first-stage
coefficients). With one instrument it is :math:`\hat\pi^2/\hat V_\pi`, the robust (or
clustered) first-stage Wald F; with homoskedastic :math:`\hat V_\pi` it is the classical F.

Which types drive the instrument: :func:`rotemberg_weights` (Goldsmith-Pinkham, Sorkin and
Swift 2020), :math:`\hat\alpha_k = \tilde B_k'x / \sum_j \tilde B_j'x` and the just-identified
IV estimate with component :math:`k` alone, :math:`\hat\beta_k = \tilde B_k'y/\tilde B_k'x`;
:math:`\sum_k\hat\alpha_k = 1` and :math:`\sum_k\hat\alpha_k\hat\beta_k` is the Bartik 2SLS
estimate exactly. (With common shifts :math:`B_k = g_k d_k` this is GPSS's formula; with
leave-one-out shifts the component carries its own county-specific shift.)

References: Bartik (1991); Goldsmith-Pinkham, Sorkin & Swift (2020) *AER* 110(8);
Borusyak, Hull & Jaravel (2022) *REStud* 89(1); Adão, Kolesár & Morales (2019) *QJE*
134(4); Montiel Olea & Pflueger (2013) *JBES* 31(3); Andrews, Stock & Sun (2019) *Annu. Rev.
Econ.* 11.
"""

from __future__ import annotations

import time as _time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "COV_TYPES",
    "TYPES",
    "TYPES_SHARE_YEAR_ONLY",
    "ARSet",
    "InstrumentError",
    "IVResult",
    "ShiftShare",
    "anderson_rubin",
    "bench_iv",
    "effective_f",
    "iv_2sls",
    "long_difference",
    "reduced_form",
    "rotemberg_figure",
    "rotemberg_weights",
    "shift_share",
]

# The ten organisation types counted in every wave (Penn State county files; see the codebook).
TYPES: tuple[str, ...] = (
    "n_religious",
    "n_civic",
    "n_business",
    "n_political",
    "n_professional",
    "n_labour",
    "n_bowling",
    "n_fitness",
    "n_golf",
    "n_sports_clubs",
)
# SIC classes counted in 1997 only (no NAICS counterpart in 2005-2014): no national growth rate.
TYPES_SHARE_YEAR_ONLY: tuple[str, ...] = ("n_membership_sports", "n_membership_nec")
COV_TYPES: dict[str, str] = {
    "unadjusted": "Homoskedastic",
    "robust": "Robust (HC1)",
    "cluster": "Clustered",
}
_REL_TOL = 1e-10  # variance left after the controls, relative to the raw variance, below which a column is "constant"


class InstrumentError(ValueError):
    """An instrument (or instrument set, or panel) that cannot identify the model; raised before fitting."""


# --------------------------------------------------------------------------------------
# Building the instrument
# --------------------------------------------------------------------------------------


@dataclass
class ShiftShare:
    """A shift-share instrument and its parts, one row per county (index: the entity).

    ``instrument`` (organisations per 1,000 residents of the share year) is the row sum of
    ``components``; ``type_density`` holds :math:`d_{ik}` (per 1,000), ``shares`` the
    composition :math:`s_{ik}` (rows sum to 1), ``density_share_year`` :math:`D_i`,
    ``shifts`` the leave-one-out growth :math:`g_{k,-i}` (proportions) and
    ``national_growth`` the national growth :math:`g_k` with every county included.
    A county with none of the types in the share year has ``instrument`` 0 and missing ``shares``.
    """

    instrument: pd.Series
    components: pd.DataFrame
    type_density: pd.DataFrame
    shares: pd.DataFrame
    density_share_year: pd.Series
    shifts: pd.DataFrame
    national_growth: pd.Series
    share_year: int
    base_year: int
    end_year: int
    excluded: tuple[str, ...] = ()  # counties left out because a wave is a source gap

    def frame(self) -> pd.DataFrame:
        """``instrument`` and ``density_share_year`` as columns, for merging with outcome changes."""
        return pd.DataFrame({"bartik_per_1k": self.instrument, "density10_per_1k_share_year": self.density_share_year})


def _require(df: pd.DataFrame, cols, what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InstrumentError(f"{what}: column(s) {', '.join(map(repr, missing))} not in the data.")


def _check_years(df: pd.DataFrame, time: str, years: dict[str, int]) -> None:
    waves = sorted(int(y) for y in pd.unique(df[time]))
    if len(waves) < 2:
        raise InstrumentError(
            f"Too few periods: a change needs at least two waves, and the panel has {len(waves)} ({waves})."
        )
    absent = {k: y for k, y in years.items() if y not in waves}
    if absent:
        raise InstrumentError(
            "Too few periods: " + ", ".join(f"{k} {y}" for k, y in absent.items())
            + f" not in the panel, whose waves are {waves}."
        )


def _first_collinear(mat: np.ndarray, names) -> str | None:
    """Name of the first column in the span of the columns before it (None if full column rank)."""
    scale = np.abs(mat).max() or 1.0
    for j in range(1, mat.shape[1] + 1):
        if np.linalg.matrix_rank(mat[:, :j], tol=1e-10 * scale * max(mat.shape)) < j:
            return names[j - 1]
    return None


def shift_share(
    waves: pd.DataFrame,
    share_year: int = 1997,
    base_year: int = 2005,
    end_year: int = 2014,
    types=TYPES,
    entity: str = "fips",
    time: str = "year",
    population: str = "population",
) -> ShiftShare:
    """Build the shift-share instrument (see the module docstring for the formulas and units).

    ``waves`` is a long panel (entity x time) with the type counts ``types`` and
    ``population``. Counties must be present in all three years. Raises
    :class:`InstrumentError` for: a year not in the panel or years out of order (too few
    periods); a type with no establishments nationally in the base year (no growth rate,
    e.g. the 1997-only SIC classes); a type whose share-year density is zero everywhere or
    is a linear combination of the others (collinear shares); missing counts or a
    non-positive population.
    """
    types = list(types)
    if len(types) < 1:
        raise InstrumentError("No organisation types given.")
    if len(set(types)) != len(types):
        dup = sorted({t for t in types if types.count(t) > 1})
        raise InstrumentError(f"Collinear shares: type(s) {', '.join(map(repr, dup))} given twice.")
    _require(waves, [entity, time, population, *types], "shift_share")
    if not share_year <= base_year < end_year:
        raise InstrumentError(
            f"Too few periods: need share_year <= base_year < end_year, got {share_year}, {base_year}, {end_year}."
        )
    _check_years(waves, time, {"share year": share_year, "base year": base_year, "end year": end_year})

    def wide(year: int) -> pd.DataFrame:
        d = waves.loc[waves[time] == year].set_index(entity)
        if d.index.duplicated().any():
            raise InstrumentError(f"Duplicate {entity} rows in {year}.")
        return d

    w0, w1, w2 = wide(share_year), wide(base_year), wide(end_year)
    ids = w0.index.intersection(w1.index).intersection(w2.index).sort_values()
    if len(ids) < 2:
        raise InstrumentError(f"Fewer than two counties are present in {share_year}, {base_year} and {end_year}.")
    w0, w1, w2 = w0.loc[ids], w1.loc[ids], w2.loc[ids]
    # A county-wave with every count missing is a source gap (panels.SOURCE_GAP_MIN_POPULATION):
    # the county has no composition or growth to contribute and is left out, and said so.
    gaps = pd.Index([])
    for w in (w0, w1, w2):
        gaps = gaps.union(w.index[w[types].isna().all(axis=1)])
    if len(gaps):
        ids = ids.difference(gaps)
        w0, w1, w2 = w0.loc[ids], w1.loc[ids], w2.loc[ids]
    counts = {}
    for year, w in ((share_year, w0), (base_year, w1), (end_year, w2)):
        c = w[types].astype("Float64")
        if c.isna().any().any():
            bad = c.columns[c.isna().any()].tolist()
            raise InstrumentError(
                f"Missing counts in {year} for {', '.join(map(repr, bad))}"
                + (" (a type counted only in some waves has no national growth rate)" if year != share_year else "")
                + "."
            )
        counts[year] = c.astype(float)
    pop0 = w0[population].astype("Float64")
    if pop0.isna().any() or (pop0 <= 0).any():
        raise InstrumentError(f"Population in {share_year} is missing or not positive for some counties.")
    pop0 = pop0.astype(float)

    n1, n2 = counts[base_year], counts[end_year]
    nat1, nat2 = n1.sum(), n2.sum()
    absent = nat1.index[nat1 <= 0].tolist()
    if absent:
        raise InstrumentError(
            f"No national growth rate for {', '.join(map(repr, absent))}: no establishments in the base year "
            f"{base_year}. Types counted only in some waves ({', '.join(TYPES_SHARE_YEAR_ONLY)} exist in 1997 only) "
            "must be left out of the instrument."
        )
    denom = nat1 - n1  # leave-one-out base count, county x type
    if (denom <= 0).any().any():
        k = denom.columns[(denom <= 0).any()].tolist()
        raise InstrumentError(f"Leave-one-out growth undefined for {k}: one county holds every base-year establishment.")
    shifts = (nat2 - n2) / denom - 1.0
    type_density = counts[share_year].div(pop0, axis=0) * 1000.0

    zero = type_density.columns[(type_density == 0).all()].tolist()
    if zero:
        raise InstrumentError(
            f"Shares with no variation: type(s) {', '.join(map(repr, zero))} have no establishments in any county "
            f"in {share_year}."
        )
    col = _first_collinear(type_density.to_numpy(), types)
    if col is not None:
        raise InstrumentError(
            f"Collinear shares: the {share_year} density of {col!r} is a linear combination of the other types'."
        )
    D = type_density.sum(axis=1)
    # A county with none of these establishments in the share year has instrument 0 and no composition.
    components = type_density * shifts
    return ShiftShare(
        instrument=components.sum(axis=1).rename("bartik_per_1k"),
        components=components,
        type_density=type_density,
        shares=type_density.div(D.where(D > 0), axis=0),
        density_share_year=D.rename("density10_per_1k_share_year"),
        shifts=shifts,
        national_growth=(nat2 / nat1 - 1.0).rename("national_growth"),
        share_year=share_year,
        base_year=base_year,
        end_year=end_year,
        excluded=tuple(str(g) for g in gaps),
    )


def long_difference(
    waves: pd.DataFrame, columns, start: int, end: int, entity: str = "fips", time: str = "year",
    keep=("state_fips", "census_division"),
) -> pd.DataFrame:
    """Changes ``x[end] - x[start]`` of ``columns``, one row per entity, named ``d_<col>``.

    Time-invariant columns in ``keep`` (those present) are carried along from ``start``. Units are
    those of each column (percentage points for rates, log points for logs, per 1,000 for
    densities). A county missing in either year is dropped; a missing value stays missing.
    """
    columns = [columns] if isinstance(columns, str) else list(columns)
    _require(waves, [entity, time, *columns], "long_difference")
    if not start < end:
        raise InstrumentError(f"Too few periods: a change needs start < end, got {start} and {end}.")
    _check_years(waves, time, {"start": start, "end": end})
    a = waves.loc[waves[time] == start].set_index(entity)
    b = waves.loc[waves[time] == end].set_index(entity)
    ids = a.index.intersection(b.index).sort_values()
    out = (b.loc[ids, columns].astype(float) - a.loc[ids, columns].astype(float)).add_prefix("d_")
    for k in keep:
        if k in a.columns:
            out[k] = a.loc[ids, k]
    return out


# --------------------------------------------------------------------------------------
# Two-stage least squares
# --------------------------------------------------------------------------------------


def _design(df, outcome, endog, instruments, controls, absorb):
    cols = [outcome, *endog, *instruments, *controls] + ([absorb] if absorb else [])
    _require(df, cols, "iv_2sls")
    d = df[cols].copy()
    n_all = len(d)
    num = [outcome, *endog, *instruments, *controls]
    vals = d[num].astype(float)
    if np.isinf(vals.to_numpy()).any():
        bad = vals.columns[np.isinf(vals).any()].tolist()
        raise InstrumentError(f"Infinite values in {bad}.")
    keep = vals.notna().all(axis=1) & (d[absorb].notna() if absorb else True)
    d, vals = d.loc[keep], vals.loc[keep]
    exog = pd.DataFrame({"const": 1.0}, index=d.index)
    for c in controls:
        exog[c] = vals[c]
    if absorb:
        dummies = pd.get_dummies(d[absorb].astype(str), prefix=absorb, drop_first=True, dtype=float)
        exog = pd.concat([exog, dummies], axis=1)
    return vals[outcome], vals[list(endog)], vals[list(instruments)], exog, n_all - len(d), d.index


def _residualise(W: np.ndarray, M: np.ndarray) -> np.ndarray:
    coef, *_ = np.linalg.lstsq(W, M, rcond=None)
    return M - W @ coef


def _check_instruments(Z: pd.DataFrame, W: pd.DataFrame, X: pd.DataFrame) -> np.ndarray:
    """Raise if an instrument (or the endogenous regressor) has no variation net of the controls,
    or if the instruments are collinear; return the residualised instruments."""
    if len(Z) <= W.shape[1] + Z.shape[1]:
        raise InstrumentError(f"Too few observations ({len(Z)}) for {W.shape[1]} controls and {Z.shape[1]} instruments.")
    Wm = W.to_numpy()
    if np.linalg.matrix_rank(Wm) < Wm.shape[1]:
        raise InstrumentError("The controls are collinear (including the constant and absorbed dummies).")
    for frame, role in ((Z, "instrument"), (X, "endogenous regressor")):
        raw = frame.to_numpy()
        res = _residualise(Wm, raw)
        for j, name in enumerate(frame.columns):
            ss_raw = float(((raw[:, j] - raw[:, j].mean()) ** 2).sum())
            ss_res = float((res[:, j] ** 2).sum())
            if ss_raw == 0 or ss_res <= _REL_TOL * max(ss_raw, float((raw[:, j] ** 2).sum())):
                raise InstrumentError(
                    f"The {role} {name!r} has no variation"
                    + (" (it is constant)" if ss_raw == 0 else " once the controls are removed (it is collinear with them)")
                    + "."
                )
    Zt = _residualise(Wm, Z.to_numpy())
    col = _first_collinear(Zt, list(Z.columns))
    if col is not None:
        raise InstrumentError(f"Collinear instruments: {col!r} is a linear combination of the other instruments and the controls.")
    return Zt


def effective_f(pi, cov_pi, Z_resid) -> float:
    r"""Effective first-stage F of Montiel Olea & Pflueger (2013).

    :math:`F_{\mathrm{eff}} = \hat\pi'\tilde Z'\tilde Z\hat\pi / \operatorname{tr}(\tilde Z'\tilde Z\,\hat V_\pi)`,
    with ``pi`` the first-stage coefficients on the excluded instruments, ``cov_pi`` their
    (robust or clustered) covariance and ``Z_resid`` the instruments net of the exogenous
    regressors (n x L). With L = 1 it is :math:`\hat\pi^2/\hat V_\pi`, the robust Wald F;
    with :math:`\hat V_\pi = s^2(\tilde Z'\tilde Z)^{-1}` the classical first-stage F.
    Compare it with the Montiel Olea-Pflueger critical values (23.1 for a 10% worst-case
    bias at 5% size with one instrument; 10 is the Staiger-Stock rule of thumb).
    """
    pi = np.atleast_1d(np.asarray(pi, dtype=float))
    V = np.atleast_2d(np.asarray(cov_pi, dtype=float))
    Z = np.asarray(Z_resid, dtype=float)
    Z = Z.reshape(-1, 1) if Z.ndim == 1 else Z
    L = pi.shape[0]
    if V.shape != (L, L) or Z.shape[1] != L:
        raise InstrumentError(f"Shapes do not agree: pi {pi.shape}, cov {V.shape}, instruments {Z.shape}.")
    if not (np.isfinite(pi).all() and np.isfinite(V).all() and np.isfinite(Z).all()):
        raise InstrumentError("Non-finite first-stage coefficients, covariance or instruments.")
    Q = Z.T @ Z
    denom = float(np.trace(Q @ V))
    if denom <= 0:
        raise InstrumentError("The instruments have no variation (tr(Z'Z V) is not positive).")
    return float(pi @ Q @ pi) / denom


@dataclass
class IVResult:
    """One 2SLS fit: the coefficient on the endogenous regressor, the first stage and the reduced form.

    ``estimate``/``std_error``/``conf_low``/``conf_high`` (95%) are for the endogenous
    regressor, in outcome units per unit of it. ``first_stage`` and ``reduced_form`` hold
    the coefficient on the (single) instrument, its standard error and t statistic with the
    same covariance; ``effective_f`` is :func:`effective_f`; ``ols`` the OLS coefficient of
    the outcome on the endogenous regressor with the same controls. ``raw`` is the
    linearmodels result.
    """

    outcome: str
    endog: str
    instruments: tuple[str, ...]
    controls: tuple[str, ...]
    absorb: str | None
    cov: str
    nobs: int
    n_dropped: int
    n_clusters: int | None
    estimate: float
    std_error: float
    conf_low: float
    conf_high: float
    pvalue: float
    first_stage: dict[str, float]
    reduced_form: dict[str, float]
    effective_f: float
    ols: dict[str, float]
    raw: Any = field(repr=False)
    cluster_codes: Any = field(default=None, repr=False)

    def ci(self, level: float = 0.95) -> tuple[float, float]:
        """Interval for the endogenous coefficient at ``level`` (Student t with the fit's df)."""
        q = stats.t.ppf(0.5 + level / 2, self._df)
        return self.estimate - q * self.std_error, self.estimate + q * self.std_error

    @property
    def _df(self) -> float:
        return (self.n_clusters - 1) if self.n_clusters else (self.nobs - self.raw.model.exog.shape[1] - 1)

    def row(self) -> pd.Series:
        """The headline numbers as a Series (for tables and ``glue``)."""
        return pd.Series({
            "estimate": self.estimate, "std_error": self.std_error, "conf_low": self.conf_low,
            "conf_high": self.conf_high, "first_stage": self.first_stage["coef"],
            "first_stage_se": self.first_stage["se"], "reduced_form": self.reduced_form["coef"],
            "reduced_form_se": self.reduced_form["se"], "effective_f": self.effective_f,
            "ols": self.ols["coef"], "ols_se": self.ols["se"], "nobs": self.nobs,
        }, name=self.outcome)


def _fit_kwargs(cov: str, clusters) -> dict:
    if cov not in COV_TYPES:
        raise InstrumentError(f"Unknown covariance {cov!r}; expected one of {', '.join(map(repr, COV_TYPES))}.")
    if cov == "cluster":
        return {"cov_type": "clustered", "clusters": clusters, "debiased": True}
    return {"cov_type": cov, "debiased": True}


def _coef(res, name: str, df: float) -> dict[str, float]:
    b, se = float(res.params[name]), float(res.std_errors[name])
    return {"coef": b, "se": se, "t": b / se, "pvalue": float(2 * stats.t.sf(abs(b / se), df))}


def iv_2sls(
    df: pd.DataFrame,
    outcome: str,
    endog: str,
    instruments,
    controls=(),
    absorb: str | None = None,
    cov: str = "cluster",
    cluster: str | None = "state_fips",
) -> IVResult:
    """2SLS of ``outcome`` on ``endog`` instrumented by ``instruments``, with ``controls`` and
    dummies for the groups of ``absorb`` (e.g. ``"state_fips"``); linearmodels ``IV2SLS``.

    ``cov``: ``"cluster"`` (by ``cluster``), ``"robust"`` or ``"unadjusted"`` (all debiased).
    Rows with a missing value in any variable used are dropped (``n_dropped``). Raises
    :class:`InstrumentError` if an instrument or the endogenous regressor has no variation
    net of the controls, if the instruments are collinear, or if a column is missing.
    """
    from linearmodels.iv import IV2SLS

    instruments = (instruments,) if isinstance(instruments, str) else tuple(instruments)
    controls = (controls,) if isinstance(controls, str) else tuple(controls)
    if not instruments:
        raise InstrumentError("No excluded instruments given.")
    if cov == "cluster" and cluster is None:
        raise InstrumentError("cov='cluster' needs a cluster column.")
    y, X, Z, W, n_dropped, idx = _design(df, outcome, (endog,), instruments, controls, absorb)
    Zt = _check_instruments(Z, W, X)
    clusters = None
    n_clusters = None
    if cov == "cluster":
        _require(df, [cluster], "iv_2sls")
        cl = df.loc[idx, cluster]
        if cl.isna().any():
            raise InstrumentError(f"Missing values in the cluster column {cluster!r}.")
        clusters = pd.Series(pd.factorize(cl)[0], index=idx, name=cluster)
        n_clusters = int(clusters.nunique())
        if n_clusters < 2:
            raise InstrumentError(f"One cluster only in {cluster!r}: a clustered covariance needs at least two.")
    kw = _fit_kwargs(cov, clusters)
    res = IV2SLS(y, W, X, Z).fit(**kw)
    fs = IV2SLS(X[endog], pd.concat([W, Z], axis=1), None, None).fit(**kw)
    rf = IV2SLS(y, pd.concat([W, Z], axis=1), None, None).fit(**kw)
    ols = IV2SLS(y, pd.concat([W, X], axis=1), None, None).fit(**kw)
    df_t = (n_clusters - 1) if n_clusters else (len(y) - W.shape[1] - 1)
    b, se = float(res.params[endog]), float(res.std_errors[endog])
    q = stats.t.ppf(0.975, df_t)
    names = list(instruments)
    feff = effective_f(fs.params[names].to_numpy(), fs.cov.loc[names, names].to_numpy(), Zt)
    return IVResult(
        outcome=outcome, endog=endog, instruments=instruments, controls=controls, absorb=absorb, cov=cov,
        nobs=int(len(y)), n_dropped=int(n_dropped), n_clusters=n_clusters,
        estimate=b, std_error=se, conf_low=b - q * se, conf_high=b + q * se,
        pvalue=float(2 * stats.t.sf(abs(b / se), df_t)),
        first_stage=_coef(fs, names[0], df_t), reduced_form=_coef(rf, names[0], df_t),
        effective_f=feff, ols=_coef(ols, endog, df_t), raw=res,
        cluster_codes=None if clusters is None else clusters.to_numpy(),
    )


def reduced_form(
    df: pd.DataFrame, outcome: str, instrument: str, controls=(), absorb: str | None = None,
    cov: str = "cluster", cluster: str | None = "state_fips",
) -> dict[str, float]:
    """OLS coefficient of ``outcome`` on ``instrument`` with the same controls and covariance as
    :func:`iv_2sls` (used for the placebo on pre-period changes). Returns coef, se, t, pvalue, nobs."""
    from linearmodels.iv import IV2SLS

    controls = (controls,) if isinstance(controls, str) else tuple(controls)
    y, _, Z, W, _, idx = _design(df, outcome, (), (instrument,), controls, absorb)
    _check_instruments(Z, W, Z.iloc[:, :0])
    clusters = None
    n_clusters = None
    if cov == "cluster":
        if cluster is None:
            raise InstrumentError("cov='cluster' needs a cluster column.")
        _require(df, [cluster], "reduced_form")
        clusters = pd.Series(pd.factorize(df.loc[idx, cluster])[0], index=idx)
        n_clusters = int(clusters.nunique())
    res = IV2SLS(y, pd.concat([W, Z], axis=1), None, None).fit(**_fit_kwargs(cov, clusters))
    df_t = (n_clusters - 1) if n_clusters else (len(y) - W.shape[1] - 1)
    return {**_coef(res, instrument, df_t), "nobs": int(len(y))}


# --------------------------------------------------------------------------------------
# Weak-instrument-robust inference
# --------------------------------------------------------------------------------------


@dataclass
class ARSet:
    """An Anderson-Rubin confidence set for the coefficient on the endogenous regressor.

    ``kind`` is ``"interval"`` (``[low, high]``), ``"two rays"`` (``(-inf, low] U [high, inf)``)
    or ``"everything"`` (the whole real line: the data exclude no value). ``level`` is the
    coverage; ``critical`` the critical value of the squared t (F(1, df)).
    """

    kind: str
    low: float
    high: float
    level: float
    critical: float
    df: float

    def describe(self, digits: int = 2) -> str:
        if self.kind == "interval":
            return f"[{self.low:.{digits}f}, {self.high:.{digits}f}]"
        if self.kind == "two rays":
            return f"(-inf, {self.low:.{digits}f}] U [{self.high:.{digits}f}, +inf)"
        return "(-inf, +inf)"


def anderson_rubin(result: IVResult, level: float = 0.95) -> ARSet:
    r"""Anderson-Rubin (1949) confidence set for a just-identified IV fit, robust to weak instruments.

    For each :math:`\beta_0` the AR test regresses :math:`y-\beta_0x` on the instrument and
    the controls and tests the instrument's coefficient, :math:`\hat\gamma-\beta_0\hat\pi`,
    against zero with the fit's covariance (robust or clustered, same small-sample factor and
    t reference distribution as :func:`iv_2sls`). The set of :math:`\beta_0` not rejected solves
    :math:`(\hat\gamma-\beta_0\hat\pi)^2 \le c\,(V_{\gamma\gamma}-2\beta_0V_{\gamma\pi}+\beta_0^2V_{\pi\pi})`,
    a quadratic inequality: bounded if and only if the first stage is significant at the
    same level (:math:`\hat\pi^2 > cV_{\pi\pi}`), else two rays or the whole line.
    The joint covariance of the reduced-form and first-stage coefficients is computed here
    from the residualised data (Frisch-Waugh-Lovell).
    """
    if len(result.instruments) != 1:
        raise InstrumentError("anderson_rubin handles one instrument (a just-identified model).")
    model = result.raw.model
    W = model.exog.ndarray
    x = model.endog.ndarray[:, 0]
    y = model.dependent.ndarray[:, 0]
    z = model.instruments.ndarray[:, 0]
    zt = _residualise(W, z.reshape(-1, 1))[:, 0]
    n, k = len(y), W.shape[1] + 1
    szz = float(zt @ zt)
    gamma, pi = float(zt @ y) / szz, float(zt @ x) / szz
    Wz = np.column_stack([W, z])
    ey = y - Wz @ np.linalg.lstsq(Wz, y, rcond=None)[0]
    ex = x - Wz @ np.linalg.lstsq(Wz, x, rcond=None)[0]
    sy, sx = zt * ey, zt * ex
    if result.cov == "cluster":
        codes = np.asarray(result.cluster_codes)
        G = codes.max() + 1
        sy = np.bincount(codes, weights=sy, minlength=G)
        sx = np.bincount(codes, weights=sx, minlength=G)
        factor = G / (G - 1) * (n - 1) / (n - k)
        df = G - 1
    elif result.cov == "robust":
        factor, df = n / (n - k), n - k
    else:
        raise InstrumentError("anderson_rubin needs a robust or clustered fit.")
    S = np.array([[sy @ sy, sy @ sx], [sx @ sy, sx @ sx]]) * factor / szz**2
    c = float(stats.f.ppf(level, 1, df))
    a = pi**2 - c * S[1, 1]
    b = -2 * (gamma * pi - c * S[0, 1])
    cc = gamma**2 - c * S[0, 0]
    disc = b * b - 4 * a * cc
    if a > 0:
        r = np.sqrt(max(disc, 0.0))
        return ARSet("interval", (-b - r) / (2 * a), (-b + r) / (2 * a), level, c, df)
    if disc <= 0:
        return ARSet("everything", -np.inf, np.inf, level, c, df)
    r1, r2 = sorted(((-b - np.sqrt(disc)) / (2 * a), (-b + np.sqrt(disc)) / (2 * a)))
    return ARSet("two rays", r1, r2, level, c, df)


# --------------------------------------------------------------------------------------
# Rotemberg weights
# --------------------------------------------------------------------------------------


def rotemberg_weights(
    components: pd.DataFrame,
    endog: pd.Series,
    outcome: pd.Series,
    controls: pd.DataFrame | None = None,
    national_growth: pd.Series | None = None,
) -> pd.DataFrame:
    r"""Rotemberg weights of a shift-share instrument (Goldsmith-Pinkham, Sorkin & Swift 2020).

    ``components`` (n x K) are the instrument's parts :math:`B_{ik}` (they sum to the
    instrument), ``endog`` :math:`x`, ``outcome`` :math:`y`, ``controls`` the exogenous
    regressors :math:`W` *including* the constant (``None``: a constant only). With
    :math:`\tilde B_k` the residual of :math:`B_k` on :math:`W`:

    * ``alpha`` :math:`\hat\alpha_k = \tilde B_k'x/\sum_j\tilde B_j'x` (sums to 1; may be negative),
    * ``beta`` :math:`\hat\beta_k = \tilde B_k'y/\tilde B_k'x`, the just-identified IV
      estimate with component :math:`k` alone as the instrument,
    * ``alpha_x_beta``, whose sum is the 2SLS estimate with :math:`\sum_k B_k` as the instrument.

    Rows with a missing value anywhere are dropped. Raises :class:`InstrumentError` if a
    component has no variation net of the controls, or if :math:`\sum_j\tilde B_j'x = 0`
    (the instrument does not move :math:`x`). Sorted by ``|alpha|``, largest first.
    """
    B = components.astype(float)
    data = pd.concat([B, endog.rename("__x"), outcome.rename("__y")], axis=1)
    if controls is None:
        controls = pd.DataFrame({"const": 1.0}, index=B.index)
    data = pd.concat([data, controls.add_prefix("__w_")], axis=1).dropna()
    if len(data) <= controls.shape[1] + 1:
        raise InstrumentError(f"Too few observations ({len(data)}) for the Rotemberg decomposition.")
    Bm = data[B.columns].to_numpy()
    x, y = data["__x"].to_numpy(), data["__y"].to_numpy()
    W = data[[c for c in data.columns if str(c).startswith("__w_")]].to_numpy()
    Bt = _residualise(W, Bm)
    for j, name in enumerate(B.columns):
        if float((Bt[:, j] ** 2).sum()) <= _REL_TOL * max(float((Bm[:, j] ** 2).sum()), 1e-300):
            raise InstrumentError(f"Component {name!r} has no variation once the controls are removed.")
    bx, by = Bt.T @ x, Bt.T @ y
    total = float(bx.sum())
    if total == 0 or abs(total) <= 1e-14 * float(np.abs(bx).sum()):
        raise InstrumentError("The instrument is orthogonal to the endogenous regressor: the weights are undefined.")
    with np.errstate(divide="ignore", invalid="ignore"):
        beta = np.where(bx != 0, by / bx, np.nan)
    out = pd.DataFrame({"alpha": bx / total, "beta": beta, "alpha_x_beta": by / total}, index=B.columns)
    if national_growth is not None:
        out.insert(0, "national_growth", national_growth.reindex(B.columns))
    out.index.name = "type"
    return out.reindex(out["alpha"].abs().sort_values(ascending=False).index)


def rotemberg_figure(weights: pd.DataFrame, labels: dict[str, str] | None = None):
    """Bar chart of the Rotemberg weights (left) and the per-type IV estimates with the
    marker area proportional to |alpha| (right). Returns the Figure."""
    from analysis.plots import subplots

    w = weights.iloc[::-1]
    names = [(labels or {}).get(k, k) for k in w.index]
    fig, (ax1, ax2) = subplots(1, 2, figsize=(9, 4), sharey=True)
    ypos = np.arange(len(w))
    ax1.barh(ypos, w["alpha"], color=np.where(w["alpha"] >= 0, "C0", "C3"))
    ax1.axvline(0, color="0.4", linewidth=1)
    ax1.set_yticks(ypos)
    ax1.set_yticklabels(names)
    ax1.set_xlabel("Rotemberg weight $\\alpha_k$")
    size = 600 * w["alpha"].abs() / w["alpha"].abs().max()
    ax2.scatter(w["beta"], ypos, s=size, color=np.where(w["alpha"] >= 0, "C0", "C3"), alpha=0.7)
    ax2.axvline(0, color="0.4", linestyle="--", linewidth=1)
    ax2.set_xlabel("IV estimate with this type alone, $\\hat\\beta_k$")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------
# Benchmark
# --------------------------------------------------------------------------------------


def bench_iv(df: pd.DataFrame) -> float:
    """Seconds for the chapter's IV work on the wave panel ``df``: build the instrument, and the
    2SLS, first stage, reduced form and effective F for the four headline outcomes (2005-2014
    long difference, state dummies, clustered by state)."""
    t = _time.perf_counter()
    ss = shift_share(df)
    ld = long_difference(df, ["assn_per_1k", "unemployment_rate", "poverty_rate", "child_poverty_rate",
                              "log_median_hh_income"], 2005, 2014).join(ss.frame(), how="inner")
    for y in ("d_unemployment_rate", "d_poverty_rate", "d_child_poverty_rate", "d_log_median_hh_income"):
        iv_2sls(ld, y, "d_assn_per_1k", "bartik_per_1k", controls=("density10_per_1k_share_year",),
                absorb="state_fips")
    return _time.perf_counter() - t
