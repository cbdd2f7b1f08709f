"""What a loader reads from any code object: the descriptor's enable bits in AMDGPUUsage order, the LDS granules, the
kernel-argument preload field, and argument blocks laid out by the metadata (explicit and hidden arguments)."""
from __future__ import annotations

import struct

import pytest

from compiler.elf import CodeObject, CodeObjectKernel, ELFError, KernelDescriptor
from compiler.kernargs import KernargLayout, KernargLayoutError


def descriptor(props: int = 0, rsrc2: int = 0, group: int = 0, private: int = 0, preload: int = 0) -> KernelDescriptor:
    raw = bytearray(64)
    struct.pack_into("<IIIIq", raw, 0, group, private, 16, 0, 0x1000)
    struct.pack_into("<IIIHH", raw, 44, 0x60, 0x1, rsrc2, props, preload)
    return KernelDescriptor.parse(bytes(raw))


def test_user_sgprs_follow_the_documented_order():
    d = descriptor(props=0b111_1111 | 1 << 10, rsrc2=0b11 << 7 | 1 << 10 | 17 << 1, preload=3 | 5 << 7)
    assert d.user_sgprs == [("private_segment_buffer", 4), ("dispatch_ptr", 2), ("queue_ptr", 2),
                            ("kernarg_segment_ptr", 2), ("dispatch_id", 2), ("flat_scratch_init", 2),
                            ("private_segment_size", 1), ("kernarg_preload", 3)]
    assert d.user_sgpr_count == 17 and d.system_sgprs == 3 and d.kernarg_preload_sgprs == 3 and d.wave32
    assert descriptor(props=1 << 3).user_sgprs == [("kernarg_segment_ptr", 2)]
    assert descriptor(props=1 << 11).uses_dynamic_stack


def test_lds_granules_round_up_to_512_bytes():
    assert [descriptor(group=g).lds_granules() for g in (0, 1, 512, 513, 65536)] == [0, 1, 1, 2, 128]
    assert descriptor(group=100).lds_granules(dynamic_bytes=1000) == 3


def test_scratch_is_the_private_segment_or_scratch_en():
    assert not descriptor().uses_scratch
    assert descriptor(private=4).uses_scratch and descriptor(rsrc2=1).uses_scratch


META = {".kernarg_segment_size": 40, ".kernarg_segment_align": 8, ".args": [
    {".name": "p", ".offset": 0, ".size": 8, ".value_kind": "global_buffer"},
    {".name": "k", ".offset": 8, ".size": 4, ".value_kind": "by_value"},
    {".name": "s", ".offset": 12, ".size": 2, ".value_kind": "by_value"},
    {".offset": 16, ".size": 4, ".value_kind": "hidden_block_count_x"},
    {".offset": 20, ".size": 2, ".value_kind": "hidden_group_size_x"},
    {".offset": 22, ".size": 2, ".value_kind": "hidden_remainder_x"},
    {".offset": 24, ".size": 8, ".value_kind": "hidden_global_offset_x"},
    {".offset": 32, ".size": 2, ".value_kind": "hidden_grid_dims"},
    {".offset": 34, ".size": 4, ".value_kind": "hidden_dynamic_lds_size"},
]}


def test_a_layout_packs_explicit_and_hidden_arguments_at_the_metadata_offsets():
    layout = KernargLayout("k", META)
    assert layout.grid_dependent and not layout.refused and [a.name for a in layout.explicit] == ["p", "k", "s"]
    block = layout.pack((0xDEAD_BEEF_0000, 1.5, -2), (7, 1, 1), (128, 1, 1))
    assert block[:8] == (0xDEAD_BEEF_0000).to_bytes(8, "little")
    assert block[8:12] == struct.pack("<f", 1.5) and block[12:14] == struct.pack("<h", -2)
    assert struct.unpack_from("<IHHqHI", block, 16) == (7, 128, 0, 0, 1, 0)
    assert len(block) == 40
    assert layout.pack((0, b"\x01\x02\x03\x04", 0xFFFF), (1, 1, 4), (1, 2, 1))[32:34] == b"\x03\x00"  # 3 dims


def test_a_layout_says_what_is_wrong_with_values():
    layout = KernargLayout("k", META)
    with pytest.raises(KernargLayoutError, match=r"k: its hidden arguments \(hidden_block_count_x, "
                                                 r"hidden_group_size_x, hidden_remainder_x, hidden_grid_dims\) depend"):
        layout.pack((0, 0, 0))
    with pytest.raises(KernargLayoutError, match=r"k: 65536 does not fit argument s \(by_value\), which is 2 bytes"):
        layout.pack((0, 0, 1 << 16), (1, 1, 1), (1, 1, 1))
    with pytest.raises(KernargLayoutError, match=r"k: -1 does not fit argument p \(global_buffer\), which is 8 bytes"):
        layout.pack((-1, 0, 0), (1, 1, 1), (1, 1, 1))
    with pytest.raises(KernargLayoutError, match=r"k: argument k \(by_value\) is 4 bytes, got 3 bytes"):
        layout.pack((0, b"abc", 0), (1, 1, 1), (1, 1, 1))
    with pytest.raises(KernargLayoutError, match=r"k: argument p \(global_buffer\) of 8 bytes cannot be str"):
        layout.pack(("x", 0, 0), (1, 1, 1), (1, 1, 1))
    with pytest.raises(KernargLayoutError, match=r"hidden group sizes are 16-bit"):
        layout.pack((0, 0, 0), (1, 1, 1), (1 << 16, 1, 1))


@pytest.mark.parametrize("kind,why", [
    ("hidden_printf_buffer", "it calls printf"), ("hidden_hostcall_buffer", "it makes host calls"),
    ("hidden_heap_v1", "device heap"), ("hidden_queue_ptr", "a PM4 queue has none"),
    ("hidden_brand_new", "this driver does not know that hidden argument"),
    ("image", "an image"), ("dynamic_shared_pointer", "dynamically allocated LDS"),
])
def test_arguments_no_launch_can_serve_are_listed(kind, why):
    meta = {".kernarg_segment_size": 16, ".args": [{".offset": 8, ".size": 8, ".value_kind": kind}]}
    layout = KernargLayout("k", meta)
    assert [(a.kind, w) for a, w in layout.refused] == [(kind, layout.refused[0][1])] and why in layout.refused[0][1]
    with pytest.raises(KernargLayoutError, match=rf"k: argument {kind} at offset 8 cannot be served: "):
        layout.pack(())


def test_a_layout_refuses_overlapping_or_overlong_metadata():
    with pytest.raises(KernargLayoutError, match=r"k: argument b \(by_value\) at offset 4 overlaps a \(global_"):
        KernargLayout("k", {".kernarg_segment_size": 16, ".args": [
            {".name": "a", ".offset": 0, ".size": 8, ".value_kind": "global_buffer"},
            {".name": "b", ".offset": 4, ".size": 4, ".value_kind": "by_value"}]})
    with pytest.raises(KernargLayoutError, match=r"ends at 12, past the 8-byte .kernarg_segment_size"):
        KernargLayout("k", {".kernarg_segment_size": 8, ".args": [
            {".name": "a", ".offset": 8, ".size": 4, ".value_kind": "by_value"}]})
    assert KernargLayout("k", {".kernarg_segment_size": 8, ".args": [
        {".name": "a", ".offset": 0, ".size": 4, ".value_kind": "global_buffer"}]}).refused[0][1].startswith(
        "a global_buffer of 4 bytes")


def test_a_compiled_code_object_names_its_target_and_version(tmp_path, lld):
    from compiler import KernelCache, compile_kernel
    from compiler.ir import Kernel, f32
    k = Kernel("fill", local_size=(32, 1, 1))
    out = k.buffer("out", f32, writable=True)
    out[k.workgroup_id(0) * 32 + k.local_id(0)] = 1.0
    for gfx in ("gfx1100", "gfx1201"):
        ck = compile_kernel(k, gfx, KernelCache(tmp_path))
        co = CodeObject(ck.binary, "fill")
        assert (co.target, co.code_object_version) == (gfx, 5)
        loaded = CodeObjectKernel.load(ck.binary, "fill")
        assert loaded.local_size == (32, 1, 1) and loaded.descriptor == ck.descriptor and loaded.target == gfx
        assert loaded.layout.pack((0x1000,)) == ck.pack_args(0x1000)
        with pytest.raises(ELFError, match=r"fill requires workgroups of \(32, 1, 1\) \(.reqd_workgroup_size\), "
                                           r"not \(64, 1, 1\)"):
            CodeObjectKernel.load(ck.binary, "fill", (64, 1, 1))
    bad = bytearray(ck.binary)
    bad[8] = 1  # EI_ABIVERSION 1: code object v3
    with pytest.raises(ELFError, match=r"ABI version 1 is not an AMDHSA code object v4-v6"):
        CodeObject(bytes(bad)).code_object_version
    bad[8], bad[48] = 3, 0x33  # e_flags machine 0x33
    with pytest.raises(ELFError, match=r"e_flags machine 0x33 is none of the processors this driver knows"):
        CodeObject(bytes(bad)).target
