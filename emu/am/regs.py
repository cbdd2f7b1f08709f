"""The emulated AMD GPU's register file behind BAR5 (rmmio), addressed the way the hardware decodes it.

amdgpu reaches a register at byte offset (IP segment base + register dword offset) * 4 of BAR5 (amdgpu_device.c
amdgpu_device_rreg: `readl(adev->rmmio + reg * 4)`; SOC15_REG_OFFSET adds adev->reg_offset[ip][inst][seg], the
segment bases the IP discovery table lists). The register file holds the registers the bring-up touches, each with a
name from the kernel's register headers, a reset value, writable bits and optional read/write hooks. Anything else
is refused: an access no modelled register covers raises `RegisterError` (an OSError, so the PCI backends surface it
as the access failing: PCIError naming the register), and is logged in `errors` for tests.

Register names and offsets come from the generated modules under autogen/ (one per kernel header, named like it:
nbio_4_3_0, mp_13_0_2, gc_11_0_0, ...).
"""
from __future__ import annotations

import errno
import importlib
import importlib.util
import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Iterable, Optional

from drivers.system import OSCallError
from emu.am.discovery import Board

MASK32 = 0xFFFFFFFF

# Which kernel register header serves an IP at a version: the header the kernel's IP file for that version includes.
# (block, major, minor[, rev]) -> header module; a missing entry falls back to <prefix>_<major>_<minor>_<rev>.
HEADERS: dict[tuple, str] = {
    ("GC", 11, 0): "gc_11_0_0",       # gfx_v11_0.c includes gc/gc_11_0_0_offset.h for every GC 11.0.x
    ("SDMA0", 6, 0): "gc_11_0_0",     # sdma_v6_0.c: SDMA registers live in the GC 11 header
    ("GC", 12, 0): "gc_12_0_0",       # gfx_v12_0.c
    ("SDMA0", 7, 0): "gc_12_0_0",     # sdma_v7_0.c: SDMA registers live in the GC 12 header
    ("NBIF", 4, 3): "nbio_4_3_0",     # nbio_v4_3.c (NBIO 4.3.0 and 4.3.1)
    ("NBIF", 6, 3): "nbif_6_3_1",     # nbif_v6_3_1.c
    ("MP0", 13, 0): "mp_13_0_2",      # psp_v13_0.c includes mp/mp_13_0_2_offset.h for every MP0 13.0.x
    ("MP0", 14, 0): "mp_14_0_2",      # psp_v14_0.c
    ("MP1", 13, 0): "mp_13_0_0",      # soc21.c includes mp/mp_13_0_0_offset.h
    ("MP1", 14, 0): "mp_14_0_2",      # soc24.c includes mp/mp_14_0_2_offset.h
    ("OSSSYS", 6, 0): "osssys_6_0_0",  # ih_v6_0.c
    ("OSSSYS", 7, 0): "osssys_7_0_0",  # ih_v7_0.c
    ("HDP", 6, 0): "hdp_6_0_0",       # hdp_v6_0.c
    ("HDP", 7, 0): "hdp_7_0_0",       # hdp_v7_0.c
    ("MMHUB", 3, 0): "mmhub_3_0_0",   # mmhub_v3_0.c
    ("MMHUB", 3, 0, 2): "mmhub_3_0_2",  # mmhub_v3_0_2.c
    ("MMHUB", 4, 1): "mmhub_4_1_0",   # mmhub_v4_1_0.c
}
_PREFIX = {"GC": "gc", "SDMA0": "gc", "NBIF": "nbio", "MP0": "mp", "MP1": "mp", "OSSSYS": "osssys", "HDP": "hdp",
           "MMHUB": "mmhub", "ATHUB": "athub", "THM": "thm", "SMUIO": "smuio", "UMC": "umc", "DMU": "dcn",
           "VCN": "vcn"}


class RegisterError(OSCallError):
    """A register access the emulated GPU refuses (an unmodelled register, an MM_INDEX/MM_DATA access outside VRAM):
    an OSError with errno EIO, so the PCI backends report it as the MMIO access failing, with this message."""

    def __init__(self, message: str):
        super().__init__(errno.EIO, message)
        self.message = message


@dataclass
class Register:
    """One modelled register: its name (the kernel header's, without `reg`), where it sits (IP block name as the
    discovery table lists it, instance, segment, dword offset; block None = `offset` is an absolute dword address),
    its reset value and writable bits, and hooks. `on_read(reg) -> value` replaces the stored value on reads;
    `on_write(reg, value)` runs after the writable bits were stored (value is what the driver wrote)."""
    name: str
    block: Optional[str]
    offset: int
    seg: int = 0
    instance: int = 0
    reset: int = 0
    wmask: int = MASK32
    on_read: Optional[Callable[["Register"], int]] = None
    on_write: Optional[Callable[["Register", int], None]] = None
    aliases: tuple[str, ...] = ()
    value: int = field(default=0, init=False)
    address: int = field(default=-1, init=False)  # absolute dword address, set when added to a RegisterFile


@lru_cache(maxsize=None)
def _module_registers(module: str) -> dict[str, tuple[int, int]]:
    """name -> (offset, segment) of every register a generated header module carries."""
    out: dict[str, tuple[int, int]] = {}
    try:
        mod = importlib.import_module(f"autogen.{module}")
    except ModuleNotFoundError:
        return out
    for attr, value in vars(mod).items():
        if attr.startswith("reg") and not attr.endswith("_BASE_IDX") and isinstance(value, int):
            seg = getattr(mod, f"{attr}_BASE_IDX", None)
            if isinstance(seg, int):
                out[attr[3:]] = (value, seg)
    return out


@lru_cache(maxsize=None)
def _reverse(module: str) -> dict[tuple[int, int], str]:
    """(segment, offset) -> register name for a header module (the first name wins where headers alias)."""
    out: dict[tuple[int, int], str] = {}
    for name, (off, seg) in sorted(_module_registers(module).items()):
        out.setdefault((seg, off), name)
    return out


def header_for(block: str, version: tuple[int, int, int]) -> Optional[str]:
    """The generated header module for an IP block at a version: the one the kernel's IP file for that version
    includes (HEADERS, by full version, then by major.minor), else a module named for the exact version when autogen
    has one, else None."""
    major, minor, rev = version
    known = HEADERS.get((block, major, minor, rev)) or HEADERS.get((block, major, minor))
    if known is not None:
        return known
    prefix = _PREFIX.get(block)
    if prefix is None:
        return None
    exact = f"{prefix}_{major}_{minor}_{rev}"
    if importlib.util.find_spec(f"autogen.{exact}") is not None:
        return exact
    return None


class RegisterFile:
    """The registers of one card behind BAR5, addressed as (segment base + dword offset) * 4.

    `add` places a Register (its address from the board's discovery bases); `define` does the same taking the
    offset and segment from the register's header. `read32`/`write32` are the MMIO handler of BAR5. `errors` lists
    every refused access in words, `log` the last accesses ((kind, name, value)), `counts` accesses per register.
    `power_on()` puts every register back to its reset value."""

    def __init__(self, board: Board, *, bar_size: int = 1 << 20, log_size: int = 4096,
                 on_error: Optional[Callable[[str], None]] = None):
        self.board = board
        self.bar_size = bar_size
        self.lock = threading.RLock()
        self.errors: list[str] = []
        self.log: deque[tuple[str, str, int]] = deque(maxlen=log_size)
        self.counts: Counter[str] = Counter()
        self.on_error = on_error
        self._by_addr: dict[int, Register] = {}
        self._by_name: dict[str, Register] = {}

    # -- placement --
    def segment_base(self, block: str, seg: int, instance: int = 0) -> int:
        """The dword base of `block` instance `instance` segment `seg`, as the discovery table lists it."""
        bases = self.board.block(block).bases
        if not 0 <= instance < len(bases) or not 0 <= seg < len(bases[instance]):
            raise ValueError(f"{self.board.product}: {block} has no instance {instance} segment {seg} "
                             f"(bases {[[hex(b) for b in i] for i in bases]})")
        return bases[instance][seg]

    def header(self, block: str) -> Optional[str]:
        """The generated header module this board's `block` takes its register names from."""
        return header_for(block, self.board.block(block).version)

    def add(self, reg: Register) -> Register:
        """Model `reg`: compute its address and make it answer there (ValueError if another register is there)."""
        addr = reg.offset if reg.block is None else self.segment_base(reg.block, reg.seg, reg.instance) + reg.offset
        with self.lock:
            clash = self._by_addr.get(addr)
            if clash is not None:
                raise ValueError(f"{reg.name} would sit at dword {addr:#x}, where {clash.name} already is")
            for n in (reg.name, *reg.aliases):
                if n in self._by_name:
                    raise ValueError(f"a register named {n} is already modelled")
            reg.address, reg.value = addr, reg.reset & MASK32
            self._by_addr[addr] = reg
            for n in (reg.name, *reg.aliases):
                self._by_name[n] = reg
        return reg

    def define(self, name: str, block: str, *, instance: int = 0, names: Iterable[str] = (), **kw) -> Register:
        """Model the register `name` of `block` (or the first of `names` its header carries, for registers a header
        version renames), with offset and segment from the block's header module."""
        module = self.header(block)
        if module is None:
            raise ValueError(f"no register header is known for {block} {self.board.block(block).version}")
        table = _module_registers(module)
        for n in (name, *names):
            if n in table:
                off, seg = table[n]
                aliases = tuple(a for a in (name, *names) if a != n) + tuple(kw.pop("aliases", ()))
                return self.add(Register(n, block, off, seg=seg, instance=instance, aliases=aliases, **kw))
        raise ValueError(f"{module} carries none of {[name, *names]}: check the names against its kernel header, or "
                         "widen the module's macro filter in autogen/generator/sources.py")

    def reg(self, name: str) -> Register:
        """A modelled register by name or alias (KeyError listing what is modelled)."""
        try:
            return self._by_name[name]
        except KeyError:
            modelled = sorted(r.name for r in self._by_addr.values())
            raise KeyError(f"{name} is not a modelled register; modelled: {modelled}") from None

    def registers(self) -> list[Register]:
        return sorted(self._by_addr.values(), key=lambda r: r.address)

    def power_on(self) -> None:
        """Every register back to its reset value (a cold power-on or a function reset)."""
        with self.lock:
            for r in self._by_addr.values():
                r.value = r.reset & MASK32

    # -- naming --
    def describe(self, addr: int) -> str:
        """A dword address as the kernel headers name it: 'NAME (GC 11.0.0 seg 0 + 0x1234)', or the nearest segment
        with 'no register of <header> there' when no header names it."""
        cands = []
        for ip in self.board.ips:
            for inst, bases in enumerate(ip.bases):
                for seg, base in enumerate(bases):
                    if base <= addr:
                        cands.append((addr - base, ip, inst, seg))
        cands.sort(key=lambda c: c[0])
        seen = set()
        for off, ip, inst, seg in cands:
            module = header_for(ip.name, ip.version)
            if module is None or (module, seg, off) in seen:
                continue
            seen.add((module, seg, off))
            name = _reverse(module).get((seg, off))
            if name is not None:
                return f"{name} ({_where(ip, inst, seg, off)})"
        if not cands:
            return f"(dword {addr:#x}: below every IP segment base)"
        off, ip, inst, seg = cands[0]
        module = header_for(ip.name, ip.version)
        return f"at {_where(ip, inst, seg, off)} (no register of {module or 'any generated header'} there)"

    # -- MMIO --
    def _lookup(self, byte_offset: int, what: str) -> Register:
        if byte_offset & 3 or not 0 <= byte_offset < self.bar_size:
            raise self._error(f"register {what} at BAR5 + {byte_offset:#x}: not a 4-byte-aligned offset inside the "
                              f"{self.bar_size:#x}-byte register BAR")
        reg = self._by_addr.get(byte_offset >> 2)
        if reg is None:
            raise self._error(f"unmodelled register {self.describe(byte_offset >> 2)} {what} at BAR5 + "
                              f"{byte_offset:#x}: the emulated {self.board.product} does not model it (model it in "
                              "emu/am, or check the driver's register base and offset)")
        return reg

    def _error(self, message: str) -> RegisterError:
        with self.lock:
            self.errors.append(message)
        if self.on_error is not None:
            self.on_error(message)
        return RegisterError(message)

    def read32(self, byte_offset: int) -> int:
        """A 32-bit register read at a BAR5 byte offset (RegisterError for an unmodelled one)."""
        with self.lock:
            reg = self._lookup(byte_offset, "read")
            value = (reg.on_read(reg) if reg.on_read else reg.value) & MASK32
            self.counts[reg.name] += 1
            self.log.append(("read", reg.name, value))
            return value

    def write32(self, byte_offset: int, value: int) -> None:
        """A 32-bit register write at a BAR5 byte offset: the writable bits are stored, then the write hook runs."""
        value &= MASK32
        with self.lock:
            reg = self._lookup(byte_offset, f"written {value:#x}")
            reg.value = (reg.value & ~reg.wmask | value & reg.wmask) & MASK32
            self.counts[reg.name] += 1
            self.log.append(("write", reg.name, value))
            if reg.on_write:
                reg.on_write(reg, value)

    def read(self, name: str) -> int:
        """A register's value by name, as the driver would read it (hooks run; for tests and other blocks)."""
        return self.read32(self.reg(name).address * 4)

    def write(self, name: str, value: int) -> None:
        """Write a register by name, as the driver would (mask and hooks apply)."""
        self.write32(self.reg(name).address * 4, value)


def _where(ip, inst: int, seg: int, off: int) -> str:
    ver = ".".join(map(str, ip.version))
    return f"{ip.name}{'' if inst == 0 else f' inst {inst}'} {ver} seg {seg} + {off:#x}"


# -- the registers the bring-up touches first --
MM_INDEX_APER = 1 << 31  # amdgpu_device_mm_access sets bit 31 of MM_INDEX: the index addresses VRAM, not registers
IFWI_INIT_DONE = 1 << 31  # amdgpu_discovery_read_binary_from_mem polls bit 31 of MP0_SMN_C2PMSG_33
GRBM_GUI_ACTIVE = 1 << 31  # gc_11_0_0_sh_mask.h / gc_12_0_0_sh_mask.h GRBM_STATUS__GUI_ACTIVE_MASK
IP_DISCOVERY_VERSION_ADDR = 0x16A00  # amdgpu_discovery.c mmIP_DISCOVERY_VERSION


class VRAMPort:
    """What the register file needs of VRAM for MM_INDEX/MM_DATA: its size and dword reads/writes."""

    def __init__(self, size: int, read32: Callable[[int], int], write32: Callable[[int, int], None]):
        self.size, self.read32, self.write32 = size, read32, write32


def install_boot_registers(rf: RegisterFile, *, vram: VRAMPort, ifwi_ready: Callable[[], bool],
                           gfx_busy: Callable[[], bool] = lambda: False) -> None:
    """Model the registers that come before any IP is brought up:
    - MM_INDEX / MM_INDEX_HI / MM_DATA (NBIO/NBIF seg 0 + 0, 6, 1): VRAM (bit 31 of MM_INDEX set) or registers (clear)
      through an index, as amdgpu_device_mm_access uses them: address = MM_INDEX_HI << 31 | MM_INDEX[30:0].
    - RCC_CONFIG_MEMSIZE (NBIO seg 2 + 0xc3): VRAM size in MiB, read-only (amdgpu_discovery: `<< 20`).
    - MP0_SMN_C2PMSG_33 (MP0 seg 0 + 0x61): bit 31 once the IFWI has put the discovery table in VRAM.
    - GRBM_STATUS (GC seg 0 + 0xda4): GUI_ACTIVE while `gfx_busy()`; read-only.
    - IP_DISCOVERY_VERSION (dword 0x16a00): 4 on a discovery-v4 board, else 0; read-only."""
    idx = rf.define("BIF_BX_PF0_MM_INDEX", "NBIF", aliases=("MM_INDEX",))
    hi = rf.define("BIF_BX_PF0_MM_INDEX_HI", "NBIF", aliases=("MM_INDEX_HI",))
    # MM_INDEX/MM_DATA themselves cannot be reached through the index (it would recurse); the hardware never needs it.
    self_regs = {idx.address}

    def target() -> tuple[bool, int]:
        if idx.value & MM_INDEX_APER:
            return True, hi.value << 31 | idx.value & ~MM_INDEX_APER
        return False, idx.value & ~MM_INDEX_APER

    def check_vram(addr: int, what: str) -> None:
        if addr & 3 or not 0 <= addr <= vram.size - 4:
            raise rf._error(f"MM_DATA {what} at VRAM address {addr:#x} (MM_INDEX {idx.value:#x}, MM_INDEX_HI "
                            f"{hi.value:#x}): not a 4-byte-aligned address inside the {vram.size:#x} bytes of VRAM")

    def check_reg(off: int, what: str) -> None:
        if off >> 2 in self_regs:
            raise rf._error(f"MM_DATA {what} through MM_INDEX {idx.value:#x}: the index registers cannot be reached "
                            "through themselves")

    def data_read(reg: Register) -> int:
        is_vram, addr = target()
        if is_vram:
            check_vram(addr, "read")
            return vram.read32(addr)
        check_reg(addr, "read")
        return rf.read32(addr)

    def data_write(reg: Register, value: int) -> None:
        is_vram, addr = target()
        if is_vram:
            check_vram(addr, f"write of {value:#x}")
            vram.write32(addr, value)
            return
        check_reg(addr, f"write of {value:#x}")
        rf.write32(addr, value)

    data = rf.define("BIF_BX_PF0_MM_DATA", "NBIF", aliases=("MM_DATA",), on_read=data_read, on_write=data_write)
    self_regs |= {hi.address, data.address}
    rf.define("RCC_DEV0_EPF0_RCC_CONFIG_MEMSIZE", "NBIF", aliases=("RCC_CONFIG_MEMSIZE",), reset=vram.size >> 20,
              wmask=0)
    # The mailbox is writable by the host (bits 30:0 here); bit 31 is the IFWI's, set once its init completed.
    rf.define("MP0_SMN_C2PMSG_33", "MP0", names=("MPASP_SMN_C2PMSG_33",), wmask=~IFWI_INIT_DONE & MASK32,
              on_read=lambda r: r.value | (IFWI_INIT_DONE if ifwi_ready() else 0))
    rf.define("GRBM_STATUS", "GC", wmask=0, on_read=lambda r: r.value | (GRBM_GUI_ACTIVE if gfx_busy() else 0))
    # amdgpu_discovery.c mmIP_DISCOVERY_VERSION (a fixed dword address, read on its error path and compared with 4):
    # 4 on boards whose table is IP discovery v4, 0 otherwise (the emulator's choice: the kernel only tests for 4).
    rf.add(Register("IP_DISCOVERY_VERSION", None, IP_DISCOVERY_VERSION_ADDR, wmask=0,
                    reset=4 if rf.board.ip_header_version == 4 else 0))
