"""Tests of analysis/sensitivity.py.

References:
* Cinelli & Hazlett (2020, JRSS-B 82(1), Table/Section 5; sensemakr vignette): the Darfur
  example, treatment ``directlyharmed``: t = 4.18445 on 783 residual degrees of freedom, partial
  R2 of the treatment 2.19%, RV_{q=1} = 13.88%, RV_{q=1, alpha=0.05} = 7.63%.
* The robustness values are also checked against their definition (the omitted-variable-bias
  formula solved numerically), and the wild cluster bootstrap against an independent numpy
  implementation with explicit county dummies and full enumeration of the Rademacher draws, on a
  SYNTHETIC panel made here.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

from analysis import sensitivity as sv
from analysis.estimation import ModelSpec, fit


def test_darfur_published_values():
    t, dof = 4.18445, 783
    assert round(100 * sv.partial_r2(t, dof), 2) == 2.19
    assert round(100 * sv.robustness_value(t, dof), 2) == 13.88
    assert round(100 * sv.robustness_value(t, dof, alpha=0.05), 2) == 7.63
    s = sv.sensitivity_stats(0.09731582, 0.02325654, dof)
    assert round(s["t"], 3) == 4.184
    assert round(100 * s["rv_qa"], 2) == 7.63


def _bias(se, dof, r2yz, r2dz):
    return se * np.sqrt(dof) * np.sqrt(r2yz * r2dz / (1 - r2dz))


@pytest.mark.parametrize("t,dof,q", [(4.18445, 783, 1.0), (2.5, 9296, 1.0), (30.0, 500, 0.5), (60.0, 100, 1.0)])
def test_rv_solves_the_ovb_equations(t, dof, q):
    est, se = t, 1.0  # scale-free
    # RV_q: a confounder with R2 = r with both D and Y moves the estimate by q*|est|
    r = sv.robustness_value(t, dof, q)
    root = optimize.brentq(lambda x: _bias(se, dof, x, x) - q * abs(est), 1e-12, 1 - 1e-12)
    assert r == pytest.approx(root, rel=1e-8)
    # RV_{q,alpha}: the (1-alpha) interval of the adjusted estimate just reaches (1-q)*est
    ra = sv.robustness_value(t, dof, q, alpha=0.05)
    tcrit = stats.t.ppf(0.975, dof - 1)

    def gap(x):
        adj = abs(est) - _bias(se, dof, x, x)
        se_adj = se * np.sqrt((1 - x) / (1 - x)) * np.sqrt(dof / (dof - 1))
        return adj - tcrit * se_adj - (1 - q) * abs(est)

    if gap(1e-12) <= 0:
        assert ra == 0.0
    else:
        # at r2yz = r2dz = RV the bound is reached unless the extreme case (r2yz = 1) applies
        f_q, f_c = q * abs(t) / np.sqrt(dof), tcrit / np.sqrt(dof - 1)
        if f_q < 1 / f_c:
            assert gap(ra) == pytest.approx(0, abs=1e-7 * abs(est))
        else:
            # extreme branch: r2yz = 1 is needed; then r2dz = RV solves bias = est - (1-q) est
            assert ra == pytest.approx((f_q**2 - f_c**2) / (1 + f_q**2))
    assert 0 <= ra <= r


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="degrees of freedom"):
        sv.robustness_value(2.0, 1)
    with pytest.raises(ValueError, match="alpha"):
        sv.robustness_value(2.0, 100, alpha=1.5)
    with pytest.raises(ValueError, match="standard error"):
        sv.sensitivity_stats(1.0, 0.0, 100)


def synthetic_panel(n_states=8, per_state=5, seed=4):
    """SYNTHETIC county-wave panel, counties nested in states, state-level shocks."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_states):
        shock = rng.normal(size=4)
        for c in range(per_state):
            a = rng.normal()
            for t, year in enumerate((1997, 2005, 2009, 2014)):
                x = 0.5 * a + rng.normal() + 0.5 * shock[t]
                rows.append({"fips": f"{s:02d}{c:03d}", "state_fips": f"{s:02d}", "year": year, "x": x,
                             "w": rng.normal(), "y": a + 0.15 * x + shock[t] + rng.normal()})
    return pd.DataFrame(rows)


def _wcr_enumerated(df):
    """Independent WCR-11: explicit county and year dummies, Rademacher weights, all 2^G draws."""
    units = pd.get_dummies(df["fips"], dtype=float).to_numpy()
    years = pd.get_dummies(df["year"], dtype=float).to_numpy()[:, 1:]
    Xr = np.column_stack([units, years, df["w"]])  # restricted: beta_x = 0
    X = np.column_stack([df["x"], Xr])
    y = df["y"].to_numpy()
    g = pd.factorize(df["state_fips"])[0]
    G = g.max() + 1
    bread = np.linalg.pinv(X.T @ X)

    def tstat(yy):
        b = bread @ X.T @ yy
        e = yy - X @ b
        sc = np.array([X[g == k].T @ e[g == k] for k in range(G)])
        V = bread @ sc.T @ sc @ bread
        return b[0] / np.sqrt(V[0, 0])

    t0 = tstat(y)
    br = np.linalg.lstsq(Xr, y, rcond=None)[0]
    fitted, u = Xr @ br, y - Xr @ br
    tb = np.array([tstat(fitted + u * np.array(v)[g]) for v in itertools.product([-1, 1], repeat=G)])
    return t0, float(np.mean(np.abs(t0) < np.abs(tb)))


def test_wild_bootstrap_matches_enumeration():
    df = synthetic_panel()
    spec = ModelSpec(outcome="y", regressors=("x",), controls=("w",), estimator="twfe")
    got = sv.wild_cluster_bootstrap(spec, df, B=9999, seed=1)
    t0, p = _wcr_enumerated(df)
    assert got["B"] == 2**8 and got["n_clusters"] == 8
    assert got["p"] == pytest.approx(p, abs=1e-12)
    # the t-statistic is the state-clustered one up to the package's small-sample factor
    ref = fit(spec.replace(cov="cluster-state"), df)
    assert got["t"] == pytest.approx(float(ref.tstats["x"]), rel=0.05)
    assert np.sign(got["t"]) == np.sign(t0)


def test_wild_bootstrap_rejects_pooled():
    with pytest.raises(Exception, match="fe or twfe"):
        sv.wild_cluster_bootstrap(ModelSpec(outcome="y", regressors=("x",), estimator="pooled"), synthetic_panel())


def test_inference_variants_table():
    df = synthetic_panel()
    spec = ModelSpec(outcome="y", regressors=("x",), estimator="twfe")
    tab = sv.inference_variants(spec, df, B=999)
    assert list(tab.index) == [*sv.COV_VARIANTS.values(), "Wild cluster bootstrap (state)"]
    ref = fit(spec.replace(cov="cluster-state"), df)
    assert tab.loc["Clustered by state", "se"] == pytest.approx(float(ref.std_errors["x"]), rel=1e-12)
    assert tab["estimate"].nunique() == 1
    assert tab.loc["Clustered by state", "clusters"] == 8
