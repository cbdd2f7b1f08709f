"""A thin client for NVIDIA's resource manager (RM, /dev/nvidiactl and /dev/nvidiaN escapes) and UVM (/dev/nvidia-uvm).

Every call goes through the OS seam. RM reports failures in the parameter block's status (the ioctl itself
succeeds); UVM in rmStatus. Both become NVError naming the call, the object and the status by name
(src/common/sdk/nvidia/inc/nvstatuscodes.h), so a user sees "RM_ALLOC HOPPER_COMPUTE_A under 0xcaf00005 failed:
NV_ERR_INVALID_CLASS" instead of a number.

Escape request numbers: _IOWR('F', escape, size of the parameter block) (kernel-open/nvidia/nv.c nvidia_ioctl reads
the size from the request and copies that many bytes); UVM requests are the bare command numbers
(kernel-open/nvidia-uvm/uvm_ioctl.h UVM_IOCTL_BASE(i) is i).
"""
from __future__ import annotations

import ctypes
import re
from typing import Any, Optional

from autogen import nv_classes as C
from autogen import nv_rm as R
from autogen import nv_uvm as U
from autogen.ioctl import _IOWR
from drivers.system import OSCallError, System
from hcq.errors import HCQError, OutOfMemoryError

# status value -> name, from the generated status codes
STATUS_NAMES: dict[int, str] = {getattr(R, n): n for n in dir(R) if n.startswith("NV_ERR_")}
STATUS_NAMES[R.NV_OK] = "NV_OK"
# class id -> name, for messages: every class constant of the generated class table (names such as
# HOPPER_COMPUTE_A, NV01_DEVICE_0), not its method offsets (which carry a class-number prefix like NVC86F_)
_CLASS_NAME = re.compile(r"(?!NV[0-9A-F]{4}_)[A-Z][A-Z0-9]*(_[A-Z0-9]+)+")
CLASS_NAMES: dict[int, str] = {}
for _n in dir(C):
    _v = getattr(C, _n)
    if isinstance(_v, int) and _CLASS_NAME.fullmatch(_n) and 0x40 <= _v <= 0xFFFF and "USERMODE__" not in _n:
        CLASS_NAMES.setdefault(_v, _n)
CLASS_NAMES[R.GT200_DEBUGGER] = "GT200_DEBUGGER"

UVM_NAMES: dict[int, str] = {getattr(U, n): n for n in dir(U) if n.startswith("UVM_") and n.isupper()
                             and isinstance(getattr(U, n), int) and not n.startswith(("UVM_MAX", "UVM_PARENT"))}


def status_name(status: int) -> str:
    """NV_ERR_* name of an RM status (or its number when RM has more codes than our header declares)."""
    return STATUS_NAMES.get(status, f"NV status {status:#x}")


def class_name(cls: int) -> str:
    return CLASS_NAMES.get(cls, f"class {cls:#x}")


class NVError(HCQError):
    """An RM or UVM call failed; `status` is the NV_STATUS (or None for an OS error), the message names the call,
    the object and the status."""

    def __init__(self, message: str, status: Optional[int] = None):
        super().__init__(message)
        self.status = status


def escape_request(nr: int, params: Any) -> int:
    """The ioctl request of RM escape `nr` with this parameter block (its size is part of the request)."""
    return _IOWR(R.NV_IOCTL_MAGIC, nr, ctypes.sizeof(params))


class RMClient:
    """An RM client (NV01_ROOT_CLIENT) on a /dev/nvidiactl fd, and the UVM fd that goes with it. `who` prefixes
    every message (the device's name)."""

    def __init__(self, system: System, fd_ctl: int, who: str):
        self.system, self.fd_ctl, self.who = system, fd_ctl, who
        self.client = 0
        self.fd_uvm: Optional[int] = None

    # --- raw escapes ---
    def escape(self, fd: int, nr: int, params: Any, what: str) -> Any:
        """Issue escape `nr` on fd; an OS error becomes NVError naming `what`."""
        try:
            self.system.ioctl(fd, escape_request(nr, params), params)
        except OSCallError as e:
            raise NVError(f"{self.who}: {what} failed: {e.strerror or e} (errno {e.errno})") from e
        return params

    # --- RM objects ---
    def alloc_root(self) -> int:
        """RM_ALLOC NV01_ROOT_CLIENT: hRoot = hParent = hObjectNew = 0 lets RM pick the client handle
        (src/nvidia/src/kernel/rmapi/alloc_free.c rmapiAlloc: a client handle of 0 is generated)."""
        p = R.NVOS64_PARAMETERS(hRoot=0, hObjectParent=0, hObjectNew=0, hClass=C.NV01_ROOT_CLIENT)
        self.escape(self.fd_ctl, R.NV_ESC_RM_ALLOC, p, "RM_ALLOC NV01_ROOT_CLIENT")
        self._check(p.status, "RM_ALLOC NV01_ROOT_CLIENT")
        self.client = p.hObjectNew
        return self.client

    def alloc(self, parent: int, cls: int, params: Any = None, what: str = "") -> int:
        """RM_ALLOC of class `cls` under `parent`; RM picks the handle (hObjectNew = 0) and returns it."""
        p = R.NVOS64_PARAMETERS(hRoot=self.client, hObjectParent=parent, hObjectNew=0, hClass=cls,
                                pAllocParms=ctypes.addressof(params) if params is not None else 0,
                                paramsSize=ctypes.sizeof(params) if params is not None else 0)
        call = f"RM_ALLOC {class_name(cls)} under {parent:#x}" + (f" ({what})" if what else "")
        self.escape(self.fd_ctl, R.NV_ESC_RM_ALLOC, p, call)
        self._check(p.status, call)
        return p.hObjectNew

    def control(self, obj: int, cmd: int, params: Any = None, what: str = "") -> Any:
        """RM_CONTROL `cmd` on `obj`; returns params, filled in by RM."""
        p = R.NVOS54_PARAMETERS(hClient=self.client, hObject=obj, cmd=cmd,
                                params=ctypes.addressof(params) if params is not None else 0,
                                paramsSize=ctypes.sizeof(params) if params is not None else 0)
        call = f"RM_CONTROL {what or hex(cmd)} ({cmd:#x}) on {obj:#x}"
        self.escape(self.fd_ctl, R.NV_ESC_RM_CONTROL, p, call)
        self._check(p.status, call)
        return params

    def free(self, parent: int, handle: int, what: str = "") -> None:
        """RM_FREE an object (and everything under it)."""
        p = R.NVOS00_PARAMETERS(hRoot=self.client, hObjectParent=parent, hObjectOld=handle)
        call = f"RM_FREE {what or 'object'} {handle:#x} under {parent:#x}"
        self.escape(self.fd_ctl, R.NV_ESC_RM_FREE, p, call)
        self._check(p.status, call)

    def alloc_os_descriptor(self, fd_dev: int, parent: int, handle: int, addr: int, size: int) -> int:
        """NV_ESC_RM_ALLOC_MEMORY NV01_MEMORY_SYSTEM_OS_DESCRIPTOR: RM pins `size` bytes of this process's memory at
        `addr`. The escape is NV_ACTUAL_DEVICE_ONLY (src/nvidia/arch/nvalloc/unix/src/escape.c), so it goes to the
        GPU's fd; the handle is ours (RmAllocOsDescriptor takes hObjectNew as given)."""
        flags = (R.NVOS02_FLAGS_PHYSICALITY_NONCONTIGUOUS << R.NVOS02_FLAGS_PHYSICALITY_SHIFT |
                 R.NVOS02_FLAGS_COHERENCY_CACHED << R.NVOS02_FLAGS_COHERENCY_SHIFT |
                 R.NVOS02_FLAGS_MAPPING_NO_MAP << R.NVOS02_FLAGS_MAPPING_SHIFT)
        p = R.nv_ioctl_nvos02_parameters_with_fd(
            params=R.NVOS02_PARAMETERS(hRoot=self.client, hObjectParent=parent, hObjectNew=handle,
                                       hClass=C.NV01_MEMORY_SYSTEM_OS_DESCRIPTOR, flags=flags, pMemory=addr,
                                       limit=size - 1), fd=-1)
        call = f"RM_ALLOC_MEMORY NV01_MEMORY_SYSTEM_OS_DESCRIPTOR of {size} bytes at {addr:#x}"
        self.escape(fd_dev, R.NV_ESC_RM_ALLOC_MEMORY, p, call)
        self._check(p.params.status, call)
        return p.params.hObjectNew

    def map_memory(self, device: int, memory: int, length: int, map_fd: int, flags: int = 0) -> None:
        """NV_ESC_RM_MAP_MEMORY: prepare a CPU mapping of `memory` on `map_fd`, which the caller then mmaps at offset 0
        (kernel-open/nvidia/nv-mmap.c: the mmap context lives on that fd's file; vm_pgoff must be 0)."""
        p = R.nv_ioctl_nvos33_parameters_with_fd(
            params=R.NVOS33_PARAMETERS(hClient=self.client, hDevice=device, hMemory=memory, offset=0, length=length,
                                       flags=flags), fd=map_fd)
        call = f"RM_MAP_MEMORY of memory {memory:#x} ({length} bytes)"
        self.escape(self.fd_ctl, R.NV_ESC_RM_MAP_MEMORY, p, call)
        self._check(p.params.status, call)

    def _check(self, status: int, call: str) -> None:
        if status == R.NV_OK:
            return
        msg = f"{self.who}: {call} failed: {status_name(status)}"
        if status == R.NV_ERR_NO_MEMORY:
            raise OutOfMemoryError(msg + "; free buffers you no longer need")
        if status == R.NV_ERR_INSUFFICIENT_PERMISSIONS:
            msg += " (add yourself to the video group, or check the device nodes' permissions)"
        raise NVError(msg, status)

    # --- UVM ---
    def uvm(self, fd: int, cmd: int, params: Any, what: str = "") -> Any:
        """A UVM ioctl (request = command number); rmStatus != NV_OK becomes NVError."""
        name = UVM_NAMES.get(cmd, f"UVM ioctl {cmd:#x}") + (f" ({what})" if what else "")
        try:
            self.system.ioctl(fd, cmd, params)
        except OSCallError as e:
            raise NVError(f"{self.who}: {name} failed: {e.strerror or e} (errno {e.errno})") from e
        status = getattr(params, "rmStatus", R.NV_OK)
        if status != R.NV_OK:
            if status == R.NV_ERR_NO_MEMORY:
                raise OutOfMemoryError(f"{self.who}: {name} failed: {status_name(status)}")
            raise NVError(f"{self.who}: {name} failed: {status_name(status)}", status)
        return params

