"""Unit tests of analysis.estimation, analysis.tables and analysis.plots.

Every covariance option is checked against an independent computation (statsmodels OLS
with dummy variables, or numpy), every SpecificationError path is triggered, and the
helpers (effect sizes, variance decomposition, demeaning, tables, plots) are checked on a
small simulated unbalanced panel with states.
"""

from __future__ import annotations

import dataclasses

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import statsmodels.api as sm  # noqa: E402

from analysis import estimation as est  # noqa: E402
from analysis.estimation import (  # noqa: E402
    ModelSpec,
    SpecificationError,
    effect_sizes,
    fit,
    hausman,
    mundlak_test,
    validate,
    variance_decomposition,
    within_transform,
)
from analysis.plots import binned_means, binned_scatter, coef_plot  # noqa: E402
from analysis.tables import regression_table  # noqa: E402

TOL = dict(rtol=1e-9, atol=1e-12)


def make_panel(n_units=80, n_periods=5, n_states=8, drop=40, seed=7) -> pd.DataFrame:
    """A deterministic unbalanced county-style panel: fips (str), year, state_fips."""
    rng = np.random.default_rng(seed)
    fips = np.repeat([f"{i:05d}" for i in range(n_units)], n_periods)
    year = np.tile(1997 + 5 * np.arange(n_periods), n_units)
    state = np.repeat([f"{s:02d}" for s in rng.integers(0, n_states, n_units)], n_periods)
    a = np.repeat(rng.normal(size=n_units), n_periods)
    x = 0.6 * a + rng.normal(size=fips.size)
    z = rng.normal(size=fips.size)
    shock = pd.Series(rng.normal(size=fips.size)).groupby(pd.Series(state + year.astype(str))).transform("mean")
    y = 0.4 * x - 0.3 * z + a + 0.05 * (year - 1997) + shock.to_numpy() + rng.normal(size=fips.size)
    d = pd.DataFrame(
        {
            "fips": fips,
            "year": year,
            "state_fips": state,
            "y": y,
            "x": x,
            "z": z,
            "const_in_unit": np.repeat(rng.normal(size=n_units), n_periods),
            "national": np.tile(rng.normal(size=n_periods), n_units),
        }
    )
    d = d.drop(index=rng.choice(d.index, size=drop, replace=False)).reset_index(drop=True)
    return d


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    return make_panel()


def spec(**kw) -> ModelSpec:
    base = dict(outcome="y", regressors=("x",), controls=("z",))
    base.update(kw)
    return ModelSpec(**base)


def lsdv(panel: pd.DataFrame, time_dummies: bool = True):
    """statsmodels OLS with unit (and year) dummies: an independent TWFE."""
    parts = [panel[["x", "z"]], pd.get_dummies(panel["fips"], prefix="u", dtype=float)]
    if time_dummies:
        parts.append(pd.get_dummies(panel["year"], prefix="t", drop_first=True, dtype=float))
    return sm.OLS(panel["y"], pd.concat(parts, axis=1))


# --------------------------------------------------------------------------------------
# Covariances against independent computations
# --------------------------------------------------------------------------------------


def test_classical_and_robust_match_lsdv(panel):
    for cov, sm_kw in [("classical", {}), ("robust", {"cov_type": "HC1"})]:
        ours = fit(spec(cov=cov), panel)
        ref = lsdv(panel).fit(**sm_kw)
        np.testing.assert_allclose(ours.params[["x", "z"]], ref.params[["x", "z"]], **TOL)
        np.testing.assert_allclose(ours.std_errors[["x", "z"]], ref.bse[["x", "z"]], **TOL)


def test_cluster_unit_matches_hand_computation(panel):
    """CR1 with the unit effects not counted: G/(G-1) * (n-1)/(n-K), K = const + T-1 + k."""
    ours = fit(spec(cov="cluster-unit"), panel)
    ref = lsdv(panel).fit()
    X = ref.model.exog
    e = ref.resid.to_numpy()
    bread = np.linalg.pinv(X.T @ X)
    codes = pd.factorize(panel["fips"])[0]
    scores = X * e[:, None]
    meat = sum(np.outer(s, s) for s in pd.DataFrame(scores).groupby(codes).sum().to_numpy())
    n, g = len(panel), panel["fips"].nunique()
    k = 1 + (panel["year"].nunique() - 1) + 2
    V = bread @ meat @ bread * g / (g - 1) * (n - 1) / (n - k)
    se = np.sqrt(np.diag(V))[:2]
    np.testing.assert_allclose(ours.std_errors[["x", "z"]], se, rtol=1e-8)
    assert ours.n_clusters == (g,)
    assert ours.df_inference == g - 1


def test_cluster_state_pooled_matches_statsmodels(panel):
    # pooled OLS has no absorbed effects: CR1 = statsmodels' cluster correction
    ours = fit(spec(estimator="pooled", cov="cluster-state"), panel)
    X = sm.add_constant(panel[["x", "z"]])
    groups = pd.factorize(panel["state_fips"])[0]
    ref = sm.OLS(panel["y"], X).fit(cov_type="cluster", cov_kwds={"groups": groups})
    np.testing.assert_allclose(ours.params[["const", "x", "z"]], ref.params, **TOL)
    np.testing.assert_allclose(ours.std_errors[["const", "x", "z"]], ref.bse, rtol=1e-9)


def test_driscoll_kraay_matches_statsmodels_and_numpy(panel):
    ours = fit(spec(cov="driscoll-kraay", bandwidth=2), panel)
    model = lsdv(panel)
    t_codes = pd.factorize(panel["year"], sort=True)[0]
    ref = model.fit(cov_type="hac-groupsum", cov_kwds={"time": t_codes, "maxlags": 2, "use_correction": "hac"})
    np.testing.assert_allclose(ours.std_errors[["x", "z"]], ref.bse[["x", "z"]], rtol=1e-9)
    # numpy: sums of scores by period, Bartlett weights 1 - j/(L+1), n/(n-K)
    ols = model.fit()
    X, e = ols.model.exog, ols.resid.to_numpy()
    h = pd.DataFrame(X * e[:, None]).groupby(t_codes).sum().to_numpy()
    S = h.T @ h
    for j in (1, 2):
        G = h[j:].T @ h[:-j]
        S += (1 - j / 3) * (G + G.T)
    bread = np.linalg.pinv(X.T @ X)
    n, k = X.shape
    V = bread @ S @ bread * n / (n - np.linalg.matrix_rank(X))
    np.testing.assert_allclose(ours.std_errors[["x", "z"]], np.sqrt(np.diag(V))[:2], rtol=1e-8)
    assert "bandwidth 2" in ours.cov_type


def test_driscoll_kraay_default_bandwidth_and_kernels(panel):
    r = fit(spec(cov="driscoll-kraay"), panel)
    # rule of thumb floor(4 (T/100)^(2/9)) with T = 5 periods: floor(2.06) = 2
    assert "bandwidth 2" in r.cov_type
    np.testing.assert_allclose(r.std_errors, fit(spec(cov="driscoll-kraay", bandwidth=2), panel).std_errors, **TOL)
    for kernel in est.KERNELS:
        assert np.isfinite(fit(spec(cov="driscoll-kraay", kernel=kernel), panel).std_errors["x"])


def test_cluster_twoway_matches_hand_computation(panel):
    ours = fit(spec(cov="cluster-twoway"), panel)
    ref = lsdv(panel).fit()
    X, e = ref.model.exog, ref.resid.to_numpy()
    bread = np.linalg.pinv(X.T @ X)
    n = len(panel)
    k_total = np.linalg.matrix_rank(X)

    def one_way(codes):
        sums = pd.DataFrame(X * e[:, None]).groupby(codes).sum().to_numpy()
        g = len(sums)
        return sums.T @ sums * g / (g - 1) * (n - 1) / n

    unit = pd.factorize(panel["fips"])[0]
    time = pd.factorize(panel["year"])[0]
    meat = one_way(unit) + one_way(time) - one_way(unit * 100 + time)
    V = bread @ meat @ bread * n / (n - k_total)
    np.testing.assert_allclose(ours.std_errors[["x", "z"]], np.sqrt(np.diag(V))[:2], rtol=1e-8)
    assert ours.df_inference == panel["year"].nunique() - 1


def test_between_robust_matches_statsmodels_on_means(panel):
    ours = fit(spec(estimator="between", cov="robust"), panel)
    means = panel.groupby("fips")[["y", "x", "z"]].mean()
    ref = sm.OLS(means["y"], sm.add_constant(means[["x", "z"]])).fit(cov_type="HC1")
    np.testing.assert_allclose(ours.params[["const", "x", "z"]], ref.params, **TOL)
    np.testing.assert_allclose(ours.std_errors[["const", "x", "z"]], ref.bse, rtol=1e-9)
    assert ours.nobs_estimation == panel["fips"].nunique()


def test_fd_cluster_matches_statsmodels_on_differences():
    d = make_panel(drop=0)  # balanced, so every unit has every difference
    ours = fit(spec(estimator="fd", effects="time", cov="cluster-unit"), d)
    d = d.sort_values(["fips", "year"])
    diffs = d.groupby("fips")[["y", "x", "z"]].diff()
    dummies = pd.get_dummies(d["year"], prefix="t", drop_first=True, dtype=float)
    ddum = dummies.groupby(d["fips"]).diff()
    data = pd.concat([diffs, ddum, d["fips"]], axis=1).dropna()
    X = data[["x", "z", *dummies.columns]]
    ref = sm.OLS(data["y"], X).fit(cov_type="cluster", cov_kwds={"groups": pd.factorize(data["fips"])[0]})
    np.testing.assert_allclose(ours.params[["x", "z"]], ref.params[["x", "z"]], **TOL)
    np.testing.assert_allclose(ours.std_errors[["x", "z"]], ref.bse[["x", "z"]], rtol=1e-9)


def test_re_cluster_matches_ols_on_quasi_demeaned_data(panel):
    ours = fit(spec(estimator="re", cov="cluster-unit"), panel)
    theta = ours.raw.theta["theta"]
    d = panel.sort_values(["fips", "year"])
    th = d["fips"].map(theta).to_numpy()
    X = sm.add_constant(d[["x", "z"]])
    Xq = X - th[:, None] * X.groupby(d["fips"].to_numpy()).transform("mean")
    yq = d["y"] - th * d.groupby("fips")["y"].transform("mean")
    ref = sm.OLS(yq, Xq).fit(cov_type="cluster", cov_kwds={"groups": pd.factorize(d["fips"])[0]})
    np.testing.assert_allclose(ours.params[["const", "x", "z"]], ref.params, rtol=1e-8)
    np.testing.assert_allclose(ours.std_errors[["const", "x", "z"]], ref.bse, rtol=1e-8)


def test_cre_coefficients_equal_within(panel):
    fe = fit(spec(estimator="fe", cov="classical"), panel)
    cre = fit(spec(estimator="cre", controls=("z", "const_in_unit"), cov="cluster-unit"), panel)
    np.testing.assert_allclose(cre.params[["x", "z"]], fe.params[["x", "z"]], rtol=1e-8)
    assert "mean(const_in_unit)" not in cre.params.index  # time-invariant: no mean
    assert "const_in_unit" in cre.params.index


def test_cre_unbalanced_time_means(panel):
    r = fit(spec(estimator="cre", effects="time"), panel)
    assert any(t.startswith("mean(year[") for t in r.params.index)
    r_bal = fit(spec(estimator="cre", effects="time"), make_panel(drop=0))
    assert not any(t.startswith("mean(year[") for t in r_bal.params.index)


@pytest.mark.filterwarnings("ignore:The design matrix is rank-deficient")
def test_state_by_year_matches_lsdv(panel):
    ours = fit(spec(effects="state-by-year", cov="classical"), panel)
    cells = panel["state_fips"] + ":" + panel["year"].astype(str)
    X = pd.concat(
        [
            panel[["x", "z"]],
            pd.get_dummies(panel["fips"], dtype=float),
            pd.get_dummies(cells, dtype=float),
        ],
        axis=1,
    )
    ref = sm.OLS(panel["y"], X).fit()  # rank-deficient dummies: pinv, df from the rank
    np.testing.assert_allclose(ours.params[["x", "z"]], ref.params[["x", "z"]], rtol=1e-8)
    np.testing.assert_allclose(ours.std_errors[["x", "z"]], ref.bse[["x", "z"]], rtol=1e-8)


# --------------------------------------------------------------------------------------
# SpecificationError, raised before anything is fitted
# --------------------------------------------------------------------------------------


@pytest.fixture
def no_fitting(monkeypatch):
    """Make every linearmodels estimator explode, so an error must come before fitting."""
    import linearmodels.panel as lp

    def boom(*args, **kwargs):
        raise AssertionError("a model was fitted before the specification was checked")

    for name in ("PanelOLS", "PooledOLS", "RandomEffects", "BetweenOLS", "FirstDifferenceOLS"):
        monkeypatch.setattr(lp, name, boom)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(estimator="within"), "Unknown estimator 'within'"),
        (dict(estimator="fx"), "Did you mean 'fe'"),
        (dict(effects="year"), "Unknown effects 'year'"),
        (dict(cov="clustered"), "Unknown cov 'clustered'"),
        (dict(cov="driscoll-kraay", kernel="gaussian"), "Unknown kernel"),
        (dict(estimator="pooled", effects="unit"), "not available with estimator='pooled'"),
        (dict(estimator="twfe", effects="unit"), "not available with estimator='twfe'"),
        (dict(estimator="between", cov="cluster-unit"), "cov='cluster-unit' is not available"),
        (dict(estimator="between", cov="driscoll-kraay"), "cov='driscoll-kraay' is not available"),
        (dict(estimator="fd", cov="cluster-twoway"), "cov='cluster-twoway' is not available"),
        (dict(bandwidth=-1), "bandwidth must be"),
        (dict(regressors=()), "at least one regressor"),
        (dict(controls=("x",)), "more than once"),
        (dict(controls=("year",)), "index column"),
    ],
)
def test_bad_options_raise_on_construction(kwargs, message):
    with pytest.raises(SpecificationError, match=message):
        spec(**kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(regressors=("xx",)), r"Unknown variable 'xx' \(regressor\).*'x'"),
        (dict(outcome="yy"), r"Unknown variable 'yy' \(outcome\)"),
        (dict(controls=("zz",)), r"Unknown variable 'zz' \(control\)"),
        (dict(entity="county"), r"Unknown variable 'county' \(entity\)"),
        (dict(regressors=("const_in_unit",)), "'const_in_unit' has no within-unit variation"),
        (dict(regressors=("const_in_unit",), estimator="fd"), "first difference is zero"),
        (dict(regressors=("national",)), "absorbed by the period effects"),
        (dict(regressors=("national",), estimator="pooled", effects="time"), "absorbed by the period effects"),
        (dict(regressors=("x_within",), estimator="between"), "same mean in every unit"),
        (dict(cov="cluster-state", state="state"), "needs a state column"),
        (dict(effects="state-by-year", state="st"), "needs a state column"),
        (dict(regressors=("label",)), "not numeric"),
    ],
)
def test_bad_specifications_raise_before_fitting(panel, no_fitting, kwargs, message):
    data = panel.assign(label="a", x_within=panel["x"] - panel.groupby("fips")["x"].transform("mean"))
    with pytest.raises(SpecificationError, match=message):
        fit(spec(**kwargs), data)


def test_state_by_year_absorbs_state_level_series(panel, no_fitting):
    data = panel.assign(state_year_x=panel.groupby(["state_fips", "year"])["x"].transform("mean"))
    with pytest.raises(SpecificationError, match="absorbed by the state-by-period effects"):
        fit(spec(regressors=("state_year_x",), effects="state-by-year"), data)


def test_collinear_regressor_is_named(panel, no_fitting):
    data = panel.assign(trend=panel["year"] - 1997 + panel["const_in_unit"])  # unit trend
    with pytest.raises(SpecificationError, match="'trend' is collinear"):
        fit(spec(regressors=("trend",)), data)


def test_duplicated_keys_are_named(panel, no_fitting):
    data = pd.concat([panel, panel.iloc[[0, 5]]], ignore_index=True)
    key0 = (str(panel.loc[0, "fips"]), int(panel.loc[0, "year"]))
    with pytest.raises(SpecificationError, match="not uniquely indexed") as err:
        fit(spec(), data)
    assert f"({key0[0]!r}, {key0[1]!r})" in str(err.value)
    assert "4 rows share 2 duplicated key(s)" in str(err.value)


def test_missing_keys_and_empty_sample(panel, no_fitting):
    with pytest.raises(SpecificationError, match="missing value"):
        fit(spec(), panel.assign(fips=panel["fips"].where(panel.index > 0)))
    with pytest.raises(SpecificationError, match="sample is empty"):
        fit(spec(), panel.assign(z=np.nan))


def test_driscoll_kraay_bandwidth_too_large(panel, no_fitting):
    with pytest.raises(SpecificationError, match="bandwidth 5 must be below"):
        fit(spec(cov="driscoll-kraay", bandwidth=5), panel)


def test_missing_values_are_dropped_and_counted(panel):
    data = panel.copy()
    data.loc[:9, "z"] = np.nan
    r = fit(spec(), data)
    assert r.n_dropped == 10 and r.nobs == len(panel) - 10
    assert len(validate(spec(), data)) == len(panel) - 10


@pytest.mark.parametrize(
    "column, role, estimator",
    [
        ("x", "regressor", "twfe"),
        ("x", "regressor", "fd"),
        ("x", "regressor", "pooled"),
        ("y", "outcome", "twfe"),
        ("y", "outcome", "pooled"),
        ("z", "control", "re"),
    ],
)
def test_infinite_values_are_named(panel, no_fitting, column, role, estimator):
    data = panel.copy()
    rows = [2, 11, 12, 30, 41, 57, 60]
    data.loc[rows, column] = [np.inf, -np.inf, np.inf, np.inf, -np.inf, np.inf, np.inf]
    with pytest.raises(SpecificationError, match=f"{role} '{column}' has 7 infinite value") as err:
        fit(spec(estimator=estimator), data)
    message = str(err.value)
    keys = [f"({str(data.loc[r, 'fips'])!r}, {int(data.loc[r, 'year'])!r})" for r in rows]
    assert all(k in message for k in keys[:5])  # the first five offending rows, by (fips, year)
    assert not any(k in message for k in keys[5:])


def test_infinite_value_in_a_row_with_a_missing_value_is_still_an_error(panel, no_fitting):
    # NaN is "missing" (the row is dropped); inf is a bad value, wherever it is.
    data = panel.copy()
    data.loc[4, ["x", "z"]] = [np.inf, np.nan]
    with pytest.raises(SpecificationError, match="regressor 'x' has 1 infinite value"):
        validate(spec(), data)


# --------------------------------------------------------------------------------------
# Weights (weighted least squares); the reference against pyfixest is in
# tests/test_crosslibrary_pyfixest.py
# --------------------------------------------------------------------------------------


def _wls_lsdv(panel: pd.DataFrame, w: np.ndarray):
    parts = [panel[["x", "z"]], pd.get_dummies(panel["fips"], prefix="u", dtype=float),
             pd.get_dummies(panel["year"], prefix="t", drop_first=True, dtype=float)]
    return sm.WLS(panel["y"], pd.concat(parts, axis=1), weights=w)


def test_weighted_twfe_matches_statsmodels_wls_with_dummies(panel):
    data = panel.assign(w=np.exp(np.sin(np.arange(len(panel)))))
    r = fit(spec(weights="w", cov="classical"), data)
    ref = _wls_lsdv(data, data["w"].to_numpy()).fit()
    np.testing.assert_allclose(r.params[["x", "z"]], ref.params[["x", "z"]], **TOL)
    np.testing.assert_allclose(r.std_errors[["x", "z"]], ref.bse[["x", "z"]], **TOL)
    # clustered by unit: the sandwich of the sqrt(w)-scaled data, units nested in clusters not in K
    rc = fit(spec(weights="w"), data)
    cl = pd.factorize(data["fips"])[0]
    refc = _wls_lsdv(data, data["w"].to_numpy()).fit(cov_type="cluster", cov_kwds={"groups": cl})
    n, G = len(data), data["fips"].nunique()
    k_full, k_nested = refc.df_model + 1, refc.df_model + 1 - (G - 1)
    # statsmodels counts every dummy in K; our (fixest) convention leaves out the nested unit effects
    scale = np.sqrt((n - k_full) / (n - k_nested))
    np.testing.assert_allclose(rc.std_errors[["x", "z"]], refc.bse[["x", "z"]] * scale, rtol=1e-8)
    assert "weighted by w" in rc.cov_type
    assert rc.to_frame()["weights"].eq("w").all()


def test_constant_weights_change_nothing(panel):
    a = fit(spec(), panel)
    b = fit(spec(weights="w"), panel.assign(w=3.7))
    np.testing.assert_allclose(a.params, b.params, **TOL)
    np.testing.assert_allclose(a.std_errors, b.std_errors, **TOL)


def test_missing_weight_drops_the_row(panel):
    data = panel.assign(w=1.0 + (panel.index % 3))
    data.loc[:4, "w"] = np.nan
    r = fit(spec(weights="w"), data)
    assert r.nobs == len(panel) - 5 and r.n_dropped == 5


@pytest.mark.parametrize("bad, message", [
    (0.0, "not positive and finite"), (-1.0, "not positive and finite"), (np.inf, "not positive and finite"),
])
def test_bad_weights_are_named(panel, no_fitting, bad, message):
    data = panel.assign(w=1.0)
    data.loc[[3, 8], "w"] = bad
    with pytest.raises(SpecificationError, match=f"weights 'w' has 2 value.*{message}") as err:
        fit(spec(weights="w"), data)
    assert repr(str(data.loc[3, "fips"])) in str(err.value)


def test_weights_options_are_checked(panel, no_fitting):
    with pytest.raises(SpecificationError, match="weights are not available with estimator='re'"):
        spec(estimator="re", weights="w")
    with pytest.raises(SpecificationError, match="weights are not available with estimator='between'"):
        spec(estimator="between", cov="robust", weights="w")
    with pytest.raises(SpecificationError, match="index column"):
        spec(weights="year")
    with pytest.raises(SpecificationError, match=r"Unknown variable 'wt' \(weights\).*'w'"):
        fit(spec(weights="wt"), panel.assign(w=1.0))
    with pytest.raises(SpecificationError, match="not numeric"):
        fit(spec(weights="w"), panel.assign(w="a"))
    with pytest.raises(SpecificationError, match="does not support weights"):
        mundlak_test(spec(weights="w"), panel.assign(w=1.0))


def test_index_columns_may_be_in_the_index(panel):
    a = fit(spec(), panel)
    b = fit(spec(), panel.set_index(["fips", "year"]))
    np.testing.assert_allclose(a.params, b.params, **TOL)


# --------------------------------------------------------------------------------------
# Hausman and Mundlak
# --------------------------------------------------------------------------------------


def test_hausman_non_positive_definite_difference(panel):
    fe = fit(spec(cov="classical"), panel)
    re = fit(spec(estimator="re", cov="classical"), panel)
    # choose V_RE so that V_FE - V_RE = diag(-a, b): indefinite, eigenvectors x and z
    terms = ["x", "z"]
    a, b = float(fe.cov.loc["x", "x"]), 0.5 * float(fe.cov.loc["z", "z"])
    cov = re.cov.copy()
    cov.loc[terms, terms] = fe.cov.loc[terms, terms].to_numpy() - np.diag([-a, b])
    bad_re = dataclasses.replace(re, cov=cov)
    h = hausman(fe, bad_re)
    assert h.positive_definite is False
    assert h.df == 1
    assert "not positive definite" in h.note
    d_z = float(fe.params["z"] - re.params["z"])
    assert abs(h.statistic - d_z**2 / b) < 1e-10 * max(1.0, h.statistic)


def test_hausman_argument_checks(panel):
    fe = fit(spec(cov="classical"), panel)
    re = fit(spec(estimator="re", cov="classical"), panel)
    with pytest.raises(SpecificationError, match="fixed-effects fit first"):
        hausman(re, fe)
    with pytest.raises(SpecificationError, match="not estimated by both"):
        hausman(fe, re, terms=["nope"])
    with pytest.warns(UserWarning, match="assumes RE is efficient"):
        hausman(fit(spec(), panel), re)


def test_mundlak_cluster_by_hand(panel):
    m = mundlak_test(spec(), panel)
    assert m.terms == ("mean(x)", "mean(z)")
    g = m.result.params[list(m.terms)].to_numpy()
    V = m.result.cov.loc[list(m.terms), list(m.terms)].to_numpy()
    assert abs(m.statistic - float(g @ np.linalg.inv(V) @ g)) < 1e-10
    assert "clustered by fips" in m.cov_type
    # the data were simulated with x correlated with the unit effect
    assert m.pvalue < 0.01


# --------------------------------------------------------------------------------------
# Effect sizes, variance decomposition, demeaning
# --------------------------------------------------------------------------------------


def test_variance_decomposition(panel):
    vd = variance_decomposition(panel, "x", "fips")
    x = panel["x"]
    means = x.groupby(panel["fips"]).transform("mean")
    assert vd.share_within == pytest.approx(((x - means) ** 2).sum() / ((x - x.mean()) ** 2).sum(), rel=1e-12)
    assert vd.share_within + vd.share_between == pytest.approx(1.0)
    assert vd.sd_within == pytest.approx((x - means).std(), rel=1e-12)
    assert vd.sd_between == pytest.approx(x.groupby(panel["fips"]).mean().std(), rel=1e-12)
    assert vd.n_units == panel["fips"].nunique()
    assert variance_decomposition(panel, "const_in_unit", "fips").share_within == pytest.approx(0, abs=1e-20)
    assert vd.to_series()["sd_overall"] == pytest.approx(x.std())
    with pytest.raises(SpecificationError, match="Unknown variable"):
        variance_decomposition(panel, "xx", "fips")


def test_effect_sizes(panel):
    r = fit(spec(), panel)
    es = effect_sizes(r, panel)
    vd = variance_decomposition(panel, "x", "fips")
    b = float(r.params["x"])
    assert es.loc["per unit", "estimate"] == b
    assert es.loc["per within-unit SD", "estimate"] == pytest.approx(b * vd.sd_within)
    assert es.loc["per between-unit SD", "estimate"] == pytest.approx(b * vd.sd_between)
    upper = float(r.conf_int.loc["x", "upper"])
    assert es.loc["per within-unit SD", "conf_high"] == pytest.approx(upper * vd.sd_within)
    with pytest.raises(SpecificationError, match="not a coefficient"):
        effect_sizes(r, panel, "q")


def test_within_transform_two_way_unbalanced(panel):
    res = within_transform(panel, ["x", "y"], absorb="unit+time")
    for key in ("fips", "year"):
        means = res.groupby(panel.loc[res.index, key]).mean().abs().to_numpy().max()
        assert means < 1e-9
    # equals the residual of an LSDV regression on unit and year dummies
    D = pd.concat(
        [pd.get_dummies(panel["fips"], dtype=float), pd.get_dummies(panel["year"], drop_first=True, dtype=float)],
        axis=1,
    )
    ref = sm.OLS(panel["x"], D).fit().resid
    np.testing.assert_allclose(res["x"], ref, atol=1e-9)
    with pytest.raises(SpecificationError):
        within_transform(panel, ["x"], absorb="county")


def test_binned_slope_is_twfe_coefficient(panel):
    bm = binned_means(panel, "x", "y", bins=10, absorb="unit+time")
    r = fit(spec(controls=(), cov="classical"), panel)
    assert bm.slope == pytest.approx(float(r.params["x"]), rel=1e-8)
    assert bm.bins["n"].sum() == len(panel) and len(bm.bins) == 10
    pooled = binned_means(panel, "x", "y", bins=10)
    ols = sm.OLS(panel["y"], sm.add_constant(panel["x"])).fit()
    assert pooled.slope == pytest.approx(float(ols.params["x"]), rel=1e-10)
    assert pooled.bins["x_mean"].is_monotonic_increasing


# --------------------------------------------------------------------------------------
# PanelResult, tables, plots
# --------------------------------------------------------------------------------------


def test_panel_result_api(panel):
    r = fit(spec(), panel)
    tidy = r.to_frame()
    assert list(tidy.columns[:8]) == [
        "term",
        "role",
        "estimate",
        "std_error",
        "statistic",
        "p_value",
        "conf_low",
        "conf_high",
    ]
    assert tidy.set_index("term").loc["x", "role"] == "regressor"
    assert set(r.terms("effect dummy")) == {f"year[{y}]" for y in (2002, 2007, 2012, 2017)}
    ci90, ci95 = r.ci(0.90), r.conf_int
    assert (ci90["upper"] - ci90["lower"] < ci95["upper"] - ci95["lower"]).all()
    np.testing.assert_allclose(r.ci(0.95), ci95, **TOL)
    assert r.n_units == panel["fips"].nunique() and r.n_periods == 5
    assert 0 < r.rsquared_within < 1
    assert r.inference == f"t({panel['fips'].nunique() - 1})"


def test_every_estimator_and_cov_combination_runs(panel):
    for estimator, covs in est.ALLOWED_COV.items():
        for effects in est.ALLOWED_EFFECTS[estimator]:
            for cov in covs:
                r = fit(spec(estimator=estimator, effects=effects, cov=cov, bandwidth=1), panel)
                assert np.isfinite(r.params["x"]) and r.std_errors["x"] > 0, (estimator, effects, cov)


def test_regression_table(panel):
    results = {
        "Pooled": fit(spec(estimator="pooled"), panel),
        "TWFE": fit(spec(), panel),
        "FD": fit(spec(estimator="fd", regressors=("x",), controls=()), panel),
    }
    t = regression_table(results, digits=4, labels={"x": "Associations per 1,000"})
    assert list(t.frame.columns) == ["Pooled", "TWFE", "FD"]
    assert t.frame.loc["Associations per 1,000", "TWFE"] == f"{results['TWFE'].params['x']:.4f}"
    se_row = t.frame.iloc[1]
    assert se_row["TWFE"] == f"({results['TWFE'].std_errors['x']:.4f})"
    assert t.frame.loc["Unit effects"].tolist() == ["No", "Yes", "Differenced"]
    assert t.frame.loc["Standard errors", "TWFE"] == "Cluster: fips"
    assert t.frame.loc["Observations", "TWFE"] == f"{len(panel):,}"
    assert t.estimates.loc[("x", "coef"), "TWFE"] == results["TWFE"].params["x"]
    html = t.to_html()
    assert html.startswith('<table class="regression-table">') and "Dependent variable: y" in html
    latex = t.to_latex()
    assert "\\toprule" in latex and "R$^2$ within" in latex and "Associations per 1,000" in latex
    starred = regression_table(results, stars=True, stat="ci")
    assert "***" in starred.frame.to_string() and "[" in starred.frame.iloc[1]["TWFE"]
    with pytest.raises(ValueError):
        regression_table(results, stat="sd")


def test_latex_escapes_underscores(panel):
    data = panel.rename(columns={"x": "assn_per_1k"})
    res = fit(ModelSpec("y", ("assn_per_1k",)), data)
    latex = regression_table({"a": res}).to_latex(label="tab:x")
    assert "assn\\_per\\_1k" in latex and "\\label{tab:x}" in latex


def test_plots(panel):
    results = {"TWFE": fit(spec(), panel), "RE": fit(spec(estimator="re"), panel)}
    ax = coef_plot(results, "x")
    # first model on top
    labels = {float(pos): t.get_text() for pos, t in zip(ax.get_yticks(), ax.get_yticklabels())}
    assert labels == {1.0: "TWFE", 0.0: "RE"}
    assert "Coefficient on x (95% CI)" == ax.get_xlabel()
    lo, hi = results["TWFE"].conf_int.loc["x"]
    np.testing.assert_allclose(ax.collections[0].get_segments()[0][:, 0], [lo, hi])
    plt.close(ax.figure)
    ax = binned_scatter(panel, "x", "y", bins=8, absorb="unit+time")
    assert len(ax.collections[0].get_offsets()) == 8
    assert "net of fips and year means" in ax.get_xlabel()
    plt.close(ax.figure)
    with pytest.raises(SpecificationError):
        coef_plot(results, "nope")


def test_cre_with_all_gaps_in_one_period_equals_twfe():
    """Synthetic unbalanced panel (labelled): every missing row is in the same period, which makes
    the unit means of the period dummies collinear. CRE must still fit, and its coefficient on the
    time-varying regressor equals two-way FE exactly (Mundlak 1978; Wooldridge 2019)."""
    rng = np.random.default_rng(7)
    n, t = 60, 4
    d = pd.DataFrame({"fips": np.repeat([f"{i:05d}" for i in range(n)], t), "year": np.tile([1, 2, 3, 4], n)})
    a = np.repeat(rng.normal(size=n), t)
    d["x"] = a + rng.normal(size=n * t)
    d["y"] = 0.5 * d["x"] + a + 0.3 * d["year"] + rng.normal(size=n * t)
    d = d[~((d["year"] == 2) & (d["fips"] < "00010"))]  # 10 units miss period 2 only
    cre = fit(ModelSpec("y", ("x",), estimator="cre", effects="time", cov="robust"), d)
    twfe = fit(ModelSpec("y", ("x",), estimator="twfe", cov="robust"), d)
    assert abs(cre.params["x"] - twfe.params["x"]) < 1e-8
