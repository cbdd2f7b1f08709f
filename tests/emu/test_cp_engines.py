"""The emulated CP's engines progress independently and its barrier, cache and event packets do what their fields
say: malformed ones fault naming the field, CS_PARTIAL_FLUSH and end-of-pipe releases wait for earlier dispatches,
and an idle CP does not burn a core. Streams are raw words built from the generated constants (test_cp_strict's
helpers), so the driver's encoders are not involved.
"""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
from test_cp_strict import WAIT_S, buffer, expect_fault, pm4, set_u64, signal_after, u64, wait_mem

from autogen import pm4_nvd as nvd
from autogen import soc21_enum as ev
from drivers.amd.kfd import KFDDevice
from emu.machine import emulated_system
from hcq.buffer import MemFlags


@pytest.fixture
def dev():
    d = KFDDevice(0, emulated_system("amd", ("gfx1100",), private=True))
    yield d
    d.close()


def event_write(event: int, index: int, extra: int = 0) -> list[int]:
    return pm4(nvd.PACKET3_EVENT_WRITE, [event | index << 8 | extra])


def acquire_mem(gcr: int, cntl: int = 0, poll: int = 10) -> list[int]:
    return pm4(nvd.PACKET3_ACQUIRE_MEM, [cntl, 0xFFFFFFFF, 0xFF, 0, 0, poll, gcr])


@pytest.mark.parametrize("words,message", [
    (event_write(ev.BOTTOM_OF_PIPE_TS, 5), r"EVENT_WRITE BOTTOM_OF_PIPE_TS \(EVENT_TYPE 40\) is not emulated"),
    (event_write(ev.CS_PARTIAL_FLUSH, 0), r"EVENT_WRITE CS_PARTIAL_FLUSH with EVENT_INDEX 0; it takes 4"),
    (event_write(ev.CS_PARTIAL_FLUSH, 4, 1 << 20), r"EVENT_WRITE CS_PARTIAL_FLUSH: dword 0x00100407 sets bits outside"),
    (acquire_mem(0, cntl=1), r"ACQUIRE_MEM COHER_CNTL 0x1: gfx10 and later take cache actions from GCR_CNTL only"),
    (acquire_mem(1 << 19), r"ACQUIRE_MEM GCR_CNTL 0x80000 sets reserved bits above 18"),
    (acquire_mem(1 << 2), r"ACQUIRE_MEM GCR_CNTL 0x4: GL1_RANGE 1 is reserved"),
    (acquire_mem(3 << 16), r"ACQUIRE_MEM GCR_CNTL 0x30000: SEQ 3 is reserved"),
    (acquire_mem(2 << 11), r"ACQUIRE_MEM GCR_CNTL 0x1000 asks for ranged cache actions"),
    (acquire_mem(0, poll=1 << 16), r"ACQUIRE_MEM poll dword 0x10000 sets reserved bits"),
])
def test_malformed_barrier_and_event_packets_fault(dev, words, message):
    dev.compute_ring.submit(words)
    expect_fault(dev, "compute", message)


@pytest.mark.parametrize("dw0,dw1,message", [
    (ev.CS_DONE | 5 << 8, 2 << 29, r"event CS_DONE with event_index 5: it takes CACHE_FLUSH_TS"),
    (20 | 5 << 8 | 1 << 24, 2 << 29, r"GCR bits 0x1000000 are reserved"),
    (20 | 5 << 8 | 1 << 17, 2 << 29, r"GCR GL2_RANGE 1 \(a ranged L2 action\) is not emulated"),
    (20 | 5 << 8 | 1 << 30, 2 << 29, r"sets reserved bits 0x40000000"),
    (20 | 5 << 8, 2 << 29 | 1, r"control dword 0x40000001 sets reserved bits 0x1"),
    (20 | 5 << 8, 2 << 29 | 1 << 22, r"asks for a MES notification"),
    (20 | 5 << 8, 2 << 29 | 1 << 24, r"int_sel 1 \(interrupt only\) with data_sel 2"),
])
def test_malformed_release_mem_faults_before_writing(dev, dw0, dw1, message):
    out = buffer(dev, 64)
    dev.compute_ring.submit(pm4(nvd.PACKET3_RELEASE_MEM, [dw0, dw1, out.va & 0xFFFFFFFF, out.va >> 32, 7, 0, 0]))
    expect_fault(dev, "compute", message)
    assert u64(out) == 0


def test_the_drivers_barrier_and_cache_packets_are_accepted(dev):
    """amdgpu's own emit_mem_sync ACQUIRE_MEM (gfx_v11_0.c) and a CS_DONE shader-done release run."""
    out = buffer(dev, 64)
    gcr = sum(getattr(nvd, f"PACKET3_ACQUIRE_MEM_GCR_CNTL_{name}")(1)  # gfx_v11_0_emit_mem_sync's set
              for name in ("GL2_INV", "GL2_WB", "GLM_INV", "GLM_WB", "GL1_INV", "GLV_INV", "GLK_INV", "GLI_INV"))
    shader_done = pm4(nvd.PACKET3_RELEASE_MEM, [ev.CS_DONE | 6 << 8, 2 << 29, out.va & 0xFFFFFFFF, out.va >> 32, 5,
                                                0, 0])
    dev.compute_ring.submit(event_write(ev.CS_PARTIAL_FLUSH, 4) + event_write(ev.CACHE_FLUSH_AND_INV_EVENT, 0) +
                            acquire_mem(gcr) + shader_done)
    signal_after(dev).wait(1, timeout=WAIT_S)
    assert u64(out) == 5


def test_a_queue_blocked_on_a_wait_does_not_delay_another(dev):
    gate = buffer(dev, 64)
    dev.compute_ring.submit(wait_mem(gate.va, 1))  # blocks the compute queue until the host opens the gate
    started = time.monotonic()
    signal_after(dev, "sdma").wait(1, timeout=WAIT_S)  # the copy queue runs meanwhile
    assert time.monotonic() - started < 2.0
    compute = signal_after(dev)
    time.sleep(0.05)
    assert compute.value == 0, "the compute queue ran past its unsatisfied wait"
    set_u64(gate, 1)
    compute.wait(1, timeout=WAIT_S)


def test_a_long_kernel_on_one_gpu_does_not_hold_up_another_gpus_queues(lld, tmp_path):
    """Two GPUs of one machine share the CP process: each queue has its own thread, so a kernel running on GPU 0
    leaves GPU 1's queue free (one engine loop would run them one after the other)."""
    from compiler import KernelCache, compile_kernel
    from compiler.ir import Kernel, exp, f32, sin
    k = Kernel("slow", local_size=(64, 1, 1))
    x = k.buffer("x", f32, writable=True)
    i = k.global_id(0)
    x[i] = sin(exp(i.cast(f32) * 1e-6))
    system = emulated_system("amd", ("gfx1100", "gfx1100"), private=True)
    gpu0, gpu1 = KFDDevice(0, system), KFDDevice(1, system)
    try:
        prog = gpu0.load_program(compile_kernel(k, "gfx1100", KernelCache(tmp_path), emulation=True))
        n = 1 << 16  # about a second of machine code on the wave executor; GPU 1's queue needs milliseconds
        xb = gpu0.alloc(4 * n, MemFlags.DEVICE_LOCAL)
        done0 = gpu0.new_signal(0)
        q = gpu0.compute_queue().exec(prog, prog.pack_args(xb.va), (n // 64, 1, 1), (64, 1, 1))
        q.signal(done0, 1).submit(gpu0)
        done1 = gpu1.new_signal(0)
        gpu1.compute_queue().signal(done1, 1).submit(gpu1)
        done1.wait(1, timeout=WAIT_S)
        assert done0.value == 0, "the long kernel finished first: this check needs a longer kernel"
        done0.wait(1, timeout=60)
    finally:
        gpu1.close()
        gpu0.close()


def test_cs_partial_flush_and_end_of_pipe_releases_wait_for_dispatches(lld, tmp_path):
    """In hazard mode dispatches run late: a release after them still writes only once they finished."""
    from compiler import KernelCache, compile_kernel
    from compiler.ir import Kernel, f32
    k = Kernel("fill", local_size=(32, 1, 1))
    x = k.buffer("x", f32, writable=True)
    i = k.global_id(0)
    x[i] = i.cast(f32) + 3.0
    for seed in (0, 1, 2):
        d = KFDDevice(0, emulated_system("amd", ("gfx1100",), private=True, hazard=seed))
        try:
            prog = d.load_program(compile_kernel(k, "gfx1100", KernelCache(tmp_path), emulation=True))
            xb = d.alloc(4 * 256, MemFlags.DEVICE_LOCAL | MemFlags.HOST_VISIBLE)
            xb.numpy(np.float32)[:] = 0
            done = d.new_signal(0)
            d.compute_queue().exec(prog, prog.pack_args(xb.va), (8, 1, 1), (32, 1, 1)).signal(done, 1).submit(d)
            done.wait(1, timeout=WAIT_S)  # the signal is an end-of-pipe release: every workgroup ran before it
            np.testing.assert_array_equal(xb.numpy(np.float32), np.arange(256, dtype=np.float32) + 3)
        finally:
            d.close()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_an_idle_command_processor_does_not_burn_a_core(dev):
    signal_after(dev).wait(1, timeout=WAIT_S)
    pid = dev.system.kfd.cp().proc.pid
    time.sleep(0.1)  # past the queues' active window
    before, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(1.0)
    used = (cpu_seconds(pid) - before) / (time.monotonic() - t0)
    assert used < 0.1, f"the idle CP used {used:.0%} of a core"
