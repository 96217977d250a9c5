"""Tests of analysis.heterogeneity (Chapter 7: group-specific effects and multiple comparisons).

All panels here are SYNTHETIC (simulated with fixed seeds) and labelled as such; the real panel
is only used by the chapter. Independent references:

* Holm: ``statsmodels.stats.multitest.multipletests(method="holm")``;
* Romano-Wolf step-down: pyfixest's implementation (``_get_rwolf_pval``) on the same bootstrap
  statistics, and pyfixest's end-to-end ``rwolf`` (wild cluster bootstrap by the
  ``wildboottest`` package), which draws the same Rademacher weights for the same seed, so the
  adjusted p-values must agree exactly;
* Wald tests of equal (and of equal standardised) slopes: pyfixest ``Feols.wald_test``;
* t statistics of the bootstrap design: :func:`analysis.estimation.fit` and pyfixest ``feols``;
* the family-wise error rate: a simulation with every null true.
"""

from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from statsmodels.stats.multitest import multipletests  # noqa: E402

from analysis import heterogeneity as het  # noqa: E402
from analysis.estimation import ModelSpec, SpecificationError, fit  # noqa: E402

WAVES = (1997, 2005, 2009, 2014)


def synthetic_panel(n_units: int = 300, seed: int = 3, slopes=(-0.2, -0.6, 0.0)) -> pd.DataFrame:
    """SYNTHETIC county panel: three time-invariant groups with slopes ``slopes`` on density x,
    a group-specific wave shock, a 1997 poverty rate, and two type densities in different units."""
    rng = np.random.default_rng(seed)
    T = len(WAVES)
    fips = np.repeat([f"{i:05d}" for i in range(n_units)], T)
    year = np.tile(WAVES, n_units)
    grp = np.repeat(rng.choice(["a", "b", "c"], n_units), T)
    a = np.repeat(rng.normal(size=n_units), T)
    x = 1.0 + 0.5 * a + 0.3 * rng.normal(size=fips.size)
    slope = pd.Series(grp).map(dict(zip("abc", slopes))).to_numpy()
    shock = pd.Series(grp).map({"a": 0.0, "b": 0.3, "c": -0.2}).to_numpy() * np.tile(np.arange(T), n_units)
    y = 5 + slope * x + a + shock + 0.5 * np.tile(np.arange(T), n_units) + rng.normal(size=fips.size)
    d = pd.DataFrame({"fips": fips, "year": year, "grp": grp, "assn_per_1k": x, "unemployment_rate": y})
    d["poverty_rate"] = 15 + 5 * a + rng.normal(size=fips.size)
    d["type_a_per_10k"] = 10 * x + rng.normal(size=fips.size)  # large units
    d["type_b_per_10k"] = 0.1 * rng.normal(size=fips.size) + 0.05 * a  # small units
    d["unemployment_rate"] += -0.03 * d["type_a_per_10k"] + 2.0 * d["type_b_per_10k"]
    return d


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    return synthetic_panel()


# --------------------------------------------------------------------------------------
# Holm
# --------------------------------------------------------------------------------------


def test_holm_matches_statsmodels():
    rng = np.random.default_rng(0)
    for m in (1, 2, 7, 60):
        p = rng.uniform(0, 0.2, m) ** 2
        if m > 2:
            p[1] = p[0]  # a tie
        ref = multipletests(p, method="holm")[1]
        np.testing.assert_allclose(het.holm(p), ref, rtol=0, atol=1e-15)


def test_holm_known_values():
    # hand computation: sorted 0.01, 0.02, 0.03, 0.04 -> 0.04, 0.06, 0.06, 0.06
    np.testing.assert_allclose(het.holm([0.03, 0.01, 0.04, 0.02]), [0.06, 0.04, 0.06, 0.06])


@pytest.mark.parametrize("bad", [[], [0.1, 1.2], [0.1, np.nan], [[0.1, 0.2]]])
def test_holm_rejects_bad_pvalues(bad):
    with pytest.raises(ValueError, match="p-values"):
        het.holm(bad)


# --------------------------------------------------------------------------------------
# Romano-Wolf step-down
# --------------------------------------------------------------------------------------


def test_romano_wolf_matches_pyfixest_algorithm():
    from pyfixest.estimation.post_estimation.multcomp import _get_rwolf_pval

    rng = np.random.default_rng(1)
    for S in (1, 3, 12):
        t = rng.normal(scale=2.0, size=S)
        tb = rng.standard_t(5, size=(499, S)) @ np.linalg.cholesky(0.5 * np.eye(S) + 0.5).T
        np.testing.assert_allclose(het.romano_wolf(t, tb), _get_rwolf_pval(t.copy(), tb.copy()), atol=1e-15)


def test_romano_wolf_properties():
    rng = np.random.default_rng(2)
    S, B = 10, 999
    t = np.r_[4.0, -3.0, 2.2, rng.normal(size=S - 3)]
    tb = rng.normal(size=(B, S)) @ np.linalg.cholesky(0.3 * np.eye(S) + 0.7).T
    p_rw = het.romano_wolf(t, tb)
    p_boot = het.bootstrap_pvalues(t, tb)
    assert np.all(p_rw >= p_boot - 1e-15)  # adjusted >= unadjusted
    order = np.argsort(-np.abs(t))
    assert np.all(np.diff(p_rw[order]) >= 0)  # monotone in the step-down order
    assert np.all(p_rw <= 1) and np.all(p_rw >= 1 / (B + 1))
    # the first step compares the largest |t| with the max over all: check by hand
    first = (1 + (np.abs(tb).max(axis=1) >= 4.0).sum()) / (B + 1)
    assert p_rw[0] == pytest.approx(first, abs=1e-15)
    # one hypothesis: Romano-Wolf is the bootstrap p-value itself
    assert het.romano_wolf(t[:1], tb[:, :1])[0] == pytest.approx(p_boot[0])


def test_romano_wolf_rejects_bad_shapes():
    with pytest.raises(ValueError, match="B x 3"):
        het.romano_wolf([1.0, 2.0, 3.0], np.zeros((10, 2)))
    with pytest.raises(ValueError, match="non-empty"):
        het.romano_wolf([], np.zeros((10, 0)))
    with pytest.raises(ValueError, match="finite"):
        het.romano_wolf([np.inf], np.zeros((10, 1)))


# --------------------------------------------------------------------------------------
# Wild cluster bootstrap
# --------------------------------------------------------------------------------------


def test_rademacher_weights_reproducible():
    w1 = het.rademacher_weights(["b", "a", "c", "a"], 50, seed=4)
    w2 = het.rademacher_weights(["a", "b", "c"], 50, seed=4)
    assert list(w1.index) == ["a", "b", "c"]
    pd.testing.assert_frame_equal(w1, w2)
    assert set(np.unique(w1.to_numpy())) == {-1.0, 1.0}
    ref = np.random.default_rng(4).choice([-1, 1], size=150).reshape(3, 50)
    np.testing.assert_array_equal(w1.to_numpy(), ref)
    with pytest.raises(ValueError, match="reps"):
        het.rademacher_weights(["a", "b"], 0, 1)
    with pytest.raises(ValueError, match="two clusters"):
        het.rademacher_weights(["a"], 10, 1)


def test_bootstrap_t_equals_fit(panel):
    data, terms = het.interaction_columns(panel, "assn_per_1k", "grp")
    res = fit(ModelSpec(outcome="unemployment_rate", regressors=tuple(terms), estimator="twfe",
                        cov="cluster-unit"), data)
    W = het.rademacher_weights(data["fips"], 9, 0)
    cols = list(terms)
    contrasts = [{c: 1.0} for c in cols] + [{cols[0]: 1.0, cols[1]: -1.0}]
    t, tb = het.wild_bootstrap_t(data, "unemployment_rate", cols, contrasts, W)
    np.testing.assert_allclose(t[:3], res.tstats[cols].to_numpy(), rtol=1e-9)
    c = np.array([1.0, -1.0])
    b = res.params[cols[:2]].to_numpy()
    V = res.cov.loc[cols[:2], cols[:2]].to_numpy()
    assert t[3] == pytest.approx(c @ b / np.sqrt(c @ V @ c), rel=1e-9)
    assert tb.shape == (9, 4)


def test_bootstrap_t_errors(panel):
    W = het.rademacher_weights(panel["fips"].iloc[:40], 9, 0)
    with pytest.raises(SpecificationError, match="no bootstrap weights"):
        het.wild_bootstrap_t(panel, "unemployment_rate", ["assn_per_1k"], [{"assn_per_1k": 1.0}], W)
    W = het.rademacher_weights(panel["fips"], 9, 0)
    with pytest.raises(SpecificationError, match="not regressors"):
        het.wild_bootstrap_t(panel, "unemployment_rate", ["assn_per_1k"], [{"nope": 1.0}], W)
    with pytest.raises(SpecificationError, match="at least one contrast"):
        het.wild_bootstrap_t(panel, "unemployment_rate", ["assn_per_1k"], [], W)
    with pytest.raises(SpecificationError, match="Unknown"):
        het.wild_bootstrap_t(panel, "nope", ["assn_per_1k"], [{"assn_per_1k": 1.0}], W)


def _pf_panel(seed=5, G=30):
    """SYNTHETIC balanced panel for the pyfixest cross-check: three outcomes, one of them related to x."""
    rng = np.random.default_rng(seed)
    T = len(WAVES)
    d = pd.DataFrame({"fips": np.repeat(np.arange(G), T), "year": np.tile(WAVES, G)})
    a = np.repeat(rng.normal(size=G), T)
    d["x"] = a + rng.normal(size=len(d))
    d["x2"] = rng.normal(size=len(d))
    for j in range(3):
        d[f"y{j}"] = 0.4 * (j == 2) * d["x"] + a + 0.5 * np.tile(np.arange(T), G) + rng.normal(size=len(d))
    return d


def test_romano_wolf_matches_pyfixest_rwolf():
    """pyfixest.rwolf (wildboottest's WCR bootstrap, FE as dummies) and ours, same seed: identical."""
    pytest.importorskip("wildboottest")
    import pyfixest as pf

    d = _pf_panel()
    fits = [pf.feols(f"y{j} ~ x + x2 | fips + year", d, vcov={"CRV1": "fips"}) for j in range(3)]
    B, seed = 999, 11
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = pf.rwolf(fits, "x", reps=B, seed=seed).loc["RW Pr(>|t|)"].to_numpy(dtype=float)
        _, tb_ref = fits[0].wildboottest(param="x", reps=B, seed=seed, return_bootstrapped_t_stats=True)
    hyps = [het.Hypothesis(("y", j), f"y{j}", ("x", "x2"), {"x": 1.0}, d, key=f"y{j}") for j in range(3)]
    W = het.rademacher_weights(d["fips"], B, seed)
    ours = het.romano_wolf_family(hyps, weights=W)
    np.testing.assert_allclose(ours["p_rw"].to_numpy(), ref, atol=1e-12)
    # observed t equal pyfixest's feols t; bootstrap t differ from wildboottest's only by its
    # small-sample constant (it counts the fixed effects in k), the same for every draw
    np.testing.assert_allclose(ours["t"].to_numpy(), [f.tidy().loc["x", "t value"] for f in fits], rtol=1e-9)
    t0, tb0 = het.wild_bootstrap_t(d, "y0", ["x", "x2"], [{"x": 1.0}], W)
    ratio = tb0[:, 0] / tb_ref
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-9)
    # and through the seed alone (weights drawn inside)
    again = het.romano_wolf_family(hyps, reps=B, seed=seed)
    np.testing.assert_allclose(again["p_rw"].to_numpy(), ref, atol=1e-12)


def test_fwer_all_nulls_true():
    """SYNTHETIC: 5 correlated outcomes unrelated to x; the chance of any Romano-Wolf rejection at 5%
    is about 5%, while unadjusted tests reject somewhere far more often."""
    rng = np.random.default_rng(2024)
    G, T, S, B, nsim = 40, 4, 5, 199, 300
    fips = np.repeat(np.arange(G), T)
    year = np.tile(WAVES, G)
    reject_rw = reject_raw = reject_holm = 0
    L = np.linalg.cholesky(0.5 * np.eye(S) + 0.5)
    for i in range(nsim):
        a = np.repeat(rng.normal(size=G), T)
        x = a + rng.normal(size=G * T)
        u_c = np.repeat(rng.normal(size=(G, S)) @ L.T, T, axis=0)  # serially correlated within county
        e = 0.7 * u_c + rng.normal(size=(G * T, S)) @ L.T
        d = pd.DataFrame(e, columns=[f"y{j}" for j in range(S)]).assign(fips=fips, year=year, x=x)
        W = het.rademacher_weights(np.arange(G), B, seed=i)
        ts, tbs = zip(*(het.wild_bootstrap_t(d, f"y{j}", ["x"], [{"x": 1.0}], W) for j in range(S)))
        t, tb = np.concatenate(ts), np.column_stack(tbs)
        reject_rw += het.romano_wolf(t, tb).min() <= 0.05
        p_boot = het.bootstrap_pvalues(t, tb)
        reject_raw += p_boot.min() <= 0.05
        reject_holm += het.holm(p_boot).min() <= 0.05
    rate_rw, rate_raw, rate_holm = reject_rw / nsim, reject_raw / nsim, reject_holm / nsim
    # Monte Carlo SE of a 5% rate over 300 simulations: 1.3 points
    print(f"FWER: Romano-Wolf {rate_rw:.3f}, Holm {rate_holm:.3f}, unadjusted {rate_raw:.3f}")
    assert 0.02 <= rate_rw <= 0.09, rate_rw
    assert rate_raw >= 0.11, rate_raw
    assert rate_holm <= rate_rw + 0.01  # Holm ignores the correlation: no more rejections


# --------------------------------------------------------------------------------------
# Groups, interactions and Wald tests
# --------------------------------------------------------------------------------------


def test_interaction_columns(panel):
    data, terms = het.interaction_columns(panel, "assn_per_1k", "grp")
    assert list(terms.values()) == ["a", "b", "c"]
    total = sum(data[c] for c in terms)
    np.testing.assert_allclose(total, panel["assn_per_1k"])  # the interactions partition x
    row = data.iloc[0]
    for c, lev in terms.items():
        assert row[c] == (row["assn_per_1k"] if row["grp"] == lev else 0.0)


def test_interaction_columns_errors(panel):
    bad = panel.copy()
    bad.loc[bad.index[1], "grp"] = "z" if bad.loc[bad.index[0], "grp"] != "z" else "y"
    with pytest.raises(SpecificationError, match="changes within"):
        het.interaction_columns(bad, "assn_per_1k", "grp")
    with pytest.raises(SpecificationError, match="at least two"):
        het.interaction_columns(panel.assign(g1="one"), "assn_per_1k", "g1")
    with pytest.raises(SpecificationError, match="Unknown"):
        het.interaction_columns(panel, "assn_per_1k", "nope")


def test_group_main_effects_absorbed(panel):
    """A group dummy as a regressor is rejected as absorbed by the county effects (the reason none is entered)."""
    d = panel.assign(grp_b=(panel["grp"] == "b").astype(float))
    with pytest.raises(SpecificationError, match="absorbed by the unit fixed effects"):
        fit(ModelSpec(outcome="unemployment_rate", regressors=("assn_per_1k", "grp_b"), estimator="twfe"), d)


def test_fit_by_group_recovers_slopes_and_wald_matches_pyfixest(panel):
    import pyfixest as pf

    ge = het.fit_by_group(panel, "unemployment_rate", "grp", group_by_wave=True)
    # true slopes -0.2, -0.6, 0.0 per unit of x; estimates within 4 SE
    coef = ge.table["coef"]
    se = ge.table["std_error"] / ge.table["sd_within"]
    assert np.all(np.abs(coef.to_numpy() - np.array([-0.2, -0.6, 0.0])) < 4 * se.to_numpy())
    assert ge.table["counties"].sum() == panel["fips"].nunique()
    # the Wald test against pyfixest (common wave effects)
    ge0 = het.fit_by_group(panel, "unemployment_rate", "grp")
    data, terms = het.interaction_columns(panel, "assn_per_1k", "grp")
    names = {c: f"x_{lev}" for c, lev in terms.items()}
    d = data.rename(columns=names)
    m = pf.feols(f"unemployment_rate ~ {' + '.join(names.values())} | fips + year", d, vcov={"CRV1": "fips"})
    R = np.array([[1.0, -1.0, 0.0], [1.0, 0.0, -1.0]])
    ref = m.wald_test(R=R, distribution="chi2")
    assert ge0.wald.statistic == pytest.approx(float(ref["statistic"]), rel=1e-8)
    assert ge0.wald.pvalue == pytest.approx(float(ref["pvalue"]), rel=1e-6)
    assert ge0.wald.df == 2
    np.testing.assert_allclose(ge0.table["coef"].to_numpy(), m.coef().to_numpy(), rtol=1e-8)
    # the whole-sample within SD scales every group
    assert ge0.table["sd_within"].nunique() == 1


def test_group_by_wave_equals_split_sample(panel):
    ge = het.fit_by_group(panel, "unemployment_rate", "grp", group_by_wave=True)
    split = het.split_sample(panel, "unemployment_rate", "grp")
    np.testing.assert_allclose(ge.table["estimate"].to_numpy(), split["estimate"].to_numpy(), rtol=1e-8)
    # with common wave effects the group shocks leak into the slopes: they differ
    ge0 = het.fit_by_group(panel, "unemployment_rate", "grp")
    assert np.abs(ge0.table["estimate"].to_numpy() - split["estimate"].to_numpy()).max() > 1e-3


def test_standardised_wald_matches_rescaled_regressors(panel):
    """Equality of per-SD effects = equality of raw slopes on regressors divided by their SDs (pyfixest)."""
    import pyfixest as pf

    types = ["type_a_per_10k", "type_b_per_10k"]
    ge = het.fit_by_type(panel, "unemployment_rate", types)
    sds = ge.table["sd_within"]
    d = panel.assign(za=panel[types[0]] / sds.iloc[0], zb=panel[types[1]] / sds.iloc[1])
    m = pf.feols("unemployment_rate ~ za + zb | fips + year", d, vcov={"CRV1": "fips"})
    ref = m.wald_test(R=np.array([[1.0, -1.0]]), distribution="chi2")
    assert ge.wald.statistic == pytest.approx(float(ref["statistic"]), rel=1e-8)
    np.testing.assert_allclose(ge.table["estimate"].to_numpy(), m.coef().to_numpy(), rtol=1e-8)
    # the units differ by two orders of magnitude, so raw slopes would be incomparable
    assert sds.iloc[0] / sds.iloc[1] > 20


def test_wald_equal_errors(panel):
    ge = het.fit_by_group(panel, "unemployment_rate", "grp")
    with pytest.raises(SpecificationError, match="at least two"):
        het.wald_equal(ge.result, [ge.table["term"].iloc[0]])
    with pytest.raises(SpecificationError, match="not coefficients"):
        het.wald_equal(ge.result, ["a", "b"])
    with pytest.raises(SpecificationError, match="scales"):
        het.wald_equal(ge.result, list(ge.table["term"]), [1.0, 0.0, 1.0])


def test_baseline_tercile(panel):
    t = het.baseline_tercile(panel, "poverty_rate", 1997)
    base = panel.loc[panel["year"] == 1997].set_index("fips")["poverty_rate"]
    ref = pd.qcut(base, 3, labels=["low", "middle", "high"])
    assert (t.groupby(panel["fips"]).nunique() == 1).all()  # fixed within county
    got = pd.Series(t.to_numpy(), index=panel["fips"]).groupby(level=0).first()
    assert (got.astype(str) == ref.astype(str).reindex(got.index)).all()
    assert t.value_counts().tolist() == [400, 400, 400]
    with pytest.raises(SpecificationError, match="baseline"):
        het.baseline_tercile(panel, "poverty_rate", 1990)


def test_source_gaps_and_largest_share():
    rows = pd.DataFrame({
        "fips": ["1", "1", "2", "2"], "year": [1997, 2005, 1997, 2005], "population": [500_000, 510_000, 300, 310],
        "assn_per_1k": [0.0, 3.0, 0.0, 0.0],
    })
    for c in het.ESTABLISHMENT_COUNTS:
        rows[c] = [0, 5, 0, 0]
    gaps = het.source_gaps(rows)
    assert list(gaps.index) == [0]  # the large county's zero year, not the tiny county's zeros
    assert np.isnan(het.without_source_gaps(rows).loc[0, "assn_per_1k"])
    # SYNTHETIC: one county carries almost all the within variation of its group
    d = synthetic_panel(n_units=60, seed=9)
    d.loc[(d["fips"] == "00000") & (d["year"] == 1997), "assn_per_1k"] += 50.0
    share = het.largest_county_share(d, "assn_per_1k", "grp")
    g0 = d.loc[d["fips"] == "00000", "grp"].iloc[0]
    assert share.loc[g0, "top_county"] == "00000"
    assert share.loc[g0, "top_share"] > 0.8
    assert share.drop(g0)["top_share"].max() < 0.5


def test_effects_figure(panel):
    ge = het.fit_by_group(panel, "unemployment_rate", "grp")
    eff = ge.table.reset_index().assign(outcome="unemployment_rate", dimension="census_region")
    eff = eff.set_index(["outcome", "dimension", "group"])
    fig = het.effects_figure(eff)
    assert len([a for a in fig.axes if a.get_visible()]) == 1
    plt.close(fig)
    with pytest.raises(SpecificationError, match="index"):
        het.effects_figure(ge.table)


def test_fmt_p():
    assert het.fmt_p(0.0004) == "p < 0.001"
    assert het.fmt_p(0.0416) == "p = 0.042"
    with pytest.raises(ValueError, match="p-value"):
        het.fmt_p(1.5)


def test_overall_effect_matches_pyfixest(panel):
    import pyfixest as pf

    d = panel.copy()
    d.loc[d.index[5], "unemployment_rate"] = np.nan  # one county then leaves the balanced sample
    got = het.overall_effect(d, "unemployment_rate")
    bal = d.loc[d["fips"] != d.loc[d.index[5], "fips"]]
    m = pf.feols("unemployment_rate ~ assn_per_1k | fips + year", bal, vcov={"CRV1": "fips"})
    x = bal["assn_per_1k"] - bal.groupby("fips")["assn_per_1k"].transform("mean")
    sd = float(np.std(x, ddof=1))
    assert got["counties"] == panel["fips"].nunique() - 1
    assert got["estimate"] == pytest.approx(float(m.coef()["assn_per_1k"]) * sd, rel=1e-8)
    assert got["std_error"] == pytest.approx(float(m.se()["assn_per_1k"]) * sd, rel=1e-8)


def test_as_published_reads_the_gap_as_zeros():
    from analysis.heterogeneity import ESTABLISHMENT_DENSITIES, as_published, source_gaps
    from analysis.panels import load

    w = load("us_counties_waves")
    gaps = source_gaps(w)
    assert list(zip(gaps["fips"], gaps["year"])) == [("11001", 1997)]
    pub = as_published(w)
    assert (pub.loc[gaps.index, list(ESTABLISHMENT_DENSITIES)] == 0).all().all()
    assert w.loc[gaps.index, "assn_per_1k"].isna().all()  # the built panel keeps the gap missing


# --------------------------------------------------------------------------------------
# Fast paths (issue 17): the same numbers as the straightforward computations
# --------------------------------------------------------------------------------------


def test_fast_twfe_paths_equal_fit(panel):
    """split_sample, fit_single_types and overall_effect use the closed-form TWFE of the bootstrap
    design instead of analysis.estimation.fit: the same estimates, SEs, intervals and p-values."""
    from analysis.estimation import variance_decomposition

    spec = dict(estimator="twfe", cov="cluster-unit")
    d = panel.copy()
    d.loc[d.index[7], "unemployment_rate"] = np.nan  # one county leaves the balanced sample
    got = het.overall_effect(d, "unemployment_rate")
    bal = het._balanced(d, ["unemployment_rate", "assn_per_1k"])
    r = fit(ModelSpec(outcome="unemployment_rate", regressors=("assn_per_1k",), **spec), bal)
    sd = variance_decomposition(bal, "assn_per_1k").sd_within
    lo, hi = r.conf_int.loc["assn_per_1k", ["lower", "upper"]]
    assert got["estimate"] == pytest.approx(float(r.params["assn_per_1k"]) * sd, rel=1e-10)
    assert got["std_error"] == pytest.approx(float(r.std_errors["assn_per_1k"]) * sd, rel=1e-10)
    assert got["conf_low"] == pytest.approx(float(lo) * sd, rel=1e-10)
    assert got["conf_high"] == pytest.approx(float(hi) * sd, rel=1e-10)
    assert got["pvalue"] == pytest.approx(float(r.pvalues["assn_per_1k"]), rel=1e-8)

    split = het.split_sample(panel, "unemployment_rate", "grp")
    for g, row in split.iterrows():
        sub = panel.loc[panel["grp"] == g]
        r = fit(ModelSpec(outcome="unemployment_rate", regressors=("assn_per_1k",), **spec), sub)
        sd = variance_decomposition(panel, "assn_per_1k").sd_within
        assert row["estimate"] == pytest.approx(float(r.params["assn_per_1k"]) * sd, rel=1e-10)
        assert row["std_error"] == pytest.approx(float(r.std_errors["assn_per_1k"]) * sd, rel=1e-10)

    types = ["type_a_per_10k", "type_b_per_10k"]
    alone = het.fit_single_types(panel, "unemployment_rate", types)
    for t in types:
        r = fit(ModelSpec(outcome="unemployment_rate", regressors=(t,), **spec), panel)
        sd = variance_decomposition(panel, t).sd_within
        assert alone.loc[t, "estimate"] == pytest.approx(float(r.params[t]) * sd, rel=1e-10)
        assert alone.loc[t, "std_error"] == pytest.approx(float(r.std_errors[t]) * sd, rel=1e-10)


def _bootstrap_t_direct(data, outcome, regressors, contrasts, weights, impose_null=True):
    """The wild bootstrap computed draw by draw from the G x B bootstrap scores (the formula of
    Roodman et al. 2019, without the expansion the module uses)."""
    dz = het._cluster_design(data, outcome, regressors, "fips", "year")
    W = weights.loc[dz.clusters].to_numpy(dtype=float)
    Ainv = np.linalg.inv(dz.A)
    t_obs, t_boot = [], []
    for c_map in contrasts:
        c = np.zeros(len(dz.names))
        for r, v in c_map.items():
            c[list(regressors).index(r)] = v
        a = Ainv @ c
        Su = dz.Sy - dz.H @ dz.b
        t_obs.append(float(c @ dz.b) / np.sqrt(dz.ssc * np.sum((Su @ a) ** 2)))
        beta = dz.b - a * (c @ dz.b) / (c @ a) if impose_null else dz.b
        S = dz.Sy - dz.H @ beta
        delta = Ainv @ (S.T @ W)
        z = W * (S @ a)[:, None] - (dz.H @ a) @ delta
        t_boot.append((c @ delta) / np.sqrt(dz.ssc * np.sum(z**2, axis=0)))
    return np.asarray(t_obs), np.column_stack(t_boot)


@pytest.mark.parametrize("impose_null", [True, False])
@pytest.mark.parametrize("kind", ["rademacher", "normal"])
def test_bootstrap_expansion_equals_direct_computation(panel, impose_null, kind):
    data, terms = het.interaction_columns(panel, "assn_per_1k", "grp")
    cols = list(terms)
    contrasts = [{c: 1.0} for c in cols] + [{cols[0]: 1.0, cols[2]: -0.5}]
    W = het.rademacher_weights(data["fips"], 49, 3)
    if kind == "normal":  # not +-1: the squared weights enter the expansion
        W = pd.DataFrame(np.random.default_rng(0).normal(size=W.shape), index=W.index)
    t, tb = het.wild_bootstrap_t(data, "unemployment_rate", cols, contrasts, W, impose_null)
    t_ref, tb_ref = _bootstrap_t_direct(data, "unemployment_rate", cols, contrasts, W, impose_null)
    np.testing.assert_allclose(t, t_ref, rtol=1e-12)
    np.testing.assert_allclose(tb, tb_ref, rtol=1e-9, atol=1e-12)


def test_family_on_subsets_equals_model_by_model(panel):
    """romano_wolf_family multiplies one weight matrix of all counties with zero scores for the
    counties a model does not use: the same t statistics as each model's own bootstrap."""
    d = panel.copy()
    d.loc[d["fips"].isin(d["fips"].unique()[:25]), "poverty_rate"] = np.nan  # a smaller sample
    W = het.rademacher_weights(d["fips"], 99, 8)
    hyps = [het.Hypothesis(("u", 0), "unemployment_rate", ("assn_per_1k",), {"assn_per_1k": 1.0}, d, key="u"),
            het.Hypothesis(("p", 0), "poverty_rate", ("assn_per_1k",), {"assn_per_1k": 1.0}, d, key="p")]
    fam = het.romano_wolf_family(hyps, weights=W)
    for j, h in enumerate(hyps):
        t, tb = het.wild_bootstrap_t(d, h.outcome, list(h.regressors), [h.contrast], W)
        assert fam["t"].iloc[j] == pytest.approx(t[0], rel=1e-12)
    # weights drawn inside from the seed: the same as drawing them over every county first
    again = het.romano_wolf_family(hyps, reps=99, seed=8)
    np.testing.assert_array_equal(again["p_rw"].to_numpy(), fam["p_rw"].to_numpy())


def test_rademacher_weights_are_fresh_copies():
    w1 = het.rademacher_weights(["a", "b", "c"], 5, seed=9)
    w1.iloc[0, 0] = 99.0
    w2 = het.rademacher_weights(["a", "b", "c"], 5, seed=9)
    ref = np.random.default_rng(9).choice([-1, 1], size=15).reshape(3, 5)
    np.testing.assert_array_equal(w2.to_numpy(), ref)


def test_balanced_matches_groupby_definition(panel):
    d = panel.copy()
    d.loc[d.index[[3, 50, 51]], "unemployment_rate"] = np.nan
    d.loc[d.index[100], "fips"] = None  # a row without a county is never kept
    cols = ["unemployment_rate", "assn_per_1k"]
    complete = d[cols].notna().all(axis=1)
    periods = d.loc[complete].groupby("fips")["year"].nunique()
    keep = periods.index[periods == d["year"].nunique()]
    ref = d.loc[d["fips"].isin(keep) & complete]
    pd.testing.assert_frame_equal(het._balanced(d, cols), ref)
