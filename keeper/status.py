"""``keeper status``: what the vault holds and what the keeper has been doing, read-only.

- the vault's state: ``totalAssets``, ``totalSupply``, share price, rebalance epoch, pause flag, limits;
- holdings: balance, oracle price, value, weight (fraction of NAV), and each asset's relative risk
  contribution under the same covariance the tick's decision policy (:mod:`keeper.policy`) accepts from
  the oracle history, next to its risk budget;
- the policy's current decision: target weights (fractions of NAV), cash weight, ex-ante volatility
  and, when the config sets an ES limit, the target's Expected Shortfall before and after the limit;
- the last ticks of the journal (opened read-only; a missing journal is reported, not created);
- pending transactions: the journal's ``transactions`` table when it has one (rows not yet final),
  and the gap between the keeper account's ``pending`` and ``latest`` nonces on the node.

Also :func:`journal_summary`, the daily report's arithmetic over journal rows.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from web3 import Web3

from keeper.chain import connect_failover
from keeper.config import KeeperConfig
from keeper.errors import KeeperError
from keeper.journal import Journal
from keeper.oracle import ChainReader
from keeper.planner import value_holdings
from keeper.policy_config import PolicyConfig
from keeper.policy import decide_targets
from keeper.returns import simple_returns
from keeper.risk_contributions import portfolio_volatility, relative_risk_contributions

def utc_iso(unix_seconds: float | int | None) -> str | None:
    """Unix seconds as UTC ISO 8601 with a ``Z`` (``2026-12-07T03:28:34Z``); ``None`` stays ``None``."""
    if unix_seconds is None:
        return None
    stamp = dt.datetime.fromtimestamp(float(unix_seconds), tz=dt.timezone.utc)
    return stamp.isoformat(timespec="seconds").replace("+00:00", "Z")


def token_units(amount: int, decimals: int) -> str:
    """Base units as an exact decimal string in token units (``1234500, 6`` → ``"1.2345"``)."""
    sign = "-" if amount < 0 else ""
    whole, frac = divmod(abs(int(amount)), 10**decimals)
    text = f"{whole:,}" + (f".{frac:0{decimals}d}".rstrip("0") if decimals and frac else "")
    return sign + text


#: States of the write-ahead ``transactions`` table (:mod:`keeper.journal`) that are not final yet.
PENDING_TX_STATES = ("intended", "sent")


def read_journal(path: Path | str, last_ticks: int = 10) -> dict[str, Any]:
    """The last ``last_ticks`` tick rows (newest last) and the pending transactions of a journal file.

    Opens the file read-only (:meth:`keeper.journal.Journal.read_only`) and never creates it. Returns
    ``{"ticks": [...], "pending_transactions": [...] or None, "note": str or None}``;
    ``pending_transactions`` is ``None`` when the journal predates the transaction log.
    """
    path = Path(path)
    if str(path) == ":memory:" or not path.exists():
        return {"ticks": [], "pending_transactions": None, "note": f"no journal at {path}"}
    journal = Journal.read_only(path)
    try:
        ticks: list[dict[str, Any]] = []
        if journal.has_table("ticks"):
            for tick in journal.ticks(limit=int(last_ticks)):
                detail = tick.pop("detail")
                tick["reason_code"] = detail.get("reason_code")
                tick["legs"] = len(detail.get("legs") or [])
                ticks.append(tick)
        pending = None
        if journal.has_table("transactions"):
            pending = [
                {key: getattr(tx, key) for key in _PENDING_TX_FIELDS} for tx in journal.transactions(live=True)
            ]
        return {"ticks": ticks, "pending_transactions": pending, "note": None}
    finally:
        journal.close()


#: The fields of a pending transaction that ``keeper status`` shows.
_PENDING_TX_FIELDS = ("id", "kind", "status", "sender", "nonce", "hash", "epoch", "deadline", "max_fee_per_gas",
                      "max_priority_fee_per_gas", "created_at", "sent_at")


def collect_status(
    config: KeeperConfig,
    w3: Web3 | None = None,
    *,
    last_ticks: int = 10,
    keeper_address: str | None = None,
    preflight: bool = False,
) -> dict[str, Any]:
    """Everything ``keeper status`` shows, as one JSON-able dict.

    Amounts: raw integers (smallest units) next to human floats; NAV and values in base-asset units
    (``*_base``) and whole units (``*_usd``, the base asset counted at 1 USD); weights are fractions of
    NAV; risk contributions relative (sum to 1 over the risk assets); volatility annualised.

    Times are UTC ISO 8601 (``*_utc``) beside the Unix seconds; amounts in token units (``*_tokens``, exact
    decimal strings) beside the base units.

    With ``preflight`` the start-up checks (:mod:`keeper.preflight`) run first; the keeper-role check only
    when an address is known (``keeper_address`` or the configured key).

    Raises
    ------
    KeeperError
        The chain cannot be read (RPC down, not a vault at the address); :class:`keeper.preflight.PreflightError`
        when ``preflight`` and a check failed.
    """
    w3 = w3 or connect_failover(config)
    address = keeper_address
    if address is None:
        try:
            from eth_account import Account

            address = Account.from_key(config.private_key()).address
        except KeeperError:
            address = None
    if preflight:
        from keeper.preflight import check_or_raise

        check_or_raise(w3, config.chain, address)
    reader = ChainReader(w3, config.chain.vault_address)
    vault = reader.vault.functions
    snapshot = reader.snapshot(10**12)  # status shows stale prices instead of refusing; see price ages
    state = reader.vault_state(snapshot.block_number)
    block = snapshot.block_number
    base_scale = 10**state.base_decimals
    share_decimals = vault.decimals().call(block_identifier=block)
    share_price = vault.convertToAssets(10**share_decimals).call(block_identifier=block) / base_scale
    holdings = value_holdings(snapshot, state, reader.assets)
    weights = holdings.weights
    symbols = reader.symbols
    if config.policy.risk_budget is not None:
        budget = np.array([config.policy.risk_budget.get(s, np.nan) for s in symbols])
    else:
        budget = np.full(len(symbols), 1.0 / len(symbols))

    rrc: list[float] | None = None
    volatility: float | None = None
    risk_note: str | None = None
    policy: dict[str, Any] | None = None
    try:
        history = reader.history(snapshot, config.policy.lookback_bars, config.policy.bar_seconds)
        decision = decide_targets(simple_returns(history.prices_usd), symbols, current_weights=weights,
                                  config=PolicyConfig.from_keeper_config(config), nav_base_units=state.total_assets)
        policy = {
            "action": decision.action,
            "reason": decision.reason,
            "target_weights": decision.target_weights.tolist(),
            "cash_weight": decision.cash_weight,
            "ex_ante_volatility": decision.ex_ante_volatility if np.isfinite(decision.ex_ante_volatility) else None,
            "es_limit": decision.es_limit,
            "es_before": decision.es_before,
            "es_after": decision.es_after,
        }
        if decision.covariance is None:
            risk_note = f"risk contributions unavailable: the policy holds ({decision.gate_reason})"
        elif weights.sum() > 0:
            rrc = relative_risk_contributions(weights, decision.covariance).tolist()
            volatility = portfolio_volatility(weights, decision.covariance)
        else:
            risk_note = "the vault holds no risk assets"
    except (KeeperError, ValueError) as exc:  # ValueError: pydantic's, for a policy field out of range
        risk_note = f"risk contributions unavailable: {type(exc).__name__}: {exc}"

    assets = []
    for i, info in enumerate(reader.assets):
        assets.append({
            "symbol": info.symbol,
            "token": info.token,
            "balance": state.balances[i],
            "balance_tokens": state.balances[i] / 10**info.token_decimals,
            "price_usd": float(snapshot.prices_usd[i]),
            "price_age_seconds": int(snapshot.block_timestamp - snapshot.updated_at[i]),
            "price_updated_at_utc": utc_iso(int(snapshot.updated_at[i])),
            "token_decimals": info.token_decimals,
            "value_base": holdings.values[i],
            "value_usd": holdings.values[i] / base_scale,
            "weight": float(weights[i]),
            "risk_contribution": None if rrc is None else rrc[i],
            "risk_budget": float(budget[i]),
        })

    keeper: dict[str, Any] | None = None
    if address is not None:
        latest = w3.eth.get_transaction_count(address, "latest")
        pending = w3.eth.get_transaction_count(address, "pending")
        balance_wei = int(w3.eth.get_balance(address))
        keeper = {"address": address, "balance_wei": balance_wei, "balance_eth": token_units(balance_wei, 18),
                  "nonce_latest": latest, "nonce_pending": pending, "transactions_in_mempool": pending - latest}

    journal = read_journal(config.operations.journal_path, last_ticks)
    for tick in journal["ticks"]:
        tick["recorded_at_utc"] = utc_iso(tick.get("recorded_at"))
        tick["block_time_utc"] = utc_iso(tick.get("block_timestamp"))
    for row in journal["pending_transactions"] or []:
        row["created_at_utc"], row["sent_at_utc"] = utc_iso(row.get("created_at")), utc_iso(row.get("sent_at"))
    return {
        "vault": config.chain.vault_address,
        "block_number": block,
        "block_timestamp": snapshot.block_timestamp,
        "block_time_utc": utc_iso(snapshot.block_timestamp),
        "total_assets": state.total_assets,
        "total_assets_tokens": token_units(state.total_assets, state.base_decimals),
        "total_assets_usd": state.total_assets / base_scale,
        "total_supply": state.total_supply,
        "total_supply_tokens": token_units(state.total_supply, share_decimals),
        "share_decimals": share_decimals,
        "share_price_usd": share_price,
        "rebalance_epoch": state.rebalance_epoch,
        "paused": state.paused,
        "limits": {"max_slippage_bps": state.max_slippage_bps, "max_turnover_bps": state.max_turnover_bps,
                   "max_nav_loss_bps": state.max_nav_loss_bps},
        "base_asset": state.base_asset,
        "base_balance": state.base_balance,
        "base_decimals": state.base_decimals,
        "cash_weight": state.base_balance / holdings.nav if holdings.nav else 0.0,
        "holdings": assets,
        "ex_ante_volatility": volatility,
        "policy": policy,
        "risk_note": risk_note,
        "keeper": keeper,
        "last_ticks": journal["ticks"],
        "pending_transactions": journal["pending_transactions"],
        "journal_note": journal["note"],
    }


def format_status(status: dict[str, Any]) -> str:
    """A plain-text rendering of :func:`collect_status`'s dict."""
    lines = [
        f"vault {status['vault']} at block {status['block_number']} ({utc_iso(status['block_timestamp'])}, "
        f"unix {status['block_timestamp']})",
        f"  totalAssets {token_units(status['total_assets'], status['base_decimals'])} (base asset; "
        f"{status['total_assets']} base units), totalSupply {token_units(status['total_supply'], status['share_decimals'])} "
        f"shares ({status['total_supply']} base units, {status['share_decimals']} decimals), "
        f"share price {status['share_price_usd']:.6f} USD",
        f"  epoch {status['rebalance_epoch']}, paused {status['paused']}, limits: slippage "
        f"{status['limits']['max_slippage_bps']} bps, turnover {status['limits']['max_turnover_bps']} bps, "
        f"NAV loss {status['limits']['max_nav_loss_bps']} bps",
        "",
        f"  {'asset':<6} {'balance (tokens)':>24} {'price USD':>14} {'value USD':>16} {'weight':>8} {'RC':>8} "
        f"{'budget':>8}  price updated (UTC)",
    ]
    for h in status["holdings"]:
        rc = "-" if h["risk_contribution"] is None else f"{h['risk_contribution']:.4f}"
        balance = token_units(h["balance"], h["token_decimals"]) if "token_decimals" in h else f"{h['balance_tokens']:.8f}"
        lines.append(f"  {h['symbol']:<6} {balance:>24} {h['price_usd']:>14,.4f} {h['value_usd']:>16,.2f} "
                     f"{h['weight']:>8.4f} {rc:>8} {h['risk_budget']:>8.4f}  {h.get('price_updated_at_utc') or '-'}")
    lines.append(f"  {'cash':<6} {token_units(status['base_balance'], status['base_decimals']):>24} {'':>14} "
                 f"{status['base_balance'] / 10**status['base_decimals']:>16,.2f} {status['cash_weight']:>8.4f}")
    if status["ex_ante_volatility"] is not None:
        lines.append(f"  ex-ante volatility of the holdings {status['ex_ante_volatility']:.2%} (annualised)")
    policy = status.get("policy")
    if policy is not None:
        targets = ", ".join(f"{h['symbol']} {w:.4f}" for h, w in zip(status["holdings"], policy["target_weights"]))
        lines.append(f"  policy {policy['action']}: target {targets}, cash {policy['cash_weight']:.4f}"
                     + (f", ex-ante volatility {policy['ex_ante_volatility']:.2%}"
                        if policy["ex_ante_volatility"] is not None else ""))
        if policy["es_limit"] is not None and policy["es_after"] is not None:
            lines.append(f"  ES {policy['es_after']:.2%} of NAV (limit {policy['es_limit']:.2%}, "
                         f"before the limit {policy['es_before']:.2%})")
    if status["risk_note"]:
        lines.append(f"  {status['risk_note']}")
    keeper = status["keeper"]
    lines.append("")
    if keeper:
        lines.append(f"keeper {keeper['address']}: balance {token_units(keeper['balance_wei'], 18)} ETH "
                     f"({keeper['balance_wei']} wei), nonce "
                     f"{keeper['nonce_latest']}, {keeper['transactions_in_mempool']} transaction(s) in the mempool")
    else:
        lines.append("keeper address unknown (no key configured; pass --address)")
    lines.append("")
    lines.append("last ticks:" if status["last_ticks"] else f"last ticks: none ({status['journal_note'] or 'empty journal'})")
    for t in status["last_ticks"]:
        lines.append(f"  #{t['id']} {utc_iso(t.get('recorded_at')) or '-'} block {t['block_number']} epoch {t['epoch']} "
                     f"{t['status']:<10} "
                     f"{(t['reason'] or '')[:100]}{' tx ' + t['tx_hash'] if t.get('tx_hash') else ''}")
    pending = status["pending_transactions"]
    if pending is None:
        lines.append("pending transactions: the journal keeps no transaction table")
    else:
        lines.append(f"pending transactions: {len(pending)}")
        for row in pending:
            lines.append(f"  {row}")
    return "\n".join(lines)


def journal_summary(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Counts and totals over journal tick rows (as :meth:`Journal.ticks` returns them).

    Returns ticks by status, skipped ticks by reason code (the detail's ``reason_code``, else the
    reason's first word), rebalances, gas used (gas units), fees paid (wei = Σ gasUsed × effectiveGasPrice)
    and the latest NAV after a rebalance (base units).
    """
    rows = list(rows)
    statuses = Counter(r["status"] for r in rows)
    reasons: Counter[str] = Counter()
    gas_used = fees_wei = 0
    last_nav = None
    for r in rows:
        detail = r.get("detail") or {}
        if r["status"] == "skipped":
            code = detail.get("reason_code") if isinstance(detail, dict) else None
            reasons[code or (r.get("reason") or "").split(":")[0].split(" ")[0] or "unknown"] += 1
        if r["status"] == "rebalanced":
            gas_used += int(r.get("gas_used") or 0)
            fees_wei += int(r.get("gas_used") or 0) * int(r.get("effective_gas_price") or 0)
            if r.get("nav_after") is not None:
                last_nav = int(r["nav_after"])
    return {
        "ticks": len(rows),
        "by_status": dict(statuses),
        "skipped_by_reason": dict(reasons),
        "rebalances": statuses.get("rebalanced", 0),
        "gas_used": gas_used,
        "fees_wei": fees_wei,
        "last_nav_after": last_nav,
    }


__all__ = ["PENDING_TX_STATES", "collect_status", "format_status", "journal_summary", "read_journal", "token_units",
           "utc_iso"]
