"""analysis.nccs_iv: two-way fixed-effects IV with a second count as the instrument.

Reference checks (synthetic, labelled panels made here):

* the point estimate and cluster-robust SE equal linearmodels ``IV2SLS`` run with explicit county
  and year dummies, once the small-sample factor is put on the same K (linearmodels counts every
  dummy in K; ``twfe_iv`` absorbs the effects, which are nested in the county clusters, as Stata's
  ``xtivreg2``/``reghdfe`` do);
* the point estimate equals pyfixest's ``feols("y ~ 1 | fips + year | x ~ z")`` and the SE agrees up
  to pyfixest's own count of the year effects in K;
* the classical first-stage F equals linearmodels' unadjusted first-stage t squared, and the
  effective F (one instrument) the clustered one;
* on a large errors-in-variables panel the IV recovers the slope that OLS attenuates.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from analysis.nccs_iv import (
    balanced_complete,
    classical_first_stage_f,
    iv_table,
    twfe_iv,
)
from analysis.shiftshare import InstrumentError, iv_2sls


def eiv_panel(n_units: int = 300, years=(1997, 2005, 2009, 2014), beta: float = -0.5, noise: float = 0.4,
              seed: int = 20261129) -> pd.DataFrame:
    """Synthetic: latent density x* (county level + change), two noisy measures x and z of it,
    an outcome y = beta x* + county + year + error; a population column for a control."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_units):
        a, level = rng.normal(), rng.normal(1.4, 0.5)
        for k, t in enumerate(years):
            xs = level + rng.normal(0, 0.3)
            rows.append({
                "fips": f"{i:05d}", "year": t,
                "x": xs + rng.normal(0, noise),
                "z": 30 * xs + rng.normal(0, 10 * noise),
                "y": beta * xs + a + 0.2 * k + rng.normal(0, 0.5),
                "log_population": 10 + 0.5 * a + rng.normal(0, 0.05),
            })
    return pd.DataFrame(rows)


def test_point_estimate_and_se_match_linearmodels_with_dummies():
    from linearmodels.iv import IV2SLS

    d = eiv_panel(n_units=120)
    res = twfe_iv(d, "y", endog="x", instrument="z")
    exog = pd.concat([pd.Series(1.0, index=d.index, name="const"),
                      pd.get_dummies(d["fips"], prefix="c", drop_first=True, dtype=float),
                      pd.get_dummies(d["year"], prefix="t", drop_first=True, dtype=float)], axis=1)
    clusters = pd.Series(pd.factorize(d["fips"])[0], index=d.index)
    ref = IV2SLS(d["y"], exog, d[["x"]], d[["z"]]).fit(cov_type="clustered", clusters=clusters, debiased=True)
    assert res.iv.estimate == pytest.approx(float(ref.params["x"]), abs=1e-10)
    n, k_dummies, k_absorbed = len(d), exog.shape[1] + 1, 2  # + the endogenous regressor; const + x after demeaning
    factor = np.sqrt((n - k_absorbed) / (n - k_dummies))  # the only difference: which K enters (n - 1)/(n - K)
    assert res.iv.std_error * factor == pytest.approx(float(ref.std_errors["x"]), rel=1e-9)
    assert res.n_units == 120 and res.iv.nobs == 480


def test_point_estimate_and_se_match_pyfixest():
    import pyfixest as pf

    d = eiv_panel(n_units=400)
    res = twfe_iv(d, "y", endog="x", instrument="z")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = pf.feols("y ~ 1 | fips + year | x ~ z", data=d, vcov={"CRV1": "fips"})
    tidy = m.tidy()
    assert res.iv.estimate == pytest.approx(float(tidy.loc["x", "Estimate"]), abs=1e-10)
    # pyfixest counts the (non-nested) year effects in K, twfe_iv the constant: a factor ~ 1 + 1/n
    assert res.iv.std_error == pytest.approx(float(tidy.loc["x", "Std. Error"]), rel=2e-3)


def test_first_stage_f_statistics():
    d = eiv_panel(n_units=150)
    res = twfe_iv(d, "y", endog="x", instrument="z")
    from analysis.estimation import within_transform

    dm = within_transform(d, ["y", "x", "z"], absorb="unit+time").assign(fips=d["fips"].to_numpy())
    classical = iv_2sls(dm, "y", "x", "z", cov="unadjusted", cluster=None)
    assert res.first_stage_f == pytest.approx(classical.first_stage["t"] ** 2, rel=1e-9)
    assert classical_first_stage_f(res.iv) == pytest.approx(res.first_stage_f, rel=1e-12)
    # one instrument: the effective F is the clustered first-stage Wald F
    assert res.effective_f == pytest.approx(res.iv.first_stage["t"] ** 2, rel=1e-9)
    # the AR set at the fit's level contains the point estimate when the instrument is strong
    assert res.ar.kind == "interval" and res.ar.low < res.iv.estimate < res.ar.high
    assert res.ci[0] < res.iv.estimate < res.ci[1] and res.level == 0.90


def test_iv_undoes_attenuation_that_ols_suffers():
    d = eiv_panel(n_units=3000, noise=0.3)
    res = twfe_iv(d, "y", endog="x", instrument="z")
    # reliability of x within counties: 0.3^2 / (0.3^2 + 0.3^2) = 0.5, so OLS is about half the truth
    assert res.iv.ols["coef"] == pytest.approx(-0.25, abs=0.03)
    assert res.iv.estimate == pytest.approx(-0.5, abs=0.05)


def test_controls_and_table():
    d = eiv_panel(n_units=100)
    tab = iv_table(d, ["y"], {"baseline": (), "log population": ("log_population",)}, endog="x", instrument="z")
    assert list(tab.index) == [("y", "baseline"), ("y", "log population")]
    assert tab.loc[("y", "baseline"), "iv"] == pytest.approx(twfe_iv(d, "y", endog="x", instrument="z").iv.estimate)
    assert tab.loc[("y", "log population"), "iv"] != pytest.approx(tab.loc[("y", "baseline"), "iv"], abs=1e-12)
    assert set(tab["ar_kind"]) <= {"interval", "two rays", "everything"}


def test_balanced_complete_keeps_only_units_complete_in_every_period():
    d = eiv_panel(n_units=10)
    d.loc[(d["fips"] == "00003") & (d["year"] == 2009), "z"] = np.nan
    d = d[~((d["fips"] == "00007") & (d["year"] == 2014))]
    out = balanced_complete(d, ["y", "x", "z"])
    assert sorted(out["fips"].unique()) == [f"{i:05d}" for i in range(10) if i not in (3, 7)]
    assert len(out) == 8 * 4
    with pytest.raises(InstrumentError):
        balanced_complete(d, ["nope"])
