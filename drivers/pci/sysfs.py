"""The Linux sysfs PCI backend: config space, BARs, resizing, enable and reset through /sys/bus/pci/devices/<bdf>,
DMA memory from locked anonymous pages with physical addresses from /proc/self/pagemap.

Every access goes through the OS seam (drivers/system.py). Positioned reads and writes (config space, an I/O BAR, a
VFIO region) need `System.pread(fd, size, offset)` / `System.pwrite(fd, data, offset)`; a seam without them gets a
PCIError that says so. File semantics are the kernel's: drivers/pci/pci-sysfs.c (config, resource, resourceN,
resourceN_resize, enable, reset), drivers/pci/rebar.c (resize rules).
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
import posixpath
from typing import Callable, Optional

from autogen import pci_regs as R
from drivers.pci import config as C
from drivers.pci.interface import BarInfo, BarMapping, Capability, DMABuffer, LinkStatus, PCIDevice, PCIError
from drivers.system import MAP_ANONYMOUS, MAP_SHARED, PAGE_SIZE, PROT_READ, PROT_WRITE, System

log = logging.getLogger(__name__)

# asm-generic/mman.h MAP_LOCKED, mman-common.h MAP_POPULATE: lock the pages and fault them in at mmap time, so each
# has a physical page before pagemap is read (the seam has no mlock; MAP_LOCKED is mlock's effect at mmap).
MAP_LOCKED = 0x2000
MAP_POPULATE = 0x8000
SYSFS_PCI = "/sys/bus/pci/devices"
SYSFS_DRIVERS = "/sys/bus/pci/drivers"
ENOTSUPP = 524  # the kernel-internal errno pci_resize_resource returns without ReBAR or with a preserved config


def pread(system: System, fd: int, size: int, offset: int, what: str) -> bytes:
    """A positioned read through the seam; a PCIError naming `what` when the seam has none or the read fails."""
    fn = getattr(system, "pread", None)
    if fn is None:
        raise PCIError(f"{what}: the OS seam ({type(system).__name__}) has no pread(fd, size, offset); positioned "
                       "reads of config space and device regions need it (drivers/system.py)")
    try:
        return fn(fd, size, offset)
    except OSError as e:
        raise PCIError(f"{what}: read of {size} bytes at {offset:#x} failed: {e}") from e


def pwrite(system: System, fd: int, data: bytes, offset: int, what: str) -> None:
    """A positioned write through the seam; a PCIError naming `what` when the seam has none or the write fails."""
    fn = getattr(system, "pwrite", None)
    if fn is None:
        raise PCIError(f"{what}: the OS seam ({type(system).__name__}) has no pwrite(fd, data, offset); positioned "
                       "writes of config space and device regions need it (drivers/system.py)")
    try:
        n = fn(fd, bytes(data), offset)
    except OSError as e:
        raise PCIError(f"{what}: write of {len(data)} bytes at {offset:#x} failed: {e}") from e
    if n is not None and n != len(data):
        raise PCIError(f"{what}: short write at {offset:#x}: {n} of {len(data)} bytes")


def _check_window(index: int, bar_size: int, offset: int, size: int) -> None:
    if offset < 0 or size <= 0 or offset + size > bar_size:
        raise PCIError(f"BAR {index}: window {offset:#x}+{size:#x} is outside the BAR's {bar_size:#x} bytes")


class HostBarMapping(BarMapping):
    """A BAR window mapped into this process: accesses are CPU loads and stores at `host_addr`."""

    def __init__(self, index: int, size: int, host_addr: int, unmap: Optional[Callable[[], None]] = None):
        self.index, self.size, self.host_addr, self._unmap = index, size, host_addr, unmap
        self.closed = False

    def _at(self, offset: int, n: int) -> int:
        if self.closed:
            raise PCIError(f"BAR {self.index} mapping is closed (unmapped, or invalidated by a BAR resize); map it again")
        if offset < 0 or offset + n > self.size or (n == 4 and offset & 3):
            raise PCIError(f"BAR {self.index}: access of {n} bytes at {offset:#x} is outside the {self.size:#x}-byte "
                           "mapping or misaligned")
        return self.host_addr + offset

    def read32(self, offset: int) -> int:
        return ctypes.c_uint32.from_address(self._at(offset, 4)).value  # one aligned 32-bit load

    def write32(self, offset: int, value: int) -> None:
        ctypes.c_uint32.from_address(self._at(offset, 4)).value = value & 0xFFFFFFFF

    def read(self, offset: int, size: int) -> bytes:
        return ctypes.string_at(self._at(offset, size), size)

    def write(self, offset: int, data: bytes) -> None:
        ctypes.memmove(self._at(offset, len(data)), bytes(data), len(data))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._unmap is not None:
                self._unmap()


class FileBarMapping(BarMapping):
    """A BAR window reached by positioned reads and writes of a file (an I/O BAR's resourceN, a VFIO region that
    cannot be mapped, an emulated register BAR): no host address, every access is a call."""

    def __init__(self, system: System, fd: int, index: int, size: int, base: int, what: str, owns_fd: bool = True):
        self.system, self.fd, self.index, self.size, self.base, self.what = system, fd, index, size, base, what
        self.host_addr = None
        self._owns_fd, self.closed = owns_fd, False

    def _off(self, offset: int, n: int) -> int:
        if self.closed:
            raise PCIError(f"{self.what}: mapping is closed (unmapped, or invalidated by a BAR resize); map it again")
        if offset < 0 or offset + n > self.size:
            raise PCIError(f"{self.what}: access of {n} bytes at {offset:#x} is outside the {self.size:#x}-byte window")
        return self.base + offset

    def read32(self, offset: int) -> int:
        data = pread(self.system, self.fd, 4, self._off(offset, 4), self.what)
        if len(data) != 4:
            raise PCIError(f"{self.what}: short read at {offset:#x} ({len(data)} of 4 bytes)")
        return int.from_bytes(data, "little")

    def write32(self, offset: int, value: int) -> None:
        pwrite(self.system, self.fd, (value & 0xFFFFFFFF).to_bytes(4, "little"), self._off(offset, 4), self.what)

    def read(self, offset: int, size: int) -> bytes:
        out = bytearray()
        for o in range(offset, offset + size, 4):  # device regions take naturally aligned dword accesses
            n = min(4, offset + size - o)
            out += pread(self.system, self.fd, n, self._off(o, n), self.what)
        return bytes(out)

    def write(self, offset: int, data: bytes) -> None:
        for o in range(0, len(data), 4):
            pwrite(self.system, self.fd, data[o:o + 4], self._off(offset + o, len(data[o:o + 4])), self.what)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._owns_fd:
                self.system.close(self.fd)


class ConfigBackedDevice(PCIDevice):
    """What both Linux backends share: decoding capabilities, link and Resizable BAR from a config snapshot."""

    bdf: str
    _cfg_size = R.PCI_CFG_SPACE_EXP_SIZE

    def config_snapshot(self) -> C.ConfigSpace:
        """Config space as one read (as much as the backend may read: 64 bytes for sysfs without root)."""
        return C.read_snapshot(self.config_read_many, self._cfg_size, self.bdf)

    def capabilities(self) -> list[Capability]:
        cfg = self.config_snapshot()
        cfg.check_present()
        return C.capabilities(cfg)

    def link_status(self) -> Optional[LinkStatus]:
        cfg = self.config_snapshot()
        cfg.check_present()
        return C.link_status(cfg)

    def rebar(self) -> dict[int, C.RebarEntry]:
        """The Resizable BAR capability's entries by BAR index ({} without the capability)."""
        cfg = self.config_snapshot()
        cfg.check_present()
        return C.rebar_entries(cfg)

    def resizable_bar_sizes(self, index: int) -> list[int]:
        entry = self.rebar().get(index)
        return entry.sizes if entry else []

    def set_command(self, set_bits: int, clear_bits: int = 0) -> int:
        """Read-modify-write the COMMAND register; returns the value written."""
        cmd = self.config_read(R.PCI_COMMAND, 2)
        new = (cmd | set_bits) & ~clear_bits & 0xFFFF
        if new != cmd:
            self.config_write(R.PCI_COMMAND, new, 2)
        return new


class SysfsPCIDevice(ConfigBackedDevice):
    """A PCI function driven through Linux sysfs (root needed for config writes, enable, resize and physical
    addresses). With `unbind=True` a bound kernel driver is unbound and `rebind_command` says how to bind it back."""

    def __init__(self, bdf: str, system: System, unbind: bool = False):
        self.bdf, self.system = bdf, system
        self.path = f"{SYSFS_PCI}/{bdf}"
        self.unbound_driver: Optional[str] = None
        self._maps: list[BarMapping] = []
        self._dma: dict[int, DMABuffer] = {}
        self._cfg_fd: Optional[int] = None
        self._dma_checked = False
        if not system.exists(self.path):
            raise PCIError(f"{bdf}: no such PCI device ({self.path} is missing); `lspci -D` lists the addresses "
                           "(domain:bus:device.function)")
        driver = self.driver()
        if driver is not None:
            if not unbind:
                raise PCIError(f"{bdf} is bound to the kernel driver {driver!r}; unbind it first with "
                               f"`echo {bdf} | sudo tee {SYSFS_DRIVERS}/{driver}/unbind` (bind it back later with "
                               f"`echo {bdf} | sudo tee {SYSFS_DRIVERS}/{driver}/bind`), or pass unbind=True")
            try:
                system.write_file(f"{SYSFS_DRIVERS}/{driver}/unbind", bdf.encode())
            except OSError as e:
                raise PCIError(f"{bdf}: unbinding the kernel driver {driver!r} failed: {e}; this needs root "
                               f"(`echo {bdf} | sudo tee {SYSFS_DRIVERS}/{driver}/unbind`)") from e
            self.unbound_driver = driver
            log.info("%s: unbound the kernel driver %s; %s", bdf, driver, self.rebind_command)
        try:
            self._cfg_fd = system.open(f"{self.path}/config", os.O_RDWR)
            self._cfg_writable = True
        except OSError:  # config is 0644 root: without root it opens read-only and shows only the first 64 bytes
            self._cfg_fd = system.open(f"{self.path}/config", os.O_RDONLY)
            self._cfg_writable = False

    # --- identity and driver ---
    def driver(self) -> Optional[str]:
        """The kernel driver bound to the function now, or None."""
        try:
            return posixpath.basename(self.system.readlink(f"{self.path}/driver"))
        except OSError:
            return None

    @property
    def rebind_command(self) -> Optional[str]:
        """The command that binds back the driver this object unbound (None when it unbound nothing)."""
        if self.unbound_driver is None:
            return None
        return f"echo {self.bdf} | sudo tee {SYSFS_DRIVERS}/{self.unbound_driver}/bind"

    # --- config space ---
    def config_read(self, offset: int, size: int = 4) -> int:
        if size not in (1, 2, 4) or offset < 0 or offset + size > self._cfg_size:
            raise PCIError(f"{self.bdf}: config read of {size} bytes at {offset:#x} is not a 1/2/4-byte access inside "
                           f"{self._cfg_size:#x} bytes")
        data = pread(self.system, self._fd(), size, offset, f"{self.bdf} config")
        if len(data) != size:
            raise PCIError(f"{self.bdf}: config read at {offset:#x} returned {len(data)} of {size} bytes (sysfs shows "
                           "non-root readers only the first 64 bytes; run as root)")
        return int.from_bytes(data, "little")

    def config_write(self, offset: int, value: int, size: int = 4) -> None:
        if size not in (1, 2, 4) or offset < 0 or offset + size > self._cfg_size:
            raise PCIError(f"{self.bdf}: config write of {size} bytes at {offset:#x} is not a 1/2/4-byte access")
        if not self._cfg_writable:
            raise PCIError(f"{self.bdf}: config space is read-only for this process; writing it needs root")
        pwrite(self.system, self._fd(), (value & ((1 << 8 * size) - 1)).to_bytes(size, "little"), offset,
               f"{self.bdf} config")

    def config_snapshot(self) -> C.ConfigSpace:
        # One read of the whole file: the kernel trims it to the device's config size (64 bytes without root).
        return C.ConfigSpace(pread(self.system, self._fd(), self._cfg_size, 0, f"{self.bdf} config"), self.bdf)

    def _fd(self) -> int:
        if self._cfg_fd is None:
            raise PCIError(f"{self.bdf}: the device is closed; open it again")
        return self._cfg_fd

    # --- BARs ---
    def _resources(self) -> list[tuple[int, int, int]]:
        try:
            return C.parse_resource_table(self.system.read_text(f"{self.path}/resource"))
        except OSError as e:
            raise PCIError(f"{self.bdf}: reading {self.path}/resource failed: {e}") from e

    def bars(self) -> list[BarInfo]:
        return C.bars_from_resource_table(self._resources())

    def _bar(self, index: int) -> BarInfo:
        bar = next((b for b in self.bars() if b.index == index), None)
        if bar is None:
            raise PCIError(f"{self.bdf}: BAR {index} is not implemented (implemented: "
                           f"{[b.index for b in self.bars()]})")
        return bar

    def map_bar(self, index: int, offset: int = 0, size: Optional[int] = None) -> BarMapping:
        bar = self._bar(index)
        size = bar.size - offset if size is None else size
        _check_window(index, bar.size, offset, size)
        what = f"{self.bdf} BAR {index}"
        if not bar.io:
            start = offset - offset % PAGE_SIZE  # mmap offsets are page-aligned; the window starts inside
            length = (offset + size - start + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE
            try:
                addr, length = self.system.map_pci_resource(self.bdf, index, length, start)
            except OSError as e:
                if e.errno not in (errno.ENODEV, errno.EINVAL, errno.ENOTSUP):
                    raise PCIError(f"{what}: mapping {self.path}/resource{index} failed: {e} (mapping BARs needs root)") from e
                log.info("%s cannot be mapped (%s); using positioned reads and writes of resource%d", what, e, index)
            else:
                m = HostBarMapping(index, size, addr + offset - start, lambda: self.system.munmap(addr, length))
                self._maps.append(m)
                return m
        try:  # I/O BARs (and BARs the OS refuses to map) take read/write of resourceN (pci-sysfs.c pci_read_resource_io)
            fd = self.system.open(f"{self.path}/resource{index}", os.O_RDWR)
        except OSError as e:
            raise PCIError(f"{what}: opening {self.path}/resource{index} failed: {e} (needs root)") from e
        m = FileBarMapping(self.system, fd, index, size, offset, what)
        self._maps.append(m)
        return m

    def resize_bar(self, index: int, size: int) -> None:
        entry = self.rebar().get(index)
        if entry is None:
            raise PCIError(f"{self.bdf}: BAR {index} is not resizable (no Resizable BAR capability entry for it); "
                           "check that Resizable BAR / Above 4G Decoding are enabled in the firmware setup")
        enc = C.rebar_encoding(size)
        if not entry.sizes_mask >> enc & 1:
            raise PCIError(f"{self.bdf}: BAR {index} cannot be {size >> 20} MB; the device allows "
                           f"{[s >> 20 for s in entry.sizes]} MB")
        if self.bars() and self._bar(index).size == size:
            return
        driver = self.driver()
        if driver is not None:  # resource_resize_store: -EBUSY while a driver is bound
            raise PCIError(f"{self.bdf}: BAR {index} cannot be resized while {driver!r} is bound; unbind it with "
                           f"`echo {self.bdf} | sudo tee {SYSFS_DRIVERS}/{driver}/unbind`")
        for m in [m for m in self._maps if m.index == index]:  # the kernel removes resourceN and may move the BAR
            m.close()
            self._maps.remove(m)
        try:  # the file takes the spec's encoding, log2 of the size in MB (pci-sysfs.c __resource_resize_store)
            self.system.write_file(f"{self.path}/resource{index}_resize", str(enc).encode())
        except OSError as e:
            hint = {errno.EPERM: "resizing needs root (CAP_SYS_ADMIN)",
                    errno.EBUSY: "a driver is bound or the BAR is in use",
                    errno.ENOSPC: "the bridge window above the device has no room: enable Above 4G Decoding and "
                                  "Resizable BAR in the firmware setup, or pass pci=realloc on the kernel command line",
                    ENOTSUPP: "the platform keeps the firmware's BAR assignment (or the device lacks ReBAR)",
                    errno.ENOENT: "the kernel shows no resourceN_resize file for this BAR"}.get(e.errno or 0, "")
            raise PCIError(f"{self.bdf}: resizing BAR {index} to {size >> 20} MB failed: {e}"
                           + (f"; {hint}" if hint else "")) from e
        now = self._bar(index).size
        if now != size:
            raise PCIError(f"{self.bdf}: BAR {index} is {now >> 20} MB after asking for {size >> 20} MB; the platform "
                           "could not place the larger BAR (enable Above 4G Decoding, or pass pci=realloc)")

    # --- DMA memory ---
    def _check_dma_translation(self) -> None:
        """Physical addresses are bus addresses only when no IOMMU translates this device's DMA."""
        if self._dma_checked:
            return
        try:
            group = posixpath.basename(self.system.readlink(f"{self.path}/iommu_group"))
        except OSError:
            group = None  # no IOMMU group: DMA addresses are physical addresses
        if group is not None:
            try:
                kind = self.system.read_text(f"/sys/kernel/iommu_groups/{group}/type")
            except OSError:
                kind = "unknown"
            if kind != "identity":  # a DMA-translated domain maps bus addresses the kernel chose, not physical ones
                raise PCIError(f"{self.bdf}: the IOMMU translates this device's DMA (group {group}, domain type "
                               f"{kind!r}), so physical addresses are not bus addresses; boot with iommu=pt (passthrough) "
                               "or use the VFIO backend (drivers.pci.vfio.VFIOPCIDevice)")
        self._dma_checked = True

    def dma_alloc(self, size: int) -> DMABuffer:
        if size <= 0:
            raise PCIError(f"{self.bdf}: DMA buffer size must be positive, got {size}")
        self._check_dma_translation()
        size = (size + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE
        # MAP_SHARED: a fork never turns these pages copy-on-write (which would move them under the device)
        try:
            addr = self.system.mmap(-1, size, PROT_READ | PROT_WRITE,
                                    MAP_SHARED | MAP_ANONYMOUS | MAP_LOCKED | MAP_POPULATE)
        except OSError as e:
            raise PCIError(f"{self.bdf}: allocating {size:#x} bytes of locked memory failed: {e}; raise the locked "
                           "memory limit (`ulimit -l`) or run as root") from e
        try:
            entries = self.system.pagemap(addr, size // PAGE_SIZE)
            pages = []
            for i, entry in enumerate(entries):
                pfn = entry & ((1 << 55) - 1)  # pagemap.rst: bits 0-54 PFN, zero without CAP_SYS_ADMIN
                if pfn == 0 or not entry >> 63:
                    raise PCIError(f"{self.bdf}: /proc/self/pagemap hides page frame numbers (page {i} of the DMA "
                                   "buffer reads PFN 0): physical addresses need root (CAP_SYS_ADMIN); run as root, "
                                   "or use the VFIO backend (drivers.pci.vfio.VFIOPCIDevice)")
                pages.append(pfn * PAGE_SIZE)
        except BaseException:
            self.system.munmap(addr, size)
            raise
        buf = DMABuffer(addr, size, pages, PAGE_SIZE)
        self._dma[addr] = buf
        return buf

    def dma_free(self, buf: DMABuffer) -> None:
        if self._dma.pop(buf.host_addr, None) is None:
            raise PCIError(f"{self.bdf}: DMA buffer at {buf.host_addr:#x} is not one of this device's (double free?)")
        self.system.munmap(buf.host_addr, buf.size)

    # --- enable, reset ---
    def enable(self) -> None:
        try:
            enabled = int(self.system.read_text(f"{self.path}/enable") or "0") > 0  # enable_show prints enable_cnt
        except OSError:
            enabled = False
        if not enabled:
            try:  # pci-sysfs.c enable_store: pci_enable_device; -EBUSY with a driver bound, -EPERM without root
                self.system.write_file(f"{self.path}/enable", b"1")
            except OSError as e:
                raise PCIError(f"{self.bdf}: enabling the device (writing 1 to {self.path}/enable) failed: {e}; "
                               "it needs root and no bound driver") from e
        self.set_command(R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_MASTER)

    def reset(self) -> None:
        # pci-sysfs.c reset_store: pci_reset_function, which saves and restores config space around the reset
        if not self.system.exists(f"{self.path}/reset"):
            raise PCIError(f"{self.bdf}: the kernel knows no reset method for this function ({self.path}/reset is "
                           "missing); a bus reset of the upstream bridge or a power cycle is what is left")
        try:
            self.system.write_file(f"{self.path}/reset", b"1")
        except OSError as e:
            raise PCIError(f"{self.bdf}: function reset (writing 1 to {self.path}/reset) failed: {e}") from e

    def close(self) -> None:
        for m in self._maps:
            m.close()
        self._maps.clear()
        for buf in list(self._dma.values()):
            self.dma_free(buf)
        if self._cfg_fd is not None:
            self.system.close(self._cfg_fd)
            self._cfg_fd = None
        if self.unbound_driver is not None:
            log.warning("%s was unbound from %s; to give it back: %s", self.bdf, self.unbound_driver, self.rebind_command)
