"""analysis.atlas: weighted OLS with robust and state-clustered errors, the horse race, the maps.

References (second libraries, tolerance 1e-8):
* statsmodels ``WLS(...).fit(cov_type="cluster", cov_kwds={"groups": g})`` (CR1 with
  G/(G-1)*(n-1)/(n-K)) and ``cov_type="HC1"``;
* pyfixest ``feols(..., weights=..., vcov={"CRV1": ...})`` (default ssc, the same CR1).
Both on SYNTHETIC data made here and on the real Social Capital Atlas panel.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from analysis import atlas
from analysis.estimation import SpecificationError

TOL = 1e-8


def _synthetic(seed: int = 7) -> pd.DataFrame:
    """SYNTHETIC: 600 'counties' in 30 'states' with state-level shocks and population weights."""
    rng = np.random.default_rng(seed)
    n, s = 600, 30
    state = rng.integers(0, s, n)
    shock = rng.normal(size=s)[state]
    x1 = rng.normal(size=n) + 0.5 * shock
    x2 = rng.normal(size=n)
    pop = np.exp(rng.normal(10, 1.2, n)).round()
    y = 0.4 * x1 - 0.3 * x2 + shock + rng.normal(size=n) * (1 + np.abs(x1))
    return pd.DataFrame({"state_fips": [f"{v:02d}" for v in state], "x1": x1, "x2": x2, "pop": pop, "y": y})


@functools.cache
def _atlas() -> pd.DataFrame:
    # `make test` builds the data first; a missing panel is a failure, never a skip.
    from analysis.panels import load

    return atlas.prepare_atlas(load("us_social_capital_atlas"))


def _statsmodels(d, y, xs, w, cov, cluster=None):
    d = d.dropna(subset=[y, *xs, w] + ([cluster] if cluster else []))
    X = sm.add_constant(d[xs].astype(float), prepend=True).rename(columns={"const": "const"})
    m = sm.WLS(d[y].astype(float), X, weights=d[w].astype(float))
    if cov == "cluster":
        return m.fit(cov_type="cluster", cov_kwds={"groups": pd.factorize(d[cluster])[0]}, use_t=True)
    return m.fit(cov_type=cov)


def _atlas_race_frame():
    d = atlas.quality_sample(_atlas(), "log_income_p50", (1, 2))
    ms = list(atlas.MEASURES)
    d = d.dropna(subset=[*ms, "pop2018"])
    return d, ms


@pytest.mark.parametrize("source", ["synthetic", "atlas"])
def test_wls_cluster_matches_statsmodels(source):
    if source == "synthetic":
        d, y, xs, w = _synthetic(), "y", ["x1", "x2"], "pop"
    else:
        (d, xs), y, w = _atlas_race_frame(), "log_income_p50", "pop2018"
    ours = atlas.ols(d, y, xs, weights=w, cov="cluster", cluster="state_fips")
    ref = _statsmodels(d, y, xs, w, "cluster", "state_fips")
    np.testing.assert_allclose(ours.params.to_numpy(), ref.params.to_numpy(), rtol=TOL, atol=0)
    np.testing.assert_allclose(ours.std_errors.to_numpy(), ref.bse.to_numpy(), rtol=TOL, atol=0)
    assert ours.nobs == int(ref.nobs)
    assert ours.n_clusters == d["state_fips"].nunique()
    # with use_t, statsmodels uses t(G-1) for clustered inference, as we do
    np.testing.assert_allclose(ours.pvalues.to_numpy(), ref.pvalues.to_numpy(), rtol=1e-6)


@pytest.mark.parametrize("source", ["synthetic", "atlas"])
def test_wls_cluster_matches_pyfixest(source):
    import pyfixest as pf
    if source == "synthetic":
        d, y, xs, w = _synthetic(), "y", ["x1", "x2"], "pop"
    else:
        (d, xs), y, w = _atlas_race_frame(), "log_income_p50", "pop2018"
    d = d[[y, *xs, w, "state_fips"]].dropna().astype({w: float}).reset_index(drop=True)
    ours = atlas.ols(d, y, xs, weights=w, cov="cluster", cluster="state_fips")
    ref = pf.feols(f"{y} ~ {' + '.join(xs)}", data=d, weights=w, vcov={"CRV1": "state_fips"})
    np.testing.assert_allclose(ours.params.to_numpy(), ref.coef().to_numpy(), rtol=TOL, atol=0)
    np.testing.assert_allclose(ours.std_errors.to_numpy(), ref.se().to_numpy(), rtol=TOL, atol=0)


@pytest.mark.parametrize("cov", ["HC1", "classical"])
def test_wls_hc1_and_classical_match_statsmodels(cov):
    d = _synthetic(11)
    ours = atlas.ols(d, "y", ["x1", "x2"], weights="pop", cov=cov)
    ref = _statsmodels(d, "y", ["x1", "x2"], "pop", "nonrobust" if cov == "classical" else cov)
    np.testing.assert_allclose(ours.params.to_numpy(), ref.params.to_numpy(), rtol=TOL)
    np.testing.assert_allclose(ours.std_errors.to_numpy(), ref.bse.to_numpy(), rtol=TOL)
    assert ours.r2 == pytest.approx(ref.rsquared, rel=1e-10)


def test_standardised_single_regressor_is_weighted_correlation():
    d = _synthetic(3)
    z = atlas.standardise(d, ["y", "x1"], "pop")
    z["pop"], z["state_fips"] = d["pop"], d["state_fips"]
    r = atlas.ols(z, "y", ["x1"], weights="pop", cov="cluster", cluster="state_fips")
    c = np.cov(d["y"], d["x1"], aweights=d["pop"])
    rho = c[0, 1] / np.sqrt(c[0, 0] * c[1, 1])
    assert float(r.params["x1"]) == pytest.approx(rho, abs=1e-12)
    assert np.average(z["x1"], weights=d["pop"]) == pytest.approx(0, abs=1e-12)


def test_horse_race_shape_and_common_sample():
    t = atlas.horse_race(_atlas(), "share_employed")
    assert len(t) == 2 * len(atlas.MEASURES)
    assert t["nobs"].nunique() == 1  # one common sample for every model
    together = t[t["model"] == "together"]
    assert together["r2"].nunique() == 1



def _synthetic_race(seed: int = 11) -> pd.DataFrame:
    """SYNTHETIC Atlas-like frame: 'exposure' drives income; 'bias' lowers it a little; 'vol' is noise."""
    d = _synthetic(seed)
    rng = np.random.default_rng(seed)
    n = len(d)
    exposure = rng.normal(1.0, 0.2, n)
    bias = rng.normal(0.06, 0.05, n) + 0.1 * (exposure - 1.0)
    return d.assign(high_ses_exposure=exposure, friending_bias=bias, volunteering_rate=rng.uniform(0.02, 0.2, n),
                    log_income_p50=10 + 1.5 * exposure - 2.0 * bias + rng.normal(0, 0.2, n), income_quality=1)


def test_horse_race_controls_match_statsmodels_on_standardised_data():
    d = _synthetic_race()
    ms, ctrl = ["friending_bias", "volunteering_rate"], ["high_ses_exposure"]
    t = atlas.horse_race(d, "log_income_p50", ms, quality=(1,), weights="pop", controls=ctrl)
    z = atlas.standardise(d, ["log_income_p50", *ms, *ctrl], "pop").assign(pop=d["pop"], state_fips=d["state_fips"])
    for model, xs in (("alone", ["friending_bias"]), ("together", ms)):
        ref = _statsmodels(z, "log_income_p50", [*xs, *ctrl], "pop", "cluster", "state_fips")
        row = t[(t["model"] == model) & (t["measure"] == "friending_bias")].iloc[0]
        assert row["coef"] == pytest.approx(float(ref.params["friending_bias"]), abs=TOL)
        assert row["se"] == pytest.approx(float(ref.bse["friending_bias"]), abs=TOL)
        assert row["controls"] == "high_ses_exposure"
    assert len(t) == 4 and "high_ses_exposure" not in set(t["measure"])  # controls are not reported
    with pytest.raises(SpecificationError, match="both a measure and a control"):
        atlas.horse_race(d, "log_income_p50", ms, quality=(1,), weights="pop", controls=["volunteering_rate"])


def test_friending_bias_counts_as_better_when_negative():
    d = _synthetic_race()
    t = atlas.horse_race_table(d, ["log_income_p50"], quality=(1,), measures=["friending_bias"], weights="pop",
                               controls=["high_ses_exposure"])
    row = t[t["model"] == "alone"].iloc[0]
    assert row["coef"] < 0 and bool(row["better"])  # less bias, higher income: the favourable direction
    counts = atlas.significance_counts(t)
    assert counts.loc[("alone", "friending_bias"), "sig_better"] == int(row["p"] < 0.05) == 1


def test_significance_counts_by_hand():
    t = pd.DataFrame({"variant": ["v"] * 4, "model": ["alone"] * 4, "measure": ["a", "a", "b", "b"],
                      "better": [True, False, True, False], "p": [0.01, 0.01, 0.2, 0.04]})
    c = atlas.significance_counts(t)
    assert c.loc[("v", "alone", "a")].to_dict() == {"n": 2, "better": 1, "sig_better": 1, "sig_worse": 1}
    assert c.loc[("v", "alone", "b")].to_dict() == {"n": 2, "better": 1, "sig_better": 0, "sig_worse": 1}



def test_race_scorecard_counts_by_hand():
    # a hand-made variants table: one outcome, the entrant and two civic measures
    rows = []
    for variant, entrant, ctrl in (("A", "economic_connectedness", "none"), ("B", "friending_bias", "high_ses_exposure")):
        for model, measure, better, p in (("alone", entrant, True, 0.01), ("alone", "volunteering_rate", False, 0.01),
                                          ("alone", "associations_per_10k", True, 0.5),
                                          ("together", entrant, True, 0.2), ("together", "volunteering_rate", False, 0.03),
                                          ("together", "associations_per_10k", False, 0.001)):
            rows.append({"variant": variant, "outcome": "share_employed", "model": model, "measure": measure,
                         "better": better if variant == "A" else not better, "p": p, "controls": ctrl})
    sc = atlas.race_scorecard(pd.DataFrame(rows))
    assert sc.loc["A"].to_dict() == {"entrant": "economic_connectedness", "held_fixed": "none", "n_outcomes": 1,
                                     "entrant_alone_better": 1, "entrant_alone_worse": 0, "civic_together_better": 0,
                                     "civic_together_worse": 2, "assn_together_worse": 1}
    assert sc.loc["B", "entrant_alone_worse"] == 1 and sc.loc["B", "civic_together_better"] == 2
    assert sc.loc["B", "assn_together_worse"] == 0 and sc.loc["B", "held_fixed"] == "high_ses_exposure"
    bad = pd.DataFrame(rows).assign(measure=lambda t: t["measure"].replace({"volunteering_rate": "clustering"}))
    with pytest.raises(SpecificationError, match="exactly one non-civic measure"):
        atlas.race_scorecard(bad)

def test_atlas_decomposition_and_chapter_variant():
    d = _atlas()
    # Chetty et al. (2022b): connectedness in groups = exposure x (1 - friending bias), as built
    gap = d["economic_connectedness_groups"] - d["high_ses_exposure"] * (1 - d["friending_bias"])
    assert gap.abs().max() < 2e-5 and gap.notna().sum() == len(d) - 77
    v = atlas.horse_race_variants(d, {"EC": atlas.RACE_VARIANTS["EC"]}, outcomes=["share_employed"])
    base = atlas.horse_race_table(d, ["share_employed"])
    np.testing.assert_allclose(v["coef"].to_numpy(), base["coef"].to_numpy(), rtol=0, atol=1e-14)
    assert list(v["measure"]) == list(base["measure"]) and (v["variant"] == "EC").all()

def test_quality_sample_drops_pooled_values():
    d = _atlas()
    q = atlas.quality_sample(d, "low_birth_weight_share", (1, 2))
    assert set(q["low_birth_weight_quality"].unique()) <= {1, 2}
    # quality-3 low birth weight values repeat within states; quality 1-2 ones do not
    rep3 = atlas.repeated_within_state(d[d["low_birth_weight_quality"] == 3], "low_birth_weight_share")
    assert rep3.mean() > 0.99
    assert atlas.repeated_within_state(q, "low_birth_weight_share").mean() < 0.01


def test_bad_input_raises_clear_errors():
    d = _synthetic()
    with pytest.raises(SpecificationError, match="'x3'"):
        atlas.ols(d, "y", ["x3"])
    with pytest.raises(SpecificationError, match="needs a cluster column"):
        atlas.ols(d, "y", ["x1"], cov="cluster")
    with pytest.raises(SpecificationError, match="Unknown covariance"):
        atlas.ols(d, "y", ["x1"], cov="HC3")
    bad = d.assign(pop=d["pop"].where(d.index > 5, 0.0))
    with pytest.raises(SpecificationError, match="positive"):
        atlas.ols(bad, "y", ["x1"], weights="pop")
    with pytest.raises(SpecificationError, match="rank-deficient"):
        atlas.ols(d.assign(x3=2 * d["x1"]), "y", ["x1", "x3"])
    with pytest.raises(SpecificationError, match="at least two clusters"):
        atlas.ols(d.assign(state_fips="01"), "y", ["x1"], cov="cluster", cluster="state_fips")
    with pytest.raises(SpecificationError, match="no variation"):
        atlas.standardise(d.assign(c=1.0), ["c"])
    with pytest.raises(SpecificationError, match="Unknown Atlas outcome"):
        atlas.quality_sample(d, "poverty_rate")


def test_albers_origin_and_county_geometry():
    x, y = atlas._albers(np.array([-96.0]), np.array([23.0]))
    assert abs(x[0]) < 1e-12 and abs(y[0]) < 1e-12
    import _plotly_geo  # noqa: F401  (pinned: the county boundaries ship in it)
    import shapefile  # noqa: F401
    geo = atlas.county_geometry("county")
    # Census 2016 cartographic boundary file: 3,108 counties and equivalents in the 48 states + DC
    assert len(geo) == 3108
    assert "06037" in geo and "02020" not in geo and "15003" not in geo
    states = atlas.county_geometry("state")
    assert len(states) == 49
