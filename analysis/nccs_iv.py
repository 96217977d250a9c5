r"""Two noisy counts of one density: NCCS non-profits as an instrument for CBP density (Chapter 4).

Errors in variables
-------------------
If the CBP density :math:`x_{it}` (associations per 1,000 residents) and the NCCS density
:math:`z_{it}` (IRS-registered non-profits per 10,000) both measure one latent associational
density :math:`x^*_{it}` with errors :math:`e_{it}` and :math:`v_{it}`,

.. math::  x_{it} = x^*_{it} + e_{it},\qquad z_{it} = \lambda x^*_{it} + v_{it},

then the two-way fixed-effects (TWFE) slope of an outcome on :math:`x` is attenuated by the
within-county reliability of :math:`x`, while the TWFE instrumental-variables slope with
:math:`z` as the instrument is not, *provided* the two errors are uncorrelated with each other
and with the outcome's error after county and year effects, and :math:`z` moves the outcome
only through :math:`x^*`. The IV estimate then bounds how much attenuation could hide: the
ratio OLS/IV estimates the reliability.

Those provisos matter here. (1) Both densities divide by the same population, so a county's
population change (or an error in its population estimate) moves both in the same proportion:
the errors are correlated through the denominator, and the IV is pulled towards the slope
of the outcome on :math:`1/\text{population}`. :func:`twfe_iv` therefore offers
``controls=("log_population",)``, which holds the common denominator fixed to first order in
both stages, so that the instrument works through the numerators. (2) NCCS counts
organisations registered with the IRS (including hospitals, schools and foundations), so it
may affect outcomes other than through the latent density of community organisations. (3) The
2010-11 automatic revocations removed organisations that had not filed from the IRS list
between the 2009 and 2014 waves, a county-specific measurement change in :math:`z`.

Estimation
----------
:func:`twfe_iv` keeps the counties observed in every wave with the outcome, the regressor,
the instrument and the controls (a balanced panel), removes county and year means from every
variable (one pass is exact on a balanced panel; Frisch-Waugh-Lovell), and runs
:func:`analysis.shiftshare.iv_2sls` (linearmodels ``IV2SLS``) on the demeaned data, clustered
by county. The absorbed effects are nested in the county clusters and are not counted in the
small-sample factor, as in Stata's ``xtivreg2``/``reghdfe`` and pyfixest's default: CR1 with
:math:`\frac{G}{G-1}\frac{n-1}{n-K}`, :math:`K` the constant, controls and the endogenous
regressor. Weak-instrument diagnostics reuse Chapter 5's tools: the effective F of Montiel
Olea and Pflueger (:func:`analysis.shiftshare.effective_f`, which with one instrument equals
the cluster-robust first-stage Wald F) beside the classical (homoskedastic) first-stage F,
and the Anderson-Rubin confidence set (:func:`analysis.shiftshare.anderson_rubin`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.estimation import within_transform
from analysis.shiftshare import (
    ARSet,
    InstrumentError,
    IVResult,
    anderson_rubin,
    iv_2sls,
)

__all__ = ["NCCSInstrument", "balanced_complete", "classical_first_stage_f", "iv_table", "twfe_iv"]


def balanced_complete(df: pd.DataFrame, cols, entity: str = "fips", time: str = "year") -> pd.DataFrame:
    """Rows of the units observed with every column of ``cols`` in every period of ``df``."""
    cols = [cols] if isinstance(cols, str) else list(cols)
    missing = [c for c in (entity, time, *cols) if c not in df.columns]
    if missing:
        raise InstrumentError(f"Unknown column(s) {missing}: not in the data.")
    complete = df[cols].notna().all(axis=1)
    n_periods = df[time].nunique()
    per_unit = df.loc[complete].groupby(entity)[time].nunique()
    keep = per_unit.index[per_unit == n_periods]
    out = df.loc[complete & df[entity].isin(keep)]
    if out[entity].nunique() < 3:
        raise InstrumentError("Fewer than three units are observed with every variable in every period.")
    return out


@dataclass
class NCCSInstrument:
    """A TWFE IV fit with its weak-instrument diagnostics.

    ``iv`` is the :class:`analysis.shiftshare.IVResult` on the demeaned data (``iv.ols`` is the
    TWFE OLS slope on the same sample), ``first_stage_f`` the classical first-stage F,
    ``effective_f`` the Montiel Olea-Pflueger effective F (cluster-robust), ``ar`` the
    Anderson-Rubin set at ``level`` and ``ci`` the Wald interval at ``level``; ``n_units`` the
    number of counties (clusters).
    """

    outcome: str
    endog: str
    instrument: str
    controls: tuple[str, ...]
    level: float
    iv: IVResult = field(repr=False)
    first_stage_f: float
    effective_f: float
    ar: ARSet
    ci: tuple[float, float]
    n_units: int

    def row(self) -> pd.Series:
        """The numbers a table shows, one Series."""
        return pd.Series({
            "ols": self.iv.ols["coef"], "ols_se": self.iv.ols["se"],
            "iv": self.iv.estimate, "iv_se": self.iv.std_error,
            "ci_low": self.ci[0], "ci_high": self.ci[1],
            "ar_low": self.ar.low, "ar_high": self.ar.high, "ar_kind": self.ar.kind,
            "first_stage": self.iv.first_stage["coef"], "first_stage_se": self.iv.first_stage["se"],
            "first_stage_f": self.first_stage_f, "effective_f": self.effective_f,
            "nobs": self.iv.nobs, "n_units": self.n_units,
        }, name=self.outcome)


def classical_first_stage_f(result: IVResult) -> float:
    r"""The classical (homoskedastic) first-stage F of a just-identified fit: :math:`\hat\pi^2/\hat V_\pi`
    with :math:`\hat V_\pi = s^2/\tilde z'\tilde z`, :math:`s^2 = \hat e'\hat e/(n-K)`, :math:`\tilde z` the
    instrument net of the exogenous regressors and :math:`K` their number plus one (the instrument).
    It is what linearmodels reports for ``cov_type="unadjusted", debiased=True``; computed from the
    fitted model's data, without refitting.
    """
    if len(result.instruments) != 1:
        raise InstrumentError("classical_first_stage_f handles one instrument.")
    model = result.raw.model
    W = model.exog.ndarray
    x = model.endog.ndarray[:, 0]
    z = model.instruments.ndarray[:, 0]
    Wz = np.column_stack([W, z])
    coef, *_ = np.linalg.lstsq(Wz, x, rcond=None)
    e = x - Wz @ coef
    zt = z - W @ np.linalg.lstsq(W, z, rcond=None)[0]
    n, k = Wz.shape
    s2 = float(e @ e) / (n - k)
    return float(coef[-1] ** 2 * (zt @ zt) / s2)


def twfe_iv(
    df: pd.DataFrame,
    outcome: str,
    endog: str = "assn_per_1k",
    instrument: str = "nonprofits_per_10k",
    controls=(),
    entity: str = "fips",
    time: str = "year",
    level: float = 0.90,
) -> NCCSInstrument:
    """TWFE 2SLS of ``outcome`` on ``endog`` instrumented by ``instrument`` (see the module docstring).

    County and year effects are absorbed by demeaning the balanced sample; SEs are clustered
    by county. Returns the fit, the classical and effective first-stage F and the
    Anderson-Rubin set and Wald interval at ``level``.
    """
    controls = (controls,) if isinstance(controls, str) else tuple(controls)
    cols = [outcome, endog, instrument, *controls]
    sample = balanced_complete(df, cols, entity, time)
    demeaned = within_transform(sample, cols, absorb="unit+time", entity=entity, time=time)
    demeaned[entity] = sample[entity].to_numpy()
    fit = iv_2sls(demeaned, outcome, endog, instrument, controls=controls, cov="cluster", cluster=entity)
    return NCCSInstrument(
        outcome=outcome, endog=endog, instrument=instrument, controls=controls, level=level, iv=fit,
        first_stage_f=classical_first_stage_f(fit), effective_f=float(fit.effective_f),
        ar=anderson_rubin(fit, level=level), ci=tuple(float(v) for v in fit.ci(level)),
        n_units=int(sample[entity].nunique()),
    )


def iv_table(df: pd.DataFrame, outcomes, variants: dict[str, tuple[str, ...]], **kw) -> pd.DataFrame:
    """:func:`twfe_iv` for each outcome and each named set of controls (``variants``), one row each,
    indexed by (outcome, variant)."""
    rows = {}
    for y in outcomes:
        for name, controls in variants.items():
            rows[(y, name)] = twfe_iv(df, y, controls=controls, **kw).row()
    out = pd.DataFrame(rows).T
    out.index.names = ["outcome", "variant"]
    num = [c for c in out.columns if c != "ar_kind"]
    out[num] = out[num].astype(float)
    return out
