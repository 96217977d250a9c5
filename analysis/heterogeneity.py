r"""For whom, and which organisations? Heterogeneous within-county effects (Chapter 7).

Every model here is a two-way fixed-effects regression on the county wave panel, with county
and wave effects and standard errors clustered by county (:mod:`analysis.estimation`).

Group-specific slopes
---------------------
For a time-invariant grouping of counties :math:`g(i)` (the 1997 poverty tercile, the 1997
size class, the Census region) the model is

.. math:: y_{it} = \sum_{g} \beta_g\, x_{it}\,1\{g(i)=g\} + \alpha_i + \delta_t + u_{it},

one slope per group, entered as the regressors ``x * 1{g}`` that
:func:`interaction_columns` builds. The group main effects :math:`1\{g(i)=g\}` are constant
within a county, so the county effects :math:`\alpha_i` absorb them and they do not appear.
The common year effects :math:`\delta_t` do *not* absorb group-specific shocks; with
``group_by_wave=True`` they are replaced by group-by-wave effects :math:`\delta_{g(i)t}`, and
the slopes then equal those of separate TWFE regressions in each group (:func:`split_sample`).
:func:`wald_equal` tests :math:`H_0:\beta_1=\dots=\beta_G` with the clustered covariance.

Organisation types
------------------
The four type densities :math:`x^{(k)}` (civic and religious; business, professional, labour
and political; recreation and sports; non-profits) enter one regression together. They are in
different units (establishments or organisations per 10,000 people, with within-county SDs
that differ by a factor of ten), so they are compared per one within-county SD:
:math:`\theta_k = s_k\beta_k`, :math:`s_k` the SD of :math:`x^{(k)}_{it}-\bar x^{(k)}_i` on the
estimation sample; the equality test is on the :math:`\theta_k` (the SDs are treated as fixed).

Multiple comparisons
--------------------
:func:`holm` is Holm's (1979) step-down adjustment. :func:`romano_wolf` is the Romano-Wolf
(2005, 2016) step-down adjustment on bootstrap t statistics, which accounts for the dependence
between the tests; the bootstrap (:func:`wild_bootstrap_t`) is the restricted wild cluster
bootstrap (WCR, Rademacher weights by county, Cameron, Gelbach & Miller 2008; the "11" variant
of Roodman et al. 2019). One matrix of county weights is shared by every model of a family, so
the bootstrap reproduces the joint distribution of t statistics from different regressions and
outcomes. The bootstrap works on the county-demeaned data with the wave dummies as regressors,
which is exact: the restricted residuals have zero county means and the weights are constant
within a county, so county demeaning leaves the bootstrap errors unchanged.

References: Holm (1979) *Scand. J. Statist.* 6(2); Romano & Wolf (2005) *Econometrica* 73(4);
Romano & Wolf (2016) *Stat. Probab. Lett.* 113; Clarke, Romano & Wolf (2020) *Stata J.* 20(4);
Cameron, Gelbach & Miller (2008) *REStat* 90(3); Roodman, MacKinnon, Nielsen & Webb (2019)
*Stata J.* 19(1).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from analysis.estimation import (
    ModelSpec,
    PanelResult,
    SpecificationError,
    TestResult,
    fit,
    variance_decomposition,
)

__all__ = [
    "BETTER_SIGN",
    "DENSITY",
    "DIMENSIONS",
    "OUTCOMES",
    "TYPE_DENSITIES",
    "ChapterResults",
    "GroupEffects",
    "Hypothesis",
    "ESTABLISHMENT_COUNTS",
    "add_baseline_groups",
    "largest_county_share",
    "overall_effect",
    "source_gaps",
    "without_source_gaps",
    "baseline_tercile",
    "bench_heterogeneity",
    "bootstrap_pvalues",
    "effects_figure",
    "fit_by_group",
    "fit_by_type",
    "fit_chapter7",
    "fit_single_types",
    "fmt_p",
    "group_hypotheses",
    "h5_contrasts",
    "holm",
    "interaction_columns",
    "rademacher_weights",
    "romano_wolf",
    "romano_wolf_family",
    "split_sample",
    "wald_equal",
    "wild_bootstrap_t",
]

#: Density of the group-specific models: associations per 1,000 people (Penn State ``assn``).
DENSITY = "assn_per_1k"
#: Outcomes of the wave panel, in chapter order.
OUTCOMES: tuple[str, ...] = ("unemployment_rate", "poverty_rate", "child_poverty_rate", "log_median_hh_income")
#: Sign of a "better" outcome change (the thesis' direction).
BETTER_SIGN: dict[str, int] = {
    "unemployment_rate": -1,
    "poverty_rate": -1,
    "child_poverty_rate": -1,
    "log_median_hh_income": 1,
}
#: The four organisation-type densities and their short labels.
TYPE_DENSITIES: dict[str, str] = {
    "civic_religious_per_10k": "Civic and religious",
    "business_prof_labour_political_per_10k": "Business, prof., labour, political",
    "recreation_sports_per_10k": "Recreation and sports",
    "nonprofits_per_10k": "Non-profits (NCCS)",
}
#: Dimensions of heterogeneity: grouping column -> label (``"type"`` is the type regression).
DIMENSIONS: dict[str, str] = {
    "type": "Organisation type",
    "pov_tercile_1997": "Poverty tercile, 1997",
    "pop_size_class": "Population, 1997",
    "census_region": "Census region",
}
TERCILE_LABELS = ("low", "middle", "high")
#: The County Business Patterns establishment counts behind ``assn_per_1k`` and the first three type densities.
ESTABLISHMENT_COUNTS: tuple[str, ...] = (
    "n_religious", "n_civic", "n_business", "n_political", "n_professional", "n_labour",
    "n_bowling", "n_fitness", "n_golf", "n_sports_clubs",
)
#: Densities computed from those counts (not ``nonprofits_per_10k``, which comes from NCCS).
ESTABLISHMENT_DENSITIES: tuple[str, ...] = (
    "assn_per_1k", "civic_religious_per_10k", "business_prof_labour_political_per_10k", "recreation_sports_per_10k",
)


# --------------------------------------------------------------------------------------
# Data checks
# --------------------------------------------------------------------------------------


def source_gaps(df: pd.DataFrame, min_population: int = 100_000) -> pd.DataFrame:
    """County-waves with no establishment of any type despite at least ``min_population`` residents.

    A zero count in every one of the ten CBP categories is plausible in a county of a few
    hundred people, not in a large one: there it is a gap in the source file coded as zero.
    Returns those rows (``fips``, ``year``, ``county_name``, ``population``, ``assn_per_1k``).
    """
    _need_columns(df, [*ESTABLISHMENT_COUNTS, "population", "fips", "year"])
    counts = df[list(ESTABLISHMENT_COUNTS)].astype(float)
    gap = counts.fillna(0).eq(0).all(axis=1) & df["population"].astype(float).ge(min_population)
    cols = [c for c in ("fips", "year", "county_name", "population", "assn_per_1k") if c in df.columns]
    return df.loc[gap, cols]


def without_source_gaps(df: pd.DataFrame, min_population: int = 100_000) -> pd.DataFrame:
    """``df`` with the establishment densities set missing in the rows of :func:`source_gaps`."""
    out = df.copy()
    idx = source_gaps(df, min_population).index
    present = [c for c in ESTABLISHMENT_DENSITIES if c in out.columns]
    out.loc[idx, present] = np.nan
    return out


def as_published(df: pd.DataFrame, min_population: int = 100_000) -> pd.DataFrame:
    """``df`` with the establishment densities of :func:`source_gaps` rows read as the source has
    them, zero. The panel builder sets them missing; this shows what reading the gap as zeros does."""
    out = df.copy()
    idx = source_gaps(df, min_population).index
    present = [c for c in ESTABLISHMENT_DENSITIES if c in out.columns]
    out.loc[idx, present] = 0.0
    return out


def largest_county_share(
    df: pd.DataFrame, density: str, group: str, entity: str = "fips", time: str = "year"
) -> pd.DataFrame:
    """How much of each group's within-county variation in ``density`` comes from one county.

    Within each level of ``group``: residuals of ``density`` after removing county and wave
    means (the variation a group-specific TWFE slope uses); ``top_share`` is the largest share
    of their sum of squares that a single county contributes, ``top_county`` that county, and
    ``effective_counties`` the inverse Herfindahl index of the county shares (equal shares in
    N counties give N). A share near one means the slope rests on a single county.
    """
    from analysis.estimation import within_transform

    _need_columns(df, [density, group, entity, time])
    rows = []
    for lev in _levels(df[group]):
        sub = df.loc[(df[group] == lev) & df[density].notna()]
        r = within_transform(sub, density, absorb="unit+time", entity=entity, time=time)[density]
        ss = (r**2).groupby(sub[entity]).sum()
        share = ss / ss.sum()
        rows.append({"group": str(lev), "counties": int(sub[entity].nunique()),
                     "top_county": share.idxmax(), "top_share": float(share.max()),
                     "effective_counties": float(1 / (share**2).sum())})
    return pd.DataFrame(rows).set_index("group")


# --------------------------------------------------------------------------------------
# Groups and interaction regressors
# --------------------------------------------------------------------------------------


def _need_columns(df: pd.DataFrame, cols, what: str = "column") -> None:
    if not isinstance(df, pd.DataFrame):
        raise SpecificationError(f"The data must be a pandas DataFrame, not {type(df).__name__}.")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise SpecificationError(f"Unknown {what}(s) {missing}: not columns of the data.")


def baseline_tercile(
    df: pd.DataFrame,
    col: str = "poverty_rate",
    year: int = 1997,
    entity: str = "fips",
    time: str = "year",
    labels: Sequence[str] = TERCILE_LABELS,
) -> pd.Series:
    """Each row's county tercile of ``col`` in the baseline ``year`` (unweighted terciles of counties).

    Returns an ordered categorical aligned with ``df`` (missing where the county has no baseline
    value). Fixed at the baseline so that a county keeps its group in every wave.
    """
    _need_columns(df, [col, entity, time])
    base = df.loc[df[time] == year, [entity, col]].dropna()
    if base.empty:
        raise SpecificationError(f"No county has {col!r} in the baseline {time} {year!r}.")
    if base[entity].duplicated().any():
        raise SpecificationError(f"The panel has more than one row per {entity} in {time} {year!r}.")
    cuts = pd.qcut(base[col], 3, labels=list(labels))
    by_unit = pd.Series(cuts.to_numpy(), index=base[entity].to_numpy())
    return pd.Series(
        pd.Categorical(df[entity].map(by_unit), categories=list(labels), ordered=True),
        index=df.index,
        name=f"{col}_tercile_{year}",
    )


def add_baseline_groups(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with ``pov_tercile_1997`` (county tercile of the 1997 poverty rate) added."""
    out = df.copy()
    out["pov_tercile_1997"] = baseline_tercile(df, "poverty_rate", 1997)
    return out


def _levels(s: pd.Series) -> list:
    if isinstance(s.dtype, pd.CategoricalDtype):
        present = set(s.dropna().unique())
        return [c for c in s.cat.categories if c in present]
    return sorted(s.dropna().unique())


def interaction_columns(
    df: pd.DataFrame, density: str, group: str, entity: str = "fips"
) -> tuple[pd.DataFrame, dict[str, object]]:
    """``df`` with one regressor ``density * 1{group == level}`` per level of ``group``.

    Returns the new frame and ``{column name: level}`` in level order (categorical order, else
    sorted). Rows with a missing group get NaN in every interaction column (so a fit drops
    them). ``group`` must be constant within each ``entity``: its main effects are then absorbed
    by the unit fixed effects, which is why they are not returned.
    """
    _need_columns(df, [density, group, entity])
    if not pd.api.types.is_numeric_dtype(df[density]):
        raise SpecificationError(f"density {density!r} is not numeric (dtype {df[density].dtype}).")
    spread = df.dropna(subset=[group]).groupby(entity)[group].nunique()
    varying = spread.index[spread > 1]
    if len(varying):
        raise SpecificationError(
            f"group {group!r} changes within {len(varying)} {entity}(s) (e.g. {list(varying[:3])}); the "
            "group-specific slopes need a time-invariant grouping (fix it at a baseline year)."
        )
    levels = _levels(df[group])
    if len(levels) < 2:
        raise SpecificationError(f"group {group!r} has {len(levels)} level(s); at least two are needed.")
    out = df.copy()
    names: dict[str, object] = {}
    g = df[group]
    x = df[density].astype(float)
    for lev in levels:
        name = f"{density}_x_{group}[{lev}]"
        out[name] = np.where(g.isna(), np.nan, x * (g == lev).astype(float))
        names[name] = lev
    return out, names


def _balanced(df: pd.DataFrame, cols, entity: str = "fips", time: str = "year") -> pd.DataFrame:
    """Rows of the units that have every column of ``cols`` in every period of ``df``."""
    n_periods = df[time].nunique()
    complete = df[list(cols)].notna().all(axis=1).to_numpy()
    # distinct periods of each unit among its complete rows, on integer codes (``isin`` on the
    # string county codes took most of the time)
    e, units = pd.factorize(df[entity])
    t, _ = pd.factorize(df[time])
    ok = complete & (e >= 0) & (t >= 0)
    nt = max(int(t.max()) + 1, 1)
    pairs = np.unique(e[ok].astype(np.int64) * nt + t[ok])
    periods = np.bincount(pairs // nt, minlength=len(units))
    out = df.loc[complete & (e >= 0) & (periods[e] == n_periods)]
    if out.empty:
        raise SpecificationError(f"No {entity} has {list(cols)} in all {n_periods} periods.")
    return out


# --------------------------------------------------------------------------------------
# Wald tests
# --------------------------------------------------------------------------------------


def wald_equal(result: PanelResult, terms: Sequence[str], scales: Sequence[float] | None = None) -> TestResult:
    r"""Wald test that the (scaled) coefficients on ``terms`` are all equal.

    :math:`H_0: s_1\beta_1 = s_2\beta_2 = \dots = s_m\beta_m` (``scales`` :math:`s`, default 1),
    as :math:`R\beta=0` with rows :math:`s_1e_1 - s_je_j`, :math:`j=2..m`;
    :math:`W=(R\hat\beta)'(R\hat VR')^{-1}R\hat\beta\sim\chi^2_{m-1}` with the model's
    (clustered) covariance :math:`\hat V`.
    """
    terms = list(terms)
    if len(terms) < 2:
        raise SpecificationError("An equality test needs at least two coefficients.")
    missing = [t for t in terms if t not in result.params.index]
    if missing:
        raise SpecificationError(f"{missing} are not coefficients of this model.")
    s = np.ones(len(terms)) if scales is None else np.asarray(scales, dtype=float)
    if s.shape != (len(terms),) or not np.all(np.isfinite(s)) or np.any(s == 0):
        raise SpecificationError(f"scales must be {len(terms)} finite non-zero numbers, not {scales!r}.")
    b = result.params[terms].to_numpy(dtype=float)
    V = result.cov.loc[terms, terms].to_numpy(dtype=float)
    R = np.zeros((len(terms) - 1, len(terms)))
    R[:, 0] = s[0]
    R[np.arange(len(terms) - 1), np.arange(1, len(terms))] = -s[1:]
    d = R @ b
    stat = float(d @ np.linalg.solve(R @ V @ R.T, d))
    q = len(terms) - 1
    return TestResult(
        name="Wald test of equal slopes" + (" (scaled)" if scales is not None else ""),
        statistic=stat,
        df=q,
        pvalue=float(stats.chi2.sf(stat, q)),
        terms=tuple(terms),
        cov_type=result.cov_type,
    )


# --------------------------------------------------------------------------------------
# Group-specific and type-specific fits
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupEffects:
    """Group-specific (or type-specific) effects of one outcome along one dimension.

    ``table`` has one row per group: ``term`` (the regressor), ``counties``, ``sd_within``
    (the SD used to scale: the density's within-county SD on the whole estimation sample, or
    each type's own), ``group_sd_within`` (the within-county SD of the density inside the
    group), ``coef`` (per unit of the regressor), ``estimate``/``std_error``/``conf_low``/
    ``conf_high`` per one within-county SD (95%, t with G-1 df), ``t`` and ``pvalue``.
    ``wald`` tests equal (scaled) effects; ``sample`` is the estimation sample (levels).
    """

    outcome: str
    dimension: str
    density: str | None
    result: PanelResult = field(repr=False)
    table: pd.DataFrame
    wald: TestResult
    sample: pd.DataFrame = field(repr=False)
    group_by_wave: bool = False


def _effects_table(result: PanelResult, terms: Mapping[str, object], scales: Mapping[str, float]) -> pd.DataFrame:
    rows = []
    for term, lev in terms.items():
        s = float(scales[term])
        b, se = float(result.params[term]), float(result.std_errors[term])
        lo, hi = (float(v) for v in result.conf_int.loc[term, ["lower", "upper"]])
        rows.append({
            "group": str(lev),
            "term": term,
            "sd_within": s,
            "coef": b,
            "estimate": b * s,
            "std_error": se * s,
            "conf_low": lo * s,
            "conf_high": hi * s,
            "t": b / se,
            "pvalue": float(result.pvalues[term]),
        })
    return pd.DataFrame(rows).set_index("group")


def fit_by_group(
    df: pd.DataFrame,
    outcome: str,
    group: str,
    density: str = DENSITY,
    group_by_wave: bool = False,
    entity: str = "fips",
    time: str = "year",
) -> GroupEffects:
    """Group-specific slopes of ``outcome`` on ``density`` by ``group`` (TWFE, clustered by county).

    Sample: the counties with the outcome, the density and the group in every wave (balanced,
    as in Chapter 3). Effects are scaled by the within-county SD of ``density`` on that whole
    sample, so every group's estimate is the effect of the *same* change in density. With
    ``group_by_wave`` the wave effects are group-specific (see the module docstring).
    """
    prep = _group_sample(df, outcome, group, density, entity, time)
    return _group_effects(prep, outcome, group, density, group_by_wave, entity, time)


def _group_sample(df: pd.DataFrame, outcome: str, group: str, density: str, entity: str, time: str) -> tuple:
    """What :func:`fit_by_group` needs besides the fit (the same with and without group-by-wave
    effects): the balanced sample with the interaction columns, the terms, the whole-sample
    within SD of density, and the counties and within SD of each group."""
    _need_columns(df, [outcome, group, density, entity, time])
    data, terms = interaction_columns(df, density, group, entity)
    data = _balanced(data, [outcome, density, group], entity, time)
    sd = variance_decomposition(data, density, entity).sd_within
    counts = data.groupby(group, observed=True)[entity].nunique()
    within = {
        str(lev): variance_decomposition(data.loc[data[group] == lev], density, entity).sd_within
        for lev in terms.values()
    }
    return data, terms, sd, counts, within


def _group_effects(prep: tuple, outcome: str, group: str, density: str, group_by_wave: bool, entity: str,
                   time: str) -> GroupEffects:
    data, terms, sd, counts, within = prep
    spec = ModelSpec(
        outcome=outcome,
        regressors=tuple(terms),
        estimator="twfe",
        effects="state-by-year" if group_by_wave else "unit+time",
        cov="cluster-unit",
        entity=entity,
        time=time,
        state=group,
    )
    result = fit(spec, data)
    table = _effects_table(result, terms, {t: sd for t in terms})
    table.insert(1, "counties", [int(counts[lev]) for lev in terms.values()])
    table.insert(3, "group_sd_within", [within[g] for g in table.index])
    return GroupEffects(outcome, group, density, result, table, wald_equal(result, list(terms)), data, group_by_wave)


def fit_by_type(
    df: pd.DataFrame,
    outcome: str,
    types: Mapping[str, str] | Sequence[str] = tuple(TYPE_DENSITIES),
    entity: str = "fips",
    time: str = "year",
) -> GroupEffects:
    """All type densities in one TWFE regression; effects per one within-county SD of each type.

    The equality test is on the standardised coefficients :math:`s_k\\beta_k`.
    """
    types = list(types)
    if len(types) < 2:
        raise SpecificationError("fit_by_type needs at least two type densities.")
    _need_columns(df, [outcome, *types, entity, time])
    data = _balanced(df, [outcome, *types], entity, time)
    spec = ModelSpec(outcome=outcome, regressors=tuple(types), estimator="twfe", cov="cluster-unit",
                     entity=entity, time=time)
    result = fit(spec, data)
    sds = {t: variance_decomposition(data, t, entity).sd_within for t in types}
    table = _effects_table(result, {t: t for t in types}, sds)
    table.insert(1, "counties", data[entity].nunique())
    table.insert(3, "group_sd_within", [sds[t] for t in types])
    wald = wald_equal(result, types, [sds[t] for t in types])
    return GroupEffects(outcome, "type", None, result, table, wald, data)


def fit_single_types(
    df: pd.DataFrame, outcome: str, types: Sequence[str] = tuple(TYPE_DENSITIES), entity: str = "fips", time: str = "year"
) -> pd.DataFrame:
    """Each type density alone (one TWFE regression each), on the sample of :func:`fit_by_type`.

    Columns ``estimate`` and ``std_error`` per one within-county SD of the type.
    """
    types = list(types)
    data = _balanced(df, [outcome, *types], entity, time)
    rows = []
    for t in types:
        r = _twfe_cluster(data, outcome, [t], entity, time)
        sd = variance_decomposition(data, t, entity).sd_within
        rows.append({"group": t, "estimate": float(r["params"][0]) * sd, "std_error": float(r["std_errors"][0]) * sd})
    return pd.DataFrame(rows).set_index("group")


def overall_effect(df: pd.DataFrame, outcome: str, density: str = DENSITY, entity: str = "fips",
                   time: str = "year") -> dict[str, float]:
    """The TWFE effect of ``density`` on ``outcome`` in all counties, per one within-county SD.

    Balanced sample (the counties with both in every wave), county-clustered CR1 errors. Returns
    ``estimate``, ``std_error``, ``conf_low``, ``conf_high`` (95%), ``pvalue`` and ``counties``.
    """
    _need_columns(df, [outcome, density, entity, time])
    data = _balanced(df, [outcome, density], entity, time)
    r = _twfe_cluster(data, outcome, [density], entity, time)
    sd = variance_decomposition(data, density, entity).sd_within
    return {"estimate": float(r["params"][0]) * sd, "std_error": float(r["std_errors"][0]) * sd,
            "conf_low": float(r["conf_low"][0]) * sd, "conf_high": float(r["conf_high"][0]) * sd,
            "pvalue": float(r["pvalues"][0]), "counties": int(data[entity].nunique())}


def split_sample(
    df: pd.DataFrame, outcome: str, group: str, density: str = DENSITY, entity: str = "fips", time: str = "year"
) -> pd.DataFrame:
    """Separate TWFE regressions of ``outcome`` on ``density`` within each level of ``group``.

    On the sample of :func:`fit_by_group`, scaled by the same whole-sample within-county SD.
    The slopes equal those of ``fit_by_group(..., group_by_wave=True)``: each group then has its
    own wave effects, and the county effects are group-specific anyway. Columns: ``counties``,
    ``estimate``, ``std_error`` (per one within-county SD).
    """
    _need_columns(df, [outcome, group, density, entity, time])
    data = _balanced(df, [outcome, density, group], entity, time)
    sd = variance_decomposition(data, density, entity).sd_within
    rows = []
    for lev in _levels(data[group]):
        sub = data.loc[data[group] == lev]
        r = _twfe_cluster(sub, outcome, [density], entity, time)
        rows.append({"group": str(lev), "counties": sub[entity].nunique(),
                     "estimate": float(r["params"][0]) * sd, "std_error": float(r["std_errors"][0]) * sd})
    return pd.DataFrame(rows).set_index("group")


# --------------------------------------------------------------------------------------
# Multiple-comparison adjustments
# --------------------------------------------------------------------------------------


def _as_pvalues(p) -> np.ndarray:
    p = np.asarray(p, dtype=float)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"p-values must be a non-empty 1-d array, got shape {p.shape}.")
    if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError("p-values must be finite numbers in [0, 1].")
    return p


def holm(pvalues) -> np.ndarray:
    r"""Holm (1979) step-down adjusted p-values, in the input order.

    With :math:`p_{(1)}\le\dots\le p_{(m)}`:
    :math:`\tilde p_{(j)} = \max_{l\le j}\min\{1, (m-l+1)p_{(l)}\}`. Rejecting
    :math:`\tilde p\le\alpha` controls the family-wise error rate at :math:`\alpha` under any
    dependence.
    """
    p = _as_pvalues(pvalues)
    m = p.size
    order = np.argsort(p, kind="mergesort")
    adj_sorted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adj_sorted
    return out


def romano_wolf(t_stats, boot_t_stats) -> np.ndarray:
    r"""Romano-Wolf step-down adjusted p-values from bootstrap t statistics (two-sided).

    ``t_stats``: the :math:`S` observed statistics; ``boot_t_stats``: a :math:`B\times S` array
    of bootstrap statistics drawn under the null (null imposed, or centred at the estimate).
    Order the hypotheses by :math:`|t|`, largest first. For the :math:`s`-th,
    :math:`p^{init}_s = (1+\#\{b:\max_{j\ge s}|t^*_{b,j}|\ge|t_s|\})/(B+1)`, the max over the
    hypotheses not yet rejected at that step; the adjusted p-values are
    :math:`\max_{l\le s}p^{init}_l` (monotone in the step-down order), returned in input order
    (Romano & Wolf 2016, Algorithm 4.1; Clarke, Romano & Wolf 2020).
    """
    t = np.abs(np.asarray(t_stats, dtype=float))
    tb = np.abs(np.asarray(boot_t_stats, dtype=float))
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"t_stats must be a non-empty 1-d array, got shape {t.shape}.")
    if tb.ndim != 2 or tb.shape[1] != t.size:
        raise ValueError(f"boot_t_stats must be B x {t.size} (one column per hypothesis), got shape {tb.shape}.")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(tb))):
        raise ValueError("t statistics must be finite.")
    B, S = tb.shape
    order = np.argsort(-t, kind="mergesort")
    # running max over the hypotheses from step s to the last: reverse cumulative max
    tail_max = np.maximum.accumulate(tb[:, order][:, ::-1], axis=1)[:, ::-1]
    pinit = (1 + (tail_max >= t[order][None, :]).sum(axis=0)) / (B + 1)
    adj = np.maximum.accumulate(np.minimum(pinit, 1.0))
    out = np.empty(S)
    out[order] = adj
    return out


def bootstrap_pvalues(t_stats, boot_t_stats) -> np.ndarray:
    """Unadjusted two-sided bootstrap p-values, :math:`(1+\\#\\{|t^*_b|\\ge|t|\\})/(B+1)`, per hypothesis."""
    t = np.abs(np.asarray(t_stats, dtype=float))
    tb = np.abs(np.asarray(boot_t_stats, dtype=float))
    if tb.ndim != 2 or tb.shape[1] != t.size:
        raise ValueError(f"boot_t_stats must be B x {t.size}, got shape {tb.shape}.")
    return (1 + (tb >= t[None, :]).sum(axis=0)) / (tb.shape[0] + 1)


# --------------------------------------------------------------------------------------
# Wild cluster bootstrap
# --------------------------------------------------------------------------------------


def rademacher_weights(clusters, reps: int, seed: int) -> pd.DataFrame:
    """Rademacher weights (+1/-1 with probability 1/2), one row per cluster, one column per draw.

    Rows are the sorted unique ``clusters``; the draw is
    ``np.random.default_rng(seed).choice([-1, 1], size=G * reps).reshape(G, reps)``, the same
    as the ``wildboottest`` package (and so pyfixest's ``wildboottest``/``rwolf``) for the same
    seed and clusters.
    """
    if not isinstance(reps, (int, np.integer)) or reps < 1:
        raise ValueError(f"reps must be a positive integer, not {reps!r}.")
    ids = np.unique(np.asarray(clusters))
    if ids.size < 2:
        raise ValueError("The wild cluster bootstrap needs at least two clusters.")
    if ids.size < 20 and 2.0**ids.size < reps:
        warnings.warn(f"Only {2 ** ids.size} distinct Rademacher draws exist for {ids.size} clusters; "
                      f"{reps} draws repeat them.", stacklevel=2)
    # The last draw is kept: a chapter draws the same matrix for several families (the draw
    # of 1,999 columns for 3,100 counties takes a tenth of a second); callers get a copy.
    key = None
    if isinstance(seed, (int, np.integer)):
        key = (ids.dtype.str, tuple(ids.tolist()), int(reps), int(seed))
    if key is None or _LAST_WEIGHTS.get("key") != key:
        rng = np.random.default_rng(seed)
        v = rng.choice([-1, 1], size=ids.size * reps).reshape(ids.size, reps).astype(float)
        _LAST_WEIGHTS.clear()
        if key is not None:
            _LAST_WEIGHTS.update(key=key, values=v)
    else:
        v = _LAST_WEIGHTS["values"]
    return pd.DataFrame(v.copy(), index=pd.Index(ids, name="cluster"))


_LAST_WEIGHTS: dict = {}


@dataclass
class _ClusterDesign:
    """County-demeaned design aggregated by cluster (rows of the cluster arrays = sorted clusters)."""

    names: list[str]
    clusters: np.ndarray  # sorted unique cluster ids
    A: np.ndarray  # X'X (k x k)
    H: np.ndarray  # X_g'X_g (G x k x k)
    Sy: np.ndarray  # X_g'y_g (G x k)
    b: np.ndarray
    ssc: float


def _cluster_design(data: pd.DataFrame, outcome: str, regressors: Sequence[str], entity: str, time: str) -> _ClusterDesign:
    cols = [outcome, *regressors]
    _need_columns(data, [*cols, entity, time])
    d = data.dropna(subset=cols).sort_values([entity, time])
    if d.duplicated([entity, time]).any():
        raise SpecificationError(f"The data are not uniquely indexed by ({entity}, {time}).")
    tv = d[time].to_numpy()
    waves = np.sort(np.unique(tv))
    names = [*regressors, *(f"{time}[{w}]" for w in waves[1:])]
    codes, ids = pd.factorize(d[entity], sort=True)
    n_g = np.bincount(codes)
    # outcome, regressors and wave dummies (first wave omitted), then county-demeaned
    Z = np.column_stack([d[outcome].to_numpy(float), *(d[r].to_numpy(float) for r in regressors),
                         *((tv == w).astype(float) for w in waves[1:])])
    means = np.column_stack([np.bincount(codes, weights=Z[:, j]) / n_g for j in range(Z.shape[1])])
    Z = Z - means[codes]
    y, Xd = Z[:, 0], Z[:, 1:]
    G, k, n = ids.size, Xd.shape[1], Xd.shape[0]
    # cluster sums X_g'X_g and X_g'y_g: rows sorted by cluster make each cluster a run of rows
    # (np.add.reduceat adds the rows of a run in order, as np.add.at would, much faster)
    XX, Xy = Xd[:, :, None] * Xd[:, None, :], Xd * y[:, None]
    if np.all(codes[1:] >= codes[:-1]):
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        H, Sy = np.add.reduceat(XX, starts, axis=0), np.add.reduceat(Xy, starts, axis=0)
    else:  # an entity type whose sort order differs from its factorisation: sum by code
        H, Sy = np.zeros((ids.size, Xd.shape[1], Xd.shape[1])), np.zeros((ids.size, Xd.shape[1]))
        np.add.at(H, codes, XX)
        np.add.at(Sy, codes, Xy)
    A = H.sum(axis=0)
    if np.linalg.matrix_rank(A) < k:
        raise SpecificationError(f"The regressors {list(regressors)} are collinear after removing county means.")
    b = np.linalg.solve(A, Sy.sum(axis=0))
    # CR1 as in analysis.estimation: G/(G-1) (n-1)/(n-K), K = regressors + wave dummies + constant
    ssc = G / (G - 1) * (n - 1) / (n - (k + 1))
    return _ClusterDesign(names, np.asarray(ids), A, H, Sy, b, ssc)


def _twfe_cluster(data: pd.DataFrame, outcome: str, regressors: Sequence[str], entity: str = "fips",
                  time: str = "year") -> dict:
    """TWFE of ``outcome`` on ``regressors`` (county and wave effects) with CR1 errors by ``entity``.

    The closed form of :func:`_cluster_design`, without linearmodels: the same estimates, standard
    errors, t(G-1) intervals and p-values as :func:`analysis.estimation.fit` with
    ``estimator="twfe", cov="cluster-unit"`` (to rounding; ``tests/test_heterogeneity.py``).
    Returns ``params``, ``std_errors``, ``conf_low``, ``conf_high``, ``pvalues`` (arrays in the
    order of ``regressors``) and ``clusters``.
    """
    regressors = list(regressors)
    dz = _cluster_design(data, outcome, regressors, entity, time)
    Ainv = np.linalg.inv(dz.A)
    Su = dz.Sy - dz.H @ dz.b
    V = dz.ssc * (Ainv @ (Su.T @ Su) @ Ainv)
    m = len(regressors)
    b, se = dz.b[:m], np.sqrt(np.diag(V)[:m])
    df_inf = float(dz.clusters.size - 1)
    q = float(stats.t.ppf(0.975, df_inf))
    return {"params": b, "std_errors": se, "conf_low": b - q * se, "conf_high": b + q * se,
            "pvalues": 2 * stats.t.sf(np.abs(b / se), df_inf), "clusters": int(dz.clusters.size)}


def _weight_rows(weights: pd.DataFrame, clusters: np.ndarray) -> np.ndarray:
    """Positions of ``clusters`` in the rows of ``weights`` (raises if one has no weights)."""
    pos = weights.index.get_indexer(clusters)
    if (pos < 0).any():
        missing = clusters[pos < 0]
        raise SpecificationError(f"{len(missing)} cluster(s) of the data have no bootstrap weights, e.g. {list(missing[:3])}.")
    return pos


def _bootstrap_t(dz: _ClusterDesign, regressors: list[str], contrasts: Sequence[Mapping[str, float]],
                 W: np.ndarray, W2: np.ndarray | None, impose_null: bool,
                 rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The computation of :func:`wild_bootstrap_t` on a cluster design, with ``W`` the weights
    (one row per cluster, B columns) and ``W2`` their squares (None when every weight is +1 or
    -1); ``rows[g]`` is the row of ``W`` of the design's g-th cluster (None: row g). Clusters of
    ``W`` that are not in the design enter the matrix products with zero scores, so that one
    weight matrix serves every model of a family without being copied."""
    if not contrasts:
        raise SpecificationError("Give at least one contrast (a mapping from regressor to weight).")
    k = len(dz.names)
    cs = []
    for c_map in contrasts:
        unknown = [r for r in c_map if r not in regressors]
        if unknown:
            raise SpecificationError(f"Contrast terms {unknown} are not regressors {regressors}.")
        c = np.zeros(k)
        for r, v in c_map.items():
            c[regressors.index(r)] = float(v)
        if not np.any(c):
            raise SpecificationError("A contrast has all weights zero.")
        cs.append(c)
    Ainv = np.linalg.inv(dz.A)
    Su = dz.Sy - dz.H @ dz.b  # unrestricted cluster scores, G x k
    t_obs, parts = [], []
    for c in cs:
        a = Ainv @ c
        se = np.sqrt(dz.ssc * np.sum((Su @ a) ** 2))
        t_obs.append(float(c @ dz.b) / se)
        beta = dz.b - a * (c @ dz.b) / (c @ a) if impose_null else dz.b
        S = dz.Sy - dz.H @ beta  # restricted cluster scores, G x k
        C = S @ a  # G
        Hrow = dz.H @ a  # G x k
        parts.append((c, S, C, Hrow))
    # Draw b: delta_b = A^{-1} S'w_b (beta* - beta_tilde) and the bootstrap scores
    # z_gb = w_gb C_g - Hrow_g'delta_b, so that
    # sum_g z_gb^2 = sum_g w_gb^2 C_g^2 - 2 delta_b'(sum_g Hrow_g C_g w_gb) + delta_b'(Hrow'Hrow) delta_b:
    # the G x B products of every contrast come from one matrix product with W.
    M = np.concatenate([np.concatenate([S, Hrow * C[:, None]], axis=1) for _, S, C, Hrow in parts], axis=1)
    C2 = np.column_stack([C**2 for _, _, C, _ in parts])  # G x m
    if rows is not None and not (len(rows) == W.shape[0] and np.array_equal(rows, np.arange(W.shape[0]))):
        M_all = np.zeros((W.shape[0], M.shape[1]))
        M_all[rows] = M
        M = M_all
        if W2 is not None:
            C2_all = np.zeros((W.shape[0], C2.shape[1]))
            C2_all[rows] = C2
            C2 = C2_all
    P = M.T @ W  # (2k m) x B
    Q = (C2.T @ W2) if W2 is not None else np.repeat(C2.sum(axis=0)[:, None], W.shape[1], axis=1)
    t_boot = []
    for j, (c, _, _, Hrow) in enumerate(parts):
        delta = Ainv @ P[2 * k * j : 2 * k * j + k]  # k x B
        U = P[2 * k * j + k : 2 * k * (j + 1)]  # k x B
        ss = Q[j] - 2 * np.sum(delta * U, axis=0) + np.sum(delta * ((Hrow.T @ Hrow) @ delta), axis=0)
        se_b = np.sqrt(dz.ssc * ss)
        t_boot.append((c @ delta) / se_b)
    return np.asarray(t_obs), np.column_stack(t_boot)


def wild_bootstrap_t(
    data: pd.DataFrame,
    outcome: str,
    regressors: Sequence[str],
    contrasts: Sequence[Mapping[str, float]],
    weights: pd.DataFrame,
    impose_null: bool = True,
    entity: str = "fips",
    time: str = "year",
) -> tuple[np.ndarray, np.ndarray]:
    r"""t statistics of linear contrasts in a TWFE model and their wild cluster bootstrap draws.

    Model: ``outcome`` on ``regressors`` with county and wave effects, CR1 standard errors
    clustered by ``entity`` (the t statistics equal those of :func:`analysis.estimation.fit`).
    Each contrast :math:`c` (a mapping regressor -> weight) is a hypothesis :math:`c'\beta=0`.
    For each, the restricted estimate :math:`\tilde\beta = \hat\beta - A^{-1}c(c'A^{-1}c)^{-1}c'\hat\beta`
    (``impose_null=True``; else :math:`\hat\beta`) and its residuals give bootstrap samples
    :math:`y^* = X\tilde\beta + \tilde e\,w_g` with the county weights ``weights`` (rows indexed
    by county, one column per draw; :func:`rademacher_weights`), and
    :math:`t^*_b = c'(\hat\beta^*_b-\tilde\beta)/\mathrm{se}^*_b` with the CR1 standard error
    recomputed in each draw. Computed in closed form from cluster sums, as in Roodman et al.
    (2019); the sum of squared bootstrap scores of a draw is expanded into products of cluster
    sums with the weights, so the draws of every contrast of the model come from one matrix
    product with the weight matrix (the data are demeaned once, not per draw). Returns
    ``(t, t_boot)`` with shapes ``(m,)`` and ``(B, m)``.
    """
    regressors = list(regressors)
    if not contrasts:
        raise SpecificationError("Give at least one contrast (a mapping from regressor to weight).")
    dz = _cluster_design(data, outcome, regressors, entity, time)
    W = weights.to_numpy(dtype=float)[_weight_rows(weights, dz.clusters)]  # G x B
    W2 = None if np.all(np.abs(W) == 1.0) else W * W
    return _bootstrap_t(dz, regressors, contrasts, W, W2, impose_null)


@dataclass(frozen=True)
class Hypothesis:
    """One hypothesis :math:`c'\\beta=0` in a TWFE model of ``outcome`` on ``regressors`` fitted on ``data``.

    ``key`` identifies the model: hypotheses with the same key share a fit (and must have the same
    outcome, regressors and data).
    """

    label: tuple
    outcome: str
    regressors: tuple[str, ...]
    contrast: Mapping[str, float]
    data: pd.DataFrame = field(repr=False, compare=False)
    key: str = ""


def romano_wolf_family(
    hypotheses: Sequence[Hypothesis],
    reps: int = 999,
    seed: int = 7,
    impose_null: bool = True,
    entity: str = "fips",
    time: str = "year",
    weights: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Romano-Wolf adjusted p-values of a family of hypotheses, by one wild cluster bootstrap.

    Every model is bootstrapped with the same county weights (:func:`rademacher_weights` with
    ``seed`` over all counties of all the data, unless ``weights`` is given). Returns one row per
    hypothesis (index: the labels) with ``t``, ``p_boot`` (unadjusted bootstrap p-value), ``p_rw``
    (Romano-Wolf), ``p_holm`` (Holm on ``p_boot``) and ``step`` (1 = largest |t|).
    """
    if not hypotheses:
        raise SpecificationError("The family is empty.")
    if weights is None:
        # the counties of every distinct data set (many hypotheses share one)
        frames = list({id(h.data): h.data for h in hypotheses}.values())
        all_ids = np.unique(np.concatenate([np.asarray(pd.unique(f[entity])) for f in frames]))
        weights = rademacher_weights(all_ids, reps, seed)
    groups: dict[str, list[int]] = {}
    for i, h in enumerate(hypotheses):
        groups.setdefault(h.key or repr((h.outcome, h.regressors)), []).append(i)
    # the weights and their squares once for the family (None: all +-1, the squares are 1)
    W_all = weights.to_numpy(dtype=float)
    W2_all = None if np.all(np.abs(W_all) == 1.0) else W_all * W_all
    t = np.empty(len(hypotheses))
    tb = np.empty((weights.shape[1], len(hypotheses)))
    for idx in groups.values():
        h0 = hypotheses[idx[0]]
        for j in idx[1:]:
            if hypotheses[j].outcome != h0.outcome or hypotheses[j].regressors != h0.regressors:
                raise SpecificationError(f"Hypotheses with key {h0.key!r} differ in outcome or regressors.")
        contrasts = [hypotheses[j].contrast for j in idx]
        dz = _cluster_design(h0.data, h0.outcome, list(h0.regressors), entity, time)
        rows = _weight_rows(weights, dz.clusters)
        tt, bb = _bootstrap_t(dz, list(h0.regressors), contrasts, W_all, W2_all, impose_null, rows)
        t[idx] = tt
        tb[:, idx] = bb
    p_boot = bootstrap_pvalues(t, tb)
    order = np.argsort(-np.abs(t), kind="mergesort")
    step = np.empty(len(t), dtype=int)
    step[order] = np.arange(1, len(t) + 1)
    out = pd.DataFrame(
        {"t": t, "p_boot": p_boot, "p_rw": romano_wolf(t, tb), "p_holm": holm(p_boot), "step": step},
        index=pd.MultiIndex.from_tuples([h.label for h in hypotheses]) if isinstance(hypotheses[0].label, tuple)
        else pd.Index([h.label for h in hypotheses]),
    )
    out.attrs["reps"] = weights.shape[1]
    return out


# --------------------------------------------------------------------------------------
# The chapter
# --------------------------------------------------------------------------------------


def h5_contrasts(by_type: GroupEffects, by_poverty: GroupEffects) -> list[Hypothesis]:
    """The directional contrasts of H5 for one outcome, as hypotheses of difference zero.

    Civic and religious minus each other type (per within-county SD of each), and the high minus
    the low and the middle 1997 poverty tercile (per within-county SD of density).
    """
    y = by_type.outcome
    tt = by_type.table
    civic = "civic_religious_per_10k"
    if civic not in tt.index:
        raise SpecificationError("The type fit has no civic and religious density.")
    out = []
    regs_t = tuple(tt["term"])
    for other in tt.index.drop(civic):
        c = {civic: float(tt.loc[civic, "sd_within"]), other: -float(tt.loc[other, "sd_within"])}
        out.append(Hypothesis((y, "type", f"civic - {TYPE_DENSITIES.get(other, other)}"), y, regs_t, c,
                              by_type.sample, key=f"{y}|type"))
    pt = by_poverty.table
    regs_p = tuple(pt["term"])
    for other in ("low", "middle"):
        c = {pt.loc["high", "term"]: 1.0, pt.loc[other, "term"]: -1.0}
        out.append(Hypothesis((y, by_poverty.dimension, f"high - {other}"), y, regs_p, c, by_poverty.sample,
                              key=f"{y}|{by_poverty.dimension}"))
    return out


def group_hypotheses(ge: GroupEffects) -> list[Hypothesis]:
    regs = tuple(ge.table["term"])
    return [
        Hypothesis((ge.outcome, ge.dimension, g), ge.outcome, regs, {row["term"]: 1.0}, ge.sample,
                   key=f"{ge.outcome}|{ge.dimension}")
        for g, row in ge.table.iterrows()
    ]


@dataclass
class ChapterResults:
    """Everything Chapter 7 reports.

    ``fits[(outcome, dimension)]``: :class:`GroupEffects` (dimension ``"type"`` or a grouping
    column); ``robust[(outcome, group)]``: the same with group-by-wave effects; ``overall``: the
    TWFE effect of density on each outcome in all counties (:func:`overall_effect`);
    ``effects``: one row per (outcome, dimension, group) with the estimates and the unadjusted,
    Holm and Romano-Wolf p-values; ``walds``: the equality tests with Holm-adjusted p-values;
    ``contrasts``: the H5 contrasts with the same adjustments; ``robust_effects``: the
    group-specific effects with group-by-wave effects (no type rows).
    """

    fits: dict
    robust: dict
    overall: pd.DataFrame
    effects: pd.DataFrame
    robust_effects: pd.DataFrame
    walds: pd.DataFrame
    contrasts: pd.DataFrame
    reps: int
    seed: int


def fit_chapter7(df: pd.DataFrame, reps: int = 999, seed: int = 20261127, outcomes: Sequence[str] = OUTCOMES) -> ChapterResults:
    """Fit every model of Chapter 7 and adjust for multiple comparisons.

    Family of group effects: every group-specific effect (4 types, 3 poverty terciles, 4 size
    classes, 4 regions) of every outcome in ``outcomes``, Romano-Wolf adjusted by one wild
    cluster bootstrap with ``reps`` draws and ``seed``; Holm on the analytic (clustered t)
    p-values alongside. The H5 contrasts form a second family; the equality Wald tests a third
    (Holm only).
    """
    data = df if "pov_tercile_1997" in df.columns else add_baseline_groups(df)
    groups = [d for d in DIMENSIONS if d != "type"]
    fits, robust, overall = {}, {}, []
    for y in outcomes:
        fits[(y, "type")] = fit_by_type(data, y)
        for g in groups:
            prep = _group_sample(data, y, g, DENSITY, "fips", "year")  # shared by the two fits
            fits[(y, g)] = _group_effects(prep, y, g, DENSITY, False, "fips", "year")
            robust[(y, g)] = _group_effects(prep, y, g, DENSITY, True, "fips", "year")
        overall.append({"outcome": y, **overall_effect(data, y)})
    overall = pd.DataFrame(overall).set_index("outcome")

    rows, hyps = [], []
    for (y, dim), ge in fits.items():
        for g, row in ge.table.iterrows():
            rows.append({"outcome": y, "dimension": dim, "group": g, **row.drop("term").to_dict()})
        hyps += group_hypotheses(ge)
    effects = pd.DataFrame(rows).set_index(["outcome", "dimension", "group"])
    robust_effects = pd.DataFrame(
        [{"outcome": y, "dimension": dim, "group": g, **row.drop("term").to_dict()}
         for (y, dim), ge in robust.items() for g, row in ge.table.iterrows()]
    ).set_index(["outcome", "dimension", "group"])
    rw = romano_wolf_family(hyps, reps=reps, seed=seed)
    effects["p_holm"] = holm(effects["pvalue"].to_numpy())
    effects["p_boot"] = rw["p_boot"].to_numpy()
    effects["p_rw"] = rw["p_rw"].to_numpy()

    wrows = []
    for (y, dim), ge in fits.items():
        rb = robust.get((y, dim))
        wrows.append({"outcome": y, "dimension": dim, "chi2": ge.wald.statistic, "df": ge.wald.df,
                      "pvalue": ge.wald.pvalue,
                      "chi2_group_wave": rb.wald.statistic if rb else np.nan,
                      "pvalue_group_wave": rb.wald.pvalue if rb else np.nan})
    walds = pd.DataFrame(wrows).set_index(["outcome", "dimension"])
    walds["p_holm"] = holm(walds["pvalue"].to_numpy())

    ch = [h for y in outcomes for h in h5_contrasts(fits[(y, "type")], fits[(y, "pov_tercile_1997")])]
    contrasts = romano_wolf_family(ch, reps=reps, seed=seed)
    contrasts.index.names = ["outcome", "dimension", "contrast"]
    est = []
    for h in ch:
        ge = fits[(h.outcome, h.label[1])]
        c = pd.Series(h.contrast)
        b = ge.result.params[c.index]
        V = ge.result.cov.loc[c.index, c.index]
        est.append((float(c @ b), float(np.sqrt(c @ V @ c))))
    # per within SD: type contrasts carry the SDs already; tercile contrasts need the density SD
    scale = [1.0 if h.label[1] == "type" else float(fits[(h.outcome, h.label[1])].table["sd_within"].iloc[0]) for h in ch]
    contrasts.insert(0, "estimate", [e * s for (e, _), s in zip(est, scale)])
    contrasts.insert(1, "std_error", [se * s for (_, se), s in zip(est, scale)])
    contrasts.insert(3, "pvalue", 2 * stats.t.sf(np.abs(contrasts["t"]), [fits[(h.outcome, h.label[1])].result.df_inference for h in ch]))
    contrasts["p_holm"] = holm(contrasts["pvalue"].to_numpy())
    return ChapterResults(fits, robust, overall, effects, robust_effects, walds, contrasts, reps, seed)


def fmt_p(p: float) -> str:
    """A p-value as text for prose: ``"p < 0.001"`` or ``"p = 0.042"``."""
    p = float(p)
    if not 0 <= p <= 1:
        raise ValueError(f"A p-value lies in [0, 1], not {p!r}.")
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


# --------------------------------------------------------------------------------------
# Figure
# --------------------------------------------------------------------------------------


def effects_figure(
    effects: pd.DataFrame,
    overall: pd.DataFrame | None = None,
    alternative: pd.DataFrame | None = None,
    bounds: pd.DataFrame | None = None,
    outcome_labels: Mapping[str, str] | None = None,
    group_labels: Mapping[str, str] | None = None,
):
    """Group-specific effects per one within-county SD with 95% intervals, one panel per outcome.

    Rows are grouped by dimension (in :data:`DIMENSIONS` order, a label above each block); the
    top row is ``overall`` (all counties) if given. Filled markers: Romano-Wolf p < 0.05 (column
    ``p_rw``, if present). ``alternative`` (same index, a subset of rows) is drawn in grey just
    below each row, e.g. the estimates with group-by-wave effects. The grey band is +/- the
    smallest effect of interest (``bounds``). Two panels per row (one for one outcome), 5 in each,
    in the book style (:func:`analysis.plots.subplots`: at most 10 in wide, text of 9 pt or more).
    Returns the Figure.
    """
    from analysis import plots

    need = {"estimate", "conf_low", "conf_high"}
    if not need.issubset(effects.columns) or list(effects.index.names) != ["outcome", "dimension", "group"]:
        raise SpecificationError("effects needs an (outcome, dimension, group) index and estimate/conf_low/conf_high.")
    outcomes = list(dict.fromkeys(effects.index.get_level_values("outcome")))
    labels = {**TYPE_DENSITIES, **(group_labels or {})}
    ncols = 2 if len(outcomes) > 1 else 1
    nrows = int(np.ceil(len(outcomes) / ncols))
    first = effects.xs(outcomes[0], level="outcome")
    dims = [d for d in DIMENSIONS if d in first.index.get_level_values("dimension")]
    # y positions: one block per dimension with a gap for its title
    ypos, ticks, heads, pos = {}, [], [], 0.0
    if overall is not None:
        ypos[("overall", "All counties")] = pos
        ticks.append((pos, "All counties"))
        pos += 1.6
    for d in dims:
        heads.append((pos - 0.75, DIMENSIONS[d]))
        for g in first.xs(d, level="dimension").index:
            ypos[(d, g)] = pos
            ticks.append((pos, labels.get(g, str(g))))
            pos += 1.0 if alternative is None or d == "type" else 1.35
        pos += 0.9
    fig, axes = plots.subplots(nrows, ncols, figsize=(5.0 * ncols, 0.27 * pos * nrows + 1.2), sharey=True,
                               squeeze=False)
    colors = {d: f"C{i}" for i, d in enumerate(dims)}
    for ax, y in zip(axes.flat, outcomes):
        e = effects.xs(y, level="outcome")
        if bounds is not None and y in bounds.index:
            bd = float(bounds.loc[y, "bound"])
            ax.axvspan(-bd, bd, color="0.9", zorder=0)
        ax.axvline(0, color="0.4", linestyle="--", linewidth=0.8)
        if overall is not None and y in overall.index:
            o = overall.loc[y]
            yy = ypos[("overall", "All counties")]
            ax.hlines(yy, o["conf_low"], o["conf_high"], color="k", linewidth=1.8)
            ax.plot(o["estimate"], yy, "D", color="k", markersize=5)
        for (d, g), row in e.iterrows():
            if (d, g) not in ypos:
                continue
            yy = ypos[(d, g)]
            sig = "p_rw" in row and row["p_rw"] < 0.05
            ax.hlines(yy, row["conf_low"], row["conf_high"], color=colors[d], linewidth=1.8)
            ax.plot(row["estimate"], yy, "o", color=colors[d], markersize=5.5,
                    markerfacecolor=colors[d] if sig else "white", zorder=3)
            if alternative is not None and (y, d, g) in alternative.index:
                alt = alternative.loc[(y, d, g)]
                ax.hlines(yy + 0.38, alt["conf_low"], alt["conf_high"], color="0.55", linewidth=1.0)
                ax.plot(alt["estimate"], yy + 0.38, "s", color="0.55", markersize=3.5, zorder=3)
        ax.set_title((outcome_labels or {}).get(y, y), fontsize=10)
        ax.set_xlabel("Effect of +1 within-county SD of density", fontsize=9)
        ax.tick_params(labelsize=9)
    for ax in axes.flat[len(outcomes):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_yticks([p for p, _ in ticks])
        ax.set_yticklabels([t for _, t in ticks])
        for p, h in heads:
            ax.annotate(h, xy=(0, p), xycoords=("axes fraction", "data"), xytext=(-4, 0),
                        textcoords="offset points", ha="right", va="center", fontsize=9, fontweight="bold")
    axes[0, 0].set_ylim(pos - 0.4, -1.2)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Line2D([], [], marker="o", color="0.2", markerfacecolor="0.2", linestyle="-",
                      label="Romano-Wolf p < 0.05"),
               Line2D([], [], marker="o", color="0.2", markerfacecolor="white", linestyle="-",
                      label="Romano-Wolf p \u2265 0.05")]
    if alternative is not None:
        handles.append(Line2D([], [], marker="s", color="0.55", markersize=3.5, linestyle="-",
                              label="with group-by-wave effects"))
    if bounds is not None:
        handles.append(Patch(color="0.9", label="smallest effect of interest"))
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=9)
    return fig


def bench_heterogeneity(df: pd.DataFrame, reps: int = 999) -> float:
    """Seconds to fit all of Chapter 7 (every model, both bootstrap families) on the wave panel ``df``."""
    t = time.perf_counter()
    fit_chapter7(without_source_gaps(add_baseline_groups(df)), reps=reps)
    return time.perf_counter() - t
