"""Host index arithmetic: HostRenderer marks the sums and products in an index nsw (so LLVM sees thread x's
addresses as consecutive and vectorizes them as loads, not gathers; tests/tensor/test_host_matmul.py checks the
matmul's machine code). These check that indices with negative and selected terms still address the right words."""
from __future__ import annotations

import numpy as np

from compiler import compile_kernel
from compiler.ir import Kernel, f32

W, H = 64, 8  # a tile of H rows of W floats per workgroup, x across a row's columns


def staged_copy() -> Kernel:
    """out = 2 * x, each workgroup's H x W tile staged through local memory: the indexing a staged matmul uses."""
    k = Kernel("staged_copy", local_size=(16, H, 1))
    x, out = k.buffer("x", f32), k.buffer("out", f32, writable=True)
    tx, ty = k.local_id(0), k.local_id(1)
    row, base = k.workgroup_id(0) * H + ty, k.workgroup_id(1) * W
    cols = k.scalar("cols")
    tile = k.local_array(f32, H * W, "tile")
    for c in range(0, W, 16):
        tile[ty * W + tx + c] = x[row * cols + base + tx + c]
    k.barrier()
    for c in range(0, W, 16):
        out[row * cols + base + tx + c] = tile[ty * W + tx + c] * 2.0
    return k


def test_staged_copy_runs(cache):
    rows, cols = 3 * H, 2 * W
    x = np.random.default_rng(0).standard_normal((rows, cols)).astype(np.float32)
    out = np.full((rows, cols), np.nan, np.float32)
    compile_kernel(staged_copy(), "host", cache)(x, out, cols, global_size=(3, 2, 1))
    np.testing.assert_array_equal(out, x * 2)


def test_negative_and_clamped_indices_still_work(cache):
    # Negative terms, a difference and a modulo inside an index.
    k = Kernel("shifted", local_size=(16, 1, 1))
    x, out = k.buffer("x", f32), k.buffer("out", f32, writable=True)
    n = k.scalar("n")
    i = k.global_id(0)
    with k.if_(i < n):
        out[i] = x[(i + 5) - 5 * 1] + x[(i - 1 + n) % n]
    ck = compile_kernel(k, "host", cache)
    v = np.arange(40, dtype=np.float32)
    got = np.zeros(40, np.float32)
    ck(v, got, 40, global_size=(3, 1, 1))
    np.testing.assert_array_equal(got, v + np.roll(v, 1))
