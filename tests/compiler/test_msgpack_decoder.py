"""Our MessagePack decoder against byte strings written out from the format specification."""
from __future__ import annotations

import struct

import pytest

from compiler.msgpack import MsgpackError, unpackb


@pytest.mark.parametrize("raw,value", [
    (b"\x00", 0), (b"\x7f", 127), (b"\xff", -1), (b"\xe0", -32),
    (b"\xcc\x80", 128), (b"\xcd\x01\x00", 256), (b"\xce\x00\x01\x00\x00", 65536), (b"\xcf" + (2**40).to_bytes(8, "big"), 2**40),
    (b"\xd0\x80", -128), (b"\xd1\xff\x00", -256), (b"\xd2\xff\xff\xff\xff", -1), (b"\xd3" + (-2**40).to_bytes(8, "big", signed=True), -2**40),
    (b"\xc0", None), (b"\xc2", False), (b"\xc3", True),
    (b"\xca" + struct.pack(">f", 1.5), 1.5), (b"\xcb" + struct.pack(">d", -0.25), -0.25),
    (b"\xa0", ""), (b"\xa3abc", "abc"), (b"\xd9\x03\xc3\xa9x", "\u00e9x"), (b"\xda\x00\x01z", "z"), (b"\xdb\x00\x00\x00\x01z", "z"),
    (b"\xc4\x02\x01\x02", b"\x01\x02"), (b"\xc5\x00\x01\xff", b"\xff"),
    (b"\x90", []), (b"\x93\x01\xa1a\xc0", [1, "a", None]), (b"\xdc\x00\x02\x01\x02", [1, 2]),
    (b"\x80", {}), (b"\x82\xa1a\x01\xa1b\x92\x02\x03", {"a": 1, "b": [2, 3]}), (b"\xde\x00\x01\x05\x06", {5: 6}),
    (b"\xd4\x07\xaa", ("ext", 7, b"\xaa")), (b"\xc7\x02\xfe\x01\x02", ("ext", -2, b"\x01\x02")),
])
def test_spec_vectors(raw, value):
    got = unpackb(raw)
    assert got == value and type(got) is type(value)


def test_nested_metadata_shape():
    # {"amdhsa.version": [1, 2], "amdhsa.kernels": [{".name": "k", ".args": []}]}
    raw = (b"\x82\xaeamdhsa.version\x92\x01\x02\xaeamdhsa.kernels\x91\x82\xa5.name\xa1k\xa5.args\x90")
    assert unpackb(raw) == {"amdhsa.version": [1, 2], "amdhsa.kernels": [{".name": "k", ".args": []}]}


@pytest.mark.parametrize("raw,message", [
    (b"\xc1", "0xc1 at offset 0 is not a MessagePack format"),
    (b"\xa5ab", "truncated: need 5 bytes at offset 1"),
    (b"\x92\x01", "truncated"),
    (b"\x01\x02", "1 trailing bytes"),
    (b"\xa2\xff\xfe", "not UTF-8"),
    (b"\x81\x90\x01", "unhashable map key"),
    (b"\x91" * 100 + b"\x00", "nesting deeper than 64"),
])
def test_malformed_input_is_a_clear_error(raw, message):
    with pytest.raises(MsgpackError, match=message):
        unpackb(raw)
