"""analysis.policy: what an interval rules out, and the minimum detectable effect."""

import math

import numpy as np
import pytest

from analysis import policy


def test_mde_is_bloom_multiplier_times_se():
    # Bloom (1995): with a two-sided 5% test and 80% power the multiplier is 2.80 (1.96 + 0.84).
    assert round(policy.minimum_detectable_effect(1.0), 2) == 2.80
    assert round(policy.minimum_detectable_effect(0.1, alpha=0.10, power=0.90), 4) == round(0.1 * (1.644854 + 1.281552), 4)


def test_mde_has_the_power_it_claims():
    # Monte Carlo: a true effect equal to the MDE is detected in about 80% of draws.
    rng = np.random.default_rng(20261129)
    se = 0.3
    draws = rng.normal(policy.minimum_detectable_effect(se), se, 200_000)
    assert abs(np.mean(np.abs(draws / se) > 1.959964) - 0.80) < 0.005


def test_ruled_out_edge_follows_the_thesis_direction():
    assert policy.ruled_out_beyond(-0.18, 0.073, -1) == pytest.approx(-0.18 - 1.644854 * 0.073, abs=1e-6)
    assert policy.ruled_out_beyond(0.002, 0.001, +1) == pytest.approx(0.002 + 1.644854 * 0.001, abs=1e-9)
    with pytest.raises(ValueError):
        policy.ruled_out_beyond(0.0, 1.0, 0)


def test_per_ten_organisations_in_a_county():
    # In a county of 25,000, ten organisations are 0.4 per 1,000 residents.
    assert policy.per_ten_organisations(-0.5, 25_000) == pytest.approx(-0.2)
    with pytest.raises(ValueError):
        policy.per_ten_organisations(1.0, 0)


def test_policy_units_reading():
    # The referee's example: unemployment -0.18 (SE 0.073) against a pooled gradient of -1.10.
    u = policy.policy_units(-0.18, 0.073, thesis_sign=-1, pooled_gradient=-1.10, population=25_000)
    assert u.ruled_out_share_of_gradient == pytest.approx((-0.18 - 1.644854 * 0.073) / -1.10, abs=1e-6)
    assert u.reading == "ruled out" if u.ruled_out_share_of_gradient < 0.25 else "not identified"
    assert u.reading == "not identified"  # 27% of the gradient is not excluded
    tight = policy.policy_units(-0.05, 0.02, thesis_sign=-1, pooled_gradient=-1.10, population=25_000)
    assert tight.reading == "ruled out"
    wrong_side = policy.policy_units(0.5, 0.05, thesis_sign=-1, pooled_gradient=-1.10, population=25_000)
    assert wrong_side.reading == "ruled out" and wrong_side.ruled_out_share_of_gradient < 0
    assert math.isclose(u.mde_per_ten, u.mde * 0.4)


@pytest.mark.parametrize("se", [0.0, -1.0, math.nan, math.inf])
def test_bad_standard_errors_are_refused(se):
    with pytest.raises(ValueError):
        policy.minimum_detectable_effect(se)
