r"""Simulation lab (Chapter 12): a county panel whose truth we know, calibrated to the real one.

The data-generating process
---------------------------
County :math:`i = 1..N`, wave :math:`t = 1..T` (T = 4, as in the wave panel; the lab keeps the
waves' labels, 1997-2014, but a "wave" is the time unit, as in Chapter 4). True density
:math:`x^*`, observed density :math:`x`, outcome :math:`y`:

.. math::

    x^*_{it} &= \mu^x_t + a_i + \sqrt{1-\kappa}\,v_{it} + \pi z_{it} + \gamma\,u_{i,t-1},
        \qquad v_{it} = \phi_x v_{i,t-1} + e_{it}, \\
    y_{it} &= \mu^y_t + \rho\,y_{i,t-1} + \beta\,x^*_{it} + (1-\rho)\,c_i + u_{it},
        \qquad u_{it} = \phi_y u_{i,t-1} + \sqrt{1-\rho^2}\,\varepsilon_{it}, \\
    x_{it} &= x^*_{it} + m_{it}.

* :math:`a_i, v_{it}` and :math:`c_i, u_{it}` are calibrated (:func:`calibrate`) so that, with
  every mechanism off, the simulated density and outcome have the data's variance net of wave
  means, between-county share of that variance and one-wave autocorrelation. The county share
  :math:`\theta = \sigma^2_a/(\sigma^2_a+\sigma^2_v)` and the AR(1) coefficient :math:`\phi` of the
  transitory part solve :math:`r = \theta + (1-\theta)\phi` and
  :math:`B = \theta + (1-\theta)h(\phi)`, where :math:`r` is the autocorrelation, :math:`B` the
  between share and :math:`h(\phi) = [T + 2\sum_{k=1}^{T-1}(T-k)\phi^k]/T^2` the variance of a
  T-wave mean of a unit-variance AR(1). :math:`\mu^x_t, \mu^y_t` are the data's wave means.
* **fixed confounder**: :math:`\operatorname{corr}(a_i, c_i) = \lambda_c` (0 when off). The
  calibrated default is the value that reproduces the data's cross-sectional correlation of
  density and outcome if density had no effect: :math:`\lambda_c = r_{xy}/\sqrt{\theta_x\theta_y}`.
* **reverse causality**: :math:`\gamma = g\,\sigma_v/\sigma_u`: a one-SD transitory outcome shock
  raises density in the next wave by :math:`g` SDs of density's transitory part
  (``reverse_strength``; organisations form where need was high).
* **measurement error**: classical, :math:`m_{it}` iid normal, with variance set so that noise
  is a share ``noise_share`` of the within-county (two-way demeaned) variance of observed
  density in each replication; the textbook attenuation of the within estimator is then
  :math:`\lambda = \operatorname{var}_w(x^*)/(\operatorname{var}_w(x^*)+\operatorname{var}_w(m))`
  = 1 - ``noise_share`` (:func:`attenuation_factor`).
* **dynamic feedback**: :math:`\rho > 0`; the county effect and the shocks are scaled by
  :math:`1-\rho` and :math:`\sqrt{1-\rho^2}` so that the outcome's variance stays near the
  calibrated one. :math:`\beta` is then the impact (same-wave) effect.
* **an exogenous shifter** (always present): a shift-share
  :math:`z_{it} = \sum_k s_{ik} g_{kt}` with ``n_types`` organisation types, county shares
  :math:`s_i \sim` Dirichlet(1, ..., 1) and national shifts :math:`g_{kt}`, stationary AR(1)
  across waves with density's :math:`\phi_x` and unit variance, drawn independently of
  everything else; :math:`z` is standardised (net of wave means) in each replication and
  :math:`\pi = \sqrt\kappa\,\sigma_v`, so that it makes up a share ``instrument_strength``
  (:math:`\kappa`) of the variance of density's transitory part with, in expectation, the same
  time pattern. It has no effect on :math:`y` except through density: a valid instrument.

A burn-in of ``burn_in`` waves precedes the four observed ones, so that the AR processes and
the dynamic outcome start from their stationary distribution.

Estimators (:data:`ESTIMATORS`), each of the coefficient on density, with 95% intervals
---------------------------------------------------------------------------------------------
``pooled``  OLS of :math:`y_{it}` on :math:`x_{it}` with wave effects; ``twfe`` county and wave
effects; ``fd`` first differences with wave effects; ``lagfe`` TWFE of :math:`y_{it}` on
:math:`x_{i,t-1}` (the lagged regressor often used "against reverse causality"); ``fe_ldv`` TWFE
of :math:`y_{it}` on :math:`y_{i,t-1}` and :math:`x_{it}` (subject to Nickell bias);
``sysgmm`` Blundell-Bond system GMM of :math:`y_{it}` on :math:`y_{i,t-1}` and :math:`x_{it}`,
both endogenous (levels lagged two or more waves as instruments, collapsed, two steps,
Windmeijer SEs: the model of :func:`analysis.dynamic.fit_gmm`, computed here in closed form on the
balanced arrays and tested against it); ``iv`` 2SLS with county and wave effects,
density instrumented by the shift-share :math:`z`. All but GMM have CR1 standard errors
clustered by county with the small-sample factor of :func:`analysis.estimation.fit`
(:math:`G/(G-1)\cdot(n-1)/(n-K)`, county effects not counted in K) and t(G-1) intervals; they
are computed with NumPy on the balanced arrays (and tested against linearmodels); GMM uses
normal intervals.

Monte Carlo
-----------
:func:`monte_carlo` draws ``reps`` panels; replication r uses the r-th child of
``numpy.random.SeedSequence(seed)``, so the results are the same whatever ``n_jobs``. GMM is the
slowest estimator (about 0.02 s a fit with 3,100 counties, five times the others together; 0.1 s
through fit_gmm), so it runs on the first ``gmm_reps`` replications only.
:meth:`MonteCarlo.summary` reports bias (mean estimate - beta), its Monte Carlo SE, RMSE, the
coverage of the 95% intervals (and its MC SE), the mean SE and the SD of the estimates.

References: Nickell (1981) *Econometrica* 49(6); Griliches & Hausman (1986) *J. Econometrics*
31(1); Bellemare, Masaki & Pepinsky (2017) *J. Politics* 79(3); Blundell & Bond (1998);
Windmeijer (2005); Goldsmith-Pinkham, Sorkin & Swift (2020) *AER* 110(8).
"""

from __future__ import annotations

import functools
import time as _time
import warnings
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd
from scipy import optimize, stats

__all__ = [
    "ESTIMATORS",
    "Calibration",
    "MonteCarlo",
    "Scenario",
    "SimulationError",
    "attenuation_factor",
    "bench_simulation",
    "calibrate",
    "estimate_all",
    "mc_figure",
    "monte_carlo",
    "panel_moments",
    "simulate",
    "simulate_panel",
    "summarise",
]

ESTIMATORS: dict[str, str] = {
    "pooled": "Pooled OLS (wave effects)",
    "twfe": "Two-way fixed effects",
    "fd": "First differences",
    "lagfe": "TWFE, density at t-1",
    "fe_ldv": "TWFE + lagged outcome",
    "sysgmm": "System GMM",
    "iv": "Shift-share 2SLS (TWFE)",
}
_COLS = ("estimate", "se", "conf_low", "conf_high")


class SimulationError(ValueError):
    """A calibration or simulation that cannot be run as asked."""


# --------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------


def _h(phi: float, T: int) -> float:
    """Variance of the mean of T consecutive values of a unit-variance stationary AR(1)."""
    return (T + 2 * sum((T - k) * phi**k for k in range(1, T))) / T**2


def _solve_components(between_share: float, autocorr: float, T: int) -> tuple[float, float]:
    """County share theta and transitory AR(1) coefficient phi matching the two moments."""
    r, B = autocorr, between_share
    if not (-1 < r < 1) or not (0 < B < 1):
        raise SimulationError(f"Moments out of range: autocorrelation {r:.3f}, between share {B:.3f}.")

    def gap(phi):
        theta = (r - phi) / (1 - phi)
        return theta + (1 - theta) * _h(phi, T) - B

    lo, hi = -0.95, r
    if gap(lo) * gap(hi) > 0:
        raise SimulationError(
            f"No county-effect + AR(1) process has between share {B:.3f} and one-wave autocorrelation "
            f"{r:.3f} with {T} waves (attainable between shares: {gap(hi) + B:.3f} to {gap(lo) + B:.3f})."
        )
    phi = float(optimize.brentq(gap, lo, hi, xtol=1e-12))
    return (r - phi) / (1 - phi), phi


def panel_moments(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Moments of a balanced panel given as (N, T) arrays of density ``x`` and outcome ``y``.

    Wave means are removed first. ``var`` is the pooled variance (ddof 0), ``between_share`` the
    variance of county means over it, ``autocorr`` the correlation of a county's value with its
    value one wave earlier (pooled over consecutive pairs), ``corr_xy`` the pooled correlation
    of density and outcome, ``corr_between`` that of their county means and ``corr_within`` that
    of their two-way demeaned values.
    """
    out = {}
    dx, dy = x - x.mean(axis=0), y - y.mean(axis=0)
    for name, d in (("x", dx), ("y", dy)):
        out[f"var_{name}"] = float(d.var())
        out[f"between_share_{name}"] = float(d.mean(axis=1).var() / d.var())
        out[f"autocorr_{name}"] = float(np.corrcoef(d[:, :-1].ravel(), d[:, 1:].ravel())[0, 1])
    out["corr_xy"] = float(np.corrcoef(dx.ravel(), dy.ravel())[0, 1])
    out["corr_between"] = float(np.corrcoef(dx.mean(axis=1), dy.mean(axis=1))[0, 1])
    wx, wy = dx - dx.mean(axis=1, keepdims=True), dy - dy.mean(axis=1, keepdims=True)
    out["corr_within"] = float(np.corrcoef(wx.ravel(), wy.ravel())[0, 1])
    return out


@dataclass(frozen=True)
class Calibration:
    """Moments of the real wave panel and the DGP parameters that reproduce them.

    Moments (see :func:`panel_moments`) are computed on the counties observed with both
    variables in every wave. ``county_share_*`` (theta) and ``shock_ar_*`` (phi) are the
    variance share of the county effect and the AR(1) coefficient of the transitory part;
    ``confounder_corr`` is the correlation of the county effects that reproduces ``corr_xy``
    with no effect of density; ``within_sd_x`` the SD of two-way demeaned density (to read
    beta per within-county SD).
    """

    density: str
    outcome: str
    n_counties: int
    waves: tuple
    wave_means_x: tuple
    wave_means_y: tuple
    var_x: float
    var_y: float
    between_share_x: float
    between_share_y: float
    autocorr_x: float
    autocorr_y: float
    corr_xy: float
    corr_between: float
    corr_within: float
    county_share_x: float
    county_share_y: float
    shock_ar_x: float
    shock_ar_y: float
    confounder_corr: float
    within_sd_x: float

    @property
    def n_waves(self) -> int:
        return len(self.waves)

    def table(self) -> pd.DataFrame:
        """The targets and the implied parameters, one row each, for density and outcome."""
        rows = {
            "variance net of wave means": (self.var_x, self.var_y),
            "between-county share of variance": (self.between_share_x, self.between_share_y),
            "within-county share of variance": (1 - self.between_share_x, 1 - self.between_share_y),
            "autocorrelation, one wave apart": (self.autocorr_x, self.autocorr_y),
            "implied: county-effect share (theta)": (self.county_share_x, self.county_share_y),
            "implied: AR(1) of transitory part (phi)": (self.shock_ar_x, self.shock_ar_y),
        }
        return pd.DataFrame(rows, index=[self.density, self.outcome]).T


def calibrate(
    df: pd.DataFrame,
    density: str = "assn_per_1k",
    outcome: str = "unemployment_rate",
    entity: str = "fips",
    time: str = "year",
) -> Calibration:
    """Calibrate the lab's DGP to a panel (the wave panel in the chapter).

    Uses the counties with ``density`` and ``outcome`` in every wave (a balanced panel).
    Raises :class:`SimulationError` if a column is missing, fewer than 3 waves or 10 counties
    remain, or the moments cannot be matched.
    """
    missing = [c for c in (density, outcome, entity, time) if c not in df.columns]
    if missing:
        raise SimulationError(f"Column(s) {', '.join(map(repr, missing))} not in the data.")
    d = df[[entity, time, density, outcome]].dropna()
    if d.duplicated([entity, time]).any():
        raise SimulationError(f"The panel is not uniquely indexed by ({entity}, {time}).")
    waves = tuple(sorted(d[time].unique()))
    T = len(waves)
    if T < 3:
        raise SimulationError(f"Calibration needs at least 3 waves, not {T}.")
    d = d[d.groupby(entity)[time].transform("size") == T].sort_values([entity, time])
    N = d[entity].nunique()
    if N < 10:
        raise SimulationError(f"Only {N} counties are observed in every wave; at least 10 are needed.")
    x = d[density].to_numpy(float).reshape(N, T)
    y = d[outcome].to_numpy(float).reshape(N, T)
    m = panel_moments(x, y)
    tx, px = _solve_components(m["between_share_x"], m["autocorr_x"], T)
    ty, py = _solve_components(m["between_share_y"], m["autocorr_y"], T)
    conf = m["corr_xy"] / np.sqrt(tx * ty)
    if abs(conf) >= 1:
        raise SimulationError(f"A county-effect correlation of {conf:.2f} would be needed: not a correlation.")
    return Calibration(
        density=density,
        outcome=outcome,
        n_counties=int(N),
        waves=tuple(int(w) for w in waves),
        wave_means_x=tuple(float(v) for v in x.mean(axis=0)),
        wave_means_y=tuple(float(v) for v in y.mean(axis=0)),
        county_share_x=float(tx),
        county_share_y=float(ty),
        shock_ar_x=float(px),
        shock_ar_y=float(py),
        confounder_corr=float(conf),
        within_sd_x=float(_twoway(x).std()),
        **m,
    )


# --------------------------------------------------------------------------------------
# The data-generating process
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """What the lab's world is like: the true effect and which mechanisms are on.

    ``beta``: effect of one unit of density (associations per 1,000) on the outcome (its
    units), same wave. ``confounder_corr=None`` takes the calibrated value. Strengths apply
    only when their switch is on. See the module docstring for the equations.
    """

    beta: float = 0.0
    n_counties: int = 3100
    confounding: bool = False
    confounder_corr: float | None = None
    reverse_causality: bool = False
    reverse_strength: float = 0.3
    measurement_error: bool = False
    noise_share: float = 0.2
    dynamic: bool = False
    rho: float = 0.5
    instrument_strength: float = 0.2
    n_types: int = 12
    burn_in: int = 10

    def __post_init__(self):
        checks = [
            (np.isfinite(self.beta), f"beta must be a finite number, not {self.beta!r}"),
            (int(self.n_counties) == self.n_counties and self.n_counties >= 20,
             f"n_counties must be an integer of at least 20, not {self.n_counties!r}"),
            (self.confounder_corr is None or -1 < self.confounder_corr < 1,
             f"confounder_corr must lie strictly between -1 and 1, not {self.confounder_corr!r}"),
            (self.reverse_strength >= 0, f"reverse_strength must be >= 0, not {self.reverse_strength!r}"),
            (0 <= self.noise_share < 1, f"noise_share must be in [0, 1), not {self.noise_share!r}"),
            (0 <= self.rho < 1, f"rho must be in [0, 1), not {self.rho!r}"),
            (0 < self.instrument_strength < 1,
             f"instrument_strength must be in (0, 1), not {self.instrument_strength!r}"),
            (int(self.n_types) == self.n_types and self.n_types >= 2, f"n_types must be an integer >= 2, not {self.n_types!r}"),
            (int(self.burn_in) == self.burn_in and self.burn_in >= 2, f"burn_in must be an integer >= 2, not {self.burn_in!r}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise SimulationError(msg + ".")

    def switches(self) -> dict[str, bool]:
        return {k: getattr(self, k) for k in ("confounding", "reverse_causality", "measurement_error", "dynamic")}

    def describe(self) -> str:
        on = [k.replace("_", " ") for k, v in self.switches().items() if v]
        return ", ".join(on) if on else "no mechanism"


def _twoway(a: np.ndarray) -> np.ndarray:
    """Two-way demeaning of a balanced (N, T) array."""
    return a - a.mean(axis=1, keepdims=True) - a.mean(axis=0, keepdims=True) + a.mean()


def simulate(cal: Calibration, scen: Scenario, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One simulated panel as (N, T) arrays: ``y``, ``x`` (observed), ``x_true``, ``noise``, ``z``."""
    N, T, B = int(scen.n_counties), cal.n_waves, int(scen.burn_in)
    S = T + B
    sd_x, sd_y = np.sqrt(cal.var_x), np.sqrt(cal.var_y)
    sa, sv = sd_x * np.sqrt(cal.county_share_x), sd_x * np.sqrt(1 - cal.county_share_x)
    sc, su = sd_y * np.sqrt(cal.county_share_y), sd_y * np.sqrt(1 - cal.county_share_y)
    px, py = cal.shock_ar_x, cal.shock_ar_y
    rho = scen.rho if scen.dynamic else 0.0
    lam = (cal.confounder_corr if scen.confounder_corr is None else scen.confounder_corr) if scen.confounding else 0.0

    # the draws, in a fixed order so that a scenario changes values, not the stream
    za, zc = rng.standard_normal(N), rng.standard_normal(N)
    e = rng.standard_normal((N, S))
    eps = rng.standard_normal((N, S))
    m = rng.standard_normal((N, T))
    shares = rng.dirichlet(np.ones(int(scen.n_types)), size=N)
    shifts = rng.standard_normal((int(scen.n_types), T))

    a = sa * za
    c = sc * (lam * za + np.sqrt(1 - lam**2) * zc)

    def ar1(innov, phi, sd):
        out = np.empty_like(innov)
        out[:, 0] = sd * innov[:, 0]
        s = sd * np.sqrt(1 - phi**2)
        for t in range(1, innov.shape[1]):
            out[:, t] = phi * out[:, t - 1] + s * innov[:, t]
        return out

    v = ar1(e, px, sv)
    u = ar1(eps, py, su) * np.sqrt(1 - rho**2)

    # national shifts persist across waves like density's transitory part, so that the shifter
    # has (in expectation over draws) the same time pattern and leaves the calibrated moments alone
    g = ar1(shifts, px, 1.0)
    z = shares @ g  # (N, T)
    z = z - z.mean(axis=0)
    z = z / z.std()  # unit variance net of wave means
    kappa = scen.instrument_strength
    pi = np.sqrt(kappa) * sv

    xs = a[:, None] + np.sqrt(1 - kappa) * v
    xs[:, B:] += pi * z
    if scen.reverse_causality:
        gamma = scen.reverse_strength * sv / su
        xs[:, 1:] += gamma * u[:, :-1]

    y = np.empty((N, S))
    cc = (1 - rho) * c
    y[:, 0] = c + scen.beta * xs[:, 0] / (1 - rho) + u[:, 0]  # near the stationary mean; the burn-in does the rest
    for t in range(1, S):
        y[:, t] = rho * y[:, t - 1] + scen.beta * xs[:, t] + cc + u[:, t]

    x_true = xs[:, B:] + np.asarray(cal.wave_means_x)
    y = y[:, B:] + np.asarray(cal.wave_means_y)
    if scen.measurement_error and scen.noise_share > 0:
        var_w = _twoway(x_true).var()
        s2 = scen.noise_share / (1 - scen.noise_share) * var_w * T / (T - 1)
        noise = np.sqrt(s2) * m
    else:
        noise = np.zeros((N, T))
    return {"y": y, "x": x_true + noise, "x_true": x_true, "noise": noise, "z": z}


def simulate_panel(cal: Calibration, scen: Scenario, seed: int = 0) -> pd.DataFrame:
    """One simulated panel in long form (synthetic): fips, year, y, x, x_true, noise, z."""
    arr = simulate(cal, scen, np.random.default_rng(seed))
    N, T = arr["y"].shape
    out = pd.DataFrame({"fips": np.repeat(np.arange(1, N + 1), T), "year": np.tile(cal.waves, N)})
    for k, a in arr.items():
        out[k] = a.ravel()
    return out


def attenuation_factor(var_within_true: float, var_within_noise: float) -> float:
    r"""Textbook attenuation of the within estimator under classical measurement error,
    :math:`\lambda = \operatorname{var}_w(x^*)/(\operatorname{var}_w(x^*)+\operatorname{var}_w(m))`
    (Griliches & Hausman 1986). Both variances are of the within-transformed variables: for
    iid noise of variance :math:`\sigma^2_m`, :math:`\operatorname{var}_w(m) = \sigma^2_m(T-1)/T`."""
    if var_within_true <= 0 or var_within_noise < 0:
        raise SimulationError("Variances must be positive (true) and non-negative (noise).")
    return var_within_true / (var_within_true + var_within_noise)


# --------------------------------------------------------------------------------------
# Estimators on balanced arrays
# --------------------------------------------------------------------------------------


def _clustered(xt: np.ndarray, e: np.ndarray, zt: np.ndarray, k: int) -> float:
    """CR1 SE of a just-identified single coefficient b = z'y / z'x with unit clusters (rows).

    ``xt``, ``e``, ``zt`` are (N, T'); for OLS ``zt`` is ``xt``. K counts the coefficients
    of the equivalent dummy regression other than the absorbed unit effects.
    """
    N, Tp = xt.shape
    n = N * Tp
    denom = float((zt * xt).sum())
    score = (zt * e).sum(axis=1)
    v = float(score @ score) / denom**2 * (N / (N - 1)) * ((n - 1) / (n - k))
    return float(np.sqrt(v))


def _result(b: float, se: float, q: float) -> np.ndarray:
    return np.array([b, se, b - q * se, b + q * se])


def _ols1(yt, xt, k, q):
    b = float((xt * yt).sum() / (xt * xt).sum())
    e = yt - b * xt
    return _result(b, _clustered(xt, e, xt, k), q)


def _twfe_multi(Y: np.ndarray, Xs: list[np.ndarray], q: float) -> np.ndarray:
    """TWFE with several regressors; returns the result for the *last* regressor."""
    return _twfe_multi_demeaned(_twoway(Y), [_twoway(a) for a in Xs], q)


def _twfe_multi_demeaned(Yt: np.ndarray, Xts: list[np.ndarray], q: float) -> np.ndarray:
    """:func:`_twfe_multi` on arrays already two-way demeaned."""
    yt = Yt.ravel()
    X = np.column_stack([a.ravel() for a in Xts])
    N, Tp = Yt.shape
    XtX_inv = np.linalg.inv(X.T @ X)
    b = XtX_inv @ X.T @ yt
    e = yt - X @ b
    scores = (X * e[:, None]).reshape(N, Tp, -1).sum(axis=1)
    n, k = N * Tp, Tp + X.shape[1]
    V = XtX_inv @ (scores.T @ scores) @ XtX_inv * (N / (N - 1)) * ((n - 1) / (n - k))
    return _result(float(b[-1]), float(np.sqrt(V[-1, -1])), q)


def _gmm(y: np.ndarray, x: np.ndarray, waves) -> np.ndarray:
    if np.all(np.isfinite(y)) and np.all(np.isfinite(x)):
        return _sysgmm(y, x)
    return _gmm_fit(y, x, waves)


def _gmm_fit(y: np.ndarray, x: np.ndarray, waves) -> np.ndarray:
    """The GMM row through :func:`analysis.dynamic.fit_gmm` (any panel, with gaps too)."""
    from analysis.dynamic import GMMStyle, fit_gmm

    N, T = y.shape
    d = pd.DataFrame({"fips": np.repeat(np.arange(N), T), "year": np.tile(waves, N), "y": y.ravel(), "x": x.ravel()})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = fit_gmm(d, "y", ["L1.y", "x"], gmm=[GMMStyle("y", 2, None), GMMStyle("x", 2, None)],
                        method="system", steps=2, collapse=True)
    except (ValueError, np.linalg.LinAlgError):
        return np.full(4, np.nan)
    b, se = float(r.params["x"]), float(r.std_errors["x"])
    return _result(b, se, float(stats.norm.ppf(0.975)))


def _lag(a: np.ndarray, k: int) -> np.ndarray:
    """``a`` lagged by k waves along axis 1, NaN where unavailable (as analysis.dynamic)."""
    out = np.full_like(a, np.nan)
    out[:, k:] = a[:, :-k]
    return out


def _independent_columns(M: np.ndarray, tol: float = 1e-9) -> list[int]:
    """The columns of M that :func:`analysis.dynamic._independent` keeps (greedy left-to-right
    Gram-Schmidt: a column stays if its residual on the kept ones exceeds ``tol`` times its
    norm), with the orthonormal basis in one preallocated array instead of regrown each step."""
    keep: list[int] = []
    M = np.asfortranarray(M)  # contiguous columns
    Q = np.empty((M.shape[0], M.shape[1]), order="F")
    m = 0
    for j in range(M.shape[1]):
        v = M[:, j]
        nv = np.linalg.norm(v)
        if nv == 0:
            continue
        Qm = Q[:, :m]
        r = v - Qm @ (Qm.T @ v)
        nr = np.linalg.norm(r)
        if nr > tol * nv:
            keep.append(j)
            Q[:, m] = r / nr
            m += 1
    return keep


def _sysgmm(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """:func:`_gmm_fit` on a balanced panel without missing values, in closed form.

    The same model and steps as ``fit_gmm(d, "y", ["L1.y", "x"], gmm=[GMMStyle("y", 2, None),
    GMMStyle("x", 2, None)], method="system", steps=2, collapse=True)``: the stacked differenced
    and level equations, the same instrument and regressor columns (kept by the same greedy rank
    check), two-step weights and Windmeijer's correction, but with the sums over counties done as
    matrix products and without the specification tests the simulation does not use (fit_gmm
    spent most of its time in ``np.einsum``). ``tests/test_simulation.py`` checks it against
    fit_gmm. Returns the row (estimate, se, conf_low, conf_high) for ``x``.
    """
    N, T = y.shape
    R = 2 * T
    Ly = _lag(y, 1)
    dY, dLy, dx = y - Ly, Ly - _lag(Ly, 1), x - _lag(x, 1)
    ok_d = np.isfinite(dY) & np.isfinite(dLy) & np.isfinite(dx)
    ok_l = np.isfinite(y) & np.isfinite(Ly) & np.isfinite(x)
    zeros, ones = np.zeros((N, T)), np.ones((N, T))

    def stack(d_part, l_part):  # the inputs are finite, so NaN comes from lags only: it becomes 0
        return np.concatenate([np.where(ok_d & ~np.isnan(d_part), d_part, 0.0),
                               np.where(ok_l & ~np.isnan(l_part), l_part, 0.0)], axis=1)

    def dummies():
        for t in range(1, T):
            d = np.zeros((N, T))
            d[:, t] = 1.0
            yield stack(d - _lag(d, 1), d)

    # regressors L1.y, x, constant, period dummies; collinear dummies dropped, as in fit_gmm
    X = np.stack([stack(dLy, Ly), stack(dx, x), stack(zeros, ones), *dummies()], axis=2)  # (N, R, K)
    keep = _independent_columns(X.reshape(N * R, -1))
    if not {0, 1, 2} <= set(keep):
        return np.full(4, np.nan)
    X = X[:, :, keep]
    K = X.shape[2]
    # instruments: levels lagged 2+ waves (collapsed) for the differences, the lagged difference
    # for the levels, the constant and the period dummies
    zcols = []
    for V in (y, x):
        spread = np.nanmax(V, axis=0) - np.nanmin(V, axis=0)
        if not np.any(np.nan_to_num(spread) > 0):
            return np.full(4, np.nan)
        block = [stack(_lag(V, lag), zeros) for lag in range(2, T)]
        block.append(stack(zeros, _lag(V - _lag(V, 1), 1)))
        block = [c for c in block if np.any(c != 0)]
        if not block:
            return np.full(4, np.nan)
        zcols += block
    Z = np.stack([*zcols, stack(zeros, ones), *dummies()], axis=2)
    Z = Z[:, :, _independent_columns(Z.reshape(N * R, -1))]
    L = Z.shape[2]
    if L < K:
        return np.full(4, np.nan)
    yv = stack(dY, y)

    Md = np.eye(T) - np.eye(T, k=-1)
    M = np.vstack([Md, np.eye(T)])
    H = M @ M.T
    Zf, Xf = Z.reshape(N * R, L), X.reshape(N * R, K)
    ZX = Zf.T @ Xf
    Zy = Zf.T @ yv.ravel()
    ZHZ = Zf.T @ np.matmul(H, Z).reshape(N * R, L)

    def pinv(S):
        return np.linalg.pinv((S + S.T) / 2)

    def solve(W):
        XZW = ZX.T @ W
        Minv = XZW @ ZX
        if np.linalg.matrix_rank(Minv) < K:
            raise np.linalg.LinAlgError("X'Z W Z'X is singular")
        V = np.linalg.inv(Minv)
        return V @ XZW @ Zy, V, V @ XZW

    def scores(b):  # Z_i'e_i, one row per county
        e = yv - X @ b
        return np.matmul(e[:, None, :], Z)[:, 0, :]

    try:
        b1, _, Mb1 = solve(pinv(ZHZ))
        g1 = scores(b1)
        S1 = g1.T @ g1
        V1r = Mb1 @ S1 @ Mb1.T
        A2 = pinv(S1)
        b2, V2, Mb2 = solve(A2)
        g2 = scores(b2)
    except np.linalg.LinAlgError:
        return np.full(4, np.nan)
    # Windmeijer (2005)
    Zx = np.matmul(Z.transpose(0, 2, 1), X)  # (N, L, K): Z_i'x_ij
    ZE2 = A2 @ g2.sum(axis=0)
    D = np.empty((K, K))
    for j in range(K):
        dOmega = Zx[:, :, j].T @ g1 + g1.T @ Zx[:, :, j]
        D[:, j] = Mb2 @ dOmega @ ZE2
    V = V2 + D @ V2 + V2 @ D.T + D @ V1r @ D.T
    j = list(keep).index(1)
    return _result(float(b2[j]), float(np.sqrt(V[j, j])), float(stats.norm.ppf(0.975)))


@functools.lru_cache(maxsize=8)
def _t975(df: int) -> float:
    """The 97.5% quantile of t(df) (the same for every replication of a Monte Carlo)."""
    return float(stats.t.ppf(0.975, df))


def estimate_all(arr: dict[str, np.ndarray], waves, estimators=tuple(ESTIMATORS)) -> np.ndarray:
    """Each estimator's (estimate, se, conf_low, conf_high) for density, as rows in ``estimators`` order.

    ``arr`` holds balanced (N, T) arrays ``y``, ``x`` (and ``z`` for ``iv``).
    """
    unknown = [e for e in estimators if e not in ESTIMATORS]
    if unknown:
        raise SimulationError(f"Unknown estimator(s) {unknown}; choose from {list(ESTIMATORS)}.")
    y, x = arr["y"], arr["x"]
    N, T = y.shape
    q = _t975(N - 1)
    out = np.full((len(estimators), 4), np.nan)
    demeaned: dict[str, np.ndarray] = {}  # several estimators use the same two-way demeaned arrays

    def tw(key: str) -> np.ndarray:
        if key not in demeaned:
            a = {"y": y, "x": x, "y1": y[:, 1:], "x0": x[:, :-1], "y0": y[:, :-1], "x1": x[:, 1:]}.get(key)
            demeaned[key] = _twoway(arr[key] if a is None else a)
        return demeaned[key]

    for j, name in enumerate(estimators):
        if name == "pooled":
            yt, xt = y - y.mean(axis=0), x - x.mean(axis=0)
            out[j] = _ols1(yt, xt, T + 1, q)
        elif name == "twfe":
            out[j] = _ols1(tw("y"), tw("x"), T + 1, q)
        elif name == "fd":
            dy, dx = np.diff(y, axis=1), np.diff(x, axis=1)
            out[j] = _ols1(dy - dy.mean(axis=0), dx - dx.mean(axis=0), T, q)
        elif name == "lagfe":
            out[j] = _ols1(tw("y1"), tw("x0"), T, q)
        elif name == "fe_ldv":
            out[j] = _twfe_multi_demeaned(tw("y1"), [tw("y0"), tw("x1")], q)
        elif name == "sysgmm":
            out[j] = _gmm(y, x, waves)
        elif name == "iv":
            yt, xt, zt = tw("y"), tw("x"), tw("z")
            b = float((zt * yt).sum() / (zt * xt).sum())
            out[j] = _result(b, _clustered(xt, yt - b * xt, zt, T + 1), q)
    return out


# --------------------------------------------------------------------------------------
# Monte Carlo
# --------------------------------------------------------------------------------------


def _one_rep(cal: Calibration, scen: Scenario, seed_seq: np.random.SeedSequence, estimators, with_gmm: bool):
    arr = simulate(cal, scen, np.random.default_rng(seed_seq))
    ests = [e for e in estimators if e != "sysgmm" or with_gmm]
    res = estimate_all(arr, cal.waves, ests)
    out = np.full((len(estimators), 4), np.nan)
    for j, e in enumerate(estimators):
        if e in ests:
            out[j] = res[ests.index(e)]
    return out


@dataclass
class MonteCarlo:
    """Draws of every estimator (``draws``: rep x estimator, columns estimate, se, conf_low, conf_high)."""

    calibration: Calibration
    scenario: Scenario
    reps: int
    gmm_reps: int
    seed: int
    draws: pd.DataFrame = field(repr=False)
    seconds: float = 0.0

    def summary(self) -> pd.DataFrame:
        return summarise(self.draws, self.scenario.beta)


def summarise(draws: pd.DataFrame, beta: float) -> pd.DataFrame:
    """Bias, its MC SE, RMSE, 95% coverage (and MC SE), mean SE, SD of estimates, reps, by estimator."""
    rows = {}
    for name, g in draws.groupby(level="estimator", sort=False):
        g = g.dropna(subset=["estimate"])
        R = len(g)
        est = g["estimate"].to_numpy()
        cover = ((g["conf_low"] <= beta) & (beta <= g["conf_high"])).to_numpy().mean()
        rows[name] = {
            "bias": est.mean() - beta,
            "bias_mcse": est.std(ddof=1) / np.sqrt(R),
            "rmse": np.sqrt(np.mean((est - beta) ** 2)),
            "coverage": cover,
            "coverage_mcse": np.sqrt(cover * (1 - cover) / R),
            "mean_se": g["se"].mean(),
            "sd_estimate": est.std(ddof=1),
            "reps": R,
        }
    out = pd.DataFrame(rows).T
    out["reps"] = out["reps"].astype(int)
    out.index.name = "estimator"
    return out


def monte_carlo(
    cal: Calibration,
    scen: Scenario,
    reps: int = 400,
    seed: int = 20261127,
    estimators=tuple(ESTIMATORS),
    gmm_reps: int | None = 60,
    n_jobs: int = 1,
) -> MonteCarlo:
    """Run ``reps`` replications of ``scen`` and estimate each with ``estimators``.

    Replication r draws from the r-th child of ``SeedSequence(seed)``; GMM runs on replications
    ``r < gmm_reps`` only (``None``: all). Results do not depend on ``n_jobs`` (joblib processes).
    """
    if int(reps) != reps or reps < 2:
        raise SimulationError(f"reps must be an integer >= 2, not {reps!r}.")
    estimators = tuple(estimators)
    unknown = [e for e in estimators if e not in ESTIMATORS]
    if unknown:
        raise SimulationError(f"Unknown estimator(s) {unknown}; choose from {list(ESTIMATORS)}.")
    gmm_reps = reps if gmm_reps is None else min(int(gmm_reps), reps)
    if "sysgmm" in estimators and gmm_reps < 2:
        raise SimulationError("GMM needs gmm_reps >= 2 (or drop 'sysgmm' from the estimators).")
    children = np.random.SeedSequence(seed).spawn(reps)
    t0 = _time.perf_counter()
    tasks = [(cal, scen, children[r], estimators, r < gmm_reps) for r in range(reps)]
    if n_jobs == 1:
        results = [_one_rep(*t) for t in tasks]
    else:
        from joblib import Parallel, delayed

        results = Parallel(n_jobs=n_jobs, batch_size=max(1, reps // (4 * abs(n_jobs))))(delayed(_one_rep)(*t) for t in tasks)
    secs = _time.perf_counter() - t0
    arr = np.stack(results)  # reps x estimators x 4
    idx = pd.MultiIndex.from_product([range(reps), estimators], names=["rep", "estimator"])
    draws = pd.DataFrame(arr.reshape(-1, 4), index=idx, columns=list(_COLS))
    return MonteCarlo(cal, scen, int(reps), int(gmm_reps if "sysgmm" in estimators else 0), int(seed), draws, secs)


def mc_figure(summaries: dict[str, pd.DataFrame], beta: float | dict | None = None, labels=None):
    """Bias with a 95% Monte Carlo interval (left) and coverage of the 95% CIs (right).

    ``summaries`` maps a scenario label to a :func:`summarise` table. The figure is 8.5 in wide, in
    the book style (:func:`analysis.plots.subplots`). Returns the Figure.
    """
    from analysis import plots

    labels = labels or ESTIMATORS
    first = next(iter(summaries.values()))
    names = list(first.index)
    fig, (ax1, ax2) = plots.subplots(1, 2, figsize=(8.5, 0.55 * len(names) + 1.8), sharey=True,
                                   gridspec_kw={"width_ratios": [1.6, 1]})
    ypos = np.arange(len(names))[::-1].astype(float)
    k = len(summaries)
    offsets = (np.arange(k) - (k - 1) / 2) * (0.7 / max(k, 1)) if k > 1 else [0.0]
    markers = "osD^v<>"
    for (lab, s), off, mk in zip(summaries.items(), offsets, markers):
        s = s.loc[names]
        yy = ypos - off
        ax1.errorbar(s["bias"], yy, xerr=1.96 * s["bias_mcse"], fmt=mk, ms=5, capsize=2, label=lab)
        ax2.errorbar(s["coverage"], yy, xerr=1.96 * s["coverage_mcse"], fmt=mk, ms=5, capsize=2)
    ax1.axvline(0, color="0.4", ls="--", lw=1)
    ax2.axvline(0.95, color="0.4", ls="--", lw=1)
    ax1.set_yticks(ypos)
    ax1.set_yticklabels([labels.get(n, n) for n in names])
    ax1.set_xlabel("Bias (estimate − true β), with 95% MC interval")
    ax2.set_xlabel("Coverage of 95% intervals")
    ax2.set_xlim(-0.02, 1.02)
    if k > 1:
        ax1.legend(frameon=False, loc="upper center", bbox_to_anchor=(0.8, -0.18), ncol=min(k, 3), fontsize=9)
    fig.tight_layout()
    return fig


# Defaults of the chapter's main Monte Carlo (kept here so that `make bench` times the same run).
DEFAULT_SCENARIO = Scenario(beta=-0.5, confounding=True)
DEFAULT_REPS = 400
DEFAULT_GMM_REPS = 60
DEFAULT_SEED = 20261127


def bench_simulation() -> float:
    """Seconds of the chapter's default Monte Carlo (calibration included), on 2 processes."""
    from analysis.panels import load

    t0 = _time.perf_counter()
    cal = calibrate(load("us_counties_waves"))
    monte_carlo(cal, DEFAULT_SCENARIO, reps=DEFAULT_REPS, seed=DEFAULT_SEED, gmm_reps=DEFAULT_GMM_REPS, n_jobs=2)
    return _time.perf_counter() - t0


def scenario_dict(scen: Scenario) -> dict:
    """The scenario's fields (for printing)."""
    return asdict(scen)


__all__ += ["DEFAULT_GMM_REPS", "DEFAULT_REPS", "DEFAULT_SCENARIO", "DEFAULT_SEED", "scenario_dict"]
