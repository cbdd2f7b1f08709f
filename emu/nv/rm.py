"""Emulated NVIDIA kernel interfaces behind the OS seam: RM on /dev/nvidiactl and /dev/nvidiaN, UVM on
/dev/nvidia-uvm (emu/nv/uvm.py), the driver's version files and the GPUs' PCI identity in sysfs.

The ioctls take nvidia.ko's request numbers and struct layouts (autogen/nv_rm.py). As on Linux
(kernel-open/nvidia/nv.c nvidia_ioctl, src/nvidia/arch/nvalloc/unix/src/escape.c RmIoctl), a malformed escape (a
parameter size that is not the struct's, an escape sent to the wrong node) fails the ioctl with EINVAL, while what RM
itself refuses (an unknown handle, a wrong parent, a bad flag) comes back as an NV_ERR_* status in the struct's
status field with the ioctl returning 0. Objects live in a handle tree per client with the parent rules of resserv
(src/nvidia/src/libraries/resserv/src/rs_server.c, src/nvidia/src/kernel/rmapi/alloc_free.c); RM_FREE frees a
subtree. The GPU behind it (engines, VA spaces, doorbells) is EMU-GPU's EmuNVGPU (emu/nv/gpu.py), run in-process.
"""
from __future__ import annotations

import ctypes
import errno
import hashlib
import itertools
import mmap as _mmap
import re
import select
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from autogen import nv_classes as cls
from autogen import nv_rm as rm
from autogen.ioctl import decode as ioctl_decode
from drivers.system import OSCallError
from emu.nv.memory import PAGE_4K, MemObject, Pool, align_up, page_size_for
from emu.system import EmulatedSystem, NodeHandler


def _pinned_version() -> str:
    """The open-gpu-kernel-modules release our structs come from: the pin (autogen/include/nv/VERSION) as the
    generated module we emulate records it in its "# Source:" line."""
    found = re.search(r"open-gpu-kernel-modules (\d+\.\d+(?:\.\d+)?) [0-9a-f]{40}", Path(rm.__file__).read_text())
    if found is None:
        raise RuntimeError(f"{rm.__file__} names no open-gpu-kernel-modules pin: run python -m tools.autogen")
    return found.group(1)


NV_VERSION_STRING = _pinned_version()  # the emulated kernel module is the pinned release, so the check passes
NV_IOCTL_MAGIC = rm.NV_IOCTL_MAGIC
CLIENT_HANDLE_BASE = 0xC1D00000  # resserv: RS_CLIENT_HANDLE_BASE, where RM-chosen client handles start
OBJECT_HANDLE_BASE = 0xCAF00000  # resserv: RS_UNIQUE_HANDLE_BASE, where RM-chosen object handles start
USERD_ALIGN = 512  # kfifoGetUserdSizeAlign: USERD is 512 bytes, 512-aligned (NVOS04 USERD_INDEX: 4K / 512B)
NOTIFIER_SIZE = ctypes.sizeof(rm.NvNotification)
POLL_EVENTS = select.POLLIN | select.POLLPRI
ROOT_CLASSES = (0x0, 0x1, cls.NV01_ROOT_CLIENT)  # NV01_ROOT, NV01_ROOT_NON_PRIV, NV01_ROOT_CLIENT (escape.c)
EVENT_CLASSES = (0x5, cls.NV01_EVENT_OS_EVENT)  # NV01_EVENT and its OS-event form: allowed on /dev/nvidiaN too
EVENT_INDEX_MASK = 0xFFFF  # NV0005 notifyIndex: the index is the low bits, NV01_EVENT_* flags the high ones
NV2080_NOTIFIERS_MAXCOUNT = rm.NV2080_NOTIFIERS_MAXCOUNT  # cl2080_notification.h: subdevice notifiers are below it

# What each emulated target is shaped like (SPEC: classes by architecture; board facts of the card it imitates).
TARGETS: dict[str, dict[str, Any]] = {
    "sm_86": dict(arch=rm.NV2080_CTRL_MC_ARCH_INFO_ARCHITECTURE_GA100,
                  impl=rm.NV2080_CTRL_MC_ARCH_INFO_IMPLEMENTATION_GA102, channel=cls.AMPERE_CHANNEL_GPFIFO_A,
                  compute=cls.AMPERE_COMPUTE_B, copy=cls.AMPERE_DMA_COPY_B, usermode=(cls.TURING_USERMODE_A,),
                  name="NVIDIA GeForce RTX 3090", device_id=0x2204, pci_class=0x030000, vram=24 << 30, sms=82,
                  gpcs=7, tpc_per_gpc=6, sm_per_tpc=2, warps_per_sm=48, sm_version=0x0806, bar1=256 << 20,
                  va_bits=49),
    "sm_89": dict(arch=rm.NV2080_CTRL_MC_ARCH_INFO_ARCHITECTURE_AD100,
                  impl=rm.NV2080_CTRL_MC_ARCH_INFO_IMPLEMENTATION_AD102, channel=cls.AMPERE_CHANNEL_GPFIFO_A,
                  compute=cls.ADA_COMPUTE_A, copy=cls.AMPERE_DMA_COPY_B, usermode=(cls.TURING_USERMODE_A,),
                  name="NVIDIA GeForce RTX 4090", device_id=0x2684, pci_class=0x030000, vram=24 << 30, sms=128,
                  gpcs=11, tpc_per_gpc=6, sm_per_tpc=2, warps_per_sm=48, sm_version=0x0809, bar1=256 << 20,
                  va_bits=49),
    "sm_90": dict(arch=rm.NV2080_CTRL_MC_ARCH_INFO_ARCHITECTURE_GH100,
                  impl=rm.NV2080_CTRL_MC_ARCH_INFO_IMPLEMENTATION_GH100, channel=cls.HOPPER_CHANNEL_GPFIFO_A,
                  compute=cls.HOPPER_COMPUTE_A, copy=cls.HOPPER_DMA_COPY_A,
                  usermode=(cls.TURING_USERMODE_A, rm.HOPPER_USERMODE_A),
                  name="NVIDIA H200", device_id=0x2335, pci_class=0x030200, vram=141 << 30, sms=132,
                  gpcs=8, tpc_per_gpc=9, sm_per_tpc=2, warps_per_sm=64, sm_version=0x0900, bar1=256 << 30,
                  va_bits=57),
}
CHANNEL_CLASSES = {cls.AMPERE_CHANNEL_GPFIFO_A, cls.HOPPER_CHANNEL_GPFIFO_A}
COMPUTE_CLASSES = {cls.AMPERE_COMPUTE_B, cls.ADA_COMPUTE_A, cls.HOPPER_COMPUTE_A}
COPY_CLASSES = {cls.AMPERE_DMA_COPY_B, cls.HOPPER_DMA_COPY_A}
MEMORY_CLASSES = {cls.NV01_MEMORY_LOCAL_USER, cls.NV01_MEMORY_SYSTEM, cls.NV01_MEMORY_SYSTEM_OS_DESCRIPTOR}
USERMODE_CLASSES = {cls.TURING_USERMODE_A, rm.HOPPER_USERMODE_A}


class RMError(Exception):
    """An NV_ERR_* status RM returns in the parameter block (the ioctl itself succeeds)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{message} (NV status {status:#x})")
        self.status = status


def _field(value: int, shift: int, width: int) -> int:
    return (value >> shift) & ((1 << width) - 1)


@dataclass
class RmObject:
    """One RM object: its handle, class, parent and children, and what the class keeps (`state`)."""
    handle: int
    hclass: int
    kind: str
    parent: "RmObject | None"
    client: "RmClient"
    children: list["RmObject"] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)

    def ancestor(self, kind: str) -> "RmObject | None":
        o: RmObject | None = self
        while o is not None and o.kind != kind:
            o = o.parent
        return o


@dataclass
class RmClient:
    """An RM client (NV01_ROOT_CLIENT): its handle namespace and the file that created it."""
    handle: int
    owner: "NVFile"
    objects: dict[int, RmObject] = field(default_factory=dict)
    root: RmObject | None = None


@dataclass
class OsEvent:
    """An fd registered by NV_ESC_ALLOC_OS_EVENT (osapi.c allocate_os_event): events go to `file`'s queue."""
    client: int
    fd: int
    file: "NVFile"


@dataclass
class ChannelInfo:
    """What RM keeps of a GPFIFO channel for the GPU's callbacks (read without the RM lock)."""
    token: int
    gpu_index: int
    engine: str
    handle: int
    client: int
    notifier: MemObject | None
    faults: list[tuple[int, int, int]] = field(default_factory=list)  # (address, faultType, accessType)
    dead: bool = False


try:  # EMU-GPU's channel description; a stand-in with the same fields until emu/nv/gpu.py exists
    from emu.nv.gpu import ChannelDesc  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - only while emu/nv/gpu.py is being written
    @dataclass
    class ChannelDesc:  # type: ignore[no-redef]
        """The channel RM hands the GPU (mirrors emu/nv/gpu.py ChannelDesc)."""
        token: int
        group: int
        engine: str
        vaspace: Any
        gpfifo_va: int
        entries: int
        userd_host: int
        host_class: int


class RMGpu:
    """RM's side of one emulated GPU: identity, VRAM pool, the EmuNVGPU, its channels."""

    def __init__(self, index: int, target: str, gpu: Any, vram_limit: int):
        self.index, self.target, self.gpu = index, target, gpu
        self.info = TARGETS[target]
        self.bus = 0x41 + index
        self.bdf = f"0000:{self.bus:02x}:00.0"
        self.gpu_id = self.bus << 8  # RM's gpuId: derived from the PCI location (gpumgr: bus << 8 | device)
        self.minor = index
        self.uuid = hashlib.sha256(f"baregpu-emulated-nv-{index}-{target}".encode()).digest()[:16]
        self.vram = Pool(f"vram{index}", min(self.info["vram"], vram_limit))
        self.classes = sorted({cls.NV01_ROOT_CLIENT, cls.NV01_DEVICE_0, cls.NV20_SUBDEVICE_0, *self.info["usermode"],
                               cls.FERMI_VASPACE_A, cls.KEPLER_CHANNEL_GROUP_A, cls.FERMI_CONTEXT_SHARE_A,
                               cls.NV01_MEMORY_LOCAL_USER, cls.NV01_MEMORY_SYSTEM, cls.NV01_MEMORY_SYSTEM_OS_DESCRIPTOR,
                               cls.NV01_EVENT_OS_EVENT, rm.GT200_DEBUGGER, self.info["channel"],
                               self.info["compute"], self.info["copy"]})

    def uuid_text(self) -> str:
        h = self.uuid.hex()
        return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _call(ref: Callable[[], Any], method: str, *args: Any) -> None:
    """Call `method` of the machine `ref` points at, unless it is gone (a GPU thread finishing late)."""
    nv = ref()
    if nv is not None:
        getattr(nv, method)(*args)


def _release(rgpus: list[Any], sysmem: Any) -> None:
    """Stop every GPU's engines and release the pools: EmulatedNV.close, or its finalizer."""
    for r in rgpus:
        r.gpu.close()
        r.vram.close()
    sysmem.close()


class EmulatedNV:
    """The emulated NVIDIA kernel side shared by every open file: GPUs, RM clients and objects, OS events, UVM.

    `targets`: one "sm_86" | "sm_89" | "sm_90" per GPU. `hazard` and `host_kernels` go to each EmuNVGPU.
    `vram_limit` caps each GPU's VRAM pool (a sparse memfd); allocations past it are NV_ERR_NO_MEMORY.
    Options: `sysmem_limit` (the system-memory pool), `gpu_factory(index, sm, hazard, host_kernels)` (tests),
    `refused_classes` (classes every allocation of is refused with NV_ERR_NOT_SUPPORTED: fault injection)."""

    def __init__(self, targets: tuple[str, ...] = ("sm_90",), hazard: int | None = None, vram_limit: int = 4 << 30,
                 host_kernels: bool = True, **options: Any):
        unknown = [t for t in targets if t not in TARGETS]
        if unknown:
            raise ValueError(f"no emulated NVIDIA GPU for {unknown}; emulated targets are {sorted(TARGETS)}")
        factory: Callable[..., Any] | None = options.pop("gpu_factory", None)
        sysmem_limit = int(options.pop("sysmem_limit", 4 << 30))
        # Fault injection: classes this machine's RM refuses, as a sandbox's RM proxy does for classes CUDA does not use
        # (gVisor's nvproxy allows a list of classes per driver version).
        self.refused_classes = frozenset(options.pop("refused_classes", ()))
        if options:
            raise TypeError(f"EmulatedNV got unknown options {sorted(options)}")
        if factory is None:
            from emu.nv.gpu import EmuNVGPU
            factory = EmuNVGPU
        self.hazard, self.host_kernels = hazard, host_kernels
        self.lock = threading.RLock()  # RM's API lock: one ioctl at a time changes the object trees
        # OS events and channel errors: GPU threads take only this lock (never self.lock, which an ioctl may hold
        # while it waits for an engine thread), and code holding it never takes self.lock
        self.ev_lock = threading.Lock()
        self.event_objects: list[RmObject] = []  # NV01_EVENT_OS_EVENT objects, guarded by ev_lock
        self.rgpus: list[RMGpu] = []
        for i, t in enumerate(targets):
            g = factory(i, t, hazard=hazard, host_kernels=host_kernels)
            self.rgpus.append(RMGpu(i, t, g, vram_limit))
        # The GPUs' threads reach RM only through a weak reference: a machine nobody uses any more is collected, and
        # its finalizer stops those threads and releases the pools (tests make hundreds of machines).
        me = weakref.ref(self)
        for r in self.rgpus:
            r.gpu.on_nonstall = lambda token, r=r: _call(me, "on_nonstall", r.index, token)
            r.gpu.on_error = lambda token, code, info, r=r: _call(me, "on_error", r.index, token, code, info)
        self.sysmem = Pool("sysmem", sysmem_limit)
        self._release = weakref.finalize(self, _release, list(self.rgpus), self.sysmem)
        self.clients: dict[int, RmClient] = {}
        self.os_events: list[OsEvent] = []
        self.channels: dict[tuple[int, int], ChannelInfo] = {}  # (gpu index, token) -> channel
        self._client_handles = itertools.count(CLIENT_HANDLE_BASE)
        self._object_handles = itertools.count(OBJECT_HANDLE_BASE)
        self._chids = itertools.count(1)
        self._system: Callable[[], EmulatedSystem | None] = lambda: None  # a weak reference once installed
        self.closed = False

    @property
    def system(self) -> EmulatedSystem | None:
        """The EmulatedSystem this is installed on (None before install, or once it is gone)."""
        return self._system()

    @property
    def gpus(self) -> list[Any]:
        """The EmuNVGPU of each emulated GPU, in index order."""
        return [r.gpu for r in self.rgpus]

    # --- the machine ---
    def install(self, system: EmulatedSystem) -> None:
        """Register /dev/nvidiactl, /dev/nvidiaN, /dev/nvidia-uvm, the driver's version files and the PCI sysfs."""
        from emu.nv.uvm import UVMFile
        self._system = weakref.ref(system)  # the system holds this machine; this must not hold the system
        system.add_node("/dev/nvidiactl", lambda flags: NVFile(self, None))
        for r in self.rgpus:
            system.add_node(f"/dev/nvidia{r.minor}", lambda flags, r=r: NVFile(self, r))
            base = f"/sys/bus/pci/devices/{r.bdf}"
            system.add_file(f"{base}/vendor", "0x10de\n")
            system.add_file(f"{base}/device", f"0x{r.info['device_id']:04x}\n")
            system.add_file(f"{base}/class", f"0x{r.info['pci_class']:06x}\n")
            system.add_file(f"/proc/driver/nvidia/gpus/{r.bdf}/information",
                            f"Model: \t\t {r.info['name']}\nIRQ:   \t\t 0\nGPU UUID: \t {r.uuid_text()}\n"
                            f"Video BIOS: \t ??.??.??.??.??\nBus Type: \t PCIe\nDMA Size: \t 52 bits\n"
                            f"DMA Mask: \t 0xfffffffffffff\nBus Location: \t {r.bdf}\nDevice Minor: \t {r.minor}\n"
                            f"GPU Excluded:\t No\n")
        system.add_node("/dev/nvidia-uvm", lambda flags: UVMFile(self))
        system.add_file("/proc/driver/nvidia/version",
                        f"NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  {NV_VERSION_STRING}  Release Build  "
                        f"(baregpu-emulated)  Thu Jan  1 00:00:00 UTC 2025\nGCC version:  gcc version 12.2.0\n")
        system.add_file("/sys/module/nvidia/version", f"{NV_VERSION_STRING}\n")

    def close(self) -> None:
        """Stop every GPU's engines and release the pools (what unloading the module does)."""
        self.closed = True
        self._release()

    def file_of(self, fd: int) -> NodeHandler | None:
        """The emulated file behind a file descriptor the driver passed in a struct (None: not an open fd)."""
        system = self.system
        if system is None:
            return None
        return system._fds.get(fd)

    # --- fault injection (tests) ---
    def stall(self, gpu_index: int, engine: str, on: bool = True) -> None:
        """The engine ("compute" | "copy") of GPU gpu_index stops consuming work (or resumes)."""
        self.rgpus[gpu_index].gpu.stall(engine, on)

    def delay(self, gpu_index: int, *args: Any, **kwargs: Any) -> None:
        """Delay work on a GPU (EMU-GPU's EmuNVGPU.delay decides what is delayed)."""
        self.rgpus[gpu_index].gpu.delay(*args, **kwargs)

    def poison(self, gpu_index: int, va: int, size: int) -> None:
        """GPU accesses to [va, va+size) fault although mapped."""
        self.rgpus[gpu_index].gpu.poison(va, size)

    def kill_channel(self, gpu_index: int, token: int) -> None:
        """The channel with work submit token `token` dies: the GPU reports a channel error."""
        self.rgpus[gpu_index].gpu.kill_channel(token)

    def counters(self, gpu_index: int) -> dict[str, int]:
        return self.rgpus[gpu_index].gpu.counters()

    # --- callbacks from the GPU (engine threads: never take self.lock) ---
    def on_nonstall(self, gpu_index: int, token: int) -> None:
        """A channel's NON_STALL_INTERRUPT: RM's non-stall interrupt service notifies NV2080_NOTIFIERS_FIFO_EVENT_MTHD
        on the GPU's subdevices (kernel_fifo: kfifoServiceNonStall... -> notifyEvents), which posts to OS events."""
        self._notify(gpu_index, rm.NV2080_NOTIFIERS_FIFO_EVENT_MTHD, 0, 0)

    def on_error(self, gpu_index: int, token: int, code: int, info: dict[str, Any]) -> None:
        """A channel error: write the channel's error notifier as krcErrorWriteNotifier_CPU does
        (gpu/rc/kernel_rc_notification.c: info32 = the ROBUST_CHANNEL_* code, info16 = the NV2080 engine type,
        status 0xffff; mem_mgr/method_notification.c notifyFillNvNotification: nanoseconds[0] = time high word,
        nanoseconds[1] = low word), keep GR MMU faults for GT200_DEBUGGER, then wake sleepers."""
        ch = self.channels.get((gpu_index, token))
        if ch is None:
            return
        now = self.rgpus[gpu_index].gpu.clock_ns()
        with self.ev_lock:
            ch.dead = True
            if code == rm.ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT and ch.engine == "compute":
                access = 1 if str(info.get("access", "read")) == "write" else 0  # NV_PFAULT_ACCESS_TYPE READ=0 WRITE=1
                ch.faults.append((int(info.get("address") or 0), 0, access))
            n = ch.notifier
            if n is not None:
                at = n.host + rm.NV_CHANNELGPFIFO_NOTIFICATION_TYPE_ERROR * NOTIFIER_SIZE
                note = rm.NvNotification.from_address(at)
                note.timeStampNanoseconds[0], note.timeStampNanoseconds[1] = now >> 32, now & 0xFFFFFFFF
                note.info32 = code
                note.info16 = rm.NV2080_ENGINE_TYPE_GRAPHICS if ch.engine == "compute" else rm.NV2080_ENGINE_TYPE_COPY0
                note.status = 0xFFFF
        # RM also sends the error's event notifications (krcErrorSendEventNotifications); a sleeping driver wakes
        # through its OS event file either way (emulator: a dataless wake on every armed event of this GPU).
        self._notify(gpu_index, None, code, 0)

    def _notify(self, gpu_index: int, index: int | None, info32: int, info16: int) -> None:
        """Post to the OS events of the GPU's subdevices whose notification for `index` is armed (None: wake all)."""
        targets: list[tuple[OsEvent, int, int, bool]] = []
        with self.ev_lock:
            for obj in self.event_objects:
                if obj.parent is None:
                    continue
                sub = obj.parent.ancestor("subdevice")
                if sub is None or sub.state["gpu"] != gpu_index:
                    continue
                ev_index = obj.state["index"]
                action = sub.state["actions"].get(ev_index, rm.NV2080_CTRL_EVENT_SET_NOTIFICATION_ACTION_DISABLE)
                if index is not None and (ev_index != index or
                                          action == rm.NV2080_CTRL_EVENT_SET_NOTIFICATION_ACTION_DISABLE):
                    continue
                if index is not None and action == rm.NV2080_CTRL_EVENT_SET_NOTIFICATION_ACTION_SINGLE:
                    sub.state["actions"][ev_index] = rm.NV2080_CTRL_EVENT_SET_NOTIFICATION_ACTION_DISABLE
                targets.append((obj.state["os_event"], obj.handle, ev_index,
                                index is not None and not obj.state["dataless"]))
        for ev, handle, ev_index, with_data in targets:
            ev.file.post_event(handle, ev_index, info32, info16, with_data)

    # --- handles and objects ---
    def client(self, handle: int) -> RmClient:
        c = self.clients.get(handle)
        if c is None:  # rs_server.c serverAcquireClient
            raise RMError(rm.NV_ERR_INVALID_OBJECT_HANDLE, f"no RM client {handle:#x}")
        return c

    def lookup(self, client: RmClient, handle: int) -> RmObject:
        o = client.objects.get(handle)
        if o is None:  # rs_client.c clientGetResourceRef
            raise RMError(rm.NV_ERR_OBJECT_NOT_FOUND, f"client {client.handle:#x} has no object {handle:#x}")
        return o

    def lookup_kind(self, client: RmClient, handle: int, kinds: tuple[str, ...], what: str) -> RmObject:
        o = self.lookup(client, handle)
        if o.kind not in kinds:  # rs_client.c clientGetResourceRefByType
            raise RMError(rm.NV_ERR_INVALID_OBJECT, f"{what} {handle:#x} is a {o.kind} (class {o.hclass:#x}), "
                                                    f"not a {' or '.join(kinds)}")
        return o

    def rgpu_of(self, obj: RmObject) -> RMGpu:
        dev = obj.ancestor("device")
        if dev is None:
            raise RMError(rm.NV_ERR_INVALID_OBJECT_PARENT, f"object {obj.handle:#x} is not under a device")
        return self.rgpus[dev.state["gpu"]]

    def free_object(self, obj: RmObject) -> None:
        """Free obj and its subtree, children first (rs_server.c serverFreeResourceTree)."""
        for child in list(reversed(obj.children)):
            self.free_object(child)
        self._destroy(obj)
        obj.client.objects.pop(obj.handle, None)
        if obj.parent is not None and obj in obj.parent.children:
            obj.parent.children.remove(obj)

    def _destroy(self, obj: RmObject) -> None:
        st = obj.state
        if obj.kind == "channel":
            ch: ChannelInfo = st["info"]
            self.channels.pop((ch.gpu_index, ch.token), None)
            if obj.parent is not None and ch.token in obj.parent.state["channels"]:
                obj.parent.state["channels"].remove(ch.token)
            self.rgpus[ch.gpu_index].gpu.remove_channel(ch.token)
            for h in st["deps"]:
                h.state["users"] -= 1
                self._maybe_release(h)
        elif obj.kind == "event":
            with self.ev_lock:
                if obj in self.event_objects:
                    self.event_objects.remove(obj)
        elif obj.kind == "memory":
            st["rm_freed"] = True
            self._maybe_release(obj)
        elif obj.kind == "client":
            with self.ev_lock:  # escape.c NV_ESC_RM_FREE of a client: rm_client_free_os_events
                self.os_events = [e for e in self.os_events if e.client != obj.handle]
            self.clients.pop(obj.handle, None)

    @staticmethod
    def _maybe_release(obj: RmObject) -> None:
        """A memory object's pages go back when RM freed it and nothing (a channel, a UVM mapping) still holds it."""
        st = obj.state
        if st.get("rm_freed") and st.get("users", 0) == 0 and not st.get("released"):
            st["released"] = True
            st["mem"].free()


def _arg_view(arg: Any) -> tuple[int, int]:
    """(address, size) of an ioctl argument buffer; a non-buffer is what the kernel sees as a bad pointer."""
    if isinstance(arg, bytearray):
        return ctypes.addressof((ctypes.c_char * len(arg)).from_buffer(arg)), len(arg)
    try:
        return ctypes.addressof(arg), ctypes.sizeof(arg)
    except TypeError:
        raise OSCallError(errno.EFAULT, f"ioctl argument {type(arg).__name__} is not memory") from None


class NVFile(NodeHandler):
    """One open /dev/nvidiactl (rgpu None) or /dev/nvidiaN: RM escapes, mmap of the range RM_MAP_MEMORY named, and
    poll/GET_EVENT_DATA for the OS events posted to it."""

    def __init__(self, dev: EmulatedNV, rgpu: RMGpu | None):
        self.dev, self.rgpu = dev, rgpu
        self.is_ctl = rgpu is None
        self.ctl_file: NVFile | None = None  # NV_ESC_REGISTER_FD: the nvidiactl file this one is registered with
        self.mmap_context: dict[str, Any] | None = None  # nv-usermap.c nv_add_mapping_context_to_file
        self.cv = threading.Condition()
        self.events: list[tuple[int, int, int, int]] = []  # (hObject, index, info32, info16): nvlfp->event_data_head
        self.dataless_pending = False
        self.closed = False

    # --- OS events ---
    def post_event(self, handle: int, index: int, info32: int, info16: int, with_data: bool) -> None:
        """nv.c nv_post_event: queue an event with data, or mark a dataless one pending; wake pollers."""
        with self.cv:
            if with_data:
                self.events.append((handle, index, info32, info16))
            else:
                self.dataless_pending = True
            self.cv.notify_all()

    def poll(self, events: int, timeout_s: float) -> int:
        """nv.c nvidia_poll: POLLPRI|POLLIN while an event is queued or a dataless one is pending (which poll
        consumes). The GPUs' doorbell watchers are kicked first, so an idle watcher looks at once."""
        for r in self.dev.rgpus:
            r.gpu.kick()
        with self.cv:
            def ready() -> bool:
                return bool(self.events) or self.dataless_pending or self.closed
            self.cv.wait_for(ready, timeout=max(0.0, min(timeout_s, 3600.0)))
            if not (self.events or self.dataless_pending):
                return 0
            self.dataless_pending = False
            return POLL_EVENTS & (events | POLL_EVENTS)

    # --- the ioctl entry (nv.c nvidia_ioctl) ---
    def ioctl(self, request: int, arg: Any) -> int:
        direction, typ, nr, size = ioctl_decode(request)
        if typ != NV_IOCTL_MAGIC:
            raise OSCallError(errno.ENOTTY, f"ioctl {request:#x} is not an NVIDIA ioctl (type {typ:#x})")
        addr, have = _arg_view(arg)
        if nr == rm.NV_ESC_IOCTL_XFER_CMD:
            if size != ctypes.sizeof(rm.nv_ioctl_xfer_t) or have < size:
                raise OSCallError(errno.EINVAL, "NV_ESC_IOCTL_XFER_CMD: invalid ioctl XFER structure size")
            xfer = rm.nv_ioctl_xfer_t.from_address(addr)
            if not xfer.ptr:
                raise OSCallError(errno.EFAULT, "NV_ESC_IOCTL_XFER_CMD: NULL parameter pointer")
            nr, size, addr, have = xfer.cmd, xfer.size, xfer.ptr, xfer.size
        elif have < size:  # the kernel would copy `size` bytes from a smaller buffer: past its end
            raise OSCallError(errno.EFAULT, f"ioctl {request:#x} names {size} bytes but the argument has {have}")
        if nr == rm.NV_ESC_WAIT_OPEN_COMPLETE:
            if size >= ctypes.sizeof(rm.nv_ioctl_wait_open_complete_t):
                p = rm.nv_ioctl_wait_open_complete_t.from_address(addr)
                p.rc, p.adapterStatus = 0, rm.NV_OK
            return 0
        with self.dev.lock:
            status = self._escape(nr, addr, size)
        if status != rm.NV_OK:  # nv.c: rm_ioctl failed -> -EINVAL (the parameters are still copied out)
            raise OSCallError(errno.EINVAL, f"NVIDIA escape {nr:#x} ({size} bytes) on "
                                            f"{'/dev/nvidiactl' if self.is_ctl else f'/dev/nvidia{self.rgpu.minor}'}"
                                            f" failed: {self._why}")
        return 0

    _why = ""

    def _fail(self, status: int, why: str) -> int:
        self._why = f"{why} (NV status {status:#x})"
        return status

    def _ctl_only(self, nr: int) -> int | None:
        if not self.is_ctl:  # escape.c / nv.c NV_CTL_DEVICE_ONLY
            return self._fail(rm.NV_ERR_INVALID_ARGUMENT, f"escape {nr:#x} is only accepted on /dev/nvidiactl")
        return None

    def _escape(self, nr: int, addr: int, size: int) -> int:
        def sized(t: type) -> Any:
            if size != ctypes.sizeof(t):
                raise _Bad(rm.NV_ERR_INVALID_ARGUMENT, f"escape {nr:#x} takes {ctypes.sizeof(t)} bytes "
                                                       f"({t.__name__}), got {size}")
            return t.from_address(addr)
        try:
            if nr == rm.NV_ESC_CARD_INFO:
                return self._ctl_only(nr) or self.card_info(addr, size)
            if nr == rm.NV_ESC_CHECK_VERSION_STR:
                return self._ctl_only(nr) or self.check_version(sized(rm.nv_ioctl_rm_api_version_t))
            if nr == rm.NV_ESC_SYS_PARAMS:
                return self._ctl_only(nr) or (sized(rm.nv_ioctl_sys_params_t) and rm.NV_OK)
            if nr == rm.NV_ESC_ALLOC_OS_EVENT:  # osapi.c rm_ioctl: handled in the OS layer, any node
                return self.alloc_os_event(sized(rm.nv_ioctl_alloc_os_event_t))
            if nr == rm.NV_ESC_FREE_OS_EVENT:
                return self.free_os_event(sized(rm.nv_ioctl_free_os_event_t))
            if nr == rm.NV_ESC_RM_GET_EVENT_DATA:
                return self.get_event_data(sized(rm.NVOS41_PARAMETERS))
            if nr == rm.NV_ESC_REGISTER_FD:
                return self.register_fd(sized(rm.nv_ioctl_register_fd_t))
            if nr == rm.NV_ESC_RM_ALLOC:
                if size not in (ctypes.sizeof(rm.NVOS21_PARAMETERS), ctypes.sizeof(rm.NVOS64_PARAMETERS)):
                    return self._fail(rm.NV_ERR_INVALID_ARGUMENT, f"RM_ALLOC takes NVOS21 or NVOS64, got {size} bytes")
                t = rm.NVOS64_PARAMETERS if size == ctypes.sizeof(rm.NVOS64_PARAMETERS) else rm.NVOS21_PARAMETERS
                p = t.from_address(addr)
                if p.hClass not in EVENT_CLASSES:  # escape.c: only event classes may be allocated on /dev/nvidiaN
                    bad = self._ctl_only(nr)
                    if bad:
                        return bad
                return self.rm_alloc(p)
            if nr == rm.NV_ESC_RM_ALLOC_MEMORY:
                if self.is_ctl:  # escape.c NV_ACTUAL_DEVICE_ONLY
                    return self._fail(rm.NV_ERR_INVALID_ARGUMENT, "RM_ALLOC_MEMORY is only accepted on /dev/nvidiaN")
                return self.rm_alloc_memory(sized(rm.nv_ioctl_nvos02_parameters_with_fd))
            if nr == rm.NV_ESC_RM_FREE:
                return self._ctl_only(nr) or self.rm_free(sized(rm.NVOS00_PARAMETERS))
            if nr == rm.NV_ESC_RM_CONTROL:
                return self._ctl_only(nr) or self.rm_control(sized(rm.NVOS54_PARAMETERS))
            if nr == rm.NV_ESC_RM_MAP_MEMORY:
                return self._ctl_only(nr) or self.rm_map_memory(sized(rm.nv_ioctl_nvos33_parameters_with_fd))
            if nr == rm.NV_ESC_RM_UNMAP_MEMORY:
                return self._ctl_only(nr) or self.rm_unmap_memory(sized(rm.NVOS34_PARAMETERS))
        except _Bad as e:
            return self._fail(e.status, str(e))
        # escape.c RmIoctl default: "unknown NVRM ioctl command" -> NV_ERR_GENERIC
        return self._fail(rm.NV_ERR_GENERIC, f"escape {nr:#x} is not emulated")

    # --- OS-layer escapes ---
    def card_info(self, addr: int, size: int) -> int:
        """nv.c nvidia_read_card_info: one nv_ioctl_card_info_t per slot the caller gave room for."""
        n = size // ctypes.sizeof(rm.nv_ioctl_card_info_t)
        infos = (rm.nv_ioctl_card_info_t * n).from_address(addr)
        ctypes.memset(addr, 0, n * ctypes.sizeof(rm.nv_ioctl_card_info_t))
        for r, ci in zip(self.dev.rgpus, infos):
            ci.valid = 1
            ci.pci_info.domain, ci.pci_info.bus, ci.pci_info.slot, ci.pci_info.function = 0, r.bus, 0, 0
            ci.pci_info.vendor_id, ci.pci_info.device_id = 0x10DE, r.info["device_id"]
            ci.gpu_id, ci.minor_number = r.gpu_id, r.minor
            ci.reg_address, ci.reg_size = 0xF0000000 + (r.index << 26), 16 << 20
            ci.fb_address, ci.fb_size = 0x38000000000 + (r.index << 40), r.info["bar1"]
        return rm.NV_OK

    def check_version(self, p: Any) -> int:
        """osapi.c RmPerformVersionCheck: QUERY copies RM's string; RELAXED matches up to the first '.'."""
        p.reply = rm.NV_RM_API_VERSION_REPLY_RECOGNIZED
        ours = NV_VERSION_STRING.encode() + b"\0"
        if p.cmd == rm.NV_RM_API_VERSION_CMD_QUERY:
            ctypes.memmove(ctypes.addressof(p) + type(p).versionString.offset, ours, len(ours))
            return rm.NV_OK
        relaxed = p.cmd == rm.NV_RM_API_VERSION_CMD_RELAXED
        theirs = bytes(ctypes.string_at(ctypes.addressof(p) + type(p).versionString.offset,
                                        rm.NV_RM_API_VERSION_STRING_LENGTH))
        for i in range(rm.NV_RM_API_VERSION_STRING_LENGTH):
            c, o = theirs[i], ours[i] if i < len(ours) else -1
            if c != o:
                break
            if (relaxed and c == ord(".")) or c == 0:
                return rm.NV_OK
        ctypes.memmove(ctypes.addressof(p) + type(p).versionString.offset, ours, len(ours))
        client_version = theirs.split(b"\0")[0].decode(errors="replace")
        return self._fail(rm.NV_ERR_GENERIC, f"API mismatch: the client has version {client_version!r}, this kernel "
                                             f"module has {NV_VERSION_STRING}")

    def register_fd(self, p: Any) -> int:
        """escape.c NV_ESC_REGISTER_FD: ties this file to an nvidiactl file (once; not to itself; not to a
        registered file)."""
        if self.ctl_file is not None:
            return self._fail(rm.NV_ERR_INVALID_STATE, "this file is already registered with an nvidiactl fd")
        ctl = self.dev.file_of(p.ctl_fd)
        if not isinstance(ctl, NVFile) or not ctl.is_ctl:
            return self._fail(rm.NV_ERR_INVALID_ARGUMENT, f"ctl_fd {p.ctl_fd} is not an open /dev/nvidiactl")
        if ctl is self or ctl.ctl_file is not None:
            return self._fail(rm.NV_ERR_INVALID_ARGUMENT, f"ctl_fd {p.ctl_fd} cannot be registered with")
        self.ctl_file = ctl
        return rm.NV_OK

    def alloc_os_event(self, p: Any) -> int:
        """osapi.c allocate_os_event: one event per (client, fd); any failure is NV_ERR_INSUFFICIENT_RESOURCES."""
        with self.dev.ev_lock:
            if any(e.client == p.hClient and e.fd == p.fd for e in self.dev.os_events):
                p.Status = rm.NV_ERR_INSUFFICIENT_RESOURCES
            else:
                self.dev.os_events.append(OsEvent(p.hClient, p.fd, self))
                p.Status = rm.NV_OK
        return rm.NV_OK

    def free_os_event(self, p: Any) -> int:
        """osapi.c free_os_event: NV_ERR_INVALID_EVENT when no event has that (client, fd)."""
        with self.dev.ev_lock:
            hit = [e for e in self.dev.os_events if e.client == p.hClient and e.fd == p.fd]
            if hit:
                self.dev.os_events.remove(hit[0])
            p.Status = rm.NV_OK if hit else rm.NV_ERR_INVALID_EVENT
        return rm.NV_OK

    def get_event_data(self, p: Any) -> int:
        """osapi.c get_os_event_data + nv.c nv_get_event: dequeue one event into *pEvent; MoreEvents says whether
        another is queued; an empty queue is NV_ERR_OPERATING_SYSTEM."""
        with self.cv:
            if not self.events:
                p.status = rm.NV_ERR_OPERATING_SYSTEM
                return rm.NV_OK
            handle, index, info32, info16 = self.events.pop(0)
            p.MoreEvents = 1 if self.events else 0
        if not p.pEvent:
            p.status = rm.NV_ERR_INVALID_POINTER
            return rm.NV_OK
        ev = rm.NvUnixEvent.from_address(p.pEvent)
        ctypes.memset(p.pEvent, 0, ctypes.sizeof(rm.NvUnixEvent))
        ev.hObject, ev.NotifyIndex, ev.info32, ev.info16 = handle, index, info32, info16
        p.status = rm.NV_OK
        return rm.NV_OK

    # --- RM API escapes: statuses go into the struct ---
    def rm_alloc(self, p: Any) -> int:
        try:
            p.hObjectNew = self.dev_alloc(p.hRoot, p.hObjectParent, p.hObjectNew, p.hClass, p.pAllocParms)
            p.status = rm.NV_OK
        except RMError as e:
            p.status = e.status
            self._why = str(e)
        return rm.NV_OK

    def rm_free(self, p: Any) -> int:
        try:
            client = self.dev.client(p.hRoot)
            if p.hObjectOld == p.hRoot:
                assert client.root is not None
                self.dev.free_object(client.root)
            else:
                obj = client.objects.get(p.hObjectOld)
                if obj is not None:  # RS_COMPATABILITY_MODE (src/nvidia/Makefile): an unknown handle frees as NV_OK
                    self.dev.free_object(obj)
            p.status = rm.NV_OK
        except RMError as e:
            p.status = e.status
        return rm.NV_OK

    def rm_control(self, p: Any) -> int:
        try:
            if p.hClient not in self.dev.clients:  # control.c _rmapiRmControl: serverutilGetClientUnderLock
                raise RMError(rm.NV_ERR_INVALID_CLIENT, f"no RM client {p.hClient:#x}")
            if (p.paramsSize != 0) != bool(p.params):  # control.c: a size without a pointer or a pointer without size
                raise RMError(rm.NV_ERR_INVALID_ARGUMENT, f"control {p.cmd:#x}: paramsSize {p.paramsSize} and "
                                                          f"params {p.params:#x} disagree")
            control(self.dev, self.dev.clients[p.hClient], p.hObject, p.cmd, p.params, p.paramsSize)
            p.status = rm.NV_OK
        except RMError as e:
            p.status = e.status
            self._why = str(e)
        return rm.NV_OK

    def rm_alloc_memory(self, w: Any) -> int:
        """escape.c NV_ESC_RM_ALLOC_MEMORY: NV01_MEMORY_SYSTEM_OS_DESCRIPTOR wraps the caller's own pages
        (RmAllocOsDescriptor / RmCreateOsDescriptor)."""
        p = w.params
        try:
            if p.hClass != cls.NV01_MEMORY_SYSTEM_OS_DESCRIPTOR:
                raise RMError(rm.NV_ERR_NOT_SUPPORTED, f"RM_ALLOC_MEMORY of class {p.hClass:#x} is not emulated "
                                                       "(only NV01_MEMORY_SYSTEM_OS_DESCRIPTOR)")
            loc = _field(p.flags, rm.NVOS02_FLAGS_LOCATION_SHIFT, rm.NVOS02_FLAGS_LOCATION_WIDTH)
            mapping = _field(p.flags, rm.NVOS02_FLAGS_MAPPING_SHIFT, rm.NVOS02_FLAGS_MAPPING_WIDTH)
            coh = _field(p.flags, rm.NVOS02_FLAGS_COHERENCY_SHIFT, rm.NVOS02_FLAGS_COHERENCY_WIDTH)
            if loc != rm.NVOS02_FLAGS_LOCATION_PCI or mapping != rm.NVOS02_FLAGS_MAPPING_NO_MAP:
                raise RMError(rm.NV_ERR_INVALID_FLAGS, f"OS descriptor flags {p.flags:#x}: need LOCATION_PCI and "
                                                       "MAPPING_NO_MAP (RmAllocOsDescriptor)")
            if coh not in (rm.NVOS02_FLAGS_COHERENCY_CACHED, rm.NVOS02_FLAGS_COHERENCY_WRITE_BACK,
                           rm.NVOS02_FLAGS_COHERENCY_UNCACHED):
                raise RMError(rm.NV_ERR_INVALID_FLAGS, f"OS descriptor coherency {coh} is not CACHED, WRITE_BACK "
                                                       "or UNCACHED")
            if p.pMemory % _mmap.PAGESIZE or not p.pMemory:  # RmCreateOsDescriptor: the descriptor is page-aligned
                raise RMError(rm.NV_ERR_NOT_SUPPORTED, f"OS descriptor address {p.pMemory:#x} is not page-aligned")
            if p.limit + 1 == 1 << 64:
                raise RMError(rm.NV_ERR_INVALID_LIMIT, "OS descriptor limit + 1 overflows")
            size = p.limit + 1
            if p.pMemory + size > (1 << 47):  # os_lock_user_pages: the pages must be user memory
                raise RMError(rm.NV_ERR_INVALID_ADDRESS, f"OS descriptor [{p.pMemory:#x}, +{size:#x}) is not user "
                                                         "memory")
            mem = MemObject("osdesc", size, p.pMemory, PAGE_4K)
            p.hObjectNew = self.dev_new(p.hRoot, p.hObjectParent, p.hObjectNew, p.hClass, "memory",
                                        {"mem": mem, "users": 0}, parents=("device", "subdevice"))
            p.status = rm.NV_OK
        except RMError as e:
            p.status = e.status
            self._why = str(e)
        return rm.NV_OK

    def rm_map_memory(self, w: Any) -> int:
        """escape.c NV_ESC_RM_MAP_MEMORY: validate the range (Nv04MapMemory), then create the mmap context on the
        file w.fd names (osapi.c RmCreateMmapContextLocked -> nv-usermap.c nv_add_mapping_context_to_file): BAR
        memory (VRAM, usermode registers) needs a /dev/nvidiaN file of the same GPU, system memory an nvidiactl file;
        a file holds one context."""
        p = w.params
        try:
            client = self.dev.clients.get(p.hClient)
            if client is None:
                raise RMError(rm.NV_ERR_INVALID_CLIENT, f"no RM client {p.hClient:#x}")
            dev_obj = self.dev.lookup(client, p.hDevice)
            if dev_obj.kind not in ("device", "subdevice"):
                raise RMError(rm.NV_ERR_INVALID_OBJECT_HANDLE, f"hDevice {p.hDevice:#x} is a {dev_obj.kind}")
            obj = self.dev.lookup(client, p.hMemory)
            if obj.kind not in ("memory", "usermode"):
                raise RMError(rm.NV_ERR_INVALID_OBJECT_HANDLE, f"hMemory {p.hMemory:#x} is a {obj.kind}, not memory")
            mem: MemObject = obj.state["mem"]
            if obj.kind == "usermode" and dev_obj.kind != "subdevice":
                raise RMError(rm.NV_ERR_INVALID_OBJECT_HANDLE, "usermode is mapped through its subdevice")
            if self.dev.rgpu_of(obj) is not self.dev.rgpu_of(dev_obj):
                raise RMError(rm.NV_ERR_INVALID_DEVICE, f"memory {p.hMemory:#x} is not on device {p.hDevice:#x}")
            if mem.kind == "osdesc":
                raise RMError(rm.NV_ERR_NOT_SUPPORTED, "OS descriptor memory is the caller's own pages: RM does not "
                                                       "map it for the CPU")
            if p.length == 0 or p.offset + p.length > mem.size:
                raise RMError(rm.NV_ERR_INVALID_LIMIT, f"map [{p.offset:#x}, +{p.length:#x}) outside memory "
                                                       f"{p.hMemory:#x} of {mem.size:#x} bytes")
            bar = mem.kind in ("vram", "usermode")
            target = self.dev.file_of(w.fd)
            if not isinstance(target, NVFile) or target.is_ctl == bar or \
                    (bar and target.rgpu is not self.dev.rgpu_of(obj)):
                want = f"/dev/nvidia{self.dev.rgpu_of(obj).minor}" if bar else "/dev/nvidiactl"
                raise RMError(rm.NV_ERR_INVALID_ARGUMENT, f"mapping fd {w.fd} must be an open {want} file "
                                                          f"(nv_add_mapping_context_to_file)")
            if target.mmap_context is not None:
                raise RMError(rm.NV_ERR_STATE_IN_USE, f"fd {w.fd} already holds a mapping; open a new fd per mapping")
            page = _mmap.PAGESIZE
            start = p.offset - p.offset % page  # nv_align_mmap_offset_length
            length = align_up(p.offset + p.length, page) - start
            cookie = 0x7E000000000 + (next(self.dev._object_handles) << 20) + (p.offset - start)
            target.mmap_context = {"obj": obj, "offset": start, "length": length, "cookie": cookie,
                                   "client": p.hClient, "readonly": _field(p.flags, rm.NVOS33_FLAGS_ACCESS_SHIFT,
                                                                           rm.NVOS33_FLAGS_ACCESS_WIDTH) ==
                                   rm.NVOS33_FLAGS_ACCESS_READ_ONLY}
            obj.state.setdefault("cpu_maps", []).append((cookie, target))
            p.pLinearAddress = cookie
            p.status = rm.NV_OK
        except RMError as e:
            p.status = e.status
            self._why = str(e)
        return rm.NV_OK

    def rm_unmap_memory(self, p: Any) -> int:
        try:
            client = self.dev.clients.get(p.hClient)
            if client is None:
                raise RMError(rm.NV_ERR_INVALID_CLIENT, f"no RM client {p.hClient:#x}")
            obj = self.dev.lookup(client, p.hMemory)
            maps = obj.state.get("cpu_maps", [])
            hit = [m for m in maps if m[0] == p.pLinearAddress]
            if not hit:
                raise RMError(rm.NV_ERR_INVALID_ARGUMENT, f"memory {p.hMemory:#x} has no CPU mapping "
                                                          f"{p.pLinearAddress:#x}")
            maps.remove(hit[0])
            p.status = rm.NV_OK
        except RMError as e:
            p.status = e.status
        return rm.NV_OK

    # --- object allocation ---
    def dev_new(self, h_client: int, h_parent: int, h_new: int, hclass: int, kind: str,
                state: dict[str, Any] | Callable[[RmObject], dict[str, Any]], parents: tuple[str, ...]) -> int:
        """Insert an object under h_parent after resserv's checks (alloc_free.c serverAllocResourceUnderLock):
        the parent must exist (NV_ERR_OBJECT_NOT_FOUND) and be of a class this one may live under
        (NV_ERR_INVALID_OBJECT_PARENT); a handle of 0 makes RM choose one; a taken handle is
        NV_ERR_INSERT_DUPLICATE_NAME (rs_client.c clientValidateNewResourceHandle)."""
        client = self.dev.client(h_client)
        parent = client.root if h_parent == h_client else self.dev.lookup(client, h_parent)
        assert parent is not None
        if parent.kind not in parents:
            need = " or ".join(parents)
            raise RMError(rm.NV_ERR_INVALID_OBJECT_PARENT, f"class {hclass:#x} cannot be allocated under "
                                                           f"{parent.kind} {h_parent:#x} (needs {need})")
        if h_new == 0:
            h_new = next(h for h in self.dev._object_handles if h not in client.objects)
        elif h_new == h_client or h_new in client.objects:
            status = rm.NV_ERR_INSERT_DUPLICATE_NAME if h_new in client.objects else rm.NV_ERR_INVALID_OBJECT_HANDLE
            raise RMError(status, f"handle {h_new:#x} is already in use in client {h_client:#x}")
        if parent.kind != "client" and hclass not in self.dev.rgpu_of(parent).classes:
            raise RMError(rm.NV_ERR_INVALID_CLASS, f"class {hclass:#x} is not supported by emulated "
                                                   f"{self.dev.rgpu_of(parent).target}")
        if callable(state):  # the class's constructor: runs after resserv's checks, may refuse with its own status
            state = state(parent)
        obj = RmObject(h_new, hclass, kind, parent, client, state=state)
        parent.children.append(obj)
        client.objects[h_new] = obj
        if kind == "event":  # the GPU's interrupt path finds armed events without the API lock
            with self.dev.ev_lock:
                self.dev.event_objects.append(obj)
        return h_new

    def dev_alloc(self, h_client: int, h_parent: int, h_new: int, hclass: int, params: int) -> int:
        if hclass in ROOT_CLASSES:
            return self._alloc_client(h_new)
        return allocate(self, h_client, h_parent, h_new, hclass, params)

    def _alloc_client(self, h_new: int) -> int:
        """rs_server.c serverAllocClient: hObjectNew 0 lets RM pick the handle (from RS_CLIENT_HANDLE_BASE)."""
        dev = self.dev
        if h_new == 0:
            h_new = next(h for h in dev._client_handles if h not in dev.clients)
        elif h_new in dev.clients:
            raise RMError(rm.NV_ERR_INSERT_DUPLICATE_NAME, f"client handle {h_new:#x} is in use")
        client = RmClient(h_new, self.ctl_file or self)
        client.root = RmObject(h_new, cls.NV01_ROOT_CLIENT, "client", None, client)
        client.objects[h_new] = client.root
        dev.clients[h_new] = client
        return h_new

    # --- mmap (nv-mmap.c nvidia_mmap_helper) ---
    def mmap(self, length: int, prot: int, flags: int, offset: int, addr: int) -> int:
        ctx = self.mmap_context
        if ctx is None:
            raise OSCallError(errno.EINVAL, "mmap of an NVIDIA fd without an mmap context: call NV_ESC_RM_MAP_MEMORY "
                                            "with this fd first (nv-mmap.c: invalid mmap context)")
        if offset != 0:
            raise OSCallError(errno.EINVAL, f"mmap offset {offset:#x}: NVIDIA fds map at offset 0 (vm_pgoff != 0)")
        if not self.is_ctl and length != ctx["length"]:
            raise OSCallError(errno.ENXIO, f"mmap of {length:#x} bytes, but RM_MAP_MEMORY validated {ctx['length']:#x}")
        if self.is_ctl and length > ctx["length"]:
            raise OSCallError(errno.ERANGE, f"mmap of {length:#x} bytes past the {ctx['length']:#x} RM validated")
        if ctx["readonly"] and prot & _mmap.PROT_WRITE:
            raise OSCallError(errno.EACCES, "mmap with PROT_WRITE of a mapping RM validated read-only")
        mem: MemObject = ctx["obj"].state["mem"]
        try:
            return mem.map_for_cpu(ctx["offset"], length, prot, flags, addr)
        except OSError as e:
            raise OSCallError(e.errno or errno.ENOMEM, str(e)) from None

    def close(self) -> None:
        """The last close of a file (osapi.c RmFreeUnusedClients): its clients and its OS events go."""
        with self.dev.lock:
            for c in [c for c in self.dev.clients.values() if c.owner is self]:
                if c.root is not None:
                    self.dev.free_object(c.root)
            with self.dev.ev_lock:
                self.dev.os_events = [e for e in self.dev.os_events if e.file is not self]
        with self.cv:
            self.closed = True
            self.cv.notify_all()


class _Bad(Exception):
    """A malformed escape: the ioctl fails with EINVAL."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------------------------------------------------
# Class constructors (NV_ESC_RM_ALLOC): (kind, allocation parameters, parameters required, parent kinds, build)
# ---------------------------------------------------------------------------------------------------------------
def _engine_of(engine_type: int) -> str | None:
    """NV2080_ENGINE_TYPE_* (cl2080_notification.h) -> the emulated engine; None for engines the GPU lacks."""
    if engine_type == rm.NV2080_ENGINE_TYPE_GRAPHICS:
        return "compute"
    if rm.NV2080_ENGINE_TYPE_COPY0 <= engine_type <= rm.NV2080_ENGINE_TYPE_COPY9:
        return "copy"
    return None


def _memory(f: NVFile, client: RmClient, handle: int, what: str) -> RmObject:
    o = f.dev.lookup(client, handle)
    if o.kind != "memory":  # kchannelConstruct / kchannelCreateUserdMemDesc: serverutilGetResourceRefWithType(Memory)
        raise RMError(rm.NV_ERR_INVALID_OBJECT, f"{what} {handle:#x} is a {o.kind}, not a memory object")
    return o


def allocate(f: NVFile, h_client: int, h_parent: int, h_new: int, hclass: int, ptr: int) -> int:
    """NV_ESC_RM_ALLOC of a non-client class: param_copy.c rmapiParamsCopyInit (unknown class: NV_ERR_INVALID_CLASS;
    missing required parameters: NV_ERR_INVALID_ARGUMENT; RM reads the class's own parameter size, not paramsSize),
    then resserv's parent checks (RMFile.dev_new), then the class's constructor."""
    dev = f.dev
    spec = _CLASSES.get(hclass)
    if spec is None:
        raise RMError(rm.NV_ERR_INVALID_CLASS, f"class {hclass:#x} is not an emulated RM class")
    if hclass in dev.refused_classes:
        raise RMError(rm.NV_ERR_NOT_SUPPORTED, f"class {hclass:#x} is refused on this machine (refused_classes)")
    kind, ptype, required, parents, build = spec
    if ptype is not None and not ptr and required:
        raise RMError(rm.NV_ERR_INVALID_ARGUMENT, f"class {hclass:#x} needs allocation parameters ({ptype.__name__})")
    params = ptype.from_address(ptr) if ptype is not None and ptr else None
    client = dev.client(h_client)
    return f.dev_new(h_client, h_parent, h_new, hclass, kind,
                     lambda parent: build(f, client, parent, hclass, params), parents)


def _build_device(f: NVFile, client: RmClient, parent: RmObject, hclass: int, p: Any) -> dict[str, Any]:
    device_id = p.deviceId if p is not None else 0
    if device_id >= len(f.dev.rgpus):  # deviceConstruct: no GPU with that device instance
        raise RMError(rm.NV_ERR_INVALID_ARGUMENT, f"deviceId {device_id}: the emulated machine has "
                                                  f"{len(f.dev.rgpus)} GPU(s)")
    return {"gpu": device_id, "va_mode": p.vaMode if p is not None else 0}


def _build_subdevice(f: NVFile, client: RmClient, parent: RmObject, hclass: int, p: Any) -> dict[str, Any]:
    if p is not None and p.subDeviceId != 0:  # subdeviceConstruct: one subdevice per (non-SLI) device
        raise RMError(rm.NV_ERR_INVALID_ARGUMENT, f"subDeviceId {p.subDeviceId}: emulated devices have subdevice 0")
    return {"gpu": parent.state["gpu"], "actions": {}}


def _build_usermode(f: NVFile, client: RmClient, parent: RmObject, hclass: int, p: Any) -> dict[str, Any]:
    g = f.dev.rgpus[parent.state["gpu"]].gpu
    size = getattr(g, "usermode_size", cls.NVC361_NV_USERMODE__SIZE)
    return {"mem": MemObject("usermode", size, g.usermode_host, PAGE_4K, fd=g.usermode_fd), "users": 0}


def _build_vaspace(f: NVFile, client: RmClient, parent: RmObject, hclass: int, p: Any) -> dict[str, Any]:
    r = f.dev.rgpu_of(parent)
    if p is not None and p.index != rm.NV_VASPACE_ALLOCATION_INDEX_GPU_NEW:
        raise RMError(rm.NV_ERR_INVALID_ARGUMENT, f"FERMI_VASPACE_A index {p.index}: only GPU_NEW is emulated")
    return {"vaspace": r.gpu.new_vaspace(), "flags": p.flags if p is not None else 0, "gpu": r.index}


def _build_group(f: NVFile, client: RmClient, parent: RmObject, hclass: int, p: Any) -> dict[str, Any]:
    engine = _engine_of(p.engineType)
    if engine is None:  # kchangrpInit: a TSG is bound to one valid engine
        raise RMError(rm.NV_ERR_INVALID_ARGUMENT, f"channel group engineType {p.engineType:#x} is not GRAPHICS or "
                                                  "COPY0..9")
    vas = None
    if p.hVASpace:
        vas = f.dev.lookup_kind(client, p.hVASpace, ("vaspace",), "hVASpace")
    return {"gpu": f.dev.rgpu_of(parent).index, "engine": engine, "engine_type": p.engineType, "vas": vas,
            "channels": [], "explicit_ctxshare": None}


def _build_ctxshare(f: NVFile, client: RmClient, parent: RmObject, hclass: int, p: Any) -> dict[str, Any]:
    if p.hVASpace:
        vas = f.dev.lookup_kind(client, p.hVASpace, ("vaspace",), "hVASpace")
    elif parent.state["vas"] is not None:
        vas = parent.state["vas"]
    else:
        raise RMError(rm.NV_ERR_INVALID_ARGUMENT, "FERMI_CONTEXT_SHARE_A without hVASpace in a group without one "
                                                  "(the device's default VA space is not emulated)")
    if vas.ancestor("device") is not parent.ancestor("device"):
        raise RMError(rm.NV_ERR_INVALID_OBJECT_PARENT, f"VA space {vas.handle:#x} belongs to another device")
    if parent.state["vas"] is not None and parent.state["vas"] is not vas:  # kctxshareapiConstruct: one VAS per TSG
        raise RMError(rm.NV_ERR_INVALID_ARGUMENT, "every context share of a channel group must use the group's VA "
                                                  "space")
    parent.state["vas"] = vas
    return {"vas": vas}


def _build_channel(f: NVFile, client: RmClient, parent: RmObject, hclass: int, p: Any) -> dict[str, Any]:
    """kernel_channel.c kchannelConstruct (+ USERD: kernel_channel_gv100.c kchannelCreateUserdMemDesc_GV100)."""
    dev, group = f.dev, parent
    r = dev.rgpu_of(group)
    if hclass != r.info["channel"]:
        raise RMError(rm.NV_ERR_INVALID_CLASS, f"channel class {hclass:#x} is not {r.target}'s "
                                               f"{r.info['channel']:#x}")
    if p.hContextShare and p.hVASpace:
        raise RMError(rm.NV_ERR_INVALID_ARGUMENT, "both hContextShare and hVASpace given (kchannelConstruct)")
    if p.hVASpace:
        raise RMError(rm.NV_ERR_INVALID_ARGUMENT, "TSG channels can't use an explicit vaspace: give hContextShare")
    explicit = bool(p.hContextShare)
    if group.state["explicit_ctxshare"] not in (None, explicit):
        raise RMError(rm.NV_ERR_INVALID_ARGUMENT, "All channels in a channel group must specify a CONTEXT_SHARE if "
                                                  "any one of them specifies it")
    if explicit:
        share = dev.lookup_kind(client, p.hContextShare, ("ctxshare",), "hContextShare")
        if share.parent is not group:
            raise RMError(rm.NV_ERR_INVALID_OBJECT_PARENT, f"context share {p.hContextShare:#x} is not in channel "
                                                           f"group {group.handle:#x}")
        vas_obj = share.state["vas"]
    elif group.state["vas"] is not None:
        vas_obj = group.state["vas"]
    else:
        raise RMError(rm.NV_ERR_INVALID_ARGUMENT, "channel without hContextShare in a group without a VA space")
    if p.engineType:
        engine = _engine_of(p.engineType)
        if engine != group.state["engine"]:  # "Engine type of channel ... not compatible with engine type of TSG"
            raise RMError(rm.NV_ERR_INVALID_ARGUMENT, f"channel engineType {p.engineType:#x} differs from its "
                                                      f"group's {group.state['engine_type']:#x}")
    entries = p.gpFifoEntries
    if entries < 2 or entries & (entries - 1):  # the GPFIFO ring size is a power of two (GP_BASE_HI LIMIT2 = log2)
        raise RMError(rm.NV_ERR_INVALID_ARGUMENT, f"gpFifoEntries {entries} is not a power of two >= 2")
    if p.gpFifoOffset % 8:
        raise RMError(rm.NV_ERR_INVALID_ADDRESS, f"gpFifoOffset {p.gpFifoOffset:#x} is not 8-byte aligned")
    ring_mem = _memory(f, client, p.hObjectBuffer, "hObjectBuffer")
    vas = vas_obj.state["vaspace"]
    try:  # the ring must be GPU-visible where gpFifoOffset says (the PBDMA fetches it through this VA space)
        vas.translate(p.gpFifoOffset, entries * 8, False)
    except Exception as e:
        raise RMError(rm.NV_ERR_INVALID_ADDRESS, f"GPFIFO [{p.gpFifoOffset:#x}, +{entries * 8:#x}) is not mapped in "
                                                 f"the channel's VA space: {e}") from None
    if not p.hUserdMemory[0]:
        raise RMError(rm.NV_ERR_NOT_SUPPORTED, "RM-allocated USERD is not emulated: pass hUserdMemory[0]")
    userd = _memory(f, client, p.hUserdMemory[0], "hUserdMemory[0]")
    userd_off = p.userdOffset[0]
    if userd_off % USERD_ALIGN:
        raise RMError(rm.NV_ERR_INVALID_ADDRESS, f"userdOffset {userd_off:#x} is not {USERD_ALIGN}-byte aligned")
    if userd_off + USERD_ALIGN > userd.state["mem"].size:  # memdescCreateSubMem past the end
        raise RMError(rm.NV_ERR_INVALID_ARGUMENT, f"USERD at {userd_off:#x} runs past memory "
                                                  f"{p.hUserdMemory[0]:#x} ({userd.state['mem'].size:#x} bytes)")
    notifier = None
    if p.hObjectError:
        notifier = _memory(f, client, p.hObjectError, "hObjectError")
        need = rm.NV_CHANNELGPFIFO_NOTIFICATION_TYPE__SIZE_1 * NOTIFIER_SIZE
        if notifier.state["mem"].size < need:
            raise RMError(rm.NV_ERR_INVALID_ARGUMENT, f"error notifier {p.hObjectError:#x} has "
                                                      f"{notifier.state['mem'].size} bytes, needs {need}")
    engine = group.state["engine"]
    token = ((0 if engine == "compute" else 1) << 16) | next(dev._chids)  # runlist << 16 | chid, never 0
    desc = ChannelDesc(token=token, group=group.handle, engine=engine, vaspace=vas, gpfifo_va=p.gpFifoOffset,
                       entries=entries, userd_host=userd.state["mem"].host + userd_off, host_class=hclass)
    r.gpu.add_channel(desc)
    deps = [m for m in (ring_mem, userd, notifier) if m is not None]
    for m in deps:
        m.state["users"] = m.state.get("users", 0) + 1
    info = ChannelInfo(token, r.index, engine, 0, client.handle, notifier.state["mem"] if notifier else None)
    dev.channels[(r.index, token)] = info
    group.state["channels"].append(token)
    group.state["explicit_ctxshare"] = explicit
    return {"info": info, "deps": deps, "token": token, "gpu": r.index, "engine": engine, "objects": []}


def _build_engine_object(f: NVFile, client: RmClient, parent: RmObject, hclass: int, p: Any) -> dict[str, Any]:
    r = f.dev.rgpu_of(parent)
    engine = "compute" if hclass in COMPUTE_CLASSES else "copy"
    if hclass != r.info[engine]:
        raise RMError(rm.NV_ERR_INVALID_CLASS, f"class {hclass:#x} is not {r.target}'s {engine} class "
                                               f"{r.info[engine]:#x}")
    if parent.state["engine"] != engine:  # an engine object binds to a channel of its engine's runlist
        raise RMError(rm.NV_ERR_INVALID_ARGUMENT, f"{engine} class {hclass:#x} under a {parent.state['engine']} "
                                                  "channel")
    r.gpu.add_object(parent.state["token"], hclass)
    parent.state["objects"].append(hclass)
    return {"token": parent.state["token"], "gpu": r.index, "engine": engine}


def _build_memory(f: NVFile, client: RmClient, parent: RmObject, hclass: int, p: Any) -> dict[str, Any]:
    """vidmemConstruct / sysmemConstruct through the heap (mem_mgr): size rounded to the page size RM picks, aligned
    to max(page size, requested alignment); out of memory is NV_ERR_NO_MEMORY. Written back: size, alignment,
    offset, limit, attr with the page size chosen."""
    dev = f.dev
    vram = hclass == cls.NV01_MEMORY_LOCAL_USER
    if p.flags & rm.NVOS32_ALLOC_FLAGS_VIRTUAL:
        raise RMError(rm.NV_ERR_NOT_SUPPORTED, "virtual (NVOS32_ALLOC_FLAGS_VIRTUAL) allocations are not emulated")
    if p.size == 0:
        raise RMError(rm.NV_ERR_INVALID_ARGUMENT, "memory allocation of size 0")
    if p.alignment & (p.alignment - 1):
        raise RMError(rm.NV_ERR_INVALID_ARGUMENT, f"alignment {p.alignment:#x} is not a power of two")
    loc = _field(p.attr, rm.NVOS32_ATTR_LOCATION_SHIFT, rm.NVOS32_ATTR_LOCATION_WIDTH)
    if vram and loc not in (rm.NVOS32_ATTR_LOCATION_VIDMEM, rm.NVOS32_ATTR_LOCATION_ANY):
        raise RMError(rm.NV_ERR_INVALID_ARGUMENT, f"NV01_MEMORY_LOCAL_USER with attr location {loc} (not VIDMEM)")
    if not vram and loc not in (rm.NVOS32_ATTR_LOCATION_PCI, rm.NVOS32_ATTR_LOCATION_ANY):
        raise RMError(rm.NV_ERR_INVALID_ARGUMENT, f"NV01_MEMORY_SYSTEM with attr location {loc} (not PCI)")
    page = page_size_for(p.attr, p.attr2, p.size, vram)
    size = align_up(p.size, page)
    align = max(page, p.alignment if p.flags & (rm.NVOS32_ALLOC_FLAGS_ALIGNMENT_FORCE |
                                                rm.NVOS32_ALLOC_FLAGS_ALIGNMENT_HINT) else 0)
    pool = dev.rgpu_of(parent).vram if vram else dev.sysmem
    off = pool.alloc(size, align)
    if off is None:
        raise RMError(rm.NV_ERR_NO_MEMORY, f"emulated {pool.name} has no {size:#x}-byte range aligned to {align:#x} "
                                           f"({pool.free_bytes:#x} of {pool.size:#x} bytes free)")
    mem = MemObject("vram" if vram else "sysmem", size, pool.host + off, page, pool=pool, offset=off)
    field_value = {PAGE_4K: rm.NVOS32_ATTR_PAGE_SIZE_4KB, 64 << 10: rm.NVOS32_ATTR_PAGE_SIZE_BIG}.get(
        page, rm.NVOS32_ATTR_PAGE_SIZE_HUGE)
    mask = ((1 << rm.NVOS32_ATTR_PAGE_SIZE_WIDTH) - 1) << rm.NVOS32_ATTR_PAGE_SIZE_SHIFT
    p.attr = (p.attr & ~mask) | (field_value << rm.NVOS32_ATTR_PAGE_SIZE_SHIFT)
    p.size, p.alignment, p.offset, p.limit = size, align, off, size - 1
    return {"mem": mem, "users": 0}


def _build_event(f: NVFile, client: RmClient, parent: RmObject, hclass: int, p: Any) -> dict[str, Any]:
    """eventConstruct (NV01_EVENT_OS_EVENT): `data` is the fd NV_ESC_ALLOC_OS_EVENT registered for this client
    (osapi.c osUserHandleToKernelPtr finds it by (hClient, fd))."""
    if p.hParentClient != client.handle:
        raise RMError(rm.NV_ERR_INVALID_CLIENT, f"hParentClient {p.hParentClient:#x} is not client "
                                                f"{client.handle:#x}")
    if p.hSrcResource != parent.handle:
        raise RMError(rm.NV_ERR_INVALID_OBJECT_HANDLE, f"hSrcResource {p.hSrcResource:#x} is not the event's "
                                                       f"parent {parent.handle:#x}")
    index = p.notifyIndex & EVENT_INDEX_MASK
    if parent.kind == "subdevice" and index >= NV2080_NOTIFIERS_MAXCOUNT:
        raise RMError(rm.NV_ERR_INVALID_ARGUMENT, f"notifyIndex {index} is past the subdevice's notifiers")
    fd = p.data & 0xFFFFFFFF
    with f.dev.ev_lock:
        ev = next((e for e in f.dev.os_events if e.client == client.handle and e.fd == fd), None)
    if ev is None:
        raise RMError(rm.NV_ERR_INVALID_ARGUMENT, f"no OS event for client {client.handle:#x} and fd {fd}: call "
                                                  "NV_ESC_ALLOC_OS_EVENT first")
    return {"index": index, "os_event": ev, "dataless": bool(p.notifyIndex & rm.NV01_EVENT_WITHOUT_EVENT_DATA),
            "nonstall": bool(p.notifyIndex & rm.NV01_EVENT_NONSTALL_INTR)}


def _build_debugger(f: NVFile, client: RmClient, parent: RmObject, hclass: int, p: Any) -> dict[str, Any]:
    """ksmdbgssnConstruct (GT200_DEBUGGER): attaches to the compute object hClass3dObject of client hAppClient."""
    if p.hDebuggerClient_Obsolete:
        raise RMError(rm.NV_ERR_INVALID_ARGUMENT, "hDebuggerClient_Obsolete must be 0")
    app = f.dev.clients.get(p.hAppClient)
    if app is None:
        raise RMError(rm.NV_ERR_INVALID_CLIENT, f"hAppClient {p.hAppClient:#x} is not an RM client")
    obj = f.dev.lookup_kind(app, p.hClass3dObject, ("engine",), "hClass3dObject")
    if obj.state["engine"] != "compute":
        raise RMError(rm.NV_ERR_INVALID_OBJECT, f"hClass3dObject {p.hClass3dObject:#x} is not a compute object")
    return {"gpu": obj.state["gpu"], "token": obj.state["token"]}


_DEV = ("device", "subdevice")
# Parents per class: src/nvidia/src/kernel/rmapi/resource_list.h (RS_ENTRY ... Parents). Two are narrower here than
# there: a GPFIFO channel may also sit directly under the device, and an event under any object; neither is emulated.
_CLASSES: dict[int, tuple[str, type | None, bool, tuple[str, ...], Callable[..., dict[str, Any]]]] = {
    cls.NV01_DEVICE_0: ("device", rm.NV0080_ALLOC_PARAMETERS, False, ("client",), _build_device),
    cls.NV20_SUBDEVICE_0: ("subdevice", rm.NV2080_ALLOC_PARAMETERS, False, ("device",), _build_subdevice),
    cls.TURING_USERMODE_A: ("usermode", None, False, ("subdevice",), _build_usermode),
    rm.HOPPER_USERMODE_A: ("usermode", None, False, ("subdevice",), _build_usermode),
    cls.FERMI_VASPACE_A: ("vaspace", rm.NV_VASPACE_ALLOCATION_PARAMETERS, False, _DEV, _build_vaspace),
    cls.KEPLER_CHANNEL_GROUP_A: ("group", rm.NV_CHANNEL_GROUP_ALLOCATION_PARAMETERS, True, ("device",),
                                 _build_group),
    cls.FERMI_CONTEXT_SHARE_A: ("ctxshare", rm.NV_CTXSHARE_ALLOCATION_PARAMETERS, True, ("group",), _build_ctxshare),
    cls.NV01_MEMORY_LOCAL_USER: ("memory", rm.NV_MEMORY_ALLOCATION_PARAMS, True, _DEV, _build_memory),
    cls.NV01_MEMORY_SYSTEM: ("memory", rm.NV_MEMORY_ALLOCATION_PARAMS, True, ("device",), _build_memory),
    cls.NV01_EVENT_OS_EVENT: ("event", rm.NV0005_ALLOC_PARAMETERS, True, ("subdevice", "device", "channel"),
                              _build_event),
    rm.GT200_DEBUGGER: ("debugger", rm.NV83DE_ALLOC_PARAMETERS, True, ("device",), _build_debugger),
    **{c: ("channel", rm.NV_CHANNEL_ALLOC_PARAMS, True, ("group",), _build_channel) for c in CHANNEL_CLASSES},
    **{c: ("engine", None, False, ("channel",), _build_engine_object) for c in COMPUTE_CLASSES | COPY_CLASSES},
}


# ---------------------------------------------------------------------------------------------------------------
# Controls (NV_ESC_RM_CONTROL): cmd -> (the object kind serving its interface, parameter struct, handler)
# ---------------------------------------------------------------------------------------------------------------
def control(dev: EmulatedNV, client: RmClient, h_object: int, cmd: int, ptr: int, size: int) -> None:
    """control.c _rmapiRmControl: a known command's parameter size must match (NV_ERR_INVALID_ARGUMENT); the object
    must exist; a command its class does not export is NV_ERR_NOT_SUPPORTED (rs_resource.c resControlLookup)."""
    entry = _CONTROLS.get(cmd)
    if entry is not None and entry[1] is not None and size != ctypes.sizeof(entry[1]):
        raise RMError(rm.NV_ERR_INVALID_ARGUMENT, f"control {cmd:#x} takes {ctypes.sizeof(entry[1])} bytes "
                                                  f"({entry[1].__name__}), got {size}")
    obj = dev.lookup(client, h_object)
    if entry is None or obj.kind != entry[0]:
        raise RMError(rm.NV_ERR_NOT_SUPPORTED, f"control {cmd:#x} is not supported by {obj.kind} {h_object:#x} "
                                               f"(class {obj.hclass:#x})")
    kind, ptype, handler = entry
    handler(dev, obj, ptype.from_address(ptr) if ptype is not None else None)


def _probed_ids(dev: EmulatedNV, obj: RmObject, p: Any) -> None:
    for i in range(rm.NV0000_CTRL_GPU_MAX_PROBED_GPUS):
        p.gpuIds[i] = dev.rgpus[i].gpu_id if i < len(dev.rgpus) else rm.NV0000_CTRL_GPU_INVALID_ID
        p.excludedGpuIds[i] = rm.NV0000_CTRL_GPU_INVALID_ID
        p.gpuFlags[i] = 0  # ctrl0000gpu.h (580): PROBED_ID_FLAGS_SOC_DISPLAY_FALSE, a discrete GPU


def _id_info_v2(dev: EmulatedNV, obj: RmObject, p: Any) -> None:
    r = next((r for r in dev.rgpus if r.gpu_id == p.gpuId), None)
    if r is None:  # gpumgrGetGpuIdInfoV2: no probed GPU with that id
        raise RMError(rm.NV_ERR_INVALID_ARGUMENT, f"no GPU with gpuId {p.gpuId:#x}")
    p.gpuFlags, p.deviceInstance, p.subDeviceInstance, p.sliStatus = 0, r.index, 0, 0
    p.boardId, p.gpuInstance, p.numaId = r.gpu_id, r.minor, -1


def _classlist(dev: EmulatedNV, obj: RmObject, p: Any) -> None:
    classes = dev.rgpus[obj.state["gpu"]].classes
    p.numClasses = len(classes)
    for i, c in enumerate(classes):
        p.classList[i] = c


def _gid(dev: EmulatedNV, obj: RmObject, p: Any) -> None:
    r = dev.rgpus[obj.state["gpu"]]
    if p.index != 0:
        raise RMError(rm.NV_ERR_INVALID_ARGUMENT, f"GID index {p.index}: only 0 exists")
    fmt = _field(p.flags, rm.NV2080_GPU_CMD_GPU_GET_GID_FLAGS_FORMAT_SHIFT,
                 rm.NV2080_GPU_CMD_GPU_GET_GID_FLAGS_FORMAT_WIDTH)
    data = r.uuid if fmt == rm.NV2080_GPU_CMD_GPU_GET_GID_FLAGS_FORMAT_BINARY else r.uuid_text().encode() + b"\0"
    p.length = len(data)
    for i, b in enumerate(data):
        p.data[i] = b


def _arch(dev: EmulatedNV, obj: RmObject, p: Any) -> None:
    info = dev.rgpus[obj.state["gpu"]].info
    p.architecture, p.implementation, p.revision, p.subRevision = info["arch"], info["impl"], 0xA1, 0


def _gr_info(dev: EmulatedNV, obj: RmObject, p: Any) -> None:
    info = dev.rgpus[obj.state["gpu"]].info
    limit = rm.NV0080_CTRL_GR_INFO_INDEX_MAX + 1
    if p.grInfoListSize == 0 or p.grInfoListSize > limit or not p.grInfoList:
        raise RMError(rm.NV_ERR_INVALID_ARGUMENT, f"grInfoListSize {p.grInfoListSize} (1..{limit}) or a NULL list")
    values = {rm.NV0080_CTRL_GR_INFO_INDEX_SHADER_PIPE_SUB_COUNT: info["sms"],
              rm.NV0080_CTRL_GR_INFO_INDEX_SM_VERSION: info["sm_version"],
              rm.NV0080_CTRL_GR_INFO_INDEX_MAX_WARPS_PER_SM: info["warps_per_sm"],
              rm.NV0080_CTRL_GR_INFO_INDEX_MAX_THREADS_PER_WARP: 32,
              rm.NV0080_CTRL_GR_INFO_INDEX_LITTER_NUM_GPCS: info["gpcs"],
              rm.NV0080_CTRL_GR_INFO_INDEX_LITTER_NUM_TPC_PER_GPC: info["tpc_per_gpc"],
              rm.NV0080_CTRL_GR_INFO_INDEX_LITTER_NUM_SM_PER_TPC: info["sm_per_tpc"]}
    items = (rm.NV2080_CTRL_GR_INFO * p.grInfoListSize).from_address(p.grInfoList)
    for it in items:
        if it.index >= limit:
            raise RMError(rm.NV_ERR_INVALID_ARGUMENT, f"GR info index {it.index:#x} is past the table")
        it.data = values.get(it.index, 0)


def _fb_info(dev: EmulatedNV, obj: RmObject, p: Any) -> None:
    r = dev.rgpus[obj.state["gpu"]]
    if p.fbInfoListSize == 0 or p.fbInfoListSize > rm.NV2080_CTRL_FB_INFO_MAX_LIST_SIZE:
        raise RMError(rm.NV_ERR_INVALID_ARGUMENT, f"fbInfoListSize {p.fbInfoListSize}")
    values = {rm.NV2080_CTRL_FB_INFO_INDEX_RAM_SIZE: r.vram.size >> 10,
              rm.NV2080_CTRL_FB_INFO_INDEX_BAR1_SIZE: r.info["bar1"] >> 10}
    for i in range(p.fbInfoListSize):
        it = p.fbInfoList[i]
        it.data = values.get(it.index, 0)


def _name(dev: EmulatedNV, obj: RmObject, p: Any) -> None:
    if p.gpuNameStringFlags != rm.NV2080_CTRL_GPU_GET_NAME_STRING_FLAGS_TYPE_ASCII:
        raise RMError(rm.NV_ERR_INVALID_ARGUMENT, "only the ASCII name is emulated")
    name = (dev.rgpus[obj.state["gpu"]].info["name"].encode() + b"\0")[:rm.NV2080_GPU_MAX_NAME_STRING_LENGTH]
    ctypes.memmove(ctypes.addressof(p.gpuNameString), name, len(name))


def _time(dev: EmulatedNV, obj: RmObject, p: Any) -> None:
    p.time_nsec = dev.rgpus[obj.state["gpu"]].gpu.clock_ns()


def _perf_boost(dev: EmulatedNV, obj: RmObject, p: Any) -> None:
    """Clocks are not emulated: a boost request is accepted and changes nothing."""


def _set_notification(dev: EmulatedNV, obj: RmObject, p: Any) -> None:
    """subdeviceCtrlCmdEventSetNotification_IMPL: arm (SINGLE/REPEAT) or disarm an index of the subdevice."""
    if p.event >= NV2080_NOTIFIERS_MAXCOUNT:
        raise RMError(rm.NV_ERR_INVALID_ARGUMENT, f"event index {p.event} is past the subdevice's notifiers")
    if p.action not in (rm.NV2080_CTRL_EVENT_SET_NOTIFICATION_ACTION_DISABLE,
                        rm.NV2080_CTRL_EVENT_SET_NOTIFICATION_ACTION_SINGLE,
                        rm.NV2080_CTRL_EVENT_SET_NOTIFICATION_ACTION_REPEAT):
        raise RMError(rm.NV_ERR_INVALID_ARGUMENT, f"notification action {p.action}")
    obj.state["actions"][p.event] = p.action


def _work_submit_token(dev: EmulatedNV, obj: RmObject, p: Any) -> None:
    p.workSubmitToken = obj.state["token"]


def _schedule(dev: EmulatedNV, obj: RmObject, p: Any) -> None:
    """kchangrpapiCtrlCmdGpFifoSchedule: enables (or disables) every channel of the group on its runlist."""
    tokens = list(obj.state["channels"])
    if not tokens:
        raise RMError(rm.NV_ERR_INVALID_STATE, f"channel group {obj.handle:#x} has no channels to schedule")
    dev.rgpus[obj.state["gpu"]].gpu.schedule(tokens, bool(p.bEnable))


def _timeslice(dev: EmulatedNV, obj: RmObject, p: Any) -> None:
    obj.state["timeslice_us"] = p.timesliceUs


def _read_mmu_fault_info(dev: EmulatedNV, obj: RmObject, p: Any) -> None:
    """NV83DE_CTRL_CMD_DEBUG_READ_MMU_FAULT_INFO: the GR-context MMU faults of the debugged channel (then cleared)."""
    ch = dev.channels.get((obj.state["gpu"], obj.state["token"]))
    with dev.ev_lock:
        faults = ch.faults[:rm.NV83DE_CTRL_DEBUG_READ_MMU_FAULT_INFO_MAX_ENTRIES] if ch else []
        if ch:
            del ch.faults[:len(faults)]
    p.count = len(faults)
    for i, (address, ftype, access) in enumerate(faults):
        e = p.mmuFaultInfoList[i]
        e.faultAddress, e.faultType, e.accessType = address, ftype, access


_CONTROLS: dict[int, tuple[str, type | None, Callable[[EmulatedNV, RmObject, Any], None]]] = {
    rm.NV0000_CTRL_CMD_GPU_GET_PROBED_IDS: ("client", rm.NV0000_CTRL_GPU_GET_PROBED_IDS_PARAMS, _probed_ids),
    rm.NV0000_CTRL_CMD_GPU_GET_ID_INFO_V2: ("client", rm.NV0000_CTRL_GPU_GET_ID_INFO_V2_PARAMS, _id_info_v2),
    rm.NV0080_CTRL_CMD_GPU_GET_CLASSLIST_V2: ("device", rm.NV0080_CTRL_GPU_GET_CLASSLIST_V2_PARAMS, _classlist),
    rm.NV2080_CTRL_CMD_GPU_GET_GID_INFO: ("subdevice", rm.NV2080_CTRL_GPU_GET_GID_INFO_PARAMS, _gid),
    rm.NV2080_CTRL_CMD_MC_GET_ARCH_INFO: ("subdevice", rm.NV2080_CTRL_MC_GET_ARCH_INFO_PARAMS, _arch),
    rm.NV2080_CTRL_CMD_GR_GET_INFO: ("subdevice", rm.NV2080_CTRL_GR_GET_INFO_PARAMS, _gr_info),
    rm.NV2080_CTRL_CMD_FB_GET_INFO_V2: ("subdevice", rm.NV2080_CTRL_FB_GET_INFO_V2_PARAMS, _fb_info),
    rm.NV2080_CTRL_CMD_GPU_GET_NAME_STRING: ("subdevice", rm.NV2080_CTRL_GPU_GET_NAME_STRING_PARAMS, _name),
    rm.NV2080_CTRL_CMD_TIMER_GET_TIME: ("subdevice", rm.NV2080_CTRL_TIMER_GET_TIME_PARAMS, _time),
    rm.NV2080_CTRL_CMD_PERF_BOOST: ("subdevice", rm.NV2080_CTRL_PERF_BOOST_PARAMS, _perf_boost),
    rm.NV2080_CTRL_CMD_EVENT_SET_NOTIFICATION: ("subdevice", rm.NV2080_CTRL_EVENT_SET_NOTIFICATION_PARAMS,
                                                _set_notification),
    rm.NVC36F_CTRL_CMD_GPFIFO_GET_WORK_SUBMIT_TOKEN: ("channel", rm.NVC36F_CTRL_CMD_GPFIFO_GET_WORK_SUBMIT_TOKEN_PARAMS,
                                                      _work_submit_token),
    rm.NVA06C_CTRL_CMD_GPFIFO_SCHEDULE: ("group", rm.NVA06C_CTRL_GPFIFO_SCHEDULE_PARAMS, _schedule),
    rm.NVA06C_CTRL_CMD_SET_TIMESLICE: ("group", rm.NVA06C_CTRL_TIMESLICE_PARAMS, _timeslice),
    rm.NV83DE_CTRL_CMD_DEBUG_READ_MMU_FAULT_INFO: ("debugger", rm.NV83DE_CTRL_DEBUG_READ_MMU_FAULT_INFO_PARAMS,
                                                   _read_mmu_fault_info),
}
