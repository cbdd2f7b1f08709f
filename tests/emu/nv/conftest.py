"""Fixtures for the emulated RM/UVM tests: an EmulatedSystem with EmulatedNV installed over a small fake GPU (the
RM rules do not need engines), and a tiny client that speaks the escapes with the generated structs."""
from __future__ import annotations

import ctypes
import mmap
import os
import time
from typing import Any

import pytest

from autogen import nv_classes as cls
from autogen import nv_rm as rm
from autogen import nv_uvm as uvm
from emu.nv.rm import EmulatedNV
from emu.nv.vaspace import VASpace
from emu.system import EmulatedSystem


class FakeGPU:
    """Stands in for emu/nv/gpu.py EmuNVGPU in RM-rule tests: records what RM hands it."""

    def __init__(self, index: int, sm: str, hazard: int | None = None, host_kernels: bool = True):
        self.index, self.sm = index, sm
        self.usermode_size = 0x10000
        self.usermode_fd = os.memfd_create("fake-usermode", os.MFD_CLOEXEC)
        os.ftruncate(self.usermode_fd, self.usermode_size)
        self._um = mmap.mmap(self.usermode_fd, self.usermode_size)
        self.usermode_host = ctypes.addressof(ctypes.c_char.from_buffer(self._um))
        self.channels: dict[int, Any] = {}
        self.objects: list[tuple[int, int]] = []
        self.scheduled: list[tuple[list[int], bool]] = []
        self.kicks = 0
        self.on_nonstall = None
        self.on_error = None
        self.stalled: list[tuple[str, bool]] = []

    def new_vaspace(self) -> VASpace:
        return VASpace(57 if self.sm == "sm_90" else 49)

    def add_channel(self, ch: Any) -> None:
        self.channels[ch.token] = ch

    def remove_channel(self, token: int) -> None:
        self.channels.pop(token)

    def schedule(self, tokens: list[int], enable: bool) -> None:
        self.scheduled.append((tokens, enable))

    def add_object(self, token: int, hclass: int) -> None:
        self.objects.append((token, hclass))

    def kick(self) -> None:
        self.kicks += 1

    def clock_ns(self) -> int:
        return time.monotonic_ns()

    def stall(self, engine: str, on: bool = True) -> None:
        self.stalled.append((engine, on))

    def poison(self, va: int, size: int) -> None:
        pass

    def kill_channel(self, token: int) -> None:
        self.on_error(token, rm.ROBUST_CHANNEL_PBDMA_ERROR, {"message": "killed"})

    def counters(self) -> dict[str, int]:
        return {"kicks": self.kicks}

    def close(self) -> None:
        os.close(self.usermode_fd)


IOC = {  # request numbers the way a driver builds them: _IOWR('F', escape, struct)
    "free_os_event": rm.NV_IOC_FREE_OS_EVENT, "get_event_data": rm.NV_IOC_RM_GET_EVENT_DATA,
}


class RMClient:
    """A minimal user of the emulated RM (the test's stand-in for a driver's client wrapper)."""

    def __init__(self, system: EmulatedSystem, nv: EmulatedNV):
        self.sys, self.nv = system, nv
        self.ctl = system.open("/dev/nvidiactl")
        self.keep: list[Any] = []
        self.client = self.alloc(0, 0, cls.NV01_ROOT_CLIENT, None, expect=rm.NV_OK)

    def ioctl(self, fd: int, req: int, arg: Any) -> int:
        return self.sys.ioctl(fd, req, arg)

    def alloc(self, parent: int, handle: int, hclass: int, params: Any, expect: int | None = rm.NV_OK,
              client: int | None = None, fd: int | None = None) -> int:
        p = rm.NVOS64_PARAMETERS(hRoot=self.client if client is None and hclass != cls.NV01_ROOT_CLIENT else
                                 (client or 0), hObjectParent=parent, hObjectNew=handle, hClass=hclass)
        if params is not None:
            self.keep.append(params)
            p.pAllocParms, p.paramsSize = ctypes.addressof(params), ctypes.sizeof(params)
        self.ioctl(self.ctl if fd is None else fd, rm.NV_IOC_RM_ALLOC, p)
        if expect is not None:
            assert p.status == expect, f"alloc of class {hclass:#x}: status {p.status:#x}, expected {expect:#x}"
        return p.hObjectNew if p.status == rm.NV_OK else p.status

    def status_of_alloc(self, parent: int, hclass: int, params: Any, handle: int = 0) -> int:
        p = rm.NVOS64_PARAMETERS(hRoot=self.client, hObjectParent=parent, hObjectNew=handle, hClass=hclass)
        if params is not None:
            self.keep.append(params)
            p.pAllocParms, p.paramsSize = ctypes.addressof(params), ctypes.sizeof(params)
        self.ioctl(self.ctl, rm.NV_IOC_RM_ALLOC, p)
        return p.status

    def control(self, obj: int, cmd: int, params: Any, client: int | None = None) -> int:
        p = rm.NVOS54_PARAMETERS(hClient=self.client if client is None else client, hObject=obj, cmd=cmd)
        if params is not None:
            p.params, p.paramsSize = ctypes.addressof(params), ctypes.sizeof(params)
        self.ioctl(self.ctl, rm.NV_IOC_RM_CONTROL, p)
        return p.status

    def free(self, obj: int) -> int:
        p = rm.NVOS00_PARAMETERS(hRoot=self.client, hObjectParent=0, hObjectOld=obj)
        self.ioctl(self.ctl, rm.NV_IOC_RM_FREE, p)
        return p.status

    def device(self, index: int = 0) -> tuple[int, int]:
        dev = self.alloc(self.client, 0, cls.NV01_DEVICE_0, rm.NV0080_ALLOC_PARAMETERS(deviceId=index,
                                                                                        hClientShare=self.client))
        sub = self.alloc(dev, 0, cls.NV20_SUBDEVICE_0, rm.NV2080_ALLOC_PARAMETERS(subDeviceId=0))
        return dev, sub

    def memory(self, dev: int, size: int, vram: bool = True, page: int = rm.NVOS32_ATTR_PAGE_SIZE_DEFAULT,
               alignment: int = 0, expect: int | None = rm.NV_OK) -> int:
        loc = rm.NVOS32_ATTR_LOCATION_VIDMEM if vram else rm.NVOS32_ATTR_LOCATION_PCI
        params = rm.NV_MEMORY_ALLOCATION_PARAMS(owner=self.client, type=rm.NVOS32_TYPE_IMAGE, size=size,
                                                alignment=alignment,
                                                flags=rm.NVOS32_ALLOC_FLAGS_ALIGNMENT_FORCE if alignment else 0,
                                                attr=(loc << rm.NVOS32_ATTR_LOCATION_SHIFT) |
                                                (page << rm.NVOS32_ATTR_PAGE_SIZE_SHIFT))
        return self.alloc(dev, 0, cls.NV01_MEMORY_LOCAL_USER if vram else cls.NV01_MEMORY_SYSTEM, params,
                          expect=expect)


class UVMClient:
    """/dev/nvidia-uvm as a driver sets it up: INITIALIZE, MM_INITIALIZE, REGISTER_GPU, REGISTER_GPU_VASPACE."""

    def __init__(self, system: EmulatedSystem, c: RMClient):
        self.sys, self.c = system, c
        self.fd = system.open("/dev/nvidia-uvm")
        self.mm_fd = system.open("/dev/nvidia-uvm")

    def call(self, req: int, params: Any, fd: int | None = None) -> int:
        self.sys.ioctl(self.fd if fd is None else fd, req, params)
        return params.rmStatus

    def setup(self, gpu: int, vaspace: int) -> None:
        assert self.call(uvm.UVM_INITIALIZE, uvm.UVM_INITIALIZE_PARAMS()) == rm.NV_OK
        assert self.call(uvm.UVM_MM_INITIALIZE, uvm.UVM_MM_INITIALIZE_PARAMS(uvmFd=self.fd), fd=self.mm_fd) == rm.NV_OK
        assert self.call(uvm.UVM_REGISTER_GPU, self.register_params(gpu)) == rm.NV_OK
        p = uvm.UVM_REGISTER_GPU_VASPACE_PARAMS(rmCtrlFd=self.c.ctl, hClient=self.c.client, hVaSpace=vaspace)
        p.gpuUuid.uuid[:] = self.c.nv.rgpus[gpu].uuid
        assert self.call(uvm.UVM_REGISTER_GPU_VASPACE, p) == rm.NV_OK

    def register_params(self, gpu: int) -> Any:
        p = uvm.UVM_REGISTER_GPU_PARAMS(rmCtrlFd=self.c.ctl, hClient=self.c.client)
        p.gpu_uuid.uuid[:] = self.c.nv.rgpus[gpu].uuid
        return p

    def create_range(self, base: int, length: int) -> int:
        return self.call(uvm.UVM_CREATE_EXTERNAL_RANGE, uvm.UVM_CREATE_EXTERNAL_RANGE_PARAMS(base=base, length=length))

    def map(self, base: int, length: int, memory: int, gpu: int = 0, offset: int = 0) -> int:
        p = uvm.UVM_MAP_EXTERNAL_ALLOCATION_PARAMS(base=base, length=length, offset=offset, gpuAttributesCount=1,
                                                   rmCtrlFd=self.c.ctl, hClient=self.c.client, hMemory=memory)
        p.perGpuAttributes[0].gpuUuid.uuid[:] = self.c.nv.rgpus[gpu].uuid
        p.perGpuAttributes[0].gpuMappingType = uvm.UvmGpuMappingTypeReadWriteAtomic
        return self.call(uvm.UVM_MAP_EXTERNAL_ALLOCATION, p)

    def free(self, base: int, length: int) -> int:
        return self.call(uvm.UVM_FREE, uvm.UVM_FREE_PARAMS(base=base, length=length))


@pytest.fixture
def nvsys():
    """(system, EmulatedNV) with one fake sm_90 GPU and a 64 MiB VRAM limit."""
    nv = EmulatedNV(("sm_90",), vram_limit=64 << 20, sysmem_limit=64 << 20, gpu_factory=FakeGPU)
    system = EmulatedSystem()
    nv.install(system)
    yield system, nv
    nv.close()


@pytest.fixture
def client(nvsys):
    system, nv = nvsys
    return RMClient(system, nv)
