"""Tests of the simulation lab (analysis/simulation.py, Chapter 12).

References:
* the NumPy estimators against linearmodels, through :func:`analysis.estimation.fit` (pooled,
  TWFE, FD, lagged TWFE, TWFE with a lagged outcome) and ``linearmodels.iv.IV2SLS`` with county
  and wave dummies (2SLS), at 1e-8 on a synthetic panel;
* the variance of a T-wave mean of an AR(1), against the quadratic form 1'Sigma 1 / T^2;
* the calibration, by recovering known parameters from a large synthetic panel;
* the Monte Carlo, against known truths: no bias without confounding, the sign of the
  omitted-variable bias of pooled OLS, the textbook attenuation factor of FE under classical
  measurement error (Griliches & Hausman 1986), and 95% coverage of clustered TWFE intervals.
Tolerances of Monte Carlo checks are multiples of the Monte Carlo standard error.
Every panel here except the real wave panel is synthetic (made by the simulator).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import simulation as sim
from analysis.dynamic import add_lags
from analysis.estimation import ModelSpec, fit

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "book" / "12_simulation_lab.ipynb"


def _synthetic_calibration(theta_x=0.8, phi_x=0.5, theta_y=0.6, phi_y=0.2, T=4) -> sim.Calibration:
    """A hand-made calibration (no data): unit variances, known components."""
    return sim.Calibration(
        density="x", outcome="y", n_counties=0, waves=tuple(range(2001, 2001 + T)),
        wave_means_x=tuple(np.linspace(1, 1.3, T)), wave_means_y=tuple(np.linspace(5, 7, T)),
        var_x=1.0, var_y=4.0, between_share_x=np.nan, between_share_y=np.nan, autocorr_x=np.nan,
        autocorr_y=np.nan, corr_xy=np.nan, corr_between=np.nan, corr_within=np.nan,
        county_share_x=theta_x, county_share_y=theta_y, shock_ar_x=phi_x, shock_ar_y=phi_y,
        confounder_corr=-0.4, within_sd_x=np.nan,
    )


@pytest.fixture(scope="module")
def cal() -> sim.Calibration:
    return _synthetic_calibration()


@pytest.fixture(scope="module")
def panel(cal) -> pd.DataFrame:
    """A synthetic panel with every mechanism on (so that the estimates differ from each other)."""
    scen = sim.Scenario(beta=-0.5, n_counties=150, confounding=True, reverse_causality=True,
                        measurement_error=True, dynamic=True)
    return sim.simulate_panel(cal, scen, seed=7)


def _arrays(panel: pd.DataFrame) -> dict:
    N = panel["fips"].nunique()
    return {k: panel[k].to_numpy().reshape(N, -1) for k in ("y", "x", "z")}


# --------------------------------------------------------------------------------------
# Estimators against linearmodels
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, spec_kw, lagged",
    [
        ("pooled", dict(estimator="pooled", effects="time", regressors=("x",)), False),
        ("twfe", dict(estimator="twfe", regressors=("x",)), False),
        ("fd", dict(estimator="fd", effects="time", regressors=("x",)), False),
        ("lagfe", dict(estimator="twfe", regressors=("x_lag1",)), True),
        ("fe_ldv", dict(estimator="twfe", regressors=("y_lag1", "x")), True),
    ],
)
def test_estimators_match_linearmodels(panel, name, spec_kw, lagged):
    est = sim.estimate_all(_arrays(panel), sorted(panel["year"].unique()), (name,))[0]
    d = add_lags(panel, ["x", "y"]).dropna() if lagged else panel
    r = fit(ModelSpec(outcome="y", cov="cluster-unit", **spec_kw), d)
    term = spec_kw["regressors"][-1]
    assert est[0] == pytest.approx(float(r.params[term]), rel=1e-8)
    assert est[1] == pytest.approx(float(r.std_errors[term]), rel=1e-8)
    lo, hi = r.conf_int.loc[term, ["lower", "upper"]]
    assert est[2] == pytest.approx(float(lo), rel=1e-8)
    assert est[3] == pytest.approx(float(hi), rel=1e-8)


def test_iv_matches_linearmodels_iv2sls(panel):
    from linearmodels.iv import IV2SLS

    panel = panel[panel["fips"] <= 60].reset_index(drop=True)  # 60 county dummies keep linearmodels quick
    est = sim.estimate_all(_arrays(panel), sorted(panel["year"].unique()), ("iv",))[0]
    exog = pd.concat(
        [pd.Series(1.0, index=panel.index, name="const"),
         pd.get_dummies(panel["year"], prefix="w", drop_first=True, dtype=float),
         pd.get_dummies(panel["fips"], prefix="c", drop_first=True, dtype=float)], axis=1)
    r = IV2SLS(panel["y"], exog, panel["x"], panel["z"]).fit(
        cov_type="clustered", clusters=panel["fips"], debiased=True)
    assert est[0] == pytest.approx(float(r.params["x"]), rel=1e-8)
    # linearmodels counts the county dummies in K (n-1)/(n-K); ours, like analysis.estimation,
    # does not count effects nested in the clusters: the two differ by exactly that factor.
    n, k_lm, k_ours = len(panel), exog.shape[1] + 1, 4 + 1
    assert est[1] == pytest.approx(float(r.std_errors["x"]) * np.sqrt((n - k_lm) / (n - k_ours)), rel=1e-8)


def test_gmm_row_is_fit_gmm(panel):
    from analysis.dynamic import GMMStyle, fit_gmm

    est = sim.estimate_all(_arrays(panel), sorted(panel["year"].unique()), ("sysgmm",))[0]
    d = panel.assign(fips=panel["fips"] - 1)
    r = fit_gmm(d, "y", ["L1.y", "x"], gmm=[GMMStyle("y", 2, None), GMMStyle("x", 2, None)],
                method="system", steps=2, collapse=True)
    assert est[0] == pytest.approx(float(r.params["x"]), rel=1e-10)
    assert est[1] == pytest.approx(float(r.std_errors["x"]), rel=1e-10)


@pytest.mark.parametrize("switch", ["none", "reverse_causality", "measurement_error", "dynamic"])
def test_closed_form_gmm_equals_fit_gmm(cal, switch):
    """The Monte Carlo's closed-form system GMM (no gaps) against the fit_gmm path, every column of
    the row, in several worlds. The tolerance is in units of the standard error: the two sum over
    counties in a different order, and fit_gmm's own estimate moves by as much when the counties
    are reordered."""
    scen = sim.Scenario(beta=-0.5, n_counties=300, confounding=True,
                        **({} if switch == "none" else {switch: True}))
    for seed in range(3):
        arr = sim.simulate(cal, scen, np.random.default_rng(seed))
        fast = sim._sysgmm(arr["y"], arr["x"])
        ref = sim._gmm_fit(arr["y"], arr["x"], cal.waves)
        assert np.all(np.isfinite(fast))
        np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-9 * ref[1])
        assert fast[1] == pytest.approx(ref[1], rel=1e-9)
        np.testing.assert_array_equal(sim._gmm(arr["y"], arr["x"], cal.waves), fast)
    # with a gap the fit_gmm path is used
    y = arr["y"].copy()
    y[0, 1] = np.nan
    np.testing.assert_array_equal(sim._gmm(y, arr["x"], cal.waves), sim._gmm_fit(y, arr["x"], cal.waves))


def test_independent_columns_as_dynamic():
    from analysis.dynamic import _independent

    rng = np.random.default_rng(3)
    M = rng.normal(size=(400, 7))
    M[:, 3] = M[:, 0] - 2 * M[:, 1]  # dependent on earlier columns
    M[:, 5] = 0.0  # empty
    M[:, 6] = M[:, 2] + 1e-3 * rng.normal(size=400)  # nearly, not exactly, dependent
    assert sim._independent_columns(M) == _independent(M) == [0, 1, 2, 4, 6]


# --------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("phi, T", [(0.0, 4), (0.58, 4), (-0.3, 5), (0.9, 3)])
def test_mean_variance_of_ar1_matches_quadratic_form(phi, T):
    idx = np.arange(T)
    sigma = phi ** np.abs(idx[:, None] - idx[None, :])
    assert sim._h(phi, T) == pytest.approx(sigma.sum() / T**2, rel=1e-12)


def test_calibration_recovers_known_components():
    truth = _synthetic_calibration(theta_x=0.7, phi_x=0.5, theta_y=0.55, phi_y=0.1)
    df = sim.simulate_panel(truth, sim.Scenario(n_counties=40_000, confounding=True, instrument_strength=1e-9), seed=3)
    got = sim.calibrate(df, density="x", outcome="y")
    assert got.county_share_x == pytest.approx(0.7, abs=0.02)
    assert got.shock_ar_x == pytest.approx(0.5, abs=0.04)
    assert got.county_share_y == pytest.approx(0.55, abs=0.02)
    assert got.shock_ar_y == pytest.approx(0.1, abs=0.04)
    assert got.var_y == pytest.approx(4.0, rel=0.03)
    # cross-sectional correlation implied by corr(a, c) = -0.4: -0.4 * sqrt(0.7 * 0.55)
    assert got.corr_xy == pytest.approx(-0.4 * np.sqrt(0.7 * 0.55), abs=0.015)
    assert got.confounder_corr == pytest.approx(-0.4, abs=0.03)


def test_simulation_reproduces_the_wave_panel_moments():
    from analysis.panels import load

    cal = sim.calibrate(load("us_counties_waves"))
    assert cal.n_waves == 4 and cal.n_counties > 3000
    arr = sim.simulate(cal, sim.Scenario(n_counties=30_000, confounding=True), np.random.default_rng(1))
    m = sim.panel_moments(arr["x"], arr["y"])
    for k, tol in [("between_share_x", 0.01), ("autocorr_x", 0.01), ("between_share_y", 0.01),
                   ("autocorr_y", 0.015), ("corr_xy", 0.02)]:
        assert m[k] == pytest.approx(getattr(cal, k), abs=tol), k
    # the instrument takes its share of density's transitory variance, which shifts the
    # variance slightly; the outcome's is untouched
    assert m["var_x"] == pytest.approx(cal.var_x, rel=0.06)
    assert m["var_y"] == pytest.approx(cal.var_y, rel=0.03)


# --------------------------------------------------------------------------------------
# Monte Carlo against known truths
# --------------------------------------------------------------------------------------


def test_no_effect_no_confounding_every_estimator_unbiased(cal):
    mc = sim.monte_carlo(cal, sim.Scenario(beta=0.0, n_counties=400), reps=120, seed=11, gmm_reps=25)
    s = mc.summary()
    assert set(s.index) == set(sim.ESTIMATORS)
    assert s.loc["sysgmm", "reps"] == 25 and s.loc["twfe", "reps"] == 120
    assert (s["bias"].abs() < 4 * s["bias_mcse"]).all(), s[["bias", "bias_mcse"]]


def test_fixed_confounder_biases_pooled_not_twfe(cal):
    scen = sim.Scenario(beta=0.3, n_counties=400, confounding=True, confounder_corr=0.5)
    s = sim.monte_carlo(cal, scen, reps=80, seed=12, estimators=("pooled", "twfe", "fd")).summary()
    # omitted county effect: bias = cov(a, c) / var(x net of wave means) > 0
    sd_x, sd_y = 1.0, 2.0
    expected = 0.5 * np.sqrt(0.8 * sd_x**2 * 0.6 * sd_y**2) / sd_x**2
    assert s.loc["pooled", "bias"] > 10 * s.loc["pooled", "bias_mcse"]
    assert s.loc["pooled", "bias"] == pytest.approx(expected, rel=0.1)
    for e in ("twfe", "fd"):
        assert abs(s.loc[e, "bias"]) < 4 * s.loc[e, "bias_mcse"]


def test_measurement_error_attenuation_matches_textbook_formula(cal):
    scen = sim.Scenario(beta=1.0, n_counties=400, measurement_error=True, noise_share=0.3)
    mc = sim.monte_carlo(cal, scen, reps=100, seed=13, estimators=("twfe",))
    s = mc.summary().loc["twfe"]
    # the textbook lambda from the within variances of true density and of the noise
    rng_children = np.random.SeedSequence(13).spawn(100)
    lambdas = []
    for child in rng_children[:20]:
        arr = sim.simulate(cal, scen, np.random.default_rng(child))
        lambdas.append(sim.attenuation_factor(sim._twoway(arr["x_true"]).var(), sim._twoway(arr["noise"]).var()))
    lam = float(np.mean(lambdas))
    assert lam == pytest.approx(0.7, abs=0.01)  # the scenario's noise share is 0.3
    mean_est = 1.0 + s["bias"]
    assert abs(mean_est - lam * 1.0) < 4 * s["bias_mcse"]
    assert mean_est < 0.8  # clearly attenuated, not merely noisy


def test_twfe_clustered_coverage_near_95(cal):
    s = sim.monte_carlo(cal, sim.Scenario(beta=0.4, n_counties=300), reps=500, seed=14,
                        estimators=("twfe",)).summary().loc["twfe"]
    assert abs(s["coverage"] - 0.95) < 3 * np.sqrt(0.95 * 0.05 / 500)


def test_results_do_not_depend_on_n_jobs(cal):
    scen = sim.Scenario(beta=0.2, n_counties=100, confounding=True, reverse_causality=True)
    a = sim.monte_carlo(cal, scen, reps=6, seed=5, gmm_reps=2, n_jobs=1)
    b = sim.monte_carlo(cal, scen, reps=6, seed=5, gmm_reps=2, n_jobs=2)
    pd.testing.assert_frame_equal(a.draws, b.draws)
    c = sim.monte_carlo(cal, scen, reps=6, seed=6, gmm_reps=2, n_jobs=1)
    assert not np.allclose(a.draws["estimate"].dropna(), c.draws["estimate"].dropna())


def test_reverse_causality_breaks_twfe_not_iv(cal):
    scen = sim.Scenario(beta=0.0, n_counties=400, reverse_causality=True, reverse_strength=0.5)
    s = sim.monte_carlo(cal, scen, reps=60, seed=15, estimators=("twfe", "iv")).summary()
    # need-driven formation + mean-reverting shocks: density looks protective within counties
    assert s.loc["twfe", "bias"] < -10 * s.loc["twfe", "bias_mcse"]
    assert abs(s.loc["iv", "bias"]) < 4 * s.loc["iv", "bias_mcse"]


# --------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, word",
    [(dict(noise_share=1.2), "noise_share"), (dict(rho=1.0), "rho"), (dict(n_counties=5), "n_counties"),
     (dict(confounder_corr=1.5), "confounder_corr"), (dict(instrument_strength=0), "instrument_strength")],
)
def test_bad_scenario_raises_naming_the_parameter(kw, word):
    with pytest.raises(sim.SimulationError, match=word):
        sim.Scenario(**kw)


def test_bad_calibration_input_raises():
    df = pd.DataFrame({"fips": [1, 1, 2, 2], "year": [1, 2, 1, 2], "x": [1.0, 2, 3, 4], "y": [1.0, 2, 3, 5]})
    with pytest.raises(sim.SimulationError, match="'assn_per_1k'"):
        sim.calibrate(df)
    with pytest.raises(sim.SimulationError, match="at least 3 waves"):
        sim.calibrate(df, density="x", outcome="y")
    with pytest.raises(sim.SimulationError, match="between share"):
        sim._solve_components(0.99, 0.1, 4)


def test_monte_carlo_rejects_unknown_estimator(cal):
    with pytest.raises(sim.SimulationError, match="'ols'"):
        sim.monte_carlo(cal, sim.Scenario(n_counties=50), reps=3, estimators=("ols",))


# --------------------------------------------------------------------------------------
# The chapter can be re-run with other parameters (papermill)
# --------------------------------------------------------------------------------------


def test_chapter_has_a_tagged_parameters_cell_that_papermill_parameterises():
    import nbformat
    import papermill

    nb = nbformat.read(NOTEBOOK, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code"
    src = tagged[0].source
    for name in ("beta", "n_counties", "reps", "gmm_reps", "seed", "confounding", "reverse_causality",
                 "measurement_error", "dynamic", "n_jobs"):
        assert f"{name} =" in src, name
    # load as papermill does (it adds empty tag lists), then inject as `papermill -p` would
    new = papermill.parameterize.parameterize_notebook(
        papermill.iorw.load_notebook_node(str(NOTEBOOK)), {"beta": 0.5, "reps": 4})
    pos = next(i for i, c in enumerate(new.cells) if "parameters" in c.metadata.get("tags", []))
    injected = new.cells[pos + 1]
    assert "injected-parameters" in injected.metadata["tags"]
    assert "beta = 0.5" in injected.source and "reps = 4" in injected.source
