"""The tensor and staging benchmarks and the numpy reference worker run (small sizes; their numbers are printed,
never asserted)."""
from __future__ import annotations

import json

import pytest

from tools.bench import BenchError
from tools.bench import tensor as bench_tensor
from tools.bench.__main__ import SUITES, main
from tools.bench.reference import NumpyWorker


def _run_json(capsys, *only: str) -> dict:
    argv = ["--quick", "--json"]
    for name in only:
        argv += ["--only", name]
    status = main(argv)
    doc = json.loads(capsys.readouterr().out)
    assert status == 0 and doc["failed"] == [], doc["failed"]
    return doc


def test_tensor_suite_is_registered():
    assert "tensor" in SUITES and "hcq_submit" in SUITES


def test_tiny_op_and_fusion_rows_run(capsys):
    rows = {r["name"]: r for r in _run_json(capsys, "tensor.tiny", "tensor.fusion")["rows"]}
    tiny = rows["tensor: (a + 1).numpy(), 16 f32, synced, timed singly (CPU)"]
    assert tiny["samples"] == 20 and tiny["target"] == "p50 <= 100 us" and tiny["verdict"] in ("meets", "misses")
    fusion = [r for name, r in rows.items() if name.startswith("tensor fusion:")]
    assert len(fusion) == 6 and all("kernels unfused ->" in r["note"] for r in fusion)


def test_exp_sin_chain_is_ten_ops_in_one_kernel_and_matches_numpy(capsys):
    rows = _run_json(capsys, "tensor.chain")["rows"]
    ref, ours = rows
    assert ref["name"].startswith("numpy: the same 10-op chain") and ours["name"].startswith("tensor: 10-op exp/sin")
    assert "10 ops -> 1 kernel" in ours["note"] and "WRONG" not in ours["note"]
    assert ours["target"].startswith(">= 0.67x numpy") and ours["verdict"] in ("meets", "misses")
    assert ours["extra"]["x numpy"] == pytest.approx(ref["p50_us"] / ours["p50_us"])


def test_matmul_row_compares_with_single_threaded_numpy_interleaved(capsys):
    doc = _run_json(capsys, "tensor.matmul.512")
    np1, ours, np_here = doc["rows"]
    assert np1["name"] == "numpy 1 thread: a @ b 64x64 f32" and ours["name"].startswith("tensor: matmul 64x64")
    assert np1["samples"] == np_here["samples"] == ours["samples"] == 3
    assert ours["target"] == ">= 1.00x numpy 1 thread" and "WRONG" not in ours["note"]
    assert ours["extra"]["x numpy 1 thread"] == pytest.approx(np1["p50_us"] / ours["p50_us"])
    assert np_here["name"].startswith("numpy: a @ b 64x64") and ours["extra"]["x numpy"] > 0
    assert any(line.startswith("CPU device: ") for line in doc["info"])
    assert any("BLAS reports 1 thread(s)" in line for line in doc["info"])


def test_staging_rows_cover_each_depth(capsys):
    rows = _run_json(capsys, "hcq.staging")["rows"]
    assert [r["extra"]["depth"] for r in rows] == [1, 64, 256]
    assert all("submit only, no sync" in r["name"] for r in rows)
    assert rows[0]["verdict"] == "" and all(r["target"].startswith("flat: <=") for r in rows[1:])


def test_cpu_worker_count_is_read_without_failing():
    count, line = bench_tensor.cpu_workers()
    assert count is None or count >= 1
    assert line.startswith("CPU device: ")


def test_numpy_worker_times_rounds_and_reports_bad_requests():
    worker = NumpyWorker()
    try:
        ops, seconds = worker.run("matmul", n=16, reps=3)
        assert ops == 3 and 0 < seconds < 5
        with pytest.raises(BenchError, match="'conv'"):
            worker.run("conv", n=16, reps=1)
        assert worker.run("matmul", n=8, reps=1)[0] == 1  # a failed request leaves the worker usable
    finally:
        worker.close()
    assert worker.proc.poll() is not None


def test_numpy_worker_that_does_not_answer_in_time_is_stopped():
    worker = NumpyWorker(request_timeout=0.001)
    try:
        with pytest.raises(BenchError, match="no answer .* within 0.001 s"):
            worker.run("matmul", n=512, reps=8)
    finally:
        worker.close()
    assert worker.proc.poll() is not None
