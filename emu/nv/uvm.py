"""Emulated /dev/nvidia-uvm: the ioctls a compute driver uses to put RM memory into a GPU VA space.

UVM's request numbers are the plain command numbers (uvm_linux_ioctl.h: UVM_IOCTL_BASE(i) is i), the argument is
the command's parameter struct, and UVM reports what it refuses in the struct's rmStatus with the ioctl returning 0
(kernel-open/nvidia-uvm/uvm_api.h UVM_ROUTE_CMD_*). Each rule below names the function it follows.
"""
from __future__ import annotations

import ctypes
import errno
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autogen import nv_rm as rm
from autogen import nv_uvm as uvm
from drivers.system import OSCallError
from emu.system import NodeHandler

if TYPE_CHECKING:
    from emu.nv.rm import EmulatedNV, RmObject

UVM_PAGE_SIZE_4K = 4096
NV_WARN_NOTHING_TO_DO = rm.NV_WARN_NOTHING_TO_DO


class UVMError(Exception):
    """An NV status UVM writes into rmStatus."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{message} (NV status {status:#x})")
        self.status = status


def range_invalid_4k(base: int, length: int) -> bool:
    """uvm_api.h uvm_api_range_invalid_4k: 4K-aligned base and length, neither zero, no overflow."""
    a = UVM_PAGE_SIZE_4K
    return base % a != 0 or length % a != 0 or base == 0 or length == 0 or base + length >= 1 << 64


@dataclass
class ExternalRange:
    """A range UVM_CREATE_EXTERNAL_RANGE made; per GPU, the RM allocations mapped in it."""
    base: int
    length: int
    maps: dict[int, list[tuple[int, int, "RmObject"]]] = field(default_factory=dict)  # gpu -> (va, size, memory)

    @property
    def end(self) -> int:
        return self.base + self.length - 1


@dataclass
class UVMVaSpace:
    """The va_space a UVM_INITIALIZE'd file owns: registered GPUs, their GPU VA spaces, external ranges."""
    flags: int
    gpus: set[int] = field(default_factory=set)
    gpu_vaspaces: dict[int, "RmObject"] = field(default_factory=dict)
    ranges: list[ExternalRange] = field(default_factory=list)


class UVMFile(NodeHandler):
    """One open /dev/nvidia-uvm: uninitialized, a va_space (UVM_INITIALIZE) or an mm file (UVM_MM_INITIALIZE)."""

    def __init__(self, dev: "EmulatedNV"):
        self.dev = dev
        self.kind = "uninitialized"  # uvm.c uvm_fd_type: UNINITIALIZED | VA_SPACE | MM
        self.va_space: UVMVaSpace | None = None
        self.lock = threading.RLock()  # the va_space lock
        self.handlers: dict[int, tuple[type, Any, bool]] = {
            uvm.UVM_INITIALIZE: (uvm.UVM_INITIALIZE_PARAMS, self.initialize, False),
            uvm.UVM_MM_INITIALIZE: (uvm.UVM_MM_INITIALIZE_PARAMS, self.mm_initialize, False),
            uvm.UVM_PAGEABLE_MEM_ACCESS: (uvm.UVM_PAGEABLE_MEM_ACCESS_PARAMS, self.pageable_mem_access, True),
            uvm.UVM_REGISTER_GPU: (uvm.UVM_REGISTER_GPU_PARAMS, self.register_gpu, True),
            uvm.UVM_UNREGISTER_GPU: (uvm.UVM_UNREGISTER_GPU_PARAMS, self.unregister_gpu, True),
            uvm.UVM_REGISTER_GPU_VASPACE: (uvm.UVM_REGISTER_GPU_VASPACE_PARAMS, self.register_gpu_vaspace, True),
            uvm.UVM_CREATE_EXTERNAL_RANGE: (uvm.UVM_CREATE_EXTERNAL_RANGE_PARAMS, self.create_external_range, True),
            uvm.UVM_MAP_EXTERNAL_ALLOCATION: (uvm.UVM_MAP_EXTERNAL_ALLOCATION_PARAMS, self.map_external, True),
            uvm.UVM_UNMAP_EXTERNAL: (uvm.UVM_UNMAP_EXTERNAL_PARAMS, self.unmap_external, True),
            uvm.UVM_FREE: (uvm.UVM_FREE_PARAMS, self.free, True),
        }

    def ioctl(self, request: int, arg: Any) -> int:
        if request == uvm.UVM_DEINITIALIZE:  # uvm.c uvm_ioctl: a no-op kept for old userspace
            return 0
        entry = self.handlers.get(request)
        if entry is None:  # uvm.c uvm_ioctl default
            raise OSCallError(errno.EINVAL, f"UVM ioctl {request:#x} is not emulated (or unknown)")
        ptype, fn, init_check = entry
        try:
            size = len(arg) if isinstance(arg, bytearray) else ctypes.sizeof(arg)
        except TypeError:
            raise OSCallError(errno.EFAULT, f"UVM ioctl {request}: argument is not memory") from None
        if size < ctypes.sizeof(ptype):  # copy_from_user of sizeof(params) would read past the caller's buffer
            raise OSCallError(errno.EFAULT, f"UVM ioctl {request} takes {ctypes.sizeof(ptype)} bytes "
                                            f"({ptype.__name__}), got {size}")
        p = ptype.from_buffer(arg)
        # uvm_api.h __UVM_ROUTE_CMD_STACK: commands other than (MM_)INITIALIZE need a va_space file
        if init_check and (self.kind != "va_space"):
            p.rmStatus = rm.NV_ERR_ILLEGAL_ACTION
            return 0
        with self.lock, self.dev.lock:
            try:
                fn(p)
                p.rmStatus = rm.NV_OK
            except UVMError as e:
                p.rmStatus = e.status
                self.last_error = str(e)
        return 0

    last_error = ""

    # --- initialization (uvm.c) ---
    def initialize(self, p: Any) -> None:
        """uvm.c uvm_api_initialize + uvm_va_space.c uvm_va_space_create: flags outside UVM_INIT_FLAGS_MASK are
        refused; a second INITIALIZE must repeat the flags; an mm file cannot become a va_space."""
        if self.kind == "uninitialized":
            if p.flags & ~uvm.UVM_INIT_FLAGS_MASK:
                raise UVMError(rm.NV_ERR_INVALID_ARGUMENT, f"UVM_INITIALIZE flags {p.flags:#x} outside "
                                                           f"{uvm.UVM_INIT_FLAGS_MASK:#x}")
            self.kind, self.va_space = "va_space", UVMVaSpace(p.flags)
        elif self.kind == "va_space":
            assert self.va_space is not None
            if p.flags != self.va_space.flags:
                raise UVMError(rm.NV_ERR_INVALID_ARGUMENT, "UVM_INITIALIZE again with different flags")
        else:
            raise UVMError(rm.NV_ERR_INVALID_ARGUMENT, "UVM_INITIALIZE on a file that is an mm file")

    def mm_initialize(self, p: Any) -> None:
        """uvm.c uvm_api_mm_initialize: uvmFd must be an initialized UVM file; this file must be fresh."""
        other = self.dev.file_of(p.uvmFd)
        if not isinstance(other, UVMFile) or other.kind != "va_space":
            raise UVMError(rm.NV_ERR_INVALID_ARGUMENT, f"uvmFd {p.uvmFd} is not a UVM_INITIALIZE'd /dev/nvidia-uvm")
        if self.kind != "uninitialized":
            raise UVMError(rm.NV_ERR_IN_USE, "UVM_MM_INITIALIZE on a file already initialized")
        self.kind, self.mm_of = "mm", other

    def pageable_mem_access(self, p: Any) -> None:
        p.pageableMemAccess = 0  # no HMM/ATS in the emulator: GPUs reach only what UVM mapped

    # --- GPUs ---
    def _gpu_by_uuid(self, uuid: Any) -> int | None:
        raw = bytes(uuid.uuid) if hasattr(uuid, "uuid") else bytes(uuid)
        return next((r.index for r in self.dev.rgpus if r.uuid == raw[:16]), None)

    def _rm_client(self, fd: int, h_client: int) -> Any:
        """The RM client the driver names by (rmCtrlFd, hClient): UVM dups RM objects through it
        (uvm_rm_user_object.rm_control_fd, nvUvmInterface*Dup*)."""
        from emu.nv.rm import NVFile
        f = self.dev.file_of(fd)
        if not isinstance(f, NVFile) or not f.is_ctl:
            raise UVMError(rm.NV_ERR_INVALID_ARGUMENT, f"rmCtrlFd {fd} is not an open /dev/nvidiactl")
        client = self.dev.clients.get(h_client)
        if client is None:
            raise UVMError(rm.NV_ERR_INVALID_OBJECT_HANDLE, f"hClient {h_client:#x} is not an RM client")
        return client

    def register_gpu(self, p: Any) -> None:
        """uvm_va_space.c uvm_va_space_register_gpu: the UUID must be a GPU (uvm_gpu_retain_by_uuid); the RM device
        is named by (rmCtrlFd, hClient); registering twice is NV_ERR_INVALID_DEVICE."""
        vs = self.va_space
        assert vs is not None
        gi = self._gpu_by_uuid(p.gpu_uuid)
        if gi is None:
            raise UVMError(rm.NV_ERR_GPU_UUID_NOT_FOUND, "gpu_uuid matches no emulated GPU")
        client = self._rm_client(p.rmCtrlFd, p.hClient)
        if not any(o.kind == "device" and o.state["gpu"] == gi for o in client.objects.values()):
            raise UVMError(rm.NV_ERR_INVALID_DEVICE, f"client {p.hClient:#x} has no device on GPU {gi}")
        if gi in vs.gpus:
            raise UVMError(rm.NV_ERR_INVALID_DEVICE, f"GPU {gi} is already registered in this va_space")
        vs.gpus.add(gi)
        p.numaEnabled, p.numaNodeId = 0, -1

    def unregister_gpu(self, p: Any) -> None:
        vs = self.va_space
        assert vs is not None
        gi = self._gpu_by_uuid(p.gpu_uuid)
        if gi is None or gi not in vs.gpus:
            raise UVMError(rm.NV_ERR_INVALID_DEVICE, "UVM_UNREGISTER_GPU of a GPU not registered here")
        for rng in vs.ranges:
            self._unmap_in(rng, gi, rng.base, rng.end)
        vs.gpu_vaspaces.pop(gi, None)
        vs.gpus.discard(gi)

    def register_gpu_vaspace(self, p: Any) -> None:
        """uvm_va_space.c uvm_va_space_register_gpu_va_space + check_gpu_va_space: the GPU must be registered and
        have no GPU VA space yet; nv_gpu_ops.c nvGpuOpsDupAddressSpace: hVaSpace must be a VA space object of
        that client, on that GPU."""
        vs = self.va_space
        assert vs is not None
        gi = self._gpu_by_uuid(p.gpuUuid)
        if gi is None or gi not in vs.gpus:
            raise UVMError(rm.NV_ERR_INVALID_DEVICE, "UVM_REGISTER_GPU_VASPACE for a GPU not registered here")
        if gi in vs.gpu_vaspaces:
            raise UVMError(rm.NV_ERR_INVALID_DEVICE, f"GPU {gi} already has a GPU VA space in this va_space")
        client = self._rm_client(p.rmCtrlFd, p.hClient)
        obj = client.objects.get(p.hVaSpace)
        if obj is None:
            raise UVMError(rm.NV_ERR_OBJECT_NOT_FOUND, f"hVaSpace {p.hVaSpace:#x} is not an object of the client")
        if obj.kind != "vaspace":
            raise UVMError(rm.NV_ERR_INVALID_OBJECT, f"hVaSpace {p.hVaSpace:#x} is a {obj.kind}, not FERMI_VASPACE_A")
        if obj.state["gpu"] != gi:  # nvGpuOpsDupAddressSpace: NV_ERR_OTHER_DEVICE_FOUND (reported as a device error)
            raise UVMError(rm.NV_ERR_INVALID_DEVICE, f"VA space {p.hVaSpace:#x} is on GPU {obj.state['gpu']}, "
                                                     f"not GPU {gi}")
        vs.gpu_vaspaces[gi] = obj

    # --- external ranges (uvm_map_external.c) ---
    def _find(self, va: int) -> ExternalRange | None:
        assert self.va_space is not None
        return next((r for r in self.va_space.ranges if r.base <= va <= r.end), None)

    def create_external_range(self, p: Any) -> None:
        """uvm_create_external_range: 4K-aligned nonzero range; uvm_va_range_create_external ->
        uvm_range_tree_add: overlapping an existing range is NV_ERR_UVM_ADDRESS_IN_USE."""
        if range_invalid_4k(p.base, p.length):
            raise UVMError(rm.NV_ERR_INVALID_ADDRESS, f"external range [{p.base:#x}, +{p.length:#x}) is not "
                                                      "4K-aligned, empty or overflowing")
        vs = self.va_space
        assert vs is not None
        end = p.base + p.length - 1
        if any(r.base <= end and p.base <= r.end for r in vs.ranges):
            raise UVMError(rm.NV_ERR_UVM_ADDRESS_IN_USE, f"[{p.base:#x}, {end:#x}] overlaps an existing UVM range")
        vs.ranges.append(ExternalRange(p.base, p.length))

    def map_external(self, p: Any) -> None:
        """uvm_map_external_allocation (+ _on_gpu): the range must lie in one external range; each GPU attribute
        must be valid and name a GPU with a GPU VA space; the RM memory (rmCtrlFd, hClient, hMemory) is dup'd and
        [offset, offset+length) of it mapped at base, replacing what was mapped there on that GPU."""
        if range_invalid_4k(p.base, p.length):
            raise UVMError(rm.NV_ERR_INVALID_ADDRESS, f"map [{p.base:#x}, +{p.length:#x}) is not 4K-aligned or empty")
        if p.gpuAttributesCount == 0 or p.gpuAttributesCount > uvm.UVM_MAX_GPUS:
            raise UVMError(rm.NV_ERR_INVALID_ARGUMENT, f"gpuAttributesCount {p.gpuAttributesCount}")
        rng = self._find(p.base)
        if rng is None or rng.end < p.base + p.length - 1:
            raise UVMError(rm.NV_ERR_INVALID_ADDRESS, f"[{p.base:#x}, +{p.length:#x}) is not inside one external "
                                                      "range (UVM_CREATE_EXTERNAL_RANGE first)")
        vs = self.va_space
        assert vs is not None
        targets = []
        for i in range(p.gpuAttributesCount):
            a = p.perGpuAttributes[i]
            # uvm_api_mapping_type_invalid / uvm_api_caching_type_invalid / uvm_api_kind_type_invalid
            if a.gpuMappingType > uvm.UvmGpuMappingTypeReadOnly or \
                    a.gpuCachingType > uvm.UvmGpuCachingTypeForceCached or \
                    a.gpuFormatType != uvm.UvmGpuFormatTypeDefault or \
                    a.gpuElementBits != uvm.UvmGpuFormatElementBitsDefault or \
                    a.gpuCompressionType != uvm.UvmGpuCompressionTypeDefault:
                raise UVMError(rm.NV_ERR_INVALID_ARGUMENT, f"perGpuAttributes[{i}] has an invalid mapping, caching "
                                                           "or format type")
            gi = self._gpu_by_uuid(a.gpuUuid)
            if gi is None or gi not in vs.gpu_vaspaces:
                raise UVMError(rm.NV_ERR_INVALID_DEVICE, f"perGpuAttributes[{i}] names a GPU without a GPU VA space "
                                                         "in this va_space")
            if p.base + p.length > 1 << self.dev.rgpus[gi].info["va_bits"]:  # uvm_gpu_can_address
                raise UVMError(rm.NV_ERR_OUT_OF_RANGE, f"[{p.base:#x}, +{p.length:#x}) is beyond GPU {gi}'s VA bits")
            targets.append((gi, a))
        client = self._rm_client(p.rmCtrlFd, p.hClient)
        mem_obj = client.objects.get(p.hMemory)
        if mem_obj is None:  # nvUvmInterfaceDupMemory
            raise UVMError(rm.NV_ERR_OBJECT_NOT_FOUND, f"hMemory {p.hMemory:#x} is not an object of client "
                                                       f"{p.hClient:#x}")
        if mem_obj.kind != "memory":
            raise UVMError(rm.NV_ERR_INVALID_OBJECT, f"hMemory {p.hMemory:#x} is a {mem_obj.kind}, not memory")
        mem = mem_obj.state["mem"]
        if p.offset % UVM_PAGE_SIZE_4K:  # the mapping page size divides base | length | offset | page size
            raise UVMError(rm.NV_ERR_INVALID_ADDRESS, f"offset {p.offset:#x} is not 4K-aligned")
        if p.offset + p.length > mem.size:
            raise UVMError(rm.NV_ERR_INVALID_ARGUMENT, f"[{p.offset:#x}, +{p.length:#x}) is past memory "
                                                       f"{p.hMemory:#x} ({mem.size:#x} bytes)")
        for gi, a in targets:
            if self.dev.rgpu_of(mem_obj).index != gi and mem.kind == "vram":
                raise UVMError(rm.NV_ERR_INVALID_DEVICE, f"VRAM of another GPU mapped on GPU {gi} (no peer access)")
            self._unmap_in(rng, gi, p.base, p.base + p.length - 1)  # uvm_unmap_external_in_range
            vas = vs.gpu_vaspaces[gi].state["vaspace"]
            what = f"{mem.kind} memory {p.hMemory:#x} of client {p.hClient:#x}"
            vas.map(p.base, p.length, mem.host + p.offset, what)
            rng.maps.setdefault(gi, []).append((p.base, p.length, mem_obj))
            mem_obj.state["users"] = mem_obj.state.get("users", 0) + 1  # UVM holds a dup of the memory

    def _unmap_in(self, rng: ExternalRange, gi: int, start: int, end: int) -> None:
        """Unmap every mapping of GPU gi that overlaps [start, end] (whole mappings, as UVM splits none)."""
        keep = []
        vs = self.va_space
        assert vs is not None
        for va, size, mem_obj in rng.maps.get(gi, []):
            if va <= end and start <= va + size - 1:
                vaso = vs.gpu_vaspaces.get(gi)
                if vaso is not None:
                    vaso.state["vaspace"].unmap(va, size)
                mem_obj.state["users"] -= 1
                self.dev._maybe_release(mem_obj)
            else:
                keep.append((va, size, mem_obj))
        rng.maps[gi] = keep

    def unmap_external(self, p: Any) -> None:
        """uvm_unmap_external: the range must lie inside one external range; the GPU must be registered."""
        if range_invalid_4k(p.base, p.length):
            raise UVMError(rm.NV_ERR_INVALID_ADDRESS, f"unmap [{p.base:#x}, +{p.length:#x}) is not 4K-aligned")
        rng = self._find(p.base)
        if rng is None or p.base + p.length - 1 > rng.end:
            raise UVMError(rm.NV_ERR_INVALID_ADDRESS, f"[{p.base:#x}, +{p.length:#x}) is not inside an external range")
        gi = self._gpu_by_uuid(p.gpuUuid)
        assert self.va_space is not None
        if gi is None or gi not in self.va_space.gpus:
            raise UVMError(rm.NV_ERR_INVALID_DEVICE, "gpuUuid is not a GPU registered here")
        self._unmap_in(rng, gi, p.base, p.base + p.length - 1)

    def free(self, p: Any) -> None:
        """uvm_api_free: [base, base+length) must be exactly one external range (no partial frees); its mappings
        on every GPU go with it."""
        if range_invalid_4k(p.base, p.length):
            raise UVMError(rm.NV_ERR_INVALID_ADDRESS, f"free [{p.base:#x}, +{p.length:#x}) is not 4K-aligned")
        rng = self._find(p.base)
        if rng is None or rng.base != p.base or rng.end != p.base + p.length - 1:
            raise UVMError(rm.NV_ERR_INVALID_ADDRESS, f"[{p.base:#x}, +{p.length:#x}) is not exactly one UVM range")
        for gi in list(rng.maps):
            self._unmap_in(rng, gi, rng.base, rng.end)
        assert self.va_space is not None
        self.va_space.ranges.remove(rng)

    def close(self) -> None:
        """Closing the va_space file tears the va_space down: every external mapping goes."""
        if self.va_space is None:
            return
        with self.lock, self.dev.lock:
            for rng in list(self.va_space.ranges):
                for gi in list(rng.maps):
                    self._unmap_in(rng, gi, rng.base, rng.end)
            self.va_space.ranges.clear()
