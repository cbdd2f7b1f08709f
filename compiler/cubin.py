"""Our reader for NVIDIA cubins: the ELF64 file ptxas writes for one sm_XX (e_machine EM_CUDA, 190).

What a loader needs of a kernel `k` lives in sections named after it: `.text.k` (SASS), `.nv.info.k` (the kernel's
attributes: parameter layout, the parameter constant bank, required block shape, exit offsets, ...),
`.nv.constant0.k` (the constant bank the launch fills with the parameters), `.nv.constantN.k` (other constant banks
the code reads, to upload), `.nv.shared.k` (static shared memory, NOBITS), and records about `k` in the file-wide
`.nv.info` (registers, stack frame). Module-wide data is in `.nv.global` (NOBITS) and `.nv.global.init`.

`.nv.info*` sections are a list of records: u8 format, u8 attribute, then for EIFMT_NVAL a u16 that is unused, for
EIFMT_BVAL and EIFMT_HVAL a u16 value, for EIFMT_SVAL a u16 size and that many bytes. NVIDIA documents none of
this. The attribute names and codes (EIATTR_*), formats (EIFMT_*) and relocation type names (R_CUDA_*) here are the
ones NVIDIA's own `cuobjdump -elf` prints (CUDA 13.0), matched by code against public reverse-engineered tables:
CuAssembler (github.com/cloudcores/CuAssembler, CuAsm/CuNVInfo.py: EIFMT_* and EIATTR_* codes) and GVirtuS
(github.com/gvirtus/GVirtuS, its cudart plugin's internal header: EIATTR_* codes and what FRAME_SIZE and
MIN_STACK_SIZE mean). Record layouts (which u32 is a symbol index, the bit fields of KPARAM_INFO) were read from
ptxas 13.0 cubins of our kernels next to cuobjdump's decoding of the same bytes; tests/compiler/test_cubin.py keeps
checking them against cuobjdump wherever it is installed.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from typing import Optional

from compiler.elf import ELFError

EM_CUDA = 190
ET_EXEC = 2
SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_RELA, SHT_NOBITS, SHT_REL = 1, 2, 3, 4, 8, 9
SHT_CUDA_INFO = 0x70000000  # .nv.info and .nv.info.<kernel>
SHF_ALLOC = 0x2
STT_FUNC = 2

# e_flags: cubins with EI_ABIVERSION 8 (ptxas 13: cuobjdump prints "ABI=8, sm=90, flags=0x6005a04") keep the SM
# number in bits 15:8; older ones (EI_ABIVERSION 7) keep it in bits 7:0 (EF_CUDA_SM in public cubin writers).
ABI_SM_IN_BITS_8 = 8

# Record formats (CuAssembler CuNVInfo.EIFMT; cuobjdump prints the same names)
EIFMT_NVAL, EIFMT_BVAL, EIFMT_HVAL, EIFMT_SVAL = 1, 2, 3, 4
EIFMT = {EIFMT_NVAL: "EIFMT_NVAL", EIFMT_BVAL: "EIFMT_BVAL", EIFMT_HVAL: "EIFMT_HVAL", EIFMT_SVAL: "EIFMT_SVAL"}

# Attribute codes (see the module docstring for the sources); the ones ptxas emits for our kernels, and the ones a
# loader must know of to refuse a kernel it cannot serve. Any other code is kept raw under EIATTR_UNKNOWN_<code>.
EIATTR_CTAIDZ_USED = 0x04
EIATTR_MAX_THREADS = 0x05  # SVAL: u32 x, y, z (.maxntid)
EIATTR_PARAM_CBANK = 0x0A  # SVAL: u32 symbol of .nv.constant0.<k>, u16 offset of the parameters, u16 their size
EIATTR_EXTERNS = 0x0F
EIATTR_REQNTID = 0x10  # SVAL: u32 x, y, z (.reqntid)
EIATTR_FRAME_SIZE = 0x11  # .nv.info SVAL: u32 symbol, u32 bytes of this function's own stack frame
EIATTR_MIN_STACK_SIZE = 0x12  # .nv.info SVAL: u32 symbol, u32 bytes of stack a launch of it needs (callees included)
EIATTR_KPARAM_INFO = 0x17  # SVAL: u32 index, u16 ordinal, u16 offset, u32 fields (see KParam)
EIATTR_CBANK_PARAM_SIZE = 0x19  # HVAL: bytes of parameters
EIATTR_MAXREG_COUNT = 0x1B  # HVAL: the register limit it was built under
EIATTR_EXIT_INSTR_OFFSETS = 0x1C  # SVAL: u32 offsets of EXIT instructions in .text.<k>
EIATTR_S2RCTAID_INSTR_OFFSETS = 0x1D
EIATTR_CRS_STACK_SIZE = 0x1E
EIATTR_MAX_STACK_SIZE = 0x23  # .nv.info SVAL: u32 symbol, u32 bytes
EIATTR_COOP_GROUP_INSTR_OFFSETS = 0x28
EIATTR_REGCOUNT = 0x2F  # .nv.info SVAL: u32 symbol, u32 registers per thread
EIATTR_SW2861232_WAR = 0x35
EIATTR_SW_WAR = 0x36
EIATTR_CUDA_API_VERSION = 0x37  # SVAL: u32 (0x82 = 130 for CUDA 13.0)
EIATTR_NUM_BARRIERS = 0x4C  # BVAL: named barriers the kernel uses
EIATTR_SPARSE_MMA_MASK = 0x50

EIATTR = {
    0x01: "EIATTR_PAD", 0x02: "EIATTR_IMAGE_SLOT", 0x03: "EIATTR_JUMPTABLE_RELOCS", 0x04: "EIATTR_CTAIDZ_USED",
    0x05: "EIATTR_MAX_THREADS", 0x06: "EIATTR_IMAGE_OFFSET", 0x07: "EIATTR_IMAGE_SIZE",
    0x08: "EIATTR_TEXTURE_NORMALIZED", 0x09: "EIATTR_SAMPLER_INIT", 0x0A: "EIATTR_PARAM_CBANK",
    0x0B: "EIATTR_SMEM_PARAM_OFFSETS", 0x0C: "EIATTR_CBANK_PARAM_OFFSETS", 0x0D: "EIATTR_SYNC_STACK",
    0x0E: "EIATTR_TEXID_SAMPID_MAP", 0x0F: "EIATTR_EXTERNS", 0x10: "EIATTR_REQNTID", 0x11: "EIATTR_FRAME_SIZE",
    0x12: "EIATTR_MIN_STACK_SIZE", 0x13: "EIATTR_SAMPLER_FORCE_UNNORMALIZED", 0x14: "EIATTR_BINDLESS_IMAGE_OFFSETS",
    0x15: "EIATTR_BINDLESS_TEXTURE_BANK", 0x16: "EIATTR_BINDLESS_SURFACE_BANK", 0x17: "EIATTR_KPARAM_INFO",
    0x18: "EIATTR_SMEM_PARAM_SIZE", 0x19: "EIATTR_CBANK_PARAM_SIZE", 0x1A: "EIATTR_QUERY_NUMATTRIB",
    0x1B: "EIATTR_MAXREG_COUNT", 0x1C: "EIATTR_EXIT_INSTR_OFFSETS", 0x1D: "EIATTR_S2RCTAID_INSTR_OFFSETS",
    0x1E: "EIATTR_CRS_STACK_SIZE", 0x1F: "EIATTR_NEED_CNP_WRAPPER", 0x20: "EIATTR_NEED_CNP_PATCH",
    0x21: "EIATTR_EXPLICIT_CACHING", 0x22: "EIATTR_ISTYPEP_USED", 0x23: "EIATTR_MAX_STACK_SIZE",
    0x24: "EIATTR_SUQ_USED", 0x25: "EIATTR_LD_CACHEMOD_INSTR_OFFSETS", 0x26: "EIATTR_LOAD_CACHE_REQUEST",
    0x27: "EIATTR_ATOM_SYS_INSTR_OFFSETS", 0x28: "EIATTR_COOP_GROUP_INSTR_OFFSETS",
    0x29: "EIATTR_COOP_GROUP_MASK_REGIDS", 0x2A: "EIATTR_SW1850030_WAR", 0x2B: "EIATTR_WMMA_USED",
    0x2C: "EIATTR_HAS_PRE_V10_OBJECT", 0x2D: "EIATTR_ATOMF16_EMUL_INSTR_OFFSETS",
    0x2E: "EIATTR_ATOM16_EMUL_INSTR_REG_MAP", 0x2F: "EIATTR_REGCOUNT", 0x30: "EIATTR_SW2393858_WAR",
    0x31: "EIATTR_INT_WARP_WIDE_INSTR_OFFSETS", 0x32: "EIATTR_SHARED_SCRATCH", 0x33: "EIATTR_STATISTICS",
    0x34: "EIATTR_INDIRECT_BRANCH_TARGETS", 0x35: "EIATTR_SW2861232_WAR", 0x36: "EIATTR_SW_WAR",
    0x37: "EIATTR_CUDA_API_VERSION", 0x38: "EIATTR_NUM_MBARRIERS", 0x39: "EIATTR_MBARRIER_INSTR_OFFSETS",
    0x3A: "EIATTR_COROUTINE_RESUME_ID_OFFSETS", 0x3B: "EIATTR_SAM_REGION_STACK_SIZE",
    0x3C: "EIATTR_PER_REG_TARGET_PERF_STATS", 0x3D: "EIATTR_CTA_PER_CLUSTER", 0x3E: "EIATTR_EXPLICIT_CLUSTER",
    0x3F: "EIATTR_MAX_CLUSTER_RANK", 0x40: "EIATTR_INSTR_REG_MAP", 0x41: "EIATTR_RESERVED_SMEM_USED",
    0x42: "EIATTR_RESERVED_SMEM_0_SIZE", 0x43: "EIATTR_UCODE_SECTION_DATA", 0x44: "EIATTR_UNUSED_LOAD_BYTE_OFFSET",
    0x45: "EIATTR_KPARAM_INFO_V2", 0x46: "EIATTR_SYSCALL_OFFSETS", 0x47: "EIATTR_SW_WAR_MEMBAR_SYS_INSTR_OFFSETS",
    0x48: "EIATTR_GRAPHICS_GLOBAL_CBANK", 0x49: "EIATTR_SHADER_TYPE", 0x4A: "EIATTR_VRC_CTA_INIT_COUNT",
    0x4B: "EIATTR_TOOLS_PATCH_FUNC", 0x4C: "EIATTR_NUM_BARRIERS", 0x4D: "EIATTR_TEXMODE_INDEPENDENT",
    0x4E: "EIATTR_PERF_STATISTICS", 0x4F: "EIATTR_AT_ENTRY_FRAGMENTS", 0x50: "EIATTR_SPARSE_MMA_MASK",
}
# Records in the file-wide .nv.info that are about one function: u32 symbol index, then u32 value.
PER_FUNCTION = (EIATTR_REGCOUNT, EIATTR_FRAME_SIZE, EIATTR_MIN_STACK_SIZE, EIATTR_MAX_STACK_SIZE)

# Relocation type names (cuobjdump prints R_CUDA_64 for the .debug_frame relocation ptxas emits). This loader
# resolves none: a relocation into a section it uploads is refused by name.
R_CUDA = {0: "R_CUDA_NONE", 1: "R_CUDA_32", 2: "R_CUDA_64", 0x2A: "R_CUDA_ABS32_20", 0x2B: "R_CUDA_ABS32_LO_20",
          0x2C: "R_CUDA_ABS32_HI_20", 0x37: "R_CUDA_ABS32_32", 0x38: "R_CUDA_ABS32_LO_32", 0x39: "R_CUDA_ABS32_HI_32",
          0x3A: "R_CUDA_ABS47_34"}

# CUDA reserves 1 KiB of shared memory per thread block for the system on compute capability 8.0 and later (CUDA C++
# Programming Guide, "Technical Specifications per Compute Capability": reserved shared memory per block;
# cudaDevAttrReservedSharedMemoryPerBlock). ptxas 13 for sm_90 makes it part of the kernel's shared window: the file
# has a `.nv.shared.reserved.0` section, `.nv.shared.<k>` counts the 1 KiB too, and the kernel's own arrays start at
# offset 0x400 (its SASS addresses them from 0x400). Cubins without that section leave the reservation to the driver.
RESERVED_SHARED_BYTES = 1024
MAX_THREADS_PER_BLOCK = 1024  # every sm_XX from 2.0 on; the limit when the cubin records none
_CONSTANT = re.compile(r"\.nv\.constant(\d+)(?:\.(.+))?")


class CubinError(ELFError):
    """Not a cubin this reader understands, or a kernel a loader cannot serve; the message says what was wrong."""


@dataclass(frozen=True)
class CubinSection:
    index: int
    name: str
    type: int
    flags: int
    offset: int
    size: int
    link: int
    info: int
    entsize: int


@dataclass(frozen=True)
class CubinSymbol:
    index: int
    name: str
    info: int  # type in bits 3:0, binding in 7:4
    other: int
    section: int
    value: int
    size: int

    @property
    def type(self) -> int:
        return self.info & 0xF


@dataclass(frozen=True)
class Relocation:
    """One REL/RELA entry: applied at `offset` in section `section`, of `type` against `symbol`."""
    section: str
    offset: int
    type: int
    symbol: str
    addend: int = 0

    @property
    def type_name(self) -> str:
        return R_CUDA.get(self.type, f"R_CUDA type {self.type:#x}")


@dataclass(frozen=True)
class Attribute:
    """One .nv.info record: its format, attribute code, and payload (the u16 value for BVAL/HVAL, bytes for SVAL)."""
    fmt: int
    code: int
    value: Optional[int]  # BVAL, HVAL: the u16; NVAL, SVAL: None
    data: bytes = b""  # SVAL: the payload

    @property
    def name(self) -> str:
        return EIATTR.get(self.code, f"EIATTR_UNKNOWN_{self.code:#04x}")

    @property
    def words(self) -> tuple[int, ...]:
        """An SVAL payload as little-endian u32s (its length must be a multiple of 4)."""
        if len(self.data) % 4:
            raise CubinError(f"{self.name}: a payload of {len(self.data)} bytes is not a list of u32s")
        return struct.unpack(f"<{len(self.data) // 4}I", self.data)


@dataclass(frozen=True)
class KParam:
    """EIATTR_KPARAM_INFO: parameter `ordinal` at `offset` in the parameter block, `size` bytes. The last u32 holds,
    from bit 0: pointee log2 alignment (8 bits), space (4), constant bank (5), a flag that is 0 for parameters in
    the constant bank (1), size in bytes (14) — as cuobjdump decodes them."""
    index: int
    ordinal: int
    offset: int
    size: int
    log_alignment: int
    space: int
    cbank: int
    in_cbank: bool

    @classmethod
    def parse(cls, a: Attribute) -> "KParam":
        if len(a.data) != 12:
            raise CubinError(f"EIATTR_KPARAM_INFO is 12 bytes, got {len(a.data)}")
        index, ordinal, offset, bits = struct.unpack("<IHHI", a.data)
        return cls(index, ordinal, offset, bits >> 18, bits & 0xFF, (bits >> 8) & 0xF, (bits >> 12) & 0x1F,
                   not (bits >> 17) & 1)


def parse_nv_info(data: bytes, where: str) -> list[Attribute]:
    """The records of one .nv.info section; a truncated record or an unknown format is an error (the format says
    how long the record is, so nothing after it could be read)."""
    out, pos = [], 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise CubinError(f"{where}: record at {pos:#x} is cut off ({len(data) - pos} bytes left, a header is 4)")
        fmt, code, half = struct.unpack_from("<BBH", data, pos)
        pos += 4
        if fmt == EIFMT_SVAL:
            if pos + half > len(data):
                raise CubinError(f"{where}: {EIATTR.get(code, hex(code))} at {pos - 4:#x} says {half} bytes, only "
                                 f"{len(data) - pos} are left")
            out.append(Attribute(fmt, code, None, bytes(data[pos:pos + half])))
            pos += half
        elif fmt in (EIFMT_BVAL, EIFMT_HVAL):
            out.append(Attribute(fmt, code, half))
        elif fmt == EIFMT_NVAL:
            out.append(Attribute(fmt, code, None))
        else:
            raise CubinError(f"{where}: record at {pos - 4:#x} has format {fmt}, none of EIFMT_NVAL/BVAL/HVAL/SVAL "
                             "(1-4)")
    return out


EMULATION_RECORD_PREFIX = "__baregpu_nvhost_"  # compiler.emulation.with_nv_host_build's global


@dataclass
class CubinKernel:
    """What a launch needs of one kernel of a cubin, read from its sections and attributes."""
    name: str
    sm: int  # 90 for sm_90
    text: bytes  # .text.<name>: the SASS, uploaded as is
    registers: int  # per thread (EIATTR_REGCOUNT)
    shared_bytes: int  # the kernel's own static shared memory
    reserved_shared_bytes: int  # the system's shared memory at the start of the window (sm_90 cubins), else 0
    local_bytes: int  # local memory (stack) per thread: the larger of EIATTR_MIN_STACK_SIZE and EIATTR_FRAME_SIZE
    max_threads: int  # threads per block it allows: EIATTR_MAX_THREADS, else EIATTR_REQNTID, else 1024
    reqntid: Optional[tuple[int, int, int]]  # the block shape it requires, when it requires one
    params: list[KParam]  # in ordinal order
    param_bank_offset: int  # where the parameters start in constant bank 0 (EIATTR_PARAM_CBANK)
    param_bank_size: int  # bytes of parameters (EIATTR_CBANK_PARAM_SIZE)
    constant0_bytes: int  # size of .nv.constant0.<name>: the driver's area below the parameters, and the parameters
    constant_banks: dict[int, bytes]  # other constant banks the code reads (bank -> initial contents), to upload
    barriers: int  # named barriers (EIATTR_NUM_BARRIERS; 0 when absent)
    exit_offsets: tuple[int, ...]
    attributes: list[Attribute] = field(repr=False)  # .nv.info.<name>'s records, then .nv.info's records about it
    relocations: list[Relocation] = field(default_factory=list, repr=False)  # those that touch nothing uploaded

    @property
    def target(self) -> str:
        return f"sm_{self.sm}"

    @property
    def shared_window_bytes(self) -> int:
        """Shared memory a launch reserves from the window's start: the system's part, then the kernel's."""
        return self.reserved_shared_bytes + self.shared_bytes

    @property
    def param_layout(self) -> list[tuple[int, int]]:
        """(offset, size) of each parameter in ordinal order, relative to the parameter block's start."""
        return [(p.offset, p.size) for p in self.params]

    def attribute(self, code: int) -> Optional[Attribute]:
        """The first record with this attribute code, or None."""
        return next((a for a in self.attributes if a.code == code), None)


class Cubin:
    """A parsed ELF64 little-endian cubin; `name` (e.g. the kernel's) is named in errors."""

    def __init__(self, data: bytes, name: str = ""):
        self.name = name or "cubin"
        data = bytes(data)
        if len(data) < 64 or data[:4] != b"\x7fELF":
            raise CubinError(f"{self.name}: not an ELF file (no \\x7fELF magic)")
        if data[4] != 2 or data[5] != 1:
            raise CubinError(f"{self.name}: not ELF64 little-endian (class {data[4]}, data encoding {data[5]})")
        self.data = data
        self.os_abi, self.abi_version = data[7], data[8]
        (self.e_type, self.e_machine, _ver, _entry, _phoff, shoff, self.e_flags, _ehsize, _phentsize, _phnum,
         shentsize, shnum, shstrndx) = struct.unpack_from("<HHIQQQIHHHHHH", data, 16)
        if self.e_machine != EM_CUDA:
            raise CubinError(f"{self.name}: machine {self.e_machine} is not NVIDIA CUDA ({EM_CUDA})")
        if shnum == 0:
            raise CubinError(f"{self.name}: no section headers")
        if shentsize != 64:
            raise CubinError(f"{self.name}: section header entries are {shentsize} bytes, ELF64's are 64")
        self._check(shoff, shnum * shentsize, "section headers")
        if not 0 <= shstrndx < shnum:
            raise CubinError(f"{self.name}: section name table index {shstrndx} is outside {shnum} sections")
        raw = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
        names = raw[shstrndx]
        self._check(names[4], names[5], "section name table")
        self.sections: list[CubinSection] = []
        for i, (sh_name, sh_type, flags, _addr, off, size, link, info, _align, entsize) in enumerate(raw):
            s = CubinSection(i, self._str(names[4], names[5], sh_name), sh_type, flags, off, size, link, info, entsize)
            if s.type != SHT_NOBITS:
                self._check(s.offset, s.size, f"section {s.name or i}")
            self.sections.append(s)
        self.by_name = {s.name: s for s in self.sections}
        self.symbols: list[CubinSymbol] = []
        symtab = next((s for s in self.sections if s.type == SHT_SYMTAB), None)
        if symtab is not None:
            strtab = self._section_index(symtab.link, f"string table of {symtab.name}")
            if symtab.size % 24:
                raise CubinError(f"{self.name}: {symtab.name} is {symtab.size} bytes, not a whole number of 24-byte "
                                 "symbols")
            for i in range(symtab.size // 24):
                st_name, st_info, st_other, shndx, value, size = struct.unpack_from("<IBBHQQ", data,
                                                                                    symtab.offset + i * 24)
                self.symbols.append(CubinSymbol(i, self._str(strtab.offset, strtab.size, st_name), st_info, st_other,
                                                shndx, value, size))
        self.relocations = self._relocations()
        self.info = parse_nv_info(self.section_data(".nv.info"), ".nv.info") if ".nv.info" in self.by_name else []

    def _check(self, offset: int, size: int, what: str) -> None:
        if offset < 0 or size < 0 or offset + size > len(self.data):
            raise CubinError(f"{self.name}: {what} at {offset:#x}+{size:#x} runs past the end of the file "
                             f"({len(self.data):#x} bytes)")

    def _str(self, table_off: int, table_size: int, idx: int) -> str:
        if idx >= table_size:
            raise CubinError(f"{self.name}: string offset {idx:#x} is outside its {table_size:#x}-byte table")
        end = self.data.find(b"\0", table_off + idx, table_off + table_size)
        if end < 0:
            raise CubinError(f"{self.name}: unterminated string at {table_off + idx:#x}")
        try:
            return self.data[table_off + idx:end].decode()
        except UnicodeDecodeError:
            raise CubinError(f"{self.name}: string at {table_off + idx:#x} is not UTF-8") from None

    def _section_index(self, idx: int, what: str) -> CubinSection:
        if not 0 <= idx < len(self.sections):
            raise CubinError(f"{self.name}: {what} is section {idx}, outside {len(self.sections)} sections")
        return self.sections[idx]

    def _symbol(self, idx: int, what: str) -> CubinSymbol:
        if not 0 <= idx < len(self.symbols):
            raise CubinError(f"{self.name}: {what} names symbol {idx}; the symbol table has {len(self.symbols)}")
        return self.symbols[idx]

    def _relocations(self) -> list[Relocation]:
        out = []
        for s in self.sections:
            if s.type not in (SHT_REL, SHT_RELA):
                continue
            entry = 24 if s.type == SHT_RELA else 16
            if s.size % entry:
                raise CubinError(f"{self.name}: {s.name} is {s.size} bytes, not a whole number of {entry}-byte entries")
            target = self._section_index(s.info, f"the section {s.name} applies to")
            for i in range(s.size // entry):
                if s.type == SHT_RELA:
                    offset, info, addend = struct.unpack_from("<QQq", self.data, s.offset + i * entry)
                else:
                    (offset, info), addend = struct.unpack_from("<QQ", self.data, s.offset + i * entry), 0
                sym = self._symbol(info >> 32, f"relocation {i} of {s.name}") if info >> 32 else None
                if offset >= target.size:
                    raise CubinError(f"{self.name}: relocation {i} of {s.name} at {offset:#x} is outside "
                                     f"{target.name} ({target.size:#x} bytes)")
                out.append(Relocation(target.name, offset, info & 0xFFFFFFFF, sym.name if sym else "", addend))
        return out

    @property
    def sm(self) -> int:
        """The SM number e_flags names (90 for sm_90)."""
        return (self.e_flags >> 8) & 0xFF if self.abi_version >= ABI_SM_IN_BITS_8 else self.e_flags & 0xFF

    def section_data(self, name: str) -> bytes:
        s = self.by_name.get(name)
        if s is None:
            raise CubinError(f"{self.name}: no section {name}")
        return b"" if s.type == SHT_NOBITS else self.data[s.offset:s.offset + s.size]

    @property
    def kernels(self) -> list[str]:
        """Kernels: function symbols defined in their own .text.<name> section that have .nv.info.<name>."""
        out = []
        for sym in self.symbols:
            if sym.type == STT_FUNC and 0 < sym.section < len(self.sections):
                if self.sections[sym.section].name == f".text.{sym.name}" and f".nv.info.{sym.name}" in self.by_name:
                    out.append(sym.name)
        return out

    @property
    def global_bytes(self) -> int:
        """Module-wide device memory: .nv.global (zero-filled) plus .nv.global.init (initialised)."""
        return sum(self.by_name[n].size for n in (".nv.global", ".nv.global.init") if n in self.by_name)

    def kernel(self, name: str) -> CubinKernel:
        """Kernel `name` with what a launch needs; an error for what is missing or what a loader cannot serve."""
        if name not in self.kernels:
            raise CubinError(f"{self.name}: no kernel {name} (kernels: {self.kernels})")
        sym = next(s for s in self.symbols if s.name == name and s.type == STT_FUNC)
        where = f"{self.name}: kernel {name}"
        for r in self.relocations:
            target = self.by_name[r.section]
            # ptxas lists every visible global's address in .nv.constant4 for the loader; the emulation record
            # (compiler/emulation.py) is one no kernel code reads, so its slot may stay unresolved.
            if r.symbol and r.symbol.startswith(EMULATION_RECORD_PREFIX):
                continue
            if target.flags & SHF_ALLOC:
                raise CubinError(f"{where}: relocation {r.type_name} at {r.section}+{r.offset:#x} against "
                                 f"{r.symbol or 'no symbol'} would have to be resolved by the loader, and this one "
                                 "resolves none (a kernel that calls or takes the address of other code or data)")
        own = parse_nv_info(self.section_data(f".nv.info.{name}"), f".nv.info.{name}")
        about = [a for a in self.info if a.code in PER_FUNCTION and len(a.data) == 8 and a.words[0] == sym.index]
        per_fn = {a.code: a.words[1] for a in about}

        registers = per_fn.get(EIATTR_REGCOUNT, self.by_name[f".text.{name}"].info >> 24)
        if not registers:
            raise CubinError(f"{where}: no EIATTR_REGCOUNT in .nv.info, so its register count is unknown")
        params = sorted((KParam.parse(a) for a in own if a.code == EIATTR_KPARAM_INFO), key=lambda p: p.ordinal)
        if [p.ordinal for p in params] != list(range(len(params))):
            raise CubinError(f"{where}: parameter ordinals {[p.ordinal for p in params]} are not 0..{len(params) - 1}")
        for p in params:
            if not p.in_cbank:
                raise CubinError(f"{where}: parameter {p.ordinal} is not in the constant bank; only constant-bank "
                                 "parameters can be served")
        cbank_size = next((a.value for a in own if a.code == EIATTR_CBANK_PARAM_SIZE), None)
        cbank = next((a for a in own if a.code == EIATTR_PARAM_CBANK), None)
        if params and (cbank is None or cbank_size is None):
            raise CubinError(f"{where}: it takes parameters but has no EIATTR_PARAM_CBANK/EIATTR_CBANK_PARAM_SIZE")
        bank_offset, bank_size = 0, cbank_size or 0
        c0_name = f".nv.constant0.{name}"
        c0 = self.by_name.get(c0_name)
        if cbank is not None:
            if len(cbank.data) != 8:
                raise CubinError(f"{where}: EIATTR_PARAM_CBANK is 8 bytes, got {len(cbank.data)}")
            sym_idx, bank_offset, size = struct.unpack("<IHH", cbank.data)
            bank_sym = self._symbol(sym_idx, f"{where}: EIATTR_PARAM_CBANK")
            if bank_sym.section != (c0.index if c0 else -1):
                raise CubinError(f"{where}: EIATTR_PARAM_CBANK names symbol {bank_sym.name or sym_idx}, not {c0_name}")
            if size != bank_size:
                raise CubinError(f"{where}: EIATTR_PARAM_CBANK says {size} bytes of parameters, "
                                 f"EIATTR_CBANK_PARAM_SIZE {bank_size}")
            if bank_offset + bank_size > c0.size:
                raise CubinError(f"{where}: parameters at {bank_offset:#x}+{bank_size:#x} run past {c0_name} "
                                 f"({c0.size:#x} bytes)")
        for p in params:
            if p.offset + p.size > bank_size:
                raise CubinError(f"{where}: parameter {p.ordinal} at {p.offset}+{p.size} runs past the "
                                 f"{bank_size}-byte parameter block")

        banks: dict[int, bytes] = {}
        for s in self.sections:
            m = _CONSTANT.fullmatch(s.name)
            if m and m.group(1) != "0" and m.group(2) in (None, name):
                bank = int(m.group(1))
                if bank in banks:
                    raise CubinError(f"{where}: constant bank {bank} is given by both the module and the kernel")
                banks[bank] = self.section_data(s.name)

        shared = self.by_name.get(f".nv.shared.{name}")
        window = shared.size if shared is not None else 0
        reserved = 0
        if shared is not None and any(s.name.startswith(".nv.shared.reserved.") for s in self.sections):
            if window < RESERVED_SHARED_BYTES:
                raise CubinError(f"{where}: .nv.shared.{name} is {window} bytes, less than the "
                                 f"{RESERVED_SHARED_BYTES} the system part at its start takes")
            reserved = RESERVED_SHARED_BYTES

        reqntid = max_threads = None
        for a in own:
            if a.code in (EIATTR_REQNTID, EIATTR_MAX_THREADS):
                dims = a.words
                if len(dims) != 3:
                    raise CubinError(f"{where}: {a.name} holds {len(dims)} values, not x, y, z")
                if a.code == EIATTR_REQNTID:
                    reqntid = dims
                else:
                    max_threads = dims[0] * dims[1] * dims[2]
        if max_threads is None:
            max_threads = reqntid[0] * reqntid[1] * reqntid[2] if reqntid else MAX_THREADS_PER_BLOCK
        exits = next((a.words for a in own if a.code == EIATTR_EXIT_INSTR_OFFSETS), ())
        barriers = next((a.value for a in own if a.code == EIATTR_NUM_BARRIERS), 0)
        return CubinKernel(
            name=name, sm=self.sm, text=self.section_data(f".text.{name}"), registers=registers,
            shared_bytes=window - reserved, reserved_shared_bytes=reserved,
            local_bytes=max(per_fn.get(EIATTR_MIN_STACK_SIZE, 0), per_fn.get(EIATTR_FRAME_SIZE, 0)),
            max_threads=max_threads, reqntid=tuple(reqntid) if reqntid else None, params=params,
            param_bank_offset=bank_offset, param_bank_size=bank_size, constant0_bytes=c0.size if c0 else 0,
            constant_banks=banks, barriers=barriers, exit_offsets=tuple(exits), attributes=own + about,
            relocations=list(self.relocations))


def load_kernel(data: bytes, name: str) -> CubinKernel:
    """Kernel `name` of a cubin."""
    return Cubin(data, name).kernel(name)
