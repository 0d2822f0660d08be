"""``keeper decode-revert``: revert data (a custom error's 4-byte selector and its ABI-encoded arguments) into
the error's name, its parameters' names and values, and the contracts that declare it.

Decoding is :func:`keeper.chain.decode_revert` (every ABI the build knows, plus ``Error(string)`` and
``Panic(uint256)``); this module only adds the parameter names and the declaring contracts for the reader.
"""

from __future__ import annotations

from typing import Any

from eth_utils import function_abi_to_4byte_selector

from keeper.errors import ConfigError


def _declarations(selector: bytes) -> tuple[list[str], list[str], list[str]]:
    """(parameter names, parameter types, contracts declaring the error) of ``selector`` in the project's ABIs."""
    from keeper.abis import all_abis

    names: list[str] = []
    types: list[str] = []
    contracts: list[str] = []
    for contract, abi in sorted(all_abis().items()):
        for item in abi:
            if item.get("type") == "error" and function_abi_to_4byte_selector(item) == selector:
                names = names or [inp.get("name") or f"arg{i}" for i, inp in enumerate(item["inputs"])]
                types = types or [inp["type"] for inp in item["inputs"]]
                contracts.append(contract)
    return names, types, contracts


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return repr(value) if isinstance(value, str) else str(value)


def decode_revert_text(data: str, more_words: list[str] | None = None) -> str:
    """One line: ``Name(param=value, ...)`` and the contracts that declare the error.

    Parameters
    ----------
    data : str
        Revert data as hex (``0x`` optional): the selector followed by the ABI-encoded arguments.
    more_words : list of str, optional
        Further hex appended to ``data`` (arguments given apart from the selector).

    Raises
    ------
    ConfigError
        ``data`` is not hex or shorter than a selector; the selector matches no known error.
    """
    from keeper.chain import decode_revert

    text = "".join(w.strip().removeprefix("0x") for w in [data, *(more_words or [])])
    try:
        raw = bytes.fromhex(text)
    except ValueError as exc:
        raise ConfigError(f"revert data {data!r} is not hex: give the bytes as 0x..., e.g. 0x91b46fd2...") from exc
    if len(raw) < 4:
        raise ConfigError(f"revert data 0x{raw.hex()} is shorter than a 4-byte selector")
    decoded = decode_revert(raw)
    if decoded.name == "Unknown":
        raise ConfigError(f"selector 0x{raw[:4].hex()} is no error of this project's contracts, OpenZeppelin's or "
                          "Uniswap's (rebuild with `keeper build` if the contracts changed)")
    names, types, contracts = _declarations(raw[:4])
    if decoded.name in ("Error", "Panic"):
        names = ["reason" if decoded.name == "Error" else "code"]
    if len(decoded.args) == 1 and isinstance(decoded.args[0], str) and decoded.args[0] == raw.hex():
        signature = f"{decoded.name}({', '.join(f'{t} {n}' for t, n in zip(types, names))})"
        return (f"{signature}: the arguments do not decode ({len(raw) - 4} bytes after the selector; give the "
                f"whole revert data for the values); declared by {', '.join(contracts) or 'the Solidity runtime'}")
    values = ", ".join(f"{n}={_show(v)}" for n, v in zip(names or [f"arg{i}" for i in range(len(decoded.args))],
                                                           decoded.args))
    where = f" (declared by {', '.join(contracts)})" if contracts else ""
    return f"{decoded.name}({values}){where}"
