"""The runtime's per-launch fast path: each kernel's launch is encoded once per grid and bound per launch, and
nothing about ordering, profiling, closed devices or argument packing changes because of it."""
from __future__ import annotations

import struct
from array import array

import numpy as np
import pytest

from tensor import DEVICES, Tensor


def test_a_repeated_kernel_reuses_one_encoded_launch_and_keeps_its_order(device):
    """Forty launches of one kernel, each reading the last one's output, submitted without waiting in between:
    one template, never patched in place, and the chain on the timeline still orders every read after its write."""
    rt = DEVICES[device]
    x = Tensor.zeros(300, device=device).realize()
    (x + 1).realize()  # compiles the kernel and encodes its launch
    before = {k: (p, {n: array("I", w) for n, w in q.streams.items()}) for k, (p, q) in rt._launches.items()}
    ran = rt.kernels_run
    for _ in range(40):
        x = (x + 1).realize()
    np.testing.assert_array_equal(x.numpy(), np.full(300, 40, np.float32))
    assert rt.kernels_run - ran == 40
    after = {k: (p, {n: array("I", w) for n, w in q.streams.items()}) for k, (p, q) in rt._launches.items()}
    assert after == before  # no new template, and the templates' words are untouched


def test_a_new_program_at_a_reused_address_gets_its_own_launch(device):
    rt = DEVICES[device]
    a = Tensor.arange(64, device=device).realize()
    rt.synchronize()
    rt._launches.clear()  # a cache: emptied, the next launch makes the only entry
    np.testing.assert_array_equal((a * 3).numpy(), np.arange(64) * 3)
    [(key, (prog, template))] = rt._launches.items()
    # What a dead program's id reused by another object looks like: the entry names an object that is not prog.
    rt._launches[key] = (object(), template)
    np.testing.assert_array_equal((a * 3).numpy(), np.arange(64) * 3)
    assert rt._launches[key][0] is prog


def test_launches_are_profiled_one_by_one(device):
    rt = DEVICES[device]
    a = Tensor.arange(16, device=device).realize()
    (a + 2).numpy()  # the template exists before profiling starts
    rt.synchronize()
    rt.dev.profiling = True
    try:
        rt.dev.profile()  # drop what came before
        out = [(a + 2).numpy() for _ in range(3)]
        log = rt.dev.profile()
    finally:
        rt.dev.profiling = False
    execs = [(what, start, end) for what, start, end in log if what.startswith("exec")]
    assert len(execs) == 3 and all(end >= start > 0 for _, start, end in execs)
    for o in out:
        np.testing.assert_array_equal(o, np.arange(16) + 2)


def test_a_launch_on_a_closed_device_raises_before_touching_its_memory():
    from drivers.cpu.device import CPUDevice
    from hcq.errors import DeviceClosedError
    from tensor.runtime import Runtime
    rt = Runtime("CPU:7", CPUDevice(7, arena_size=1 << 24, workers=1))
    prog, local, grid, bufs = _one_kernel(rt)
    rt.launch(prog, local, bufs, grid)
    rt.synchronize()
    rt.dev.close()
    with pytest.raises(DeviceClosedError, match="closed"):
        rt.launch(prog, local, bufs, grid)


def _one_kernel(rt):
    """A compiled add-one kernel loaded on rt, with its output and input buffers."""
    from tensor.codegen import kernel_for
    from tensor.lazy import LazyNode
    src = LazyNode("buffer", (16,), "float32", rt.name)
    src.become_buffer(None, rt.upload(np.arange(16, dtype=np.float32)))
    one = LazyNode("const", (16,), "float32", rt.name, arg=1.0)
    node = LazyNode("ewise", (16,), "float32", rt.name, (src, one), "add")
    kernel, order, grid = kernel_for(node, host=True)
    return rt.program(kernel), kernel.local_size, grid, [rt.alloc(64), src.buffer]


def test_pack_args_lays_out_each_argument_at_its_offset_and_names_bad_values():
    from compiler import compile_kernel
    from compiler.ir import IRError, Kernel, f32, i32
    k = Kernel("pack_layout", local_size=(1, 1, 1))
    out = k.buffer("out", f32, writable=True)
    n = k.scalar("n", i32)
    k.buffer("a", f32)
    k.scalar("m", i32)
    with k.if_(k.global_id(0) < n):
        out[0] = 1.0
    ck = compile_kernel(k, "host")
    values = (0x1122334455667788, -5, 0xDEADBEEF00, 2**31 - 1)
    expected = bytearray(ck.kernarg_size)
    for arg, v in zip(ck.args, values):
        struct.pack_into("<Q" if arg.size == 8 else "<i", expected, arg.offset, v)
    assert ck.pack_args(*values) == bytes(expected) and len(expected) == 28
    with pytest.raises(IRError, match=r"argument n=2147483648 does not fit in int32"):
        ck.pack_args(1, 2**31, 3, 4)
    with pytest.raises(IRError, match="pack_layout: arguments .* do not fit the kernel-argument block"):
        ck.pack_args(-1, 1, 2, 3)
    with pytest.raises(IRError, match="takes 4 arguments"):
        ck.pack_args(1, 2)
