"""AMD through KFD: open a GPU, acquire its VM, and manage its memory (VRAM, GTT, userptr) and events.

Order of operations (amdkfd's uapi, include/uapi/linux/kfd_ioctl.h): open /dev/kfd and check the ioctl
version; pick a GPU node from the topology; open its render node and ACQUIRE_VM with it; then allocate
buffer objects at virtual addresses we choose (ALLOC_MEMORY_OF_GPU), map host-visible ones into the process
through the render node at the same address, and MAP_MEMORY_TO_GPU. Queues are built on top of this.
"""
from __future__ import annotations

import ctypes
import errno
from typing import Any

from autogen import kfd
from drivers.amd.topology import KFDNode, read_topology
from drivers.lock import DeviceLock
from drivers.system import MAP_ANONYMOUS, MAP_FIXED, MAP_NORESERVE, MAP_PRIVATE, MAP_SHARED, PAGE_SIZE, OSCallError, System
from hcq.allocator import VAHeap
from hcq.buffer import Buffer, MemFlags
from hcq.device import Device, DeviceFault
from hcq.errors import HCQError, InvalidHandleError, OutOfMemoryError
from hcq.signal import SIGNAL_SIZE, Signal, SignalPool

VA_WINDOW = 64 << 30  # GPU virtual addresses we hand out; reserved PROT_NONE so nothing else lands there
MIN_KFD_VERSION = (1, 14)  # AMDKFD_IOC_ALLOC_MEMORY_OF_GPU with mmap offsets through the render node
SIGNAL_SLOTS = 4096
PROT_NONE, PROT_RW = 0, 3


class KFDError(HCQError):
    """A KFD call failed; the message names the ioctl, the GPU and what to do."""


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


class KFDDevice(Device):
    """One AMD GPU through KFD. `index` picks among the topology's GPU nodes."""

    def __init__(self, index: int = 0, system: System | None = None, lock_wait: float | None = None):
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
        self.lock = DeviceLock(f"kfd-gpu-{self.node.gpu_id}", self.system.lock_dir, wait=lock_wait).acquire()
        self._fds: list[int] = []
        self._buffers: dict[int, Buffer] = {}
        self._window = 0
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
        self._ioctl("ACQUIRE_VM", kfd.AMDKFD_IOC_ACQUIRE_VM,
                    kfd.struct_kfd_ioctl_acquire_vm_args(drm_fd=self.drm_fd, gpu_id=self.node.gpu_id))
        self._window = self.system.mmap(-1, VA_WINDOW, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE)
        self.heap = VAHeap(self._window, VA_WINDOW, PAGE_SIZE, f"{self.name} VA")
        sig_buf = self.alloc(SIGNAL_SIZE * SIGNAL_SLOTS, MemFlags.HOST_VISIBLE | MemFlags.UNCACHED)
        self.signals = SignalPool(sig_buf.host_addr, sig_buf.va, sig_buf.size, self)

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
        self.check()
        if size <= 0:
            raise ValueError(f"{self.name}: allocation size must be positive, got {size}")
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
        if self._buffers.get(buf.va) is not buf:
            raise InvalidHandleError(f"{buf!r} is not a live allocation of {self.name} (freed twice, or a view?)")
        del self._buffers[buf.va]
        self._release_bo(buf.meta, buf.va, -(-buf.size // PAGE_SIZE) * PAGE_SIZE, mapped=True)
        buf.mark_freed()

    # --- signals and the device contract ---
    def new_signal(self, value: int = 0, name: str = "") -> Signal:
        return self.signals.new(value, name)

    def hw_queues(self) -> list[Any]:
        return []

    def _recover(self) -> None:
        pass

    def fault_from_exception(self, va: int) -> DeviceFault:
        """A memory exception decoded to the buffer that owns the address (or none: a wild pointer)."""
        owner = next((b for b in self._buffers.values() if b.va <= va < b.va + b.size), None)
        where = f"inside {owner!r} at offset {va - owner.va:#x}" if owner else "outside every buffer of this device"
        return DeviceFault("page fault", f"GPU access to {va:#x}, {where}", address=va)

    def close(self) -> None:
        """Free every buffer, close the KFD and render fds, release the VA window and the device lock."""
        if getattr(self, "_closing", False):
            return
        self._closing = True
        for buf in list(self._buffers.values()):
            try:
                self.free(buf)
            except HCQError:
                pass  # closing anyway: the kernel reclaims what is left when the fds close
        for fd in reversed(self._fds):
            self.system.close(fd)
        self._fds.clear()
        if self._window:
            self.system.munmap(self._window, VA_WINDOW)
            self._window = 0
        self.lock.release()

    def __enter__(self) -> "KFDDevice":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
