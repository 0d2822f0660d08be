"""The live keeper in options mode (``option_market_address`` set): each tick runs the option overlay and
the delta hedge in one ``rebalanceWithOptions`` instead of a spot-only rebalance; expired series are
settled from the keeper key through the write-ahead journal.

Runs on the session chain (real 2022 closes, real Uniswap V3) with an OptionMarket deployed on top.
"""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError
from conftest import System

from keeper.greeks import delta_adjusted_exposures, portfolio_greeks
from keeper.chain import contract, rpc
from keeper.deployment import deploy_options, vol_to_answer
from keeper.errors import ConfigError
from keeper.option_chain import read_implied_vols, read_option_book

VOLS = (0.7, 0.9, 1.1)
OVERLAY = {"max_put_assets": 1, "hedge_ratio": 0.5, "premium_budget_bps": 100.0}
BAND_BPS = 200.0
WAD = 10**18


def _options_keeper(chain: System, **overrides):
    opts = deploy_options(chain.w3, chain.deployment, chain.owner, VOLS)
    values = dict(option_market_address=opts.market, overlay=OVERLAY, hedge_trigger={"delta_band_bps": BAND_BPS},
                  cash_buffer_bps=2000)
    values.update(overrides)
    return chain.make_keeper(**values), contract(chain.w3, "OptionMarket", opts.market), opts


def _spot_drift_bps(chain: System, keeper, market) -> np.ndarray:
    """Spot holdings (fraction of NAV) minus the policy's targets, bps: what the default ``"budget"`` hedge aims at
    (the puts' delta is protection held, not offset; the net delta sits below the target by it)."""
    reader = keeper.reader
    balances = chain.vault.functions.holdings().call()[1][1:]
    book = read_option_book(chain.vault, market, reader.assets)
    vols = read_implied_vols(market, reader.assets)
    spots = reader.snapshot().prices_usd
    now = chain.w3.eth.get_block("latest")["timestamp"]
    symbols = reader.symbols
    g = portfolio_greeks({s: b / WAD for s, b in zip(symbols, balances)}, [h.position() for h in book],
                                 dict(zip(symbols, spots)), dict(zip(symbols, vols)), now, symbols=symbols)
    nav = chain.vault.functions.totalAssets().call() / 10**6
    # The policy's targets, fractions of NAV: its cash sleeve (buffer, volatility target, ES limit) is out.
    targets = np.array(keeper.journal.ticks()[-1]["detail"]["policy"]["target_weights"])
    assert np.all(delta_adjusted_exposures(g, nav) <= g.spot_units * g.spots / nav + 1e-12)  # long puts only lower it
    return (g.spot_units * g.spots / nav - targets) * 10_000


def test_options_mode_hedges_then_buys_the_put_in_one_transaction_each(chain: System) -> None:
    chain.deposit(chain.alice, 200_000)
    keeper, market, _ = _options_keeper(chain)
    first = keeper.run_once()  # never hedged: the hedge buys spot; no spot held yet, so no put to protect it
    assert first.status == "rebalanced" and first.reason_code == "overlay_traded", first.reason
    assert first.overlay["swap_legs"] > 0 and first.overlay["option_legs"] == 0, first.overlay
    assert np.all(np.abs(_spot_drift_bps(chain, keeper, market)) <= BAND_BPS)
    second = keeper.run_once()  # the overlay buys the 25-delta put on the largest risk contributor
    assert second.status == "rebalanced", second.reason
    assert second.overlay["option_legs"] == 1
    (held,) = read_option_book(chain.vault, market, keeper.reader.assets)
    assert not held.is_call and held.amount > 0
    assert np.all(np.abs(_spot_drift_bps(chain, keeper, market)) <= BAND_BPS)
    # Every decision is journalled (tick rows with the overlay summary, overlay rows with the Greeks), and
    # both transactions went through the write-ahead journal.
    ticks = keeper.journal.ticks("rebalanced")
    assert [t["detail"]["overlay"]["status"] for t in ticks] == ["traded", "traded"]
    assert len(keeper.journal.ticks("overlay_traded")) == 2
    assert [(t.kind, t.status) for t in keeper.journal.transactions()] == [("rebalance", "mined")] * 2
    assert chain.vault.functions.rebalanceEpoch().call() == 2
    # The convex risk model saw the policy window: the put's choice with the book's ES before and after it, and
    # the whole book's ES before the step and as planned (full revaluation), each with its Euler contributions.
    plan = keeper.journal.ticks("overlay_traded")[-1]["detail"]["overlay_plan"]
    (choice,) = [c for c in plan["choices"] if c["chosen"]]
    assert choice["symbol"] == held.symbol and choice["es_after_usd"] < choice["es_before_usd"]
    for key in ("risk_before", "risk_after"):
        risk = plan[key]
        parts = list(risk["es_contributions_usd"].values())
        # The contributions and the total sum the same tail P&L in different orders: a few ulps of the largest part
        # per term.
        tol = 4 * len(parts) * np.finfo(float).eps * max(abs(c) for c in parts)
        assert risk["es_usd"] > 0 and abs(sum(parts) - risk["es_usd"]) <= tol
    assert any(label.startswith(f"put:{held.symbol}") for label in plan["risk_after"]["es_contributions_usd"])


def test_options_mode_honours_the_volatility_target_and_the_es_limit(chain: System) -> None:
    """The spot holdings follow the policy's targets, not the bare risk budget: with a 25 %
    volatility target and a 2 % ES limit (1-day 99 % Gaussian, which binds below the target's ~3.5 %)
    most of the NAV stays in the base asset."""
    chain.deposit(chain.alice, 200_000)
    keeper, market, _ = _options_keeper(chain, volatility_target=0.25, es_limit=0.02, es_method="gaussian")
    for _ in range(2):  # the hedge, then the put on the largest contributor
        report = keeper.run_once()
        assert report.status == "rebalanced", report.reason
    policy = keeper.journal.ticks()[-1]["detail"]["policy"]
    targets = np.array(policy["target_weights"])
    assert policy["allocation"]["volatility_target"] == 0.25
    # The policy scaled the sleeve: gross exposure well under the 80 % the cash buffer alone would leave.
    assert targets.sum() < 0.6, targets
    assert policy["ex_ante_volatility"] <= 0.25 * (1 + 1e-9)
    es = policy["es"]
    assert es["scale"] < 1.0 and es["before"] > 0.02 and es["after"] <= 0.02 * (1 + 1e-9), es
    # Executed: every asset's spot holding within the hedge band of those targets (the puts only lower the delta).
    assert np.all(np.abs(_spot_drift_bps(chain, keeper, market)) <= BAND_BPS)


def test_options_mode_settles_expired_series_through_the_journal(chain: System) -> None:
    chain.deposit(chain.alice, 200_000)
    keeper, market, opts = _options_keeper(chain)
    keeper.run_once()
    keeper.run_once()
    (held,) = read_option_book(chain.vault, market, keeper.reader.assets)
    # Past expiry: new closes every day up to it (the feeds' heartbeat), implied vols pushed alongside.
    vol_feeds = [contract(chain.w3, "PushPriceFeed", opts.vol_feeds[a.token]) for a in chain.deployment.assets]
    day = chain.day
    while chain.table.close_timestamp(day) <= held.expiry + 3600:
        day += 1
        chain.push_day(day)
        for feed, vol in zip(vol_feeds, VOLS):
            chain.tx.transact(chain.owner, feed.functions.pushAnswer(vol_to_answer(vol)))
    rpc(chain.w3, "evm_mine", [])
    report = keeper.run_once()
    assert report.overlay is not None and report.overlay["settlements"] == 1, report.reason
    settled = [t for t in keeper.journal.transactions() if t.kind == "settle"]
    assert len(settled) == 1 and settled[0].status == "mined"
    assert held.series_id not in [h.series_id for h in read_option_book(chain.vault, market, keeper.reader.assets)]


def test_options_mode_refuses_a_market_that_is_not_the_vaults(chain: System) -> None:
    with pytest.raises(ConfigError, match="not the vault's option market"):
        chain.make_keeper(option_market_address="0x" + "11" * 20)
    # An unknown overlay setting is refused when the config is built (load_config reports it as a ConfigError).
    with pytest.raises(ValidationError, match="options.overlay.no_such_setting"):
        _options_keeper(chain, overlay={"no_such_setting": 1})
