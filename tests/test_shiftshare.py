"""Tests of analysis.shiftshare: the shift-share instrument, 2SLS, effective F, Anderson-Rubin, Rotemberg weights.

References
----------
* Wooldridge, *Introductory Econometrics*, Example 15.1: log(wage) on
  educ for the 428 working married women of MROZ, fatheduc as the instrument:
  ``.441 (.446) + .059 (.035) educ``, R-squared .093; Example 15.5: 2SLS with
  motheduc and fatheduc, controls exper and exper^2:
  ``.048 (.400) + .0614 (.0314) educ + .0442 (.0134) exper - .00090 (.00040) exper^2``,
  R-squared .136 (usual standard errors). The first stage of Example 15.1 as Stata prints it
  (``ivreg lwage (educ = fatheduc), first``): fatheduc .2694416 (.0285863), F(1, 426) = 88.84.
  Data: ``linearmodels.datasets.mroz``.
* Hand (numpy) 2SLS with a CR1 clustered sandwich, and hand F statistics from restricted and
  unrestricted sums of squares: a second implementation of what linearmodels computes.
* The Rotemberg identities of Goldsmith-Pinkham, Sorkin & Swift (2020, AER 110(8), eqs. 5-6).
Data other than MROZ are synthetic fixtures, generated here with fixed seeds (labelled SYNTHETIC).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from linearmodels.datasets import mroz
from printed import assert_printed
from scipy import stats

from analysis.shiftshare import (
    TYPES,
    InstrumentError,
    anderson_rubin,
    effective_f,
    iv_2sls,
    long_difference,
    reduced_form,
    rotemberg_weights,
    shift_share,
)


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def women():
    d = mroz.load()
    return d.loc[d["inlf"] == 1].dropna(subset=["lwage"]).reset_index(drop=True)


def synthetic_iv(n=600, n_clusters=30, n_instruments=1, strength=0.5, seed=0) -> pd.DataFrame:
    """SYNTHETIC: a clustered IV design with a known effect (beta = 2)."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, n_clusters, n)
    cl_u = rng.normal(size=n_clusters)[g]
    Z = rng.normal(size=(n, n_instruments)) + 0.3 * rng.normal(size=n_clusters)[g][:, None]
    w = rng.normal(size=n)
    v = rng.normal(size=n)
    x = Z.sum(axis=1) * strength + 0.5 * w + v
    u = 0.8 * v + cl_u + rng.normal(size=n) * (1 + 0.5 * np.abs(w))
    y = 1.0 + 2.0 * x - 0.7 * w + u
    df = pd.DataFrame({"y": y, "x": x, "w": w, "g": g})
    for j in range(n_instruments):
        df[f"z{j}"] = Z[:, j]
    return df


def synthetic_waves(n=200, seed=1) -> pd.DataFrame:
    """SYNTHETIC: a three-wave county panel (1997, 2005, 2014) with the ten type counts."""
    rng = np.random.default_rng(seed)
    rows = []
    pop = rng.integers(2_000, 200_000, n)
    base = rng.poisson(lam=np.outer(pop / 5_000, np.linspace(0.2, 3, len(TYPES))))
    for year, growth in ((1997, 0.0), (2005, 0.05), (2014, 0.10)):
        counts = rng.poisson(base * (1 + growth * np.linspace(-1, 1, len(TYPES))) + 0.1)
        for i in range(n):
            rows.append({"fips": f"{i:05d}", "year": year, "population": int(pop[i] * (1 + growth)),
                         "state_fips": f"{i % 10:02d}", **dict(zip(TYPES, counts[i]))})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ published 2SLS (Wooldridge)


def test_wooldridge_example_15_1(women):
    r = iv_2sls(women, "lwage", "educ", "fatheduc", cov="unadjusted")
    assert r.nobs == 428
    assert_printed(r.estimate, ".059", "educ")
    assert_printed(r.std_error, ".035", "se(educ)")
    assert_printed(float(r.raw.params["const"]), ".441", "constant")
    assert_printed(float(r.raw.std_errors["const"]), ".446", "se(constant)")
    assert_printed(float(r.raw.rsquared), ".093", "R-squared")
    # Stata's first stage, printed to seven digits
    assert_printed(r.first_stage["coef"], ".2694416", "first stage fatheduc")
    assert_printed(r.first_stage["se"], ".0285863", "first stage se")
    # homoskedastic effective F = the classical first-stage F printed by Stata
    assert_printed(r.effective_f, "88.84", "first-stage F")
    # OLS of Example 15.1 (educ .1086487, se .0143998)
    assert_printed(r.ols["coef"], ".1086487", "OLS educ")
    assert_printed(r.ols["se"], ".0143998", "OLS se")


def test_wooldridge_example_15_5(women):
    r = iv_2sls(women, "lwage", "educ", ("motheduc", "fatheduc"), controls=("exper", "expersq"), cov="unadjusted")
    assert_printed(r.estimate, ".0614", "educ")
    assert_printed(r.std_error, ".0314", "se(educ)")
    p, se = r.raw.params, r.raw.std_errors
    assert_printed(float(p["const"]), ".048", "constant")
    assert_printed(float(se["const"]), ".400", "se(constant)")
    assert_printed(float(p["exper"]), ".0442", "exper")
    assert_printed(float(se["exper"]), ".0134", "se(exper)")
    assert_printed(float(p["expersq"]), "-.00090", "expersq")
    assert_printed(float(se["expersq"]), ".00040", "se(expersq)")
    assert_printed(float(r.raw.rsquared), ".136", "R-squared")


# ------------------------------------------------------------------ second implementation (numpy)


def _hand_2sls_cluster(df, y, x, zs, ws, g):
    n = len(df)
    W = np.column_stack([np.ones(n), df[list(ws)].to_numpy()])
    X = np.column_stack([W, df[x].to_numpy()])
    Z = np.column_stack([W, df[list(zs)].to_numpy()])
    Y = df[y].to_numpy()
    Xhat = Z @ np.linalg.solve(Z.T @ Z, Z.T @ X)
    b = np.linalg.solve(Xhat.T @ X, Xhat.T @ Y)
    u = Y - X @ b
    codes = pd.factorize(df[g])[0]
    G, k = codes.max() + 1, X.shape[1]
    S = np.zeros((G, k))
    np.add.at(S, codes, Xhat * u[:, None])
    bread = np.linalg.inv(Xhat.T @ Xhat)
    V = bread @ (S.T @ S) @ bread * G / (G - 1) * (n - 1) / (n - k)
    return b[-1], np.sqrt(V[-1, -1])


@pytest.mark.parametrize("n_instruments", [1, 3])
def test_2sls_matches_hand_numpy_clustered(n_instruments):
    df = synthetic_iv(n_instruments=n_instruments)
    zs = [f"z{j}" for j in range(n_instruments)]
    r = iv_2sls(df, "y", "x", zs, controls=("w",), cov="cluster", cluster="g")
    b, se = _hand_2sls_cluster(df, "y", "x", zs, ["w"], "g")
    assert r.estimate == pytest.approx(b, rel=1e-10)
    assert r.std_error == pytest.approx(se, rel=1e-10)
    assert r.n_clusters == 30


def test_first_stage_and_reduced_form_ratio():
    """Just identified: 2SLS = reduced form / first stage (indirect least squares)."""
    df = synthetic_iv()
    r = iv_2sls(df, "y", "x", "z0", controls=("w",), cov="cluster", cluster="g")
    assert r.estimate == pytest.approx(r.reduced_form["coef"] / r.first_stage["coef"], rel=1e-10)
    rf = reduced_form(df, "y", "z0", controls=("w",), cov="cluster", cluster="g")
    assert rf["coef"] == pytest.approx(r.reduced_form["coef"], rel=1e-12)
    assert rf["se"] == pytest.approx(r.reduced_form["se"], rel=1e-12)


# ------------------------------------------------------------------ effective F


@pytest.mark.parametrize("cov", ["cluster", "robust"])
def test_effective_f_single_instrument_is_robust_wald_f(cov):
    df = synthetic_iv(strength=0.15)
    r = iv_2sls(df, "y", "x", "z0", controls=("w",), cov=cov, cluster="g")
    # linearmodels' first-stage diagnostics (Wald statistic with the same covariance, 1 restriction)
    lm_f = float(r.raw.first_stage.diagnostics.loc["x", "f.stat"])
    assert r.effective_f == pytest.approx(lm_f, rel=1e-10)
    # by hand: (pi / se(pi))^2
    assert r.effective_f == pytest.approx(r.first_stage["t"] ** 2, rel=1e-12)


def test_effective_f_homoskedastic_equals_classical_f_several_instruments():
    df = synthetic_iv(n_instruments=3, strength=0.1)
    zs = ["z0", "z1", "z2"]
    r = iv_2sls(df, "y", "x", zs, controls=("w",), cov="unadjusted")
    n = len(df)
    W = np.column_stack([np.ones(n), df["w"]])
    WZ = np.column_stack([W, df[zs]])
    x = df["x"].to_numpy()
    ssr = lambda A: float(((x - A @ np.linalg.lstsq(A, x, rcond=None)[0]) ** 2).sum())  # noqa: E731
    f_hand = ((ssr(W) - ssr(WZ)) / 3) / (ssr(WZ) / (n - WZ.shape[1]))
    assert r.effective_f == pytest.approx(f_hand, rel=1e-10)
    assert r.effective_f == pytest.approx(float(r.raw.first_stage.diagnostics.loc["x", "f.stat"]), rel=1e-10)


def test_effective_f_differs_from_mean_wald_with_heteroskedasticity():
    """With several instruments and a robust covariance the effective F is not the robust Wald F / L
    (Montiel Olea & Pflueger's point): a check that the formula is not a relabelled Wald test."""
    rng = np.random.default_rng(3)
    n = 2000
    Z = rng.normal(size=(n, 2)) * np.array([1.0, 3.0])
    pi = np.array([0.3, 0.02])
    V = np.array([[0.01, 0.0], [0.0, 0.0004]])
    wald_over_L = float(pi @ np.linalg.solve(V, pi)) / 2
    f_eff = effective_f(pi, V, Z - Z.mean(axis=0))
    Q = (Z - Z.mean(0)).T @ (Z - Z.mean(0))
    assert f_eff == pytest.approx(float(pi @ Q @ pi) / float(np.trace(Q @ V)), rel=1e-12)
    assert abs(f_eff - wald_over_L) > 1.0


# ------------------------------------------------------------------ Anderson-Rubin


def _ar_pvalue(df, b0, cov="cluster"):
    d = df.assign(ytil=df["y"] - b0 * df["x"])
    return reduced_form(d, "ytil", "z0", controls=("w",), cov=cov, cluster="g")["pvalue"]


@pytest.mark.parametrize("cov", ["cluster", "robust"])
def test_anderson_rubin_bounds_are_where_the_ar_test_rejects(cov):
    df = synthetic_iv(strength=0.5)
    r = iv_2sls(df, "y", "x", "z0", controls=("w",), cov=cov, cluster="g")
    ar = anderson_rubin(r)
    assert ar.kind == "interval"
    # an independent inversion: the AR test run as a linearmodels regression at each bound
    assert _ar_pvalue(df, ar.low, cov) == pytest.approx(0.05, abs=1e-8)
    assert _ar_pvalue(df, ar.high, cov) == pytest.approx(0.05, abs=1e-8)
    assert _ar_pvalue(df, r.estimate, cov) == pytest.approx(1.0, abs=1e-8)
    assert ar.low < r.estimate < ar.high


def test_anderson_rubin_unbounded_when_first_stage_insignificant():
    df = synthetic_iv(strength=0.0, seed=5)
    r = iv_2sls(df, "y", "x", "z0", controls=("w",), cov="cluster", cluster="g")
    assert r.first_stage["pvalue"] > 0.05
    ar = anderson_rubin(r)
    assert ar.kind in ("two rays", "everything")
    if ar.kind == "two rays":
        assert _ar_pvalue(df, ar.low) == pytest.approx(0.05, abs=1e-8)
        assert _ar_pvalue(df, (ar.low + ar.high) / 2) < 0.05


# ------------------------------------------------------------------ the shift-share instrument


def test_shift_share_by_hand():
    """SYNTHETIC: three counties, two types; every number computed by hand."""
    rows = []
    c97 = {"A": (10, 0), "B": (5, 5), "C": (0, 20)}
    c05 = {"A": (10, 10), "B": (10, 10), "C": (20, 20)}
    c14 = {"A": (20, 10), "B": (10, 5), "C": (30, 25)}
    pop = {"A": 1000, "B": 2000, "C": 4000}
    for year, c in ((1997, c97), (2005, c05), (2014, c14)):
        for f in "ABC":
            rows.append({"fips": f, "year": year, "population": pop[f], "t1": c[f][0], "t2": c[f][1]})
    ss = shift_share(pd.DataFrame(rows), types=("t1", "t2"))
    # leave-one-out growth of t1 for A: (60 - 20) / (40 - 10) - 1 = 1/3
    assert ss.shifts.loc["A", "t1"] == pytest.approx(1 / 3)
    # t2 for C: (40 - 25) / (40 - 20) - 1 = -0.25
    assert ss.shifts.loc["C", "t2"] == pytest.approx(-0.25)
    assert ss.national_growth["t1"] == pytest.approx(0.5)
    assert ss.national_growth["t2"] == pytest.approx(0.0)
    # A: density of t1 = 10/1000*1000 = 10 per 1k; t2 = 0 -> Z = 10 * 1/3
    assert ss.instrument["A"] == pytest.approx(10 / 3)
    # B: d = (2.5, 2.5); g_B = ((60-10)/(40-10)-1, (40-5)/(40-10)-1) = (2/3, 1/6)
    assert ss.instrument["B"] == pytest.approx(2.5 * 2 / 3 + 2.5 * 1 / 6)
    assert ss.shares.loc["B"].tolist() == pytest.approx([0.5, 0.5])
    assert ss.density_share_year["C"] == pytest.approx(5.0)
    assert (ss.components.sum(axis=1) - ss.instrument).abs().max() < 1e-12


def test_long_difference_units():
    w = synthetic_waves(n=5)
    ld = long_difference(w, ["population", "n_civic"], 2005, 2014)
    a = w[w.year == 2005].set_index("fips")
    b = w[w.year == 2014].set_index("fips")
    assert ld["d_n_civic"].tolist() == (b["n_civic"] - a["n_civic"]).astype(float).tolist()
    assert ld["state_fips"].tolist() == a["state_fips"].tolist()


# ------------------------------------------------------------------ Rotemberg weights


def test_rotemberg_identities_on_shift_share():
    """SYNTHETIC panel: weights sum to one and sum(alpha * beta) is the Bartik 2SLS estimate."""
    w = synthetic_waves()
    ss = shift_share(w)
    rng = np.random.default_rng(7)
    ld = long_difference(w, ["population"], 2005, 2014).join(ss.frame(), how="inner")
    ld["x"] = 2 * ld["bartik_per_1k"] + rng.normal(size=len(ld))
    ld["y"] = -0.5 * ld["x"] + rng.normal(size=len(ld))
    r = iv_2sls(ld, "y", "x", "bartik_per_1k", controls=("density10_per_1k_share_year",), absorb="state_fips",
                cov="cluster", cluster="state_fips")
    W = r.raw.model.exog.pandas
    rw = rotemberg_weights(ss.components.loc[ld.index], ld["x"], ld["y"], W, ss.national_growth)
    assert rw["alpha"].sum() == pytest.approx(1.0, abs=1e-12)
    assert float((rw["alpha"] * rw["beta"]).sum()) == pytest.approx(r.estimate, abs=1e-8)
    assert float(rw["alpha_x_beta"].sum()) == pytest.approx(r.estimate, abs=1e-8)
    # beta_k is the just-identified IV estimate with component k alone as the instrument
    k = rw.index[0]
    ld["comp"] = ss.components.loc[ld.index, k]
    rk = iv_2sls(ld, "y", "x", "comp", controls=("density10_per_1k_share_year",), absorb="state_fips",
                 cov="cluster", cluster="state_fips")
    assert rw.loc[k, "beta"] == pytest.approx(rk.estimate, rel=1e-8)


def test_rotemberg_common_shifts_match_gpss_formula():
    """With a common shift g_k, alpha_k = g_k Z_k' M_W x / sum_j g_j Z_j' M_W x (GPSS eq. 5)
    and beta_k = Z_k' M_W y / Z_k' M_W x, which does not depend on g_k."""
    rng = np.random.default_rng(11)
    n, K = 500, 4
    shares = rng.dirichlet(np.ones(K), size=n)
    g = np.array([0.1, -0.2, 0.05, 0.3])
    x = shares @ g * 3 + rng.normal(size=n)
    y = 1.5 * x + rng.normal(size=n)
    comps = pd.DataFrame(shares * g, columns=list("abcd"))
    rw = rotemberg_weights(comps, pd.Series(x), pd.Series(y)).loc[list("abcd")]
    Zt = shares - shares.mean(axis=0)
    num = g * (Zt.T @ x)
    assert rw["alpha"].to_numpy() == pytest.approx(num / num.sum(), rel=1e-10)
    assert rw["beta"].to_numpy() == pytest.approx((Zt.T @ y) / (Zt.T @ x), rel=1e-10)


# ------------------------------------------------------------------ bad input raises clear errors


def test_error_type_counted_only_in_share_year():
    w = synthetic_waves(n=20)
    w["n_membership_sports"] = np.where(w["year"] == 1997, 3, np.nan)
    with pytest.raises(InstrumentError, match="n_membership_sports"):
        shift_share(w, types=(*TYPES, "n_membership_sports"))
    w["n_membership_sports"] = np.where(w["year"] == 1997, 3, 0)
    with pytest.raises(InstrumentError, match="no establishments in the base year 2005"):
        shift_share(w, types=(*TYPES, "n_membership_sports"))


def test_error_collinear_shares():
    w = synthetic_waves(n=20)
    w["n_civic_copy"] = 2 * w["n_civic"]
    with pytest.raises(InstrumentError, match="Collinear shares.*n_civic_copy"):
        shift_share(w, types=(*TYPES, "n_civic_copy"))
    with pytest.raises(InstrumentError, match="given twice"):
        shift_share(w, types=(*TYPES, "n_civic"))


def test_error_share_without_variation():
    w = synthetic_waves(n=20)
    w.loc[w.year == 1997, "n_golf"] = 0
    with pytest.raises(InstrumentError, match="no variation.*n_golf"):
        shift_share(w)


def test_error_too_few_periods():
    w = synthetic_waves(n=20)
    with pytest.raises(InstrumentError, match="Too few periods.*2014"):
        shift_share(w[w.year < 2014])
    with pytest.raises(InstrumentError, match="Too few periods.*one|Too few periods.*1 "):
        shift_share(w[w.year == 1997])
    with pytest.raises(InstrumentError, match="Too few periods"):
        shift_share(w, base_year=2014, end_year=2005)
    with pytest.raises(InstrumentError, match="Too few periods"):
        long_difference(w, ["n_civic"], 2014, 2014)


def test_error_instrument_without_variation():
    df = synthetic_iv().assign(zc=3.0)
    with pytest.raises(InstrumentError, match="instrument 'zc' has no variation \\(it is constant\\)"):
        iv_2sls(df, "y", "x", "zc", controls=("w",), cov="robust")
    df["zw"] = 2 * df["w"] - 1
    with pytest.raises(InstrumentError, match="'zw' has no variation once the controls are removed"):
        iv_2sls(df, "y", "x", "zw", controls=("w",), cov="robust")
    # an instrument that is constant within groups is absorbed by the group dummies
    df["zg"] = df["g"] * 0.1
    with pytest.raises(InstrumentError, match="'zg' has no variation once the controls"):
        iv_2sls(df, "y", "x", "zg", absorb="g", cov="robust")


def test_error_collinear_instruments():
    df = synthetic_iv(n_instruments=2)
    df["z2"] = df["z0"] - 0.5 * df["z1"]
    with pytest.raises(InstrumentError, match="Collinear instruments: 'z2'"):
        iv_2sls(df, "y", "x", ("z0", "z1", "z2"), cov="robust")


def test_error_no_nan_leaks():
    """Missing values are dropped and counted, never propagated into the estimate."""
    df = synthetic_iv()
    df.loc[:9, "y"] = np.nan
    r = iv_2sls(df, "y", "x", "z0", controls=("w",), cov="cluster", cluster="g")
    assert r.n_dropped == 10 and r.nobs == 590
    assert np.isfinite([r.estimate, r.std_error, r.effective_f]).all()
    df.loc[20, "z0"] = np.inf
    with pytest.raises(InstrumentError, match="Infinite"):
        iv_2sls(df, "y", "x", "z0", cov="robust")


def test_error_unknown_covariance_and_columns():
    df = synthetic_iv()
    with pytest.raises(InstrumentError, match="Unknown covariance 'hac'"):
        iv_2sls(df, "y", "x", "z0", cov="hac")
    with pytest.raises(InstrumentError, match="'zz'"):
        iv_2sls(df, "y", "x", "zz", cov="robust")


def test_critical_value_matches_t():
    df = synthetic_iv()
    r = iv_2sls(df, "y", "x", "z0", cov="cluster", cluster="g")
    ar = anderson_rubin(r)
    assert ar.critical == pytest.approx(stats.t.ppf(0.975, 29) ** 2, rel=1e-10)
    lo, hi = r.ci(0.95)
    assert (lo, hi) == pytest.approx((r.conf_low, r.conf_high), rel=1e-12)


def test_real_panel_identity():
    """On the built county panel: the Rotemberg decomposition reproduces the chapter's 2SLS estimate."""
    from analysis.panels import load

    waves = load("us_counties_waves")
    ss = shift_share(waves)
    ld = long_difference(waves, ["assn_per_1k", "poverty_rate"], 2005, 2014).join(ss.frame(), how="inner")
    r = iv_2sls(ld, "d_poverty_rate", "d_assn_per_1k", "bartik_per_1k",
                controls=("density10_per_1k_share_year",), absorb="state_fips")
    rw = rotemberg_weights(ss.components.loc[ld.index], ld["d_assn_per_1k"], ld["d_poverty_rate"],
                           r.raw.model.exog.pandas)
    assert rw["alpha"].sum() == pytest.approx(1.0, abs=1e-10)
    assert float((rw["alpha"] * rw["beta"]).sum()) == pytest.approx(r.estimate, abs=1e-8)
    assert r.effective_f == pytest.approx(float(r.raw.first_stage.diagnostics.loc["d_assn_per_1k", "f.stat"]), rel=1e-10)


def test_source_gap_county_is_left_out_and_reported():
    """DC 1997 is a source gap (every count missing): it is excluded from the instrument, by name."""
    from analysis.panels import load

    ss = shift_share(load("us_counties_waves"))
    assert ss.excluded == ("11001",)
    assert "11001" not in ss.instrument.index
    assert ss.instrument.notna().all()
