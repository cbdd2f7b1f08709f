"""Emulated amdkfd: /dev/kfd, the DRM render nodes and the KFD topology, behind the OS seam.

The ioctls take the same request numbers and struct layouts as the kernel's (from the generated bindings);
an argument of the wrong size is EINVAL, as a mismatched struct would be on Linux. GPU memory is backed by
memfd pools so another process (the emulated command processor) can map the same pages.
"""
from __future__ import annotations

import ctypes
import errno
import itertools
import json
import mmap as _mmap
import os
import socket
import subprocess
import sys
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

from autogen import kfd
from autogen.ioctl import decode as ioctl_decode
from drivers.system import OSCallError
from emu.system import EmulatedSystem, NodeHandler

PAGE = _mmap.PAGESIZE
DOORBELL_PAGE = 0x2000  # one doorbell page per GPU, 8-byte doorbells
KFD_MMAP_TYPE_MASK = 0x3 << 62  # kfd_priv.h: /dev/kfd mmap offsets carry their type in bits 62-63
KFD_MMAP_TYPE_DOORBELL = 0x3 << 62
KFD_MMAP_GPU_ID_SHIFT, KFD_GPU_ID_HASH_WIDTH = 46, 16  # kfd_priv.h KFD_MMAP_GPU_ID(gpu_id)
CP_TIMEOUT_S = 10.0
PR_SET_PTRACER = 0x59616D61  # linux/prctl.h
GC_BASES = (0x00001260, 0x0000A000, 0x0001C000, 0x02402C00)  # beige_goby_ip_offset.h GC_BASE, as gfx11 reports it
TOPOLOGY = "/sys/class/kfd/kfd/topology/nodes"
# gfx target -> the board it is shaped like: RX 7900 XTX (96 CUs, 6 SEs x 2 SAs), RX 9070 XT (64 CUs, 4 x 2),
# MI300X (304 CUs over 8 XCCs, 4 SEs of one SA each per XCC, 4 SIMDs per CU).
TARGETS = {
    "gfx1100": dict(gfx_target_version=110000, simd_count=192, vram=24 << 30, simd_per_cu=2, array_count=12,
                    simd_arrays_per_engine=2, cu_per_simd_array=8, num_xcc=1),
    "gfx1201": dict(gfx_target_version=120001, simd_count=128, vram=16 << 30, simd_per_cu=2, array_count=8,
                    simd_arrays_per_engine=2, cu_per_simd_array=8, num_xcc=1),
    "gfx942": dict(gfx_target_version=90402, simd_count=1216, vram=192 << 30, simd_per_cu=4, array_count=4,
                   simd_arrays_per_engine=1, cu_per_simd_array=10, num_xcc=8),
}
GPU_PAGE = 4096  # AMDGPU_GPU_PAGE_SIZE: VM mappings are looked up in 4 KiB units (kfd_queue_buffer_get)
TASK_SIZE_MAX = (1 << 47) - 4096  # x86-64 access_ok(): user pointers end below this
ENOTSUPP = 524  # the kernel-internal errno set_queue_properties_from_user returns for an unknown queue type
UNSIGNALED_EVENT_SLOT = (1 << 64) - 1  # kfd_events.h
KFD_SIGNAL_EVENT_LIMIT = kfd.KFD_SIGNAL_EVENT_LIMIT
KFD_FIRST_NONSIGNAL_EVENT_ID = (0x7FFFFFFF >> 1) + 1  # kfd_events.h: signal events take ids below it
KFD_MMAP_TYPE_EVENTS = 0x2 << 62  # kfd_priv.h: what CREATE_EVENT returns as a signal event's page offset
DOORBELL_SLICE = 0x2000  # kfd_doorbell_process_slice() on SOC15 and later: two pages of 8-byte doorbells


def _align(v: int, a: int) -> int:
    return -(-v // a) * a


def _access_ok(addr: int, size: int) -> bool:
    """access_ok(): the range lies in user space (the kernel only checks the range, not that it is mapped)."""
    return addr + size <= TASK_SIZE_MAX


def cwsr_sizes(board: dict[str, int]) -> dict[str, int]:
    """Context save/restore sizes amdkfd computes for a node (kfd_queue.c: kfd_queue_ctx_save_restore_size)."""
    gfxv = board["gfx_target_version"]
    cu_num = board["simd_count"] // board["simd_per_cu"] // board["num_xcc"]
    if gfxv < 100100:  # GFX_VERSION_NAVI10: older parts bound the wave count by shader arrays too
        wave_num = min(cu_num * 40, board["array_count"] // board["simd_arrays_per_engine"] * 512)
    else:
        wave_num = cu_num * 32
    # kfd_get_vgpr_size_per_cu: 512 KiB on gfx90a/gfx94x, 384 KiB on gfx1100/1101/1151/1200/1201, else 256 KiB
    if gfxv // 100 * 100 == 90400 or gfxv in (90010, 90008):
        vgpr = 0x80000
    elif gfxv in (110000, 110001, 110501, 120000, 120001):
        vgpr = 0x60000
    else:
        vgpr = 0x40000
    wg_data = _align(cu_num * (vgpr + 0x4000 + 0x10000 + 0x1000), PAGE)  # VGPR + SGPR + LDS + HWREG per CU
    ctl = wave_num * (12 if gfxv >= 100100 else 8) + 8  # CNTL_STACK_BYTES_PER_WAVE
    ctl = _align(40 + ctl, PAGE)  # SIZEOF_HSA_USER_CONTEXT_SAVE_AREA_HEADER
    if gfxv // 10000 * 10000 == 100000:
        ctl = min(ctl, 0x7000)  # gfx10 hardware limit
    return {"ctl_stack_size": ctl, "cwsr_size": ctl + wg_data,
            "debug_memory_size": _align(wave_num * 32, 64),  # DEBUGGER_BYTES_PER_WAVE, DEBUGGER_BYTES_ALIGN
            "eop_buffer_size": 4096}
EMULATED_VRAM_LIMIT = 4 << 30  # the pool is sparse, but keep what tests can touch modest
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]


class Pool:
    """A memfd-backed memory pool (VRAM of one GPU, or system memory for GTT) with a first-fit range allocator."""

    def __init__(self, name: str, size: int):
        self.name, self.size = name, size
        self.fd = os.memfd_create(f"baregpu-emu-{name}", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, size)
        self._free = [(0, size)]

    def alloc(self, size: int) -> int | None:
        for i, (off, n) in enumerate(self._free):
            if n >= size:
                self._free[i:i + 1] = [(off + size, n - size)] if n > size else []
                return off
        return None

    def release(self, off: int, size: int) -> None:
        self._free.append((off, size))
        self._free.sort()
        merged = []
        for o, n in self._free:
            if merged and merged[-1][0] + merged[-1][1] == o:
                merged[-1] = (merged[-1][0], merged[-1][1] + n)
            else:
                merged.append((o, n))
        self._free = merged
        # Hand the pages back to the kernel: a freed BO must not keep memory resident.
        _libc.fallocate(self.fd, 0x03, ctypes.c_long(off), ctypes.c_long(size))  # PUNCH_HOLE | KEEP_SIZE

    @property
    def free_bytes(self) -> int:
        return sum(n for _, n in self._free)


@dataclass
class BO:
    """A buffer object: GPU VA range, its backing, and where it is mapped."""
    handle: int
    gpu: "EmuGPU"
    va: int
    size: int
    flags: int
    pool: Pool | None  # None for userptr (backed by the process's own pages) and doorbells
    pool_off: int
    mmap_offset: int
    mapped_on: set[int] = field(default_factory=set)


@dataclass
class EmuQueue:
    """A queue KFD created: where its ring and pointers are, and its doorbell slot."""
    qid: int
    gpu: "EmuGPU"
    kind: str
    ring: int
    ring_size: int
    rptr: int
    wptr: int
    doorbell_off: int  # byte offset in the doorbell pool


@dataclass
class Event:
    """A KFD event: signal events (ids below KFD_FIRST_NONSIGNAL_EVENT_ID) own a mailbox slot in the signal page."""
    event_id: int
    event_type: int
    auto_reset: bool
    signaled: bool = False
    memory_exception: tuple[int, int] | None = None  # (va, gpu_id)
    hw_exception: int | None = None  # gpu_id


class EmuGPU:
    """One emulated AMD GPU: topology node, VRAM pool, render node, buffer objects."""

    def __init__(self, index: int, target: str, gpu_id: int, render_minor: int, vram_limit: int = EMULATED_VRAM_LIMIT):
        self.board = TARGETS[target]
        self.index, self.target, self.gpu_id, self.render_minor = index, target, gpu_id, render_minor
        self.gfx_version, self.simd_count = self.board["gfx_target_version"], self.board["simd_count"]
        self.num_xcc = self.board["num_xcc"]
        self.sizes = cwsr_sizes(self.board)
        self.vram = Pool(f"vram{index}", min(self.board["vram"], vram_limit))
        self.bos: dict[int, BO] = {}
        self.vm_acquired = False

    def properties(self) -> str:
        props = {"cpu_cores_count": 0, "simd_count": self.simd_count, "gfx_target_version": self.gfx_version,
                 "max_waves_per_simd": 16, "lds_size_in_kb": 64, "wave_front_size": 32 if self.gfx_version >= 100000 else 64,
                 # kfd_topology.c node_show: array_count is printed times NUM_XCC; cwsr_size and ctl_stack_size
                 # are what CREATE_QUEUE checks (debug_memory_size is not published: the thunk computes it)
                 "array_count": self.board["array_count"] * self.num_xcc,
                 "simd_arrays_per_engine": self.board["simd_arrays_per_engine"],
                 "cu_per_simd_array": self.board["cu_per_simd_array"], "simd_per_cu": self.board["simd_per_cu"],
                 "vendor_id": 0x1002, "device_id": 0x744C, "location_id": 0x300 + self.index * 0x100,
                 "domain": 0, "drm_render_minor": self.render_minor, "num_sdma_engines": 2, "num_sdma_xgmi_engines": 0,
                 "num_cp_queues": 8, "cwsr_size": self.sizes["cwsr_size"],
                 "ctl_stack_size": self.sizes["ctl_stack_size"], "num_xcc": self.num_xcc,
                 "local_mem_size": self.vram.size}
        return "".join(f"{k} {v}\n" for k, v in props.items())


class EmulatedKFD:
    """The emulated kernel side of KFD shared by every open file: GPUs, GTT pool, events, handles."""

    def __init__(self, targets: tuple[str, ...] = ("gfx1100",), vram_limit: int = EMULATED_VRAM_LIMIT,
                 hazard: int | None = None, host_kernels: bool = False):
        """`hazard`: a seed turns on the command processor's hazard mode (emu/amd/cp.py), None leaves it off.
        `host_kernels`: the fast mode, where dispatches run the host build a code object carries instead of its
        machine code on the wave executor (emu/amd/isa)."""
        unknown = [t for t in targets if t not in TARGETS]
        if unknown:
            raise ValueError(f"no emulated AMD GPU for {unknown}; emulated targets are {sorted(TARGETS)}")
        self.gpus = [EmuGPU(i, t, 0x1000 + 0x111 * (i + 1), 128 + i, vram_limit) for i, t in enumerate(targets)]
        self.open_files = 0
        self.gtt = Pool("gtt", 4 << 30)
        self.events: dict[int, Event] = {}
        # The process's signal page (kfd_events.c kfd_signal_page): 8-byte mailbox slots, one per signal event,
        # that the GPU writes before it interrupts. Set from the user's GTT BO by the first CREATE_EVENT that
        # passes event_page_offset, or a kernel page nobody else can write when a signal event comes first.
        self.signal_slots: memoryview | None = None
        self.signal_mapped_size = 0
        self.signal_handle = 0
        self.signal_event_count = 0
        self._signal_map: Any = None
        self._handles = itertools.count(1)
        self._offsets = itertools.count(0x100000)
        self.cv = threading.Condition()  # events (amdkfd's p->event_mutex and its wait queues)
        # Memory and queue ioctls of a process are serialized by amdkfd's p->mutex (kfd_chardev.c takes it in
        # alloc/free/map/unmap_memory and create/destroy_queue): two threads, or AMD and AMD:1 sharing the GTT
        # pool, must not interleave inside one.
        self.mutex = threading.RLock()
        self._count_lock = threading.Lock()
        self.counters: dict[str, int] = {}
        self.doorbells = Pool("doorbells", DOORBELL_PAGE * len(self.gpus))
        self.queues: dict[int, "EmuQueue"] = {}
        self.faults: list[dict[str, Any]] = []
        self._queue_ids = itertools.count(1)
        self._cp: CPLink | None = None
        self.hazard = hazard
        self.host_kernels = host_kernels
        weakref.finalize(self, EmulatedKFD._stop_cp, self.__dict__)

    @staticmethod
    def _stop_cp(state: dict[str, Any]) -> None:
        if state.get("_cp") is not None:
            state["_cp"].close()

    # --- the command processor process ---
    def cp(self) -> "CPLink":
        """The command processor process, started on first use."""
        if self._cp is None:
            self._cp = CPLink(self)
            for g in self.gpus:
                for bo in g.bos.values():
                    self._cp_map(bo)
        return self._cp

    def _cp_map(self, bo: "BO") -> None:
        if self._cp is None:
            return
        if bo.pool is not None:
            # host: whether the host can map it (GTT, or VRAM with PUBLIC): hazard mode's cache model tracks only
            # copy-engine writes into VRAM the host cannot see, so no host reader ever meets its stale view
            host = bo.pool is self.gtt or bool(bo.flags & kfd.KFD_IOC_ALLOC_MEM_FLAGS_PUBLIC)
            self._cp.post(op="map", va=bo.va, size=bo.size, pool=bo.pool.name, off=bo.pool_off, host=host)
        elif bo.flags & kfd.KFD_IOC_ALLOC_MEM_FLAGS_USERPTR:
            # The GPU reaches user pages by DMA; the emulated GPU reads and writes this process's memory.
            self._cp.post(op="userptr", va=bo.va, size=bo.size, host=bo.mmap_offset, pid=os.getpid())

    def _cp_unmap(self, bo: "BO") -> None:
        if self._cp is not None and (bo.pool is not None or bo.flags & kfd.KFD_IOC_ALLOC_MEM_FLAGS_USERPTR):
            self._cp.call(op="unmap", va=bo.va)

    def on_interrupt(self, ctxid: int, qid: int | None = None) -> None:
        """An interrupt from a queue (RELEASE_MEM int_sel, SDMA TRAP): signal the events whose mailbox slot the GPU
        wrote, as kfd_signal_event_interrupt does; an interrupt whose slot is still unsignalled wakes nobody."""
        self.count("interrupts")
        q = self.queues.get(qid) if qid is not None else None
        # kfd_int_process_v11.c: CP end-of-pipe context ids carry 32 valid bits, SDMA traps 28
        bits = 28 if q is not None and q.kind == "sdma" else 32
        with self.cv:
            slots = self.signal_slots
            if slots is None:  # no signal page: nothing can be signalled (kfd_signal_event_interrupt)
                self.count("interrupts_ignored")
                return
            hit = self._signaled_by_partial_id(ctxid, bits)
            woke = [hit] if hit is not None else [
                ev for eid, ev in sorted(self.events.items())  # the exhaustive search over signalled slots
                if eid < KFD_SIGNAL_EVENT_LIMIT and slots[eid] != UNSIGNALED_EVENT_SLOT]
            for ev in woke:
                self._set_from_interrupt(ev)
            if not woke:
                self.count("interrupts_ignored")
            self.cv.notify_all()

    def _signaled_by_partial_id(self, ctxid: int, bits: int) -> "Event | None":
        """kfd_events.c lookup_signaled_event_by_partial_id: the first signalled event matching the id's bits."""
        slots = self.signal_slots
        if slots is None or ctxid >= KFD_SIGNAL_EVENT_LIMIT:
            return None
        step = 1 << bits if bits <= 31 and (1 << bits) < KFD_SIGNAL_EVENT_LIMIT else KFD_SIGNAL_EVENT_LIMIT
        for eid in range(ctxid, KFD_SIGNAL_EVENT_LIMIT, step):
            if slots[eid] != UNSIGNALED_EVENT_SLOT and eid in self.events:
                return self.events[eid]
        return None

    def _set_from_interrupt(self, ev: "Event") -> None:
        """kfd_events.c set_event_from_interrupt: only signal and debug events are GPU-signalled; the slot is
        acknowledged (reset to unsignalled) before the event is set."""
        if ev.event_type in (kfd.KFD_IOC_EVENT_SIGNAL, kfd.KFD_IOC_EVENT_DEBUG_EVENT):
            if self.signal_slots is not None:
                self.signal_slots[ev.event_id] = UNSIGNALED_EVENT_SLOT
            ev.signaled = True

    def on_fault(self, msg: dict[str, Any]) -> None:
        """A queue faulted: page faults become memory exceptions, anything else a hardware exception."""
        self.count("faults")
        self.faults.append(msg)
        q = self.queues.get(msg["qid"])
        # No queue: the command processor itself died (it serves every GPU here), so the first GPU reports it.
        gpu_id = q.gpu.gpu_id if q else self.gpus[0].gpu_id
        if msg["kind"] == "page fault" and msg.get("va") is not None:
            self.raise_memory_exception(msg["va"], gpu_id)
        else:
            with self.cv:
                for ev in self.events.values():
                    if ev.event_type == kfd.KFD_IOC_EVENT_HW_EXCEPTION:
                        ev.signaled, ev.hw_exception = True, gpu_id
                self.cv.notify_all()

    def delay(self, qid: int, seconds: float) -> None:
        """Fault injection: the queue runs nothing for `seconds` (signals arrive late)."""
        self.cp().call(op="delay", qid=qid, seconds=seconds)

    def poison(self, va: int, size: int = 1) -> None:
        """Fault injection: GPU accesses to [va, va+size) page-fault although the memory is mapped."""
        self.cp().call(op="poison", va=va, size=size)

    def cp_counters(self) -> dict[str, int]:
        """Counters the command processor keeps (emu/amd/cp.py CommandProcessor says what each counts): packets
        executed by name (`pm4.X`, `sdma.X`), `doorbells_seen`, `wait_polls`, `bytes_copied`, `dispatches`,
        `workgroups`, `isa_instructions` (wave-instructions the wave executor ran), `kicks`, and in hazard mode
        `hazard_yields` and `hazard_stale_pages`."""
        return self.cp().call(op="counters").get("counters", {})

    def stall(self, qid: int, on: bool = True) -> None:
        """Fault injection: the queue's command processor stops consuming (a queue that never completes)."""
        self.cp().call(op="stall", qid=qid, on=on)

    def _release_signal_page(self) -> None:
        """Process teardown (kfd_event_free_process): events and the signal page go; the page's BO is freed."""
        with self.cv:
            self.events.clear()
            self.signal_event_count = self.signal_mapped_size = 0
            if self.signal_slots is not None:
                self.signal_slots.release()
            self.signal_slots = None
            if isinstance(self._signal_map, _mmap.mmap):
                self._signal_map.close()
            self._signal_map = None
            handle, self.signal_handle = self.signal_handle, 0
        for g in self.gpus:
            bo = g.bos.pop(handle, None)
            if bo is not None and bo.pool is not None:  # the command processor has stopped: nothing maps it now
                bo.pool.release(bo.pool_off, bo.size)

    def close(self) -> None:
        """What process exit does: queues are destroyed, events and the signal page freed, the command processor
        stops. (A real kfd_process outlives its fds until the mm goes; the emulator tears down at the last close.)"""
        for qid in list(self.queues):
            q = self.queues.pop(qid)
            if self._cp is not None and not self._cp.dead:  # a dead command processor has no queues left
                self._cp.call(op="destroy", qid=q.qid)
        if self._cp is not None:
            self._cp.close()
            self._cp = None
        self._release_signal_page()

    def install(self, system: EmulatedSystem) -> None:
        """Register the topology, /dev/kfd and the render nodes in an emulated system."""
        system.add_file(f"{TOPOLOGY}/0/gpu_id", "0\n")
        system.add_file(f"{TOPOLOGY}/0/name", "\n")
        system.add_file(f"{TOPOLOGY}/0/properties", "cpu_cores_count 2\nsimd_count 0\ngfx_target_version 0\n")
        for g in self.gpus:
            base = f"{TOPOLOGY}/{g.index + 1}"
            system.add_file(f"{base}/gpu_id", f"{g.gpu_id}\n")
            system.add_file(f"{base}/name", f"{g.target}\n")
            system.add_file(f"{base}/properties", g.properties())
            system.add_node(f"/dev/dri/renderD{g.render_minor}", lambda flags, g=g: RenderFile(self, g))
            # amdgpu's IP discovery in sysfs: GC segment bases (the first is what compute registers are relative to)
            system.add_file(f"/sys/class/drm/renderD{g.render_minor}/device/ip_discovery/die/0/GC/0/base_addr",
                            "".join(f"0x{b:08X}\n" for b in GC_BASES))
        system.add_node("/dev/kfd", lambda flags: KFDFile(self, system))

    def gpu(self, gpu_id: int) -> EmuGPU:
        for g in self.gpus:
            if g.gpu_id == gpu_id:
                return g
        raise OSCallError(errno.EINVAL, f"no GPU with gpu_id {gpu_id:#x}")

    def count(self, name: str, n: int = 1) -> None:
        with self._count_lock:  # ioctls of several threads and the interrupt thread count at once
            self.counters[name] = self.counters.get(name, 0) + n

    def raise_memory_exception(self, va: int, gpu_id: int) -> None:
        """A GPU page fault: wake every memory event with the faulting address (what amdkfd does on a VM fault)."""
        with self.cv:
            for ev in self.events.values():
                if ev.event_type == kfd.KFD_IOC_EVENT_MEMORY:
                    ev.signaled, ev.memory_exception = True, (va, gpu_id)
            self.cv.notify_all()


def _view(arg: Any, cls: type, request: int) -> Any:
    """The argument reinterpreted as the kernel's struct; a size that disagrees with the request is EINVAL."""
    size = ioctl_decode(request)[3]
    try:
        got: int | str = len(arg) if isinstance(arg, bytearray) else ctypes.sizeof(arg)
    except TypeError:  # not memory at all (an int, None): the kernel would read a bad pointer
        got = type(arg).__name__
    if got != size:
        raise OSCallError(errno.EFAULT if isinstance(got, str) else errno.EINVAL,
                          f"ioctl {request:#x} takes a {size}-byte argument, got {got}")
    return cls.from_buffer(arg)


EVENT_IOCTLS = frozenset((kfd.AMDKFD_IOC_CREATE_EVENT, kfd.AMDKFD_IOC_DESTROY_EVENT, kfd.AMDKFD_IOC_SET_EVENT,
                          kfd.AMDKFD_IOC_WAIT_EVENTS))


class KFDFile(NodeHandler):
    """One open /dev/kfd."""

    def __init__(self, dev: EmulatedKFD, system: EmulatedSystem):
        self.dev, self.system = dev, system
        dev.open_files += 1
        self.handlers: dict[int, tuple[type, Callable[[Any], None]]] = {
            kfd.AMDKFD_IOC_GET_VERSION: (kfd.struct_kfd_ioctl_get_version_args, self.get_version),
            kfd.AMDKFD_IOC_ACQUIRE_VM: (kfd.struct_kfd_ioctl_acquire_vm_args, self.acquire_vm),
            kfd.AMDKFD_IOC_ALLOC_MEMORY_OF_GPU: (kfd.struct_kfd_ioctl_alloc_memory_of_gpu_args, self.alloc_memory),
            kfd.AMDKFD_IOC_FREE_MEMORY_OF_GPU: (kfd.struct_kfd_ioctl_free_memory_of_gpu_args, self.free_memory),
            kfd.AMDKFD_IOC_MAP_MEMORY_TO_GPU: (kfd.struct_kfd_ioctl_map_memory_to_gpu_args, self.map_memory),
            kfd.AMDKFD_IOC_UNMAP_MEMORY_FROM_GPU: (kfd.struct_kfd_ioctl_unmap_memory_from_gpu_args, self.unmap_memory),
            kfd.AMDKFD_IOC_CREATE_EVENT: (kfd.struct_kfd_ioctl_create_event_args, self.create_event),
            kfd.AMDKFD_IOC_DESTROY_EVENT: (kfd.struct_kfd_ioctl_destroy_event_args, self.destroy_event),
            kfd.AMDKFD_IOC_SET_EVENT: (kfd.struct_kfd_ioctl_set_event_args, self.set_event),
            kfd.AMDKFD_IOC_WAIT_EVENTS: (kfd.struct_kfd_ioctl_wait_events_args, self.wait_events),
            kfd.AMDKFD_IOC_CREATE_QUEUE: (kfd.struct_kfd_ioctl_create_queue_args, self.create_queue),
            kfd.AMDKFD_IOC_DESTROY_QUEUE: (kfd.struct_kfd_ioctl_destroy_queue_args, self.destroy_queue),
        }

    def ioctl(self, request: int, arg: Any) -> int:
        entry = self.handlers.get(request)
        if entry is None:
            return super().ioctl(request, arg)
        cls, fn = entry
        self.dev.count("ioctls")
        if request in EVENT_IOCTLS:  # these take the event lock themselves, and WAIT_EVENTS sleeps
            fn(_view(arg, cls, request))
        else:
            with self.dev.mutex:
                fn(_view(arg, cls, request))
        return 0

    def _buffer_get(self, gpu: "EmuGPU", va: int, expected: int, what: str) -> BO:
        """kfd_queue.c kfd_queue_buffer_get: `va`'s GPU page must start a mapping of this VM and, when `expected`
        is a page or more, the mapping must be exactly `expected` bytes long."""
        page = va // GPU_PAGE
        bo = next((b for b in gpu.bos.values() if gpu.gpu_id in b.mapped_on and
                   b.va // GPU_PAGE <= page < (b.va + b.size) // GPU_PAGE), None)
        if bo is None:
            raise OSCallError(errno.EINVAL, f"CREATE_QUEUE: {what} at {va:#x} is not inside a buffer mapped on gpu "
                                            f"{gpu.gpu_id:#x}")
        pages = expected // GPU_PAGE
        if page != bo.va // GPU_PAGE or (pages and bo.size // GPU_PAGE != pages):
            raise OSCallError(errno.EINVAL, f"CREATE_QUEUE: {what} at {va:#x} must start a mapping of exactly "
                                            f"{expected:#x} bytes; it lies in BO {bo.handle:#x} [{bo.va:#x}, "
                                            f"{bo.va + bo.size:#x})")
        return bo

    def create_queue(self, a: Any) -> None:
        # kfd_chardev.c set_queue_properties_from_user, in its order
        if (a.queue_percentage & 0xFF) > kfd.KFD_MAX_QUEUE_PERCENTAGE:  # bits 8-15 are the PM4 target XCC
            raise OSCallError(errno.EINVAL, f"CREATE_QUEUE: queue percentage {a.queue_percentage & 0xFF} > "
                                            f"{kfd.KFD_MAX_QUEUE_PERCENTAGE}")
        if a.queue_priority > kfd.KFD_MAX_QUEUE_PRIORITY:
            raise OSCallError(errno.EINVAL, f"CREATE_QUEUE: queue priority {a.queue_priority} > "
                                            f"{kfd.KFD_MAX_QUEUE_PRIORITY}")
        if a.ring_base_address and not _access_ok(a.ring_base_address, 8):
            raise OSCallError(errno.EFAULT, f"CREATE_QUEUE: ring base {a.ring_base_address:#x} is not a user address")
        if a.ring_size & (a.ring_size - 1):
            raise OSCallError(errno.EINVAL, f"CREATE_QUEUE: ring size {a.ring_size:#x} must be a power of 2 or 0")
        if a.ring_size < kfd.KFD_MIN_QUEUE_RING_SIZE:  # clamped, and the clamped size goes back to the caller
            a.ring_size = kfd.KFD_MIN_QUEUE_RING_SIZE
        for what, addr in (("read pointer", a.read_pointer_address), ("write pointer", a.write_pointer_address),
                           ("EOP buffer", a.eop_buffer_address), ("CWSR area", a.ctx_save_restore_address)):
            if (addr or what.endswith("pointer")) and not _access_ok(addr, 4):
                raise OSCallError(errno.EFAULT, f"CREATE_QUEUE: {what} {addr:#x} is not a user address")
        kinds = {kfd.KFD_IOC_QUEUE_TYPE_COMPUTE: "compute", kfd.KFD_IOC_QUEUE_TYPE_SDMA: "sdma"}
        known = (kfd.KFD_IOC_QUEUE_TYPE_COMPUTE_AQL, kfd.KFD_IOC_QUEUE_TYPE_SDMA_XGMI,
                 kfd.KFD_IOC_QUEUE_TYPE_SDMA_BY_ENG_ID)
        if a.queue_type not in kinds and a.queue_type not in known:
            raise OSCallError(ENOTSUPP, f"CREATE_QUEUE: unknown queue type {a.queue_type}")
        gpu = self.dev.gpu(a.gpu_id)  # kfd_process_device_data_by_id: EINVAL
        if not gpu.vm_acquired:  # kfd_bind_process_to_device fails without a VM: the ioctl says ESRCH
            raise OSCallError(errno.ESRCH, f"CREATE_QUEUE on gpu {gpu.gpu_id:#x} before ACQUIRE_VM")
        if a.queue_type not in kinds:
            raise OSCallError(errno.EINVAL, f"CREATE_QUEUE: queue type {a.queue_type} is not emulated (PM4 compute "
                                            "and SDMA are)")
        # kfd_queue.c kfd_queue_acquire_buffers, in its order
        self._buffer_get(gpu, a.write_pointer_address, PAGE, "write pointer")
        self._buffer_get(gpu, a.read_pointer_address, PAGE, "read pointer")
        self._buffer_get(gpu, a.ring_base_address, a.ring_size, "ring")
        if kinds[a.queue_type] == "compute":
            if a.eop_buffer_address:  # "EOP buffer is not required for all ASICs"
                if a.eop_buffer_size < gpu.sizes["eop_buffer_size"]:
                    raise OSCallError(errno.EINVAL, f"CREATE_QUEUE: EOP buffer size {a.eop_buffer_size:#x} is less "
                                                    f"than the node's {gpu.sizes['eop_buffer_size']:#x}")
                self._buffer_get(gpu, a.eop_buffer_address, _align(a.eop_buffer_size, PAGE), "EOP buffer")
            if a.ctl_stack_size != gpu.sizes["ctl_stack_size"]:
                raise OSCallError(errno.EINVAL, f"CREATE_QUEUE: ctl_stack_size {a.ctl_stack_size:#x} is not the "
                                                f"node's {gpu.sizes['ctl_stack_size']:#x} (topology ctl_stack_size)")
            if a.ctx_save_restore_size < gpu.sizes["cwsr_size"]:
                raise OSCallError(errno.EINVAL, f"CREATE_QUEUE: ctx_save_restore_size {a.ctx_save_restore_size:#x} "
                                                f"is less than the node's cwsr_size {gpu.sizes['cwsr_size']:#x}")
            total = _align((a.ctx_save_restore_size + gpu.sizes["debug_memory_size"]) * gpu.num_xcc, PAGE)
            self._buffer_get(gpu, a.ctx_save_restore_address, total,
                             f"CWSR area (ALIGN((ctx_save_restore_size + debug memory {gpu.sizes['debug_memory_size']:#x})"
                             f" * {gpu.num_xcc} XCC, PAGE))")
        used = {q.doorbell_off for q in self.dev.queues.values() if q.gpu is gpu}
        slot = next((k for k in range(DOORBELL_PAGE // 8) if gpu.index * DOORBELL_PAGE + 8 * k not in used), None)
        if slot is None:
            raise OSCallError(errno.ENOSPC, "CREATE_QUEUE: no free doorbell")
        # The MQD keeps the ring base in 256-byte units, so the hardware reads from the address rounded down
        # (kfd_mqd_manager_v11.c update_mqd: cp_hqd_pq_base_lo = queue_address >> 8; sdmax_rlcx_rb_base likewise).
        ring, rptr, wptr = a.ring_base_address & ~0xFF, a.read_pointer_address, a.write_pointer_address
        q = EmuQueue(next(self.dev._queue_ids), gpu, kinds[a.queue_type], ring, a.ring_size, rptr, wptr,
                     gpu.index * DOORBELL_PAGE + 8 * slot)
        ctypes.c_uint64.from_address(rptr).value = 0
        ctypes.c_uint64.from_address(wptr).value = 0
        self.dev.cp().call(op="queue", qid=q.qid, kind=q.kind, ring=q.ring, ring_size=q.ring_size, rptr=q.rptr,
                           wptr=q.wptr, doorbell_off=q.doorbell_off, gc_base=GC_BASES[0], target=gpu.target)
        self.dev.queues[q.qid] = q
        a.queue_id = q.qid
        # kfd_ioctl_create_queue: the mmap type, the gpu_id, and (SOC15 on) the doorbell's byte offset in the
        # process's two-page doorbell slice
        a.doorbell_offset = KFD_MMAP_TYPE_DOORBELL | gpu.gpu_id << KFD_MMAP_GPU_ID_SHIFT | 8 * slot

    def destroy_queue(self, a: Any) -> None:
        q = self.dev.queues.pop(a.queue_id, None)
        if q is None:
            raise OSCallError(errno.EINVAL, f"DESTROY_QUEUE: no queue {a.queue_id}")
        self.dev.cp().call(op="destroy", qid=q.qid)

    def mmap(self, length: int, prot: int, flags: int, offset: int, addr: int) -> int:
        # kfd_chardev.c kfd_mmap: the offset's type bits pick the mapping, its gpu_id bits the device
        gpu_id = offset >> KFD_MMAP_GPU_ID_SHIFT & ((1 << KFD_GPU_ID_HASH_WIDTH) - 1)
        gpu = next((g for g in self.dev.gpus if g.gpu_id == gpu_id), None)
        kind = offset & KFD_MMAP_TYPE_MASK
        if kind != KFD_MMAP_TYPE_DOORBELL:  # events (kfd_event_mmap), reserved memory and MMIO are not emulated
            raise OSCallError(errno.EINVAL if kind == KFD_MMAP_TYPE_EVENTS else errno.EFAULT,
                              f"/dev/kfd mmap: offset {offset:#x} is not a doorbell mapping (the only kind emulated)")
        if gpu is None:
            raise OSCallError(errno.ENODEV, f"/dev/kfd mmap: offset {offset:#x} names no GPU (gpu_id {gpu_id:#x})")
        if length != DOORBELL_SLICE:  # kfd_doorbell_mmap: the whole slice of one device and process, exactly
            raise OSCallError(errno.EINVAL, f"/dev/kfd mmap: a doorbell mapping is {DOORBELL_SLICE:#x} bytes, "
                                            f"got {length:#x}")
        ret = _libc.mmap(addr or None, length, prot, flags | _mmap.MAP_SHARED, self.dev.doorbells.fd,
                         gpu.index * DOORBELL_PAGE)
        if ret in (None, ctypes.c_void_p(-1).value):
            raise OSCallError(ctypes.get_errno(), "mapping the doorbell page failed")
        self.dev.count("doorbell_maps")
        return ret

    def close(self) -> None:
        self.dev.open_files -= 1
        if self.dev.open_files == 0:  # the process let go of KFD: its queues die with it
            self.dev.close()

    def get_version(self, a: Any) -> None:
        a.major_version, a.minor_version = kfd.KFD_IOCTL_MAJOR_VERSION, kfd.KFD_IOCTL_MINOR_VERSION

    def acquire_vm(self, a: Any) -> None:
        gpu = self.dev.gpu(a.gpu_id)
        handler = self.system._fds.get(a.drm_fd)
        if not isinstance(handler, RenderFile) or handler.gpu is not gpu:
            raise OSCallError(errno.EINVAL, f"ACQUIRE_VM: fd {a.drm_fd} is not the render node of gpu {a.gpu_id:#x}")
        gpu.vm_acquired = True

    def alloc_memory(self, a: Any) -> None:
        gpu = self.dev.gpu(a.gpu_id)
        if not gpu.vm_acquired:
            raise OSCallError(errno.EINVAL, "ALLOC_MEMORY_OF_GPU before ACQUIRE_VM")
        if a.size == 0 or a.size % PAGE or a.va_addr % PAGE:
            raise OSCallError(errno.EINVAL, f"ALLOC_MEMORY_OF_GPU: va {a.va_addr:#x} and size {a.size:#x} must be "
                                            "non-zero multiples of the page size")
        for bo in gpu.bos.values():
            if a.va_addr < bo.va + bo.size and bo.va < a.va_addr + a.size:
                raise OSCallError(errno.EINVAL, f"va range {a.va_addr:#x}+{a.size:#x} overlaps BO {bo.handle:#x}")
        # amdgpu_amdkfd_gpuvm_alloc_memory_of_gpu picks the domain by priority: VRAM, then GTT, then USERPTR,
        # DOORBELL or MMIO_REMAP; no domain bit at all is EINVAL. (Unknown flag bits are not refused upstream.)
        f = a.flags
        if f & kfd.KFD_IOC_ALLOC_MEM_FLAGS_VRAM:
            kind = kfd.KFD_IOC_ALLOC_MEM_FLAGS_VRAM
        elif f & kfd.KFD_IOC_ALLOC_MEM_FLAGS_GTT:
            kind = kfd.KFD_IOC_ALLOC_MEM_FLAGS_GTT
        elif f & kfd.KFD_IOC_ALLOC_MEM_FLAGS_DOORBELL:  # kfd_ioctl_alloc_memory_of_gpu checks it before USERPTR
            kind = kfd.KFD_IOC_ALLOC_MEM_FLAGS_DOORBELL
            if a.size != DOORBELL_SLICE:  # kfd_ioctl_alloc_memory_of_gpu: the process's doorbell slice exactly
                raise OSCallError(errno.EINVAL, f"ALLOC_MEMORY_OF_GPU: a doorbell BO is {DOORBELL_SLICE:#x} bytes, "
                                                f"got {a.size:#x}")
        elif f & kfd.KFD_IOC_ALLOC_MEM_FLAGS_MMIO_REMAP:
            raise OSCallError(errno.ENOMEM, "ALLOC_MEMORY_OF_GPU: the emulated GPU has no MMIO remap page")
        elif f & kfd.KFD_IOC_ALLOC_MEM_FLAGS_USERPTR:
            kind = kfd.KFD_IOC_ALLOC_MEM_FLAGS_USERPTR
            if not a.mmap_offset:  # "if (!offset || !*offset) return -EINVAL"
                raise OSCallError(errno.EINVAL, "ALLOC_MEMORY_OF_GPU: USERPTR with no user address in mmap_offset")
        else:
            raise OSCallError(errno.EINVAL, f"ALLOC_MEMORY_OF_GPU: flags {a.flags:#x} name no memory domain "
                                            "(VRAM, GTT, USERPTR, DOORBELL or MMIO_REMAP)")
        pool, off = None, 0
        if kind in (kfd.KFD_IOC_ALLOC_MEM_FLAGS_VRAM, kfd.KFD_IOC_ALLOC_MEM_FLAGS_GTT):
            pool = gpu.vram if kind == kfd.KFD_IOC_ALLOC_MEM_FLAGS_VRAM else self.dev.gtt
            off = pool.alloc(a.size)
            if off is None:
                raise OSCallError(errno.ENOMEM, f"{pool.name}: {a.size} bytes requested, {pool.free_bytes} free")
        handle = gpu.gpu_id << 32 | next(self.dev._handles)  # kfd_priv.h MAKE_HANDLE(gpu_id, idr_handle)
        mmap_offset = a.mmap_offset if kind == kfd.KFD_IOC_ALLOC_MEM_FLAGS_USERPTR else next(self.dev._offsets) * PAGE
        gpu.bos[handle] = BO(handle, gpu, a.va_addr, a.size, a.flags, pool, off, mmap_offset)
        a.handle, a.mmap_offset = handle, mmap_offset
        self.dev.count("bytes_allocated", a.size)

    def _bo(self, handle: int) -> BO:
        gpu = next((g for g in self.dev.gpus if g.gpu_id == handle >> 32), None)  # kfd_priv.h GET_GPU_ID
        bo = gpu.bos.get(handle) if gpu is not None else None
        if bo is None:
            raise OSCallError(errno.EINVAL, f"no buffer object with handle {handle:#x}")
        return bo

    def free_memory(self, a: Any) -> None:
        if self.dev.signal_handle and a.handle == self.dev.signal_handle:  # kfd_ioctl_free_memory_of_gpu
            raise OSCallError(errno.EPERM, f"FREE_MEMORY_OF_GPU: BO {a.handle:#x} is the event page; the kernel "
                                           "frees it with the process")
        bo = self._bo(a.handle)
        if bo.mapped_on:
            raise OSCallError(errno.EBUSY, f"BO {bo.handle:#x} is still mapped on gpus {sorted(bo.mapped_on)}")
        del bo.gpu.bos[bo.handle]
        if bo.pool is not None:
            bo.pool.release(bo.pool_off, bo.size)

    def _device_ids(self, a: Any) -> list[int]:
        if a.n_devices == 0 or a.n_devices > len(self.dev.gpus) or not a.device_ids_array_ptr:
            raise OSCallError(errno.EINVAL, f"bad device list ({a.n_devices} devices at {a.device_ids_array_ptr:#x})")
        return list((ctypes.c_uint32 * a.n_devices).from_address(a.device_ids_array_ptr))

    def map_memory(self, a: Any) -> None:
        bo = self._bo(a.handle)
        for gid in self._device_ids(a)[a.n_success:]:
            self.dev.gpu(gid)
            if not bo.mapped_on:
                self.dev._cp_map(bo)
            bo.mapped_on.add(gid)
            a.n_success += 1

    def unmap_memory(self, a: Any) -> None:
        bo = self._bo(a.handle)
        for gid in self._device_ids(a)[a.n_success:]:
            if gid not in bo.mapped_on:
                raise OSCallError(errno.EINVAL, f"BO {bo.handle:#x} is not mapped on gpu {gid:#x}")
            bo.mapped_on.discard(gid)
            if not bo.mapped_on:
                self.dev._cp_unmap(bo)  # the GPU must not touch it once unmapped: wait for the CP to let go
            a.n_success += 1

    def _set_event_page(self, handle: int) -> None:
        """kfd_events.c kfd_kmap_event_page + kfd_event_page_set: the user's GTT BO becomes the signal page."""
        dev = self.dev
        if dev.signal_slots is not None:
            raise OSCallError(errno.EINVAL, "CREATE_EVENT: the event page is already set (kfd_kmap_event_page)")
        gpu = next((g for g in dev.gpus if g.gpu_id == handle >> 32), None)  # GET_GPU_ID(event_page_offset)
        if gpu is None:
            raise OSCallError(errno.EINVAL, f"CREATE_EVENT: event page handle {handle:#x} names no GPU")
        if not gpu.vm_acquired:  # kfd_bind_process_to_device: no VM yet
            raise OSCallError(errno.EINVAL, f"CREATE_EVENT: event page on gpu {gpu.gpu_id:#x} before ACQUIRE_VM")
        bo = gpu.bos.get(handle)
        if bo is None:  # kfd_process_device_translate_handle
            raise OSCallError(errno.EINVAL, f"CREATE_EVENT: no BO with handle {handle:#x} for the event page")
        # amdgpu_amdkfd_gpuvm_map_gtt_bo_to_kernel: userptr cannot be kmapped, and the BO is pinned in GTT
        if bo.pool is not dev.gtt:
            raise OSCallError(errno.EINVAL, f"CREATE_EVENT: event page BO {handle:#x} is not GTT memory "
                                            f"(flags {bo.flags:#x}); the kernel maps it through GTT")
        if bo.size < KFD_SIGNAL_EVENT_LIMIT * 8:  # kfd_event_page_set
            raise OSCallError(errno.EINVAL, f"CREATE_EVENT: event page of {bo.size} bytes is too small, need at least "
                                            f"{KFD_SIGNAL_EVENT_LIMIT * 8}")
        view = _mmap.mmap(bo.pool.fd, bo.size, _mmap.MAP_SHARED, _mmap.PROT_READ | _mmap.PROT_WRITE,
                          offset=bo.pool_off)
        view[:KFD_SIGNAL_EVENT_LIMIT * 8] = b"\xff" * (KFD_SIGNAL_EVENT_LIMIT * 8)  # every slot unsignalled
        with dev.cv:
            dev._signal_map, dev.signal_slots = view, memoryview(view).cast("Q")
            dev.signal_mapped_size, dev.signal_handle = bo.size, handle

    def create_event(self, a: Any) -> None:
        dev = self.dev
        if a.event_page_offset:
            with dev.mutex:  # kfd_ioctl_create_event takes p->mutex around kfd_kmap_event_page
                self._set_event_page(a.event_page_offset)
        with dev.cv:
            if a.event_type in (kfd.KFD_IOC_EVENT_SIGNAL, kfd.KFD_IOC_EVENT_DEBUG_EVENT):
                # kfd_events.c create_signal_event / allocate_event_notification_slot
                if dev.signal_mapped_size and dev.signal_event_count == dev.signal_mapped_size // 8:
                    raise OSCallError(errno.ENOSPC, f"CREATE_EVENT: all {dev.signal_mapped_size // 8} signal slots of "
                                                    "the event page are in use")
                if dev.signal_slots is None:  # allocate_signal_page: a kernel page the GPU cannot reach
                    dev._signal_map = bytearray(b"\xff" * (KFD_SIGNAL_EVENT_LIMIT * 8))
                    dev.signal_slots = memoryview(dev._signal_map).cast("Q")
                    dev.signal_mapped_size = 256 * 8  # "Oldest user mode expects 256 event slots"
                eid = next(i for i in range(dev.signal_mapped_size // 8) if i not in dev.events)
                dev.signal_slots[eid] = UNSIGNALED_EVENT_SLOT
                dev.signal_event_count += 1
                a.event_page_offset, a.event_slot_index = KFD_MMAP_TYPE_EVENTS, eid
            else:  # create_other_event: ids from KFD_FIRST_NONSIGNAL_EVENT_ID up
                eid = next(i for i in itertools.count(KFD_FIRST_NONSIGNAL_EVENT_ID) if i not in dev.events)
                a.event_page_offset = 0
            dev.events[eid] = Event(eid, a.event_type, bool(a.auto_reset))
        a.event_id, a.event_trigger_data = eid, eid

    def destroy_event(self, a: Any) -> None:
        with self.dev.cv:
            ev = self.dev.events.pop(a.event_id, None)
            if ev is None:
                raise OSCallError(errno.EINVAL, f"no event {a.event_id}")
            if ev.event_type in (kfd.KFD_IOC_EVENT_SIGNAL, kfd.KFD_IOC_EVENT_DEBUG_EVENT):
                self.dev.signal_event_count -= 1  # kfd_events.c destroy_event

    def set_event(self, a: Any) -> None:
        with self.dev.cv:
            ev = self.dev.events.get(a.event_id)
            if ev is None:
                raise OSCallError(errno.EINVAL, f"no event {a.event_id}")
            if ev.event_type != kfd.KFD_IOC_EVENT_SIGNAL:  # kfd_set_event: only signal events are CPU-signalled
                raise OSCallError(errno.EINVAL, f"SET_EVENT: event {a.event_id} (type {ev.event_type}) is not a "
                                                "signal event")
            ev.signaled = True
            self.dev.cv.notify_all()

    def wait_events(self, a: Any) -> None:
        datas = (kfd.struct_kfd_event_data * a.num_events).from_address(a.events_ptr)
        with self.dev.cv:
            evs = []
            for d in datas:
                ev = self.dev.events.get(d.event_id)
                if ev is None:
                    raise OSCallError(errno.EINVAL, f"WAIT_EVENTS: no event {d.event_id}")
                evs.append(ev)
            done = (lambda: all(e.signaled for e in evs)) if a.wait_for_all else (lambda: any(e.signaled for e in evs))
            if self.dev._cp is not None and not done():  # a process goes to sleep: make the CP look at doorbells now
                self.dev._cp.kick()
            ok = self.dev.cv.wait_for(done, timeout=a.timeout / 1000)
            a.wait_result = kfd.KFD_IOC_WAIT_RESULT_COMPLETE if ok else kfd.KFD_IOC_WAIT_RESULT_TIMEOUT
            for d, ev in zip(datas, evs):
                if ev.signaled and ev.memory_exception is not None:
                    d.memory_exception_data.va, d.memory_exception_data.gpu_id = ev.memory_exception
                    d.memory_exception_data.failure.NotPresent = 1
                    ev.memory_exception = None
                if ev.signaled and ev.hw_exception is not None:
                    d.hw_exception_data.gpu_id = ev.hw_exception
                    d.hw_exception_data.reset_type = kfd.KFD_HW_EXCEPTION_PER_ENGINE_RESET
                    ev.hw_exception = None
                if ev.signaled and ev.auto_reset:
                    ev.signaled = False


class RenderFile(NodeHandler):
    """One open /dev/dri/renderD*: maps buffer objects into the process by their mmap offsets."""

    def __init__(self, dev: EmulatedKFD, gpu: EmuGPU):
        self.dev, self.gpu = dev, gpu

    def mmap(self, length: int, prot: int, flags: int, offset: int, addr: int) -> int:
        bo = next((b for b in self.gpu.bos.values() if b.mmap_offset == offset), None)
        if bo is None or bo.pool is None:
            raise OSCallError(errno.EINVAL, f"render node mmap: no mappable BO at offset {offset:#x}")
        if length > bo.size:
            raise OSCallError(errno.EINVAL, f"render node mmap of {length:#x} bytes exceeds BO size {bo.size:#x}")
        ret = _libc.mmap(addr or None, length, prot, flags | _mmap.MAP_SHARED, bo.pool.fd, bo.pool_off)
        if ret in (None, ctypes.c_void_p(-1).value):
            raise OSCallError(ctypes.get_errno(), f"mapping BO {bo.handle:#x} failed")
        return ret


class CPLink:
    """The parent's end of the command processor process: synchronous control calls on one socket (the caller
    reads its own answer: no hand-over between threads), and a thread that receives interrupts and faults on
    another (the emulated interrupt handler)."""

    def __init__(self, dev: EmulatedKFD):
        self.dev = dev
        parent, child = socket.socketpair()
        self.ctl, ctl_child = socket.socketpair()
        pools = [dev.gtt, dev.doorbells] + [g.vram for g in dev.gpus]
        # The kick: an eventfd the emulated kernel writes when a process enters WAIT_EVENTS, so the CP's doorbell
        # watcher looks at once instead of after its idle back-off (the driver sees nothing of it).
        self.kick_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        # Posted maps: MAP_MEMORY_TO_GPU and userptr mappings are sent without waiting for the CP's answer; the
        # count of those sent is published in this shared word before the ioctl returns, and a CP queue that took
        # a doorbell waits until it has applied that many before it runs anything (emu/amd/cp.py), so no packet
        # the driver submits after the ioctl returned meets the memory unmapped: the ioctl's contract holds.
        self.posted_fd = os.memfd_create("baregpu-emu-cp-posted", os.MFD_CLOEXEC)
        os.ftruncate(self.posted_fd, PAGE)
        self._posted_map = _mmap.mmap(self.posted_fd, PAGE)
        self._posted = ctypes.c_uint64.from_buffer(self._posted_map)
        self.posts = 0
        fds = [child.fileno(), ctl_child.fileno(), self.kick_fd, self.posted_fd] + [p.fd for p in pools]
        args = ([sys.executable, "-m", "emu.amd.cp", str(child.fileno())] + [f"{p.name}={p.fd}" for p in pools] +
                [f"control={ctl_child.fileno()}", f"kick={self.kick_fd}", f"posted={self.posted_fd}"] +
                ([f"hazard={dev.hazard}"] if dev.hazard is not None else []) +
                (["host_kernels=1"] if dev.host_kernels else []))
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen(args, pass_fds=fds, env=env)
        child.close()
        ctl_child.close()
        self.ctl.settimeout(CP_TIMEOUT_S)
        self._ctl_buf = b""
        self._call_lock = threading.Lock()  # one control call at a time: its answer is the next line
        _libc.prctl(PR_SET_PTRACER, self.proc.pid, 0, 0, 0)  # userptr DMA: the CP may access this process's pages
        self.sock = parent
        self._seq = itertools.count(1)
        self._cv = threading.Condition()
        self.ready = False
        self.closing = False
        self.dead: str | None = None
        self._reader = threading.Thread(target=self._read, name="emu-amd-cp-irq", daemon=True)
        self._reader.start()
        with self._cv:
            if not self._cv.wait_for(lambda: self.ready or self.dead, CP_TIMEOUT_S) or self.dead:
                raise OSCallError(errno.EIO, f"emulated command processor did not start: {self.dead or 'timeout'}")

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                with self._cv:
                    self.dead = f"command processor exited (code {self.proc.wait()})"
                    self._cv.notify_all()
                if not self.closing:  # the GPU died under running work: every queue is lost
                    self.dev.on_fault({"qid": None, "kind": "hang", "message": self.dead, "va": None})
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                msg = json.loads(line)
                if msg["op"] == "ready":
                    with self._cv:
                        self.ready = True
                        self._cv.notify_all()
                elif msg["op"] == "interrupt":
                    self.dev.on_interrupt(msg["ctxid"], msg.get("qid"))
                elif msg["op"] == "fault":
                    self.dev.on_fault(msg)

    def kick(self) -> None:
        """Wake the CP's doorbell watcher (and queues polling a wait); never blocks."""
        if self.closing:  # the eventfd is (about to be) closed and its number may be reused
            return
        try:
            os.eventfd_write(self.kick_fd, 1)
        except (BlockingIOError, OSError):  # the counter is saturated (a kick is pending anyway) or closed
            pass

    def post(self, **msg: Any) -> None:
        """Send a control message the caller need not wait for (a mapping being added): it is counted in the shared
        posted word first, and the CP's queues wait for every counted message before running what the driver
        submits next. A message the CP cannot apply is reported as a fault (the GPU lost its mapping)."""
        with self._call_lock:
            if self.dead:
                raise OSCallError(errno.EIO, f"emulated {self.dead}")
            self.posts += 1
            self._posted.value = self.posts  # before the message: a queue never sees a message it was not told of
            try:
                self.ctl.sendall((json.dumps(dict(msg, posted=self.posts)) + "\n").encode())
            except socket.timeout:
                raise OSCallError(errno.ETIMEDOUT, f"emulated command processor did not take {msg['op']} in "
                                                   f"{CP_TIMEOUT_S} s") from None
            except OSError as e:
                raise OSCallError(errno.EIO, f"emulated {self.dead or 'command processor is gone'} ({e})") from None

    def call(self, **msg: Any) -> dict[str, Any]:
        """Send a control message and wait (bounded) until the CP applied it; returns its answer."""
        seq = next(self._seq)
        with self._call_lock:
            if self.dead:
                raise OSCallError(errno.EIO, f"emulated {self.dead}")
            try:
                self.ctl.sendall((json.dumps(dict(msg, seq=seq)) + "\n").encode())
                while b"\n" not in self._ctl_buf:
                    data = self.ctl.recv(1 << 16)
                    if not data:
                        raise OSError(errno.EPIPE, "the control socket closed")
                    self._ctl_buf += data
            except socket.timeout:
                raise OSCallError(errno.ETIMEDOUT, f"emulated command processor did not answer {msg['op']} in "
                                                   f"{CP_TIMEOUT_S} s") from None
            except OSError as e:  # the process is gone: what the kernel says of a GPU that stopped answering
                raise OSCallError(errno.EIO, f"emulated {self.dead or 'command processor is gone'} ({e})") from None
            line, self._ctl_buf = self._ctl_buf.split(b"\n", 1)
        answer = json.loads(line)
        if answer.get("seq") != seq:
            raise OSCallError(errno.EIO, f"emulated command processor answered {answer} to {msg['op']} #{seq}")
        if answer.get("error"):
            raise OSCallError(errno.EINVAL, f"emulated command processor refused {msg['op']}: {answer['error']}")
        return answer

    def close(self) -> None:
        self.closing = True
        try:
            with self._call_lock:
                self.ctl.sendall(b'{"op": "quit"}\n')
        except OSError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.sock.close()
        self.ctl.close()
        os.close(self.kick_fd)
        del self._posted
        self._posted_map.close()
        os.close(self.posted_fd)
