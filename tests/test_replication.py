"""analysis.replication: Satyanath, Voigtlaender and Voth (2017) and Guiso, Sapienza and Zingales (2016).

Reference values:
* SVV (2017, JPE 125(2)), Table 3, Panel A, as printed (compared at printed precision): column 3,
  all associations per capita, no controls, 0.12588 (robust SE 0.05065), N = 229; column 4, the
  same with log population 1925, Catholic share and blue-collar share, 0.16027 (0.05379), N = 227;
  column 5, civic associations with the same controls, 0.42934 (0.13165), N = 226.
* The wild cluster bootstrap p-value (full enumeration) is compared with the ``wildboottest``
  package (which enumerates too when B > 2^G) on SYNTHETIC data and on column 4; the clustered
  standard errors with statsmodels ``cov_type="cluster"``.
* The HC1 fits of columns 3-5 are cross-checked against statsmodels ``OLS(...).fit(cov_type="HC1")``
  and linearmodels ``IV2SLS(..., None, None).fit(cov_type="robust")`` (HC1 with debiased=True).
The real files are read through the manifest (skipped if they cannot be fetched); the bad-input
tests use SYNTHETIC Stata files written here.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from printed import assert_printed
from scipy import stats

from analysis import replication as rp


@functools.cache
def _svv() -> pd.DataFrame:
    try:
        return rp.load_svv()
    except rp.ReplicationDataError:
        raise
    except Exception as exc:  # file not fetchable on this machine
        pytest.skip(f"SVV replication file not available: {exc}")


@pytest.mark.parametrize("col", [3, 4, 5])
def test_svv_table3_reproduces_published(col):
    r = rp.svv_table3a(_svv())[col]
    x = rp.SVV_TABLE3A[col][0]
    pub = rp.SVV_PUBLISHED[col]
    assert_printed(float(r.params[x]), pub["coef"], f"SVV T3A col {col} coefficient")
    assert_printed(float(r.std_errors[x]), pub["se"], f"SVV T3A col {col} robust SE")
    assert r.nobs == pub["nobs"]


def test_svv_published_values_as_printed():
    # the paper's Table 3, Panel A, typed once here and in SVV_PUBLISHED
    assert rp.SVV_PUBLISHED == {3: {"coef": "0.12588", "se": "0.05065", "nobs": 229},
                                4: {"coef": "0.16027", "se": "0.05379", "nobs": 227},
                                5: {"coef": "0.42934", "se": "0.13165", "nobs": 226}}


@pytest.mark.parametrize("col", [3, 4, 5])
def test_svv_hc1_matches_statsmodels_and_linearmodels(col):
    from linearmodels.iv import IV2SLS

    d = _svv()
    x, controls = rp.SVV_TABLE3A[col]
    ours = rp.svv_table3a(d)[col]
    s = d[["pcNSentry_std", x, *controls]].dropna()
    X = sm.add_constant(s[[x, *controls]].astype(float))
    ref = sm.OLS(s["pcNSentry_std"].astype(float), X).fit(cov_type="HC1")
    np.testing.assert_allclose(ours.params.to_numpy(), ref.params.to_numpy(), rtol=1e-8)
    np.testing.assert_allclose(ours.std_errors.to_numpy(), ref.bse.to_numpy(), rtol=1e-8)
    lm = IV2SLS(s["pcNSentry_std"].astype(float), X, None, None).fit(cov_type="robust", debiased=True)
    np.testing.assert_allclose(ours.std_errors.to_numpy(), lm.std_errors.to_numpy(), rtol=1e-8)
    assert ours.nobs == int(ref.nobs)


def test_svv_frame_prints_published_values():
    f = rp.svv_table3a_frame(rp.svv_table3a(_svv()))
    assert list(f.index) == [3, 4, 5]
    assert f.loc[3, "published coef"] == "0.12588" and f.loc[4, "published se"] == "0.05379"
    assert f.loc[5, "published coef"] == "0.42934" and f.loc[5, "published N"] == 226
    for col in (3, 4, 5):
        assert f"{f.loc[col, 'coef']:.5f}" == f.loc[col, "published coef"]


def _wildboottest_p(d, y, x, param, cluster):
    import warnings

    from wildboottest.wildboottest import wildboottest

    d = d.dropna(subset=[y, *x, cluster])
    codes = pd.factorize(d[cluster])[0]
    model = sm.OLS(d[y].to_numpy(float), sm.add_constant(d[x].astype(float)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = wildboottest(model, B=2 ** (codes.max() + 1) + 1, cluster=codes, param=param, show=False)
    return float(res["statistic"].iloc[0]), float(res["p-value"].iloc[0])


def test_wild_cluster_bootstrap_matches_wildboottest_on_synthetic_data():
    from analysis.atlas import ols

    rng = np.random.default_rng(3)  # SYNTHETIC: 9 unequal clusters with shared shocks
    g = np.repeat(np.arange(9), [40, 3, 5, 8, 2, 12, 6, 4, 20])
    x1 = rng.normal(size=g.size) + rng.normal(size=9)[g]
    d = pd.DataFrame({"g": g, "x1": x1, "x2": rng.normal(size=g.size),
                      "y": 0.15 * x1 + rng.normal(size=9)[g] + rng.normal(size=g.size)})
    ours = rp.wild_cluster_bootstrap_p(d, "y", ["x1", "x2"], "x1", "g")
    t_ref, p_ref = _wildboottest_p(d, "y", ["x1", "x2"], "x1", "g")
    assert ours["draws"] == 2**9 and ours["n_clusters"] == 9
    assert ours["p"] == pytest.approx(p_ref, abs=1e-12)
    cl = ols(d, "y", ["x1", "x2"], cov="cluster", cluster="g")
    assert ours["t"] == pytest.approx(float(cl.tstats["x1"]), rel=1e-10)
    assert ours["t"] == pytest.approx(t_ref, rel=1e-8)  # the package's CR1 factor is the same
    with pytest.raises(ValueError, match="too many to enumerate"):
        rp.wild_cluster_bootstrap_p(d, "y", ["x1"], "x1", "g", max_enumerate=8)


def test_svv_inference_counts_and_references():
    d = _svv()
    inf = rp.svv_inference(d)
    assert inf["sig_hc1"].tolist() == [True, True, True]
    assert inf["sig_cluster"].tolist() == [True, True, False]  # column 5: p = 0.055 with 16 states
    assert not inf["sig_wcb"].any() and not inf["sig_all"].any()
    assert inf["states"].tolist() == [17, 16, 16] and (inf["largest_state"] == 119).all()
    x, controls = rp.SVV_TABLE3A[4]
    s = d.dropna(subset=["pcNSentry_std", x, *controls, rp.SVV_CLUSTER])
    ref = sm.OLS(s["pcNSentry_std"].astype(float), sm.add_constant(s[[x, *controls]].astype(float))).fit(
        cov_type="cluster", cov_kwds={"groups": pd.factorize(s[rp.SVV_CLUSTER])[0]}, use_t=True)
    assert inf.loc[4, "se_cluster"] == pytest.approx(float(ref.bse[x]), rel=1e-8)
    assert inf.loc[4, "p_cluster"] == pytest.approx(float(ref.pvalues[x]), rel=1e-6)
    _, p_ref = _wildboottest_p(s, "pcNSentry_std", [x, *controls], x, rp.SVV_CLUSTER)
    assert inf.loc[4, "p_wcb"] == pytest.approx(p_ref, abs=1e-12)
    assert f"{inf.loc[4, 'p_wcb']:.4f}" == "0.0839"


def test_svv_prussia_split_difference_is_prussia_minus_rest():
    d = _svv()
    sp = rp.svv_prussia_split(d)
    assert sp["prussia_N"].tolist() == [119, 119, 119] and sp["rest_N"].tolist() == [110, 108, 107]
    np.testing.assert_allclose(sp["diff"], sp["prussia_coef"] - sp["rest_coef"], rtol=1e-9)
    x, controls = rp.SVV_TABLE3A[4]
    s = d[d["Prussia"] == 1].dropna(subset=["pcNSentry_std", x, *controls])
    ref = sm.OLS(s["pcNSentry_std"].astype(float), sm.add_constant(s[[x, *controls]].astype(float))).fit(cov_type="HC1")
    assert sp.loc[4, "prussia_coef"] == pytest.approx(float(ref.params[x]), rel=1e-10)
    assert sp.loc[4, "prussia_se"] == pytest.approx(float(ref.bse[x]), rel=1e-10)


def _write_dta(path, df):
    df.to_stata(path, write_index=False, version=118)
    return path


def test_missing_column_names_file_and_column(tmp_path):
    # SYNTHETIC file: the SVV columns without 'bcollar25'
    rng = np.random.default_rng(0)
    n = 12
    fake = pd.DataFrame({
        "cityid": np.arange(n, dtype=float), "landweimar": ["Baden"] * n,
        "pcNSentry_std": rng.normal(size=n), "clubs_all_pc": rng.uniform(1, 5, n),
        "clubs_civic_pc": rng.uniform(0, 2, n), "pop25": rng.uniform(1e4, 1e5, n),
        "share_cath25": rng.uniform(0, 1, n),
    })
    p = _write_dta(tmp_path / "Dataset_Bowling_Replication_JPE.dta", fake)
    with pytest.raises(rp.ReplicationDataError, match=r"svv_bowling_for_fascism \(Dataset_Bowling_Replication_JPE\.dta\).*'bcollar25'"):
        rp.load_svv(p)
    # with the columns, the same synthetic file loads and gets ln_pop25
    fake["bcollar25"] = rng.uniform(0.2, 0.6, n)
    fake["Prussia"] = np.tile([0.0, 1.0], n // 2)
    ok = rp.load_svv(_write_dta(tmp_path / "ok.dta", fake))
    np.testing.assert_allclose(ok["ln_pop25"], np.log(fake["pop25"]), rtol=1e-6)


def test_gsz_missing_column_and_units(tmp_path):
    # SYNTHETIC GSZ-like file
    fake = pd.DataFrame({
        "istcom": [1.0, 2.0, 3.0, 4.0], "totassoc_p": [4.0, 6.0, np.nan, 5.0],
        "libero_comune_allnord": [0.0, 1.0, 1.0, np.nan], "population": [0.002, 0.06, 0.2, 0.01],
    })
    p = _write_dta(tmp_path / "ltp1F.dta", fake)
    g = rp.load_gsz(p)
    assert list(g["population"]) == [2000.0, 60000.0]  # millions -> inhabitants; rows with gaps dropped
    assert list(g["size_band"].astype(str)) == ["under 10k", "50k-100k"]
    with pytest.raises(rp.ReplicationDataError, match=r"gsz_long_term_persistence \(bad\.dta\).*'libero_comune_allnord'"):
        rp.load_gsz(_write_dta(tmp_path / "bad.dta", fake.drop(columns="libero_comune_allnord")))


def test_group_means_interval_matches_scipy():
    # SYNTHETIC groups
    rng = np.random.default_rng(5)
    d = pd.DataFrame({"g": np.repeat([0, 1], [40, 9]), "v": rng.gamma(2.0, 3.0, 49)})
    t = rp.group_means(d, "v", "g")
    for k in (0, 1):
        v = d.loc[d["g"] == k, "v"]
        lo, hi = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
        assert t.loc[k, "lower"] == pytest.approx(lo, rel=1e-12)
        assert t.loc[k, "upper"] == pytest.approx(hi, rel=1e-12)
        assert t.loc[k, "n"] == len(v)
    with pytest.raises(rp.ReplicationDataError, match="'w'"):
        rp.group_means(d, "w", "g")
