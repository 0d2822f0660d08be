"""The demo's report: performance and risk of the vault against holding BTC and an equal-weight basket,
risk contributions ex ante (after each rebalance) and realised, trading costs. Text, JSON and PNG.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PERIODS_PER_YEAR = 365


@dataclass
class DemoRecord:
    """Daily observations of a replay and the keeper's ticks."""

    symbols: tuple[str, ...]
    dates: list[dt.date] = field(default_factory=list)
    prices: list[np.ndarray] = field(default_factory=list)
    navs: list[float] = field(default_factory=list)
    share_prices: list[float] = field(default_factory=list)
    weights: list[np.ndarray] = field(default_factory=list)
    flows_usd: list[float] = field(default_factory=list)
    ticks: list[dict[str, Any]] = field(default_factory=list)
    rebalances: int = 0

    def add_day(self, date: dt.date, prices: np.ndarray, nav: float, share_price: float,
                weights: np.ndarray, flows_usd: float) -> None:
        self.dates.append(date)
        self.prices.append(np.asarray(prices, dtype=np.float64))
        self.navs.append(nav)
        self.share_prices.append(share_price)
        self.weights.append(np.asarray(weights, dtype=np.float64))
        self.flows_usd.append(flows_usd)

    def add_tick(self, date: dt.date, report: Any, post_trade_rrc: list[float] | None) -> None:
        entry: dict[str, Any] = {"date": date.isoformat(), "status": report.status, "reason": report.reason}
        if report.status == "rebalanced":
            self.rebalances += 1
            ex = report.execution
            plan = report.plan
            value_out = sum(leg.oracle_amount_out for leg in ex.legs if leg.side == "sell")
            entry.update(
                tx_hash=ex.tx_hash,
                gas_used=ex.gas_used,
                legs=len(ex.legs),
                turnover_bps=plan.turnover_bps,
                nav_before=ex.nav_before,
                nav_after=ex.nav_after,
                target_weights=report.target_weights,
                rrc_target=report.relative_risk_contributions_target,
                rrc_post_trade=post_trade_rrc,
                ex_ante_volatility=report.ex_ante_volatility,
                leg_slippage_bps=[leg.realised_slippage_bps for leg in ex.legs],
                leg_values=[leg.oracle_amount_out if leg.side == "sell" else leg.amount_in for leg in ex.legs],
                sell_value=value_out,
                timings=report.timings,
            )
        self.ticks.append(entry)


def max_drawdown(series: np.ndarray) -> tuple[float, int, int]:
    """Largest peak-to-trough fall of ``series`` as a positive fraction, with peak and trough indices."""
    peaks = np.maximum.accumulate(series)
    dd = 1.0 - series / peaks
    trough = int(np.argmax(dd))
    peak = int(np.argmax(series[: trough + 1])) if trough > 0 else 0
    return float(dd[trough]), peak, trough


def annualised_volatility(series: np.ndarray) -> float:
    r = np.diff(series) / series[:-1]
    return float(np.std(r, ddof=1) * np.sqrt(PERIODS_PER_YEAR)) if r.size > 1 else float("nan")


def realised_risk_contributions(weights: np.ndarray, prices: np.ndarray) -> np.ndarray:
    """Ex-post relative risk contributions of the risky sleeve.

    With sleeve weights ``w[t-1]`` (normalised to sum 1) and asset returns ``r[t]``, asset i contributes
    ``c_i,t = w_i,t-1 r_i,t`` to the sleeve return ``r_p,t = Σ_i c_i,t``; its share of the variance is
    ``cov(c_i, r_p) / var(r_p)`` (shares sum to 1).
    """
    sleeve = weights / np.maximum(weights.sum(axis=1, keepdims=True), 1e-18)
    r = prices[1:] / prices[:-1] - 1.0
    c = sleeve[:-1] * r
    rp = c.sum(axis=1)
    var = np.var(rp, ddof=1)
    return np.array([np.cov(c[:, i], rp, ddof=1)[0, 1] / var for i in range(c.shape[1])])


def _summary(name: str, series: np.ndarray, dates: list[dt.date]) -> dict[str, Any]:
    dd, peak, trough = max_drawdown(series)
    years = max((dates[-1] - dates[0]).days, 1) / PERIODS_PER_YEAR
    return {
        "name": name,
        "total_return": float(series[-1] / series[0] - 1.0),
        "annualised_return": float((series[-1] / series[0]) ** (1 / years) - 1.0),
        "annualised_volatility": annualised_volatility(series),
        "max_drawdown": dd,
        "max_drawdown_peak": dates[peak].isoformat(),
        "max_drawdown_trough": dates[trough].isoformat(),
    }


def build_report(record: DemoRecord, out_dir: Path, replay_seconds: float, data_file: Path) -> dict[str, Any]:
    """Computes the metrics, writes ``report.json`` and ``report.png`` into ``out_dir``, returns the report
    (with its text rendering under ``"text"``)."""
    prices = np.array(record.prices)
    share = np.array(record.share_prices)
    weights = np.array(record.weights)
    n = len(record.symbols)
    btc_col = record.symbols.index("BTC") if "BTC" in record.symbols else 0
    btc = prices[:, btc_col] / prices[0, btc_col]
    r = prices[1:] / prices[:-1] - 1.0
    equal = np.concatenate([[1.0], np.cumprod(1.0 + r.mean(axis=1))])
    vault = share / share[0]

    rebal = [t for t in record.ticks if t["status"] == "rebalanced"]
    post = np.array([t["rrc_post_trade"] for t in rebal if t.get("rrc_post_trade")])
    target_rrc = np.array([t["rrc_target"] for t in rebal]) if rebal else np.zeros((0, n))
    budget = np.full(n, 1.0 / n)
    leg_slip = np.concatenate([t["leg_slippage_bps"] for t in rebal]) if rebal else np.zeros(0)
    leg_val = np.concatenate([t["leg_values"] for t in rebal]).astype(float) if rebal else np.zeros(0)
    turnover = np.array([t["turnover_bps"] for t in rebal]) if rebal else np.zeros(0)
    gas = np.array([t["gas_used"] for t in rebal]) if rebal else np.zeros(0)
    skipped: dict[str, int] = {}
    for t in record.ticks:
        if t["status"] != "rebalanced":
            key = (t["reason"] or "").split(":")[0].split(" ")[0] or t["status"]
            skipped[key] = skipped.get(key, 0) + 1
    realised = realised_risk_contributions(weights, prices) if len(prices) > 2 else np.full(n, np.nan)
    report: dict[str, Any] = {
        "data_file": data_file.name,
        "start": record.dates[0].isoformat(),
        "end": record.dates[-1].isoformat(),
        "days": len(record.dates),
        "assets": list(record.symbols),
        "final_nav_usd": record.navs[-1],
        "final_share_price_usd": record.share_prices[-1],
        "net_flows_usd": float(np.sum(record.flows_usd)),
        "strategies": [
            _summary("risk-parity vault (share price)", vault, record.dates),
            _summary("hold BTC", btc, record.dates),
            _summary("equal weight, rebalanced daily, no costs", equal, record.dates),
        ],
        "rebalances": len(rebal),
        "ticks": len(record.ticks),
        "skipped_ticks_by_reason": skipped,
        "turnover_total_pct_nav": float(turnover.sum() / 100.0),
        "turnover_mean_bps": float(turnover.mean()) if turnover.size else 0.0,
        "gas_total": int(gas.sum()),
        "gas_mean_per_rebalance": float(gas.mean()) if gas.size else 0.0,
        "avg_realised_slippage_bps_value_weighted": (
            float(np.sum(leg_slip * leg_val) / np.sum(leg_val)) if leg_val.size and leg_val.sum() > 0 else 0.0
        ),
        "ex_ante_rrc_target_max_abs_error": float(np.max(np.abs(target_rrc - budget))) if target_rrc.size else None,
        "ex_ante_rrc_post_trade_mean": post.mean(axis=0).tolist() if post.size else None,
        "ex_ante_rrc_post_trade_max_abs_deviation": float(np.max(np.abs(post - budget))) if post.size else None,
        "realised_rrc": dict(zip(record.symbols, realised.tolist())),
        "mean_weights": dict(zip(record.symbols, weights.mean(axis=0).tolist())),
        "replay_seconds": replay_seconds,
        "replayed_days_per_second": len(record.dates) / replay_seconds if replay_seconds > 0 else None,
        "series": {
            "dates": [d.isoformat() for d in record.dates],
            "nav_usd": record.navs,
            "share_price_usd": record.share_prices,
            "hold_btc": btc.tolist(),
            "equal_weight": equal.tolist(),
            "weights": weights.tolist(),
        },
        "rebalance_log": rebal,
    }
    report["text"] = _render(report)
    (out_dir / "report.json").write_text(json.dumps(report, indent=1, default=str))
    _chart(record, report, out_dir / "report.png", vault, btc, equal, weights, post)
    report["files"] = [str(out_dir / "report.json"), str(out_dir / "report.png"), str(out_dir / "journal.sqlite")]
    return report


def _render(rep: dict[str, Any]) -> str:
    lines = [
        "",
        f"Risk-parity vault replay  {rep['start']} → {rep['end']}  ({rep['days']} days, {len(rep['assets'])} assets, {rep['data_file']})",
        f"final NAV ${rep['final_nav_usd']:,.0f}   share price ${rep['final_share_price_usd']:.4f}   net deposits ${rep['net_flows_usd']:,.0f}",
        "",
        f"{'strategy':44s} {'return':>9s} {'ann.vol':>9s} {'max DD':>9s}  drawdown window",
    ]
    for s in rep["strategies"]:
        lines.append(
            f"{s['name']:44s} {s['total_return']:9.1%} {s['annualised_volatility']:9.1%} {s['max_drawdown']:9.1%}"
            f"  {s['max_drawdown_peak']} → {s['max_drawdown_trough']}"
        )
    lines += [
        "",
        f"rebalances {rep['rebalances']} of {rep['ticks']} ticks; skipped: {rep['skipped_ticks_by_reason']}",
        f"turnover {rep['turnover_total_pct_nav']:.1f}% of NAV in total, {rep['turnover_mean_bps']:.0f} bps per rebalance",
        f"gas {rep['gas_total']:,} in total, {rep['gas_mean_per_rebalance']:,.0f} per rebalance",
        f"average realised slippage vs oracle {rep['avg_realised_slippage_bps_value_weighted']:.2f} bps (value-weighted, pool fee included)",
    ]
    if rep["ex_ante_rrc_target_max_abs_error"] is not None:
        lines.append(f"ex-ante risk contributions of the targets: max |RRC − 1/n| = {rep['ex_ante_rrc_target_max_abs_error']:.1e}")
    if rep["ex_ante_rrc_post_trade_max_abs_deviation"] is not None:
        lines.append(
            f"ex-ante risk contributions of the holdings after each rebalance: max |RRC − 1/n| = "
            f"{rep['ex_ante_rrc_post_trade_max_abs_deviation']:.4f}"
        )
        lines.append("  mean after rebalance: " + "  ".join(
            f"{s} {v:.3f}" for s, v in zip(rep["assets"], rep["ex_ante_rrc_post_trade_mean"])))
    lines.append("realised risk contributions:  " + "  ".join(f"{s} {v:.3f}" for s, v in rep["realised_rrc"].items()))
    if rep["replayed_days_per_second"]:
        lines.append(f"replay speed {rep['replayed_days_per_second']:.2f} days/s ({rep['replay_seconds']:.0f} s)")
    return "\n".join(lines)


def _chart(record: DemoRecord, rep: dict[str, Any], path: Path, vault: np.ndarray, btc: np.ndarray,
           equal: np.ndarray, weights: np.ndarray, post: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dates = record.dates
    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    ax = axes[0, 0]
    ax.plot(dates, vault, label="vault share price", lw=2)
    ax.plot(dates, btc, label="hold BTC", alpha=0.8)
    ax.plot(dates, equal, label="equal weight (daily, no costs)", alpha=0.8)
    ax.set_title("Value of 1 USD")
    ax.legend()
    ax.grid(alpha=0.3)
    ax = axes[0, 1]
    for series, label in ((vault, "vault"), (btc, "BTC"), (equal, "equal weight")):
        ax.plot(dates, series / np.maximum.accumulate(series) - 1.0, label=label)
    ax.set_title("Drawdown")
    ax.legend()
    ax.grid(alpha=0.3)
    ax = axes[1, 0]
    ax.stackplot(dates, weights.T, labels=record.symbols)
    ax.set_title("Weights (fraction of NAV; the rest is the base asset)")
    ax.legend(loc="lower left", fontsize=7, ncol=3)
    ax = axes[1, 1]
    if post.size:
        rdates = [dt.date.fromisoformat(t["date"]) for t in rep["rebalance_log"] if t.get("rrc_post_trade")]
        for i, s in enumerate(record.symbols):
            ax.plot(rdates, post[:, i], marker=".", lw=0.8, label=s)
        ax.axhline(1.0 / len(record.symbols), color="k", ls="--", lw=1)
    ax.set_title("Ex-ante relative risk contributions after each rebalance")
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
