"""PM4 encoders round-trip through the decoder; header and control words are checked against the spec by hand.

The golden values below are written from the packet spec (type-3 header: type in bits 31:30, count - 1 in
29:16, opcode in 15:8; opcode numbers from the PM4 opcode table) and from the words amdgpu's gfx_v11_0.c emits,
not from the bindings or the module under test, so an encoder and decoder that share a mistake still fail.
"""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autogen import gc_11_0_0, gc_12_0_0
from autogen import soc21_enum as ev
from drivers.amd import pm4

# GC segment 0 base: GC_BASE__INST0_SEG0 in navi10/sienna_cichlid/beige_goby_ip_offset.h; gfx11 and gfx12 report
# the same through IP discovery.
GC_SEG0 = 0x1260
# Opcodes from the PM4 type-3 opcode table.
OP_NOP, OP_DISPATCH_DIRECT, OP_WAIT_REG_MEM, OP_INDIRECT_BUFFER = 0x10, 0x15, 0x3C, 0x3F
OP_EVENT_WRITE, OP_RELEASE_MEM, OP_ACQUIRE_MEM, OP_SET_SH_REG, OP_WAIT_REG_MEM64 = 0x46, 0x49, 0x58, 0x76, 0x93

u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, (1 << 64) - 1)
addr4 = st.integers(0, (1 << 64) - 1).map(lambda a: a & ~3)
addr8 = st.integers(0, (1 << 64) - 1).map(lambda a: a & ~7)
families = st.sampled_from([pm4.GFX11, pm4.GFX12])


def spec_header(opcode: int, body: int) -> int:
    """Type-3 header: type 3 in bits 31:30, body dwords - 1 in 29:16, opcode in 15:8."""
    return (3 << 30) | ((body - 1) << 16) | (opcode << 8)


def only(words: list[int], **kw) -> pm4.Packet:
    packets = pm4.decode(words, **kw)
    assert len(packets) == 1, pm4.format_packets(packets)
    return packets[0]


# --- golden words ---

def test_headers_match_the_spec():
    assert pm4.release_mem(0x1000, 1, pm4.DATA_SEL_VALUE_64)[0] == spec_header(OP_RELEASE_MEM, 7) == 0xC0064900
    assert pm4.wait_reg_mem(0x1000, 1)[0] == spec_header(OP_WAIT_REG_MEM, 6)
    assert pm4.wait_reg_mem64(0x1000, 1)[0] == spec_header(OP_WAIT_REG_MEM64, 8)
    assert pm4.acquire_mem(0)[0] == spec_header(OP_ACQUIRE_MEM, 7)
    assert pm4.indirect_buffer(0x1000, 4)[0] == spec_header(OP_INDIRECT_BUFFER, 3)
    assert pm4.dispatch_direct(1, 1, 1, 0)[0] == spec_header(OP_DISPATCH_DIRECT, 4)
    assert pm4.event_write(ev.CS_PARTIAL_FLUSH)[0] == spec_header(OP_EVENT_WRITE, 1)
    assert pm4.set_sh_reg(GC_SEG0 + gc_11_0_0.regCOMPUTE_PGM_LO, [1, 2])[0] == spec_header(OP_SET_SH_REG, 3)
    assert pm4.nop(1) == [(3 << 30) | (0x3FFF << 16) | (OP_NOP << 8)], "a one-dword NOP is the count-0x3FFF NOP"
    assert pm4.nop(4)[0] == spec_header(OP_NOP, 3)


def test_release_mem_matches_amdgpus_gfx11_fence():
    # gfx_v11_0_ring_emit_fence with 64-bit data and an interrupt: event 20 (CACHE_FLUSH_AND_INV_TS_EVENT) index 5,
    # GLM_WB (bit 12), GLM_INV (13), GL2_WB (21), GCR_SEQ (22), cache policy 3 (bits 26:25); then DATA_SEL 2
    # (bits 31:29) and INT_SEL 2 (bits 26:24).
    words = pm4.release_mem(0x12345678, 0xAABBCCDD_11223344, pm4.DATA_SEL_VALUE_64,
                            pm4.INT_SEL_SEND_INT_AFTER_WRITE_CONFIRM, int_ctxid=9)
    assert words[1] == 20 | 5 << 8 | 1 << 12 | 1 << 13 | 1 << 21 | 1 << 22 | 3 << 25
    assert words[2] == 2 << 29 | 2 << 24
    assert words[3:] == [0x12345678, 0, 0x11223344, 0xAABBCCDD, 9]
    gfx12 = pm4.release_mem(0x1000, 1, pm4.DATA_SEL_VALUE_32, family=pm4.GFX12)
    assert gfx12[1] == 20 | 5 << 8 | 1 << 21 | 1 << 22 | 3 << 25, "gfx_v12_0 fences drop the GLM bits"


def test_acquire_mem_matches_amdgpus_mem_sync():
    # gfx_v11_0_emit_mem_sync: GL2_INV (14), GL2_WB (15), GLM_INV (5), GLM_WB (4), GL1_INV (9), GLV_INV (8),
    # GLK_INV (7), GLI_INV = 1 (bits 1:0).
    gcr = pm4.gcr_cntl(gl2_inv=1, gl2_wb=1, glm_inv=1, glm_wb=1, gl1_inv=1, glv_inv=1, glk_inv=1, gli_inv=1)
    assert gcr == 1 << 14 | 1 << 15 | 1 << 5 | 1 << 4 | 1 << 9 | 1 << 8 | 1 << 7 | 1
    words = pm4.acquire_mem(gcr)
    assert words[1:] == [0, 0xFFFFFFFF, 0xFF, 0, 0, 0x0A, gcr]
    assert pm4.gcr_invalidate_all() == gcr | 1 << 6, "plus a GLK write-back"


def test_wait_and_ib_control_words():
    assert pm4.wait_reg_mem(0x1000, 7, func="==")[1] == 3 | 1 << 4, "function == (3), memory space (bit 4)"
    assert pm4.wait_reg_mem(0x1000, 7, func=">=")[1:] == [5 | 1 << 4, 0x1000, 0, 7, 0xFFFFFFFF, 4]
    assert pm4.indirect_buffer(0x1_0000_1000, 0x40)[1:] == [0x1000, 1, 0x40 | 1 << 23]
    assert pm4.indirect_buffer(0x1000, 0x40, chain=True)[3] == 0x40 | 1 << 20 | 1 << 23
    assert pm4.event_write(ev.CS_PARTIAL_FLUSH)[1] == 7 | 4 << 8


def test_dispatch_initiator_bits():
    # COMPUTE_DISPATCH_INITIATOR: COMPUTE_SHADER_EN bit 0, FORCE_START_AT_000 bit 2, ORDER_MODE bit 6, CS_W32_EN bit 15
    # (Mesa sid.h S_00B800_*).
    for fam in (pm4.GFX11, pm4.GFX12):
        assert pm4.dispatch_initiator(fam, compute_shader_en=1, force_start_at_000=1, order_mode=1, cs_w32_en=1) \
            == 1 | 1 << 2 | 1 << 6 | 1 << 15
    with pytest.raises(pm4.PM4Error, match="no field 'warp_drive'"):
        pm4.dispatch_initiator(warp_drive=1)
    with pytest.raises(pm4.PM4Error, match="cs_w32_en=0x2 does not fit"):
        pm4.dispatch_initiator(cs_w32_en=2)


# --- SET_SH_REG and the SH register range ---

@pytest.mark.parametrize("gc", [gc_11_0_0, gc_12_0_0])
def test_compute_registers_are_in_the_sh_range_once_the_segment_base_is_added(gc):
    regs = [n for n in dir(gc) if n.startswith("regCOMPUTE_") and not n.endswith("_BASE_IDX")]
    assert regs
    for n in regs:
        assert getattr(gc, n + "_BASE_IDX") == 0, f"{n} is not in GC segment 0"
        off = pm4.sh_reg_offset(GC_SEG0 + getattr(gc, n))
        assert 0 <= off < 0x400
    # The generated offsets are segment-relative: without the base they fall below SET_SH_REG_START (0x2C00).
    with pytest.raises(pm4.PM4Error, match="not in the SH range"):
        pm4.sh_reg_offset(gc.regCOMPUTE_PGM_LO)
    # Mesa's sid.h names SH registers by byte address: R_00B800_COMPUTE_DISPATCH_INITIATOR, R_00B830_COMPUTE_PGM_LO,
    # R_00B900_COMPUTE_USER_DATA_0; the SH window starts at byte 0xB000.
    for reg, byte_addr in ((gc.regCOMPUTE_DISPATCH_INITIATOR, 0xB800), (gc.regCOMPUTE_PGM_LO, 0xB830),
                           (gc.regCOMPUTE_USER_DATA_0, 0xB900)):
        assert pm4.sh_reg_offset(GC_SEG0 + reg) == (byte_addr - 0xB000) // 4


@given(values=st.lists(u32, min_size=1, max_size=16), fam=families)
def test_set_sh_reg_round_trip(values, fam):
    reg = GC_SEG0 + fam.gc.regCOMPUTE_USER_DATA_0
    words = pm4.set_sh_reg(reg, values, family=fam)
    assert words[0] == spec_header(OP_SET_SH_REG, 1 + len(values))
    p = only(words, family=fam)
    assert p.name == "SET_SH_REG" and p.count == len(values)
    assert p.fields["reg"] == reg and [p.fields[f"value{i}"] for i in range(len(values))] == values


def test_set_sh_reg_refuses_registers_past_the_window():
    with pytest.raises(pm4.PM4Error, match=r"registers 0x2ffe\.\.0x2fff|registers 0x2fff\.\.0x3000"):
        pm4.set_sh_reg(0x2FFF, [1, 2])
    with pytest.raises(pm4.PM4Error, match="no values"):
        pm4.set_sh_reg(0x2E00, [])


# --- round trips ---

@given(addr=addr8, value=u64, int_sel=st.sampled_from([pm4.INT_SEL_NONE, pm4.INT_SEL_SEND_INT,
                                                       pm4.INT_SEL_SEND_INT_AFTER_WRITE_CONFIRM,
                                                       pm4.INT_SEL_SEND_DATA_AFTER_WRITE_CONFIRM]),
       ctx=u32, event=st.sampled_from([ev.CACHE_FLUSH_AND_INV_TS_EVENT, ev.BOTTOM_OF_PIPE_TS]),
       cache_policy=st.integers(0, 3), gcr=st.sets(st.sampled_from(
           ["glm_wb", "glm_inv", "glv_inv", "gl1_inv", "gl2_us", "gl2_range", "gl2_discard", "gl2_inv", "gl2_wb",
            "seq"])), fam=families)
def test_release_mem_round_trip(addr, value, int_sel, ctx, event, cache_policy, gcr, fam):
    bits = pm4.release_gcr(fam, **{g: True for g in gcr})
    words = pm4.release_mem(addr, value, pm4.DATA_SEL_VALUE_64, int_sel, event_type=event, gcr=bits,
                            cache_policy=cache_policy, int_ctxid=ctx, family=fam)
    assert len(words) == 8
    p = only(words, family=fam)
    f = p.fields
    assert p.name == "RELEASE_MEM"
    assert (f["addr"], f["value"], f["int_ctxid"], f["int_sel"], f["data_sel"]) == (
        addr, value, ctx, int_sel, pm4.DATA_SEL_VALUE_64)
    assert (f["event_type"], f["event_index"], f["gcr"], f["cache_policy"], f["dst_sel"]) == (
        event, pm4.EVENT_INDEX_END_OF_PIPE, bits, cache_policy, pm4.DST_SEL_MEM)
    assert words[pm4.RELEASE_MEM_ADDR_WORD] == addr & 0xFFFFFFFF
    assert words[pm4.RELEASE_MEM_DATA_WORD] | words[pm4.RELEASE_MEM_DATA_WORD + 1] << 32 == value


@given(addr4=addr4, addr8=addr8, value=u32)
def test_release_mem_data_selects(addr4, addr8, value):
    f = only(pm4.release_mem(addr4, value, pm4.DATA_SEL_VALUE_32)).fields
    assert (f["addr"], f["value"], f["data_sel"]) == (addr4, value, pm4.DATA_SEL_VALUE_32)
    f = only(pm4.release_mem(addr8, 0, pm4.DATA_SEL_TIMESTAMP)).fields
    assert (f["addr"], f["value"], f["data_sel"]) == (addr8, 0, pm4.DATA_SEL_TIMESTAMP)
    f = only(pm4.release_mem(0, 0, pm4.DATA_SEL_NONE, pm4.INT_SEL_SEND_INT, int_ctxid=value)).fields
    assert (f["data_sel"], f["int_sel"], f["int_ctxid"]) == (pm4.DATA_SEL_NONE, pm4.INT_SEL_SEND_INT, value)


@given(addr=addr4, ref=u32, mask=u32, func=st.sampled_from(sorted(pm4.WAIT_FUNC)), poll=st.integers(0, 0xFFFF))
def test_wait_reg_mem_round_trip(addr, ref, mask, func, poll):
    words = pm4.wait_reg_mem(addr, ref, mask, func, poll)
    f = only(words).fields
    assert (f["addr"], f["reference"], f["mask"], f["function"], f["mem_space"], f["poll_interval"]) == (
        addr, ref, mask, pm4.WAIT_FUNC[func], pm4.WAIT_MEM_SPACE["memory"], poll)
    assert words[pm4.WAIT_REG_MEM_REF_WORD] == ref and words[pm4.WAIT_REG_MEM_ADDR_WORD] == addr & 0xFFFFFFFF


@given(reg=st.integers(0, (1 << 18) - 1), ref=u32)
def test_wait_reg_mem_on_a_register(reg, ref):
    f = only(pm4.wait_reg_mem(reg, ref, func="==", mem_space="register")).fields
    assert (f["addr"], f["mem_space"], f["reference"]) == (reg, pm4.WAIT_MEM_SPACE["register"], ref)


@given(addr=addr8, ref=u64, mask=u64, func=st.sampled_from(sorted(pm4.WAIT_FUNC)))
def test_wait_reg_mem64_round_trip(addr, ref, mask, func):
    p = only(pm4.wait_reg_mem64(addr, ref, mask, func))
    f = p.fields
    assert p.name == "WAIT_REG_MEM64"
    assert (f["addr"], f["reference"], f["mask"], f["function"]) == (addr, ref, mask, pm4.WAIT_FUNC[func])


@given(flags=st.fixed_dictionaries({}, optional={
    "gli_inv": st.integers(0, 3), "gl1_range": st.integers(0, 3), "glm_wb": st.integers(0, 1),
    "glm_inv": st.integers(0, 1), "glk_wb": st.integers(0, 1), "glk_inv": st.integers(0, 1),
    "glv_inv": st.integers(0, 1), "gl1_inv": st.integers(0, 1), "gl2_us": st.integers(0, 1),
    "gl2_range": st.integers(0, 3), "gl2_discard": st.integers(0, 1), "gl2_inv": st.integers(0, 1),
    "gl2_wb": st.integers(0, 1), "seq": st.integers(0, 3)}), poll=st.integers(0, 0xFFFF))
def test_acquire_mem_round_trip(flags, poll):
    gcr = pm4.gcr_cntl(**flags)
    f = only(pm4.acquire_mem(gcr, poll)).fields
    assert (f["gcr_cntl"], f["poll_interval"], f["coher_size"], f["coher_base"]) == (
        gcr, poll, pm4.COHER_SIZE_WHOLE, 0)


@given(x=u32, y=u32, z=u32, init=u32)
def test_dispatch_direct_round_trip(x, y, z, init):
    words = pm4.dispatch_direct(x, y, z, init)
    f = only(words).fields
    assert (f["x"], f["y"], f["z"], f["initiator"]) == (x, y, z, init)
    assert words[pm4.DISPATCH_DIRECT_SIZE_WORD:pm4.DISPATCH_DIRECT_SIZE_WORD + 3] == [x, y, z]


@given(addr=addr4, size=st.integers(1, (1 << 20) - 1), chain=st.booleans(), policy=st.integers(0, 3))
def test_indirect_buffer_round_trip(addr, size, chain, policy):
    words = pm4.indirect_buffer(addr, size, chain=chain, cache_policy=policy)
    f = only(words).fields
    assert (f["addr"], f["size"], f["chain"], f["valid"], f["cache_policy"], f["vmid"]) == (
        addr, size, int(chain), 1, policy, 0)
    assert words[pm4.INDIRECT_BUFFER_ADDR_WORD] == addr & 0xFFFFFFFF


@given(event=st.integers(0, 63), index=st.integers(0, 15))
def test_event_write_round_trip(event, index):
    f = only(pm4.event_write(event, index)).fields
    assert (f["event_type"], f["event_index"]) == (event, index)


def test_event_write_default_index():
    assert only(pm4.event_write(ev.CS_PARTIAL_FLUSH)).fields["event_index"] == pm4.EVENT_INDEX_CS_PARTIAL_FLUSH
    assert only(pm4.event_write(ev.BOTTOM_OF_PIPE_TS)).fields["event_index"] == pm4.EVENT_INDEX_OTHER


@pytest.mark.parametrize("n", [1, 2, 5, 300, 0x3FFF, 0x4000, 0x4001, 0x4002, 3 * 0x4000 + 7])
def test_nop_pads_exactly(n):
    words = pm4.nop(n) + pm4.dispatch_direct(1, 1, 1, 1)
    assert len(words) == n + 5
    packets = pm4.decode(words)
    assert {p.name for p in packets[:-1]} == {"NOP"} and packets[-1].name == "DISPATCH_DIRECT"
    assert packets[-1].offset == n


# --- errors ---

def test_bad_values_name_the_field():
    cases = [
        (lambda: pm4.release_mem(0x1004, 1, pm4.DATA_SEL_VALUE_64), "RELEASE_MEM: address 0x1004 must be a 8-byte"),
        (lambda: pm4.release_mem(0x1002, 1, pm4.DATA_SEL_VALUE_32), "address 0x1002 must be a 4-byte"),
        (lambda: pm4.release_mem(0x1000, 1 << 32, pm4.DATA_SEL_VALUE_32), "value=0x100000000 does not fit 32"),
        (lambda: pm4.release_mem(0x1000, 5, pm4.DATA_SEL_TIMESTAMP), "value=0x5 is not written"),
        (lambda: pm4.release_mem(0x1000, 0, 6), "data_sel=6"),
        (lambda: pm4.release_mem(0x1000, 0, pm4.DATA_SEL_TIMESTAMP, 8), "int_sel=0x8 does not fit its 3-bit"),
        (lambda: pm4.release_mem(0x1000, 0, pm4.DATA_SEL_TIMESTAMP, gcr=1), "gcr=0x1 has bits outside"),
        (lambda: pm4.release_mem(0x1000, 0, pm4.DATA_SEL_TIMESTAMP, event_type=64), "event_type=0x40"),
        (lambda: pm4.release_gcr(gl3_wb=True), "no cache action 'gl3_wb'"),
        (lambda: pm4.wait_reg_mem(0x1000, 1, func="~"), "compare function '~'"),
        (lambda: pm4.wait_reg_mem(0x1001, 1), "WAIT_REG_MEM: address 0x1001"),
        (lambda: pm4.wait_reg_mem(0x1000, 1 << 32), "reference=0x100000000"),
        (lambda: pm4.wait_reg_mem(0x1000, 1, poll=1 << 16), "poll_interval=0x10000 does not fit its 16-bit"),
        (lambda: pm4.wait_reg_mem(1 << 18, 1, mem_space="register"), "18-bit register address"),
        (lambda: pm4.wait_reg_mem(0x1000, 1, mem_space="gds"), "mem_space 'gds'"),
        (lambda: pm4.wait_reg_mem64(0x1004, 1), "WAIT_REG_MEM64: address 0x1004 must be a 8-byte"),
        (lambda: pm4.wait_reg_mem64(0x1000, 1 << 64), "reference=0x10000000000000000"),
        (lambda: pm4.dispatch_direct(1 << 32, 1, 1, 0), "x=0x100000000"),
        (lambda: pm4.indirect_buffer(0x1000, 0), "0 dwords does not fit the 20-bit size"),
        (lambda: pm4.indirect_buffer(0x1000, 1 << 20), "does not fit the 20-bit size"),
        (lambda: pm4.indirect_buffer(0x1002, 4), "INDIRECT_BUFFER: address 0x1002"),
        (lambda: pm4.acquire_mem(1 << 19), "gcr_cntl=0x80000 does not fit its 19-bit"),
        (lambda: pm4.gcr_cntl(gl2_range=4), "gl2_range=0x4 does not fit its 2-bit"),
        (lambda: pm4.gcr_cntl(gl9_inv=1), "no field 'gl9_inv'"),
        (lambda: pm4.event_write(64), "event_type=0x40"),
        (lambda: pm4.nop(0), "at least one dword"),
        (lambda: pm4.set_sh_reg(0x2E00, [1 << 32]), "register 0x2e00=0x100000000|register 0x2e00"),
        (lambda: pm4.family_for("gfx942"), "gfx9 parts"),
        (lambda: pm4.family_for("gfx1030"), "no PM4 family"),
    ]
    for fn, message in cases:
        with pytest.raises(pm4.PM4Error, match=message):
            fn()
    assert pm4.family_for("gfx1100") is pm4.GFX11 and pm4.family_for("gfx1201") is pm4.GFX12
    assert issubclass(pm4.PM4Error, ValueError) and issubclass(pm4.PM4DecodeError, ValueError)


def test_malformed_streams_name_the_offset():
    good = pm4.nop(2)
    with pytest.raises(pm4.PM4DecodeError, match="dword 2: header 0x00001234 is a type-0 packet"):
        pm4.decode(good + [0x1234])
    with pytest.raises(pm4.PM4DecodeError, match="dword 2: header 0x40000000 is a type-1 packet"):
        pm4.decode(good + [1 << 30])
    with pytest.raises(pm4.PM4DecodeError, match="dword 3: header 0x80000000 is type-2 filler"):
        pm4.decode(pm4.nop(3) + [2 << 30])
    truncated = pm4.release_mem(0x1000, 1, pm4.DATA_SEL_VALUE_64)[:5]
    with pytest.raises(pm4.PM4DecodeError, match="dword 0: RELEASE_MEM has 7 body dwords but the stream ends after 4"):
        pm4.decode(truncated)
    with pytest.raises(pm4.PM4DecodeError, match="dword 1: DISPATCH_DIRECT with 2 body dwords; its layout takes"):
        pm4.decode(pm4.nop(1) + [spec_header(OP_DISPATCH_DIRECT, 2), 1, 1])
    with pytest.raises(pm4.PM4DecodeError, match="dword 0: SET_SH_REG with 1 body dwords"):
        pm4.decode([spec_header(OP_SET_SH_REG, 1), 0x20C])


def test_unknown_opcodes_decode_raw_with_their_number():
    (p,) = pm4.decode([spec_header(0x77, 2), 0xAB, 0xCD])
    assert (p.name, p.opcode, p.count, p.body, p.fields) == ("OP_0x77", 0x77, 1, [0xAB, 0xCD], {})
    assert "OP_0x77 body=[0xab 0xcd]" in pm4.format_packets([p])
    (p,) = pm4.decode([spec_header(0x37, 1), 5])  # WRITE_DATA: known by name, fields not decoded
    assert p.name == "WRITE_DATA" and p.fields == {}


def test_decode_from_an_offset():
    words = pm4.nop(3) + pm4.event_write(ev.CS_PARTIAL_FLUSH)
    (p,) = pm4.decode(words, start=3)
    assert (p.offset, p.name) == (3, "EVENT_WRITE")


def test_format_names_every_packet_with_key_fields_in_hex():
    reg = GC_SEG0 + gc_11_0_0.regCOMPUTE_PGM_LO
    words = (pm4.nop(2) + pm4.set_sh_reg(reg, [0x12, 0x34]) + pm4.acquire_mem(pm4.gcr_invalidate_all())
             + pm4.wait_reg_mem(0x2000, 3) + pm4.wait_reg_mem64(0x2008, 4) + pm4.dispatch_direct(2, 1, 1, 1)
             + pm4.event_write(ev.CS_PARTIAL_FLUSH) + pm4.release_mem(0x1000, 9, pm4.DATA_SEL_VALUE_64)
             + pm4.indirect_buffer(0x8000, 16) + [spec_header(0x77, 1), 0])
    lines = pm4.format_packets(pm4.decode(words)).splitlines()
    names = ["NOP", "SET_SH_REG", "ACQUIRE_MEM", "WAIT_REG_MEM", "WAIT_REG_MEM64", "DISPATCH_DIRECT", "EVENT_WRITE",
             "RELEASE_MEM", "INDIRECT_BUFFER", "OP_0x77"]
    assert [line.split()[1] for line in lines] == names
    assert lines[0].startswith("0x0000 NOP") and lines[1].startswith("0x0002 SET_SH_REG")
    text = "\n".join(lines)
    for needle in (f"reg={reg:#x} values=[0x12 0x34]", "addr=0x2000 ", "reference=0x3", "x=0x2", "value=0x9",
                   "addr=0x1000", "event_type=0x7", "size=0x10", "addr=0x8000",
                   f"gcr_cntl={pm4.gcr_invalidate_all():#x}"):
        assert needle in text, needle
