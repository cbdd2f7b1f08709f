"""The emulated amdkfd refuses what amdkfd 6.12 refuses, with the kernel's errno, and the KFD driver passes it.

Each rule names the upstream function it comes from (drivers/gpu/drm/amd/amdkfd in linux-source-6.12).
"""
from __future__ import annotations

import errno
import threading
import time
from typing import Any

import pytest

from autogen import kfd
from drivers.amd import pm4
from drivers.amd import sdma as sdma_packets
from drivers.amd.kfd import EVENT_PAGE_SIZE, KFDDevice
from drivers.amd.queue import AMDComputeQueue, AMDCopyQueue
from drivers.amd.topology import cwsr_sizes
from drivers.system import PAGE_SIZE, OSCallError
from emu.amd.kfd import ENOTSUPP, UNSIGNALED_EVENT_SLOT
from emu.machine import emulated_system
from hcq.buffer import MemFlags

H = MemFlags.HOST_VISIBLE | MemFlags.UNCACHED
# Hand-computed from kfd_queue_ctx_save_restore_size for the boards the emulated GPUs are shaped like:
# (ctl_stack_size, cwsr_size, num_xcc, bytes the CWSR area maps = ALIGN((cwsr + debug) * xcc, PAGE))
EXPECTED = {
    "gfx1100": (0xA000, 0xA000 + 96 * 0x75000, 1, 0xA000 + 96 * 0x75000 + 3072 * 32),  # 96 CUs, 3072 waves
    "gfx1201": (0x7000, 0x7000 + 64 * 0x75000, 1, 0x7000 + 64 * 0x75000 + 2048 * 32),  # 64 CUs, 2048 waves
    "gfx942": (0x3000, 0x3000 + 38 * 0x95000, 8, (0x3000 + 38 * 0x95000 + 1520 * 32) * 8),  # 38 CUs/XCC, 1520 waves
}


@pytest.fixture(scope="module")
def system():
    return emulated_system("amd", ("gfx1100", "gfx1201", "gfx942"), private=True)


@pytest.fixture(scope="module")
def dev(system):
    d = KFDDevice(0, system)
    yield d
    d.close()


def ioctl(dev: KFDDevice, request: int, args: object) -> None:
    dev.system.ioctl(dev.kfd_fd, request, args)


def refused(dev: KFDDevice, request: int, args: object, err: int, match: str) -> None:
    with pytest.raises(OSCallError, match=match) as e:
        ioctl(dev, request, args)
    assert e.value.errno == err, f"errno {e.value.errno}, the kernel returns {err}"


class Parts:
    """Buffers for one queue, shaped as amdkfd wants them unless a test changes one."""

    def __init__(self, dev: KFDDevice, compute: bool):
        self.dev, self.bufs = dev, []
        self.ring = self.alloc(1 << 16, H)
        self.ptrs = self.alloc(PAGE_SIZE, H)
        self.args = kfd.struct_kfd_ioctl_create_queue_args(
            ring_base_address=self.ring.va, ring_size=1 << 16, read_pointer_address=self.ptrs.va,
            write_pointer_address=self.ptrs.va + 16, gpu_id=dev.node.gpu_id, queue_percentage=100, queue_priority=7,
            queue_type=kfd.KFD_IOC_QUEUE_TYPE_COMPUTE if compute else kfd.KFD_IOC_QUEUE_TYPE_SDMA)
        if compute:
            sizes = cwsr_sizes(dev.node, PAGE_SIZE)
            eop, cwsr = self.alloc(0x1000, MemFlags.DEVICE_LOCAL), self.alloc(sizes.total, H)
            self.args.eop_buffer_address, self.args.eop_buffer_size = eop.va, 0x1000
            self.args.ctx_save_restore_address = cwsr.va
            self.args.ctx_save_restore_size, self.args.ctl_stack_size = sizes.ctx_save_restore_size, sizes.ctl_stack_size

    def alloc(self, size: int, flags: MemFlags) -> object:
        buf = self.dev.alloc(size, flags)
        self.bufs.append(buf)
        return buf

    def create(self) -> None:
        ioctl(self.dev, kfd.AMDKFD_IOC_CREATE_QUEUE, self.args)
        ioctl(self.dev, kfd.AMDKFD_IOC_DESTROY_QUEUE, kfd.struct_kfd_ioctl_destroy_queue_args(queue_id=self.args.queue_id))

    def free(self) -> None:
        for b in self.bufs:
            self.dev.free(b)


@pytest.fixture
def compute(dev):
    p = Parts(dev, True)
    yield p
    p.free()


@pytest.fixture
def sdma(dev):
    p = Parts(dev, False)
    yield p
    p.free()


# --- topology ---
@pytest.mark.parametrize("index,target", [(0, "gfx1100"), (1, "gfx1201"), (2, "gfx942")])
def test_topology_publishes_cwsr_sizes_of_a_real_board_and_the_driver_maps_them(system, index, target):
    ctl, cwsr, xcc, total = EXPECTED[target]
    d = KFDDevice(index, system)
    try:
        p = d.node.properties
        assert (p["ctl_stack_size"], p["cwsr_size"], p["num_xcc"]) == (ctl, cwsr, xcc)
        assert cwsr_sizes(d.node, PAGE_SIZE).total == total
        # the driver's compute queue was created (CREATE_QUEUE checks all of it) with an area of exactly that size
        assert any(b.size == total for b in d._queue_bufs), [b.size for b in d._queue_bufs]
    finally:
        d.close()


# --- CREATE_QUEUE: set_queue_properties_from_user ---
def test_percentage_and_priority_out_of_range_are_einval(dev, sdma):
    sdma.args.queue_percentage = 0x0165  # bits 8-15 are the PM4 target XCC; 0x65 = 101 > 100
    refused(dev, kfd.AMDKFD_IOC_CREATE_QUEUE, sdma.args, errno.EINVAL, "percentage 101")
    sdma.args.queue_percentage, sdma.args.queue_priority = 0x0164, 16
    refused(dev, kfd.AMDKFD_IOC_CREATE_QUEUE, sdma.args, errno.EINVAL, "priority 16")


def test_ring_size_must_be_a_power_of_two(dev, sdma):
    sdma.args.ring_size = 3 << 14
    refused(dev, kfd.AMDKFD_IOC_CREATE_QUEUE, sdma.args, errno.EINVAL, "power of 2")


def test_small_ring_sizes_are_clamped_to_the_minimum(dev, sdma):
    small = sdma.alloc(PAGE_SIZE, H)
    sdma.args.ring_base_address, sdma.args.ring_size = small.va, 0  # 0 passes; under 1024 is raised to 1024
    sdma.create()
    assert sdma.args.ring_size == kfd.KFD_MIN_QUEUE_RING_SIZE


def test_kernel_addresses_are_efault(dev, sdma):
    sdma.args.ring_base_address = 0xFFFF800000000000
    refused(dev, kfd.AMDKFD_IOC_CREATE_QUEUE, sdma.args, errno.EFAULT, "ring base")
    sdma.args.ring_base_address, sdma.args.write_pointer_address = sdma.ring.va, 1 << 63
    refused(dev, kfd.AMDKFD_IOC_CREATE_QUEUE, sdma.args, errno.EFAULT, "write pointer")


def test_unknown_queue_type_is_enotsupp(dev, sdma):
    sdma.args.queue_type = 9
    refused(dev, kfd.AMDKFD_IOC_CREATE_QUEUE, sdma.args, ENOTSUPP, "unknown queue type 9")


def test_queue_on_a_gpu_without_a_vm_is_esrch():
    s = emulated_system("amd", ("gfx1100", "gfx1201"), private=True)
    d = KFDDevice(0, s)
    try:
        p = Parts(d, False)
        p.args.gpu_id = s.kfd.gpus[1].gpu_id  # nobody acquired that GPU's VM
        refused(d, kfd.AMDKFD_IOC_CREATE_QUEUE, p.args, errno.ESRCH, "before ACQUIRE_VM")
        p.args.gpu_id = 0x7777
        refused(d, kfd.AMDKFD_IOC_CREATE_QUEUE, p.args, errno.EINVAL, "no GPU with gpu_id 0x7777")
    finally:
        d.close()


# --- CREATE_QUEUE: kfd_queue_acquire_buffers / kfd_queue_buffer_get ---
def test_ring_must_start_a_mapping_of_exactly_ring_size(dev, sdma):
    sdma.args.ring_base_address = sdma.ring.va + PAGE_SIZE
    refused(dev, kfd.AMDKFD_IOC_CREATE_QUEUE, sdma.args, errno.EINVAL, "ring .* must start a mapping")
    sdma.args.ring_base_address, sdma.args.ring_size = sdma.ring.va, 1 << 15  # the BO is 64 KiB
    refused(dev, kfd.AMDKFD_IOC_CREATE_QUEUE, sdma.args, errno.EINVAL, "exactly 0x8000 bytes")


def test_pointers_must_lie_in_a_one_page_mapping(dev, sdma):
    sdma.args.read_pointer_address = sdma.ring.va  # inside the 64 KiB ring BO: not a one-page mapping
    refused(dev, kfd.AMDKFD_IOC_CREATE_QUEUE, sdma.args, errno.EINVAL, "read pointer")
    sdma.args.read_pointer_address = 0x10000  # mapped nowhere
    refused(dev, kfd.AMDKFD_IOC_CREATE_QUEUE, sdma.args, errno.EINVAL, "not inside a buffer mapped")


def test_eop_buffer_smaller_than_the_nodes_is_einval(dev, compute):
    compute.args.eop_buffer_size = 0x800
    refused(dev, kfd.AMDKFD_IOC_CREATE_QUEUE, compute.args, errno.EINVAL, "EOP buffer size 0x800")


def test_ctl_stack_size_must_equal_the_nodes(dev, compute):
    compute.args.ctl_stack_size += PAGE_SIZE
    refused(dev, kfd.AMDKFD_IOC_CREATE_QUEUE, compute.args, errno.EINVAL, "ctl_stack_size")
    compute.args.ctl_stack_size = 0
    refused(dev, kfd.AMDKFD_IOC_CREATE_QUEUE, compute.args, errno.EINVAL, "ctl_stack_size 0x0")


def test_cwsr_size_below_the_nodes_is_einval(dev, compute):
    compute.args.ctx_save_restore_size -= PAGE_SIZE
    refused(dev, kfd.AMDKFD_IOC_CREATE_QUEUE, compute.args, errno.EINVAL, "less than the node's cwsr_size")


def test_a_cwsr_area_of_cwsr_size_only_is_einval(dev, compute):
    """What the driver used to do: map cwsr_size bytes, without the debug memory (upstream wants both)."""
    short = compute.alloc(compute.args.ctx_save_restore_size, H)
    compute.args.ctx_save_restore_address = short.va
    refused(dev, kfd.AMDKFD_IOC_CREATE_QUEUE, compute.args, errno.EINVAL, "CWSR area .* debug memory")


def test_the_queue_shaped_as_upstream_wants_is_created(dev, compute, sdma):
    compute.create()
    sdma.create()


# --- ALLOC_MEMORY_OF_GPU ---
def alloc_args(dev: KFDDevice, flags: int, size: int = PAGE_SIZE, mmap_offset: int = 0) -> object:
    return kfd.struct_kfd_ioctl_alloc_memory_of_gpu_args(va_addr=dev.heap.alloc(size), size=size,
                                                        gpu_id=dev.node.gpu_id, flags=flags, mmap_offset=mmap_offset)


def test_memory_flags_need_a_domain(dev):
    w = kfd.KFD_IOC_ALLOC_MEM_FLAGS_WRITABLE
    refused(dev, kfd.AMDKFD_IOC_ALLOC_MEMORY_OF_GPU, alloc_args(dev, w), errno.EINVAL, "name no memory domain")
    refused(dev, kfd.AMDKFD_IOC_ALLOC_MEMORY_OF_GPU, alloc_args(dev, w | kfd.KFD_IOC_ALLOC_MEM_FLAGS_USERPTR),
            errno.EINVAL, "USERPTR with no user address")
    refused(dev, kfd.AMDKFD_IOC_ALLOC_MEMORY_OF_GPU, alloc_args(dev, kfd.KFD_IOC_ALLOC_MEM_FLAGS_DOORBELL),
            errno.EINVAL, "doorbell BO is 0x2000 bytes")


def test_vram_wins_over_gtt_as_upstream_picks_it(dev, system):
    a = alloc_args(dev, kfd.KFD_IOC_ALLOC_MEM_FLAGS_VRAM | kfd.KFD_IOC_ALLOC_MEM_FLAGS_GTT)
    ioctl(dev, kfd.AMDKFD_IOC_ALLOC_MEMORY_OF_GPU, a)
    try:
        assert a.handle >> 32 == dev.node.gpu_id, "handles carry the gpu_id (MAKE_HANDLE)"
        assert system.kfd.gpus[0].bos[a.handle].pool is system.kfd.gpus[0].vram
    finally:
        ioctl(dev, kfd.AMDKFD_IOC_FREE_MEMORY_OF_GPU, kfd.struct_kfd_ioctl_free_memory_of_gpu_args(handle=a.handle))
        dev.heap.free(a.va_addr)


# --- events ---
def create_event(dev: KFDDevice, event_type: int, page: int = 0) -> object:
    a = kfd.struct_kfd_ioctl_create_event_args(event_type=event_type, auto_reset=1, event_page_offset=page)
    ioctl(dev, kfd.AMDKFD_IOC_CREATE_EVENT, a)
    return a


def test_the_event_page_is_set_once_and_cannot_be_freed(dev, system):
    page = dev._event_page
    assert system.kfd.signal_handle == page.handle and system.kfd.signal_mapped_size == EVENT_PAGE_SIZE
    refused(dev, kfd.AMDKFD_IOC_CREATE_EVENT,
            kfd.struct_kfd_ioctl_create_event_args(event_type=kfd.KFD_IOC_EVENT_SIGNAL, event_page_offset=page.handle),
            errno.EINVAL, "already set")
    refused(dev, kfd.AMDKFD_IOC_FREE_MEMORY_OF_GPU, kfd.struct_kfd_ioctl_free_memory_of_gpu_args(handle=page.handle),
            errno.EPERM, "event page")
    # the driver's slot is the event's: page VA + 8 * slot index; signal events take ids below 2**30, others above
    assert dev.signal_slot_va == page.va + 8 * dev.signal_event_id
    assert dev.signal_event_id < 1 << 30 <= dev.memory_event_id


def test_event_page_rules_on_a_fresh_process():
    s = emulated_system("amd", ("gfx1100",), private=True)
    d = KFDDevice(0, s)
    try:
        s.kfd._release_signal_page()  # as if this process had no event page yet
        small, vram = d.alloc(PAGE_SIZE, H), d.alloc(EVENT_PAGE_SIZE, MemFlags.DEVICE_LOCAL)
        refused(d, kfd.AMDKFD_IOC_CREATE_EVENT, kfd.struct_kfd_ioctl_create_event_args(event_page_offset=small.meta),
                errno.EINVAL, "too small")
        refused(d, kfd.AMDKFD_IOC_CREATE_EVENT, kfd.struct_kfd_ioctl_create_event_args(event_page_offset=vram.meta),
                errno.EINVAL, "not GTT")
        refused(d, kfd.AMDKFD_IOC_CREATE_EVENT, kfd.struct_kfd_ioctl_create_event_args(
            event_page_offset=0x7777 << 32 | 1), errno.EINVAL, "names no GPU")
        # no page at all: upstream hands out a kernel page of 256 slots the GPU cannot write
        ids = [create_event(d, kfd.KFD_IOC_EVENT_SIGNAL).event_id for _ in range(256)]
        assert sorted(ids) == list(range(256))
        refused(d, kfd.AMDKFD_IOC_CREATE_EVENT, kfd.struct_kfd_ioctl_create_event_args(), errno.ENOSPC, "256 signal")
    finally:
        d.close()


def test_set_event_only_signals_signal_events(dev):
    refused(dev, kfd.AMDKFD_IOC_SET_EVENT, kfd.struct_kfd_ioctl_set_event_args(event_id=dev.memory_event_id),
            errno.EINVAL, "not a signal event")


class SlotlessCompute(AMDComputeQueue):
    """A signal the way the driver used to write it: the value, then the interrupt, no mailbox slot."""

    def _encode_signal(self, signal: Any, value: Any) -> None:
        self._words(pm4.release_mem(signal.va, value, pm4.DATA_SEL_VALUE_64, pm4.INT_SEL_SEND_INT_AFTER_WRITE_CONFIRM,
                                    int_ctxid=self.device.signal_event_id, family=self.family))


class SlotlessCopy(AMDCopyQueue):
    """The SDMA form of the same: a fence of the value, then the trap, no mailbox slot."""

    def _encode_signal(self, signal: Any, value: Any) -> None:
        self._words(sdma_packets.fence(signal.va, value))
        self._words(sdma_packets.trap(self.device.signal_event_id))


def test_an_interrupt_whose_slot_is_unwritten_wakes_nobody(dev, system):
    """A queue that raises the interrupt without writing the mailbox slot (the driver's old signal) leaves the
    sleeper asleep, as amdkfd does; the driver's queues write the slot and wake it at once."""
    slots = system.kfd.signal_slots
    for make in (SlotlessCompute, SlotlessCopy):
        sig = dev.new_signal(0)
        before = system.kfd.counters.get("interrupts_ignored", 0)
        make(dev).signal(sig, 1).submit(dev)
        sig.wait(1, timeout=10)  # the value is written; now the interrupt reached the emulated KFD or will
        deadline = time.monotonic() + 10
        while system.kfd.counters.get("interrupts_ignored", 0) == before and time.monotonic() < deadline:
            time.sleep(0.005)
        assert system.kfd.counters.get("interrupts_ignored", 0) > before, "the interrupt never arrived"
        assert dev._wait_events([dev.signal_event_id], 200) == [], f"{make.__name__}: woke with the slot unwritten"
        assert slots[dev.signal_event_id] == UNSIGNALED_EVENT_SLOT
        sig.release()
    for make in (dev.compute_queue, dev.copy_queue):
        sig = dev.new_signal(0)
        make().signal(sig, 1).submit(dev)
        start = time.monotonic()
        got = dev._wait_events([dev.signal_event_id], 10_000)
        assert [e.event_id for e in got] == [dev.signal_event_id] and time.monotonic() - start < 5
        assert sig.value == 1
        assert slots[dev.signal_event_id] == UNSIGNALED_EVENT_SLOT, "the kernel acknowledges (resets) the slot"
        sig.release()


def test_the_drivers_sleeping_wait_wakes_promptly(dev):
    gate, done = dev.new_signal(0), dev.new_signal(0)
    dev.compute_queue().wait(gate, 1).signal(done, 1).submit(dev)
    opener = threading.Timer(0.2, lambda: setattr(gate, "value", 1))
    opener.start()
    try:
        start = time.monotonic()
        while done.value < 1 and time.monotonic() - start < 10:
            dev.sleep_on_signal(done, 1, 30.0)  # one slice is 30 s: only the interrupt can end it early
        waited = time.monotonic() - start
    finally:
        opener.join()
    assert done.value == 1 and waited < 5, f"woke after {waited:.2f} s"


def test_two_gpus_of_one_process_share_the_event_page(system, dev):
    other = KFDDevice(1, system)
    try:
        assert other._event_page is dev._event_page
        assert other.signal_event_id != dev.signal_event_id
        sig = other.new_signal(0)
        other.copy_queue().signal(sig, 1).submit(other)  # its slot lies in the page the first GPU allocated
        assert [e.event_id for e in other._wait_events([other.signal_event_id], 10_000)] == [other.signal_event_id]
        assert sig.value == 1
    finally:
        other.close()
    # the second GPU left: the page stays mapped on the first, whose signals still wake it
    assert dev.node.gpu_id in system.kfd.gpus[0].bos[dev._event_page.handle].mapped_on
    sig = dev.new_signal(0)
    dev.compute_queue().signal(sig, 1).submit(dev)
    assert [e.event_id for e in dev._wait_events([dev.signal_event_id], 10_000)] == [dev.signal_event_id]
    sig.release()


# --- doorbells: kfd_ioctl_create_queue's offset, kfd_mmap / kfd_doorbell_mmap ---
def test_doorbell_offsets_are_shaped_as_upstream_and_mapped_whole(dev, sdma):
    ioctl(dev, kfd.AMDKFD_IOC_CREATE_QUEUE, sdma.args)
    try:
        off = sdma.args.doorbell_offset
        assert off >> 62 == 0x3 and (off >> 46) & 0xFFFF == dev.node.gpu_id and off & 0x1FFF == off & 0x3FFFFFFFFFFF
        with pytest.raises(OSCallError, match="0x2000 bytes") as e:
            dev.system.mmap(dev.kfd_fd, 0x1000, 3, 1, off & ~0x1FFF)
        assert e.value.errno == errno.EINVAL
        with pytest.raises(OSCallError, match="names no GPU") as e:
            dev.system.mmap(dev.kfd_fd, 0x2000, 3, 1, 0x3 << 62 | 0x7777 << 46)
        assert e.value.errno == errno.ENODEV
    finally:
        ioctl(dev, kfd.AMDKFD_IOC_DESTROY_QUEUE, kfd.struct_kfd_ioctl_destroy_queue_args(queue_id=sdma.args.queue_id))
