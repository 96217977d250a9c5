r"""Chapter 3, "Between places and within them": the model grid, its tests and its magnitudes.

For one outcome and one density measure the chapter fits six estimators that differ in which
comparison they use (:func:`chapter3_specs`):

==============  =====================================  =============  =====================
key             model                                  effects        standard errors
==============  =====================================  =============  =====================
``pooled``      pooled OLS                             year           clustered by county
``between``     OLS on county means                    none           HC1 (one row a county)
``fe``          within (county effects only)           county         clustered by county
``twfe``        two-way fixed effects                  county + year  clustered by county
``re``          random effects (Swamy-Arora)           year           clustered by county
``cre``         correlated RE (Mundlak)                year           clustered by county
==============  =====================================  =============  =====================

plus three inference-robustness columns for the TWFE model (``twfe_state``: clustered by
state; ``twfe_twoway``: clustered by county and year; ``twfe_dk``: Driscoll-Kraay), a
first-difference fit (``fd``, year effects; a diagnostic for measurement error, not a table
column) and the two classical-covariance fits the Hausman test needs (``twfe_classical``,
``re_classical``): the Hausman statistic assumes that RE is efficient, which only holds with
classical (homoskedastic, serially uncorrelated) errors, so it is computed from classical
covariances, as :func:`analysis.estimation.hausman` requires. The Mundlak test is its robust
counterpart (CRE with county-clustered covariance).

:func:`fit_outcome_table` fits the grid on the outcome's *balanced* sample (counties observed
in every wave, see :func:`balanced_sample`), so that every column uses the same observations
and the CRE coefficient equals the TWFE one exactly. :func:`magnitudes` scales the pooled and
TWFE coefficients to a one within-county-SD rise in density and compares the TWFE 90% interval
with the pre-declared equivalence bounds (``analysis/hypotheses.yml``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from analysis.describe import WAVE_OUTCOMES
from analysis.estimation import (
    ModelSpec,
    PanelResult,
    SpecificationError,
    TestResult,
    effect_sizes,
    fit,
    hausman,
    mundlak_from_cre,
)
from analysis.hypotheses import equivalence_bounds
from analysis.tables import RegressionTable, regression_table

__all__ = [
    "BETTER_SIGN",
    "COLUMN_LABELS",
    "DENSITIES",
    "DENSITY",
    "OUTCOMES",
    "TABLE_COLUMNS",
    "WITHIN_MODELS",
    "DensityTable",
    "OutcomeTable",
    "attenuation",
    "balanced_sample",
    "bench_table_set",
    "bench_twfe_fit",
    "binscatter_figure",
    "chapter3_specs",
    "coefficient_figure",
    "coefficients_frame",
    "denominator_table",
    "equivalence_verdict",
    "error_share_from_changes",
    "error_share_to_reach_bound",
    "fit_chapter3",
    "fit_density_tables",
    "fit_outcome_table",
    "h2_inference",
    "magnitudes",
    "main_table",
    "measurement_error_check",
    "policy_table",
    "ratio_specs",
    "tests_frame",
    "tost_pvalue",
]

#: The density measure of the chapter: associations per 1,000 people (Penn State ``assn``).
DENSITY = "assn_per_1k"
#: Outcomes of the wave panel, in the order of the chapter.
OUTCOMES: tuple[str, ...] = tuple(WAVE_OUTCOMES)
#: Sign of a coefficient that means "better" for the outcome (the thesis' direction).
BETTER_SIGN: dict[str, int] = {
    "unemployment_rate": -1,
    "poverty_rate": -1,
    "child_poverty_rate": -1,
    "log_median_hh_income": 1,
}
#: Columns of the regression table, in order, with their headers.
COLUMN_LABELS: dict[str, str] = {
    "pooled": "Pooled OLS",
    "between": "Between",
    "fe": "FE (county)",
    "twfe": "TWFE",
    "re": "RE",
    "cre": "CRE",
    "twfe_state": "TWFE, state cl.",
    "twfe_twoway": "TWFE, 2-way cl.",
    "twfe_dk": "TWFE, D-K",
}
TABLE_COLUMNS: tuple[str, ...] = tuple(COLUMN_LABELS)


def chapter3_specs(outcome: str, regressor: str = DENSITY) -> dict[str, ModelSpec]:
    """The model grid of Chapter 3 for ``outcome`` on ``regressor`` (see the module docstring).

    Keys: the nine table columns (:data:`TABLE_COLUMNS`), then ``fd`` (first differences with
    year effects, clustered by county) and the classical-covariance TWFE and RE fits of the
    Hausman test (``twfe_classical``, ``re_classical``).
    """
    if not isinstance(outcome, str) or not isinstance(regressor, str):
        raise SpecificationError(f"outcome and regressor must be column names (str); got {outcome!r}, {regressor!r}.")
    base = ModelSpec(outcome=outcome, regressors=(regressor,))
    return {
        "pooled": base.replace(estimator="pooled", effects="time", cov="cluster-unit"),
        "between": base.replace(estimator="between", effects="none", cov="robust"),
        "fe": base.replace(estimator="fe", effects="unit", cov="cluster-unit"),
        "twfe": base.replace(estimator="twfe", effects="unit+time", cov="cluster-unit"),
        "re": base.replace(estimator="re", effects="time", cov="cluster-unit"),
        "cre": base.replace(estimator="cre", effects="time", cov="cluster-unit"),
        "twfe_state": base.replace(estimator="twfe", effects="unit+time", cov="cluster-state"),
        "twfe_twoway": base.replace(estimator="twfe", effects="unit+time", cov="cluster-twoway"),
        "twfe_dk": base.replace(estimator="twfe", effects="unit+time", cov="driscoll-kraay"),
        "fd": base.replace(estimator="fd", effects="time", cov="cluster-unit"),
        "twfe_classical": base.replace(estimator="twfe", effects="unit+time", cov="classical"),
        "re_classical": base.replace(estimator="re", effects="time", cov="classical"),
    }


def balanced_sample(
    df: pd.DataFrame, outcome: str, regressor: str = DENSITY, entity: str = "fips", time: str = "year"
) -> tuple[pd.DataFrame, list]:
    """Rows of the counties that have ``outcome`` and ``regressor`` in every period of ``df``.

    Returns the sample and the list of counties dropped. Every estimator of a table then uses
    the same observations, and the correlated-random-effects model needs no unit means of the
    period dummies (which are collinear when the missing rows all fall in one wave).
    """
    if not isinstance(df, pd.DataFrame):
        raise SpecificationError(f"The data must be a pandas DataFrame, not {type(df).__name__}.")
    for c in (entity, time, outcome, regressor):
        if c not in df.columns:
            raise SpecificationError(f"Unknown variable {c!r}: it is not a column of the data.")
    n_periods = df[time].nunique()
    complete = df[[outcome, regressor]].notna().all(axis=1)
    periods = df.loc[complete].groupby(entity)[time].nunique()
    keep = periods.index[periods == n_periods]
    dropped = sorted(set(df[entity].unique()) - set(keep))
    sample = df.loc[df[entity].isin(keep) & complete]
    if sample.empty:
        raise SpecificationError(f"No county has {outcome!r} and {regressor!r} in all {n_periods} periods.")
    return sample, dropped


@dataclass(frozen=True)
class OutcomeTable:
    """The Chapter 3 fits of one outcome: results by key, the two specification tests, the sample."""

    outcome: str
    regressor: str
    results: dict[str, PanelResult] = field(repr=False)
    hausman: TestResult
    mundlak: TestResult
    sample: pd.DataFrame = field(repr=False)
    dropped_units: tuple = ()

    def coef(self, key: str) -> float:
        """Coefficient on the regressor in model ``key``."""
        return float(self.results[key].params[self.regressor])

    def table(self, labels: Mapping[str, str] | None = None, digits: int = 3) -> RegressionTable:
        """The regression table (columns :data:`COLUMN_LABELS`), the two tests in the notes."""
        labels = dict(labels or {})
        tab = regression_table(
            {COLUMN_LABELS[k]: self.results[k] for k in TABLE_COLUMNS},
            regressors=[self.regressor],
            digits=digits,
            labels=labels,
            title=labels.get(self.outcome, self.outcome),
        )
        tab.notes += " " + " ".join(_test_note(t) for t in (self.hausman, self.mundlak))
        return tab


def _fmt_p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _test_note(t: TestResult) -> str:
    how = (
        "classical covariances, as the test requires"
        if t.name.startswith("Hausman")
        else "CRE, county-clustered covariance"
    )
    p = _fmt_p(t.pvalue)
    return f"{t.name} ({how}): chi2({t.df}) = {t.statistic:.2f}, p {p if p.startswith('<') else '= ' + p}."


def fit_outcome_table(df: pd.DataFrame, outcome: str, regressor: str = DENSITY) -> OutcomeTable:
    """Fit the Chapter 3 grid of ``outcome`` on its balanced sample, with Hausman and Mundlak tests.

    Hausman compares ``twfe_classical`` with ``re_classical`` (both with year effects) on the
    regressor; Mundlak tests the county mean of the regressor in the CRE model with year
    effects and county-clustered covariance (``mundlak_test`` of the TWFE specification).
    """
    sample, dropped = balanced_sample(df, outcome, regressor)
    specs = chapter3_specs(outcome, regressor)
    results = {k: fit(s, sample) for k, s in specs.items()}
    h = hausman(results["twfe_classical"], results["re_classical"], terms=[regressor])
    m = _mundlak_from_cre(results["cre"])  # the CRE model of the grid is the Mundlak test's model
    return OutcomeTable(
        outcome=outcome,
        regressor=regressor,
        results=results,
        hausman=h,
        mundlak=m,
        sample=sample,
        dropped_units=tuple(dropped),
    )


def _mundlak_from_cre(result: PanelResult) -> TestResult:
    """:func:`analysis.estimation.mundlak_test` of the TWFE specification, from the grid's ``cre``
    fit instead of a second fit of the same model (``mundlak_test(specs["twfe"], sample,
    cov="cluster-unit")`` fits exactly ``specs["cre"]``; ``tests/test_between_within.py``
    checks that the two agree)."""
    return mundlak_from_cre(result)


def fit_chapter3(
    df: pd.DataFrame, outcomes: Iterable[str] = OUTCOMES, regressor: str = DENSITY
) -> dict[str, OutcomeTable]:
    """:func:`fit_outcome_table` for each outcome."""
    return {y: fit_outcome_table(df, y, regressor) for y in outcomes}


def coefficients_frame(
    tables: Mapping[str, OutcomeTable], keys: Iterable[str] = TABLE_COLUMNS, what: str = "coef"
) -> pd.DataFrame:
    """Coefficients (``what="coef"``), standard errors (``"se"``) or p-values (``"p"``) on the
    regressor, outcomes by model keys."""
    getters = {
        "coef": lambda r, x: float(r.params[x]),
        "se": lambda r, x: float(r.std_errors[x]),
        "p": lambda r, x: float(r.pvalues[x]),
    }
    if what not in getters:
        raise ValueError(f"what must be one of {list(getters)}, not {what!r}")
    keys = list(keys)
    return pd.DataFrame(
        {k: [getters[what](t.results[k], t.regressor) for t in tables.values()] for k in keys},
        index=pd.Index(list(tables), name="outcome"),
    )


def tests_frame(tables: Mapping[str, OutcomeTable]) -> pd.DataFrame:
    """Hausman and Mundlak statistics, degrees of freedom and p-values by outcome."""
    rows = []
    for y, t in tables.items():
        rows.append(
            {
                "outcome": y,
                "hausman_chi2": t.hausman.statistic,
                "hausman_df": t.hausman.df,
                "hausman_p": t.hausman.pvalue,
                "mundlak_chi2": t.mundlak.statistic,
                "mundlak_df": t.mundlak.df,
                "mundlak_p": t.mundlak.pvalue,
            }
        )
    return pd.DataFrame(rows).set_index("outcome")


# --------------------------------------------------------------------------------------
# Magnitudes and equivalence
# --------------------------------------------------------------------------------------


def tost_pvalue(estimate: float, std_error: float, low: float, high: float, df: float) -> float:
    r"""Two one-sided tests (Schuirmann 1987; Lakens 2017) of :math:`H_0: \beta \le low` or
    :math:`\beta \ge high` against equivalence :math:`low < \beta < high`.

    The p-value is the larger of :math:`P(T \ge (b-low)/se)` and :math:`P(T \le (b-high)/se)`
    with :math:`T \sim t(df)` (normal if ``df`` is infinite). It is below 0.05 exactly when
    the 90% confidence interval lies inside ``(low, high)``.
    """
    if not (np.isfinite(estimate) and np.isfinite(std_error)) or std_error <= 0:
        raise ValueError(f"estimate and std_error must be finite with std_error > 0; got {estimate}, {std_error}.")
    if not low < high:
        raise ValueError(f"The equivalence bounds must satisfy low < high; got ({low}, {high}).")
    dist = stats.norm if np.isinf(df) else stats.t(df)
    p_low = float(dist.sf((estimate - low) / std_error))
    p_high = float(dist.cdf((estimate - high) / std_error))
    return max(p_low, p_high)


def equivalence_verdict(ci90: tuple[float, float], ci95: tuple[float, float], bound: float, better_sign: int) -> str:
    """Classify an effect against the smallest effect of interest ``±bound``.

    * ``"negligible"``: the 90% interval lies inside ``(-bound, bound)`` (equivalence at 5%);
    * ``"better"`` / ``"worse"``: not negligible, the 95% interval excludes zero and the point
      estimate is outside the bounds, in the direction the thesis predicts (``better_sign``)
      or the opposite;
    * ``"significant, size unclear"``: the 95% interval excludes zero but the estimate is
      inside the bounds and the 90% interval is not;
    * ``"inconclusive"``: neither zero nor the bounds can be ruled out.
    """
    if bound <= 0:
        raise ValueError(f"bound must be positive, not {bound}")
    if better_sign not in (-1, 1):
        raise ValueError(f"better_sign must be -1 or 1, not {better_sign}")
    lo90, hi90 = ci90
    lo95, hi95 = ci95
    if -bound < lo90 and hi90 < bound:
        return "negligible"
    if lo95 > 0 or hi95 < 0:
        mid = (lo95 + hi95) / 2
        if abs(mid) >= bound:
            return "better" if np.sign(mid) == better_sign else "worse"
        return "significant, size unclear"
    return "inconclusive"


def _reader_value(outcome: str, v: float) -> float:
    """Percentage points for rates; per cent of income for log income."""
    return 100 * float(np.expm1(v)) if outcome.startswith("log_") else float(v)


def magnitudes(
    tables: Mapping[str, OutcomeTable],
    bounds: pd.DataFrame | None = None,
    models: tuple[str, str] = ("pooled", "twfe"),
) -> pd.DataFrame:
    """Effects of a one within-county-SD rise in density, per outcome, against the bounds.

    For each outcome: ``sd_within`` (SD of density around county means, on the table's
    sample: :func:`analysis.estimation.effect_sizes`), ``sd_between``, the pooled effect per
    within SD (``pooled_sd``) and the TWFE effect per within SD (``twfe_sd``) with its 90% and
    95% intervals (``twfe_lo90`` ...), ``bound`` and ``unit`` of the smallest effect of
    interest, the TOST p-value, ``verdict`` (:func:`equivalence_verdict`), the share of the
    pooled coefficient left after fixed effects (``twfe_over_pooled``), and the TWFE effect in
    units a reader can picture (``twfe_sd_reader``: percentage points, or per cent of income
    for the log outcome).
    """
    bounds = equivalence_bounds() if bounds is None else bounds
    first, second = models
    rows = []
    for y, t in tables.items():
        if y not in bounds.index:
            raise SpecificationError(f"No equivalence bound for outcome {y!r}; known: {list(bounds.index)}.")
        if y not in BETTER_SIGN:
            raise SpecificationError(f"No 'better' direction declared for outcome {y!r}.")
        r1, r2 = t.results[first], t.results[second]
        es = effect_sizes(r2, t.sample, t.regressor)
        sd_w = float(es.loc["per within-unit SD", "scale"])
        sd_b = float(es.loc["per between-unit SD", "scale"])
        b1, b2, se2 = t.coef(first), t.coef(second), float(r2.std_errors[t.regressor])
        ci90 = r2.ci(0.90).loc[t.regressor].to_numpy(dtype=float) * sd_w
        ci95 = r2.conf_int.loc[t.regressor].to_numpy(dtype=float) * sd_w
        bound = float(bounds.loc[y, "bound"])
        rows.append(
            {
                "outcome": y,
                "sd_within": sd_w,
                "sd_between": sd_b,
                f"{first}_sd": b1 * sd_w,
                f"{second}_sd": b2 * sd_w,
                f"{second}_lo90": ci90[0],
                f"{second}_hi90": ci90[1],
                f"{second}_lo95": ci95[0],
                f"{second}_hi95": ci95[1],
                "bound": bound,
                "unit": str(bounds.loc[y, "unit"]),
                "tost_p": tost_pvalue(b2 * sd_w, se2 * sd_w, -bound, bound, r2.df_inference),
                "verdict": equivalence_verdict(tuple(ci90), tuple(ci95), bound, BETTER_SIGN[y]),
                f"{second}_over_{first}": b2 / b1,
                f"{second}_sd_reader": _reader_value(y, b2 * sd_w),
            }
        )
    return pd.DataFrame(rows).set_index("outcome")


# --------------------------------------------------------------------------------------
# Measurement error
# --------------------------------------------------------------------------------------


def attenuation(error_share: float, share_within: float, n_periods: int) -> tuple[float, float]:
    r"""Attenuation factors (reliability ratios) of pooled and two-way within slopes.

    Classical measurement error :math:`e_{it}` with variance :math:`\sigma^2_e`, independent
    over counties and periods and of everything else, added to a regressor whose total
    variance is :math:`V` and whose share of variance left after removing county and period
    means is ``share_within`` (:math:`s_w`, :func:`analysis.describe.variance_shares`).
    With ``error_share`` :math:`r=\sigma^2_e/V`, OLS converges to :math:`\lambda\beta`:

    * pooled: :math:`\lambda_p = 1 - r`;
    * two-way within (large N, T periods): the demeaned error keeps
      :math:`(T-1)/T` of its variance while the signal keeps :math:`s_w` of the total, so
      :math:`\lambda_w = 1 - r\,(T-1)/(T\,s_w)`, truncated at 0.

    Griliches & Hausman (1986): removing the between variation removes signal but not noise.
    """
    if not 0 <= error_share < 1:
        raise ValueError(f"error_share must be in [0, 1), not {error_share}")
    if not 0 < share_within <= 1:
        raise ValueError(f"share_within must be in (0, 1], not {share_within}")
    if n_periods < 2:
        raise ValueError(f"n_periods must be at least 2, not {n_periods}")
    pooled = 1 - error_share
    within = max(0.0, 1 - error_share * (n_periods - 1) / (n_periods * share_within))
    return pooled, within


def error_share_to_reach_bound(ci90: tuple[float, float], bound: float, share_within: float, n_periods: int) -> float:
    """Measurement-error share of total variance at which the disattenuated 90% interval touches a bound.

    Dividing the interval by the within attenuation :math:`\\lambda_w` (:func:`attenuation`)
    reaches ``bound`` when :math:`\\lambda_w = \\max|ci| / bound`; this returns the ``r`` that
    gives that :math:`\\lambda_w`, or 0 if the interval already reaches the bound.
    """
    reach = max(abs(ci90[0]), abs(ci90[1]))
    lam = reach / bound
    if lam >= 1:
        return 0.0
    return (1 - lam) * n_periods * share_within / (n_periods - 1)


def error_share_from_changes(df: pd.DataFrame, col: str = DENSITY, entity: str = "fips", time: str = "year") -> float:
    r"""Share of the total variance of ``col`` that looks like transitory noise, from its changes.

    If :math:`x_{it} = x^*_{it} + e_{it}` with :math:`e` independent over periods (variance
    :math:`\sigma^2_e`) and the true changes :math:`\Delta x^*` uncorrelated over time (a
    random walk, with common year shocks removed), then
    :math:`\mathrm{cov}(\Delta x_{it}, \Delta x_{i,t-1}) = -\sigma^2_e`. This returns
    :math:`-\overline{\mathrm{cov}}/\mathrm{var}(x)`: minus the mean, over consecutive pairs
    of changes, of their cross-county covariance (changes centred on their year means),
    divided by the variance of ``col`` over all rows. Persistent true changes make it an
    underestimate, mean-reverting ones an overestimate. Uses counties observed in every period.
    """
    for c in (entity, time, col):
        if c not in df.columns:
            raise SpecificationError(f"Unknown variable {c!r}: it is not a column of the data.")
    wide = df.pivot(index=entity, columns=time, values=col).sort_index(axis=1).dropna()
    if wide.shape[1] < 3:
        raise SpecificationError(f"Need at least 3 periods to correlate consecutive changes; got {wide.shape[1]}.")
    if len(wide) < 2:
        raise SpecificationError("Need at least two units observed in every period.")
    d = wide.diff(axis=1).iloc[:, 1:]
    d = d - d.mean()
    covs = [float((d.iloc[:, j] * d.iloc[:, j - 1]).mean()) for j in range(1, d.shape[1])]
    return -float(np.mean(covs)) / float(df[col].var())


def measurement_error_check(
    mag: pd.DataFrame, error_share: float, share_within: float, n_periods: int, model: str = "twfe"
) -> pd.DataFrame:
    """The TWFE effects of :func:`magnitudes` corrected for classical measurement error.

    For each outcome: the within attenuation factor at ``error_share`` (:func:`attenuation`),
    the effect and 90% interval divided by it (``*_corrected``; conservative, since the SD of
    the true density is also smaller than the observed one), whether the corrected interval
    still lies inside the bound, and the error share at which it would reach the bound
    (:func:`error_share_to_reach_bound`).
    """
    _, lam = attenuation(error_share, share_within, n_periods)
    if lam <= 0:
        raise ValueError(f"An error share of {error_share} leaves no signal within counties; cannot correct.")
    out = pd.DataFrame(index=mag.index)
    out["lambda_within"] = lam
    out[f"{model}_sd_corrected"] = mag[f"{model}_sd"] / lam
    out[f"{model}_lo90_corrected"] = mag[f"{model}_lo90"] / lam
    out[f"{model}_hi90_corrected"] = mag[f"{model}_hi90"] / lam
    out["bound"] = mag["bound"]
    out["inside_bound_corrected"] = (out[f"{model}_lo90_corrected"] > -mag["bound"]) & (
        out[f"{model}_hi90_corrected"] < mag["bound"]
    )
    out["error_share_to_reach_bound"] = [
        error_share_to_reach_bound((lo, hi), b, share_within, n_periods)
        for lo, hi, b in zip(mag[f"{model}_lo90"], mag[f"{model}_hi90"], mag["bound"])
    ]
    return out


# --------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------


def binscatter_figure(
    df: pd.DataFrame,
    outcomes: Mapping[str, str] | None = None,
    regressor: str = DENSITY,
    bins: int = 20,
    xlabel: str = "Associations per 1,000",
):
    """Binned scatters, one row per outcome: left pooled, right net of county and year means.

    Each panel uses the outcome's balanced sample (:func:`balanced_sample`); the slope in
    the legend of a right panel is the TWFE coefficient (Frisch-Waugh-Lovell). The two
    panels of a row share their axes, so that the narrower range of the within
    variation and the flatter slope are seen at the same scale (rows, not columns, so that
    the figure fits the page width; see :mod:`analysis.plots`).
    """
    from analysis.plots import binned_scatter, subplots

    outcomes = dict(outcomes or WAVE_OUTCOMES)
    fig, axes = subplots(len(outcomes), 2, figsize=(8, 3.0 * len(outcomes)), squeeze=False,
                         sharex="row", sharey="row")
    for i, (y, label) in enumerate(outcomes.items()):
        sample, _ = balanced_sample(df, y, regressor)
        for j, absorb in enumerate((None, "unit+time")):
            ax = binned_scatter(sample, regressor, y, bins=bins, absorb=absorb, ax=axes[i, j])
            ax.set_xlabel(xlabel + ("" if absorb is None else ", net of county & year"))
            ax.set_ylabel("")
            ax.legend(frameon=False, loc="best")
            ax.tick_params(labelbottom=True, labelleft=True)
            ax.set_title(label + ("\npooled" if absorb is None else "\nwithin county, net of year"))
    fig.tight_layout()
    return fig


def coefficient_figure(
    tables: Mapping[str, OutcomeTable],
    outcomes: Mapping[str, str] | None = None,
    keys: tuple[str, ...] = ("pooled", "between", "re", "fe", "twfe", "cre"),
    bounds: pd.DataFrame | None = None,
):
    """Coefficient and 95% interval of each estimator, one panel per outcome.

    The shaded band is the smallest effect of interest converted to a coefficient
    (``bound`` / within-county SD of density).
    """
    from analysis.plots import coef_plot, panel_grid

    outcomes = dict(outcomes or {y: y for y in tables})
    bounds = equivalence_bounds() if bounds is None else bounds
    fig, axes = panel_grid(len(outcomes), max_cols=2, row_height=3.2)
    for ax, (y, label) in zip(axes, outcomes.items()):
        t = tables[y]
        coef_plot({COLUMN_LABELS[k]: t.results[k] for k in keys}, t.regressor, ax=ax, xlabel="")
        sd_w = float(effect_sizes(t.results["twfe"], t.sample, t.regressor).loc["per within-unit SD", "scale"])
        b = float(bounds.loc[y, "bound"]) / sd_w
        ax.axvspan(-b, b, color="C2", alpha=0.2, linewidth=0)
        ax.set_title(label)
        ax.set_xlabel("Coefficient per association per 1,000")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------
# Benchmarks (called by ``make bench``)
# --------------------------------------------------------------------------------------


def bench_table_set(df: pd.DataFrame) -> float:
    """Seconds to fit the whole Chapter 3 table set (all outcomes x models x covariances + tests)."""
    t = time.perf_counter()
    fit_chapter3(df)
    return time.perf_counter() - t


def bench_twfe_fit(df: pd.DataFrame, repeats: int = 5, outcome: str = "unemployment_rate") -> float:
    """Median seconds of one TWFE fit with county-clustered SEs (validation included) on ``df``."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, not {repeats}")
    spec = chapter3_specs(outcome)["twfe"]
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fit(spec, df)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


# --------------------------------------------------------------------------------------
# Separating the count from the population (issue 12): ratio-free models, controls,
# weights, state-by-year effects, and the estimates in policy units (addition A1)
# --------------------------------------------------------------------------------------

#: The density measures of the main table and the ratio-free count of each, log(1 + count)
#: (:data:`analysis.multiverse.RATIO_FREE`): all associations, and community organisations
#: (the six classes without commercial recreation).
DENSITIES: dict[str, str] = {"assn_per_1k": "log_count_assn", "community_per_1k": "log_count_community"}
#: The within-county models of the main table, in order, with their headers.
WITHIN_MODELS: dict[str, str] = {
    "twfe": "TWFE",
    "twfe_logpop": "TWFE + log pop.",
    "ratio_free": "Ratio-free",
    "twfe_weighted": "TWFE, pop.-weighted",
    "twfe_state_year": "County + state-by-year",
    "fd": "First differences",
}
_REUSED = ("pooled", "twfe", "fd")  # fitted by fit_outcome_table for the chapter's density
#: Models whose full linearmodels results the tables read (the ratio-free model's second
#: coefficient and covariance); the others need only their first coefficient.
_FULL_FIT = ("ratio_free",)


def ratio_specs(outcome: str, density: str = DENSITY) -> dict[str, ModelSpec]:
    r"""The models that separate a density's count from its population, for ``outcome``.

    Keys: ``pooled`` (the cross-county gradient, as :func:`chapter3_specs`), ``twfe`` (the
    baseline), ``twfe_logpop`` (TWFE with ``log_population`` as a control), ``ratio_free``
    (TWFE of the outcome on :math:`\log(1+c_{it})` and :math:`\log P_{it}` entered separately,
    Kronmal 1993: the count's coefficient holds the population fixed), ``twfe_weighted``
    (TWFE weighted by the county's mean population over the waves,
    :func:`analysis.multiverse.county_mean_population`), ``twfe_state_year`` (county and
    state-by-year effects) and ``fd`` (first differences with year effects). All clustered by
    county. The data need the derived columns of :func:`analysis.multiverse.add_derived_columns`.
    """
    from analysis.multiverse import WEIGHT_COLUMN

    if density not in DENSITIES:
        raise SpecificationError(f"No ratio-free count for density {density!r}; known: {list(DENSITIES)}.")
    grid = chapter3_specs(outcome, density)
    twfe = grid["twfe"]
    return {
        "pooled": grid["pooled"],
        "twfe": twfe,
        "twfe_logpop": twfe.replace(controls=("log_population",)),
        "ratio_free": twfe.replace(regressors=(DENSITIES[density],), controls=("log_population",)),
        "twfe_weighted": twfe.replace(weights=WEIGHT_COLUMN),
        "twfe_state_year": twfe.replace(effects="state-by-year"),
        "fd": grid["fd"],
    }


@dataclass(frozen=True)
class DensityTable:
    """The models of :func:`ratio_specs` for one outcome and density, on the balanced sample of
    the outcome and density (the sample of :func:`fit_outcome_table` for the chapter's density).

    ``mean_density``: mean of the density on the sample (per 1,000 residents); it converts the
    ratio-free count's coefficient to a dose per organisation per 1,000 residents.
    ``ref_population``: median population of the sample's counties in its last wave (2014),
    the county of "ten more organisations".
    """

    outcome: str
    density: str
    results: dict[str, PanelResult] = field(repr=False)  # or analysis.multiverse.FastFit (first coefficient)
    sample: pd.DataFrame = field(repr=False)
    mean_density: float
    ref_population: float

    @property
    def count(self) -> str:
        return DENSITIES[self.density]

    def term(self, key: str) -> str:
        """The regressor of interest of model ``key``."""
        return self.count if key == "ratio_free" else self.density

    def slope_per_1k(self, key: str) -> tuple[float, float]:
        r"""The coefficient of model ``key`` and its standard error per added organisation per
        1,000 residents. For ``ratio_free`` the coefficient per log point of the count is divided
        by the sample's mean density: at fixed population one more organisation per 1,000 raises
        :math:`\log(1+c)` by about :math:`1/\text{density}`, evaluated at the mean."""
        r, x = self.results[key], self.term(key)
        scale = 1.0 / self.mean_density if key == "ratio_free" else 1.0
        return float(r.params[x]) * scale, float(r.std_errors[x]) * scale


def fit_density_tables(
    df: pd.DataFrame,
    outcomes: Iterable[str] = OUTCOMES,
    densities: Iterable[str] = tuple(DENSITIES),
    reuse: Mapping[str, OutcomeTable] | None = None,
) -> dict[tuple[str, str], DensityTable]:
    """:func:`ratio_specs` for each outcome and density, keyed ``(outcome, density)``.

    ``df`` is the wave panel; the derived columns are added here
    (:func:`analysis.multiverse.add_derived_columns`). ``reuse``: tables of
    :func:`fit_chapter3` whose ``pooled``, ``twfe`` and ``fd`` fits (same specification, same
    sample) are taken instead of refitted. The ratio-free model, whose second coefficient (log
    population) and covariance the chapter reads, is fitted by :func:`analysis.estimation.fit`
    (linearmodels); the models of which only the density's coefficient is read, by
    :func:`analysis.multiverse.fit_fast`, which gives the same numbers (tested to 1e-9,
    weighted and with state-by-year effects) in a small fraction of the time: a state-by-year
    fit through linearmodels takes seconds, with its 150 dummies.
    """
    from analysis.multiverse import add_derived_columns, fit_fast

    df = add_derived_columns(df)
    out = {}
    for y in outcomes:
        for d in densities:
            sample, _ = balanced_sample(df, y, d)
            specs = ratio_specs(y, d)
            done = reuse.get(y) if reuse is not None else None
            results = {}
            for k, s in specs.items():
                if done is not None and done.regressor == d and k in _REUSED and done.results[k].spec == s:
                    results[k] = done.results[k]
                elif k in _FULL_FIT:
                    results[k] = fit(s, sample)
                else:
                    results[k] = fit_fast(s, sample)
            last = sample[sample["year"] == sample["year"].max()]
            out[(y, d)] = DensityTable(
                outcome=y, density=d, results=results, sample=sample,
                mean_density=float(sample[d].mean()),
                ref_population=float(last["population"].astype(float).median()),
            )
    return out


def main_table(dtables: Mapping[tuple[str, str], DensityTable], what: str = "coef") -> pd.DataFrame:
    """Coefficients (``what="coef"``), standard errors (``"se"``) or p-values (``"p"``), one row
    per outcome and density. Columns: the pooled gradient, each within model of
    :data:`WITHIN_MODELS` on its regressor of interest (the ratio-free model on the log count, per
    log point), and the log population coefficient of the ratio-free model (``ratio_free_logpop``)."""
    get = {"coef": "params", "se": "std_errors", "p": "pvalues"}
    if what not in get:
        raise ValueError(f"what must be one of {list(get)}, not {what!r}")
    rows = []
    for (y, d), t in dtables.items():
        row = {"outcome": y, "density": d}
        for k in ("pooled", *WITHIN_MODELS):
            row[k] = float(getattr(t.results[k], get[what])[t.term(k)])
        row["ratio_free_logpop"] = float(getattr(t.results["ratio_free"], get[what])["log_population"])
        rows.append(row)
    return pd.DataFrame(rows).set_index(["outcome", "density"])


def policy_table(dtables: Mapping[tuple[str, str], DensityTable], relevant_share: float | None = None,
                 level: float = 0.90) -> pd.DataFrame:
    """Every within-county estimate of the main table in policy units (addition A1 of Chapter 1).

    One row per outcome, density and model (:data:`WITHIN_MODELS`), all per added organisation
    per 1,000 residents (:meth:`DensityTable.slope_per_1k`): ``estimate``, ``se``, ``lo90`` and
    ``hi90`` (the ``level`` interval with normal critical values, as
    :func:`analysis.policy.ruled_out_beyond`), ``edge`` (the interval's end in the thesis's
    direction: every effect beyond it is ruled out), ``edge_per_ten`` (the same for ten more
    organisations in the median county of 2014, :attr:`DensityTable.ref_population`),
    ``edge_share`` (as a share of the pooled gradient of the same outcome and density),
    ``mde`` (80% power, 5% two-sided), ``mde_per_ten``, ``mde_share`` and ``reading``
    (:func:`analysis.policy.policy_units`: "ruled out" when the interval excludes every effect of
    at least ``relevant_share`` of the gradient in the thesis's direction, else "not
    identified"). Where the pooled gradient has the sign opposite to the thesis (income), no
    effect of policy interest is defined as a share of it: shares are NaN and ``reading`` says
    "gradient of the wrong sign". ``relevant_share`` defaults to A1's
    (:func:`analysis.hypotheses.policy_share_of_gradient`).
    """
    from analysis.hypotheses import policy_share_of_gradient
    from analysis.policy import policy_units

    share = policy_share_of_gradient() if relevant_share is None else relevant_share
    z = float(stats.norm.ppf(0.5 + level / 2))
    rows = []
    for (y, d), t in dtables.items():
        sign = BETTER_SIGN[y]
        grad = float(t.results["pooled"].params[d])
        aligned = np.sign(grad) == sign
        for k in WITHIN_MODELS:
            b, se = t.slope_per_1k(k)
            u = policy_units(b, se, thesis_sign=sign, pooled_gradient=grad, population=t.ref_population,
                             relevant_share=share, level=level)
            rows.append({
                "outcome": y, "density": d, "model": k, "estimate": b, "se": se,
                "lo90": b - z * se, "hi90": b + z * se,
                "edge": u.ruled_out_beyond, "edge_per_ten": u.ruled_out_per_ten,
                "edge_share": u.ruled_out_share_of_gradient if aligned else np.nan,
                "mde": u.mde, "mde_per_ten": u.mde_per_ten,
                "mde_share": u.mde_share_of_gradient if aligned else np.nan,
                "pooled_gradient": grad, "ref_population": t.ref_population,
                "reading": u.reading if aligned else "gradient of the wrong sign",
            })
    return pd.DataFrame(rows).set_index(["outcome", "density", "model"])


def denominator_table(dtables: Mapping[tuple[str, str], DensityTable]) -> pd.DataFrame:
    r"""How much of the TWFE density association is the count and how much the population.

    Density is :math:`1000\,c/P`, so a density slope :math:`\beta` implies, at the mean density
    :math:`\bar d`, a slope of :math:`\beta\bar d` per log point of the count at fixed population
    (``implied_count``) and of :math:`-\beta\bar d` per log point of population at a fixed count
    (``implied_pop``). The ratio-free model estimates the two separately: ``count_b`` (p-value
    ``count_p``) and ``pop_b`` (``pop_p``). ``count_share`` is ``count_b / implied_count``: the
    share of the density association that the count carries (1: all of it; 0 or below: none, the
    association is the denominator's). ``logpop_b`` is the density slope with log population as a
    control and ``logpop_share`` its ratio to the baseline. ``kronmal_p`` is the Wald test of
    :math:`\gamma_c + \gamma_P = 0`, the restriction under which the outcome depends on count and
    population only through their ratio (in logs; Kronmal 1993).
    """
    rows = []
    for (y, d), t in dtables.items():
        base = t.results["twfe"]
        rf = t.results["ratio_free"]
        b = float(base.params[d])
        c, p = t.count, "log_population"
        diff = float(rf.params[c] + rf.params[p])
        var = float(rf.cov.loc[c, c] + rf.cov.loc[p, p] + 2 * rf.cov.loc[c, p])
        rows.append({
            "outcome": y, "density": d, "density_b": b, "mean_density": t.mean_density,
            "implied_count": b * t.mean_density, "count_b": float(rf.params[c]), "count_se": float(rf.std_errors[c]),
            "count_p": float(rf.pvalues[c]),
            "implied_pop": -b * t.mean_density, "pop_b": float(rf.params[p]), "pop_p": float(rf.pvalues[p]),
            "count_share": float(rf.params[c]) / (b * t.mean_density),
            "logpop_b": float(t.results["twfe_logpop"].params[d]),
            "logpop_p": float(t.results["twfe_logpop"].pvalues[d]),
            "logpop_share": float(t.results["twfe_logpop"].params[d]) / b,
            "kronmal_p": float(stats.chi2.sf(diff**2 / var, 1)),
        })
    return pd.DataFrame(rows).set_index(["outcome", "density"])


def h2_inference(tables: Mapping[str, OutcomeTable], bootstrap: Iterable[str] = ("unemployment_rate", "poverty_rate"),
                 B: int = 9999, seed: int = 20261127) -> pd.DataFrame:
    """How the significance of the TWFE estimates depends on the inference, by outcome.

    ``p_county`` (clustered by county, the pre-declared test of H2), ``p_state`` (clustered by
    state, the ``twfe_state`` fit), ``p_wild`` (restricted wild cluster bootstrap by state,
    Rademacher, ``B`` draws, :func:`analysis.sensitivity.wild_cluster_bootstrap`; only for the
    outcomes in ``bootstrap``, NaN for the others) and ``p_holm`` (Holm's adjustment of
    ``p_county`` over the outcomes of ``tables``, the family of the pre-declared test,
    :func:`analysis.heterogeneity.holm`).
    """
    from analysis.heterogeneity import holm
    from analysis.sensitivity import wild_cluster_bootstrap

    ys = list(tables)
    p_county = np.array([float(tables[y].results["twfe"].pvalues[tables[y].regressor]) for y in ys])
    boot = set(bootstrap)
    rows = []
    for y, ph in zip(ys, holm(p_county)):
        t = tables[y]
        wild = (wild_cluster_bootstrap(t.results["twfe"].spec, t.sample, B=B, seed=seed)["p"] if y in boot
                else np.nan)
        rows.append({"outcome": y, "estimate": t.coef("twfe"),
                     "p_county": float(t.results["twfe"].pvalues[t.regressor]),
                     "p_state": float(t.results["twfe_state"].pvalues[t.regressor]),
                     "p_wild": float(wild), "p_holm": float(ph)})
    return pd.DataFrame(rows).set_index("outcome")
