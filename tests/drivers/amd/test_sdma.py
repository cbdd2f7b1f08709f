"""SDMA encoders round-trip through the decoder; copies split into legal chunks that tile the range.

Golden words are written from the SDMA packet spec and amdgpu's sdma_v6_0.c (header: op in bits 7:0, sub_op in
15:8; op and sub-op numbers from the SDMA opcode table), not from the bindings, so an encoder and decoder that
share a misreading of the layout still fail.
"""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.amd import sdma

# Ops and sub-ops from the SDMA opcode table.
OP_NOP, OP_COPY, OP_FENCE, OP_TRAP, OP_POLL_REGMEM, OP_ATOMIC, OP_CONST_FILL, OP_TIMESTAMP = 0, 1, 5, 6, 8, 10, 11, 13
SUBOP_COPY_LINEAR, SUBOP_COPY_TILED, SUBOP_TIMESTAMP_GET_GLOBAL = 0, 1, 2
CHUNK = sdma.COPY_MAX_BYTES

u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, (1 << 64) - 1)
addr = st.integers(0, (1 << 64) - 1)
addr4 = addr.map(lambda a: a & ~3)
addr8 = addr.map(lambda a: a & ~7)


def spec_header(op: int, sub_op: int = 0, extra: int = 0) -> int:
    """SDMA header: op in bits 7:0, sub_op in 15:8, packet-specific bits above."""
    return op | sub_op << 8 | extra


def only(words: list[int]) -> sdma.Packet:
    packets = sdma.decode(words)
    assert len(packets) == 1, sdma.format_packets(packets)
    return packets[0]


# --- golden words ---

def test_packet_words_match_the_spec():
    # COPY_LINEAR: header, count = bytes - 1, parameters, src lo/hi, dst lo/hi (sdma_v6_0_emit_copy_buffer).
    assert sdma.copy_linear_one(0x5_0000_1000, 0x6_0000_2000, 0x100) == [
        spec_header(OP_COPY, SUBOP_COPY_LINEAR), 0xFF, 0, 0x2000, 6, 0x1000, 5]
    # FENCE with MTYPE uncached (3 in bits 18:16), then address and data (sdma_v6_0_ring_emit_fence).
    assert sdma.fence(0x1_2345_6780, 0xDEAD) == [spec_header(OP_FENCE, 0, 3 << 16), 0x23456780, 1, 0xDEAD]
    # TRAP: header and a 28-bit interrupt context.
    assert sdma.trap(0x123) == [spec_header(OP_TRAP), 0x123]
    # POLL_REGMEM: FUNC in bits 30:28, MEM_POLL bit 31; DW5 interval in 15:0, retry count in 27:16.
    assert sdma.poll_regmem(0x3000, 5, 0xFF, ">=", interval=10, retry=0xFFF) == [
        spec_header(OP_POLL_REGMEM, 0, 5 << 28 | 1 << 31), 0x3000, 0, 5, 0xFF, 10 | 0xFFF << 16]
    # TIMESTAMP GET_GLOBAL: address bits 31:3 in place, then the high word.
    assert sdma.timestamp(0x2_0000_4008) == [spec_header(OP_TIMESTAMP, SUBOP_TIMESTAMP_GET_GLOBAL), 0x4008, 2]
    # CONSTANT_FILL: FILLSIZE 2 (dword fill) in bits 31:30, dst, data, count = bytes - 1.
    assert sdma.constant_fill(0x5000, 0xABC, 64) == [spec_header(OP_CONST_FILL, 0, 2 << 30), 0x5000, 0, 0xABC, 63]
    # ATOMIC: operation in bits 31:25 (47 = ADD64), addr, src lo/hi, cmp lo/hi, loop interval.
    assert sdma.atomic(0x6000, 47, 1) == [spec_header(OP_ATOMIC, 0, 47 << 25), 0x6000, 0, 1, 0, 0, 0, 0]
    # NOP: the count in bits 29:16 says how many words follow.
    assert sdma.nop(3) == [spec_header(OP_NOP, 0, 2 << 16), 0, 0]


def test_lengths_follow_from_the_header():
    # amdgpu: copy_num_dw 7, fill_num_dw 5; fences 4 dwords, traps 2, polls 6, timestamps 3, atomics 8.
    assert {n: sdma.length(n) for n in ("COPY_LINEAR", "CONSTANT_FILL", "FENCE", "TRAP", "POLL_REGMEM",
                                        "TIMESTAMP_GET_GLOBAL", "ATOMIC")} == {
        "COPY_LINEAR": 7, "CONSTANT_FILL": 5, "FENCE": 4, "TRAP": 2, "POLL_REGMEM": 6, "TIMESTAMP_GET_GLOBAL": 3,
        "ATOMIC": 8}
    assert (sdma.FENCE_ADDR_WORD, sdma.FENCE_DATA_WORD) == (1, 3)
    assert (sdma.COPY_SRC_WORD, sdma.COPY_DST_WORD) == (3, 5)
    assert (sdma.POLL_ADDR_WORD, sdma.POLL_VALUE_WORD) == (1, 3)


def test_copy_limits():
    assert sdma.COPY_FIELD_MAX_BYTES == 1 << 30, "a 30-bit count holding bytes - 1"
    assert sdma.COPY_MAX_BYTES == sdma.FILL_MAX_BYTES == 0x400000, "amdgpu's copy_max_bytes on SDMA 6 and 7"


# --- round trips ---

@given(dst=addr, src=addr, size=st.integers(1, CHUNK))
def test_copy_linear_round_trip(dst, src, size):
    words = sdma.copy_linear_one(dst, src, size)
    assert words[0] == spec_header(OP_COPY, SUBOP_COPY_LINEAR) and words[1] == size - 1, "count is bytes - 1"
    p = only(words)
    assert p.name == "COPY_LINEAR"
    assert (p.fields["size"], p.fields["src_addr"], p.fields["dst_addr"]) == (size, src, dst)
    assert words[sdma.COPY_SRC_WORD] == src & 0xFFFFFFFF and words[sdma.COPY_DST_WORD] == dst & 0xFFFFFFFF


def tiles(packets: list[sdma.Packet], dst: int, src: int, size: int, chunk: int) -> None:
    assert all(p.name == "COPY_LINEAR" and 1 <= p.fields["size"] <= chunk for p in packets)
    assert sum(p.fields["size"] for p in packets) == size
    pos = 0
    for p in packets:
        assert (p.fields["src_addr"], p.fields["dst_addr"]) == (src + pos, dst + pos), "chunks are contiguous"
        pos += p.fields["size"]


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5])
def test_copies_are_chunked_to_tile_the_range_exactly(size):
    dst, src = 0x7000_0000_0000, 0x1003
    packets = sdma.decode(sdma.copy_linear(dst, src, size))
    assert len(packets) == -(-size // CHUNK)
    tiles(packets, dst, src, size, CHUNK)


@given(dst=st.integers(0, 1 << 48), src=st.integers(0, 1 << 48), size=st.integers(0, 5000),
       chunk=st.integers(1, 1024))
def test_any_chunking_tiles_the_range(dst, src, size, chunk):
    tiles(sdma.decode(sdma.copy_linear(dst, src, size, chunk)), dst, src, size, chunk)


@given(a=addr4, value=u32, dwords=st.integers(1, sdma.FILL_MAX_BYTES // 4))
def test_constant_fill_round_trip(a, value, dwords):
    f = only(sdma.constant_fill(a, value, dwords * 4)).fields
    assert (f["dst_addr"], f["src_data_31_0"], f["size"], f["fillsize"]) == (a, value, dwords * 4,
                                                                             sdma.FILL_SIZE_DWORD)


@given(a=addr4, value=u32, mtype=st.integers(0, 7))
def test_fence_round_trip(a, value, mtype):
    words = sdma.fence(a, value, mtype)
    p = only(words)
    assert (p.name, p.fields["addr"], p.fields["data"], p.fields["mtype"]) == ("FENCE", a, value, mtype)
    assert words[sdma.FENCE_DATA_WORD] == value


@given(a=addr4, value=u32, mask=u32, func=st.sampled_from(sorted(sdma.POLL_FUNC)), interval=st.integers(0, 0xFFFF),
       retry=st.integers(0, 0xFFF))
def test_poll_regmem_round_trip(a, value, mask, func, interval, retry):
    words = sdma.poll_regmem(a, value, mask, func, interval, retry)
    f = only(words).fields
    assert (f["addr"], f["value"], f["mask"], f["func"], f["mem_poll"], f["interval"], f["retry_count"]) == (
        a, value, mask, sdma.POLL_FUNC[func], 1, interval, retry)
    assert words[sdma.POLL_VALUE_WORD] == value


@given(a=addr8)
def test_timestamp_round_trip(a):
    p = only(sdma.timestamp(a))
    assert (p.name, p.sub_op, p.fields["write_addr"]) == ("TIMESTAMP_GET_GLOBAL", SUBOP_TIMESTAMP_GET_GLOBAL, a)


@given(ctx=st.integers(0, (1 << 28) - 1))
def test_trap_round_trip(ctx):
    assert only(sdma.trap(ctx)).fields["int_context"] == ctx


@given(a=addr8, op=st.integers(0, 127), src=u64, cmp=u64, loop=st.booleans(), interval=st.integers(0, (1 << 13) - 1))
def test_atomic_round_trip(a, op, src, cmp, loop, interval):
    f = only(sdma.atomic(a, op, src, cmp, loop, interval)).fields
    assert (f["addr"], f["atomic_op"], f["src_data"], f["cmp_data"], f["loop"], f["loop_interval"]) == (
        a, op, src, cmp, int(loop), interval)


@pytest.mark.parametrize("n", [1, 2, 3, 0x4000, 0x4001, 0x4002, 2 * 0x4000 + 9])
def test_nop_pads_exactly(n):
    words = sdma.nop(n) + sdma.trap(1)
    packets = sdma.decode(words)
    assert {p.name for p in packets[:-1]} == {"NOP"} and packets[-1].name == "TRAP" and packets[-1].offset == n


def test_copy_linear_with_cpv_carries_one_more_dword():
    # sdma_v7_0_emit_copy_buffer: CPV (bit 19) set and an eighth dword of compression parameters.
    words = [spec_header(OP_COPY, SUBOP_COPY_LINEAR, 1 << 19), 15, 0, 0x1000, 0, 0x2000, 0, 0xC0FFEE]
    (p, q) = sdma.decode(words + sdma.trap(2))
    assert (p.name, len(p.words), p.fields["size"], p.fields["dcc_params"]) == ("COPY_LINEAR", 8, 16, 0xC0FFEE)
    assert q.name == "TRAP" and q.offset == 8


# --- errors ---

def test_bad_inputs_name_the_field():
    cases = [
        (lambda: sdma.fence(0x1002, 1), "FENCE: addr 0x1002 must be a 4-byte aligned"),
        (lambda: sdma.fence(0x1000, 1 << 32), "FENCE: data=0x100000000 does not fit its 32-bit field"),
        (lambda: sdma.fence(0x1000, 1, mtype=8), "mtype=0x8 does not fit its 3-bit field"),
        (lambda: sdma.timestamp(0x1004), "TIMESTAMP_GET_GLOBAL: write_addr 0x1004 must be a 8-byte aligned"),
        (lambda: sdma.timestamp(1 << 64), "write_addr 0x10000000000000000"),
        (lambda: sdma.copy_linear_one(0, 0, CHUNK + 1), "COPY_LINEAR: size=0x400001; one packet moves"),
        (lambda: sdma.copy_linear_one(0, 0, 0), "size=0x0"),
        (lambda: sdma.copy_linear_one(-1, 0, 4), "dst_addr -0x1"),
        (lambda: sdma.copy_linear(0, 0, -1), "size=-1"),
        (lambda: sdma.copy_linear(0, 0, 4, chunk=CHUNK + 1), "chunk=0x400001"),
        (lambda: sdma.constant_fill(0x1000, 0, 6), "multiple of 4"),
        (lambda: sdma.constant_fill(0x1002, 0, 8), "CONSTANT_FILL: dst_addr 0x1002"),
        (lambda: sdma.constant_fill(0x1000, 1 << 32, 8), "src_data_31_0=0x100000000"),
        (lambda: sdma.poll_regmem(0x1000, 1, func="~"), "compare function '~'"),
        (lambda: sdma.poll_regmem(0x1001, 1), "POLL_REGMEM: addr 0x1001"),
        (lambda: sdma.poll_regmem(0x1000, 1, interval=1 << 16), "interval=0x10000 does not fit its 16-bit"),
        (lambda: sdma.poll_regmem(0x1000, 1, retry=1 << 12), "retry_count=0x1000 does not fit its 12-bit"),
        (lambda: sdma.trap(1 << 28), "int_context=0x10000000 does not fit its 28-bit"),
        (lambda: sdma.atomic(0x1004, sdma.ATOMIC_ADD64, 1), "ATOMIC: addr 0x1004 must be a 8-byte"),
        (lambda: sdma.atomic(0x1000, 128, 1), "atomic_op=0x80 does not fit its 7-bit"),
        (lambda: sdma.atomic(0x1000, sdma.ATOMIC_ADD64, 1 << 64), "src=0x10000000000000000"),
        (lambda: sdma.nop(0), "at least one dword"),
    ]
    for fn, message in cases:
        with pytest.raises(sdma.SDMAError, match=message):
            fn()
    sdma.atomic(0x1004, 0x0F, 1)  # a 32-bit TC op (ADD_RTN_32) needs only 4-byte alignment
    assert issubclass(sdma.SDMAError, ValueError) and issubclass(sdma.SDMADecodeError, ValueError)


def test_malformed_streams_name_the_offset():
    with pytest.raises(sdma.SDMADecodeError, match=r"dword 4: SDMA op 0xfe \(unknown\) sub_op 0x0"):
        sdma.decode(sdma.fence(0x1000, 1) + [0xFE])
    with pytest.raises(sdma.SDMADecodeError, match=r"dword 2: SDMA op 0x1 \(COPY\) sub_op 0x1 is not decoded"):
        sdma.decode(sdma.trap(1) + [spec_header(OP_COPY, SUBOP_COPY_TILED)] + [0] * 12)
    with pytest.raises(sdma.SDMADecodeError, match="dword 0: COPY_LINEAR needs 7 dwords but the stream ends after 3"):
        sdma.decode(sdma.copy_linear_one(0, 0, 4)[:3])
    with pytest.raises(sdma.SDMADecodeError, match="dword 2: NOP needs 5 dwords but the stream ends after 2"):
        sdma.decode(sdma.trap(0) + sdma.nop(5)[:2])


def test_format_names_every_packet_with_key_fields_in_hex():
    words = (sdma.nop(3) + sdma.copy_linear(0x10000, 0x2000, 5) + sdma.fence(0x1000, 7) + sdma.trap(42)
             + sdma.poll_regmem(0x3000, 5) + sdma.timestamp(0x4008) + sdma.constant_fill(0x5000, 0xABC, 64)
             + sdma.atomic(0x6000, sdma.ATOMIC_ADD64, 1))
    lines = sdma.format_packets(sdma.decode(words)).splitlines()
    assert [line.split()[1] for line in lines] == ["NOP", "COPY_LINEAR", "FENCE", "TRAP", "POLL_REGMEM",
                                                   "TIMESTAMP_GET_GLOBAL", "CONSTANT_FILL", "ATOMIC"]
    text = "\n".join(lines)
    for needle in ("0x0003 COPY_LINEAR size=0x5 src_addr=0x2000 dst_addr=0x10000", "FENCE addr=0x1000 data=0x7",
                   "TRAP int_context=0x2a", "POLL_REGMEM addr=0x3000 func=0x5 value=0x5", "write_addr=0x4008",
                   "dst_addr=0x5000 src_data_31_0=0xabc size=0x40", "ATOMIC addr=0x6000 atomic_op=0x2f"):
        assert needle in text, needle


def test_gcr_req_matches_amdgpus_mem_sync():
    # sdma_v6_0_ring_emit_mem_sync: op 17 (GCR_REQ), base 0, GCR_CONTROL 15:0 in bits 31:16 of the third dword
    # (GL2_INV 14, GL2_WB 15, GLM_INV 5, GL1_INV 9, GLV_INV 8, GLK_INV 7, GLI_INV 1 in bits 1:0), 18:16 in the fourth.
    gcr = 1 << 14 | 1 << 15 | 1 << 5 | 1 << 9 | 1 << 8 | 1 << 7 | 1
    assert sdma.gcr_req() == [17, 0, gcr << 16, 0, 0]
    assert sdma.gcr_req(0x7FFFF) == [17, 0, 0xFFFF << 16, 7, 0]
    p = only(sdma.gcr_req(0x5_1234))
    assert (p.name, p.fields["gcr_control"]) == ("GCR_REQ", 0x5_1234)
    with pytest.raises(sdma.SDMAError, match="19-bit GCR_CONTROL"):
        sdma.gcr_req(1 << 19)


def test_poll_regmem_compares_one_dword():
    assert sdma.POLL_VALUE_BITS == 32
    with pytest.raises(sdma.SDMAError, match="value=0x100000000 does not fit"):
        sdma.poll_regmem(0x1000, 1 << 32)
