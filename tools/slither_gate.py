"""Slither gate for CI: fails on any High or Medium finding that is not triaged.

Runs ``slither . --json FILE`` with the repository's ``slither.config.json`` (path filters, dependencies
excluded; findings silenced in the source by ``// slither-disable-next-line DETECTOR (reason)`` never reach
the output), then drops the High/Medium findings listed with their reason in ``tools/slither/triage.json``.
Exit status: 0 when none is left, 1 when some are (listed), 2 when slither itself failed.
Run it through ``tools/slither.sh``, which puts forge and the solc adapter in place.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRIAGE = ROOT / "tools" / "slither" / "triage.json"
GATED = ("High", "Medium")


def _function_of(element: dict) -> str | None:
    if element.get("type") == "function":
        return element.get("name")
    parent = element.get("type_specific_fields", {}).get("parent", {})
    if parent.get("type") == "function":
        return parent.get("name")
    return None


def _matches(entry: dict, result: dict) -> bool:
    if entry["check"] != result["check"] or entry["code"] not in result["description"]:
        return False
    return any(
        element.get("source_mapping", {}).get("filename_relative") == entry["file"]
        and _function_of(element) == entry["function"]
        for element in result["elements"]
    )


def main(argv: list[str]) -> int:
    entries = json.loads(TRIAGE.read_text())["findings"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "slither.json"
        # --fail-none: this script decides the exit status (the config's fail_on is for plain `slither .`).
        cmd = [sys.executable, "-m", "slither", ".", "--json", str(out), "--fail-none", *argv]
        proc = subprocess.run(cmd, cwd=ROOT)
        if not out.exists():
            print(f"slither gate: slither wrote no JSON (exit {proc.returncode})", file=sys.stderr)
            return 2
        report = json.loads(out.read_text())
    if not report.get("success"):
        print(f"slither gate: slither failed: {report.get('error')}", file=sys.stderr)
        return 2
    results = [r for r in report.get("results", {}).get("detectors", []) if r["impact"] in GATED]
    used = [False] * len(entries)
    open_findings = []
    for result in results:
        hits = [i for i, entry in enumerate(entries) if _matches(entry, result)]
        for i in hits:
            used[i] = True
        if not hits:
            open_findings.append(result)
    print(f"\nslither gate: {len(results)} High/Medium finding(s), {len(results) - len(open_findings)} triaged "
          f"in {TRIAGE.relative_to(ROOT)}, {len(open_findings)} open", file=sys.stderr)
    for i, entry in enumerate(entries):
        if not used[i]:
            print(f"slither gate: stale triage entry (matches nothing now): {entry['check']} "
                  f"{entry['file']} {entry['function']} {entry['code']!r}", file=sys.stderr)
    for result in open_findings:
        print(f"\nOPEN {result['impact']} {result['check']}:\n{result['description']}", file=sys.stderr)
    return 1 if open_findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
