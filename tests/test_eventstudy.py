"""Tests of analysis.eventstudy: events, two-stage DiD, TWFE event studies, the series break.

References:

* a hand two-stage computation in dense numpy (dummy matrices, ``lstsq``), independent of
  the sparse solver of the module: point estimates to 1e-8;
* pyfixest 0.60 ``did2s`` (a second library, a translation of the R ``did2s`` package):
  estimates and GMM standard errors to 1e-8;
* the R ``did2s`` README (Butts & Gardner, v1.1.0, "Estimate Two-stage
  Difference-in-Differences"): static model on ``df_het`` (shipped with pyfixest as
  ``pyfixest/did/data/df_het.csv``), first stage ``~ 0 | state + year``, clustered by
  state: ``treat = TRUE 2.152 (0.0476)``, at the printed precision;
* pyfixest ``feols`` for the county-by-segment fixed-effects model fitted through
  ``ModelSpec``/``fit``.

All panels built here are SYNTHETIC test fixtures (labelled as such), except ``df_het``,
which is the simulated example data of the did2s package.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

import pyfixest as pf
from analysis.estimation import fit
from analysis.eventstudy import (
    EventStudyError,
    add_segments,
    define_events,
    did2s,
    event_study,
    pretrend_test,
    segment_fe_spec,
)
from tests.printed import assert_printed

pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword", "ignore::UserWarning")

TOL = 1e-8


def synthetic_staggered(
    n_units: int = 90,
    years=range(2001, 2011),
    cohorts=(0, 2004, 2006, 2008),
    effect=lambda g, e: 0.0,
    seed: int = 7,
    noise: float = 1.0,
) -> pd.DataFrame:
    """SYNTHETIC staggered panel: y = unit effect + year effect + effect(cohort, e) + noise.

    Every unit has at least two untreated periods (earliest cohort is 3 years after the start)."""
    rng = np.random.default_rng(seed)
    years = list(years)
    unit = np.repeat(np.arange(n_units), len(years))
    year = np.tile(years, n_units)
    g = np.repeat(np.asarray(cohorts)[np.arange(n_units) % len(cohorts)], len(years))
    alpha = np.repeat(rng.normal(0, 2, n_units), len(years))
    lam = dict(zip(years, rng.normal(0, 1, len(years))))
    e = np.where(g > 0, year - g, -999)
    tau = np.array([effect(gi, ei) if (gi > 0 and ei >= 0) else 0.0 for gi, ei in zip(g, e)])
    y = alpha + np.array([lam[t] for t in year]) + tau + rng.normal(0, noise, unit.size)
    d = pd.DataFrame({"unit": unit, "year": year, "cohort": g, "y": y, "tau": tau})
    d["state"] = d["unit"] % 9
    return d


def hand_two_stage(d: pd.DataFrame, window=(-4, 3)) -> pd.Series:
    """Independent dense computation: OLS of y on all unit and year dummies (pinv, so no
    reference level is chosen) on the untreated rows; residualise every row; regress on the
    binned event-time dummies without a constant."""
    treated = (d["cohort"] > 0) & (d["year"] >= d["cohort"])
    U = pd.get_dummies(d["unit"]).to_numpy(float)
    T = pd.get_dummies(d["year"]).to_numpy(float)
    X1 = np.hstack([U, T])
    y = d["y"].to_numpy(float)
    a = np.linalg.pinv(X1[~treated.to_numpy()]) @ y[~treated.to_numpy()]
    u1 = y - X1 @ a
    rel = np.clip(np.where(d["cohort"] > 0, d["year"] - d["cohort"], np.nan), *window)
    cols, names = [], []
    for e in range(window[0], window[1] + 1):
        col = (rel == e).astype(float)
        if col.sum():
            cols.append(col)
            names.append(e)
    X2 = np.column_stack(cols)
    b = np.linalg.lstsq(X2, u1, rcond=None)[0]
    return pd.Series(b, index=pd.Index(names, name="event_time"))


def dynamic_effect(g, e):
    return 1.0 + 0.5 * e + (0.8 if g == 2004 else 0.0)


# ----------------------------------------------------------------------------------------
# Two-stage DiD against a hand computation, pyfixest and the R did2s README
# ----------------------------------------------------------------------------------------


def test_did2s_matches_hand_two_stage():
    d = synthetic_staggered(effect=dynamic_effect)
    r = event_study(d, "y", cohort="cohort", unit="unit", time="year", estimator="did2s")
    hand = hand_two_stage(d)
    np.testing.assert_allclose(r.coefs["estimate"].to_numpy(), hand.reindex(r.coefs.index).to_numpy(), atol=TOL, rtol=0)
    assert list(r.coefs.index) == [-4, -3, -2, -1, 0, 1, 2, 3]


def test_did2s_matches_pyfixest_estimates_and_standard_errors():
    d = synthetic_staggered(effect=dynamic_effect)
    r = event_study(d, "y", cohort="cohort", unit="unit", time="year", estimator="did2s")
    x = d.copy()
    x["treat"] = (x["cohort"] > 0) & (x["year"] >= x["cohort"])
    x["rel"] = np.clip(np.where(x["cohort"] > 0, x["year"] - x["cohort"], np.nan), -4, 3)
    names = []
    for e in range(-4, 4):
        name = f"e{e + 10}"
        x[name] = (x["rel"] == e).astype(float)
        names.append(name)
    pfit = pf.did2s(
        x, yname="y", first_stage="~ 0 | unit + year", second_stage="~ " + " + ".join(names),
        treatment="treat", cluster="unit",
    )
    np.testing.assert_allclose(r.coefs["estimate"].to_numpy(), pfit.coef()[names].to_numpy(), atol=TOL, rtol=0)
    np.testing.assert_allclose(r.coefs["std_error"].to_numpy(), pfit.se()[names].to_numpy(), atol=TOL, rtol=1e-8)
    # static ATT, clustered by state this time
    r2 = event_study(d, "y", cohort="cohort", unit="unit", time="year", estimator="did2s", cluster="state")
    ps = pf.did2s(x, yname="y", first_stage="~ 0 | unit + year", second_stage="~ i(treat)", treatment="treat",
                  cluster="state")
    key = [k for k in ps.coef().index if "True" in k][0]
    assert abs(r2.att - ps.coef()[key]) < TOL
    assert abs(r2.att_se - ps.se()[key]) < TOL


def test_did2s_reproduces_r_did2s_readme_df_het():
    path = os.path.join(os.path.dirname(pf.__file__), "did", "data", "df_het.csv")
    df_het = pd.read_csv(path)
    r = event_study(df_het, "dep_var", cohort="g", unit="unit", time="year", estimator="did2s",
                    fe=("state", "year"), cluster="state")
    assert_printed(r.att, "2.152", "did2s static ATT on df_het")
    assert_printed(r.att_se, "0.0476", "did2s static ATT standard error on df_het")


def test_twfe_event_study_matches_pyfixest_i_syntax():
    d = synthetic_staggered(effect=dynamic_effect)
    r = event_study(d, "y", cohort="cohort", unit="unit", time="year", estimator="twfe")
    x = d.copy()
    # never-treated units coded as the reference event time, the usual i() idiom
    x["rel"] = np.clip(np.where(x["cohort"] > 0, x["year"] - x["cohort"], -1), -4, 3).astype(int)
    p = pf.feols("y ~ i(rel, ref=-1) | unit + year", data=x, vcov={"CRV1": "unit"})
    got = p.coef()
    for e in r.coefs.index:
        key = [k for k in got.index if k.endswith(f"::{e}") or k.endswith(f"[T.{e}]")][0]
        assert abs(r.coefs.loc[e, "estimate"] - got[key]) < TOL
        assert abs(r.coefs.loc[e, "std_error"] - p.se()[key]) < TOL


# ----------------------------------------------------------------------------------------
# Behaviour on synthetic panels with known truth
# ----------------------------------------------------------------------------------------


def test_no_effect_and_parallel_trends_gives_zero():
    d = synthetic_staggered(n_units=2000, effect=lambda g, e: 0.0, seed=11, noise=0.5)
    r = event_study(d, "y", cohort="cohort", unit="unit", time="year", estimator="did2s")
    assert abs(r.att) < 3 * r.att_se and abs(r.att) < 0.03
    assert (r.coefs["estimate"].abs() < 0.06).all()
    assert pretrend_test(r).pvalue > 0.01


def test_known_heterogeneous_effect_recovered_by_did2s_not_twfe():
    # no never-treated units (the 2011 cohort is treated after the panel ends), effects growing
    # with event time and differing by cohort
    d = synthetic_staggered(n_units=1500, cohorts=(2004, 2006, 2008, 2011), effect=dynamic_effect, seed=3, noise=0.3)
    true_att = d.loc[(d["cohort"] <= d["year"]), "tau"].mean()
    r = event_study(d, "y", cohort="cohort", unit="unit", time="year", estimator="did2s")
    tw = event_study(d, "y", cohort="cohort", unit="unit", time="year", estimator="twfe")
    assert abs(r.att - true_att) < 0.03
    assert abs(tw.att - true_att) > 0.5  # the static TWFE coefficient is badly biased here
    # event-time truth (within the window; e >= 3 pooled)
    rel = np.clip(d["year"] - d["cohort"], -4, 3)  # the 2011 cohort never reaches rel >= 0
    truth = d.assign(rel=rel).loc[rel >= 0].groupby("rel")["tau"].mean()
    np.testing.assert_allclose(r.post["estimate"].to_numpy(), truth.to_numpy(), atol=0.05)


def test_pretrend_test_is_the_wald_statistic():
    d = synthetic_staggered(effect=dynamic_effect)
    r = event_study(d, "y", cohort="cohort", unit="unit", time="year", estimator="did2s")
    t = pretrend_test(r)
    b = r.coefs.loc[[-4, -3, -2, -1], "estimate"].to_numpy()
    V = r.cov.loc[[-4, -3, -2, -1], [-4, -3, -2, -1]].to_numpy()
    assert abs(t.statistic - b @ np.linalg.inv(V) @ b) < 1e-8 and t.df == 4


def test_pretrend_test_detects_a_pre_trend():
    # SYNTHETIC: treated units drift upwards before their event (no effect after)
    d = synthetic_staggered(n_units=600, effect=lambda g, e: 0.0, seed=5, noise=0.3)
    lead = np.where(d["cohort"] > 0, np.clip(d["year"] - d["cohort"], -10, 0), 0)
    d["y"] = d["y"] + 0.3 * lead
    assert pretrend_test(event_study(d, "y", cohort="cohort", unit="unit", time="year")).pvalue < 1e-6


# ----------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------


def test_too_few_periods():
    d = synthetic_staggered(years=range(2001, 2003), cohorts=(0, 2002))
    with pytest.raises(EventStudyError, match="Too few periods"):
        event_study(d, "y", cohort="cohort", unit="unit", time="year")


def test_no_events():
    d = synthetic_staggered(cohorts=(0,))
    with pytest.raises(EventStudyError, match="No events"):
        event_study(d, "y", cohort="cohort", unit="unit", time="year")


def test_events_only_in_one_cohort():
    d = synthetic_staggered(cohorts=(0, 2006))
    with pytest.raises(EventStudyError, match="only in 1 cohort"):
        event_study(d, "y", cohort="cohort", unit="unit", time="year")
    r = event_study(d, "y", cohort="cohort", unit="unit", time="year", min_cohorts=1)  # allowed on request
    assert r.cohorts == (2006,)


def test_other_bad_input():
    d = synthetic_staggered()
    with pytest.raises(EventStudyError, match="Unknown estimator"):
        event_study(d, "y", cohort="cohort", unit="unit", time="year", estimator="callaway")
    with pytest.raises(EventStudyError, match="not in the data"):
        event_study(d, "income", cohort="cohort", unit="unit", time="year")
    bad = d.copy()
    bad.loc[0, "cohort"] = 2008
    with pytest.raises(EventStudyError, match="constant within"):
        event_study(bad, "y", cohort="cohort", unit="unit", time="year")
    with pytest.raises(EventStudyError, match="window"):
        event_study(d, "y", cohort="cohort", unit="unit", time="year", window=(-1, 3))
    with pytest.raises(EventStudyError, match="no untreated observation"):
        d2 = d.assign(treated=True, one=1.0)
        did2s(d2, "y", "treated", ["one"], ("unit", "year"), "unit")


# ----------------------------------------------------------------------------------------
# Events and the series break (SYNTHETIC annual panel)
# ----------------------------------------------------------------------------------------


def _annual(rows):
    """SYNTHETIC annual panel: rows of (fips, year, density); population 100,000."""
    d = pd.DataFrame(rows, columns=["fips", "year", "associations_per_10k"])
    d["population"] = 100_000
    d["post_2017_break"] = d["year"] >= 2017
    return d


def _steady(fips, jumps=None):
    jumps = jumps or {}
    level, rows = 10.0, []
    for y in range(2014, 2023):
        level *= jumps.get(y, 1.0)
        rows.append((fips, y, level))
    return rows


def test_define_events_within_segments_only():
    rows = _steady("A", {2017: 1.5})  # a jump across the break only: not an event
    rows += _steady("B", {2016: 1.3, 2020: 1.3})  # first event 2016
    rows += _steady("C", {2019: 0.7})  # a fall
    rows += _steady("D", {2018: 1.05})  # too small
    for k in range(20):  # quiet counties with small wiggles give the size class its SD
        rows += [(f"Q{k}", y, 10.0 * (1 + 0.01 * ((y + k) % 3 - 1))) for y in range(2014, 2023)]
    d = _annual(rows)
    rise = define_events(d, "rise", size_classes=1)
    fall = define_events(d, "fall", size_classes=1)
    assert rise.cohort["A"] == 0 and rise.cohort["B"] == 2016 and rise.cohort["C"] == 0 and rise.cohort["D"] == 0
    assert fall.cohort["C"] == 2019 and fall.cohort["B"] == 0
    assert not ((rise.changes["year"] == 2017).any())  # no change is computed across the break
    with pytest.raises(EventStudyError, match="direction"):
        define_events(d, "up")


def test_county_by_segment_fixed_effects_match_pyfixest():
    # SYNTHETIC panel with a level break that differs by county
    rng = np.random.default_rng(1)
    n = 150
    d = pd.DataFrame({"fips": np.repeat([f"{i:05d}" for i in range(n)], 9), "year": np.tile(range(2014, 2023), n)})
    d["post_2017_break"] = d["year"] >= 2017
    shift = np.repeat(rng.normal(0, 1, n), 9) * d["post_2017_break"]
    d["x"] = rng.normal(size=len(d)) + shift
    d["y"] = 0.4 * d["x"] + 2 * shift + np.repeat(rng.normal(size=n), 9) + rng.normal(size=len(d))
    d = d.drop(index=rng.choice(d.index, 80, replace=False))
    spec, data = segment_fe_spec(d, "y", "x")
    ours = fit(spec, data)
    assert ours.nobs == len(d)
    p = pf.feols("y ~ x | fips_segment + year", data=add_segments(d), vcov={"CRV1": "fips"}, fixef_rm="none")
    assert abs(ours.params["x"] - p.coef()["x"]) < TOL
    # pyfixest counts all 8 free year levels; with county-by-segment effects one of them is
    # redundant (the segment is spanned by the county-segment effects) and we count 7: the
    # clustered variances then differ by exactly (n - K) / (n - K - 1) in the factor (n-1)/(n-K).
    n, k_ours = ours.nobs, 1 + 7  # x and the 7 identified year dummies (county-segments nested)
    factor = (n - k_ours) / (n - k_ours - 1)
    # (to 1e-6 relative: pyfixest demeans by alternating projections to a tolerance)
    assert abs(ours.std_errors["x"] * np.sqrt(factor) / p.se()["x"] - 1) < 1e-6
    assert abs(ours.std_errors["x"] / p.se()["x"] - 1) > 1e-4  # the count does matter
    assert ours.n_clusters == (d["fips"].nunique(),)


def test_quality_robustness_drops_low_quality_rows():
    """Synthetic annual panel (labelled): quality-3 rows carry a state-level value that hides a true
    within-county slope of 1; on quality <= 2 rows the slope is recovered, on all rows it is attenuated."""
    from analysis.eventstudy import quality_robustness

    rng = np.random.default_rng(11)
    n, years = 200, list(range(2014, 2023))
    d = pd.DataFrame({"fips": np.repeat([f"{i:05d}" for i in range(n)], len(years)),
                      "year": np.tile(years, n)})
    d["post_2017_break"] = d["year"] >= 2017
    d["density_sd"] = rng.normal(size=len(d))
    d["share_employed"] = d["density_sd"] + rng.normal(scale=0.1, size=len(d))
    d["share_employed_quality"] = np.where(d["fips"].astype(int) % 2 == 0, 3, 1)  # half the counties
    d.loc[d["share_employed_quality"] == 3, "share_employed"] = 0.0  # a shared, non-county value
    out = quality_robustness(d, ["share_employed"])
    assert abs(out.loc[("share_employed", "quality <= 2"), "estimate"] - 1) < 0.05
    assert out.loc[("share_employed", "all"), "estimate"] < 0.7
    assert out.loc[("share_employed", "quality <= 2"), "nobs"] == len(d) // 2
    with pytest.raises(EventStudyError, match="No quality flag"):
        quality_robustness(d, ["violent_crime_per_100k"])


# ----------------------------------------------------------------------------------------
# Shared work (issue 17): the same numbers as separate computations
# ----------------------------------------------------------------------------------------


def test_event_study_shares_the_first_stage_with_the_static_model():
    """event_study fits Gardner's first stage once for the event-time and the static second
    stage; each equals its own did2s call (identical arithmetic, so identical numbers)."""
    from analysis.eventstudy import _prepare, _term

    d = synthetic_staggered(effect=dynamic_effect)
    r = event_study(d, "y", cohort="cohort", unit="unit", time="year", estimator="did2s")
    p, _ = _prepare(d, "y", "cohort", "unit", "year", (-4, 3), 2, fe=("unit", "year"), extra=("unit",))
    terms = [_term(e) for e in range(-4, 4)]
    es = did2s(p, "y", "treated", terms, ("unit", "year"), "unit")
    np.testing.assert_array_equal(r.coefs["estimate"].to_numpy(), es.params.to_numpy())
    np.testing.assert_array_equal(r.cov.to_numpy(), es.cov.to_numpy())
    static = did2s(p.assign(treated_f=p["treated"].astype(float)), "y", "treated", ["treated_f"], ("unit", "year"), "unit")
    assert r.att == float(static.params.iloc[0])
    assert r.att_se == float(np.sqrt(static.cov.iloc[0, 0]))


def test_segment_fit_is_remembered_by_content():
    from analysis.eventstudy import quality_robustness, segment_fit

    rng = np.random.default_rng(4)
    n, years = 60, list(range(2014, 2023))
    d = pd.DataFrame({"fips": np.repeat([f"{i:05d}" for i in range(n)], len(years)), "year": np.tile(years, n)})
    d["post_2017_break"] = d["year"] >= 2017
    d["density_sd"] = rng.normal(size=len(d))
    d["share_employed"] = 0.3 * d["density_sd"] + rng.normal(size=len(d))
    d["share_employed_quality"] = 1
    r = segment_fit(d, "share_employed", "density_sd")
    ref = fit(*segment_fe_spec(d, "share_employed", "density_sd"))
    pd.testing.assert_series_equal(r.params, ref.params)
    pd.testing.assert_series_equal(r.std_errors, ref.std_errors)
    assert segment_fit(d.copy(), "share_employed", "density_sd") is r  # equal content: the same fit
    changed = d.copy()
    changed.loc[3, "share_employed"] += 1.0
    assert segment_fit(changed, "share_employed", "density_sd") is not r
    q = quality_robustness(d, ["share_employed"])
    assert q.loc[("share_employed", "all"), "estimate"] == float(ref.params["density_sd"])
    with pytest.raises(EventStudyError, match="not in the data"):
        segment_fit(d, "nope", "density_sd")


# ----------------------------------------------------------------------------------------
# Figures (issue 15: at most 10 in wide, panels wrapped into rows)
# ----------------------------------------------------------------------------------------


def test_event_time_panels_wrap_into_two_columns():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from analysis import plots
    from analysis.eventstudy import event_time_panels, event_time_plot

    d = synthetic_staggered(effect=dynamic_effect)
    r = event_study(d, "y", cohort="cohort", unit="unit", time="year", estimator="did2s")
    # three panels asked for in three columns: a 2 x 2 grid, 10 in wide, the last cell hidden
    fig = event_time_panels({f"panel {k}": {"Two-stage DiD": r} for k in range(3)}, ncols=3)
    assert tuple(fig.get_size_inches()) == (plots.MAX_WIDTH_IN, 2 * 3.6)
    assert len(fig.axes) == 4 and [a.get_visible() for a in fig.axes] == [True, True, True, False]
    plt.close(fig)
    # two panels side by side, one panel alone in a 5 in column
    for n, width in ((2, 10.0), (1, 5.0)):
        fig = event_time_panels({f"panel {k}": {"Two-stage DiD": r} for k in range(n)})
        assert tuple(fig.get_size_inches()) == (width, 3.6)
        plt.close(fig)
    ax = event_time_plot({"Two-stage DiD": r})
    assert ax.figure.get_size_inches()[0] <= plots.MAX_WIDTH_IN
    plt.close(ax.figure)
    with pytest.raises(EventStudyError, match="Nothing to plot"):
        event_time_panels({})
