"""The README's operator and depositor paths run as written: `keeper local-up` in one shell, the keeper's commands
in another, then the depositor's `cast` commands, each block taken verbatim from README.md (found by its
`<!-- readme-test: NAME -->` marker). Only Anvil's port is changed, to a free one, so that the test does not
collide with a node already on 8545."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from web3 import Web3

from keeper.chain import connect, contract, free_port
from keeper.networks import load_deployment_record

ROOT = Path(__file__).resolve().parents[1]


def readme_block(name: str) -> str:
    """The fenced block right after ``<!-- readme-test: name -->`` in README.md."""
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- readme-test: {re.escape(name)} -->\n```\w*\n(.*?)```", text, re.S)
    assert match, f"README.md has no block marked readme-test: {name}"
    return match.group(1)


def _env(port: int) -> dict[str, str]:
    # This checkout's keeper first (an editable install may point at another checkout).
    return dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1")


def _run(block: str, port: int, timeout: float = 600) -> str:
    script = "set -euo pipefail\n" + block.replace("./run keeper local-up", f"./run keeper local-up --port {port}") \
        .replace("127.0.0.1:8545", f"127.0.0.1:{port}")
    done = subprocess.run(["bash", "-c", script], cwd=ROOT, env=_env(port), capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_operator_and_depositor_paths_as_written():
    port = free_port()
    chain_block = readme_block("operator-chain")
    assert chain_block.strip() == "./run keeper local-up"
    up = subprocess.Popen(["bash", "-c", chain_block.replace("local-up", f"local-up --port {port}")], cwd=ROOT,
                          env=_env(port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 600
        while not any(line.startswith("ready.") for line in lines):
            line = up.stdout.readline()
            assert line or up.poll() is None, "".join(lines)
            lines.append(line)
            assert time.monotonic() < deadline, "".join(lines)
        assert any(f"anvil http://127.0.0.1:{port}" in line for line in lines)

        out = _run(readme_block("operator-keeper"), port)
        assert "rebalanced: first allocation" in out, out
        assert re.search(r"at block \d+ \(2023-01-01T\d\d:\d\d:\d\dZ, unix \d+\)", out), out  # UTC ISO 8601
        assert "tick rebalanced" in out  # the tick's one log line

        record = load_deployment_record(ROOT / "out/local/ethereum-local.json")
        w3 = connect(f"http://127.0.0.1:{port}")
        vault = contract(w3, "RiskParityVault", record.vault)
        alice = Web3.to_checksum_address("0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65")
        shares_before = vault.functions.balanceOf(alice).call()
        assert shares_before > 0 and vault.functions.maxRedeem(alice).call() < shares_before  # the README's point

        out = _run(readme_block("depositor"), port)
        assert "(failed)" not in out, out  # cast's wrapper exits 0 whatever happens: read each receipt's status
        assert vault.functions.balanceOf(alice).call() == 0, out  # redeemed up to maxRedeem, the rest in kind
        btc = next(a for a in record.assets if a.symbol == "BTC")
        assert contract(w3, "TestToken", btc.token).functions.balanceOf(alice).call() > 0
        assert "ERC4626ExceededMaxRedeem(owner=" in out and "shares=99502487562000000" in out
    finally:
        os.killpg(up.pid, signal.SIGINT)
        rest = up.communicate(timeout=60)[0]
    assert up.returncode == 0 and "anvil stopped" in rest, "".join(lines) + rest
