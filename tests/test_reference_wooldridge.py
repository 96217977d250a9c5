"""Reference test: Wooldridge, *Introductory Econometrics*, Example 14.4 (Table 14.2).

Data: ``wagepan`` (Vella & Verbeek 1998), 545 men x 1980-1987, shipped with linearmodels as
``linearmodels.datasets.wage_panel``. Model: lwage on educ, black, hisp(an), exper,
expersq, married, union and year dummies; pooled OLS, random effects and fixed effects
(FE drops the time-invariant regressors and exper, which is collinear with the year
dummies once the unit means are removed).

Printed values: Wooldridge (2013, 5th ed., Table 14.2 "Three Different Estimators of a
Wage Equation", p. 495; the same table in the 6th and 7th editions), three decimals
(four for exper^2), usual (classical) standard errors; the text gives theta-hat = .643
for RE. The four-decimal FE values for union and married are those of the Stata output
behind the table, also printed by linearmodels' panel examples
(https://bashtage.github.io/linearmodels/panel/examples/examples.html).
"""

from __future__ import annotations

import numpy as np
import pytest

from printed import assert_printed

from analysis.estimation import ModelSpec, fit, hausman

from linearmodels.datasets import wage_panel

BASE = ("educ", "black", "hisp", "exper", "expersq", "married", "union")
FE_REGRESSORS = ("expersq", "married", "union")

# Wooldridge (2013), Table 14.2: (coefficient, standard error) as printed.
TABLE_14_2 = {
    "pooled": {
        "educ": ("0.091", "0.005"),
        "black": ("-0.139", "0.024"),
        "hisp": ("0.016", "0.021"),
        "exper": ("0.067", "0.014"),
        "expersq": ("-0.0024", "0.0008"),
        "married": ("0.108", "0.016"),
        "union": ("0.182", "0.017"),
    },
    "re": {
        "educ": ("0.092", "0.011"),
        "black": ("-0.139", "0.048"),
        "hisp": ("0.022", "0.043"),
        "exper": ("0.106", "0.015"),
        "expersq": ("-0.0047", "0.0007"),
        "married": ("0.064", "0.017"),
        "union": ("0.106", "0.018"),
    },
    "twfe": {
        "expersq": ("-0.0052", "0.0007"),
        "married": ("0.047", "0.018"),
        "union": ("0.080", "0.019"),
    },
}




@pytest.fixture(scope="module")
def wagepan():
    return wage_panel.load()


@pytest.fixture(scope="module")
def fits(wagepan):
    common = dict(outcome="lwage", entity="nr", time="year", cov="classical")
    return {
        "pooled": fit(ModelSpec(regressors=BASE, estimator="pooled", effects="time", **common), wagepan),
        "re": fit(ModelSpec(regressors=BASE, estimator="re", effects="time", **common), wagepan),
        # FE with year dummies = two-way FE (the default effects of "twfe")
        "twfe": fit(ModelSpec(regressors=FE_REGRESSORS, estimator="twfe", **common), wagepan),
    }


@pytest.mark.parametrize("model", list(TABLE_14_2))
def test_table_14_2(fits, model):
    r = fits[model]
    for term, (coef, se) in TABLE_14_2[model].items():
        assert_printed(float(r.params[term]), coef, f"{model} {term} coefficient")
        assert_printed(float(r.std_errors[term]), se, f"{model} {term} standard error")


def test_fe_four_decimals(fits):
    r = fits["twfe"]
    assert round(float(r.params["union"]), 4) == 0.0800
    assert round(float(r.std_errors["union"]), 4) == 0.0193
    assert round(float(r.params["married"]), 4) == 0.0467
    assert round(float(r.std_errors["married"]), 4) == 0.0183


def test_fe_with_year_dummies_equals_fe_with_unit_effects_and_dummies(wagepan):
    # "fe" + effects="unit+time" is the same model as "twfe"
    common = dict(outcome="lwage", regressors=FE_REGRESSORS, entity="nr", time="year", cov="classical")
    a = fit(ModelSpec(estimator="fe", effects="unit+time", **common), wagepan)
    b = fit(ModelSpec(estimator="twfe", **common), wagepan)
    np.testing.assert_allclose(a.params, b.params, rtol=0, atol=1e-12)
    np.testing.assert_allclose(a.std_errors, b.std_errors, rtol=0, atol=1e-12)
    # residual degrees of freedom as in Stata's xtreg, fe: 4360 - 545 - 10
    assert a.raw.df_resid == 4360 - 545 - 10


def test_sample_sizes(fits):
    for r in fits.values():
        assert (r.nobs, r.n_units, r.n_periods) == (4360, 545, 8)


def test_re_theta(fits):
    # Wooldridge (2013), Example 14.4: "theta-hat = .643"
    theta = fits["re"].raw.theta.to_numpy().ravel()
    assert np.ptp(theta) == 0  # balanced panel: one theta
    assert_printed(float(theta[0]), "0.643", "RE theta")


def test_hausman_by_hand(fits):
    """H from the two fits' coefficients and covariances, computed independently with numpy."""
    fe, re = fits["twfe"], fits["re"]
    terms = list(FE_REGRESSORS)
    b_fe = fe.raw.params[terms].to_numpy()
    b_re = re.raw.params[terms].to_numpy()
    v_fe = fe.raw.cov.loc[terms, terms].to_numpy()
    v_re = re.raw.cov.loc[terms, terms].to_numpy()
    d = b_fe - b_re
    by_hand = float(d @ np.linalg.inv(v_fe - v_re) @ d)
    h = hausman(fe, re)
    assert h.terms == tuple(terms)
    assert h.df == 3
    assert h.positive_definite
    assert abs(h.statistic - by_hand) <= 1e-10 * max(1.0, abs(by_hand))
    # RE is rejected (union and marriage premia are larger in RE than in FE)
    assert h.pvalue < 1e-4
