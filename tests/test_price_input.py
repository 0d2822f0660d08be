"""One validation path for price CSVs (keeper.price_panel.read_price_csv), used by the demo (keeper.data.load_prices)
and the backtest (keeper.price_panel.load_price_panel): every refused input with its message naming file, row
and column."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from keeper.backtest import BacktestConfig, replay_window
from keeper.data import load_prices
from keeper.demo import DemoOptions, run_demo
from keeper.errors import ConfigError, InvalidPriceError
from keeper.price_panel import JUMP_TEST_K, load_price_panel, read_price_csv

LOADERS = [load_prices, load_price_panel]


def _walk(n: int, seed: int = 3, vol: float = 0.03) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100.0 * np.exp(np.cumsum(rng.normal(0.0, vol, size=(n, 2)), axis=0))


def _daily(tmp_path, prices: np.ndarray, *, name: str = "p.csv", start=dt.date(2024, 1, 1), cells=None,
           prefix: str = "") -> object:
    """A daily CSV of ``prices`` (n, 2) as AAA, BBB; ``cells[(row, col)] = text`` overrides a cell (row 0 = first
    data row, col 0 = AAA)."""
    lines = ["date,AAA,BBB"]
    for t, row in enumerate(prices):
        values = [f"{p:.6f}" for p in row]
        for (r, c), text in (cells or {}).items():
            if r == t:
                values[c] = text
        lines.append(",".join([(start + dt.timedelta(days=t)).isoformat(), *values]))
    path = tmp_path / name
    path.write_text(prefix + "\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("load", LOADERS)
def test_a_byte_order_mark_is_skipped(tmp_path, load) -> None:
    path = _daily(tmp_path, _walk(5), prefix="\ufeff")
    assert load(path).symbols == ("AAA", "BBB")


@pytest.mark.parametrize("load", LOADERS)
def test_duplicate_time_names_both_rows(tmp_path, load) -> None:
    path = tmp_path / "dup.csv"
    path.write_text("date,AAA,BBB\n2024-01-01,1,2\n2024-01-02,1,2\n2024-01-02,1,2\n2024-01-03,1,2\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == (f"{path}:4, column date: time 2024-01-02 repeats the time of row 3: times must be "
                               "strictly increasing (sort the file, drop duplicates)")


@pytest.mark.parametrize("load", LOADERS)
def test_unsorted_times_name_the_row_and_the_one_it_precedes(tmp_path, load) -> None:
    path = tmp_path / "unsorted.csv"
    path.write_text("date,AAA,BBB\n2024-01-01,1,2\n2024-01-03,1,2\n2024-01-02,1,2\n")
    with pytest.raises(ConfigError, match=rf"{path}:4, column date: time 2024-01-02 comes before row 3: times must "
                                          r"be strictly increasing"):
        load(path)


@pytest.mark.parametrize("load", LOADERS)
@pytest.mark.parametrize("text, message", [
    ("abc", "column AAA: 'abc' is not a number"),
    ("-3", "column AAA: close '-3' must be positive and finite"),
    ("0", "column AAA: close '0' must be positive and finite"),
    ("inf", "column AAA: close 'inf' must be positive and finite"),
    ("nan", "column AAA: close 'nan' must be positive and finite"),
])
def test_a_bad_close_names_file_row_time_and_column(tmp_path, load, text, message) -> None:
    path = _daily(tmp_path, _walk(5), cells={(2, 0): text})
    with pytest.raises(InvalidPriceError) as info:
        load(path)
    assert str(info.value).startswith(f"{path}:4 (2024-01-03), {message}")


@pytest.mark.parametrize("load", LOADERS)
def test_a_1e9_price_spike_is_refused_by_the_robust_jump_test(tmp_path, load) -> None:
    prices = _walk(60)
    path = _daily(tmp_path, prices, cells={(40, 1): "1e9"})
    with pytest.raises(InvalidPriceError) as info:
        load(path)
    message = str(info.value)
    assert message.startswith(f"{path}:42 (2024-02-10, column BBB): close 1e+09 after ")
    assert f"limit {JUMP_TEST_K:g} x" in message and "robust deviations" in message
    # The same walk without the spike loads, and a real crash of 60 % in a day (about 30 robust deviations of a
    # 3 % daily vol) passes: the test refuses only what no market did.
    assert load(_daily(tmp_path, prices, name="ok.csv")).prices.shape == (60, 2)
    crash = prices.copy()
    crash[40:, 1] *= 0.4
    assert load(_daily(tmp_path, crash, name="crash.csv")).prices.shape == (60, 2)


def test_the_jump_test_passes_every_shipped_file() -> None:
    from keeper.build import PROJECT_ROOT

    for name in ("crypto_daily_close_binance.csv", "crypto_daily_close_binance_aligned.csv", "btc_dvol_daily.csv",
                 "crypto_hourly_close_binance_btc_eth.csv"):
        data = read_price_csv(PROJECT_ROOT / "data" / name)
        assert data.prices.shape[0] > 1000


@pytest.mark.parametrize("load", LOADERS)
def test_irregular_and_mixed_bars_are_refused_at_the_first_bad_row(tmp_path, load) -> None:
    start = dt.datetime(2024, 1, 1)
    stamps = [start + dt.timedelta(hours=h) for h in range(10)]
    stamps[6] += dt.timedelta(minutes=30)  # 05:00 -> 06:30: not on the hourly grid
    body = "".join(f"{s.isoformat()}Z,1,2\n" for s in stamps)
    path = tmp_path / "irregular.csv"
    path.write_text("ts_utc,AAA,BBB\n" + body)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value).startswith(f"{path}:8, column ts_utc: irregular bar: 5400 s after row 7, not a whole "
                                      "number of the file's 3600-second bars")
    # Hourly rows, then daily rows: the bar size changes.
    stamps = [start + dt.timedelta(hours=h) for h in range(30)] + [
        start + dt.timedelta(days=2 + d) for d in range(10)]
    path = tmp_path / "mixed.csv"
    path.write_text("ts_utc,AAA,BBB\n" + "".join(f"{s.isoformat()}Z,1,2\n" for s in stamps))
    with pytest.raises(ConfigError, match=rf"{path}:33, column ts_utc: mixed bar sizes: from this row on the rows "
                                          "are 86400 s apart, the file's bar is 3600 s"):
        load(path)
    # Dates and date-times in one file.
    path = tmp_path / "forms.csv"
    path.write_text("date,AAA,BBB\n2024-01-01,1,2\n2024-01-02T00:00:00Z,1,2\n")
    with pytest.raises(ConfigError, match=rf"{path}:3, column date: '2024-01-02T00:00:00Z' is a date-time but the "
                                          "rows above are dates"):
        load(path)


def test_gaps_of_whole_bars_are_kept_as_gaps(tmp_path) -> None:
    start = dt.datetime(2024, 1, 1)
    hours = [0, 1, 2, 5, 6, 7]
    path = tmp_path / "gaps.csv"
    path.write_text("ts_utc,AAA,BBB\n" + "".join(
        f"{(start + dt.timedelta(hours=h)).isoformat()}Z,1,2\n" for h in hours))
    panel = load_price_panel(path)
    assert panel.bar_seconds == 3600 and len(panel.dates) == 6
    assert panel.calendar_gaps == ((dt.datetime(2024, 1, 1, 2), dt.datetime(2024, 1, 1, 5)),)


def test_bad_header_and_time_name_file_row_and_column(tmp_path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("day,AAA\n2024-01-01,1\n")
    with pytest.raises(ConfigError, match=rf"{path}:1: the first column must be the bar time"):
        load_price_panel(path)
    path.write_text("date,AAA,AAA\n2024-01-01,1,1\n")
    with pytest.raises(ConfigError, match="column names must be unique"):
        load_price_panel(path)
    path.write_text("date,AAA\n2024-01-01,1\n2024-13-01,1\n")
    with pytest.raises(ConfigError, match=rf"{path}:3, column date: bad time '2024-13-01'"):
        load_price_panel(path)


def test_a_backtest_window_shorter_than_the_warm_up_says_what_is_needed(tmp_path) -> None:
    panel = load_price_panel(_daily(tmp_path, _walk(50)))
    with pytest.raises(ConfigError) as info:
        replay_window(panel, None, dt.date(2024, 1, 30), 40)
    assert str(info.value) == (
        "window None..2024-01-30 leaves 0 days after the 40-day warm-up (40 bars before the first replayed one; "
        "data 2024-01-01..2024-02-19): the window must end after 2024-02-11; choose a later end, an earlier data "
        "start or a shorter lookback")


def test_a_demo_window_with_less_history_than_the_warm_up_is_refused_before_anything_starts(tmp_path) -> None:
    path = _daily(tmp_path, _walk(80))
    options = DemoOptions(data=path, start=dt.date(2024, 1, 20), end=dt.date(2024, 3, 1), lookback_days=35,
                          out_dir=tmp_path / "out", quiet=True)
    with pytest.raises(ConfigError) as info:
        run_demo(options)
    assert str(info.value) == (
        f"{path}: the replay from 2024-01-20 has 19 days of history before it; the estimator's warm-up needs 36 "
        "(35 days of returns + 1): start on or after 2024-02-06, or shorten the lookback (--lookback)")
    assert not (tmp_path / "out").exists()


def test_jump_test_k_is_documented_against_the_largest_real_jump() -> None:
    # DOGE's +159 % day (2021-01-28) is the largest jump of the shipped files: 48.5 robust deviations, below K/2.
    from keeper.build import PROJECT_ROOT

    data = read_price_csv(PROJECT_ROOT / "data" / "crypto_daily_close_binance.csv", ["DOGE"])
    p = data.prices[np.isfinite(data.prices[:, 0]), 0]
    r = np.diff(np.log(p))
    scale = 1.4826 * np.median(np.abs(r - np.median(r)))
    assert 40 < np.max(np.abs(r)) / scale < JUMP_TEST_K / 2
    assert math.log(1e9 / 0.3) / scale > JUMP_TEST_K  # a 1e9 spike on DOGE is refused
