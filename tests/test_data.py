"""Unit tests of keeper.data.load_prices on the shipped history and on small CSVs in tmp_path."""

from __future__ import annotations

import csv
import datetime as dt
import math

import numpy as np
import pytest

from keeper.data import DEFAULT_PRICES_CSV, load_prices
from keeper.errors import ConfigError, InvalidPriceError

SHIPPED_SYMBOLS = ("BTC", "ETH", "BNB", "XRP", "ADA", "DOGE", "SOL", "TRX", "BCH")


def raw_rows():
    with open(DEFAULT_PRICES_CSV, newline="") as handle:
        return list(csv.reader(handle))


def write_csv(tmp_path, text, name="prices.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_file_all_columns():
    rows = raw_rows()
    table = load_prices()
    assert table.symbols == SHIPPED_SYMBOLS
    assert table.prices.shape == (len(rows) - 1, len(SHIPPED_SYMBOLS))
    assert table.prices.dtype == np.float64
    assert len(table.dates) == table.prices.shape[0]
    assert table.dropped_rows == 0
    assert np.all(np.isfinite(table.prices)) and np.all(table.prices > 0)
    assert all(b > a for a, b in zip(table.dates, table.dates[1:]))
    assert table.dates[0] == dt.date.fromisoformat(rows[1][0])
    assert table.dates[-1] == dt.date.fromisoformat(rows[-1][0])


def test_shipped_file_symbol_subset_and_window():
    start, end = dt.date(2021, 3, 1), dt.date(2022, 2, 28)
    table = load_prices(DEFAULT_PRICES_CSV, symbols=["SOL", "BTC"], start=start, end=end)
    assert table.symbols == ("SOL", "BTC")  # in the order asked for
    rows = [r for r in raw_rows()[1:] if start <= dt.date.fromisoformat(r[0]) <= end]
    assert table.prices.shape == (len(rows), 2)
    assert table.dates[0] >= start and table.dates[-1] <= end
    assert table.dates[0] == dt.date.fromisoformat(rows[0][0])
    assert table.dates[-1] == dt.date.fromisoformat(rows[-1][0])
    header = raw_rows()[0]
    sol, btc = header.index("SOL"), header.index("BTC")
    rng = np.random.default_rng(0)
    for t in rng.integers(0, len(rows), 20):
        assert table.dates[t] == dt.date.fromisoformat(rows[t][0])
        # Exact: both parse the same decimal string to the nearest double.
        assert table.prices[t, 0] == float(rows[t][sol]) and table.prices[t, 1] == float(rows[t][btc])


def test_window_bounds_are_inclusive():
    day = dt.date(2021, 6, 15)
    table = load_prices(symbols=["ETH"], start=day, end=day)
    assert table.dates == (day,)
    assert table.prices.shape == (1, 1)


def test_close_timestamp_is_midnight_utc_after_the_date():
    table = load_prices(symbols=["BTC"], start=dt.date(2020, 12, 30), end=dt.date(2021, 1, 2))
    for t, day in enumerate(table.dates):
        ts = table.close_timestamp(t)
        moment = dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc)
        assert moment.date() == day + dt.timedelta(days=1)
        assert (moment.hour, moment.minute, moment.second) == (0, 0, 0)
        assert ts % 86_400 == 0
    assert table.close_timestamp(1) - table.close_timestamp(0) == 86_400
    assert table.close_timestamp(0) == 1_609_372_800  # 2020-12-31T00:00:00Z closes 2020-12-30


def test_index_of_finds_the_first_row_on_or_after():
    table = load_prices(symbols=["BTC"], start=dt.date(2021, 1, 1), end=dt.date(2021, 1, 31))
    assert table.index_of(dt.date(2021, 1, 1)) == 0
    assert table.dates[table.index_of(dt.date(2021, 1, 10))] == dt.date(2021, 1, 10)
    assert table.index_of(dt.date(2020, 1, 1)) == 0
    assert table.index_of(dt.date(2022, 1, 1)) == len(table.dates)


def test_a_blank_cell_inside_the_history_is_refused_naming_file_row_and_column(tmp_path):
    path = write_csv(
        tmp_path,
        "date,AAA,BBB\n"
        "2024-01-01,1.0,10.0\n"
        "2024-01-02,,11.0\n"
        "2024-01-03,1.2, \n"
        "2024-01-04,1.3,13.0\n",
    )
    with pytest.raises(ConfigError) as info:
        load_prices(path)
    assert f"{path}:3 (2024-01-02, column AAA): blank close" in str(info.value)
    assert "leave AAA out of the assets" in str(info.value)
    # a cell of white space is blank too; AAA's blank is no concern when only BBB is asked for
    with pytest.raises(ConfigError, match=r":4 \(2024-01-03, column BBB\): blank close"):
        load_prices(path, symbols=["BBB"])


def test_rows_before_an_asset_lists_and_after_one_ends_are_left_out_and_counted(tmp_path):
    path = write_csv(
        tmp_path,
        "date,AAA,BBB\n"
        "2024-01-01,,10.0\n"
        "2024-01-02,1.1,11.0\n"
        "2024-01-03,1.2,12.0\n"
        "2024-01-04,1.3,\n",
    )
    table = load_prices(path)
    assert table.dates == (dt.date(2024, 1, 2), dt.date(2024, 1, 3)) and table.dropped_rows == 2
    np.testing.assert_array_equal(table.prices, [[1.1, 11.0], [1.2, 12.0]])  # exact parse, nothing filled
    assert load_prices(path, symbols=["BBB"]).dropped_rows == 1
    # rows outside the window are not kept
    assert load_prices(path, start=dt.date(2024, 1, 3)).dates == (dt.date(2024, 1, 3),)


@pytest.mark.parametrize("bad", ["-3.5", "0", "nan", "inf", "abc"])
def test_non_positive_or_non_finite_price_raises_invalid_price(tmp_path, bad):
    path = write_csv(tmp_path, f"date,AAA,BBB\n2024-01-01,1.0,2.0\n2024-01-02,{bad},2.1\n")
    with pytest.raises(InvalidPriceError) as info:
        load_prices(path)
    assert ":3" in str(info.value)  # the line number
    assert load_prices(path, symbols=["BBB"]).prices.shape == (2, 1)  # other columns still load


def test_unknown_symbol_raises_config_error_naming_it(tmp_path):
    path = write_csv(tmp_path, "date,AAA\n2024-01-01,1.0\n")
    with pytest.raises(ConfigError, match="ZZZ"):
        load_prices(path, symbols=["AAA", "ZZZ"])
    with pytest.raises(ConfigError, match="DOGECOIN"):
        load_prices(symbols=["BTC", "DOGECOIN"])


@pytest.mark.parametrize(
    "dates",
    [["2024-01-02", "2024-01-01", "2024-01-03"], ["2024-01-01", "2024-01-02", "2024-01-02"]],
    ids=["unsorted", "duplicate"],
)
def test_unsorted_or_duplicate_dates_raise_config_error(tmp_path, dates):
    body = "".join(f"{d},{1 + i}\n" for i, d in enumerate(dates))
    path = write_csv(tmp_path, "date,AAA\n" + body)
    with pytest.raises(ConfigError, match="increasing"):
        load_prices(path)


def test_missing_file_bad_header_bad_date_and_empty_window_raise_config_error(tmp_path):
    with pytest.raises(ConfigError):
        load_prices(tmp_path / "absent.csv")
    with pytest.raises(ConfigError, match="date"):
        load_prices(write_csv(tmp_path, "day,AAA\n2024-01-01,1\n", "h.csv"))
    with pytest.raises(ConfigError, match="bad time .01/02/2024."):
        load_prices(write_csv(tmp_path, "date,AAA\n01/02/2024,1\n", "d.csv"))
    with pytest.raises(ConfigError, match="no rows"):
        load_prices(DEFAULT_PRICES_CSV, start=dt.date(1999, 1, 1), end=dt.date(1999, 12, 31))


def test_prices_match_the_file_exactly():
    rows = raw_rows()
    table = load_prices()
    expected = np.array([[float(c) for c in r[1:]] for r in rows[1:]])
    assert np.array_equal(table.prices, expected)
    assert not any(math.isnan(x) for x in table.prices.ravel())
