"""What the per-kernel fast paths keep exact: the wave executor's map resyncs only when the CP's tables changed, and
then remaps exactly what changed; decoded dispatch registers are reused only for the same registers (each launch
still gets its own kernel-argument pointer); posted mappings are in place before the next doorbell runs, and a
kernel still faults on a buffer unmapped just before it."""
from __future__ import annotations

import ctypes

import numpy as np
import pytest

from compiler import KernelCache, compile_kernel
from compiler.ir import Kernel, f32
from drivers.amd.kfd import KFDDevice
from emu.amd.isa.vm import AddressSpace, VMFault
from emu.machine import emulated_system
from hcq.buffer import MemFlags
from hcq.device import DeviceFaultError

H = MemFlags.DEVICE_LOCAL | MemFlags.HOST_VISIBLE


def test_sync_skips_an_unchanged_generation_and_remaps_exactly_what_changed():
    blocks = [(ctypes.c_uint8 * 4096)() for _ in range(3)]
    a, b, c = (ctypes.addressof(x) for x in blocks)
    vm = AddressSpace()
    vm.sync({a: 4096, b: 4096}, generation=1)
    assert vm.ranges == {a: 4096, b: 4096} and vm.remaps == 2
    vm.sync({a: 4096, b: 4096, c: 4096}, generation=1)  # the same generation: the owner says nothing changed
    assert vm.ranges == {a: 4096, b: 4096} and vm.remaps == 2, "an unchanged generation compared the tables"
    vm.sync({a: 4096, b: 4096, c: 4096}, generation=2)
    assert vm.ranges == {a: 4096, b: 4096, c: 4096} and vm.remaps == 3, "only the new range is mapped"
    blocks[2][5] = 9
    assert vm.read(np.array([c + 5], np.uint64), 1)[0, 0] == 9
    vm.sync({a: 4096, c: 4096}, generation=3)
    assert vm.ranges == {a: 4096, c: 4096} and vm.remaps == 4, "only the dropped range is unmapped"
    with pytest.raises(VMFault):
        vm.read(np.array([b], np.uint64), 4)
    vm.sync({a: 4096, c: 4096}, [(a + 16, 4)], generation=4)  # a poisoned range is a change too
    with pytest.raises(VMFault, match="poisoned"):
        vm.read(np.array([a + 16], np.uint64), 4)
    assert vm.remaps == 4


def test_read_bytes_checks_like_read():
    block = (ctypes.c_uint8 * 64)(*range(64))
    va = ctypes.addressof(block)
    vm = AddressSpace()
    vm.sync({va: 64})
    assert vm.read_bytes(va + 8, 8) == bytes(range(8, 16)) == vm.read(np.array([va + 8], np.uint64), 8)[0].tobytes()
    with pytest.raises(VMFault, match="outside every mapped buffer"):
        vm.read_bytes(va + 60, 8)
    vm.poison(va + 32, 1)
    with pytest.raises(VMFault, match="poisoned"):
        vm.read_bytes(va + 30, 4)


@pytest.fixture
def dev():
    d = KFDDevice(0, emulated_system("amd", ("gfx1100",), private=True))
    yield d
    d.close()


def _put_index(dev, tmp_path):
    k = Kernel("put_index_perf", local_size=(1, 1, 1))
    out = k.buffer("out", f32, writable=True)
    idx = k.scalar("idx")
    out[idx] = idx.cast(f32) + 0.5
    return dev.load_program(compile_kernel(k, "gfx1100", KernelCache(tmp_path), emulation=True))


def _run(dev, prog, out_va: int, idx: int, args=None) -> None:
    args = args or dev.alloc(64, H)  # a fresh argument block every launch: its mapping is posted, never waited for
    blob = prog.pack_args(out_va, idx)
    args.cpu_view()[:len(blob)] = blob
    dev.compute_queue().exec(prog, args, (1, 1, 1), (1, 1, 1)).signal(dev.timeline, dev.next_timeline_value()) \
        .submit(dev)
    dev.synchronize(timeout=20)
    dev.free(args)


def test_fresh_buffers_are_mapped_before_the_kernel_that_uses_them_runs(dev, tmp_path, lld):
    prog = _put_index(dev, tmp_path)
    for i in range(6):  # a new result buffer and argument block each time, used by the very next doorbell
        res = dev.alloc(4 * 8, H)
        _run(dev, prog, res.va, i % 8)
        assert res.numpy(np.float32)[i % 8] == i % 8 + 0.5, f"launch {i} wrote nothing"
        dev.free(res)


def test_the_same_registers_with_new_arguments_reach_each_launch(dev, tmp_path, lld):
    prog = _put_index(dev, tmp_path)
    res = dev.alloc(4 * 8, H)
    for i in range(4):  # the same program and grid: decoded once, with each launch's own argument pointer
        _run(dev, prog, res.va, i)
    np.testing.assert_array_equal(res.numpy(np.float32)[:4], [0.5, 1.5, 2.5, 3.5])


def test_a_kernel_still_faults_on_a_buffer_unmapped_just_before(dev, tmp_path, lld):
    prog = _put_index(dev, tmp_path)
    res = dev.alloc(4 * 8, H)
    _run(dev, prog, res.va, 0)  # the dispatch path has synced its map with the buffer in it
    va, args = res.va, dev.alloc(64, H)  # before the free: the heap would hand the freed range out again
    dev.free(res)
    with pytest.raises(DeviceFaultError, match="page fault"):
        _run(dev, prog, va, 1, args)


def test_a_queue_waiting_on_posted_mappings_faults_instead_of_running_on_without_them(monkeypatch):
    """The wait for posted mappings is bounded: a stuck control thread is a fault naming the counts, not a hang and
    not a queue that runs on missing memory."""
    import ctypes
    import threading
    from types import SimpleNamespace

    import pytest

    from emu.amd import cp
    monkeypatch.setattr(cp, "POSTED_TIMEOUT_S", 0.05)
    stuck = SimpleNamespace(posted=ctypes.c_uint64(3), applied=1, _applied_cv=threading.Condition(), _stopping=False)
    with pytest.raises(cp.Fault, match="applied 1 of the 3 mappings posted"):
        cp.CommandProcessor.await_posted(stuck)
    stuck.applied = 3
    cp.CommandProcessor.await_posted(stuck)  # all applied: returns at once
