"""Kernel launches end to end on every emulated architecture (QMD V03 and V04): compiled kernels with their
arguments staged, given as a buffer, and replayed through a Var; shared memory and barriers; a launch template bound
per submission."""
from __future__ import annotations

import numpy as np
import pytest

from compiler import KernelCache, compile_kernel
from compiler.ir import Kernel, f32
from drivers.nv.device import NVDevice
from hcq.buffer import MemFlags
from hcq.queue import Var

HOST_VRAM = MemFlags.DEVICE_LOCAL | MemFlags.HOST_VISIBLE


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return KernelCache(tmp_path_factory.mktemp("nvlaunch"))


def scale_kernel():
    k = Kernel("scale", local_size=(32, 1, 1))
    x, y = k.buffer("x", f32), k.buffer("y", f32, writable=True)
    n = k.scalar("n")
    i = k.global_id(0)
    with k.if_(i < n):
        y[i] = x[i] * 2.0 + 1.0
    return k


def rotate_kernel():
    k = Kernel("rotate", local_size=(64, 1, 1))
    inp, out = k.buffer("inp", f32), k.buffer("out", f32, writable=True)
    tile = k.local_array(f32, 64)
    i = k.local_id(0)
    tile[i] = inp[i]
    k.barrier()
    out[i] = tile[(i + 1) % 64]
    return k


@pytest.fixture(params=["sm_86", "sm_89", "sm_90"])
def dev(request):
    from emu.machine import emulated_system
    system = emulated_system("nv", (request.param,), private=True)
    d = NVDevice(0, system)
    yield d
    d.close()
    system.nv.close()


def run(d, q):
    q.signal(d.timeline, d.next_timeline_value()).submit(d)
    d.synchronize(timeout=10)


def test_a_compiled_kernel_runs_with_staged_buffer_and_replayed_arguments(dev, cache):
    prog = dev.load_program(compile_kernel(scale_kernel(), dev.target, cache, emulation=True))
    n = 100
    x, y = dev.alloc(4 * n, HOST_VRAM), dev.alloc(4 * n, HOST_VRAM)
    x.numpy(np.float32)[:] = np.arange(n, dtype=np.float32)
    want = np.arange(n, dtype=np.float32) * 2 + 1
    run(dev, dev.compute_queue().exec(prog, prog.pack_args(x.va, y.va, n), (4, 1, 1), (32, 1, 1)))
    np.testing.assert_array_equal(y.numpy(np.float32), want)
    args = dev.alloc(prog.cbank0_size, HOST_VRAM, align=256)
    q = dev.compute_queue().exec(prog, Var("args"), (Var("gx"), 1, 1), (32, 1, 1)).signal(dev.timeline, Var("t"))
    for k in range(2):
        out = dev.alloc(4 * n, HOST_VRAM)
        args.cpu_view()[:] = prog.pack_args(x.va, out.va, n)
        q.submit(dev, {"args": args.va, "gx": 4, "t": dev.next_timeline_value()})
        dev.synchronize(timeout=10)
        np.testing.assert_array_equal(out.numpy(np.float32), want)
    # A template bound per submission, its argument blocks staged by the device (as the tensor runtime does).
    out = dev.alloc(4 * n, HOST_VRAM)
    blob = prog.pack_args(x.va, out.va, n)
    v = dev.next_timeline_value()
    q.bind({"args": dev.stage_kernargs(blob, v), "gx": 4, "t": v}).submit(dev)
    dev.synchronize(timeout=10)
    np.testing.assert_array_equal(out.numpy(np.float32), want)


def test_shared_memory_and_barriers(dev, cache):
    prog = dev.load_program(compile_kernel(rotate_kernel(), dev.target, cache, emulation=True))
    inp, out = dev.alloc(256, HOST_VRAM), dev.alloc(256, HOST_VRAM)
    inp.numpy(np.float32)[:] = np.arange(64, dtype=np.float32)
    run(dev, dev.compute_queue().exec(prog, prog.pack_args(inp.va, out.va), (1, 1, 1), (64, 1, 1)))
    np.testing.assert_array_equal(out.numpy(np.float32), np.roll(np.arange(64, dtype=np.float32), -1))


def test_a_kernel_reading_unmapped_memory_faults_with_the_address(dev, cache):
    prog = dev.load_program(compile_kernel(scale_kernel(), dev.target, cache, emulation=True))
    y = dev.alloc(4 * 32, HOST_VRAM)
    bad = 0x10_0000
    dev.compute_queue().exec(prog, prog.pack_args(bad, y.va, 32), (1, 1, 1), (32, 1, 1)).signal(
        dev.timeline, dev.next_timeline_value()).submit(dev)
    with pytest.raises(Exception) as e:
        dev.synchronize(timeout=10)
    msg = str(e.value)
    assert "page fault" in msg and hex(bad) in msg and "compute" in msg
    dev.recover()
    run(dev, dev.compute_queue().exec(prog, prog.pack_args(y.va, y.va, 0), (1, 1, 1), (32, 1, 1)))


def test_a_machine_whose_rm_refuses_the_fault_reader_still_runs_and_reports_faults(cache):
    """A sandbox's RM proxy (gVisor's nvproxy) may refuse GT200_DEBUGGER: the device still opens and computes, and a
    kernel's MMU fault is still raised, saying why its address is unknown."""
    from autogen import nv_rm as R
    from emu.machine import emulated_system
    from hcq.device import DeviceFaultError
    system = emulated_system("nv", ("sm_90",), private=True, refused_classes=(R.GT200_DEBUGGER,))
    d = NVDevice(0, system)
    try:
        assert d.debugger == 0 and "NV_ERR_NOT_SUPPORTED" in d.fault_reader_problem
        prog = d.load_program(compile_kernel(scale_kernel(), d.target, cache, emulation=True))
        y = d.alloc(4 * 32, HOST_VRAM)
        d.compute_queue().exec(prog, prog.pack_args(0x10_0000, y.va, 32), (1, 1, 1), (32, 1, 1)).signal(
            d.timeline, d.next_timeline_value()).submit(d)
        with pytest.raises(DeviceFaultError, match="page fault.*no address: RM refused the fault reader"):
            d.synchronize(timeout=10)
        d.recover()
        x = d.alloc(4 * 32, HOST_VRAM)
        x.numpy(np.float32)[:] = np.arange(32, dtype=np.float32)
        run(d, d.compute_queue().exec(prog, prog.pack_args(x.va, y.va, 32), (1, 1, 1), (32, 1, 1)))
        np.testing.assert_array_equal(y.numpy(np.float32), np.arange(32, dtype=np.float32) * 2 + 1)
    finally:
        d.close()
        system.nv.close()
