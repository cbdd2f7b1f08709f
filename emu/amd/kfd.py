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
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

from autogen import kfd
from autogen.ioctl import decode as ioctl_decode
from drivers.system import OSCallError
from emu.system import EmulatedSystem, NodeHandler

PAGE = _mmap.PAGESIZE
DOORBELL_PAGE = 0x2000  # one doorbell page per GPU, 8-byte doorbells
DOORBELL_MMAP_BASE = 0x40000000  # where /dev/kfd mmap offsets for doorbell pages start in this emulator
CP_TIMEOUT_S = 10.0
PR_SET_PTRACER = 0x59616D61  # linux/prctl.h
GC_BASES = (0x00001260, 0x0000A000, 0x0001C000, 0x02402C00)  # beige_goby_ip_offset.h GC_BASE, as gfx11 reports it
TOPOLOGY = "/sys/class/kfd/kfd/topology/nodes"
# gfx target -> (gfx_target_version, SIMD count, VRAM bytes), shaped like a real board of that family
TARGETS = {"gfx1100": (110000, 192, 24 << 30), "gfx1201": (120001, 128, 16 << 30), "gfx942": (90402, 1216, 192 << 30)}
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
    event_id: int
    event_type: int
    auto_reset: bool
    signaled: bool = False
    memory_exception: tuple[int, int] | None = None  # (va, gpu_id)
    hw_exception: int | None = None  # gpu_id


class EmuGPU:
    """One emulated AMD GPU: topology node, VRAM pool, render node, buffer objects."""

    def __init__(self, index: int, target: str, gpu_id: int, render_minor: int, vram_limit: int = EMULATED_VRAM_LIMIT):
        version, simds, vram = TARGETS[target]
        self.index, self.target, self.gpu_id, self.render_minor = index, target, gpu_id, render_minor
        self.gfx_version, self.simd_count = version, simds
        self.vram = Pool(f"vram{index}", min(vram, vram_limit))
        self.bos: dict[int, BO] = {}
        self.vm_acquired = False

    def properties(self) -> str:
        props = {"cpu_cores_count": 0, "simd_count": self.simd_count, "gfx_target_version": self.gfx_version,
                 "max_waves_per_simd": 16, "lds_size_in_kb": 64, "wave_front_size": 32 if self.gfx_version >= 100000 else 64,
                 "array_count": 4, "simd_arrays_per_engine": 2, "cu_per_simd_array": 12, "simd_per_cu": 2,
                 "vendor_id": 0x1002, "device_id": 0x744C, "location_id": 0x300 + self.index * 0x100,
                 "domain": 0, "drm_render_minor": self.render_minor, "num_sdma_engines": 2, "num_sdma_xgmi_engines": 0,
                 "num_cp_queues": 8, "local_mem_size": self.vram.size}
        return "".join(f"{k} {v}\n" for k, v in props.items())


class EmulatedKFD:
    """The emulated kernel side of KFD shared by every open file: GPUs, GTT pool, events, handles."""

    def __init__(self, targets: tuple[str, ...] = ("gfx1100",), vram_limit: int = EMULATED_VRAM_LIMIT):
        unknown = [t for t in targets if t not in TARGETS]
        if unknown:
            raise ValueError(f"no emulated AMD GPU for {unknown}; emulated targets are {sorted(TARGETS)}")
        self.gpus = [EmuGPU(i, t, 0x1000 + 0x111 * (i + 1), 128 + i, vram_limit) for i, t in enumerate(targets)]
        self.open_files = 0
        self.gtt = Pool("gtt", 4 << 30)
        self.events: dict[int, Event] = {}
        self._handles = itertools.count(1)
        self._offsets = itertools.count(0x100000)
        self._event_ids = itertools.count(1)
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
            self._cp.call(op="map", va=bo.va, size=bo.size, pool=bo.pool.name, off=bo.pool_off)
        elif bo.flags & kfd.KFD_IOC_ALLOC_MEM_FLAGS_USERPTR:
            # The GPU reaches user pages by DMA; the emulated GPU reads and writes this process's memory.
            self._cp.call(op="userptr", va=bo.va, size=bo.size, host=bo.mmap_offset, pid=os.getpid())

    def _cp_unmap(self, bo: "BO") -> None:
        if self._cp is not None and (bo.pool is not None or bo.flags & kfd.KFD_IOC_ALLOC_MEM_FLAGS_USERPTR):
            self._cp.call(op="unmap", va=bo.va)

    def on_interrupt(self, ctxid: int) -> None:
        """An interrupt from a queue (RELEASE_MEM int_sel, SDMA TRAP): signal the event it names."""
        self.count("interrupts")
        with self.cv:
            ev = self.events.get(ctxid)
            if ev is not None:
                ev.signaled = True
            self.cv.notify_all()

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
        """Counters the command processor keeps: packets by opcode, doorbells seen, bytes copied."""
        return self.cp().call(op="counters").get("counters", {})

    def stall(self, qid: int, on: bool = True) -> None:
        """Fault injection: the queue's command processor stops consuming (a queue that never completes)."""
        self.cp().call(op="stall", qid=qid, on=on)

    def close(self) -> None:
        """What process exit does: queues are destroyed and the command processor stops."""
        for qid in list(self.queues):
            q = self.queues.pop(qid)
            if self._cp is not None and not self._cp.dead:  # a dead command processor has no queues left
                self._cp.call(op="destroy", qid=q.qid)
        if self._cp is not None:
            self._cp.close()
            self._cp = None

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

    def _bo_at(self, gpu: "EmuGPU", va: int, size: int, what: str) -> BO:
        for bo in gpu.bos.values():
            if bo.va <= va and va + size <= bo.va + bo.size and bo.pool is not None:
                if gpu.gpu_id not in bo.mapped_on:
                    raise OSCallError(errno.EINVAL, f"CREATE_QUEUE: {what} at {va:#x} is not mapped to the GPU")
                return bo
        raise OSCallError(errno.EINVAL, f"CREATE_QUEUE: {what} [{va:#x}, {va + size:#x}) is not inside a GPU buffer")

    def create_queue(self, a: Any) -> None:
        gpu = self.dev.gpu(a.gpu_id)
        kinds = {kfd.KFD_IOC_QUEUE_TYPE_COMPUTE: "compute", kfd.KFD_IOC_QUEUE_TYPE_SDMA: "sdma"}
        if a.queue_type not in kinds:
            raise OSCallError(errno.EINVAL, f"CREATE_QUEUE: queue type {a.queue_type} is not emulated (PM4 compute and SDMA are)")
        if a.ring_size < 256 or a.ring_size & (a.ring_size - 1):
            raise OSCallError(errno.EINVAL, f"CREATE_QUEUE: ring size {a.ring_size:#x} must be a power of two >= 256")
        if a.queue_percentage > kfd.KFD_MAX_QUEUE_PERCENTAGE or a.queue_priority > kfd.KFD_MAX_QUEUE_PRIORITY:
            raise OSCallError(errno.EINVAL, "CREATE_QUEUE: percentage or priority out of range")
        self._bo_at(gpu, a.ring_base_address, a.ring_size, "ring")
        self._bo_at(gpu, a.read_pointer_address, 8, "read pointer")
        self._bo_at(gpu, a.write_pointer_address, 8, "write pointer")
        if kinds[a.queue_type] == "compute":
            if not a.eop_buffer_address or not a.eop_buffer_size:
                raise OSCallError(errno.EINVAL, "CREATE_QUEUE: compute queues need an EOP buffer")
            self._bo_at(gpu, a.eop_buffer_address, a.eop_buffer_size, "EOP buffer")
        used = {q.doorbell_off for q in self.dev.queues.values() if q.gpu is gpu}
        slot = next((k for k in range(DOORBELL_PAGE // 8) if gpu.index * DOORBELL_PAGE + 8 * k not in used), None)
        if slot is None:
            raise OSCallError(errno.ENOSPC, "CREATE_QUEUE: no free doorbell")
        q = EmuQueue(next(self.dev._queue_ids), gpu, kinds[a.queue_type], a.ring_base_address, a.ring_size,
                     a.read_pointer_address, a.write_pointer_address, gpu.index * DOORBELL_PAGE + 8 * slot)
        ctypes.c_uint64.from_address(a.read_pointer_address).value = 0
        ctypes.c_uint64.from_address(a.write_pointer_address).value = 0
        self.dev.cp().call(op="queue", qid=q.qid, kind=q.kind, ring=q.ring, ring_size=q.ring_size, rptr=q.rptr,
                           wptr=q.wptr, doorbell_off=q.doorbell_off, gc_base=GC_BASES[0], target=gpu.target)
        self.dev.queues[q.qid] = q
        a.queue_id = q.qid
        a.doorbell_offset = DOORBELL_MMAP_BASE + gpu.index * DOORBELL_PAGE + 8 * slot

    def destroy_queue(self, a: Any) -> None:
        q = self.dev.queues.pop(a.queue_id, None)
        if q is None:
            raise OSCallError(errno.EINVAL, f"DESTROY_QUEUE: no queue {a.queue_id}")
        self.dev.cp().call(op="destroy", qid=q.qid)

    def mmap(self, length: int, prot: int, flags: int, offset: int, addr: int) -> int:
        rel = offset - DOORBELL_MMAP_BASE
        if rel < 0 or rel % DOORBELL_PAGE or rel // DOORBELL_PAGE >= len(self.dev.gpus) or length > DOORBELL_PAGE:
            raise OSCallError(errno.EINVAL, f"/dev/kfd mmap: offset {offset:#x} is not a doorbell page")
        ret = _libc.mmap(addr or None, length, prot, flags | _mmap.MAP_SHARED, self.dev.doorbells.fd, rel)
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
        kind = a.flags & 0x1F
        pool, off = None, 0
        if kind == kfd.KFD_IOC_ALLOC_MEM_FLAGS_VRAM or kind == kfd.KFD_IOC_ALLOC_MEM_FLAGS_GTT:
            pool = gpu.vram if kind == kfd.KFD_IOC_ALLOC_MEM_FLAGS_VRAM else self.dev.gtt
            off = pool.alloc(a.size)
            if off is None:
                raise OSCallError(errno.ENOMEM, f"{pool.name}: {a.size} bytes requested, {pool.free_bytes} free")
        elif kind not in (kfd.KFD_IOC_ALLOC_MEM_FLAGS_USERPTR, kfd.KFD_IOC_ALLOC_MEM_FLAGS_DOORBELL):
            raise OSCallError(errno.EINVAL, f"ALLOC_MEMORY_OF_GPU: unsupported memory type flags {a.flags:#x}")
        handle = (gpu.index + 1) << 48 | next(self.dev._handles)
        mmap_offset = a.mmap_offset if kind == kfd.KFD_IOC_ALLOC_MEM_FLAGS_USERPTR else next(self.dev._offsets) * PAGE
        gpu.bos[handle] = BO(handle, gpu, a.va_addr, a.size, a.flags, pool, off, mmap_offset)
        a.handle, a.mmap_offset = handle, mmap_offset
        self.dev.count("bytes_allocated", a.size)

    def _bo(self, handle: int) -> BO:
        gpu_index = (handle >> 48) - 1
        bo = self.dev.gpus[gpu_index].bos.get(handle) if 0 <= gpu_index < len(self.dev.gpus) else None
        if bo is None:
            raise OSCallError(errno.EINVAL, f"no buffer object with handle {handle:#x}")
        return bo

    def free_memory(self, a: Any) -> None:
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

    def create_event(self, a: Any) -> None:
        ev = Event(next(self.dev._event_ids), a.event_type, bool(a.auto_reset))
        with self.dev.cv:
            self.dev.events[ev.event_id] = ev
        a.event_id, a.event_slot_index, a.event_trigger_data = ev.event_id, ev.event_id, ev.event_id

    def destroy_event(self, a: Any) -> None:
        with self.dev.cv:
            if self.dev.events.pop(a.event_id, None) is None:
                raise OSCallError(errno.EINVAL, f"no event {a.event_id}")

    def set_event(self, a: Any) -> None:
        with self.dev.cv:
            ev = self.dev.events.get(a.event_id)
            if ev is None:
                raise OSCallError(errno.EINVAL, f"no event {a.event_id}")
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
    """The parent's end of the command processor process: synchronous control calls, and a thread that
    receives interrupts and faults (the emulated interrupt handler)."""

    def __init__(self, dev: EmulatedKFD):
        self.dev = dev
        parent, child = socket.socketpair()
        pools = [dev.gtt, dev.doorbells] + [g.vram for g in dev.gpus]
        fds = [child.fileno()] + [p.fd for p in pools]
        args = [sys.executable, "-m", "emu.amd.cp", str(child.fileno())] + [f"{p.name}={p.fd}" for p in pools]
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen(args, pass_fds=fds, env=env)
        child.close()
        _libc.prctl(PR_SET_PTRACER, self.proc.pid, 0, 0, 0)  # userptr DMA: the CP may access this process's pages
        self.sock = parent
        self._seq = itertools.count(1)
        self._acks: dict[int, dict[str, Any]] = {}
        self._cv = threading.Condition()
        self._send_lock = threading.Lock()
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
                if msg["op"] == "ack":
                    with self._cv:
                        self._acks[msg["seq"]] = msg
                        self._cv.notify_all()
                elif msg["op"] == "ready":
                    with self._cv:
                        self.ready = True
                        self._cv.notify_all()
                elif msg["op"] == "interrupt":
                    self.dev.on_interrupt(msg["ctxid"])
                elif msg["op"] == "fault":
                    self.dev.on_fault(msg)

    def call(self, **msg: Any) -> dict[str, Any]:
        """Send a control message and wait (bounded) until the CP applied it; returns its answer."""
        seq = next(self._seq)
        try:
            with self._send_lock:
                self.sock.sendall((json.dumps(dict(msg, seq=seq)) + "\n").encode())
        except OSError as e:  # the process is gone: what the kernel says of a GPU that stopped answering
            raise OSCallError(errno.EIO, f"emulated {self.dead or 'command processor is gone'} ({e})") from None
        with self._cv:
            if not self._cv.wait_for(lambda: seq in self._acks or self.dead, CP_TIMEOUT_S):
                raise OSCallError(errno.ETIMEDOUT, f"emulated command processor did not answer {msg['op']} in {CP_TIMEOUT_S} s")
            if self.dead:
                raise OSCallError(errno.EIO, f"emulated {self.dead}")
            answer = self._acks.pop(seq)
        if answer.get("error"):
            raise OSCallError(errno.EINVAL, f"emulated command processor refused {msg['op']}: {answer['error']}")
        return answer

    def close(self) -> None:
        self.closing = True
        try:
            with self._send_lock:
                self.sock.sendall(b'{"op": "quit"}\n')
        except OSError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.sock.close()
