r"""What an estimate rules out, in units a policymaker uses, and what a design could detect.

A within-county slope :math:`\hat\beta` (outcome units per organisation per 1,000 residents) with
standard error :math:`s` is reported three ways beside the pre-declared equivalence bounds:

* **the effect its interval rules out in the thesis's direction**: with a two-sided
  :math:`1-\alpha` interval :math:`[\ell, u]` and the thesis predicting a negative slope (lower
  unemployment), every effect more negative than :math:`\ell` is ruled out at level
  :math:`\alpha/2`; for a positive prediction (income), every effect above :math:`u`;
* **the minimum detectable effect** at power :math:`1-\kappa` of a two-sided level-:math:`\alpha`
  test, :math:`(z_{1-\alpha/2} + z_{1-\kappa})\,s` (Bloom 1995); with :math:`\alpha = 0.05` and
  80% power, :math:`2.80\,s`. A null is informative only about effects larger than this;
* **policy units** of a slope :math:`b`: per added organisation per 1,000 residents (:math:`b`
  itself), per ten more organisations in a county of population :math:`P`
  (:math:`b \cdot 10 \cdot 1000 / P`), and as a share of the pooled cross-county gradient
  :math:`b / \beta_{pooled}`.

The wording follows the book's rule: an effect is "ruled out" only where the interval excludes
effects of policy interest; otherwise the within-county effect is "not identified".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats


def minimum_detectable_effect(std_error: float, alpha: float = 0.05, power: float = 0.80) -> float:
    """Smallest true effect a two-sided level-``alpha`` test detects with probability ``power``,
    in the units of the coefficient whose standard error is ``std_error``.
    """
    if not (std_error > 0 and math.isfinite(std_error)):
        raise ValueError(f"std_error must be positive and finite, got {std_error!r}")
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError(f"alpha and power must lie in (0, 1), got {alpha!r}, {power!r}")
    return (stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * std_error


def ruled_out_beyond(estimate: float, std_error: float, thesis_sign: int, level: float = 0.90) -> float:
    """The interval's end in the thesis's direction: every effect beyond it (more negative for
    ``thesis_sign=-1``, more positive for ``+1``) is ruled out by the two-sided ``level`` interval
    (normal critical value, as the book's intervals).
    """
    if thesis_sign not in (-1, 1):
        raise ValueError(f"thesis_sign must be -1 or +1, got {thesis_sign!r}")
    z = stats.norm.ppf(0.5 + level / 2)
    return estimate - z * std_error if thesis_sign < 0 else estimate + z * std_error


def per_ten_organisations(slope_per_1k: float, population: float) -> float:
    """A slope per organisation per 1,000 residents as the change for ten more organisations in a
    county of ``population`` residents (ten organisations raise density by 10,000 / population).
    """
    if not population > 0:
        raise ValueError(f"population must be positive, got {population!r}")
    return slope_per_1k * 10 * 1000 / population


@dataclass(frozen=True)
class PolicyUnits:
    """One within-county estimate read in policy units (see the module docstring)."""

    estimate: float
    std_error: float
    ruled_out_beyond: float  # per organisation per 1,000 residents
    ruled_out_per_ten: float  # per ten more organisations in the reference county
    ruled_out_share_of_gradient: float  # as a share of the pooled cross-county gradient
    mde: float  # per organisation per 1,000 residents, 80% power, 5% two-sided
    mde_per_ten: float
    mde_share_of_gradient: float
    excludes_gradient_share: float  # the policy-relevance threshold used for the wording
    reading: str  # "ruled out" or "not identified"


def policy_units(estimate: float, std_error: float, *, thesis_sign: int, pooled_gradient: float,
                 population: float, relevant_share: float = 0.25, level: float = 0.90) -> PolicyUnits:
    """Read one slope (per organisation per 1,000 residents) in policy units.

    ``relevant_share`` is the smallest effect of policy interest as a share of the pooled
    gradient: the effect is "ruled out" when the interval excludes every effect in the thesis's
    direction at least that large, else "not identified".
    """
    if not (pooled_gradient != 0 and math.isfinite(pooled_gradient)):
        raise ValueError(f"pooled_gradient must be non-zero and finite, got {pooled_gradient!r}")
    edge = ruled_out_beyond(estimate, std_error, thesis_sign, level)
    mde = minimum_detectable_effect(std_error)
    share = edge / pooled_gradient
    return PolicyUnits(
        estimate=estimate, std_error=std_error,
        ruled_out_beyond=edge, ruled_out_per_ten=per_ten_organisations(edge, population),
        ruled_out_share_of_gradient=share,
        mde=mde, mde_per_ten=per_ten_organisations(mde, population),
        mde_share_of_gradient=abs(mde / pooled_gradient),
        excludes_gradient_share=relevant_share,
        reading="ruled out" if share < relevant_share else "not identified",
    )
