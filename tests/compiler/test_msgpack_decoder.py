"""Our use of the msgpack library: the options the AMDGPU metadata note needs, and clear errors on bad bytes."""
from __future__ import annotations

import shutil

import msgpack
import pytest

from compiler import compile_kernel
from compiler.elf import NT_AMDGPU_METADATA, CodeObject, ELFError
from compiler.ir import f32
from compiler.msgpack import MsgpackError, unpackb
from sample_kernels import elementwise

METADATA = {
    "amdhsa.version": [1, 2],
    "amdhsa.target": "amdgcn-amd-amdhsa--gfx1100",
    "amdhsa.kernels": [{
        ".name": "k", ".symbol": "k.kd", ".kernarg_segment_size": 28, ".wavefront_size": 32, ".uses_dynamic_stack": False,
        ".reqd_workgroup_size": [64, 1, 1], ".max_flat_workgroup_size": 64, ".sgpr_count": 2**33, ".vgpr_count": -3,
        ".args": [{".offset": 0, ".size": 8, ".value_kind": "global_buffer", ".address_space": "global"},
                  {".offset": 8, ".size": 4, ".value_kind": "by_value"}],
        ".printf": None, ".blob": b"\x00\xff", ".scale": 0.5, ".name_utf8": "k\u00e9",
    }],
}


def test_metadata_shaped_map_round_trips():
    got = unpackb(msgpack.packb(METADATA, use_bin_type=True))
    assert got == METADATA
    kernel = got["amdhsa.kernels"][0]
    assert type(kernel[".args"]) is list and type(kernel[".reqd_workgroup_size"]) is list, "arrays must be lists"
    assert type(kernel[".blob"]) is bytes and type(kernel[".name"]) is str, "bin stays bytes, str decodes to str"


def test_integer_map_keys_are_accepted():
    # The library refuses non-str keys unless told otherwise; the format allows them.
    assert unpackb(msgpack.packb({5: 6, "a": {7: [8]}})) == {5: 6, "a": {7: [8]}}


@pytest.mark.parametrize("raw,message", [
    (b"\xc1", "starts no MessagePack format"),
    (b"\xa5ab", "incomplete input"),
    (b"\x92\x01", "incomplete input"),
    (b"\x01\x02", "1 trailing bytes after the first value"),
    (b"\xa2\xff\xfe", "not UTF-8"),
    (b"\x81\x90\x01", "map key is not hashable"),
    (b"\x91" * 5000 + b"\x00", "nested too deeply"),
])
def test_malformed_input_is_a_clear_error_naming_the_data(raw, message):
    with pytest.raises(MsgpackError, match=message) as e:
        unpackb(raw, "the note of kernel foo")
    assert str(e.value).startswith("the note of kernel foo: ")
    assert isinstance(e.value, ValueError)


@pytest.mark.skipif(not any(shutil.which(n) for n in ("ld.lld-19", "ld.lld")),
                    reason="ld.lld is not installed (Debian package lld-19; ./setup.sh installs it)")
def test_damaged_metadata_note_names_the_code_object(cache):
    binary = compile_kernel(elementwise("note_k", f32, lambda x, y: x + y), "gfx1100", cache).binary
    co = CodeObject(binary, "note_k")
    assert co.metadata()["amdhsa.kernels"][0][".name"] == "note_k"
    note = next(n for n in co.notes() if n.name == "AMDGPU" and n.type == NT_AMDGPU_METADATA)
    at = binary.index(note.desc)
    damaged = binary[:at] + b"\xc1" + binary[at + 1:]  # 0xc1 is never a MessagePack format byte
    with pytest.raises(ELFError, match=r"^note_k: the AMDGPU metadata note: a byte that starts no MessagePack"):
        CodeObject(damaged, "note_k").metadata()
    trailing = binary[:at] + b"\x01" + b"\xc0" * (len(note.desc) - 1) + binary[at + len(note.desc):]
    with pytest.raises(ELFError, match="trailing bytes"):
        CodeObject(trailing, "note_k").metadata()
