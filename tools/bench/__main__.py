"""python -m tools.bench [--only NAME] [--json]: run the benchmarks and print one table."""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys

SUITES = ["allocator", "hcq_submit", "tensor"]


def main(argv: list[str] | None = None) -> int:
    """Run every suite (or --only one) and print the table or JSON."""
    ap = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__)
    ap.add_argument("--only", choices=SUITES, action="append", help="run only this suite (repeatable)")
    ap.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = ap.parse_args(argv)
    from tools.bench import table, warm_up
    warm_up()
    results = []
    for name in args.only or SUITES:
        results += importlib.import_module(f"tools.bench.{name}").run()
    if args.json:
        print(json.dumps([dataclasses.asdict(r) | {"verdict": r.verdict} for r in results], indent=2))
    else:
        print(table(results))
        print("\nmean/p50/p99/min: time per op within each timed round, across rounds (rows 'timed singly' time each "
              "op on its own); the verdict compares the mean with the issue's target, measured, never asserted.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
