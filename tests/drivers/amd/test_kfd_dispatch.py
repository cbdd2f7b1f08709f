"""Kernels on the emulated AMD GPU: code objects loaded like a loader does, dispatched through PM4 registers."""
from __future__ import annotations

import time

import numpy as np
import pytest

from autogen import gc_11_0_0 as gc
from compiler import KernelCache, compile_kernel
from compiler.ir import Kernel, f32, where
from drivers.amd import pm4
from drivers.amd.kfd import KFDDevice, KFDError
from emu.machine import emulated_system
from hcq.buffer import MemFlags
from hcq.queue import Var

H = MemFlags.DEVICE_LOCAL | MemFlags.HOST_VISIBLE


def matmul(tile: int = 8) -> Kernel:
    k = Kernel("mm", local_size=(tile, tile, 1))
    A, B, C = k.buffer("A", f32), k.buffer("B", f32), k.buffer("C", f32, writable=True)
    M, N, K = k.scalar("M"), k.scalar("N"), k.scalar("K")
    tx, ty = k.local_id(0), k.local_id(1)
    col, row = k.workgroup_id(0) * tile + tx, k.workgroup_id(1) * tile + ty
    As, Bs = k.local_array(f32, tile * tile, "As"), k.local_array(f32, tile * tile, "Bs")
    acc = k.var(f32, 0.0)
    with k.range(0, (K + (tile - 1)) // tile) as t:
        ka, kb = t * tile + tx, t * tile + ty
        As[ty * tile + tx] = where((row < M) & (ka < K), A[where((row < M) & (ka < K), row * K + ka, 0)], 0.0)
        Bs[ty * tile + tx] = where((kb < K) & (col < N), B[where((kb < K) & (col < N), kb * N + col, 0)], 0.0)
        k.barrier()
        with k.range(0, tile) as kk:
            acc.set(acc + As[ty * tile + kk] * Bs[kk * tile + tx])
        k.barrier()
    with k.if_((row < M) & (col < N)):
        C[row * N + col] = acc
    return k


@pytest.fixture
def dev():
    d = KFDDevice(0, emulated_system("amd", ("gfx1100",), private=True))
    yield d
    d.close()


@pytest.mark.parametrize("gfx", ["gfx1100", "gfx1201"])
def test_tiled_matmul_on_the_emulated_gpu(gfx, tmp_path, lld):
    dev = KFDDevice(0, emulated_system("amd", (gfx,), private=True))
    try:
        _run_matmul(dev, tmp_path, gfx)
    finally:
        dev.close()


def _run_matmul(dev, tmp_path, gfx):
    prog = dev.load_program(compile_kernel(matmul(), gfx, KernelCache(tmp_path), emulation=True))
    m, n, kd = 19, 13, 27
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((m, kd)).astype(np.float32), rng.standard_normal((kd, n)).astype(np.float32)
    A, B, C, args = dev.alloc(a.nbytes, H), dev.alloc(b.nbytes, H), dev.alloc(m * n * 4, H), dev.alloc(64, H)
    A.numpy(np.float32)[:] = a.ravel()
    B.numpy(np.float32)[:] = b.ravel()
    blob = prog.pack_args(A.va, B.va, C.va, m, n, kd)
    args.cpu_view()[:len(blob)] = blob
    q = dev.compute_queue().memory_barrier().exec(prog, args, (2, 3, 1), (8, 8, 1))
    q.signal(dev.timeline, dev.next_timeline_value()).submit(dev)
    dev.synchronize(timeout=20)
    np.testing.assert_allclose(C.numpy(np.float32).reshape(m, n), a @ b, rtol=1e-4, atol=1e-4)


def test_dispatch_programs_the_compute_registers(dev, tmp_path, lld):
    prog = dev.load_program(compile_kernel(matmul(), "gfx1100", KernelCache(tmp_path), emulation=True))
    q = dev.compute_queue().exec(prog, 0x1234000, (2, 3, 1), (8, 8, 1))
    regs = {}
    packets = pm4.decode(q.cmd)
    for p in packets:
        if p.name == "SET_SH_REG":
            for i in range(len(p.body) - 1):
                regs[p.fields["reg"] + i] = p.fields[f"value{i}"]
    base = dev.gc_base
    assert regs[base + gc.regCOMPUTE_PGM_LO] == (prog.code_va >> 8) & 0xFFFFFFFF
    assert regs[base + gc.regCOMPUTE_PGM_RSRC1] == prog.descriptor.compute_pgm_rsrc1
    assert (regs[base + gc.regCOMPUTE_USER_DATA_0], regs[base + gc.regCOMPUTE_USER_DATA_1]) == (0x1234000, 0)
    assert [regs[base + gc.regCOMPUTE_NUM_THREAD_X + i] for i in range(3)] == [8, 8, 1]
    dispatch = packets[-1]
    assert dispatch.name == "DISPATCH_DIRECT" and (dispatch.fields["x"], dispatch.fields["y"]) == (2, 3)
    assert dispatch.fields["initiator"] & gc.COMPUTE_DISPATCH_INITIATOR__CS_W32_EN_MASK, "gfx11 kernels are wave32"


def test_exec_with_values_and_exec_with_vars_encode_the_same_words(dev, tmp_path, lld):
    """Plain values take a fast path that appends cached packet heads; it must match the patched Var path, and
    values that do not fit are refused by name."""
    from hcq.queue import QueueBuildError
    prog = dev.load_program(compile_kernel(matmul(), "gfx1100", KernelCache(tmp_path), emulation=True))
    va = 0x7F12_3456_7800
    direct = dev.compute_queue().exec(prog, va, (5, 3, 2), (8, 8, 1)).exec(prog, va + 256, (1, 1, 1), (8, 8, 1))
    patched = dev.compute_queue().exec(prog, Var("a"), (Var("x"), 3, Var("z")), (8, 8, 1))
    patched.exec(prog, Var("a", 256), (1, 1, 1), (8, 8, 1))
    patched.apply({"a": va, "x": 5, "z": 2})
    assert list(direct.cmd) == list(patched.cmd)
    assert [p.name for p in pm4.decode(direct.cmd)].count("DISPATCH_DIRECT") == 2
    with pytest.raises(QueueBuildError, match=r"exec\(mm\): grid \(4294967296, 1, 1\) does not fit"):
        dev.compute_queue().exec(prog, va, (1 << 32, 1, 1), (8, 8, 1))
    with pytest.raises(QueueBuildError, match=r"exec\(mm\): kernel arguments at 0x10000000000000000 are not"):
        dev.compute_queue().exec(prog, 1 << 64, (1, 1, 1), (8, 8, 1))


def test_a_kernel_built_for_another_gpu_is_refused(dev, tmp_path, lld):
    with pytest.raises(ValueError, match="built for gfx1201.*compile it for gfx1100"):
        dev.load_program(compile_kernel(matmul(), "gfx1201", KernelCache(tmp_path)))


def test_a_null_kernel_argument_pointer_is_a_vm_fault_naming_the_load(dev, tmp_path, lld):
    """The emulated GPU runs the machine code: the kernel's own scalar load of its arguments through a null pointer
    faults, and the fault names the address, the access and the instruction."""
    prog = dev.load_program(compile_kernel(matmul(), "gfx1100", KernelCache(tmp_path)))
    dev.compute_queue().exec(prog, 0, (1, 1, 1), (8, 8, 1)).signal(dev.timeline, dev.next_timeline_value()).submit(dev)
    with pytest.raises(Exception, match="page fault at 0x"):
        dev.synchronize(timeout=20)
    fault = dev.system.kfd.faults[-1]["message"]
    assert "s_load" in fault and "read" in fault, fault


def test_the_host_kernel_mode_needs_a_host_build(tmp_path, lld):
    d = KFDDevice(0, emulated_system("amd", ("gfx1100",), private=True, kernels="host"))
    try:
        prog = d.load_program(compile_kernel(matmul(), "gfx1100", KernelCache(tmp_path)))
        d.compute_queue().exec(prog, 0, (1, 1, 1), (8, 8, 1)).signal(d.timeline, d.next_timeline_value()).submit(d)
        with pytest.raises(Exception, match="AMD faulted"):
            d.synchronize(timeout=20)
        assert any("carries no host build" in f["message"] for f in d.system.kfd.faults)
    finally:
        d.close()


def test_gfx942_compute_queues_say_what_is_missing():
    d = KFDDevice(0, emulated_system("amd", ("gfx942",), private=True))
    try:
        with pytest.raises(KFDError, match="AQL packets, which are not built yet"):
            d.compute_queue()
    finally:
        d.close()


def test_late_signal_is_waited_for_and_counters_count(dev):
    src, dst = dev.alloc(8192, H), dev.alloc(8192, H)
    src.cpu_view()[:] = b"\x5a" * 8192
    dev.system.kfd.delay(dev.sdma_ring.queue_id, 0.3)
    sig = dev.new_signal(0)
    dev.copy_queue().copy(dst.va, src.va, 8192).signal(sig, 1).submit(dev)
    assert sig.value == 0
    sig.wait(1, timeout=10)  # sleeps in KFD until the late interrupt
    assert bytes(dst.cpu_view()) == b"\x5a" * 8192
    # The fence that wrote the signal comes before the TRAP that interrupts: a wait whose spin saw the value may
    # return before the engine reached the TRAP, so the counters are awaited (bounded), not read at once.
    deadline = time.monotonic() + 10
    while not (dev.system.kfd.cp_counters().get("sdma.TRAP", 0) >= 1 and dev.system.kfd.counters["interrupts"] >= 1):
        assert time.monotonic() < deadline, f"no TRAP counted within 10 s: {dev.system.kfd.cp_counters()}"
        time.sleep(0.01)
    counters = dev.system.kfd.cp_counters()
    assert counters["bytes_copied"] >= 8192 and counters["sdma.COPY_LINEAR"] >= 1


def test_injected_page_fault_names_the_buffer(dev):
    src, dst = dev.alloc(4096, H), dev.alloc(4096, H)
    dev.system.kfd.poison(dst.va + 0x100, 16)
    dev.copy_queue().copy(dst.va, src.va, 4096).signal(dev.timeline, dev.next_timeline_value()).submit(dev)
    with pytest.raises(Exception) as e:
        dev.synchronize(timeout=10)
    assert f"GPU access to {dst.va + 0x100:#x}, inside Buffer(va={dst.va:#x}" in str(e.value)
    assert "offset 0x100" in str(e.value)


def _put_index(dev, tmp_path, runs: int):
    """A one-thread kernel writing out[idx] = idx + 0.5, a result buffer, and `runs` argument blocks (idx 0, 1...)."""
    k = Kernel("put_index", local_size=(1, 1, 1))
    out = k.buffer("out", f32, writable=True)
    idx = k.scalar("idx")
    out[idx] = idx.cast(f32) + 0.5
    prog = dev.load_program(compile_kernel(k, "gfx1100", KernelCache(tmp_path), emulation=True))
    res = dev.alloc(4 * 8, H)
    args = [dev.alloc(64, H) for _ in range(runs)]
    for i, a in enumerate(args):
        blob = prog.pack_args(res.va, i)
        a.cpu_view()[:len(blob)] = blob
    return prog, res, args


def test_replay_goes_through_an_indirect_buffer_rewritten_only_after_the_previous_run(dev, tmp_path, lld):
    prog, res, args = _put_index(dev, tmp_path, 3)
    q = dev.compute_queue().exec(prog, Var("args"), (1, 1, 1), (1, 1, 1)).signal(dev.timeline, Var("t"))
    dev.system.kfd.delay(dev.compute_ring.queue_id, 0.3)  # the first run starts late
    wptr0 = dev.compute_ring.wptr
    for i, a in enumerate(args):
        q.submit(dev, {"args": a.va, "t": dev.next_timeline_value()})
    dev.synchronize(timeout=20)
    # Had a later submit patched the buffer before the earlier run, an index would be missing.
    np.testing.assert_array_equal(res.numpy(np.float32)[:3], [0.5, 1.5, 2.5])
    assert dev.compute_ring.wptr - wptr0 == 3 * len(pm4.indirect_buffer(0, 1)), "the ring only carries IB packets"


def test_a_replay_queue_extended_after_a_run_replays_all_of_it(dev, tmp_path, lld):
    """The INDIRECT_BUFFER packet is encoded once per buffer and length; a longer queue gets a new one."""
    prog, res, args = _put_index(dev, tmp_path, 2)
    q = dev.compute_queue().exec(prog, Var("a0"), (1, 1, 1), (1, 1, 1)).signal(dev.timeline, Var("t"))
    q.submit(dev, {"a0": args[0].va, "t": dev.next_timeline_value()})
    dev.synchronize(timeout=20)
    res.cpu_view()[:] = b"\0" * res.size
    done = dev.new_signal(0)
    q.exec(prog, Var("a1"), (1, 1, 1), (1, 1, 1)).signal(done, Var("d"))
    q.submit(dev, {"a0": args[0].va, "a1": args[1].va, "t": dev.next_timeline_value(), "d": 1})
    done.wait(1, timeout=20)
    np.testing.assert_array_equal(res.numpy(np.float32)[:2], [0.5, 1.5])


def test_a_dropped_replay_queue_returns_its_indirect_buffer_after_its_last_run(dev, tmp_path, lld):
    import gc
    k = Kernel("put1", local_size=(1, 1, 1))
    out = k.buffer("out", f32, writable=True)
    out[0] = 1.0
    prog = dev.load_program(compile_kernel(k, "gfx1100", KernelCache(tmp_path), emulation=True))
    res, args = dev.alloc(64, H), dev.alloc(64, H)
    blob = prog.pack_args(res.va)
    args.cpu_view()[:len(blob)] = blob
    live = len(dev._buffers)
    q = dev.compute_queue().exec(prog, Var("args"), (1, 1, 1), (1, 1, 1)).signal(dev.timeline, Var("t"))
    dev.system.kfd.delay(dev.compute_ring.queue_id, 0.3)
    q.submit(dev, {"args": args.va, "t": dev.next_timeline_value()})
    assert len(dev._buffers) == live + 1, "the replay allocated its indirect buffer"
    del q
    gc.collect()
    assert len(dev._buffers) == live + 1, "freed while the GPU may still run it"
    dev.synchronize(timeout=20)
    assert len(dev._buffers) == live, "the indirect buffer went back once its run finished"


@pytest.mark.parametrize("kernels,fault", [("isa", "page fault at 0x0"), ("host", "hardware exception")])
def test_a_store_through_a_null_pointer_faults_the_device_instead_of_hanging(kernels, fault, tmp_path, lld):
    """Kernel arguments full of zeros make the kernel store through a null pointer. The wave executor reports a VM
    fault at address 0; the host build (the fast mode) kills the emulated GPU's process, which KFD reports as a
    hardware exception. Either way the wait raises at once rather than after its timeout."""
    import time

    from hcq.device import DeviceFaultError
    k = Kernel("put_null", local_size=(1, 1, 1))
    out = k.buffer("out", f32, writable=True)
    out[0] = 1.0
    d = KFDDevice(0, emulated_system("amd", ("gfx1100",), private=True, kernels=kernels))
    try:
        prog = d.load_program(compile_kernel(k, "gfx1100", KernelCache(tmp_path), emulation=kernels == "host"))
        zeros = d.alloc(64, H)
        t0 = time.monotonic()
        d.compute_queue().exec(prog, zeros, (1, 1, 1), (1, 1, 1)).signal(d.timeline, d.next_timeline_value()).submit(d)
        with pytest.raises(DeviceFaultError, match=fault):
            d.synchronize(timeout=30)
        assert time.monotonic() - t0 < 15, "the fault was only noticed at the timeout"
    finally:
        d.close()


def test_devices_open_together_keep_their_gpu_addresses_below_the_mmap_area():
    """Each device's VA window is the next free one from VA_HINT, not wherever mmap puts a taken hint (the top of
    the mmap area, where the emulated GPU's process has its own thread stacks and heap: a ring there failed to map)."""
    from drivers.amd.kfd import VA_HINT, VA_WINDOW
    devs = [KFDDevice(0, emulated_system("amd", ("gfx1100",), private=True)) for _ in range(3)]
    try:
        windows = sorted(d._window for d in devs)
        assert all(w >= VA_HINT and (w - VA_HINT) % VA_WINDOW == 0 for w in windows), [hex(w) for w in windows]
        assert len(set(windows)) == 3 and all(d.compute_ring.buf.va < 1 << 46 for d in devs)
    finally:
        for d in devs:
            d.close()
