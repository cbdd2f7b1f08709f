"""Hazard mode catches missing barriers: what the stream orders stays ordered over many seeds, and the same stream
with its barrier removed gives wrong results for some seed (reproducibly: one seeded generator per queue).

Three barriers are checked: the compute queue's memory_barrier between dependent dispatches (CS_PARTIAL_FLUSH), its
cache invalidation after a copy-engine write (ACQUIRE_MEM), and the barrier the tensor layer's launch path relies on
to see what the copy queue uploaded (the memory_barrier at the head of every launch template).
"""
from __future__ import annotations

import numpy as np
import pytest

from compiler import KernelCache, compile_kernel
from compiler.ir import Kernel, f32
from drivers.amd.kfd import KFDDevice
from drivers.amd.queue import AMDComputeQueue
from emu.machine import emulated_system
from hcq.buffer import MemFlags

N, LOCAL = 256, 32  # 8 workgroups per dispatch: enough pieces for hazard mode to reorder
SEEDS = range(6)
WAIT_S = 20.0


def open_device(seed: int) -> KFDDevice:
    return KFDDevice(0, emulated_system("amd", ("gfx1100",), private=True, hazard=seed))


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    """produce: x[i] = i + 1; consume: y[i] = x[i] * 2 (one element per thread)."""
    from compiler.toolchain import lld_missing
    if lld_missing():  # a machine ./setup.sh did not prepare: AMD code objects cannot be linked
        pytest.skip(lld_missing())
    cache = KernelCache(tmp_path_factory.mktemp("kernels"))
    produce = Kernel("produce", local_size=(LOCAL, 1, 1))
    x = produce.buffer("x", f32, writable=True)
    i = produce.global_id(0)
    x[i] = i.cast(f32) + 1.0
    consume = Kernel("consume", local_size=(LOCAL, 1, 1))
    xs, y = consume.buffer("x", f32), consume.buffer("y", f32, writable=True)
    j = consume.global_id(0)
    y[j] = xs[j] * 2.0
    return [compile_kernel(k, "gfx1100", cache, emulation=True) for k in (produce, consume)]


def run_dependent_dispatches(dev: KFDDevice, kernels, barrier: bool) -> np.ndarray:
    """exec(produce writes X); [memory_barrier]; exec(consume reads X, writes Y) on one compute queue; returns Y."""
    produce, consume = (dev.load_program(k) for k in kernels)
    flags = MemFlags.DEVICE_LOCAL | MemFlags.HOST_VISIBLE
    xb, yb = dev.alloc(4 * N, flags), dev.alloc(4 * N, flags)
    xb.numpy(np.float32)[:] = 0
    yb.numpy(np.float32)[:] = -1
    q = dev.compute_queue().exec(produce, produce.pack_args(xb.va), (N // LOCAL, 1, 1), (LOCAL, 1, 1))
    if barrier:
        q.memory_barrier()
    q.exec(consume, consume.pack_args(xb.va, yb.va), (N // LOCAL, 1, 1), (LOCAL, 1, 1))
    q.signal(dev.timeline, dev.next_timeline_value()).submit(dev)
    dev.synchronize(timeout=WAIT_S)
    return yb.numpy(np.float32).copy()


EXPECTED = (np.arange(N, dtype=np.float32) + 1) * 2


def test_hazard_mode_reorders_dispatches_that_no_barrier_orders(kernels, monkeypatch):
    with_barrier, without = [], []
    for seed in SEEDS:
        dev = open_device(seed)
        try:
            with_barrier.append(np.array_equal(run_dependent_dispatches(dev, kernels, barrier=True), EXPECTED))
            counters = dev.system.kfd.cp_counters()
        finally:
            dev.close()
        assert counters["dispatches"] == 2 and counters["workgroups"] == 2 * N // LOCAL, counters
    with monkeypatch.context() as m:  # the driver with its barrier removed: the same stream without CS_PARTIAL_FLUSH
        m.setattr(AMDComputeQueue, "_encode_memory_barrier", lambda self: None)
        for seed in SEEDS:
            dev = open_device(seed)
            try:
                without.append(np.array_equal(run_dependent_dispatches(dev, kernels, barrier=True), EXPECTED))
            finally:
                dev.close()
    bad = [s for s, ok in zip(SEEDS, with_barrier) if not ok]
    assert not bad, f"a barrier-ordered stream gave wrong results for seeds {bad}"
    wrong = [s for s, ok in zip(SEEDS, without) if not ok]
    assert wrong, "no seed reordered the unfenced dispatches: hazard mode would let a missing barrier pass"
    # Reproducible: the first failing seed fails again.
    with monkeypatch.context() as m:
        m.setattr(AMDComputeQueue, "_encode_memory_barrier", lambda self: None)
        dev = open_device(wrong[0])
        try:
            assert not np.array_equal(run_dependent_dispatches(dev, kernels, barrier=True), EXPECTED)
        finally:
            dev.close()


def test_without_hazard_mode_a_dispatch_runs_at_once(kernels, monkeypatch):
    """The default CP is deterministic: unfenced dependent dispatches still run in stream order."""
    monkeypatch.setattr(AMDComputeQueue, "_encode_memory_barrier", lambda self: None)
    monkeypatch.delenv("BAREGPU_EMU_HAZARD", raising=False)
    dev = KFDDevice(0, emulated_system("amd", ("gfx1100",), private=True))
    try:
        assert np.array_equal(run_dependent_dispatches(dev, kernels, barrier=False), EXPECTED)
    finally:
        dev.close()


def copy_then_consume(dev: KFDDevice, kernels, invalidate: bool) -> np.ndarray:
    """The copy queue writes X into VRAM the host cannot map; the compute queue waits for it, [memory_barrier],
    then consume reads X."""
    _, consume = (dev.load_program(k) for k in kernels)
    staging = dev.alloc(4 * N, MemFlags.HOST_VISIBLE)
    staging.numpy(np.float32)[:] = np.arange(N, dtype=np.float32) + 1
    xb = dev.alloc(4 * N, MemFlags.DEVICE_LOCAL)  # no host view: only the engines see it
    yb = dev.alloc(4 * N, MemFlags.DEVICE_LOCAL | MemFlags.HOST_VISIBLE)
    copied = dev.new_signal(0)
    dev.copy_queue().copy(xb.va, staging.va, 4 * N).signal(copied, 1).submit(dev)
    q = dev.compute_queue().wait(copied, 1)
    if invalidate:
        q.memory_barrier()
    q.exec(consume, consume.pack_args(xb.va, yb.va), (N // LOCAL, 1, 1), (LOCAL, 1, 1))
    q.signal(dev.timeline, dev.next_timeline_value()).submit(dev)
    dev.synchronize(timeout=WAIT_S)
    return yb.numpy(np.float32).copy()


@pytest.mark.parametrize("seed", [0, 1])
def test_a_copy_engine_write_is_seen_only_after_an_invalidating_barrier(kernels, seed):
    dev = open_device(seed)
    try:
        assert np.array_equal(copy_then_consume(dev, kernels, invalidate=True), EXPECTED)
        stale = copy_then_consume(dev, kernels, invalidate=False)
        assert dev.system.kfd.cp_counters().get("hazard_stale_pages", 0) > 0
    finally:
        dev.close()
    assert not np.array_equal(stale, EXPECTED), "the kernel saw the copy without invalidating its caches"


@pytest.fixture
def tensor_devices():
    from tensor import DEVICES
    DEVICES.close()
    yield DEVICES
    DEVICES.close()


def test_the_tensor_launch_path_needs_its_barrier(tensor_devices, monkeypatch, lld):
    """Each launch template starts with memory_barrier(); its ACQUIRE_MEM is what makes the copy queue's uploads
    visible to the kernel (ordering alone comes from the timeline wait and the previous launch's end-of-pipe signal).
    Without it, hazard mode shows the kernel stale bytes; with it, the same computation is right."""
    from tensor import Tensor
    data = np.arange(64, dtype=np.float32)

    def compute(name: str, seed: int) -> np.ndarray:
        tensor_devices.add(name, KFDDevice(0, emulated_system("amd", ("gfx1100",), private=True, hazard=seed)))
        try:
            return (Tensor(data, device=name) + 1).numpy()
        finally:
            tensor_devices.close()

    for seed in (0, 1):
        np.testing.assert_array_equal(compute("AMD", seed), data + 1)
    monkeypatch.setattr(AMDComputeQueue, "_encode_memory_barrier", lambda self: None)
    for seed in (0, 1):
        assert not np.array_equal(compute("AMD", seed), data + 1), f"seed {seed}: the missing barrier passed"
