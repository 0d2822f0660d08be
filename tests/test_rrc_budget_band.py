"""The risk-budget band: a trigger on max_i |RRC_i / b_i - 1| (pure functions, no chain)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from keeper.errors import ConfigError
from keeper.policy_config import PolicyConfig
from keeper.risk_budgeting import solve_equal_risk_contribution
from keeper.triggers import TriggerPolicy, check_triggers, rrc_budget_gap

COV = np.array([[0.36, 0.18, 0.12], [0.18, 0.64, 0.20], [0.12, 0.20, 1.00]])
EPS = np.finfo(np.float64).eps


def _rrc(w: np.ndarray, cov: np.ndarray) -> np.ndarray:
    s = w / w.sum()
    return s * (cov @ s) / (s @ cov @ s)


def test_gap_is_the_largest_relative_miss_of_the_budget() -> None:
    # Diagonal covariance: RRC_i = w_i^2 s_i^2 / sum_j w_j^2 s_j^2, computable by hand.
    cov = np.diag([0.04, 0.09, 0.16])
    w = np.array([0.5, 0.3, 0.2])
    contributions = w**2 * np.diag(cov)  # 0.01, 0.0081, 0.0064
    rrc = contributions / contributions.sum()
    expected = float(np.max(np.abs(rrc * 3.0 - 1.0)))
    # Both sides are a few roundings of the same quotients: a handful of ulps of values near 1.
    assert rrc_budget_gap(w, np.full(3, 1 / 3), cov) == pytest.approx(expected, abs=16 * EPS)
    # The budget's scale does not matter (it is renormalised).
    assert rrc_budget_gap(w, np.full(3, 7.0), cov) == pytest.approx(expected, abs=16 * EPS)


def test_gap_is_zero_at_the_erc_portfolio_and_one_for_an_empty_sleeve() -> None:
    erc = solve_equal_risk_contribution(COV).weights
    # The solver accepts max_i |RRC_i - b_i| <= 1e-9 at worst (well-conditioned COV: its tol 1e-12 or the
    # 1e-9 floor), and |RRC_i / b_i - 1| = 3 |RRC_i - 1/3|.
    assert rrc_budget_gap(erc, np.full(3, 1 / 3), COV) <= 3e-9
    assert rrc_budget_gap(np.zeros(3), np.full(3, 1 / 3), COV) == 1.0


def test_unbudgeted_assets_are_left_out_and_the_budget_is_validated() -> None:
    w = np.array([0.6, 0.4, 0.0])
    gap = rrc_budget_gap(w, np.array([0.5, 0.5, 0.0]), COV)
    rrc = _rrc(w, COV)
    assert gap == pytest.approx(float(np.max(np.abs(rrc[:2] / 0.5 - 1.0))), abs=16 * EPS)
    with pytest.raises(ConfigError, match=r"risk_budget\[1\] is -0.1"):
        rrc_budget_gap(w, np.array([0.5, -0.1, 0.6]), COV)
    with pytest.raises(ConfigError, match="no positive entry"):
        rrc_budget_gap(w, np.zeros(3), COV)
    with pytest.raises(ConfigError, match="do not match"):
        rrc_budget_gap(w, np.ones(2), COV)


def _signals(band: float | None, current: np.ndarray, target: np.ndarray, budget=None):
    return check_triggers(TriggerPolicy(weight_drift_bps=None, rrc_budget_band=band), drift_bps=0.0,
                          current_weights=current, target_weights=target, covariance=COV,
                          reference_covariance=None, seconds_since_rebalance=None, risk_budget=budget)


def test_band_fires_at_its_threshold_and_not_below() -> None:
    target = 0.95 * solve_equal_risk_contribution(COV).weights
    drifted = target * np.array([1.25, 1.0, 0.9])
    gap = rrc_budget_gap(drifted, np.full(3, 1 / 3), COV)
    assert 0.1 < gap < 0.5
    fired = _signals(gap * (1 - 1e-9), drifted, target)
    assert any(r.startswith("risk-budget drift") for r in fired.fired)
    # Without an explicit budget the target's own RRC r_i (|r_i - 1/3| <= 1e-9, the solver's worst accepted
    # error) is the budget: |c/r - 3c| = c |1/r - 3| <= c * 9 * 1e-9 / (1 - 3e-9) for a contribution c <= 1.
    assert fired.metrics["rrc_budget_gap"] == pytest.approx(gap, abs=1e-8)
    quiet = _signals(gap * (1 + 1e-6), drifted, target, budget=np.full(3, 1 / 3))
    assert quiet.fired == () and quiet.metrics["rrc_budget_gap"] == pytest.approx(gap, abs=16 * EPS)
    off = _signals(None, drifted, target)
    assert off.fired == () and "rrc_budget_gap" not in off.metrics


def test_band_is_relative_so_it_scales_with_the_number_of_assets() -> None:
    # 14 uncorrelated assets of equal volatility: ERC = equal weights, RRC_i = 1/14.  Moving 1 % of NAV
    # from asset 0 to asset 1 leaves the absolute RRC drift under 0.05 (the absolute band stays quiet) but
    # moves the relative gap past 20 %.
    n = 14
    cov = np.eye(n) * 0.25
    target = np.full(n, 0.95 / n)
    current = target.copy()
    current[0] -= 0.01
    current[1] += 0.01
    rrc = _rrc(current, cov)
    assert np.max(np.abs(rrc - 1 / n)) < 0.05
    signals = check_triggers(TriggerPolicy(weight_drift_bps=None, rrc_band=0.05, rrc_budget_band=0.2),
                             drift_bps=100.0, current_weights=current, target_weights=target, covariance=cov,
                             reference_covariance=None, seconds_since_rebalance=None)
    assert [r.split(":")[0] for r in signals.fired] == ["risk-budget drift"]
    assert signals.metrics["rrc_budget_gap"] == pytest.approx(float(np.max(np.abs(rrc * n - 1))), abs=64 * EPS)


def test_policy_config_default_validation_and_mapping() -> None:
    assert PolicyConfig().rrc_budget_band == 0.2
    assert PolicyConfig().trigger_policy().rrc_budget_band == 0.2
    assert PolicyConfig(rrc_budget_band=None).trigger_policy().rrc_budget_band is None
    with pytest.raises(ValidationError, match=r"rrc_budget_band is 20.0: it is a fraction .* give e.g. 0.2"):
        PolicyConfig(rrc_budget_band=20.0)
    with pytest.raises(ValidationError, match="rrc_budget_band"):
        PolicyConfig(rrc_budget_band=-0.1)
    with pytest.raises(ConfigError, match="rrc_budget_band must be None or a finite number >= 0"):
        TriggerPolicy(rrc_budget_band=float("nan"))
