"""A short replay of real history through the whole system (`keeper demo`)."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

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
    # The default runs with the documented volatility target; the report sets the realised volatility beside it.
    assert report["volatility_target"] == DemoOptions().volatility_target == 0.45
    targets = [t["ex_ante_volatility"] for t in report["rebalance_log"]]
    assert all(v == pytest.approx(0.45, rel=1e-6) for v in targets)  # every target is scaled to 45 % ex ante
    assert report["realised_volatility"] == report["strategies"][0]["annualised_volatility"] > 0
    assert report["realised_volatility_30d_rms_error"] is None  # 20 days hold no 30-day window
    assert "volatility target 45.0% (annualised): realised" in report["text"]
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


def test_hourly_demo_replay_annualises_with_8760_bars(tmp_path) -> None:
    from keeper.price_panel import HOURLY_BTC_ETH_CSV, read_price_csv

    options = DemoOptions(data=HOURLY_BTC_ETH_CSV, symbols=["BTC", "ETH"], start=dt.date(2020, 3, 12),
                          end=dt.date(2020, 3, 12), lookback_days=3, half_life_days=1.0, rebalance_every_bars=1,
                          # untargeted, so that the ex-ante volatility below is the estimate's, not the target's
                          volatility_target=None, out_dir=tmp_path, quiet=True)
    report = run_demo(options)
    assert report["bar_seconds"] == 3600 and report["bars"] == 24 and report["days"] == 1.0
    assert report["start"] == "2020-03-12T00:00:00" and report["end"] == "2020-03-12T23:00:00"
    assert report["ticks"] == 24 and report["rebalances"] >= 1
    # Hold BTC's volatility is that of the replayed hourly closes times sqrt(8,760), computed here from the file.
    data = read_price_csv(HOURLY_BTC_ETH_CSV, ["BTC"])
    first = int(np.searchsorted(data.timestamps, 1_583_971_200))  # 2020-03-12T00:00Z
    btc = data.prices[first: first + 24, 0]
    expected = float(np.std(np.diff(btc) / btc[:-1], ddof=1) * np.sqrt(8760))
    hold_btc = report["strategies"][1]
    assert hold_btc["name"] == "hold BTC"
    assert hold_btc["annualised_volatility"] == pytest.approx(expected, rel=1e-12)
    # The keeper estimated on hourly samples of the feeds' rounds: 72 returns of its 3-day window.
    first_tick = report["rebalance_log"][0]
    assert first_tick["ex_ante_volatility"] > 0.5  # March 2020 in hourly returns, annualised


@pytest.mark.parametrize("name, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_stops_the_demo_stops_anvil_and_writes_the_report_so_far(tmp_path, name, code) -> None:
    import os
    import signal
    import subprocess
    import sys

    out = tmp_path / "out"
    command = [sys.executable, "-m", "keeper.cli", "demo", "--assets", "BTC,ETH", "--start", "2022-05-01",
               "--end", "2022-12-31", "--lookback", "35", "--half-life", "15", "--out", str(out)]
    # Its own session: the signal reaches the demo alone (a terminal's Ctrl-C reaches Anvil too; the demo copes
    # with both), so stopping Anvil is the demo's doing.
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    try:
        anvil_pids: list[int] = []
        for line in proc.stderr:  # progress goes to stderr; the first bar's line comes after the first tick
            if "bar    1/" in line:
                children = f"/proc/{proc.pid}/task/{proc.pid}/children"
                anvil_pids = [int(p) for p in open(children).read().split()]
            elif anvil_pids and " bar " in line:
                break  # the first month's end: a month replayed, seven to go (however fast the machine)
        assert anvil_pids, "the demo started no Anvil"
        proc.send_signal(getattr(signal, name))
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, stderr[-2000:]
    assert f"{name}: stopping after" in stderr
    for pid in anvil_pids:
        assert not os.path.exists(f"/proc/{pid}"), f"Anvil {pid} still runs"
    saved = json.loads((out / "report.json").read_text())
    assert saved["interrupted"] == name
    assert 2 <= saved["days"] < 245  # 2022-05-01 .. 2022-12-31 not replayed in full
    assert len(saved["series"]["share_price_usd"]) == saved["days"]
    assert (out / "report.png").stat().st_size > 0
    assert f"interrupted by {name}" in stderr and "wrote " in stdout
