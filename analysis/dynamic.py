r"""Which way does it run? Leads and lags on the wave panel, and dynamic-panel GMM.

Three tools for Chapter 4.

Lead-lag regressions
--------------------
:func:`add_lags` adds the value of a column in the previous (or next) *wave* of the same
county. The lag unit is "one wave", whatever the calendar gap: the waves 1997, 2005, 2009
and 2014 are 8, 4 and 5 years apart. :func:`direction_table` runs, for each outcome
:math:`y` and the density :math:`x`, both directions with two-way fixed effects (county and
wave effects, SEs clustered by county, :func:`analysis.estimation.fit`):

* forward, :math:`y_{i,t+1} = \beta x_{it} + \alpha_i + \delta_{t+1} + u_{i,t+1}`;
* reverse, :math:`x_{i,t+1} = \gamma y_{it} + \alpha_i + \delta_{t+1} + u_{i,t+1}`;

and reports each coefficient also *standardised*:
:math:`\beta^* = \beta\,s(\tilde x)/s(\tilde y)`, where :math:`s(\tilde v)` is the SD of
:math:`v` after removing county and wave means on the estimation sample (the variation the
two-way estimator uses). :math:`\beta^*` is the change, in within-county SDs of the
dependent variable, that goes with a one within-county SD change of the regressor, so the
two directions are on one scale. ``form="changes"`` runs the first-difference version of
both (change from wave t to t+1 on the change from t-1 to t, with wave effects).

:func:`long_difference` is one cross-section of changes between two waves (1997 and 2014 by
default), OLS with an intercept (or state effects as dummies), SEs clustered by state
(CR1, every dummy counted in K).

``own_lag=True`` adds each dependent variable's own last-wave value (forward
:math:`y_{i,t+1} = \beta x_{it} + \rho y_{it} + \dots`, reverse
:math:`x_{i,t+1} = \gamma y_{it} + \phi x_{it} + \dots`): a Granger-type test, with the
Nickell bias of order :math:`1/T` in the own-lag coefficient (:func:`nickell_bias`).
:func:`direction_table` reports every coefficient's minimum detectable effect
(:func:`analysis.policy.minimum_detectable_effect`, 80% power, 5% two-sided), raw and
standardised.

Power and policy units
----------------------
:func:`pooled_gradients` recomputes Chapter 3's pooled cross-county gradient of each outcome
(:func:`analysis.between_within.chapter3_specs`, ``"pooled"``); :func:`policy_frame` reads any
set of slopes in the policy units of hypotheses addition A1 through
:func:`analysis.policy.policy_units`, and refuses to express an effect as a share of a gradient
whose sign is against the thesis.

Annual income around the waves
------------------------------
:func:`income_growth_panel` adds to the wave panel the growth of BEA per-capita income relative
to the US over the five years after and before each wave; :func:`income_growth_models` fits
both directions with county and year (or state-by-year) effects and each dependent variable's
own past, clustered by county, with pyfixest (checked against :func:`analysis.estimation.fit`).

Dynamic-panel GMM
-----------------
:func:`fit_gmm` estimates
:math:`y_{it} = \sum_l \rho_l y_{i,t-l} + x_{it}'\beta + \delta_t + \mu_i + \varepsilon_{it}`
by Arellano-Bond (1991) difference GMM (``method="difference"``) or Blundell-Bond (1998)
system GMM (``method="system"``), following the conventions of Stata's ``xtabond2``
(Roodman 2009), against which it is tested (Arellano and Bond 1991, Table 4; see
``tests/test_dynamic.py``):

* the transformed equation is in first differences; system GMM stacks it with the equation
  in levels (with a constant). Rows with a missing value are dropped (set to zero in the
  stacked per-unit matrices), instruments that are missing are zero.
* :class:`GMMStyle` ``(var, min_lag, max_lag)``: in the differenced equation for period t,
  the levels :math:`v_{i,t-l}` for ``min_lag <= l <= max_lag``, one column per (t, l), or
  one per l if collapsed (Roodman 2009b); in the level equation (system GMM), the
  difference :math:`\Delta v_{i,t-\text{min\_lag}+1}`.
* :class:`IVStyle` variables: one column each, the difference in the differenced equation
  and the level in the level equation. Period dummies are regressors and IV-style
  instruments; dummies (and instruments) collinear with earlier ones are dropped, as Stata
  does; a user regressor that is collinear raises an error.
* one step: weight :math:`A_1 = (\sum_i Z_i'HZ_i)^{-1}` with :math:`H = M M'`,
  :math:`M = [M_\Delta; I]` (xtabond2's default ``h(3)``; :math:`H` is tridiagonal 2, -1 in
  difference GMM); cluster-robust (by unit) covariance. Two steps: weight
  :math:`A_2 = (\sum_i Z_i'\hat e_{1i}\hat e_{1i}'Z_i)^{-1}` (a generalised inverse if
  singular) and the Windmeijer (2005) corrected covariance.
* tests: Arellano-Bond AR(m) on the differenced residuals; Hansen J (the minimised two-step
  criterion, robust), Sargan (the one-step criterion over :math:`\hat\sigma^2`, not robust,
  but not weakened by many instruments). With few waves AR(2) may be impossible to compute
  (no unit has differenced residuals two waves apart): it is then NaN and
  :attr:`GMMResult.notes` says why.

Bad input raises :class:`DynamicPanelError` (a :class:`SpecificationError`) naming the
problem: unknown or non-numeric columns, too few periods for the lags, an instrument that
yields no usable column or does not vary across units, fewer instruments than
coefficients, or collinear regressors.

Nickell bias: :func:`nickell_bias` is the leading term :math:`-(1+\rho)/(T-1)` of the
bias of the within estimator of an AR(1) coefficient with T periods (Nickell 1981).

References: Arellano & Bond (1991) *REStud* 58(2); Blundell & Bond (1998) *J. Econometrics*
87(1); Windmeijer (2005) *J. Econometrics* 126(1); Roodman (2009) *Stata Journal* 9(1) and
(2009b) *Oxford Bull. Econ. Stat.* 71(1); Nickell (1981) *Econometrica* 49(6).
"""

from __future__ import annotations

import re
import time as _time
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from analysis.estimation import (
    ModelSpec,
    PanelResult,
    SpecificationError,
    fit,
    within_transform,
)
from analysis.policy import minimum_detectable_effect

__all__ = [
    "DynamicPanelError",
    "GMMResult",
    "GMMStyle",
    "IVStyle",
    "LongDifference",
    "add_lags",
    "bench_gmm",
    "direction_table",
    "fit_gmm",
    "lead_lag_models",
    "long_difference",
    "nickell_bias",
    "standardised",
    "wave_gaps",
]


class DynamicPanelError(SpecificationError):
    """A lead-lag or GMM specification that cannot be estimated on the data given."""


# --------------------------------------------------------------------------------------
# Leads and lags by wave
# --------------------------------------------------------------------------------------


def _check_columns(df: pd.DataFrame, cols, what: str = "column") -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DynamicPanelError(
            f"Unknown {what}(s) {', '.join(map(repr, missing))}: not column(s) of the data "
            f"(columns: {', '.join(map(repr, list(df.columns)[:25]))}{' ...' if len(df.columns) > 25 else ''})."
        )


def lag_name(col: str, k: int) -> str:
    """Column name of ``col`` shifted by ``k`` waves: ``col_lag1`` (k=1), ``col_lead1`` (k=-1)."""
    return f"{col}_lag{k}" if k > 0 else f"{col}_lead{-k}"


def add_lags(df: pd.DataFrame, cols, lags=(1,), entity: str = "fips", time: str = "year") -> pd.DataFrame:
    """A copy of ``df`` with ``col`` shifted by each of ``lags`` waves, for each of ``cols``.

    The lag unit is one *wave* (one step in the sorted distinct values of ``time`` in
    ``df``), not one year. A positive ``k`` is a lag (the value ``k`` waves earlier, column
    ``col_lag{k}``), a negative ``k`` a lead (``col_lead{-k}``). Where the unit has no row
    at that wave the value is missing. Raises if a column is unknown or the panel is not
    uniquely indexed by (entity, time).
    """
    cols = [cols] if isinstance(cols, str) else list(cols)
    _check_columns(df, [entity, time, *cols])
    if df.duplicated([entity, time]).any():
        raise DynamicPanelError(f"The panel is not uniquely indexed by ({entity}, {time}).")
    waves = np.sort(df[time].unique())
    pos = pd.Series(np.arange(len(waves)), index=waves)
    out = df.copy()
    key = pd.DataFrame({entity: df[entity].to_numpy(), "_pos": pos.loc[df[time].to_numpy()].to_numpy()})
    for k in lags:
        if not isinstance(k, (int, np.integer)) or k == 0:
            raise DynamicPanelError(f"Lags must be non-zero integers (waves), not {k!r}.")
        src = key.copy()
        src["_pos"] = src["_pos"] + k  # the row at wave p supplies the value for wave p + k
        for c in cols:
            src[lag_name(c, k)] = df[c].to_numpy()
        merged = key.merge(src, on=[entity, "_pos"], how="left")
        for c in cols:
            out[lag_name(c, k)] = merged[lag_name(c, k)].to_numpy()
    return out


def wave_gaps(df: pd.DataFrame, time: str = "year") -> pd.Series:
    """Years between consecutive waves, indexed by the later wave."""
    waves = np.sort(df[time].unique())
    return pd.Series(np.diff(waves), index=waves[1:], name="years_since_previous_wave")


# --------------------------------------------------------------------------------------
# Standardised coefficients and the two-direction comparison
# --------------------------------------------------------------------------------------


def standardised(result: PanelResult, df: pd.DataFrame, regressor: str | None = None) -> pd.Series:
    """The coefficient on ``regressor`` in SDs of the outcome per SD of the regressor.

    The SDs are of the two variables after removing unit and period means on the estimation
    sample of ``result`` (two-way fixed effects), or, for ``"fd"``, of their first
    differences net of period means. Returns ``estimate``, ``conf_low`` and ``conf_high``
    (95%) scaled, and the two SDs (``sd_x``, ``sd_y``).
    """
    spec = result.spec
    regressor = regressor or spec.regressors[0]
    if regressor not in result.params.index:
        raise DynamicPanelError(f"{regressor!r} is not a coefficient of this model.")
    cols = [spec.outcome, regressor]
    d = df.dropna(subset=[spec.outcome, *spec.variables])
    if spec.estimator == "fd":
        d = d.sort_values([spec.entity, spec.time])
        waves = np.sort(d[spec.time].unique())
        p = np.searchsorted(waves, d[spec.time].to_numpy())
        same = (d[spec.entity].to_numpy()[1:] == d[spec.entity].to_numpy()[:-1]) & (np.diff(p) == 1)
        diffs = (d[cols].to_numpy()[1:] - d[cols].to_numpy()[:-1])[same]
        dd = pd.DataFrame(diffs, columns=cols)
        dd[spec.time] = d[spec.time].to_numpy()[1:][same]
        resid = within_transform(dd, cols, absorb="time", time=spec.time)
    else:
        absorb = "unit+time" if spec.has_time_effects else "unit"
        resid = within_transform(d, cols, absorb=absorb, entity=spec.entity, time=spec.time)
    sd_y, sd_x = float(resid[spec.outcome].std()), float(resid[regressor].std())
    scale = sd_x / sd_y
    lo, hi = result.conf_int.loc[regressor, ["lower", "upper"]]
    return pd.Series(
        {
            "estimate": float(result.params[regressor]) * scale,
            "conf_low": float(lo) * scale,
            "conf_high": float(hi) * scale,
            "sd_x": sd_x,
            "sd_y": sd_y,
        }
    )


def lead_lag_models(
    df: pd.DataFrame,
    outcome: str,
    density: str = "assn_per_1k",
    form: str = "levels",
    entity: str = "fips",
    time: str = "year",
    own_lag: bool = False,
) -> dict[str, PanelResult]:
    r"""The forward and reverse one-wave-ahead regressions for one outcome.

    ``form="levels"``: TWFE (county and wave effects, clustered by county) of the outcome on
    last wave's density (``"forward"``) and of density on last wave's outcome
    (``"reverse"``). ``form="changes"``: first differences with wave effects, clustered by
    county: the change in the outcome since last wave on the change in density one wave
    earlier, and the reverse. Returns ``{"forward": result, "reverse": result}``.

    ``own_lag=True`` (levels only) adds the dependent variable's own last-wave value, which
    makes each direction a Granger-type test (does the other variable predict beyond the
    dependent variable's own past?): forward
    :math:`y_{i,t+1} = \beta x_{it} + \rho y_{it} + \alpha_i + \delta_{t+1} + u`, reverse
    :math:`x_{i,t+1} = \gamma y_{it} + \phi x_{it} + \alpha_i + \delta_{t+1} + u`. The
    coefficient of interest stays the first regressor. With county effects the own-lag
    coefficient carries a Nickell bias of order :math:`1/T` (:func:`nickell_bias`), which
    spills into the other coefficient in proportion to the within-county correlation of the
    two lagged regressors.
    """
    if form not in ("levels", "changes"):
        raise DynamicPanelError(f"form must be 'levels' or 'changes', not {form!r}.")
    if own_lag and form != "levels":
        raise DynamicPanelError(
            "own_lag needs form='levels': in first differences the lagged change of the dependent variable "
            "contains last wave's error and is correlated with this wave's differenced error by construction."
        )
    _check_columns(df, [outcome, density, entity, time])
    lagged = add_lags(df, [outcome, density], lags=(1,), entity=entity, time=time)
    est = {"levels": dict(estimator="twfe"), "changes": dict(estimator="fd", effects="time")}[form]
    out = {}
    for direction, (dep, reg) in {
        "forward": (outcome, lag_name(density, 1)),
        "reverse": (density, lag_name(outcome, 1)),
    }.items():
        controls = (lag_name(dep, 1),) if own_lag else ()
        spec = ModelSpec(outcome=dep, regressors=(reg,), controls=controls, cov="cluster-unit", entity=entity,
                         time=time, **est)
        out[direction] = fit(spec, lagged)
    return out


def direction_table(
    df: pd.DataFrame,
    outcomes,
    density: str = "assn_per_1k",
    form: str = "levels",
    entity: str = "fips",
    time: str = "year",
    own_lag: bool = False,
) -> pd.DataFrame:
    """Both directions for every outcome, side by side (see :func:`lead_lag_models`).

    One row per (outcome, direction): ``coef``, ``se``, ``p`` (t with G-1 df, county
    clusters), ``std_coef``, ``std_low``, ``std_high`` (standardised, 95%), ``nobs``,
    ``n_units``, ``mde`` and ``mde_std`` (the minimum detectable effect at 80% power and 5%
    two-sided, :func:`analysis.policy.minimum_detectable_effect`, raw and standardised), and
    the ``lagged`` regressor's name; with ``own_lag`` also ``own_lag_coef``
    (the dependent variable's own last-wave coefficient, Nickell-biased: a diagnostic, not a
    result).
    """
    rows = []
    for y in outcomes:
        models = lead_lag_models(df, y, density=density, form=form, entity=entity, time=time, own_lag=own_lag)
        lagged = add_lags(df, [y, density], lags=(1,), entity=entity, time=time)
        for direction, r in models.items():
            reg = r.spec.regressors[0]
            s = standardised(r, lagged, reg)
            row = {
                "outcome": y,
                "direction": direction,
                "regressor": reg,
                "coef": float(r.params[reg]),
                "se": float(r.std_errors[reg]),
                "p": float(r.pvalues[reg]),
                "std_coef": s["estimate"],
                "std_low": s["conf_low"],
                "std_high": s["conf_high"],
                "mde": minimum_detectable_effect(float(r.std_errors[reg])),
                "mde_std": minimum_detectable_effect(float(r.std_errors[reg])) * s["sd_x"] / s["sd_y"],
                "nobs": r.nobs_estimation,
                "n_units": r.n_units,
            }
            if own_lag:
                row["own_lag_coef"] = float(r.params[r.spec.controls[0]])
            rows.append(row)
    return pd.DataFrame(rows).set_index(["outcome", "direction"])


# --------------------------------------------------------------------------------------
# Long difference
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LongDifference:
    """OLS of the change in ``outcome`` on the change in ``regressor`` between two waves.

    ``coef``, ``se`` (CR1 clustered by state, every coefficient incl. state dummies counted
    in K), ``p`` and ``conf_low``/``conf_high`` (t with G-1 df), ``std_coef`` (times
    SD(change in x) / SD(change in y), net of state means if ``state_effects``), ``nobs``,
    ``n_clusters``.
    """

    outcome: str
    regressor: str
    start: int
    end: int
    state_effects: bool
    coef: float
    se: float
    p: float
    conf_low: float
    conf_high: float
    std_coef: float
    nobs: int
    n_clusters: int


def long_difference(
    df: pd.DataFrame,
    outcome: str,
    regressor: str = "assn_per_1k",
    start: int = 1997,
    end: int = 2014,
    state_effects: bool = False,
    entity: str = "fips",
    time: str = "year",
    state: str = "state_fips",
) -> LongDifference:
    r"""Long difference :math:`\Delta y_i = a [+ a_{s(i)}] + b\,\Delta x_i + e_i`, changes from
    ``start`` to ``end``; counties present in both waves with both values."""
    _check_columns(df, [outcome, regressor, entity, time, state])
    for w in (start, end):
        if w not in set(df[time].unique()):
            raise DynamicPanelError(f"Wave {w} is not in the data (waves: {sorted(df[time].unique())}).")
    if start >= end:
        raise DynamicPanelError(f"start ({start}) must be before end ({end}).")
    a = df.loc[df[time] == start].set_index(entity)
    b = df.loc[df[time] == end].set_index(entity)
    d = pd.DataFrame(
        {
            "dy": b[outcome] - a[outcome],
            "dx": b[regressor] - a[regressor],
            "state": b[state],
        }
    ).dropna()
    if len(d) < 3 or float(d["dx"].std()) == 0.0:
        raise DynamicPanelError(f"The change in {regressor!r} has no variation across the {len(d)} counties.")
    X = [np.ones(len(d)), d["dx"].to_numpy()]
    names = ["const", "dx"]
    if state_effects:
        dummies = pd.get_dummies(d["state"], drop_first=True, dtype=float)
        X += [dummies[c].to_numpy() for c in dummies.columns]
        names += [f"state[{c}]" for c in dummies.columns]
    X = np.column_stack(X)
    y = d["dy"].to_numpy()
    n, k = X.shape
    XtX_inv = np.linalg.inv(X.T @ X)
    beta = XtX_inv @ X.T @ y
    e = y - X @ beta
    g = pd.factorize(d["state"])[0]
    G = int(g.max() + 1)
    scores = np.zeros((G, k))
    np.add.at(scores, g, X * e[:, None])
    V = XtX_inv @ (scores.T @ scores) @ XtX_inv * (G / (G - 1)) * ((n - 1) / (n - k))
    se = float(np.sqrt(V[1, 1]))
    q = float(stats.t.ppf(0.975, G - 1))
    coef = float(beta[1])
    if state_effects:
        rd = within_transform(d.assign(_t=0), ["dy", "dx"], absorb="unit", entity="state", time="_t")
        sd_x, sd_y = float(rd["dx"].std()), float(rd["dy"].std())
    else:
        sd_x, sd_y = float(d["dx"].std()), float(d["dy"].std())
    return LongDifference(
        outcome=outcome,
        regressor=regressor,
        start=start,
        end=end,
        state_effects=state_effects,
        coef=coef,
        se=se,
        p=float(2 * stats.t.sf(abs(coef / se), G - 1)),
        conf_low=coef - q * se,
        conf_high=coef + q * se,
        std_coef=coef * sd_x / sd_y,
        nobs=n,
        n_clusters=G,
    )


# --------------------------------------------------------------------------------------
# Dynamic-panel GMM
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GMMStyle:
    """GMM-style instruments: lags ``min_lag`` to ``max_lag`` (None: all available) of ``var``."""

    var: str
    min_lag: int = 2
    max_lag: int | None = None

    def __post_init__(self):
        if self.min_lag < 0 or (self.max_lag is not None and self.max_lag < self.min_lag):
            raise DynamicPanelError(
                f"GMMStyle({self.var!r}, {self.min_lag}, {self.max_lag}): lags must satisfy 0 <= min_lag <= max_lag."
            )

    def label(self) -> str:
        return f"gmm({self.var}, {self.min_lag}:{'.' if self.max_lag is None else self.max_lag})"


@dataclass(frozen=True)
class IVStyle:
    """IV-style (standard) instruments: each variable is one column (a term like ``L1.w`` allowed)."""

    vars: tuple[str, ...]

    def __post_init__(self):
        object.__setattr__(self, "vars", (self.vars,) if isinstance(self.vars, str) else tuple(self.vars))


@dataclass(frozen=True)
class TestStat:
    """A specification test: ``statistic``, ``df`` (chi-squared tests) and ``pvalue``; NaN with a ``note`` if not computable."""

    __test__ = False

    name: str
    statistic: float
    pvalue: float
    df: int | None = None
    note: str = ""


@dataclass(frozen=True)
class GMMResult:
    """A fitted difference or system GMM model.

    ``params``, ``std_errors`` (one step: cluster-robust; two steps: Windmeijer-corrected),
    ``pvalues`` (normal), ``conf_int`` (95%), ``cov``; ``nobs`` (rows of the differenced
    equation, as xtabond2 counts), ``n_units``, ``n_instruments``, ``periods`` (the periods
    of the differenced equation), ``ar`` (AR(1), AR(2) tests), ``hansen``, ``sargan``,
    ``instruments`` (their labels) and ``notes`` (dropped collinear dummies, generalised
    inverses, tests that could not be computed).
    """

    method: str
    steps: int
    collapse: bool
    outcome: str
    params: pd.Series
    std_errors: pd.Series
    pvalues: pd.Series
    conf_int: pd.DataFrame
    cov: pd.DataFrame
    nobs: int
    n_units: int
    n_instruments: int
    periods: tuple
    ar: dict[int, TestStat]
    hansen: TestStat
    sargan: TestStat
    instruments: tuple[str, ...] = field(repr=False)
    notes: tuple[str, ...] = ()

    def summary_frame(self, terms=None) -> pd.DataFrame:
        """Coefficient, SE, z and p for ``terms`` (default: all but period dummies and constant)."""
        terms = terms or [t for t in self.params.index if not t.startswith("period[") and t != "_cons"]
        return pd.DataFrame(
            {
                "coef": self.params[terms],
                "se": self.std_errors[terms],
                "z": self.params[terms] / self.std_errors[terms],
                "p": self.pvalues[terms],
            }
        )

    def diagnostics(self) -> pd.Series:
        """Instrument count, overidentification and serial-correlation tests in one Series."""
        return pd.Series(
            {
                "n_obs": self.nobs,
                "n_units": self.n_units,
                "n_instruments": self.n_instruments,
                "ar1_z": self.ar[1].statistic,
                "ar1_p": self.ar[1].pvalue,
                "ar2_z": self.ar[2].statistic,
                "ar2_p": self.ar[2].pvalue,
                "hansen": self.hansen.statistic,
                "hansen_df": self.hansen.df,
                "hansen_p": self.hansen.pvalue,
                "sargan": self.sargan.statistic,
                "sargan_p": self.sargan.pvalue,
            }
        )


_TERM = re.compile(r"^(?:L(\d+)\.)?(.+)$")


def _parse_term(term: str) -> tuple[str, int]:
    m = _TERM.match(term)
    return m.group(2), int(m.group(1) or 0)


def _shift(a: np.ndarray, k: int) -> np.ndarray:
    """Lag an (N, T) array by k periods along axis 1 (NaN where unavailable)."""
    out = np.full_like(a, np.nan)
    if k == 0:
        return a.copy()
    if k < a.shape[1]:
        out[:, k:] = a[:, :-k]
    return out


def _grid(df: pd.DataFrame, cols, entity: str, time: str):
    units = pd.Index(pd.unique(df[entity]))
    periods = np.sort(df[time].unique())
    i = units.get_indexer(df[entity])
    t = np.searchsorted(periods, df[time].to_numpy())
    arrays = {}
    for c in cols:
        a = np.full((len(units), len(periods)), np.nan)
        a[i, t] = df[c].to_numpy(dtype=float)
        arrays[c] = a
    return units, periods, arrays


def _independent(M: np.ndarray, tol: float = 1e-9) -> list[int]:
    """Indices of columns of M kept by a greedy left-to-right rank check (Stata-style)."""
    keep: list[int] = []
    Q = np.zeros((M.shape[0], 0))
    for j in range(M.shape[1]):
        v = M[:, j]
        nv = np.linalg.norm(v)
        if nv == 0:
            continue
        r = v - Q @ (Q.T @ v)
        if np.linalg.norm(r) > tol * nv:
            keep.append(j)
            Q = np.column_stack([Q, r / np.linalg.norm(r)])
    return keep


def _pinv_note(S: np.ndarray, what: str, notes: list) -> np.ndarray:
    S = (S + S.T) / 2
    if np.linalg.matrix_rank(S) < S.shape[0]:
        notes.append(f"{what} is singular: a generalised inverse is used (as xtabond2 does).")
    return np.linalg.pinv(S)


def fit_gmm(
    df: pd.DataFrame,
    outcome: str,
    regressors,
    gmm,
    iv=(),
    method: str = "difference",
    steps: int = 2,
    collapse: bool = False,
    time_effects: bool = True,
    entity: str = "fips",
    time: str = "year",
) -> GMMResult:
    """Arellano-Bond difference or Blundell-Bond system GMM (see the module docstring).

    ``regressors`` are terms ``"L1.y"``, ``"x"``, ``"L2.x"`` (lags in periods of the panel's
    time index, i.e. waves); the lagged outcome is entered like any other term. ``gmm`` is a
    list of :class:`GMMStyle`, ``iv`` a list of :class:`IVStyle` (or names). ``steps`` is 1
    (cluster-robust SEs) or 2 (Windmeijer SEs). ``time_effects`` adds period dummies as
    regressors and IV-style instruments.
    """
    if method not in ("difference", "system"):
        raise DynamicPanelError(f"method must be 'difference' or 'system', not {method!r}.")
    if steps not in (1, 2):
        raise DynamicPanelError(f"steps must be 1 or 2, not {steps!r}.")
    regressors = [regressors] if isinstance(regressors, str) else list(regressors)
    gmm = [gmm] if isinstance(gmm, GMMStyle) else list(gmm)
    iv_terms: list[str] = []
    for block in [iv] if isinstance(iv, (str, IVStyle)) else list(iv):
        iv_terms += list(block.vars) if isinstance(block, IVStyle) else [block]
    if not regressors:
        raise DynamicPanelError("The model needs at least one regressor.")
    if not gmm and not iv_terms:
        raise DynamicPanelError("No instruments: give at least one GMMStyle or IV-style instrument.")
    reg_parsed = [_parse_term(r) for r in regressors]
    ivs_parsed = [_parse_term(r) for r in iv_terms]
    base = sorted({outcome, *(v for v, _ in reg_parsed), *(v for v, _ in ivs_parsed), *(g.var for g in gmm)})
    _check_columns(df, [entity, time, *base])
    for c in base:
        if not pd.api.types.is_numeric_dtype(df[c]):
            raise DynamicPanelError(f"{c!r} is not numeric (dtype {df[c].dtype}).")
    if df.duplicated([entity, time]).any():
        raise DynamicPanelError(f"The panel is not uniquely indexed by ({entity}, {time}).")
    units, periods, A = _grid(df, base, entity, time)
    N, T = len(units), len(periods)
    system = method == "system"
    notes: list[str] = []

    max_lag = max([lag for _, lag in reg_parsed + ivs_parsed] + [0])
    if T < max_lag + 2:
        raise DynamicPanelError(
            f"Too few periods: the panel has {T} period(s) and the longest lag is {max_lag}, so the differenced "
            f"equation needs at least {max_lag + 2} periods."
        )

    Y = A[outcome]
    Xl = [_shift(A[v], lag) for v, lag in reg_parsed]  # levels, (N, T) each
    dY = Y - _shift(Y, 1)
    dXl = [x - _shift(x, 1) for x in Xl]
    ok_d = np.isfinite(dY) & np.all([np.isfinite(x) for x in dXl], axis=0)
    ok_l = np.isfinite(Y) & np.all([np.isfinite(x) for x in Xl], axis=0)
    ivl = [_shift(A[v], lag) for v, lag in ivs_parsed]
    for x in ivl:  # IV-style instruments must be observed where they are used
        ok_d &= np.isfinite(x) & np.isfinite(_shift(x, 1))
        ok_l &= np.isfinite(x)
    if not system:
        ok_l = np.zeros_like(ok_l)
    if not ok_d.any():
        raise DynamicPanelError(
            f"Too few periods: no unit has the outcome and every regressor in two consecutive periods with all "
            f"the lags ({T} periods, longest lag {max_lag}); the differenced equation is empty."
        )
    eq_periods = tuple(periods[np.where(ok_d.any(axis=0))[0]])
    R = 2 * T if system else T

    def stack(d_part: np.ndarray, l_part: np.ndarray) -> np.ndarray:
        d_part = np.where(ok_d, np.nan_to_num(d_part), 0.0)
        if not system:
            return d_part
        return np.concatenate([d_part, np.where(ok_l, np.nan_to_num(l_part), 0.0)], axis=1)

    names = list(regressors)
    cols = [stack(dx, x) for dx, x in zip(dXl, Xl, strict=True)]
    roles = ["regressor"] * len(cols)
    if system:
        names.append("_cons")
        cols.append(stack(np.zeros((N, T)), np.ones((N, T))))
        roles.append("constant")
    if time_effects:
        for t in range(1, T):
            d = np.zeros((N, T))
            d[:, t] = 1.0
            names.append(f"period[{periods[t]}]")
            cols.append(stack(d - _shift(d, 1), d))
            roles.append("dummy")
    X = np.stack(cols, axis=2)  # (N, R, K)
    y = stack(dY, Y)

    # Regressors: user terms must be independent; collinear dummies are dropped.
    flat = X.reshape(N * R, -1)
    keep = _independent(flat)
    bad = [names[j] for j in range(len(names)) if roles[j] != "dummy" and j not in keep]
    if bad:
        raise DynamicPanelError(
            f"Regressor(s) {', '.join(map(repr, bad))} have no variation in the "
            f"{'stacked' if system else 'differenced'} equation or are collinear with the others."
        )
    dropped = [names[j] for j in range(len(names)) if j not in keep]
    if dropped:
        notes.append(f"Dropped as collinear: {', '.join(dropped)}.")
    X = X[:, :, keep]
    names = [names[j] for j in keep]
    K = len(names)

    # Instruments
    zcols: list[np.ndarray] = []
    zlabels: list[str] = []
    for g in gmm:
        V = A[g.var]
        spread = np.nanmax(V, axis=0) - np.nanmin(V, axis=0) if np.isfinite(V).any() else np.zeros(T)
        if not np.any(np.nan_to_num(spread) > 0):
            raise DynamicPanelError(
                f"Instrument {g.label()}: {g.var!r} does not vary across units in any period, so its lags carry "
                "no information beyond the period effects."
            )
        top = T - 1 if g.max_lag is None else g.max_lag
        block: list[np.ndarray] = []
        blabels: list[str] = []
        lags = range(g.min_lag, top + 1)
        if collapse:
            for lag in lags:
                block.append(stack(_shift(V, lag), np.zeros((N, T))))
                blabels.append(f"L{lag}.{g.var}")
        else:
            for t in range(T):
                for lag in lags:
                    if t - lag < 0:
                        continue
                    d = np.zeros((N, T))
                    d[:, t] = np.nan_to_num(V[:, t - lag])
                    block.append(stack(d, np.zeros((N, T))))
                    blabels.append(f"L{lag}.{g.var}@{periods[t]}")
        if system:
            dV = V - _shift(V, 1)
            lv = _shift(dV, g.min_lag - 1) if g.min_lag >= 1 else dV
            if collapse:
                block.append(stack(np.zeros((N, T)), lv))
                blabels.append(f"L{max(g.min_lag - 1, 0)}.D.{g.var} (levels)")
            else:
                for t in range(T):
                    d = np.zeros((N, T))
                    d[:, t] = np.nan_to_num(lv[:, t])
                    block.append(stack(np.zeros((N, T)), d))
                    blabels.append(f"L{max(g.min_lag - 1, 0)}.D.{g.var}@{periods[t]} (levels)")
        nonzero = [j for j, c in enumerate(block) if np.any(c != 0)]
        if not nonzero:
            raise DynamicPanelError(
                f"Instrument {g.label()} yields no usable column: with {T} periods no lag from {g.min_lag} to "
                f"{top} of {g.var!r} is observed in a period of the estimating equation."
            )
        zcols += [block[j] for j in nonzero]
        zlabels += [blabels[j] for j in nonzero]
    for (v, lag), term in zip(ivs_parsed, iv_terms, strict=True):
        x = _shift(A[v], lag)
        zcols.append(stack(x - _shift(x, 1), x))
        zlabels.append(term)
    if system:
        zcols.append(stack(np.zeros((N, T)), np.ones((N, T))))
        zlabels.append("_cons (levels)")
    if time_effects:
        for t in range(1, T):
            d = np.zeros((N, T))
            d[:, t] = 1.0
            zcols.append(stack(d - _shift(d, 1), d))
            zlabels.append(f"period[{periods[t]}]")
    Z = np.stack(zcols, axis=2)
    zkeep = _independent(Z.reshape(N * R, -1))
    Z = Z[:, :, zkeep]
    zlabels = [zlabels[j] for j in zkeep]
    L = Z.shape[2]
    if L < K:
        raise DynamicPanelError(
            f"Underidentified: {L} usable instrument(s) for {K} coefficient(s) ({', '.join(names)}). Add lags or "
            "instruments, or use fewer regressors."
        )

    # H = M M' with M = [M_delta; I] (xtabond2 h(3)); rows of dropped observations are zero in Z.
    Md = np.eye(T) - np.eye(T, k=-1)
    M = np.vstack([Md, np.eye(T)]) if system else Md
    H = M @ M.T

    ZX = np.einsum("nrl,nrk->lk", Z, X)
    Zy = np.einsum("nrl,nr->l", Z, y)
    ZHZ = np.einsum("nrl,rs,nsm->lm", Z, H, Z)
    A1 = _pinv_note(ZHZ, "Z'HZ", notes)

    def solve(W):
        XZW = ZX.T @ W
        Minv = XZW @ ZX
        if np.linalg.matrix_rank(Minv) < K:
            raise DynamicPanelError(
                "The instruments do not identify the coefficients (X'Z W Z'X is singular): they are uncorrelated "
                "with, or collinear in, the regressors."
            )
        V = np.linalg.inv(Minv)
        return V @ XZW @ Zy, V, V @ XZW

    b1, Vb1, Mb1 = solve(A1)
    e1 = y - np.einsum("nrk,k->nr", X, b1)
    g1 = np.einsum("nrl,nr->nl", Z, e1)  # Z_i'e_i
    S1 = g1.T @ g1
    V1r = Mb1 @ S1 @ Mb1.T
    A2 = _pinv_note(S1, "The two-step weighting matrix (sum of Z_i'e_i e_i'Z_i)", notes)
    b2, V2, Mb2 = solve(A2)
    e2 = y - np.einsum("nrk,k->nr", X, b2)
    g2 = np.einsum("nrl,nr->nl", Z, e2)

    if steps == 1:
        beta, V, e, g, Mb, W = b1, V1r, e1, g1, Mb1, A1
    else:
        # Windmeijer (2005): D[:, j] = V2 X'Z A2 (sum_i Z_i'(x_ij e1_i' + e1_i x_ij')Z_i) A2 Z'e2
        Zx = np.einsum("nrl,nrk->nlk", Z, X)  # Z_i'x_ij
        ZE2 = A2 @ g2.sum(axis=0)
        D = np.empty((K, K))
        for j in range(K):
            dOmega = Zx[:, :, j].T @ g1 + g1.T @ Zx[:, :, j]
            D[:, j] = Mb2 @ dOmega @ ZE2
        V = V2 + D @ V2 + V2 @ D.T + D @ V1r @ D.T
        beta, e, g, Mb, W = b2, e2, g2, Mb2, A2

    se = np.sqrt(np.diag(V))
    params = pd.Series(beta, index=names, name="coef")
    std_errors = pd.Series(se, index=names, name="std_error")
    z = params / std_errors
    pvalues = pd.Series(2 * stats.norm.sf(np.abs(z)), index=names, name="pvalue")
    q = stats.norm.ppf(0.975)
    conf_int = pd.DataFrame({"lower": params - q * std_errors, "upper": params + q * std_errors})

    # Overidentification
    dfo = L - K
    if dfo > 0:
        G2 = g2.sum(axis=0)
        J = float(G2 @ A2 @ G2)
        hansen = TestStat("Hansen J", J, float(stats.chi2.sf(J, dfo)), dfo)
        ed = e[:, :T]  # residuals of the differenced equation
        n_d = int(ok_d.sum())
        sig2 = float((ed**2).sum()) / (2 * n_d) if not system else float((e[:, T:] ** 2).sum()) / max(int(ok_l.sum()), 1)
        G1 = g.sum(axis=0) if steps == 1 else g2.sum(axis=0)
        s = float(G1 @ A1 @ G1) / sig2
        sargan = TestStat("Sargan", s, float(stats.chi2.sf(s, dfo)), dfo)
    else:
        why = "exactly identified: no overidentifying restrictions to test"
        hansen = TestStat("Hansen J", float("nan"), float("nan"), 0, why)
        sargan = TestStat("Sargan", float("nan"), float("nan"), 0, why)

    # Arellano-Bond AR(m) on the differenced residuals
    ed = e[:, :T]
    Xd = X[:, :T, :]
    ar = {}
    for m in (1, 2):
        w = np.zeros_like(ed)
        w[:, m:] = ed[:, :-m]
        w = np.where(ok_d, w, 0.0)
        if not np.any((w != 0) & (ed != 0)):
            why = (
                f"not computable: no unit has differenced residuals {m} periods apart "
                f"(the differenced equation has {len(eq_periods)} period(s): {', '.join(map(str, eq_periods))})"
            )
            ar[m] = TestStat(f"AR({m})", float("nan"), float("nan"), None, why)
            notes.append(f"AR({m}) {why}.")
            continue
        we = (w * ed).sum(axis=1)  # per unit
        d0 = float(we.sum())
        d1 = float((we**2).sum())
        wX = np.einsum("nr,nrk->k", w, Xd)
        Zew = (g * we[:, None]).sum(axis=0)  # sum_i Z_i'e_i (e_i'w_i)
        d2 = -2.0 * float(wX @ Mb @ Zew)
        d3 = float(wX @ V @ wX)
        zstat = d0 / np.sqrt(d1 + d2 + d3)
        ar[m] = TestStat(f"AR({m})", float(zstat), float(2 * stats.norm.sf(abs(zstat))))

    return GMMResult(
        method=method,
        steps=steps,
        collapse=collapse,
        outcome=outcome,
        params=params,
        std_errors=std_errors,
        pvalues=pvalues,
        conf_int=conf_int,
        cov=pd.DataFrame(V, index=names, columns=names),
        nobs=int(ok_d.sum()),
        n_units=int(ok_d.any(axis=1).sum()),
        n_instruments=L,
        periods=eq_periods,
        ar=ar,
        hansen=hansen,
        sargan=sargan,
        instruments=tuple(zlabels),
        notes=tuple(notes),
    )


def nickell_bias(rho: float, T: int) -> float:
    """Leading term of the within estimator's bias for an AR(1) coefficient, -(1+rho)/(T-1) (Nickell 1981).

    ``T`` is the number of periods in the within regression (after losing one to the lag).
    """
    if T < 2:
        raise DynamicPanelError(f"The Nickell approximation needs T >= 2 periods, not {T}.")
    return -(1.0 + rho) / (T - 1)


def dynamic_pair(
    df: pd.DataFrame,
    outcome: str,
    density: str = "assn_per_1k",
    direction: str = "forward",
    method: str = "difference",
    steps: int = 2,
    collapse: bool = True,
    entity: str = "fips",
    time: str = "year",
) -> GMMResult:
    """The chapter's dynamic model in one direction.

    ``forward``: :math:`y_{it} = \\rho y_{i,t-1} + \\beta x_{i,t-1} + \\delta_t + \\mu_i + \\varepsilon_{it}`;
    ``reverse``: the same with the roles of density :math:`x` and outcome :math:`y` swapped.
    Both lagged variables are treated as endogenous: instruments are their levels two or more
    waves back (and, for system GMM, their lagged differences in the level equation).
    """
    dep, other = {"forward": (outcome, density), "reverse": (density, outcome)}[direction]
    return fit_gmm(
        df,
        dep,
        [f"L1.{dep}", f"L1.{other}"],
        gmm=[GMMStyle(dep, 2, None), GMMStyle(other, 2, None)],
        method=method,
        steps=steps,
        collapse=collapse,
        entity=entity,
        time=time,
    )


__all__.append("dynamic_pair")

CHAPTER_OUTCOMES = ("unemployment_rate", "poverty_rate", "child_poverty_rate", "log_median_hh_income")


def bench_gmm(df: pd.DataFrame, outcomes=CHAPTER_OUTCOMES) -> float:
    """Seconds taken by the chapter's GMM fits (both directions, difference and system, two steps, collapsed)."""
    t0 = _time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for y in outcomes:
            for direction in ("forward", "reverse"):
                for method in ("difference", "system"):
                    dynamic_pair(df, y, direction=direction, method=method)
    return _time.perf_counter() - t0


def direction_plot(table: pd.DataFrame, ax=None, labels: dict | None = None):
    """Standardised coefficients of both directions with 95% intervals, one row per outcome.

    ``table`` is a :func:`direction_table`; forward (density -> later outcome) and reverse
    (outcome -> later density) are drawn side by side for each outcome. Returns the Figure.
    """
    from analysis import plots

    if ax is None:
        fig, ax = plots.subplots(figsize=(7, 4.2))
    else:
        fig = ax.figure
    outcomes = list(dict.fromkeys(table.index.get_level_values("outcome")))
    labels = labels or {}
    ypos = np.arange(len(outcomes))[::-1]
    styles = {"forward": ("C0", "o", 0.12, "density → later outcome"), "reverse": ("C3", "s", -0.12, "outcome → later density")}
    for direction, (color, marker, off, label) in styles.items():
        sub = table.xs(direction, level="direction").loc[outcomes]
        ax.hlines(ypos + off, sub["std_low"], sub["std_high"], color=color, linewidth=2)
        ax.plot(sub["std_coef"], ypos + off, marker, color=color, label=label, zorder=3)
    ax.axvline(0, color="0.4", linestyle="--", linewidth=1)
    ax.set_yticks(ypos)
    ax.set_yticklabels([labels.get(o, o) for o in outcomes])
    ax.set_xlabel("Standardised coefficient (within-county SDs per within-county SD), 95% CI")
    ax.legend(frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=9)
    fig.tight_layout()
    return fig


__all__.append("direction_plot")


# --------------------------------------------------------------------------------------
# Power and policy units of the direction designs (hypotheses addition A1)
# --------------------------------------------------------------------------------------

#: Sign of a coefficient that means "better" for each wave outcome (the thesis's direction).
THESIS_SIGN: dict[str, int] = {
    "unemployment_rate": -1,
    "poverty_rate": -1,
    "child_poverty_rate": -1,
    "log_median_hh_income": 1,
}


def pooled_gradients(df: pd.DataFrame, outcomes=CHAPTER_OUTCOMES, regressor: str = "assn_per_1k") -> pd.Series:
    """The pooled cross-county gradient of each outcome on ``regressor``: Chapter 3's pooled OLS with
    year effects, SEs clustered by county, on the outcome's balanced sample
    (:func:`analysis.between_within.chapter3_specs` and :func:`~analysis.between_within.balanced_sample`),
    in outcome units per unit of ``regressor``."""
    from analysis.between_within import balanced_sample, chapter3_specs

    out = {}
    for y in outcomes:
        sample, _ = balanced_sample(df, y, regressor)
        r = fit(chapter3_specs(y, regressor)["pooled"], sample)
        out[y] = float(r.params[regressor])
    return pd.Series(out, name="pooled_gradient")


def policy_frame(estimates: pd.DataFrame, gradients: pd.Series, population: float,
                 thesis_sign: dict[str, int] | None = None, relevant_share: float = 0.25) -> pd.DataFrame:
    """Each slope in policy units (:func:`analysis.policy.policy_units`), one row per index entry.

    ``estimates`` has columns ``outcome``, ``estimate`` and ``se`` (per organisation per 1,000
    residents; any index); ``gradients`` the pooled gradient of each outcome; ``population`` the
    reference county for "ten more organisations". Columns: ``estimate``, ``se``, ``mde`` (80%
    power, 5% two-sided), ``mde_per_ten``, ``edge`` (the 90% interval's end in the thesis's
    direction: every effect beyond it is ruled out), ``edge_per_ten``, ``edge_share`` and
    ``mde_share`` (as shares of the pooled gradient) and ``reading`` (A1: "ruled out" when the
    interval excludes every effect of at least ``relevant_share`` of the gradient in the
    thesis's direction, else "not identified"). Where the pooled gradient itself has the sign
    opposite to the thesis (median income: denser counties are poorer) no effect "of policy
    interest" can be defined as a share of it: the share columns are NaN and ``reading`` says so.
    """
    from analysis.policy import policy_units

    thesis_sign = thesis_sign or THESIS_SIGN
    rows = []
    for idx, r in estimates.iterrows():
        y = r["outcome"]
        sign, grad = thesis_sign[y], float(gradients[y])
        u = policy_units(float(r["estimate"]), float(r["se"]), thesis_sign=sign, pooled_gradient=grad,
                         population=population, relevant_share=relevant_share)
        aligned = np.sign(grad) == sign
        rows.append({
            "estimate": u.estimate, "se": u.std_error, "mde": u.mde, "mde_per_ten": u.mde_per_ten,
            "edge": u.ruled_out_beyond, "edge_per_ten": u.ruled_out_per_ten,
            "edge_share": u.ruled_out_share_of_gradient if aligned else np.nan,
            "mde_share": u.mde_share_of_gradient if aligned else np.nan,
            "reading": u.reading if aligned else "gradient of the wrong sign",
        })
    return pd.DataFrame(rows, index=estimates.index)


# --------------------------------------------------------------------------------------
# Annual income around the waves (issue 13): more than four time points of the outcome
# --------------------------------------------------------------------------------------


def income_growth_panel(
    waves: pd.DataFrame,
    income: pd.DataFrame,
    horizon: int = 5,
    outcome: str = "log_pcpi_rel_us",
    entity: str = "fips",
    time: str = "year",
) -> pd.DataFrame:
    r"""The wave panel with the growth of annual income around each wave.

    Adds ``income_level`` (``outcome`` in the wave year), ``income_growth_next``
    :math:`= y_{i,t+h} - y_{it}` and ``income_growth_past`` :math:`= y_{it} - y_{i,t-h}` (log
    points; :math:`h` = ``horizon`` calendar years, :math:`t` the wave year) from the annual
    ``income`` panel (BEA per-capita personal income relative to the US, ``log_pcpi_rel_us``).
    Counties that BEA publishes only inside a combination area (most of Virginia's independent
    cities and their counties) have no county row and get missing values.
    """
    _check_columns(waves, [entity, time])
    _check_columns(income, [entity, time, outcome])
    inc = income[[entity, time, outcome]].dropna().set_index([entity, time])[outcome]
    if inc.index.duplicated().any():
        raise DynamicPanelError(f"The income panel is not uniquely indexed by ({entity}, {time}).")

    def at(offset: int) -> np.ndarray:
        keys = pd.MultiIndex.from_arrays([waves[entity].to_numpy(), waves[time].to_numpy() + offset])
        return inc.reindex(keys).to_numpy(dtype=float)

    out = waves.copy()
    now = at(0)
    out["income_level"] = now
    out["income_growth_next"] = at(horizon) - now
    out["income_growth_past"] = now - at(-horizon)
    return out


@dataclass(frozen=True)
class GrowthFit:
    """One income-growth regression: the coefficient on ``regressor`` (``coef``, ``se``, ``p`` with t on
    G-1 df, county clusters), its standardised value ``std_coef`` (SDs of the dependent variable per SD
    of the regressor, both net of county and year means), ``nobs`` and ``n_units``."""

    direction: str
    dependent: str
    regressor: str
    controls: tuple[str, ...]
    effects: str
    coef: float
    se: float
    p: float
    std_coef: float
    nobs: int
    n_units: int


GROWTH_EFFECTS: dict[str, str] = {"unit+time": "year", "state-by-year": "_state_year"}


def income_growth_models(
    panel: pd.DataFrame,
    density: str = "assn_per_1k",
    effects: str = "unit+time",
    entity: str = "fips",
    time: str = "year",
    state: str = "state_fips",
) -> dict[str, GrowthFit]:
    r"""Both directions with annual income around the waves (see :func:`income_growth_panel`).

    * forward: :math:`g^{next}_{it} = \beta x_{it} + \rho\, g^{past}_{it} + \alpha_i + \delta_t + u_{it}`:
      does density at a wave predict the next five years' income growth, beyond the past five?
    * reverse: :math:`x_{it} = \gamma\, g^{past}_{it} + \phi x_{i,t-1} + \alpha_i + \delta_t + u_{it}`:
      does the past five years' income growth predict density, beyond last wave's density?

    County effects and year (``effects="unit+time"``) or state-by-year effects
    (``"state-by-year"``), SEs clustered by county (CR1). Estimated with pyfixest ``feols``
    (absorbing both sets of effects by alternating projections: the book's
    :func:`analysis.estimation.fit` builds state-by-year dummies, which takes seconds a fit here);
    ``tests/test_dynamic.py`` checks it against :func:`~analysis.estimation.fit` with both effects.
    The lagged own value makes each direction a Granger-type test, with the Nickell bias of a
    short panel (the waves' five-year windows also overlap: the growth after the 2009 wave is the
    growth before the 2014 wave).
    """
    import pyfixest as pf

    if effects not in GROWTH_EFFECTS:
        raise DynamicPanelError(f"effects must be one of {', '.join(map(repr, GROWTH_EFFECTS))}, not {effects!r}.")
    _check_columns(panel, [entity, time, state, density, "income_growth_next", "income_growth_past"])
    d = add_lags(panel, [density], lags=(1,), entity=entity, time=time)
    d["_state_year"] = d[state].astype(str) + "_" + d[time].astype(str)
    fe2 = GROWTH_EFFECTS[effects]
    specs = {
        "forward": ("income_growth_next", density, ("income_growth_past",)),
        "reverse": (density, "income_growth_past", (lag_name(density, 1),)),
    }
    out = {}
    for direction, (dep, reg, ctl) in specs.items():
        cols = [dep, reg, *ctl]
        sample = d.dropna(subset=cols)
        # singletons kept (fixef_rm="none"), as the book's estimator keeps them: same sample, same CR1
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The inplace keyword")  # pyfixest under pandas 3
            m = pf.feols(f"{dep} ~ {' + '.join([reg, *ctl])} | {entity} + {fe2}", data=sample,
                         vcov={"CRV1": entity}, fixef_rm="none")
        tidy = m.tidy()
        resid = within_transform(sample, [dep, reg], absorb="unit+time", entity=entity, time=time)
        b = float(tidy.loc[reg, "Estimate"])
        out[direction] = GrowthFit(
            direction=direction, dependent=dep, regressor=reg, controls=ctl, effects=effects, coef=b,
            se=float(tidy.loc[reg, "Std. Error"]), p=float(tidy.loc[reg, "Pr(>|t|)"]),
            std_coef=b * float(resid[reg].std()) / float(resid[dep].std()),
            nobs=int(m._N), n_units=int(sample[entity].nunique()),
        )
    return out


def income_growth_table(panel: pd.DataFrame, densities=("assn_per_1k",), effects=("unit+time", "state-by-year"),
                        entity: str = "fips", time: str = "year") -> pd.DataFrame:
    """:func:`income_growth_models` for each density and effects, one row per (density, effects,
    direction) with the fields of :class:`GrowthFit`."""
    rows = []
    for dens in densities:
        for eff in effects:
            for direction, g in income_growth_models(panel, dens, eff, entity, time).items():
                rows.append({"density": dens, "effects": eff, "direction": direction, "regressor": g.regressor,
                             "coef": g.coef, "se": g.se, "p": g.p, "std_coef": g.std_coef, "nobs": g.nobs,
                             "n_units": g.n_units})
    return pd.DataFrame(rows).set_index(["density", "effects", "direction"])


__all__ += [
    "GROWTH_EFFECTS",
    "THESIS_SIGN",
    "GrowthFit",
    "income_growth_models",
    "income_growth_panel",
    "income_growth_table",
    "policy_frame",
    "pooled_gradients",
]
