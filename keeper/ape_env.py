"""``keeper ape-env``: the environment ``ape compile`` and ``ape run`` need on a machine without a native solc.

ape-solidity finds compilers through py-solc-x, which looks in its install folder (``SOLCX_BINARY_PATH``) for
``solc-v<version>``. Where no native solc is on PATH, the project's ``tools/solc/solc`` (the npm compiler behind a
``solc`` command line) is copied to ``build/solcx/solc-v<version>``: two levels below the project root, where the
adapter finds ``node_modules/solc`` exactly as from ``tools/solc``. Prints the ``export`` lines to ``eval``.
"""

from __future__ import annotations

import re
import shutil
import subprocess

from keeper.build import ADAPTER, NODE_MODULES, PROJECT_ROOT
from keeper.errors import ConfigError

SOLCX_DIR = PROJECT_ROOT / "build" / "solcx"


def prepare() -> dict[str, str]:
    """Makes ``build/solcx/solc-v<version>`` (unless a native solc is on PATH) and returns the variables to export.

    Raises
    ------
    ConfigError
        Neither a native solc nor the npm compiler (run ``npm ci``).
    """
    env = {"PATH": f"{NODE_MODULES / '.bin'}:$PATH"}
    if shutil.which("solc") and "Emscripten" not in subprocess.run(["solc", "--version"], capture_output=True,
                                                                    text=True).stdout:
        return env
    if not (NODE_MODULES / "solc").is_dir():
        raise ConfigError(f"no native solc on PATH and no npm compiler at {NODE_MODULES / 'solc'}: run `npm ci`")
    out = subprocess.run([str(ADAPTER), "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"Version: (\d+\.\d+\.\d+)", out)
    if match is None:
        raise ConfigError(f"{ADAPTER} --version printed no version: {out!r}")
    SOLCX_DIR.mkdir(parents=True, exist_ok=True)
    target = SOLCX_DIR / f"solc-v{match.group(1)}"
    shutil.copyfile(ADAPTER, target)
    target.chmod(0o755)
    env["SOLCX_BINARY_PATH"] = str(SOLCX_DIR)
    return env


def main() -> None:
    for name, value in prepare().items():
        print(f'export {name}="{value}"')
