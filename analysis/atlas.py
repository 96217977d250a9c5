r"""Cross-sections: weighted OLS with robust or clustered errors, and the Social Capital Atlas horse race.

Chapter 9 asks whether civic life (volunteering, civic organisations, membership associations)
or cross-class friendship (economic connectedness, Chetty et al. 2022) predicts local outcomes
better, in one cross-section of US counties (``load("us_social_capital_atlas")``, 2018).

Estimator (:func:`ols`)
-----------------------
Weighted least squares of :math:`y` on :math:`X` (a constant and the regressors) with weights
:math:`w_i > 0` (population, here): :math:`\hat\beta = (X'WX)^{-1}X'Wy`, residuals
:math:`e = y - X\hat\beta`, :math:`n` rows, :math:`K` coefficients. Covariances:

``"classical"``  :math:`s^2 (X'WX)^{-1}`, :math:`s^2 = \sum_i w_i e_i^2/(n-K)`.
``"HC1"``        :math:`(X'WX)^{-1}\left[\sum_i w_i^2 e_i^2 x_i x_i'\right](X'WX)^{-1}\cdot n/(n-K)`
                 (White with Stata's ``robust`` scaling).
``"cluster"``    CR1: :math:`(X'WX)^{-1}\left[\sum_g s_g s_g'\right](X'WX)^{-1}
                 \cdot\frac{G}{G-1}\frac{n-1}{n-K}`, :math:`s_g=\sum_{i\in g} w_i e_i x_i`
                 (Stata ``regress [aw=w], vce(cluster g)``; statsmodels ``cov_type="cluster"``;
                 pyfixest ``CRV1``).

p-values and intervals use Student's t with :math:`G-1` degrees of freedom when clustered and
:math:`n-K` otherwise. :math:`R^2` is the weighted, centred one.

Standardised coefficients (:func:`standardise`, :func:`horse_race`)
------------------------------------------------------------------
Outcome and measures are turned into z-scores on the estimation sample with the regression's
weights (weighted mean, weighted SD with divisor :math:`\sum w`), so a coefficient is the
difference in SDs of the outcome per SD of the measure; with one regressor it is the
population-weighted correlation.

Exposure and friending bias (:data:`RACE_VARIANTS`, :func:`horse_race_variants`)
-------------------------------------------------------------------------------
Connectedness counts the high-SES friends of low-SES people, so it rises with the number of
high-SES people around them. Chetty et al. (2022b) split connectedness in groups into
*exposure* (twice the high-SES share of the groups low-SES people belong to) and *friending bias*
(the share of the cross-class friendships that exposure would give that are not formed):
:math:`EC_{groups} = \text{exposure}\times(1-\text{bias})`. Exposure tracks the county's SES
mix, and so, by construction, its incomes; friending bias is the part about who befriends whom.
The variants rerun the horse race with friending bias in place of connectedness and with
exposure held fixed (a control in every model, standardised like the measures, not reported).

Maps (:func:`county_map`)
-------------------------
County boundaries come from the US Census Bureau's 2016 cartographic boundary file
(``cb_2016_us_county_500k``, public domain) as shipped inside the ``plotly-geo`` package (MIT),
read with ``pyshp``: no network at run time. The 48 contiguous states and DC are drawn in an
Albers equal-area conic projection (standard parallels 29.5 and 45.5 N, origin 23 N 96 W).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from analysis.estimation import SpecificationError

__all__ = [
    "MEASURES",
    "OUTCOMES",
    "COV_TYPES",
    "OLSResult",
    "ols",
    "standardise",
    "prepare_atlas",
    "quality_sample",
    "horse_race",
    "horse_race_table",
    "repeated_within_state",
    "horse_race_figure",
    "county_geometry",
    "county_map",
    "atlas_map_figure",
    "quality_report",
    "weighted_corr",
    "horse_race_pivot",
    "density_slopes",
    "CIVIC_MEASURES",
    "MEASURE_DIRECTION",
    "RACE_VARIANTS",
    "horse_race_variants",
    "significance_counts",
    "race_scorecard",
]

COV_TYPES = ("classical", "HC1", "cluster")

#: Community measures of the Atlas panel, with short labels (the order of the horse race).
MEASURES: dict[str, str] = {
    "economic_connectedness": "Economic connectedness",
    "volunteering_rate": "Volunteering rate",
    "civic_organizations_per_1k_users": "Civic organisations per 1k users",
    "associations_per_10k": "Membership associations per 10k",
}

#: The three organisational measures of the thesis (the horse race's rivals of connectedness).
CIVIC_MEASURES: tuple[str, ...] = ("volunteering_rate", "civic_organizations_per_1k_users", "associations_per_10k")

#: The direction of a measure that the thesis counts as more community: +1 (more is more), or -1
#: for friending bias (more bias is fewer cross-class friendships). Unlisted measures are +1.
MEASURE_DIRECTION: dict[str, int] = {"friending_bias": -1}

#: Horse-race variants: name -> (measures, controls held fixed in every model). The first is the
#: chapter's race; the others replace connectedness by friending bias and/or hold exposure fixed.
RACE_VARIANTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "EC": (("economic_connectedness", *CIVIC_MEASURES), ()),
    "EC | exposure": (("economic_connectedness", *CIVIC_MEASURES), ("high_ses_exposure",)),
    "bias": (("friending_bias", *CIVIC_MEASURES), ()),
    "bias | exposure": (("friending_bias", *CIVIC_MEASURES), ("high_ses_exposure",)),
    "exposure": (("high_ses_exposure", *CIVIC_MEASURES), ()),
}


@dataclass(frozen=True)
class Outcome:
    """An Atlas outcome: its label, its data-quality column and the sign that means 'better'."""

    label: str
    quality: str | None
    better_sign: int


#: Outcomes of the Atlas panel (2018). Income percentiles enter in logs (:func:`prepare_atlas`).
OUTCOMES: dict[str, Outcome] = {
    "share_employed": Outcome("Share of 25-54 employed", "share_employed_quality", +1),
    "log_income_p20": Outcome("Log household income, p20", "income_quality", +1),
    "log_income_p50": Outcome("Log household income, p50", "income_quality", +1),
    "log_income_p80": Outcome("Log household income, p80", "income_quality", +1),
    "injury_death_rate_per_100k": Outcome("Injury deaths per 100k", "injury_death_quality", -1),
    "low_birth_weight_share": Outcome("Low birth weight share", "low_birth_weight_quality", -1),
}


def _suggest(name: str, options) -> str:
    close = difflib.get_close_matches(name, [str(o) for o in options], n=3, cutoff=0.5)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def _require(df: pd.DataFrame, cols: Sequence[str], what: str = "the data") -> None:
    for c in cols:
        if c not in df.columns:
            raise SpecificationError(f"Unknown variable {c!r}: it is not a column of {what}.{_suggest(c, df.columns)}")


# --------------------------------------------------------------------------------------
# Weighted OLS
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OLSResult:
    """A fitted cross-sectional regression: everything a table or a test needs."""

    params: pd.Series
    std_errors: pd.Series
    cov: pd.DataFrame
    nobs: int
    df_resid: int
    df_inference: float
    cov_type: str
    n_clusters: int | None
    r2: float
    weights: str | None

    @property
    def tstats(self) -> pd.Series:
        return self.params / self.std_errors

    @property
    def pvalues(self) -> pd.Series:
        return pd.Series(2 * stats.t.sf(np.abs(self.tstats), self.df_inference), index=self.params.index)

    def ci(self, level: float = 0.95) -> pd.DataFrame:
        q = stats.t.ppf(0.5 + level / 2, self.df_inference)
        return pd.DataFrame({"lower": self.params - q * self.std_errors, "upper": self.params + q * self.std_errors})


def ols(
    df: pd.DataFrame,
    y: str,
    x: Sequence[str],
    weights: str | None = None,
    cov: str = "HC1",
    cluster: str | None = None,
    constant: bool = True,
) -> OLSResult:
    """(Weighted) OLS of ``y`` on ``x`` (plus a constant named ``const``); see the module doc.

    Rows missing ``y``, any ``x``, the weight or the cluster are dropped (listwise). Raises
    :class:`SpecificationError` for unknown columns, an unknown ``cov``, ``cov="cluster"``
    without ``cluster``, non-positive weights, fewer than two clusters, or a rank-deficient design.
    """
    x = [x] if isinstance(x, str) else list(x)
    if cov not in COV_TYPES:
        raise SpecificationError(f"Unknown covariance {cov!r}; choose one of {COV_TYPES}.")
    if cov == "cluster" and cluster is None:
        raise SpecificationError("cov='cluster' needs a cluster column (e.g. cluster='state_fips').")
    if cov != "cluster" and cluster is not None:
        raise SpecificationError(f"cluster={cluster!r} is only used with cov='cluster'.")
    if not x and not constant:
        raise SpecificationError("No regressors: give x or keep the constant.")
    cols = [y, *x] + ([weights] if weights else []) + ([cluster] if cluster else [])
    _require(df, cols)
    d = df[cols].dropna()
    n = len(d)
    Y = d[y].to_numpy(dtype=float)
    names = (["const"] if constant else []) + x
    X = np.column_stack(([np.ones(n)] if constant else []) + [d[c].to_numpy(dtype=float) for c in x])
    k = X.shape[1]
    if n <= k:
        raise SpecificationError(f"{n} complete rows for {k} coefficients: cannot estimate.")
    if weights:
        w = d[weights].to_numpy(dtype=float)
        if (w <= 0).any():
            raise SpecificationError(f"Weights {weights!r} must be positive; {(w <= 0).sum()} rows are not.")
    else:
        w = np.ones(n)
    XtWX = X.T @ (X * w[:, None])
    if np.linalg.matrix_rank(XtWX) < k:
        raise SpecificationError(f"The design of {y!r} on {x} is rank-deficient (collinear regressors).")
    bread = np.linalg.inv(XtWX)
    beta = bread @ (X.T @ (w * Y))
    e = Y - X @ beta
    n_clusters = None
    if cov == "classical":
        V = bread * float((w * e**2).sum() / (n - k))
        df_inf = float(n - k)
    elif cov == "HC1":
        meat = X.T @ (X * (w * e)[:, None] ** 2)
        V = bread @ meat @ bread * n / (n - k)
        df_inf = float(n - k)
    else:
        codes, uniques = pd.factorize(d[cluster])
        g = len(uniques)
        if g < 2:
            raise SpecificationError(f"Clustering by {cluster!r} needs at least two clusters; the sample has {g}.")
        scores = np.zeros((g, k))
        np.add.at(scores, codes, X * (w * e)[:, None])
        V = bread @ (scores.T @ scores) @ bread * (g / (g - 1)) * ((n - 1) / (n - k))
        df_inf = float(g - 1)
        n_clusters = g
    ybar = np.average(Y, weights=w)
    r2 = 1.0 - float((w * e**2).sum() / (w * (Y - ybar) ** 2).sum())
    V = (V + V.T) / 2
    return OLSResult(
        params=pd.Series(beta, index=names),
        std_errors=pd.Series(np.sqrt(np.diag(V)), index=names),
        cov=pd.DataFrame(V, index=names, columns=names),
        nobs=n,
        df_resid=n - k,
        df_inference=df_inf,
        cov_type=cov,
        n_clusters=n_clusters,
        r2=r2,
        weights=weights,
    )


def standardise(df: pd.DataFrame, cols: Sequence[str], weights: str | None = None) -> pd.DataFrame:
    """Z-scores of ``cols`` with (optionally) weighted means and SDs (divisor: the sum of weights).

    Raises :class:`SpecificationError` for an unknown column or a column without variation.
    """
    _require(df, list(cols) + ([weights] if weights else []))
    w = df[weights].to_numpy(dtype=float) if weights else np.ones(len(df))
    out = {}
    for c in cols:
        v = df[c].to_numpy(dtype=float)
        m = np.average(v, weights=w)
        sd = float(np.sqrt(np.average((v - m) ** 2, weights=w)))
        if not sd > 0:
            raise SpecificationError(f"{c!r} has no variation in this sample: cannot standardise it.")
        out[c] = (v - m) / sd
    return pd.DataFrame(out, index=df.index)


# --------------------------------------------------------------------------------------
# The Atlas horse race
# --------------------------------------------------------------------------------------


def prepare_atlas(df: pd.DataFrame) -> pd.DataFrame:
    """The Atlas panel with the log income percentiles (``log_income_p20`` ...) and a float weight."""
    _require(df, ["income_p20", "income_p50", "income_p80", "pop2018"], "the Atlas panel")
    out = df.copy()
    for p in ("p20", "p50", "p80"):
        out[f"log_income_{p}"] = np.log(out[f"income_{p}"].astype(float))
    out["pop2018"] = out["pop2018"].astype("float64")
    return out


def quality_sample(df: pd.DataFrame, outcome: str, quality: Sequence[int] | None = (1, 2)) -> pd.DataFrame:
    """Rows with ``outcome`` observed and, if ``quality`` is given, a quality flag in it.

    Quality-3 values of the ACS and CDC outcomes (and some of quality 2) are pooled over
    several counties and repeat across the counties of a state: they are not county-specific.
    """
    if outcome not in OUTCOMES:
        raise SpecificationError(f"Unknown Atlas outcome {outcome!r}.{_suggest(outcome, OUTCOMES)}")
    qcol = OUTCOMES[outcome].quality
    _require(df, [outcome] + ([qcol] if qcol else []), "the Atlas panel")
    d = df[df[outcome].notna()]
    if quality is not None and qcol:
        d = d[d[qcol].isin(list(quality)).fillna(False).astype(bool)]
    return d


def repeated_within_state(df: pd.DataFrame, outcome: str, state: str = "state_fips") -> pd.Series:
    """True where a county's value of ``outcome`` equals another county's in the same state."""
    _require(df, [outcome, state])
    d = df[df[outcome].notna()]
    return d.duplicated([state, outcome], keep=False)


def horse_race(
    df: pd.DataFrame,
    outcome: str,
    measures: Sequence[str] = tuple(MEASURES),
    quality: Sequence[int] | None = (1, 2),
    weights: str = "pop2018",
    cluster: str = "state_fips",
    controls: Sequence[str] = (),
) -> pd.DataFrame:
    """Standardised coefficients of ``outcome`` on each measure alone, then on all together.

    One common sample: counties with the outcome (at the given ``quality``), every measure, every
    control and a weight. Outcome, measures and controls are standardised on that sample with the
    weights; each model (a measure alone, or all together) also holds the ``controls`` fixed and is
    WLS with SEs clustered by ``cluster``. Returns one row per (model, measure) with ``coef``,
    ``se``, ``lower``/``upper`` (95%), ``p``, ``nobs``, ``n_clusters``, ``r2`` and ``controls``
    (their names joined by ``+``, or ``"none"``); the controls' own coefficients are not reported.
    """
    measures, controls = list(measures), list(controls)
    if set(measures) & set(controls):
        raise SpecificationError(f"{sorted(set(measures) & set(controls))} cannot be both a measure and a control.")
    d = quality_sample(df, outcome, quality)
    _require(d, [*measures, *controls, weights, cluster], "the Atlas panel")
    d = d.dropna(subset=[*measures, *controls, weights, cluster])
    z = standardise(d, [outcome, *measures, *controls], weights)
    z[weights] = d[weights].to_numpy(dtype=float)
    z[cluster] = d[cluster].to_numpy()
    rows = []
    models = [(m, [m]) for m in measures] + [("together", measures)]
    for name, xs in models:
        r = ols(z, outcome, [*xs, *controls], weights=weights, cov="cluster", cluster=cluster)
        ci = r.ci(0.95)
        for m in xs:
            rows.append({
                "outcome": outcome,
                "model": "alone" if name != "together" else "together",
                "measure": m,
                "coef": float(r.params[m]),
                "se": float(r.std_errors[m]),
                "lower": float(ci.loc[m, "lower"]),
                "upper": float(ci.loc[m, "upper"]),
                "p": float(r.pvalues[m]),
                "nobs": r.nobs,
                "n_clusters": r.n_clusters,
                "r2": r.r2,
                "controls": "+".join(controls) or "none",
            })
    return pd.DataFrame(rows)


def horse_race_table(
    df: pd.DataFrame,
    outcomes: Sequence[str] = tuple(OUTCOMES),
    quality: Sequence[int] | None = (1, 2),
    **kw,
) -> pd.DataFrame:
    """:func:`horse_race` for every outcome, stacked, with a ``sample`` label and ``better`` flag.

    ``better`` is True where more community (:data:`MEASURE_DIRECTION`: more of a measure, less
    friending bias) goes with a better outcome (higher employment and income, fewer injury deaths
    and low-weight births).
    """
    t = pd.concat([horse_race(df, y, quality=quality, **kw) for y in outcomes], ignore_index=True)
    label = "all values" if quality is None else "quality " + "-".join(str(q) for q in sorted(quality))
    t.insert(0, "sample", label)
    direction = t["measure"].map(lambda m: MEASURE_DIRECTION.get(m, 1))
    t["better"] = np.sign(t["coef"]) * direction == t["outcome"].map(lambda y: OUTCOMES[y].better_sign)
    return t


def horse_race_variants(
    df: pd.DataFrame,
    variants: Mapping[str, tuple[Sequence[str], Sequence[str]]] = RACE_VARIANTS,
    outcomes: Sequence[str] = tuple(OUTCOMES),
    quality: Sequence[int] | None = (1, 2),
    **kw,
) -> pd.DataFrame:
    """:func:`horse_race_table` for each variant (name -> (measures, controls)), stacked, with a
    ``variant`` column first."""
    parts = [horse_race_table(df, outcomes, quality, measures=tuple(m), controls=tuple(c), **kw).assign(variant=name)
             for name, (m, c) in variants.items()]
    t = pd.concat(parts, ignore_index=True)
    return t[["variant", *[c for c in t.columns if c != "variant"]]]


def significance_counts(table: pd.DataFrame, alpha: float = 0.05,
                        by: Sequence[str] = ("variant", "model", "measure")) -> pd.DataFrame:
    """Per group of ``by``: coefficients (``n``), those with the favourable sign (``better``), and
    those significant at ``alpha`` with the favourable (``sig_better``) or unfavourable
    (``sig_worse``) sign. ``table`` comes from :func:`horse_race_table` or :func:`horse_race_variants`.
    """
    by = [b for b in by if b in table.columns]
    sig = table["p"] < alpha
    t = table.assign(n=1, sig_better=table["better"] & sig, sig_worse=~table["better"] & sig)
    return t.groupby(by, sort=False)[["n", "better", "sig_better", "sig_worse"]].sum().astype(int)


def race_scorecard(table: pd.DataFrame, alpha: float = 0.05, civic: Sequence[str] = CIVIC_MEASURES) -> pd.DataFrame:
    """One row per variant of :func:`horse_race_variants`: the conclusions of the horse race, counted.

    ``entrant`` is the variant's measure that is not in ``civic`` (connectedness, friending bias or
    exposure) and ``held_fixed`` its controls. Counts at ``alpha``, favourable (``better``) or not:
    ``entrant_alone_better`` / ``_worse`` (outcomes where the entrant alone is significant),
    ``civic_together_better`` / ``_worse`` (civic-measure coefficients of the joint model) and
    ``assn_together_worse`` (outcomes where membership associations are significantly unfavourable in
    the joint model); ``n_outcomes``.
    """
    counts = significance_counts(table, alpha)
    rows = {}
    for variant, t in table.groupby("variant", sort=False):
        entrant = [m for m in dict.fromkeys(t["measure"]) if m not in civic]
        if len(entrant) != 1:
            raise SpecificationError(f"Variant {variant!r} must have exactly one non-civic measure, not {entrant}.")
        c = counts.loc[variant]
        tog = c.loc["together"]
        civ = tog[tog.index.isin(list(civic))]
        rows[variant] = {
            "entrant": entrant[0],
            "held_fixed": t["controls"].iloc[0],
            "n_outcomes": int(t["outcome"].nunique()),
            "entrant_alone_better": int(c.loc[("alone", entrant[0]), "sig_better"]),
            "entrant_alone_worse": int(c.loc[("alone", entrant[0]), "sig_worse"]),
            "civic_together_better": int(civ["sig_better"].sum()),
            "civic_together_worse": int(civ["sig_worse"].sum()),
            "assn_together_worse": int(tog.loc["associations_per_10k", "sig_worse"]) if "associations_per_10k" in tog.index else 0,
        }
    out = pd.DataFrame(rows).T
    out.index.name = "variant"
    return out


def horse_race_figure(table: pd.DataFrame, measure_labels: Mapping[str, str] = MEASURES, ncols: int = 2):
    """One panel per outcome, in rows of ``ncols``: each measure's standardised coefficient alone
    (open) and together (filled), 95% CI."""
    from analysis.plots import panel_grid

    outcomes = list(dict.fromkeys(table["outcome"]))
    fig, axes = panel_grid(len(outcomes), max_cols=ncols, row_height=2.5, sharex=True, sharey=True)
    ncols = min(ncols, len(outcomes))
    measures = list(dict.fromkeys(table["measure"]))
    ypos = {m: i for i, m in enumerate(reversed(measures))}
    for ax, y in zip(axes, outcomes, strict=False):
        t = table[table["outcome"] == y]
        for model, off, style in (("alone", 0.15, dict(mfc="white")), ("together", -0.15, dict())):
            s = t[t["model"] == model]
            yy = np.array([ypos[m] for m in s["measure"]]) + off
            ax.hlines(yy, s["lower"], s["upper"], color="C0" if model == "alone" else "C1", lw=1.5)
            ax.plot(s["coef"], yy, "o", color="C0" if model == "alone" else "C1", label=model, ms=5, **style)
        ax.axvline(0, color="0.4", ls="--", lw=1)
        n = int(t["nobs"].iloc[0])
        ax.set_title(f"{OUTCOMES[y].label} (n={n:,})", fontsize=10)
        ax.set_yticks(list(ypos.values()))
        ax.set_yticklabels([measure_labels.get(m, m) for m in ypos])
    for i, ax in enumerate(axes):
        if i + ncols >= len(axes):  # no panel below it
            ax.set_xlabel("SDs of outcome per SD of measure")
    axes[0].legend(frameon=False, loc="lower left")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------
# County maps
# --------------------------------------------------------------------------------------

#: States drawn: the 48 contiguous states and DC (Alaska 02 and Hawaii 15 and territories are not).
NOT_CONTIGUOUS = {"02", "15", "60", "66", "69", "72", "78"}


def _albers(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Albers equal-area conic (sphere), USGS parameters for the contiguous US."""
    p1, p2, p0, l0 = np.radians([29.5, 45.5, 23.0, -96.0])
    nn = (np.sin(p1) + np.sin(p2)) / 2
    c = np.cos(p1) ** 2 + 2 * nn * np.sin(p1)
    rho0 = np.sqrt(c - 2 * nn * np.sin(p0)) / nn
    phi, lam = np.radians(lat), np.radians(lon)
    rho = np.sqrt(c - 2 * nn * np.sin(phi)) / nn
    theta = nn * (lam - l0)
    return rho * np.sin(theta), rho0 - rho * np.cos(theta)


def _shapefile_path(kind: str) -> Path:
    try:
        import _plotly_geo
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "County maps need the 'plotly-geo' package (Census cartographic boundary files) "
            "and 'pyshp': pip install plotly-geo pyshp"
        ) from exc
    return Path(_plotly_geo.__file__).parent / "package_data" / f"cb_2016_us_{kind}_500k.shp"


def county_geometry(kind: str = "county") -> dict[str, list[np.ndarray]]:
    """Projected rings of each contiguous-US county (``kind="county"``, keyed by 5-digit FIPS)
    or state (``kind="state"``, keyed by 2-digit FIPS), from the Census 2016 500k file."""
    import shapefile

    if kind not in ("county", "state"):
        raise ValueError("kind must be 'county' or 'state'")
    out: dict[str, list[np.ndarray]] = {}
    with shapefile.Reader(str(_shapefile_path(kind))) as r:
        for rec, shp in zip(r.iterRecords(fields=["STATEFP", "GEOID"]), r.iterShapes(), strict=True):
            if rec["STATEFP"] in NOT_CONTIGUOUS:
                continue
            pts = np.asarray(shp.points, dtype=float)
            x, y = _albers(pts[:, 0], pts[:, 1])
            xy = np.column_stack([x, y])
            bounds = list(shp.parts) + [len(pts)]
            out[rec["GEOID"]] = [xy[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return out


def county_map(
    df: pd.DataFrame,
    column: str,
    geometry: Mapping[str, list[np.ndarray]],
    states: Mapping[str, list[np.ndarray]] | None = None,
    ax=None,
    k: int = 5,
    title: str | None = None,
    fips: str = "fips",
    cmap: str = "viridis",
):
    """Choropleth of ``column`` by county in ``k`` equal-count classes; counties without a value grey.

    Returns the axes. Class edges are quantiles over the counties drawn (not population-weighted).
    """
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection
    from matplotlib.patches import Patch

    from analysis.plots import subplots

    _require(df, [fips, column])
    if ax is None:
        _, ax = subplots(figsize=(7, 4.5))
    values = df.set_index(fips)[column]
    drawn = values.reindex(list(geometry)).astype(float)
    classes = pd.qcut(drawn, q=k, labels=False, duplicates="drop")
    edges = drawn.quantile(np.linspace(0, 1, k + 1)).to_numpy()
    colours = plt.get_cmap(cmap)(np.linspace(0.05, 0.95, k))
    polys, faces = [], []
    for f, rings in geometry.items():
        c = classes.get(f)
        face = (0.85, 0.85, 0.85, 1.0) if pd.isna(c) else colours[int(c)]
        for ring in rings:
            polys.append(ring)
            faces.append(face)
    ax.add_collection(PolyCollection(polys, facecolors=faces, edgecolors="none", rasterized=True))
    if states:
        srings = [ring for rings in states.values() for ring in rings]
        ax.add_collection(PolyCollection(srings, facecolors="none", edgecolors="white", linewidths=0.4))
    ax.autoscale_view()
    ax.set_aspect("equal")
    ax.set_axis_off()
    handles = [Patch(color=colours[i], label=f"{edges[i]:.3g} to {edges[i + 1]:.3g}") for i in range(k)]
    handles.append(Patch(color=(0.85, 0.85, 0.85), label="no value"))
    # below the map, where it covers no county
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, frameon=False,
              handlelength=1.2, columnspacing=1.0)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def atlas_map_figure(df: pd.DataFrame, columns: Mapping[str, str], k: int = 5):
    """A 2-column grid of county choropleths, one per ``columns`` entry (column -> title)."""
    from analysis.plots import panel_grid

    geometry = county_geometry("county")
    states = county_geometry("state")
    fig, axes = panel_grid(len(columns), max_cols=2, row_height=3.9)
    for ax, (col, title) in zip(axes, columns.items(), strict=True):
        county_map(df, col, geometry, states, ax=ax, k=k, title=title)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------
# Summaries for the chapters
# --------------------------------------------------------------------------------------


def quality_report(df: pd.DataFrame, outcomes: Sequence[str] = tuple(OUTCOMES), state: str = "state_fips") -> pd.DataFrame:
    """For each outcome and quality flag: counties, share whose value repeats another county's
    in the same state, and their median population."""
    rows = []
    for y in outcomes:
        q = OUTCOMES[y].quality
        _require(df, [y, q, "pop2018"])
        d = df[df[y].notna()]
        rep = repeated_within_state(d, y, state)
        for level, g in d.groupby(q):
            rows.append({
                "outcome": y,
                "quality": int(level),
                "counties": len(g),
                "repeated_in_state": float(rep.loc[g.index].mean()),
                "median_pop": int(round(float(g["pop2018"].median()))),
            })
    return pd.DataFrame(rows).set_index(["outcome", "quality"])


def weighted_corr(df: pd.DataFrame, cols: Sequence[str], weights: str | None = None) -> pd.DataFrame:
    """(Weighted) Pearson correlations of ``cols`` on the rows where all are observed."""
    _require(df, list(cols) + ([weights] if weights else []))
    d = df.dropna(subset=list(cols) + ([weights] if weights else []))
    w = d[weights].to_numpy(dtype=float) if weights else None
    c = np.cov(d[list(cols)].to_numpy(dtype=float).T, aweights=w)
    s = np.sqrt(np.diag(c))
    return pd.DataFrame(c / np.outer(s, s), index=list(cols), columns=list(cols))


def horse_race_pivot(table: pd.DataFrame, value: str = "coef") -> pd.DataFrame:
    """Outcomes in rows; (model, measure) in columns; ``value`` in cells."""
    p = table.pivot_table(index="outcome", columns=["model", "measure"], values=value, sort=False)
    return p.reindex(index=list(dict.fromkeys(table["outcome"])))


def density_slopes(
    df: pd.DataFrame,
    outcomes: Sequence[str],
    measure: str,
    by: str = "year",
    quality: str | None = None,
    keep_quality: Sequence[int] = (1, 2),
    weights: str = "population",
    cluster: str = "state_fips",
) -> pd.DataFrame:
    """Standardised, weighted, state-clustered slope of each outcome on ``measure`` in each ``by`` group.

    One cross-section per group (e.g. year), rows with the outcome, ``measure`` and weight, and,
    if ``quality`` is named, a flag in ``keep_quality``. Returns one row per (outcome, group).
    """
    _require(df, [*outcomes, measure, by, weights, cluster] + ([quality] if quality else []))
    rows = []
    for y in outcomes:
        for g, d in df.groupby(by):
            d = d.dropna(subset=[y, measure, weights])
            if quality:
                d = d[d[quality].isin(list(keep_quality)).fillna(False).astype(bool)]
            if len(d) < 3:
                continue
            z = standardise(d, [y, measure], weights)
            z[weights] = d[weights].to_numpy(dtype=float)
            z[cluster] = d[cluster].to_numpy()
            r = ols(z, y, [measure], weights=weights, cov="cluster", cluster=cluster)
            ci = r.ci(0.95)
            rows.append({"outcome": y, by: g, "coef": float(r.params[measure]), "se": float(r.std_errors[measure]),
                         "lower": float(ci.loc[measure, "lower"]), "upper": float(ci.loc[measure, "upper"]),
                         "p": float(r.pvalues[measure]), "nobs": r.nobs})
    return pd.DataFrame(rows).set_index(["outcome", by])
