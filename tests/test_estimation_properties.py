"""Property tests (hypothesis) of keeper.covariance, keeper.covariance_repair and keeper.conditioning_gate.

Each estimator, every missing-data policy and the conditioning gate are checked
for the properties that define a usable covariance, on generated inputs:

* positive definite and symmetric output (or a KeeperError, never a bad matrix);
* permutation equivariance: permuting the assets permutes the matrix;
* scale: returns x c gives covariance x c^2 (and the same shrinkage);
* the Ledoit-Wolf intensity lies in [0, 1];
* the gate never raises on data and, when it accepts, the condition number is
  within the limit.

Runs are derandomised (fixed seed) so a failure reproduces.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from keeper.errors import InsufficientHistoryError, MissingObservationError, SingularCovarianceError
from keeper.conditioning_gate import gated_covariance
from keeper.covariance import EstimatorConfig, covariance_from_config
from keeper.covariance_repair import condition_number, repair_covariance, shrink_covariance

PROPERTY_SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)


# --------------------------------------------------------------------------- #
# Strategies
# --------------------------------------------------------------------------- #
@st.composite
def configs(draw: st.DrawFn, missing: tuple[str, ...] = ("raise", "drop_rows", "pairwise")) -> EstimatorConfig:
    method = draw(st.sampled_from(["sample", "ewma", "ledoit_wolf"]))
    policy = draw(st.sampled_from([m for m in missing if not (method == "ledoit_wolf" and m == "pairwise")]))
    half_life = None
    if method == "ewma":
        half_life = draw(st.one_of(st.floats(2.0, 400.0), st.just(math.inf)))
    shrinkage = draw(st.one_of(st.none(), st.floats(0.0, 1.0)))
    return EstimatorConfig(method=method, half_life_days=half_life, missing=policy, shrinkage=shrinkage,
                           demean=draw(st.booleans()))


@st.composite
def gaussian_returns(draw: st.DrawFn, with_gaps: bool = False, min_assets: int = 1) -> np.ndarray:
    """Correlated daily returns from a seeded generator, optionally with NaN gaps."""
    n_assets = draw(st.integers(min_assets, 6))
    n_obs = draw(st.integers(3 * n_assets + 10, 150))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    vols = rng.uniform(0.005, 0.08, size=n_assets)
    mixing = rng.normal(size=(n_assets, n_assets)) / math.sqrt(n_assets) + np.eye(n_assets)
    r = (rng.normal(size=(n_obs, n_assets)) @ mixing.T) * vols
    if with_gaps:
        # late listings (leading blanks) and a few scattered blanks, keeping >= n + 3 rows per pair
        for i in range(n_assets):
            r[: draw(st.integers(0, n_obs // 3)), i] = np.nan
        for row, col in draw(st.lists(st.tuples(st.integers(0, n_obs - 1), st.integers(0, n_assets - 1)),
                                      max_size=5)):
            r[row, col] = np.nan
    return r


@st.composite
def adversarial_returns(draw: st.DrawFn, allow_nan: bool) -> np.ndarray:
    """Arbitrary small arrays: zeros, constant or collinear columns, tiny and large values, blanks."""
    n_assets = draw(st.integers(1, 5))
    n_obs = draw(st.integers(1, 40))
    r = draw(arrays(np.float64, (n_obs, n_assets), elements=st.floats(-0.5, 0.5, allow_subnormal=False)))
    if n_assets > 1 and draw(st.booleans()):
        r[:, -1] = draw(st.floats(-2.0, 2.0)) * r[:, 0]  # perfectly collinear pair
    if allow_nan:
        cells = st.tuples(st.integers(0, n_obs - 1), st.integers(0, n_assets - 1))
        for row, col in draw(st.lists(cells, max_size=4)):
            r[row, col] = np.nan
    return r


def assert_valid_estimate(est, max_condition_number: float) -> None:
    cov = est.covariance
    np.testing.assert_array_equal(cov, cov.T)  # exact: symmetrised as 0.5 (C + C'), + commutes
    eigenvalues = np.linalg.eigvalsh(cov)
    assert eigenvalues.min() > 0.0
    assert est.condition_number <= max_condition_number
    np.testing.assert_array_equal(est.volatilities, np.sqrt(np.diag(cov)))  # same path: the same sqrt of the same diagonal
    np.testing.assert_array_equal(np.diag(est.correlation), 1.0)  # exact: assigned
    assert 0.0 <= est.shrinkage <= 1.0


def close(a: np.ndarray, b: np.ndarray, rtol: float = 1e-8) -> None:
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * float(np.max(np.abs(b))))


# --------------------------------------------------------------------------- #
# Positive definiteness
# --------------------------------------------------------------------------- #
@PROPERTY_SETTINGS
@given(r=gaussian_returns(with_gaps=True), config=configs())
def test_every_estimator_is_positive_definite_on_regular_data(r: np.ndarray, config: EstimatorConfig) -> None:
    if config.missing == "raise":
        r = np.nan_to_num(r, nan=0.0)
    if config.missing == "drop_rows" and (~np.isnan(r).any(axis=1)).sum() < r.shape[1] + 3:
        r = np.nan_to_num(r, nan=0.0)
    assert_valid_estimate(covariance_from_config(r, config), config.max_condition_number)


@PROPERTY_SETTINGS
@given(r=adversarial_returns(True), config=configs())
def test_no_estimator_returns_an_unusable_matrix(r: np.ndarray, config: EstimatorConfig) -> None:
    """Degenerate inputs raise a KeeperError; whatever is returned is positive definite."""
    try:
        est = covariance_from_config(r, config)
    except (SingularCovarianceError, InsufficientHistoryError) as exc:
        event(type(exc).__name__)
        return
    except MissingObservationError:
        assert config.missing == "raise"  # the only policy that refuses a NaN
        event("MissingObservationError")
        return
    event("estimate")
    assert_valid_estimate(est, config.max_condition_number)


# --------------------------------------------------------------------------- #
# Permutation and scale
# --------------------------------------------------------------------------- #
@PROPERTY_SETTINGS
@given(data=st.data(), r=gaussian_returns(with_gaps=True, min_assets=2), config=configs(("drop_rows", "pairwise")))
def test_permuting_assets_permutes_the_estimate(data: st.DataObject, r: np.ndarray, config: EstimatorConfig) -> None:
    perm = np.array(data.draw(st.permutations(range(r.shape[1]))))
    if config.missing == "drop_rows":
        r = np.nan_to_num(r, nan=0.0)
    a = covariance_from_config(r, config)
    b = covariance_from_config(r[:, perm], config)
    close(b.covariance, a.covariance[np.ix_(perm, perm)])
    np.testing.assert_array_equal(b.pair_observations, a.pair_observations[np.ix_(perm, perm)])
    assert abs(b.shrinkage - a.shrinkage) <= 1e-9


@PROPERTY_SETTINGS
@given(r=gaussian_returns(with_gaps=True), config=configs(("drop_rows", "pairwise")),
       scale=st.floats(1e-3, 1e3))
def test_scaling_returns_scales_the_covariance_quadratically(r: np.ndarray, config: EstimatorConfig,
                                                             scale: float) -> None:
    if config.missing == "drop_rows":
        r = np.nan_to_num(r, nan=0.0)
    a = covariance_from_config(r, config)
    b = covariance_from_config(scale * r, config)
    close(b.covariance, scale**2 * a.covariance)
    close(b.correlation, a.correlation, rtol=1e-7)
    assert abs(b.shrinkage - a.shrinkage) <= 1e-9


@PROPERTY_SETTINGS
@given(r=gaussian_returns(), method=st.sampled_from(["sample", "ewma"]))
def test_pairwise_without_gaps_equals_the_complete_estimate(r: np.ndarray, method: str) -> None:
    half_life = 20.0 if method == "ewma" else None
    full = covariance_from_config(r, EstimatorConfig(method, half_life))
    pairwise = covariance_from_config(r, EstimatorConfig(method, half_life, missing="pairwise"))
    close(pairwise.covariance, full.covariance)


# --------------------------------------------------------------------------- #
# Shrinkage and repair
# --------------------------------------------------------------------------- #
@PROPERTY_SETTINGS
@given(r=adversarial_returns(False), demean=st.booleans())
def test_ledoit_wolf_intensity_is_in_the_unit_interval(r: np.ndarray, demean: bool) -> None:
    try:
        est = covariance_from_config(r, EstimatorConfig("ledoit_wolf", demean=demean, min_observations=2))
    except (SingularCovarianceError, InsufficientHistoryError):
        return
    assert 0.0 <= est.shrinkage <= 1.0


@PROPERTY_SETTINGS
@given(r=gaussian_returns(min_assets=2), deltas=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=5))
def test_condition_number_falls_as_shrinkage_rises(r: np.ndarray, deltas: list[float]) -> None:
    cov = covariance_from_config(r, EstimatorConfig("sample")).covariance
    kappas = [condition_number(shrink_covariance(cov, d)) for d in sorted(deltas)]
    assert all(b <= a * (1 + 1e-9) for a, b in zip(kappas, kappas[1:]))


@st.composite
def symmetric_with_positive_diagonal(draw: st.DrawFn) -> np.ndarray:
    n = draw(st.integers(1, 7))
    off = draw(arrays(np.float64, (n, n), elements=st.floats(-1.0, 1.0)))
    corr = np.triu(off, 1)
    corr = corr + corr.T + np.eye(n)
    vols = draw(arrays(np.float64, (n,), elements=st.floats(0.05, 5.0)))
    return corr * np.outer(vols, vols)


@PROPERTY_SETTINGS
@given(cov=symmetric_with_positive_diagonal(), floor=st.floats(1e-8, 0.1))
def test_repair_is_symmetric_positive_definite_and_keeps_variances(cov: np.ndarray, floor: float) -> None:
    repaired, report = repair_covariance(cov, floor)
    n = cov.shape[0]
    np.testing.assert_array_equal(repaired, repaired.T)  # exact: 0.5 (R + R') times v_i v_j, both symmetric bit for bit
    np.testing.assert_array_equal(np.diag(repaired), np.diag(cov))  # exact: the diagonal is assigned back
    vols = np.sqrt(np.diag(cov))
    corr_eigenvalues = np.linalg.eigvalsh(repaired / np.outer(vols, vols))
    if report.eigenvalues_lifted:
        assert corr_eigenvalues.min() >= 0.5 * floor / (n + 1)
        assert np.linalg.eigvalsh(repaired).min() > 0.0
    else:
        np.testing.assert_array_equal(repaired, cov)  # exact: nothing lifted, the (symmetric) input returned
        assert corr_eigenvalues.min() >= floor * (1 - 1e-9)
    assert 0 <= report.eigenvalues_lifted <= n


# --------------------------------------------------------------------------- #
# The conditioning gate
# --------------------------------------------------------------------------- #
def assert_valid_decision(decision, limit: float) -> None:
    assert decision.action in ("accept", "shrink", "inverse_volatility", "hold")
    assert decision.reason
    accepted = [a for a in decision.attempts if a.accepted]
    if decision.action == "hold":
        assert decision.estimate is None and not accepted
        return
    assert len(accepted) == 1 and accepted[-1] is decision.attempts[-1]
    est = decision.estimate
    assert np.linalg.eigvalsh(est.covariance).min() > 0.0
    np.testing.assert_array_equal(est.covariance, est.covariance.T)  # exact: symmetrised as 0.5 (C + C')
    if decision.action in ("accept", "shrink"):
        assert est.condition_number <= limit
        assert condition_number(est.covariance) <= limit * (1 + 1e-9)
        assert all(a.condition_number is None or a.condition_number > limit for a in decision.attempts[:-1])
    else:
        np.testing.assert_array_equal(est.covariance, np.diag(np.diag(est.covariance)))  # exact: built diagonal


@PROPERTY_SETTINGS
@given(r=adversarial_returns(True), config=configs(), limit=st.floats(1.5, 1e8))
def test_gate_never_raises_on_data_and_respects_its_limit(r: np.ndarray, config: EstimatorConfig,
                                                          limit: float) -> None:
    decision = gated_covariance(r, config, limit)
    event(decision.action)
    assert_valid_decision(decision, limit)


@PROPERTY_SETTINGS
@given(r=gaussian_returns(with_gaps=True), config=configs(("drop_rows", "pairwise")), limit=st.floats(1.01, 1e4))
def test_gate_on_regular_data_never_holds(r: np.ndarray, config: EstimatorConfig, limit: float) -> None:
    decision = gated_covariance(r, config, limit)
    event(decision.action)
    assert decision.action != "hold"
    assert_valid_decision(decision, limit)
