"""Our reader for AMD code objects: ELF64 sections and symbols, and the kernel descriptor at `<name>.kd`.

Layouts are the ELF64 specification's and LLVM's AMDGPUUsage document's ("AMDGPU ELF Header",
"Kernel Descriptor" for code object v3 and later).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

EM_AMDGPU = 224
# e_flags EF_AMDGPU_MACH values (AMDGPUUsage, "AMDGPU ELF Header"): processor -> number
EF_AMDGPU_MACH = {"gfx942": 0x04C, "gfx1100": 0x041, "gfx1201": 0x04E}
EF_AMDGPU_MACH_MASK = 0xFF
KERNEL_CODE_PROPERTY_WAVEFRONT_SIZE32 = 1 << 10  # kernel_code_properties bit 10 (AMDGPUUsage)


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
class KernelDescriptor:
    """The 64-byte descriptor the dispatch packet points at."""
    group_segment_fixed_size: int  # LDS bytes
    private_segment_fixed_size: int  # scratch bytes per work-item
    kernarg_size: int
    kernel_code_entry_byte_offset: int  # relative to the descriptor's address
    compute_pgm_rsrc3: int
    compute_pgm_rsrc1: int
    compute_pgm_rsrc2: int
    kernel_code_properties: int

    @property
    def wave32(self) -> bool:
        return bool(self.kernel_code_properties & KERNEL_CODE_PROPERTY_WAVEFRONT_SIZE32)

    def vgprs(self, gfx: str) -> int:
        """VGPRs per work-item from rsrc1's granulated count (granule 8 on wave32 gfx10+ and on gfx90a+, else 4)."""
        granule = 8 if self.wave32 or gfx.startswith("gfx94") or gfx.startswith("gfx90a") else 4
        return ((self.compute_pgm_rsrc1 & 0x3F) + 1) * granule

    @property
    def sgprs(self) -> int:
        """SGPRs from rsrc1 bits 9:6 (granule 8); gfx10+ always allocates the maximum, so this is informational."""
        return (((self.compute_pgm_rsrc1 >> 6) & 0xF) + 1) * 8


class CodeObject:
    """A parsed ELF64 little-endian AMDGPU code object."""

    def __init__(self, data: bytes):
        if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
            raise ELFError("not an ELF64 little-endian file")
        (self.e_type, self.e_machine, _ver, self.e_entry, phoff, shoff, self.e_flags, _ehsize, phentsize, phnum,
         shentsize, shnum, shstrndx) = struct.unpack_from("<HHIQQQIHHHHHH", data, 16)
        if self.e_machine != EM_AMDGPU:
            raise ELFError(f"machine {self.e_machine} is not AMDGPU ({EM_AMDGPU})")
        self.data = data
        self.segments = []
        for i in range(phnum):
            p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz, p_memsz, _align = struct.unpack_from(
                "<IIQQQQQQ", data, phoff + i * phentsize)
            if p_type == 1:  # PT_LOAD
                self.segments.append(Segment(p_offset, p_vaddr, p_filesz, p_memsz))
        raw = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
        names = raw[shstrndx]
        self.sections = [Section(self._str(names[4], s[0]), s[1], s[3], s[4], s[5]) for s in raw]
        self.symbols: dict[str, Symbol] = {}
        for i, s in enumerate(raw):
            if s[1] in (2, 11):  # SHT_SYMTAB, SHT_DYNSYM
                strtab = raw[s[6]][4]
                for off in range(s[4], s[4] + s[5], 24):
                    st_name, _info, _other, shndx, value, size = struct.unpack_from("<IBBHQQ", data, off)
                    name = self._str(strtab, st_name)
                    if name:
                        self.symbols[name] = Symbol(name, value, size, shndx)

    def _str(self, table_off: int, idx: int) -> str:
        end = self.data.index(b"\0", table_off + idx)
        return self.data[table_off + idx:end].decode()

    @property
    def mach(self) -> int:
        return self.e_flags & EF_AMDGPU_MACH_MASK

    def file_offset(self, vaddr: int) -> int:
        for s in self.sections:
            if s.addr <= vaddr < s.addr + s.size and s.type != 8:  # not SHT_NOBITS
                return s.offset + (vaddr - s.addr)
        raise ELFError(f"address {vaddr:#x} is in no section with file contents")

    def image(self) -> bytes:
        """The loaded image: every PT_LOAD segment at its virtual address (what a loader copies to GPU memory)."""
        size = max((sg.vaddr + sg.memsz for sg in self.segments), default=0)
        img = bytearray(size)
        for sg in self.segments:
            img[sg.vaddr:sg.vaddr + sg.filesz] = self.data[sg.offset:sg.offset + sg.filesz]
        return bytes(img)

    def kernel_descriptor(self, kernel: str) -> KernelDescriptor:
        sym = self.symbols.get(f"{kernel}.kd")
        if sym is None:
            raise ELFError(f"no kernel descriptor {kernel}.kd (kernels: "
                           f"{sorted(n[:-3] for n in self.symbols if n.endswith('.kd'))})")
        off = self.file_offset(sym.value)
        g, p, ka, _r0, entry = struct.unpack_from("<IIIIq", self.data, off)
        rsrc3, rsrc1, rsrc2, props = struct.unpack_from("<IIIH", self.data, off + 44)
        return KernelDescriptor(g, p, ka, entry, rsrc3, rsrc1, rsrc2, props)
