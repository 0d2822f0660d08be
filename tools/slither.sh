#!/usr/bin/env bash
# Static analysis gate: slither over contracts/ through crytic-compile -> forge (foundry.toml), failing on
# any High or Medium finding that is not triaged (see tools/slither/README.md). Extra arguments go to slither.
# Needs the project set up (./run setup or any ./run command): .venv with slither-analyzer from uv.lock,
# node_modules with forge and the npm solc that tools/solc/solc wraps.
set -euo pipefail
cd "$(dirname "$0")/.."
# `ape compile` keeps copies of the npm dependencies in contracts/.cache (a regenerable cache, git-ignored); forge
# would compile them as project sources, so they are dropped first.
rm -rf contracts/.cache
# The native forge binary (the npm wrapper swallows exit codes); foundry.toml names the solc adapter.
export PATH="$PWD/node_modules/@foundry-rs/forge-linux-amd64/bin:$PATH"
exec .venv/bin/python tools/slither_gate.py "$@"
