"""NVIDIA cubins: ptxas found and run (or a clear error naming both ways to get it), and our cubin reader checked on
cubins of our own kernels, against our argument layout and local arrays, against NVIDIA's cuobjdump where it is
installed, and on malformed files."""
from __future__ import annotations

import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from compiler import ToolchainError, compile_kernel
from compiler.cubin import (EIATTR, EIATTR_CBANK_PARAM_SIZE, EIFMT, EIATTR_KPARAM_INFO, EIATTR_REGCOUNT, EIFMT_HVAL, EIFMT_SVAL,
                            Cubin, CubinError, load_kernel, parse_nv_info)
from compiler.elf import ELFError
from compiler.ir import f32
from compiler.kernargs import arg_layout
from compiler.ptxas import assemble, find_tool, ptxas_missing, ptxas_path
from sample_kernels import elementwise, every_op, matmul, row_sum

NO_PTXAS = ptxas_missing()
CUOBJDUMP = find_tool("cuobjdump")
needs_ptxas = pytest.mark.skipif(NO_PTXAS is not None, reason=f"no ptxas: {NO_PTXAS}")
KERNELS = {"elementwise": lambda: elementwise("add", f32, lambda x, y: x + y), "matmul": matmul, "row_sum": row_sum,
           "every_op": every_op}

# A kernel with a per-thread array indexed by a parameter, so it must live in local memory (a 256-byte stack
# frame); our IR has no per-thread arrays, so it is written in PTX.
LOCALS_PTX = """.version 8.0
.target {sm}
.address_size 64

.visible .entry locals(.param .u64 out, .param .u32 idx)
{{
\t.local .align 4 .b8 buf[256];
\t.reg .b32 %r<4>;
\t.reg .b64 %rd<8>;
\tmov.u64 %rd1, buf;
\tld.param.u32 %r1, [idx];
\tld.param.u64 %rd2, [out];
\tmul.wide.u32 %rd3, %r1, 4;
\tadd.u64 %rd4, %rd1, %rd3;
\tst.local.u32 [%rd4], %r1;
\tld.local.u32 %r2, [%rd1+4];
\tcvta.to.global.u64 %rd5, %rd2;
\tst.global.u32 [%rd5], %r2;
\tret;
}}
"""


@pytest.fixture(scope="module")
def cubins(tmp_path_factory):
    """(kernel, sm) -> CompiledKernel with its cubin built, for our sample kernels on sm_80 and sm_90."""
    from compiler import KernelCache
    if NO_PTXAS:
        pytest.skip(f"no ptxas: {NO_PTXAS}")
    cache = KernelCache(tmp_path_factory.mktemp("cubin-cache"))
    out = {}
    for label, make in KERNELS.items():
        for sm in ("sm_80", "sm_90"):
            ck = compile_kernel(make(), sm, cache)
            ck.cubin  # assembled and checked here
            out[label, sm] = ck
    return out


# --- ptxas ---

def _without_ptxas(monkeypatch) -> None:
    """No ptxas on PATH, and no sys.path entry holding an NVIDIA wheel's."""
    monkeypatch.setenv("PATH", "")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if not list(Path(p or ".").glob("nvidia/*/bin/ptxas"))])


def test_missing_ptxas_names_both_ways_to_get_it(monkeypatch, cache):
    ck = compile_kernel(row_sum(), "sm_90", cache)  # PTX needs no ptxas
    _without_ptxas(monkeypatch)
    assert ".entry row_sum" in ck.ptx
    with pytest.raises(ToolchainError) as e:
        ptxas_path()
    assert "PATH" in str(e.value) and "pip install .[nv]" in str(e.value)
    assert ptxas_missing() == str(e.value)
    with pytest.raises(ToolchainError, match=r"ptxas not found.*pip install \.\[nv\]"):
        ck.cubin


def test_ptxas_from_an_nvidia_wheel_is_found(monkeypatch, tmp_path):
    """With nothing on PATH, the ptxas inside an nvidia-cuda-nvcc wheel (site-packages/nvidia/<dir>/bin) is used."""
    _without_ptxas(monkeypatch)
    exe = tmp_path / "nvidia" / "cu13" / "bin" / "ptxas"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    monkeypatch.setattr(sys, "path", [str(tmp_path)] + sys.path)
    assert ptxas_path() == str(exe) and ptxas_missing() is None


@needs_ptxas
def test_ptxas_errors_carry_its_message():
    with pytest.raises(ToolchainError, match=r"broken: ptxas -arch=sm_90 failed.*"):
        assemble(".version 8.0\n.target sm_90\n.address_size 64\n.visible .entry broken() { bogus; }\n", "broken",
                 "sm_90")
    with pytest.raises(ToolchainError, match="not an NVIDIA architecture"):
        assemble("", "x", "gfx1100")


@needs_ptxas
def test_cubins_are_cached_and_keyed_by_ptxas(cache):
    ck = compile_kernel(row_sum(), "sm_80", cache)
    first = ck.cubin
    builds = cache.builds
    again = compile_kernel(row_sum(), "sm_80", cache)
    assert again.cubin == first and cache.builds == builds, "the second build comes from the cache"
    assert list((cache.root / "sm_80.cubin").glob("*.bin")), "cubins have their own cache folder"
    with pytest.raises(ToolchainError, match="built for host, which has no cubin"):
        compile_kernel(row_sum(), "host", cache).cubin


# --- the reader on our kernels ---

@pytest.mark.parametrize("sm", ["sm_80", "sm_90"])
@pytest.mark.parametrize("label", list(KERNELS))
def test_kernel_agrees_with_our_layout_and_local_arrays(cubins, label, sm):
    ck = cubins[label, sm]
    k = ck.cubin_kernel
    assert k.name == ck.name and k.target == sm
    assert k.param_layout == [(a.offset, a.size) for a in arg_layout(KERNELS[label]())]
    assert k.param_bank_size == ck.kernarg_size
    assert k.param_bank_offset + k.param_bank_size <= k.constant0_bytes
    assert k.shared_bytes == ck.lds_bytes
    assert k.reserved_shared_bytes == (1024 if sm == "sm_90" and ck.lds_bytes else 0)
    assert k.reqntid == ck.local_size and k.max_threads == ck.local_size[0] * ck.local_size[1] * ck.local_size[2]
    assert 0 < k.registers <= 255 and k.local_bytes == 0
    assert k.text and len(k.text) % 16 == 0 and k.exit_offsets and max(k.exit_offsets) < len(k.text)
    assert k.barriers == (1 if ck.lds_bytes else 0)
    assert all(r.section == ".debug_frame" for r in k.relocations), "nothing a loader must resolve"
    assert all(p.in_cbank and p.cbank == 0x1F for p in k.params)


@needs_ptxas
@pytest.mark.parametrize("sm", ["sm_80", "sm_90"])
def test_local_array_is_stack_memory(sm):
    blob = assemble(LOCALS_PTX.format(sm=sm), "locals", sm)
    k = load_kernel(blob, "locals")
    assert k.local_bytes == 256 and k.shared_bytes == 0 and k.reqntid is None and k.max_threads == 1024
    assert k.param_layout == [(0, 8), (8, 4)]


def test_unknown_attributes_are_kept_raw():
    blob = bytes([EIFMT_HVAL, 0x7E, 5, 0, EIFMT_SVAL, 0x7F, 3, 0, 1, 2, 3, 0x01, 0x35, 0, 0])
    a, b, c = parse_nv_info(blob, "test")
    assert (a.name, a.value) == ("EIATTR_UNKNOWN_0x7e", 5)
    assert (b.name, b.data) == ("EIATTR_UNKNOWN_0x7f", b"\x01\x02\x03")
    assert c.name == "EIATTR_SW2861232_WAR" and c.value is None


# --- cross-check with NVIDIA's cuobjdump ---

def _cuobjdump_info(blob: bytes, tmp_path) -> tuple[dict[str, list[tuple[str, str, str]]], dict[str, int]]:
    """cuobjdump -elf's attribute records per .nv.info section as (attribute, format, value text), and each
    .text.<k>'s smem figure."""
    path = tmp_path / "k.cubin"
    path.write_bytes(blob)
    text = subprocess.run([CUOBJDUMP, "-elf", str(path)], capture_output=True, text=True, timeout=120,
                          check=True).stdout
    sections: dict[str, list] = {}
    current = None
    smem = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.fullmatch(r"\.nv\.info(\.\S+)?", line.strip()) and not line.startswith("\t"):
            current = sections.setdefault(line.strip(), [])
        elif line.startswith(".") or line.startswith(".section"):
            current = None
            m = re.fullmatch(r"\.text\.(\S+)", line.strip())
            if m and i + 1 < len(lines):
                sm = re.search(r"smem=(\d+)", lines[i + 1])
                smem[m.group(1)] = int(sm.group(1)) if sm else 0
        elif current is not None and line.startswith("\tAttribute:"):
            attr = line.split(":", 1)[1].strip()
            fmt = lines[i + 1].split(":", 1)[1].strip()
            value = ""  # EIFMT_NVAL records have no Value line
            if i + 2 < len(lines) and lines[i + 2].startswith("\tValue:"):
                value = lines[i + 2].split(":", 1)[1].strip()
                if i + 3 < len(lines) and lines[i + 3].startswith("\t\t"):  # KPARAM_INFO goes on on a second line
                    value += " " + lines[i + 3].strip()
            current.append((attr, fmt, value))
    return sections, smem


def _hexes(text: str) -> list[int]:
    return [int(h, 16) for h in re.findall(r"0x[0-9a-fA-F]+", text)]


@pytest.mark.skipif(CUOBJDUMP is None, reason="cuobjdump is not installed (CUDA toolkit, or pip install "
                                              "nvidia-cuda-cuobjdump)")
@pytest.mark.parametrize("sm", ["sm_80", "sm_90"])
@pytest.mark.parametrize("label", list(KERNELS) + ["locals"])
def test_attributes_agree_with_cuobjdump(cubins, tmp_path, label, sm):
    if label == "locals":
        blob, name = assemble(LOCALS_PTX.format(sm=sm), "locals", sm), "locals"
    else:
        blob, name = cubins[label, sm].cubin, cubins[label, sm].name
    cub = Cubin(blob, name)
    k = cub.kernel(name)
    theirs, smem = _cuobjdump_info(blob, tmp_path)
    ours = [a for a in k.attributes if a.code not in (EIATTR_REGCOUNT, 0x11, 0x12, 0x23)]
    records = theirs[f".nv.info.{name}"]
    # The same records in the same order, with the same formats, and the same names wherever cuobjdump names them
    # (it calls some codes the public tables name, such as 0x35 EIATTR_SW2861232_WAR, "unknown Attribute"); codes newer
    # than our table (CUDA 13.5's ptxas emits 0x66, which cuobjdump calls EIATTR_LANGUAGE) are kept raw by our reader.
    assert [EIFMT[a.fmt] for a in ours] == [fmt for _, fmt, _ in records]
    assert [a.name for a in ours] == [a.name if attr == "unknown Attribute" or a.code not in EIATTR else attr
                                      for a, (attr, _, _) in zip(ours, records)]
    for a, (attr, fmt, value) in zip(ours, records):
        if a.code == EIATTR_KPARAM_INFO:
            p = next(p for p in k.params if p.ordinal == int(re.search(r"Ordinal : (0x[0-9a-f]+)", value).group(1), 16))
            fields = dict((m.group(1).strip(), int(m.group(2), 16))
                          for m in re.finditer(r"([A-Za-z' ]+?)\s*:\s*(0x[0-9a-fA-F]+)", value))
            assert (fields["Index"], fields["Offset"], fields["Size"], fields["Pointee's logAlignment"],
                    fields["Space"], fields["cbank"]) == (p.index, p.offset, p.size, p.log_alignment, p.space, p.cbank)
            assert "Parameter Space : CBANK" in value and p.in_cbank
        elif a.code not in EIATTR:
            continue  # newer than our table: kept raw, and cuobjdump may print its value as words (EIATTR_LANGUAGE)
        elif fmt == "EIFMT_SVAL":
            assert list(a.words) == _hexes(value), attr
        elif fmt in ("EIFMT_HVAL", "EIFMT_BVAL"):
            assert [a.value] == _hexes(value), attr
    # the file-wide records about the kernel: registers, frame and stack sizes
    wide = {attr: int(re.search(r":\s*(0x[0-9a-fA-F]+|\d+)\s*$", value).group(1), 0)
            for attr, _, value in theirs[".nv.info"] if f"function: {name}(" in value}
    assert wide["EIATTR_REGCOUNT"] == k.registers
    assert max(wide.get("EIATTR_FRAME_SIZE", 0), wide.get("EIATTR_MIN_STACK_SIZE", 0)) == k.local_bytes
    assert smem.get(name, 0) == k.shared_window_bytes
    assert k.param_bank_size == next(a.value for a in k.attributes if a.code == EIATTR_CBANK_PARAM_SIZE)


# --- malformed input ---

@pytest.fixture(scope="module")
def good(cubins):
    ck = cubins["matmul", "sm_90"]
    return ck.cubin, ck.name


def _section(blob: bytes, name: str) -> tuple[int, tuple]:
    """(index, raw header) of a section by name."""
    shoff = struct.unpack_from("<Q", blob, 0x28)[0]
    shnum, shstrndx = struct.unpack_from("<HH", blob, 0x3C)
    heads = [struct.unpack_from("<IIQQQQIIQQ", blob, shoff + i * 64) for i in range(shnum)]
    base = heads[shstrndx][4]
    for i, h in enumerate(heads):
        if blob[base + h[0]:blob.index(b"\0", base + h[0])].decode() == name:
            return i, h
    raise KeyError(name)


def _patch_section(blob: bytes, name: str, field: int, value: int) -> bytes:
    """Set one field of a section header (0 name, 1 type, 2 flags, 3 addr, 4 offset, 5 size, 6 link, 7 info)."""
    idx, _ = _section(blob, name)
    shoff = struct.unpack_from("<Q", blob, 0x28)[0]
    offsets, fmts = (0, 4, 8, 16, 24, 32, 40, 44), "IIQQQQII"
    out = bytearray(blob)
    struct.pack_into("<" + fmts[field], out, shoff + idx * 64 + offsets[field], value)
    return bytes(out)


@pytest.mark.parametrize("mangle,message", [
    (lambda b: b[:40], "not an ELF file"),
    (lambda b: b"\x7fELF" + bytes([1]) + b[5:], "not ELF64 little-endian"),
    (lambda b: b[:18] + struct.pack("<H", 224) + b[20:], "machine 224 is not NVIDIA CUDA"),
    (lambda b: b[:0x28] + struct.pack("<Q", len(b)) + b[0x30:], "section headers at .* runs past the end"),
    (lambda b: b[:0x3E] + struct.pack("<H", 999) + b[0x40:], "section name table index 999"),
    (lambda b: _patch_section(b, ".text.matmul", 5, len(b)), r"section \.text\.matmul at .* runs past the end"),
])
def test_malformed_files_are_refused(good, mangle, message):
    blob, name = good
    with pytest.raises(CubinError, match=message) as e:
        Cubin(mangle(blob), name).kernel(name)
    assert isinstance(e.value, ELFError), "callers catching ELFError see cubin errors too"


def test_malformed_attributes_are_refused(good):
    blob, name = good
    with pytest.raises(CubinError, match="record at 0x0 is cut off"):
        parse_nv_info(b"\x04\x17", "t")
    with pytest.raises(CubinError, match=r"EIATTR_KPARAM_INFO at 0x0 says 12 bytes, only 4 are left"):
        parse_nv_info(b"\x04\x17\x0c\x00" + bytes(4), "t")
    with pytest.raises(CubinError, match="format 9, none of EIFMT"):
        parse_nv_info(b"\x09\x17\x00\x00", "t")
    with pytest.raises(CubinError, match=r"KPARAM_INFO is 12 bytes, got 8"):
        Cubin(_kparam_of_size(blob, name, 8), name).kernel(name)
    with pytest.raises(CubinError, match=r"no kernel nope \(kernels: \['matmul'\]\)"):
        Cubin(blob, name).kernel("nope")


def _kparam_of_size(blob: bytes, name: str, size: int) -> bytes:
    """The cubin with its first KPARAM_INFO record's size field changed (and the record cut to that size, padded
    out with a no-value record so the section's length is unchanged)."""
    _, h = _section(blob, f".nv.info.{name}")
    off = h[4]
    data = bytearray(blob[off:off + h[5]])
    pos = 0
    while data[pos + 1] != EIATTR_KPARAM_INFO:
        pos += 4 + (struct.unpack_from("<H", data, pos + 2)[0] if data[pos] == EIFMT_SVAL else 0)
    struct.pack_into("<H", data, pos + 2, size)
    data[pos + 4 + size:pos + 16] = bytes([0x01, 0x35, 0, 0])  # NVAL EIATTR_SW2861232_WAR fills the 4 bytes freed
    out = bytearray(blob)
    out[off:off + h[5]] = data
    return bytes(out)


def test_a_relocation_into_loaded_code_is_refused_by_name(good):
    blob, name = good
    text_index, _ = _section(blob, f".text.{name}")
    moved = _patch_section(blob, ".rela.debug_frame", 7, text_index)  # its R_CUDA_64 now patches the kernel's code
    assert [r.type_name for r in Cubin(moved, name).relocations] == ["R_CUDA_64"]
    with pytest.raises(CubinError, match=r"relocation R_CUDA_64 at \.text\.matmul\+0x44 against .* resolves none"):
        Cubin(moved, name).kernel(name)
