"""Replications of published work on associations and their dark side (Chapter 11).

* Satyanath, Voigtlaender and Voth (2017, JPE), "Bowling for Fascism": Table 3, Panel A,
  columns 3-5. OLS of standardised Nazi party entry 1925-33 (``pcNSentry_std``) on association
  density per 1,000 inhabitants in 229 German towns, HC1 standard errors. Also the same columns
  under inference that lets towns of a Weimar state share shocks (:func:`svv_inference`: CR1
  clustered by state and the restricted wild cluster bootstrap over all sign vectors), and split
  by Prussia (:func:`svv_prussia_split`).
* Guiso, Sapienza and Zingales (2016, JEEA), "Long-Term Persistence": non-profit organisations
  per 1,000 inhabitants (``totassoc_p``) of Centre-North Italian municipalities by whether the
  town was a medieval free city (``libero_comune_allnord``), described only.

The authors' files are read from the manifest (``svv_bowling_for_fascism``,
``gsz_long_term_persistence``) through :func:`analysis.fetch.fetch`; a required column that is
missing raises :class:`ReplicationDataError` naming the file and the column.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from analysis.atlas import OLSResult, ols

__all__ = [
    "ReplicationDataError",
    "read_replication",
    "SVV_FILE",
    "SVV_CONTROLS",
    "SVV_TABLE3A",
    "SVV_PUBLISHED",
    "load_svv",
    "svv_table3a",
    "svv_table3a_frame",
    "SVV_CLUSTER",
    "wild_cluster_bootstrap_p",
    "svv_inference",
    "svv_prussia_split",
    "GSZ_FILE",
    "GSZ_SIZE_BANDS",
    "load_gsz",
    "group_means",
    "gsz_free_city_table",
    "gsz_figure",
]


class ReplicationDataError(ValueError):
    """A replication file lacks a column that the analysis needs."""


def read_replication(name: str, columns: Sequence[str], path: str | Path | None = None) -> pd.DataFrame:
    """The columns ``columns`` of the Stata file of manifest entry ``name`` (or of ``path``).

    Raises :class:`ReplicationDataError` naming the file and every missing column.
    """
    if path is None:
        from analysis.fetch import fetch

        path = fetch(name)
    path = Path(path)
    with pd.io.stata.StataReader(path) as reader:
        available = list(reader.variable_labels())
    missing = [c for c in columns if c not in available]
    if missing:
        raise ReplicationDataError(
            f"{name} ({path.name}): missing column(s) {', '.join(repr(c) for c in missing)}; "
            f"the file has {len(available)} columns. Is it the authors' replication file?"
        )
    return pd.read_stata(path, columns=list(columns), convert_categoricals=False)


# --------------------------------------------------------------------------------------
# Satyanath, Voigtlaender and Voth (2017)
# --------------------------------------------------------------------------------------

SVV_FILE = "svv_bowling_for_fascism"
#: Controls of Table 3, columns 4-5: log 1925 population, Catholic share, blue-collar share.
SVV_CONTROLS = ("ln_pop25", "share_cath25", "bcollar25")
#: Table 3, Panel A: column -> (association measure, controls). Dependent variable pcNSentry_std.
SVV_TABLE3A: dict[int, tuple[str, tuple[str, ...]]] = {
    3: ("clubs_all_pc", ()),
    4: ("clubs_all_pc", SVV_CONTROLS),
    5: ("clubs_civic_pc", SVV_CONTROLS),
}
#: Published values of Table 3, Panel A (strings, at printed precision: coefficient, robust SE, N).
SVV_PUBLISHED: dict[int, dict[str, str | int]] = {
    3: {"coef": "0.12588", "se": "0.05065", "nobs": 229},
    4: {"coef": "0.16027", "se": "0.05379", "nobs": 227},
    5: {"coef": "0.42934", "se": "0.13165", "nobs": 226},
}
#: Weimar state of each town: the cluster for inference that lets towns of a state share shocks.
SVV_CLUSTER = "landweimar"
_SVV_RAW = ["cityid", "landweimar", "pcNSentry_std", "clubs_all_pc", "clubs_civic_pc", "pop25",
            "share_cath25", "bcollar25", "Prussia"]


def load_svv(path: str | Path | None = None) -> pd.DataFrame:
    """The SVV town file with the columns of Table 3, ``ln_pop25`` = log(pop25) and ``Prussia``
    (1 for towns in the Free State of Prussia, whose ``landweimar`` is Preussen)."""
    d = read_replication(SVV_FILE, _SVV_RAW, path)
    d["ln_pop25"] = np.log(d["pop25"].astype(float))
    return d


def svv_table3a(df: pd.DataFrame) -> dict[int, OLSResult]:
    """OLS with HC1 SEs for Table 3, Panel A, columns 3-5 (listwise deletion within each column)."""
    return {
        col: ols(df, "pcNSentry_std", [x, *controls], cov="HC1")
        for col, (x, controls) in SVV_TABLE3A.items()
    }


def svv_table3a_frame(results: dict[int, OLSResult]) -> pd.DataFrame:
    """One row per column: association measure, our coefficient, SE and N, and the published ones."""
    rows = []
    for col, r in results.items():
        x, controls = SVV_TABLE3A[col]
        pub = SVV_PUBLISHED.get(col, {})
        rows.append({
            "column": col,
            "association measure": x,
            "controls": "yes" if controls else "no",
            "coef": float(r.params[x]),
            "se": float(r.std_errors[x]),
            "N": r.nobs,
            "published coef": pub.get("coef", ""),
            "published se": pub.get("se", ""),
            "published N": pub.get("nobs", ""),
        })
    return pd.DataFrame(rows).set_index("column")


def wild_cluster_bootstrap_p(df: pd.DataFrame, y: str, x: Sequence[str], param: str, cluster: str,
                             max_enumerate: int = 20) -> dict:
    r"""Restricted wild cluster bootstrap p-value of ``param`` in the OLS of ``y`` on a constant and ``x``.

    WCR-11 of Cameron, Gelbach and Miller (2008) and Roodman et al. (2019): the model is refitted
    with :math:`\beta_{param}=0` imposed, giving :math:`\tilde\beta` and residuals :math:`\tilde u`;
    each draw multiplies the residuals of cluster :math:`g` by :math:`w_g=\pm1` (Rademacher),
    :math:`y^*=X\tilde\beta+\tilde u\,w_g`, and computes the CR1 :math:`t^*` of :math:`\beta^*_{param}`;
    :math:`p=\#\{|t^*|>|t|\}/B`. All :math:`B=2^G` sign vectors are used (full enumeration, so the
    p-value needs no seed and is the same on every machine), in closed form from cluster sums.
    Raises ``ValueError`` above ``max_enumerate`` clusters. Returns ``t`` (CR1, as
    :func:`analysis.atlas.ols` with ``cov="cluster"``), ``p``, ``n_clusters`` and ``draws``.
    """
    x = list(x)
    if param not in x:
        raise ValueError(f"param {param!r} is not one of the regressors {x}")
    d = df.dropna(subset=[y, *x, cluster])
    codes = pd.factorize(d[cluster])[0]
    g = int(codes.max()) + 1
    if g > max_enumerate:
        raise ValueError(f"{g} clusters: 2^{g} sign vectors are too many to enumerate (max_enumerate={max_enumerate}).")
    X = np.column_stack([np.ones(len(d)), d[x].to_numpy(float)])
    Y = d[y].to_numpy(float)
    n, k = X.shape
    j = 1 + x.index(param)
    Ainv = np.linalg.inv(X.T @ X)
    a = Ainv[:, j]
    ssc = g / (g - 1) * (n - 1) / (n - k)
    H = np.zeros((g, k, k))
    np.add.at(H, codes, X[:, :, None] * X[:, None, :])

    def scores(u):
        S = np.zeros((g, k))
        np.add.at(S, codes, X * u[:, None])
        return S

    beta = Ainv @ (X.T @ Y)
    t = beta[j] / np.sqrt(ssc * np.sum((scores(Y - X @ beta) @ a) ** 2))
    keep = [c for c in range(k) if c != j]
    beta_r = np.zeros(k)
    beta_r[keep] = np.linalg.lstsq(X[:, keep], Y, rcond=None)[0]
    S = scores(Y - X @ beta_r)  # restricted cluster scores
    W = ((np.arange(2**g)[None, :] >> np.arange(g)[:, None]) & 1) * 2.0 - 1.0  # g x 2^g sign vectors
    delta = Ainv @ (S.T @ W)  # beta* - beta_r, k x B
    z = W * (S @ a)[:, None] - (H @ a) @ delta  # a' (cluster scores of the draw), g x B
    t_boot = delta[j] / np.sqrt(ssc * np.sum(z**2, axis=0))
    return {"t": float(t), "p": float(np.mean(np.abs(t_boot) > abs(t))), "n_clusters": g, "draws": 2**g}


def svv_inference(df: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Table 3A, columns 3-5, under three inferences for the association coefficient.

    ``hc1``: heteroskedasticity-robust (the paper's); ``cluster``: CR1 clustered by Weimar state
    (:data:`SVV_CLUSTER`), :math:`t` with :math:`G-1` df; ``wcb``: the restricted wild cluster
    bootstrap by state over all sign vectors (:func:`wild_cluster_bootstrap_p`). Each column on
    its own complete cases. One row per column: ``coef``, ``p_hc1``, ``se_cluster``, ``p_cluster``,
    ``p_wcb``, ``N``, ``states``, ``largest_state`` (towns in the largest state), ``sig_*`` flags
    (:math:`p <` ``alpha``) and ``sig_all`` (significant under all three).
    """
    rows = {}
    for col, (x, controls) in SVV_TABLE3A.items():
        d = df.dropna(subset=["pcNSentry_std", x, *controls, SVV_CLUSTER])
        hc1 = ols(d, "pcNSentry_std", [x, *controls], cov="HC1")
        cl = ols(d, "pcNSentry_std", [x, *controls], cov="cluster", cluster=SVV_CLUSTER)
        wcb = wild_cluster_bootstrap_p(d, "pcNSentry_std", [x, *controls], x, SVV_CLUSTER)
        rows[col] = {"coef": float(hc1.params[x]), "se_hc1": float(hc1.std_errors[x]), "p_hc1": float(hc1.pvalues[x]),
                     "se_cluster": float(cl.std_errors[x]), "p_cluster": float(cl.pvalues[x]), "p_wcb": wcb["p"],
                     "N": hc1.nobs, "states": wcb["n_clusters"], "largest_state": int(d[SVV_CLUSTER].value_counts().iloc[0])}
    out = pd.DataFrame(rows).T.astype({"N": int, "states": int, "largest_state": int})
    out.index.name = "column"
    for k in ("hc1", "cluster", "wcb"):
        out[f"sig_{k}"] = out[f"p_{k}"] < alpha
    out["sig_all"] = out[["sig_hc1", "sig_cluster", "sig_wcb"]].all(axis=1)
    return out


def svv_prussia_split(df: pd.DataFrame) -> pd.DataFrame:
    """Table 3A, columns 3-5, in Prussian towns and in the rest of Germany (HC1), and the difference.

    The difference is the coefficient of association density x Prussia in one regression in
    which every regressor (and the constant) is interacted with the Prussia indicator, so it
    equals the Prussia estimate minus the rest's, with an HC1 standard error. One row per column.
    """
    rows = {}
    for col, (x, controls) in SVV_TABLE3A.items():
        d = df.dropna(subset=["pcNSentry_std", x, *controls, "Prussia"])
        row = {}
        for label, part in (("prussia", d[d["Prussia"] == 1]), ("rest", d[d["Prussia"] == 0])):
            r = ols(part, "pcNSentry_std", [x, *controls], cov="HC1")
            row |= {f"{label}_coef": float(r.params[x]), f"{label}_se": float(r.std_errors[x]),
                    f"{label}_p": float(r.pvalues[x]), f"{label}_N": r.nobs}
        inter = {f"{v}_x_prussia": d[v] * d["Prussia"] for v in (x, *controls)}
        full = d.assign(**inter)
        r = ols(full, "pcNSentry_std", [x, *controls, "Prussia", *inter], cov="HC1")
        key = f"{x}_x_prussia"
        row |= {"diff": float(r.params[key]), "diff_se": float(r.std_errors[key]), "diff_p": float(r.pvalues[key])}
        rows[col] = row
    out = pd.DataFrame(rows).T
    out.index.name = "column"
    return out.astype({"prussia_N": int, "rest_N": int})


# --------------------------------------------------------------------------------------
# Guiso, Sapienza and Zingales (2016)
# --------------------------------------------------------------------------------------

GSZ_FILE = "gsz_long_term_persistence"
#: Municipality size bands (inhabitants) for comparisons among towns of similar size.
GSZ_SIZE_BANDS = (0, 10_000, 50_000, 100_000, np.inf)
_GSZ_RAW = ["istcom", "totassoc_p", "libero_comune_allnord", "population"]


def load_gsz(path: str | Path | None = None) -> pd.DataFrame:
    """Centre-North municipalities with a free-city code and a non-profit density.

    Columns: ``istcom``, ``nonprofits_per_1k`` (the file's ``totassoc_p``, labelled "per capita"
    but per 1,000 inhabitants: median about 4.7), ``free_city`` (``libero_comune_allnord``, 0/1;
    the code exists only for the Centre-North), ``population`` (inhabitants; the file stores
    millions) and ``size_band``.
    """
    d = read_replication(GSZ_FILE, _GSZ_RAW, path)
    d = d.dropna(subset=["totassoc_p", "libero_comune_allnord", "population"])
    out = pd.DataFrame({
        "istcom": d["istcom"],
        "nonprofits_per_1k": d["totassoc_p"].astype(float),
        "free_city": d["libero_comune_allnord"].astype(int),
        "population": (d["population"].astype(float) * 1e6).round(),
    })
    labels = ["under 10k", "10k-50k", "50k-100k", "100k and over"]
    out["size_band"] = pd.cut(out["population"], GSZ_SIZE_BANDS, right=False, labels=labels)
    return out.reset_index(drop=True)


def group_means(df: pd.DataFrame, value: str, by: str | Sequence[str], level: float = 0.95) -> pd.DataFrame:
    """Mean of ``value`` by group with a t interval: n, mean, sd, se, lower, upper, median.

    The interval is mean +/- t(n-1) * sd/sqrt(n) (NaN for a group of one).
    """
    for c in [value, *([by] if isinstance(by, str) else by)]:
        if c not in df.columns:
            raise ReplicationDataError(f"group_means: no column {c!r} in the data.")
    g = df.groupby(by, observed=True)[value]
    t = g.agg(n="count", mean="mean", sd="std", median="median")
    t["se"] = t["sd"] / np.sqrt(t["n"])
    q = stats.t.ppf(0.5 + level / 2, t["n"] - 1)
    t["lower"] = t["mean"] - q * t["se"]
    t["upper"] = t["mean"] + q * t["se"]
    return t[["n", "mean", "sd", "se", "lower", "upper", "median"]]


def gsz_free_city_table(df: pd.DataFrame) -> pd.DataFrame:
    """Non-profits per 1,000 by free-city history: all municipalities, then by size band."""
    overall = group_means(df, "nonprofits_per_1k", "free_city")
    overall.index = pd.MultiIndex.from_product([["all"], overall.index], names=["size_band", "free_city"])
    bands = group_means(df, "nonprofits_per_1k", ["size_band", "free_city"])
    bands.index = bands.index.set_levels(bands.index.levels[0].astype(str), level=0)
    return pd.concat([overall, bands])


def gsz_figure(table: pd.DataFrame, ax=None):
    """Means with 95% intervals of non-profits per 1,000, former free cities against the rest."""
    from analysis.plots import subplots

    if ax is None:
        _, ax = subplots(figsize=(8, 4))
    bands = list(dict.fromkeys(table.index.get_level_values(0)))
    x = np.arange(len(bands))
    for k, (fc, label, colour) in enumerate(((0, "other municipalities", "C0"), (1, "former free cities", "C1"))):
        rows = [table.loc[(b, fc)] if (b, fc) in table.index else None for b in bands]
        xs = [xi + (k - 0.5) * 0.25 for xi, r in zip(x, rows, strict=True) if r is not None]
        rr = [r for r in rows if r is not None]
        means = np.array([r["mean"] for r in rr])
        lo = means - np.array([r["lower"] for r in rr])
        hi = np.array([r["upper"] for r in rr]) - means
        ax.errorbar(xs, means, yerr=[lo, hi], fmt="o", color=colour, capsize=3, label=label)
        for xi, r in zip(xs, rr, strict=True):
            # each label leans away from its pair's other interval, so the two never overlap
            ax.annotate(f"n={int(r['n']):,}", (xi, r["upper"]), textcoords="offset points",
                        xytext=(4 if k == 0 else -4, 3), ha="right" if k == 0 else "left", fontsize=9, color=colour)
    ax.margins(y=0.1)  # room for the n= labels above the tallest interval
    ax.set_xlim(-0.75, len(bands) - 0.25)  # and beside the outermost ones
    ax.set_xticks(x)
    ax.set_xticklabels(["all sizes" if b == "all" else b for b in bands])
    ax.set_xlabel("Municipality size (inhabitants)")
    ax.set_ylabel("Non-profits per 1,000 inhabitants")
    ax.legend(frameon=False, loc="lower left")
    return ax
