"""Units and scales of the keeper, each defined once.

Every module imports these instead of writing the numbers; a quantity's unit is also in its name
(``*_bps``, ``*_seconds``, ``*_wad``, ``*_wei``, ``*_usd``).

- Basis points: ``x_bps / BPS`` is the fraction (1 bp = 0.01 %).
- Time: Unix seconds; a year is 365 calendar days, because crypto trades every day. Annualised
  volatilities of daily returns use ``sqrt(DAYS_PER_YEAR)``; option year fractions are
  ``seconds / SECONDS_PER_YEAR``. For bars of another length, :func:`periods_per_year`.
- Fixed point: on-chain prices, option amounts and Black-Scholes values are 1e18-scaled (``WAD``),
  as in the contracts (PRBMath UD60x18); wei per ether is the same number (``WEI_PER_ETH``).
"""

from __future__ import annotations

#: Basis points per unit: ``fraction = bps / BPS``.
BPS = 10_000

#: Seconds per calendar day.
SECONDS_PER_DAY = 86_400

#: Calendar days per year (crypto trades every day): the annualisation factor of daily returns.
DAYS_PER_YEAR = 365

#: Seconds per 365-day year: option time to expiry in years is ``seconds / SECONDS_PER_YEAR``.
SECONDS_PER_YEAR = DAYS_PER_YEAR * SECONDS_PER_DAY

#: 1e18 fixed point (the contracts' scale for prices, option amounts and values).
WAD = 10**18

#: Wei per ether.
WEI_PER_ETH = 10**18


def periods_per_year(bar_seconds: float) -> float:
    """Bars per 365-day year for bars of ``bar_seconds`` seconds (365 for daily bars, 8,760 for hourly).

    Raises
    ------
    ValueError
        ``bar_seconds`` is not a positive finite number.
    """
    if not (bar_seconds > 0 and bar_seconds < float("inf")):
        raise ValueError(f"bar_seconds must be a positive number of seconds, got {bar_seconds!r}")
    return SECONDS_PER_YEAR / bar_seconds
