"""The decision stages' memos are keyed on the content of their inputs: a repeated input gives the first
answer bit for bit, a changed input (even the same array object changed in place) is computed afresh, as the
live keeper changes its covariance in place between ticks or calls the stages once per tick."""

from __future__ import annotations

import numpy as np

from keeper import allocation, triggers
from keeper.allocation import allocate
from keeper.planner import plan_rebalance, value_holdings
from keeper.triggers import covariance_distance
from test_planner import make_assets, make_snapshot, make_state


def _covariance(seed: int, n: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(n, n)) * 0.2
    return factors @ factors.T + np.diag(rng.uniform(0.01, 0.05, n))


def _fresh_distance(reference: np.ndarray, current: np.ndarray) -> float:
    triggers._INVERSE_CHOLESKY.clear()
    triggers._DISTANCES.clear()
    return covariance_distance(reference, current)


def test_covariance_distance_memo_follows_the_contents_of_both_matrices() -> None:
    reference, current = _covariance(1), _covariance(2)
    first = covariance_distance(reference, current)
    assert covariance_distance(reference.copy(), current.copy()) == first  # a hit: the same bits
    assert _fresh_distance(reference, current) == first
    for changed in (reference, current):  # the same objects, changed in place
        changed *= 1.3
        changed[0, 0] += 0.01
        again = covariance_distance(reference, current)
        assert again != first
        assert again == _fresh_distance(reference.copy(), current.copy())
        first = again


def test_covariance_distance_of_a_singular_reference_raises_every_time() -> None:
    reference = np.ones((3, 3))
    for _ in range(2):  # a failure is not kept
        try:
            covariance_distance(reference, np.eye(3))
        except triggers.SingularCovarianceError:
            continue
        raise AssertionError("a singular reference must raise")


def test_allocate_memo_follows_the_covariance_and_budget() -> None:
    cov = _covariance(3)
    first = allocate(cov)
    targeted = allocate(cov, volatility_target=0.1)  # the same solve, another scale
    np.testing.assert_array_equal(targeted.sleeve_weights, first.sleeve_weights)
    allocation._SOLVE_MEMO.clear()
    np.testing.assert_array_equal(allocate(cov).sleeve_weights, first.sleeve_weights)
    cov[1, 2] = cov[2, 1] = cov[1, 2] * 0.5  # the same array, changed in place
    changed = allocate(cov)
    assert not np.array_equal(changed.sleeve_weights, first.sleeve_weights)
    allocation._SOLVE_MEMO.clear()
    np.testing.assert_array_equal(allocate(cov).sleeve_weights, changed.sleeve_weights)
    budget = np.array([0.4, 0.15, 0.15, 0.15, 0.15])
    budgeted = allocate(cov, budget)
    assert not np.array_equal(budgeted.sleeve_weights, changed.sleeve_weights)
    # The solver stops at max |RRC - b| <= tol = 1e-12; 1e-9 leaves room for the rounding of the recomputed RRC.
    np.testing.assert_allclose(budgeted.relative_risk_contributions, budget, atol=1e-9)


def test_plan_with_the_callers_holdings_is_the_plan_without() -> None:
    assets = make_assets([18, 8, 6], [8, 8, 8])
    snapshot = make_snapshot([2_000 * 10**8, 60_000 * 10**8, 10**8])
    state = make_state([3 * 10**18, 2 * 10**7, 500 * 10**6], 1_000 * 10**6)
    target = np.array([0.2, 0.5, 0.3])
    args = dict(cash_buffer_bps=500.0, slippage_budget_bps=50.0, drift_threshold_bps=0.0, min_trade_value=10**6,
                deadline=1_700_000_600)
    for fraction in (1.0, 0.5):
        plain = plan_rebalance(snapshot, state, assets, target, fraction=fraction, **args)
        given = plan_rebalance(snapshot, state, assets, target, fraction=fraction,
                               holdings=value_holdings(snapshot, state, assets), **args)
        assert plain.legs and given.legs == plain.legs
        assert (given.nav_before, given.min_nav_after, given.drift_bps, given.turnover_bps) == (
            plain.nav_before, plain.min_nav_after, plain.drift_bps, plain.turnover_bps)
        np.testing.assert_array_equal(given.current_weights, plain.current_weights)
