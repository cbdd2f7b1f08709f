"""The benchmark runner's statistics and scheduling are right, and it runs end to end (its numbers are printed,
never asserted)."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

from tools.bench import (P99_MIN_SAMPLES, BenchError, interleave, measure, percentile, speed_ratio, summarize, table,
                         versus)
from tools.bench.__main__ import main


def test_percentile_interpolates_between_ranks_like_numpy():
    assert percentile([1, 2, 3, 4], 0.5) == 2.5  # even count: the mean of the middle two
    assert percentile([4, 1, 3, 2], 0.0) == 1 and percentile([4, 1, 3, 2], 1.0) == 4  # unsorted input is fine
    assert percentile([7.0], 0.99) == 7.0
    assert percentile(list(range(101)), 0.99) == 99.0
    assert percentile([0, 10], 0.25) == 2.5
    rng = random.Random(3)
    values = [rng.expovariate(1.0) for _ in range(37)]
    for q in (0.1, 0.5, 0.9, 0.99):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q * 100)))


def test_percentile_rejects_what_it_cannot_answer():
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 0.5)
    with pytest.raises(ValueError, match="q=1.5"):
        percentile([1.0], 1.5)


def test_p99_is_left_blank_below_100_samples_and_max_is_reported():
    few = summarize("few", [float(i) for i in range(1, 31)], 30)  # the issue: a "p99" of 30 samples was the max
    assert few.p99_us is None and few.max_us == 30.0 and few.p50_us == 15.5 and few.samples == 30
    many = summarize("many", [float(i) for i in range(1, P99_MIN_SAMPLES + 101)], 200)
    assert many.p99_us == pytest.approx(percentile(range(1, 201), 0.99)) and many.p99_us < many.max_us
    lines = table([few, many]).splitlines()
    head = lines[0].split()
    assert head[:3] == ["benchmark", "n", "ops"] and "p99" in head and "max" in head and "verdict" in head
    assert " - " in lines[1] and " - " not in lines[2]


def test_verdict_uses_the_median_not_the_mean():
    r = summarize("spiky", [1.0, 1.0, 1.0, 1.0, 500.0], 5, target_us=2.0)
    assert r.mean_us > 2.0 and r.p50_us == 1.0 and r.verdict == "meets"
    assert summarize("slow", [3.0, 3.0, 3.0], 3, target_us=2.0).verdict == "misses"
    assert summarize("untargeted", [3.0], 1).verdict == ""


def test_interleave_alternates_order_round_by_round():
    calls: list[str] = []

    def fn(tag: str):
        return lambda: calls.append(tag) or 1

    samples, ops = interleave([fn("A"), fn("B")], rounds=4)
    assert calls == ["A", "B"] + ["A", "B", "B", "A", "A", "B", "B", "A"]  # warm-up, then A B / B A rounds
    assert [len(s) for s in samples] == [4, 4] and ops == [4, 4]
    calls.clear()
    interleave([fn("A"), fn("B"), fn("C")], rounds=2)
    assert calls == ["A", "B", "C", "A", "B", "C", "C", "B", "A"]


def test_interleave_uses_the_seconds_a_round_reports_and_checks_its_arguments():
    samples, ops = interleave([lambda: (4, 0.002)], rounds=3)
    assert samples == [[500.0, 500.0, 500.0]] and ops == [12]  # 2 ms over 4 ops = 500 us each
    with pytest.raises(ValueError, match="rounds=0"):
        interleave([lambda: 1], rounds=0)
    with pytest.raises(BenchError, match="0 ops"):
        interleave([lambda: (0, 1.0)], rounds=1)


def test_ratio_verdict_compares_medians_of_both_sides():
    # Ours has one huge outlier: by means it would be 0.08x the reference, by medians it is 2x.
    ours = summarize("ours", [10.0, 10.0, 10.0, 1000.0], 4)
    ref = summarize("ref", [20.0, 20.0, 20.0, 20.0], 4)
    assert ref.mean_us / ours.mean_us < 0.1
    assert speed_ratio(ours, ref) == 2.0
    assert versus(ours, ref, "numpy 1 thread", goal=1.0) == 2.0
    assert ours.verdict == "meets" and ours.target == ">= 1.00x numpy 1 thread" and "2.00x numpy 1 thread" in ours.note
    slow = summarize("slow", [40.0, 41.0, 39.0], 3)
    versus(slow, ref, "numpy", goal=1 / 1.5)
    assert slow.verdict == "misses" and slow.extra["x numpy"] == pytest.approx(0.5)
    plain = summarize("plain", [40.0], 1)
    versus(plain, ref, "numpy")  # no goal: the ratio is noted, no verdict
    assert plain.verdict == "" and "0.50x numpy" in plain.note


def test_measure_warms_up_once_then_times_each_round():
    calls = []
    r = measure("demo", lambda: calls.append(1) or 10, rounds=5, target_us=1e9)
    assert r.ops == 50 and len(calls) == 6 and r.samples == 5 and r.verdict == "meets" and r.p50_us <= r.max_us


def test_list_shows_every_benchmark_with_the_new_rows(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    for bench_id in ("allocator.pairs", "hcq.cpu", "hcq.staging", "hcq.kfd", "tensor.realize.add", "tensor.fusion",
                     "tensor.chain", "tensor.matmul.256", "tensor.matmul.512", "tensor.matmul.1024", "tensor.tiny"):
        assert any(line.split()[0] == bench_id for line in out.splitlines()), bench_id
    assert "1, 64, 256 in flight" in out and "exp/sin chain" in out and "(a + 1).numpy()" in out
    assert ">= 1.00x numpy 1 thread" in out and "p50 <= 100 us" in out


def test_list_with_only_narrows_to_a_prefix(capsys):
    assert main(["--list", "--only", "tensor.matmul"]) == 0
    ids = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert ids == ["tensor.matmul.256", "tensor.matmul.500", "tensor.matmul.512", "tensor.matmul.1024"]


def test_only_an_unknown_name_is_a_clear_error(capsys):
    with pytest.raises(SystemExit):
        main(["--only", "tensr.matmul", "--list"])
    err = capsys.readouterr().err
    assert "'tensr.matmul'" in err and "--list" in err


def test_allocator_suite_runs_as_json_with_progress(capsys):
    assert main(["--only", "allocator", "--quick", "--json"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    rows = doc["rows"]
    assert {r["name"] for r in rows} >= {"allocator: alloc/free 4 KiB", "allocator: one alloc, timed singly"}
    assert all(r["mean_us"] > 0 and r["samples"] >= 1 for r in rows) and doc["failed"] == []
    single = next(r for r in rows if r["name"] == "allocator: one alloc, timed singly")
    assert single["samples"] >= P99_MIN_SAMPLES and single["p99_us"] is not None  # 3000 calls timed singly
    assert all(r["p99_us"] is None for r in rows if r["samples"] < P99_MIN_SAMPLES)
    progress = [line for line in captured.err.splitlines() if line.startswith("bench [")]
    assert len(progress) == 6 and progress[0].endswith("...") and "done in" in progress[1]
