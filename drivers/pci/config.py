"""Config-space decoders shared by every PCI backend: capability walks, PCIe link status, Resizable BAR, BAR registers.

Each decoder works on a `ConfigSpace` snapshot (the bytes of config space read in one batch), so a backend whose
accesses are transfers (the USB bridge) reads config space once and decodes it locally. Layouts are the PCI Local Bus
and PCI Express Base specifications' as linux/pci_regs.h names them (autogen/pci_regs.py); walk rules follow
drivers/pci/pci.c (__pci_find_next_cap_ttl, pci_find_next_ext_capability) and drivers/pci/rebar.c.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from autogen import pci_regs as R
from drivers.pci.interface import BarInfo, Capability, LinkStatus, PCIError

# __pci_find_next_cap_ttl's bound (drivers/pci/pci.c PCI_FIND_CAP_TTL): a looping list stops after 48 entries.
CAP_TTL = 48
# pci_find_next_ext_capability: each extended capability takes at least 8 bytes of the 0x100-0x1000 range.
EXT_CAP_TTL = (R.PCI_CFG_SPACE_EXP_SIZE - R.PCI_CFG_SPACE_SIZE) // 8

# Link speed encodings: PCI_EXP_LNKSTA_CLS / PCI_EXP_LNKCAP_SLS value -> GT/s (PCIe Base spec 7.5.3.6, 7.5.3.8).
LINK_SPEEDS_GTS = {
    R.PCI_EXP_LNKSTA_CLS_2_5GB: 2.5, R.PCI_EXP_LNKSTA_CLS_5_0GB: 5.0, R.PCI_EXP_LNKSTA_CLS_8_0GB: 8.0,
    R.PCI_EXP_LNKSTA_CLS_16_0GB: 16.0, R.PCI_EXP_LNKSTA_CLS_32_0GB: 32.0, R.PCI_EXP_LNKSTA_CLS_64_0GB: 64.0,
}
# Supported Link Speeds Vector of Link Capabilities 2 (bit n set: speed encoding n supported; PCIe spec 7.5.3.18).
LNKCAP2_SLS_MASK = (R.PCI_EXP_LNKCAP2_SLS_2_5GB | R.PCI_EXP_LNKCAP2_SLS_5_0GB | R.PCI_EXP_LNKCAP2_SLS_8_0GB |
                    R.PCI_EXP_LNKCAP2_SLS_16_0GB | R.PCI_EXP_LNKCAP2_SLS_32_0GB | R.PCI_EXP_LNKCAP2_SLS_64_0GB)

# Resource flags of the sysfs `resource` file (include/linux/ioport.h).
IORESOURCE_IO = 0x100
IORESOURCE_MEM = 0x200
IORESOURCE_PREFETCH = 0x2000
IORESOURCE_MEM_64 = 0x100000

REBAR_MIN_SIZE = 1 << 20  # Resizable BAR size encoding 0 is 1 MB, n is 2^n MB (drivers/pci/rebar.c, PCIe spec 7.8.6)


class ConfigSpace:
    """A snapshot of a function's config space (256 bytes for conventional PCI, 4096 with PCIe extended space)."""

    def __init__(self, data: bytes, bdf: str = "?"):
        if len(data) < R.PCI_STD_HEADER_SIZEOF:
            raise PCIError(f"{bdf}: config space snapshot is {len(data)} bytes, the standard header alone is "
                           f"{R.PCI_STD_HEADER_SIZEOF} (reading past 64 bytes of sysfs config needs root)")
        self.data, self.bdf = bytes(data), bdf

    def __len__(self) -> int:
        return len(self.data)

    def read(self, offset: int, size: int = 4) -> int:
        """A little-endian read of `size` bytes at `offset`; past the snapshot is a PCIError naming the offset."""
        if offset < 0 or offset + size > len(self.data):
            hint = " (sysfs shows non-root readers only 64 bytes; run as root)" if len(self.data) == 64 else ""
            raise PCIError(f"{self.bdf}: config read at {offset:#x} (+{size}) is past the {len(self.data)} bytes read{hint}")
        return int.from_bytes(self.data[offset:offset + size], "little")

    def check_present(self) -> None:
        """All-ones IDs mean the function does not answer (removed, powered off, or hung)."""
        if self.read(R.PCI_VENDOR_ID, 2) == 0xFFFF:
            raise PCIError(f"{self.bdf}: config space reads all ones: the device does not respond (surprise removal, "
                           "powered down, or a dead link); check `lspci -s <bdf>` and reseat or rescan the bus")


def read_snapshot(read_dwords: Callable[[Sequence[tuple[int, int]]], list[int]], size: int, bdf: str) -> ConfigSpace:
    """A snapshot made of batched 4-byte reads (one round trip on a batching backend)."""
    values = read_dwords([(o, 4) for o in range(0, size, 4)])
    return ConfigSpace(b"".join(v.to_bytes(4, "little") for v in values), bdf)


def classic_capabilities(cfg: ConfigSpace) -> list[Capability]:
    """The capability list from PCI_CAPABILITY_LIST, as __pci_find_next_cap_ttl walks it."""
    if not cfg.read(R.PCI_STATUS, 2) & R.PCI_STATUS_CAP_LIST:
        return []  # __pci_bus_find_cap_start: no Capabilities List bit, no list
    if cfg.read(R.PCI_HEADER_TYPE, 1) & R.PCI_HEADER_TYPE_MASK not in (R.PCI_HEADER_TYPE_NORMAL, R.PCI_HEADER_TYPE_BRIDGE):
        return []  # CardBus keeps its pointer elsewhere; not a device we drive
    caps, pos, seen = [], cfg.read(R.PCI_CAPABILITY_LIST, 1), set()
    for _ in range(CAP_TTL):
        if pos < 0x40:  # pointers into the standard header end the list
            break
        pos &= ~3
        entry = cfg.read(pos, 2)
        cap_id = entry & 0xFF
        if cap_id == 0xFF or pos in seen:  # 0xff: a removed device reads all ones
            break
        seen.add(pos)
        caps.append(Capability(cap_id, pos, False))
        pos = entry >> 8
    return caps


def extended_capabilities(cfg: ConfigSpace) -> list[Capability]:
    """The extended list from 0x100, as pci_find_next_ext_capability walks it (none in a 256-byte config space)."""
    if len(cfg) <= R.PCI_CFG_SPACE_SIZE:
        return []
    caps, pos, seen = [], R.PCI_CFG_SPACE_SIZE, set()
    for _ in range(EXT_CAP_TTL):
        header = cfg.read(pos, 4)
        if header in (0, 0xFFFFFFFF) or pos in seen:  # 0: no extended capabilities; all ones: not answering
            break
        seen.add(pos)
        caps.append(Capability(R.PCI_EXT_CAP_ID(header), pos, True))
        pos = R.PCI_EXT_CAP_NEXT(header)
        if pos < R.PCI_CFG_SPACE_SIZE:
            break
    return caps


def capabilities(cfg: ConfigSpace) -> list[Capability]:
    """Both lists: the classic one first, then the extended one."""
    return classic_capabilities(cfg) + extended_capabilities(cfg)


def find(caps: Sequence[Capability], cap_id: int, extended: bool) -> Optional[Capability]:
    return next((c for c in caps if c.id == cap_id and c.extended == extended), None)


def decode_link(lnkcap: int, lnksta: int, lnkcap2: int = 0) -> LinkStatus:
    """LinkStatus from the Link Capabilities, Link Status and (when nonzero) Link Capabilities 2 registers.

    The maximum speed comes from Link Capabilities 2's vector when it has one, as pcie_get_speed_cap does."""
    vector = lnkcap2 & LNKCAP2_SLS_MASK
    max_code = vector.bit_length() - 1 if vector else lnkcap & R.PCI_EXP_LNKCAP_SLS
    cur_code = lnksta & R.PCI_EXP_LNKSTA_CLS
    return LinkStatus(speed_gts=LINK_SPEEDS_GTS.get(cur_code, 0.0), width=(lnksta & R.PCI_EXP_LNKSTA_NLW) >> 4,
                      max_speed_gts=LINK_SPEEDS_GTS.get(max_code, 0.0), max_width=(lnkcap & R.PCI_EXP_LNKCAP_MLW) >> 4)


def link_status(cfg: ConfigSpace, caps: Optional[Sequence[Capability]] = None) -> Optional[LinkStatus]:
    """The link from the PCI Express capability; None without one."""
    exp = find(caps if caps is not None else classic_capabilities(cfg), R.PCI_CAP_ID_EXP, False)
    if exp is None:
        return None
    version = cfg.read(exp.offset + R.PCI_EXP_FLAGS, 2) & R.PCI_EXP_FLAGS_VERS
    # Link Capabilities 2 exists from capability version 2 on (PCIe spec 7.5.3; pcie_cap_has_lnkctl2)
    lnkcap2 = cfg.read(exp.offset + R.PCI_EXP_LNKCAP2, 4) if version >= 2 else 0
    return decode_link(cfg.read(exp.offset + R.PCI_EXP_LNKCAP, 4), cfg.read(exp.offset + R.PCI_EXP_LNKSTA, 2), lnkcap2)


@dataclass(frozen=True)
class RebarEntry:
    """One BAR's entry of the Resizable BAR capability: where its control register is, the sizes it supports
    (bit n: 2^n MB, as resourceN_resize shows them) and its current size encoding."""
    bar: int
    ctrl_offset: int
    sizes_mask: int
    current: int

    @property
    def sizes(self) -> list[int]:
        """Supported sizes in bytes, smallest first."""
        return [REBAR_MIN_SIZE << n for n in range(32) if self.sizes_mask >> n & 1]

    @property
    def current_size(self) -> int:
        return REBAR_MIN_SIZE << self.current


def rebar_entries(cfg: ConfigSpace, caps: Optional[Sequence[Capability]] = None) -> dict[int, RebarEntry]:
    """Every BAR the Resizable BAR capability lists, by BAR index (drivers/pci/rebar.c pci_rebar_find_pos)."""
    cap = find(caps if caps is not None else extended_capabilities(cfg), R.PCI_EXT_CAP_ID_REBAR, True)
    if cap is None:
        return {}
    nbars = (cfg.read(cap.offset + R.PCI_REBAR_CTRL, 4) & R.PCI_REBAR_CTRL_NBAR_MASK) >> R.PCI_REBAR_CTRL_NBAR_SHIFT
    out: dict[int, RebarEntry] = {}
    for i in range(nbars):  # entries are 8 bytes apart: capability register, then control register
        pos = cap.offset + 8 * i
        ctrl = cfg.read(pos + R.PCI_REBAR_CTRL, 4)
        sizes = (cfg.read(pos + R.PCI_REBAR_CAP, 4) & R.PCI_REBAR_CAP_SIZES) >> 4  # bit 4 of the register is 1 MB
        bar = ctrl & R.PCI_REBAR_CTRL_BAR_IDX
        out.setdefault(bar, RebarEntry(bar, pos + R.PCI_REBAR_CTRL, sizes,
                                       (ctrl & R.PCI_REBAR_CTRL_BAR_SIZE) >> R.PCI_REBAR_CTRL_BAR_SHIFT))
    return out


def rebar_encoding(size: int) -> int:
    """The Resizable BAR encoding of `size` bytes (log2 of the size in MB); PCIError if it is not a power of two >= 1 MB."""
    if size < REBAR_MIN_SIZE or size & (size - 1):
        raise PCIError(f"BAR size {size:#x} is not a power of two of at least 1 MB; Resizable BAR sizes are 2^n MB")
    return (size // REBAR_MIN_SIZE).bit_length() - 1


@dataclass(frozen=True)
class BarRegister:
    """A BAR as its config-space register(s) say: address and type. Its size needs the sizing protocol or the OS."""
    index: int
    address: int
    is_64bit: bool
    prefetchable: bool
    io: bool


def bar_registers(cfg: ConfigSpace) -> list[BarRegister]:
    """Decode BAR0-5 of a type-0 header (PCI Local Bus spec 6.2.5.1); a 64-bit BAR takes two slots."""
    out, i = [], 0
    while i < R.PCI_STD_NUM_BARS:
        lo = cfg.read(R.PCI_BASE_ADDRESS_0 + 4 * i, 4)
        if lo & R.PCI_BASE_ADDRESS_SPACE == R.PCI_BASE_ADDRESS_SPACE_IO:
            out.append(BarRegister(i, lo & R.PCI_BASE_ADDRESS_IO_MASK & 0xFFFFFFFF, False, False, True))
            i += 1
            continue
        is64 = lo & R.PCI_BASE_ADDRESS_MEM_TYPE_MASK == R.PCI_BASE_ADDRESS_MEM_TYPE_64
        addr = lo & R.PCI_BASE_ADDRESS_MEM_MASK & 0xFFFFFFFF
        if is64 and i + 1 < R.PCI_STD_NUM_BARS:
            addr |= cfg.read(R.PCI_BASE_ADDRESS_0 + 4 * (i + 1), 4) << 32
        out.append(BarRegister(i, addr, is64, bool(lo & R.PCI_BASE_ADDRESS_MEM_PREFETCH), False))
        i += 2 if is64 else 1
    return out


def bar_size_from_readback(lo: int, hi: int = 0, io: bool = False, is_64bit: bool = False) -> int:
    """The size the sizing protocol reports: after writing all ones, the low bits that stay zero give the size
    (PCI Local Bus spec 6.2.5.1). 0 for an unimplemented BAR."""
    if io:
        mask = lo & R.PCI_BASE_ADDRESS_IO_MASK & 0xFFFF
        return (~mask & 0xFFFF) + 1 if mask else 0
    mask = (lo & R.PCI_BASE_ADDRESS_MEM_MASK & 0xFFFFFFFF) | ((hi << 32) if is_64bit else 0)
    if not mask:
        return 0
    return mask & -mask  # the lowest writable address bit is the size


def parse_resource_table(text: str) -> list[tuple[int, int, int]]:
    """The sysfs `resource` file: "start end flags" (hex) per resource (pci-sysfs.c resource_show)."""
    out = []
    for n, line in enumerate(text.splitlines()):
        fields = line.split()
        if len(fields) != 3:
            raise PCIError(f"sysfs resource line {n} is {line!r}, expected 'start end flags'")
        out.append(tuple(int(f, 16) for f in fields))  # type: ignore[arg-type]
    return out


def bars_from_resource_table(table: Sequence[tuple[int, int, int]]) -> list[BarInfo]:
    """BarInfo for each implemented BAR 0-5 of a `resource` table; the upper half of a 64-bit BAR has no entry."""
    out = []
    for i, (start, end, flags) in enumerate(table[:R.PCI_STD_NUM_BARS]):
        if end == 0 or not flags & (IORESOURCE_IO | IORESOURCE_MEM):
            continue
        out.append(BarInfo(i, start, end - start + 1, bool(flags & IORESOURCE_MEM_64),
                           bool(flags & IORESOURCE_PREFETCH), bool(flags & IORESOURCE_IO)))
    return out
