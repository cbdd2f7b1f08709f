"""SDMA encoders round-trip through the decoder; copies split into legal chunks that tile the range."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.amd import sdma

addr = st.integers(0, (1 << 48) - 1)
u32 = st.integers(0, 0xFFFFFFFF)
CHUNK = sdma.COPY_MAX_BYTES


def spec_header(op: int, sub_op: int = 0) -> int:
    """SDMA header from the packet layout: op in bits 7:0, sub_op in bits 15:8."""
    return op | (sub_op << 8)


@given(dst=addr, src=addr, size=st.integers(1, CHUNK))
def test_copy_linear_round_trip(dst, src, size):
    words = sdma.copy_linear_one(dst, src, size)
    assert words[0] == spec_header(1, 0) and words[1] == size - 1, "count is stored minus one"
    (p,) = sdma.decode(words)
    assert p.name == "COPY_LINEAR" and p.fields == {"size": size, "src": src, "dst": dst}


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5])
def test_copies_are_chunked_to_tile_the_range_exactly(size):
    dst, src = 0x7000_0000_0000, 0x1000
    packets = sdma.decode(sdma.copy_linear(dst, src, size))
    assert all(p.name == "COPY_LINEAR" and p.fields["size"] <= CHUNK for p in packets)
    assert sum(p.fields["size"] for p in packets) == size
    pos = 0
    for p in packets:
        assert p.fields["src"] == src + pos and p.fields["dst"] == dst + pos
        pos += p.fields["size"]


@given(a=addr.map(lambda x: x & ~3), value=u32)
def test_fence_round_trip(a, value):
    words = sdma.fence(a, value)
    assert words[0] & 0xFF == 5
    (p,) = sdma.decode(words)
    assert p.fields["addr"] == a and p.fields["value"] == value and p.fields["mtype"] == sdma.MTYPE_UC


@given(a=addr.map(lambda x: x & ~3), value=u32, mask=u32, func=st.sampled_from(sorted(sdma.POLL_FUNC)))
def test_poll_regmem_round_trip(a, value, mask, func):
    (p,) = sdma.decode(sdma.poll_regmem(a, value, mask, func))
    f = p.fields
    assert (f["addr"], f["value"], f["mask"], f["func"], f["mem_poll"]) == (a, value, mask, sdma.POLL_FUNC[func], 1)


@given(a=addr.map(lambda x: x & ~7))
def test_timestamp_round_trip(a):
    words = sdma.timestamp(a)
    assert words[0] == spec_header(13, 2)
    (p,) = sdma.decode(words)
    assert p.fields["addr"] == a


@given(a=addr.map(lambda x: x & ~3), value=u32, dwords=st.integers(1, sdma.FILL_MAX_BYTES // 4))
def test_constant_fill_round_trip(a, value, dwords):
    (p,) = sdma.decode(sdma.constant_fill(a, value, dwords * 4))
    assert p.fields == {"dst": a, "value": value, "size": dwords * 4}


def test_trap_nop_and_formatting():
    words = sdma.nop(3) + sdma.trap(42) + sdma.fence(0x1000, 7)
    packets = sdma.decode(words)
    assert [p.name for p in packets] == ["NOP", "TRAP", "FENCE"] and packets[1].offset == 3
    assert packets[1].fields["int_context"] == 42
    text = sdma.format_packets(packets)
    assert "TRAP int_context=0x2a" in text and "FENCE addr=0x1000 value=0x7" in text


def test_bad_inputs_name_the_field():
    with pytest.raises(sdma.SDMAError, match="FENCE address 0x1002 must be a 4-byte aligned"):
        sdma.fence(0x1002, 1)
    with pytest.raises(sdma.SDMAError, match="TIMESTAMP address 0x1004 must be a 8-byte aligned"):
        sdma.timestamp(0x1004)
    with pytest.raises(sdma.SDMAError, match="does not fit 32 bits"):
        sdma.fence(0x1000, 1 << 32)
    with pytest.raises(sdma.SDMAError, match="one packet moves"):
        sdma.copy_linear_one(0, 0, CHUNK + 1)
    with pytest.raises(sdma.SDMAError, match="multiple of 4"):
        sdma.constant_fill(0x1000, 0, 6)


def test_malformed_streams_name_the_offset():
    with pytest.raises(sdma.SDMADecodeError, match="dword 4: unknown SDMA op 0xfe"):
        sdma.decode(sdma.fence(0x1000, 1) + [0xFE])
    with pytest.raises(sdma.SDMADecodeError, match="dword 0: COPY_LINEAR needs 7 dwords but the stream ends after 3"):
        sdma.decode(sdma.copy_linear_one(0, 0, 4)[:3])
