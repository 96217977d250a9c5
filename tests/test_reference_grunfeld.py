"""Reference test: Grunfeld's investment data, against Baltagi (2013) as replicated by R's plm.

Data: ``statsmodels.datasets.grunfeld`` has 11 firms x 1935-1954 (it includes American
Steel, as AER::Grunfeld does); Baltagi (2013) and plm's ``Grunfeld`` use the other ten
firms, 200 observations. The values below are plm's printed output (6-8 significant
digits), which its test suite states replicate Baltagi (2013), *Econometric Analysis of
Panel Data*, 5th ed., Table 2.1 (one-way, p. 27), sec. 4.3.1 (Hausman, p. 81):

* [plm-est]  cran/plm, ``tests/test_Estimators.Rout.save`` (R 4.0 era, commit 5eebefb),
  ``summary(plm(inv ~ value + capital, data = Grunfeld, model = ...))``.
* [plm-fd]   cran/plm, ``tests/test_pdiff_fd.Rout.save`` (commit aa629f5), ``model = "fd"``
  and ``vcovHC(fd_id)``.
* [plm-haus] cran/plm, ``inst/tests/test_phtest_Hausman_regression.Rout.save`` (commit
  d0f6595), ``phtest`` and ``vcov(fe_grun)*1000``; Baltagi (2013) p. 81 prints 2.33.

plm's Swamy-Arora RE (``random.method = "swar"``) is linearmodels' ``RandomEffects`` with
``small_sample=True`` (the Baltagi-Chang estimator in unbalanced panels, checked on
``Grunfeld[1:199, ]`` below). plm's FD has an intercept; here FD has none, so a linear
trend (whose first difference is 1) stands in for it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from printed import assert_printed

from analysis.estimation import ModelSpec, fit, hausman, mundlak_test

from statsmodels.datasets import grunfeld as sm_grunfeld

BALTAGI_FIRMS = [  # plm's firm numbers 1..10, in this order
    "General Motors",
    "US Steel",
    "General Electric",
    "Chrysler",
    "Atlantic Refining",
    "IBM",
    "Union Oil",
    "Westinghouse",
    "Goodyear",
    "Diamond Match",
]
X = ("value", "capital")

# (coefficient, standard error) as printed by plm.
PLM_BALANCED = {
    # [plm-est] "Pooling Model"
    ("pooled", "none"): {
        "const": ("-42.7143694", "9.5116760"),
        "value": ("0.1155622", "0.0058357"),
        "capital": ("0.2306785", "0.0254758"),
    },
    # [plm-est] "Oneway (individual) effect Between Model"
    ("between", "none"): {
        "const": ("-8.527114", "47.515308"),
        "value": ("0.134646", "0.028745"),
        "capital": ("0.032031", "0.190938"),
    },
    # [plm-est] "Oneway (individual) effect Within Model"
    ("fe", "unit"): {"value": ("0.110124", "0.011857"), "capital": ("0.310065", "0.017355")},
    # [plm-est] "Oneway (individual) effect Random Effect Model (Swamy-Arora's transformation)"
    ("re", "none"): {
        "const": ("-57.834415", "28.898935"),
        "value": ("0.109781", "0.010493"),
        "capital": ("0.308113", "0.017180"),
    },
    # [plm-est] "Twoways effects Within Model"
    ("twfe", "unit+time"): {"value": ("0.117716", "0.013751"), "capital": ("0.357916", "0.022719")},
}
PLM_UNBALANCED = {  # [plm-est] the same models on Grunfeld[1:199, ] (Diamond Match 1954 dropped)
    ("between", "none"): {
        "const": ("-8.583114", "47.497067"),
        "value": ("0.134642", "0.028744"),
        "capital": ("0.032182", "0.190854"),
    },
    ("fe", "unit"): {"value": ("0.110125", "0.011888"), "capital": ("0.310064", "0.017401")},
    ("re", "none"): {
        "const": ("-57.846046", "28.969526"),
        "value": ("0.109784", "0.010519"),
        "capital": ("0.308110", "0.017224"),
    },
}




@pytest.fixture(scope="module")
def grunfeld() -> pd.DataFrame:
    g = sm_grunfeld.load_pandas().data
    assert g["firm"].nunique() == 11 and "American Steel" in set(g["firm"])
    g = g[g["firm"].isin(BALTAGI_FIRMS)].copy()
    g["firm_no"] = g["firm"].map({f: i + 1 for i, f in enumerate(BALTAGI_FIRMS)})
    g["year"] = g["year"].astype(int)
    g["trend"] = g["year"] - 1934
    return g.sort_values(["firm_no", "year"]).reset_index(drop=True)


def spec(estimator: str, effects: str, cov: str = "classical", controls=()) -> ModelSpec:
    return ModelSpec(
        outcome="invest",
        regressors=X,
        controls=controls,
        estimator=estimator,
        effects=effects,
        cov=cov,
        entity="firm_no",
        time="year",
    )


def test_baltagi_ten_firms(grunfeld):
    assert len(grunfeld) == 200
    assert grunfeld["firm_no"].nunique() == 10
    assert (grunfeld["year"].min(), grunfeld["year"].max()) == (1935, 1954)
    # first rows of plm's Grunfeld, as printed in [plm-fd]: firm 1 1935 and firm 2 1935
    gm, uss = grunfeld.iloc[0], grunfeld.iloc[20]
    assert (gm["invest"], gm["value"], gm["capital"]) == (317.6, 3078.5, 2.8)
    assert (uss["invest"], uss["value"], uss["capital"]) == (209.9, 1362.4, 53.8)


@pytest.mark.parametrize("model", list(PLM_BALANCED))
def test_balanced_estimators(grunfeld, model):
    r = fit(spec(*model), grunfeld)
    for term, (coef, se) in PLM_BALANCED[model].items():
        assert_printed(float(r.params[term]), coef, f"{model} {term}")
        assert_printed(float(r.std_errors[term]), se, f"{model} {term} s.e.")


def test_re_variance_components(grunfeld):
    # [plm-est] swar effects: idiosyncratic var 2784.46, individual 7089.80, theta 0.8612
    r = fit(spec("re", "none"), grunfeld)
    assert_printed(float(r.raw.variance_decomposition["Residual"]), "2784.46", "sigma2_e")
    assert_printed(float(r.raw.variance_decomposition["Effects"]), "7089.80", "sigma2_u")
    assert_printed(float(r.raw.theta.iloc[0, 0]), "0.8612", "theta")


@pytest.mark.parametrize("model", list(PLM_UNBALANCED))
def test_unbalanced_estimators(grunfeld, model):
    r = fit(spec(*model), grunfeld.iloc[:199])
    assert r.nobs == 199
    for term, (coef, se) in PLM_UNBALANCED[model].items():
        assert_printed(float(r.params[term]), coef, f"unbalanced {model} {term}")
        assert_printed(float(r.std_errors[term]), se, f"unbalanced {model} {term} s.e.")


def test_first_differences(grunfeld):
    # [plm-fd]: (Intercept) -1.8188902 (3.5655931); value 0.0897625 (0.0083636);
    # capital 0.2917667 (0.0537516); 190 observations used.
    r = fit(spec("fd", "none", controls=("trend",)), grunfeld)
    assert r.nobs_estimation == 190
    for term, (coef, se) in {
        "trend": ("-1.8188902", "3.5655931"),
        "value": ("0.0897625", "0.0083636"),
        "capital": ("0.2917667", "0.0537516"),
    }.items():
        assert_printed(float(r.params[term]), coef, f"fd {term}")
        assert_printed(float(r.std_errors[term]), se, f"fd {term} s.e.")


def test_first_differences_clustered(grunfeld):
    # [plm-fd] vcovHC(fd_id): Arellano, HC0, clustered by firm, no small-sample factor.
    # Ours is CR1: times G/(G-1) * (n-1)/(n-k) with n = 190 differences, k = 3, G = 10.
    r = fit(spec("fd", "none", cov="cluster-unit", controls=("trend",)), grunfeld)
    n, k, g = 190, 3, 10
    cr0 = r.cov / ((g / (g - 1)) * (n - 1) / (n - k))
    assert_printed(float(cr0.loc["value", "value"]), "0.0001641264", "var(value)")
    assert_printed(float(cr0.loc["capital", "capital"]), "0.021508668", "var(capital)")
    assert_printed(float(cr0.loc["value", "capital"]), "-0.001280677", "cov(value, capital)")
    assert_printed(float(cr0.loc["trend", "trend"]), "9.56375529", "var(intercept)")


def test_within_covariance(grunfeld):
    # [plm-haus] vcov(fe_grun) * 1000
    r = fit(spec("fe", "unit"), grunfeld)
    v = r.cov.loc[list(X), list(X)] * 1000
    assert_printed(float(v.loc["value", "value"]), "0.14058119769", "V11")
    assert_printed(float(v.loc["value", "capital"]), "-0.07746798877", "V12")
    assert_printed(float(v.loc["capital", "capital"]), "0.30117876659", "V22")


def test_hausman(grunfeld):
    # [plm-haus] phtest(fe_grun, re_grun): chisq = 2.3303669, df = 2, p-value = 0.3118654;
    # Baltagi (2013), p. 81: 2.33.
    fe = fit(spec("fe", "unit"), grunfeld)
    re = fit(spec("re", "none"), grunfeld)
    h = hausman(fe, re)
    assert h.df == 2 and h.positive_definite
    assert_printed(h.statistic, "2.3303669", "Hausman")
    assert_printed(h.pvalue, "0.3118654", "Hausman p")
    # by hand, independently of hausman()
    d = (fe.params[list(X)] - re.params[list(X)]).to_numpy()
    v = fe.cov.loc[list(X), list(X)].to_numpy() - re.cov.loc[list(X), list(X)].to_numpy()
    assert abs(h.statistic - float(d @ np.linalg.inv(v) @ d)) < 1e-10


def test_mundlak_equals_regression_based_hausman(grunfeld):
    # [plm-haus] phtest(..., method = "aux"): chisq = 2.1313662, p = 0.3444924, and with
    # vcov = vcovHC (Arellano HC0, clustered by firm): chisq = 8.2998366, p = 0.0157657.
    classical = mundlak_test(spec("fe", "unit"), grunfeld, cov="classical")
    assert classical.df == 2
    assert_printed(classical.statistic, "2.1313662", "Mundlak (classical)")
    assert_printed(classical.pvalue, "0.3444924", "Mundlak p")
    robust = mundlak_test(spec("fe", "unit"), grunfeld)  # cluster-unit, CR1
    n, k, g = 200, 5, 10  # const, value, capital, mean(value), mean(capital)
    cr0_stat = robust.statistic * (g / (g - 1)) * (n - 1) / (n - k)  # W scales with 1/V
    assert_printed(cr0_stat, "8.2998366", "Mundlak (cluster HC0)")
    # the CRE coefficients on x are the within estimates
    fe = fit(spec("fe", "unit"), grunfeld)
    np.testing.assert_allclose(robust.result.params[list(X)], fe.params[list(X)], rtol=1e-9)
