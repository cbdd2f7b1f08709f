"""The Linux PCI sysfs view of emulated PCI functions, on an EmulatedSystem (drivers/pci/pci-sysfs.c semantics).

/sys/bus/pci/devices/<bdf>/ holds vendor, device, class, subsystem_vendor, subsystem_device, revision (static, as
the kernel caches them at enumeration), config (read_file, or open + pread/pwrite), resource, resourceN (+ _wc for
prefetchable BARs), resourceN_resize, enable, reset (when the function has FLR), remove, driver_override,
current/max_link_speed/width, and the driver and iommu_group links. /sys/bus/pci/drivers/<drv>/{bind,unbind} and
/sys/bus/pci/rescan act on the emulated bus.

Emulator deviation: an MMIO BAR (registers) cannot be mmapped, because a CPU mapping cannot call a Python handler.
mmap of its resourceN fails with ENODEV and a message; instead the node answers pread/pwrite of exactly 4 bytes at a
4-aligned offset (Linux allows read/write on resourceN only for I/O-port BARs, pci_resource_io). Memory BARs map the
memfd for real, and refuse pread/pwrite with EIO as Linux does (no read/write method on a memory resource file).
"""
from __future__ import annotations

import ctypes
import errno
import mmap as _mmap
import posixpath
import weakref
from dataclasses import dataclass, field
from typing import Callable, Optional

from autogen import pci_regs as R
from drivers.system import OSCallError, PAGE_SIZE, libc
from emu.pci.function import EXP_POS, SPEED_GTS, MemoryBacking, PCIFunction
from emu.system import EmulatedSystem, NodeHandler

PCI_NUM_RESOURCES = 13  # PCI_BRIDGE_RESOURCES with SR-IOV: 6 BARs, the ROM, 6 VF BARs (include/linux/pci.h)
VFIO_PCI = "vfio-pci"
_libc = libc()


def pci_speed_string(code: int) -> str:
    """As drivers/pci/probe.c pci_speed_string names a link speed code ('Unknown' for anything else)."""
    gts = SPEED_GTS.get(code)
    return "Unknown" if gts is None else f"{gts:.1f} GT/s PCIe"


def _parse_ulong(data: bytes, what: str) -> int:
    """kstrtoul(buf, 0, ...): decimal, 0x hex or 0 octal, one trailing newline allowed; EINVAL otherwise."""
    text = data.decode(errors="replace").strip()
    try:
        return int(text, 0) if not (len(text) > 1 and text[0] == "0" and text[1].isdigit()) else int(text, 8)
    except ValueError:
        raise OSCallError(errno.EINVAL, f"{what}: {text!r} is not a number") from None


@dataclass
class SysfsDevice:
    """The kernel's side of one installed function: its bus address, bound driver, enable count and group."""
    bus: "PCIBus"
    function: PCIFunction
    bdf: str
    driver: Optional[str] = None
    iommu_group: Optional[int] = None
    enable_cnt: int = 0
    driver_override: str = ""
    present: bool = True
    paths: list[str] = field(default_factory=list)

    @property
    def path(self) -> str:
        return f"/sys/bus/pci/devices/{self.bdf}"


class PCIBus:
    """The emulated PCI bus of one EmulatedSystem: devices by BDF, drivers and their ids, IOMMU groups, and hooks
    for the VFIO layer (bind/unbind of vfio-pci creates and removes /dev/vfio/<group>)."""

    def __init__(self, system: EmulatedSystem):
        self.system = system
        self.devices: dict[str, SysfsDevice] = {}
        self.drivers: dict[str, set[tuple[int, int]]] = {}
        self.on_bind: list[Callable[[SysfsDevice], None]] = []
        self.on_unbind: list[Callable[[SysfsDevice], None]] = []
        self._next_addr = 0x80_0000_0000  # where the emulated firmware places 64-bit BARs (above 512 GiB)
        self._next_addr32 = 0xC000_0000  # and 32-bit ones: below 4 GiB, which is all their register holds
        system.add_attribute("/sys/bus/pci/rescan", store=self._rescan)

    def group_devices(self, group: int) -> list[SysfsDevice]:
        return [d for d in self.devices.values() if d.present and d.iommu_group == group]

    def register_driver(self, name: str, ids: set[tuple[int, int]] | None = None) -> None:
        """A driver on the bus (its directory, bind/unbind/new_id) claiming `ids` (vendor, device)."""
        if name in self.drivers:
            self.drivers[name] |= ids or set()
            return
        self.drivers[name] = set(ids or set())
        base = f"/sys/bus/pci/drivers/{name}"
        self.system.add_attribute(f"{base}/bind", store=lambda d, n=name: self._bind_store(n, d))
        self.system.add_attribute(f"{base}/unbind", store=lambda d, n=name: self._unbind_store(n, d))
        self.system.add_attribute(f"{base}/new_id", store=lambda d, n=name: self._new_id_store(n, d))

    def assign_address(self, size: int, is_64bit: bool = True) -> int:
        """A bus address for a BAR of `size` bytes, naturally aligned (pci_assign_unassigned_bus_resources); a 32-bit
        BAR gets one below 4 GiB."""
        if not is_64bit:
            addr = (self._next_addr32 + size - 1) & ~(size - 1)
            if addr + size > 1 << 32:
                raise ValueError(f"no room below 4 GiB for a 32-bit BAR of {size:#x} bytes")
            self._next_addr32 = addr + size
            return addr
        addr = (self._next_addr + size - 1) & ~(size - 1)
        self._next_addr = addr + size
        return addr

    def _matches(self, name: str, dev: SysfsDevice) -> bool:
        # drivers/pci/pci-driver.c pci_match_device: driver_override, when set, is the only driver that matches.
        if dev.driver_override:
            return dev.driver_override == name
        return (dev.function.vendor, dev.function.device) in self.drivers[name]

    def attach(self, dev: SysfsDevice, name: str) -> None:
        dev.driver = name
        self.system.add_link(f"{dev.path}/driver", f"../../../../bus/pci/drivers/{name}")
        self.system.add_link(f"/sys/bus/pci/drivers/{name}/{dev.bdf}", f"../../../../bus/pci/devices/{dev.bdf}")
        for hook in self.on_bind:
            hook(dev)

    def detach(self, dev: SysfsDevice) -> None:
        name, dev.driver = dev.driver, None
        self.system.links.pop(posixpath.normpath(f"{dev.path}/driver"), None)
        self.system.links.pop(f"/sys/bus/pci/drivers/{name}/{dev.bdf}", None)
        if name is not None:
            for hook in self.on_unbind:
                hook(dev)

    def _find(self, data: bytes) -> Optional[SysfsDevice]:
        dev = self.devices.get(data.decode(errors="replace").strip())
        return dev if dev is not None and dev.present else None

    def _bind_store(self, name: str, data: bytes) -> None:
        # drivers/base/bus.c bind_store: -ENODEV unless the device exists and the driver matches; -EBUSY if bound.
        dev = self._find(data)
        if dev is None or not self._matches(name, dev):
            raise OSCallError(errno.ENODEV, f"bind to {name}: no such device {data.decode(errors='replace').strip()!r}"
                                            " or the driver does not match it (set driver_override or new_id)")
        if dev.driver is not None:
            raise OSCallError(errno.EBUSY, f"bind {dev.bdf} to {name}: it is bound to {dev.driver}; unbind it first")
        self.attach(dev, name)

    def _unbind_store(self, name: str, data: bytes) -> None:
        # drivers/base/bus.c unbind_store: -ENODEV unless the device is bound to this very driver.
        dev = self._find(data)
        if dev is None or dev.driver != name:
            raise OSCallError(errno.ENODEV, f"unbind from {name}: {data.decode(errors='replace').strip()!r} is not "
                                            "bound to it")
        self.detach(dev)

    def _new_id_store(self, name: str, data: bytes) -> None:
        # drivers/pci/pci-driver.c new_id_store: "vendor device" in hex; binds matching unbound devices at once.
        try:
            vendor, device = (int(x, 16) for x in data.decode().split()[:2])
        except ValueError:
            raise OSCallError(errno.EINVAL, f"new_id for {name}: expected 'vendor device' in hex") from None
        self.drivers[name].add((vendor, device))
        for dev in list(self.devices.values()):
            if dev.present and dev.driver is None and self._matches(name, dev):
                self.attach(dev, name)

    def _rescan(self, data: bytes) -> None:
        if _parse_ulong(data, "rescan"):
            for dev in self.devices.values():
                if not dev.present:
                    _create_files(dev)


_BUSES: "weakref.WeakKeyDictionary[EmulatedSystem, PCIBus]" = weakref.WeakKeyDictionary()


def pci_bus(system: EmulatedSystem) -> PCIBus:
    """The emulated PCI bus of `system` (made on first use)."""
    bus = _BUSES.get(system)
    if bus is None:
        bus = _BUSES[system] = PCIBus(system)
    return bus


def install_pci_function(system: EmulatedSystem, function: PCIFunction, bdf: str, driver: str | None = None,
                         iommu_group: int | None = None) -> SysfsDevice:
    """Put `function` on the emulated bus at `bdf` ("0000:03:00.0"): assign its BARs, create its sysfs files, bind
    it to `driver` (a driver name; registered on the bus claiming this function's IDs) and place it in `iommu_group`
    (a /sys/kernel/iommu_groups/<n> entry and the iommu_group link; VFIO needs one)."""
    bus = pci_bus(system)
    if bdf in bus.devices:
        raise ValueError(f"{bdf} is already on the emulated bus")
    dev = SysfsDevice(bus, function, bdf, iommu_group=iommu_group)
    bus.devices[bdf] = dev
    for index in function.bar_indices:  # the platform firmware assigns addresses at boot
        _assign_bar(dev, index)
    _create_files(dev)
    if driver is not None:
        bus.register_driver(driver, {(function.vendor, function.device)})
        bus.attach(dev, driver)
    return dev


def _assign_bar(dev: SysfsDevice, index: int) -> None:
    f = dev.function
    addr = dev.bus.assign_address(f.bar_size(index), f.bar_spec(index).is_64bit)
    off = R.PCI_BASE_ADDRESS_0 + 4 * index
    cmd = f.config_read(R.PCI_COMMAND, 2)
    f.config_write(off, addr & 0xFFFFFFFF)
    if f.bar_spec(index).is_64bit:
        f.config_write(off + 4, addr >> 32)
    f.config_write(R.PCI_COMMAND, cmd, 2)


def _create_files(dev: SysfsDevice) -> None:
    s, f, p = dev.bus.system, dev.function, dev.path
    dev.present = True
    files = {"vendor": f"0x{f.vendor:04x}\n", "device": f"0x{f.device:04x}\n", "class": f"0x{f.class_code:06x}\n",
             "subsystem_vendor": f"0x{f.subsystem_vendor:04x}\n", "subsystem_device": f"0x{f.subsystem_device:04x}\n",
             "revision": f"0x{f.revision:02x}\n"}
    for name, text in files.items():
        s.add_file(f"{p}/{name}", text)
    attrs: dict[str, tuple] = {
        "config": (lambda: f.config_read_bytes(0, 4096), lambda d: f.config_write_bytes(0, d)),
        "resource": (lambda: _resource_table(f), None),
        "enable": (lambda: f"{dev.enable_cnt}\n".encode(), lambda d: _enable_store(dev, d)),
        "remove": (None, lambda d: _remove_store(dev, d)),
        "driver_override": (lambda: f"{dev.driver_override or '(null)'}\n".encode(),
                            lambda d: setattr(dev, "driver_override", d.decode().strip())),
        "current_link_speed": (lambda: _link(f, "speed"), None),
        "current_link_width": (lambda: _link(f, "width"), None),
        "max_link_speed": (lambda: _link(f, "max_speed"), None),
        "max_link_width": (lambda: _link(f, "max_width"), None),
    }
    if f.flr_supported:  # pci_dev_reset_attr_is_visible: only when a reset method exists
        attrs["reset"] = (None, lambda d: _reset_store(dev, d))
    for index in f.bar_indices:
        if f.resizable_sizes(index):  # resource_resize_is_visible
            attrs[f"resource{index}_resize"] = (lambda i=index: f"{f.resizable_sizes(i):016x}\n".encode(),
                                                lambda d, i=index: _resize_store(dev, i, d))
    for name, (show, store) in attrs.items():
        s.add_attribute(f"{p}/{name}", show, store)
    s.add_node(f"{p}/config", lambda flags: ConfigNode(f))
    for index in f.bar_indices:
        s.add_node(f"{p}/resource{index}", lambda flags, i=index: ResourceNode(dev, i))
        if f.bar_spec(index).prefetchable:  # pci_create_resource_files: a _wc file for prefetchable BARs
            s.add_node(f"{p}/resource{index}_wc", lambda flags, i=index: ResourceNode(dev, i))
    if dev.iommu_group is not None:
        g = dev.iommu_group
        s.add_link(f"{p}/iommu_group", f"../../../../kernel/iommu_groups/{g}")
        s.add_link(f"/sys/kernel/iommu_groups/{g}/devices/{dev.bdf}", f"../../../../bus/pci/devices/{dev.bdf}")


def _resource_table(f: PCIFunction) -> bytes:
    # pci-sysfs.c resource_show: "start end flags" for each resource; unused ones (and a 64-bit BAR's upper slot)
    # are all zeros.
    lines = []
    for i in range(PCI_NUM_RESOURCES):
        if i in f.bar_indices:
            start = f.bar_address(i)
            end = start + f.bar_size(i) - 1
            lines.append(f"0x{start:016x} 0x{end:016x} 0x{f.resource_flags(i):016x}\n")
        else:
            lines.append(f"0x{0:016x} 0x{0:016x} 0x{0:016x}\n")
    return "".join(lines).encode()


def _link(f: PCIFunction, what: str) -> bytes:
    # pci-sysfs.c current_link_speed/width read LNKSTA live; max_link_speed/width read LNKCAP2/LNKCAP (pcie_get_*_cap)
    if what == "speed":
        return f"{pci_speed_string(f.config_read(EXP_POS + R.PCI_EXP_LNKSTA, 2) & R.PCI_EXP_LNKSTA_CLS)}\n".encode()
    if what == "width":
        return f"{(f.config_read(EXP_POS + R.PCI_EXP_LNKSTA, 2) & R.PCI_EXP_LNKSTA_NLW) >> 4}\n".encode()
    lnkcap = f.config_read(EXP_POS + R.PCI_EXP_LNKCAP)
    if what == "max_width":
        return f"{(lnkcap & R.PCI_EXP_LNKCAP_MLW) >> 4}\n".encode()
    lnkcap2 = f.config_read(EXP_POS + R.PCI_EXP_LNKCAP2)
    code = (lnkcap2 & 0xFE).bit_length() - 1 if lnkcap2 & 0xFE else lnkcap & R.PCI_EXP_LNKCAP_SLS
    return f"{pci_speed_string(code)}\n".encode()


def _enable_store(dev: SysfsDevice, data: bytes) -> None:
    # pci-sysfs.c enable_store: -EBUSY while a driver is bound; 0 on a disabled device is -EIO.
    val = _parse_ulong(data, f"{dev.path}/enable")
    if dev.driver is not None:
        raise OSCallError(errno.EBUSY, f"{dev.path}/enable: {dev.bdf} is bound to {dev.driver}; unbind it first")
    f = dev.function
    if val:
        if dev.enable_cnt == 0:  # pci_enable_device: turn on decoding of the resources the device has
            f.config_write(R.PCI_COMMAND, f.config_read(R.PCI_COMMAND, 2) | R.PCI_COMMAND_MEMORY, 2)
        dev.enable_cnt += 1
    elif dev.enable_cnt:
        dev.enable_cnt -= 1
        if dev.enable_cnt == 0:  # do_pci_disable_device clears bus mastering only
            f.config_write(R.PCI_COMMAND, f.config_read(R.PCI_COMMAND, 2) & ~R.PCI_COMMAND_MASTER, 2)
    else:
        raise OSCallError(errno.EIO, f"{dev.path}/enable: the device is not enabled")


def reset_function(f: PCIFunction) -> None:
    """pci_reset_function: save state, disable (command = INTx disable only), FLR, restore (drivers/pci/pci.c)."""
    saved = f.save_state()
    f.config_write(R.PCI_COMMAND, R.PCI_COMMAND_INTX_DISABLE, 2)
    f.flr()
    f.restore_state(saved)


def _reset_store(dev: SysfsDevice, data: bytes) -> None:
    # pci-sysfs.c reset_store: only "1" is accepted.
    if _parse_ulong(data, f"{dev.path}/reset") != 1:
        raise OSCallError(errno.EINVAL, f"{dev.path}/reset: write 1 to reset the function")
    reset_function(dev.function)


def _remove_store(dev: SysfsDevice, data: bytes) -> None:
    # pci-sysfs.c remove_store: a nonzero value stops the driver and removes the device (rescan brings it back).
    if not _parse_ulong(data, f"{dev.path}/remove"):
        return
    if dev.driver is not None:
        dev.bus.detach(dev)
    s, prefix = dev.bus.system, dev.path + "/"
    for table in (s.files, s.links, s.nodes, s.attributes):
        for k in [k for k in table if k.startswith(prefix)]:
            del table[k]
    if dev.iommu_group is not None:
        s.links.pop(f"/sys/kernel/iommu_groups/{dev.iommu_group}/devices/{dev.bdf}", None)
    dev.present = False


def _resize_store(dev: SysfsDevice, index: int, data: bytes) -> None:
    # pci-sysfs.c __resource_resize_store: -EBUSY while a driver is bound; memory decoding off around the resize;
    # drivers/pci/rebar.c pci_resize_resource: -EINVAL for a size the capability does not advertise.
    size = _parse_ulong(data, f"{dev.path}/resource{index}_resize")
    if dev.driver is not None:
        raise OSCallError(errno.EBUSY, f"resize BAR {index} of {dev.bdf}: it is bound to {dev.driver}; unbind it "
                                       f"first (echo {dev.bdf} > /sys/bus/pci/drivers/{dev.driver}/unbind)")
    f = dev.function
    if not f.resizable_sizes(index) >> size & 1 or size > 31:
        raise OSCallError(errno.EINVAL, f"resize BAR {index} of {dev.bdf}: size index {size} ({(1 << 20 << size):#x} "
                                        f"bytes) is not in the supported bitmap {f.resizable_sizes(index):#x}")
    cmd = f.config_read(R.PCI_COMMAND, 2)
    f.config_write(R.PCI_COMMAND, cmd & ~R.PCI_COMMAND_MEMORY, 2)
    entry = next(pos for cap_id, pos, ext in f.capabilities() if ext and cap_id == R.PCI_EXT_CAP_ID_REBAR)
    for i in range(8):  # pci_rebar_find_pos: walk the entries for this BAR's control register
        ctrl = f.config_read(entry + 8 * i + R.PCI_REBAR_CTRL)
        if ctrl & R.PCI_REBAR_CTRL_BAR_IDX == index:
            f.config_write(entry + 8 * i + R.PCI_REBAR_CTRL,
                           (ctrl & ~R.PCI_REBAR_CTRL_BAR_SIZE) | size << R.PCI_REBAR_CTRL_BAR_SHIFT)
            break
    _assign_bar(dev, index)
    f.config_write(R.PCI_COMMAND, cmd, 2)


class ConfigNode(NodeHandler):
    """An open /sys/bus/pci/devices/<bdf>/config: pread/pwrite at offsets (pci_read_config/pci_write_config; reads
    past 4 KiB return nothing, writes past it are dropped)."""

    def __init__(self, function: PCIFunction):
        self.function = function

    def pread(self, size: int, offset: int) -> bytes:
        size = max(0, min(size, 4096 - offset))
        return self.function.config_read_bytes(offset, size) if size else b""

    def pwrite(self, data: bytes, offset: int) -> int:
        n = max(0, min(len(data), 4096 - offset))
        if n:
            self.function.config_write_bytes(offset, data[:n])
        return n


class ResourceNode(NodeHandler):
    """An open resourceN: memory BARs mmap their memfd; MMIO BARs answer 4-byte pread/pwrite (see the module doc)."""

    def __init__(self, dev: SysfsDevice, index: int):
        self.dev, self.index = dev, index
        self.maps: dict[int, int] = {}

    @property
    def _f(self) -> PCIFunction:
        return self.dev.function

    def mmap(self, length: int, prot: int, flags: int, offset: int, addr: int) -> int:
        f, i = self._f, self.index
        backing = f.bar_spec(i).backing
        if f.removed:
            raise OSCallError(errno.ENODEV, f"mmap of {self.dev.path}/resource{i}: the device was removed")
        if not isinstance(backing, MemoryBacking):
            raise OSCallError(errno.ENODEV, f"mmap of {self.dev.path}/resource{i}: BAR {i} is register space (MMIO) in "
                                            "the emulator and cannot be mapped; use 4-byte pread/pwrite on the file")
        # pci_mmap_fits: the page-aligned range must lie inside the BAR
        if offset % PAGE_SIZE or length <= 0 or offset + length > (f.bar_size(i) + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE:
            raise OSCallError(errno.EINVAL, f"mmap of {self.dev.path}/resource{i}: {length:#x} bytes at {offset:#x} do "
                                            f"not fit the {f.bar_size(i):#x}-byte BAR")
        ret = _libc.mmap(addr or None, length, prot, flags | _mmap.MAP_SHARED, backing.fd, backing.offset + offset)
        if ret in (None, ctypes.c_void_p(-1).value):
            raise OSCallError(ctypes.get_errno(), f"mapping {self.dev.path}/resource{i} failed")
        self.maps[ret] = length
        f.counts["bar_maps"] += 1
        return ret

    def munmap(self, addr: int, length: int) -> None:
        if self.maps.pop(addr, None) is not None:
            _libc.munmap(addr, length)

    def _mmio_check(self, size: int, offset: int) -> None:
        f, i = self._f, self.index
        if isinstance(f.bar_spec(i).backing, MemoryBacking):
            raise OSCallError(errno.EIO, f"{self.dev.path}/resource{i} is a memory BAR: mmap it (Linux has no "
                                         "read/write on memory resource files)")
        if size != 4 or offset & 3 or not 0 <= offset <= f.bar_size(i) - 4:
            raise OSCallError(errno.EINVAL, f"{self.dev.path}/resource{i}: register access must be 4 bytes at a "
                                            f"4-aligned offset inside the BAR (got {size} at {offset:#x})")

    def pread(self, size: int, offset: int) -> bytes:
        self._mmio_check(size, offset)
        return self._f.bar_read32(self.index, offset).to_bytes(4, "little")

    def pwrite(self, data: bytes, offset: int) -> int:
        self._mmio_check(len(data), offset)
        self._f.bar_write32(self.index, offset, int.from_bytes(data, "little"))
        return 4
