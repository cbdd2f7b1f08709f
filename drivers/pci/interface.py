"""The PCI device interface the AM driver (and later the USB bridge) stands on: config space, BARs, DMA memory, reset.

Backends implement `PCIDevice` (sysfs, VFIO, the ASM2464 bridge). Nothing here assumes a local bus: every access
is a method call, and callers that can batch (a register sequence, a run of config reads) use the batch methods, so
a backend whose accesses are transfers (USB) pays one round trip per batch instead of one per word.

Config-space layout facts (header, capability list, PCI Express capability, extended capabilities, the Resizable
BAR capability) are the PCI Local Bus and PCI Express Base specifications', as linux/pci_regs.h names them
(autogen/pci_regs.py).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from hcq.errors import HCQError


class PCIError(HCQError):
    """A PCI access or setup step failed; the message names the device (BDF), the step and what to do."""


@dataclass(frozen=True)
class BarInfo:
    """One BAR as the device reports it: index, bus address, size in bytes, 64-bit, prefetchable, I/O space."""
    index: int
    address: int
    size: int
    is_64bit: bool = False
    prefetchable: bool = False
    io: bool = False


@dataclass(frozen=True)
class Capability:
    """A capability in config space: its id, its offset, and whether it is an extended (PCIe, >= 0x100) one."""
    id: int
    offset: int
    extended: bool = False


@dataclass(frozen=True)
class LinkStatus:
    """The PCIe link as the Link Capabilities/Status registers say: current and maximum speed (GT/s) and width."""
    speed_gts: float
    width: int
    max_speed_gts: float
    max_width: int


class BarMapping(ABC):
    """A mapped BAR (or a window of one). Offsets are bytes from the start of the BAR.

    `host_addr` is the CPU address of the mapping when the backend maps it into this process (sysfs, VFIO), else None
    (a bridge reaches it by transfers only); callers that need speed use it when present and the methods otherwise."""

    index: int
    size: int
    host_addr: Optional[int] = None

    @abstractmethod
    def read32(self, offset: int) -> int: ...

    @abstractmethod
    def write32(self, offset: int, value: int) -> None: ...

    def read_many(self, offsets: Sequence[int]) -> list[int]:
        """32-bit reads at each offset, in order (one round trip on a batching backend)."""
        return [self.read32(o) for o in offsets]

    def write_many(self, writes: Iterable[tuple[int, int]]) -> None:
        """32-bit (offset, value) writes, in order (one round trip on a batching backend)."""
        for offset, value in writes:
            self.write32(offset, value)

    @abstractmethod
    def read(self, offset: int, size: int) -> bytes:
        """Bytes from the BAR (VRAM through BAR0, a discovery table)."""

    @abstractmethod
    def write(self, offset: int, data: bytes) -> None: ...

    def close(self) -> None:
        """Unmap (the default holds nothing to release)."""


@dataclass
class DMABuffer:
    """System memory the device can reach by DMA: the CPU address of its pages and the bus address of each page
    (`page_size` bytes), in order. Bus addresses are what the device's page tables and rings must hold."""
    host_addr: int
    size: int
    bus_pages: list[int]
    page_size: int = 4096

    def bus_address(self, offset: int) -> int:
        """The bus address of byte `offset` of the buffer."""
        if not 0 <= offset < self.size:
            raise PCIError(f"offset {offset:#x} is outside the {self.size:#x}-byte DMA buffer")
        return self.bus_pages[offset // self.page_size] + offset % self.page_size


class PCIDevice(ABC):
    """One PCI function reached through some backend. `bdf` is its address (domain:bus:device.function)."""

    bdf: str

    # --- config space ---
    @abstractmethod
    def config_read(self, offset: int, size: int = 4) -> int:
        """A 1-, 2- or 4-byte little-endian config-space read."""

    @abstractmethod
    def config_write(self, offset: int, value: int, size: int = 4) -> None:
        """A 1-, 2- or 4-byte config-space write."""

    def config_read_many(self, reads: Sequence[tuple[int, int]]) -> list[int]:
        """(offset, size) reads in order (one round trip on a batching backend)."""
        return [self.config_read(o, n) for o, n in reads]

    @abstractmethod
    def capabilities(self) -> list[Capability]:
        """Every capability: the classic list from PCI_CAPABILITY_LIST, then the extended list from 0x100."""

    def find_capability(self, cap_id: int, extended: bool = False) -> Optional[Capability]:
        return next((c for c in self.capabilities() if c.id == cap_id and c.extended == extended), None)

    @abstractmethod
    def link_status(self) -> Optional[LinkStatus]:
        """The PCIe link, or None for a device without a PCI Express capability."""

    # --- BARs ---
    @abstractmethod
    def bars(self) -> list[BarInfo]:
        """The implemented BARs (a 64-bit BAR takes two slots and is listed once, at its first index)."""

    @abstractmethod
    def map_bar(self, index: int, offset: int = 0, size: Optional[int] = None) -> BarMapping:
        """Map BAR `index` (or a window of it) for access."""

    @abstractmethod
    def resizable_bar_sizes(self, index: int) -> list[int]:
        """The sizes (bytes) the Resizable BAR capability allows for BAR `index`; [] without the capability."""

    @abstractmethod
    def resize_bar(self, index: int, size: int) -> None:
        """Resize BAR `index` to `size` bytes when the platform allows; PCIError saying why not otherwise."""

    # --- DMA, bus mastering, reset ---
    @abstractmethod
    def dma_alloc(self, size: int) -> DMABuffer:
        """Page-aligned system memory the device may DMA to, pinned, with its bus addresses."""

    @abstractmethod
    def dma_free(self, buf: DMABuffer) -> None: ...

    @abstractmethod
    def enable(self) -> None:
        """Enable the function (memory decoding) and bus mastering."""

    @abstractmethod
    def reset(self) -> None:
        """Reset the function (FLR or the backend's equivalent); BAR mappings survive, device state does not."""

    def close(self) -> None:
        """Release what the backend holds (mappings, fds, DMA memory)."""
