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
EF_AMDGPU_MACH = {"gfx942": 0x04C, "gfx1100": 0x041, "gfx1101": 0x046, "gfx1102": 0x047, "gfx1200": 0x048,
                  "gfx1201": 0x04E}
EF_AMDGPU_MACH_MASK = 0xFF
# e_ident[EI_ABIVERSION] for ELFOSABI_AMDGPU_HSA (AMDGPUUsage "AMDGPU ELF Header"): 2, 3, 4 are code object v4, v5, v6
CODE_OBJECT_VERSIONS = {2: 4, 3: 5, 4: 6}
# Code object v4+ feature fields of e_flags: xnack in bits 9:8, sramecc in bits 11:10 (unsupported/any/off/on)
FEATURE_SETTING = {0: "unsupported", 1: "any", 2: "off", 3: "on"}
# kernel_code_properties bits (AMDGPUUsage, "Kernel Descriptor for GFX6-GFX12", bits 448-463 of the descriptor)
KERNEL_CODE_PROPERTY_ENABLE_SGPR_PRIVATE_SEGMENT_BUFFER = 1 << 0
KERNEL_CODE_PROPERTY_ENABLE_SGPR_DISPATCH_PTR = 1 << 1
KERNEL_CODE_PROPERTY_ENABLE_SGPR_QUEUE_PTR = 1 << 2
KERNEL_CODE_PROPERTY_ENABLE_SGPR_KERNARG_SEGMENT_PTR = 1 << 3
KERNEL_CODE_PROPERTY_ENABLE_SGPR_DISPATCH_ID = 1 << 4
KERNEL_CODE_PROPERTY_ENABLE_SGPR_FLAT_SCRATCH_INIT = 1 << 5
KERNEL_CODE_PROPERTY_ENABLE_SGPR_PRIVATE_SEGMENT_SIZE = 1 << 6
KERNEL_CODE_PROPERTY_WAVEFRONT_SIZE32 = 1 << 10
KERNEL_CODE_PROPERTY_USES_DYNAMIC_STACK = 1 << 11
KERNEL_CODE_PROPERTY_RESERVED = 0b1111_0011_1000_0000  # bits 7-9 and 12-15 must be 0
# The user SGPRs the dispatch fills, in the order they are laid out from s0 (AMDGPUUsage, "Initial Kernel Execution
# State", table "SGPR Register Set Up Order"): (name, enable bit, SGPR count). Preloaded kernel arguments follow.
USER_SGPR_ORDER = (
    ("private_segment_buffer", KERNEL_CODE_PROPERTY_ENABLE_SGPR_PRIVATE_SEGMENT_BUFFER, 4),
    ("dispatch_ptr", KERNEL_CODE_PROPERTY_ENABLE_SGPR_DISPATCH_PTR, 2),
    ("queue_ptr", KERNEL_CODE_PROPERTY_ENABLE_SGPR_QUEUE_PTR, 2),
    ("kernarg_segment_ptr", KERNEL_CODE_PROPERTY_ENABLE_SGPR_KERNARG_SEGMENT_PTR, 2),
    ("dispatch_id", KERNEL_CODE_PROPERTY_ENABLE_SGPR_DISPATCH_ID, 2),
    ("flat_scratch_init", KERNEL_CODE_PROPERTY_ENABLE_SGPR_FLAT_SCRATCH_INIT, 2),
    ("private_segment_size", KERNEL_CODE_PROPERTY_ENABLE_SGPR_PRIVATE_SEGMENT_SIZE, 1),
)
# compute_pgm_rsrc2 fields (AMDGPUUsage, "compute_pgm_rsrc2 for GFX6-GFX12"; the same bits as COMPUTE_PGM_RSRC2)
RSRC2_ENABLE_PRIVATE_SEGMENT = 1 << 0
RSRC2_USER_SGPR_COUNT_SHIFT, RSRC2_USER_SGPR_COUNT_MASK = 1, 0x1F
RSRC2_ENABLE_TRAP_HANDLER = 1 << 6  # "must be 0" (GFX6-GFX11; GFX12 calls the bit DYNAMIC_VGPR, also 0 for compute)
RSRC2_ENABLE_SGPR_WORKGROUP_ID_X, RSRC2_ENABLE_SGPR_WORKGROUP_ID_Y = 1 << 7, 1 << 8
RSRC2_ENABLE_SGPR_WORKGROUP_ID_Z, RSRC2_ENABLE_SGPR_WORKGROUP_INFO = 1 << 9, 1 << 10
RSRC2_GRANULATED_LDS_SIZE_SHIFT, RSRC2_GRANULATED_LDS_SIZE_MASK = 15, 0x1FF  # "must be 0": the CP (here: the driver)
# sets it. LDS is allocated in 128-dword (512-byte) granules on GFX7+ (Mesa ac_gpu_info.c lds_encode_granularity).
LDS_GRANULE = 512
# GFX1100 and GFX1102 in wave32 need at least 16 SGPRs initialised; LLVM pads USER_SGPR_COUNT so that user plus
# system SGPRs reach 16 (LLVM AMDGPU.td FeatureUserSGPRInit16Bug, GCNSubtarget::hasUserSGPRInit16BugInWave32).
USER_SGPR_INIT16_BUG = ("gfx1100", "gfx1102")
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
    kernarg_preload: int = 0  # bits 6:0 KERNARG_PRELOAD_SPEC_LENGTH (SGPRs), 15:7 its offset in dwords

    SIZE = 64

    @classmethod
    def parse(cls, raw: bytes) -> "KernelDescriptor":
        """Fields at their AMDGPUUsage offsets: 0, 4, 8 (u32), 16 (i64), then 44, 48, 52 (u32), 56 and 58 (u16)."""
        if len(raw) < cls.SIZE:
            raise ELFError(f"a kernel descriptor is {cls.SIZE} bytes, got {len(raw)}")
        group, private, kernarg, _reserved, entry = struct.unpack_from("<IIIIq", raw, 0)
        rsrc3, rsrc1, rsrc2, props, preload = struct.unpack_from("<IIIHH", raw, 44)
        return cls(group, private, kernarg, entry, rsrc3, rsrc1, rsrc2, props, preload)

    @property
    def wave32(self) -> bool:
        return bool(self.kernel_code_properties & KERNEL_CODE_PROPERTY_WAVEFRONT_SIZE32)

    @property
    def user_sgpr_count(self) -> int:
        """compute_pgm_rsrc2 bits 5:1: the user SGPRs the CP fills (2 when only the kernarg pointer is enabled)."""
        return (self.compute_pgm_rsrc2 >> RSRC2_USER_SGPR_COUNT_SHIFT) & RSRC2_USER_SGPR_COUNT_MASK

    @property
    def user_sgprs(self) -> list[tuple[str, int]]:
        """The enabled user SGPRs in their documented order, as (name, SGPR count), preloaded kernargs last."""
        out = [(name, n) for name, bit, n in USER_SGPR_ORDER if self.kernel_code_properties & bit]
        if self.kernarg_preload_sgprs:
            out.append(("kernarg_preload", self.kernarg_preload_sgprs))
        return out

    @property
    def kernarg_preload_sgprs(self) -> int:
        """KERNARG_PRELOAD_SPEC_LENGTH: kernel-argument dwords the dispatch preloads into user SGPRs (gfx90a/gfx94x)."""
        return self.kernarg_preload & 0x7F

    @property
    def system_sgprs(self) -> int:
        """The system SGPRs after the user SGPRs that rsrc2 enables: workgroup ids x, y, z and workgroup info."""
        bits = (RSRC2_ENABLE_SGPR_WORKGROUP_ID_X, RSRC2_ENABLE_SGPR_WORKGROUP_ID_Y, RSRC2_ENABLE_SGPR_WORKGROUP_ID_Z,
                RSRC2_ENABLE_SGPR_WORKGROUP_INFO)
        return sum(1 for b in bits if self.compute_pgm_rsrc2 & b)

    @property
    def uses_dynamic_stack(self) -> bool:
        return bool(self.kernel_code_properties & KERNEL_CODE_PROPERTY_USES_DYNAMIC_STACK)

    def lds_granules(self, dynamic_bytes: int = 0) -> int:
        """COMPUTE_PGM_RSRC2.LDS_SIZE for this kernel's LDS (group segment plus dynamic bytes), in 512-byte granules."""
        return -(-(self.group_segment_fixed_size + dynamic_bytes) // LDS_GRANULE)

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
    def target(self) -> str:
        """The processor e_flags names ("gfx1100"); an EF_AMDGPU_MACH this reader does not know is an error."""
        for gfx, mach in EF_AMDGPU_MACH.items():
            if mach == self.mach:
                return gfx
        raise ELFError(f"{self.name}: e_flags machine {self.mach:#x} is none of the processors this driver knows "
                       f"({', '.join(f'{g} {m:#x}' for g, m in EF_AMDGPU_MACH.items())})")

    @property
    def code_object_version(self) -> int:
        """4, 5 or 6 from e_ident[EI_ABIVERSION] of an HSA code object; anything else is an error."""
        if self.os_abi != ELFOSABI_AMDGPU_HSA or self.abi_version not in CODE_OBJECT_VERSIONS:
            raise ELFError(f"{self.name}: OS ABI {self.os_abi} ABI version {self.abi_version} is not an AMDHSA code "
                           f"object v4-v6 (OS ABI {ELFOSABI_AMDGPU_HSA}, ABI version 2-4): rebuild it with "
                           "-mcode-object-version=5")
        return CODE_OBJECT_VERSIONS[self.abi_version]

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


@dataclass
class CodeObjectKernel:
    """A kernel of any compiler's code object, carrying what a loader needs (as CompiledKernel does for ours): name,
    target (from e_flags), descriptor, metadata, local size, and the argument layout its metadata gives."""
    name: str
    target: str
    binary: bytes
    descriptor: KernelDescriptor
    metadata: dict
    local_size: tuple[int, int, int]
    layout: Any  # compiler.kernargs.KernargLayout

    @property
    def lds_bytes(self) -> int:
        return self.descriptor.group_segment_fixed_size

    @classmethod
    def load(cls, binary: bytes, name: str, local_size: tuple[int, int, int] | None = None) -> "CodeObjectKernel":
        """Kernel `name` of a code object; the local size is the metadata's .reqd_workgroup_size, else the caller's
        (one of them must say it: the dispatch programs it, and hidden arguments carry it)."""
        from compiler.kernargs import KernargLayout
        co = CodeObject(binary, name)
        co.code_object_version  # raises for what is not an HSA code object v4-v6
        desc, meta = co.kernel_descriptor(name), co.kernel_metadata(name)
        reqd = meta.get(".reqd_workgroup_size")
        if reqd is not None and local_size is not None and tuple(local_size) != tuple(reqd):
            raise ELFError(f"{name} requires workgroups of {tuple(reqd)} (.reqd_workgroup_size), not "
                           f"{tuple(local_size)}")
        ls = tuple(reqd if reqd is not None else local_size or ())
        if len(ls) != 3 or not all(isinstance(n, int) and n >= 1 for n in ls):
            raise ELFError(f"{name}: the metadata has no .reqd_workgroup_size; give local_size=(x, y, z) when loading "
                           f"it (got {local_size})")
        limit = meta.get(".max_flat_workgroup_size", 1024)
        if ls[0] * ls[1] * ls[2] > limit:
            raise ELFError(f"{name}: a workgroup of {ls} is {ls[0] * ls[1] * ls[2]} work-items, more than its "
                           f".max_flat_workgroup_size {limit}")
        return cls(name, co.target, bytes(binary), desc, meta, ls, KernargLayout(name, meta))
