"""Tests of analysis.between_within (Chapter 3's model grid, tests and magnitudes).

All panels here are SYNTHETIC (simulated with fixed seeds), labelled as such; the real panel
is only used by the chapter. Independent references: statsmodels OLS on hand-made designs and
its TOST (``ttost_paired``), numpy for standard deviations and t quantiles from scipy, and
simulations with known truth for the measurement-error formulas.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import statsmodels.api as sm  # noqa: E402
from scipy import stats  # noqa: E402
from statsmodels.stats.weightstats import ttost_paired  # noqa: E402

from analysis import between_within as bw  # noqa: E402
from analysis.estimation import ModelSpec, SpecificationError, fit, hausman, mundlak_test  # noqa: E402


def synthetic_panel(n_units=240, periods=(1997, 2005, 2009, 2014), n_states=12, seed=11, missing=3) -> pd.DataFrame:
    """SYNTHETIC county panel: density x correlated with the county effect, outcome y (named
    like the real unemployment rate so that the declared bounds apply), ``missing`` rows of y
    set to NaN in the second wave."""
    rng = np.random.default_rng(seed)
    T = len(periods)
    fips = np.repeat([f"{i:05d}" for i in range(n_units)], T)
    year = np.tile(periods, n_units)
    state = np.repeat([f"{s:02d}" for s in rng.integers(0, n_states, n_units)], T)
    a = np.repeat(rng.normal(size=n_units), T)
    x = 1.5 + 0.6 * a + 0.3 * rng.normal(size=fips.size)
    y = 6.0 - 0.5 * x - 1.2 * a + np.tile(np.arange(T) * 0.4, n_units) + rng.normal(size=fips.size)
    d = pd.DataFrame({"fips": fips, "year": year, "state_fips": state, "unemployment_rate": y, "assn_per_1k": x})
    d["y2"] = 2.0 + 0.1 * x + rng.normal(size=fips.size)
    if missing:
        rows = d.index[(d["year"] == periods[1])][:missing]
        d.loc[rows, "unemployment_rate"] = np.nan
    return d


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    return synthetic_panel()


@pytest.fixture(scope="module")
def table(panel) -> bw.OutcomeTable:
    return bw.fit_outcome_table(panel, "unemployment_rate")


# ---------------------------------------------------------------------------------------
# The grid
# ---------------------------------------------------------------------------------------

EXPECTED_GRID = {
    "pooled": ("pooled", "time", "cluster-unit"),
    "between": ("between", "none", "robust"),
    "fe": ("fe", "unit", "cluster-unit"),
    "twfe": ("twfe", "unit+time", "cluster-unit"),
    "re": ("re", "time", "cluster-unit"),
    "cre": ("cre", "time", "cluster-unit"),
    "twfe_state": ("twfe", "unit+time", "cluster-state"),
    "twfe_twoway": ("twfe", "unit+time", "cluster-twoway"),
    "twfe_dk": ("twfe", "unit+time", "driscoll-kraay"),
    "fd": ("fd", "time", "cluster-unit"),
    "twfe_classical": ("twfe", "unit+time", "classical"),
    "re_classical": ("re", "time", "classical"),
}


def test_grid_has_the_six_estimators_with_their_effects_and_cov():
    specs = bw.chapter3_specs("poverty_rate")
    assert {k: (s.estimator, s.effects, s.cov) for k, s in specs.items()} == EXPECTED_GRID
    assert bw.TABLE_COLUMNS[:6] == ("pooled", "between", "fe", "twfe", "re", "cre")
    assert all(s.outcome == "poverty_rate" and s.regressors == ("assn_per_1k",) for s in specs.values())
    assert bw.chapter3_specs("y", "x")["twfe"].regressors == ("x",)


def test_grid_rejects_bad_names():
    with pytest.raises(SpecificationError, match="column names"):
        bw.chapter3_specs(["unemployment_rate"])
    with pytest.raises(SpecificationError, match="more than once"):
        bw.chapter3_specs("assn_per_1k", "assn_per_1k")


def test_balanced_sample_drops_incomplete_counties(panel):
    sample, dropped = bw.balanced_sample(panel, "unemployment_rate")
    assert dropped == ["00000", "00001", "00002"]
    assert len(sample) == (240 - 3) * 4
    assert sample.groupby("fips").size().eq(4).all()
    with pytest.raises(SpecificationError, match="'unemployment'"):
        bw.balanced_sample(panel, "unemployment")
    with pytest.raises(SpecificationError, match="DataFrame"):
        bw.balanced_sample(panel.to_numpy(), "unemployment_rate")


def test_fit_outcome_table_unknown_column_is_named(panel):
    with pytest.raises(SpecificationError, match="'density'"):
        bw.fit_outcome_table(panel, "unemployment_rate", regressor="density")


def test_twfe_and_between_match_statsmodels(table):
    """Independent references on the balanced sample: LSDV for TWFE, OLS on means for between."""
    s = table.sample
    X = pd.concat(
        [
            s[["assn_per_1k"]],
            pd.get_dummies(s["fips"], prefix="u", dtype=float),
            pd.get_dummies(s["year"], prefix="t", drop_first=True, dtype=float),
        ],
        axis=1,
    )
    ref = sm.OLS(s["unemployment_rate"], X).fit()
    np.testing.assert_allclose(table.coef("twfe"), ref.params["assn_per_1k"], rtol=1e-9)
    np.testing.assert_allclose(table.coef("twfe_classical"), ref.params["assn_per_1k"], rtol=1e-9)
    np.testing.assert_allclose(
        table.results["twfe_classical"].std_errors["assn_per_1k"], ref.bse["assn_per_1k"], rtol=1e-8
    )
    m = s.groupby("fips")[["unemployment_rate", "assn_per_1k"]].mean()
    ref_b = sm.OLS(m["unemployment_rate"], sm.add_constant(m[["assn_per_1k"]])).fit(cov_type="HC1")
    np.testing.assert_allclose(table.coef("between"), ref_b.params["assn_per_1k"], rtol=1e-9)
    np.testing.assert_allclose(table.results["between"].std_errors["assn_per_1k"], ref_b.bse["assn_per_1k"], rtol=1e-8)
    # CRE = TWFE on a balanced panel; the robustness columns share the TWFE coefficient
    for k in ("cre", "twfe_state", "twfe_twoway", "twfe_dk"):
        np.testing.assert_allclose(table.coef(k), table.coef("twfe"), rtol=1e-9)
    # x is correlated with the county effect (which lowers y): between is biased down from -0.5
    assert table.coef("between") < -1.0 < -0.7 < table.coef("twfe") < -0.3


def test_tests_match_direct_calls(panel, table):
    sample, _ = bw.balanced_sample(panel, "unemployment_rate")
    base = ModelSpec(outcome="unemployment_rate", regressors=("assn_per_1k",))
    fe = fit(base.replace(estimator="twfe", cov="classical"), sample)
    re = fit(base.replace(estimator="re", effects="time", cov="classical"), sample)
    h = hausman(fe, re)
    m = mundlak_test(base.replace(estimator="twfe"), sample)
    assert table.hausman.statistic == pytest.approx(h.statistic, rel=1e-10)
    assert table.hausman.pvalue == pytest.approx(h.pvalue, rel=1e-8)
    assert table.hausman.df == h.df == 1
    assert table.mundlak.statistic == pytest.approx(m.statistic, rel=1e-10)
    assert table.mundlak.pvalue == pytest.approx(m.pvalue, rel=1e-8)
    # the table takes the test from its own CRE fit, which is the model mundlak_test fits
    assert m.result.spec == bw.chapter3_specs("unemployment_rate")["cre"]
    assert (table.mundlak.name, table.mundlak.df, table.mundlak.terms, table.mundlak.cov_type) == (
        m.name, m.df, m.terms, m.cov_type)
    assert table.mundlak.result is table.results["cre"]
    # Mundlak by hand: the t statistic of mean(x) in the CRE fit, squared
    cre = table.results["cre"]
    assert table.mundlak.statistic == pytest.approx(float(cre.tstats["mean(assn_per_1k)"]) ** 2, rel=1e-10)
    frame = bw.tests_frame({"unemployment_rate": table})
    assert frame.loc["unemployment_rate", "hausman_chi2"] == pytest.approx(h.statistic, rel=1e-12)
    assert frame.loc["unemployment_rate", "mundlak_p"] == pytest.approx(m.pvalue, rel=1e-12)


def test_coefficients_frame(table):
    tabs = {"unemployment_rate": table}
    coefs = bw.coefficients_frame(tabs)
    assert list(coefs.columns) == list(bw.TABLE_COLUMNS)
    assert coefs.loc["unemployment_rate", "re"] == float(table.results["re"].params["assn_per_1k"])
    ses = bw.coefficients_frame(tabs, keys=["twfe_dk"], what="se")
    assert ses.iloc[0, 0] == float(table.results["twfe_dk"].std_errors["assn_per_1k"])
    with pytest.raises(ValueError, match="what must be"):
        bw.coefficients_frame(tabs, what="t")


def test_table_has_nine_columns_and_the_tests_in_the_notes(table):
    tab = table.table(labels={"assn_per_1k": "Associations per 1,000"})
    assert list(tab.frame.columns) == list(bw.COLUMN_LABELS.values())
    assert tab.frame.index[0] == "Associations per 1,000"
    assert tab.frame.loc["Standard errors", "TWFE, D-K"] == "Driscoll-Kraay"
    assert tab.frame.loc["Standard errors", "TWFE, state cl."] == "Cluster: state_fips"
    assert f"chi2(1) = {table.hausman.statistic:.2f}" in tab.notes
    assert f"chi2(1) = {table.mundlak.statistic:.2f}" in tab.notes
    assert "classical covariances" in tab.notes


# ---------------------------------------------------------------------------------------
# Magnitudes and equivalence
# ---------------------------------------------------------------------------------------


def test_magnitudes_equal_coefficient_times_independent_sd(table):
    bounds = pd.DataFrame({"bound": [0.10], "unit": ["percentage points"]}, index=["unemployment_rate"])
    mag = bw.magnitudes({"unemployment_rate": table}, bounds=bounds).loc["unemployment_rate"]
    s = table.sample
    x = s["assn_per_1k"].to_numpy()
    codes = pd.factorize(s["fips"])[0]
    unit_means = np.bincount(codes, weights=x) / np.bincount(codes)
    sd_w = np.std(x - unit_means[codes], ddof=1)
    sd_b = np.std(unit_means, ddof=1)
    assert mag["sd_within"] == pytest.approx(sd_w, rel=1e-12)
    assert mag["sd_between"] == pytest.approx(sd_b, rel=1e-12)
    b, se = table.coef("twfe"), float(table.results["twfe"].std_errors["assn_per_1k"])
    assert mag["twfe_sd"] == pytest.approx(b * sd_w, rel=1e-12)
    assert mag["pooled_sd"] == pytest.approx(table.coef("pooled") * sd_w, rel=1e-12)
    q90 = stats.t.ppf(0.95, s["fips"].nunique() - 1)
    assert mag["twfe_lo90"] == pytest.approx((b - q90 * se) * sd_w, rel=1e-10)
    assert mag["twfe_hi90"] == pytest.approx((b + q90 * se) * sd_w, rel=1e-10)
    assert mag["twfe_over_pooled"] == pytest.approx(b / table.coef("pooled"), rel=1e-12)
    assert mag["twfe_sd_reader"] == pytest.approx(b * sd_w, rel=1e-12)  # a rate: percentage points
    # |effect| ~ 0.5 * 0.3 = 0.15 > 0.10 and significant, in the thesis' direction (lower unemployment)
    assert mag["verdict"] == "better"


def test_magnitudes_reader_units_for_log_income(panel):
    d = panel.rename(columns={"y2": "log_median_hh_income"})
    t = bw.fit_outcome_table(d, "log_median_hh_income")
    bounds = pd.DataFrame({"bound": [0.005], "unit": ["log points"]}, index=["log_median_hh_income"])
    mag = bw.magnitudes({"log_median_hh_income": t}, bounds=bounds).loc["log_median_hh_income"]
    assert mag["twfe_sd_reader"] == pytest.approx(100 * (np.exp(mag["twfe_sd"]) - 1), rel=1e-12)
    with pytest.raises(SpecificationError, match="No equivalence bound"):
        bw.magnitudes({"log_median_hh_income": t}, bounds=bounds.rename(index={"log_median_hh_income": "other"}))


def test_tost_matches_statsmodels_ttost_paired():
    rng = np.random.default_rng(3)
    for shift in (0.0, 0.15, 0.4):
        x1 = rng.normal(size=60) + shift
        x2 = rng.normal(size=60)
        diff = x1 - x2
        ref_p, _, _ = ttost_paired(x1, x2, -0.5, 0.5)
        ours = bw.tost_pvalue(diff.mean(), diff.std(ddof=1) / np.sqrt(len(diff)), -0.5, 0.5, len(diff) - 1)
        assert ours == pytest.approx(ref_p, rel=1e-10)
    with pytest.raises(ValueError, match="low < high"):
        bw.tost_pvalue(0.0, 1.0, 0.5, -0.5, 10)
    with pytest.raises(ValueError, match="std_error"):
        bw.tost_pvalue(0.0, 0.0, -0.5, 0.5, 10)


def test_tost_below_005_iff_90_interval_inside_bounds():
    q = stats.t.ppf(0.95, 50)
    for est in (0.0, 0.2, 0.3, 0.35):
        inside = (est + q * 0.1) < 0.5 and (est - q * 0.1) > -0.5
        assert (bw.tost_pvalue(est, 0.1, -0.5, 0.5, 50) < 0.05) == inside


@pytest.mark.parametrize(
    "ci90, ci95, sign, expected",
    [
        ((-0.05, 0.05), (-0.06, 0.06), -1, "negligible"),
        ((-0.08, -0.02), (-0.09, -0.01), -1, "negligible"),  # significant but inside: negligible
        ((-0.30, -0.15), (-0.32, -0.13), -1, "better"),
        ((-0.30, -0.15), (-0.32, -0.13), 1, "worse"),
        ((-0.15, -0.01), (-0.16, -0.005), -1, "significant, size unclear"),
        ((-0.30, 0.10), (-0.35, 0.15), -1, "inconclusive"),
    ],
)
def test_equivalence_verdict(ci90, ci95, sign, expected):
    assert bw.equivalence_verdict(ci90, ci95, 0.10, sign) == expected


def test_equivalence_verdict_bad_input():
    with pytest.raises(ValueError, match="bound"):
        bw.equivalence_verdict((0, 1), (0, 1), 0.0, 1)
    with pytest.raises(ValueError, match="better_sign"):
        bw.equivalence_verdict((0, 1), (0, 1), 1.0, 0)


# ---------------------------------------------------------------------------------------
# Measurement error
# ---------------------------------------------------------------------------------------


def noisy_panel(n_units=20_000, T=4, r=0.03, seed=5):
    """SYNTHETIC: true density = county effect + random walk; observed = true + iid noise whose
    variance is ``r`` of the total variance of the observed density."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n_units, 1)) * 0.7
    walk = np.cumsum(rng.normal(size=(n_units, T)) * 0.12, axis=1)
    x_true = a + walk
    var_true = x_true.var()
    sigma2 = r * var_true / (1 - r)
    x_obs = x_true + rng.normal(size=(n_units, T)) * np.sqrt(sigma2)
    y = 1.0 * x_true + rng.normal(size=(n_units, T)) * 0.5
    d = pd.DataFrame(
        {
            "fips": np.repeat(np.arange(n_units), T),
            "year": np.tile(np.arange(T), n_units),
            "x": x_obs.ravel(),
            "y": y.ravel(),
        }
    )
    return d, sigma2 / x_obs.var()


def test_attenuation_formula_matches_simulation():
    d, r = noisy_panel()
    from analysis.describe import variance_shares

    s_w = float(variance_shares(d, "x")["share_within_twoway"].iloc[0])
    lam_p, lam_w = bw.attenuation(r, s_w, 4)
    pooled = sm.OLS(d["y"], sm.add_constant(d["x"])).fit().params["x"]
    from analysis.estimation import within_transform

    w = within_transform(d, ["x", "y"], absorb="unit+time")
    within = float((w["x"] * w["y"]).sum() / (w["x"] ** 2).sum())
    # the true slope is 1: the estimates are the attenuation factors
    assert pooled == pytest.approx(lam_p, abs=0.01)
    assert within == pytest.approx(lam_w, abs=0.02)
    assert lam_w < lam_p - 0.1  # noise hurts within far more than pooled


def test_error_share_from_changes_recovers_simulated_noise():
    d, r = noisy_panel(r=0.03)
    assert bw.error_share_from_changes(d, "x") == pytest.approx(r, abs=0.003)
    d0, r0 = noisy_panel(r=0.0)
    assert r0 == 0.0
    assert bw.error_share_from_changes(d0, "x") == pytest.approx(0.0, abs=0.002)
    with pytest.raises(SpecificationError, match="3 periods"):
        bw.error_share_from_changes(d[d["year"] < 2], "x")


def test_attenuation_arithmetic_and_inputs():
    assert bw.attenuation(0.05, 0.1, 4) == pytest.approx((0.95, 1 - 0.05 * 3 / (4 * 0.1)))
    assert bw.attenuation(0.5, 0.1, 4)[1] == 0.0  # truncated
    for bad in [(-0.1, 0.1, 4), (0.1, 0.0, 4), (0.1, 0.1, 1)]:
        with pytest.raises(ValueError):
            bw.attenuation(*bad)
    # the error share that brings a 90% interval reaching 0.06 up to a 0.10 bound: lambda = 0.6
    r = bw.error_share_to_reach_bound((-0.06, -0.01), 0.10, 0.08, 4)
    assert bw.attenuation(r, 0.08, 4)[1] == pytest.approx(0.6, rel=1e-12)
    assert bw.error_share_to_reach_bound((-0.2, 0.0), 0.10, 0.08, 4) == 0.0


def test_measurement_error_check(table):
    bounds = pd.DataFrame({"bound": [1.0], "unit": ["pp"]}, index=["unemployment_rate"])
    mag = bw.magnitudes({"unemployment_rate": table}, bounds=bounds)
    chk = bw.measurement_error_check(mag, 0.02, 0.1, 4).loc["unemployment_rate"]
    lam = 1 - 0.02 * 3 / 0.4
    assert chk["lambda_within"] == pytest.approx(lam)
    assert chk["twfe_lo90_corrected"] == pytest.approx(mag.loc["unemployment_rate", "twfe_lo90"] / lam)
    assert chk["inside_bound_corrected"] == bool(
        abs(chk["twfe_lo90_corrected"]) < 1.0 and abs(chk["twfe_hi90_corrected"]) < 1.0
    )
    with pytest.raises(ValueError, match="no signal"):
        bw.measurement_error_check(mag, 0.5, 0.1, 4)


# ---------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------


def test_binscatter_figure_within_slopes_are_twfe(panel, table):
    # one row per outcome: left pooled, right net of county and year means
    fig = bw.binscatter_figure(panel, {"unemployment_rate": "U", "y2": "Y2"}, bins=10)
    axes = np.array(fig.axes).reshape(2, 2).T  # [column, row]: axes[1, 0] is U, within
    from analysis.plots import binned_means

    bm = binned_means(table.sample, "assn_per_1k", "unemployment_rate", bins=10, absorb="unit+time")
    np.testing.assert_allclose(bm.slope, table.coef("twfe"), rtol=1e-8)
    assert f"{bm.slope:.3g}" in axes[1, 0].get_legend().get_texts()[0].get_text()
    assert "within county" in axes[1, 0].get_title()
    plt.close(fig)


def test_coefficient_figure_rows_and_band(table):
    bounds = pd.DataFrame({"bound": [0.10], "unit": ["pp"]}, index=["unemployment_rate"])
    fig = bw.coefficient_figure({"unemployment_rate": table}, bounds=bounds)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["Pooled OLS", "Between", "RE", "FE (county)", "TWFE", "CRE"]
    plt.close(fig)


# ---------------------------------------------------------------------------------------
# Separating the count from the population (issue 12), policy units (addition A1), and the
# inference checks of H2
# ---------------------------------------------------------------------------------------

COUNTS = ("n_religious", "n_civic", "n_business", "n_political", "n_professional", "n_labour", "n_bowling",
          "n_fitness", "n_golf", "n_sports_clubs", "n_membership_sports", "n_membership_nec")


def counts_panel(seed: int = 5) -> pd.DataFrame:
    """SYNTHETIC county panel with establishment counts and a population that moves within counties.
    The outcome depends on log population and not on the count, so a density (count / population)
    has a spurious negative within-county slope that the ratio-free model must remove."""
    rng = np.random.default_rng(seed)
    d = synthetic_panel(n_units=300, seed=seed, missing=0)
    n = len(d)
    a = d.groupby("fips").cumcount().to_numpy()
    log_pop = np.repeat(rng.normal(10, 1, 300), 4) + 0.08 * a + 0.05 * rng.normal(size=n)
    d["population"] = np.exp(log_pop)
    # counts scale with the county's typical population, not with the wave's: a within-county rise in
    # population lowers density mechanically
    lam = np.exp(pd.Series(log_pop).groupby(d["fips"].to_numpy()).transform("mean").to_numpy()) * 1.4 / 1000
    lam = lam * np.exp(0.1 * rng.normal(size=n))
    counts = rng.poisson(lam[:, None] / len(COUNTS), size=(n, len(COUNTS))).astype(float)
    for j, c in enumerate(COUNTS):
        d[c] = counts[:, j]
    d.loc[d["year"] != 1997, ["n_membership_sports", "n_membership_nec"]] = np.nan
    total = d[list(COUNTS)].fillna(0).sum(axis=1)
    d["assn_per_1k"] = total / d["population"] * 1000
    comm = d[["n_religious", "n_civic", "n_business", "n_professional", "n_labour", "n_political"]].sum(axis=1)
    d["community_per_1k"] = comm / d["population"] * 1000
    unit = pd.factorize(d["fips"])[0]
    d["unemployment_rate"] = (5 + 2.0 * (log_pop - 10) + np.repeat(rng.normal(size=300), 4)[unit]
                              + 0.3 * a + 0.3 * rng.normal(size=n))
    d["poverty_rate"] = 12 - 0.8 * np.log1p(total) + 0.8 * (log_pop - 10) + np.repeat(rng.normal(size=300), 4)[unit] \
        + 0.3 * rng.normal(size=n)
    return d


@pytest.fixture(scope="module")
def dtables():
    d = counts_panel()
    tables = bw.fit_chapter3(d, outcomes=("unemployment_rate", "poverty_rate"))
    return d, tables, bw.fit_density_tables(d, outcomes=("unemployment_rate", "poverty_rate"), reuse=tables)


def test_ratio_specs_separate_count_and_population():
    s = bw.ratio_specs("poverty_rate", "community_per_1k")
    assert s["ratio_free"].regressors == ("log_count_community",)
    assert s["ratio_free"].controls == ("log_population",)
    assert s["twfe_logpop"].controls == ("log_population",) and s["twfe_logpop"].regressors == ("community_per_1k",)
    assert s["twfe_weighted"].weights == "pop_weight"
    assert s["twfe_state_year"].effects == "state-by-year"
    assert all(v.cov == "cluster-unit" for v in s.values())
    with pytest.raises(SpecificationError, match="No ratio-free count"):
        bw.ratio_specs("poverty_rate", "civic_religious_per_10k")


def test_density_tables_reuse_and_match_linearmodels(dtables):
    _, tables, dt = dtables
    t = dt[("unemployment_rate", "assn_per_1k")]
    assert t.results["twfe"] is tables["unemployment_rate"].results["twfe"]  # reused, not refitted
    sample = t.sample
    for key, spec in bw.ratio_specs("unemployment_rate", "assn_per_1k").items():
        ref = fit(spec, sample)  # linearmodels (weights checked against pyfixest elsewhere)
        x = spec.regressors[0]
        assert float(t.results[key].params[x]) == pytest.approx(float(ref.params[x]), rel=1e-9, abs=1e-12)
        assert float(t.results[key].std_errors[x]) == pytest.approx(float(ref.std_errors[x]), rel=1e-9)
        assert float(t.results[key].pvalues[x]) == pytest.approx(float(ref.pvalues[x]), rel=1e-6, abs=1e-12)
    pop14 = sample.loc[sample["year"] == 2014, "population"].median()
    assert t.ref_population == pytest.approx(pop14)
    assert t.mean_density == pytest.approx(sample["assn_per_1k"].mean())


def test_denominator_table_finds_the_spurious_ratio(dtables):
    _, _, dt = dtables
    den = bw.denominator_table(dt)
    u = den.loc[("unemployment_rate", "assn_per_1k")]
    # simulated: unemployment depends on population only, so the density slope is the denominator's
    assert u["density_b"] < 0 and u["count_p"] > 0.05 and abs(u["count_b"]) < abs(u["implied_count"])
    assert u["pop_b"] == pytest.approx(2.0, abs=0.3) and u["kronmal_p"] < 0.001
    p = den.loc[("poverty_rate", "assn_per_1k")]
    # poverty depends on the count (coefficient -0.8 per log point) and on population
    assert p["count_b"] == pytest.approx(-0.8, abs=0.25) and p["count_p"] < 0.01
    # the Wald test of count + population = 0, by hand from the ratio-free fit
    rf = dt[("poverty_rate", "assn_per_1k")].results["ratio_free"]
    c, q = "log_count_assn", "log_population"
    diff = rf.params[c] + rf.params[q]
    var = rf.cov.loc[c, c] + rf.cov.loc[q, q] + 2 * rf.cov.loc[c, q]
    assert p["kronmal_p"] == pytest.approx(stats.chi2.sf(diff**2 / var, 1))
    assert u["implied_count"] == pytest.approx(u["density_b"] * u["mean_density"])


def test_policy_table_units_and_readings(dtables):
    from analysis.policy import policy_units

    _, _, dt = dtables
    pol = bw.policy_table(dt, relevant_share=0.25)
    assert set(pol.index.get_level_values("model")) == set(bw.WITHIN_MODELS)
    t = dt[("poverty_rate", "assn_per_1k")]
    row = pol.loc[("poverty_rate", "assn_per_1k", "twfe")]
    b, se = float(t.results["twfe"].params["assn_per_1k"]), float(t.results["twfe"].std_errors["assn_per_1k"])
    grad = float(t.results["pooled"].params["assn_per_1k"])
    u = policy_units(b, se, thesis_sign=-1, pooled_gradient=grad, population=t.ref_population)
    assert row["edge"] == pytest.approx(b - 1.6448536 * se) == pytest.approx(u.ruled_out_beyond)
    assert row["lo90"] == pytest.approx(row["edge"]) and row["hi90"] == pytest.approx(b + 1.6448536 * se)
    assert row["edge_per_ten"] == pytest.approx(row["edge"] * 10 * 1000 / t.ref_population)
    assert row["edge_share"] == pytest.approx(row["edge"] / grad)
    assert row["mde"] == pytest.approx(2.8015852 * se, rel=1e-6)
    assert row["reading"] == ("ruled out" if row["edge_share"] < 0.25 else "not identified")
    # the ratio-free count's slope per log point becomes a slope per organisation per 1,000 at the mean density
    rf = pol.loc[("poverty_rate", "assn_per_1k", "ratio_free")]
    assert rf["estimate"] == pytest.approx(float(t.results["ratio_free"].params["log_count_assn"]) / t.mean_density)
    # a gradient of the wrong sign (denser places poorer) defines no effect of policy interest
    import dataclasses

    from analysis.multiverse import FastFit

    wrong = FastFit(spec=None, params=pd.Series({"assn_per_1k": 0.5}), std_errors=pd.Series({"assn_per_1k": 0.1}),
                    pvalues=pd.Series({"assn_per_1k": 0.0}), conf_int=pd.DataFrame(), nobs=0, n_units=0)
    flipped = {("poverty_rate", "assn_per_1k"): dataclasses.replace(t, results={**t.results, "pooled": wrong})}
    fp = bw.policy_table(flipped, relevant_share=0.25)
    assert (fp["reading"] == "gradient of the wrong sign").all()
    assert fp["edge_share"].isna().all() and fp["mde_share"].isna().all()
    same = pol[(pol.index.get_level_values("outcome") == "poverty_rate")
               & (pol.index.get_level_values("density") == "assn_per_1k")]
    assert fp["edge"].tolist() == pytest.approx(same["edge"].tolist())


def test_h2_inference_holm_and_bootstrap(dtables):
    from analysis.heterogeneity import holm
    from analysis.sensitivity import wild_cluster_bootstrap

    _, tables, _ = dtables
    h = bw.h2_inference(tables, bootstrap=("poverty_rate",), B=199, seed=3)
    p = np.array([tables[y].results["twfe"].pvalues["assn_per_1k"] for y in tables])
    np.testing.assert_allclose(h["p_holm"], holm(p))
    assert np.isnan(h.loc["unemployment_rate", "p_wild"])
    t = tables["poverty_rate"]
    assert h.loc["poverty_rate", "p_wild"] == wild_cluster_bootstrap(t.results["twfe"].spec, t.sample, B=199,
                                                                      seed=3)["p"]
    assert h.loc["poverty_rate", "p_state"] == pytest.approx(float(t.results["twfe_state"].pvalues["assn_per_1k"]))
