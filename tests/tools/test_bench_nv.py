"""The nv bench suite (tools/bench/nv.py): registered, its CUDA worker says why CUDA is missing, its parameter
blocks are right, and it runs end to end on the emulated NV GPU with --quick (skipped, with the reason, until the
NV driver and the emulated NV GPU exist). Its numbers are printed, never asserted."""
from __future__ import annotations

import json
import struct

import pytest

from tools.bench import nv as bench_nv
from tools.bench.__main__ import SUITE_PREFIX, SUITES, main

IDS = ["nv.launch", "nv.replay", "nv.copy", "nv.matmul"]


def test_nv_suite_is_registered_with_its_rows_and_targets(capsys):
    assert "nv" in SUITES and SUITE_PREFIX["nv"] == "nv"
    assert main(["--list", "--only", "nv"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()] == IDS
    assert "ours <= CUDA's p50" in out and "p50 <= 0.6 us per kernel" in out and ">= 0.90x CUDA's bandwidth" in out
    assert "1000-exec queue" in out and "64 MiB" in out and "2048x2048 f32" in out


def test_cuda_worker_reports_why_cuda_is_missing_or_what_it_found():
    worker = bench_nv.CudaWorker(start_timeout=60)
    try:
        if worker.available:
            assert worker.info["name"] and worker.target.startswith("sm_") and "CUDA:" in worker.describe
        else:
            assert worker.why and worker.describe == f"CUDA: not measured ({worker.why})"
            with pytest.raises(bench_nv.BenchError, match="CUDA is not available here"):
                worker.run("launch", key="nop", reps=1)
    finally:
        worker.close()
        worker.close()  # twice is harmless (the Context closes it again at the end of a run)
    assert worker.proc.poll() is not None


def test_no_libcuda_is_said_as_such():
    """Without libcuda the worker's reason starts "no libcuda", which the rows carry."""
    if _has_libcuda():
        pytest.skip("libcuda is present here")
    worker = bench_nv.CudaWorker(start_timeout=60)
    worker.close()
    assert worker.why.startswith("no libcuda"), worker.why


def _has_libcuda() -> bool:
    import tools.cuda
    try:
        tools.cuda.load_libcuda()
    except tools.cuda.CudaUnavailable:
        return False
    return True


def test_worker_parameter_blocks_put_each_value_at_its_offset():
    state = object.__new__(bench_nv._CudaState)  # the packing only: no CUDA needed
    state.scratch, state.matmul = 0x1000, {"out": 0x2000, "a": 0x3000, "b": 0x4000}
    blob = state.blob([[0, 8, "out"], [8, 8, "a"], [16, 8, "b"], [24, 4, -3], [32, 8, "scratch"]])
    assert blob == struct.pack("<QQQi4xQ", 0x2000, 0x3000, 0x4000, -3, 0x1000)
    assert state.blob([]) == b""


def test_suite_runs_end_to_end_on_the_emulated_nv_gpu(capsys, monkeypatch, ptxas):
    monkeypatch.setenv("BAREGPU_EMULATE", "nv")  # never the real card from a test
    status = main(["--only", "nv", "--quick", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert status == 0 and doc["failed"] == [], doc["failed"]
    rows = {r["name"]: r for r in doc["rows"]}
    ours = [name for name in rows if "CUDA" not in name.split("(")[-1] and "numpy" not in name]
    assert ours and all("emulated sm_90" in name for name in ours), ours
    for prefix in ("nv launch+sync", "nv replay", "nv copy host -> device", "nv copy device -> host",
                   "nv copy device -> device", "nv matmul"):
        assert any(name.startswith(prefix) for name in ours), prefix
    assert any("CUDA" in line for line in doc["info"])
    if not any("CUDA, " in name or "(CUDA" in name for name in rows):  # no libcuda here: ours say why
        launch = next(r for n, r in rows.items() if n.startswith("nv launch+sync") and "replayed" in n)
        assert "CUDA side not measured" in launch["note"] and launch["verdict"] == ""
    for r in doc["rows"]:
        assert r["samples"] >= 1 and r["p50_us"] > 0
