"""Contract ABIs as data: the keeper's only view of the contracts at run time.

``keeper/abi/<Name>.json`` holds the ABI of every project contract and of the Uniswap V3 contracts the
keeper talks to. The build step (:mod:`keeper.build`, run by ``./run`` whenever a contract changes)
writes them; the keeper only reads them, so running it needs no Solidity compiler and no
``node_modules``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from keeper.errors import ConfigError

ABI_DIR = Path(__file__).resolve().parent / "abi"


@lru_cache(maxsize=None)
def load_abi(name: str) -> list[dict[str, Any]]:
    """The ABI (a list of JSON fragments) of contract ``name``, e.g. ``"RiskParityVault"``.

    Raises
    ------
    ConfigError
        No ``keeper/abi/<name>.json``: an unknown contract name, or ABIs never built (run ``./run keeper build``).
    """
    path = ABI_DIR / f"{name}.json"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in ABI_DIR.glob("*.json"))) or "none"
        raise ConfigError(f"no ABI for contract {name!r} at {path} (known: {known}); run `./run keeper build`")
    return json.loads(path.read_text())


@lru_cache(maxsize=None)
def all_abis() -> dict[str, list[dict[str, Any]]]:
    """Every ABI in ``keeper/abi/``, by contract name."""
    return {path.stem: load_abi(path.stem) for path in sorted(ABI_DIR.glob("*.json"))}
