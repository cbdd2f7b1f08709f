"""The am bench suite (tools/bench/am.py): registered, and `--only am --quick` runs end to end on the emulated card,
yielding the open and per-stage boot rows for both a cold and a warm boot. Its numbers are printed, never asserted."""
from __future__ import annotations

import json

from drivers.am.device import BLOCK_ORDER
from tools.bench import am as bench_am
from tools.bench.__main__ import SUITE_PREFIX, SUITES, main

# the blocks boot() brings up: BLOCK_ORDER's whose driver file is in the tree
BLOCK_STAGES = [n for n, _ in BLOCK_ORDER]


def test_am_suite_is_registered(capsys):
    assert "am" in SUITES and SUITE_PREFIX["am"] == "am"
    assert main(["--list", "--only", "am"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["am.boot"]


def test_quick_run_yields_every_stage_row_for_cold_and_warm(capsys):
    assert main(["--only", "am", "--quick", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["failed"] == []
    assert bench_am.NO_QUEUES_INFO in out["info"]  # the rows AM cannot make yet are named, not faked
    stages = {kind: [r["extra"]["stage"] for r in out["rows"] if r["extra"]["kind"] == kind]
              for kind in ("cold", "warm")}
    assert stages["cold"] == ["open", "reset", "ifwi"] + BLOCK_STAGES + ["boot total"]
    assert stages["warm"] == ["open"] + BLOCK_STAGES + ["boot total"]  # warm: no reset, no IFWI wait
    for r in out["rows"]:
        assert "emulated" in r["name"] and "says nothing about a real card" in r["note"]
        assert r["samples"] == 3 and r["p50_us"] > 0 and r["extra"]["emulated"] is True
    opens = [r for r in out["rows"] if r["extra"]["stage"] == "open"]
    assert all("discovery" in r["note"] and "firmware" in r["note"] for r in opens)
