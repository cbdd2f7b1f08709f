"""The benchmark runner works end to end (its numbers are printed, never asserted)."""
from __future__ import annotations

import json

from tools.bench import Result, measure, table
from tools.bench.__main__ import main


def test_measure_and_table_report_per_op_times():
    calls = []
    r = measure("demo", lambda: calls.append(1) or 10, rounds=5, target_us=1e9)
    assert r.ops == 50 and len(calls) == 6 and r.verdict == "meets" and r.p50_us <= r.p99_us
    text = table([r, Result("other", 1, 2.0, 2.0, 2.0, 1.0)])
    assert "demo" in text and "misses" in text and text.splitlines()[0].startswith("benchmark")


def test_allocator_suite_runs_as_json(capsys):
    assert main(["--only", "allocator", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} >= {"allocator: alloc/free 4 KiB"} and all(r["mean_us"] > 0 for r in rows)
