"""What operators read: UTC ISO 8601 times and exact token units in `keeper status`, and `keeper decode-revert`
turning a custom error's selector and arguments into its name and values."""

from __future__ import annotations

from eth_abi import encode
from eth_utils import function_abi_to_4byte_selector

from keeper.cli import EXIT_OK, EXIT_REFUSED, main
from keeper.status import token_units, utc_iso


def test_utc_iso_is_iso_8601_with_z():
    assert utc_iso(0) == "1970-01-01T00:00:00Z"
    assert utc_iso(1_640_995_200) == "2022-01-01T00:00:00Z"
    assert utc_iso(None) is None


def test_token_units_are_exact_decimal_strings():
    assert token_units(1_234_500, 6) == "1.2345"
    assert token_units(10**18, 18) == "1"
    assert token_units(123_456_789_012_345_678_901, 18) == "123.456789012345678901"  # no float rounding
    assert token_units(5, 12) == "0.000000000005"
    assert token_units(-1_500_000, 6) == "-1.5"
    assert token_units(1_000_000_000_000, 6) == "1,000,000"


def _selector(name: str) -> tuple[bytes, list[str], list[str]]:
    from keeper.abis import all_abis

    for abi in all_abis().values():
        for item in abi:
            if item.get("type") == "error" and item["name"] == name:
                return (function_abi_to_4byte_selector(item), [i["type"] for i in item["inputs"]],
                        [i["name"] for i in item["inputs"]])
    raise AssertionError(name)


def test_decode_revert_names_the_error_and_its_values(capsys):
    selector, types, names = _selector("StalePrice")
    values = ["0x" + "ab" * 20, 1_700_000_000, 172_800]
    data = "0x" + (selector + encode(types, values)).hex()
    assert main(["decode-revert", data]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith("StalePrice(") and f"{names[1]}=1700000000" in out and f"{names[2]}=172800" in out
    assert "RiskParityVault" in out


def test_decode_revert_accepts_the_arguments_apart_and_a_bare_selector(capsys):
    selector, types, names = _selector("StalePrice")
    words = encode(types, ["0x" + "cd" * 20, 5, 6]).hex()
    assert main(["decode-revert", "0x" + selector.hex(), words[:64], words[64:]]) == EXIT_OK
    assert f"{names[1]}=5" in capsys.readouterr().out
    assert main(["decode-revert", "0x" + selector.hex()]) == EXIT_OK
    out = capsys.readouterr().out
    assert f"StalePrice({types[0]} {names[0]}" in out and "give the whole revert data" in out


def test_decode_revert_refuses_what_it_cannot_decode(capsys):
    assert main(["decode-revert", "0xdeadbeef"]) == EXIT_REFUSED
    assert "selector 0xdeadbeef is no error" in capsys.readouterr().err
    assert main(["decode-revert", "0xzz"]) == EXIT_REFUSED
    assert "is not hex" in capsys.readouterr().err
    assert main(["decode-revert", "0x4e487b71" + encode(["uint256"], [0x11]).hex()]) == EXIT_OK
    assert "Panic(code=17)" in capsys.readouterr().out
