"""The KFD driver's bring-up and memory path against the emulated amdkfd."""
from __future__ import annotations

import ctypes
import os

import pytest

from autogen import kfd
from drivers.amd.kfd import KFDDevice, KFDError
from drivers.lock import DeviceBusyError
from drivers.system import OSCallError
from emu.machine import emulated_system
from hcq.buffer import MemFlags
from hcq.errors import InvalidHandleError, OutOfMemoryError


@pytest.fixture
def system():
    # Private: tests open the same GPU several times and must not meet other processes' emulated GPUs.
    return emulated_system("amd", ("gfx1100", "gfx1201", "gfx942"), private=True)


@pytest.fixture
def dev(system):
    d = KFDDevice(0, system)
    yield d
    d.close()


def test_bring_up_follows_the_kfd_order_and_reads_targets(system):
    devs = [KFDDevice(i, system) for i in range(3)]
    try:
        assert [d.target for d in devs] == ["gfx1100", "gfx1201", "gfx942"]
        ioctls = [c.args[1] for c in system.calls_named("ioctl")]
        assert ioctls[:2] == [kfd.AMDKFD_IOC_GET_VERSION, kfd.AMDKFD_IOC_ACQUIRE_VM]
        opened = [c.args[0] for c in system.calls_named("open")]
        assert opened[:2] == ["/dev/kfd", "/dev/dri/renderD128"]
    finally:
        for d in devs:
            d.close()
    with pytest.raises(KFDError, match="AMD:3 does not exist: this machine has 3"):
        KFDDevice(3, system)


def test_host_visible_memory_is_the_gpus_memory(dev, system):
    buf = dev.alloc(3 * 4096 + 5, MemFlags.DEVICE_LOCAL | MemFlags.HOST_VISIBLE)
    buf.cpu_view()[100:104] = b"GPU!"
    gpu = system.kfd.gpus[0]
    bo = gpu.bos[buf.meta]
    assert bo.va == buf.va and bo.mapped_on == {dev.node.gpu_id}
    assert os.pread(bo.pool.fd, 4, bo.pool_off + 100) == b"GPU!", "the CPU view must alias the emulated VRAM"
    assert dev.alloc(4096).cpu_view() is None, "device-local memory without HOST_VISIBLE has no CPU view"


def test_gtt_memory_comes_from_system_memory(dev, system):
    buf = dev.alloc(4096, MemFlags.HOST_VISIBLE)
    assert system.kfd.gpus[0].bos[buf.meta].pool is system.kfd.gtt


def test_vram_exhaustion_names_the_memory_and_recovers(dev, system):
    pool = system.kfd.gpus[0].vram
    big = dev.alloc(pool.free_bytes - (1 << 20))
    with pytest.raises(OutOfMemoryError, match="out of VRAM allocating"):
        dev.alloc(2 << 20)
    dev.free(big)
    again = dev.alloc(2 << 20)
    assert again.size == 2 << 20


def test_free_twice_and_foreign_buffers_are_errors(dev, system):
    buf = dev.alloc(4096)
    dev.free(buf)
    with pytest.raises(InvalidHandleError, match="not a live allocation"):
        dev.free(buf)
    assert buf.meta not in system.kfd.gpus[0].bos, "the BO must be gone from the kernel"
    with pytest.raises(InvalidHandleError):
        buf.view(0, 16)


def test_one_process_owns_one_gpu(dev, system):
    with pytest.raises(DeviceBusyError, match=f"process {os.getpid()}"):
        KFDDevice(0, system)
    other = KFDDevice(1, system)  # a different GPU is free
    other.close()


def test_close_frees_everything_and_releases_the_gpu(system):
    d = KFDDevice(0, system)
    for _ in range(3):
        d.alloc(8192, MemFlags.HOST_VISIBLE)
    d.close()
    assert system.kfd.gpus[0].bos == {}
    d2 = KFDDevice(0, system)  # the lock was released
    d2.close()


def test_emulated_kfd_rejects_a_struct_of_the_wrong_size(system):
    fd = system.open("/dev/kfd")
    with pytest.raises(OSCallError, match="takes a 8-byte argument, got 4"):
        system.ioctl(fd, kfd.AMDKFD_IOC_GET_VERSION, ctypes.c_uint32())
    system.close(fd)


def test_alloc_before_acquire_vm_is_refused(system):
    fd = system.open("/dev/kfd")
    args = kfd.struct_kfd_ioctl_alloc_memory_of_gpu_args(va_addr=1 << 40, size=4096, gpu_id=system.kfd.gpus[0].gpu_id,
                                                         flags=kfd.KFD_IOC_ALLOC_MEM_FLAGS_VRAM)
    with pytest.raises(OSCallError, match="before ACQUIRE_VM"):
        system.ioctl(fd, kfd.AMDKFD_IOC_ALLOC_MEMORY_OF_GPU, args)
    system.close(fd)


def test_userptr_host_memory_is_copied_by_the_gpu_without_staging(system):
    import mmap as _mmap
    d = KFDDevice(0, system)
    try:
        host = _mmap.mmap(-1, 8192)  # page-aligned host memory, as a numpy array's pages would be
        host_addr = ctypes.addressof(ctypes.c_char.from_buffer(host))
        host[:8192] = bytes(range(256)) * 32
        up = d.map_host(host_addr, 8192)
        assert up.va != host_addr and bytes(up.cpu_view()[:4]) == bytes(range(4))
        vram = d.alloc(8192, MemFlags.DEVICE_LOCAL | MemFlags.HOST_VISIBLE)
        d.copy_queue().copy(vram.va, up.va, 8192).signal(d.timeline, d.next_timeline_value()).submit(d)
        d.synchronize(timeout=10)
        assert bytes(vram.cpu_view()) == bytes(range(256)) * 32
        vram.cpu_view()[:4] = b"back"
        d.copy_queue().copy(up.va + 4096, vram.va, 4).signal(d.timeline, d.next_timeline_value()).submit(d)
        d.synchronize(timeout=10)
        assert host[4096:4100] == b"back", "the GPU wrote the host's own pages"
        d.free(up)
        del up
        with pytest.raises(ValueError, match="page-aligned"):
            d.map_host(4097, 10)
    finally:
        d.close()
