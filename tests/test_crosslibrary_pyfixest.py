"""Cross-library check: our linearmodels-based TWFE against pyfixest, to 1e-8.

The small-sample corrections match with pyfixest's default
``pf.ssc(k_adj=True, k_fixef="nonnested", G_adj=True, G_df="min")`` (fixest's and Stata's
``xtreg, fe vce(cluster)`` convention): the clustered covariance is multiplied by
G/(G-1) * (n-1)/(n-K), where K counts the constant, the period effects and the regressors
but not the unit effects, which are nested in the clusters. linearmodels gives exactly
that with ``debiased=True, group_debias=True, auto_df=True`` when the unit effects are
absorbed and the period effects are dummy regressors, which is how ``fit`` builds a TWFE
model. ``fixef_rm="none"`` keeps singleton units in pyfixest, as linearmodels does.

The last tests document the other two mappings, with both effects absorbed in
linearmodels: counting all effects (``count_effects=True``) is ``k_fixef="full"``, and
counting none (``auto_df=False, count_effects=False``) is ``k_fixef="none"``.

Weighted least squares (``ModelSpec.weights``) is checked against ``pf.feols(weights=...)`` for
pooled, unit and two-way effects, state-by-period effects and first differences (pyfixest's
weighted OLS on the differences, with linearmodels' weight for a difference), with a weight
that varies within units and with the unit mean of population, the book's choice.

Data: the county panel (``analysis.panels.load("us_counties_waves")``) when it is
available, and always the wage panel (Vella & Verbeek 1998) and a simulated unbalanced
panel with states.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest

from analysis.estimation import ModelSpec, fit

import pyfixest as pf
from linearmodels.datasets import wage_panel

# pyfixest 0.60 calls pandas methods with inplace=True, which pandas 3.1 deprecates
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword")

RTOL, ATOL = 1e-8, 1e-10
DEFAULT_SSC = dict(k_adj=True, k_fixef="nonnested", G_adj=True, G_df="min")  # = pf.ssc()


@functools.cache
def _wagepan():
    w = wage_panel.load()
    return w, dict(outcome="lwage", regressors=("expersq", "married", "union"), entity="nr", time="year")


@functools.cache
def _simulated():
    rng = np.random.default_rng(20240611)
    n_units, n_periods = 240, 4
    fips = np.repeat([f"{i:05d}" for i in range(n_units)], n_periods)
    year = np.tile([1997, 2002, 2007, 2012], n_units)
    state = np.repeat(rng.integers(0, 12, n_units), n_periods)
    a = np.repeat(rng.normal(size=n_units), n_periods)
    x = 0.5 * a + rng.normal(size=fips.size)
    z = rng.normal(size=fips.size)
    y = 0.3 * x - 0.2 * z + a + 0.1 * (year - 2000) + rng.normal(size=fips.size)
    d = pd.DataFrame({"fips": fips, "year": year, "state_fips": state, "y": y, "x": x, "z": z})
    d = d.drop(index=rng.choice(d.index, size=60, replace=False))  # unbalanced, some singletons
    return d.reset_index(drop=True), dict(outcome="y", regressors=("x",), controls=("z",))


@functools.cache
def _counties():
    from analysis.panels import load

    df = load("us_counties_waves")  # `make test` builds the data first; never skipped
    return df, dict(
        outcome="unemployment_rate",
        regressors=("assn_per_1k",),
        controls=("log_median_hh_income", "poverty_rate"),
    )


DATASETS = {"wagepan": _wagepan, "simulated": _simulated, "counties": _counties}


def _formula(kw: dict, fe: str) -> str:
    rhs = " + ".join((*kw["regressors"], *kw.get("controls", ())))
    return f"{kw['outcome']} ~ {rhs} | {fe}"


def _feols(df, kw, fe, vcov, ssc):
    return pf.feols(
        _formula(kw, fe),
        data=df,
        vcov=vcov,
        ssc=pf.ssc(**ssc),
        fixef_rm="none",
        demeaner=pf.MapDemeaner(fixef_tol=1e-13),
    )


def _compare(ours, theirs, terms):
    np.testing.assert_allclose(ours.params[terms], theirs.coef()[terms], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(ours.std_errors[terms], theirs.se()[terms], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(ours.pvalues[terms], theirs.pvalue()[terms], rtol=1e-6, atol=1e-12)
    assert ours.nobs == theirs._N


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_twfe_cluster_unit(dataset):
    df, kw = DATASETS[dataset]()
    entity, time = kw.get("entity", "fips"), kw.get("time", "year")
    ours = fit(ModelSpec(**kw, estimator="twfe", cov="cluster-unit"), df)
    theirs = _feols(df, kw, f"{entity} + {time}", {"CRV1": entity}, DEFAULT_SSC)
    _compare(ours, theirs, list(ours.spec.variables))


@pytest.mark.parametrize("dataset", ["simulated", "counties"])
def test_twfe_cluster_state(dataset):
    df, kw = DATASETS[dataset]()
    ours = fit(ModelSpec(**kw, estimator="twfe", cov="cluster-state"), df)
    theirs = _feols(df, kw, "fips + year", {"CRV1": "state_fips"}, DEFAULT_SSC)
    _compare(ours, theirs, list(ours.spec.variables))


@pytest.mark.parametrize("dataset", ["wagepan", "simulated"])
@pytest.mark.parametrize(
    "cov, vcov, ssc",
    [
        # no clusters: every effect is counted, n/(n-K) for HC1 and s^2 = e'e/(n-K)
        ("classical", "iid", dict(DEFAULT_SSC, k_fixef="full")),
        ("robust", "hetero", dict(DEFAULT_SSC, k_fixef="full")),
        # two-way: unit effects are not nested in the period clusters, so linearmodels
        # counts them, and it applies G/(G-1) to each of the three one-way covariances
        ("cluster-twoway", "twoway", dict(DEFAULT_SSC, k_fixef="full", G_df="conventional")),
    ],
)
def test_twfe_other_covariances(dataset, cov, vcov, ssc):
    df, kw = DATASETS[dataset]()
    entity, time = kw.get("entity", "fips"), kw.get("time", "year")
    if vcov == "twoway":
        vcov = {"CRV1": f"{entity}+{time}"}
    ours = fit(ModelSpec(**kw, estimator="twfe", cov=cov), df)
    theirs = _feols(df, kw, f"{entity} + {time}", vcov, ssc)
    _compare(ours, theirs, list(ours.spec.variables))


@pytest.mark.parametrize("dataset, cov", [("simulated", "cluster-unit"), ("counties", "cluster-state")])
def test_state_by_year_coefficients_and_documented_df_gap(dataset, cov):
    """Unit + state-by-period effects: coefficients agree to 1e-8; the standard errors differ
    only by the documented count of the state-by-period effects. We count them exactly, as
    S*(T-1) dummies plus the constant. pyfixest counts S*T levels with unit clusters, and
    none with state clusters (they are nested in the states)."""
    df, kw = DATASETS[dataset]()
    ours = fit(ModelSpec(**kw, estimator="twfe", effects="state-by-year", cov=cov), df)
    df = df.assign(state_year=df["state_fips"].astype(str) + "_" + df["year"].astype(str))
    cluster = "fips" if cov == "cluster-unit" else "state_fips"
    theirs = _feols(df, kw, "fips + state_year", {"CRV1": cluster}, DEFAULT_SSC)
    terms = list(ours.spec.variables)
    np.testing.assert_allclose(ours.params[terms], theirs.coef()[terms], rtol=RTOL, atol=ATOL)
    n, k = ours.nobs, len(terms)
    sample = df.dropna(subset=[kw["outcome"], *terms])
    n_cells = sample["state_year"].nunique()
    k_ours = 1 + (n_cells - sample["state_fips"].nunique()) + k  # const + dummies + regressors
    # pyfixest "nonnested": k + k_fe_adj - k_fe_nested + n_fe_fully_nested
    k_pyfixest = k + n_cells if cov == "cluster-unit" else k + 1
    ratio = np.sqrt((n - k_pyfixest) / (n - k_ours))
    np.testing.assert_allclose(ours.std_errors[terms], theirs.se()[terms] * ratio, rtol=RTOL)


@pytest.mark.parametrize(
    "count_effects, k_fixef", [(True, "full"), (False, "none")], ids=["count-all", "count-none"]
)
def test_absorbed_effects_ssc_mappings(count_effects, k_fixef):
    from linearmodels import PanelOLS

    w, kw = _wagepan()
    data = w.set_index(["nr", "year"])
    terms = list(kw["regressors"])
    res = PanelOLS(data["lwage"], data[terms], entity_effects=True, time_effects=True).fit(
        cov_type="clustered",
        cluster_entity=True,
        debiased=True,
        group_debias=True,
        auto_df=False,
        count_effects=count_effects,
    )
    theirs = _feols(w, kw, "nr + year", {"CRV1": "nr"}, dict(DEFAULT_SSC, k_fixef=k_fixef))
    np.testing.assert_allclose(res.std_errors[terms], theirs.se()[terms], rtol=RTOL)
    # and neither is the default: with 545 units and 8 years, counting all effects
    # inflates the standard errors by about 9% against the nested convention
    ours = fit(ModelSpec(**kw, estimator="twfe", cov="cluster-unit"), w)
    ratio = (res.std_errors[terms] / ours.std_errors[terms]).to_numpy()
    assert (ratio > 1.05).all() if count_effects else (abs(ratio - 1) < 0.01).all()


# --------------------------------------------------------------------------------------
# Weighted least squares (ModelSpec.weights): linearmodels against pyfixest feols(weights=...)
# --------------------------------------------------------------------------------------


@functools.cache
def _weighted(dataset: str):
    """The dataset with two weights: one that varies within units and the unit mean of a
    population-like series (time-invariant, the book's choice)."""
    df, kw = DATASETS[dataset]()
    entity = kw.get("entity", "fips")
    rng = np.random.default_rng(7)
    w = np.exp(rng.normal(scale=0.8, size=len(df)))
    if "population" in df.columns:
        w = df["population"].astype(float).to_numpy()
    df = df.assign(w_row=w, w_unit=pd.Series(w, index=df.index).groupby(df[entity].to_numpy()).transform("mean"))
    return df, kw


@pytest.mark.parametrize("dataset", list(DATASETS))
@pytest.mark.parametrize("weights", ["w_row", "w_unit"])
@pytest.mark.parametrize("estimator, effects, fe", [
    ("twfe", "unit+time", "{entity} + {time}"),
    ("fe", "unit", "{entity}"),
    ("pooled", "time", "{time}"),
])
def test_weighted_matches_pyfixest(dataset, weights, estimator, effects, fe):
    df, kw = _weighted(dataset)
    entity, time = kw.get("entity", "fips"), kw.get("time", "year")
    ours = fit(ModelSpec(**kw, estimator=estimator, effects=effects, cov="cluster-unit", weights=weights), df)
    theirs = pf.feols(_formula(kw, fe.format(entity=entity, time=time)), data=df, weights=weights,
                      vcov={"CRV1": entity}, ssc=pf.ssc(**DEFAULT_SSC), fixef_rm="none",
                      demeaner=pf.MapDemeaner(fixef_tol=1e-13))
    _compare(ours, theirs, list(ours.spec.variables))
    unweighted = fit(ModelSpec(**kw, estimator=estimator, effects=effects, cov="cluster-unit"), df)
    assert not np.allclose(ours.params[list(ours.spec.variables)], unweighted.params[list(ours.spec.variables)])


@pytest.mark.parametrize("dataset", ["simulated", "counties"])
def test_weighted_state_by_year_matches_pyfixest(dataset):
    """Weighted, with state-by-period effects: coefficients to 1e-8, standard errors up to the
    documented count of the state-by-period effects (as unweighted, above)."""
    df, kw = _weighted(dataset)
    ours = fit(ModelSpec(**kw, estimator="twfe", effects="state-by-year", cov="cluster-unit", weights="w_unit"), df)
    d = df.assign(state_year=df["state_fips"].astype(str) + "_" + df["year"].astype(str))
    theirs = pf.feols(_formula(kw, "fips + state_year"), data=d, weights="w_unit", vcov={"CRV1": "fips"},
                      ssc=pf.ssc(**DEFAULT_SSC), fixef_rm="none", demeaner=pf.MapDemeaner(fixef_tol=1e-13))
    terms = list(ours.spec.variables)
    np.testing.assert_allclose(ours.params[terms], theirs.coef()[terms], rtol=RTOL, atol=ATOL)
    sample = d.dropna(subset=[kw["outcome"], *terms])
    n, k, n_cells = ours.nobs, len(terms), sample["state_year"].nunique()
    k_ours = 1 + (n_cells - sample["state_fips"].nunique()) + k
    ratio = np.sqrt((n - (k + n_cells)) / (n - k_ours))
    np.testing.assert_allclose(ours.std_errors[terms], theirs.se()[terms] * ratio, rtol=RTOL)


@pytest.mark.parametrize("weights", ["w_row", "w_unit"])
def test_weighted_first_differences_match_pyfixest_on_differences(weights):
    """First differences with weights: the difference between t-1 and t gets the weight
    1/(1/w_{t-1} + 1/w_t) (linearmodels' rule; for a weight constant within a unit, w/2, so
    weighting differences by the unit's weight). pyfixest has no FD estimator, so its
    weighted OLS is run on the differences, with period intercepts and no constant."""
    df, kw = _weighted("simulated")
    ours = fit(ModelSpec(**kw, estimator="fd", effects="time", cov="cluster-unit", weights=weights), df)
    cols = [kw["outcome"], *kw["regressors"], *kw["controls"]]
    d = df.dropna(subset=cols).sort_values(["fips", "year"]).reset_index(drop=True)
    waves = np.sort(d["year"].unique())
    pos = np.searchsorted(waves, d["year"].to_numpy())
    ok = (d["fips"].to_numpy()[1:] == d["fips"].to_numpy()[:-1]) & (np.diff(pos) == 1)
    diff = d[cols].diff().iloc[1:][ok].reset_index(drop=True)
    w = d[weights].to_numpy()
    diff["wd"] = (1 / (1 / w[1:] + 1 / w[:-1]))[ok]
    diff["fips"] = d["fips"].to_numpy()[1:][ok]
    diff["period"] = d["year"].to_numpy()[1:][ok].astype(str)
    rhs = " + ".join((*kw["regressors"], *kw["controls"]))
    theirs = pf.feols(f"{kw['outcome']} ~ {rhs} + C(period) - 1", data=diff, weights="wd", vcov={"CRV1": "fips"},
                      ssc=pf.ssc(**DEFAULT_SSC))
    terms = list(ours.spec.variables)
    np.testing.assert_allclose(ours.params[terms], theirs.coef()[terms], rtol=RTOL, atol=ATOL)
    # linearmodels counts the rows in levels' differences; pyfixest the same rows: same n and K
    np.testing.assert_allclose(ours.std_errors[terms], theirs.se()[terms], rtol=RTOL)


# The ratio-free model of Chapter 3 (Kronmal 1993): log(1 + count) and log population entered
# separately with county and year effects, checked on the real panel against pyfixest.
@pytest.mark.parametrize("count", ["log_count_assn", "log_count_community"])
@pytest.mark.parametrize("outcome", ["unemployment_rate", "poverty_rate"])
def test_ratio_free_model_matches_pyfixest(count, outcome):
    from analysis.between_within import ratio_specs
    from analysis.multiverse import add_derived_columns

    df, _ = _counties()
    d = add_derived_columns(df)
    density = {"log_count_assn": "assn_per_1k", "log_count_community": "community_per_1k"}[count]
    spec = ratio_specs(outcome, density)["ratio_free"]
    assert spec.regressors == (count,) and spec.controls == ("log_population",)
    ours = fit(spec, d)
    kw = dict(outcome=outcome, regressors=(count,), controls=("log_population",))
    sample = d.dropna(subset=[outcome, count, "log_population"])
    theirs = _feols(sample, kw, "fips + year", {"CRV1": "fips"}, DEFAULT_SSC)
    _compare(ours, theirs, [count, "log_population"])
