"""AMD code objects: built with LLVM, linked with ld.lld, and read back with our own ELF, descriptor and
metadata readers."""
from __future__ import annotations

import ctypes
import shutil
import struct

import numpy as np
import pytest

from compiler import compile_kernel, parse_emulation_record
from compiler.elf import EF_AMDGPU_MACH, CodeObject, ELFError, KernelDescriptor
from compiler.ir import Kernel, f16, f32
from compiler.toolchain import load_host
from sample_kernels import elementwise, every_op, matmul, row_sum

pytestmark = pytest.mark.skipif(not any(shutil.which(n) for n in ("ld.lld-19", "ld.lld")),
                                reason="ld.lld is not installed (Debian package lld-19; ./setup.sh installs it)")
GFX = ["gfx1100", "gfx1201", "gfx942"]


def kernels():
    return [row_sum(), matmul(), elementwise("half_add", f16, lambda x, y: x + y)]


@pytest.mark.parametrize("gfx", GFX)
def test_code_objects_build_link_and_parse_back(cache, gfx):
    for kernel in kernels():
        ck = compile_kernel(kernel, gfx, cache)
        co = CodeObject(ck.binary)
        assert co.e_type == 3, "a linked code object is a shared object (ET_DYN)"
        assert co.mach == EF_AMDGPU_MACH[gfx]
        assert (co.os_abi, co.abi_version) == (64, 3), "HSA OS ABI, code object v5"
        d = ck.descriptor
        assert d.kernarg_size == ck.kernarg_size == sum(8 if a.kind == "buffer" else 4 for a in ck.args)
        assert d.group_segment_fixed_size == ck.lds_bytes == sum(m.size * m.dtype.itemsize for m in kernel.locals)
        assert d.private_segment_fixed_size == 0 and not d.uses_scratch, "the AMD driver gives kernels no scratch"
        assert d.vgprs(gfx) > 0
        assert d.wave32 == (gfx != "gfx942"), "RDNA kernels default to wave32, CDNA is wave64"
        # The code must be 256-byte aligned: COMPUTE_PGM_LO holds address bits 39:8.
        assert (co.symbols[f"{kernel.name}.kd"].value + d.kernel_code_entry_byte_offset) % 256 == 0
        assert d.kernel_code_properties & 0b11111 == 0b01000, "only the kernel-argument pointer is requested"


@pytest.mark.parametrize("gfx", GFX)
def test_descriptor_register_counts_agree_with_the_metadata_note(cache, gfx):
    """rsrc1's granulated counts, decoded with the AMDGPUUsage granules, must cover what the metadata note says the
    kernel uses, rounded up to exactly one granule."""
    for kernel in kernels():
        ck = compile_kernel(kernel, gfx, cache)
        d, meta = ck.descriptor, ck.metadata
        granule = d.vgpr_granule(gfx)
        used = meta[".vgpr_count"]
        if gfx == "gfx942":  # unified register file: arch VGPRs aligned to 4, then the accumulation VGPRs
            used = -(-used // 4) * 4 + meta[".agpr_count"]
        assert d.vgprs(gfx) == max(granule, -(-used // granule) * granule)
        if gfx == "gfx942":
            assert d.sgprs(gfx) == max(16, -(-meta[".sgpr_count"] // 16) * 16)
        else:
            assert d.sgprs(gfx) == 128 and (d.compute_pgm_rsrc1 >> 6) & 0xF == 0, "GFX10+ always allocates 128 SGPRs"
        assert meta[".wavefront_size"] == (32 if d.wave32 else 64)


@pytest.mark.parametrize("gfx", GFX)
def test_metadata_note_matches_our_argument_layout(cache, gfx):
    ck = compile_kernel(matmul(), gfx, cache)
    meta = ck.metadata
    assert meta[".name"] == "matmul" and meta[".symbol"] == "matmul.kd"
    assert [(a[".name"], a[".offset"], a[".size"], a[".value_kind"]) for a in meta[".args"]] == [
        (a.name, a.offset, a.size, "global_buffer" if a.kind == "buffer" else "by_value") for a in ck.args]
    assert meta[".kernarg_segment_size"] == ck.descriptor.kernarg_size
    assert meta[".group_segment_fixed_size"] == ck.lds_bytes
    assert meta[".reqd_workgroup_size"] == [8, 8, 1]
    top = CodeObject(ck.binary).metadata()
    assert top["amdhsa.target"] == f"amdgcn-amd-amdhsa--{gfx}" and top["amdhsa.version"][0] == 1


@pytest.mark.parametrize("gfx", GFX)
def test_every_operation_builds(cache, gfx):
    ck = compile_kernel(every_op(), gfx, cache)
    assert ck.descriptor.group_segment_fixed_size == 32 * 4 * 4


def test_emulation_record_carries_a_runnable_host_build(cache):
    ck = compile_kernel(elementwise("emu_add", f32, lambda x, y: x + y), "gfx1100", cache, emulation=True)
    image = CodeObject(ck.binary).image()
    name, local, obj = parse_emulation_record(image)
    assert (name, local) == ("emu_add", (64, 1, 1))
    fn = load_host(obj, name)
    a, b, out = np.arange(70, dtype=np.float32), np.full(70, 0.5, np.float32), np.zeros(70, np.float32)
    blob = ck.pack_args(a.ctypes.data, b.ctypes.data, out.ctypes.data, 70)  # the block the driver writes for the GPU
    buf = ctypes.create_string_buffer(blob, len(blob))
    fn(ctypes.addressof(buf), 2, 1, 1)
    np.testing.assert_array_equal(out, a + 0.5)


def test_elf_reader_refuses_what_it_cannot_read(cache):
    good = compile_kernel(elementwise("elf", f32, lambda x, y: x + y), "gfx1100", cache).binary
    with pytest.raises(ELFError, match="not an ELF file"):
        CodeObject(b"MZ" + good[2:])
    with pytest.raises(ELFError, match="machine 62 is not AMDGPU"):
        CodeObject(good[:18] + struct.pack("<H", 62) + good[20:])
    with pytest.raises(ELFError, match="runs past the end of the file"):
        CodeObject(good[:len(good) // 2])
    with pytest.raises(ELFError, match=r"no kernel descriptor nope\.kd \(kernels: \['elf'\]\)"):
        CodeObject(good).kernel_descriptor("nope")
    with pytest.raises(ELFError, match="a kernel descriptor is 64 bytes"):
        KernelDescriptor.parse(bytes(10))


def test_kernel_descriptor_fields_sit_at_their_documented_offsets():
    raw = bytearray(64)
    struct.pack_into("<IIIIq", raw, 0, 1024, 16, 36, 0, 0x1100)
    struct.pack_into("<IIIH", raw, 44, 0x60, (3 << 6) | 5, 0x84, 0x408)
    d = KernelDescriptor.parse(bytes(raw))
    assert (d.group_segment_fixed_size, d.private_segment_fixed_size, d.kernarg_size) == (1024, 16, 36)
    assert d.kernel_code_entry_byte_offset == 0x1100 and d.compute_pgm_rsrc3 == 0x60 and d.wave32
    assert d.user_sgpr_count == 2 and d.uses_scratch
    assert d.vgprs("gfx1100") == 48 and d.vgprs("gfx942") == 48  # (5 + 1) * 8 for wave32 RDNA and for gfx942
    assert d.sgprs("gfx942") == 32 and d.sgprs("gfx1201") == 128  # GFX9: (3 // 2 + 1) * 16
    wave64 = KernelDescriptor.parse(bytes(raw[:56]) + struct.pack("<H", 0x008) + bytes(6))
    assert not wave64.wave32 and wave64.vgprs("gfx1100") == 24 and wave64.vgprs("gfx900") == 24


def test_a_kernel_without_arguments_or_local_memory(cache):
    k = Kernel("nothing", local_size=(1, 1, 1))
    ck = compile_kernel(k, "gfx1201", cache)
    assert ck.descriptor.kernarg_size == 0 == ck.kernarg_size and ck.descriptor.group_segment_fixed_size == 0
