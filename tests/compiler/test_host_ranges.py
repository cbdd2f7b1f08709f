"""A host kernel runs any range of its grid's workgroups (linear index, x fastest): the CPU device's workers each
run a slice of one launch. A range outside the grid is refused before any machine code runs."""
from __future__ import annotations

import ctypes

import numpy as np
import pytest

from compiler import compile_kernel
from compiler.ir import Kernel, i32


def wg_index_kernel() -> Kernel:
    """out[linear workgroup index] += 1 + the index, from thread 0 of each workgroup."""
    k = Kernel("wg_index", local_size=(2, 2, 1))
    out = k.buffer("out", i32, writable=True)
    gx, gy = k.scalar("gx"), k.scalar("gy")
    wg = (k.workgroup_id(2) * gy + k.workgroup_id(1)) * gx + k.workgroup_id(0)
    with k.if_((k.local_id(0) + k.local_id(1)).eq(0)):
        out[wg] = out[wg] + wg + 1
    return k


@pytest.mark.parametrize("grid,first,count", [((5, 3, 2), 0, 30), ((5, 3, 2), 7, 11), ((5, 3, 2), 29, 1),
                                              ((5, 3, 2), 4, 0), ((1, 1, 9), 2, 5), ((4, 1, 1), 0, 4),
                                              ((3, 4, 1), 3, 4)])
def test_a_range_runs_exactly_its_workgroups(cache, grid, first, count):
    ck = compile_kernel(wg_index_kernel(), "host", cache)
    total = grid[0] * grid[1] * grid[2]
    out = np.zeros(total, np.int32)
    blob = ck.pack_args(out.ctypes.data, grid[0], grid[1])
    buf = ctypes.create_string_buffer(blob, len(blob))
    ck.run(ctypes.addressof(buf), grid, ck.local_size, first, count)
    want = np.zeros(total, np.int32)
    want[first:first + count] = np.arange(first, first + count) + 1
    np.testing.assert_array_equal(out, want)
    ck.run(ctypes.addressof(buf), grid, ck.local_size)  # no range: the whole grid
    want += np.arange(total, dtype=np.int32) + 1
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("first,count", [(-1, 2), (0, 31), (29, 2), (3, -1)])
def test_a_range_outside_the_grid_is_refused(cache, first, count):
    ck = compile_kernel(wg_index_kernel(), "host", cache)
    out = np.zeros(30, np.int32)
    blob = ck.pack_args(out.ctypes.data, 5, 3)
    buf = ctypes.create_string_buffer(blob, len(blob))
    with pytest.raises(ValueError, match=rf"wg_index: workgroups \[{first}, {first + count}\) are outside the grid "
                                         r"5x3x2 \(30 workgroups\)"):
        ck.run(ctypes.addressof(buf), (5, 3, 2), ck.local_size, first, count)
    assert not out.any(), "a refused range still ran"
