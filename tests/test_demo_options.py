"""A short options-mode replay (`keeper demo --options`) through the LUNA collapse of May 2022: puts bought and
rolled on chain, BTC priced with DVOL and the others with the stated realised-vol proxy, premiums and payouts,
and the comparison with the same policy without options and with the same-net-delta control over the same days
and flows."""

from __future__ import annotations

import csv
import datetime as dt
import json

import numpy as np
import pytest

from keeper.demo import DemoOptions, run_demo
from keeper.implied_vol import DEFAULT_DVOL_CSV
from keeper.journal import Journal

START, END = dt.date(2022, 5, 1), dt.date(2022, 5, 28)


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_options")
    options = DemoOptions(
        symbols=["BTC", "ETH", "SOL"],
        start=START,
        end=END,
        lookback_days=35,
        half_life_days=15,
        flows_every_days=7,
        out_dir=out,
        quiet=True,
        options_mode=True,
    )
    return run_demo(options), out


def test_report_has_the_overlay_fields(replay) -> None:
    report, out = replay
    o = report["options"]
    assert report["days"] == (END - START).days + 1
    # 25-delta 30-day puts bought, and rolled 5 days before expiry within the 28 days.
    assert o["puts_bought"] >= 2 and o["puts_rolled"] >= 1
    buys = [e for e in o["events"] if e["kind"] == "buy"]
    sells = [e for e in o["events"] if e["kind"] == "sell"]
    assert len(buys) == o["puts_bought"] and all(e["reason"].startswith("roll") for e in sells)
    assert o["premium_spent_usd"] == pytest.approx(sum(e["premium"] for e in buys) / 1e6)
    assert o["payouts_received_usd"] == pytest.approx(
        o["premium_received_on_close_usd"] + o["settlement_payouts_usd"])
    assert o["premium_received_on_close_usd"] == pytest.approx(sum(e["premium"] for e in sells) / 1e6)
    # Every buy within the overlay's 100 bps of NAV per plan (the NAV stays under 1.3 M USD here).
    by_day: dict[str, float] = {}
    for e in buys:
        by_day[e["date"]] = by_day.get(e["date"], 0.0) + e["premium"] / 1e6
    assert max(by_day.values()) <= 0.01 * max(report["series"]["nav_usd"])
    # In the LUNA crash the puts paid: more was received on the rolls than paid for them.
    assert o["payouts_received_usd"] > 0
    # Drawdowns with and without the overlay over the same days.
    without = o["share_price_without_overlay"]
    assert len(without) == report["days"]
    for key in ("max_drawdown_with_overlay", "max_drawdown_without_overlay"):
        assert 0.0 < o[key] < 1.0
    assert o["max_drawdown_with_overlay"] == report["strategies"][0]["max_drawdown"]
    saved = json.loads((out / "report.json").read_text())
    assert saved["options"]["puts_bought"] == o["puts_bought"]
    assert "premium spent" in report["text"] and "without the overlay" in report["text"]
    for name in ("report.png", "journal.sqlite", "options_deployment.json", "policy/journal.sqlite",
                 "control/journal.sqlite"):
        assert (out / name).stat().st_size > 0


def test_the_three_way_comparison_covers_the_replay_and_the_stress_window_inside_it(replay) -> None:
    report, out = replay
    o = report["options"]
    c = o["comparison"]
    # The LUNA window (2022-05-04..05-27) lies inside the replay; no other default window does.
    assert list(c["periods"]) == ["demo window", "luna_may_2022"]
    series = c["series"]
    assert series["share_price_overlay"] == report["series"]["share_price_usd"]
    assert series["share_price_policy"] == o["share_price_without_overlay"]
    assert len(series["share_price_control"]) == report["days"]
    for period, runs in c["metrics"].items():
        assert list(runs) == ["policy", "overlay", "control"]
        for run, m in runs.items():
            assert 0.0 <= m["max_drawdown"] < 1.0 and m["turnover"] >= 0.0, (period, run, m)
            if run != "overlay":  # spot and cash only
                assert m["premium_paid"] == m["premium_received"] == 0.0
    whole = c["metrics"]["demo window"]
    assert whole["overlay"]["max_drawdown"] == pytest.approx(o["max_drawdown_with_overlay"], rel=1e-12)
    assert whole["policy"]["max_drawdown"] == pytest.approx(o["max_drawdown_without_overlay"], rel=1e-12)
    # Premiums in fractions of the NAV at the window's start (the first bar: the deposits are in).
    nav0 = report["series"]["nav_usd"][0]
    assert whole["overlay"]["premium_paid"] == pytest.approx(o["premium_spent_usd"] / nav0, rel=1e-9)
    assert whole["overlay"]["premium_received"] == pytest.approx(o["payouts_received_usd"] / nav0, rel=1e-9)
    saved = c["saved"]["demo window"]
    points = (whole["policy"]["max_drawdown"] - whole["overlay"]["max_drawdown"]) * 100
    assert saved["dd_saved_vs_policy_points"] == pytest.approx(points)
    assert saved["beats_control"] == (whole["overlay"]["max_drawdown"] < whole["control"]["max_drawdown"])
    assert "same-net-delta control" in report["text"] and "luna_may_2022: 2022-05-04..2022-05-27" in report["text"]
    saved_json = json.loads((out / "report.json").read_text())
    assert saved_json["options"]["comparison"]["saved"]["luna_may_2022"]["beats_control"] == \
        c["saved"]["luna_may_2022"]["beats_control"]


def test_the_control_trades_toward_the_overlay_runs_net_delta(replay) -> None:
    """Each control rebalance targets the overlay run's net delta per asset of that day (long only, at most the
    NAV in total), and its journal row carries that decision."""
    report, out = replay
    net = report["options"]["comparison"]["series"]["overlay_net_delta"]
    dates = report["series"]["dates"]
    rows = [r for r in Journal(out / "control" / "journal.sqlite").ticks() if r["status"] == "rebalanced"]
    assert rows
    for r in rows:
        date = dt.datetime.fromtimestamp(r["block_timestamp"] - 86_400, dt.timezone.utc).date().isoformat()
        policy = r["detail"]["policy"]
        assert policy["allocation"]["allocator"] == "fixed" and policy["reasons"] == ["control: fixed NAV fractions"]
        held = np.clip(net[dates.index(date)], 0.0, None)
        np.testing.assert_allclose(policy["target_weights"], held / max(held.sum(), 1.0), rtol=1e-12, atol=1e-15)


def test_vol_sources_are_stated_and_dvol_gaps_flagged(replay) -> None:
    report, _ = replay
    sources = report["options"]["implied_vol_sources"]
    assert sources["BTC"]["source"] == "deribit_dvol" and not sources["BTC"]["derived"]
    for sym in ("ETH", "SOL"):
        assert sources[sym]["derived"] and "derived from realised volatility" in sources[sym]["kind"]
    # The carried-forward BTC days are exactly the window's days with no DVOL row.
    with open(DEFAULT_DVOL_CSV, newline="") as f:
        known = {dt.date.fromisoformat(r[0]) for r in list(csv.reader(f))[1:] if r and r[1].strip()}
    days = [START + dt.timedelta(days=i) for i in range((END - START).days + 1)]
    assert sources["BTC"]["days_carried_forward"] == sum(d not in known for d in days)
    vols = np.array(report["options"]["series"]["vols"])
    assert vols.shape == (len(days), 3) and np.all(vols > 0)


def test_every_overlay_decision_is_journalled_with_its_greeks(replay) -> None:
    _, out = replay
    rows = [r for r in Journal(out / "journal.sqlite").ticks() if r["status"].startswith("overlay_")]
    assert len(rows) == (END - START).days + 1  # one overlay step a day
    traded = [r for r in rows if r["status"] == "overlay_traded"]
    assert traded and all(r["tx_hash"] for r in traded)
    for r in traded:
        d = r["detail"]
        assert set(d["greeks"]["BTC"]) >= {"delta_units", "gamma_units", "vega_usd", "theta_usd_per_day"}
        assert d["hedge_decision"]["reasons"] or d["option_legs"]
        # After each hedge, every exposure (spot + option delta) is within the band of its target: the target
        # scaled to what the vault can hold, except on a first step cut short by the pools (step halving).
        targets = {s: a["target_exposure_weight"] for s, a in d["hedge_decision"]["assets"].items()}
        drift = [abs(d["greeks_after"][s]["exposure_weight"] - t) * 1e4 for s, t in targets.items()]
        if d["hedge_decision"]["hedge"] and d["legs"] and not _halved(d):
            assert max(drift) <= DemoOptions().hedge_trigger.delta_band_bps, (r["id"], drift)


def _halved(detail: dict) -> bool:
    """The executed spot legs are smaller than the hedge asked (the pools could not take the whole step)."""
    asked = sum(abs(a["trade_value_usd"]) for a in detail["hedge_decision"]["assets"].values())
    done = sum(leg["value"] for leg in detail["legs"]) / 1e6
    return done < 0.9 * asked
