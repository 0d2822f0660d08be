"""The replay harness's batched daily work (`FeedPusher`, `BatchArbitrageur`): one transaction leaves the feeds
and the pools exactly where one transaction per feed and per pool did, and only the harness's owner drives it."""

from __future__ import annotations

import pytest

from keeper.chain import AnvilProcess, DevSender, connect, contract, dev_accounts, rpc
from keeper.deployment import Arbitrageur, BatchArbitrageur, FeedPusher, deploy_system, price_to_answer, sqrt_price_x96
from keeper.errors import TransactionFailedError

SYMBOLS = ("BTC", "ETH", "SOL")
START_PRICES = (46_000.0, 3_700.0, 170.0)
#: A day with moves both ways (BTC down, ETH up, SOL down 30 %).
NEXT_PRICES = (43_500.0, 3_950.0, 119.0)
GENESIS = 1_640_995_200


@pytest.fixture(scope="module")
def system():
    with AnvilProcess(timestamp=GENESIS) as node:
        w3 = connect(node.rpc_url)
        owner, keeper, guardian, arb, mallory = dev_accounts()[:5]
        deployment = deploy_system(w3, owner, keeper, guardian, SYMBOLS, START_PRICES, pool_depth_usd=5_000_000)
        yield w3, deployment, owner, arb, mallory


def _pool_state(w3, deployment) -> list[tuple]:
    out = []
    for asset in deployment.assets:
        pool = contract(w3, "UniswapV3Pool", asset.pool)
        token, base = (contract(w3, "TestToken", a) for a in (asset.token, deployment.base_asset))
        out.append((pool.functions.slot0().call()[0], pool.functions.liquidity().call(),
                    token.functions.balanceOf(asset.pool).call(), base.functions.balanceOf(asset.pool).call()))
    return out


def test_one_alignment_transaction_leaves_every_pool_where_one_per_pool_did(system, reverted) -> None:
    w3, deployment, owner, arb, _ = system
    answers = [price_to_answer(p) for p in NEXT_PRICES]
    sid = rpc(w3, "evm_snapshot", [])
    per_pool = Arbitrageur(w3, deployment, arb, owner)
    for asset, answer in zip(deployment.assets, answers):
        per_pool.align(asset.token, answer)
    expected = _pool_state(w3, deployment)
    rpc(w3, "evm_revert", [sid])

    batch = BatchArbitrageur(w3, deployment, owner, [price_to_answer(p) for p in START_PRICES])
    block_before = w3.eth.block_number
    batch.align_all(answers)
    assert w3.eth.block_number == block_before + 1  # one transaction, one block
    got = _pool_state(w3, deployment)
    assert got == expected  # price, liquidity and both reserves to the unit
    for asset, answer, (sqrt_price, *_rest) in zip(deployment.assets, answers, got):
        assert sqrt_price == sqrt_price_x96(answer, int(asset.token, 16) < int(deployment.base_asset, 16))
    batch.align_all(answers)  # already there: nothing to trade
    assert _pool_state(w3, deployment) == expected
    targets = [(a.pool, a.token, 1) for a in deployment.assets]
    with pytest.raises(TransactionFailedError, match="OwnableUnauthorizedAccount"):
        DevSender(w3).transact(arb, batch.contract.functions.align(targets), gas=2_000_000)


@pytest.fixture
def reverted(system):
    """Undoes a test's changes to the module's chain (feed ownership moves to a pusher)."""
    sid = rpc(system[0], "evm_snapshot", [])
    yield
    rpc(system[0], "evm_revert", [sid])


def test_one_push_transaction_opens_a_round_on_every_feed_and_only_its_owner_pushes(system, reverted) -> None:
    w3, deployment, owner, _, mallory = system
    pusher = FeedPusher(w3, owner, [a.feed for a in deployment.assets])
    feeds = [contract(w3, "PushPriceFeed", a.feed) for a in deployment.assets]
    before = [f.functions.latestRoundData().call()[0] for f in feeds]
    answers = [price_to_answer(p) for p in NEXT_PRICES]
    rpc(w3, "evm_setNextBlockTimestamp", [GENESIS + 86_400])
    pusher.push(answers)
    for feed, answer, round_before in zip(feeds, answers, before):
        round_id, got, _, updated_at, _ = feed.functions.latestRoundData().call()
        assert (round_id, got, updated_at) == (round_before + 1, answer, GENESIS + 86_400)
    tx = DevSender(w3)
    # The feeds now belong to the pusher, and the pusher to its owner: nobody else moves a price.
    with pytest.raises(TransactionFailedError, match="OwnableUnauthorizedAccount"):
        tx.transact(mallory, pusher.contract.functions.push(pusher.feeds, answers), gas=1_000_000)
    with pytest.raises(TransactionFailedError, match="OwnableUnauthorizedAccount"):
        tx.transact(owner, feeds[0].functions.pushAnswer(answers[0]), gas=200_000)
    with pytest.raises(TransactionFailedError, match=r"LengthMismatch\(3, 2\)"):
        tx.transact(owner, pusher.contract.functions.push(pusher.feeds, answers[:2]), gas=1_000_000)


def test_one_transaction_pushes_every_feed_then_aligns_every_pool(system, reverted) -> None:
    w3, deployment, owner, arb, mallory = system
    answers = [price_to_answer(p) for p in NEXT_PRICES]
    sid = rpc(w3, "evm_snapshot", [])
    pusher = FeedPusher(w3, owner, [a.feed for a in deployment.assets])
    batch = BatchArbitrageur(w3, deployment, owner, [price_to_answer(p) for p in START_PRICES])
    pusher.push(answers)
    batch.align_all(answers)
    expected = _pool_state(w3, deployment)
    rpc(w3, "evm_revert", [sid])

    pusher = FeedPusher(w3, owner, [a.feed for a in deployment.assets])
    batch = BatchArbitrageur(w3, deployment, owner, [price_to_answer(p) for p in START_PRICES])
    batch.take_over(pusher)
    block_before = w3.eth.block_number
    batch.push_and_align(answers, answers)
    assert w3.eth.block_number == block_before + 1
    assert _pool_state(w3, deployment) == expected
    for asset, answer in zip(deployment.assets, answers):
        assert contract(w3, "PushPriceFeed", asset.feed).functions.latestRoundData().call()[1] == answer
    with pytest.raises(TransactionFailedError, match="OwnableUnauthorizedAccount"):
        DevSender(w3).transact(mallory, pusher.contract.functions.push(pusher.feeds, answers), gas=1_000_000)
