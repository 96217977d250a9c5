r"""Annual panel with a series break, event definitions and staggered event studies.

Three pieces, used by Chapter 6:

* **The 2017 series break.** :func:`add_segments` marks each row's series segment (before or
  after reference year 2017, from which County Business Patterns publishes a cell only with
  three or more establishments; Chapter 2 tests this against the data) and builds a
  county-by-segment identifier, so that a fixed-effects model can give every county one
  level before and one after the break (``ModelSpec(entity="fips_segment", ...)``).
* **Events.** :func:`define_events` finds, for every county, the first year in which its
  association density rises (or falls) sharply relative to the previous year *within the
  same series segment*; the change across the break is never used.
* **Event studies.** :func:`event_study` estimates event-time effects around staggered
  events with Gardner's (2021) two-stage difference-in-differences (``"did2s"``,
  heterogeneity-robust) or with a naive two-way fixed-effects regression on event-time
  dummies (``"twfe"``), and :func:`pretrend_test` tests the pre-event coefficients jointly.

Two-stage DiD (Gardner 2021; Butts & Gardner 2022)
--------------------------------------------------
Unit :math:`i`, period :math:`t`, :math:`D_{it}=1` once unit :math:`i` is treated.

1. On the untreated observations (:math:`D_{it}=0`: never-treated units and not-yet-treated
   periods) fit :math:`y_{it} = \alpha_i + \lambda_t + u_{it}` by OLS (the two fixed-effect
   dimensions are configurable, e.g. county-by-segment and year).
2. Regress the residualised outcome :math:`\tilde y_{it} = y_{it} - \hat\alpha_i - \hat\lambda_t`
   on the event-time indicators :math:`1\{t - g_i = e\}` over all observations, no constant.
   Each coefficient is the mean of :math:`\tilde y` in its event-time cell: after the event an
   average treatment effect on the treated, before it a placebo (a residual mean of
   observations used in step 1).

The covariance is the GMM sandwich that accounts for the estimated first stage, clustered by
``cluster`` (Butts & Gardner 2022, eq. 6; the R ``did2s`` and pyfixest ``did2s``):
:math:`\hat V = (X_2'X_2)^{-1}\big(\sum_g W_gW_g'\big)(X_2'X_2)^{-1}`, with
:math:`W_g = X_{2g}'\hat u_{2g} - \hat\Gamma' X_{10g}'\hat u_{1g}`, where :math:`X_1` is the
first-stage design (fixed-effect dummies) on all rows, :math:`X_{10}` the same with treated
rows set to zero, :math:`\hat\Gamma = (X_{10}'X_{10})^{-1}X_1'X_2` (the derivative of the
second-stage moments with respect to the first-stage effects), :math:`\hat u_1` the
first-stage and :math:`\hat u_2` the second-stage residuals. No small-sample factor (as in
R and pyfixest). Here the first stage is solved exactly by sparse normal equations (one
reference level dropped per connected component of the unit-period graph) rather than by
pyfixest, whose dense variance step takes about 12 s per outcome on the county panel and
which fails when a unit has a single untreated observation; ``tests/test_eventstudy.py``
checks estimates and standard errors against pyfixest, a hand computation and the R
``did2s`` README.

Event-time dummies are binned at the ends of ``window``: :math:`e\le` ``window[0]`` and
:math:`e\ge` ``window[1]`` are one cell each. TWFE omits :math:`e=-1` (the reference);
two-stage DiD needs no reference (its counterfactual comes from the first stage), so it
reports :math:`e=-1` too.

References: Gardner (2021) "Two-stage differences in differences", arXiv:2207.05943;
Butts & Gardner (2022) *The R Journal* 14(3); Sun & Abraham (2021) *J. Econometrics* 225(2);
Goodman-Bacon (2021) *J. Econometrics* 225(2).
"""

from __future__ import annotations

import hashlib
import time as _time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import spsolve

from analysis.estimation import ModelSpec, TestResult, fit

__all__ = [
    "ESTIMATORS",
    "EventDefinition",
    "EventStudyError",
    "EventStudyResult",
    "add_segments",
    "bench_event_study",
    "define_events",
    "did2s",
    "event_study",
    "event_time_panels",
    "event_time_plot",
    "pretrend_test",
    "segment_fe_spec",
    "segment_fit",
]

ESTIMATORS = {"did2s": "Two-stage DiD (Gardner 2021)", "twfe": "Naive TWFE event study"}
_NEVER = 0  # cohort code of never-treated units


class EventStudyError(ValueError):
    """An event-study input that cannot be estimated; raised before anything is fitted."""


# --------------------------------------------------------------------------------------
# The series break
# --------------------------------------------------------------------------------------


def add_segments(
    df: pd.DataFrame, break_col: str = "post_2017_break", entity: str = "fips", name: str = "fips_segment"
) -> pd.DataFrame:
    """A copy of ``df`` with ``segment`` (0 before the break, 1 from it) and ``name``, the
    entity-by-segment identifier (e.g. ``"01001:0"``), for county-by-period fixed effects."""
    for c in (break_col, entity):
        if c not in df.columns:
            raise EventStudyError(f"Column {c!r} is not in the data.")
    out = df.copy()
    out["segment"] = out[break_col].astype(bool).astype(int)
    out[name] = out[entity].astype(str) + ":" + out["segment"].astype(str)
    return out


def segment_fe_spec(
    df: pd.DataFrame, outcome: str, regressors, controls=(), entity: str = "fips", time: str = "year",
    break_col: str = "post_2017_break",
) -> tuple[ModelSpec, pd.DataFrame]:
    """A :class:`ModelSpec` with county-by-segment fixed effects and year effects, clustered
    by county, and the data it runs on.

    With one level per county and segment the year dummies are collinear with the segment
    (every county-segment lies wholly before or after the break), so the first year of *each*
    segment is omitted: the year effects are entered as dummy controls ``yr_<year>`` and the
    model is ``estimator="fe", effects="unit"`` on the entity ``fips_segment``; the data are
    the rows with ``outcome``, ``regressors`` and ``controls`` present. Clustering is
    by ``entity`` (passed as the spec's ``state`` with ``cov="cluster-state"``), so the two
    segments of a county are one cluster; the absorbed county-segment effects are nested in
    it and are not counted in the small-sample factor (pyfixest ``feols(y ~ x |
    fips_segment + year, vcov={"CRV1": "fips"})``, checked in the tests).
    """
    regressors = (regressors,) if isinstance(regressors, str) else tuple(regressors)
    controls = (controls,) if isinstance(controls, str) else tuple(controls)
    for c in (outcome, *regressors, *controls, time):
        if c not in df.columns:
            raise EventStudyError(f"Column {c!r} is not in the data.")
    # year dummies for the years of the estimation sample, the first of each segment omitted
    d = add_segments(df.dropna(subset=[outcome, *regressors, *controls]), break_col=break_col, entity=entity)
    omitted = set(d.groupby("segment")[time].min())
    dummies = []
    for t in sorted(d[time].unique()):
        if t in omitted:
            continue
        name = f"yr_{t}"
        d[name] = (d[time] == t).astype(float)
        dummies.append(name)
    spec = ModelSpec(
        outcome=outcome, regressors=regressors, controls=(*controls, *dummies), estimator="fe", effects="unit",
        cov="cluster-state", entity="fips_segment", time=time, state=entity,
    )
    return spec, d


_SEGMENT_FITS: dict = {}  # content key -> PanelResult (the last few)
_SEGMENT_FITS_MAX = 32


def segment_fit(
    df: pd.DataFrame, outcome: str, regressors, controls=(), entity: str = "fips", time: str = "year",
    break_col: str = "post_2017_break",
):
    """``fit(*segment_fe_spec(df, outcome, regressors, controls, ...))``, remembered within the process.

    The key is the arguments and the content of the columns the model uses (hashed), so a call
    on equal data returns the earlier fit (the same object) instead of fitting again: e.g. the
    chapter's table of county-by-segment fits and :func:`quality_robustness`, whose "all" rows
    are the same models.
    """
    regs = (regressors,) if isinstance(regressors, str) else tuple(regressors)
    ctrl = (controls,) if isinstance(controls, str) else tuple(controls)
    cols = list(dict.fromkeys([entity, time, break_col, outcome, *regs, *ctrl]))
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise EventStudyError(f"Column {missing[0]!r} is not in the data.")
    rows = pd.util.hash_pandas_object(df[cols], index=True).to_numpy()
    digest = hashlib.blake2b(rows.tobytes(), digest_size=16).hexdigest()
    key = (outcome, regs, ctrl, entity, time, break_col, len(df), digest)
    if key not in _SEGMENT_FITS:
        if len(_SEGMENT_FITS) >= _SEGMENT_FITS_MAX:
            _SEGMENT_FITS.pop(next(iter(_SEGMENT_FITS)))
        _SEGMENT_FITS[key] = fit(*segment_fe_spec(df, outcome, regs, ctrl, entity, time, break_col))
    return _SEGMENT_FITS[key]


# --------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventDefinition:
    """Events found by :func:`define_events`.

    ``changes``: one row per unit-year with a within-segment year-on-year change
    (``dlog`` = change in log density, ``size_class`` of the unit, ``z`` = ``dlog`` over the
    standard deviation of changes in that size class, ``event`` True where the rule fires).
    ``cohort``: Series by unit, the year of the unit's first event, 0 if none (never treated).
    """

    direction: str
    min_log_change: float
    min_sd: float
    changes: pd.DataFrame = field(repr=False)
    cohort: pd.Series = field(repr=False)

    @property
    def n_events(self) -> int:
        return int((self.cohort != _NEVER).sum())

    def by_cohort(self) -> pd.Series:
        """Number of units by first-event year (0 = never)."""
        return self.cohort.value_counts().sort_index().rename("units")


def define_events(
    df: pd.DataFrame,
    direction: str = "rise",
    min_log_change: float = float(np.log(1.10)),
    min_sd: float = 2.0,
    size_classes: int = 10,
    density: str = "associations_per_10k",
    population: str = "population",
    entity: str = "fips",
    time: str = "year",
    segment: str = "post_2017_break",
    per: float = 1e4,
) -> EventDefinition:
    r"""The first sharp within-segment rise (or fall) in density of each unit.

    A change from year :math:`t-1` to :math:`t` counts only if both years are observed, are
    consecutive and lie in the same ``segment`` (so the 2016 -> 2017 change across the NAICS
    break is never used). It is an event when (for a rise; signs reversed for a fall)

    * :math:`\Delta\log(\text{density}) \ge` ``min_log_change`` (default: a rise of 10% or
      more), and
    * :math:`z = \Delta\log(\text{density}) / s_k \ge` ``min_sd``, where :math:`s_k` is the
      standard deviation of all valid year-on-year changes among counties of the same size
      class :math:`k` (``size_classes`` quantile classes of the unit's mean implied
      establishment count, density x population / ``per``): the change is unusual for a
      county of that size, whose count moves by whole establishments.

    The unit's cohort is the year of its first event; units without one are never treated (0).
    """
    if direction not in ("rise", "fall"):
        raise EventStudyError(f"direction must be 'rise' or 'fall', not {direction!r}.")
    if not (min_log_change > 0 and min_sd >= 0 and size_classes >= 1):
        raise EventStudyError("min_log_change must be positive, min_sd non-negative and size_classes >= 1.")
    for c in (density, population, entity, time, segment):
        if c not in df.columns:
            raise EventStudyError(f"Column {c!r} is not in the data.")
    d = df[[entity, time, segment, density, population]].copy()
    d = d.sort_values([entity, time]).reset_index(drop=True)
    dens = d[density].astype(float)
    if (dens <= 0).any():
        raise EventStudyError(f"{density!r} has zero or negative values; log changes are undefined.")
    d["log_density"] = np.log(dens)
    d["count"] = dens * d[population].astype(float) / per
    g = d.groupby(entity, sort=False)
    prev_time = g[time].shift(1)
    prev_seg = g[segment].shift(1)
    valid = (d[time] - prev_time == 1) & (prev_seg == d[segment]) & d["log_density"].notna()
    d["dlog"] = (d["log_density"] - g["log_density"].shift(1)).where(valid)
    if d["dlog"].notna().sum() < 2:
        raise EventStudyError("Fewer than two valid within-segment year-on-year changes: no events can be defined.")
    size = g["count"].transform("mean")
    d["size_class"] = pd.qcut(size.rank(method="first"), size_classes, labels=False) if size_classes > 1 else 0
    sd = d.groupby("size_class")["dlog"].transform("std")
    d["z"] = d["dlog"] / sd
    sign = 1.0 if direction == "rise" else -1.0
    d["event"] = (sign * d["dlog"] >= min_log_change) & (sign * d["z"] >= min_sd)
    changes = d.loc[d["dlog"].notna(), [entity, time, segment, "size_class", "dlog", "z", "event"]]
    first = changes.loc[changes["event"]].groupby(entity)[time].min()
    units = pd.Index(d[entity].unique(), name=entity)
    cohort = first.reindex(units).fillna(_NEVER).astype(int).rename("cohort")
    return EventDefinition(direction, float(min_log_change), float(min_sd), changes.reset_index(drop=True), cohort)


# --------------------------------------------------------------------------------------
# Two-stage DiD
# --------------------------------------------------------------------------------------


def _fe_design(frame: pd.DataFrame, fe: Sequence[str], untreated: np.ndarray) -> sp.csr_matrix:
    """Sparse dummies of two fixed-effect dimensions: every level of the first, and every
    level of the second except one per connected component of the (untreated) bipartite
    graph between them, so that the untreated design has full column rank."""
    if len(fe) != 2:
        raise EventStudyError(f"The first stage takes exactly two fixed-effect dimensions, got {list(fe)!r}.")
    a = pd.factorize(frame[fe[0]])[0]
    b = pd.factorize(frame[fe[1]])[0]
    na, nb = a.max() + 1, b.max() + 1
    n = len(frame)
    A = sp.csr_matrix((np.ones(n), (np.arange(n), a)), shape=(n, na))
    B = sp.csr_matrix((np.ones(n), (np.arange(n), b)), shape=(n, nb))
    u = untreated
    graph = sp.coo_matrix((np.ones(u.sum()), (a[u], na + b[u])), shape=(na + nb, na + nb))
    _, comp = connected_components(graph, directed=False)
    drop = []
    seen = set()
    for level in range(nb):  # first level of the second dimension in each component
        c = comp[na + level]
        if c not in seen:
            seen.add(c)
            drop.append(level)
    keep = np.setdiff1d(np.arange(nb), drop)
    return sp.hstack([A, B[:, keep]], format="csr")


@dataclass
class _TwoStage:
    params: pd.Series
    cov: pd.DataFrame
    first_resid: np.ndarray
    n_clusters: int


@dataclass
class _FirstStage:
    """Gardner's first stage on one sample: what every second stage on that sample reuses."""

    X1: sp.csr_matrix  # fixed-effect dummies, all rows
    X10: sp.csr_matrix  # the same with the treated rows set to zero
    XtX: sp.csc_matrix  # X10'X10
    u1: np.ndarray  # y minus the predicted fixed effects, all rows


def _first_stage(d: pd.DataFrame, outcome: str, treated: str, fe: Sequence[str]) -> _FirstStage:
    D = d[treated].to_numpy(dtype=bool)
    u0 = ~D
    for f in fe:
        # every level needs an untreated row (on integer codes: a set of the string levels was slow)
        codes, levels = pd.factorize(d[f])
        seen = np.bincount(codes[u0 & (codes >= 0)], minlength=len(levels)) > 0
        if not seen.all():
            missing = set(levels[~seen])
            raise EventStudyError(
                f"{len(missing)} level(s) of {f!r} have no untreated observation, so their effect cannot be "
                f"estimated in the first stage (e.g. {sorted(map(str, missing))[:3]}); drop always-treated units."
            )
    y = d[outcome].to_numpy(dtype=float)
    X1 = _fe_design(d, fe, u0)
    X10 = sp.diags(u0.astype(float)) @ X1
    XtX = (X10.T @ X10).tocsc()
    coef1 = spsolve(XtX, X10.T @ y)
    return _FirstStage(X1, X10, XtX, y - X1 @ coef1)


def _second_stage(first: _FirstStage, d: pd.DataFrame, regressors: Sequence[str], cluster: str) -> _TwoStage:
    X1, X10, XtX, u1 = first.X1, first.X10, first.XtX, first.u1
    X2 = d[list(regressors)].to_numpy(dtype=float)
    A = X2.T @ X2
    if np.linalg.matrix_rank(A) < A.shape[0]:
        raise EventStudyError("The second-stage regressors are collinear (an event-time cell is empty?).")
    b = np.linalg.solve(A, X2.T @ u1)
    u2 = u1 - X2 @ b
    gamma = spsolve(XtX, sp.csc_matrix(X1.T @ X2))  # (p x k): (X10'X10)^{-1} X1'X2
    gamma = gamma.toarray() if sp.issparse(gamma) else np.asarray(gamma).reshape(XtX.shape[0], -1)
    scores = X2 * u2[:, None] - (X10.multiply(u1[:, None]) @ gamma)
    codes, uniques = pd.factorize(d[cluster])
    W = np.zeros((len(uniques), X2.shape[1]))
    np.add.at(W, codes, scores)
    Ainv = np.linalg.inv(A)
    V = Ainv @ (W.T @ W) @ Ainv
    names = list(regressors)
    return _TwoStage(pd.Series(b, index=names), pd.DataFrame(V, index=names, columns=names), u1, len(uniques))


def did2s(
    df: pd.DataFrame,
    outcome: str,
    treated: str,
    regressors: Sequence[str],
    fe: Sequence[str],
    cluster: str,
) -> _TwoStage:
    """Gardner's two-stage DiD on ``df`` (no missing values): first stage on rows with
    ``treated`` False, two fixed-effect dimensions ``fe``; second stage of the residualised
    ``outcome`` on ``regressors`` (no constant); GMM covariance clustered by ``cluster``.

    Every level of ``fe`` must appear among the untreated rows (else its effect cannot be
    predicted for the treated rows): checked here.
    """
    return _second_stage(_first_stage(df, outcome, treated, fe), df, regressors, cluster)


# --------------------------------------------------------------------------------------
# Event studies
# --------------------------------------------------------------------------------------


def _term(e: int) -> str:
    return f"e_m{-e}" if e < 0 else f"e_p{e}"


@dataclass
class EventStudyResult:
    """Event-time coefficients of one outcome and one estimator.

    ``coefs``: one row per event time ``e`` (binned ends included): ``estimate``,
    ``std_error``, ``conf_low``/``conf_high`` (95%, normal), ``nobs`` (rows in the cell).
    ``cov``: covariance of the estimates (index = event times). ``att``, ``att_se``: the
    average effect over all treated rows (two-stage DiD: second stage on the treatment
    indicator; TWFE: the static TWFE coefficient). ``n_units``, ``n_treated_units``,
    ``cohorts`` (first-event years in the sample), ``nobs``, ``n_dropped``
    (rows removed because their fixed-effect level has no untreated row).
    """

    estimator: str
    outcome: str
    window: tuple[int, int]
    coefs: pd.DataFrame
    cov: pd.DataFrame
    att: float
    att_se: float
    nobs: int
    n_units: int
    n_treated_units: int
    cohorts: tuple[int, ...]
    n_dropped: int
    raw: Any = field(default=None, repr=False)

    @property
    def pre(self) -> pd.DataFrame:
        return self.coefs[self.coefs.index < 0]

    @property
    def post(self) -> pd.DataFrame:
        return self.coefs[self.coefs.index >= 0]


def _prepare(
    df: pd.DataFrame, outcome: str, cohort: str, unit: str, time: str, window, min_cohorts: int,
    fe: Sequence[str], extra: Sequence[str],
) -> tuple[pd.DataFrame, int]:
    for c in (outcome, cohort, unit, time, *fe, *extra):
        if c not in df.columns:
            raise EventStudyError(f"Column {c!r} is not in the data.")
    lo, hi = window
    if not (lo <= -2 and hi >= 0):
        raise EventStudyError(f"window must reach at least e=-2 before and e=0 after the event, got {window!r}.")
    d = df[list(dict.fromkeys([unit, time, cohort, outcome, *fe, *extra]))].dropna().copy()
    d[cohort] = d[cohort].astype(int)
    if d.groupby(unit)[cohort].nunique().max() > 1:
        raise EventStudyError(f"{cohort!r} must be constant within each {unit!r} (the year of the first event).")
    n_periods = d[time].nunique()
    if n_periods < 3:
        raise EventStudyError(
            f"Too few periods: {n_periods} distinct value(s) of {time!r} with {outcome!r} observed; an event study "
            "needs at least 3 (a pre-event placebo period, a reference period and an event period)."
        )
    d["treated"] = (d[cohort] != _NEVER) & (d[time] >= d[cohort])
    # Rows whose fixed-effect level has no untreated row (units treated in every period of
    # the sample, or in every period of a segment with county-by-segment effects) cannot be
    # given a counterfactual: drop them, in both estimators, so that the samples agree.
    n0 = len(d)
    while True:
        ok = np.ones(len(d), dtype=bool)
        for f in fe:
            ok &= d.groupby(f)["treated"].transform("min").eq(False).to_numpy()
        if ok.all():
            break
        d = d.loc[ok].copy()
    n_dropped = n0 - len(d)
    cohorts = sorted(set(d.loc[d[cohort] != _NEVER, cohort]))
    if not cohorts:
        raise EventStudyError(
            f"No events: no unit in the estimation sample of {outcome!r} has a first-event year in {cohort!r} "
            "(all are 0 = never treated)."
        )
    if len(cohorts) < min_cohorts:
        raise EventStudyError(
            f"Events only in {len(cohorts)} cohort(s) ({', '.join(map(str, cohorts))}): the timing is not staggered, "
            f"and this wrapper expects at least {min_cohorts}; pass min_cohorts=1 for a single-cohort design."
        )
    if (d[cohort] == _NEVER).sum() == 0 and len(cohorts) < 2:
        raise EventStudyError("One cohort and no never-treated units: event time and calendar time are collinear.")
    rel = np.where(d[cohort] != _NEVER, d[time] - d[cohort], np.nan)
    d["rel_time"] = np.clip(rel, lo, hi)
    for e in range(lo, hi + 1):
        d[_term(e)] = (d["rel_time"] == e).astype(float)
    return d, n_dropped


def event_study(
    df: pd.DataFrame,
    outcome: str,
    cohort: str = "cohort",
    estimator: str = "did2s",
    unit: str = "fips",
    time: str = "year",
    window: tuple[int, int] = (-4, 3),
    cluster: str | None = None,
    fe: Sequence[str] | None = None,
    min_cohorts: int = 2,
) -> EventStudyResult:
    """Event-time effects on ``outcome`` of events in year ``cohort`` (0 = never treated).

    ``estimator``: ``"did2s"`` (Gardner's two-stage DiD, first stage with the two fixed
    effects ``fe``, default ``(unit, time)``) or ``"twfe"`` (OLS of ``outcome`` on the
    event-time dummies with the fixed effects ``fe``, pyfixest ``feols``, reference ``e=-1``).
    ``fe=("fips_segment", "year")`` gives each county one level per series segment.
    Standard errors are clustered by ``cluster`` (default ``unit``). Rows with a missing value
    are dropped, and so are rows whose fixed-effect level has no untreated row (always-treated
    units); ``n_dropped`` counts those rows.

    Raises :class:`EventStudyError` for fewer than 3 periods, no events, fewer than
    ``min_cohorts`` event cohorts, or a cohort that varies within a unit.
    """
    if estimator not in ESTIMATORS:
        raise EventStudyError(f"Unknown estimator {estimator!r}; expected one of {', '.join(map(repr, ESTIMATORS))}.")
    cluster = cluster or unit
    fe = tuple(fe) if fe is not None else (unit, time)
    if len(fe) != 2:
        raise EventStudyError(f"fe must name exactly two fixed-effect columns, got {list(fe)!r}.")
    d, n_dropped = _prepare(df, outcome, cohort, unit, time, window, min_cohorts, fe=fe, extra=(cluster,))
    lo, hi = window
    times = list(range(lo, hi + 1))
    if estimator == "did2s":
        terms = [_term(e) for e in times]
        keep = [t for t in terms if d[t].sum() > 0]
        first = _first_stage(d, outcome, "treated", fe)  # the same for both second stages
        es = _second_stage(first, d, keep, cluster)
        d["treated_f"] = d["treated"].astype(float)
        static = _second_stage(first, d, ["treated_f"], cluster)
        params, cov = es.params, es.cov
        att, att_se = float(static.params.iloc[0]), float(np.sqrt(static.cov.iloc[0, 0]))
        raw = es
    else:
        import pyfixest as pf

        terms = [_term(e) for e in times if e != -1]
        keep = [t for t in terms if d[t].sum() > 0]
        fml = f"{outcome} ~ {' + '.join(keep)} | {fe[0]} + {fe[1]}"
        fit_es = pf.feols(fml, data=d, vcov={"CRV1": cluster})
        d["treated_f"] = d["treated"].astype(float)
        fit_static = pf.feols(f"{outcome} ~ treated_f | {fe[0]} + {fe[1]}", data=d, vcov={"CRV1": cluster})
        params = fit_es.coef().reindex(keep)
        cov = pd.DataFrame(fit_es._vcov, index=fit_es.coef().index, columns=fit_es.coef().index).loc[keep, keep]
        att, att_se = float(fit_static.coef()["treated_f"]), float(fit_static.se()["treated_f"])
        raw = fit_es
    inv = {_term(e): e for e in times}
    se = np.sqrt(np.diag(cov.to_numpy()))
    coefs = pd.DataFrame(
        {
            "estimate": params.to_numpy(),
            "std_error": se,
            "conf_low": params.to_numpy() - 1.959963984540054 * se,
            "conf_high": params.to_numpy() + 1.959963984540054 * se,
            "nobs": [int(d[t].sum()) for t in keep],
        },
        index=pd.Index([inv[t] for t in keep], name="event_time"),
    )
    cov = pd.DataFrame(cov.to_numpy(), index=coefs.index, columns=coefs.index)
    treated_units = d.loc[d[cohort] != _NEVER, unit].nunique()
    return EventStudyResult(
        estimator=estimator,
        outcome=outcome,
        window=(lo, hi),
        coefs=coefs,
        cov=cov,
        att=att,
        att_se=att_se,
        nobs=len(d),
        n_units=int(d[unit].nunique()),
        n_treated_units=int(treated_units),
        cohorts=tuple(int(c) for c in sorted(set(d.loc[d[cohort] != _NEVER, cohort]))),
        n_dropped=n_dropped,
        raw=raw,
    )


def pretrend_test(result: EventStudyResult, exclude: Sequence[int] = ()) -> TestResult:
    """Joint Wald test that every pre-event coefficient (event time < 0, except ``exclude``)
    is zero: :math:`W = b'V^{-1}b \\sim \\chi^2_k` with the clustered covariance."""
    pre = [e for e in result.coefs.index if e < 0 and e not in set(exclude)]
    if not pre:
        raise EventStudyError("No pre-event coefficients to test.")
    b = result.coefs.loc[pre, "estimate"].to_numpy()
    V = result.cov.loc[pre, pre].to_numpy()
    stat = float(b @ np.linalg.solve(V, b))
    return TestResult(
        name=f"Pre-trend Wald test ({ESTIMATORS[result.estimator]})",
        statistic=stat,
        df=len(pre),
        pvalue=float(stats.chi2.sf(stat, len(pre))),
        terms=tuple(str(e) for e in pre),
        cov_type="clustered",
    )


def event_time_plot(
    results: Mapping[str, EventStudyResult],
    ax=None,
    ylabel: str | None = None,
    offset: float = 0.12,
):
    """Event-time coefficients with 95% intervals, one series per result (dodged), a dashed
    zero line and a dotted line between e=-1 and e=0. Returns the Axes (on a new figure in the
    book style, :func:`analysis.plots.subplots`, if ``ax`` is None)."""
    if ax is None:
        from analysis import plots

        _, ax = plots.subplots(figsize=(6.5, 4))
    items = list(results.items())
    if not items:
        raise EventStudyError("Nothing to plot.")
    shifts = (np.arange(len(items)) - (len(items) - 1) / 2) * offset
    markers = ["o", "s", "^", "D"]
    for k, ((label, r), s) in enumerate(zip(items, shifts)):
        c = r.coefs
        x = c.index.to_numpy(dtype=float) + s
        ax.errorbar(
            x, c["estimate"], yerr=[c["estimate"] - c["conf_low"], c["conf_high"] - c["estimate"]],
            fmt=markers[k % 4], color=f"C{k}", capsize=2, markersize=5, linewidth=1.2, label=label,
        )
    ax.axhline(0, color="0.4", linestyle="--", linewidth=1)
    ax.axvline(-0.5, color="0.6", linestyle=":", linewidth=1)
    lo, hi = items[0][1].window
    ticks = list(range(lo, hi + 1))
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"≤{t}" if t == lo else (f"≥{t}" if t == hi else str(t)) for t in ticks])
    ax.set_xlabel("Years since the event")
    ax.set_ylabel(ylabel or items[0][1].outcome)
    ax.legend(frameon=False, loc="best")
    return ax


def event_time_panels(
    panels: Mapping[str, Mapping[str, EventStudyResult]],
    ylabels: Mapping[str, str] | None = None,
    ncols: int = 2,
):
    """One :func:`event_time_plot` per entry of ``panels`` (panel title -> {series label ->
    result}), in rows of at most ``min(ncols, 2)`` panels, 5 in wide each and 3.6 in per row
    (:func:`analysis.plots.panel_grid`, the book style: a figure is at most 10 in wide, so three
    or four panels wrap into a 2 x 2 grid). Returns the Figure."""
    from analysis import plots

    if not panels:
        raise EventStudyError("Nothing to plot.")
    cols = max(1, min(int(ncols), 2, len(panels)))  # one panel: one 5 in column
    fig, axes = plots.panel_grid(len(panels), max_cols=cols, width=min(plots.MAX_WIDTH_IN, 5.0 * cols),
                                 row_height=3.6)
    for ax, (title, results) in zip(axes, panels.items()):
        event_time_plot(results, ax=ax, ylabel=(ylabels or {}).get(title))
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def bench_event_study(df: pd.DataFrame) -> float:
    """Seconds to define rise events on ``df`` (the annual county panel) and estimate one
    two-stage DiD and one TWFE event study of ``share_employed``: the chapter's unit of work."""
    t = _time.perf_counter()
    ev = define_events(df, "rise")
    d = df.merge(ev.cohort.reset_index(), on="fips", how="left")
    event_study(d, "share_employed", estimator="did2s")
    event_study(d, "share_employed", estimator="twfe")
    return _time.perf_counter() - t


#: Quality flag of each annual outcome (Urban Institute: 1 best, 3 weakest).
QUALITY_COLUMNS = {
    "share_employed": "share_employed_quality",
    "log_income_p20": "income_quality",
    "log_income_p50": "income_quality",
    "log_income_p80": "income_quality",
    "injury_death_rate_per_100k": "injury_death_quality",
    "low_birth_weight_share": "low_birth_weight_quality",
    "poverty_exposure_share": "poverty_exposure_quality",
}


def quality_robustness(df: pd.DataFrame, outcomes, regressor: str = "density_sd",
                       max_quality: int = 2) -> pd.DataFrame:
    """The county-by-segment model on all rows and on rows with quality flag <= ``max_quality``.

    Many quality-3 values of the ACS and CDC outcomes repeat across the counties of a state in a
    year (they are not county-specific), which would pull a within-county estimate towards
    zero; this shows whether dropping them changes the answer. One row per outcome and sample.
    """
    rows = []
    for y in outcomes:
        if y not in QUALITY_COLUMNS:
            raise EventStudyError(f"No quality flag is known for {y!r}; known: {sorted(QUALITY_COLUMNS)}.")
        q = QUALITY_COLUMNS[y]
        for sample, d in (("all", df), (f"quality <= {max_quality}", df[df[q] <= max_quality])):
            r = segment_fit(d, y, regressor)
            rows.append({"outcome": y, "sample": sample, "estimate": float(r.params[regressor]),
                         "std_error": float(r.std_errors[regressor]), "p_value": float(r.pvalues[regressor]),
                         "nobs": int(r.nobs), "county_segments": int(r.n_units)})
    return pd.DataFrame(rows).set_index(["outcome", "sample"])
