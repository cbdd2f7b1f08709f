"""AMD through KFD: open a GPU, acquire its VM, and manage its memory (VRAM, GTT, userptr) and events.

Order of operations (amdkfd's uapi, include/uapi/linux/kfd_ioctl.h): open /dev/kfd and check the ioctl
version; pick a GPU node from the topology; open its render node and ACQUIRE_VM with it; then allocate
buffer objects at virtual addresses we choose (ALLOC_MEMORY_OF_GPU), map host-visible ones into the process
through the render node at the same address, and MAP_MEMORY_TO_GPU. Queues are built on top of this.
"""
from __future__ import annotations

import ctypes
import errno
import threading
import weakref
from dataclasses import dataclass
from typing import Any

from autogen import kfd
from drivers.amd.topology import KFDNode, cwsr_sizes, read_topology
from drivers.lock import DeviceLock
from drivers.system import MAP_ANONYMOUS, MAP_FIXED, MAP_NORESERVE, MAP_PRIVATE, MAP_SHARED, PAGE_SIZE, OSCallError, System
from hcq.allocator import VAHeap
from hcq.buffer import Buffer, MemFlags
from hcq.device import Device, DeviceFault
from hcq.errors import HCQError, InvalidHandleError, OutOfMemoryError
from hcq.signal import SIGNAL_SIZE, Signal, SignalPool
from drivers.amd.queue import AMDComputeQueue, AMDCopyQueue, Ring

VA_WINDOW = 64 << 30  # GPU virtual addresses we hand out; reserved PROT_NONE so nothing else lands there
VA_HINT = 0x200000000000  # far below the mmap area, so the same range is free in other processes too
VA_WINDOW_TRIES = 256  # windows tried upward from VA_HINT (one per open device) before taking what mmap gives
COMPUTE_RING_SIZE = 1 << 18  # bytes, for each of the compute and SDMA rings
EOP_SIZE = 0x1000  # end-of-pipe buffer per compute queue (amdkfd's default for gfx10+)
MIN_KFD_VERSION = (1, 14)  # AMDKFD_IOC_ALLOC_MEMORY_OF_GPU with mmap offsets through the render node
SIGNAL_SLOTS = 4096
DOORBELL_MAP_SIZE = 0x2000  # KFD maps a process's doorbells as one 8 KiB page per GPU
PROT_NONE, PROT_RW = 0, 3
EVENT_PAGE_SIZE = kfd.KFD_SIGNAL_EVENT_LIMIT * 8  # kfd_events.c kfd_event_page_set refuses a smaller page
EVENT_PAGE_FLAGS = (kfd.KFD_IOC_ALLOC_MEM_FLAGS_GTT | kfd.KFD_IOC_ALLOC_MEM_FLAGS_WRITABLE |  # the kernel kmaps it
                    kfd.KFD_IOC_ALLOC_MEM_FLAGS_NO_SUBSTITUTE | kfd.KFD_IOC_ALLOC_MEM_FLAGS_UNCACHED |
                    kfd.KFD_IOC_ALLOC_MEM_FLAGS_COHERENT)


class KFDError(HCQError):
    """A KFD call failed; the message names the ioctl, the GPU and what to do."""


# COMPUTE_TMPRING_SIZE.WAVESIZE unit, 256 bytes on GFX11 and GFX12 alike (Mesa ac_gpu_info.c
# scratch_wavesize_granularity_shift = gfx_level >= GFX11 ? 8 : 10; LLVM test CodeGen/AMDGPU/scratch-simple.ll checks
# the same WAVESIZE for gfx1100 and gfx1200 under one GFX11PLUS prefix; tinygrad ops_amd.py uses 256 for both).
SCRATCH_GRANULE = 256


@dataclass(frozen=True)
class ScratchArea:
    """A device's scratch memory for architected flat scratch: `waves_per_engine` slots per shader engine, each
    `wave_bytes` long; what COMPUTE_TMPRING_SIZE and COMPUTE_DISPATCH_SCRATCH_BASE describe."""
    buffer: Buffer
    waves_per_engine: int
    engines: int
    wave_bytes: int

    def tmpring_size(self, gc: Any) -> int:
        """COMPUTE_TMPRING_SIZE: WAVES (slots per SE) and WAVESIZE (256-byte units) at the target's field masks."""
        return ((self.waves_per_engine << gc.COMPUTE_TMPRING_SIZE__WAVES__SHIFT) & gc.COMPUTE_TMPRING_SIZE__WAVES_MASK |
                ((self.wave_bytes // SCRATCH_GRANULE) << gc.COMPUTE_TMPRING_SIZE__WAVESIZE__SHIFT)
                & gc.COMPUTE_TMPRING_SIZE__WAVESIZE_MASK)


def _gc_registers(target: str) -> Any:
    """The generated GC register module for a target's graphics IP (None where the PM4 path does not apply)."""
    if target.startswith("gfx11"):
        from autogen import gc_11_0_0 as gc
    elif target.startswith("gfx12"):
        from autogen import gc_12_0_0 as gc
    else:
        return None  # gfx9 parts (gfx942) take AQL packets, which are not built yet
    return gc


def memory_flags(flags: MemFlags) -> int:
    """KFD allocation flags for our memory flags: VRAM when device-local, GTT otherwise."""
    kflags = kfd.KFD_IOC_ALLOC_MEM_FLAGS_WRITABLE | kfd.KFD_IOC_ALLOC_MEM_FLAGS_NO_SUBSTITUTE
    if flags & MemFlags.DEVICE_LOCAL:
        kflags |= kfd.KFD_IOC_ALLOC_MEM_FLAGS_VRAM
        if flags & MemFlags.HOST_VISIBLE:
            kflags |= kfd.KFD_IOC_ALLOC_MEM_FLAGS_PUBLIC  # CPU access through the BAR
    else:
        kflags |= kfd.KFD_IOC_ALLOC_MEM_FLAGS_GTT
    if flags & MemFlags.UNCACHED:
        kflags |= kfd.KFD_IOC_ALLOC_MEM_FLAGS_UNCACHED | kfd.KFD_IOC_ALLOC_MEM_FLAGS_COHERENT
    if flags & MemFlags.EXECUTABLE:
        kflags |= kfd.KFD_IOC_ALLOC_MEM_FLAGS_EXECUTABLE
    return kflags


def unbuilt_paths(target: str) -> str | None:
    """What this driver lacks for a GPU of gfx `target` (a user's first program needs the copy queue, the compute
    queue and the compiler's target), or None when every path is built. gpu_probe asks this before it calls a
    device ready to use."""
    from compiler import TARGETS
    missing = []
    if _gc_registers(target) is None:
        missing.append("its compute queues take AQL packets, which are not built yet (PM4 compute queues are built "
                       "for gfx11 and gfx12)")
    if target not in TARGETS:
        missing.append(f"the kernel compiler has no {target} target")
    return f"the AMD (KFD) driver is not built for {target} yet: {'; '.join(missing)}" if missing else None


class EventPage:
    """The process's KFD event page: one 8-byte mailbox slot per signal event, which the GPU writes before it
    interrupts (amdkfd acts on an interrupt only when the event's slot is signalled, kfd_signal_event_interrupt).

    amdkfd keeps one page per process (kfd_kmap_event_page: a second one is EINVAL), so every KFDDevice of one
    System shares it: the first allocates it in GTT at a VA reserved outside every device's window, each maps it
    on its GPU. The kernel refuses to free it (EPERM); it goes with the process.
    """

    def __init__(self, handle: int, va: int):
        self.handle, self.va = handle, va
        self.set = False  # whether a CREATE_EVENT has handed it to the kernel yet
        self.gpus: set[int] = set()


_event_pages: "weakref.WeakKeyDictionary[System, EventPage]" = weakref.WeakKeyDictionary()
_event_pages_lock = threading.Lock()


class KFDDevice(Device):
    """One AMD GPU through KFD. `index` picks among the topology's GPU nodes.

    Threads: memory (the VA heap, the buffer map and the ioctls that back them) changes under one lock per
    device; submissions go through the device's submit_lock and each ring's own lock (see hcq.device.Device).
    """

    def __init__(self, index: int = 0, system: System | None = None, lock_wait: float | None = None,
                 ring_size: int = COMPUTE_RING_SIZE):
        from drivers.emulation import system_for
        self.system = system or system_for("amd")
        nodes = read_topology(self.system)
        if not nodes:
            raise KFDError("no AMD GPU in the KFD topology (/sys/class/kfd/kfd/topology): is amdgpu loaded with KFD? "
                           "Run python -m tools.gpu_probe for details")
        if not 0 <= index < len(nodes):
            raise KFDError(f"AMD:{index} does not exist: this machine has {len(nodes)} KFD GPU(s)")
        self.node: KFDNode = nodes[index]
        super().__init__(f"AMD:{index}" if index else "AMD")
        self.target = self.node.target
        self.ring_size = ring_size
        self.gc = _gc_registers(self.target)
        # The key is the lock file's stable identity (emulated GPUs lock under keys of their own); the label names
        # the GPU as users know it.
        label = ", ".join(filter(None, (self.target, self.node.pci_address and f"PCI {self.node.pci_address}",
                                        "emulated" if self.system.emulated else "")))
        key = ("emulated-" if self.system.emulated else "") + f"kfd-gpu-{self.node.gpu_id}"
        self.lock = DeviceLock(key, self.system.lock_dir, wait=lock_wait, label=f"AMD:{index} ({label})").acquire()
        self._mem_lock = threading.RLock()  # the VA heap, _buffers and the BO ioctls change together
        self._sleep_cv = threading.Condition()  # threads waiting while another sleeps in WAIT_EVENTS for them all
        self._event_sleeper = False
        self._fds: list[int] = []
        self._buffers: dict[int, Buffer] = {}
        self._queue_bufs = []
        self._scratch_areas: list[ScratchArea] = []  # the newest last; freed with every other buffer at close
        self._window = 0
        self.kfd_fd = None
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        self.lock.on_release(self.close)

    def _open(self) -> None:
        self.kfd_fd = self._open_node("/dev/kfd")
        ver = kfd.struct_kfd_ioctl_get_version_args()
        self._ioctl("GET_VERSION", kfd.AMDKFD_IOC_GET_VERSION, ver)
        if (ver.major_version, ver.minor_version) < MIN_KFD_VERSION:
            raise KFDError(f"KFD ioctl interface {ver.major_version}.{ver.minor_version} is older than "
                           f"{MIN_KFD_VERSION[0]}.{MIN_KFD_VERSION[1]}: update the kernel (6.1 or newer)")
        self.drm_fd = self._open_node(self.node.render_node)
        self.gc_base = self._gc_base()
        self._ioctl("ACQUIRE_VM", kfd.AMDKFD_IOC_ACQUIRE_VM,
                    kfd.struct_kfd_ioctl_acquire_vm_args(drm_fd=self.drm_fd, gpu_id=self.node.gpu_id))
        self._window = self._reserve_va_window()
        self.heap = VAHeap(self._window, VA_WINDOW, PAGE_SIZE, f"{self.name} VA")
        sig_buf = self.alloc(SIGNAL_SIZE * SIGNAL_SLOTS, MemFlags.HOST_VISIBLE | MemFlags.UNCACHED)
        self.signals = SignalPool(sig_buf.host_addr, sig_buf.va, sig_buf.size, self)
        self._event_ids: list[int] = []
        self._event_slots: dict[int, int] = {}
        self.signal_event_id, self.signal_slot_va = self._create_signal_event()
        self.memory_event_id = self._create_event(kfd.KFD_IOC_EVENT_MEMORY)
        self.hw_event_id = self._create_event(kfd.KFD_IOC_EVENT_HW_EXCEPTION)
        self._doorbell_page = 0
        self._queue_bufs: list[Buffer] = []
        self._create_rings()

    # --- events ---
    def _create_event(self, event_type: int, page: int = 0) -> int:
        args = kfd.struct_kfd_ioctl_create_event_args(event_type=event_type, auto_reset=1, node_id=self.node.index,
                                                      event_page_offset=page)
        self._ioctl("CREATE_EVENT", kfd.AMDKFD_IOC_CREATE_EVENT, args)
        self._event_ids.append(args.event_id)
        self._event_slots[args.event_id] = args.event_slot_index
        return args.event_id

    def _create_signal_event(self) -> tuple[int, int]:
        """This device's signal event and the GPU address of its mailbox slot in the process's event page (the
        first signal event of the process hands the page to KFD: kfd_ioctl_create_event's event_page_offset)."""
        with _event_pages_lock:
            page = self._join_event_page()
            event_id = self._create_event(kfd.KFD_IOC_EVENT_SIGNAL, 0 if page.set else page.handle)
            page.set = True
        return event_id, page.va + 8 * self._event_slots[event_id]

    def _join_event_page(self) -> EventPage:
        page = _event_pages.get(self.system)
        if page is not None:
            try:
                self._map_to_gpu(page.handle, True)
                page.gpus.add(self.node.gpu_id)
                self._event_page = page
                return page
            except KFDError:  # the kernel let go of the process's state (its last fd closed): start afresh
                self.system.munmap(page.va, EVENT_PAGE_SIZE)
                del _event_pages[self.system]
        va = self.system.mmap(-1, EVENT_PAGE_SIZE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, 0)
        args = kfd.struct_kfd_ioctl_alloc_memory_of_gpu_args(va_addr=va, size=EVENT_PAGE_SIZE, gpu_id=self.node.gpu_id,
                                                             flags=EVENT_PAGE_FLAGS)
        try:
            self._ioctl("ALLOC_MEMORY_OF_GPU", kfd.AMDKFD_IOC_ALLOC_MEMORY_OF_GPU, args)
            self._map_to_gpu(args.handle, True)
        except BaseException:
            self.system.munmap(va, EVENT_PAGE_SIZE)
            raise
        page = _event_pages[self.system] = EventPage(args.handle, va)
        page.gpus.add(self.node.gpu_id)
        self._event_page = page
        return page

    def _leave_events(self) -> None:
        """Destroy this device's events and unmap the event page from its GPU (the page stays the process's)."""
        for event_id in getattr(self, "_event_ids", []):
            try:
                self._ioctl("DESTROY_EVENT", kfd.AMDKFD_IOC_DESTROY_EVENT,
                            kfd.struct_kfd_ioctl_destroy_event_args(event_id=event_id))
            except KFDError:
                pass  # closing anyway: the kernel destroys events with the process
        self._event_ids = []
        page = getattr(self, "_event_page", None)
        if page is not None:
            with _event_pages_lock:
                page.gpus.discard(self.node.gpu_id)
                try:
                    self._map_to_gpu(page.handle, False)
                except (KFDError, OSCallError):
                    pass  # closing anyway
            self._event_page = None

    def _wait_events(self, ids: list[int], timeout_ms: int) -> list[Any]:
        data = (kfd.struct_kfd_event_data * len(ids))()
        for d, i in zip(data, ids):
            d.event_id = i
        args = kfd.struct_kfd_ioctl_wait_events_args(events_ptr=ctypes.addressof(data), num_events=len(ids),
                                                     wait_for_all=0, timeout=timeout_ms)
        self._ioctl("WAIT_EVENTS", kfd.AMDKFD_IOC_WAIT_EVENTS, args)
        return list(data) if args.wait_result == kfd.KFD_IOC_WAIT_RESULT_COMPLETE else []

    def sleep_on_signal(self, signal: Signal, value: int, timeout_s: float) -> None:
        """Sleep in KFD until a queue interrupts (a signal was written) or faults, or the slice ends.

        One thread at a time sleeps in WAIT_EVENTS; the others wait for it to return, so an auto-reset event
        that wakes one waiter wakes every thread (each then re-reads its own signal).
        """
        self.check()
        with self._sleep_cv:
            if self._event_sleeper:
                if signal.value < value:
                    self._sleep_cv.wait(timeout_s)
                self.check()
                return
            self._event_sleeper = True
        try:
            ids = [self.signal_event_id, self.memory_event_id, self.hw_event_id]
            try:
                events = self._wait_events(ids, max(1, int(timeout_s * 1000)))
            except KFDError:
                self.check()  # closed by another thread meanwhile: say that, not that its fd went away
                raise
            self._handle_exceptions(events)
        finally:
            with self._sleep_cv:
                self._event_sleeper = False
                self._sleep_cv.notify_all()
        self.check()

    def poll_faults(self) -> None:
        """Turn pending KFD memory and hardware exceptions into the device's fault state."""
        self._handle_exceptions(self._wait_events([self.memory_event_id, self.hw_event_id], 0))

    def _handle_exceptions(self, events: list[Any]) -> None:
        # Exception events auto-reset when a wait returns them, so whoever waited must record them here.
        for d in events:
            if d.event_id == self.memory_event_id:
                exc = d.memory_exception_data
                if exc.va or exc.failure.NotPresent or exc.failure.ReadOnly or exc.failure.NoExecute:
                    self.set_fault(self.fault_from_exception(exc.va))
            elif d.event_id == self.hw_event_id and d.hw_exception_data.gpu_id:
                self.set_fault(DeviceFault("hardware exception", "a queue hung or met a bad packet; the queues' "
                                           "state is in details", details={"queues": [q.debug_state().describe()
                                                                                     for q in self.hw_queues()]}))

    # --- queues ---
    def _create_rings(self) -> None:
        self.compute_ring = self._create_ring("compute", kfd.KFD_IOC_QUEUE_TYPE_COMPUTE, self.ring_size)
        self.sdma_ring = self._create_ring("sdma", kfd.KFD_IOC_QUEUE_TYPE_SDMA, self.ring_size)

    def _reserve_va_window(self) -> int:
        """Reserve VA_WINDOW bytes for our GPU addresses, low in the address space: a window the kernel places in
        the mmap area (a hint already taken by another device of this process) could collide with what another
        process sharing our VAs (the emulated GPU's command processor: its thread stacks, its heap) has there."""
        flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE
        for k in range(VA_WINDOW_TRIES):
            hint = VA_HINT + k * VA_WINDOW
            addr = self.system.mmap(-1, VA_WINDOW, PROT_NONE, flags, 0, hint)
            if addr == hint:
                return addr
            self.system.munmap(addr, VA_WINDOW)  # taken: try the next window up
        return self.system.mmap(-1, VA_WINDOW, PROT_NONE, flags, 0, VA_HINT)

    def _create_ring(self, kind: str, queue_type: int, size: int) -> Ring:
        ring = self.alloc(size, MemFlags.HOST_VISIBLE | MemFlags.UNCACHED)
        ptrs = self.alloc(PAGE_SIZE, MemFlags.HOST_VISIBLE | MemFlags.UNCACHED)
        bufs = [ring, ptrs]
        args = kfd.struct_kfd_ioctl_create_queue_args(
            ring_base_address=ring.va, ring_size=size, read_pointer_address=ptrs.va, write_pointer_address=ptrs.va + 16,
            gpu_id=self.node.gpu_id, queue_type=queue_type, queue_percentage=kfd.KFD_MAX_QUEUE_PERCENTAGE,
            queue_priority=7)
        if kind == "compute":
            eop = self.alloc(EOP_SIZE, MemFlags.DEVICE_LOCAL)
            bufs.append(eop)
            args.eop_buffer_address, args.eop_buffer_size = eop.va, EOP_SIZE
            # The CWSR area: the node's cwsr_size and ctl_stack_size, and a mapping of exactly
            # ALIGN((cwsr + debug memory) * NUM_XCC, PAGE) (kfd_queue.c kfd_queue_acquire_buffers).
            sizes = cwsr_sizes(self.node, PAGE_SIZE)
            if sizes is not None:
                cwsr = self.alloc(sizes.total, MemFlags.HOST_VISIBLE)
                bufs.append(cwsr)
                args.ctx_save_restore_address = cwsr.va
                args.ctx_save_restore_size, args.ctl_stack_size = sizes.ctx_save_restore_size, sizes.ctl_stack_size
        self._ioctl("CREATE_QUEUE", kfd.AMDKFD_IOC_CREATE_QUEUE, args)
        self._queue_bufs += bufs
        page_off = args.doorbell_offset & ~(DOORBELL_MAP_SIZE - 1)
        if not self._doorbell_page:
            self._doorbell_page = self.system.mmap(self.kfd_fd, DOORBELL_MAP_SIZE, PROT_RW, MAP_SHARED, page_off)
        doorbell = self._doorbell_page + (args.doorbell_offset - page_off)
        return Ring(f"{self.name}.{kind}", kind, ring, ptrs.host_addr, ptrs.host_addr + 16, doorbell, args.queue_id)

    def _destroy_rings(self) -> None:
        for ring in (getattr(self, "compute_ring", None), getattr(self, "sdma_ring", None)):
            if ring is not None:
                self._ioctl("DESTROY_QUEUE", kfd.AMDKFD_IOC_DESTROY_QUEUE,
                            kfd.struct_kfd_ioctl_destroy_queue_args(queue_id=ring.queue_id))
                if ring.barrier_slot is not None:  # the copy queue's barrier word goes with its ring
                    self._queue_bufs.append(ring.barrier_slot)
                    ring.barrier_slot = None
        self.compute_ring = self.sdma_ring = None
        for buf in self._queue_bufs:
            self.free(buf)
        self._queue_bufs = []

    def compute_queue(self) -> AMDComputeQueue:
        if self.gc is None:
            raise KFDError(f"{self.name}: {unbuilt_paths(self.target)}")
        return AMDComputeQueue(self)

    def copy_queue(self) -> AMDCopyQueue:
        return AMDCopyQueue(self)

    def _gc_base(self) -> int:
        """GC segment 0 base from amdgpu's IP discovery in sysfs (register offsets in autogen are relative to it)."""
        path = f"/sys/class/drm/renderD{self.node.properties['drm_render_minor']}/device/ip_discovery/die/0/GC/0/base_addr"
        try:
            return int(self.system.read_text(path).split()[0], 16)
        except (OSError, ValueError, IndexError) as e:
            raise KFDError(f"{self.name}: cannot read the GC register base from {path} ({e}); amdgpu exposes IP "
                           "discovery in sysfs since Linux 5.19") from None

    def timestamp_ns(self, raw: int) -> int:
        """GPU timestamps count the 100 MHz reference clock on gfx11 and gfx12."""
        return raw * 10

    def load_program(self, kernel: Any, name: str | None = None,
                     local_size: tuple[int, int, int] | None = None) -> Any:
        """Load a kernel into GPU memory: a CompiledKernel for this GPU's target, or the raw bytes of any AMDGPU code
        object with the kernel's name (and its local size when the metadata has no .reqd_workgroup_size)."""
        from drivers.amd.program import AMDProgram
        if isinstance(kernel, (bytes, bytearray, memoryview)):
            if not name:
                raise ValueError(f"{self.name}: load_program(code_object_bytes, name) needs the kernel's name")
            return AMDProgram.from_code_object(self, bytes(kernel), name, local_size)
        return AMDProgram(self, kernel)

    # --- scratch ---
    # GFX11/GFX12 use architected flat scratch (AMDGPUUsage processor table; "Flat Scratch"): each dispatch names
    # its scratch memory in COMPUTE_DISPATCH_SCRATCH_BASE_LO/HI (address >> 8) and its per-wave size and slot count
    # in COMPUTE_TMPRING_SIZE; the SPI gives every wave that has SCRATCH_EN a slot and sets its FLAT_SCRATCH to
    # base + slot * WAVESIZE. So the driver only allocates an ordinary VRAM buffer mapped in its own GPU VM. What
    # KFD does for older chips does not apply: AMDKFD_IOC_SET_SCRATCH_BACKING_VA records SH_HIDDEN_PRIVATE_BASE_VMID
    # (kfd_chardev.c kfd_ioctl_set_scratch_backing_va; written to hardware only without HWS, for GFX7/GFX8), which
    # GFX11/GFX12 waves do not read; SH_MEM_BASES (the private and shared apertures that flat addresses of
    # private/LDS memory go through) amdkfd sets itself for every queue of the process (kfd_device_queue_manager
    # update_qpd_v11/v12 from kfd_init_apertures), so there is nothing to set up. ROCr programs the same two
    # registers through the AQL queue's amd_queue_t (compute_tmpring_size, scratch_backing_memory_location).
    def scratch_for(self, wave_bytes: int, kernel: str = "") -> "ScratchArea":
        """Scratch memory for dispatches whose waves need wave_bytes each (a multiple of 256), sized for every wave
        the GPU can hold. A kernel needing more than the current area gets a new, larger one; older areas stay
        until the device closes, since queues encoded with them may still run or be replayed."""
        if wave_bytes <= 0 or wave_bytes % SCRATCH_GRANULE:
            raise ValueError(f"{self.name}: scratch per wave must be a positive multiple of {SCRATCH_GRANULE}, got "
                             f"{wave_bytes}")
        if self.gc is None:
            raise KFDError(f"{self.name}: {kernel or 'a kernel'} needs scratch, and scratch is set up for PM4 "
                           f"dispatch only (gfx11, gfx12); {unbuilt_paths(self.target)}")
        with self._mem_lock:
            cur = self._scratch_areas[-1] if self._scratch_areas else None
            if cur is not None and cur.wave_bytes >= wave_bytes:
                return cur
            wavesize = wave_bytes // SCRATCH_GRANULE
            field = self.gc.COMPUTE_TMPRING_SIZE__WAVESIZE_MASK >> self.gc.COMPUTE_TMPRING_SIZE__WAVESIZE__SHIFT
            if wavesize > field:
                raise KFDError(f"{self.name}: {kernel or 'a kernel'} needs {wave_bytes} bytes of scratch per wave; "
                               f"COMPUTE_TMPRING_SIZE.WAVESIZE holds at most {field * SCRATCH_GRANULE}")
            p = self.node.properties
            # Every wave the GPU can hold (SIMDs x waves per SIMD); WAVES counts slots per shader engine on GFX11+
            # (Mesa ac_get_scratch_tmpring_size: "WAVES is per SE").
            waves = p.get("simd_count", 0) * p.get("max_waves_per_simd", 16)
            engines = max(1, p.get("array_count", 1) // max(1, p.get("simd_arrays_per_engine", 1)))
            per_engine = min(max(1, waves // engines), self.gc.COMPUTE_TMPRING_SIZE__WAVES_MASK)
            buf = self.alloc(per_engine * engines * wave_bytes, MemFlags.DEVICE_LOCAL, align=PAGE_SIZE)
            area = ScratchArea(buf, per_engine, engines, wave_bytes)
            self._scratch_areas.append(area)
            return area

    def _open_node(self, path: str) -> int:
        try:
            fd = self.system.open(path)
        except OSCallError as e:
            hint = " (add yourself to the render and video groups)" if e.errno in (errno.EACCES, errno.EPERM) else ""
            raise KFDError(f"{self.name}: cannot open {path}: {e.strerror}{hint}") from e
        self._fds.append(fd)
        return fd

    def _ioctl(self, what: str, request: int, arg: Any) -> None:
        try:
            self.system.ioctl(self.kfd_fd, request, arg)
        except OSCallError as e:
            raise KFDError(f"{self.name} ({self.target}, gpu_id {self.node.gpu_id:#x}): AMDKFD_IOC_{what} failed: "
                           f"{e.strerror or e}") from e

    # --- memory ---
    def alloc(self, size: int, flags: MemFlags = MemFlags.DEVICE_LOCAL, align: int = 0) -> Buffer:
        """GPU memory mapped on this GPU; host-visible flags also map it into the process at the same address."""
        if size <= 0:
            raise ValueError(f"{self.name}: allocation size must be positive, got {size}")
        with self._mem_lock:
            self.check()  # under the lock: a close() in another thread has either finished or not begun
            return self._alloc(size, flags, align)

    def _alloc(self, size: int, flags: MemFlags, align: int) -> Buffer:
        rounded = -(-size // PAGE_SIZE) * PAGE_SIZE
        va = self.heap.alloc(rounded, align)
        args = kfd.struct_kfd_ioctl_alloc_memory_of_gpu_args(va_addr=va, size=rounded, gpu_id=self.node.gpu_id,
                                                             flags=memory_flags(flags))
        try:
            self._ioctl("ALLOC_MEMORY_OF_GPU", kfd.AMDKFD_IOC_ALLOC_MEMORY_OF_GPU, args)
        except KFDError as e:
            self.heap.free(va)
            if isinstance(e.__cause__, OSError) and e.__cause__.errno == errno.ENOMEM:
                kind = "VRAM" if flags & MemFlags.DEVICE_LOCAL else "GTT"
                raise OutOfMemoryError(f"{self.name}: out of {kind} allocating {size} bytes ({e.__cause__.strerror}); "
                                       "free buffers you no longer need") from None
            raise
        host = None
        try:
            if flags & MemFlags.HOST_VISIBLE:
                host = self.system.mmap(self.drm_fd, rounded, PROT_RW, MAP_SHARED | MAP_FIXED, args.mmap_offset, va)
            self._map_to_gpu(args.handle, True)
        except BaseException:
            self._release_bo(args.handle, va, rounded, mapped=False)
            raise
        buf = Buffer(va, size, self, flags, host_addr=host, meta=args.handle)
        self._buffers[va] = buf
        return buf

    def map_host(self, host_addr: int, size: int) -> Buffer:
        """Make existing host memory (page-aligned, e.g. a numpy array's pages) GPU-accessible without a copy
        (KFD userptr). The buffer's GPU address differs from host_addr; its CPU view is the memory itself."""
        if host_addr % PAGE_SIZE or size <= 0:
            raise ValueError(f"{self.name}: map_host needs a page-aligned address and a positive size, got "
                             f"{host_addr:#x} and {size}")
        with self._mem_lock:
            self.check()
            return self._map_host(host_addr, size)

    def _map_host(self, host_addr: int, size: int) -> Buffer:
        rounded = -(-size // PAGE_SIZE) * PAGE_SIZE
        va = self.heap.alloc(rounded)
        args = kfd.struct_kfd_ioctl_alloc_memory_of_gpu_args(
            va_addr=va, size=rounded, gpu_id=self.node.gpu_id, mmap_offset=host_addr,
            flags=kfd.KFD_IOC_ALLOC_MEM_FLAGS_USERPTR | kfd.KFD_IOC_ALLOC_MEM_FLAGS_WRITABLE)
        try:
            self._ioctl("ALLOC_MEMORY_OF_GPU", kfd.AMDKFD_IOC_ALLOC_MEMORY_OF_GPU, args)
        except KFDError:
            self.heap.free(va)
            raise
        try:
            self._map_to_gpu(args.handle, True)
        except BaseException:
            self._release_bo(args.handle, va, rounded, mapped=False)
            raise
        buf = Buffer(va, size, self, MemFlags.HOST_VISIBLE, host_addr=host_addr, meta=args.handle)
        self._buffers[va] = buf
        return buf

    def _map_to_gpu(self, handle: int, map_it: bool) -> None:
        ids = (ctypes.c_uint32 * 1)(self.node.gpu_id)
        cls = kfd.struct_kfd_ioctl_map_memory_to_gpu_args if map_it else kfd.struct_kfd_ioctl_unmap_memory_from_gpu_args
        args = cls(handle=handle, device_ids_array_ptr=ctypes.addressof(ids), n_devices=1)
        if map_it:
            self._ioctl("MAP_MEMORY_TO_GPU", kfd.AMDKFD_IOC_MAP_MEMORY_TO_GPU, args)
        else:
            self._ioctl("UNMAP_MEMORY_FROM_GPU", kfd.AMDKFD_IOC_UNMAP_MEMORY_FROM_GPU, args)
        if args.n_success != 1:
            raise KFDError(f"{self.name}: {'mapping' if map_it else 'unmapping'} BO {handle:#x} succeeded on "
                           f"{args.n_success} of 1 GPUs")

    def _release_bo(self, handle: int, va: int, size: int, mapped: bool) -> None:
        if mapped:
            self._map_to_gpu(handle, False)
        # Put the reservation back over the range so the VA stays ours until the heap hands it out again.
        self.system.mmap(-1, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, 0, va)
        self._ioctl("FREE_MEMORY_OF_GPU", kfd.AMDKFD_IOC_FREE_MEMORY_OF_GPU,
                    kfd.struct_kfd_ioctl_free_memory_of_gpu_args(handle=handle))
        self.heap.free(va)

    def free(self, buf: Buffer) -> None:
        """Unmap and free a buffer; using it afterwards is an error."""
        with self._mem_lock:  # the check and the removal together: two threads freeing one buffer cannot both pass
            if self._buffers.get(buf.va) is not buf:
                raise InvalidHandleError(f"{buf!r} is not a live allocation of {self.name} (freed twice, or a view?)")
            del self._buffers[buf.va]
            self._release_bo(buf.meta, buf.va, -(-buf.size // PAGE_SIZE) * PAGE_SIZE, mapped=True)
            buf.mark_freed()

    # --- signals and the device contract ---
    def new_signal(self, value: int = 0, name: str = "") -> Signal:
        if self.closed:  # its slots were unmapped with the device
            self.check()
        return self.signals.new(value, name)

    def hw_queues(self) -> list[Ring]:
        return [r for r in (getattr(self, "compute_ring", None), getattr(self, "sdma_ring", None)) if r is not None]

    def _recover(self) -> None:
        """Faulted queues are dead: destroy them and start fresh ones; the timeline is reset to what was issued."""
        self._wait_events([self.memory_event_id, self.hw_event_id], 0)  # drain stale reports
        self._destroy_rings()
        self._create_rings()
        self.timeline.value = self.timeline_value

    def fault_from_exception(self, va: int) -> DeviceFault:
        """A memory exception decoded to the buffer that owns the address (or none: a wild pointer)."""
        with self._mem_lock:
            owner = next((b for b in self._buffers.values() if b.va <= va < b.va + b.size), None)
        where = f"inside {owner!r} at offset {va - owner.va:#x}" if owner else "outside every buffer of this device"
        return DeviceFault("page fault", f"GPU access to {va:#x}, {where}", address=va)

    def close(self) -> None:
        """Free every buffer, close the KFD and render fds, release the VA window and the device lock.

        Waits for a submission or allocation another thread has begun; later ones raise DeviceClosedError.
        """
        if getattr(self, "_closing", False):
            return
        self._closing = True
        with self.submit_lock, self._mem_lock:
            self._close()
        self.lock.release()

    def _close(self) -> None:
        try:
            if getattr(self, "kfd_fd", None) is not None:
                self._destroy_rings()
        except (HCQError, OSCallError):
            pass  # closing anyway (a dead GPU cannot destroy its queues; closing the fd reclaims them)
        for buf in list(self._buffers.values()):
            try:
                self.free(buf)
            except (HCQError, OSCallError):
                pass  # closing anyway: the kernel reclaims what is left when the fds close
        if getattr(self, "kfd_fd", None) is not None:
            self._leave_events()
        for fd in reversed(self._fds):
            self.system.close(fd)
        self._fds.clear()
        if self._window:
            self.system.munmap(self._window, VA_WINDOW)
            self._window = 0
        self.closed = True

    def __enter__(self) -> "KFDDevice":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
