"""Tests of analysis.dynamic: lead/lag construction, standardised coefficients, long differences and
dynamic-panel GMM.

GMM reference values (printed output, compared at the printed precision):

* [AB-a1] Arellano & Bond (1991), Table 4, column (a1), one-step difference GMM with robust SEs, as
  printed by Stata's xtabond2 in Roodman (2009), "How to do xtabond2", Stata Journal 9(1), p. 105-106
  (``xtabond2 n L.n L2.n w L.w L(0/2).(k ys) yr*, gmm(L.n) iv(w L.w L(0/2).(k ys) yr*) nolevel robust``):
  coefficients, SEs, 41 instruments, AR(1) z = -3.60, AR(2) z = -0.52, Sargan chi2(25) = 67.59,
  Hansen chi2(25) = 31.38. The text adds the two-step coefficient on L.n: 0.629 (column (a2)).
* [pydynpd] The README of pydynpd (Wu et al. 2023, JOSS 8(83) 4416; results stated to match xtabond2)
  prints two two-step fits on the same data with Windmeijer-corrected SEs: difference GMM
  ``n L(1:2).n w k | gmm(n, 2:4) gmm(w, 1:3) iv(k) | timedumm nolevel`` and system GMM
  ``n L(1:2).n w k | gmm(n, 2:4) gmm(w, 1:3) iv(k)``.

* [plm] R package plm 2.6-2 (Debian r-cran-plm 2.6-2+dfsg-1, R 4.2.2), run on the same file:
  ``summary(pgmm(log(emp) ~ lag(log(emp), 1:2) + lag(log(wage), 0:1) + lag(log(capital), 0:2) +
  lag(log(output), 0:2) | lag(log(emp), 2:99), data = EmplUK, effect = "twoways", model = "onestep"),
  robust = TRUE)``, printed to 6 decimals.

Data: ``tests/data/emplUK.csv``, the Arellano-Bond UK company panel as shipped in R's plm 2.6-2
(``data(EmplUK)``), with n = log(emp), w = log(wage), k = log(capital), ys = log(output) (Stata's
``abdata``). Stata's copy stores the logs in single precision and plm's the levels to about 8 digits,
so the two copies differ in the 7th significant digit: against xtabond2's 7-decimal output the
coefficients and SEs are compared within 2e-6 (:func:`assert_close`); against plm, which used this
very file, at its printed precision. Other fixtures are synthetic (labelled) panels made here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from printed import assert_printed

from analysis.dynamic import (
    DynamicPanelError,
    GMMStyle,
    IVStyle,
    add_lags,
    direction_table,
    fit_gmm,
    income_growth_models,
    income_growth_panel,
    income_growth_table,
    lead_lag_models,
    long_difference,
    nickell_bias,
    policy_frame,
    pooled_gradients,
    standardised,
    wave_gaps,
)
from analysis.estimation import ModelSpec, SpecificationError, fit

DATA = Path(__file__).parent / "data" / "emplUK.csv"
DATA_COPY_TOL = 2e-6  # Stata's abdata vs plm's EmplUK: single-precision storage (see the docstring)


def assert_close(value: float, printed: str, what: str) -> None:
    """``value`` is within DATA_COPY_TOL of a value printed by software that used Stata's copy of the data."""
    assert abs(value - float(printed)) <= DATA_COPY_TOL, f"{what}: {value!r} vs printed {printed}"


@pytest.fixture(scope="module")
def abdata() -> pd.DataFrame:
    d = pd.read_csv(DATA, comment="#")
    assert d.shape == (1031, 7)
    return pd.DataFrame(
        {
            "id": d["firm"].astype(int),
            "year": d["year"].astype(int),
            "n": np.log(d["emp"]),
            "w": np.log(d["wage"]),
            "k": np.log(d["capital"]),
            "ys": np.log(d["output"]),
        }
    )


EXOG = ["w", "L1.w", "k", "L1.k", "L2.k", "ys", "L1.ys", "L2.ys"]

# [AB-a1]: term -> (coefficient, robust SE) as printed by xtabond2
AB_A1 = {
    "L1.n": (".6862261", ".1445943"),
    "L2.n": ("-.0853582", ".0560155"),
    "w": ("-.6078208", ".1782055"),
    "L1.w": (".3926237", ".1679931"),
    "k": (".3568456", ".0590203"),
    "L1.k": ("-.0580012", ".0731797"),
    "L2.k": ("-.0199475", ".0327126"),
    "ys": (".6085073", ".1725313"),
    "L1.ys": ("-.7111651", ".2317163"),
    "L2.ys": (".1057969", ".1412021"),
    "period[1978]": (".0077033", ".0314106"),
    "period[1979]": (".0172578", ".0290922"),
    "period[1980]": (".0297185", ".0276617"),
    "period[1981]": ("-.004071", ".0298987"),
    "period[1982]": ("-.0193555", ".0228436"),
    "period[1983]": ("-.0136171", ".0188263"),
}


def _ab(abdata, steps):
    return fit_gmm(
        abdata, "n", ["L1.n", "L2.n", *EXOG], gmm=[GMMStyle("n", 2, None)], iv=[IVStyle(EXOG)],
        method="difference", steps=steps, entity="id",
    )


def test_arellano_bond_table4_a1_one_step(abdata):
    r = _ab(abdata, steps=1)
    for term, (coef, se) in AB_A1.items():
        assert_close(r.params[term], coef, f"{term} coef")
        assert_close(r.std_errors[term], se, f"{term} se")
    assert r.nobs == 611 and r.n_units == 140
    assert r.n_instruments == 41
    assert r.hansen.df == 25 and r.sargan.df == 25
    assert_printed(r.ar[1].statistic, "-3.60", "AR(1)")
    assert_printed(r.ar[2].statistic, "-0.52", "AR(2)")
    assert_printed(r.ar[2].pvalue, "0.606", "AR(2) p")
    assert_printed(r.sargan.statistic, "67.59", "Sargan")
    assert_printed(r.hansen.statistic, "31.38", "Hansen")
    assert_printed(r.hansen.pvalue, "0.177", "Hansen p")
    # xtabond2 drops yr1976, yr1977 (no variation) and yr1984 (collinear); the panel starts in 1976
    assert "period[1984]" not in r.params.index and "period[1977]" not in r.params.index


PLM_ONESTEP = {  # [plm] one-step, robust SEs, same file
    "L1.n": ("0.686226", "0.144594"),
    "L2.n": ("-0.085358", "0.056016"),
    "w": ("-0.607821", "0.178205"),
    "L1.w": ("0.392623", "0.167993"),
    "k": ("0.356846", "0.059020"),
    "L1.k": ("-0.058001", "0.073180"),
    "L2.k": ("-0.019948", "0.032713"),
    "ys": ("0.608506", "0.172531"),
    "L1.ys": ("-0.711164", "0.231716"),
    "L2.ys": ("0.105798", "0.141202"),
}


def test_arellano_bond_one_step_matches_plm_on_the_same_file(abdata):
    r = _ab(abdata, steps=1)
    for term, (coef, se) in PLM_ONESTEP.items():
        assert_printed(r.params[term], coef, f"{term} coef")
        assert_printed(r.std_errors[term], se, f"{term} se")
    assert_printed(r.ar[1].statistic, "-3.599593", "AR(1), plm 'normal = -3.599593'")
    assert_printed(r.ar[2].statistic, "-0.5160282", "AR(2), plm 'normal = -0.5160282'")


def test_arellano_bond_table4_a2_two_step_coefficient(abdata):
    r = _ab(abdata, steps=2)
    assert_printed(r.params["L1.n"], "0.629", "two-step L1.n")
    assert_printed(r.hansen.statistic, "31.38", "Hansen (the same minimised two-step criterion)")


PYDYNPD_DIFF = {  # [pydynpd] difference GMM, two steps, Windmeijer SEs
    "L1.n": ("0.2710675", "0.1382542"),
    "L2.n": ("-0.0233928", "0.0419665"),
    "w": ("-0.5668527", "0.2092231"),
    "k": ("0.3613939", "0.0662624"),
}
PYDYNPD_SYS = {  # [pydynpd] system GMM, two steps, Windmeijer SEs
    "L1.n": ("0.9453810", "0.1429764"),
    "L2.n": ("-0.0860069", "0.1082318"),
    "w": ("-0.4477795", "0.1521917"),
    "k": ("0.1235808", "0.0508836"),
    "_cons": ("1.5630849", "0.4993484"),
}


def test_two_step_difference_windmeijer_matches_pydynpd_readme(abdata):
    r = fit_gmm(abdata, "n", ["L1.n", "L2.n", "w", "k"], gmm=[GMMStyle("n", 2, 4), GMMStyle("w", 1, 3)],
                iv=["k"], method="difference", steps=2, entity="id")
    for term, (coef, se) in PYDYNPD_DIFF.items():
        assert_close(r.params[term], coef, f"{term} coef")
        assert_close(r.std_errors[term], se, f"{term} se")
    assert r.n_instruments == 42 and r.nobs == 611
    assert r.hansen.df == 32
    assert_printed(r.hansen.statistic, "32.666", "Hansen")
    assert_printed(r.hansen.pvalue, "0.434", "Hansen p")
    assert_printed(r.ar[1].statistic, "-1.29", "AR(1)")
    assert_printed(r.ar[2].statistic, "-0.31", "AR(2)")


def test_two_step_system_windmeijer_matches_pydynpd_readme(abdata):
    r = fit_gmm(abdata, "n", ["L1.n", "L2.n", "w", "k"], gmm=[GMMStyle("n", 2, 4), GMMStyle("w", 1, 3)],
                iv=["k"], method="system", steps=2, time_effects=False, entity="id")
    for term, (coef, se) in PYDYNPD_SYS.items():
        assert_close(r.params[term], coef, f"{term} coef")
        assert_close(r.std_errors[term], se, f"{term} se")
    assert r.n_instruments == 51
    assert r.hansen.df == 46
    assert_printed(r.hansen.statistic, "96.442", "Hansen")
    assert_printed(r.ar[1].statistic, "-2.35", "AR(1)")
    assert_printed(r.ar[2].statistic, "-1.15", "AR(2)")


def test_collapse_reduces_instruments(abdata):
    full = fit_gmm(abdata, "n", ["L1.n", "L2.n", "w", "k"], gmm=[GMMStyle("n", 2, 4), GMMStyle("w", 1, 3)],
                   iv=["k"], steps=2, entity="id")
    col = fit_gmm(abdata, "n", ["L1.n", "L2.n", "w", "k"], gmm=[GMMStyle("n", 2, 4), GMMStyle("w", 1, 3)],
                  iv=["k"], steps=2, collapse=True, entity="id")
    # collapsed: 3 lags of n + 3 lags of w + k + 6 period dummies
    assert col.n_instruments == 13 and full.n_instruments == 42
    assert col.hansen.df == 13 - 10


# ---------------------------------------------------------------------------------------------
# Synthetic panels (labelled: made here, not data)
# ---------------------------------------------------------------------------------------------


def synthetic_dynamic_panel(n_units=400, n_periods=4, rho=0.5, beta=0.3, seed=7) -> pd.DataFrame:
    """SYNTHETIC: y_it = rho y_i,t-1 + beta x_i,t-1 + mu_i + e_it, x an AR(1) with its own effect."""
    rng = np.random.default_rng(seed)
    burn = 20
    mu = rng.normal(size=n_units)
    eta = rng.normal(size=n_units)
    y = np.zeros((n_units, burn + n_periods))
    x = np.zeros_like(y)
    for t in range(1, burn + n_periods):
        x[:, t] = 0.6 * x[:, t - 1] + eta + rng.normal(size=n_units)
        y[:, t] = rho * y[:, t - 1] + beta * x[:, t - 1] + mu + rng.normal(size=n_units)
    waves = [1997, 2005, 2009, 2014, 2019, 2024][:n_periods]
    return pd.DataFrame(
        {
            "fips": np.repeat(np.arange(n_units), n_periods),
            "year": np.tile(waves, n_units),
            "y": y[:, burn:].ravel(),
            "x": x[:, burn:].ravel(),
        }
    )


def test_add_lags_uses_waves_not_years():
    # SYNTHETIC: unit "b" has no 2005 row, so its 2009 lag is missing (not its 1997 value)
    df = pd.DataFrame({"fips": ["a"] * 4 + ["b"] * 3, "year": [1997, 2005, 2009, 2014, 1997, 2009, 2014],
                       "v": [1.0, 2.0, 3.0, 4.0, 10.0, 30.0, 40.0]})
    out = add_lags(df, "v", lags=(1, -1))
    np.testing.assert_array_equal(out["v_lag1"].to_numpy(), [np.nan, 1, 2, 3, np.nan, np.nan, 30])
    np.testing.assert_array_equal(out["v_lead1"].to_numpy(), [2, 3, 4, np.nan, np.nan, 40, np.nan])
    assert wave_gaps(df).tolist() == [8, 4, 5]
    with pytest.raises(DynamicPanelError, match="Unknown"):
        add_lags(df, "nope")
    with pytest.raises(DynamicPanelError, match="non-zero"):
        add_lags(df, "v", lags=(0,))


def test_standardised_coefficient_matches_dummy_regression():
    # SYNTHETIC panel; reference: OLS with explicit unit and period dummies (numpy), no demeaning code shared
    df = synthetic_dynamic_panel(n_units=60, seed=3)
    models = lead_lag_models(df, "y", density="x")
    r = models["forward"]
    lagged = add_lags(df, ["y", "x"])
    s = standardised(r, lagged)
    d = lagged.dropna(subset=["y", "x_lag1"])
    D = pd.get_dummies(d[["fips", "year"]].astype(str), drop_first=True, dtype=float).to_numpy()
    D = np.column_stack([np.ones(len(d)), D])
    res = {}
    for c in ("y", "x_lag1"):
        v = d[c].to_numpy()
        res[c] = v - D @ np.linalg.lstsq(D, v, rcond=None)[0]
    zy, zx = res["y"] / res["y"].std(ddof=1), res["x_lag1"] / res["x_lag1"].std(ddof=1)
    ref = float(zx @ zy / (zx @ zx))
    assert abs(s["estimate"] - ref) < 1e-10
    assert abs(r.params["x_lag1"] - float(res["x_lag1"] @ res["y"] / (res["x_lag1"] @ res["x_lag1"]))) < 1e-10


def test_long_difference_matches_statsmodels():
    # SYNTHETIC: 200 counties in 10 states; reference: statsmodels OLS with cluster-robust covariance
    rng = np.random.default_rng(11)
    n = 200
    fips = np.arange(n)
    st = fips % 10
    rows = []
    for year in (1997, 2014):
        x = rng.normal(size=n) + st * 0.1
        y = 0.5 * x + rng.normal(size=n) + st * 0.2
        rows.append(pd.DataFrame({"fips": fips, "year": year, "y": y, "x": x, "state_fips": st.astype(str)}))
    df = pd.concat(rows)
    for state_effects in (False, True):
        ld = long_difference(df, "y", "x", state_effects=state_effects)
        a, b = df[df.year == 1997].set_index("fips"), df[df.year == 2014].set_index("fips")
        dy, dx = b["y"] - a["y"], b["x"] - a["x"]
        X = pd.DataFrame({"const": 1.0, "dx": dx})
        if state_effects:
            X = pd.concat([X, pd.get_dummies(b["state_fips"], drop_first=True, dtype=float)], axis=1)
        ref = sm.OLS(dy, X).fit(cov_type="cluster", cov_kwds={"groups": b["state_fips"].astype(int)})
        assert abs(ld.coef - ref.params["dx"]) < 1e-10
        assert abs(ld.se - ref.bse["dx"]) < 1e-10
        assert ld.nobs == n and ld.n_clusters == 10
    with pytest.raises(DynamicPanelError, match="Wave 2000"):
        long_difference(df, "y", "x", start=2000)


def test_gmm_recovers_parameters_on_synthetic_panel():
    # SYNTHETIC, large N: system GMM should be near the truth (rho 0.5, beta 0.3)
    df = synthetic_dynamic_panel(n_units=5000, n_periods=6, seed=1)
    r = fit_gmm(df, "y", ["L1.y", "L1.x"], gmm=[GMMStyle("y", 2), GMMStyle("x", 2)], method="system", steps=2)
    assert abs(r.params["L1.y"] - 0.5) < 0.05
    assert abs(r.params["L1.x"] - 0.3) < 0.05
    assert r.ar[1].statistic < -5  # MA(1) differenced errors
    assert abs(r.ar[2].statistic) < 3


def test_ar2_not_computable_with_four_waves_is_nan_with_a_note():
    df = synthetic_dynamic_panel(n_units=300, n_periods=4)
    r = fit_gmm(df, "y", ["L1.y", "L1.x"], gmm=[GMMStyle("y", 2), GMMStyle("x", 2)], collapse=True)
    assert r.periods == (2009, 2014)
    assert np.isfinite(r.ar[1].statistic)
    assert np.isnan(r.ar[2].statistic) and "not computable" in r.ar[2].note
    assert any("AR(2) not computable" in n for n in r.notes)


# ---------------------------------------------------------------------------------------------
# Bad instrument sets give clear errors
# ---------------------------------------------------------------------------------------------


def test_too_few_periods():
    df = synthetic_dynamic_panel(n_units=50, n_periods=2)
    with pytest.raises(DynamicPanelError, match="Too few periods"):
        fit_gmm(df, "y", ["L1.y"], gmm=[GMMStyle("y", 2)])


def test_instrument_lags_beyond_the_panel():
    df = synthetic_dynamic_panel(n_units=50, n_periods=4)
    with pytest.raises(DynamicPanelError, match=r"gmm\(x, 5:\.\) yields no usable column"):
        fit_gmm(df, "y", ["L1.y"], gmm=[GMMStyle("y", 2), GMMStyle("x", 5)])


def test_instrument_without_variation():
    df = synthetic_dynamic_panel(n_units=50, n_periods=4).assign(c=1.0)
    with pytest.raises(DynamicPanelError, match="does not vary across units"):
        fit_gmm(df, "y", ["L1.y"], gmm=[GMMStyle("c", 2)])


def test_collinear_regressors():
    df = synthetic_dynamic_panel(n_units=50, n_periods=5)
    df["x2"] = 2 * df["x"]
    with pytest.raises(DynamicPanelError, match="'x2'.*collinear"):
        fit_gmm(df, "y", ["L1.y", "x", "x2"], gmm=[GMMStyle("y", 2)], iv=["x", "x2"])


def test_underidentified():
    df = synthetic_dynamic_panel(n_units=50, n_periods=4)
    with pytest.raises(DynamicPanelError, match="Underidentified"):
        fit_gmm(df, "y", ["L1.y", "L1.x"], gmm=[GMMStyle("y", 2, 2)], collapse=True, time_effects=False)


def test_unknown_and_bad_options():
    df = synthetic_dynamic_panel(n_units=20, n_periods=4)
    with pytest.raises(DynamicPanelError, match="Unknown"):
        fit_gmm(df, "y", ["L1.y", "z"], gmm=[GMMStyle("y", 2)])
    with pytest.raises(DynamicPanelError, match="method"):
        fit_gmm(df, "y", ["L1.y"], gmm=[GMMStyle("y", 2)], method="levels")
    with pytest.raises(DynamicPanelError, match="lags must satisfy"):
        GMMStyle("y", 3, 2)
    assert issubclass(DynamicPanelError, SpecificationError)


def test_nickell_bias():
    assert nickell_bias(0.5, 3) == pytest.approx(-0.75)
    assert nickell_bias(0.0, 11) == pytest.approx(-0.1)
    with pytest.raises(DynamicPanelError):
        nickell_bias(0.5, 1)


# --------------------------------------------------------------------------------------
# Own lags (Granger-type lead-lag), power and policy units, income growth around the waves
# --------------------------------------------------------------------------------------


def _dummy_ols(d: pd.DataFrame, y: str, regs: list[str]) -> np.ndarray:
    """Reference: OLS with explicit unit and period dummies (numpy), coefficients on ``regs``."""
    D = pd.get_dummies(d[["fips", "year"]].astype(str), drop_first=True, dtype=float).to_numpy()
    X = np.column_stack([d[regs].to_numpy(float), np.ones(len(d)), D])
    return np.linalg.lstsq(X, d[y].to_numpy(float), rcond=None)[0][: len(regs)]


def test_own_lag_models_match_dummy_regressions():
    # SYNTHETIC panel; forward: y on x_lag1 and y_lag1; reverse: x on y_lag1 and x_lag1
    df = synthetic_dynamic_panel(n_units=80, seed=5)
    models = lead_lag_models(df, "y", density="x", own_lag=True)
    lagged = add_lags(df, ["y", "x"])
    for direction, (dep, regs) in {"forward": ("y", ["x_lag1", "y_lag1"]),
                                   "reverse": ("x", ["y_lag1", "x_lag1"])}.items():
        d = lagged.dropna(subset=[dep, *regs])
        ref = _dummy_ols(d, dep, regs)
        r = models[direction]
        assert r.spec.regressors == (regs[0],) and r.spec.controls == (regs[1],)
        np.testing.assert_allclose(r.params[regs].to_numpy(), ref, atol=1e-10)
    tab = direction_table(df, ["y"], density="x", own_lag=True)
    assert tab.loc[("y", "forward"), "own_lag_coef"] == pytest.approx(models["forward"].params["y_lag1"])
    with pytest.raises(DynamicPanelError, match="own_lag needs form='levels'"):
        lead_lag_models(df, "y", density="x", form="changes", own_lag=True)


def test_direction_table_reports_the_minimum_detectable_effect():
    df = synthetic_dynamic_panel(n_units=60, seed=9)
    tab = direction_table(df, ["y"], density="x")
    for _, row in tab.iterrows():
        assert row["mde"] == pytest.approx(2.8015852 * row["se"], rel=1e-6)  # (z_0.975 + z_0.80) x SE
        assert row["mde_std"] / row["mde"] == pytest.approx(row["std_coef"] / row["coef"], rel=1e-9)


def test_policy_frame_units_and_wrong_signed_gradient():
    est = pd.DataFrame({"outcome": ["unemployment_rate", "log_median_hh_income"],
                        "estimate": [-0.18, 0.02], "se": [0.073, 0.006]}, index=["u", "i"])
    grads = pd.Series({"unemployment_rate": -1.10, "log_median_hh_income": -0.011})
    out = policy_frame(est, grads, population=25_000)
    edge = -0.18 - 1.6448536 * 0.073
    assert out.loc["u", "edge"] == pytest.approx(edge, abs=1e-6)
    assert out.loc["u", "edge_per_ten"] == pytest.approx(edge * 0.4, abs=1e-6)
    assert out.loc["u", "edge_share"] == pytest.approx(edge / -1.10, abs=1e-6)
    assert out.loc["u", "mde"] == pytest.approx(2.8015852 * 0.073, rel=1e-6)
    assert out.loc["u", "reading"] == "not identified"  # 27% of the gradient is not excluded
    # median income: denser counties are poorer, so no share of the gradient is an effect "of policy interest"
    assert np.isnan(out.loc["i", "edge_share"]) and np.isnan(out.loc["i", "mde_share"])
    assert out.loc["i", "reading"] == "gradient of the wrong sign"
    assert out.loc["i", "edge"] == pytest.approx(0.02 + 1.6448536 * 0.006, abs=1e-7)


def _income_fixture():
    """SYNTHETIC: four counties' annual relative income 1990-2021 and a wave panel of them."""
    years = np.arange(1990, 2022)
    inc = pd.DataFrame([{"fips": f, "year": y, "log_pcpi_rel_us": k * 0.01 * (y - 1990) + (0.5 if f == "c" else 0)}
                        for k, f in enumerate("abcd") for y in years])
    waves = pd.DataFrame([{"fips": f, "year": w, "state_fips": "01"} for f in "abce" for w in (1997, 2005, 2009, 2014)])
    return inc, waves


def test_income_growth_panel_takes_five_years_either_side_of_each_wave():
    inc, waves = _income_fixture()
    out = income_growth_panel(waves, inc)
    b = out[out["fips"] == "b"].set_index("year")  # slope 0.01 a year
    np.testing.assert_allclose(b["income_growth_next"].to_numpy(), 0.05)
    np.testing.assert_allclose(b["income_growth_past"].to_numpy(), 0.05)
    c = out[out["fips"] == "c"].set_index("year")
    assert c.loc[2014, "income_level"] == pytest.approx(0.5 + 0.02 * 24)
    assert out.loc[out["fips"] == "e", "income_growth_next"].isna().all()  # no income row: missing, not zero
    with pytest.raises(DynamicPanelError):
        income_growth_panel(waves, inc.drop(columns="log_pcpi_rel_us"))


def _growth_panel(n=60, seed=1):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        a, st = rng.normal(), f"{i % 6:02d}"
        for t in (1997, 2005, 2009, 2014):
            rows.append({"fips": f"{i:05d}", "year": t, "state_fips": st,
                         "assn_per_1k": 1 + 0.3 * a + rng.normal(0, 0.2),
                         "income_growth_next": 0.1 * a + rng.normal(0, 0.05), "income_growth_past": rng.normal(0, 0.05)})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("effects", ["unit+time", "state-by-year"])
def test_income_growth_models_match_the_books_estimator(effects):
    # Reference: analysis.estimation.fit (linearmodels; state-by-year effects as dummies). Coefficients
    # are identical; with year effects so are the SEs; with state-by-year effects the SEs differ only by
    # the count of those effects in the small-sample factor (S(T-1) in fit, as documented in
    # analysis.estimation; pyfixest counts its own way), about 1.5% at n = 240 and negligible at 12,000.
    d = _growth_panel()
    g = income_growth_models(d, "assn_per_1k", effects)
    lag = add_lags(d, ["assn_per_1k"])
    specs = {"forward": ("income_growth_next", "assn_per_1k", ("income_growth_past",)),
             "reverse": ("assn_per_1k", "income_growth_past", ("assn_per_1k_lag1",))}
    for direction, (dep, reg, ctl) in specs.items():
        r = fit(ModelSpec(outcome=dep, regressors=(reg,), controls=ctl, estimator="twfe", effects=effects,
                          cov="cluster-unit"), lag)
        assert g[direction].coef == pytest.approx(float(r.params[reg]), abs=1e-10)
        assert g[direction].nobs == r.nobs_estimation and g[direction].n_units == r.n_units
        rel = 1e-9 if effects == "unit+time" else 0.02
        assert g[direction].se == pytest.approx(float(r.std_errors[reg]), rel=rel)
    tab = income_growth_table(d, effects=(effects,))
    assert tab.loc[("assn_per_1k", effects, "forward"), "coef"] == pytest.approx(g["forward"].coef)
    with pytest.raises(DynamicPanelError, match="effects must be one of"):
        income_growth_models(d, "assn_per_1k", "time")


def test_pooled_gradients_use_chapter3s_pooled_spec():
    from analysis.between_within import balanced_sample, chapter3_specs

    rng = np.random.default_rng(4)
    rows = [{"fips": f"{i:05d}", "year": t, "state_fips": "01", "assn_per_1k": x + rng.normal(0, 0.1),
             "unemployment_rate": 6 - 1.2 * x + rng.normal(0, 0.5)}
            for i, x in enumerate(rng.normal(1.4, 0.5, 80)) for t in (1997, 2005, 2009, 2014)]
    d = pd.DataFrame(rows)
    g = pooled_gradients(d, ["unemployment_rate"])
    sample, _ = balanced_sample(d, "unemployment_rate", "assn_per_1k")
    ref = fit(chapter3_specs("unemployment_rate")["pooled"], sample).params["assn_per_1k"]
    assert g["unemployment_rate"] == pytest.approx(float(ref), abs=1e-12)
    assert g["unemployment_rate"] == pytest.approx(-1.2, abs=0.15)
