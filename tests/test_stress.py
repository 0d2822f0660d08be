"""Tests of keeper.stress: historical windows on the shipped data, proxies, hypothetical shocks.

The known BTC drawdowns are recomputed here from the CSV with the csv module and plain loops,
independently of the module's reader.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

from keeper.errors import ConfigError, InvalidPriceError, KeeperError
from keeper.risk_measures import gaussian_var_es
from tolerances import ELEMENTARY_ULPS, NDTRI_RELATIVE_ERROR, U, gamma
from keeper.stress import (
    DEFAULT_STRESS_CSV,
    DEFAULT_WINDOWS,
    StressWindow,
    beta_to_proxy,
    format_stress_report,
    historical_stress,
    hypothetical_stress,
    load_close_history,
    price_shock,
    replay_window,
    run_stress_tests,
)

NAV = 25_000_000_000_000  # 25,000,000.000000 USD in 6-decimal base units
SYMBOLS = ("BTC", "ETH", "SOL")


@pytest.fixture(scope="module")
def history():
    return load_close_history()


@pytest.fixture(scope="module")
def csv_closes() -> dict[str, dict[dt.date, float]]:
    """symbol -> {date: close} for the non-blank cells of the shipped file."""
    with open(DEFAULT_STRESS_CSV, newline="") as handle:
        reader = csv.DictReader(handle)
        out: dict[str, dict[dt.date, float]] = {s: {} for s in reader.fieldnames[1:]}
        for row in reader:
            day = dt.date.fromisoformat(row["date"])
            for s in out:
                if row[s].strip():
                    out[s][day] = float(row[s])
    return out


def month_peak_to_trough(closes: dict[dt.date, float], year: int, month: int):
    """Largest fall from a close to a later close within the calendar month: (fall, peak day, trough day)."""
    days = sorted(d for d in closes if d.year == year and d.month == month)
    best = (0.0, None, None)
    for i, a in enumerate(days):
        for b in days[i + 1:]:
            fall = 1.0 - closes[b] / closes[a]
            if fall > best[0]:
                best = (fall, a, b)
    return best


# --------------------------------------------------------------------------- #
# Historical windows on the shipped data
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("window", DEFAULT_WINDOWS, ids=lambda w: w.name)
def test_windows_are_the_btc_peak_to_trough_of_their_month(window, history, csv_closes):
    fall, peak, trough = month_peak_to_trough(csv_closes["BTC"], window.start.year, window.start.month)
    assert (window.start, window.end) == (peak, trough)
    result = replay_window([1.0], ["BTC"], window, history, nav_base_units=NAV)
    # Same arithmetic on the same doubles (both parse the CSV's closes correctly rounded): the module's
    # 0 - 1.0 (P1/P0 - 1) is our 1 - P1/P0 exactly (rounding is symmetric under negation).
    assert result.total_loss == fall
    assert result.total_loss_base_units == round(Fraction(result.total_loss) * NAV)
    assert result.flags == ()
    assert result.details["proxy_return"] == -fall  # exact, as above


def test_known_covid_drawdown_and_every_asset_replayed(history, csv_closes):
    result = replay_window([0.6], ["BTC"], DEFAULT_WINDOWS[0], history, nav_base_units=NAV)
    # Exact: 0 - 0.6 (P1/P0 - 1) and 0.6 (1 - P1/P0) round the same magnitudes the same way.
    assert result.total_loss == 0.6 * (1 - 4800 / 9131.88)
    # Exact decimal arithmetic on the CSV's closes; the float path may differ by at most one unit.
    exact = Fraction("0.6") * (Fraction("9131.88") - 4800) / Fraction("9131.88") * NAV
    assert abs(result.total_loss_base_units - exact) <= 1
    symbols = ("BTC", "ETH", "BNB", "XRP", "ADA", "DOGE", "TRX", "BCH")
    w = np.full(8, 0.1)
    r = replay_window(w, symbols, DEFAULT_WINDOWS[0], history)
    expected = [csv_closes[s][dt.date(2020, 3, 12)] / csv_closes[s][dt.date(2020, 3, 6)] - 1 for s in symbols]
    np.testing.assert_array_equal(r.asset_returns, expected)  # same formula on the same doubles: exact
    np.testing.assert_array_equal(r.asset_losses, -0.1 * np.array(expected))  # 0 - 0.1 R = -(0.1 R): exact
    # NumPy's sum of the 8 losses vs Python's sum of the returns, then * -0.1: two 8-term sums in other
    # orders (gamma(7) each of sum |0.1 R_i|) and the product.
    losses_abs = 0.1 * float(np.sum(np.abs(expected)))
    assert r.total_loss == pytest.approx(-0.1 * sum(expected), abs=2 * gamma(8) * losses_abs)


def test_missing_asset_is_proxied_by_its_beta_to_btc(history, csv_closes):
    assert dt.date(2020, 3, 6) not in csv_closes["SOL"]  # SOL listed in August 2020
    w = np.array([0.3, 0.3, 0.3])
    result = replay_window(w, SYMBOLS, DEFAULT_WINDOWS[0], history, nav_base_units=NAV)
    assert result.flags == ("proxied:SOL",)
    # Independent beta: OLS slope of SOL on BTC daily returns over consecutive rows with both closes.
    dates = sorted(set(csv_closes["SOL"]) & set(csv_closes["BTC"]))
    with open(DEFAULT_STRESS_CSV, newline="") as handle:
        all_dates = [dt.date.fromisoformat(row["date"]) for row in csv.DictReader(handle)]
    next_row = dict(zip(all_dates, all_dates[1:]))
    pairs = [(d, next_row[d]) for d in dates if d in next_row and next_row[d] in csv_closes["SOL"]
             and next_row[d] in csv_closes["BTC"]]
    sol = [csv_closes["SOL"][b] / csv_closes["SOL"][a] - 1 for a, b in pairs]
    btc = [csv_closes["BTC"][b] / csv_closes["BTC"][a] - 1 for a, b in pairs]
    slope = stats.linregress(btc, sol).slope
    beta = result.details["betas"]["SOL"]
    assert beta["beta"] == pytest.approx(slope, rel=1e-10)
    assert beta["n_observations"] == len(pairs)
    btc_return = 4800 / 9131.88 - 1
    assert result.asset_returns[2] == pytest.approx(slope * btc_return, rel=1e-10)
    assert result.asset_returns[0] == btc_return  # same formula on the same doubles: exact
    assert sum(result.asset_losses_base_units) == result.total_loss_base_units


def test_missing_asset_reported_uncovered_when_not_proxied(history):
    w = np.array([0.3, 0.3, 0.3])
    result = replay_window(w, SYMBOLS, DEFAULT_WINDOWS[0], history, proxy_missing=False)
    assert result.flags == ("uncovered:SOL",)
    assert result.asset_losses[2] == 0.0 and result.asset_returns[2] == 0.0
    unknown = replay_window([0.5, 0.4], ["BTC", "LUNA"], DEFAULT_WINDOWS[2], history)
    assert unknown.flags == ("uncovered:LUNA",)
    # Exact: -(0.5 R) + (0 - 0.4 * 0) = 0.5 (1 - P1/P0), the same roundings as ours.
    assert unknown.total_loss == 0.5 * (1 - 28629.8 / 39690)
    # SOL has a price in the later windows: no flag there.
    assert all(r.flags == () for r in historical_stress(w, SYMBOLS, history=history)[1:])


def test_beta_needs_enough_common_history(history):
    assert beta_to_proxy(history, "SOL", min_observations=10**6) is None
    assert beta_to_proxy(history, "NOPE") is None
    # Numerator and denominator are the same sum of squares of the same centred returns; bounded as two
    # evaluations of an N-term sum of positive terms in case the BLAS kernel orders them differently.
    beta, n_obs = beta_to_proxy(history, "BTC")
    assert beta == pytest.approx(1.0, rel=2 * gamma(n_obs) + U)


def test_window_outside_the_file_is_refused(history):
    early = StressWindow("mt_gox_2014", dt.date(2014, 2, 1), dt.date(2014, 2, 25))
    with pytest.raises(ConfigError, match="not covered by the price history"):
        replay_window([0.5], ["BTC"], early, history)
    backwards = StressWindow("backwards", dt.date(2022, 5, 27), dt.date(2022, 5, 4))
    with pytest.raises(ConfigError, match="must be after start"):
        replay_window([0.5], ["BTC"], backwards, history)


def test_load_close_history_keeps_blanks_and_rejects_bad_files(history, tmp_path):
    assert history.dates[0] == dt.date(2017, 8, 17) and history.dates[-1] == dt.date(2026, 3, 30)
    assert math.isnan(history.closes[0, history.column("BNB")])
    assert history.closes[history.row(dt.date(2020, 3, 12)), history.column("BTC")] == 4800.0
    bad = tmp_path / "bad.csv"
    bad.write_text("date,BTC\n2020-01-01,100\n2020-01-02,-5\n")
    with pytest.raises(InvalidPriceError, match="positive and finite"):
        load_close_history(bad)
    bad.write_text("date,BTC\n2020-01-02,100\n2020-01-01,101\n")
    with pytest.raises(ConfigError, match="strictly increasing"):
        load_close_history(bad)
    bad.write_text("day,BTC\n2020-01-01,100\n")
    with pytest.raises(ConfigError, match="'date'"):
        load_close_history(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_close_history(tmp_path / "missing.csv")


# --------------------------------------------------------------------------- #
# Hypothetical shocks
# --------------------------------------------------------------------------- #
COV = np.array([[0.36, 0.30, 0.35], [0.30, 0.49, 0.45], [0.35, 0.45, 0.81]])  # vols 0.6, 0.7, 0.9


@pytest.mark.parametrize("w", [[0.25, 0.125, 0.5], [0.3, 0.3, 0.3], [0.137, 0.2931, 0.411]])
def test_minus_fifty_percent_loses_exactly_half_of_each_weight(w):
    results = {r.name: r for r in hypothetical_stress(w, COV, symbols=SYMBOLS, nav_base_units=NAV)}
    for i, s in enumerate(SYMBOLS):
        r = results[f"shock_{s}"]
        assert r.total_loss == 0.5 * w[i]  # exact: 0 - w (-0.5) is a scaling by a power of two, plus zeros
        assert r.total_loss_base_units == round(Fraction(w[i]) * NAV / 2)
        assert r.asset_losses_base_units[i] == r.total_loss_base_units
        assert sum(abs(x) for j, x in enumerate(r.asset_losses_base_units) if j != i) == 0
    everything = results["shock_all"]
    np.testing.assert_array_equal(everything.asset_losses, 0.5 * np.array(w))  # exact: scaling by 2^-1
    assert everything.asset_losses_base_units == tuple(round(Fraction(x) * NAV / 2) for x in w)
    assert sum(everything.asset_losses_base_units) == everything.total_loss_base_units
    if w[0] == 0.25:  # exact binary weights: exactly half of each weight times NAV
        assert everything.asset_losses_base_units == (NAV // 8, NAV // 16, NAV // 4)
        assert everything.total_loss_base_units == 7 * NAV // 16


def test_stressed_covariances_give_the_closed_form_es():
    w = np.array([0.2, 0.3, 0.4])
    results = {r.name: r for r in hypothetical_stress(w, COV, symbols=SYMBOLS, nav_base_units=NAV,
                                                      confidence=0.99, horizon_days=10)}
    z = stats.norm.ppf(0.99)
    k = stats.norm.pdf(z) / 0.01 * math.sqrt(10 / 365)
    vols = np.sqrt(np.diag(COV))
    # Every term positive (w, COV > 0): a quadratic form of order 3 is within gamma(6) (halved by a
    # sqrt), w . vols within gamma(3). The ES factor phi(z)/(1 - a) by the module and by scipy:
    # es_factor_rtol each (exp of -z^2/2, constant, division); the scalings (sqrt(h), /365, * mult^2) <= 8U.
    k_rtol = 2 * ((ELEMENTARY_ULPS + 2 * z * z + 3) * U + z * z * NDTRI_RELATIVE_ERROR)
    form_rtol = gamma(6) + gamma(3) + 8 * U
    one = results["correlations_to_one"]
    assert one.total_loss == pytest.approx(k * float(w @ vols), rel=k_rtol + form_rtol)  # volatilities add up
    assert one.details["portfolio_volatility_annualised"] == pytest.approx(float(w @ vols), rel=form_rtol)
    x3 = results["volatilities_x3"]
    assert x3.total_loss == pytest.approx(3 * k * math.sqrt(w @ COV @ w), rel=k_rtol + form_rtol)
    # The same function at 9 COV and COV: the same k; two quadratic forms (and 9 COV's rounding), * 3.
    assert x3.total_loss == pytest.approx(3 * gaussian_var_es(w, COV, 0.99, 10).es, rel=form_rtol)
    both = results["correlations_to_one_volatilities_x3"]
    assert both.total_loss == pytest.approx(3 * one.total_loss, rel=form_rtol)
    assert both.total_loss > x3.total_loss > one.total_loss
    for r in (one, x3, both):
        assert r.kind == "parametric" and r.asset_returns is None
        # Euler: sum_i sqrt(h) k w_i (S w)_i / sigma vs sqrt(h) k sigma, positive terms: two 3-term dots
        # (gamma(4) each with the division), the sqrt and its square, the scalings.
        assert r.asset_losses.sum() == pytest.approx(r.total_loss, rel=2 * gamma(4) + 6 * U)
        assert sum(r.asset_losses_base_units) == r.total_loss_base_units
        assert r.details["var"] < r.details["es"] == r.total_loss  # the same value, passed on


def test_price_shock_validation():
    with pytest.raises(ConfigError, match="finite simple returns >= -1"):
        price_shock([0.5, 0.5], [-1.5, 0.0], "too_much", symbols=("A", "B"))
    with pytest.raises(ConfigError, match="duplicate"):
        price_shock([0.5, 0.5], [-0.5, 0.0], "dup", symbols=("A", "A"))
    with pytest.raises(ConfigError, match="volatility_multiplier"):
        hypothetical_stress([0.5, 0.5], np.eye(2), symbols=("A", "B"), volatility_multiplier=0.0)
    with pytest.raises(KeeperError, match="sum to at most 1"):
        hypothetical_stress([0.9, 0.5], np.eye(2), symbols=("A", "B"))


# --------------------------------------------------------------------------- #
# Report
# --------------------------------------------------------------------------- #
def test_run_stress_tests_report(history):
    w = np.array([0.3, 0.3, 0.3])
    report = run_stress_tests(w, SYMBOLS, COV, nav_base_units=NAV, history=history)
    names = [r.name for r in report.results]
    assert names[:4] == [wd.name for wd in DEFAULT_WINDOWS]
    assert names[4:] == ["shock_BTC", "shock_ETH", "shock_SOL", "shock_all", "correlations_to_one",
                         "volatilities_x3", "correlations_to_one_volatilities_x3"]
    assert report.worst().total_loss == max(r.total_loss for r in report.results)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["results"][0]["flags"] == ["proxied:SOL"]
    assert data["results"][0]["details"]["start"] == "2020-03-06"
    text = format_stress_report(report)
    assert "covid_march_2020" in text and "25,000,000.000000" in text and "proxied:SOL" in text
    assert len(text.splitlines()) == 2 + len(report.results)
    no_cov = run_stress_tests(w, SYMBOLS, nav_base_units=NAV, history=history)
    assert [r.name for r in no_cov.results] == names[:8]
    with pytest.raises(ConfigError, match="no stress result"):
        report.result("dotcom")
    assert report.result("shock_all").total_loss == pytest.approx(0.45)
