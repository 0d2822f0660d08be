"""Runs the vault's stateful property test (tests/test_vault_properties.py) for ≥ 10,000 steps.

Usage: ``OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_vault_properties.py [--steps N]
[--examples-per-batch E] [--step-count S] [--budget-seconds T] [--seed K]``

Same state machine and invariants as the CI test, with violations recorded instead of raised (no
shrinking), in batches of E examples × up to S steps (hypothesis may end an example early) until N steps
have run or T seconds have passed. Prints steps run, invariant checks, violations (0 expected, the first
ones with their step sequence), the views seen reverting while a feed was stale, the rule outcomes and
wall time; exits 1 when a violation was found.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from hypothesis import HealthCheck, Phase, settings  # noqa: E402

import test_vault_properties as props  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--examples-per-batch", type=int, default=20)
    parser.add_argument("--step-count", type=int, default=50)
    parser.add_argument("--budget-seconds", type=float, default=25 * 60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start = time.monotonic()
    env = props.make_env()
    setup_seconds = time.monotonic() - start
    batch = 0
    try:
        while props.STATS["steps"] < args.steps and time.monotonic() - start < args.budget_seconds:
            config = settings(
                max_examples=args.examples_per_batch,
                stateful_step_count=args.step_count,
                deadline=None,
                database=None,
                derandomize=False,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            # A fresh seed per batch: hypothesis' own seeding would replay the same examples.
            from hypothesis import seed as hseed

            machine = props.machine_class(env, strict=False)
            test = hseed(args.seed * 1_000_003 + batch)(lambda: props.run_state_machine_as_test(machine, settings=config))
            test()
            batch += 1
            print(f"batch {batch}: {props.STATS['steps']} steps, {len(props.VIOLATIONS)} violations, "
                  f"{time.monotonic() - start:.0f} s", flush=True)
    finally:
        env.stop()
    wall = time.monotonic() - start
    stats = props.STATS
    print()
    print(f"steps run:        {stats['steps']}")
    print(f"examples:         {stats['examples']}")
    print(f"invariant checks: {stats['invariant_checks']}")
    print(f"violations:       {len(props.VIOLATIONS)}")
    kinds = Counter(message.split(" | ")[0][:120] for message in props.VIOLATIONS)
    for kind, count in kinds.most_common():
        print(f"  {count} × {kind}")
    shortest: dict[str, str] = {}
    for message in props.VIOLATIONS:
        kind = message.split(" | ")[0][:120]
        if kind not in shortest or len(message) < len(shortest[kind]):
            shortest[kind] = message
    for message in shortest.values():
        print("  VIOLATION", message[:4000])
    print(f"wall time:        {wall:.1f} s (deploy {setup_seconds:.1f} s), {wall / max(stats['steps'], 1) * 1000:.0f} ms/step")
    print("rule outcomes:    " + ", ".join(f"{k[5:]}={v}" for k, v in sorted(stats.items()) if k.startswith("rule ")))
    print("refusals:         " + ", ".join(f"{k}={v}" for k, v in sorted(stats.items()) if ": " in k))
    print("stale-feed view reverts (invariant 3, recorded): "
          + (", ".join(f"{k}={v}" for k, v in sorted(props.OBSERVED.items())) or "none"))
    return 1 if props.VIOLATIONS else 0


if __name__ == "__main__":
    sys.exit(main())
