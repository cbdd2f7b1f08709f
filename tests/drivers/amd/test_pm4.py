"""PM4 encoders round-trip through the decoder; header bits are checked against the spec independently."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autogen import gc_11_0_0 as gc
from autogen import soc21_enum as ev
from drivers.amd import pm4

# GC segment 0 base: beige_goby_ip_offset.h GC_BASE__INST0_SEG0 (gfx11/gfx12 report it through IP discovery).
GC_SEG0 = 0x1260
addr8 = st.integers(0, (1 << 48) - 1).map(lambda a: a & ~7)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, (1 << 64) - 1)


def spec_header(opcode: int, body: int) -> int:
    """PM4 type-3 header from the packet spec: type in 31:30, count (body dwords - 1) in 29:16, opcode in 15:8."""
    return (3 << 30) | ((body - 1) << 16) | (opcode << 8)


def only(words):
    (p,) = pm4.decode(words)
    return p


@given(addr=addr8, value=u64, data_sel=st.sampled_from([pm4.DATA_SEL_VALUE_64, pm4.DATA_SEL_TIMESTAMP]),
       int_sel=st.sampled_from([pm4.INT_SEL_NONE, pm4.INT_SEL_SEND_DATA_AFTER_WRITE_CONFIRM]), ctx=u32)
def test_release_mem_round_trip(addr, value, data_sel, int_sel, ctx):
    words = pm4.release_mem(addr, value, data_sel, int_sel, int_ctxid=ctx)
    assert len(words) == 8 and words[0] == spec_header(0x49, 7)
    p = only(words)
    assert p.name == "RELEASE_MEM"
    assert p.fields["addr"] == addr and p.fields["value"] == value and p.fields["int_ctxid"] == ctx
    assert p.fields["data_sel"] == data_sel and p.fields["int_sel"] == int_sel
    assert p.fields["event_type"] == ev.CACHE_FLUSH_AND_INV_TS_EVENT
    assert words[pm4.RELEASE_MEM_ADDR_WORD] == addr & 0xFFFFFFFF
    assert words[pm4.RELEASE_MEM_DATA_WORD] | words[pm4.RELEASE_MEM_DATA_WORD + 1] << 32 == value


@given(addr=addr8, ref=u32, mask=u32, func=st.sampled_from(sorted(pm4.WAIT_FUNC)))
def test_wait_reg_mem_round_trip(addr, ref, mask, func):
    words = pm4.wait_reg_mem(addr, ref, mask, func)
    assert words[0] == spec_header(0x3C, 6)
    f = only(words).fields
    assert (f["addr"], f["reference"], f["mask"], f["function"], f["mem_space"]) == (addr, ref, mask, pm4.WAIT_FUNC[func], 1)
    assert words[pm4.WAIT_REG_MEM_REF_WORD] == ref


@given(values=st.lists(u32, min_size=1, max_size=16))
def test_set_sh_reg_round_trip(values):
    words = pm4.set_sh_reg(GC_SEG0 + gc.regCOMPUTE_PGM_LO, values)
    assert words[0] == spec_header(0x76, 1 + len(values))
    f = only(words).fields
    assert f["reg"] == GC_SEG0 + gc.regCOMPUTE_PGM_LO and [f[f"value{i}"] for i in range(len(values))] == values


def test_compute_registers_are_in_the_sh_range():
    for reg in (gc.regCOMPUTE_PGM_LO, gc.regCOMPUTE_PGM_RSRC1, gc.regCOMPUTE_USER_DATA_0, gc.regCOMPUTE_NUM_THREAD_X,
                gc.regCOMPUTE_RESOURCE_LIMITS, gc.regCOMPUTE_DISPATCH_INITIATOR):
        assert gc.regCOMPUTE_PGM_LO_BASE_IDX == 0
        assert pm4.set_sh_reg(GC_SEG0 + reg, [0])[1] == GC_SEG0 + reg - 0x2C00
    with pytest.raises(pm4.PM4Error, match="not in the SH range"):
        pm4.set_sh_reg(0x100, [1])


@given(x=st.integers(1, 1 << 20), y=st.integers(1, 1 << 16), z=st.integers(1, 1 << 16), init=u32)
def test_dispatch_direct_round_trip(x, y, z, init):
    f = only(pm4.dispatch_direct(x, y, z, init)).fields
    assert (f["x"], f["y"], f["z"], f["initiator"]) == (x, y, z, init)


@given(addr=st.integers(0, (1 << 48) - 1).map(lambda a: a & ~3), size=st.integers(1, (1 << 20) - 1))
def test_indirect_buffer_round_trip(addr, size):
    f = only(pm4.indirect_buffer(addr, size)).fields
    assert (f["addr"], f["size"], f["valid"]) == (addr, size, 1)


def test_acquire_mem_and_event_write():
    gcr = pm4.gcr_invalidate_all()
    assert only(pm4.acquire_mem(gcr)).fields["gcr_cntl"] == gcr and gcr != 0
    f = only(pm4.event_write(ev.CS_PARTIAL_FLUSH)).fields
    assert (f["event_type"], f["event_index"]) == (7, 4)


@pytest.mark.parametrize("n", [1, 2, 5, 300])
def test_nop_pads_exactly(n):
    words = pm4.nop(n) + pm4.dispatch_direct(1, 1, 1, 1)
    packets = pm4.decode(words)
    assert [p.name for p in packets] == ["NOP", "DISPATCH_DIRECT"] and packets[1].offset == n


def test_bad_values_name_the_field():
    with pytest.raises(pm4.PM4Error, match="RELEASE_MEM address 0x1004 must be a 8-byte aligned"):
        pm4.release_mem(0x1004, 1, pm4.DATA_SEL_VALUE_64)
    with pytest.raises(pm4.PM4Error, match="compare function"):
        pm4.wait_reg_mem(0x1000, 1, func="~")
    with pytest.raises(pm4.PM4Error, match="x=0x100000000"):
        pm4.dispatch_direct(1 << 32, 1, 1, 0)


def test_malformed_streams_name_the_offset():
    good = pm4.nop(2)
    with pytest.raises(pm4.PM4DecodeError, match="dword 2: header 0x00001234 is a type-0 packet"):
        pm4.decode(good + [0x1234])
    truncated = pm4.release_mem(0x1000, 1, pm4.DATA_SEL_VALUE_64)[:5]
    with pytest.raises(pm4.PM4DecodeError, match="dword 0: RELEASE_MEM has 7 body dwords but the stream ends after 4"):
        pm4.decode(truncated)


def test_format_names_every_packet():
    words = (pm4.wait_reg_mem(0x2000, 3) + pm4.dispatch_direct(2, 1, 1, 1)
             + pm4.release_mem(0x1000, 9, pm4.DATA_SEL_VALUE_64) + [0xDEAD0000 | (3 << 30) | (0x77 << 8) & 0xFF00])
    text = pm4.format_packets(pm4.decode(words[:-1]))
    for name in ("WAIT_REG_MEM", "DISPATCH_DIRECT", "RELEASE_MEM"):
        assert name in text
    assert "value=0x9" in text and "addr=0x2000" in text
