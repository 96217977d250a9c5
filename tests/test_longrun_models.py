"""analysis.longrun_models (Chapter 6b) on small synthetic panels (labelled synthetic below), and its
hand-written estimators against analysis.estimation.fit, linearmodels and statsmodels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import longrun_models as lr
from analysis.hypotheses import equivalence_bounds
from analysis.policy import minimum_detectable_effect

# --------------------------------------------------------------------------------------------
# Synthetic fixtures
# --------------------------------------------------------------------------------------------


def synthetic_panel(seed: int = 0, n_counties: int = 120, n_states: int = 6, waves=(1980, 1990, 2000, 2010, 2020),
                    beta: float = 0.02) -> pd.DataFrame:
    """SYNTHETIC county x wave panel (not real data): density x, growth y = beta x + county +
    state-by-wave effects + noise; unbalanced (some rows dropped), some missing values."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_counties):
        state = f"{i % n_states + 1:02d}"
        a = rng.normal()
        for w in waves:
            x = 2 + 0.5 * a + rng.normal(scale=0.4)
            rows.append({"fips": f"{state}{i:03d}", "state_fips": state, "wave": w, "x": x, "c": rng.normal(),
                         "y": beta * x + 0.1 * a + 0.01 * (w - 1980) / 10 * int(state) + rng.normal(scale=0.05)})
    d = pd.DataFrame(rows)
    d = d.drop(index=rng.choice(len(d), size=len(d) // 12, replace=False))  # unbalanced
    d.loc[d.sample(frac=0.03, random_state=seed).index, "y"] = np.nan
    return d.reset_index(drop=True)


def synthetic_congregations() -> pd.DataFrame:
    """SYNTHETIC rows shaped like us_counties_congregations (not real data). State 55: Shawano
    (55115) and Menominee (55078) form BEA area 55901; state 02 (Alaska) and 51 (Virginia) are
    excluded from the decadal panel; 15 (Hawaii) is outside the contiguous territory."""
    rows = []
    spec = {  # fips: (congregations, adherents, population) in 1980; later waves scale
        "01001": (30, 12_000, 20_000), "01003": (60, 30_000, 50_000),
        "55115": (40, 20_000, 35_000), "55078": (4, 1_000, 3_000),
        "02013": (5, 500, 2_000), "51001": (20, 8_000, 30_000), "15001": (50, 40_000, 90_000),
    }
    for w, f in zip((1980, 1990, 2000, 2010, 2020), (1.0, 1.1, 1.2, 1.3, 1.4)):
        for fips, (c, a, p) in spec.items():
            rows.append({"fips": fips, "wave": w, "state_fips": fips[:2], "congregations": int(c * (2 - f)),
                         "adherents_or_members": int(a * f), "population": int(p * f),
                         "wave_coverage_differs": w <= 2000, "boundary_change_crosswalked": fips == "01003" and w == 1990})
    for w in (1926, 1936):  # members, 1930 units; 01001 is two 1930 units sharing the code
        for fips, members, pop in (("01001", 3_000, 8_000), ("01001", 1_000, 2_000), ("01003", 9_000, 20_000),
                                   ("55115", 6_000, 10_000), ("55078", 100, 1_000)):
            rows.append({"fips": fips, "wave": w, "state_fips": fips[:2], "congregations": pd.NA,
                         "adherents_or_members": members, "population": pop, "wave_coverage_differs": True,
                         "boundary_change_crosswalked": False})
    d = pd.DataFrame(rows)
    for c in ("congregations", "adherents_or_members", "population"):
        d[c] = d[c].astype("Int64")
    return d


def synthetic_income() -> pd.DataFrame:
    """SYNTHETIC rows shaped like us_counties_income (not real data): 55901 published to 1988, its
    components from 1989 (as BEA does); US per-capita income doubles every 20 years."""
    rows = []
    for year in range(1969, 2023):
        us = 10_000 * 2 ** ((year - 1969) / 20)
        for fips, rel, pop in (("01001", 0.8, 20_000), ("01003", 1.1, 50_000), ("55901", 0.9, 38_000),
                               ("55115", 1.0, 35_000), ("55078", 0.5, 3_000), ("15001", 1.0, 90_000)):
            published = not ((fips == "55901" and year >= 1989) or (fips in ("55115", "55078") and year < 1989))
            p = pop * (1 + 0.01 * (year - 1969))
            rows.append({"fips": fips, "year": year, "state_fips": fips[:2], "us_pcpi": round(us),
                         "population": round(p) if published else pd.NA,
                         "personal_income_thousands": round(rel * us * p / 1000) if published else pd.NA})
    d = pd.DataFrame(rows)
    for c in ("population", "personal_income_thousands", "us_pcpi"):
        d[c] = d[c].astype("Int64")
    return d


REGIONS = pd.Series({"01": "South", "55": "Midwest", "15": "West", "02": "West", "51": "South"})

# --------------------------------------------------------------------------------------------
# The bound (addition A2)
# --------------------------------------------------------------------------------------------


def test_a2_bound_is_chapter_1_income_bound_carried_one_for_one():
    assert lr.a2_bound() == lr.LONG_RUN_BOUND
    assert lr.a2_bound() == float(equivalence_bounds().loc["log_median_hh_income", "bound"])


@pytest.mark.parametrize("low, high, reading", [
    (-0.004, 0.004, "ruled out"), (-0.006, 0.001, "not identified"), (0.001, 0.006, "not identified"),
    (0.006, 0.01, "larger than the bound"), (-0.02, -0.0051, "larger than the bound"), (-0.006, 0.006, "not identified"),
])
def test_bound_reading(low, high, reading):
    assert lr.bound_reading(low, high, 0.005) == reading


def test_bound_reading_needs_a_positive_bound():
    with pytest.raises(ValueError):
        lr.bound_reading(-1, 1, 0)


def test_per_sd_scales_and_uses_the_policy_mde():
    out = lr.per_sd(0.01, 0.002, sd=0.5, df=np.inf, bound=0.005)
    assert out["per_sd"] == pytest.approx(0.005)
    assert out["se_per_sd"] == pytest.approx(0.001)
    assert out["lo90"] == pytest.approx(0.005 - 1.6448536 * 0.001, abs=1e-9)
    assert out["mde_per_sd"] == pytest.approx(minimum_detectable_effect(0.001))
    assert out["mde_per_sd"] == pytest.approx(2.8016 * 0.001, abs=1e-6)
    assert out["reading"] == "not identified"
    assert "reading" not in lr.per_sd(0.01, 0.002, sd=1.0, bound=None)


# --------------------------------------------------------------------------------------------
# Estimators against the project's fit, linearmodels and statsmodels
# --------------------------------------------------------------------------------------------


def test_demean_two_way_is_the_projection_on_both_sets_of_dummies():
    d = synthetic_panel().dropna()
    unit = pd.factorize(d["fips"])[0]
    cell = d.groupby(["state_fips", "wave"]).ngroup().to_numpy()
    D = np.column_stack([np.eye(unit.max() + 1)[unit], np.eye(cell.max() + 1)[cell]])
    v = d[["y", "x"]].to_numpy()
    expected = v - D @ np.linalg.lstsq(D, v, rcond=None)[0]
    np.testing.assert_allclose(lr.demean_two_way(v, unit, cell), expected, atol=1e-9)
    with pytest.raises(ValueError, match="missing"):
        lr.demean_two_way(np.array([[1.0], [np.nan]]), np.array([0, 0]), np.array([0, 1]))


@pytest.mark.parametrize("controls", [(), ("c",)])
def test_absorbed_ols_reproduces_estimation_fit(controls):
    from analysis.estimation import ModelSpec, fit

    d = synthetic_panel()
    mine = lr.absorbed_ols(d, "y", ("x",), controls)
    ref = fit(ModelSpec(outcome="y", regressors=("x",), controls=controls, estimator="twfe", effects="state-by-year",
                        cov="cluster-unit", time="wave"), d)
    for term in ("x", *controls):
        assert mine.params[term] == pytest.approx(float(ref.params[term]), rel=1e-9)
        assert mine.std_errors[term] == pytest.approx(float(ref.std_errors[term]), rel=1e-8)
    assert mine.nobs == ref.nobs and mine.df_inference == ref.df_inference
    assert mine.pvalues["x"] == pytest.approx(float(ref.pvalues["x"]), rel=1e-6)
    lo, hi = mine.ci(0.90).loc["x"]
    rlo, rhi = ref.ci(0.90).loc["x"]
    assert (lo, hi) == (pytest.approx(float(rlo), rel=1e-8), pytest.approx(float(rhi), rel=1e-8))


def test_absorbed_ols_without_unit_effects_reproduces_statsmodels():
    import statsmodels.formula.api as smf

    d = synthetic_panel().dropna()
    mine = lr.absorbed_ols(d, "y", ("x",), unit_effects=False)
    ref = smf.ols("y ~ x + C(state_fips):C(wave) - 1", d).fit(
        cov_type="cluster", cov_kwds={"groups": pd.factorize(d["fips"])[0]})
    assert mine.params["x"] == pytest.approx(ref.params["x"], rel=1e-9)
    assert mine.std_errors["x"] == pytest.approx(ref.bse["x"], rel=1e-8)


def test_absorbed_ols_recovers_the_synthetic_slope():
    r = lr.absorbed_ols(synthetic_panel(seed=3, n_counties=400, beta=0.05), "y", ("x",))
    lo, hi = r.ci(0.99).loc["x"]
    assert lo < 0.05 < hi
    assert r.params["x"] == pytest.approx(0.05, abs=0.015)


def test_local_projections_equal_absorbed_ols_per_horizon():
    rng = np.random.default_rng(5)
    counties = [f"{s:02d}{i:03d}" for s in (1, 2, 3) for i in range(40)]
    panel = pd.DataFrame([{"fips": f, "state_fips": f[:2], "wave": w, "x": rng.normal(2, 0.5)}
                          for f in counties for w in (1980, 1990, 2000)])
    income = pd.DataFrame([{"fips": f, "year": y, "y": rng.normal()} for f in counties for y in range(1980, 2006)])
    income = income.drop(index=[5, 300])  # a county-year missing drops that row at every horizon
    lp = lr.local_projections(panel, income, "y", "x", horizons=range(1, 6), sd=2.0, bound=None)
    sample = lr.lp_sample(panel, income, "y", "x", horizons=range(1, 6))
    assert (lp["nobs"] == len(sample)).all() and len(sample) < len(panel)
    for h in range(1, 6):
        r = lr.absorbed_ols(sample, f"lp_{h}", ("x",))
        assert lp.loc[h, "per_sd"] == pytest.approx(2 * float(r.params["x"]), rel=1e-9)
        assert lp.loc[h, "se_per_sd"] == pytest.approx(2 * float(r.std_errors["x"]), rel=1e-8)


def _iv_data(seed=1, n=600, states=12):
    """SYNTHETIC cross-section (not real data): z -> x -> y, z with a direct effect 0.3 on y."""
    rng = np.random.default_rng(seed)
    d = pd.DataFrame({"state": rng.integers(0, states, n).astype(str), "w": rng.normal(size=n), "z": rng.normal(size=n)})
    u = rng.normal(size=n)
    d["x"] = 0.8 * d["z"] + 0.3 * d["w"] + 0.5 * u + rng.normal(size=n)
    d["y"] = 1.5 * d["x"] + 0.3 * d["z"] - 0.4 * d["w"] + u + d["state"].astype(int) * 0.1
    return d


def _linearmodels_iv(d, y="y"):
    from linearmodels.iv import IV2SLS

    X = pd.get_dummies(d["state"], drop_first=True, dtype=float)
    X.insert(0, "const", 1.0)
    X["w"] = d["w"]
    return IV2SLS(d[y], X, d[["x"]], d[["z"]]).fit(cov_type="clustered", clusters=pd.factorize(d["state"])[0],
                                                   debiased=True)


def test_iv_just_identified_reproduces_linearmodels():
    d = _iv_data()
    mine = lr.iv_just_identified(d, "y", "x", "z", ("w",), state="state")
    ref = _linearmodels_iv(d)
    assert mine.beta == pytest.approx(float(ref.params["x"]), rel=1e-9)
    assert mine.se == pytest.approx(float(ref.std_errors["x"]), rel=1e-8)
    assert mine.first_stage_f == pytest.approx(float(ref.first_stage.diagnostics["f.stat"].iloc[0]), rel=1e-8)
    fs = ref.first_stage.individual["x"]
    assert mine.pi == pytest.approx(float(fs.params["z"]), rel=1e-9)
    assert mine.rf == pytest.approx(mine.beta * mine.pi, rel=1e-9)


def test_plausibly_exogenous_matches_iv_on_the_adjusted_outcome():
    d = _iv_data()
    iv = lr.iv_just_identified(d, "y", "x", "z", ("w",), state="state")
    table = lr.plausibly_exogenous(iv, [0.0, 0.3, iv.rf])
    assert table.loc[0.0, "estimate"] == pytest.approx(iv.beta, rel=1e-12)
    assert table.loc[0.0, "se"] == pytest.approx(iv.se, rel=1e-12)
    assert table.loc[iv.rf, "estimate"] == pytest.approx(0.0, abs=1e-10)  # gamma = reduced form: no effect left
    assert table.loc[0.3, "estimate"] == pytest.approx(iv.beta - 0.3 / iv.pi, rel=1e-10)
    ref = _linearmodels_iv(d.assign(y_adj=d["y"] - 0.3 * d["z"]), "y_adj")
    assert table.loc[0.3, "estimate"] == pytest.approx(float(ref.params["x"]), rel=1e-9)
    assert table.loc[0.3, "se"] == pytest.approx(float(ref.std_errors["x"]), rel=1e-8)
    # the synthetic direct effect is 0.3: assuming it recovers the true 1.5, ignoring it does not
    assert table.loc[0.3, "lo"] < 1.5 < table.loc[0.3, "hi"]
    assert not (table.loc[0.0, "lo"] < 1.5 < table.loc[0.0, "hi"])


def test_local_to_zero():
    iv = lr.iv_just_identified(_iv_data(), "y", "x", "z", ("w",), state="state")
    point = lr.local_to_zero(iv, mu=0.3, sigma=0.0)
    assert point["estimate"] == pytest.approx(iv.beta - 0.3 / iv.pi)
    assert point["se"] == pytest.approx(iv.se)
    wide = lr.local_to_zero(iv, mu=0.3, sigma=0.2)
    assert wide["se"] == pytest.approx(np.sqrt(iv.se**2 + 0.04 / iv.pi**2))
    assert wide["hi"] - wide["lo"] == pytest.approx(2 * 1.6448536 * wide["se"], rel=1e-6)


def test_sds_and_standardised_coefficient():
    d = synthetic_panel().dropna()
    x = d["x"] - d.groupby("fips")["x"].transform("mean")
    keep = d.groupby("fips")["x"].transform("size") >= 2
    assert lr.within_sd(d, "x") == pytest.approx(float(x[keep].std()), rel=1e-12)
    r = lr.absorbed_ols(d, "y", ("x",))
    unit, cell = pd.factorize(d["fips"])[0], d.groupby(["state_fips", "wave"]).ngroup().to_numpy()
    res = lr.demean_two_way(d[["x", "y"]].to_numpy(), unit, cell)
    assert lr.residual_sd(d, "x") == pytest.approx(float(np.std(res[:, 0], ddof=1)), rel=1e-9)
    std = lr.standardised(d, r)
    assert std["std_coef"] == pytest.approx(float(r.params["x"]) * np.std(res[:, 0]) / np.std(res[:, 1]), rel=1e-8)


# --------------------------------------------------------------------------------------------
# Panels and series on synthetic source rows
# --------------------------------------------------------------------------------------------


def test_bea_areas_and_income_by_area():
    assert lr.bea_area_of(pd.Series(["55115", "55078", "15005", "01001"])).tolist() == ["55901", "55901", "15901", "01001"]
    inc = lr.income_by_area(synthetic_income())
    shaw = inc[inc["fips"] == "55901"].set_index("year")
    assert set(inc["fips"]) == {"01001", "01003", "55901", "15001"}
    assert len(shaw) == 2022 - 1969 + 1  # combined row to 1988, summed components from 1989
    assert shaw.loc[1990, "population"] == round(35_000 * 1.21) + round(3_000 * 1.21)
    rel = np.log((1.0 * 35_000 + 0.5 * 3_000) / 38_000)  # population-weighted relative income
    assert shaw.loc[2000, "log_pcpi_rel_us"] == pytest.approx(rel, abs=1e-4)
    a = inc[inc["fips"] == "01001"].set_index("year")
    assert a.loc[1980, "log_pcpi_rel_us"] == pytest.approx(np.log(0.8), abs=1e-4)


def test_income_by_area_refuses_double_counting():
    bad = synthetic_income()
    bad.loc[(bad["fips"] == "55115") & (bad["year"] == 1980), ["population", "personal_income_thousands"]] = [100, 100]
    with pytest.raises(ValueError, match="counted twice"):
        lr.income_by_area(bad)


def test_decadal_panel_aggregates_excludes_and_differences():
    panel = lr.decadal_panel(synthetic_congregations(), lr.income_by_area(synthetic_income()), regions=REGIONS)
    assert set(panel["fips"]) == {"01001", "01003", "55901", "15001"}  # Alaska and Virginia left out
    shaw = panel[panel["fips"] == "55901"].set_index("wave")
    assert shaw.loc[1980, "congregations_per_1k"] == pytest.approx(1000 * 44 / 38_000)
    a = panel[panel["fips"] == "01001"].set_index("wave")
    assert a.loc[1990, "inc_growth_next"] == pytest.approx(0.0, abs=1e-4)  # relative income constant
    assert a.loc[1980, "inc_growth_past"] == pytest.approx(0.0, abs=1e-4)  # 1970 exists
    assert np.isnan(a.loc[2020, "inc_growth_next"])  # no 2030
    assert a.loc[1980, "dens_change_next"] == pytest.approx(a.loc[1990, "congregations_per_1k"] - a.loc[1980, "congregations_per_1k"])
    assert a.loc[1980, "pop_growth_next"] == pytest.approx(np.log(1.21 / 1.11), abs=1e-4)
    assert panel.loc[panel["fips"] == "01003", "boundary_flag"].sum() == 1
    assert panel.groupby("wave")["coverage_flag"].all().to_dict() == {1980: True, 1990: True, 2000: True, 2010: False, 2020: False}
    # a wave missing from the source breaks the ten-year density change rather than spanning twenty
    gap = lr.decadal_panel(synthetic_congregations().query("wave != 2000"), lr.income_by_area(synthetic_income()),
                           regions=REGIONS)
    assert gap.loc[(gap["fips"] == "01001") & (gap["wave"] == 1990), "dens_change_next"].isna().all()


def test_decadal_panel_area_is_missing_if_a_component_is():
    cong = synthetic_congregations()
    cong.loc[(cong["fips"] == "55078") & (cong["wave"] == 1990), "congregations"] = pd.NA
    panel = lr.decadal_panel(cong, lr.income_by_area(synthetic_income()), regions=REGIONS)
    shaw = panel[panel["fips"] == "55901"].set_index("wave")
    assert np.isnan(shaw.loc[1990, "congregations_per_1k"]) and shaw.loc[1990, "adherents_per_100"] > 0


def test_century_rates_are_ratios_of_sums_on_the_contiguous_territory():
    rates = lr.century_rates(synthetic_congregations(), regions=REGIONS)
    us = rates.xs("United States", level="area")
    members_1926 = 3_000 + 1_000 + 9_000 + 6_000 + 100
    assert us.loc[1926, "per_100"] == pytest.approx(100 * members_1926 / (8_000 + 2_000 + 20_000 + 10_000 + 1_000))
    assert us.loc[1926, "measure"] == "members" and us.loc[1980, "measure"] == "adherents"
    assert np.isnan(us.loc[1926, "congregations_per_1k"])
    cng_1980 = 30 + 60 + 40 + 4 + 20  # Hawaii (15001) and Alaska (02013) left out, Virginia kept
    assert us.loc[1980, "congregations_per_1k"] == pytest.approx(1000 * cng_1980 / (20_000 + 50_000 + 35_000 + 3_000 + 30_000))
    assert set(rates.index.get_level_values("area")) == {"United States", "South", "Midwest"}  # no West left


def test_county_rates_and_historical_membership_sum_shared_codes():
    cong = synthetic_congregations()
    r = lr.county_rates(cong, 1926, "per_100")
    assert r["01001"] == pytest.approx(100 * 4_000 / 10_000)
    hist = lr.historical_membership(cong)
    assert hist.loc["01001", "members_per_100_hist"] == pytest.approx(40.0)
    assert hist.loc["01001", "log_population_1930"] == pytest.approx(np.log(10_000))


def test_iv_cross_section_outcomes():
    cong = synthetic_congregations()
    panel = lr.decadal_panel(cong, lr.income_by_area(synthetic_income()), regions=REGIONS)
    cs = lr.iv_cross_section(panel, lr.historical_membership(cong)).set_index("fips")
    assert set(cs.index) == {"01001", "01003"}  # 55901 is a BEA combination: no single 1930 county
    assert cs.loc["01001", "inc_growth_decade"] == pytest.approx(0.0, abs=1e-4)


def test_decimate_keeps_the_ring_closed():
    ring = np.column_stack([np.cos(np.linspace(0, 2 * np.pi, 101)), np.sin(np.linspace(0, 2 * np.pi, 101))])
    out = lr._decimate(ring, 4)
    assert len(out) == 27 and np.allclose(out[-1], ring[-1])
    assert lr._decimate(ring[:10], 4) is not None and len(lr._decimate(ring[:10], 4)) == 10
