"""Emulated VFIO: /dev/vfio/vfio (the container, type1 IOMMU) and /dev/vfio/<group> with linux/vfio.h's ioctls.

Semantics and errnos follow drivers/vfio/container.c, group.c, vfio_iommu_type1.c and pci/vfio_pci_core.c (6.12);
each rule cites its function. The group node appears when a device of the group is bound to vfio-pci and goes when
none is (vfio_pci_core_register_device / unregister). DMA the function makes goes through the container's mappings:
an access outside them is an IOMMUFault the function records and the GPU model reports.

Emulator deviations: an MMIO BAR region is READ|WRITE without MMAP (a CPU mapping cannot call a handler), so a
driver reaches it with pread/pwrite as it would any non-mmappable region. The config region passes reads through
and writes except to the MSI and MSI-X capabilities, which VFIO virtualizes (interrupts are set up by SET_IRQS).
"""
from __future__ import annotations

import ctypes
import errno
import mmap as _mmap
from dataclasses import dataclass
from typing import Any, Optional

from autogen import pci_regs as R
from autogen import vfio as V
from drivers.system import MAP_SHARED, OSCallError, PAGE_SIZE, IoctlArg, libc
from emu.pci.function import MSI_POS, MSIX_POS, IOMMUFault, MemoryBacking, PCIFunction
from emu.pci.sysfs import VFIO_PCI, PCIBus, SysfsDevice, pci_bus, reset_function
from emu.system import EmulatedSystem, NodeHandler

VFIO_PCI_OFFSET_SHIFT = 40  # include/linux/vfio_pci_core.h: region index in the top bits of the file offset
IOMMU_PGSIZES = 0x1000 | 0x200000 | 0x40000000  # 4 KiB, 2 MiB, 1 GiB (an x86 IOMMU's page sizes)
_libc = libc()


def region_offset(index: int) -> int:
    """VFIO_PCI_INDEX_TO_OFFSET."""
    return index << VFIO_PCI_OFFSET_SHIFT


def _arg_bytes(arg: IoctlArg, what: str) -> bytearray:
    if isinstance(arg, bytearray):
        return arg
    if isinstance(arg, (ctypes.Structure, ctypes.Union, ctypes.Array, ctypes._SimpleCData)):
        return bytearray(ctypes.string_at(ctypes.addressof(arg), ctypes.sizeof(arg)))
    raise OSCallError(errno.EFAULT, f"{what}: the argument must be a ctypes object or a bytearray (got {arg!r})")


def _struct(arg: IoctlArg, cls: type, what: str) -> Any:
    """The ioctl's struct as the kernel copies it in (copy_from_user of minsz: EFAULT when the buffer is short)."""
    raw = _arg_bytes(arg, what)
    if len(raw) < ctypes.sizeof(cls):
        raise OSCallError(errno.EFAULT, f"{what}: the argument is {len(raw)} bytes, {cls.__name__} needs "
                                        f"{ctypes.sizeof(cls)}")
    return cls.from_buffer_copy(bytes(raw[:ctypes.sizeof(cls)]))


def _write_back(arg: IoctlArg, data: bytes) -> None:
    """copy_to_user: put `data` at the start of the caller's buffer."""
    if isinstance(arg, bytearray):
        arg[:len(data)] = data
    else:
        ctypes.memmove(ctypes.addressof(arg), data, len(data))  # type: ignore[arg-type]


def _minsz(cls: type, last_field: str) -> int:
    """offsetofend(struct, field)."""
    f = getattr(cls, last_field)
    return f.offset + f.size


@dataclass
class DMAMapping:
    """One VFIO_IOMMU_MAP_DMA: IOVA range to host range, with its permissions."""
    iova: int
    size: int
    vaddr: int
    read: bool
    write: bool


class Container(NodeHandler):
    """An open /dev/vfio/vfio: groups, the chosen IOMMU model, and the IOVA mappings (vfio_iommu_type1.c)."""

    EXTENSIONS = {V.VFIO_TYPE1_IOMMU, V.VFIO_TYPE1v2_IOMMU, V.VFIO_UNMAP_ALL}

    def __init__(self, vfio: "EmulatedVFIO"):
        self.vfio = vfio
        self.groups: list["GroupFile"] = []
        self.iommu_type: Optional[int] = None
        self.mappings: list[DMAMapping] = []

    def ioctl(self, request: int, arg: IoctlArg) -> int:
        # container.c vfio_fops_unl_ioctl: unknown requests go to the IOMMU driver, -EINVAL without one.
        if request == V.VFIO_GET_API_VERSION:
            return V.VFIO_API_VERSION
        if request == V.VFIO_CHECK_EXTENSION:
            return int(isinstance(arg, int) and arg in self.EXTENSIONS)
        if request == V.VFIO_SET_IOMMU:
            return self._set_iommu(arg)
        if self.iommu_type is None:
            raise OSCallError(errno.EINVAL, f"VFIO container ioctl {request:#x}: no IOMMU set (VFIO_SET_IOMMU first)")
        if request == V.VFIO_IOMMU_GET_INFO:
            return self._get_info(arg)
        if request == V.VFIO_IOMMU_MAP_DMA:
            return self._map(arg)
        if request == V.VFIO_IOMMU_UNMAP_DMA:
            return self._unmap(arg)
        raise OSCallError(errno.ENOTTY, f"VFIO container ioctl {request:#x} is not emulated")

    def _set_iommu(self, arg: IoctlArg) -> int:
        # container.c vfio_ioctl_set_iommu: -EINVAL without a group or when already set; -ENODEV for an unknown model.
        if not self.groups or self.iommu_type is not None:
            raise OSCallError(errno.EINVAL, "VFIO_SET_IOMMU: the container needs a group (VFIO_GROUP_SET_CONTAINER) "
                                            "and must not have an IOMMU yet")
        if arg not in (V.VFIO_TYPE1_IOMMU, V.VFIO_TYPE1v2_IOMMU):
            raise OSCallError(errno.ENODEV, f"VFIO_SET_IOMMU: IOMMU model {arg!r} is not available (use "
                                            f"VFIO_TYPE1v2_IOMMU = {V.VFIO_TYPE1v2_IOMMU})")
        self.iommu_type = int(arg)  # type: ignore[arg-type]
        for g in self.groups:
            g.attach_iommu()
        return 0

    def _get_info(self, arg: IoctlArg) -> int:
        cls = V.struct_vfio_iommu_type1_info
        info = _struct(arg, cls, "VFIO_IOMMU_GET_INFO")
        if info.argsz < _minsz(cls, "iova_pgsizes"):  # vfio_iommu_type1_get_info
            raise OSCallError(errno.EINVAL, "VFIO_IOMMU_GET_INFO: argsz is smaller than the struct")
        info.flags, info.iova_pgsizes, info.cap_offset = V.VFIO_IOMMU_INFO_PGSIZES, IOMMU_PGSIZES, 0
        _write_back(arg, bytes(info)[:_minsz(cls, "iova_pgsizes")])
        return 0

    def _map(self, arg: IoctlArg) -> int:
        cls = V.struct_vfio_iommu_type1_dma_map
        m = _struct(arg, cls, "VFIO_IOMMU_MAP_DMA")
        # vfio_iommu_type1_map_dma / vfio_dma_do_map: flags, alignment to the smallest page, overflow, overlap.
        if m.argsz < _minsz(cls, "size") or m.flags & ~(V.VFIO_DMA_MAP_FLAG_READ | V.VFIO_DMA_MAP_FLAG_WRITE):
            raise OSCallError(errno.EINVAL, f"VFIO_IOMMU_MAP_DMA: bad argsz or flags {m.flags:#x} (READ|WRITE only)")
        if not m.flags & (V.VFIO_DMA_MAP_FLAG_READ | V.VFIO_DMA_MAP_FLAG_WRITE):
            raise OSCallError(errno.EINVAL, "VFIO_IOMMU_MAP_DMA: a mapping needs READ and/or WRITE")
        if not m.size or (m.size | m.iova | m.vaddr) & (PAGE_SIZE - 1):
            raise OSCallError(errno.EINVAL, f"VFIO_IOMMU_MAP_DMA: iova {m.iova:#x}, vaddr {m.vaddr:#x} and size "
                                            f"{m.size:#x} must be nonzero multiples of {PAGE_SIZE:#x}")
        if m.iova + m.size > 1 << 64 or m.vaddr + m.size > 1 << 64:
            raise OSCallError(errno.EINVAL, "VFIO_IOMMU_MAP_DMA: the range wraps around")
        clash = self._overlapping(m.iova, m.size)
        if clash:
            raise OSCallError(errno.EEXIST, f"VFIO_IOMMU_MAP_DMA: iova {m.iova:#x}+{m.size:#x} overlaps the mapping at "
                                            f"{clash[0].iova:#x}+{clash[0].size:#x}")
        self.mappings.append(DMAMapping(m.iova, m.size, m.vaddr, bool(m.flags & V.VFIO_DMA_MAP_FLAG_READ),
                                        bool(m.flags & V.VFIO_DMA_MAP_FLAG_WRITE)))
        self.mappings.sort(key=lambda d: d.iova)
        return 0

    def _overlapping(self, iova: int, size: int) -> list[DMAMapping]:
        return [d for d in self.mappings if d.iova < iova + size and iova < d.iova + d.size]

    def _unmap(self, arg: IoctlArg) -> int:
        cls = V.struct_vfio_iommu_type1_dma_unmap
        u = _struct(arg, cls, "VFIO_IOMMU_UNMAP_DMA")
        allowed = V.VFIO_DMA_UNMAP_FLAG_ALL
        if u.argsz < _minsz(cls, "size") or u.flags & ~allowed:
            raise OSCallError(errno.EINVAL, f"VFIO_IOMMU_UNMAP_DMA: bad argsz or flags {u.flags:#x} (only ALL emulated)")
        # vfio_dma_do_unmap: page alignment; UNMAP_ALL takes iova = size = 0; v2 refuses to bisect a mapping.
        if u.flags & V.VFIO_DMA_UNMAP_FLAG_ALL:
            if u.iova or u.size:
                raise OSCallError(errno.EINVAL, "VFIO_IOMMU_UNMAP_DMA with FLAG_ALL needs iova = size = 0")
            gone = self.mappings
        else:
            if u.iova & (PAGE_SIZE - 1) or not u.size or u.size & (PAGE_SIZE - 1) or u.iova + u.size > 1 << 64:
                raise OSCallError(errno.EINVAL, f"VFIO_IOMMU_UNMAP_DMA: iova {u.iova:#x} and size {u.size:#x} must be "
                                                "page-aligned and nonzero")
            gone = self._overlapping(u.iova, u.size)
            if self.iommu_type == V.VFIO_TYPE1v2_IOMMU and any(
                    d.iova < u.iova or d.iova + d.size > u.iova + u.size for d in gone):
                raise OSCallError(errno.EINVAL, f"VFIO_IOMMU_UNMAP_DMA: {u.iova:#x}+{u.size:#x} cuts a mapping in two "
                                                "(type1v2 unmaps whole mappings only)")
        u.size = sum(d.size for d in gone)
        self.mappings = [d for d in self.mappings if d not in gone]
        _write_back(arg, bytes(u)[:_minsz(cls, "size")])
        return 0

    def translate(self, bus_addr: int, size: int, write: bool) -> int:
        """The IOMMU: host address of a device access, or IOMMUFault (the mapping, its end or its permission)."""
        for d in self.mappings:
            if d.iova <= bus_addr < d.iova + d.size:
                if bus_addr + size > d.iova + d.size:
                    raise IOMMUFault(bus_addr, size, write, f"runs past the end of the mapping at {d.iova:#x}"
                                                            f"+{d.size:#x}")
                if (write and not d.write) or (not write and not d.read):
                    raise IOMMUFault(bus_addr, size, write, "the mapping does not allow it")
                return d.vaddr + bus_addr - d.iova
        raise IOMMUFault(bus_addr, size, write, "no VFIO DMA mapping covers it")

    def close(self) -> None:
        for g in list(self.groups):
            g.unset_container()


class GroupFile(NodeHandler):
    """An open /dev/vfio/<group> (group.c)."""

    def __init__(self, vfio: "EmulatedVFIO", group: int):
        self.vfio, self.group = vfio, group
        self.container: Optional[Container] = None
        self.devices: list["DeviceFile"] = []

    @property
    def bus(self) -> PCIBus:
        return self.vfio.bus

    def viable(self) -> bool:
        # iommu_group_claim_dma_owner: fails while a device of the group is bound to a driver that does DMA itself.
        return all(d.driver in (None, VFIO_PCI) for d in self.bus.group_devices(self.group))

    def ioctl(self, request: int, arg: IoctlArg) -> int:
        if request == V.VFIO_GROUP_GET_STATUS:
            cls = V.struct_vfio_group_status
            st = _struct(arg, cls, "VFIO_GROUP_GET_STATUS")
            if st.argsz < ctypes.sizeof(cls):  # vfio_group_ioctl_get_status
                raise OSCallError(errno.EINVAL, "VFIO_GROUP_GET_STATUS: argsz is smaller than the struct")
            if self.container is not None:
                st.flags = V.VFIO_GROUP_FLAGS_CONTAINER_SET | V.VFIO_GROUP_FLAGS_VIABLE
            else:
                st.flags = V.VFIO_GROUP_FLAGS_VIABLE if self.viable() else 0
            _write_back(arg, bytes(st))
            return 0
        if request == V.VFIO_GROUP_SET_CONTAINER:
            return self._set_container(arg)
        if request == V.VFIO_GROUP_UNSET_CONTAINER:
            if self.container is None:  # vfio_group_ioctl_unset_container
                raise OSCallError(errno.EINVAL, "VFIO_GROUP_UNSET_CONTAINER: the group has no container")
            if self.devices:
                raise OSCallError(errno.EBUSY, "VFIO_GROUP_UNSET_CONTAINER: close the group's device fds first")
            self.unset_container()
            return 0
        if request == V.VFIO_GROUP_GET_DEVICE_FD:
            return self._get_device_fd(arg)
        raise OSCallError(errno.ENOTTY, f"VFIO group ioctl {request:#x} is not emulated")

    def _set_container(self, arg: IoctlArg) -> int:
        raw = _arg_bytes(arg, "VFIO_GROUP_SET_CONTAINER")
        fd = int.from_bytes(bytes(raw[:4]), "little", signed=True)
        # vfio_group_ioctl_set_container: -EBADF for a bad fd, -EINVAL if already set or not a container;
        # vfio_container_attach_group: iommu_group_claim_dma_owner -EBUSY when the group is not viable.
        try:
            container = self.vfio.system.handler_of(fd)
        except OSCallError:
            raise OSCallError(errno.EBADF, f"VFIO_GROUP_SET_CONTAINER: fd {fd} is not open") from None
        if self.container is not None or not isinstance(container, Container):
            raise OSCallError(errno.EINVAL, f"VFIO_GROUP_SET_CONTAINER: group {self.group} already has a container, "
                                            f"or fd {fd} is not /dev/vfio/vfio")
        if not self.viable():
            bound = [f"{d.bdf} ({d.driver})" for d in self.bus.group_devices(self.group) if d.driver not in (None, VFIO_PCI)]
            raise OSCallError(errno.EBUSY, f"VFIO_GROUP_SET_CONTAINER: IOMMU group {self.group} is not viable: "
                                           f"{', '.join(bound)} bound to another driver; bind every device of the "
                                           "group to vfio-pci or unbind it")
        self.container = container
        container.groups.append(self)
        if container.iommu_type is not None:
            self.attach_iommu()
        return 0

    def attach_iommu(self) -> None:
        assert self.container is not None
        for d in self.bus.group_devices(self.group):
            d.function.iommu = self.container.translate

    def unset_container(self) -> None:
        if self.container is None:
            return
        self.container.groups.remove(self)
        for d in self.bus.group_devices(self.group):
            d.function.iommu = _blocked
        self.container = None

    def _get_device_fd(self, arg: IoctlArg) -> int:
        raw = bytes(_arg_bytes(arg, "VFIO_GROUP_GET_DEVICE_FD") if not isinstance(arg, bytes) else arg)
        name = raw.split(b"\0")[0].decode(errors="replace")
        # vfio_device_get_from_name: -ENODEV; vfio_df_group_open / vfio_group_use_container: -EINVAL without a
        # container with an IOMMU.
        dev = next((d for d in self.bus.group_devices(self.group) if d.bdf == name and d.driver == VFIO_PCI), None)
        if dev is None:
            raise OSCallError(errno.ENODEV, f"VFIO_GROUP_GET_DEVICE_FD: no device {name!r} of group {self.group} is "
                                            "bound to vfio-pci")
        if self.container is None or self.container.iommu_type is None:
            raise OSCallError(errno.EINVAL, "VFIO_GROUP_GET_DEVICE_FD: set a container and its IOMMU first")
        handler = DeviceFile(self, dev)
        self.devices.append(handler)
        return self.vfio.system.install_handler(handler)

    def close(self) -> None:
        self.vfio.open_groups.discard(self.group)
        if not self.devices:
            self.unset_container()


def _blocked(bus_addr: int, size: int, write: bool) -> int:
    raise IOMMUFault(bus_addr, size, write, "the device's IOMMU group is not attached to a VFIO container")


class DeviceFile(NodeHandler):
    """A VFIO device fd (vfio_pci_core.c): info, regions at VFIO_PCI_INDEX_TO_OFFSET, irqs, reset, mmap."""

    def __init__(self, group: GroupFile, dev: SysfsDevice):
        self.group, self.dev = group, dev
        self.maps: dict[int, int] = {}
        self.triggers: dict[tuple[int, int], int] = {}  # (irq index, vector) -> eventfd
        f = dev.function
        # vfio_pci_core_enable: pci_enable_device, then a function reset when the device has one, then save state.
        f.config_write(R.PCI_COMMAND, f.config_read(R.PCI_COMMAND, 2) | R.PCI_COMMAND_MEMORY, 2)
        if f.flr_supported:
            reset_function(f)
        f.interrupt_sink = self._interrupt

    @property
    def f(self) -> PCIFunction:
        return self.dev.function

    # -- regions --
    def _region(self, index: int) -> tuple[int, int]:
        """(size, flags) of region `index` (vfio_pci_ioctl_get_region_info)."""
        f = self.f
        if index == V.VFIO_PCI_CONFIG_REGION_INDEX:
            return 4096, V.VFIO_REGION_INFO_FLAG_READ | V.VFIO_REGION_INFO_FLAG_WRITE
        if 0 <= index <= V.VFIO_PCI_BAR5_REGION_INDEX and index in f.bar_indices:
            flags = V.VFIO_REGION_INFO_FLAG_READ | V.VFIO_REGION_INFO_FLAG_WRITE
            if f.bar_spec(index).is_memory and f.bar_size(index) >= PAGE_SIZE:
                flags |= V.VFIO_REGION_INFO_FLAG_MMAP
            return f.bar_size(index), flags
        if 0 <= index < V.VFIO_PCI_NUM_REGIONS:
            return 0, 0  # an unimplemented BAR, no ROM, not VGA: a zero-sized region
        raise OSCallError(errno.EINVAL, f"VFIO region index {index} is out of range ({V.VFIO_PCI_NUM_REGIONS} regions)")

    def ioctl(self, request: int, arg: IoctlArg) -> int:
        if request == V.VFIO_DEVICE_GET_INFO:
            cls = V.struct_vfio_device_info
            info = _struct(arg, cls, "VFIO_DEVICE_GET_INFO")
            if info.argsz < _minsz(cls, "num_irqs"):  # vfio_pci_ioctl_get_info
                raise OSCallError(errno.EINVAL, "VFIO_DEVICE_GET_INFO: argsz is smaller than the struct")
            info.flags = V.VFIO_DEVICE_FLAGS_PCI | (V.VFIO_DEVICE_FLAGS_RESET if self.f.flr_supported else 0)
            info.num_regions, info.num_irqs = V.VFIO_PCI_NUM_REGIONS, V.VFIO_PCI_NUM_IRQS
            _write_back(arg, bytes(info)[:_minsz(cls, "num_irqs")])
            return 0
        if request == V.VFIO_DEVICE_GET_REGION_INFO:
            cls = V.struct_vfio_region_info
            info = _struct(arg, cls, "VFIO_DEVICE_GET_REGION_INFO")
            if info.argsz < _minsz(cls, "offset"):
                raise OSCallError(errno.EINVAL, "VFIO_DEVICE_GET_REGION_INFO: argsz is smaller than the struct")
            info.size, info.flags = self._region(info.index)
            info.offset, info.cap_offset = region_offset(info.index), 0
            _write_back(arg, bytes(info)[:_minsz(cls, "offset")])
            return 0
        if request == V.VFIO_DEVICE_GET_IRQ_INFO:
            cls = V.struct_vfio_irq_info
            info = _struct(arg, cls, "VFIO_DEVICE_GET_IRQ_INFO")
            if info.argsz < ctypes.sizeof(cls) or info.index >= V.VFIO_PCI_NUM_IRQS:
                raise OSCallError(errno.EINVAL, f"VFIO_DEVICE_GET_IRQ_INFO: bad argsz or index {info.index}")
            info.count = self._irq_count(info.index)
            info.flags = V.VFIO_IRQ_INFO_EVENTFD | (
                V.VFIO_IRQ_INFO_MASKABLE | V.VFIO_IRQ_INFO_AUTOMASKED if info.index == V.VFIO_PCI_INTX_IRQ_INDEX
                else V.VFIO_IRQ_INFO_NORESIZE)
            _write_back(arg, bytes(info))
            return 0
        if request == V.VFIO_DEVICE_SET_IRQS:
            return self._set_irqs(arg)
        if request == V.VFIO_DEVICE_RESET:
            if not self.f.flr_supported:  # vfio_pci_ioctl_reset: -EINVAL when reset does not work
                raise OSCallError(errno.EINVAL, f"VFIO_DEVICE_RESET: {self.dev.bdf} has no function reset")
            reset_function(self.f)
            return 0
        raise OSCallError(errno.ENOTTY, f"VFIO device ioctl {request:#x} is not emulated")

    def _irq_count(self, index: int) -> int:
        f = self.f
        if index == V.VFIO_PCI_INTX_IRQ_INDEX:
            return 1 if f.config_read(R.PCI_INTERRUPT_PIN, 1) else 0
        if index == V.VFIO_PCI_MSI_IRQ_INDEX:
            return f.msi_vectors
        if index == V.VFIO_PCI_MSIX_IRQ_INDEX:
            return f.msix_spec.count if f.msix_spec else 0
        return 1 if index == V.VFIO_PCI_ERR_IRQ_INDEX or index == V.VFIO_PCI_REQ_IRQ_INDEX else 0

    def _set_irqs(self, arg: IoctlArg) -> int:
        cls = V.struct_vfio_irq_set
        hdr = _struct(arg, cls, "VFIO_DEVICE_SET_IRQS")
        raw = _arg_bytes(arg, "VFIO_DEVICE_SET_IRQS")
        minsz = _minsz(cls, "count")
        # vfio_set_irqs_validate_and_prepare: argsz, one data type and one action, the vector range, the data size.
        dtype, action = hdr.flags & V.VFIO_IRQ_SET_DATA_TYPE_MASK, hdr.flags & V.VFIO_IRQ_SET_ACTION_TYPE_MASK
        if (hdr.argsz < minsz or hdr.index >= V.VFIO_PCI_NUM_IRQS or bin(dtype).count("1") != 1
                or bin(action).count("1") != 1 or hdr.flags & ~(V.VFIO_IRQ_SET_DATA_TYPE_MASK
                                                                 | V.VFIO_IRQ_SET_ACTION_TYPE_MASK)):
            raise OSCallError(errno.EINVAL, f"VFIO_DEVICE_SET_IRQS: bad argsz, index {hdr.index} or flags {hdr.flags:#x}")
        max_count = self._irq_count(hdr.index)
        if (hdr.start >= max_count and hdr.count) or hdr.start + hdr.count > max_count:
            raise OSCallError(errno.EINVAL, f"VFIO_DEVICE_SET_IRQS: vectors {hdr.start}+{hdr.count} exceed the "
                                            f"{max_count} of irq index {hdr.index}")
        size = {V.VFIO_IRQ_SET_DATA_NONE: 0, V.VFIO_IRQ_SET_DATA_BOOL: 1, V.VFIO_IRQ_SET_DATA_EVENTFD: 4}[dtype]
        if size and (hdr.argsz - minsz < size * hdr.count or len(raw) < minsz + size * hdr.count):
            raise OSCallError(errno.EINVAL, "VFIO_DEVICE_SET_IRQS: argsz does not cover the data for count vectors")
        if hdr.index not in (V.VFIO_PCI_MSI_IRQ_INDEX, V.VFIO_PCI_MSIX_IRQ_INDEX) or action != V.VFIO_IRQ_SET_ACTION_TRIGGER:
            raise OSCallError(errno.ENOTTY, "VFIO_DEVICE_SET_IRQS: only MSI/MSI-X triggers are emulated")
        msix = hdr.index == V.VFIO_PCI_MSIX_IRQ_INDEX
        if dtype == V.VFIO_IRQ_SET_DATA_NONE and hdr.count == 0:  # vfio_pci_set_msi_trigger: disable all
            self.triggers = {k: v for k, v in self.triggers.items() if k[0] != hdr.index}
            self.f.set_msix(False) if msix else self.f.set_msi(0)
            return 0
        if dtype == V.VFIO_IRQ_SET_DATA_EVENTFD:
            fds = [int.from_bytes(bytes(raw[minsz + 4 * i:minsz + 4 * i + 4]), "little", signed=True)
                   for i in range(hdr.count)]
            for i, fd in enumerate(fds):
                if fd >= 0:
                    self.vfio_system.handler_of(fd)  # EBADF now, not at the first interrupt
                    self.triggers[(hdr.index, hdr.start + i)] = fd
                else:
                    self.triggers.pop((hdr.index, hdr.start + i), None)
            n = max((v for (i, v) in self.triggers if i == hdr.index), default=-1) + 1
            if msix:
                self.f.set_msix(n > 0, range(n))
            else:
                self.f.set_msi(1 << (n - 1).bit_length() if n else 0)
            return 0
        for i in range(hdr.count):  # DATA_NONE / DATA_BOOL with TRIGGER: fire the vectors (loopback test)
            if dtype == V.VFIO_IRQ_SET_DATA_NONE or raw[minsz + i]:
                self._interrupt("msix" if msix else "msi", hdr.start + i)
        return 0

    @property
    def vfio_system(self) -> EmulatedSystem:
        return self.group.vfio.system

    def _interrupt(self, kind: str, vector: int) -> None:
        index = {"msix": V.VFIO_PCI_MSIX_IRQ_INDEX, "msi": V.VFIO_PCI_MSI_IRQ_INDEX}.get(kind, V.VFIO_PCI_INTX_IRQ_INDEX)
        fd = self.triggers.get((index, vector))
        if fd is not None:  # vfio_msihandler: eventfd_signal
            self.vfio_system.handler_of(fd).write((1).to_bytes(8, "little"))

    # -- region access --
    def _locate(self, offset: int, size: int) -> tuple[int, int]:
        index, off = offset >> VFIO_PCI_OFFSET_SHIFT, offset & ((1 << VFIO_PCI_OFFSET_SHIFT) - 1)
        rsize, _ = self._region(index)
        if off + size > rsize:
            raise OSCallError(errno.EINVAL, f"VFIO region {index}: {size} bytes at {off:#x} are outside its "
                                            f"{rsize:#x} bytes")
        return index, off

    def pread(self, size: int, offset: int) -> bytes:
        index, off = self._locate(offset, size)
        f = self.f
        if index == V.VFIO_PCI_CONFIG_REGION_INDEX:
            return f.config_read_bytes(off, size)
        self._memory_check(index)
        if f.bar_spec(index).is_memory:
            return f.bar_read(index, off, size)
        return b"".join(self._mmio_read(index, o, n) for o, n in _chunks(off, size))

    def pwrite(self, data: bytes, offset: int) -> int:
        index, off = self._locate(offset, len(data))
        f = self.f
        if index == V.VFIO_PCI_CONFIG_REGION_INDEX:
            pos = 0
            for o, n in _chunks(off, len(data)):
                if not self._virtualized(o):
                    f.config_write(o, int.from_bytes(data[pos:pos + n], "little"), n)
                pos += n
            return len(data)
        self._memory_check(index)
        if f.bar_spec(index).is_memory:
            f.bar_write(index, off, data)
            return len(data)
        pos = 0
        for o, n in _chunks(off, len(data)):
            if n != 4:
                raise OSCallError(errno.EINVAL, f"VFIO BAR {index} is register space: write whole aligned dwords")
            f.bar_write32(index, o, int.from_bytes(data[pos:pos + 4], "little"))
            pos += 4
        return len(data)

    def _mmio_read(self, index: int, off: int, n: int) -> bytes:
        if n != 4:
            raise OSCallError(errno.EINVAL, f"VFIO BAR {index} is register space: read whole aligned dwords")
        return self.f.bar_read32(index, off).to_bytes(4, "little")

    def _memory_check(self, index: int) -> None:
        # vfio_pci_rdwr.c vfio_pci_bar_rw: -EIO when memory decoding is off (__vfio_pci_memory_enabled).
        if not self.f.removed and not self.f.config_read(R.PCI_COMMAND, 2) & R.PCI_COMMAND_MEMORY:
            raise OSCallError(errno.EIO, f"VFIO BAR {index} of {self.dev.bdf}: memory decoding is off "
                                         "(set PCI_COMMAND_MEMORY through the config region)")

    def _virtualized(self, off: int) -> bool:
        # vfio_pci_config.c: MSI and MSI-X capability writes only change VFIO's virtual copy (vfio_msi_config_write).
        f = self.f
        spans = [(MSI_POS, 0x10)] if f.msi_vectors else []
        spans += [(MSIX_POS, 0x0C)] if f.msix_spec else []
        return any(start <= off < start + n for start, n in spans)

    def mmap(self, length: int, prot: int, flags: int, offset: int, addr: int) -> int:
        index, off = offset >> VFIO_PCI_OFFSET_SHIFT, offset & ((1 << VFIO_PCI_OFFSET_SHIFT) - 1)
        # vfio_pci_core_mmap: BAR regions only, MAP_SHARED, mmappable, inside the page-aligned BAR.
        if index > V.VFIO_PCI_BAR5_REGION_INDEX or not flags & MAP_SHARED:
            raise OSCallError(errno.EINVAL, f"VFIO mmap: region {index} cannot be mapped (BARs only, MAP_SHARED)")
        size, rflags = self._region(index)
        if not rflags & V.VFIO_REGION_INFO_FLAG_MMAP:
            raise OSCallError(errno.EINVAL, f"VFIO mmap: BAR {index} of {self.dev.bdf} is not mmappable (register space "
                                            "in the emulator: use pread/pwrite at the region offset)")
        if off % PAGE_SIZE or off + length > (size + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE:
            raise OSCallError(errno.EINVAL, f"VFIO mmap: {length:#x} bytes at {off:#x} do not fit BAR {index}")
        backing = self.f.bar_spec(index).backing
        assert isinstance(backing, MemoryBacking)
        ret = _libc.mmap(addr or None, length, prot, flags | _mmap.MAP_SHARED, backing.fd, backing.offset + off)
        if ret in (None, ctypes.c_void_p(-1).value):
            raise OSCallError(ctypes.get_errno(), f"VFIO mmap of BAR {index} failed")
        self.maps[ret] = length
        return ret

    def munmap(self, addr: int, length: int) -> None:
        if self.maps.pop(addr, None) is not None:
            _libc.munmap(addr, length)

    def close(self) -> None:
        # vfio_pci_core_disable: interrupts off, bus mastering off, a reset when the device has one.
        f = self.f
        f.interrupt_sink = None
        if f.msix_spec:
            f.set_msix(False)
        if f.msi_vectors:
            f.set_msi(0)
        f.config_write(R.PCI_COMMAND, f.config_read(R.PCI_COMMAND, 2) & ~R.PCI_COMMAND_MASTER, 2)
        if f.flr_supported:
            reset_function(f)
        if self in self.group.devices:
            self.group.devices.remove(self)


def _chunks(offset: int, count: int) -> list[tuple[int, int]]:
    """Naturally aligned accesses covering a range, widest first (vfio_pci_config_rw / vfio_pci_core_do_io_rw)."""
    out, off, end = [], offset, offset + count
    while off < end:
        n = 4 if not off & 3 and end - off >= 4 else 2 if not off & 1 and end - off >= 2 else 1
        out.append((off, n))
        off += n
    return out


class EmulatedVFIO:
    """VFIO on one EmulatedSystem: /dev/vfio/vfio, and /dev/vfio/<group> while a device of the group is bound to
    vfio-pci. A group may be open once at a time (vfio_group_fops_open: -EBUSY)."""

    def __init__(self, system: EmulatedSystem):
        self.system = system
        self.bus = pci_bus(system)
        self.open_groups: set[int] = set()
        self.bus.register_driver(VFIO_PCI)
        self.bus.on_bind.append(self._bound)
        self.bus.on_unbind.append(self._unbound)
        system.add_node("/dev/vfio/vfio", lambda flags: Container(self))
        for dev in self.bus.devices.values():
            if dev.driver == VFIO_PCI:
                self._bound(dev)

    def _open_group(self, group: int) -> GroupFile:
        if group in self.open_groups:
            raise OSCallError(errno.EBUSY, f"/dev/vfio/{group} is already open (one user per group)")
        self.open_groups.add(group)
        return GroupFile(self, group)

    def _bound(self, dev: SysfsDevice) -> None:
        if dev.driver != VFIO_PCI:
            return
        if dev.iommu_group is None:
            raise OSCallError(errno.EINVAL, f"bind {dev.bdf} to vfio-pci: it has no IOMMU group (enable the IOMMU)")
        g = dev.iommu_group
        self.system.add_node(f"/dev/vfio/{g}", lambda flags: self._open_group(g))

    def _unbound(self, dev: SysfsDevice) -> None:
        g = dev.iommu_group
        if g is not None and not any(d.driver == VFIO_PCI for d in self.bus.group_devices(g)):
            self.system.nodes.pop(f"/dev/vfio/{g}", None)


def install_vfio(system: EmulatedSystem) -> EmulatedVFIO:
    """Make VFIO available on `system` (the vfio-pci driver on the emulated bus and /dev/vfio/vfio)."""
    return EmulatedVFIO(system)
