r"""Chapter 6b, the long run: a century of congregations and membership, and four decades of
congregation density against county income and population growth.

Data: ``us_counties_congregations`` (Census of Religious Bodies members 1906-1936 on 1930
boundaries; U.S. Religion Census congregations and adherents 1952-2020 on 2020 FIPS) and
``us_counties_income`` (BEA CAINC1, 1969-2022), both built by :mod:`analysis.longrun`.

The decadal panel (:func:`decadal_panel`)
    One row per county area and wave 1980, 1990, 2000, 2010, 2020 (``wave``). The unit is the
    BEA county area: the counties BEA publishes only as a combination (Maui + Kalawao, HI;
    Shawano + Menominee, WI) are summed into it, so that congregations, population and income
    describe the same place (:func:`bea_area_of`). Alaska (BEA areas that change over the
    period and do not match 2020 boundaries) and Virginia (the RCMS files of 1971-1990 fold
    independent cities into surrounding counties with populations that do not match, see the
    codebook's ``not_reported``) are left out. Income variables, all in log points:

    * ``inc_growth_next``  :math:`y_{i,t+10}-y_{it}`, :math:`y` = ``log_pcpi_rel_us``
      (log per-capita personal income relative to the US; there is no price index in the
      pinned data, so real growth is identified only relative to the US / through year effects);
    * ``inc_growth_past``  :math:`y_{it}-y_{i,t-10}` (1970 for the 1980 wave);
    * ``pop_growth_next``, ``pop_growth_past``  the same for log BEA population;
    * ``dens_change_next``  :math:`x_{i,t+10}-x_{it}`, :math:`x` = ``congregations_per_1k``.

Designs (each returns outcome units per congregation per 1,000 residents, read per
within-county SD by :func:`per_sd`)
    * decade regressions with county and state-by-decade effects, clustered by county
      (:func:`decade_model`: :func:`absorbed_ols`, a fast path that reproduces
      :func:`analysis.estimation.fit` with ``effects="state-by-year"``, ``cov="cluster-unit"``);
    * local projections :math:`y_{i,t+h}-y_{it} = \beta_h x_{it} + \alpha_i + \delta_{s(i)t} +
      u_{ith}`, :math:`h = 1, \dots, 20`, on the annual BEA series (:func:`local_projections`);
    * a historical first stage and IV, 1926/1936 members per 100 -> 1980 density
      (:func:`iv_just_identified`, which reproduces linearmodels ``IV2SLS``), with a
      Conley-Hansen-Rossi (2012) "plausibly exogenous" sensitivity analysis
      (:func:`plausibly_exogenous`, :func:`local_to_zero`).

Bound and wording (``analysis/hypotheses.yml`` addition A2, :func:`a2_bound`): log points of
decade growth per within-county SD of congregation density; a 90% interval inside it reads "ruled out", one that crosses it
"not identified", one wholly beyond it "larger than the bound" (:func:`bound_reading`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from scipy import stats

from analysis.hypotheses import additions
from analysis.longrun import BEA_COMBINED_AREAS
from analysis.paths import ROOT
from analysis.policy import minimum_detectable_effect

__all__ = [
    "DECADES",
    "EXCLUDED_STATES",
    "LONG_RUN_BOUND",
    "AbsorbedResult",
    "JustIdentifiedIV",
    "a2_bound",
    "absorbed_ols",
    "bea_area_of",
    "bound_reading",
    "census_regions",
    "century_figure",
    "century_rates",
    "county_rates",
    "decadal_panel",
    "decade_model",
    "demean_two_way",
    "design_table",
    "historical_membership",
    "income_by_area",
    "iv_cross_section",
    "iv_just_identified",
    "local_projections",
    "local_to_zero",
    "long_run_maps",
    "lp_figure",
    "lp_sample",
    "partial_out",
    "per_sd",
    "plausibly_exogenous",
    "residual_sd",
    "result_per_sd",
    "sensitivity_figure",
    "standardised",
    "within_sd",
]

DECADES = (1980, 1990, 2000, 2010, 2020)
#: Alaska: BEA areas change over the period and do not match 2020 boundaries. Virginia: the
#: RCMS files of 1971-1990 fold independent cities into counties with populations that do not
#: match, so a county's density jumps when the cities appear (2000).
EXCLUDED_STATES = {"02": "Alaska", "51": "Virginia"}
NOT_CONTIGUOUS = {"02", "15"}  # the century series and maps: 48 states and DC, a constant territory


def a2_bound() -> float:
    """The long-run bound of addition A2 (``analysis/hypotheses.yml``): log points of decade income
    growth per within-county SD of congregation density."""
    (a2,) = [a for a in additions() if a["id"] == "A2"]
    return float(a2["parameters"]["bound_log_points_per_within_sd"])


LONG_RUN_BOUND = a2_bound()
MEMBER_WAVES = (1906, 1916, 1926, 1936)


# --------------------------------------------------------------------------------------------
# The century: national and regional rates
# --------------------------------------------------------------------------------------------


def census_regions() -> pd.Series:
    """State FIPS (2 digits) -> Census region, from ``data/crosswalks/us_states.csv``."""
    s = pd.read_csv(ROOT / "data" / "crosswalks" / "us_states.csv", dtype=str)
    return s.set_index("state_fips")["census_region"]


def century_rates(cong: pd.DataFrame, regions: pd.Series | None = None) -> pd.DataFrame:
    """Members (1906-1936) or adherents (1952-2020) per 100 people and congregations per 1,000,
    by wave, for the US and each Census region (48 contiguous states and DC).

    Ratios of sums over the rows with a value (a county whose count is missing also leaves the
    denominator); rows are ``(area, wave)``; ``measure`` says what the per-100 rate counts.
    """
    regions = census_regions() if regions is None else regions
    d = cong[~cong["state_fips"].isin(NOT_CONTIGUOUS)].copy()
    d["region"] = d["state_fips"].map(regions)
    if d["region"].isna().any():
        raise ValueError(f"states without a region: {sorted(d.loc[d['region'].isna(), 'state_fips'].unique())}")
    pop = d["population"].astype("float64")
    members = d["adherents_or_members"].astype("float64")
    cng = d["congregations"].astype("float64")
    d = d.assign(_pop_m=pop.where(members.notna()), _m=members, _pop_c=pop.where(cng.notna()), _c=cng)
    frames = []
    for area, g in [("United States", d), *d.groupby("region")]:
        s = g.groupby("wave")[["_m", "_pop_m", "_c", "_pop_c"]].sum(min_count=1)
        frames.append(pd.DataFrame({
            "area": area, "wave": s.index,
            "measure": np.where(s.index <= max(MEMBER_WAVES), "members", "adherents"),
            "per_100": 100 * s["_m"] / s["_pop_m"],
            "congregations_per_1k": 1000 * s["_c"] / s["_pop_c"],
        }))
    return pd.concat(frames).set_index(["area", "wave"])


def century_figure(rates: pd.DataFrame):
    """Two panels: members/adherents per 100 and congregations per 1,000 by wave, US (black) and
    regions. The two membership eras are drawn as separate lines with a gap at the seam."""
    from analysis.plots import subplots

    fig, (a1, a2) = subplots(1, 2, figsize=(10, 4.4))
    areas = list(dict.fromkeys(rates.index.get_level_values("area")))
    for i, area in enumerate(areas):
        r = rates.xs(area, level="area")
        kw = {"color": "black", "linewidth": 2.5} if area == "United States" else {"color": f"C{i}", "linewidth": 1.2}
        for measure, ls in (("members", "--"), ("adherents", "-")):
            part = r[r["measure"] == measure]
            a1.plot(part.index, part["per_100"], ls, marker="o", markersize=3,
                    label=area if measure == "adherents" else None, **kw)
        c = r["congregations_per_1k"].dropna()
        a2.plot(c.index, c, marker="o", markersize=3, label=area, **kw)
    a1.axvspan(1937, 1951, color="0.92")
    a1.text(1944, a1.get_ylim()[0], "seam:\nmembers\nto\nadherents", ha="center", va="bottom", fontsize=9)
    a1.set_ylabel("per 100 residents")
    a1.set_title("Church members (1906-1936, dashed)\nand adherents (1952-2020)", fontsize=10)
    a2.set_ylabel("congregations per 1,000 residents")
    a2.set_title("Congregations (1952-2020)", fontsize=10)
    a1.legend(frameon=False)
    for a in (a1, a2):
        a.set_xlabel("wave")
    fig.tight_layout()
    return fig


def county_rates(cong: pd.DataFrame, wave: int, measure: str = "congregations_per_1k") -> pd.Series:
    """One wave's rate by (2020) FIPS: ``congregations_per_1k`` or ``per_100`` (members or
    adherents per 100). 1930 units that share a 2020 code are summed before the ratio."""
    d = cong[(cong["wave"] == wave) & cong["fips"].notna()]
    num = {"congregations_per_1k": "congregations", "per_100": "adherents_or_members"}[measure]
    scale = 1000 if measure == "congregations_per_1k" else 100
    g = d.assign(_n=d[num].astype("float64"), _p=d["population"].astype("float64")).groupby("fips")
    s = g[["_n", "_p"]].sum(min_count=1)
    out = scale * s["_n"] / s["_p"].where(s["_p"] > 0)
    return out.rename(f"{measure}_{wave}")


def _class_edges(values: pd.Series, k: int) -> np.ndarray:
    return np.unique(np.nanquantile(values.dropna(), np.linspace(0, 1, k + 1)))


def _decimate(ring: np.ndarray, step: int) -> np.ndarray:
    """Every ``step``-th vertex of a ring (and its last, which closes it); short rings unchanged."""
    if step <= 1 or len(ring) <= 4 * step:
        return ring
    return np.vstack([ring[::step], ring[-1:]])


def long_run_maps(maps: Mapping[str, pd.Series], shared: Sequence[str] = (), k: int = 5, step: int = 4):
    """County choropleths (Census 2016 boundaries from ``plotly-geo``, offline), one per ``maps``
    entry (title -> rate by FIPS), in ``k`` equal-count classes, two to a row; with an odd number
    of maps the first is centred on a row of its own. Maps whose titles are in ``shared`` use one
    set of class edges, pooled over them, so that they can be compared."""
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection
    from matplotlib.patches import Patch

    from analysis.atlas import county_geometry
    from analysis.plots import MAX_WIDTH_IN, figure

    # every ``step``-th vertex: a map a few inches wide does not need 900,000 of them
    geometry = {f: [_decimate(r, step) for r in rings] for f, rings in county_geometry("county").items()}
    states = {f: [_decimate(r, step) for r in rings] for f, rings in county_geometry("state").items()}
    drawn = {t: v.reindex(list(geometry)).astype(float) for t, v in maps.items()}
    pooled = _class_edges(pd.concat([drawn[t] for t in shared]), k) if shared else None
    n = len(drawn)
    lone = n % 2 if n > 1 else 0  # an odd map out goes first, centred
    nrows = lone + (n - lone + 1) // 2
    fig = figure(figsize=(MAX_WIDTH_IN, 3.9 * nrows))
    grid = fig.add_gridspec(nrows, 4)
    cells = ([grid[0, 1:3]] if lone else []) + [grid[lone + i // 2, 2 * (i % 2):2 * (i % 2) + 2]
                                                   for i in range(n - lone)]
    if n == 1:
        cells = [grid[0, :]]
    axes = [fig.add_subplot(c) for c in cells]
    for ax, (title, v) in zip(axes, drawn.items(), strict=True):
        edges = pooled if title in shared else _class_edges(v, k)
        cls = pd.Series(np.clip(np.searchsorted(edges, v.to_numpy(), side="right") - 1, 0, len(edges) - 2),
                        index=v.index).where(v.notna())
        colours = plt.get_cmap("viridis")(np.linspace(0.05, 0.95, len(edges) - 1))
        polys, faces = [], []
        for f, rings in geometry.items():
            face = (0.85, 0.85, 0.85, 1.0) if pd.isna(cls[f]) else colours[int(cls[f])]
            polys += rings
            faces += [face] * len(rings)
        ax.add_collection(PolyCollection(polys, facecolors=faces, edgecolors="none", rasterized=True))
        ax.add_collection(PolyCollection([r for rs in states.values() for r in rs], facecolors="none",
                                         edgecolors="white", linewidths=0.3))
        ax.autoscale_view()
        ax.set_aspect("equal")
        ax.set_axis_off()
        handles = [Patch(color=colours[i], label=f"{edges[i]:.3g} to {edges[i + 1]:.3g}") for i in range(len(edges) - 1)]
        handles.append(Patch(color=(0.85, 0.85, 0.85), label="no value"))
        # below the map, where it covers no county
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, frameon=False,
                  handlelength=1.2, columnspacing=1.0)
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# The decadal panel
# --------------------------------------------------------------------------------------------


def bea_area_of(fips: pd.Series) -> pd.Series:
    """County FIPS -> BEA county area: the combination-area code for a component county
    (:data:`analysis.longrun.BEA_COMBINED_AREAS`), else the FIPS itself."""
    to_area = {c: area for area, comps in BEA_COMBINED_AREAS.items() for c in comps}
    return fips.map(lambda f: to_area.get(f, f))


def income_by_area(income: pd.DataFrame) -> pd.DataFrame:
    """BEA income by county area and year: components of a combination area are summed in the
    years BEA publishes them separately (Shawano + Menominee from 1989). Columns ``fips`` (area),
    ``year``, ``state_fips``, ``population``, ``log_population``, ``log_pcpi_rel_us``; rows
    without income or population are dropped. An area-year with both the combination row and a
    component row is an error (it would be counted twice)."""
    d = income[income["personal_income_thousands"].notna() & income["population"].notna()].copy()
    d["area"] = bea_area_of(d["fips"])
    rows = d.groupby(["area", "year"])["fips"].nunique()
    combined = d[d["fips"].isin(BEA_COMBINED_AREAS)].set_index(["area", "year"]).index
    twice = rows.reindex(combined)
    if (twice > 1).any():
        shown = ", ".join(f"{a} {y}" for a, y in twice[twice > 1].index[:5])
        raise ValueError(f"BEA combination row and a component row in the same year ({shown}): "
                         "the component would be counted twice")
    g = d.groupby(["area", "year"]).agg(pi=("personal_income_thousands", "sum"), population=("population", "sum"),
                                        us_pcpi=("us_pcpi", "first"), state_fips=("state_fips", "first"))
    g = g.reset_index().rename(columns={"area": "fips"})
    pop = g["population"].astype("float64")
    g["log_population"] = np.log(pop)
    g["log_pcpi_rel_us"] = np.log(g["pi"].astype("float64") * 1000 / pop) - np.log(g["us_pcpi"].astype("float64"))
    return g[["fips", "year", "state_fips", "population", "log_population", "log_pcpi_rel_us"]]


def decadal_panel(cong: pd.DataFrame, income_areas: pd.DataFrame, waves: Sequence[int] = DECADES,
                  regions: pd.Series | None = None) -> pd.DataFrame:
    """County area x wave: congregation density and the income and population growth around it.

    Congregations, adherents and population are summed over the counties of a BEA area before
    the ratios. Flags: ``boundary_flag`` (a component row has ``boundary_change_crosswalked``),
    ``coverage_flag`` (``wave_coverage_differs``). States in :data:`EXCLUDED_STATES` are left out.
    """
    regions = census_regions() if regions is None else regions
    d = cong[cong["wave"].isin(waves) & cong["fips"].notna() & ~cong["state_fips"].isin(EXCLUDED_STATES)].copy()
    d["area"] = bea_area_of(d["fips"])
    num = d[["congregations", "adherents_or_members", "population"]].astype("float64")
    d = d.assign(_c=num["congregations"], _a=num["adherents_or_members"], _p=num["population"])
    grouped = d.groupby(["area", "wave"])
    g = grouped.agg(
        congregations=("_c", "sum"), adherents=("_a", "sum"), rcms_population=("_p", "sum"),
        state_fips=("state_fips", "first"), boundary_flag=("boundary_change_crosswalked", "any"),
        coverage_flag=("wave_coverage_differs", "any"),
    )
    # an area is missing if any of its counties is (a partial sum would be a smaller place)
    complete = grouped[["_c", "_a", "_p"]].count().eq(grouped.size(), axis=0)
    for col, part in (("congregations", "_c"), ("adherents", "_a"), ("rcms_population", "_p")):
        g[col] = g[col].where(complete[part])
    g = g.reset_index().rename(columns={"area": "fips"})
    pop = g["rcms_population"].where(g["rcms_population"] > 0)
    g["congregations_per_1k"] = 1000 * g["congregations"] / pop
    g["adherents_per_100"] = 100 * g["adherents"] / pop
    g["census_region"] = g["state_fips"].map(regions)
    inc = income_areas.set_index(["fips", "year"])
    for name, shift in (("now", 0), ("next", 10), ("past", -10)):
        idx = pd.MultiIndex.from_arrays([g["fips"], g["wave"] + shift])
        g[f"_y_{name}"] = inc["log_pcpi_rel_us"].reindex(idx).to_numpy()
        g[f"_p_{name}"] = inc["log_population"].reindex(idx).to_numpy()
    g["log_pcpi_rel_us"] = g["_y_now"]
    g["log_population"] = g["_p_now"]
    g["inc_growth_next"] = g["_y_next"] - g["_y_now"]
    g["inc_growth_past"] = g["_y_now"] - g["_y_past"]
    g["pop_growth_next"] = g["_p_next"] - g["_p_now"]
    g["pop_growth_past"] = g["_p_now"] - g["_p_past"]
    g = g.drop(columns=[c for c in g.columns if c.startswith("_")]).sort_values(["fips", "wave"])
    step = g.groupby("fips")["wave"].shift(-1) - g["wave"]
    nxt = g.groupby("fips")["congregations_per_1k"].shift(-1)
    g["dens_change_next"] = (nxt - g["congregations_per_1k"]).where(step == 10)
    return g.reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Scales, bounds and the decade regressions
# --------------------------------------------------------------------------------------------


def within_sd(df: pd.DataFrame, col: str, entity: str = "fips") -> float:
    """SD of ``col`` after removing unit means, over units observed at least twice."""
    d = df[[entity, col]].dropna()
    d = d[d.groupby(entity)[col].transform("size") >= 2]
    return float((d[col] - d.groupby(entity)[col].transform("mean")).std())


def residual_sd(df: pd.DataFrame, col: str, entity: str = "fips", state: str = "state_fips", time: str = "wave") -> float:
    """SD of ``col`` net of county and state-by-period effects (:func:`demean_two_way`), on the
    rows where it is present: the variation a model with those effects uses."""
    d = df.dropna(subset=[col, entity, state, time])
    v = demean_two_way(d[[col]].to_numpy(dtype=float), pd.factorize(d[entity])[0],
                       d.groupby([state, time]).ngroup().to_numpy())
    return float(np.std(v[:, 0], ddof=1))


@dataclass(frozen=True)
class AbsorbedResult:
    """A regression with absorbed effects: coefficients of the regressors and controls only."""

    outcome: str
    params: pd.Series
    std_errors: pd.Series
    nobs: int
    n_units: int
    n_clusters: int
    df_inference: float  # t reference distribution: clusters - 1
    k: int  # coefficients counted in the small-sample factor
    regressors: tuple[str, ...]

    @property
    def pvalues(self) -> pd.Series:
        return pd.Series(2 * stats.t.sf(np.abs(self.params / self.std_errors), self.df_inference), index=self.params.index)

    def ci(self, level: float = 0.95) -> pd.DataFrame:
        q = float(stats.t.ppf(0.5 + level / 2, self.df_inference))
        return pd.DataFrame({"lower": self.params - q * self.std_errors, "upper": self.params + q * self.std_errors})


def demean_two_way(values: np.ndarray, a: np.ndarray, b: np.ndarray | None, tol: float = 1e-13,
                   max_iter: int = 10_000) -> np.ndarray:
    """Columns of ``values`` net of the effects of two factors (integer codes ``a``, ``b``) by
    alternating projections (the Frisch-Waugh-Lovell residual of both sets of dummies); one
    factor if ``b`` is None. Converges to the exact projection; ``tol`` is on the largest change."""
    if not np.isfinite(values).all():
        raise ValueError("demean_two_way: drop missing or infinite values first")
    v = values - values.mean(axis=0)
    ca, cb = np.bincount(a), (np.bincount(b) if b is not None else None)
    for _ in range(max_iter):
        prev = v.copy()
        for codes, counts in ((a, ca), (b, cb)):
            if codes is None:
                continue
            sums = np.vstack([np.bincount(codes, v[:, j], minlength=len(counts)) for j in range(v.shape[1])]).T
            v = v - (sums / counts[:, None])[codes]
        if b is None or np.max(np.abs(v - prev)) < tol * max(1.0, np.max(np.abs(v))):
            return v
    raise RuntimeError("alternating projections did not converge")


def absorbed_ols(panel: pd.DataFrame, outcome: str, regressors: Sequence[str], controls: Sequence[str] = (),
                 unit_effects: bool = True, entity: str = "fips", state: str = "state_fips",
                 time: str = "wave") -> AbsorbedResult:
    r"""OLS with county (``unit_effects``) and state-by-period effects absorbed, CR1 standard errors
    clustered by county: the fast path of :func:`analysis.estimation.fit` with
    ``effects="state-by-year"`` and ``cov="cluster-unit"``, which it reproduces (tests).

    The same small-sample convention as ``fit``: :math:`V = (\tilde X'\tilde X)^{-1}\sum_g
    \tilde X_g'e_ge_g'\tilde X_g(\tilde X'\tilde X)^{-1}\,\frac{G}{G-1}\frac{n-1}{n-K}`
    with :math:`K` = regressors + controls + 1 + (state-period cells - states), the county
    effects (nested in the clusters) not counted; t with :math:`G-1` degrees of freedom. Without
    unit effects :math:`K` = regressors + controls + state-period cells. Rows with a missing value
    are dropped; all remaining rows (county singletons too) count in :math:`n`."""
    cols = [*regressors, *controls]
    d = panel.dropna(subset=[outcome, *cols, entity, state, time])
    unit = pd.factorize(d[entity])[0]
    cell = d.groupby([state, time]).ngroup().to_numpy()
    M = demean_two_way(d[[outcome, *cols]].to_numpy(dtype=float), unit if unit_effects else cell,
                       cell if unit_effects else None)
    y, X = M[:, 0], M[:, 1:]
    xtx_inv = np.linalg.inv(X.T @ X)
    beta = xtx_inv @ X.T @ y
    e = y - X @ beta
    n, G = len(d), int(unit.max() + 1)
    n_cells, n_states = int(cell.max() + 1), d[state].nunique()
    k = len(cols) + (1 + n_cells - n_states if unit_effects else n_cells)
    scores = np.zeros((G, len(cols)))
    np.add.at(scores, unit, X * e[:, None])
    V = xtx_inv @ (scores.T @ scores) @ xtx_inv * (G / (G - 1)) * ((n - 1) / (n - k))
    return AbsorbedResult(outcome=outcome, params=pd.Series(beta, index=cols), std_errors=pd.Series(np.sqrt(np.diag(V)), index=cols),
                          nobs=n, n_units=d[entity].nunique(), n_clusters=G, df_inference=float(G - 1), k=k,
                          regressors=tuple(regressors))


def decade_model(panel: pd.DataFrame, outcome: str, regressor: str, controls: Sequence[str] = (),
                 unit_effects: bool = True) -> AbsorbedResult:
    """``outcome`` on ``regressor`` (and ``controls``) with county and state-by-decade effects,
    clustered by county (:func:`absorbed_ols`); ``unit_effects=False`` keeps only the
    state-by-decade effects (a comparison across counties of a state)."""
    return absorbed_ols(panel, outcome, (regressor,), controls, unit_effects=unit_effects)


def bound_reading(low: float, high: float, bound: float = LONG_RUN_BOUND) -> str:
    """A2's wording for a 90% interval against +/- ``bound``: "ruled out" (inside), "larger than
    the bound" (wholly beyond it on one side) or "not identified" (it crosses the bound)."""
    if not bound > 0:
        raise ValueError(f"bound must be positive, got {bound!r}")
    if -bound < low and high < bound:
        return "ruled out"
    if low > bound or high < -bound:
        return "larger than the bound"
    return "not identified"


def per_sd(estimate: float, std_error: float, sd: float, df: float = np.inf, level: float = 0.90,
           bound: float | None = LONG_RUN_BOUND) -> dict:
    """A slope per unit of density read per ``sd`` (one within-county SD): estimate, SE, the
    ``level`` interval (t with ``df`` degrees of freedom, normal if infinite), the minimum
    detectable effect (:func:`analysis.policy.minimum_detectable_effect`, 80% power, 5% two-sided)
    and, if ``bound`` is given, the A2 reading."""
    b, se = estimate * sd, std_error * sd
    q = float(stats.norm.ppf(0.5 + level / 2) if np.isinf(df) else stats.t.ppf(0.5 + level / 2, df))
    out = {"per_sd": b, "se_per_sd": se, "lo90": b - q * se, "hi90": b + q * se, "mde_per_sd": minimum_detectable_effect(se)}
    if bound is not None:
        out["reading"] = bound_reading(out["lo90"], out["hi90"], bound)
    return out


def result_per_sd(result: AbsorbedResult, sd: float, bound: float | None = LONG_RUN_BOUND, term: str | None = None) -> dict:
    """:func:`per_sd` of a fitted decade model's regressor of interest, with its sample size."""
    term = term or result.regressors[0]
    out = per_sd(float(result.params[term]), float(result.std_errors[term]), sd, result.df_inference, bound=bound)
    return {**out, "p": float(result.pvalues[term]), "nobs": result.nobs, "counties": result.n_units}


def design_table(panel: pd.DataFrame, designs: Mapping[str, Mapping], sd: float) -> pd.DataFrame:
    """One row per design (name -> ``outcome``, ``regressor``, optional ``controls``,
    ``unit_effects`` (default True), ``per_sd`` (default True: read per ``sd``; False: raw units)
    and ``bound`` (default True: the A2 reading)): :func:`decade_model` and :func:`result_per_sd`."""
    rows = {}
    for name, d in designs.items():
        r = decade_model(panel, d["outcome"], d["regressor"], d.get("controls", ()), d.get("unit_effects", True))
        rows[name] = result_per_sd(r, sd if d.get("per_sd", True) else 1.0, LONG_RUN_BOUND if d.get("bound", True) else None)
    return pd.DataFrame.from_dict(rows, orient="index")


def standardised(panel: pd.DataFrame, result: AbsorbedResult, level: float = 0.90) -> pd.Series:
    """The regressor's coefficient in SDs of the outcome per SD of the regressor, both SDs net of
    county and state-by-decade effects on the model's estimation sample (as Chapter 4's
    standardisation); with the ``level`` interval scaled alike."""
    x = result.regressors[0]
    d = panel.dropna(subset=[result.outcome, *result.params.index])
    scale = residual_sd(d, x) / residual_sd(d, result.outcome)
    lo, hi = result.ci(level).loc[x]
    return pd.Series({"std_coef": float(result.params[x]) * scale, "std_lo90": lo * scale, "std_hi90": hi * scale})


# --------------------------------------------------------------------------------------------
# Local projections on the annual BEA series
# --------------------------------------------------------------------------------------------


def lp_sample(panel: pd.DataFrame, income_areas: pd.DataFrame, outcome: str = "log_pcpi_rel_us",
              regressor: str = "congregations_per_1k", horizons: Sequence[int] = range(1, 21),
              waves: Sequence[int] = (1980, 1990, 2000)) -> pd.DataFrame:
    """The local projections' sample: rows of ``panel`` in ``waves`` with ``regressor`` and the
    change of ``outcome`` (annual ``income_areas`` series) from the wave to every horizon, in
    columns ``lp_1``, ``lp_2``, ...; rows missing any of them are dropped, so every horizon uses
    the same rows."""
    inc = income_areas.set_index(["fips", "year"])[outcome]
    d = panel.loc[panel["wave"].isin(waves), ["fips", "state_fips", "wave", regressor]].copy()
    y0 = inc.reindex(pd.MultiIndex.from_arrays([d["fips"], d["wave"]])).to_numpy()
    for h in horizons:
        d[f"lp_{h}"] = inc.reindex(pd.MultiIndex.from_arrays([d["fips"], d["wave"] + h])).to_numpy() - y0
    return d.dropna().reset_index(drop=True)


def local_projections(panel: pd.DataFrame, income_areas: pd.DataFrame, outcome: str = "log_pcpi_rel_us",
                      regressor: str = "congregations_per_1k", horizons: Sequence[int] = range(1, 21),
                      waves: Sequence[int] = (1980, 1990, 2000), sd: float = 1.0,
                      bound: float | None = LONG_RUN_BOUND) -> pd.DataFrame:
    r"""Jordà local projections, one regression per horizon ``h``:
    :math:`y_{i,t+h}-y_{it} = \beta_h x_{it} + \alpha_i + \delta_{s(i)t} + u_{ith}` on ``waves``,
    clustered by county, on one sample for every horizon (:func:`lp_sample`). Each horizon is
    :func:`absorbed_ols` (county and state-by-wave effects absorbed, CR1), computed for all
    horizons at once. Rows: horizon; columns of :func:`per_sd` (per ``sd`` of the regressor),
    ``p``, ``nobs``, ``counties``."""
    d = lp_sample(panel, income_areas, outcome, regressor, horizons, waves)
    cols = [f"lp_{h}" for h in horizons]
    unit = pd.factorize(d["fips"])[0]
    cell = d.groupby(["state_fips", "wave"]).ngroup().to_numpy()
    M = demean_two_way(d[[regressor, *cols]].to_numpy(dtype=float), unit, cell)
    x, Y = M[:, 0], M[:, 1:]
    xx = x @ x
    beta = (x @ Y) / xx
    E = Y - np.outer(x, beta)
    n, G = len(d), int(unit.max() + 1)
    k = 1 + 1 + int(cell.max() + 1) - d["state_fips"].nunique()
    scores = np.vstack([np.bincount(unit, x * E[:, j], minlength=G) for j in range(E.shape[1])])
    se = np.sqrt((scores**2).sum(axis=1) * (G / (G - 1)) * ((n - 1) / (n - k))) / xx
    rows = {}
    for h, b, s in zip(horizons, beta, se):
        out = per_sd(float(b), float(s), sd, float(G - 1), bound=bound)
        rows[h] = {**out, "p": float(2 * stats.t.sf(abs(b / s), G - 1)), "nobs": n, "counties": d["fips"].nunique()}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("horizon")


def lp_figure(tables: Mapping[str, pd.DataFrame], bound: float | None = LONG_RUN_BOUND,
              ylabel: str = "log points per within-county SD of density"):
    """Local-projection coefficients by horizon with 90% bands, one panel per ``tables`` entry
    (title -> :func:`local_projections` output); the A2 bound as a shaded band where given."""
    from matplotlib.ticker import MaxNLocator

    from analysis.plots import panel_grid

    ncols = min(2, len(tables))
    fig, axes = panel_grid(len(tables), max_cols=ncols, width=5.0 * ncols, row_height=3.8)
    for ax, (title, t) in zip(axes, tables.items(), strict=True):
        if bound is not None and "reading" in t:
            ax.axhspan(-bound, bound, color="C2", alpha=0.15, label=f"A2 bound ±{bound}")
        ax.fill_between(t.index, t["lo90"], t["hi90"], color="C0", alpha=0.3, label="90% interval")
        ax.plot(t.index, t["per_sd"], "o-", color="C0", markersize=3, label="estimate")
        ax.axhline(0, color="0.3", linewidth=0.8)
        ax.set_xlabel("years after the wave (h)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title, fontsize=10)
        ax.legend(frameon=False)
    for ax in axes[::ncols]:  # the first panel of each row
        ax.set_ylabel(ylabel)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Deep roots: 1926/1936 membership as a predictor of 1980 density
# --------------------------------------------------------------------------------------------


def historical_membership(cong: pd.DataFrame, waves: Sequence[int] = (1926, 1936)) -> pd.DataFrame:
    """Members per 100 by (2020) FIPS in each of ``waves`` (1930 units sharing a code summed),
    their mean (``members_per_100_hist``) and the log population of the 1930 census."""
    out = pd.DataFrame({f"members_per_100_{w}": county_rates(cong, w, "per_100") for w in waves})
    out["members_per_100_hist"] = out.mean(axis=1, skipna=False)
    d = cong[(cong["wave"] == 1926) & cong["fips"].notna()]
    out["log_population_1930"] = np.log(d.groupby("fips")["population"].sum().astype("float64").where(lambda s: s > 0))
    return out.rename_axis("fips")


def iv_cross_section(panel: pd.DataFrame, history: pd.DataFrame, wave: int = 1980, end: int = 2020) -> pd.DataFrame:
    """One row per county area: density in ``wave``, historical membership, and the average
    decade growth of income relative to the US from ``wave`` to ``end`` (``inc_growth_decade``)
    and over the decade before ``wave`` (``inc_growth_pre``, a placebo). Areas are matched to the
    history by FIPS; BEA combination areas (no single 1930 county) drop out."""
    a = panel[panel["wave"] == wave].set_index("fips")
    b = panel[panel["wave"] == end].set_index("fips")
    d = a[["state_fips", "congregations_per_1k", "adherents_per_100", "log_pcpi_rel_us", "log_population",
           "inc_growth_past"]].copy()
    d["inc_growth_decade"] = (b["log_pcpi_rel_us"].reindex(d.index) - d["log_pcpi_rel_us"]) * 10 / (end - wave)
    d = d.rename(columns={"inc_growth_past": "inc_growth_pre"}).join(history, how="inner")
    return d.dropna().reset_index()


def partial_out(d: pd.DataFrame, cols: Sequence[str], exog: Sequence[str] = (), state: str = "state_fips") -> np.ndarray:
    """Columns ``cols`` net of state effects and ``exog`` controls (Frisch-Waugh-Lovell: demean by
    state, then the residual of a least-squares fit on the state-demeaned controls)."""
    codes = pd.factorize(d[state])[0]
    V = demean_two_way(d[list(cols)].to_numpy(dtype=float), codes, None)
    if exog:
        W = demean_two_way(d[list(exog)].to_numpy(dtype=float), codes, None)
        V = V - W @ np.linalg.lstsq(W, V, rcond=None)[0]
    return V


@dataclass(frozen=True)
class JustIdentifiedIV:
    r"""2SLS with one endogenous regressor and one instrument, state effects and controls, CR1
    standard errors clustered by state: the first stage (:math:`\hat\pi`), the reduced form
    (:math:`\hat\rho`), the IV estimate :math:`\hat\beta = \hat\rho/\hat\pi` and the clustered
    first-stage F (:math:`(\hat\pi/se)^2`; with one instrument also the Montiel Olea-Pflueger
    effective F). ``y``, ``x``, ``z`` are the partialled-out variables, kept for
    :func:`plausibly_exogenous`."""

    beta: float
    se: float
    pi: float
    pi_se: float
    rf: float
    rf_se: float
    nobs: int
    n_clusters: int
    k: int  # coefficients in the small-sample factor: constant, state dummies, controls, regressor
    y: np.ndarray = field(repr=False)
    x: np.ndarray = field(repr=False)
    z: np.ndarray = field(repr=False)
    clusters: np.ndarray = field(repr=False)

    @property
    def first_stage_f(self) -> float:
        return (self.pi / self.pi_se) ** 2

    @property
    def df_inference(self) -> float:
        return float(self.n_clusters - 1)

    def cluster_se(self, score: np.ndarray, denominator: float) -> float:
        """CR1 standard error of a just-identified moment: clustered sums of ``score`` over
        ``denominator``, times G/(G-1) (n-1)/(n-k) (linearmodels' ``debiased=True``)."""
        n, G = self.nobs, self.n_clusters
        sums = np.bincount(self.clusters, score)
        return float(np.sqrt(sums @ sums * G / (G - 1) * (n - 1) / (n - self.k)) / abs(denominator))


def iv_just_identified(d: pd.DataFrame, outcome: str, endog: str, instrument: str, exog: Sequence[str] = (),
                       state: str = "state_fips") -> JustIdentifiedIV:
    """:class:`JustIdentifiedIV` of ``outcome`` on ``endog`` instrumented by ``instrument``, with
    state effects and ``exog``; rows with a missing value are dropped. Reproduces linearmodels
    ``IV2SLS(...).fit(cov_type="clustered", debiased=True)`` (tests)."""
    d = d.dropna(subset=[outcome, endog, instrument, *exog, state])
    y, x, z = partial_out(d, [outcome, endog, instrument], exog, state).T
    clusters = pd.factorize(d[state])[0]
    zz = z @ z
    pi, rf, beta = (z @ x) / zz, (z @ y) / zz, (z @ y) / (z @ x)
    iv = JustIdentifiedIV(beta=beta, se=np.nan, pi=pi, pi_se=np.nan, rf=rf, rf_se=np.nan, nobs=len(d),
                          n_clusters=int(clusters.max() + 1), k=d[state].nunique() + len(exog) + 1,
                          y=y, x=x, z=z, clusters=clusters)
    return replace(iv, se=iv.cluster_se(z * (y - beta * x), z @ x), pi_se=iv.cluster_se(z * (x - pi * z), zz),
                   rf_se=iv.cluster_se(z * (y - rf * z), zz))


def plausibly_exogenous(iv: JustIdentifiedIV, gammas: Sequence[float], level: float = 0.90) -> pd.DataFrame:
    r"""Conley, Hansen and Rossi (2012) with the direct effect known: if :math:`y = \beta x +
    \gamma z + W\delta + u`, the IV estimate from :math:`y-\gamma z` is consistent for each
    assumed :math:`\gamma`: :math:`\hat\beta(\gamma) = \hat\beta - \gamma/\hat\pi`, with its own
    clustered SE and ``level`` interval (t, clusters - 1). The union of the intervals over a range
    of :math:`\gamma` is their "union of confidence intervals" bound. One row per ``gamma``."""
    q = float(stats.t.ppf(0.5 + level / 2, iv.df_inference))
    rows = {}
    for g in gammas:
        b = iv.beta - g / iv.pi
        se = iv.cluster_se(iv.z * (iv.y - g * iv.z - b * iv.x), iv.z @ iv.x)
        rows[float(g)] = {"estimate": b, "se": se, "lo": b - q * se, "hi": b + q * se}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("gamma")


def local_to_zero(iv: JustIdentifiedIV, mu: float, sigma: float, level: float = 0.90) -> dict:
    r"""Conley-Hansen-Rossi "local to zero": with a prior :math:`\gamma \sim N(\mu, \sigma^2)`
    independent of the sampling error, :math:`\hat\beta \approx N(\beta + \mu/\hat\pi,
    V + \sigma^2/\hat\pi^2)`: the estimate :math:`\hat\beta - \mu/\hat\pi`, SE
    :math:`\sqrt{V + \sigma^2/\hat\pi^2}`, normal interval."""
    b = iv.beta - mu / iv.pi
    se = float(np.sqrt(iv.se**2 + sigma**2 / iv.pi**2))
    q = float(stats.norm.ppf(0.5 + level / 2))
    return {"estimate": b, "se": se, "lo": b - q * se, "hi": b + q * se}


def sensitivity_figure(table: pd.DataFrame, sd: float, bound: float = LONG_RUN_BOUND, benchmark: float | None = None,
                       xlabel: str = "assumed direct effect of membership on decade growth (γ)",
                       ylabel: str = "log points per decade per\nwithin-county SD of adherents per 100"):
    """The plausibly-exogenous estimates (per ``sd`` of density) and 90% intervals against the
    assumed direct effect, with the A2 bound shaded and an optional benchmark γ marked."""
    from analysis.plots import subplots

    fig, ax = subplots(figsize=(7, 3.8))
    x = table.index.to_numpy()
    ax.axhspan(-bound, bound, color="C2", alpha=0.15, label=f"A2 bound ±{bound}")
    ax.fill_between(x, table["lo"] * sd, table["hi"] * sd, color="C0", alpha=0.3, label="90% interval")
    ax.plot(x, table["estimate"] * sd, color="C0", label="IV estimate given γ")
    ax.axhline(0, color="0.3", linewidth=0.8)
    if benchmark is not None:
        ax.axvline(benchmark, color="C3", linestyle="--", linewidth=1, label="benchmark γ (pre-1980 placebo)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig
