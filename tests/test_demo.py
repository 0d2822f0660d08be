"""A short replay of real history through the whole system (`keeper demo`)."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np

from keeper.demo import DemoOptions, run_demo


def test_short_demo_replay_keeps_equal_risk_and_writes_the_report(tmp_path) -> None:
    options = DemoOptions(
        symbols=["BTC", "ETH", "SOL", "DOGE"],
        start=dt.date(2022, 5, 1),
        end=dt.date(2022, 5, 20),  # the LUNA collapse
        lookback_days=35,
        half_life_days=15,
        drift_threshold_bps=200,
        flows_every_days=7,
        out_dir=tmp_path,
        quiet=True,
    )
    report = run_demo(options)
    assert report["days"] == 20
    assert report["rebalances"] >= 2
    # After each rebalance the holdings' ex-ante risk contributions are equal (within costs and rounding).
    assert report["ex_ante_rrc_target_max_abs_error"] < 1e-8
    assert report["ex_ante_rrc_post_trade_max_abs_deviation"] < 0.01
    assert abs(sum(report["realised_rrc"].values()) - 1.0) < 1e-9
    assert 0 < report["avg_realised_slippage_bps_value_weighted"] < 50
    assert report["gas_total"] > 0
    for name in ("report.json", "report.png", "journal.sqlite", "deployment.json"):
        assert (tmp_path / name).stat().st_size > 0
    saved = json.loads((tmp_path / "report.json").read_text())
    assert len(saved["series"]["share_price_usd"]) == 20
    assert np.isfinite(saved["strategies"][0]["max_drawdown"])
