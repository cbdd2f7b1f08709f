"""Our reader for AMD code objects: ELF64 header, program headers, sections, symbols and notes; the kernel
descriptor at `<name>.kd`; and the code object v5 metadata note (MessagePack).

Layouts are the ELF64 specification's and LLVM's AMDGPUUsage document's ("ELF Code Object": header, note
records, "Code Object V3 to V6 Metadata"; "Kernel Descriptor" for code object v3 and later).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from compiler.msgpack import MsgpackError, unpackb

EM_AMDGPU = 224
ELFOSABI_AMDGPU_HSA = 64  # e_ident[EI_OSABI]; e_ident[EI_ABIVERSION] 3 means code object v5 (AMDGPUUsage)
# e_flags EF_AMDGPU_MACH values (AMDGPUUsage, "AMDGPU ELF Header", table "AMDGPU EF_AMDGPU_MACH Values")
EF_AMDGPU_MACH = {"gfx942": 0x04C, "gfx1100": 0x041, "gfx1201": 0x04E}
EF_AMDGPU_MACH_MASK = 0xFF
# Code object v4+ feature fields of e_flags: xnack in bits 9:8, sramecc in bits 11:10 (unsupported/any/off/on)
FEATURE_SETTING = {0: "unsupported", 1: "any", 2: "off", 3: "on"}
KERNEL_CODE_PROPERTY_ENABLE_SGPR_KERNARG_SEGMENT_PTR = 1 << 3  # kernel_code_properties bit 3 (AMDGPUUsage)
KERNEL_CODE_PROPERTY_WAVEFRONT_SIZE32 = 1 << 10  # kernel_code_properties bit 10 (AMDGPUUsage)
SHT_SYMTAB, SHT_NOTE, SHT_NOBITS, SHT_DYNSYM = 2, 7, 8, 11
NT_AMDGPU_METADATA = 32  # note type of the MessagePack metadata, under the note name "AMDGPU"


class ELFError(ValueError):
    """Not an AMD code object we understand; the message says what was wrong."""


@dataclass(frozen=True)
class Section:
    name: str
    type: int
    addr: int
    offset: int
    size: int


@dataclass(frozen=True)
class Segment:
    """A PT_LOAD program header: file bytes [offset, offset+filesz) go to vaddr, zero-filled up to memsz."""
    offset: int
    vaddr: int
    filesz: int
    memsz: int


@dataclass(frozen=True)
class Symbol:
    name: str
    value: int
    size: int
    section: int


@dataclass(frozen=True)
class Note:
    """One ELF note record: owner name, type and descriptor bytes."""
    name: str
    type: int
    desc: bytes


def _gfx_major(gfx: str) -> int:
    digits = gfx[3:]
    return int(digits[:-2]) if len(digits) > 2 else 0


@dataclass(frozen=True)
class KernelDescriptor:
    """The 64-byte descriptor the dispatch packet (or PM4 registers) take a kernel's resources from."""
    group_segment_fixed_size: int  # LDS bytes
    private_segment_fixed_size: int  # scratch bytes per work-item
    kernarg_size: int
    kernel_code_entry_byte_offset: int  # relative to the descriptor's address
    compute_pgm_rsrc3: int
    compute_pgm_rsrc1: int
    compute_pgm_rsrc2: int
    kernel_code_properties: int

    SIZE = 64

    @classmethod
    def parse(cls, raw: bytes) -> "KernelDescriptor":
        """Fields at their AMDGPUUsage offsets: 0, 4, 8 (u32), 16 (i64), then 44, 48, 52 (u32) and 56 (u16)."""
        if len(raw) < cls.SIZE:
            raise ELFError(f"a kernel descriptor is {cls.SIZE} bytes, got {len(raw)}")
        group, private, kernarg, _reserved, entry = struct.unpack_from("<IIIIq", raw, 0)
        rsrc3, rsrc1, rsrc2, props = struct.unpack_from("<IIIH", raw, 44)
        return cls(group, private, kernarg, entry, rsrc3, rsrc1, rsrc2, props)

    @property
    def wave32(self) -> bool:
        return bool(self.kernel_code_properties & KERNEL_CODE_PROPERTY_WAVEFRONT_SIZE32)

    @property
    def user_sgpr_count(self) -> int:
        """compute_pgm_rsrc2 bits 5:1: the user SGPRs the CP fills (2 when only the kernarg pointer is enabled)."""
        return (self.compute_pgm_rsrc2 >> 1) & 0x1F

    @property
    def uses_scratch(self) -> bool:
        """compute_pgm_rsrc2 bit 0 (ENABLE_PRIVATE_SEGMENT) or a nonzero private segment size."""
        return bool(self.compute_pgm_rsrc2 & 1) or self.private_segment_fixed_size > 0

    def vgpr_granule(self, gfx: str) -> int:
        """VGPRs per GRANULATED_WORKITEM_VGPR_COUNT step (AMDGPUUsage, compute_pgm_rsrc1 table): 8 on GFX90A/GFX942,
        8 on GFX10+ in wave32, 4 on GFX10+ in wave64 and on GFX6-GFX9."""
        if gfx in ("gfx90a", "gfx940", "gfx941", "gfx942", "gfx950"):
            return 8
        return 8 if _gfx_major(gfx) >= 10 and self.wave32 else 4

    def vgprs(self, gfx: str) -> int:
        """VGPRs allocated per work-item: (GRANULATED_WORKITEM_VGPR_COUNT + 1) * granule (rsrc1 bits 5:0)."""
        return ((self.compute_pgm_rsrc1 & 0x3F) + 1) * self.vgpr_granule(gfx)

    def sgprs(self, gfx: str) -> int:
        """SGPRs allocated per wavefront (rsrc1 bits 9:6, AMDGPUUsage): GFX9 encodes 2 * (ceil(n / 16) - 1), so
        (field / 2 + 1) * 16; GFX10 and later always allocate 128 and the field is 0; GFX6-8 use granules of 8."""
        field = (self.compute_pgm_rsrc1 >> 6) & 0xF
        major = _gfx_major(gfx)
        if major >= 10:
            return 128
        if major == 9:
            return (field // 2 + 1) * 16
        return (field + 1) * 8


class CodeObject:
    """A parsed ELF64 little-endian AMDGPU code object; `name` (e.g. the kernel's) is named in metadata errors."""

    def __init__(self, data: bytes, name: str = ""):
        self.name = name or "code object"
        data = bytes(data)
        if len(data) < 64 or data[:4] != b"\x7fELF":
            raise ELFError("not an ELF file (no \\x7fELF magic)")
        if data[4] != 2 or data[5] != 1:
            raise ELFError(f"not ELF64 little-endian (class {data[4]}, data encoding {data[5]})")
        self.data = data
        self.os_abi, self.abi_version = data[7], data[8]
        (self.e_type, self.e_machine, _ver, self.e_entry, phoff, shoff, self.e_flags, _ehsize, phentsize, phnum,
         shentsize, shnum, shstrndx) = struct.unpack_from("<HHIQQQIHHHHHH", data, 16)
        if self.e_machine != EM_AMDGPU:
            raise ELFError(f"machine {self.e_machine} is not AMDGPU ({EM_AMDGPU})")
        self._check(phoff, phnum * phentsize, "program headers")
        self._check(shoff, shnum * shentsize, "section headers")
        self.segments: list[Segment] = []
        for i in range(phnum):
            p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz, p_memsz, _align = struct.unpack_from(
                "<IIQQQQQQ", data, phoff + i * phentsize)
            if p_type == 1:  # PT_LOAD
                self._check(p_offset, p_filesz, f"segment {i}")
                self.segments.append(Segment(p_offset, p_vaddr, p_filesz, p_memsz))
        raw = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
        if shnum and not 0 <= shstrndx < shnum:
            raise ELFError(f"section name table index {shstrndx} is outside {shnum} sections")
        names = raw[shstrndx] if shnum else None
        self.sections = [Section(self._str(names[4], s[0]) if names else "", s[1], s[3], s[4], s[5]) for s in raw]
        for s in self.sections:
            if s.type != SHT_NOBITS:
                self._check(s.offset, s.size, f"section {s.name}")
        self.symbols: dict[str, Symbol] = {}
        for s in raw:
            if s[1] in (SHT_SYMTAB, SHT_DYNSYM):
                strtab = raw[s[6]][4]
                for off in range(s[4], s[4] + s[5], 24):
                    st_name, _info, _other, shndx, value, size = struct.unpack_from("<IBBHQQ", data, off)
                    name = self._str(strtab, st_name)
                    if name:
                        self.symbols[name] = Symbol(name, value, size, shndx)

    def _check(self, offset: int, size: int, what: str) -> None:
        if offset + size > len(self.data):
            raise ELFError(f"{what} at {offset:#x}+{size:#x} runs past the end of the file ({len(self.data):#x} bytes)")

    def _str(self, table_off: int, idx: int) -> str:
        try:
            end = self.data.index(b"\0", table_off + idx)
        except ValueError:
            raise ELFError(f"unterminated string at {table_off + idx:#x}") from None
        return self.data[table_off + idx:end].decode()

    @property
    def mach(self) -> int:
        return self.e_flags & EF_AMDGPU_MACH_MASK

    @property
    def xnack(self) -> str:
        return FEATURE_SETTING[(self.e_flags >> 8) & 3]

    @property
    def sramecc(self) -> str:
        return FEATURE_SETTING[(self.e_flags >> 10) & 3]

    def file_offset(self, vaddr: int) -> int:
        for s in self.sections:
            if s.addr <= vaddr < s.addr + s.size and s.type != SHT_NOBITS:
                return s.offset + (vaddr - s.addr)
        raise ELFError(f"address {vaddr:#x} is in no section with file contents")

    def image(self) -> bytes:
        """The loaded image: every PT_LOAD segment at its virtual address (what a loader copies to GPU memory)."""
        size = max((sg.vaddr + sg.memsz for sg in self.segments), default=0)
        img = bytearray(size)
        for sg in self.segments:
            img[sg.vaddr:sg.vaddr + sg.filesz] = self.data[sg.offset:sg.offset + sg.filesz]
        return bytes(img)

    def notes(self) -> list[Note]:
        """Every record of every SHT_NOTE section: namesz, descsz, type, then name and desc each padded to 4 bytes."""
        out = []
        for s in self.sections:
            if s.type != SHT_NOTE:
                continue
            pos, end = s.offset, s.offset + s.size
            while pos + 12 <= end:
                namesz, descsz, ntype = struct.unpack_from("<III", self.data, pos)
                name_at = pos + 12
                desc_at = name_at + (namesz + 3) // 4 * 4
                if desc_at + descsz > end:
                    raise ELFError(f"note at {pos:#x} in {s.name} runs past its section")
                name = self.data[name_at:name_at + namesz].rstrip(b"\0").decode()
                out.append(Note(name, ntype, self.data[desc_at:desc_at + descsz]))
                pos = desc_at + (descsz + 3) // 4 * 4
        return out

    def metadata(self) -> dict[str, Any]:
        """The code object's MessagePack metadata (the "AMDGPU" note of type NT_AMDGPU_METADATA), decoded."""
        for n in self.notes():
            if n.name == "AMDGPU" and n.type == NT_AMDGPU_METADATA:
                try:
                    meta = unpackb(n.desc, f"{self.name}: the AMDGPU metadata note")
                except MsgpackError as e:
                    raise ELFError(f"{e}; the code object is damaged or was not made by LLVM's AMDGPU backend") from e
                if not isinstance(meta, dict):
                    raise ELFError(f"{self.name}: the AMDGPU metadata note is a {type(meta).__name__}, not a map")
                return meta
        raise ELFError(f"{self.name}: no AMDGPU metadata note (NT_AMDGPU_METADATA): not a code object v3+ file")

    def kernel_metadata(self, kernel: str) -> dict[str, Any]:
        """One kernel's entry of amdhsa.kernels: .args (offset, size, value_kind), .kernarg_segment_size, ..."""
        kernels = self.metadata().get("amdhsa.kernels", [])
        for k in kernels:
            if k.get(".name") == kernel:
                return k
        raise ELFError(f"no metadata for kernel {kernel} (kernels: {sorted(k.get('.name') for k in kernels)})")

    def kernel_descriptor(self, kernel: str) -> KernelDescriptor:
        sym = self.symbols.get(f"{kernel}.kd")
        if sym is None:
            raise ELFError(f"no kernel descriptor {kernel}.kd (kernels: "
                           f"{sorted(n[:-3] for n in self.symbols if n.endswith('.kd'))})")
        off = self.file_offset(sym.value)
        self._check(off, KernelDescriptor.SIZE, f"kernel descriptor {kernel}.kd")
        return KernelDescriptor.parse(self.data[off:off + KernelDescriptor.SIZE])
