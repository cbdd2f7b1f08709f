"""The Linux VFIO PCI backend: a function bound to vfio-pci, reached through its IOMMU group.

Order of operations (Documentation/driver-api/vfio.rst; drivers/vfio/container.c, group.c, pci/vfio_pci_core.c):
open /dev/vfio/vfio (API version, Type1v2 extension), open /dev/vfio/<group> (status must be viable), attach the group
to the container, set the container's IOMMU model, get the device fd by name, then region info for the BARs and
config space. DMA memory is mapped into the IOMMU at IOVAs this object chooses; MSI/MSI-X are routed to eventfds.
Request numbers and structs are linux/vfio.h's (autogen/vfio.py).
"""
from __future__ import annotations

import ctypes
import errno
import os
import posixpath
import select
from dataclasses import dataclass
from typing import Optional

from autogen import pci_regs as R
from autogen import vfio as V
from drivers.pci import config as C
from drivers.pci.interface import BarInfo, BarMapping, DMABuffer, PCIError
from drivers.pci.sysfs import (SYSFS_DRIVERS, SYSFS_PCI, ConfigBackedDevice, FileBarMapping, HostBarMapping, pread,
                               pwrite)
from drivers.system import MAP_ANONYMOUS, MAP_SHARED, PAGE_SIZE, PROT_READ, PROT_WRITE, System
from hcq.allocator import VAHeap

MAP_POPULATE = 0x8000  # mman-common.h: fault the pages in now; VFIO_IOMMU_MAP_DMA pins them itself
# IOVAs we hand out: from 4 GiB (clear of the x86 MSI window at 0xfee00000) for 1 TiB, inside the 44-bit system
# aperture AMD GPUs address (a fact of our choosing; the IOMMU accepts any range not reserved).
IOVA_BASE = 1 << 32
IOVA_SIZE = 1 << 40

EFD_NONBLOCK = os.O_NONBLOCK  # sys/eventfd.h: EFD_NONBLOCK is O_NONBLOCK, so a read with nothing pending is EAGAIN
IOMMU_HINT = ("enable the IOMMU: boot with intel_iommu=on iommu=pt (Intel) or amd_iommu=on iommu=pt (AMD), and turn "
              "on VT-d / AMD-Vi in the firmware setup")


def _vfio_bind_commands(bdf: str, driver: Optional[str]) -> str:
    unbind = f"echo {bdf} | sudo tee {SYSFS_DRIVERS}/{driver}/unbind; " if driver else ""
    return (f"`sudo modprobe vfio-pci; {unbind}echo vfio-pci | sudo tee {SYSFS_PCI}/{bdf}/driver_override; "
            f"echo {bdf} | sudo tee {SYSFS_DRIVERS}/vfio-pci/bind`")


def _irq_set(flags: int, index: int, start: int, fds: list[int]) -> ctypes.Structure:
    """struct vfio_irq_set followed by `count` int32 eventfds (linux/vfio.h; vfio_set_irqs_validate_and_prepare)."""
    class IrqSet(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("argsz", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("index", ctypes.c_uint32),
                    ("start", ctypes.c_uint32), ("count", ctypes.c_uint32), ("data", ctypes.c_int32 * len(fds))]
    s = IrqSet(ctypes.sizeof(IrqSet), flags, index, start, len(fds))
    for i, fd in enumerate(fds):
        s.data[i] = fd
    return s


@dataclass(frozen=True)
class Region:
    """One VFIO device region: index, flags (VFIO_REGION_INFO_FLAG_*), size and offset in the device fd."""
    index: int
    flags: int
    size: int
    offset: int

    @property
    def mappable(self) -> bool:
        return bool(self.flags & V.VFIO_REGION_INFO_FLAG_MMAP)


class VFIOPCIDevice(ConfigBackedDevice):
    """A PCI function bound to vfio-pci. DMA goes through the IOMMU (bus addresses are IOVAs we choose, no root
    needed for them); interrupts arrive on eventfds (`enable_interrupts`, `wait_interrupt`)."""

    def __init__(self, bdf: str, system: System):
        self.bdf, self.system = bdf, system
        self.path = f"{SYSFS_PCI}/{bdf}"
        self.container_fd = self.group_fd = self.device_fd = -1
        self._maps: list[BarMapping] = []
        self._dma: dict[int, DMABuffer] = {}
        self._irq_fds: list[int] = []
        self._irq_index: Optional[int] = None
        self._iova = VAHeap(IOVA_BASE, IOVA_SIZE, PAGE_SIZE, name=f"{bdf} IOVA")
        if not system.exists(self.path):
            raise PCIError(f"{bdf}: no such PCI device ({self.path} is missing); `lspci -D` lists the addresses")
        try:
            self.group = posixpath.basename(system.readlink(f"{self.path}/iommu_group"))
        except OSError:
            raise PCIError(f"{bdf} has no IOMMU group, so VFIO cannot reach it: the IOMMU is off; {IOMMU_HINT}") from None
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _driver(self, bdf: str) -> Optional[str]:
        try:
            return posixpath.basename(self.system.readlink(f"{SYSFS_PCI}/{bdf}/driver"))
        except OSError:
            return None

    def _ioctl(self, fd: int, request: int, arg, what: str) -> int:
        try:
            return self.system.ioctl(fd, request, arg)
        except OSError as e:
            raise PCIError(f"{self.bdf} (IOMMU group {self.group}): {what} failed: {e}") from e

    def _open(self) -> None:
        bdf, group = self.bdf, self.group
        driver = self._driver(bdf)
        if driver != "vfio-pci":
            raise PCIError(f"{bdf} is bound to {driver or 'no driver'}, not vfio-pci; bind it to vfio-pci with "
                           f"{_vfio_bind_commands(bdf, driver)}")
        try:
            self.container_fd = self.system.open("/dev/vfio/vfio", os.O_RDWR)
        except OSError as e:
            raise PCIError(f"{bdf}: opening /dev/vfio/vfio failed: {e}; load the module with `sudo modprobe vfio-pci`") from e
        version = self._ioctl(self.container_fd, V.VFIO_GET_API_VERSION, None, "VFIO_GET_API_VERSION")
        if version != V.VFIO_API_VERSION:
            raise PCIError(f"{bdf}: the kernel's VFIO API version is {version}, this driver speaks {V.VFIO_API_VERSION}")
        if not self._ioctl(self.container_fd, V.VFIO_CHECK_EXTENSION, V.VFIO_TYPE1v2_IOMMU, "VFIO_CHECK_EXTENSION"):
            raise PCIError(f"{bdf}: the VFIO container does not offer the Type1v2 IOMMU; {IOMMU_HINT}")
        try:
            self.group_fd = self.system.open(f"/dev/vfio/{group}", os.O_RDWR)
        except OSError as e:
            why = ("another process holds the group open (a VFIO group opens once)" if e.errno == errno.EBUSY else
                   "opening it needs root or a udev rule giving you /dev/vfio/<group>")
            raise PCIError(f"{bdf}: opening /dev/vfio/{group} failed: {e}; {why}") from e
        status = V.struct_vfio_group_status(argsz=ctypes.sizeof(V.struct_vfio_group_status))
        self._ioctl(self.group_fd, V.VFIO_GROUP_GET_STATUS, status, "VFIO_GROUP_GET_STATUS")
        if not status.flags & V.VFIO_GROUP_FLAGS_VIABLE:
            raise PCIError(f"{bdf}: IOMMU group {group} is not viable: every device in it must be bound to vfio-pci "
                           f"(or to no driver); {self._group_offenders()}")
        # group.c vfio_group_ioctl_set_container reads the container fd through a pointer to an int (an int32[1]:
        # the seam's IoctlArg takes arrays, not bare ctypes scalars)
        self._ioctl(self.group_fd, V.VFIO_GROUP_SET_CONTAINER, (ctypes.c_int32 * 1)(self.container_fd),
                    "VFIO_GROUP_SET_CONTAINER")
        self._ioctl(self.container_fd, V.VFIO_SET_IOMMU, V.VFIO_TYPE1v2_IOMMU, "VFIO_SET_IOMMU(Type1v2)")
        # group.c vfio_group_ioctl_get_device_fd takes the device's name as a NUL-terminated string
        self.device_fd = self._ioctl(self.group_fd, V.VFIO_GROUP_GET_DEVICE_FD, ctypes.create_string_buffer(bdf.encode()),
                                     "VFIO_GROUP_GET_DEVICE_FD")
        info = V.struct_vfio_device_info(argsz=ctypes.sizeof(V.struct_vfio_device_info))
        self._ioctl(self.device_fd, V.VFIO_DEVICE_GET_INFO, info, "VFIO_DEVICE_GET_INFO")
        if not info.flags & V.VFIO_DEVICE_FLAGS_PCI:
            raise PCIError(f"{bdf}: the VFIO device is not a PCI device (flags {info.flags:#x})")
        self.device_flags, self.num_irqs = info.flags, info.num_irqs
        self.regions: dict[int, Region] = {}
        for index in [*range(R.PCI_STD_NUM_BARS), V.VFIO_PCI_CONFIG_REGION_INDEX]:
            if index >= info.num_regions:
                continue
            ri = V.struct_vfio_region_info(argsz=ctypes.sizeof(V.struct_vfio_region_info), index=index)
            self._ioctl(self.device_fd, V.VFIO_DEVICE_GET_REGION_INFO, ri, f"VFIO_DEVICE_GET_REGION_INFO({index})")
            self.regions[index] = Region(index, ri.flags, ri.size, ri.offset)
        cfg = self.regions.get(V.VFIO_PCI_CONFIG_REGION_INDEX)
        if cfg is None or not cfg.size:
            raise PCIError(f"{bdf}: the VFIO device has no config-space region")
        self._cfg_size = min(cfg.size, R.PCI_CFG_SPACE_EXP_SIZE)

    def _group_offenders(self) -> str:
        try:
            members = self.system.listdir(f"/sys/kernel/iommu_groups/{self.group}/devices")
        except OSError:
            return f"list them with `ls /sys/kernel/iommu_groups/{self.group}/devices`"
        bad = [(m, d) for m in members if (d := self._driver(m)) not in (None, "vfio-pci")]
        if not bad:
            return f"its devices are {members}"
        return "; ".join(f"{m} is bound to {d}: {_vfio_bind_commands(m, d)}" for m, d in bad)

    # --- config space (the config region, read and written at its offset in the device fd) ---
    def _cfg_off(self, offset: int, size: int) -> int:
        if self.device_fd < 0:
            raise PCIError(f"{self.bdf}: the device is closed; open it again")
        if size not in (1, 2, 4) or offset < 0 or offset + size > self._cfg_size:
            raise PCIError(f"{self.bdf}: config access of {size} bytes at {offset:#x} is not a 1/2/4-byte access inside "
                           f"{self._cfg_size:#x} bytes")
        return self.regions[V.VFIO_PCI_CONFIG_REGION_INDEX].offset + offset

    def config_read(self, offset: int, size: int = 4) -> int:
        data = pread(self.system, self.device_fd, size, self._cfg_off(offset, size), f"{self.bdf} VFIO config")
        if len(data) != size:
            raise PCIError(f"{self.bdf}: VFIO config read at {offset:#x} returned {len(data)} of {size} bytes")
        return int.from_bytes(data, "little")

    def config_write(self, offset: int, value: int, size: int = 4) -> None:
        pwrite(self.system, self.device_fd, (value & ((1 << 8 * size) - 1)).to_bytes(size, "little"),
               self._cfg_off(offset, size), f"{self.bdf} VFIO config")

    def config_snapshot(self) -> C.ConfigSpace:
        data = pread(self.system, self.device_fd, self._cfg_size, self._cfg_off(0, 4), f"{self.bdf} VFIO config")
        return C.ConfigSpace(data, self.bdf)

    # --- BARs ---
    def bars(self) -> list[BarInfo]:
        regs = {b.index: b for b in C.bar_registers(self.config_snapshot())}
        try:  # vfio-pci shows virtualized BAR registers; sysfs has the bus addresses the kernel assigned
            table = C.parse_resource_table(self.system.read_text(f"{self.path}/resource"))
        except (OSError, PCIError):
            table = []
        out = []
        for i in range(R.PCI_STD_NUM_BARS):
            region, reg = self.regions.get(i), regs.get(i)
            if region is None or not region.size or reg is None:
                continue
            address = table[i][0] if i < len(table) else reg.address
            out.append(BarInfo(i, address, region.size, reg.is_64bit, reg.prefetchable, reg.io))
        return out

    def map_bar(self, index: int, offset: int = 0, size: Optional[int] = None) -> BarMapping:
        region = self.regions.get(index)
        if region is None or not region.size or index >= R.PCI_STD_NUM_BARS:
            raise PCIError(f"{self.bdf}: BAR {index} is not implemented (VFIO regions with a size: "
                           f"{[i for i, r in self.regions.items() if r.size and i < R.PCI_STD_NUM_BARS]})")
        size = region.size - offset if size is None else size
        if offset < 0 or size <= 0 or offset + size > region.size:
            raise PCIError(f"{self.bdf}: BAR {index} window {offset:#x}+{size:#x} is outside its {region.size:#x} bytes")
        what = f"{self.bdf} BAR {index} (VFIO)"
        if region.mappable:
            start = offset - offset % PAGE_SIZE
            length = (offset + size - start + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE
            try:
                addr = self.system.mmap(self.device_fd, length, PROT_READ | PROT_WRITE, MAP_SHARED, region.offset + start)
            except OSError as e:
                raise PCIError(f"{what}: mmap of {length:#x} bytes at {start:#x} failed: {e}") from e
            m: BarMapping = HostBarMapping(index, size, addr + offset - start, lambda: self.system.munmap(addr, length))
        else:  # a region without FLAG_MMAP is reached by pread/pwrite of the device fd at its offset
            m = FileBarMapping(self.system, self.device_fd, index, size, region.offset + offset, what, owns_fd=False)
        self._maps.append(m)
        return m

    def resize_bar(self, index: int, size: int) -> None:
        sizes = self.resizable_bar_sizes(index)
        current = self.regions.get(index)
        if current is not None and current.size == size:
            return
        enc = C.rebar_encoding(size)
        if not sizes:
            raise PCIError(f"{self.bdf}: BAR {index} is not resizable (no Resizable BAR capability entry for it)")
        if size not in sizes:
            raise PCIError(f"{self.bdf}: BAR {index} cannot be {size >> 20} MB; the device allows "
                           f"{[s >> 20 for s in sizes]} MB")
        # vfio_pci_config.c exposes the ReBAR capability read-only: the BAR is sized before vfio-pci takes the device
        raise PCIError(f"{self.bdf}: vfio-pci does not let user space resize BARs; resize it while no driver is bound: "
                       f"`echo {self.bdf} | sudo tee {SYSFS_DRIVERS}/vfio-pci/unbind; echo {enc} | sudo tee "
                       f"{self.path}/resource{index}_resize; echo {self.bdf} | sudo tee {SYSFS_DRIVERS}/vfio-pci/bind`")

    # --- DMA through the IOMMU ---
    def dma_alloc(self, size: int) -> DMABuffer:
        if size <= 0:
            raise PCIError(f"{self.bdf}: DMA buffer size must be positive, got {size}")
        size = (size + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE
        iova = self._iova.alloc(size, PAGE_SIZE)
        try:
            addr = self.system.mmap(-1, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE)
        except OSError as e:
            self._iova.free(iova)
            raise PCIError(f"{self.bdf}: allocating {size:#x} bytes for DMA failed: {e}") from e
        dma_map = V.struct_vfio_iommu_type1_dma_map(argsz=ctypes.sizeof(V.struct_vfio_iommu_type1_dma_map),
                                                    flags=V.VFIO_DMA_MAP_FLAG_READ | V.VFIO_DMA_MAP_FLAG_WRITE,
                                                    vaddr=addr, iova=iova, size=size)
        try:
            self._ioctl(self.container_fd, V.VFIO_IOMMU_MAP_DMA, dma_map,
                        f"VFIO_IOMMU_MAP_DMA({size:#x} bytes at IOVA {iova:#x}; pinning counts against `ulimit -l`)")
        except PCIError:
            self.system.munmap(addr, size)
            self._iova.free(iova)
            raise
        buf = DMABuffer(addr, size, [iova + o for o in range(0, size, PAGE_SIZE)], PAGE_SIZE)
        self._dma[addr] = buf
        return buf

    def dma_free(self, buf: DMABuffer) -> None:
        if self._dma.pop(buf.host_addr, None) is None:
            raise PCIError(f"{self.bdf}: DMA buffer at {buf.host_addr:#x} is not one of this device's (double free?)")
        unmap = V.struct_vfio_iommu_type1_dma_unmap(argsz=ctypes.sizeof(V.struct_vfio_iommu_type1_dma_unmap),
                                                    iova=buf.bus_pages[0], size=buf.size)
        try:
            self._ioctl(self.container_fd, V.VFIO_IOMMU_UNMAP_DMA, unmap, "VFIO_IOMMU_UNMAP_DMA")
        finally:
            self.system.munmap(buf.host_addr, buf.size)
            self._iova.free(buf.bus_pages[0])

    # --- enable, reset ---
    def enable(self) -> None:
        # vfio-pci enables the function when the device fd opens; memory decoding and bus mastering are ours to set
        self.set_command(R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_MASTER)

    def reset(self) -> None:
        if not self.device_flags & V.VFIO_DEVICE_FLAGS_RESET:
            raise PCIError(f"{self.bdf}: vfio-pci offers no function reset for this device (no FLR or other method; "
                           "VFIO_DEVICE_FLAGS_RESET is clear); a bus reset or a power cycle is what is left")
        self._ioctl(self.device_fd, V.VFIO_DEVICE_RESET, None, "VFIO_DEVICE_RESET")

    # --- interrupts ---
    def irq_count(self, index: int) -> int:
        """How many vectors VFIO offers for IRQ index `index` (VFIO_PCI_MSI_IRQ_INDEX, VFIO_PCI_MSIX_IRQ_INDEX, ...)."""
        if index >= self.num_irqs:
            return 0
        info = V.struct_vfio_irq_info(argsz=ctypes.sizeof(V.struct_vfio_irq_info), index=index)
        self._ioctl(self.device_fd, V.VFIO_DEVICE_GET_IRQ_INFO, info, f"VFIO_DEVICE_GET_IRQ_INFO({index})")
        return info.count

    def enable_interrupts(self, count: int = 1, index: Optional[int] = None) -> list[int]:
        """Route `count` MSI-X vectors (or MSI when the device has no MSI-X) to new eventfds; returns the eventfds."""
        if index is None:
            index = V.VFIO_PCI_MSIX_IRQ_INDEX if self.irq_count(V.VFIO_PCI_MSIX_IRQ_INDEX) else V.VFIO_PCI_MSI_IRQ_INDEX
        available = self.irq_count(index)
        if count < 1 or count > available:
            raise PCIError(f"{self.bdf}: asked for {count} vectors on IRQ index {index}, VFIO offers {available}")
        self.disable_interrupts()
        fds = [self.system.eventfd(0, EFD_NONBLOCK) for _ in range(count)]
        try:
            self._ioctl(self.device_fd, V.VFIO_DEVICE_SET_IRQS,
                        _irq_set(V.VFIO_IRQ_SET_DATA_EVENTFD | V.VFIO_IRQ_SET_ACTION_TRIGGER, index, 0, fds),
                        f"VFIO_DEVICE_SET_IRQS(index {index}, {count} eventfds)")
        except PCIError:
            for fd in fds:
                self.system.close(fd)
            raise
        self._irq_fds, self._irq_index = fds, index
        return list(fds)

    def wait_interrupt(self, vector: int = 0, timeout_s: float = 1.0) -> int:
        """Wait up to timeout_s for vector `vector`; returns how many times it fired since the last wait (0: timeout).
        timeout_s=0 only looks (no poll)."""
        if not 0 <= vector < len(self._irq_fds):
            raise PCIError(f"{self.bdf}: interrupt vector {vector} is not enabled ({len(self._irq_fds)} are; call "
                           "enable_interrupts first)")
        fd = self._irq_fds[vector]
        count = self._drain(fd)
        if count or timeout_s <= 0:
            return count
        try:
            ready = self.system.poll(fd, select.POLLIN, max(1, int(timeout_s * 1000)))
        except OSError as e:
            raise PCIError(f"{self.bdf}: waiting on interrupt eventfd {fd} failed: {e}") from e
        if not ready & select.POLLIN:
            return 0
        return self._drain(fd)

    def _drain(self, fd: int) -> int:
        """Read and clear an eventfd's counter (non-blocking: 0 when nothing fired)."""
        try:
            return int.from_bytes(self.system.read(fd, 8), "little")
        except OSError as e:
            if e.errno == errno.EAGAIN:
                return 0
            raise PCIError(f"{self.bdf}: reading interrupt eventfd {fd} failed: {e}") from e

    def disable_interrupts(self) -> None:
        """Stop routing interrupts (DATA_NONE with count 0 tears the index down) and close the eventfds."""
        if self._irq_index is not None and self.device_fd >= 0:
            self._ioctl(self.device_fd, V.VFIO_DEVICE_SET_IRQS,
                        _irq_set(V.VFIO_IRQ_SET_DATA_NONE | V.VFIO_IRQ_SET_ACTION_TRIGGER, self._irq_index, 0, []),
                        "VFIO_DEVICE_SET_IRQS(disable)")
        for fd in self._irq_fds:
            self.system.close(fd)
        self._irq_fds, self._irq_index = [], None

    def close(self) -> None:
        try:
            self.disable_interrupts()
        finally:
            for m in self._maps:
                m.close()
            self._maps.clear()
            for buf in list(self._dma.values()):
                self.dma_free(buf)
            for name in ("device_fd", "group_fd", "container_fd"):  # device, then group (detaches), then container
                fd = getattr(self, name)
                if fd >= 0:
                    self.system.close(fd)
                    setattr(self, name, -1)
