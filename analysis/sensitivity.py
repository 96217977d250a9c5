r"""How fragile is an estimate? Inference variants and sensitivity to unobserved confounding.

* :func:`inference_variants` refits one specification with every covariance of the
  estimation layer (clustered by county, by state, two-way, Driscoll-Kraay) and adds a
  wild cluster bootstrap at the state level (:func:`wild_cluster_bootstrap`).
* :func:`wild_cluster_bootstrap` is the restricted wild cluster bootstrap (WCR, Rademacher
  weights, the null imposed; Cameron, Gelbach & Miller 2008; MacKinnon, Nielsen & Webb
  2023) of one coefficient of a fixed-effects model, computed by the ``wildboottest``
  package on the county-demeaned data (Frisch-Waugh-Lovell: the county effects are nested
  in the state clusters, so demeaning within county leaves the cluster sums intact).
* :func:`sensitivity_stats` gives Cinelli & Hazlett's (2020) measures of how strong an
  omitted confounder would have to be to change a conclusion: the partial
  :math:`R^2` of the treatment with the outcome, :math:`R^2_{Y\sim D|X} = t^2/(t^2+\nu)`,
  and the robustness values :math:`RV_q` (the share of the residual variance of both
  treatment and outcome that a confounder must explain to move the estimate by
  :math:`100q\%`) and :math:`RV_{q,\alpha}` (to make the :math:`1-\alpha` interval include
  the moved value). With :math:`f_q = q|t|/\sqrt{\nu}` and
  :math:`f^*_{\alpha} = |t^*_{\alpha/2,\nu-1}|/\sqrt{\nu-1}`,

  .. math::
     RV_q = \tfrac12\left(\sqrt{f_q^4+4f_q^2}-f_q^2\right),\qquad
     RV_{q,\alpha} = \begin{cases} 0 & f_q \le f^*_\alpha\\
       \tfrac12\left(\sqrt{f_{q,\alpha}^4+4f_{q,\alpha}^2}-f_{q,\alpha}^2\right),\ f_{q,\alpha}=f_q-f^*_\alpha
       & f^*_\alpha < f_q < 1/f^*_\alpha\\
       (f_q^2-f^{*2}_\alpha)/(1+f_q^2) & f_q \ge 1/f^*_\alpha \end{cases}

  (Cinelli & Hazlett 2020, eqs. 18-19 and their sensemakr package). The formulas are exact
  for OLS with classical standard errors, :math:`t` the classical t-statistic and
  :math:`\nu` the residual degrees of freedom; for a fixed-effects model they apply to
  the within-transformed regression (:math:`\nu = n - N - T - k`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import stats

from analysis.estimation import ModelSpec, SpecificationError, fit, validate

__all__ = [
    "inference_variants",
    "partial_r2",
    "robustness_value",
    "sensitivity_stats",
    "sensitivity_table",
    "wild_cluster_bootstrap",
]

COV_VARIANTS: dict[str, str] = {
    "cluster-unit": "Clustered by county",
    "cluster-state": "Clustered by state",
    "cluster-twoway": "Two-way (county, wave)",
    "driscoll-kraay": "Driscoll-Kraay",
}


def _check_dof(t: float, dof: float) -> None:
    if not np.isfinite(t):
        raise ValueError(f"The t-statistic must be finite, not {t!r}.")
    if not (np.isfinite(dof) and dof > 1):
        raise ValueError(f"The residual degrees of freedom must exceed 1, not {dof!r}.")


def partial_r2(t: float, dof: float) -> float:
    """Partial R-squared of the treatment with the outcome, given the controls: t^2 / (t^2 + dof)."""
    _check_dof(t, dof)
    return float(t**2 / (t**2 + dof))


def robustness_value(t: float, dof: float, q: float = 1.0, alpha: float | None = None) -> float:
    """Cinelli-Hazlett robustness value RV_q (``alpha=None``) or RV_{q,alpha} (see the module docstring)."""
    _check_dof(t, dof)
    if q <= 0:
        raise ValueError(f"q must be positive, not {q!r}.")
    fq = q * abs(t) / np.sqrt(dof)
    if alpha is None:
        f = fq
    else:
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), not {alpha!r}.")
        f_crit = abs(stats.t.ppf(alpha / 2, dof - 1)) / np.sqrt(dof - 1)
        if fq <= f_crit:
            return 0.0
        if fq >= 1 / f_crit:
            return float((fq**2 - f_crit**2) / (1 + fq**2))
        f = fq - f_crit
    return float(0.5 * (np.sqrt(f**4 + 4 * f**2) - f**2))


def sensitivity_stats(estimate: float, se: float, dof: float, q: float = 1.0, alpha: float = 0.05) -> dict:
    """Estimate, SE, t, partial R2 of the treatment, RV_q and RV_{q,alpha} (fractions, not %)."""
    if not (np.isfinite(se) and se > 0):
        raise ValueError(f"The standard error must be positive, not {se!r}.")
    t = estimate / se
    return {
        "estimate": float(estimate),
        "se": float(se),
        "t": float(t),
        "dof": float(dof),
        "partial_r2": partial_r2(t, dof),
        "rv_q": robustness_value(t, dof, q),
        "rv_qa": robustness_value(t, dof, q, alpha),
    }


def sensitivity_table(specs: Mapping[str, ModelSpec], df: pd.DataFrame, q: float = 1.0, alpha: float = 0.05) -> pd.DataFrame:
    """:func:`sensitivity_stats` of the first regressor of each specification, fitted with
    classical standard errors (the setting in which the formulas are exact); also the
    clustered t of the specification's own covariance, for comparison.
    """
    rows = {}
    for name, spec in specs.items():
        x = spec.regressors[0]
        classical = fit(spec.replace(cov="classical"), df)
        own = fit(spec, df)
        row = sensitivity_stats(float(classical.params[x]), float(classical.std_errors[x]),
                                float(classical.raw.df_resid), q, alpha)
        row["t_clustered"] = float(own.tstats[x])
        rows[name] = row
    return pd.DataFrame(rows).T



def wild_cluster_bootstrap(spec: ModelSpec, df: pd.DataFrame, B: int = 9999, seed: int = 20261127,
                           cluster: str | None = None) -> dict:
    """Restricted wild cluster bootstrap p-value of ``spec``'s first regressor (``wildboottest``).

    ``spec`` is a ``fe`` or ``twfe`` model (unit effects absorbed; period or state-by-period
    effects as dummies); clusters are ``cluster`` (default ``spec.state``), in which the
    units must be nested. Rademacher weights, the null :math:`\\beta=0` imposed, WCR-11
    (CRV1 in the bootstrap t), ``B`` draws (all :math:`2^G` sign vectors when fewer).
    Returns ``t`` (CR1, the package's small-sample factor), ``p`` (two-sided, symmetric),
    ``n_clusters``, ``B``.
    """
    from wildboottest.wildboottest import wildboottest
    import statsmodels.api as sm

    if spec.estimator not in ("fe", "twfe"):
        raise SpecificationError(f"wild_cluster_bootstrap() needs a fe or twfe model, not {spec.estimator!r}.")
    cluster = cluster or spec.state
    s = spec.replace(cov="cluster-state", state=cluster)
    sample = validate(s, df)
    if sample.groupby(spec.entity)[cluster].nunique().max() > 1:
        raise SpecificationError(f"Units move between {cluster!r} clusters; they must be nested for this bootstrap.")
    from analysis.estimation import _dummies  # the same effect dummies as fit()

    dummies = _dummies(sample, s)
    X = pd.concat([sample[list(spec.variables)], dummies], axis=1)
    M = pd.concat([sample[[spec.outcome]], X], axis=1).astype(float)
    codes = pd.factorize(sample[spec.entity])[0]
    means = M.groupby(codes).transform("mean")
    R = M - means.to_numpy()
    R = R.loc[:, (R.abs().max() > 1e-10) | (R.columns == spec.outcome)]
    y, Xd = R[spec.outcome].to_numpy(), R.drop(columns=spec.outcome)
    model = sm.OLS(y, Xd)
    clusters = pd.factorize(sample[cluster])[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = wildboottest(model, B=B, cluster=clusters, param=spec.regressors[0], seed=seed, show=False)
    G = int(np.unique(clusters).size)
    return {"t": float(res["statistic"].iloc[0]), "p": float(res["p-value"].iloc[0]),
            "n_clusters": G, "B": int(min(B, 2**G))}


def inference_variants(spec: ModelSpec, df: pd.DataFrame, B: int = 9999, seed: int = 20261127) -> pd.DataFrame:
    """The estimate of ``spec``'s first regressor under each covariance (:data:`COV_VARIANTS`)
    and the state-level wild cluster bootstrap. Columns: ``estimate``, ``se``, ``t``, ``p``,
    ``ci_low``, ``ci_high`` (95%), ``df`` (of the t reference), ``clusters``."""
    x = spec.regressors[0]
    rows = {}
    for cov, label in COV_VARIANTS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = fit(spec.replace(cov=cov), df)
        ci = r.ci(0.95).loc[x]
        rows[label] = {"estimate": float(r.params[x]), "se": float(r.std_errors[x]), "t": float(r.tstats[x]),
                       "p": float(r.pvalues[x]), "ci_low": float(ci["lower"]), "ci_high": float(ci["upper"]),
                       "df": r.df_inference, "clusters": min(r.n_clusters) if r.n_clusters else np.nan}
    wb = wild_cluster_bootstrap(spec, df, B=B, seed=seed)
    rows["Wild cluster bootstrap (state)"] = {"estimate": rows["Clustered by state"]["estimate"], "se": np.nan,
                                              "t": wb["t"], "p": wb["p"], "ci_low": np.nan, "ci_high": np.nan,
                                              "df": np.nan, "clusters": wb["n_clusters"]}
    return pd.DataFrame(rows).T
