"""The tensor benchmark runs and prints its rows (small sizes; its numbers are printed, never asserted)."""
from __future__ import annotations

from tools.bench import table
from tools.bench import tensor as bench_tensor
from tools.bench.__main__ import SUITES


def test_tensor_suite_is_registered():
    assert "tensor" in SUITES


def test_tensor_suite_prints_its_rows(capsys):
    rows = bench_tensor.run(matmul_sizes=(32,), rounds=2)
    print(table(rows))
    out = capsys.readouterr().out
    for expected in ("tensor: realize a + b", "tensor: realize 10-op elementwise chain", "tensor fusion: 10-op",
                     "tensor fusion: (a @ b).relu().sum(axis=1)", "tensor fusion: MLP layer", "numpy: a @ b 32x32",
                     "tensor: matmul 32x32"):
        assert any(r.name.startswith(expected) for r in rows), expected
        assert expected in out
    assert all(r.ops > 0 and r.mean_us > 0 for r in rows)
    assert all("kernels unfused ->" in r.note for r in rows if r.name.startswith("tensor fusion:"))
    assert all("GFLOPS" in r.note for r in rows if "matmul" in r.name or r.name.startswith("numpy"))
