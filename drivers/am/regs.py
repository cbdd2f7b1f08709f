"""Register access for the AM driver: registers by IP block, instance and name, resolved through the IP discovery
table and the generated register modules, read and written through the register BAR (BAR5) of the PCI interface.

How an address is formed is amdgpu's (amdgpu.h SOC15_REG_OFFSET): the register's dword offset from its
`reg<NAME>` macro plus the base of the segment its `reg<NAME>_BASE_IDX` names, taken from the discovery table for
that block and instance (`Discovery.base`); the byte offset in BAR5 is that dword offset times four. A handful of
registers sit at fixed dword offsets before any base is known; amdgpu_discovery.c defines them itself (`FIXED`).

Which generated module holds a block's registers follows the header amdgpu's own IP file includes for that version
(`MODULES`; e.g. psp_v13_0.c includes mp/mp_13_0_2_offset.h). Blocks whose modules are not generated yet raise a
RegisterError naming the module to generate; `RegisterFile.use_module` lets a caller supply one explicitly.

Every access is a method of the BarMapping, and the list forms (`read_regs`, `write_regs`) go out as one
`read_many`/`write_many`, so a batching backend (the USB bridge) pays one round trip per list. A read of 0xffffffff
is checked against the device (`gone_check`): a GPU that fell off the bus raises instead of returning garbage.

Registers past the end of the register BAR, and SMN addresses, are reached through the NBIO's RSMU index/data pair
(`smn_read`/`smn_write`), as amdgpu_device_rreg/wreg hand them to pcie_rreg/pcie_wreg (amdgpu_device_indirect_rreg:
write the byte address to BIF_BX_PF0_RSMU_INDEX, read it back to post it, then BIF_BX_PF0_RSMU_DATA). `read`/`write`
do that by themselves for a register whose address is past the BAR, so every block reaches such registers the same way.
"""
from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Optional, Sequence, Union

from drivers.am.discovery import DiscoveryError, hw_id_name, hw_id_of
from drivers.pci.interface import BarMapping, PCIError
from hcq.errors import HCQError

if TYPE_CHECKING:
    from drivers.am.discovery import Discovery

ALL_ONES = 0xFFFFFFFF

# amdgpu_discovery.c (mmMM_INDEX, mmMM_DATA, mmMM_INDEX_HI, mmRCC_CONFIG_MEMSIZE, mmMP0_SMN_C2PMSG_33,
# mmIP_DISCOVERY_VERSION): dword offsets the kernel uses before IP discovery; the same in nbio_*_offset.h.
MM_INDEX = 0x0
MM_DATA = 0x1
MM_INDEX_HI = 0x6
RCC_CONFIG_MEMSIZE = 0xDE3
MP0_SMN_C2PMSG_33 = 0x16061
IP_DISCOVERY_VERSION = 0x16A00
FIXED: dict[str, int] = {"MM_INDEX": MM_INDEX, "MM_DATA": MM_DATA, "MM_INDEX_HI": MM_INDEX_HI,
                         "RCC_CONFIG_MEMSIZE": RCC_CONFIG_MEMSIZE, "MP0_SMN_C2PMSG_33": MP0_SMN_C2PMSG_33,
                         "IP_DISCOVERY_VERSION": IP_DISCOVERY_VERSION}
MM_INDEX_APERTURE = 1 << 31  # amdgpu_device_mm_access: bit 31 of MM_INDEX selects the VRAM aperture

VersionKey = tuple[int, ...]
# Block (discovery name) -> {version prefix: generated module candidates, first present wins}. A key of length 1, 2
# or 3 matches that many leading version numbers; the longest matching key wins. The sources are the headers the
# kernel's IP files include for those versions (Linux 6.12).
MODULES: dict[str, dict[VersionKey, tuple[str, ...]]] = {
    "GC": {(11,): ("gc_11_0_0",),  # gfx_v11_0.c: gc/gc_11_0_0_offset.h for every GC 11.x
           (12,): ("gc_12_0_0",)},  # gfx_v12_0.c: gc/gc_12_0_0_offset.h
    "SDMA0": {(6,): ("gc_11_0_0",),  # sdma_v6_0.c: SDMA registers live in gc/gc_11_0_0_offset.h
              (7,): ("gc_12_0_0",)},  # sdma_v7_0.c: gc/gc_12_0_0_offset.h
    "SDMA1": {(6,): ("gc_11_0_0",), (7,): ("gc_12_0_0",)},
    "MP0": {(13,): ("mp_13_0_0", "mp_13_0_2"),  # soc21.c: mp_13_0_0_offset.h; psp_v13_0.c: mp_13_0_2_offset.h
            (14,): ("mp_14_0_2",)},  # psp_v14_0.c, soc24.c: mp/mp_14_0_2_offset.h
    "MP1": {(13,): ("mp_13_0_0", "mp_13_0_2"), (14,): ("mp_14_0_2",)},
    "NBIF": {(4, 3): ("nbio_4_3_0",),  # nbio_v4_3.c: nbio/nbio_4_3_0_offset.h
             (6, 3, 1): ("nbif_6_3_1",)},  # nbif_v6_3_1.c: nbif/nbif_6_3_1_offset.h
    "OSSSYS": {(6,): ("osssys_6_0_0",),  # ih_v6_0.c: oss/osssys_6_0_0_offset.h
               (7,): ("osssys_7_0_0",)},  # ih_v7_0.c: oss/osssys_7_0_0_offset.h
    "MMHUB": {(3, 0, 0): ("mmhub_3_0_0",),  # mmhub_v3_0.c
              (3, 0, 2): ("mmhub_3_0_2",),  # mmhub_v3_0_2.c
              (4, 1, 0): ("mmhub_4_1_0",)},  # mmhub_v4_1_0.c
    "HDP": {(6,): ("hdp_6_0_0",),  # hdp_v6_0.c
            (7,): ("hdp_7_0_0",)},  # hdp_v7_0.c
    "ATHUB": {(3,): ("athub_3_0_0",),  # athub_v3_0.c
              (4, 1): ("athub_4_1_0",)},  # athub_v4_1_0.c
    "SMUIO": {(14, 0, 2): ("smuio_14_0_2",)},  # smuio_v14_0_2.c
}


class RegisterError(HCQError):
    """A register could not be named, placed or reached; the message names it, its block and what to do."""


class DeviceGoneError(RegisterError):
    """The GPU no longer answers: MMIO and config space read all ones (surprise removal, power loss, link down)."""


def module_names_for(block: str, version: Sequence[int]) -> tuple[str, ...]:
    """The generated module candidates for a block at a version (longest matching version prefix), or ()."""
    table = MODULES.get(block.upper(), {})
    best: tuple[str, ...] = ()
    best_len = 0
    for key, names in table.items():
        if tuple(version[:len(key)]) == key and len(key) > best_len:
            best, best_len = names, len(key)
    return best


def load_module(block: str, version: Sequence[int]) -> ModuleType:
    """The generated register module for a block at a version; RegisterError naming what to generate otherwise."""
    names = module_names_for(block, version)
    v = ".".join(map(str, version))
    if not names:
        raise RegisterError(f"no register module is known for {block} {v}: add the header amdgpu includes for it to "
                            f"autogen/generator/sources.py and drivers/am/regs.py MODULES")
    for name in names:
        try:
            return importlib.import_module(f"autogen.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"autogen.{name}":
                raise
    raise RegisterError(f"the register module for {block} {v} is not generated (looked for autogen/{names[0]}.py"
                        + (f" or {', '.join(n + '.py' for n in names[1:])}" if names[1:] else "")
                        + "); add its header to autogen/generator/sources.py and run `python -m tools.autogen`")


@dataclass(frozen=True)
class Reg:
    """One register placed on the card: its name, block, instance, segment, dword offset inside the segment, and the
    byte offset in BAR5 (`address`). `module` holds its fields (`<NAME>__<FIELD>__SHIFT` / `_MASK`)."""
    name: str
    block: str
    instance: int
    segment: int
    offset: int
    address: int
    module: Optional[ModuleType] = None

    @property
    def dword(self) -> int:
        """The absolute dword offset (what amdgpu's RREG32 takes)."""
        return self.address >> 2

    def _field(self, field: str) -> tuple[int, int]:
        if self.module is None:
            raise RegisterError(f"{self.name} is a fixed-offset register with no field definitions here")
        shift = getattr(self.module, f"{self.name}__{field}__SHIFT", None)
        mask = getattr(self.module, f"{self.name}__{field}_MASK", None)
        if shift is None or mask is None:
            known = sorted(n[len(self.name) + 2:-len("__SHIFT")] for n in dir(self.module)
                           if n.startswith(self.name + "__") and n.endswith("__SHIFT"))
            raise RegisterError(f"{self.name} has no field {field!r} in {self.module.__name__}; its fields: "
                                f"{', '.join(known) or '(none generated)'}")
        return shift, mask

    def encode(self, value: int = 0, **fields: int) -> int:
        """`value` with each named field replaced (REG_SET_FIELD for each)."""
        for name, v in fields.items():
            shift, mask = self._field(name)
            if (v << shift) & ~mask:
                raise RegisterError(f"{self.name}.{name} = {v:#x} does not fit the field (mask {mask:#x})")
            value = (value & ~mask) | (v << shift)
        return value & ALL_ONES

    def get(self, value: int, field: str) -> int:
        """One field of a value read from this register (REG_GET_FIELD)."""
        shift, mask = self._field(field)
        return (value & mask) >> shift

    def __str__(self) -> str:
        if self.module is None:
            return f"{self.name} (dword {self.dword:#x})"
        return f"{self.name} ({self.block} inst {self.instance} seg {self.segment} + {self.offset:#x} = " \
               f"dword {self.dword:#x})"


RegRef = Union[Reg, str]


class RegisterFile:
    """Registers of one GPU through its register BAR (a BarMapping of BAR5).

    `discovery` (set once the table is read) places registers by block and instance; before that only the fixed
    registers (`FIXED`) resolve. `gone_check()` is called when a read returns 0xffffffff: it raises DeviceGoneError
    when the device has left the bus and returns when the value is real. `bdf` names the device in messages.
    """

    def __init__(self, mmio: BarMapping, discovery: Optional["Discovery"] = None, bdf: str = "",
                 gone_check: Optional[Callable[[], None]] = None):
        self.mmio, self.discovery, self.bdf = mmio, discovery, bdf
        self.gone_check = gone_check
        self._modules: dict[tuple[str, int], ModuleType] = {}
        self._block_modules: dict[str, ModuleType] = {}
        self._index_lock = threading.Lock()  # amdgpu's mmio_idx_lock: MM_INDEX and MM_DATA go together
        self._smn_lock = threading.RLock()  # amdgpu's pcie_idx_lock: RSMU_INDEX and RSMU_DATA go together
        self._smn_pair: Optional[tuple[Reg, Reg]] = None
        self._regs: dict[tuple[str, str, int], Reg] = {}

    # --- naming ---
    def use_module(self, block: str, module: ModuleType, instance: Optional[int] = None) -> None:
        """Take `block`'s register names from `module` (every instance, or one) instead of MODULES' choice."""
        if instance is None:
            self._block_modules[block.upper()] = module
            self._modules = {k: m for k, m in self._modules.items() if k[0] != block.upper()}
        else:
            self._modules[(block.upper(), instance)] = module
        self._regs = {k: r for k, r in self._regs.items() if k[0] != block.upper()}
        if block.upper() == "NBIF":
            self._smn_pair = None  # placed again from the new module

    def module(self, block: str, instance: int = 0) -> ModuleType:
        """The generated module holding `block`'s registers at the version discovery reports."""
        key = (block.upper(), instance)
        mod = self._modules.get(key) or self._block_modules.get(key[0])
        if mod is None:
            if self.discovery is None:
                raise RegisterError(f"{block} registers are placed by the IP discovery table, which is not read yet")
            mod = self._modules[key] = load_module(block.upper(), self.discovery.version(block, instance))
        return mod

    def reg(self, block: str, name: str, instance: int = 0) -> Reg:
        """The register `name` (with or without its reg/mm prefix) of `block` instance `instance`, placed."""
        bare = name[3:] if name.startswith("reg") else name[2:] if name.startswith("mm") else name
        key = (block.upper(), bare, instance)
        r = self._regs.get(key)
        if r is not None:
            return r
        mod = self.module(block, instance)
        offset = getattr(mod, f"reg{bare}", None)
        seg = getattr(mod, f"reg{bare}_BASE_IDX", None)
        if offset is None:  # older headers spell offsets mm<NAME>
            offset, seg = getattr(mod, f"mm{bare}", None), getattr(mod, f"mm{bare}_BASE_IDX", None)
        if offset is None or seg is None:
            raise RegisterError(f"{bare} is not in {mod.__name__} ({block} {self._version(block, instance)}); "
                                f"check the name against the header it was generated from, or widen the module's "
                                f"macro filter in autogen/generator/sources.py")
        assert self.discovery is not None
        try:
            base = self.discovery.base(block, instance, seg)
        except DiscoveryError as e:
            raise RegisterError(f"{bare}: {e}") from None
        r = Reg(bare, hw_id_name(hw_id_of(block)), instance, seg, offset, (base + offset) * 4, mod)
        self._regs[key] = r
        return r

    def fixed(self, name: str) -> Reg:
        """A register at a fixed dword offset (FIXED: MM_INDEX, RCC_CONFIG_MEMSIZE, MP0_SMN_C2PMSG_33, ...)."""
        if name not in FIXED:
            raise RegisterError(f"{name} is not a fixed-offset register; those are {', '.join(FIXED)}")
        return Reg(name, "fixed", 0, 0, FIXED[name], FIXED[name] * 4)

    def _version(self, block: str, instance: int) -> str:
        try:
            return ".".join(map(str, self.discovery.version(block, instance))) if self.discovery else "?"
        except DiscoveryError:
            return "?"

    def _resolve(self, ref: RegRef, block: Optional[str], instance: int) -> Reg:
        if isinstance(ref, Reg):
            return ref
        if block is None:
            return self.fixed(ref)
        return self.reg(block, ref, instance)

    # --- access ---
    @property
    def bar_size(self) -> int:
        """The register BAR's size in bytes (0 when the mapping does not say: then every address is taken as inside)."""
        return getattr(self.mmio, "size", 0) or 0

    def past_bar(self, r: Reg) -> bool:
        """Whether `r` lies past the register BAR (amdgpu_device_rreg: `reg * 4 >= adev->rmmio_size`)."""
        size = self.bar_size
        return bool(size) and r.address + 4 > size

    def smn_pair(self) -> tuple[Reg, Reg]:
        """BIF_BX_PF0_RSMU_INDEX and BIF_BX_PF0_RSMU_DATA (nbio_v4_3.c / nbif_v6_3_1.c get_pcie_index_offset and
        get_pcie_data_offset), placed through the NBIF block of the discovery table."""
        if self._smn_pair is None:
            try:
                pair = (self.reg("NBIF", "BIF_BX_PF0_RSMU_INDEX"), self.reg("NBIF", "BIF_BX_PF0_RSMU_DATA"))
            except RegisterError as e:
                raise RegisterError(f"{self.bdf}: SMN access needs the NBIO's RSMU index/data pair: {e}") from None
            for r in pair:
                if self.past_bar(r):
                    raise RegisterError(f"{self.bdf}: {r} lies past the {self.bar_size:#x}-byte register BAR, so "
                                        f"SMN addresses cannot be reached; check the NBIF bases in the discovery table")
            self._smn_pair = pair
        return self._smn_pair

    def smn_read(self, address: int) -> int:
        """A 32-bit read at SMN (byte) address `address` through RSMU_INDEX/RSMU_DATA (amdgpu_device_indirect_rreg:
        index, read the index back to post the write, then data), under one lock for the pair."""
        self._check_smn(address)
        index, data = self.smn_pair()
        with self._smn_lock:
            self.write(index, address)
            self.read(index)
            return self.read(data)

    def smn_write(self, address: int, value: int) -> None:
        """A 32-bit write at SMN (byte) address `address` (amdgpu_device_indirect_wreg: index, read back, data, read
        back)."""
        self._check_smn(address)
        index, data = self.smn_pair()
        with self._smn_lock:
            self.write(index, address)
            self.read(index)
            self.write(data, value)
            self.read(data)

    def _check_smn(self, address: int) -> None:
        # amdgpu_device_indirect_rreg takes a 32-bit address; wider ones need PCIE_INDEX_HI (the _ext variant), which
        # nbio_v4_3 / nbif_v6_3_1 do not offer
        if not 0 <= address <= ALL_ONES or address & 3:
            raise RegisterError(f"{self.bdf}: SMN address {address:#x} is not a dword-aligned 32-bit address")

    def _checked(self, regs: Sequence[Reg], values: list[int]) -> list[int]:
        if self.gone_check is not None and ALL_ONES in values:
            self.gone_check()  # raises when the card is gone; otherwise the all-ones values are real
        return values

    def _fail(self, what: str, e: PCIError) -> RegisterError:
        if self.gone_check is not None:
            self.gone_check()
        return RegisterError(f"{self.bdf}: {what} failed: {e}")

    def read(self, ref: RegRef, block: Optional[str] = None, instance: int = 0) -> int:
        """Read one register: `read("RCC_CONFIG_MEMSIZE")` (fixed), `read("GRBM_STATUS", "GC")`, or a Reg."""
        r = self._resolve(ref, block, instance)
        if self.past_bar(r):
            return self.smn_read(r.address)  # amdgpu_device_rreg: past rmmio_size -> pcie_rreg(reg * 4)
        try:
            value = self.mmio.read32(r.address)
        except PCIError as e:
            raise self._fail(f"reading {r}", e) from e
        return self._checked([r], [value])[0]

    def write(self, ref: RegRef, value: int, block: Optional[str] = None, instance: int = 0) -> None:
        """Write one register (same naming as `read`)."""
        r = self._resolve(ref, block, instance)
        if self.past_bar(r):
            self.smn_write(r.address, value & ALL_ONES)  # amdgpu_device_wreg: past rmmio_size -> pcie_wreg
            return
        try:
            self.mmio.write32(r.address, value & ALL_ONES)
        except PCIError as e:
            raise self._fail(f"writing {value & ALL_ONES:#x} to {r}", e) from e

    def update(self, ref: RegRef, block: Optional[str] = None, instance: int = 0, **fields: int) -> int:
        """Read-modify-write named fields of a register; returns the value written."""
        r = self._resolve(ref, block, instance)
        value = r.encode(self.read(r), **fields)
        self.write(r, value)
        return value

    def read_regs(self, regs: Iterable[Reg]) -> list[int]:
        """Several registers in one batch (one BarMapping.read_many)."""
        regs = list(regs)
        if any(self.past_bar(r) for r in regs):
            return [self.read(r) for r in regs]  # the indirect ones cannot share a batch
        try:
            values = self.mmio.read_many([r.address for r in regs])
        except PCIError as e:
            raise self._fail(f"reading {', '.join(r.name for r in regs)}", e) from e
        return self._checked(regs, list(values))

    def write_regs(self, writes: Iterable[tuple[Reg, int]]) -> None:
        """Several register writes, in order, in one batch (one BarMapping.write_many)."""
        writes = list(writes)
        if any(self.past_bar(r) for r, _ in writes):
            for r, v in writes:
                self.write(r, v)
            return
        try:
            self.mmio.write_many([(r.address, v & ALL_ONES) for r, v in writes])
        except PCIError as e:
            raise self._fail(f"writing {', '.join(r.name for r, _ in writes)}", e) from e

    def rreg32(self, dword: int) -> int:
        """A raw read at an absolute dword offset (amdgpu's RREG32), for registers no module names yet."""
        return self.read(Reg(f"dword {dword:#x}", "raw", 0, 0, dword, dword * 4))

    def wreg32(self, dword: int, value: int) -> None:
        """A raw write at an absolute dword offset (amdgpu's WREG32)."""
        self.write(Reg(f"dword {dword:#x}", "raw", 0, 0, dword, dword * 4), value)

    def snapshot(self, names: Mapping[str, Reg]) -> dict[str, int]:
        """Named registers read in one batch, as {name: value} (for reports)."""
        return dict(zip(names, self.read_regs(names.values())))

    # --- VRAM through the index/data pair ---
    def vram_read(self, offset: int, size: int) -> bytes:
        """VRAM bytes through MM_INDEX/MM_INDEX_HI/MM_DATA, as amdgpu_device_mm_access reads VRAM that BAR0 does not
        reach: for each dword, MM_INDEX = low 31 bits | bit 31 (the aperture), MM_INDEX_HI = offset >> 31 when it
        changes, then MM_DATA. Offsets and sizes must be dword-aligned (the kernel BUG()s otherwise)."""
        if offset % 4 or size % 4 or offset < 0 or size < 0:
            raise RegisterError(f"VRAM access through MM_INDEX/MM_DATA needs dword-aligned offset and size "
                                f"(got {size} bytes at {offset:#x})")
        with self._index_lock:
            out = self._vram_read_locked(offset, size)
        if self.gone_check is not None and size and out == b"\xff" * size:
            self.gone_check()
        return out

    def vram_write(self, offset: int, data: bytes) -> None:
        """VRAM bytes written through MM_INDEX/MM_INDEX_HI/MM_DATA (amdgpu_device_mm_access with write=true)."""
        if offset % 4 or len(data) % 4 or offset < 0:
            raise RegisterError(f"VRAM access through MM_INDEX/MM_DATA needs dword-aligned offset and size "
                                f"(got {len(data)} bytes at {offset:#x})")
        with self._index_lock:
            hi = None
            for i in range(0, len(data), 4):
                pos = offset + i
                writes = [(MM_INDEX * 4, (pos & 0x7FFFFFFF) | MM_INDEX_APERTURE)]
                if pos >> 31 != hi:
                    hi = pos >> 31
                    writes.append((MM_INDEX_HI * 4, hi))
                writes.append((MM_DATA * 4, int.from_bytes(data[i:i + 4], "little")))
                try:
                    self.mmio.write_many(writes)  # index and data in one batch: writes are posted in order
                except PCIError as e:
                    raise self._fail(f"writing VRAM {pos:#x} through MM_INDEX/MM_DATA", e) from e

    def _vram_read_locked(self, offset: int, size: int) -> bytes:
        out = bytearray()
        hi = None
        for pos in range(offset, offset + size, 4):
            writes = [(MM_INDEX * 4, (pos & 0x7FFFFFFF) | MM_INDEX_APERTURE)]
            if pos >> 31 != hi:
                hi = pos >> 31
                writes.append((MM_INDEX_HI * 4, hi))
            try:
                self.mmio.write_many(writes)
                value = self.mmio.read32(MM_DATA * 4)
            except PCIError as e:
                raise self._fail(f"reading VRAM {pos:#x} through MM_INDEX/MM_DATA", e) from e
            out += value.to_bytes(4, "little")
        return bytes(out)


__all__ = ["ALL_ONES", "DeviceGoneError", "FIXED", "IP_DISCOVERY_VERSION", "MM_DATA", "MM_INDEX", "MM_INDEX_HI",
           "MODULES", "MP0_SMN_C2PMSG_33", "RCC_CONFIG_MEMSIZE", "Reg", "RegisterError", "RegisterFile",
           "load_module", "module_names_for"]
