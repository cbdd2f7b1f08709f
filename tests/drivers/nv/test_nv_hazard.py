"""The NV driver's barriers matter: in hazard mode the emulated GPU lands a semaphore release without RELEASE_WFI
before the kernel ahead of it ran (as a real one may), and the driver's signal, which waits for idle, never does.

The observation point is the channel's non-stall interrupt (the GPU calls it right after the release lands), so
what is seen does not depend on when the host thread wakes up."""
from __future__ import annotations

import numpy as np
import pytest

from compiler import KernelCache, compile_kernel
from compiler.ir import Kernel, f32
from drivers.nv import methods as m
from hcq.buffer import MemFlags

N = 4096


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    from compiler.ptxas import ptxas_missing
    if ptxas_missing():
        pytest.skip(ptxas_missing())
    k = Kernel("nv_hazard_fill", local_size=(64, 1, 1))
    out, n = k.buffer("out", f32, writable=True), k.scalar("n")
    i = k.global_id(0)
    with k.if_(i < n):
        out[i] = (i + 1).cast(f32)
    return compile_kernel(k, "sm_90", KernelCache(tmp_path_factory.mktemp("kernels")), emulation=True)


def complete_at_release(build, seed: int, driver_signal: bool) -> bool:
    """Launch, then release a signal and interrupt: was the kernel's output complete when the release landed?"""
    from drivers.nv.device import NVDevice
    from emu.machine import emulated_system
    system = emulated_system("nv", ("sm_90",), private=True, hazard=seed)
    dev = NVDevice(0, system)
    try:
        prog = dev.load_program(build)
        out = dev.alloc(4 * N, MemFlags.DEVICE_LOCAL | MemFlags.HOST_VISIBLE)
        want = np.arange(1, N + 1, dtype=np.float32)
        gpu, seen = system.nv.gpus[0], []
        forward = gpu.on_nonstall

        def on_nonstall(token: int) -> None:
            seen.append(bool((out.numpy(np.float32) == want).all()))
            forward(token)
        gpu.on_nonstall = on_nonstall
        sig = dev.new_signal(0)
        q = dev.compute_queue().exec(prog, prog.pack_args(out.va, N), (N // 64, 1, 1), (64, 1, 1))
        if driver_signal:
            q.signal(sig, 1)
        else:  # what a driver that forgot the barrier would encode
            q._words(m.semaphore_release(sig.va, 1, timestamp=True, wfi=False, host=dev.classes.channel))
            q._words(m.non_stall_interrupt())
        q.signal(dev.timeline, dev.next_timeline_value()).submit(dev)
        dev.synchronize(timeout=30)
        assert (out.numpy(np.float32) == want).all()  # it always runs in the end
        return seen[0]
    finally:
        dev.close()
        system.nv.close()


def test_the_drivers_signal_waits_for_the_kernel_and_a_release_without_wfi_does_not(build):
    assert all(complete_at_release(build, seed, driver_signal=True) for seed in range(6))
    assert not all(complete_at_release(build, seed, driver_signal=False) for seed in range(6))
