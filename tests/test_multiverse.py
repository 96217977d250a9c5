"""Tests of the multiverse engine (analysis/multiverse.py).

Reference: every fast-path estimator, unweighted and population-weighted, is checked against
analysis.estimation.fit (linearmodels; its weights are checked against pyfixest in
tests/test_crosslibrary_pyfixest.py) on a SYNTHETIC unbalanced county panel made here (not real data).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import multiverse as mv
from analysis.estimation import ModelSpec, fit
from analysis.panels import ALL_COUNTS

WAVES = (1997, 2005, 2009, 2014)
REF = {"pooled": ("pooled", "time"), "fe": ("fe", "unit"), "twfe": ("twfe", "unit+time"),
       "state-year": ("twfe", "state-by-year"), "fd": ("fd", "time"), "long-diff": ("fd", "time")}


def synthetic_panel(n_states: int = 6, per_state: int = 12, seed: int = 0) -> pd.DataFrame:
    """SYNTHETIC county-wave panel with the columns the engine uses (unbalanced: a few gaps)."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_states):
        for c in range(per_state):
            fips = f"{s + 1:02d}{c + 1:03d}"
            a = rng.normal()
            pop0 = float(rng.choice([5_000, 20_000, 80_000]))
            for t, year in enumerate(WAVES):
                dens = 1.4 + 0.3 * a + 0.1 * rng.normal()
                pop = pop0 * (1 + 0.02 * t + 0.01 * rng.normal())
                counts = rng.multinomial(round(dens * pop / 1000), np.full(len(ALL_COUNTS), 1 / len(ALL_COUNTS)))
                rows.append({
                    "fips": fips, "year": year, "state_fips": f"{s + 1:02d}",
                    "population": pop,
                    **dict(zip(ALL_COUNTS, counts.astype(float))),
                    "assn_per_1k": dens,
                    "civic_religious_per_10k": 10 + 3 * a + rng.normal(),
                    "turnout_pct": 55 + 5 * rng.normal(),
                    "census_response_pct": 70 + 4 * rng.normal(),
                    "unemployment_rate": 5 + 2 * a - 0.5 * dens + 0.4 * t + rng.normal(),
                    "poverty_rate": 15 + 3 * a - 1.0 * dens + rng.normal(),
                })
    df = pd.DataFrame(rows)
    df.loc[[5, 17, 50, 51], "unemployment_rate"] = np.nan  # gaps
    df.loc[[9, 100], "assn_per_1k"] = np.nan
    df.loc[df["year"] != 1997, ["n_membership_sports", "n_membership_nec"]] = np.nan  # 1997-only classes
    df.loc[100, list(ALL_COUNTS)] = np.nan  # a source gap: every count missing
    return df


@pytest.fixture(scope="module")
def panel():
    return synthetic_panel()


def _spec(**kw):
    base = dict(outcome="unemployment_rate", density="assn_per_1k", estimator="twfe", controls="none",
                sample="all", timing="same", weights="none")
    return {**base, **kw}


_SETUPS = [("all", "same", "civic+pop", "none", "assn_per_1k"), ("balanced", "lag1", "none", "none", "assn_per_1k"),
           ("no2009", "same", "civic", "population", "assn_per_1k"),
           ("pop10k", "lag1", "civic", "population", "assn_per_1k"),
           ("no1997", "same", "none", "population", "log_count_assn"),
           ("all", "lag1", "civic", "none", "log_count_community"),
           ("balanced", "same", "none", "population", "civic_religious_per_10k")]
_CASES = [(e, *setup) for e in mv.ESTIMATORS for setup in _SETUPS
          if not (e == "long-diff" and (setup[1] == "lag1" or setup[0] in ("no2009", "no1997")))]  # excluded


def _reference(s: pd.DataFrame, estimator: str):
    est, eff = REF[estimator]
    ws = tuple(c for c in s.columns if c[:1] == "w" and c[1:].isdigit())
    weights = "weight" if "weight" in s.columns else None
    return fit(ModelSpec(outcome="y", regressors=("x",), controls=ws, estimator=est, effects=eff,
                         cov="cluster-unit", weights=weights), s)


@pytest.mark.parametrize("estimator,sample,timing,controls,weights,density", _CASES)
def test_fast_path_equals_linearmodels(panel, estimator, sample, timing, controls, weights, density):
    spec = _spec(estimator=estimator, sample=sample, timing=timing, controls=controls, weights=weights,
                 density=density)
    s = mv.prepare_sample(panel, spec)
    assert ("weight" in s.columns) == (weights == "population")
    got = mv.fit_spec(s, estimator)
    ref = _reference(s, estimator)
    assert got["estimate"] == pytest.approx(float(ref.params["x"]), rel=1e-9, abs=1e-12)
    assert got["se"] == pytest.approx(float(ref.std_errors["x"]), rel=1e-9)
    assert got["p"] == pytest.approx(float(ref.pvalues["x"]), rel=1e-6, abs=1e-12)
    assert got["ci_low"] == pytest.approx(float(ref.conf_int.loc["x", "lower"]), rel=1e-9)
    assert got["nobs"] == ref.nobs
    # the run path (shared workspace) gives the same numbers as the one-off fit
    row = mv.run_multiverse(panel, pd.DataFrame([spec]), n_jobs=1, cache_dir=None, progress=False).iloc[0]
    assert row["estimate"] == pytest.approx(got["estimate"], rel=1e-10, abs=1e-13)
    assert row["se"] == pytest.approx(got["se"], rel=1e-10)


def test_ratio_free_density_forces_log_population(panel):
    spec = _spec(density="log_count_assn", controls="civic")
    assert mv.spec_controls(spec) == ("turnout_pct", "census_response_pct", "log_population")
    assert mv.spec_controls(_spec(density="assn_per_1k", controls="civic")) == ("turnout_pct", "census_response_pct")
    s = mv.prepare_sample(panel, spec)
    assert list(s.columns[-3:]) == ["w0", "w1", "w2"]
    # the density is log(1 + the sum of the counts); a missing count counts as zero, all missing is missing
    counts = panel[list(ALL_COUNTS)]
    want = np.log1p(counts.fillna(0).sum(axis=1).where(counts.notna().any(axis=1)))
    d = mv.add_derived_columns(panel)
    np.testing.assert_allclose(d["log_count_assn"], want)
    assert np.isnan(d.loc[100, "log_count_assn"])
    np.testing.assert_allclose(d["log_population"], np.log(panel["population"]))
    row = d.set_index(["fips", "year"]).loc[(s["fips"].iloc[0], s["year"].iloc[0])]
    assert s["x"].iloc[0] == row["log_count_assn"] and s["w2"].iloc[0] == row["log_population"]
    # the fit equals linearmodels with log population entered as a control
    ref = fit(ModelSpec(outcome="unemployment_rate", regressors=("log_count_assn",),
                        controls=("turnout_pct", "census_response_pct", "log_population"), estimator="twfe"), d)
    assert mv.fit_spec(s, "twfe")["estimate"] == pytest.approx(float(ref.params["log_count_assn"]), rel=1e-9)


def test_ratio_free_exclusion_and_missing_counts(panel):
    specs, dropped = mv.expand_grid({"outcome": ["poverty_rate"], "density": ["log_count_community", "assn_per_1k"],
                                     "controls": list(mv.CONTROL_SETS)})
    assert len(specs) == 5 and len(dropped) == 1
    assert dropped.iloc[0][["density", "controls"]].tolist() == ["log_count_community", "civic+pop"]
    assert "already holds log population fixed" in dropped.iloc[0]["reason"]
    with pytest.raises(mv.MultiverseError, match="'log_count_assn'.*needs the count column 'n_golf'"):
        mv.check_grid(panel.drop(columns="n_golf"), mv.expand_grid({**ONE, "density": ["log_count_assn"]})[0])


def test_population_weight_is_the_county_mean(panel):
    w = mv.county_mean_population(panel)
    np.testing.assert_allclose(w, panel.groupby("fips")["population"].transform("mean"))
    s = mv.prepare_sample(panel, _spec(weights="population", sample="no2009"))
    # the county's mean over all waves of the panel, not over the sample's waves
    assert (s.groupby("fips")["weight"].nunique() == 1).all()
    np.testing.assert_allclose(s["weight"], s["fips"].map(panel.groupby("fips")["population"].mean()))
    with pytest.raises(mv.MultiverseError, match="'weights' option 'population' needs a 'population' column"):
        _run(panel.drop(columns="population"), {**ONE, "weights": ["population"]})


def test_no1997_sample_drops_the_first_wave(panel):
    s = mv.prepare_sample(panel, _spec(sample="no1997", timing="lag1"))
    assert set(s["year"]) == {2009, 2014}
    row = s.loc[(s["fips"] == "01002") & (s["year"] == 2009)].iloc[0]
    assert row["x"] == panel.loc[(panel["fips"] == "01002") & (panel["year"] == 2005), "assn_per_1k"].iloc[0]


def test_samples_and_lags(panel):
    lag = mv.prepare_sample(panel, _spec(timing="lag1", density="civic_religious_per_10k"))
    assert set(lag["year"]) == {2005, 2009, 2014}
    row = lag.loc[(lag["fips"] == "01002") & (lag["year"] == 2009)].iloc[0]
    prev = panel.loc[(panel["fips"] == "01002") & (panel["year"] == 2005), "civic_religious_per_10k"].iloc[0]
    assert row["x"] == prev
    no09 = mv.prepare_sample(panel, _spec(timing="lag1", sample="no2009", density="civic_religious_per_10k"))
    row = no09.loc[(no09["fips"] == "01002") & (no09["year"] == 2014)].iloc[0]
    assert row["x"] == panel.loc[(panel["fips"] == "01002") & (panel["year"] == 2005),
                                 "civic_religious_per_10k"].iloc[0]
    bal = mv.prepare_sample(panel, _spec(sample="balanced"))
    assert (bal.groupby("fips").size() == 4).all()
    # gaps at rows 5, 17, 50+51 (outcome) and 9, 100 (density): counties 1, 4, 12, 2, 25 of 72
    assert bal["fips"].nunique() == panel["fips"].nunique() - 5
    big = mv.prepare_sample(panel, _spec(sample="pop10k"))
    first = panel.groupby("fips")["population"].first()
    assert set(big["fips"]) == set(first.index[first >= 10_000])
    ld = mv.prepare_sample(panel, _spec(estimator="long-diff"))
    assert set(ld["year"]) == {1997, 2014}


def test_expand_grid_counts_and_exclusions():
    specs, dropped = mv.expand_grid(mv.chapter8_grid())
    assert len(specs) + len(dropped) == 4 * 8 * 6 * 3 * 5 * 2 * 2
    assert len(specs) == 9328
    assert set(dropped.loc[dropped["estimator"] != "long-diff", "controls"]) == {"civic+pop"}
    assert not ((specs["estimator"] == "long-diff") & (specs["timing"] == "lag1")).any()
    assert not ((specs["estimator"] == "long-diff") & specs["sample"].isin(["no2009", "no1997"])).any()
    assert not (specs["density"].isin(list(mv.RATIO_FREE)) & (specs["controls"] == "civic+pop")).any()
    # the first grid (before issue 12) is a subset with its 2,580 specifications
    assert int(mv.in_first_grid(specs).sum()) == 2580


@pytest.mark.parametrize("grid,needle", [
    ({"outcome": ["poverty_rate"], "density": ["assn_per_1k"], "estimatr": ["twfe"]}, "'estimatr'"),
    ({"outcome": ["poverty_rate"], "density": ["assn_per_1k"], "estimator": ["tw-fe"]}, "'estimator'"),
    ({"outcome": ["poverty_rate"], "density": ["assn_per_1k"], "sample": ["rural"]}, "'sample'"),
    ({"outcome": ["poverty_rate"], "density": ["assn_per_1k"], "controls": []}, "'controls'"),
    ({"density": ["assn_per_1k"]}, "'outcome'"),
])
def test_bad_grid_names_choice(panel, grid, needle):
    with pytest.raises(mv.MultiverseError, match=needle):
        mv.run_multiverse(panel, grid, n_jobs=1, cache_dir=None, progress=False)


def test_bad_data_fails_before_any_fit(panel, monkeypatch):
    calls = []
    monkeypatch.setattr(mv, "fit_spec", lambda *a, **k: calls.append(1))
    with pytest.raises(mv.MultiverseError, match="'outcome'.*'poverty_rte'"):
        mv.run_multiverse(panel, {"outcome": ["poverty_rte"], "density": ["assn_per_1k"]},
                          n_jobs=1, cache_dir=None, progress=False)
    empty = panel.copy()
    empty.loc[empty["year"] != 2014, "poverty_rate"] = np.nan  # one wave left: nothing to difference
    grid = {"outcome": ["unemployment_rate", "poverty_rate"], "density": ["assn_per_1k"], "estimator": ["twfe", "fd"]}
    with pytest.raises(mv.MultiverseError, match="'sample' option 'all'.*'fd'.*poverty_rate"):
        mv.run_multiverse(empty, grid, n_jobs=1, cache_dir=None, progress=False)
    assert calls == []


@pytest.fixture
def no_fitting(monkeypatch):
    """Make the fast path explode, so an error must come before anything is fitted (every fit,
    one-off or in a run, goes through _ols_cluster)."""
    def boom(*args, **kwargs):
        raise AssertionError("a specification was fitted before the grid was checked")

    monkeypatch.setattr(mv, "_ols_cluster", boom)


def _run(df, grid):
    return mv.run_multiverse(df, grid, n_jobs=1, cache_dir=None, progress=False)


ONE = {"outcome": ["unemployment_rate"], "density": ["assn_per_1k"], "estimator": ["twfe"]}


def test_duplicated_keys_are_named(panel, no_fitting):
    data = pd.concat([panel, panel.iloc[[0, 5, 5]]], ignore_index=True)
    with pytest.raises(mv.MultiverseError, match=r"not uniquely indexed by \(fips, year\)") as err:
        _run(data, ONE)
    assert "5 rows share 2 duplicated key(s)" in str(err.value)
    assert "('01001', 1997)" in str(err.value) and "('01002', 2005)" in str(err.value)
    with pytest.raises(mv.MultiverseError, match="not uniquely indexed"):
        mv.prepare_sample(data, _spec())


def test_missing_keys_are_named(panel, no_fitting):
    data = panel.assign(fips=panel["fips"].where(panel.index != 3))
    with pytest.raises(mv.MultiverseError, match="'fips' column has 1 missing value"):
        _run(data, ONE)


@pytest.mark.parametrize("choice,bad,expected", [
    ("sample", "everything", "'all', 'balanced', 'pop10k', 'no2009', 'no1997'"),
    ("weights", "populaton", "'none', 'population'.*Did you mean 'population'"),
    ("timing", "lag2", "'same', 'lag1'.*Did you mean 'lag1'"),
    ("estimator", "tw-fe", "Did you mean 'twfe'"),
    ("controls", "civc", "Did you mean 'civic'"),
])
def test_unknown_option_in_a_spec_table_is_named(panel, no_fitting, choice, bad, expected):
    specs, _ = mv.expand_grid({**ONE, "controls": ["none", "civic"]})
    specs.loc[1, choice] = bad
    with pytest.raises(mv.MultiverseError, match=f"Choice '{choice}' has unknown option '{bad}'.*{expected}"):
        _run(panel, specs)
    with pytest.raises(mv.MultiverseError, match=f"'{choice}'.*'{bad}'"):
        mv.check_grid(panel, specs)
    with pytest.raises(mv.MultiverseError, match=f"'{choice}'.*'{bad}'"):
        mv.prepare_sample(panel, specs.loc[1].to_dict())


def test_spec_table_without_a_choice_is_named(panel, no_fitting):
    specs, _ = mv.expand_grid(ONE)
    with pytest.raises(mv.MultiverseError, match="no column 'timing'"):
        _run(panel, specs.drop(columns="timing"))
    with pytest.raises(mv.MultiverseError, match="no column 'weights'"):
        _run(panel, specs.drop(columns="weights"))
    with pytest.raises(mv.MultiverseError, match="no column 'sample'.*Did you mean 'samples'"):
        _run(panel, specs.rename(columns={"sample": "samples"}))


def test_missing_columns_are_named_with_close_matches(panel, no_fitting):
    with pytest.raises(mv.MultiverseError, match="'poverty_rte'.*Did you mean 'poverty_rate'"):
        _run(panel, {"outcome": ["poverty_rte"], "density": ["assn_per_1k"]})
    with pytest.raises(mv.MultiverseError, match="'turnout_pct'.*Did you mean 'turnout_pc'"):
        _run(panel.rename(columns={"turnout_pct": "turnout_pc"}), {**ONE, "controls": ["civic"]})
    with pytest.raises(mv.MultiverseError, match="'controls' option 'civic' needs column 'turnout_pct'"):
        mv.prepare_sample(panel.drop(columns="turnout_pct"), _spec(controls="civic"))
    with pytest.raises(mv.MultiverseError, match="'outcome'.*'povrty'.*Did you mean 'poverty_rate'"):
        mv.prepare_sample(panel, _spec(outcome="povrty"))
    with pytest.raises(mv.MultiverseError, match="'density'.*'turnout_pct' is also a control of 'civic'"):
        _run(panel, {**ONE, "density": ["turnout_pct"], "controls": ["civic"]})


def test_infinite_values_are_named(panel, no_fitting):
    data = panel.copy()
    data.loc[[3, 7], "assn_per_1k"] = [np.inf, -np.inf]
    with pytest.raises(mv.MultiverseError, match="'assn_per_1k' has 2 infinite value") as err:
        _run(data, ONE)
    assert "('01001', 2014)" in str(err.value) and "('01002', 2014)" in str(err.value)


@pytest.mark.parametrize("estimator", list(mv.ESTIMATORS))
def test_constant_density_is_degenerate(panel, no_fitting, estimator):
    with pytest.raises(mv.MultiverseError, match="'density'.*'assn_per_1k'.* is constant in the sample"):
        _run(panel.assign(assn_per_1k=1.5), {**ONE, "estimator": [estimator]})


@pytest.mark.parametrize("estimator,series,needle", [
    ("pooled", "wave", "does not vary across counties within any wave"),
    ("twfe", "wave", "does not vary across counties within any wave"),
    ("fe", "county", "constant over time within every county"),
    ("state-year", "county", "constant over time within every county"),
    ("state-year", "state-wave", "does not vary across the counties of any state within a wave"),
    ("fd", "wave", "changes by the same amount in every county"),
    ("long-diff", "wave", "changes by the same amount in every county"),
])
def test_absorbed_density_is_degenerate(panel, no_fitting, estimator, series, needle):
    dens = {"county": panel.groupby("fips")["assn_per_1k"].transform("mean"),  # no change over time
            "wave": panel["year"].map({1997: 1.0, 2005: 1.2, 2009: 1.1, 2014: 1.4}),  # a national series
            "state-wave": panel.groupby(["state_fips", "year"])["turnout_pct"].transform("mean")}[series]
    with pytest.raises(mv.MultiverseError, match=f"'density'.*'assn_per_1k'.*{needle}"):
        _run(panel.assign(assn_per_1k=dens), {**ONE, "estimator": [estimator]})


def test_constant_control_is_degenerate(panel, no_fitting):
    with pytest.raises(mv.MultiverseError, match="'controls' option 'civic'.*'turnout_pct'.*constant"):
        _run(panel.assign(turnout_pct=50.0), {**ONE, "controls": ["civic"]})


@pytest.mark.parametrize("estimator", list(mv.ESTIMATORS))
def test_single_county_is_degenerate(panel, no_fitting, estimator):
    one = panel.loc[panel["fips"] == "01004"]  # no gaps
    with pytest.raises(mv.MultiverseError, match="only 1 county.*at least two"):
        _run(one, {**ONE, "estimator": [estimator]})


def test_fit_spec_checks_a_degenerate_sample(panel):
    s = mv.prepare_sample(panel, _spec()).assign(x=2.0)
    with pytest.raises(mv.MultiverseError, match="'x' is constant in the sample"):
        mv.fit_spec(s, "twfe")


GRID = {"outcome": ["unemployment_rate", "poverty_rate"], "density": ["assn_per_1k", "civic_religious_per_10k"],
        "estimator": ["pooled", "twfe", "fd", "long-diff"], "controls": ["none", "civic"],
        "timing": ["same", "lag1"]}


def test_table_parallel_and_cache(panel, tmp_path):
    serial = mv.run_multiverse(panel, GRID, n_jobs=1, cache_dir=None, progress=False)
    assert len(serial) == 2 * 2 * 4 * 2 * 2 - 2 * 2 * 2  # long-diff x lag1 dropped
    assert list(serial.columns[:7]) == list(mv.CHOICES)
    for c in ("estimate", "se", "ci_low", "ci_high", "p", "nobs", "aligned"):
        assert c in serial.columns
    row = serial.iloc[5]
    one = mv.fit_spec(mv.prepare_sample(panel, row[list(mv.CHOICES)].to_dict()), row["estimator"])
    assert row["estimate"] == pytest.approx(one["estimate"], rel=1e-12)
    par = mv.run_multiverse(panel, GRID, n_jobs=2, cache_dir=tmp_path, progress=False)
    pd.testing.assert_frame_equal(serial, par)
    assert par.attrs["from_cache"] is False
    again = mv.run_multiverse(panel, GRID, n_jobs=2, cache_dir=tmp_path, progress=False)
    assert again.attrs["from_cache"] is True
    pd.testing.assert_frame_equal(serial, again)
    assert [p.suffix for p in tmp_path.iterdir()] == [".parquet"]  # no temporary file left
    changed = panel.copy()
    changed.loc[3, "poverty_rate"] += 1.0
    third = mv.run_multiverse(changed, GRID, n_jobs=1, cache_dir=tmp_path, progress=False)
    assert third.attrs["from_cache"] is False and len(list(tmp_path.iterdir())) == 2
    # a column the grid does not use does not invalidate the cache
    extra = panel.assign(unused=1.0)
    assert mv.run_multiverse(extra, GRID, n_jobs=1, cache_dir=tmp_path, progress=False).attrs["from_cache"]


def test_dask_local_cluster_matches(panel):
    distributed = pytest.importorskip("distributed")
    serial = mv.run_multiverse(panel, GRID, n_jobs=1, cache_dir=None, progress=False)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            by_address = mv.run_multiverse(panel, GRID, scheduler=cluster.scheduler_address, cache_dir=None,
                                           progress=False, chunk_size=7)
            by_client = mv.run_multiverse(panel, GRID, scheduler=client, cache_dir=None, progress=False)
    pd.testing.assert_frame_equal(serial, by_address)
    pd.testing.assert_frame_equal(serial, by_client)


def test_standardise_aligns_with_thesis(panel):
    t = mv.run_multiverse(panel, {"outcome": ["unemployment_rate"], "density": ["assn_per_1k"],
                                  "estimator": ["twfe"]}, n_jobs=1, cache_dir=None, progress=False)
    r = t.iloc[0]
    d = panel.dropna(subset=["assn_per_1k"])
    sdx = (d["assn_per_1k"] - d.groupby("fips")["assn_per_1k"].transform("mean")).std()
    assert r["sd_x"] == pytest.approx(sdx, rel=1e-10)
    assert r["aligned"] == pytest.approx(-r["estimate"] * sdx / r["sd_y"], rel=1e-10)
    assert r["estimate"] < 0 and r["aligned"] > 0  # synthetic: density lowers unemployment within counties
    s = mv.curve_summary(t)
    assert s.loc["(all)", "share_thesis"] == 1.0 and s.loc["(all)", "n"] == 1


def test_within_permutations_are_within_units():
    unit = np.repeat(np.arange(50), [1, 2, 3, 4, 4] * 10)
    idx = mv._within_permutations(unit, 30, np.random.default_rng(1))
    assert (idx[:, 0] == np.arange(len(unit))).all()
    for r in range(30):
        assert (unit[idx[:, r]] == unit).all()
        assert sorted(idx[:, r]) == list(range(len(unit)))
    # a two-row unit is swapped about half the time
    swaps = (idx[1, 1:] == 2).mean()
    assert 0.2 < swaps < 0.8


@pytest.mark.parametrize("weights", ["none", "population"])
@pytest.mark.parametrize("estimator", list(mv.WITHIN_ESTIMATORS))
def test_permuted_fits_row0_is_observed(panel, estimator, weights):
    spec = _spec(estimator=estimator, controls="civic", sample="all", weights=weights)
    s = mv.prepare_sample(panel, spec)
    p = mv.permuted_fits(s, estimator, 20, seed=3)
    one = mv.fit_spec(s, estimator)
    assert p.loc[0, "estimate"] == pytest.approx(one["estimate"], rel=1e-8)
    assert p.loc[0, "se"] == pytest.approx(one["se"], rel=1e-8)
    assert p["estimate"].iloc[1:].std() > 0
    # a permuted fit equals a direct fit on the permuted data
    idx = mv._within_permutations(mv._codes(s.sort_values(["fips", "year"])["fips"].to_numpy()), 20,
                                  np.random.default_rng(3))
    d = s.sort_values(["fips", "year"]).reset_index(drop=True)
    d["x"] = d["x"].to_numpy()[idx[:, 7]]
    direct = mv.fit_spec(d, estimator)
    assert p.loc[7, "estimate"] == pytest.approx(direct["estimate"], rel=1e-8)
    assert p.loc[7, "se"] == pytest.approx(direct["se"], rel=1e-8)


def test_panel_permutations_shared_and_within_county(panel):
    slim = mv._slim(panel, pd.DataFrame([_spec()]))
    a = mv._panel_permutations(slim, "assn_per_1k", 15, seed=5)
    b = mv._panel_permutations(slim, "assn_per_1k", 15, seed=5)
    np.testing.assert_array_equal(a, b)  # deterministic: every chunk sees the same draws
    d = slim.sort_values(["fips", "year"]).reset_index(drop=True)
    np.testing.assert_array_equal(a[:, 0], d["assn_per_1k"].to_numpy())
    for r in range(15):
        got = pd.Series(a[:, r]).groupby(d["fips"]).apply(lambda v: sorted(v.dropna()))
        want = d["assn_per_1k"].groupby(d["fips"]).apply(lambda v: sorted(v.dropna()))
        assert got.equals(want)
        assert np.isnan(a[:, r]).sum() == 2  # missing values stay where they are
    # a lagged specification's permuted density is the permuted value of the previous wave
    base = mv._base_frame(slim, "all", "lag1")
    rows = mv._spec_rows(base, _spec(timing="lag1")).sort_values(["fips", "year"])
    obs = a[rows["src"].to_numpy().astype(int), 0]
    np.testing.assert_array_equal(obs, rows["x"].to_numpy())


def test_permutation_test_runs_and_caches(panel, tmp_path):
    specs, _ = mv.expand_grid({"outcome": ["unemployment_rate", "poverty_rate"], "density": ["assn_per_1k"],
                               "estimator": ["pooled", "twfe", "fd"]})
    null, tests = mv.permutation_test(panel, specs, reps=20, n_jobs=1, cache_dir=tmp_path, progress=False)
    assert len(null) == 20
    observed = mv.run_multiverse(panel, specs[specs["estimator"] != "pooled"], n_jobs=1, cache_dir=None,
                                 progress=False)
    assert null.loc[0, "share_thesis"] == pytest.approx(mv.curve_summary(observed).loc["(all)", "share_thesis"])
    assert null.loc[0, "median_aligned"] == pytest.approx(mv.curve_summary(observed).loc["(all)", "median_aligned"])
    assert set(tests.index) == {"median_aligned", "share_thesis", "share_sig_thesis", "share_sig_against"}
    assert ((tests["p_value"] >= 1 / 20) & (tests["p_value"] <= 1)).all()
    null2, tests2 = mv.permutation_test(panel, specs, reps=20, n_jobs=1, cache_dir=tmp_path, progress=False)
    pd.testing.assert_frame_equal(tests, tests2)
    # in parallel (each chunk its own workspace) the same null curves
    null3, _ = mv.permutation_test(panel, specs, reps=20, n_jobs=2, cache_dir=None, progress=False)
    pd.testing.assert_frame_equal(null, null3, check_exact=False, rtol=1e-10)


def test_permutation_null_summary_is_curve_summary(panel):
    """The vectorised summary of the null curves equals curve_summary of each permutation."""
    specs, _ = mv.expand_grid({"outcome": ["unemployment_rate", "poverty_rate"], "density": ["assn_per_1k"],
                               "estimator": ["twfe", "fd"], "weights": ["none", "population"]})
    rng = np.random.default_rng(0)
    long = pd.concat([specs.assign(rep=r, aligned=rng.normal(size=len(specs)),
                                   significant_thesis=rng.random(len(specs)) < 0.3,
                                   significant_against=rng.random(len(specs)) < 0.1) for r in range(5)])
    got = mv._null_summary(long)
    for r in range(5):
        want = mv.curve_summary(long[long["rep"] == r], by=None).loc["(all)"]
        pd.testing.assert_series_equal(got.loc[r].astype(float), want.astype(float), check_names=False)


def test_straightforward_path_matches_fast_path(panel):
    """The baseline loop of make bench fits the same models as the fast path."""
    for estimator in mv.ESTIMATORS:
        s = mv.prepare_sample(panel, _spec(estimator=estimator, controls="civic", weights="population"))
        fast, slow = mv.fit_spec(s, estimator), mv.fit_spec_straightforward(s, estimator)
        assert slow["estimate"] == pytest.approx(fast["estimate"], rel=1e-9, abs=1e-12)
        assert slow["se"] == pytest.approx(fast["se"], rel=1e-9)


@pytest.mark.parametrize("estimator,effects,weights", [
    ("twfe", "unit+time", None), ("twfe", "state-by-year", None), ("twfe", "state-by-year", "w"),
    ("fe", "unit", "w"), ("pooled", "time", "w"), ("fd", "time", None), ("fd", "time", "w"),
])
def test_fit_fast_equals_fit(panel, estimator, effects, weights):
    """fit_fast: a ModelSpec through the fast path gives analysis.estimation.fit's first coefficient."""
    data = panel.assign(w=mv.county_mean_population(panel))
    spec = ModelSpec(outcome="poverty_rate", regressors=("assn_per_1k",), controls=("turnout_pct",),
                     estimator=estimator, effects=effects, weights=weights)
    got, ref = mv.fit_fast(spec, data), fit(spec, data)
    for a, b in [(got.params, ref.params), (got.std_errors, ref.std_errors)]:
        assert float(a["assn_per_1k"]) == pytest.approx(float(b["assn_per_1k"]), rel=1e-9, abs=1e-12)
    assert float(got.pvalues["assn_per_1k"]) == pytest.approx(float(ref.pvalues["assn_per_1k"]), rel=1e-6)
    assert got.nobs == ref.nobs


def test_fit_fast_refuses_what_it_does_not_cover(panel):
    from analysis.estimation import SpecificationError

    with pytest.raises(SpecificationError, match="fit_fast"):
        mv.fit_fast(ModelSpec(outcome="poverty_rate", regressors=("assn_per_1k",), cov="cluster-state"), panel)
    with pytest.raises(SpecificationError, match="fit_fast"):
        mv.fit_fast(ModelSpec(outcome="poverty_rate", regressors=("assn_per_1k",), estimator="re"), panel)
