"""A generic emulated PCI Express function: config space with write masks, capabilities, BARs, FLR, MSI/MSI-X,
DMA through an IOMMU translation, and surprise removal.

Layout and register semantics are the PCI Local Bus 3.0 and PCI Express Base specifications' as linux/pci_regs.h
names them (autogen/pci_regs.py). The model is the hardware only: what the kernel does around it (saving state over
a reset, reassigning BAR addresses) lives in emu/pci/sysfs.py and emu/pci/vfio.py.
"""
from __future__ import annotations

import ctypes
import os
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol, Union

from autogen import pci_regs as R

CFG_SIZE = R.PCI_CFG_SPACE_EXP_SIZE  # 4 KiB: PCI Express extended config space
MIN_REBAR = 1 << 20  # Resizable BAR sizes: bit n of the supported-sizes field is 2^(20+n) bytes (PCIe 7.8.6.2)
IORESOURCE_IO, IORESOURCE_MEM, IORESOURCE_PREFETCH = 0x100, 0x200, 0x2000  # include/linux/ioport.h
IORESOURCE_SIZEALIGN, IORESOURCE_MEM_64 = 0x40000, 0x100000
# Link speed codes of LNKCAP/LNKSTA (PCI_EXP_LNKCAP_SLS_*) by GT/s.
SPEED_CODES = {2.5: 1, 5.0: 2, 8.0: 3, 16.0: 4, 32.0: 5, 64.0: 6}
SPEED_GTS = {v: k for k, v in SPEED_CODES.items()}

# Where the capabilities sit (the offsets AMD GPUs use; any free, dword-aligned offsets would do).
PM_POS, EXP_POS, MSI_POS, MSIX_POS, EXT_POS = 0x50, 0x64, 0xA0, 0xC0, 0x100
EXP_SIZE = 0x3C  # PCI_CAP_EXP_ENDPOINT_SIZEOF_V2
# Command bits a memory-only endpoint implements (PCI 3.0 6.2.2): memory space, bus master, parity, SERR#, INTx off.
COMMAND_WMASK = (R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_MASTER | R.PCI_COMMAND_PARITY | R.PCI_COMMAND_SERR
                 | R.PCI_COMMAND_INTX_DISABLE)
STATUS_W1C = 0xF900  # PCI 3.0 6.2.3: parity/abort/SERR status bits are RW1C
STATUS_INTERRUPT = 0x08  # PCI_STATUS_INTERRUPT: INTx asserted


class PCIFunctionError(Exception):
    """The model was built or driven wrongly (a bad BarSpec, a misaligned config access): a bug in the caller."""


class IOMMUFault(Exception):
    """A DMA the device attempted was refused: no IOMMU mapping covers it, it writes a read-only mapping, or bus
    mastering is off. The GPU model turns it into the device fault it reports."""

    def __init__(self, bus_addr: int, size: int, write: bool, reason: str):
        self.bus_addr, self.size, self.write, self.reason = bus_addr, size, write, reason
        super().__init__(f"IOMMU fault: DMA {'write' if write else 'read'} of {size:#x} bytes at bus address "
                         f"{bus_addr:#x}: {reason}")


class MMIO(Protocol):
    """What an MMIO BAR's backing provides: 32-bit register reads and writes at byte offsets."""

    def read32(self, offset: int) -> int: ...

    def write32(self, offset: int, value: int) -> None: ...


class MMIOHandler:
    """An MMIO BAR backing built from two callbacks (a GPU model's register file)."""

    def __init__(self, read32: Callable[[int], int], write32: Callable[[int, int], None]):
        self._read32, self._write32 = read32, write32

    def read32(self, offset: int) -> int:
        return self._read32(offset)

    def write32(self, offset: int, value: int) -> None:
        self._write32(offset, value)


class MemoryBacking:
    """Memory behind a BAR (VRAM, doorbells): a memfd (its own, or one the GPU model shares) from `offset`, `size`
    bytes. The driver's mmap of the BAR maps these very pages, so the model and the driver see the same memory."""

    def __init__(self, name: str, size: int, fd: int | None = None, offset: int = 0):
        self.name, self.size, self.offset = name, size, offset
        self.owns_fd = fd is None
        self.fd = os.memfd_create(f"baregpu-emu-pci-{name}", os.MFD_CLOEXEC) if fd is None else fd
        if self.owns_fd:
            os.ftruncate(self.fd, size)  # sparse: pages cost nothing until touched

    def grow(self, size: int) -> None:
        """Make at least `size` bytes addressable (a BAR resized past the backing; sparse, so free until used)."""
        if size > self.size:
            if os.fstat(self.fd).st_size < self.offset + size:
                os.ftruncate(self.fd, self.offset + size)
            self.size = size

    def read(self, offset: int, size: int) -> bytes:
        return os.pread(self.fd, size, self.offset + offset)

    def write(self, offset: int, data: bytes) -> None:
        os.pwrite(self.fd, data, self.offset + offset)

    def read32(self, offset: int) -> int:
        return int.from_bytes(self.read(offset, 4), "little")

    def write32(self, offset: int, value: int) -> None:
        self.write(offset, (value & 0xFFFFFFFF).to_bytes(4, "little"))

    def close(self) -> None:
        if self.owns_fd and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


Backing = Union[MemoryBacking, MMIO]


@dataclass
class BarSpec:
    """One BAR: its index (0-5), default size (a power of two), what backs it, and its type bits. A 64-bit BAR
    takes slots index and index+1. `resizable_sizes` (bytes, powers of two >= 1 MiB, including `size`) puts the
    BAR in the Resizable BAR capability."""
    index: int
    size: int
    backing: Backing
    is_64bit: bool = True
    prefetchable: bool = False
    resizable_sizes: tuple[int, ...] = ()

    @property
    def is_memory(self) -> bool:
        return isinstance(self.backing, MemoryBacking)


@dataclass
class LinkSpec:
    """The PCIe link: maximum speed (GT/s) and width the function supports, and what it trained to (defaults:
    the maximum)."""
    max_speed_gts: float = 16.0
    max_width: int = 16
    speed_gts: float | None = None
    width: int | None = None


@dataclass
class MSIXSpec:
    """The MSI-X capability: vector count, and where the table and pending-bit array sit (an MMIO BAR, offsets
    8-byte aligned)."""
    count: int
    bar: int
    table_offset: int
    pba_offset: int


@dataclass
class SavedState:
    """What the kernel saves around a reset (pci_save_state): the header dwords, PCIe control registers, MSI and
    MSI-X control, Resizable BAR control."""
    dwords: dict[int, int] = field(default_factory=dict)
    words: dict[int, int] = field(default_factory=dict)


class PCIFunction:
    """One emulated PCI Express endpoint function (header type 0).

    Config space is 4 KiB with a write mask per bit: IDs are read-only, BARs answer the sizing protocol (write all
    ones, read back the size mask), capabilities are chained (PM, PCIe, MSI, MSI-X) and so are extended ones
    (Resizable BAR). BAR accesses go through `bar_read32`/`bar_write32`/`bar_read`/`bar_write`; memory BARs are
    memfds the OS layer maps for real. Hooks: `on_reset()` after a function-level reset, `on_resize(index, old,
    new)` after a BAR changed size. `interrupt_sink(kind, vector)` receives delivered interrupts ("msix", "msi",
    "intx"); `iommu(bus_addr, size, write) -> host address` translates DMA (None: bus address == host address, the
    emulated system's identity pagemap). `faults` lists the rule violations the model saw, in words.
    """

    def __init__(self, vendor: int, device: int, class_code: int, bars: list[BarSpec], *,
                 subsystem_vendor: int = 0, subsystem_device: int = 0, revision: int = 0,
                 link: LinkSpec | None = None, msi_vectors: int = 1, msix: MSIXSpec | None = None,
                 flr: bool = True, interrupt_pin: int = 1,
                 on_reset: Callable[[], None] | None = None,
                 on_resize: Callable[[int, int, int], None] | None = None):
        self.vendor, self.device, self.class_code, self.revision = vendor, device, class_code, revision
        self.subsystem_vendor, self.subsystem_device = subsystem_vendor, subsystem_device
        self.link = link or LinkSpec()
        self.flr_supported = flr
        self.msix_spec = msix
        self.on_reset, self.on_resize = on_reset, on_resize
        self.interrupt_sink: Optional[Callable[[str, int], None]] = None
        self.iommu: Optional[Callable[[int, int, bool], int]] = None
        self.removed = False
        self.faults: list[str] = []
        self.counts: Counter[str] = Counter()
        self.lock = threading.RLock()
        self._bars: dict[int, BarSpec] = {}
        self._sizes: dict[int, int] = {}
        self.msi_vectors = msi_vectors
        self._validate(bars, msi_vectors)
        self.cfg = bytearray(CFG_SIZE)
        self.wmask = bytearray(CFG_SIZE)
        self.w1c = bytearray(CFG_SIZE)
        self._rebar_entry: dict[int, int] = {}  # BAR index -> offset of its Resizable BAR capability dword
        self._build(msi_vectors, interrupt_pin)
        self._defaults = (bytes(self.cfg), bytes(self.wmask))
        self._default_sizes = dict(self._sizes)
        self._msix_table = bytearray()
        self._msix_pending: set[int] = set()
        self._msi_pending: set[int] = set()
        self._reset_msix_table()

    # -- construction --
    def _validate(self, bars: list[BarSpec], msi_vectors: int) -> None:
        used: set[int] = set()
        for b in bars:
            slots = {b.index, b.index + 1} if b.is_64bit else {b.index}
            if not 0 <= b.index <= (4 if b.is_64bit else 5) or slots & used:
                raise PCIFunctionError(f"BAR {b.index}: index out of range or overlapping another BAR's slots")
            if b.size < 16 or b.size & (b.size - 1) or (not b.is_64bit and b.size > 1 << 31):
                raise PCIFunctionError(f"BAR {b.index}: size {b.size:#x} must be a power of two >= 16 "
                                       "(and <= 2 GiB for a 32-bit BAR)")
            if b.resizable_sizes and (b.size not in b.resizable_sizes or any(
                    s < MIN_REBAR or s & (s - 1) or s > MIN_REBAR << 19 or (not b.is_64bit and s > 1 << 31)
                    for s in b.resizable_sizes)):
                raise PCIFunctionError(f"BAR {b.index}: resizable sizes must be powers of two from 1 MiB to 512 GiB "
                                       "(<= 2 GiB for a 32-bit BAR) and include the default size")
            if isinstance(b.backing, MemoryBacking):
                b.backing.grow(b.size)
            used |= slots
            self._bars[b.index] = b
            self._sizes[b.index] = b.size
        if msi_vectors not in (0, 1, 2, 4, 8, 16, 32):
            raise PCIFunctionError(f"msi_vectors {msi_vectors} must be 0 (no MSI) or a power of two up to 32")
        m = self.msix_spec
        if m is not None:
            bar = self._bars.get(m.bar)
            if bar is None or bar.is_memory or not 1 <= m.count <= 2048 or (m.table_offset | m.pba_offset) & 7:
                raise PCIFunctionError("MSI-X: the table must live in an MMIO BAR, 1-2048 vectors, 8-byte aligned "
                                       "table and PBA offsets")
            if m.table_offset + 16 * m.count > bar.size or m.pba_offset + 8 * ((m.count + 63) // 64) > bar.size:
                raise PCIFunctionError(f"MSI-X: table or PBA does not fit in BAR {m.bar}")
        if self.link.max_speed_gts not in SPEED_CODES or (self.link.speed_gts or 2.5) not in SPEED_CODES:
            raise PCIFunctionError(f"link speed must be one of {sorted(SPEED_CODES)} GT/s")

    def _put(self, off: int, value: int, size: int, wmask: int = 0, w1c: int = 0) -> None:
        self.cfg[off:off + size] = value.to_bytes(size, "little")
        self.wmask[off:off + size] = wmask.to_bytes(size, "little")
        self.w1c[off:off + size] = w1c.to_bytes(size, "little")

    def _build(self, msi_vectors: int, pin: int) -> None:
        self._put(R.PCI_VENDOR_ID, self.vendor, 2)
        self._put(R.PCI_DEVICE_ID, self.device, 2)
        self._put(R.PCI_COMMAND, 0, 2, COMMAND_WMASK)
        self._put(R.PCI_STATUS, R.PCI_STATUS_CAP_LIST, 2, 0, STATUS_W1C)
        self._put(R.PCI_CLASS_REVISION, self.class_code << 8 | self.revision, 4)
        self._put(R.PCI_CACHE_LINE_SIZE, 0, 1, 0xFF)
        self._put(R.PCI_HEADER_TYPE, R.PCI_HEADER_TYPE_NORMAL, 1)
        self._put(R.PCI_SUBSYSTEM_VENDOR_ID, self.subsystem_vendor, 2)
        self._put(R.PCI_SUBSYSTEM_ID, self.subsystem_device, 2)
        self._put(R.PCI_INTERRUPT_LINE, 0, 1, 0xFF)
        self._put(R.PCI_INTERRUPT_PIN, pin, 1)
        for b in self._bars.values():
            self._program_bar_masks(b.index)
        # Classic capability list (PCI 3.0 6.7): PM -> PCIe -> MSI -> MSI-X.
        chain = [(R.PCI_CAP_ID_PM, PM_POS), (R.PCI_CAP_ID_EXP, EXP_POS)]
        if msi_vectors:
            chain.append((R.PCI_CAP_ID_MSI, MSI_POS))
        if self.msix_spec:
            chain.append((R.PCI_CAP_ID_MSIX, MSIX_POS))
        self._put(R.PCI_CAPABILITY_LIST, chain[0][1], 1)
        for i, (cap_id, pos) in enumerate(chain):
            self._put(pos, cap_id | (chain[i + 1][1] if i + 1 < len(chain) else 0) << 8, 2)
        # PM: version 3, no soft reset on D3hot->D0 (PCI PM 1.2 3.2); PMCSR power state RW, PME status RW1C.
        self._put(PM_POS + R.PCI_PM_PMC, 0x0003, 2)
        self._put(PM_POS + R.PCI_PM_CTRL, 0x0008, 2, 0x0003, 0x8000)
        self._build_express()
        if msi_vectors:
            qmask = msi_vectors.bit_length() - 1
            self._put(MSI_POS + R.PCI_MSI_FLAGS, R.PCI_MSI_FLAGS_64BIT | qmask << 1, 2,
                      R.PCI_MSI_FLAGS_ENABLE | R.PCI_MSI_FLAGS_QSIZE)
            self._put(MSI_POS + R.PCI_MSI_ADDRESS_LO, 0, 4, 0xFFFFFFFC)
            self._put(MSI_POS + R.PCI_MSI_ADDRESS_HI, 0, 4, 0xFFFFFFFF)
            self._put(MSI_POS + R.PCI_MSI_DATA_64, 0, 2, 0xFFFF)
        if self.msix_spec:
            m = self.msix_spec
            self._put(MSIX_POS + R.PCI_MSIX_FLAGS, m.count - 1, 2, R.PCI_MSIX_FLAGS_ENABLE | R.PCI_MSIX_FLAGS_MASKALL)
            self._put(MSIX_POS + R.PCI_MSIX_TABLE, m.table_offset | m.bar, 4)
            self._put(MSIX_POS + R.PCI_MSIX_PBA, m.pba_offset | m.bar, 4)
        # Extended capabilities from 0x100 (PCIe 7.6.3): Resizable BAR (id 0x15, version 1) when any BAR has sizes.
        rebar = [b for b in self._bars.values() if b.resizable_sizes]
        if rebar:
            self._put(EXT_POS, R.PCI_EXT_CAP_ID_REBAR | 1 << 16, 4)  # next = 0: the last one
            for i, b in enumerate(rebar):
                pos = EXT_POS + 8 * i
                bitmap = sum(1 << (s.bit_length() - 1 - 20) for s in b.resizable_sizes)
                self._put(pos + R.PCI_REBAR_CAP, bitmap << 4, 4)
                ctrl = b.index | (len(rebar) << R.PCI_REBAR_CTRL_NBAR_SHIFT if i == 0 else 0)
                ctrl |= (b.size.bit_length() - 1 - 20) << R.PCI_REBAR_CTRL_BAR_SHIFT
                self._put(pos + R.PCI_REBAR_CTRL, ctrl, 4, R.PCI_REBAR_CTRL_BAR_SIZE)
                self._rebar_entry[b.index] = pos

    def _build_express(self) -> None:
        lk = self.link
        speed = SPEED_CODES[lk.speed_gts or lk.max_speed_gts]
        width = lk.width or lk.max_width
        e = EXP_POS
        self._put(e + R.PCI_EXP_FLAGS, 2, 2)  # capability version 2, device/port type 0: PCI Express endpoint
        self._put(e + R.PCI_EXP_DEVCAP, 0x1 | (R.PCI_EXP_DEVCAP_FLR if self.flr_supported else 0), 4)  # MPS 256 B
        # DEVCTL: every bit but Initiate FLR is a plain RW control; bit 15 starts an FLR and reads as 0 (PCIe 7.5.3.4)
        self._put(e + R.PCI_EXP_DEVCTL, 0x2810, 2, 0x7FFF)
        self._put(e + R.PCI_EXP_DEVSTA, 0, 2, 0, 0x000F)
        self._put(e + R.PCI_EXP_LNKCAP, SPEED_CODES[lk.max_speed_gts] | lk.max_width << 4, 4)
        self._put(e + R.PCI_EXP_LNKCTL, 0, 2, 0x0FFB)
        self._put(e + R.PCI_EXP_LNKSTA, speed | width << R.PCI_EXP_LNKSTA_NLW_SHIFT | R.PCI_EXP_LNKSTA_DLLLA, 2)
        self._put(e + R.PCI_EXP_DEVCTL2, 0, 2, 0xFFFF)
        # Supported Link Speeds Vector: bit n set for speed code n up to the maximum (PCIe 7.5.3.18)
        self._put(e + R.PCI_EXP_LNKCAP2, sum(1 << c for c in range(1, SPEED_CODES[lk.max_speed_gts] + 1)), 4)
        self._put(e + R.PCI_EXP_LNKCTL2, SPEED_CODES[lk.max_speed_gts], 2, 0xFFFF)

    def _program_bar_masks(self, index: int) -> None:
        """BAR address bits below the size are hardwired 0, so writing all ones reads back the size mask (PCI 3.0
        6.2.5.1); the low bits carry the type (memory, 64-bit, prefetchable)."""
        b, size = self._bars[index], self._sizes[index]
        off = R.PCI_BASE_ADDRESS_0 + 4 * index
        mask = ~(size - 1) & ((1 << 64) - 1)
        flags = (R.PCI_BASE_ADDRESS_MEM_TYPE_64 if b.is_64bit else 0) | (
            R.PCI_BASE_ADDRESS_MEM_PREFETCH if b.prefetchable else 0)
        low = int.from_bytes(self.cfg[off:off + 4], "little") & mask & 0xFFFFFFF0
        self._put(off, low | flags, 4, mask & 0xFFFFFFF0)
        if b.is_64bit:
            high = int.from_bytes(self.cfg[off + 4:off + 8], "little") & (mask >> 32)
            self._put(off + 4, high, 4, mask >> 32)

    def _reset_msix_table(self) -> None:
        n = self.msix_spec.count if self.msix_spec else 0
        self._msix_table = bytearray(16 * n)
        for i in range(n):  # every vector starts masked (PCIe 6.8.2.9 Vector Control reset value)
            self._msix_table[16 * i + 12] = R.PCI_MSIX_ENTRY_CTRL_MASKBIT
        self._msix_pending.clear()
        self._msi_pending.clear()

    # -- config space --
    def config_read(self, offset: int, size: int = 4) -> int:
        """A naturally aligned 1-, 2- or 4-byte config read (all ones once the function is removed)."""
        self._check_cfg(offset, size)
        with self.lock:
            self.counts["config_reads"] += 1
            if self.removed:
                return (1 << (8 * size)) - 1
            return int.from_bytes(self.cfg[offset:offset + size], "little")

    def config_write(self, offset: int, value: int, size: int = 4) -> None:
        """A naturally aligned 1-, 2- or 4-byte config write through the write masks, then its side effects."""
        self._check_cfg(offset, size)
        with self.lock:
            self.counts["config_writes"] += 1
            if self.removed:
                return  # a removed device answers nothing
            old_cmd = self.command
            old_rebar = {i: self._rebar_size_field(i) for i in self._rebar_entry}
            old_msix = self._msix_control()
            for i in range(size):
                byte = (value >> (8 * i)) & 0xFF
                o = offset + i
                cur = self.cfg[o]
                cur = (cur & ~self.wmask[o]) | (byte & self.wmask[o])
                self.cfg[o] = cur & ~(byte & self.w1c[o]) & 0xFF
            self._after_write(offset, size, value, old_cmd, old_rebar, old_msix)

    def _check_cfg(self, offset: int, size: int) -> None:
        if size not in (1, 2, 4) or offset % size or not 0 <= offset <= CFG_SIZE - size:
            # The kernel refuses these before they reach the bus (PCI_OP_READ/WRITE: PCIBIOS_BAD_REGISTER_NUMBER).
            raise PCIFunctionError(f"config access of {size} bytes at {offset:#x} is not naturally aligned in 4 KiB")

    def config_read_bytes(self, offset: int, count: int) -> bytes:
        """Read a byte range as the kernel splits it (drivers/pci/pci-sysfs.c pci_read_config): byte, word, dwords."""
        out = bytearray()
        for off, n in _split(offset, count):
            out += self.config_read(off, n).to_bytes(n, "little")
        return bytes(out)

    def config_write_bytes(self, offset: int, data: bytes) -> None:
        """Write a byte range as the kernel splits it (drivers/pci/pci-sysfs.c pci_write_config)."""
        pos = 0
        for off, n in _split(offset, len(data)):
            self.config_write(off, int.from_bytes(data[pos:pos + n], "little"), n)
            pos += n

    def _after_write(self, offset: int, size: int, value: int, old_cmd: int, old_rebar: dict[int, int],
                     old_msix: int) -> None:
        devctl = EXP_POS + R.PCI_EXP_DEVCTL
        if offset <= devctl + 1 < offset + size and (value >> (8 * (devctl + 1 - offset))) & 0x80:
            self._initiate_flr()
            return
        for index, old in old_rebar.items():
            new = self._rebar_size_field(index)
            if new != old:
                self._rebar_write(index, old, new, old_cmd)
        if self._msix_control() != old_msix:
            self._deliver_pending_msix()

    @property
    def command(self) -> int:
        return int.from_bytes(self.cfg[R.PCI_COMMAND:R.PCI_COMMAND + 2], "little")

    @property
    def memory_enabled(self) -> bool:
        return bool(self.command & R.PCI_COMMAND_MEMORY) and not self.removed

    @property
    def bus_master(self) -> bool:
        return bool(self.command & R.PCI_COMMAND_MASTER) and not self.removed

    def capabilities(self) -> list[tuple[int, int, bool]]:
        """(id, offset, extended) of every capability, walked as software walks them (bounded against loops)."""
        out: list[tuple[int, int, bool]] = []
        if self.config_read(R.PCI_STATUS, 2) & R.PCI_STATUS_CAP_LIST:
            pos = self.config_read(R.PCI_CAPABILITY_LIST, 1) & ~3
            for _ in range(48):  # PCI_FIND_CAP_TTL
                if pos < 0x40:
                    break
                hdr = self.config_read(pos, 2)
                out.append((hdr & 0xFF, pos, False))
                pos = (hdr >> 8) & ~3
        pos = EXT_POS
        for _ in range((CFG_SIZE - EXT_POS) // 8):
            hdr = self.config_read(pos, 4)
            if hdr in (0, 0xFFFFFFFF):
                break
            out.append((hdr & 0xFFFF, pos, True))
            pos = hdr >> 20
            if pos < EXT_POS:
                break
        return out

    # -- BARs --
    def bar_spec(self, index: int) -> BarSpec:
        if index not in self._bars:
            raise PCIFunctionError(f"BAR {index} is not implemented (implemented: {sorted(self._bars)})")
        return self._bars[index]

    @property
    def bar_indices(self) -> list[int]:
        return sorted(self._bars)

    def bar_size(self, index: int) -> int:
        self.bar_spec(index)
        return self._sizes[index]

    def bar_address(self, index: int) -> int:
        """The bus address software programmed into the BAR (0 until it is assigned)."""
        b = self.bar_spec(index)
        off = R.PCI_BASE_ADDRESS_0 + 4 * index
        lo = int.from_bytes(self.cfg[off:off + 4], "little") & 0xFFFFFFF0
        hi = int.from_bytes(self.cfg[off + 4:off + 8], "little") if b.is_64bit else 0
        return hi << 32 | lo

    def resource_flags(self, index: int) -> int:
        """The kernel's resource flags for the BAR (drivers/pci/probe.c decode_bar plus __pci_read_base)."""
        b = self.bar_spec(index)
        low = int.from_bytes(self.cfg[R.PCI_BASE_ADDRESS_0 + 4 * index:][:4], "little") & 0xF
        return (low | IORESOURCE_MEM | IORESOURCE_SIZEALIGN | (IORESOURCE_PREFETCH if b.prefetchable else 0)
                | (IORESOURCE_MEM_64 if b.is_64bit else 0))

    def _bar_access(self, index: int, offset: int, size: int, what: str) -> Optional[BarSpec]:
        """The BAR if the access reaches the device; None when the device answers with all ones / drops it."""
        b = self.bar_spec(index)
        if not 0 <= offset <= self._sizes[index] - size:
            raise PCIFunctionError(f"{what} of {size} bytes at {offset:#x} is outside BAR {index} "
                                   f"({self._sizes[index]:#x} bytes)")
        if self.removed:
            return None
        if not self.command & R.PCI_COMMAND_MEMORY:
            # The function does not decode memory: the request ends in an Unsupported Request (PCIe 2.3.1).
            self.fault(f"{what} at BAR {index} + {offset:#x} while memory decoding is off (PCI_COMMAND_MEMORY clear)")
            return None
        return b

    def bar_read32(self, index: int, offset: int) -> int:
        """A 32-bit read at a 4-aligned BAR offset; all ones after removal or with memory decoding off."""
        if offset & 3:
            raise PCIFunctionError(f"BAR {index} read at {offset:#x} is not 4-byte aligned")
        with self.lock:
            self.counts["mmio_reads"] += 1
            b = self._bar_access(index, offset, 4, "read")
            if b is None:
                return 0xFFFFFFFF
            if self._in_msix(index, offset):
                return self._msix_read(offset)
        return b.backing.read32(offset) & 0xFFFFFFFF

    def bar_write32(self, index: int, offset: int, value: int) -> None:
        """A 32-bit write at a 4-aligned BAR offset; dropped after removal or with memory decoding off."""
        if offset & 3:
            raise PCIFunctionError(f"BAR {index} write at {offset:#x} is not 4-byte aligned")
        with self.lock:
            self.counts["mmio_writes"] += 1
            b = self._bar_access(index, offset, 4, "write")
            if b is None:
                return
            if self._in_msix(index, offset):
                self._msix_write(offset, value & 0xFFFFFFFF)
                return
        b.backing.write32(offset, value & 0xFFFFFFFF)

    def bar_read(self, index: int, offset: int, size: int) -> bytes:
        """Bytes from a memory BAR (VRAM through the aperture); an MMIO BAR is read dword by dword."""
        b = self.bar_spec(index)
        if not b.is_memory:
            if offset & 3 or size & 3:
                raise PCIFunctionError(f"BAR {index} is MMIO: reads must be whole aligned dwords")
            return b"".join(self.bar_read32(index, offset + i).to_bytes(4, "little") for i in range(0, size, 4))
        with self.lock:
            if self._bar_access(index, offset, size, "read") is None:
                return b"\xff" * size
        assert isinstance(b.backing, MemoryBacking)
        return b.backing.read(offset, size)

    def bar_write(self, index: int, offset: int, data: bytes) -> None:
        """Bytes into a memory BAR; an MMIO BAR is written dword by dword."""
        b = self.bar_spec(index)
        if not b.is_memory:
            if offset & 3 or len(data) & 3:
                raise PCIFunctionError(f"BAR {index} is MMIO: writes must be whole aligned dwords")
            for i in range(0, len(data), 4):
                self.bar_write32(index, offset + i, int.from_bytes(data[i:i + 4], "little"))
            return
        with self.lock:
            if self._bar_access(index, offset, len(data), "write") is None:
                return
        assert isinstance(b.backing, MemoryBacking)
        b.backing.write(offset, bytes(data))

    # -- Resizable BAR --
    def resizable_sizes(self, index: int) -> int:
        """The Resizable BAR supported-sizes bitmap for BAR `index` (bit n: 2^(20+n) bytes); 0 if not resizable."""
        pos = self._rebar_entry.get(index)
        return 0 if pos is None else (self.config_read(pos + R.PCI_REBAR_CAP) & R.PCI_REBAR_CAP_SIZES) >> 4

    def _rebar_size_field(self, index: int) -> int:
        pos = self._rebar_entry[index] + R.PCI_REBAR_CTRL
        return (int.from_bytes(self.cfg[pos:pos + 4], "little") & R.PCI_REBAR_CTRL_BAR_SIZE) >> R.PCI_REBAR_CTRL_BAR_SHIFT

    def _set_rebar_size_field(self, index: int, field_value: int) -> None:
        pos = self._rebar_entry[index] + R.PCI_REBAR_CTRL
        ctrl = int.from_bytes(self.cfg[pos:pos + 4], "little") & ~R.PCI_REBAR_CTRL_BAR_SIZE
        self.cfg[pos:pos + 4] = (ctrl | field_value << R.PCI_REBAR_CTRL_BAR_SHIFT).to_bytes(4, "little")

    def _rebar_write(self, index: int, old: int, new: int, old_cmd: int) -> None:
        if not self.resizable_sizes(index) >> new & 1:
            # PCIe 7.8.6.3: only sizes the capability advertises may be programmed; keep the old size.
            self._set_rebar_size_field(index, old)
            self.fault(f"BAR {index} resize to {(MIN_REBAR << new):#x} bytes, which the Resizable BAR capability "
                       "does not advertise: ignored")
            return
        if old_cmd & R.PCI_COMMAND_MEMORY:
            # PCIe 7.8.6.3 (implementation note): software must clear Memory Space Enable before changing BAR Size.
            self._set_rebar_size_field(index, old)
            self.fault(f"BAR {index} resized while memory decoding is on (clear PCI_COMMAND_MEMORY first): ignored")
            return
        self._apply_size(index, MIN_REBAR << new)

    def _apply_size(self, index: int, size: int) -> None:
        old = self._sizes[index]
        if size == old:
            return
        self._sizes[index] = size
        backing = self._bars[index].backing
        if isinstance(backing, MemoryBacking):
            backing.grow(size)
        self._program_bar_masks(index)  # the address bits below the new size now read as 0
        self.counts["bar_resizes"] += 1
        if self.on_resize:
            self.on_resize(index, old, size)

    # -- reset --
    def _initiate_flr(self) -> None:
        if not self.flr_supported:
            self.fault("Initiate Function Level Reset written, but DEVCAP does not advertise FLR: ignored")
            return
        self.flr()

    def flr(self) -> None:
        """Function-level reset: config space back to its defaults (BAR sizes included), interrupts off, then the
        on_reset hook (the GPU model resets its state). What the kernel saves and restores around it is not here."""
        with self.lock:
            if self.removed:
                return
            self.counts["flrs"] += 1
            cfg, wmask = self._defaults
            self.cfg[:], self.wmask[:] = cfg, wmask
            for index, size in self._default_sizes.items():
                if self._sizes[index] != size:
                    self._apply_size(index, size)
            self._reset_msix_table()
        if self.on_reset:
            self.on_reset()

    def save_state(self) -> SavedState:
        """What pci_save_state keeps (drivers/pci/pci.c): the first 16 header dwords, the PCIe control registers,
        MSI/MSI-X control and Resizable BAR control."""
        st = SavedState()
        for off in range(0, 64, 4):
            st.dwords[off] = self.config_read(off)
        for reg in (R.PCI_EXP_DEVCTL, R.PCI_EXP_LNKCTL, R.PCI_EXP_DEVCTL2, R.PCI_EXP_LNKCTL2):
            st.words[EXP_POS + reg] = self.config_read(EXP_POS + reg, 2)
        for pos in self._rebar_entry.values():
            st.dwords[pos + R.PCI_REBAR_CTRL] = self.config_read(pos + R.PCI_REBAR_CTRL)
        if self.config_read(R.PCI_CAPABILITY_LIST, 1):
            for cap_id, pos, ext in self.capabilities():
                if cap_id == R.PCI_CAP_ID_MSI and not ext:
                    for reg in (R.PCI_MSI_ADDRESS_LO, R.PCI_MSI_ADDRESS_HI):
                        st.dwords[pos + reg] = self.config_read(pos + reg)
                    st.words[pos + R.PCI_MSI_DATA_64] = self.config_read(pos + R.PCI_MSI_DATA_64, 2)
                    st.words[pos + R.PCI_MSI_FLAGS] = self.config_read(pos + R.PCI_MSI_FLAGS, 2)
                if cap_id == R.PCI_CAP_ID_MSIX and not ext:
                    st.words[pos + R.PCI_MSIX_FLAGS] = self.config_read(pos + R.PCI_MSIX_FLAGS, 2)
        return st

    def restore_state(self, st: SavedState) -> None:
        """Write a saved state back in pci_restore_state's order: Resizable BAR sizes first (pci_restore_rebar_state),
        so the BARs take addresses of the right size, then the header with the command register last."""
        rebar = {off: v for off, v in st.dwords.items() if off >= EXT_POS}
        for off, v in rebar.items():
            self.config_write(off, v)
        for off, v in st.words.items():
            if off != EXP_POS + R.PCI_EXP_DEVCTL or not v & R.PCI_EXP_DEVCTL_BCR_FLR:
                self.config_write(off, v, 2)
        for off in sorted((o for o in st.dwords if o < 64), reverse=True):  # command (0x04) goes last
            self.config_write(off, st.dwords[off])

    # -- surprise removal and faults --
    def surprise_remove(self) -> None:
        """The device is gone: config and MMIO reads return all ones, writes vanish, interrupts and DMA stop.
        (Memory BARs a process already mapped keep their pages: an emulator cannot make a CPU mapping fault.)"""
        with self.lock:
            self.removed = True

    def fault(self, message: str) -> None:
        """Record a rule violation the device saw (the GPU model may also surface it as its own fault)."""
        self.faults.append(message)
        self.counts["faults"] += 1

    # -- interrupts --
    def _msix_control(self) -> int:
        if not self.msix_spec:
            return 0
        return int.from_bytes(self.cfg[MSIX_POS + 2:MSIX_POS + 4], "little")

    @property
    def msix_enabled(self) -> bool:
        return bool(self._msix_control() & R.PCI_MSIX_FLAGS_ENABLE)

    @property
    def msi_enabled(self) -> bool:
        return bool(self._msi_flags() & R.PCI_MSI_FLAGS_ENABLE)

    def _msi_flags(self) -> int:
        if not self.msi_vectors:
            return 0  # no MSI capability
        return int.from_bytes(self.cfg[MSI_POS + 2:MSI_POS + 4], "little")

    def _in_msix(self, index: int, offset: int) -> bool:
        m = self.msix_spec
        if m is None or index != m.bar:
            return False
        return (m.table_offset <= offset < m.table_offset + 16 * m.count
                or m.pba_offset <= offset < m.pba_offset + 8 * ((m.count + 63) // 64))

    def _msix_read(self, offset: int) -> int:
        m = self.msix_spec
        assert m is not None
        if m.table_offset <= offset < m.table_offset + 16 * m.count:
            o = offset - m.table_offset
            return int.from_bytes(self._msix_table[o:o + 4], "little")
        bit0 = (offset - m.pba_offset) * 8
        return sum(1 << (v - bit0) for v in self._msix_pending if bit0 <= v < bit0 + 32)

    def _msix_write(self, offset: int, value: int) -> None:
        m = self.msix_spec
        assert m is not None
        if not m.table_offset <= offset < m.table_offset + 16 * m.count:
            return  # the PBA is read-only (PCIe 6.8.2.10)
        o = offset - m.table_offset
        if o % 16 == 12:
            value &= R.PCI_MSIX_ENTRY_CTRL_MASKBIT  # other Vector Control bits are reserved
        self._msix_table[o:o + 4] = value.to_bytes(4, "little")
        if o % 16 == 12:
            self._deliver_pending_msix()

    def msix_vector_masked(self, vector: int) -> bool:
        return bool(self._msix_table[16 * vector + 12] & R.PCI_MSIX_ENTRY_CTRL_MASKBIT)

    def set_msix(self, enable: bool, unmask: range = range(0)) -> None:
        """What the kernel does when it enables MSI-X for a driver (VFIO_DEVICE_SET_IRQS): program the enable bit and
        unmask the vectors it set up."""
        with self.lock:
            for v in unmask:
                self._msix_table[16 * v + 12] &= ~R.PCI_MSIX_ENTRY_CTRL_MASKBIT & 0xFF
            flags = self._msix_control() & ~R.PCI_MSIX_FLAGS_ENABLE
            self.config_write(MSIX_POS + R.PCI_MSIX_FLAGS, flags | (R.PCI_MSIX_FLAGS_ENABLE if enable else 0), 2)
            self._deliver_pending_msix()

    def set_msi(self, vectors: int) -> None:
        """Enable MSI with `vectors` messages (0 disables), as pci_alloc_irq_vectors does for VFIO."""
        with self.lock:
            flags = self._msi_flags() & ~(R.PCI_MSI_FLAGS_ENABLE | R.PCI_MSI_FLAGS_QSIZE)
            if vectors:
                flags |= R.PCI_MSI_FLAGS_ENABLE | (vectors.bit_length() - 1) << 4
            self.config_write(MSI_POS + R.PCI_MSI_FLAGS, flags, 2)

    def _deliver_pending_msix(self) -> None:
        if not self.msix_enabled or self._msix_control() & R.PCI_MSIX_FLAGS_MASKALL:
            return
        for v in sorted(self._msix_pending):
            if not self.msix_vector_masked(v):
                self._msix_pending.discard(v)
                self._send("msix", v)

    def raise_interrupt(self, vector: int = 0) -> bool:
        """The device signals interrupt `vector` (the GPU model's IH). Returns whether it was delivered now; a masked
        MSI-X vector is left pending and delivered on unmask (PCIe 6.8.2.10)."""
        with self.lock:
            if self.removed:
                return False
            if self.msix_enabled:
                assert self.msix_spec is not None
                if not 0 <= vector < self.msix_spec.count:
                    raise PCIFunctionError(f"MSI-X vector {vector} is out of range ({self.msix_spec.count} vectors)")
                if self._msix_control() & R.PCI_MSIX_FLAGS_MASKALL or self.msix_vector_masked(vector):
                    self._msix_pending.add(vector)
                    return False
                return self._send("msix", vector)
            if self.msi_enabled:
                allocated = 1 << ((self._msi_flags() & R.PCI_MSI_FLAGS_QSIZE) >> 4)
                if not 0 <= vector < allocated:
                    raise PCIFunctionError(f"MSI vector {vector} is beyond the {allocated} messages software enabled")
                return self._send("msi", vector)
            self.cfg[R.PCI_STATUS] |= STATUS_INTERRUPT
            if self.command & R.PCI_COMMAND_INTX_DISABLE:
                return False  # INTx asserted in status only (PCI 3.0 6.2.2 Interrupt Disable)
            return self._send("intx", 0)

    def _send(self, kind: str, vector: int) -> bool:
        if kind != "intx" and not self.command & R.PCI_COMMAND_MASTER:
            # An MSI is a memory write: with Bus Master Enable clear the function may not issue it (PCIe 7.5.1.1.3).
            self.fault(f"{kind.upper()} vector {vector} dropped: bus mastering is off (PCI_COMMAND_MASTER clear)")
            return False
        self.counts["interrupts"] += 1
        if self.interrupt_sink is None:
            return False
        self.interrupt_sink(kind, vector)
        return True

    # -- DMA --
    def dma_translate(self, bus_addr: int, size: int, write: bool) -> int:
        """The host address of a DMA of `size` bytes at `bus_addr`, through the IOMMU when one is attached; raises
        IOMMUFault (and records it) when the access may not happen."""
        with self.lock:
            self.counts["dma"] += 1
            try:
                if self.removed:
                    raise IOMMUFault(bus_addr, size, write, "the device was removed")
                if not self.command & R.PCI_COMMAND_MASTER:
                    raise IOMMUFault(bus_addr, size, write, "bus mastering is off (PCI_COMMAND_MASTER clear)")
                return bus_addr if self.iommu is None else self.iommu(bus_addr, size, write)
            except IOMMUFault as e:
                self.fault(str(e))
                raise

    def dma_read(self, bus_addr: int, size: int) -> bytes:
        return ctypes.string_at(self.dma_translate(bus_addr, size, False), size)

    def dma_write(self, bus_addr: int, data: bytes) -> None:
        ctypes.memmove(self.dma_translate(bus_addr, len(data), True), bytes(data), len(data))

    def close(self) -> None:
        """Release the memfds this function made."""
        for b in self._bars.values():
            if isinstance(b.backing, MemoryBacking):
                b.backing.close()


def _split(offset: int, count: int) -> list[tuple[int, int]]:
    """(offset, size) accesses covering a byte range the way pci-sysfs.c splits it: a leading byte, a leading word,
    dwords, a trailing word, a trailing byte."""
    out, off, size = [], offset, count
    if off & 1 and size:
        out.append((off, 1))
        off, size = off + 1, size - 1
    if off & 3 and size > 2:
        out.append((off, 2))
        off, size = off + 2, size - 2
    while size > 3:
        out.append((off, 4))
        off, size = off + 4, size - 4
    if size >= 2:
        out.append((off, 2))
        off, size = off + 2, size - 2
    if size:
        out.append((off, 1))
    return out
