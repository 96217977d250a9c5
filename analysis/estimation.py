r"""Panel estimation: a declarative :class:`ModelSpec` in, one :class:`PanelResult` out.

A chapter states *what* it estimates::

    spec = ModelSpec(outcome="unemployment_rate", regressors=("assn_per_1k",),
                     controls=("log_median_hh_income",), estimator="twfe",
                     cov="cluster-unit")
    result = fit(spec, panel)

and :func:`fit` checks the specification against the data (raising
:class:`SpecificationError` *before* anything is estimated), builds the design and calls
linearmodels. The results of every estimator have the same type, so tables, plots and
tests need not know which estimator made them.

Estimators (``ModelSpec.estimator``)
------------------------------------
Unit :math:`i` (``entity``, a county), period :math:`t` (``time``, a wave), regressors of
interest and controls stacked in :math:`x_{it}`.

``"pooled"``  pooled OLS, :math:`y_{it} = \alpha + x_{it}'\beta [+ \delta_t] + u_{it}`
    (linearmodels ``PooledOLS``).
``"between"`` between OLS on the unit means,
    :math:`\bar y_i = \alpha + \bar x_i'\beta + \bar u_i`, one (unweighted) observation per
    unit (``BetweenOLS``).
``"fe"``      within (fixed-effects) estimator,
    :math:`y_{it} = x_{it}'\beta + \alpha_i [+ \delta_t \text{ or } \delta_{s(i)t}] + u_{it}`:
    OLS of :math:`y_{it}-\bar y_i` on :math:`x_{it}-\bar x_i` (``PanelOLS`` with
    ``entity_effects=True``).
``"twfe"``    two-way fixed effects, the same as ``"fe"`` with ``effects="unit+time"``
    (or ``"state-by-year"``).
``"re"``      random effects, :math:`y_{it} = \alpha + x_{it}'\beta [+ \delta_t] + c_i + u_{it}`
    with :math:`c_i` uncorrelated with :math:`x`, by feasible GLS: OLS of
    :math:`y_{it}-\theta_i\bar y_i` on :math:`x_{it}-\theta_i\bar x_i`,
    :math:`\theta_i = 1-\sqrt{\sigma^2_u/(T_i\sigma^2_c+\sigma^2_u)}`, with the Swamy-Arora
    variance components: :math:`\hat\sigma^2_u` = within SSR / (n - N - rank of the
    within regressors); in a balanced panel :math:`\hat\sigma^2_c` = between SSR /
    (N - rank of the between regressors) - :math:`\hat\sigma^2_u/T`, truncated at 0; in an
    unbalanced panel the Baltagi-Chang (1994) extension, which weights units by
    :math:`T_i` (``RandomEffects(...).fit(small_sample=True)``; plm's
    ``random.method="swar"`` in both cases).
``"fd"``      first differences, :math:`\Delta y_{it} = \Delta x_{it}'\beta [+ \Delta\delta_t]
    + \Delta u_{it}` between consecutive periods of the panel's time index; a missing wave
    breaks the difference (``FirstDifferenceOLS``). No intercept, unless ``effects="time"``
    adds period intercepts. (R's plm adds an intercept by default, which is a linear trend
    in levels; add a trend as a control to reproduce it.)
``"cre"``     correlated random effects (Mundlak 1978),
    :math:`y_{it} = \alpha + x_{it}'\beta + \bar x_i'\gamma [+ \delta_t] + c_i + u_{it}`,
    estimated by RE (Swamy-Arora), with the unit means (over the estimation sample) of
    every regressor and control that varies within units. :math:`\hat\beta` equals the
    within estimator; time-invariant regressors keep a coefficient; :math:`\gamma = 0` is
    the Mundlak test (:func:`mundlak_test`). In an unbalanced panel the unit means of the
    period dummies are added as well (Wooldridge 2019).

Effects (``ModelSpec.effects``)
-------------------------------
``"none"``; ``"unit"`` (absorbed unit effects :math:`\alpha_i`); ``"time"`` (period
dummies :math:`\delta_t`, first period omitted); ``"unit+time"``; ``"state-by-year"``
(unit effects plus state-by-period dummies :math:`\delta_{s(i)t}`, the first period of
each state omitted, since the unit effects absorb a state level). Period and
state-by-period effects are entered as dummy variables and unit effects are absorbed;
see "Small-sample corrections" for why. Allowed combinations: see ``ALLOWED_EFFECTS``;
``None`` takes the estimator's default (``DEFAULT_EFFECTS``).

Covariances (``ModelSpec.cov``)
-------------------------------
:math:`\tilde X` is the transformed design (demeaned, quasi-demeaned, differenced or
averaged), :math:`e` its residuals, :math:`n` its rows, and :math:`K` the number of
estimated coefficients (constant, dummies, regressors) plus, where counted, the
:math:`N-1` absorbed unit effects.

``"classical"``   :math:`s^2(\tilde X'\tilde X)^{-1}`, :math:`s^2 = e'e/(n-K)` with the unit
    effects counted (the textbook within estimator; Stata ``xtreg, fe``). For ``re`` and
    ``cre`` the same formula on the quasi-demeaned data, as plm and Baltagi (2013) print.
``"robust"``      White/HC1: :math:`(\tilde X'\tilde X)^{-1}\sum_{it} e_{it}^2\tilde x_{it}
    \tilde x_{it}'(\tilde X'\tilde X)^{-1}\cdot n/(n-K)`, unit effects counted. Not robust
    to serial correlation within units; prefer a clustered covariance in panels.
``"cluster-unit"``, ``"cluster-state"``   CR1 (Liang-Zeger):
    :math:`(\tilde X'\tilde X)^{-1}\sum_g \tilde X_g'e_ge_g'\tilde X_g(\tilde X'\tilde X)^{-1}
    \cdot \frac{G}{G-1}\frac{n-1}{n-K}`, where absorbed unit effects that are nested in the
    clusters (units in unit clusters, counties in state clusters) are *not* counted in
    :math:`K` (linearmodels ``debiased=True, group_debias=True, auto_df=True``). This is
    Stata's ``xtreg, fe vce(cluster)`` and the default of fixest and pyfixest
    (``ssc(k_adj=True, k_fixef="nonnested", G_adj=True)``).
``"cluster-twoway"``  Cameron-Gelbach-Miller: :math:`V_{unit}+V_{time}-V_{unit\cap time}`,
    each one-way CR1 with its own :math:`G/(G-1)`, unit effects counted (they are not
    nested in the time clusters): pyfixest ``ssc(k_fixef="full", G_df="conventional")``.
    With four waves there are four time clusters: the time dimension of this covariance is
    then estimated from four sums and is not reliable. The sum need not be positive
    semi-definite; a negative variance (typically of a period dummy) gives a NaN standard
    error, with a warning if it is a regressor's.
``"driscoll-kraay"``  Driscoll-Kraay (1998):
    :math:`(\tilde X'\tilde X)^{-1}\hat S(\tilde X'\tilde X)^{-1}\cdot n/(n-K)`,
    :math:`\hat S = \sum_{|j|\le L} w_j\hat\Gamma_j` of the period sums
    :math:`h_t=\sum_i \tilde x_{it}e_{it}`, :math:`w_j` from ``kernel`` (Bartlett:
    :math:`1-|j|/(L+1)`), :math:`L` = ``bandwidth`` (default
    :math:`\lfloor 4(T/100)^{2/9}\rfloor`). Robust to cross-sectional and serial
    correlation, but its asymptotics are in :math:`T`: with a handful of waves it is not
    credible.

Weights (``ModelSpec.weights``)
-------------------------------
``None`` (the default): ordinary least squares. A column name: weighted least squares with
that column as analytic weights :math:`w_{it} > 0` (linearmodels ``weights=``, pyfixest
``feols(weights=...)``): each estimator minimises :math:`\sum w_{it}\tilde u_{it}^2`, the
within transformation subtracts *weighted* unit means, and every covariance is the sandwich of
the :math:`\sqrt{w}`-scaled data (so a clustered score is :math:`\sum_{it\in g} w_{it}\tilde
x_{it}e_{it}`); :math:`n` and :math:`K` still count rows, as fixest does. Available for
``pooled``, ``fe``, ``twfe`` and ``fd`` (with ``fd`` the difference between :math:`t-1` and
:math:`t` gets the weight :math:`1/(1/w_{t-1}+1/w_t)`, linearmodels' rule, which is
proportional to :math:`w_i` when the weight is constant within a unit). A missing weight drops
the row; a zero, negative or infinite one is an error. The book weights counties by their mean
population over the waves (time-invariant, see :mod:`analysis.multiverse`); weights that move
within a county would move with the denominator of density.

Small-sample corrections and inference
--------------------------------------
Every covariance is ``debiased`` (:math:`n/(n-K)`); clustered ones also get
:math:`G/(G-1)\cdot(n-1)/n`. Unit effects are absorbed
and period (or state-by-period) effects are dummies, so that linearmodels counts the
period effects in :math:`K` and leaves out the unit effects exactly when they are nested
in the clusters, which reproduces the fixest/pyfixest default ``ssc()`` for one-way
clustering. (With absorbed unit *and* period effects linearmodels would count both, which
is pyfixest's ``k_fixef="full"``; with four waves and ~3,100 counties that inflates
clustered standard errors by about 15%.) The differences from fixest/pyfixest are in the
count of state-by-period effects under ``effects="state-by-year"``: here they are counted
exactly, as :math:`S(T-1)` dummies; pyfixest counts :math:`ST` levels with unit clusters
(a negligible difference) and none with state clusters, since they are nested in the
states, so that with ``cov="cluster-state"`` ours are slightly conservative (by 0.6% on a
standard error in the county panel: 49 states, 4 waves). The coefficients are identical.

p-values and confidence intervals use Student's t with :math:`G-1` degrees of freedom for
clustered covariances (smallest :math:`G` for two-way; as Stata and fixest) and with the
residual degrees of freedom of the transformed regression otherwise (plm and Stata print
z-values for RE; with hundreds of degrees of freedom the two agree to the printed digits).

References: Baltagi (2013) *Econometric Analysis of Panel Data*, 5th ed.; Wooldridge
(2010) *Econometric Analysis of Cross Section and Panel Data*, 2nd ed., ch. 10;
Mundlak (1978) *Econometrica* 46(1); Cameron, Gelbach & Miller (2011) *JBES* 29(2);
Driscoll & Kraay (1998) *REStat* 80(4); Wooldridge (2019) *J. Econometrics* 211(1).
"""

from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "ALLOWED_COV",
    "ALLOWED_EFFECTS",
    "COV_TYPES",
    "DEFAULT_COV",
    "DEFAULT_EFFECTS",
    "EFFECTS",
    "ESTIMATORS",
    "KERNELS",
    "ModelSpec",
    "PanelResult",
    "SpecificationError",
    "TestResult",
    "VarianceDecomposition",
    "effect_sizes",
    "fit",
    "hausman",
    "mundlak_test",
    "validate",
    "variance_decomposition",
    "within_transform",
]

ESTIMATORS: dict[str, str] = {
    "pooled": "Pooled OLS",
    "between": "Between",
    "fe": "Fixed effects (within)",
    "twfe": "Two-way fixed effects",
    "re": "Random effects (Swamy-Arora)",
    "fd": "First differences",
    "cre": "Correlated random effects (Mundlak)",
}
EFFECTS: dict[str, str] = {
    "none": "no effects",
    "unit": "unit effects",
    "time": "period effects",
    "unit+time": "unit and period effects",
    "state-by-year": "unit and state-by-period effects",
}
COV_TYPES: dict[str, str] = {
    "classical": "Classical",
    "robust": "Robust (HC1)",
    "cluster-unit": "Clustered by unit",
    "cluster-state": "Clustered by state",
    "cluster-twoway": "Clustered by unit and period",
    "driscoll-kraay": "Driscoll-Kraay",
}
# Our kernel names -> linearmodels' names.
KERNELS: dict[str, str] = {
    "bartlett": "bartlett",
    "parzen": "parzen",
    "quadratic-spectral": "qs",
}
ALLOWED_EFFECTS: dict[str, tuple[str, ...]] = {
    "pooled": ("none", "time"),
    "between": ("none",),
    "fe": ("unit", "unit+time", "state-by-year"),
    "twfe": ("unit+time", "state-by-year"),
    "re": ("none", "time"),
    "fd": ("none", "time"),
    "cre": ("none", "time"),
}
DEFAULT_EFFECTS: dict[str, str] = {
    "pooled": "none",
    "between": "none",
    "fe": "unit",
    "twfe": "unit+time",
    "re": "none",
    "fd": "none",
    "cre": "none",
}
_ALL_COV = tuple(COV_TYPES)
ALLOWED_COV: dict[str, tuple[str, ...]] = {
    "pooled": _ALL_COV,
    # one observation per unit: a unit cluster is a single row, and there is no time axis
    "between": ("classical", "robust", "cluster-state"),
    "fe": _ALL_COV,
    "twfe": _ALL_COV,
    "re": _ALL_COV,
    # linearmodels needs clusters that are constant across a difference, so no time clusters
    "fd": ("classical", "robust", "cluster-unit", "cluster-state", "driscoll-kraay"),
    "cre": _ALL_COV,
}
# Clustered by unit wherever a unit has several rows; the between regression has one row per unit.
DEFAULT_COV: dict[str, str] = {e: ("robust" if e == "between" else "cluster-unit") for e in ESTIMATORS}
_UNIT_EFFECT_ESTIMATORS = ("fe", "twfe")
# Weighted least squares is reference-checked against pyfixest for these (tests/test_crosslibrary_pyfixest.py).
_WEIGHTED_ESTIMATORS = ("pooled", "fe", "twfe", "fd")
_CONSTANT = "const"


class SpecificationError(ValueError):
    """A model specification that cannot be estimated on the data; raised before fitting."""


def _suggest(name: str, options) -> str:
    close = difflib.get_close_matches(name, [str(o) for o in options], n=5, cutoff=0.5)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def _check_option(value, allowed, what: str) -> None:
    if value not in allowed:
        raise SpecificationError(
            f"Unknown {what} {value!r}; expected one of {', '.join(map(repr, allowed))}."
            + _suggest(str(value), allowed)
        )


def _as_names(value, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    try:
        names = tuple(value)
    except TypeError:
        raise SpecificationError(f"{what} must be a column name or a tuple of names, not {value!r}.") from None
    for n in names:
        if not isinstance(n, str):
            raise SpecificationError(f"{what} must be column names (str); got {n!r}.")
    return names


@dataclass(frozen=True)
class ModelSpec:
    """A panel regression, declared: what to estimate, not how.

    Parameters
    ----------
    outcome : column of the dependent variable.
    regressors : the regressors of interest (a name or a tuple of names); tables and
        effect sizes report these.
    controls : further regressors (a name or a tuple of names).
    estimator : one of ``ESTIMATORS`` (see the module docstring for each model).
    effects : one of ``EFFECTS`` allowed for the estimator (``ALLOWED_EFFECTS``); ``None``
        for the estimator's default (``DEFAULT_EFFECTS``).
    cov : one of ``COV_TYPES`` allowed for the estimator (``ALLOWED_COV``); ``None`` for the
        estimator's default (``DEFAULT_COV``: ``"cluster-unit"``, ``"robust"`` for between).
    kernel, bandwidth : Driscoll-Kraay kernel (``KERNELS``) and bandwidth in periods
        (``None``: :math:`\\lfloor 4(T/100)^{2/9}\\rfloor`); used only by that covariance.
    weights : ``None`` (OLS) or a column of positive analytic weights (weighted least
        squares; ``pooled``, ``fe``, ``twfe`` and ``fd`` only; see "Weights" in the module
        docstring).
    entity, time, state : the unit, period and state columns (a state column is needed
        only by ``effects="state-by-year"`` and ``cov="cluster-state"``).

    Option values are checked on construction; the data are checked by :func:`validate`.
    """

    outcome: str
    regressors: tuple[str, ...]
    controls: tuple[str, ...] = ()
    estimator: str = "twfe"
    effects: str | None = None
    cov: str | None = None
    kernel: str = "bartlett"
    bandwidth: float | None = None
    entity: str = "fips"
    time: str = "year"
    state: str = "state_fips"
    weights: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "regressors", _as_names(self.regressors, "regressors"))
        object.__setattr__(self, "controls", _as_names(self.controls, "controls"))
        _check_option(self.estimator, ESTIMATORS, "estimator")
        if self.effects is None:
            object.__setattr__(self, "effects", DEFAULT_EFFECTS[self.estimator])
        _check_option(self.effects, EFFECTS, "effects")
        if self.effects not in ALLOWED_EFFECTS[self.estimator]:
            raise SpecificationError(
                f"effects={self.effects!r} is not available with estimator={self.estimator!r}; "
                f"allowed: {', '.join(map(repr, ALLOWED_EFFECTS[self.estimator]))}."
            )
        if self.cov is None:
            object.__setattr__(self, "cov", DEFAULT_COV[self.estimator])
        _check_option(self.cov, COV_TYPES, "cov")
        if self.cov not in ALLOWED_COV[self.estimator]:
            raise SpecificationError(
                f"cov={self.cov!r} is not available with estimator={self.estimator!r}; "
                f"allowed: {', '.join(map(repr, ALLOWED_COV[self.estimator]))}."
            )
        _check_option(self.kernel, KERNELS, "kernel")
        if self.weights is not None:
            if not isinstance(self.weights, str):
                raise SpecificationError(f"weights must be a column name (str) or None, not {self.weights!r}.")
            if self.estimator not in _WEIGHTED_ESTIMATORS:
                raise SpecificationError(
                    f"weights are not available with estimator={self.estimator!r}; allowed with "
                    f"{', '.join(map(repr, _WEIGHTED_ESTIMATORS))}."
                )
        bw = self.bandwidth
        if bw is not None and not (isinstance(bw, (int, float)) and not isinstance(bw, bool) and 0 <= bw < np.inf):
            raise SpecificationError(f"bandwidth must be a non-negative number or None, not {self.bandwidth!r}.")
        if not isinstance(self.outcome, str):
            raise SpecificationError(f"outcome must be a column name (str), not {self.outcome!r}.")
        if not self.regressors:
            raise SpecificationError("A specification needs at least one regressor of interest.")
        names = (self.outcome, *self.regressors, *self.controls)
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise SpecificationError(
                f"{', '.join(map(repr, dup))} appear(s) more than once among outcome, regressors and controls."
            )
        ids = {self.entity, self.time} | ({self.state} if self._needs_state else set())
        if self.weights is not None and self.weights in ids:
            raise SpecificationError(f"weights {self.weights!r} is an index column (entity/time/state).")
        clash = ids.intersection(names)
        if clash:
            raise SpecificationError(
                f"{', '.join(map(repr, sorted(clash)))} is an index column (entity/time/state) and cannot be "
                "the outcome, a regressor or a control."
            )

    @property
    def variables(self) -> tuple[str, ...]:
        """Regressors of interest, then controls."""
        return (*self.regressors, *self.controls)

    @property
    def has_unit_effects(self) -> bool:
        """True if unit effects are absorbed (within transformation)."""
        return self.estimator in _UNIT_EFFECT_ESTIMATORS

    @property
    def has_time_effects(self) -> bool:
        """True if the model has period (or state-by-period) effects."""
        return self.effects in ("time", "unit+time", "state-by-year")

    @property
    def _needs_state(self) -> bool:
        return self.effects == "state-by-year" or self.cov == "cluster-state"

    def replace(self, **changes) -> ModelSpec:
        """A copy with some fields changed; a new ``estimator`` resets ``effects`` and ``cov`` to
        its defaults unless they are given too."""
        if "estimator" in changes:
            changes.setdefault("effects", None)
            changes.setdefault("cov", None)
        return replace(self, **changes)


# --------------------------------------------------------------------------------------
# Validation and design
# --------------------------------------------------------------------------------------


@dataclass
class _Design:
    y: pd.Series
    X: pd.DataFrame
    roles: dict[str, str]
    sample: pd.DataFrame  # estimation sample in levels, sorted by (entity, time)
    n_dropped: int
    clusters: pd.DataFrame | None = None
    weights: pd.Series | None = None


def _frame_with_ids(spec: ModelSpec, df: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise SpecificationError(f"The data must be a pandas DataFrame, not {type(df).__name__}.")
    need_ids = [spec.entity, spec.time]
    if any(c not in df.columns for c in need_ids) and all(
        c in df.columns or c in (df.index.names or []) for c in need_ids
    ):
        df = df.reset_index()
    return df


def _unknown_variable(name: str, role: str, columns) -> SpecificationError:
    close = difflib.get_close_matches(name, [str(c) for c in columns], n=5, cutoff=0.5)
    hint = (
        f" Close matches: {', '.join(map(repr, close))}."
        if close
        else f" Available columns: {', '.join(map(repr, list(columns)[:30]))}{' ...' if len(columns) > 30 else ''}."
    )
    return SpecificationError(f"Unknown variable {name!r} ({role}): it is not a column of the data.{hint}")


def _period_positions(sample: pd.DataFrame, time: str) -> np.ndarray:
    levels = np.sort(sample[time].unique())
    return np.searchsorted(levels, sample[time].to_numpy())


def validate(spec: ModelSpec, df: pd.DataFrame) -> pd.DataFrame:
    """Check ``spec`` against ``df`` and return the estimation sample (levels, sorted).

    Raises :class:`SpecificationError` for: an unknown variable (named, with close
    matches), a non-numeric variable, a missing state column when the specification needs
    one, missing or duplicated (entity, time) keys (with examples), an infinite value
    (``inf`` or ``-inf``) in the outcome, a regressor or a control (with the first rows), an
    empty sample, and a regressor or control that the effects absorb (no variation within
    units under unit effects or first differences, within periods under period effects,
    within state-periods under state-by-period effects, or between units for ``between``).
    Rows with a missing value (NaN) in the outcome, a regressor, a control or a needed
    state are dropped (listwise), as linearmodels would.
    """
    df = _frame_with_ids(spec, df)
    cols = df.columns
    for name, role in [(spec.entity, "entity"), (spec.time, "time")]:
        if name not in cols:
            raise _unknown_variable(name, role, cols)
    if spec._needs_state and spec.state not in cols:
        why = "effects='state-by-year'" if spec.effects == "state-by-year" else "cov='cluster-state'"
        raise SpecificationError(
            f"{why} needs a state column, but {spec.state!r} is not a column of the data."
            + _suggest(spec.state, cols)
            + " Set ModelSpec.state to the state identifier column."
        )
    for name, role in [(spec.outcome, "outcome")] + [(r, "regressor") for r in spec.regressors] + [
        (c, "control") for c in spec.controls
    ]:
        if name not in cols:
            raise _unknown_variable(name, role, cols)
        s = df[name]
        if not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)):
            raise SpecificationError(
                f"{role} {name!r} is not numeric (dtype {s.dtype}); encode it as numbers or dummies first."
            )
    if spec.weights is not None:
        if spec.weights not in cols:
            raise _unknown_variable(spec.weights, "weights", cols)
        if not pd.api.types.is_numeric_dtype(df[spec.weights]):
            raise SpecificationError(f"weights {spec.weights!r} is not numeric (dtype {df[spec.weights].dtype}).")
    for name in (spec.entity, spec.time):
        n_missing = int(df[name].isna().sum())
        if n_missing:
            raise SpecificationError(f"The {name!r} column has {n_missing} missing value(s); every row needs a key.")
    keys = [spec.entity, spec.time]
    dup = df.duplicated(keys, keep=False)
    if dup.any():
        examples = df.loc[dup, keys].drop_duplicates().head(5)
        ex = ", ".join(f"({e!r}, {t!r})" for e, t in examples.itertuples(index=False))
        raise SpecificationError(
            f"The panel is not uniquely indexed by ({spec.entity}, {spec.time}): {int(dup.sum())} rows share "
            f"{int(df.loc[dup, keys].drop_duplicates().shape[0])} duplicated key(s), e.g. {ex}. "
            "Aggregate or deduplicate before estimating."
        )
    _check_finite(spec, df)

    model_vars = [spec.outcome, *spec.variables]
    weight_col = [spec.weights] if spec.weights is not None else []
    keep_cols = list(dict.fromkeys(keys + ([spec.state] if spec._needs_state else []) + model_vars + weight_col))
    sample = df[keep_cols].copy()
    for v in model_vars + weight_col:
        sample[v] = sample[v].astype(float)
    complete = sample[model_vars + weight_col + ([spec.state] if spec._needs_state else [])].notna().all(axis=1)
    sample = sample.loc[complete].sort_values(keys).reset_index(drop=True)
    sample.attrs["n_dropped"] = int((~complete).sum())
    if sample.empty:
        raise SpecificationError("No row has all of the outcome, regressors and controls: the sample is empty.")
    if spec.weights is not None:
        w = sample[spec.weights].to_numpy()
        bad = ~(np.isfinite(w) & (w > 0))
        if bad.any():
            rows = sample.loc[bad, keys].head(5)
            ex = ", ".join(f"({e!r}, {t!r})" for e, t in rows.itertuples(index=False))
            raise SpecificationError(
                f"weights {spec.weights!r} has {int(bad.sum())} value(s) that are not positive and finite, e.g. at "
                f"({spec.entity}, {spec.time}) = {ex}. Weights must be > 0; set a row's weight to NaN to drop it."
            )
    if spec.estimator in ("fd",) and sample.groupby(spec.entity).size().max() < 2:
        raise SpecificationError("First differences need at least two periods for some unit; every unit has one.")

    _check_absorbed(spec, sample)
    return sample


def _check_finite(spec: ModelSpec, df: pd.DataFrame) -> None:
    """Raise if the outcome, a regressor or a control holds ``inf`` or ``-inf``, naming the rows.

    Every row is checked, not only the complete ones: NaN means "missing" and drops the row,
    but an infinity is a bad value (e.g. the log of 0), which linearmodels would otherwise
    report as a singular matrix or as no within-unit variation, without naming the column.
    """
    for name, role in [(spec.outcome, "outcome")] + [(r, "regressor") for r in spec.regressors] + [
        (c, "control") for c in spec.controls
    ]:
        bad = np.isinf(df[name].to_numpy(dtype=float, na_value=np.nan))
        if bad.any():
            rows = df.loc[bad, [spec.entity, spec.time]].head(5)
            ex = ", ".join(f"({e!r}, {t!r})" for e, t in rows.itertuples(index=False))
            raise SpecificationError(
                f"{role} {name!r} has {int(bad.sum())} infinite value(s) (inf or -inf), e.g. at "
                f"({spec.entity}, {spec.time}) = {ex}. Set them to NaN to drop those rows, or fix the "
                "transformation that produced them (e.g. the log of 0)."
            )


def _constant_within(sample: pd.DataFrame, by, var: str) -> bool:
    g = sample.groupby(by, sort=False)[var]
    spread = (g.max() - g.min()).abs().max()
    scale = max(float(sample[var].abs().max()), 1.0)
    return bool(spread <= 1e-12 * scale)


def _check_absorbed(spec: ModelSpec, sample: pd.DataFrame) -> None:
    for v in spec.variables:
        role = "regressor" if v in spec.regressors else "control"
        if spec.has_unit_effects or spec.estimator == "fd":
            if _constant_within(sample, spec.entity, v):
                what = (
                    "its first difference is zero"
                    if spec.estimator == "fd"
                    else "it is absorbed by the unit fixed effects"
                )
                raise SpecificationError(
                    f"{role} {v!r} has no within-unit variation (it is constant over time within every "
                    f"{spec.entity}), so {what}. Time-invariant variables can be estimated with "
                    "estimator='pooled', 're', 'cre' or 'between'."
                )
        if spec.effects in ("time", "unit+time") and _constant_within(sample, spec.time, v):
            raise SpecificationError(
                f"{role} {v!r} does not vary across units within a {spec.time} (it is a pure time series), "
                "so it is absorbed by the period effects."
            )
        if spec.effects == "state-by-year" and _constant_within(sample, [spec.state, spec.time], v):
            raise SpecificationError(
                f"{role} {v!r} does not vary within {spec.state} x {spec.time} cells, so it is absorbed by the "
                "state-by-period effects."
            )
        if spec.estimator == "between":
            means = sample.groupby(spec.entity)[v].mean()
            if float(means.max() - means.min()) <= 1e-12 * max(float(means.abs().max()), 1.0):
                raise SpecificationError(
                    f"{role} {v!r} has the same mean in every unit, so the between estimator cannot identify it."
                )
        if spec.estimator in ("pooled", "re", "cre") and float(sample[v].max() - sample[v].min()) == 0.0:
            raise SpecificationError(f"{role} {v!r} is constant in the sample and collinear with the constant.")


def _dummies(sample: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    """Period dummies (first period omitted) or state-by-period dummies (first period of each state omitted)."""
    t = sample[spec.time].to_numpy()
    out: dict[str, np.ndarray] = {}
    if spec.effects in ("time", "unit+time"):
        for v in np.sort(np.unique(t))[1:]:
            out[f"{spec.time}[{v}]"] = (t == v).astype(float)
    elif spec.effects == "state-by-year":
        s = sample[spec.state].to_numpy()
        cells = sample[[spec.state, spec.time]].drop_duplicates().sort_values([spec.state, spec.time])
        first = cells.groupby(spec.state, sort=False)[spec.time].transform("min")
        for sv, tv in cells.loc[cells[spec.time] != first].itertuples(index=False):
            out[f"{spec.state}:{spec.time}[{sv}:{tv}]"] = ((s == sv) & (t == tv)).astype(float)
    return pd.DataFrame(out, index=sample.index)


def _entity_demean(values: np.ndarray, codes: np.ndarray) -> np.ndarray:
    n_groups = codes.max() + 1
    counts = np.bincount(codes, minlength=n_groups).astype(float)
    out = np.empty_like(values, dtype=float)
    for j in range(values.shape[1]):
        means = np.bincount(codes, weights=values[:, j], minlength=n_groups) / counts
        out[:, j] = values[:, j] - means[codes]
    return out


def _first_differences(sample: pd.DataFrame, spec: ModelSpec, values: np.ndarray) -> np.ndarray:
    """Differences between consecutive periods of the time index (rows sorted by entity, time)."""
    pos = _period_positions(sample, spec.time)
    ent = pd.factorize(sample[spec.entity])[0]
    valid = np.zeros(len(sample), dtype=bool)
    valid[1:] = (ent[1:] == ent[:-1]) & (pos[1:] - pos[:-1] == 1)
    diff = np.vstack([np.zeros((1, values.shape[1])), values[1:] - values[:-1]])
    return diff[valid]


def _check_rank(spec: ModelSpec, sample: pd.DataFrame, X: pd.DataFrame, roles: dict[str, str]) -> None:
    """Raise if the transformed design is rank deficient, naming the variables responsible."""
    values = X.to_numpy(dtype=float)
    if spec.has_unit_effects:
        cols = [c for c in X.columns if c != _CONSTANT]
        values = _entity_demean(X[cols].to_numpy(dtype=float), pd.factorize(sample[spec.entity])[0])
    elif spec.estimator == "fd":
        cols = list(X.columns)
        values = _first_differences(sample, spec, values)
    elif spec.estimator == "between":
        cols = list(X.columns)
        values = X.groupby(sample[spec.entity].to_numpy()).mean().to_numpy()
    else:
        cols = list(X.columns)
    if values.shape[0] <= values.shape[1]:
        raise SpecificationError(
            f"The transformed model has {values.shape[0]} observations for {values.shape[1]} coefficients; "
            "it cannot be estimated."
        )
    # Scale each column by its size before the transformation, so the tolerance does not
    # depend on units (a demeaned column that should be 0 keeps rounding error).
    raw = X[cols].to_numpy(dtype=float)
    norm = np.sqrt((raw**2).sum(0))
    norm[norm == 0] = 1.0
    scaled = values / norm

    def rank(m: np.ndarray) -> int:
        if m.shape[1] == 0:
            return 0
        sv = np.linalg.svd(m, compute_uv=False)
        return int((sv > sv[0] * max(m.shape) * np.finfo(float).eps * 10).sum())

    full = rank(scaled)
    if full == scaled.shape[1]:
        return
    culprits = []
    for j, c in enumerate(cols):
        if roles.get(c) in ("regressor", "control") and rank(np.delete(scaled, j, axis=1)) == full:
            culprits.append(c)
    if culprits:
        raise SpecificationError(
            f"{', '.join(map(repr, culprits))} {'is' if len(culprits) == 1 else 'are'} collinear with the other "
            f"regressors and the effects after the {ESTIMATORS[spec.estimator].lower()} transformation "
            "(e.g. a unit-specific linear trend, such as experience, under unit and period effects); drop one."
        )
    raise SpecificationError(
        f"The design is rank deficient ({full} of {scaled.shape[1]} columns independent) because the effect "
        "dummies are collinear with each other or with the unit effects."
    )


def _design(spec: ModelSpec, df: pd.DataFrame) -> _Design:
    sample = validate(spec, df)
    n_dropped = int(sample.attrs.get("n_dropped", 0))
    time_values = sample[spec.time]
    if not (pd.api.types.is_numeric_dtype(time_values) or pd.api.types.is_datetime64_any_dtype(time_values)):
        # linearmodels needs a numeric or date time index; sorted codes keep the order
        time_values = pd.Series(pd.Categorical(time_values, ordered=True).codes, index=sample.index)
    index = pd.MultiIndex.from_arrays([sample[spec.entity], time_values], names=[spec.entity, spec.time])
    parts: list[pd.DataFrame] = []
    roles: dict[str, str] = {}
    if spec.estimator != "fd":
        parts.append(pd.DataFrame({_CONSTANT: np.ones(len(sample))}, index=sample.index))
        roles[_CONSTANT] = "constant"
    dummies = _dummies(sample, spec)
    parts.append(dummies)
    roles.update({c: "effect dummy" for c in dummies.columns})
    parts.append(sample[list(spec.variables)])
    roles.update({c: "regressor" for c in spec.regressors})
    roles.update({c: "control" for c in spec.controls})
    if spec.estimator == "cre":
        varying = [v for v in spec.variables if not _constant_within(sample, spec.entity, v)]
        means = sample.groupby(spec.entity)[varying].transform("mean")
        means.columns = [f"mean({v})" for v in varying]
        roles.update({c: "unit mean" for c in means.columns})
        parts.append(means)
        if not dummies.empty:
            dmeans = dummies.groupby(sample[spec.entity].to_numpy()).transform("mean")
            dmeans = dmeans.loc[:, dmeans.std() > 1e-12]  # vary across units only if unbalanced
            # When every gap falls in the same period, the means of the dummies are affine in one
            # indicator and collinear with each other; keep an independent subset (same span).
            kept, basis = [], np.ones((len(dmeans), 1))
            for c in dmeans.columns:
                candidate = np.column_stack([basis, dmeans[c].to_numpy(dtype=float)])
                if np.linalg.matrix_rank(candidate) > basis.shape[1]:
                    basis, kept = candidate, [*kept, c]
            dmeans = dmeans[kept]
            dmeans.columns = [f"mean({c})" for c in dmeans.columns]
            roles.update({c: "unit mean (period dummy)" for c in dmeans.columns})
            parts.append(dmeans)
    X = pd.concat(parts, axis=1)
    _check_rank(spec, sample, X, roles)
    X.index = index
    y = pd.Series(sample[spec.outcome].to_numpy(), index=index, name=spec.outcome)
    clusters = None
    if spec.cov == "cluster-state":
        clusters = pd.DataFrame({"state": pd.factorize(sample[spec.state])[0]}, index=index)
    weights = None
    if spec.weights is not None:
        weights = pd.Series(sample[spec.weights].to_numpy(), index=index, name=spec.weights)
    return _Design(y=y, X=X, roles=roles, sample=sample, n_dropped=n_dropped, clusters=clusters, weights=weights)


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PanelResult:
    """The fitted model, the same for every estimator.

    ``params``, ``std_errors``, ``pvalues`` (Series by term), ``conf_int`` (95%, columns
    ``lower``/``upper``) and ``cov`` (covariance matrix) cover every estimated coefficient
    (constant, effect dummies, regressors, controls, unit means); ``roles`` says which is
    which. ``nobs`` is the rows of the panel used (in levels); ``nobs_estimation`` the rows
    of the transformed regression (units for ``between``, differences for ``fd``).
    ``rsquared`` is the R-squared of the estimated regression; ``rsquared_within`` /
    ``_between`` / ``_overall`` are linearmodels' (Stata's ``xtreg``) definitions: the squared
    correlation-style fit of :math:`x'\\hat\\beta` (including any period dummies) to
    :math:`y` after removing unit means, in unit means, and in levels. ``inference``
    names the reference distribution of p-values and intervals; ``raw`` is the
    linearmodels results object for anything else.
    """

    spec: ModelSpec
    params: pd.Series
    std_errors: pd.Series
    pvalues: pd.Series
    conf_int: pd.DataFrame
    cov: pd.DataFrame
    nobs: int
    nobs_estimation: int
    n_units: int
    n_periods: int
    n_dropped: int
    rsquared: float
    rsquared_within: float
    rsquared_between: float
    rsquared_overall: float
    cov_type: str
    n_clusters: tuple[int, ...]
    df_inference: float  # degrees of freedom of the t reference distribution; inf = normal
    roles: dict[str, str] = field(repr=False)
    raw: Any = field(repr=False, compare=False)

    @property
    def inference(self) -> str:
        """'normal' or 't(df)'."""
        return "normal" if np.isinf(self.df_inference) else f"t({self.df_inference:g})"

    @property
    def tstats(self) -> pd.Series:
        """Coefficient / standard error."""
        return self.params / self.std_errors

    def ci(self, level: float = 0.95) -> pd.DataFrame:
        """Confidence intervals at ``level`` (e.g. 0.90 for equivalence tests)."""
        if not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1), not {level}")
        q = _quantile(1 - (1 - level) / 2, self.df_inference)
        return pd.DataFrame(
            {"lower": self.params - q * self.std_errors, "upper": self.params + q * self.std_errors}
        )

    def terms(self, role: str | None = None) -> list[str]:
        """Names of the coefficients, optionally only those with ``role``."""
        return [t for t in self.params.index if role is None or self.roles.get(t) == role]

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: one row per coefficient (``term, role, estimate, std_error, statistic,
        p_value, conf_low, conf_high``) with the model's identifiers as columns."""
        s = self.spec
        return pd.DataFrame(
            {
                "term": self.params.index,
                "role": [self.roles.get(t, "") for t in self.params.index],
                "estimate": self.params.to_numpy(),
                "std_error": self.std_errors.to_numpy(),
                "statistic": self.tstats.to_numpy(),
                "p_value": self.pvalues.to_numpy(),
                "conf_low": self.conf_int["lower"].to_numpy(),
                "conf_high": self.conf_int["upper"].to_numpy(),
                "outcome": s.outcome,
                "estimator": s.estimator,
                "effects": s.effects,
                "cov": s.cov,
                "weights": s.weights or "none",
                "nobs": self.nobs,
                "n_units": self.n_units,
            }
        )


def _quantile(p: float, df: float) -> float:
    return float(stats.norm.ppf(p)) if np.isinf(df) else float(stats.t.ppf(p, df))


def _cov_config(spec: ModelSpec, design: _Design) -> tuple[dict, str, tuple[int, ...]]:
    """linearmodels fit keywords, a description, and the cluster counts."""
    s, sample = spec, design.sample
    if s.cov == "classical":
        return {"cov_type": "unadjusted"}, "classical (homoskedastic)", ()
    if s.cov == "robust":
        return {"cov_type": "robust"}, "heteroskedasticity-robust (HC1)", ()
    if s.cov == "driscoll-kraay":
        kw = {"cov_type": "kernel", "kernel": KERNELS[s.kernel]}
        if s.bandwidth is not None:
            kw["bandwidth"] = s.bandwidth
        n_t = sample[s.time].nunique() - (1 if s.estimator == "fd" else 0)
        bw = s.bandwidth if s.bandwidth is not None else float(np.floor(4 * (n_t / 100) ** (2 / 9)))
        if bw >= n_t:
            raise SpecificationError(
                f"The Driscoll-Kraay bandwidth {bw:g} must be below the number of periods ({n_t})."
            )
        return kw, f"Driscoll-Kraay ({s.kernel} kernel, bandwidth {bw:g})", ()
    if s.cov == "cluster-unit":
        g = sample[s.entity].nunique()
        return (
            {"cov_type": "clustered", "cluster_entity": True, "group_debias": True},
            f"clustered by {s.entity} (CR1, {g} clusters)",
            (g,),
        )
    if s.cov == "cluster-state":
        g = sample[s.state].nunique()
        return (
            {"cov_type": "clustered", "clusters": design.clusters, "group_debias": True},
            f"clustered by {s.state} (CR1, {g} clusters)",
            (g,),
        )
    # cluster-twoway
    g1, g2 = sample[s.entity].nunique(), sample[s.time].nunique()
    return (
        {"cov_type": "clustered", "cluster_entity": True, "cluster_time": True, "group_debias": True},
        f"two-way clustered by {s.entity} and {s.time} (CR1, {g1} x {g2} clusters)",
        (g1, g2),
    )


def fit(spec: ModelSpec, df: pd.DataFrame) -> PanelResult:
    """Estimate ``spec`` on the tidy panel ``df`` (one row per entity and period).

    ``df`` has the entity and time as columns (or as index levels). The specification is
    validated first (:func:`validate`), so a bad one raises :class:`SpecificationError`
    before any estimation. See the module docstring for the model, covariance and
    small-sample correction behind each option.
    """
    from linearmodels.panel import BetweenOLS, FirstDifferenceOLS, PanelOLS, PooledOLS, RandomEffects

    design = _design(spec, df)
    cov_kw, cov_desc, n_clusters = _cov_config(spec, design)
    y, X, w = design.y, design.X, design.weights
    if w is not None:
        cov_desc += f", weighted by {spec.weights}"
    if spec.estimator in _UNIT_EFFECT_ESTIMATORS:
        # auto_df: the unit effects are left out of K when nested in the clusters
        raw = PanelOLS(y, X, entity_effects=True, weights=w).fit(debiased=True, auto_df=True, **cov_kw)
    elif spec.estimator == "pooled":
        raw = PooledOLS(y, X, weights=w).fit(debiased=True, **cov_kw)
    elif spec.estimator in ("re", "cre"):
        # small_sample: Baltagi-Chang variance components if unbalanced (plm's "swar")
        raw = RandomEffects(y, X).fit(small_sample=True, debiased=True, **cov_kw)
    elif spec.estimator == "between":
        raw = BetweenOLS(y, X).fit(debiased=True, **cov_kw)
    else:  # fd
        raw = FirstDifferenceOLS(y, X, weights=w).fit(debiased=True, **cov_kw)

    if n_clusters:
        df_inf = float(min(n_clusters) - 1)
    else:
        df_inf = float(raw.df_resid)
    params = raw.params
    variances = np.diag(raw.cov.to_numpy())
    # A two-way clustered covariance (V1 + V2 - V12) need not be positive semi-definite;
    # e.g. of period dummies under period clusters: NaN standard errors, and a warning if
    # a regressor or control is affected.
    se = pd.Series(np.sqrt(np.where(variances >= 0, variances, np.nan)), index=params.index, name="std_error")
    bad = [t for t in params.index if np.isnan(se[t]) and design.roles.get(t) in ("regressor", "control")]
    if bad:
        warnings.warn(
            f"The {spec.cov} covariance gives a negative variance for {', '.join(bad)}; their standard "
            "errors are NaN. Use a one-way clustered covariance.",
            stacklevel=2,
        )
    q = _quantile(0.975, df_inf)
    tstat = params / se
    if np.isinf(df_inf):
        pvalues = pd.Series(2 * stats.norm.sf(np.abs(tstat)), index=params.index)
    else:
        pvalues = pd.Series(2 * stats.t.sf(np.abs(tstat), df_inf), index=params.index)
    conf_int = pd.DataFrame({"lower": params - q * se, "upper": params + q * se})
    sample = design.sample

    def r2(name: str) -> float:
        try:
            return float(getattr(raw, name))
        except (AttributeError, TypeError, ValueError):
            return float("nan")

    return PanelResult(
        spec=spec,
        params=params,
        std_errors=se,
        pvalues=pvalues.rename("pvalue"),
        conf_int=conf_int,
        cov=raw.cov,
        nobs=len(sample),
        nobs_estimation=int(raw.nobs),
        n_units=int(sample[spec.entity].nunique()),
        n_periods=int(sample[spec.time].nunique()),
        n_dropped=int(design.n_dropped),
        rsquared=r2("rsquared"),
        rsquared_within=r2("rsquared_within"),
        rsquared_between=r2("rsquared_between"),
        rsquared_overall=r2("rsquared_overall"),
        cov_type=cov_desc,
        n_clusters=n_clusters,
        df_inference=df_inf,
        roles={c: design.roles[c] for c in params.index},
        raw=raw,
    )


# --------------------------------------------------------------------------------------
# Specification tests
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TestResult:
    """A chi-squared specification test.

    ``positive_definite`` (Hausman only) is False when :math:`V_{FE}-V_{RE}` was not positive
    definite: the statistic then uses its positive eigenvalues only (a generalised inverse)
    and ``df`` is their number; ``note`` says so.
    """

    __test__ = False  # not a pytest class

    name: str
    statistic: float
    df: int
    pvalue: float
    terms: tuple[str, ...]
    cov_type: str = ""
    positive_definite: bool | None = None
    note: str = ""
    result: PanelResult | None = field(default=None, repr=False, compare=False)


def hausman(fe_result: PanelResult, re_result: PanelResult, terms=None, tol: float = 1e-10) -> TestResult:
    r"""Hausman (1978) test of fixed against random effects.

    :math:`H = (b_{FE}-b_{RE})'[V_{FE}-V_{RE}]^{-1}(b_{FE}-b_{RE}) \sim \chi^2_k` under
    :math:`H_0` (the unit effects are uncorrelated with the regressors, so RE is consistent
    and efficient), on the ``terms`` both models estimate: by default the regressors and
    controls of the FE model that RE also has. Constants, period dummies and unit means are
    left out (Wooldridge 2010, sec. 10.7.3: the coefficients on aggregate time effects are
    not part of the comparison). Both fits should use ``cov="classical"``: the test's
    variance formula needs RE to be efficient, which robust covariances deny; use
    :func:`mundlak_test` for a robust version (a warning is issued otherwise).

    If :math:`V_{FE}-V_{RE}` is not positive definite (it need not be in finite samples),
    the statistic is :math:`\sum_j (q_j'd)^2/\lambda_j` over the eigenpairs with
    :math:`\lambda_j > \mathrm{tol}\cdot\max|\lambda|`: a generalised inverse restricted to
    the positive part of the spectrum. ``df`` is their number, ``positive_definite=False``
    and ``note`` reports the eigenvalues. (Stata's ``hausman`` uses the Moore-Penrose
    inverse and its rank, which can give a negative statistic when an eigenvalue is
    negative; this cannot.) A non-positive-definite difference is itself a warning sign:
    the test's assumptions fail in the sample, and :func:`mundlak_test` is the safer test.
    """
    if fe_result.spec.estimator not in _UNIT_EFFECT_ESTIMATORS:
        raise SpecificationError(
            f"hausman() needs a fixed-effects fit first; got estimator={fe_result.spec.estimator!r}."
        )
    if re_result.spec.estimator != "re":
        raise SpecificationError(f"hausman() needs a random-effects fit second; got {re_result.spec.estimator!r}.")
    if fe_result.spec.outcome != re_result.spec.outcome:
        raise SpecificationError("The two fits have different outcomes.")
    if terms is None:
        terms = [t for t in fe_result.params.index if fe_result.roles.get(t) in ("regressor", "control")]
        terms = [t for t in terms if t in re_result.params.index]
    terms = tuple(terms)
    missing = [t for t in terms if t not in fe_result.params.index or t not in re_result.params.index]
    if missing or not terms:
        raise SpecificationError(f"Terms not estimated by both models: {missing or 'none in common'}.")
    if fe_result.spec.cov != "classical" or re_result.spec.cov != "classical":
        warnings.warn(
            "The Hausman test assumes RE is efficient; with non-classical covariances V_FE - V_RE need not "
            "be a valid variance. Use mundlak_test() for a robust test.",
            stacklevel=2,
        )
    d = (fe_result.params[list(terms)] - re_result.params[list(terms)]).to_numpy()
    V = (
        fe_result.cov.loc[list(terms), list(terms)].to_numpy() - re_result.cov.loc[list(terms), list(terms)].to_numpy()
    )
    V = (V + V.T) / 2
    eigval, eigvec = np.linalg.eigh(V)
    scale = np.abs(eigval).max() if eigval.size else 0.0
    keep = eigval > tol * scale
    positive_definite = bool(keep.all())
    if positive_definite:
        stat = float(d @ np.linalg.solve(V, d))
        note = ""
    else:
        proj = eigvec[:, keep].T @ d
        stat = float((proj**2 / eigval[keep]).sum())
        note = (
            f"V_FE - V_RE is not positive definite (eigenvalues {np.array2string(eigval, precision=3)}); "
            f"the statistic uses the {int(keep.sum())} positive eigenvalue(s) and df = {int(keep.sum())}."
        )
    k = int(keep.sum())
    pvalue = float(stats.chi2.sf(stat, k)) if k > 0 else float("nan")
    return TestResult(
        name="Hausman (FE vs RE)",
        statistic=stat,
        df=k,
        pvalue=pvalue,
        terms=terms,
        cov_type=f"{fe_result.cov_type} / {re_result.cov_type}",
        positive_definite=positive_definite,
        note=note,
    )


def mundlak_test(spec: ModelSpec, df: pd.DataFrame, cov: str = "cluster-unit") -> TestResult:
    r"""Mundlak (1978) / correlated-random-effects test, a robust alternative to Hausman.

    Fits the CRE version of ``spec`` (same outcome, regressors, controls; period effects
    kept if ``spec`` has them) with covariance ``cov`` and tests :math:`H_0:\gamma = 0` on
    the coefficients of the unit means of the time-varying regressors and controls:
    :math:`W = \hat\gamma'\hat V_\gamma^{-1}\hat\gamma \sim \chi^2_q`. With a classical
    covariance this is the regression-based Hausman test (plm's ``phtest(method="aux")``);
    with ``cov="cluster-unit"`` (the default) it is robust to heteroskedasticity and serial
    correlation (Wooldridge 2010, sec. 10.7.3).
    """
    if spec.effects == "state-by-year":
        raise SpecificationError("mundlak_test() does not support state-by-year effects.")
    if spec.weights is not None:
        raise SpecificationError("mundlak_test() does not support weights (random effects are unweighted here).")
    effects = "time" if spec.has_time_effects else "none"
    cre = ModelSpec(
        outcome=spec.outcome,
        regressors=spec.regressors,
        controls=spec.controls,
        estimator="cre",
        effects=effects,
        cov=cov,
        kernel=spec.kernel,
        bandwidth=spec.bandwidth,
        entity=spec.entity,
        time=spec.time,
        state=spec.state,
    )
    return mundlak_from_cre(fit(cre, df))


def mundlak_from_cre(result: PanelResult) -> TestResult:
    r"""The Mundlak test from a fitted ``cre`` model: :math:`W = \hat\gamma'\hat V_\gamma^{-1}\hat\gamma`
    on its unit-mean coefficients (for a caller that has fitted the CRE model already)."""
    terms = tuple(result.terms("unit mean"))
    if not terms:
        raise SpecificationError("No regressor varies within units, so there are no unit means to test.")
    g = result.params[list(terms)].to_numpy()
    V = result.cov.loc[list(terms), list(terms)].to_numpy()
    stat = float(g @ np.linalg.solve(V, g))
    return TestResult(
        name="Mundlak (CRE) test",
        statistic=stat,
        df=len(terms),
        pvalue=float(stats.chi2.sf(stat, len(terms))),
        terms=terms,
        cov_type=result.cov_type,
        result=result,
    )


# --------------------------------------------------------------------------------------
# Variance decomposition and effect sizes
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VarianceDecomposition:
    r"""Within/between decomposition of a panel variable (Stata's ``xtsum``).

    :math:`\sum_{it}(x_{it}-\bar x)^2 = \sum_{it}(x_{it}-\bar x_i)^2 + \sum_i T_i(\bar x_i-\bar x)^2`:
    ``share_within`` and ``share_between`` are the two parts over the total (they sum to
    1). ``sd_overall`` is the SD of :math:`x_{it}`, ``sd_between`` the SD of the unit means
    :math:`\bar x_i` across units, ``sd_within`` the SD of :math:`x_{it}-\bar x_i` across
    observations (all with ``ddof=1``, in the units of ``column``).
    """

    column: str
    n_obs: int
    n_units: int
    mean: float
    sd_overall: float
    sd_between: float
    sd_within: float
    share_within: float
    share_between: float

    def to_series(self) -> pd.Series:
        """The fields as a Series (for tables and ``glue``)."""
        return pd.Series(self.__dict__, name=self.column)


def variance_decomposition(df: pd.DataFrame, col: str, entity: str = "fips") -> VarianceDecomposition:
    """Within- and between-unit shares of the variance of ``col`` (missing values dropped)."""
    if col not in df.columns:
        raise _unknown_variable(col, "variable", df.columns)
    if entity not in df.columns:
        raise _unknown_variable(entity, "entity", df.columns)
    d = df[[entity, col]].dropna()
    if d.empty:
        raise SpecificationError(f"{col!r} has no non-missing values.")
    x = d[col].astype(float)
    unit_mean = x.groupby(d[entity]).transform("mean")
    ss_total = float(((x - x.mean()) ** 2).sum())
    ss_within = float(((x - unit_mean) ** 2).sum())
    share_within = ss_within / ss_total if ss_total > 0 else float("nan")
    return VarianceDecomposition(
        column=col,
        n_obs=len(d),
        n_units=int(d[entity].nunique()),
        mean=float(x.mean()),
        sd_overall=float(x.std()),
        sd_between=float(x.groupby(d[entity]).mean().std()),
        sd_within=float((x - unit_mean).std()),
        share_within=share_within,
        share_between=1 - share_within,
    )


def effect_sizes(result: PanelResult, df: pd.DataFrame, regressor: str | None = None) -> pd.DataFrame:
    """The coefficient on ``regressor`` scaled three ways, on the estimation sample.

    Rows: ``per unit`` (the coefficient: outcome units per one unit of the regressor, e.g.
    per organisation per 1,000 people), ``per within-unit SD`` (times the SD of the
    regressor after removing unit means) and ``per between-unit SD`` (times the SD of the
    unit means). Columns: ``scale`` (1 or the SD), ``estimate``, ``std_error``,
    ``conf_low``, ``conf_high`` (95%, the model's reference distribution).
    """
    spec = result.spec
    if regressor is None:
        if len(spec.regressors) != 1:
            raise SpecificationError(f"Name the regressor: the model has {len(spec.regressors)} of interest.")
        regressor = spec.regressors[0]
    if regressor not in result.params.index:
        raise SpecificationError(
            f"{regressor!r} is not a coefficient of this model." + _suggest(regressor, result.params.index)
        )
    sample = validate(spec, df)
    vd = variance_decomposition(sample, regressor, spec.entity)
    b, se = float(result.params[regressor]), float(result.std_errors[regressor])
    lo, hi = (float(v) for v in result.conf_int.loc[regressor, ["lower", "upper"]])
    scales = {"per unit": 1.0, "per within-unit SD": vd.sd_within, "per between-unit SD": vd.sd_between}
    return pd.DataFrame(
        {
            "scale": list(scales.values()),
            "estimate": [b * s for s in scales.values()],
            "std_error": [se * s for s in scales.values()],
            "conf_low": [lo * s for s in scales.values()],
            "conf_high": [hi * s for s in scales.values()],
        },
        index=pd.Index(list(scales), name=regressor),
    )


# --------------------------------------------------------------------------------------
# Demeaning (for binned scatters and checks)
# --------------------------------------------------------------------------------------


def within_transform(
    df: pd.DataFrame,
    cols,
    absorb: str = "unit+time",
    entity: str = "fips",
    time: str = "year",
    tol: float = 1e-12,
    maxiter: int = 10_000,
) -> pd.DataFrame:
    r"""Residuals of ``cols`` after removing unit (and period) means, on balanced or unbalanced panels.

    ``absorb`` is ``"unit"``, ``"time"`` or ``"unit+time"``. Two-way demeaning uses
    alternating projections (Guimarães & Portugal 2010; the method of alternating
    projections of fixest and pyfixest): subtract unit means, then period means, until the
    largest unit mean of the result is below ``tol`` times the scale of the data. On a
    balanced panel one pass is exact. By the Frisch-Waugh-Lovell theorem the OLS slope of
    one transformed column on another equals the TWFE coefficient. Rows with a missing
    value in ``cols`` are dropped; the result keeps ``df``'s index.
    """
    cols = [cols] if isinstance(cols, str) else list(cols)
    _check_option(absorb, ("unit", "time", "unit+time"), "absorb")
    needed = [*cols] + ([entity] if absorb != "time" else []) + ([time] if absorb != "unit" else [])
    for c in needed:
        if c not in df.columns:
            raise _unknown_variable(c, "column", df.columns)
    d = df.dropna(subset=cols)
    values = d[cols].to_numpy(dtype=float).copy()
    groupings = []
    if absorb in ("unit", "unit+time"):
        groupings.append(pd.factorize(d[entity])[0])
    if absorb in ("time", "unit+time"):
        groupings.append(pd.factorize(d[time])[0])

    def demean_by(v: np.ndarray, codes: np.ndarray) -> np.ndarray:
        n = codes.max() + 1
        cnt = np.bincount(codes, minlength=n)
        for j in range(v.shape[1]):
            v[:, j] -= (np.bincount(codes, weights=v[:, j], minlength=n) / cnt)[codes]
        return v

    scale = max(float(np.abs(values).max()) if values.size else 0.0, 1.0)
    for _ in range(maxiter):
        for codes in groupings:
            values = demean_by(values, codes)
        if len(groupings) == 1:
            break
        codes = groupings[0]
        n = codes.max() + 1
        cnt = np.bincount(codes, minlength=n)
        worst = max(
            float(np.abs(np.bincount(codes, weights=values[:, j], minlength=n) / cnt).max())
            for j in range(values.shape[1])
        )
        if worst <= tol * scale:
            break
    else:
        raise RuntimeError(f"Alternating projections did not converge in {maxiter} iterations.")
    return pd.DataFrame(values, index=d.index, columns=cols)
