"""python -m tools.bench [--list] [--only ID] [--quick] [--rounds N] [--json]: run the benchmarks, print one table.

Progress (one line as each benchmark starts and ends) goes to stderr; the table or JSON goes to stdout.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
import time

from tools.bench import LEGEND, Bench, BenchError, Context, Result, progress, table, warm_up

SUITES = ["allocator", "hcq_submit", "tensor", "emulator", "nv", "am"]
# suite name -> its ids' prefix
SUITE_PREFIX = {"allocator": "allocator", "hcq_submit": "hcq", "tensor": "tensor", "emulator": "emulator", "nv": "nv",
                "am": "am"}


def benches() -> list[Bench]:
    """Every benchmark, suite by suite, in the order a full run takes them."""
    out: list[Bench] = []
    for suite in SUITES:
        out += importlib.import_module(f"tools.bench.{suite}").BENCHES
    return out


def select(all_benches: list[Bench], only: list[str] | None) -> list[Bench]:
    """The benchmarks `--only` names: a suite (tensor, hcq_submit), an id (tensor.matmul.512) or an id's prefix
    up to a dot (tensor.matmul); none given: all of them."""
    if not only:
        return all_benches
    chosen: list[Bench] = []
    for name in only:
        prefix = SUITE_PREFIX.get(name, name)
        hits = [b for b in all_benches if b.id == prefix or b.id.startswith(prefix + ".")]
        if not hits:
            raise BenchError(f"--only {name!r} names no benchmark; use a suite ({', '.join(SUITES)}) or an id "
                             "that --list prints, such as tensor.matmul.512 or tensor.matmul")
        chosen += [b for b in hits if b not in chosen]
    return chosen


def _summary(rows: list[Result]) -> str:
    """A few words for the progress line: the verdicts of the rows that have one."""
    judged = [f"{r.verdict} ({r.extra.get('measured', f'p50 {r.p50_us:.3g} us')})" for r in rows if r.verdict]
    return "; ".join(judged) if judged else f"{len(rows)} row(s)"


def main(argv: list[str] | None = None) -> int:
    """Run every benchmark (or those --only names) and print the table or JSON; 1 when a benchmark failed."""
    ap = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__)
    ap.add_argument("--list", action="store_true", help="print the benchmarks' ids, rows and targets, run nothing")
    ap.add_argument("--only", action="append", metavar="ID",
                    help="run only this suite, benchmark id or id prefix (repeatable; see --list)")
    ap.add_argument("--quick", action="store_true",
                    help="small sizes and 3 rounds: checks that the benchmarks run, its numbers mean little")
    ap.add_argument("--rounds", type=int, metavar="N", help="timed rounds per row (default: each row's own)")
    ap.add_argument("--json", action="store_true", help="print JSON ({info, rows}) instead of a table")
    args = ap.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        ap.error(f"--rounds {args.rounds}: a row needs at least 1 round")
    all_benches = benches()
    try:
        chosen = select(all_benches, args.only)
    except BenchError as e:
        ap.error(str(e))
    if args.list:
        width = max(len(b.id) for b in chosen)
        for b in chosen:
            print(f"{b.id.ljust(width)}  {b.rows}" + (f"  [target: {b.target}]" if b.target else ""))
        return 0
    ctx = Context(quick=args.quick, rounds_override=args.rounds)
    results: list[Result] = []
    failed: list[str] = []
    started = time.perf_counter()
    try:
        if not args.quick:
            warm_up()
        for i, b in enumerate(chosen, 1):
            progress(f"bench [{i}/{len(chosen)}] {b.id}: {b.rows} ...")
            t0 = time.perf_counter()
            try:
                rows = b.run(ctx)
            except Exception as e:  # one benchmark that cannot run (a device in use, say) does not stop the others
                failed.append(f"{b.id}: {type(e).__name__}: {e}")
                progress(f"bench [{i}/{len(chosen)}] {b.id}: FAILED after {time.perf_counter() - t0:.1f} s: "
                         f"{type(e).__name__}: {e}")
                continue
            results += rows
            progress(f"bench [{i}/{len(chosen)}] {b.id}: done in {time.perf_counter() - t0:.1f} s: {_summary(rows)}")
    finally:
        ctx.close()
    progress(f"bench: {len(chosen)} benchmark(s), {len(results)} rows, {len(failed)} failed, in "
             f"{time.perf_counter() - started:.0f} s")
    if args.json:
        rows_json = [dataclasses.asdict(r) | {"target": r.target_text, "verdict": r.verdict} for r in results]
        print(json.dumps({"info": ctx.info, "rows": rows_json, "failed": failed}, indent=2))
    else:
        for line in ctx.info:
            print(line)
        print(table(results))
        print("\n" + LEGEND)
        for line in failed:
            print(f"not run: {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
