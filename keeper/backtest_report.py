"""The replay's outputs: the side-by-side table, ``backtest.json``, the decisions' journal and the charts (NAV,
drawdown, weights, risk contributions)."""

from __future__ import annotations
import datetime as dt
import json
import math
from pathlib import Path
from typing import Any, Sequence
import numpy as np
import numpy.typing as npt
from keeper.backtest import DecisionRecord
from keeper.backtest_metrics import StrategyResult

__all__ = [
    "format_table",
    "write_outputs",
]

FloatArray = npt.NDArray[np.float64]


# --------------------------------------------------------------------------- #
# Output
# --------------------------------------------------------------------------- #
def _fmt(x: Any, pct: bool = False, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x * 100:.1f}%" if pct else f"{x:.{digits}f}"


def format_table(results: Sequence[StrategyResult]) -> str:
    """A fixed-width text table of the main metrics, one row per strategy.

    Risk columns describe the final portfolio: ``ES99 1d`` its historical 99 % one-day Expected
    Shortfall and ``worst stress`` its largest stress-test loss (fractions of NAV). ``gate a/s/iv/h``
    counts the conditioning gate's accept / shrink / inverse-volatility / hold decisions over the
    ticks, ``fallbk`` the allocator's fallbacks and ``ES bind`` the ticks where the ES limit scaled the
    target down. A strategy that wanted risk assets but never held any (every trade refused: the slippage
    check of shallow pools, the cost gate, ...) gets no figures, only ``could not trade:`` and the reason: its
    flat NAV would read as a 0.0 % return and drawdown that it did not choose.
    """
    head = (f"{'strategy':<18}{'ann.ret':>9}{'ann.vol':>9}{'Sharpe':>8}{'Sortino':>9}{'maxDD':>8}"
            f"{'  DD peak -> trough':<26}{'Calmar':>8}{'turn/yr':>9}{'cost bps/yr':>12}{'RRC disp':>10}"
            f"{'volTE':>8}{'rebal':>7}{'ES99 1d':>9}{'worst stress':>26}{'  gate a/s/iv/h':<22}{'fallbk':>7}"
            f"{'ES bind':>8}")
    lines = [head, "-" * len(head)]
    for res in results:
        m = res.metrics
        if m.get("could_not_trade"):
            lines.append(f"{res.name[:17]:<18}  could not trade: {m['could_not_trade'][:len(head) - 40]}")
            continue
        g = m.get("gate_counts") or {}
        gates = "/".join(str(g.get(k, 0)) for k in ("accept", "shrink", "inverse_volatility", "hold"))
        worst = (f"{m['worst_stress'][:17]} {_fmt(m['worst_stress_loss'], True)}"
                 if m.get("worst_stress") else "n/a")
        lines.append(
            f"{res.name[:17]:<18}{_fmt(m['annualised_return'], True):>9}{_fmt(m['annualised_volatility'], True):>9}"
            f"{_fmt(m['sharpe']):>8}{_fmt(m['sortino']):>9}{_fmt(m['max_drawdown'], True):>8}"
            f"  {m['max_drawdown_peak']} -> {m['max_drawdown_trough']:<10}{_fmt(m['calmar']):>8}"
            f"{_fmt(m.get('turnover_per_year')):>9}{_fmt(m.get('cost_drag_bps_per_year'), digits=1):>12}"
            f"{_fmt(m.get('rrc_dispersion'), digits=3):>10}{_fmt(m.get('vol_target_tracking_error'), True):>8}"
            f"{m['rebalances']:>7}{_fmt(m.get('final_es_99_1d'), True):>9}{worst:>26}  {gates:<20}"
            f"{m.get('allocation_fallbacks', 0):>7}{m.get('es_limit_binding', 0):>8}"
        )
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (dt.date,)):
        return value.isoformat()
    if hasattr(value, "__dataclass_fields__"):
        return {k: _jsonable(getattr(value, k)) for k in value.__dataclass_fields__ if k != "estimator"}
    return value


def write_outputs(run: dict[str, Any], out_dir: Path, data_file: Path | None = None,
                  journal: bool = True) -> dict[str, Any]:
    """Writes ``backtest.json``, ``backtest.txt``, four PNG charts and (optionally) the decisions to a
    SQLite journal (:class:`keeper.journal.Journal`) in ``out_dir``. Returns the JSON document."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[StrategyResult] = run["results"]
    symbols = run["symbols"]
    table = format_table(results)
    files = []
    doc = {
        "data_file": str(data_file) if data_file else None,
        "symbols": list(symbols),
        "days": run["days"],
        "calendar_gaps": run["calendar_gaps"],
        "seconds": run["seconds"],
        "speed_asset_days_per_second": run["speed_asset_days_per_second"],
        "config": _jsonable(run["config"]),
        "strategies": [
            {
                "name": r.name,
                "metrics": _jsonable(r.metrics),
                "decisions": [_jsonable(d.as_dict()) for d in r.decisions if d.reason != "no trigger fired"],
                "ticks_without_trigger": sum(1 for d in r.decisions if d.reason == "no trigger fired"),
            }
            for r in results
        ],
        "series": {
            "dates": [d.isoformat() for d in results[0].dates],
            "nav_usd": {r.name: r.nav.tolist() for r in results},
            "weights": {r.name: {s: r.weights[:, i].round(6).tolist() for i, s in enumerate(symbols)
                                 if np.any(r.weights[:, i] > 0)} for r in results},
        },
        "table": table,
    }
    (out_dir / "backtest.json").write_text(json.dumps(_jsonable(doc), indent=1))
    (out_dir / "backtest.txt").write_text(table + "\n")
    files += [str(out_dir / "backtest.json"), str(out_dir / "backtest.txt")]
    files += _charts(results, symbols, out_dir)
    if journal:
        files.append(_journal(results, out_dir / "backtest-journal.sqlite"))
    doc["files"] = files
    return doc


def _journal_policy(record: DecisionRecord) -> dict[str, Any] | None:
    """The policy's record for the journal: in full when a trigger fired or the policy held, else the
    gate's and allocator's verdicts only (most ticks; the full record is recomputable from the data)."""
    p = record.policy
    if p is None:
        return None
    if record.reason != "no trigger fired":
        return p.as_dict(covariance=False)
    return {"action": p.action, "gate_action": p.gate_action, "allocation_method": p.allocation_method,
            "fallback_reasons": list(p.fallback_reasons), "es_scale": p.es_scale,
            "ex_ante_volatility": _jsonable(p.ex_ante_volatility)}


def _journal(results: Sequence[StrategyResult], path: Path) -> str:
    from keeper.journal import Journal
    from keeper.journal_records import BacktestTickRecord

    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    j = Journal(path, durable=False)  # a backtest's output file, rebuilt on every run: no fsync per row
    try:
        for r in results:
            for d in r.decisions:
                j.record_backtest_tick(BacktestTickRecord(
                    status=d.status, reason=d.reason, strategy=r.name, date=d.date.isoformat(),
                    trigger=d.decision.as_dict() if d.decision else None, legs=d.legs,
                    turnover_bps=d.turnover_bps, cost=d.cost.as_dict() if d.cost else None,
                    target_weights=d.target_weights, policy=_journal_policy(d)))
    finally:
        j.close()
    return str(path)


def _charts(results: Sequence[StrategyResult], symbols: Sequence[str], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dates = np.array(results[0].dates, dtype="datetime64[D]")
    # Stacked areas of thousands of days gain nothing visible over one point in ``step``.
    step = max(1, len(dates) // 800)
    files = []
    fig, ax = plt.subplots(figsize=(11, 5))
    for r in results:
        ax.plot(dates, r.nav / r.nav[0], label=r.name, lw=1.2)
    ax.set_yscale("log")
    ax.set_title("NAV (start = 1, log scale), net of fees, price impact and gas")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    files.append(_save(fig, out_dir / "backtest_nav.png"))

    fig, ax = plt.subplots(figsize=(11, 4))
    for r in results:
        ax.plot(dates, r.nav / np.maximum.accumulate(r.nav) - 1.0, label=r.name, lw=1)
    ax.set_title("Drawdown")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    files.append(_save(fig, out_dir / "backtest_drawdown.png"))

    shown = [r for r in results if np.count_nonzero(np.any(r.weights > 0, axis=0)) > 1][:4] or list(results[:1])
    for attr, title, name in (("weights", "Weights (NAV fractions; white = base asset)", "backtest_weights.png"),
                              ("rrc", "Ex-ante relative risk contributions of the holdings", "backtest_rrc.png")):
        fig, axes = plt.subplots(len(shown), 1, figsize=(11, 2.6 * len(shown)), sharex=True, squeeze=False)
        for ax, r in zip(axes[:, 0], shown):
            data = getattr(r, attr)
            cols = [i for i in range(len(symbols)) if np.any(data[:, i] > 0)]
            if not cols:  # held nothing but the base asset
                ax.set_ylabel(r.name, fontsize=8)
                continue
            ax.stackplot(dates[::step], *(data[::step, i] for i in cols), labels=[symbols[i] for i in cols])
            ax.set_ylim(0, 1)
            ax.set_ylabel(r.name, fontsize=8)
            ax.legend(fontsize=6, loc="upper left", ncol=len(cols))
        axes[0, 0].set_title(title)
        files.append(_save(fig, out_dir / name))
    return files


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return str(path)
