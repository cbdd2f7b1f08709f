"""NVIDIA GPUs through the open kernel module's RM and UVM ioctls: bring-up, memory, channels, sleeping and faults.

Order of operations (each step's source in its comment): /dev/nvidiactl, version check, root client; the GPU's
ids and minor number, /dev/nvidiaN registered with the control fd; /dev/nvidia-uvm initialized (and a second fd
for UVM_MM_INITIALIZE); device, subdevice and usermode objects; what the GPU is (UUID, architecture, classes,
GR and FB info, name); a FERMI_VASPACE_A owned by UVM, the GPU and the VA space registered with UVM; then memory at
GPU virtual addresses we choose (our VA heap over a PROT_NONE window, UVM_CREATE_EXTERNAL_RANGE +
UVM_MAP_EXTERNAL_ALLOCATION), host-visible memory mapped for the CPU at the same address; one channel group with
a compute and a copy channel; an OS event that the channels' non-stall interrupts signal, for sleeping waits.
"""
from __future__ import annotations

import ctypes
import select
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional

from autogen import nv_classes as C
from autogen import nv_rm as R
from autogen import nv_uvm as U
from drivers.lock import DeviceLock
from drivers.nv import methods as m
from drivers.nv.queue import GPFifo, NVComputeQueue, NVCopyQueue
from drivers.nv.rm import NVError, RMClient, class_name, status_name
from drivers.system import MAP_ANONYMOUS, MAP_FIXED, MAP_NORESERVE, MAP_PRIVATE, MAP_SHARED, PAGE_SIZE, OSCallError, System
from hcq.allocator import VAHeap
from hcq.buffer import Buffer, MemFlags
from hcq.device import Device, DeviceFault
from hcq.env import env_flag
from hcq.errors import HCQError, InvalidHandleError, OutOfMemoryError
from hcq.signal import SIGNAL_SIZE, Signal, SignalPool



def _pinned_version() -> str:
    """The open-gpu-kernel-modules version our structs were taken from: the one pin, autogen/include/nv/VERSION."""
    import re
    from pathlib import Path

    import autogen
    try:
        text = (Path(autogen.__file__).parent / "include" / "nv" / "VERSION").read_text()
    except OSError:  # an install without the headers: the generated module names the same pin in its "# Source:" line
        text = Path(R.__file__).read_text()
    found = re.search(r"open-gpu-kernel-modules (\d+\.\d+(?:\.\d+)?) [0-9a-f]{40}", text)
    if found is None:
        raise RuntimeError("no open-gpu-kernel-modules pin in autogen/include/nv/VERSION or autogen/nv_rm.py")
    return found.group(1)


PINNED_VERSION = _pinned_version()
ANY_DRIVER_ENV = "BAREGPU_NV_ANY_DRIVER"  # 1: open a driver of another branch than the pinned one (at your risk)
# GPU VAs we hand out, reserved PROT_NONE in the process so CPU mappings can sit at the same address. Below 2**40:
# SEND_PCAS_A holds a QMD address >> 8 in 32 bits and a GPFIFO entry a 40-bit pushbuffer address (clc56f.h).
VA_WINDOW = 256 << 30
VA_HINTS = (0x40_0000_0000, 0x80_0000_0000, 0xC0_0000_0000)
VA_LIMIT = 1 << 40
# Generic-address apertures for shared and local memory (SET_SHADER_*_MEMORY_WINDOW): above every VA we hand out.
LOCAL_WINDOW = 0x7E00_0000_0000
SHARED_WINDOW = 0x7E01_0000_0000
GPFIFO_ENTRIES = 1024  # entries per channel ring (a power of two)
PUSH_RING_SIZE = 1 << 20  # bytes of pushbuffer per channel
SIGNAL_SLOTS = 4096
HUGE_PAGE = 2 << 20
HUGE_MIN = 8 << 20  # VRAM allocations from this size use 2 MiB pages
USERMODE_SIZE = C.NVC361_NV_USERMODE__SIZE
NOTIFIER_SIZE = PAGE_SIZE  # >= NV_CHANNELGPFIFO_NOTIFICATION_TYPE__SIZE_1 NvNotification records
PROT_NONE, PROT_RW = 0, 3
OS_HANDLE_BASE = 0xBA5E0000  # handles we choose for OS-descriptor memory (RmAllocOsDescriptor takes ours)

# Classes by architecture, newest first; RM's class list decides which this GPU has.
CHANNEL_CLASSES = (C.HOPPER_CHANNEL_GPFIFO_A, C.AMPERE_CHANNEL_GPFIFO_A)
COMPUTE_CLASSES = (C.HOPPER_COMPUTE_A, C.ADA_COMPUTE_A, C.AMPERE_COMPUTE_B)
COPY_CLASSES = (C.HOPPER_DMA_COPY_A, C.AMPERE_DMA_COPY_B)
QMD_VERSION = {C.HOPPER_COMPUTE_A: "V04_00", C.ADA_COMPUTE_A: "V03_00", C.AMPERE_COMPUTE_B: "V03_00"}
# NV2080_CTRL_CMD_MC_GET_ARCH_INFO architecture (and implementation) -> sm target (ctrl2080mc.h)
ARCH_TARGETS = {(R.NV2080_CTRL_MC_ARCH_INFO_ARCHITECTURE_GA100, R.NV2080_CTRL_MC_ARCH_INFO_IMPLEMENTATION_GA100): "sm_80",
                (R.NV2080_CTRL_MC_ARCH_INFO_ARCHITECTURE_GA100, None): "sm_86",
                (R.NV2080_CTRL_MC_ARCH_INFO_ARCHITECTURE_AD100, None): "sm_89",
                (R.NV2080_CTRL_MC_ARCH_INFO_ARCHITECTURE_GH100, None): "sm_90"}
SUPPORTED_TARGETS = ("sm_86", "sm_89", "sm_90")  # what the emulator and these class tables cover (sm_80 untested)
ARCH_NAMES = {R.NV2080_CTRL_MC_ARCH_INFO_ARCHITECTURE_GA100: "Ampere", R.NV2080_CTRL_MC_ARCH_INFO_ARCHITECTURE_AD100:
              "Ada", R.NV2080_CTRL_MC_ARCH_INFO_ARCHITECTURE_GH100: "Hopper",
              R.NV2080_CTRL_MC_ARCH_INFO_ARCHITECTURE_GB100: "Blackwell", R.NV2080_CTRL_MC_ARCH_INFO_ARCHITECTURE_GB200:
              "Blackwell"}
ROBUST_CHANNEL = {R.ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT: "MMU fault (ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT)",
                  R.ROBUST_CHANNEL_GR_EXCEPTION: "graphics/compute exception (ROBUST_CHANNEL_GR_EXCEPTION)",
                  R.ROBUST_CHANNEL_PBDMA_ERROR: "bad method or GPFIFO entry (ROBUST_CHANNEL_PBDMA_ERROR)",
                  R.ROBUST_CHANNEL_PREEMPTIVE_REMOVAL: "the channel was removed (ROBUST_CHANNEL_PREEMPTIVE_REMOVAL)"}


class NVDeviceError(NVError):
    """The NVIDIA driver cannot open or use this GPU; the message says why and what to do."""


def unbuilt_paths(target: Optional[str]) -> Optional[str]:
    """What this driver lacks for a GPU of sm `target` (None: an architecture it does not know), or None when a
    user's first program runs (channels, QMD launches and the compiler's target are built). gpu_probe asks this."""
    from compiler import TARGETS
    missing = []
    if target not in SUPPORTED_TARGETS:
        missing.append("its channel, compute and copy classes and QMD version are not driven yet (driven: "
                       + ", ".join(SUPPORTED_TARGETS) + ")")
    if target is not None and target not in TARGETS:
        missing.append(f"the kernel compiler has no {target} target")
    return f"the NVIDIA (RM/UVM) driver is not built for {target or 'this GPU'} yet: {'; '.join(missing)}" \
        if missing else None


def target_for(arch: int, impl: int) -> Optional[str]:
    """The sm target of an architecture/implementation pair from NV2080_CTRL_CMD_MC_GET_ARCH_INFO, or None."""
    return ARCH_TARGETS.get((arch, impl)) or ARCH_TARGETS.get((arch, None))


@dataclass(frozen=True)
class Classes:
    """The classes this GPU is driven with."""
    channel: int
    compute: int
    copy: int

    def describe(self) -> dict[str, str]:
        return {"channel": class_name(self.channel), "compute": class_name(self.compute), "copy": class_name(self.copy)}


@dataclass
class _Memory:
    """What a buffer holds in RM: its memory handle, the bytes mapped, and whether the CPU maps it."""
    handle: int
    size: int
    cpu_mapped: bool
    os_descriptor: bool = False


@dataclass
class _Channel:
    fifo: GPFifo
    handle: int
    engine: int
    bufs: list[Buffer]
    notifier: Buffer


# The stages of opening a GPU, in order, with what each sets up (NVDevice's on_stage reports each as it ends).
OPEN_STAGES = (
    ("rm client", "/dev/nvidiactl, the interface version, the root client, the GPU's ids, the device lock"),
    ("device", "/dev/nvidiaN, UVM initialized, device, subdevice and usermode objects, architecture and classes"),
    ("va space", "FERMI_VASPACE_A registered with UVM, the GPU VA window, signal memory"),
    ("channels", "the interrupt event, channel groups, compute and copy GPFIFO channels"),
)


class NVDevice(Device):
    """One NVIDIA GPU through RM and UVM. `index` picks among the GPUs RM probed.

    Threads: memory (the VA heap, the buffer map and the ioctls that back them) changes under one lock; submissions
    go through the device's submit_lock and each channel's own lock (see hcq.device.Device).
    """

    def __init__(self, index: int = 0, system: Optional[System] = None, lock_wait: Optional[float] = None,
                 ring_entries: int = GPFIFO_ENTRIES, on_stage: Optional[Callable[[str], None]] = None):
        """`on_stage(name)` is called as each of OPEN_STAGES finishes (gpu_probe times the bring-up with it)."""
        from drivers.emulation import system_for
        if ring_entries < 4 or ring_entries & (ring_entries - 1):
            raise ValueError(f"ring_entries must be a power of two >= 4, got {ring_entries}")
        self.system = system or system_for("nv")
        self.index, self.ring_entries = index, ring_entries
        super().__init__(f"NV:{index}" if index else "NV")
        self._fds: list[int] = []
        self._buffers: dict[int, Buffer] = {}
        self._mem_lock = threading.RLock()
        self._sleep_cv = threading.Condition()
        self._event_sleeper = False
        self._window = 0
        self._channels: list[_Channel] = []
        self._os_handles = OS_HANDLE_BASE
        self._local_memory: Optional[tuple[int, Buffer, list[int]]] = None
        self.lock: Optional[DeviceLock] = None
        self.target = ""
        self.debugger = 0
        self._groups: list[int] = []
        self.rm: Optional[RMClient] = None
        self._on_stage = on_stage
        try:
            self._open(lock_wait)
        except BaseException:
            self.close()
            raise
        self.lock.on_release(self.close)

    # --- bring-up ---
    def _open_node(self, path: str) -> int:
        try:
            fd = self.system.open(path)
        except OSCallError as e:
            hint = {2: " (is the NVIDIA driver loaded? nvidia-uvm too: modprobe nvidia-uvm)",
                    13: " (add yourself to the video group)"}.get(e.errno, "")
            raise NVDeviceError(f"{self.name}: cannot open {path}: {e.strerror}{hint}") from e
        self._fds.append(fd)
        return fd

    def _open(self, lock_wait: Optional[float]) -> None:
        # 1. The control node, the interface version (osapi.c RmCheckVersion: RELAXED compares up to the first '.'),
        #    and our root client.
        self.fd_ctl = self._open_node("/dev/nvidiactl")
        self.rm = rm = RMClient(self.system, self.fd_ctl, self.name)
        ver = R.nv_ioctl_rm_api_version_t(cmd=R.NV_RM_API_VERSION_CMD_RELAXED, versionString=PINNED_VERSION.encode())
        try:
            rm.escape(self.fd_ctl, R.NV_ESC_CHECK_VERSION_STR, ver, "NV_ESC_CHECK_VERSION_STR")
        except NVError as e:
            theirs = bytes(ver.versionString).split(b"\0")[0].decode(errors="replace")
            if not env_flag(ANY_DRIVER_ENV):
                raise NVDeviceError(
                    f"{self.name}: the loaded NVIDIA driver ({theirs or 'unknown version'}) refuses our interface "
                    f"version {PINNED_VERSION}: our structs come from that branch (autogen/include/nv/VERSION says "
                    f"how to move the pin); {ANY_DRIVER_ENV}=1 tries anyway") from e
            # Asked to try anyway: the check gates nothing in the kernel (nv.c NV_ESC_CHECK_VERSION_STR only answers).
        rm.alloc_root()
        # 2. Which GPU: RM's probed ids, the card table for its minor number and PCI address (nv.c NV_ESC_CARD_INFO;
        #    GET_ID_INFO_V2 carries neither), its device instance.
        probed = rm.control(rm.client, R.NV0000_CTRL_CMD_GPU_GET_PROBED_IDS, R.NV0000_CTRL_GPU_GET_PROBED_IDS_PARAMS(),
                            "NV0000_CTRL_CMD_GPU_GET_PROBED_IDS")
        ids = [g for g in probed.gpuIds if g != R.NV0000_CTRL_GPU_INVALID_ID]
        if not ids:
            raise NVDeviceError(f"{self.name}: RM probed no GPU (nvidia-smi would say why: a GPU that failed to "
                                "initialize, or one excluded by the driver)")
        if not 0 <= self.index < len(ids):
            raise NVDeviceError(f"NV:{self.index} does not exist: RM probed {len(ids)} GPU(s)")
        self.gpu_id = ids[self.index]
        cards = (R.nv_ioctl_card_info_t * R.NV_MAX_DEVICES)()
        rm.escape(self.fd_ctl, R.NV_ESC_CARD_INFO, cards, "NV_ESC_CARD_INFO")
        card = next((c for c in cards if c.valid and c.gpu_id == self.gpu_id), None)
        if card is None:
            raise NVDeviceError(f"{self.name}: GPU id {self.gpu_id:#x} is not in the driver's card table")
        self.minor = card.minor_number
        pci = card.pci_info
        self.pci_address = f"{pci.domain:04x}:{pci.bus:02x}:{pci.slot:02x}.{pci.function}"
        self.pci_id = (pci.vendor_id, pci.device_id)
        info = rm.control(rm.client, R.NV0000_CTRL_CMD_GPU_GET_ID_INFO_V2,
                          R.NV0000_CTRL_GPU_GET_ID_INFO_V2_PARAMS(gpuId=self.gpu_id), "NV0000_CTRL_CMD_GPU_GET_ID_INFO_V2")
        self.device_instance, self.subdevice_instance = info.deviceInstance, info.subDeviceInstance
        emulated = "emulated" if self.system.emulated else ""
        key = ("emulated-" if emulated else "") + f"nv-gpu-{self.pci_address}"
        label = ", ".join(filter(None, (f"PCI {self.pci_address}", emulated)))
        self.lock = DeviceLock(key, self.system.lock_dir, wait=lock_wait, label=f"{self.name} ({label})").acquire()
        self._stage("rm client")
        # The GPU's node, registered with the control fd (nv.c NV_ESC_REGISTER_FD): RM accepts it for this client.
        self.fd_dev = self._open_gpu_fd()
        # 3. UVM: initialize the VA space on one fd; UVM_MM_INITIALIZE on a second (uvm.c uvm_api_mm_initialize).
        self.fd_uvm = self._open_node("/dev/nvidia-uvm")
        rm.uvm(self.fd_uvm, U.UVM_INITIALIZE, U.UVM_INITIALIZE_PARAMS())
        self.fd_uvm_mm = self._open_node("/dev/nvidia-uvm")
        try:
            rm.uvm(self.fd_uvm_mm, U.UVM_MM_INITIALIZE, U.UVM_MM_INITIALIZE_PARAMS(uvmFd=self.fd_uvm))
        except NVError:
            pass  # it only ties the process's mm to the VA space for HMM/ATS; CUDA runs on when a driver refuses it
        # 4. Device, subdevice, usermode (the doorbell page).
        self.device = rm.alloc(rm.client, C.NV01_DEVICE_0, R.NV0080_ALLOC_PARAMETERS(
            deviceId=self.device_instance, hClientShare=rm.client, vaMode=R.NV_DEVICE_ALLOCATION_VAMODE_MULTIPLE_VASPACES))
        self.subdevice = rm.alloc(self.device, C.NV20_SUBDEVICE_0,
                                  R.NV2080_ALLOC_PARAMETERS(subDeviceId=self.subdevice_instance))
        self.usermode = rm.alloc(self.subdevice, C.TURING_USERMODE_A)
        self.usermode_addr = self._cpu_map(self.usermode, USERMODE_SIZE, self.subdevice, vram=True)
        # 5. What the GPU is.
        self._query()
        self._stage("device")
        # 6. The VA space, owned by UVM (uvm_gpu_va_space.c needs an externally owned, page-faulting RM VA space).
        self.vaspace = rm.alloc(self.device, C.FERMI_VASPACE_A, R.NV_VASPACE_ALLOCATION_PARAMETERS(
            index=R.NV_VASPACE_ALLOCATION_INDEX_GPU_NEW,
            flags=R.NV_VASPACE_ALLOCATION_FLAGS_ENABLE_PAGE_FAULTING | R.NV_VASPACE_ALLOCATION_FLAGS_IS_EXTERNALLY_OWNED))
        # hClient/hSmcPartRef only name an SMC (MIG) partition (nv_gpu_ops.c nvGpuOpsGetGpuInfo reads them only when
        # MIG is in use); a whole GPU needs none.
        rm.uvm(self.fd_uvm, U.UVM_REGISTER_GPU, U.UVM_REGISTER_GPU_PARAMS(gpu_uuid=self.uuid_struct,
                                                                          rmCtrlFd=self.fd_ctl, hClient=rm.client))
        rm.uvm(self.fd_uvm, U.UVM_REGISTER_GPU_VASPACE, U.UVM_REGISTER_GPU_VASPACE_PARAMS(
            gpuUuid=self.uuid_struct, rmCtrlFd=self.fd_ctl, hClient=rm.client, hVaSpace=self.vaspace))
        # 7. Our VA window and heap, the signals.
        self._window = self._reserve_va_window()
        self.heap = VAHeap(self._window, VA_WINDOW, PAGE_SIZE, f"{self.name} VA")
        sig = self.alloc(SIGNAL_SIZE * SIGNAL_SLOTS, MemFlags.HOST_VISIBLE | MemFlags.UNCACHED)
        self.signals = SignalPool(sig.host_addr, sig.va, sig.size, self)
        self._stage("va space")
        # 11. Sleeping: an OS event on a control fd of its own, armed for the FIFO non-stall interrupt.
        self._setup_event()
        # 9. Channels.
        self._create_channels()
        self._stage("channels")

    def _stage(self, name: str) -> None:
        if self._on_stage is not None:
            self._on_stage(name)

    def _open_gpu_fd(self) -> int:
        fd = self._open_node(f"/dev/nvidia{self.minor}")
        self.rm.escape(fd, R.NV_ESC_REGISTER_FD, R.nv_ioctl_register_fd_t(ctl_fd=self.fd_ctl), "NV_ESC_REGISTER_FD")
        return fd

    def _query(self) -> None:
        rm = self.rm
        gid = rm.control(self.subdevice, R.NV2080_CTRL_CMD_GPU_GET_GID_INFO, R.NV2080_CTRL_GPU_GET_GID_INFO_PARAMS(
            flags=R.NV2080_GPU_CMD_GPU_GET_GID_FLAGS_FORMAT_BINARY << R.NV2080_GPU_CMD_GPU_GET_GID_FLAGS_FORMAT_SHIFT,
            length=R.NV_UUID_LEN), "NV2080_CTRL_CMD_GPU_GET_GID_INFO")
        self.uuid = bytes(gid.data[:R.NV_UUID_LEN])
        self.uuid_struct = U.struct_NvProcessorUuid(uuid=(ctypes.c_ubyte * 16)(*self.uuid))
        arch = rm.control(self.subdevice, R.NV2080_CTRL_CMD_MC_GET_ARCH_INFO, R.NV2080_CTRL_MC_GET_ARCH_INFO_PARAMS(),
                          "NV2080_CTRL_CMD_MC_GET_ARCH_INFO")
        self.arch, self.implementation = arch.architecture, arch.implementation
        target = target_for(arch.architecture, arch.implementation)
        classes = rm.control(self.device, R.NV0080_CTRL_CMD_GPU_GET_CLASSLIST_V2,
                             R.NV0080_CTRL_GPU_GET_CLASSLIST_V2_PARAMS(), "NV0080_CTRL_CMD_GPU_GET_CLASSLIST_V2")
        self.class_list = set(classes.classList[:classes.numClasses])
        picked = [next((c for c in options if c in self.class_list), None)
                  for options in (CHANNEL_CLASSES, COMPUTE_CLASSES, COPY_CLASSES)]
        arch_name = ARCH_NAMES.get(arch.architecture, f"architecture {arch.architecture:#x}")
        if target is None or None in picked:
            missing = [what for what, c in zip(("channel", "compute", "copy"), picked) if c is None]
            why = f"no {', '.join(missing)} class this driver knows" if missing else "no sm target this driver knows"
            raise NVDeviceError(f"{self.name}: {arch_name} (arch {arch.architecture:#x}, implementation "
                                f"{arch.implementation:#x}) is not supported yet: {why} (driven: Ampere GA10x, Ada "
                                "AD10x, Hopper GH100)")
        self.target = target
        self.classes = Classes(*picked)
        self.qmd_version = QMD_VERSION[self.classes.compute]
        wanted = (R.NV0080_CTRL_GR_INFO_INDEX_LITTER_NUM_GPCS, R.NV0080_CTRL_GR_INFO_INDEX_LITTER_NUM_TPC_PER_GPC,
                  R.NV0080_CTRL_GR_INFO_INDEX_LITTER_NUM_SM_PER_TPC, R.NV0080_CTRL_GR_INFO_INDEX_MAX_WARPS_PER_SM,
                  R.NV0080_CTRL_GR_INFO_INDEX_SM_VERSION)
        lst = (R.NV2080_CTRL_GR_INFO * len(wanted))(*[R.NV2080_CTRL_GR_INFO(index=i) for i in wanted])
        rm.control(self.subdevice, R.NV2080_CTRL_CMD_GR_GET_INFO, R.NV2080_CTRL_GR_GET_INFO_PARAMS(
            grInfoListSize=len(wanted), grInfoList=ctypes.addressof(lst)), "NV2080_CTRL_CMD_GR_GET_INFO")
        self.gpcs, self.tpc_per_gpc, self.sm_per_tpc, self.max_warps_per_sm, self.sm_version = (e.data for e in lst)
        self.sm_count = self.gpcs * self.tpc_per_gpc * self.sm_per_tpc
        fb = R.NV2080_CTRL_FB_GET_INFO_V2_PARAMS(fbInfoListSize=2)
        fb.fbInfoList[0].index, fb.fbInfoList[1].index = (R.NV2080_CTRL_FB_INFO_INDEX_RAM_SIZE,
                                                          R.NV2080_CTRL_FB_INFO_INDEX_BAR1_SIZE)
        rm.control(self.subdevice, R.NV2080_CTRL_CMD_FB_GET_INFO_V2, fb, "NV2080_CTRL_CMD_FB_GET_INFO_V2")
        self.vram_bytes, self.bar1_bytes = fb.fbInfoList[0].data << 10, fb.fbInfoList[1].data << 10  # KiB
        name = rm.control(self.subdevice, R.NV2080_CTRL_CMD_GPU_GET_NAME_STRING, R.NV2080_CTRL_GPU_GET_NAME_STRING_PARAMS(
            gpuNameStringFlags=R.NV2080_CTRL_GPU_GET_NAME_STRING_FLAGS_TYPE_ASCII), "NV2080_CTRL_CMD_GPU_GET_NAME_STRING")
        self.gpu_name = bytes(name.gpuNameString.ascii).split(b"\0")[0].decode(errors="replace")

    def _reserve_va_window(self) -> int:
        """VA_WINDOW bytes below 2**40 (the QMD and pushbuffer address limit), reserved PROT_NONE."""
        flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE
        for hint in VA_HINTS:
            addr = self.system.mmap(-1, VA_WINDOW, PROT_NONE, flags, 0, hint)
            if addr == hint:
                return addr
            self.system.munmap(addr, VA_WINDOW)
        raise NVDeviceError(f"{self.name}: no free {VA_WINDOW >> 30} GiB range below 1 TiB for GPU addresses "
                            f"(tried {', '.join(hex(h) for h in VA_HINTS)}): too many NV devices open in this process")

    # --- memory ---
    def alloc(self, size: int, flags: MemFlags = MemFlags.DEVICE_LOCAL, align: int = 0) -> Buffer:
        """GPU memory (VRAM when DEVICE_LOCAL, else system memory) mapped in this GPU's VA space; host-visible
        memory is also mapped for the CPU at the same address."""
        if size <= 0:
            raise ValueError(f"{self.name}: allocation size must be positive, got {size}")
        with self._mem_lock:
            self.check()
            return self._alloc(size, flags, align)

    def _alloc(self, size: int, flags: MemFlags, align: int) -> Buffer:
        vram = bool(flags & MemFlags.DEVICE_LOCAL)
        page = HUGE_PAGE if vram and size >= HUGE_MIN and not flags & MemFlags.HOST_VISIBLE else PAGE_SIZE
        rounded = -(-size // page) * page
        va = self.heap.alloc(rounded, max(align, page))
        kind = "VRAM" if vram else "system memory"
        try:
            handle = self.rm.alloc(self.device, C.NV01_MEMORY_LOCAL_USER if vram else C.NV01_MEMORY_SYSTEM,
                                   self._memory_params(rounded, page, vram, flags), f"{size} bytes of {kind}")
        except OutOfMemoryError as e:
            self.heap.free(va)
            raise OutOfMemoryError(f"{self.name}: out of {kind} allocating {size} bytes ({e}); free buffers you no "
                                   "longer need") from None
        except BaseException:
            self.heap.free(va)
            raise
        mem = _Memory(handle, rounded, bool(flags & MemFlags.HOST_VISIBLE))
        try:
            self._gpu_map(va, rounded, handle)
            try:
                if mem.cpu_mapped:
                    self._cpu_map(handle, rounded, self.device, vram=vram, at=va)
            except BaseException:
                self._uvm_free(va, rounded)
                raise
        except BaseException:
            self.rm.free(self.device, handle, "memory")
            self.heap.free(va)
            raise
        buf = Buffer(va, size, self, flags, host_addr=va if mem.cpu_mapped else None, meta=mem)
        self._buffers[va] = buf
        return buf

    @staticmethod
    def _memory_params(size: int, page: int, vram: bool, flags: MemFlags) -> Any:
        """NV_MEMORY_ALLOCATION_PARAMS (nvos.h NVOS32_*): location, page size, physicality, caching."""
        attr = (R.NVOS32_ATTR_PHYSICALITY_ALLOW_NONCONTIGUOUS << R.NVOS32_ATTR_PHYSICALITY_SHIFT |
                (R.NVOS32_ATTR_LOCATION_VIDMEM if vram else R.NVOS32_ATTR_LOCATION_PCI) << R.NVOS32_ATTR_LOCATION_SHIFT)
        attr2 = R.NVOS32_ATTR2_ZBC_PREFER_NO_ZBC << R.NVOS32_ATTR2_ZBC_SHIFT
        if vram:
            huge = page == HUGE_PAGE
            attr |= (R.NVOS32_ATTR_PAGE_SIZE_HUGE if huge else R.NVOS32_ATTR_PAGE_SIZE_4KB) << R.NVOS32_ATTR_PAGE_SIZE_SHIFT
            if huge:
                attr2 |= R.NVOS32_ATTR2_PAGE_SIZE_HUGE_2MB << R.NVOS32_ATTR2_PAGE_SIZE_HUGE_SHIFT
        else:  # system memory the CPU and GPU share: CPU-cached, snooped by the GPU
            attr |= (R.NVOS32_ATTR_PAGE_SIZE_4KB << R.NVOS32_ATTR_PAGE_SIZE_SHIFT |
                     R.NVOS32_ATTR_COHERENCY_CACHED << R.NVOS32_ATTR_COHERENCY_SHIFT)
        cacheable = R.NVOS32_ATTR2_GPU_CACHEABLE_NO if flags & MemFlags.UNCACHED else R.NVOS32_ATTR2_GPU_CACHEABLE_YES
        attr2 |= cacheable << R.NVOS32_ATTR2_GPU_CACHEABLE_SHIFT
        alloc_flags = (R.NVOS32_ALLOC_FLAGS_IGNORE_BANK_PLACEMENT | R.NVOS32_ALLOC_FLAGS_ALIGNMENT_FORCE |
                       R.NVOS32_ALLOC_FLAGS_MAP_NOT_REQUIRED | (R.NVOS32_ALLOC_FLAGS_PERSISTENT_VIDMEM if vram else 0))
        return R.NV_MEMORY_ALLOCATION_PARAMS(type=R.NVOS32_TYPE_IMAGE, flags=alloc_flags, attr=attr, attr2=attr2,
                                             size=size, alignment=page, limit=size - 1)

    def _gpu_map(self, va: int, size: int, handle: int) -> None:
        """UVM_CREATE_EXTERNAL_RANGE at our VA, then UVM_MAP_EXTERNAL_ALLOCATION of the RM memory into it
        (uvm_map_external.c: the range must exist and the allocation's pages must cover it)."""
        self.rm.uvm(self.fd_uvm, U.UVM_CREATE_EXTERNAL_RANGE, U.UVM_CREATE_EXTERNAL_RANGE_PARAMS(base=va, length=size))
        p = U.UVM_MAP_EXTERNAL_ALLOCATION_PARAMS(base=va, length=size, offset=0, gpuAttributesCount=1,
                                                 rmCtrlFd=self.fd_ctl, hClient=self.rm.client, hMemory=handle)
        p.perGpuAttributes[0] = U.UvmGpuMappingAttributes(gpuUuid=self.uuid_struct,
                                                         gpuMappingType=U.UvmGpuMappingTypeReadWriteAtomic,
                                                         gpuCachingType=U.UvmGpuCachingTypeDefault)
        try:
            self.rm.uvm(self.fd_uvm, U.UVM_MAP_EXTERNAL_ALLOCATION, p)
        except BaseException:
            self._uvm_free(va, size)
            raise

    def _uvm_free(self, va: int, size: int) -> None:
        self.rm.uvm(self.fd_uvm, U.UVM_FREE, U.UVM_FREE_PARAMS(base=va, length=size))

    def _cpu_map(self, handle: int, size: int, parent: int, vram: bool, at: int = 0) -> int:
        """Map RM memory for the CPU: NV_ESC_RM_MAP_MEMORY with a fresh fd, then mmap that fd at offset 0
        (nv-mmap.c: the mapping context lives on the fd's file, vm_pgoff must be 0; the GPU's node maps BAR memory,
        the control node system memory). The fd is closed once mapped: the mapping keeps its file."""
        fd = self._open_gpu_fd() if vram else self._open_node("/dev/nvidiactl")
        try:
            self.rm.map_memory(parent, handle, size, fd)
            flags = MAP_SHARED | (MAP_FIXED if at else 0)
            return self.system.mmap(fd, size, PROT_RW, flags, 0, at)
        finally:
            self._fds.remove(fd)
            self.system.close(fd)

    def map_host(self, host_addr: int, size: int) -> Buffer:
        """Make existing host memory (page-aligned) GPU-accessible without a copy (an OS descriptor RM pins). The
        buffer's GPU address comes from our heap; its CPU view is the memory itself."""
        if host_addr % PAGE_SIZE or size <= 0:
            raise ValueError(f"{self.name}: map_host needs a page-aligned address and a positive size, got "
                             f"{host_addr:#x} and {size}")
        with self._mem_lock:
            self.check()
            rounded = -(-size // PAGE_SIZE) * PAGE_SIZE
            va = self.heap.alloc(rounded)
            self._os_handles += 1
            try:
                handle = self.rm.alloc_os_descriptor(self.fd_dev, self.device, self._os_handles, host_addr, rounded)
            except BaseException:
                self.heap.free(va)
                raise
            try:
                self._gpu_map(va, rounded, handle)
            except BaseException:
                self.rm.free(self.device, handle, "OS descriptor")
                self.heap.free(va)
                raise
            buf = Buffer(va, size, self, MemFlags.HOST_VISIBLE, host_addr=host_addr,
                         meta=_Memory(handle, rounded, False, os_descriptor=True))
            self._buffers[va] = buf
            return buf

    def free(self, buf: Buffer) -> None:
        """Unmap and free a buffer; its VA returns to the heap. Freeing twice (or a view) is an error."""
        with self._mem_lock:
            if self._buffers.get(buf.va) is not buf:
                raise InvalidHandleError(f"{buf!r} is not a live allocation of {self.name} (freed twice, or a view?)")
            del self._buffers[buf.va]
            mem: _Memory = buf.meta
            try:
                self._uvm_free(buf.va, mem.size)
                if mem.cpu_mapped:  # keep the VA ours: the reservation goes back over the range
                    self.system.mmap(-1, mem.size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED,
                                     0, buf.va)
                self.rm.free(self.device, mem.handle, "memory")
            finally:
                self.heap.free(buf.va)
                buf.mark_freed()

    def owner_of(self, va: int) -> Optional[Buffer]:
        """The live buffer whose range holds va, or None."""
        with self._mem_lock:
            return next((b for b in self._buffers.values() if b.va <= va < b.va + b.size), None)

    # --- local memory ---
    def local_memory_for(self, per_thread: int, kernel: str = "") -> list[int]:
        """Methods that point the compute engine at a local-memory backing store of at least `per_thread` bytes per
        thread for every thread the GPU can hold (SET_SHADER_LOCAL_MEMORY_A/B and _NON_THROTTLED_A/B/C); the store
        grows on demand and older ones stay until close (encoded launches may still use them)."""
        with self._mem_lock:
            cur = self._local_memory
            if cur is not None and cur[0] >= per_thread:
                return cur[2]
            # bytes per TPC: per-thread bytes x 32 lanes (512-byte granules) x warps per SM x SMs per TPC, 32 KiB
            # granules (as tinygrad's ops_nv.py sizes it; the H200 is the oracle for the exact rule)
            per_tpc = -(-(-(-per_thread * 32 // 0x200) * 0x200) * self.max_warps_per_sm * self.sm_per_tpc
                        // 0x8000) * 0x8000
            total = per_tpc * self.gpcs * self.tpc_per_gpc
            if self.vram_bytes and total > self.vram_bytes // 4:
                raise NVDeviceError(f"{self.name}: {kernel or 'a kernel'} needs {per_thread} bytes of local memory per "
                                    f"thread, {total >> 20} MiB for the whole GPU, more than a quarter of its VRAM: "
                                    "use less local memory (smaller local arrays, no deep recursion)")
            buf = self.alloc(max(total, PAGE_SIZE), MemFlags.DEVICE_LOCAL, align=0x20000)
            cls = self.classes.compute
            words = m.set_shader_local_memory(buf.va, cls=cls) + m.set_shader_local_memory_size(per_tpc, 0xFF, cls=cls)
            self._local_memory = (per_thread, buf, words)
            return words

    # --- channels ---
    def _create_channels(self) -> None:
        """A compute channel in a GRAPHICS channel group and a copy channel in a COPY0 group, each group with a
        context share of our VA space. A channel runs on its group's runlist (kernel_channel.c kchannelConstruct: a
        channel's engine type must be its group's, or unset), and an engine object binds to a channel on its engine's
        runlist, so the copy engine gets a group of its own."""
        rm = self.rm
        groups = []
        for kind, engine_type in (("compute", R.NV2080_ENGINE_TYPE_GRAPHICS), ("copy", R.NV2080_ENGINE_TYPE_COPY0)):
            group = rm.alloc(self.device, C.KEPLER_CHANNEL_GROUP_A, R.NV_CHANNEL_GROUP_ALLOCATION_PARAMETERS(
                engineType=engine_type), f"{kind} channel group")
            self._groups.append(group)
            share = rm.alloc(group, C.FERMI_CONTEXT_SHARE_A, R.NV_CTXSHARE_ALLOCATION_PARAMETERS(
                hVASpace=self.vaspace, flags=R.NV_CTXSHARE_ALLOCATION_FLAGS_SUBCONTEXT_ASYNC), f"{kind} context share")
            groups.append((group, share))
        compute = self._create_channel("compute", self.classes.compute, m.SUBCH_COMPUTE, *groups[0])
        copy = self._create_channel("copy", self.classes.copy, m.SUBCH_COPY, *groups[1])
        self._channels = [compute, copy]
        # GT200_DEBUGGER: its parent is the device (rmapi/resource_list.h), it reads the compute context's MMU faults.
        # Optional: a sandbox's RM proxy may refuse it (gVisor's nvproxy allows the classes CUDA uses); faults are then
        # still reported, without the address.
        try:
            self.debugger = rm.alloc(self.device, R.GT200_DEBUGGER, R.NV83DE_ALLOC_PARAMETERS(
                hAppClient=rm.client, hClass3dObject=compute.engine), "fault reader")
            self.fault_reader_problem = ""
        except NVError as e:
            self.debugger, self.fault_reader_problem = 0, str(e)
        for group, _ in groups:
            rm.control(group, R.NVA06C_CTRL_CMD_GPFIFO_SCHEDULE, R.NVA06C_CTRL_GPFIFO_SCHEDULE_PARAMS(bEnable=1),
                       "NVA06C_CTRL_CMD_GPFIFO_SCHEDULE")
        self.compute_channel, self.copy_channel = compute.fifo, copy.fifo
        # Bind each engine to its subchannel; the compute engine's shared and local memory windows.
        setup = m.set_object(m.SUBCH_COMPUTE, self.classes.compute)
        setup += m.set_shader_local_memory_window(LOCAL_WINDOW, cls=self.classes.compute)
        setup += m.set_shader_shared_memory_window(SHARED_WINDOW, cls=self.classes.compute)
        if self._local_memory is not None:
            setup += self._local_memory[2]
        self.compute_channel.submit(setup)
        self.copy_channel.submit(m.set_object(m.SUBCH_COPY, self.classes.copy))

    def _create_channel(self, kind: str, engine_cls: int, subchannel: int, group: int, share: int) -> _Channel:
        rm, entries = self.rm, self.ring_entries
        userd_off = -(-entries * 8 // 512) * 512  # USERD after the entries, 512-byte aligned (kernel_channel.c)
        ring = self.alloc(userd_off + 512, MemFlags.DEVICE_LOCAL | MemFlags.HOST_VISIBLE)
        notifier = self.alloc(NOTIFIER_SIZE, MemFlags.HOST_VISIBLE | MemFlags.UNCACHED)
        push = self.alloc(PUSH_RING_SIZE, MemFlags.HOST_VISIBLE | MemFlags.UNCACHED)
        done = self.new_signal(0, f"{self.name}.{kind}.done")
        p = R.NV_CHANNEL_ALLOC_PARAMS(hObjectError=notifier.meta.handle, hObjectBuffer=ring.meta.handle,
                                      gpFifoOffset=ring.va, gpFifoEntries=entries, hContextShare=share,
                                      engineType=R.NV2080_ENGINE_TYPE_NULL)  # NULL: the group's engine
        p.hUserdMemory[0], p.userdOffset[0] = ring.meta.handle, userd_off
        handle = rm.alloc(group, self.classes.channel, p, f"{kind} channel")
        engine = rm.alloc(handle, engine_cls, None, f"{kind} engine")
        token = rm.control(handle, R.NVC36F_CTRL_CMD_GPFIFO_GET_WORK_SUBMIT_TOKEN,
                           R.NVC36F_CTRL_CMD_GPFIFO_GET_WORK_SUBMIT_TOKEN_PARAMS(workSubmitToken=0xFFFFFFFF),
                           "NVC36F_CTRL_CMD_GPFIFO_GET_WORK_SUBMIT_TOKEN").workSubmitToken
        fifo = GPFifo(f"{self.name}.{kind}", kind, self.classes.channel, engine_cls, subchannel, ring.host_addr, entries,
                      ring.host_addr + userd_off, self.usermode_addr + C.NVC361_NOTIFY_CHANNEL_PENDING, token, push,
                      done, handle, notifier.host_addr)
        return _Channel(fifo, handle, engine, [ring, push], notifier)

    def _destroy_channels(self) -> None:
        rm = self.rm
        for what, handle in [("fault reader", self.debugger)] + [("channel group", g) for g in self._groups]:
            if handle:
                try:
                    rm.free(self.device, handle, what)
                except (HCQError, OSCallError):
                    pass  # a dead GPU: closing the fds reclaims it
        self.debugger = 0
        self._groups = []
        for ch in self._channels:
            for buf in ch.bufs + [ch.notifier]:
                if not buf.freed:
                    self.free(buf)
            ch.fifo.done.release()
        self._channels = []
        self.compute_channel = self.copy_channel = None

    def compute_queue(self) -> NVComputeQueue:
        return NVComputeQueue(self)

    def copy_queue(self) -> NVCopyQueue:
        return NVCopyQueue(self)

    def hw_queues(self) -> list[GPFifo]:
        return [ch.fifo for ch in self._channels]

    @property
    def channel_handles(self) -> list[int]:
        """RM handles of the compute and copy channels."""
        return [ch.handle for ch in self._channels]

    def load_program(self, kernel: Any, name: Optional[str] = None,
                     local_size: Optional[tuple[int, int, int]] = None) -> Any:
        """Load a kernel: a CompiledKernel for this GPU's sm target, or a cubin's bytes with the kernel's name (and
        its local size when the cubin requires none)."""
        from drivers.nv.program import NVProgram, ProgramLoadError
        if isinstance(kernel, (bytes, bytearray, memoryview)):
            if not name:
                raise ValueError(f"{self.name}: load_program(cubin_bytes, name) needs the kernel's name")
            return NVProgram(self, bytes(kernel), name, local_size)
        if getattr(kernel, "target", self.target) != self.target:
            raise ProgramLoadError(f"{kernel.name} was built for {kernel.target}, but {self.name} is a {self.target}: "
                                   f"compile it for {self.target}")
        return NVProgram(self, kernel.cubin, kernel.name, local_size or kernel.local_size, compiled=kernel)

    def alloc_kernarg_memory(self, size: int) -> Buffer:
        """Constant bank 0 blocks live in VRAM the CPU writes through BAR1: the constant cache fetches them from
        device memory rather than across PCIe."""
        return self.alloc(size, MemFlags.DEVICE_LOCAL | MemFlags.HOST_VISIBLE)

    @property
    def shared_window(self) -> int:
        return SHARED_WINDOW

    @property
    def local_window(self) -> int:
        return LOCAL_WINDOW

    # --- signals, sleeping ---
    def new_signal(self, value: int = 0, name: str = "") -> Signal:
        if self.closed:
            self.check()
        return self.signals.new(value, name)

    def timestamp_ns(self, raw: int) -> int:
        """Host semaphore timestamps count nanoseconds (clc56f.h SEM_EXECUTE_RELEASE_TIMESTAMP: the GPU's ns timer)."""
        return raw

    def _setup_event(self) -> None:
        """NV_ESC_ALLOC_OS_EVENT on a control fd of its own (osapi.c allocate_os_event: events queue on that fd's
        file), an NV01_EVENT_OS_EVENT on the subdevice for the FIFO non-stall interrupt delivered to that fd, armed
        to repeat (NV2080_CTRL_CMD_EVENT_SET_NOTIFICATION). Without event data (NV01_EVENT_WITHOUT_EVENT_DATA): nv.c
        nv_post_event then only sets a pending flag, which poll() reports and clears, instead of queueing one
        allocation per interrupt that only GET_EVENT_DATA would free."""
        rm = self.rm
        self.fd_event = self._open_node("/dev/nvidiactl")
        ev = rm.escape(self.fd_event, R.NV_ESC_ALLOC_OS_EVENT, R.nv_ioctl_alloc_os_event_t(
            hClient=rm.client, hDevice=self.device, fd=self.fd_event), "NV_ESC_ALLOC_OS_EVENT")
        if ev.Status != R.NV_OK:
            raise NVError(f"{self.name}: NV_ESC_ALLOC_OS_EVENT failed: {status_name(ev.Status)}", ev.Status)
        self.event = rm.alloc(self.subdevice, C.NV01_EVENT_OS_EVENT, R.NV0005_ALLOC_PARAMETERS(
            hParentClient=rm.client, hSrcResource=self.subdevice, hClass=C.NV01_EVENT_OS_EVENT,
            notifyIndex=R.NV2080_NOTIFIERS_FIFO_EVENT_MTHD | R.NV01_EVENT_NONSTALL_INTR | R.NV01_EVENT_WITHOUT_EVENT_DATA,
            data=self.fd_event),
            "non-stall interrupt event")
        rm.control(self.subdevice, R.NV2080_CTRL_CMD_EVENT_SET_NOTIFICATION, R.NV2080_CTRL_EVENT_SET_NOTIFICATION_PARAMS(
            event=R.NV2080_NOTIFIERS_FIFO_EVENT_MTHD, action=R.NV2080_CTRL_EVENT_SET_NOTIFICATION_ACTION_REPEAT),
            "NV2080_CTRL_CMD_EVENT_SET_NOTIFICATION")

    def _drain_events(self) -> int:
        """Dequeue any notifications queued with data on the event fd (NV_ESC_RM_GET_EVENT_DATA until MoreEvents is
        0): RM's channel-error events may carry data even though ours does not."""
        got = 0
        for _ in range(256):  # bounded: events keep coming while a queue runs
            ev = R.NvUnixEvent()
            p = R.NVOS41_PARAMETERS(pEvent=ctypes.addressof(ev))
            try:
                self.rm.escape(self.fd_event, R.NV_ESC_RM_GET_EVENT_DATA, p, "NV_ESC_RM_GET_EVENT_DATA")
            except NVError:
                break  # nothing queued: a dataless event was reported (and cleared) by poll itself
            if p.status != R.NV_OK:
                break  # NV_WARN_NOTHING_TO_DO: the queue is empty
            got += 1
            if not p.MoreEvents:
                break
        return got

    def sleep_on_signal(self, signal: Signal, value: int, timeout_s: float) -> None:
        """Sleep until a channel's non-stall interrupt, or the slice ends; then check the channels for errors.

        What wakes us: every signal a queue writes is followed by the host's NON_STALL_INTERRUPT method; RM turns the
        channel's non-stall interrupt into an event on the NV01_EVENT_OS_EVENT armed for
        NV2080_NOTIFIERS_FIFO_EVENT_MTHD, queued on our event fd, which poll() reports (nv.c nvidia_poll). One thread
        at a time polls; the others wait for it, then each re-reads its own signal."""
        self.check()
        with self._sleep_cv:
            if self._event_sleeper:
                if signal.value < value:
                    self._sleep_cv.wait(timeout_s)
                self.poll_faults()
                self.check()
                return
            self._event_sleeper = True
        try:
            if signal.value < value:
                try:
                    ready = self.system.poll(self.fd_event, select.POLLIN | select.POLLPRI, max(1, int(timeout_s * 1000)))
                    if ready:
                        self._drain_events()
                except (NVError, OSCallError):
                    self.check()  # closed by another thread meanwhile: say that
                    raise
        finally:
            with self._sleep_cv:
                self._event_sleeper = False
                self._sleep_cv.notify_all()
        self.poll_faults()
        self.check()

    # --- faults ---
    def poll_faults(self) -> None:
        """Read each channel's error notifier (RM writes NvNotification[NV_CHANNELGPFIFO_NOTIFICATION_TYPE_ERROR]
        with the ROBUST_CHANNEL_* code when it stops a channel: kernel_rc_notification.c krcErrorWriteNotifier) and
        turn the first error into the device's fault."""
        if self.fault is not None or self.closed:
            return
        for ch in list(self._channels):
            note = R.NvNotification.from_address(ch.notifier.host_addr + R.NV_CHANNELGPFIFO_NOTIFICATION_TYPE_ERROR *
                                                 ctypes.sizeof(R.NvNotification))
            if note.info32 or note.status:
                self.set_fault(self._decode_fault(ch, note.info32, note.info16, note.status))
                return

    def _decode_fault(self, ch: _Channel, code: int, info16: int, status: int) -> DeviceFault:
        kind = ch.fifo.kind
        what = ROBUST_CHANNEL.get(code, f"channel error {code} (ROBUST_CHANNEL_* code)")
        details = {"code": code, "info16": info16, "status": status, "queue": ch.fifo.debug_state().describe()}
        if code != R.ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT:
            fault_kind = "bad packet" if code == R.ROBUST_CHANNEL_PBDMA_ERROR else "channel error"
            return DeviceFault(fault_kind, f"RM stopped the {kind} channel: {what}", queue=ch.fifo.name,
                               details=details)
        address, how = None, ""
        if kind == "compute" and not self.debugger:
            how = f" (no address: RM refused the fault reader at bring-up: {self.fault_reader_problem})"
        elif kind == "compute":
            try:
                info = self.rm.control(self.debugger, R.NV83DE_CTRL_CMD_DEBUG_READ_MMU_FAULT_INFO,
                                       R.NV83DE_CTRL_DEBUG_READ_MMU_FAULT_INFO_PARAMS(),
                                       "NV83DE_CTRL_CMD_DEBUG_READ_MMU_FAULT_INFO")
                if info.count:
                    address = info.mmuFaultInfoList[0].faultAddress
                    how = " (address from NV83DE_CTRL_CMD_DEBUG_READ_MMU_FAULT_INFO)"
            except NVError as e:
                how = f" (the fault address could not be read: {e})"
        else:
            address = self._copy_fault_address(ch.fifo)
            how = (" (RM gives no address for copy-engine faults: this is the first byte outside every buffer among "
                   "the copies the channel had not finished)") if address is not None else \
                " (RM gives no address for copy-engine faults, and no unfinished copy touches unmapped memory)"
        if address is None:
            return DeviceFault("page fault", f"{what} on the {kind} channel{how}", queue=ch.fifo.name, details=details)
        owner = self.owner_of(address)
        where = f"inside {owner!r} at offset {address - owner.va:#x}" if owner else "outside every buffer of this device"
        return DeviceFault("page fault", f"GPU access to {address:#x}, {where}: {what} on the {kind} channel{how}",
                           address=address, queue=ch.fifo.name, details=details)

    def _copy_fault_address(self, fifo: GPFifo) -> Optional[int]:
        """The first unmapped byte a not-yet-finished copy of this channel touches, from its decoded methods."""
        for _, _, _, words in fifo.pending():
            regs: dict[str, int] = {}
            for meth in m.decode(list(words), {fifo.subchannel: fifo.engine_cls}, host=fifo.host_cls):
                regs[meth.name] = meth.value
                if meth.name != "LAUNCH_DMA":
                    continue
                n = regs.get("LINE_LENGTH_IN", 0)
                src = regs.get("OFFSET_IN_UPPER", 0) << 32 | regs.get("OFFSET_IN_LOWER", 0)
                dst = regs.get("OFFSET_OUT_UPPER", 0) << 32 | regs.get("OFFSET_OUT_LOWER", 0)
                for start in (src, dst):
                    at = start
                    while n and at < start + n:
                        owner = self.owner_of(at)
                        if owner is None:
                            return at
                        at = owner.va + owner.size
        return None

    def _recover(self) -> None:
        """A stopped channel cannot run again: free the channel group (its channels and engines go with it) and
        make a new one; the timeline is reset to what was issued."""
        self._destroy_channels()
        self._create_channels()
        self.timeline.value = self.timeline_value

    def stall(self, engine: str, on: bool = True) -> None:
        """Tests: make the emulated GPU's engine ("compute" or "copy") stop consuming work (a real GPU cannot be
        told to)."""
        if not self.system.emulated:
            raise NVDeviceError(f"{self.name}: a real GPU cannot be told to stall its {engine} engine")
        self.system.nv.stall(self.index, engine, on)

    # --- closing ---
    def close(self) -> None:
        """Free every buffer, the RM objects and the fds, release the VA window and the device lock."""
        if getattr(self, "_closing", False):
            return
        self._closing = True
        with self.submit_lock, self._mem_lock:
            self._close()
        if self.lock is not None:
            self.lock.release()

    def _close(self) -> None:
        if self.rm is not None and self.rm.client:
            try:
                self._destroy_channels()
            except (HCQError, OSCallError):
                pass
            for buf in list(self._buffers.values()):
                try:
                    self.free(buf)
                except (HCQError, OSCallError):
                    pass  # closing anyway: RM reclaims what is left with the client
            try:
                self.rm.free(self.rm.client, self.rm.client, "client")  # RM_FREE of the client frees every object under it
            except (HCQError, OSCallError):
                pass
        if getattr(self, "usermode_addr", 0):
            self.system.munmap(self.usermode_addr, USERMODE_SIZE)
            self.usermode_addr = 0
        for fd in reversed(self._fds):
            try:
                self.system.close(fd)
            except OSError:
                pass
        self._fds.clear()
        if self._window:
            self.system.munmap(self._window, VA_WINDOW)
            self._window = 0
        self.closed = True

    def __enter__(self) -> "NVDevice":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        """Facts about this GPU for gpu_probe and logs."""
        return {"name": self.gpu_name, "target": self.target, "pci": self.pci_address, "minor": self.minor,
                "uuid": "GPU-" + self.uuid.hex(), "arch": ARCH_NAMES.get(self.arch, hex(self.arch)),
                "classes": self.classes.describe(), "qmd": self.qmd_version, "vram_bytes": self.vram_bytes,
                "bar1_bytes": self.bar1_bytes, "sm_count": self.sm_count}
