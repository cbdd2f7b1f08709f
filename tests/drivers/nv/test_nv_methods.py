"""Round trips and known values for drivers.nv.methods."""
import pytest

from autogen import nv_classes as C
from drivers.nv import methods as m


def names(words, classes=None):
    return [(x.subchannel, x.name, x.value) for x in m.decode(words, classes)]


def test_header_known_value():
    # clc56f.h: SEC_OP 31:29 (INC_METHOD 1), COUNT 28:16, SUBCHANNEL 15:13, ADDRESS 11:0 = offset >> 2.
    assert m.header("inc", 1, 0x2b4, 1) == (1 << 29) | (1 << 16) | (1 << 13) | (0x2b4 >> 2)
    assert m.header("non_inc", 0, 0x5c, 5) == 0x6005_0017
    assert m.immediate(2, 0x100, 0x1FFF) == [(4 << 29) | (0x1FFF << 16) | (2 << 13) | 0x40]


@pytest.mark.parametrize("kind", ["inc", "non_inc", "one_inc"])
def test_header_forms_round_trip(kind):
    words = [m.header(kind, 3, 0x400, 3), 10, 11, 12]
    offs = {"inc": [0x400, 0x404, 0x408], "non_inc": [0x400] * 3, "one_inc": [0x400, 0x404, 0x404]}[kind]
    got = m.decode(words, {3: C.AMPERE_DMA_COPY_B})
    assert [(x.subchannel, x.method, x.value) for x in got] == [(3, o, v) for o, v in zip(offs, (10, 11, 12))]


def test_immediate_round_trip():
    assert names(m.immediate(0, C.NVC56F_NON_STALL_INTERRUPT, 7)) == [(0, "NON_STALL_INTERRUPT", 7)]


@pytest.mark.parametrize("args", [("bogus", 0, 0, 1), ("inc", 8, 0, 1), ("inc", 0, 2, 1), ("inc", 0, 0x4000, 1),
                                  ("inc", 0, 0, 0), ("inc", 0, 0, m.MAX_COUNT + 1), ("immd", 0, 0, 0x2000)])
def test_header_errors(args):
    with pytest.raises(m.NVMethodError):
        m.header(*args)


def test_gpfifo_entry_round_trip():
    e = m.gpfifo_entry(0xAB_1234_5678, 0x1FFFFF, sync_wait=True)
    assert e & 0xFFFFFFFF == 0x1234_5678 and (e >> 32) & 0xFF == 0xAB
    assert (e >> 32) >> C.NVC56F_GP_ENTRY1_LENGTH_SHIFT & 0x1FFFFF == 0x1FFFFF
    assert m.decode_gpfifo_entry(e) == m.GPFifoEntry(0xAB_1234_5678, 0x1FFFFF, True, False, False)
    e = m.gpfifo_entry(0x1000, 4, subroutine=True, conditional_fetch=True)
    assert m.decode_gpfifo_entry(e) == m.GPFifoEntry(0x1000, 4, False, True, True)
    for bad in ((0x1002, 4), (1 << 40, 4), (0x1000, 0), (0x1000, 1 << 21)):
        with pytest.raises(m.NVMethodError):
            m.gpfifo_entry(*bad)


@pytest.mark.parametrize("timestamp", [False, True])
def test_semaphore_release(timestamp):
    got = m.decode(m.semaphore_release(0x12_3456_7890, 2**40 + 5, timestamp=timestamp))
    assert [x.name for x in got] == ["SEM_ADDR_LO", "SEM_ADDR_HI", "SEM_PAYLOAD_LO", "SEM_PAYLOAD_HI", "SEM_EXECUTE"]
    assert got[0].value | got[1].value << 32 == 0x12_3456_7890
    assert got[2].value | got[3].value << 32 == 2**40 + 5
    f = got[4].fields()
    assert f["operation"] == C.NVC56F_SEM_EXECUTE_OPERATION_RELEASE
    assert f["payload_size"] == C.NVC56F_SEM_EXECUTE_PAYLOAD_SIZE_64BIT
    assert f["release_timestamp"] == int(timestamp) and f["release_wfi"] == 1
    assert got[4].value >> 24 & 1 == 1  # clc56f.h: PAYLOAD_SIZE 24:24


def test_semaphore_acquire_and_widths():
    got = m.decode(m.semaphore_acquire(0x1000, 2**33))
    assert got[2].value == 0 and got[3].value == 2 and got[4].fields()["operation"] == \
        C.NVC56F_SEM_EXECUTE_OPERATION_ACQ_STRICT_GEQ and got[4].fields()["acquire_switch_tsg"] == 1
    assert m.decode(m.semaphore_acquire(0x1000, 1, circular=True))[4].fields()["operation"] == 3
    with pytest.raises(m.NVMethodError):
        m.semaphore_release(1 << 40, 1)  # Ampere's SEM_ADDR_HI is 8 bits
    m.semaphore_release(1 << 40, 1, host=C.HOPPER_CHANNEL_GPFIFO_A)  # Hopper's is 25
    for bad in (dict(addr=0x1004, payload=1), dict(addr=0x1000, payload=1 << 64)):
        with pytest.raises(m.NVMethodError):
            m.semaphore_release(**bad)


def test_hopper_host_agrees_with_ampere():
    for n in ("SEM_ADDR_LO", "SEM_EXECUTE", "SEM_EXECUTE_PAYLOAD_SIZE_SHIFT", "SEM_EXECUTE_RELEASE_WFI_SHIFT",
              "SEM_EXECUTE_OPERATION_RELEASE", "WFI", "SET_OBJECT"):
        assert getattr(C, "NVC86F_" + n) == getattr(C, "NVC56F_" + n)
        assert getattr(C, "NVC96F_" + n, getattr(C, "NVC56F_" + n)) == getattr(C, "NVC56F_" + n)


def test_host_misc_round_trip():
    words = m.concat(m.non_stall_interrupt(), m.wait_for_idle(), m.set_object(1, C.HOPPER_COMPUTE_A))
    assert names(words) == [(0, "NON_STALL_INTERRUPT", 0), (0, "WFI", 1), (1, "SET_OBJECT", C.HOPPER_COMPUTE_A)]
    with pytest.raises(m.NVMethodError):
        m.set_object(1, 0x1234)


@pytest.mark.parametrize("cls", m.COMPUTE_CLASSES)
def test_compute_round_trip(cls):
    p = m.CLASS_PREFIX[cls]
    words = m.concat(m.set_object(1, cls), m.launch_qmd(0x12_3456_7800, cls=cls),
                     m.launch_qmd(0x100, cls=cls, pcas2=False),
                     m.invalidate_shader_caches(instruction=True, data=True, constant=True, cls=cls),
                     m.invalidate_shader_caches(data=True, no_wfi=True, cls=cls),
                     m.set_shader_local_memory_window(0x7_0000_0000, cls=cls),
                     m.set_shader_shared_memory_window(0x1_0000_0000, cls=cls),
                     m.set_shader_local_memory(0x12_0000_0000, cls=cls),
                     m.set_shader_local_memory_size(0x1_2000_0000, 132, cls=cls))
    got = m.decode(words)  # SET_OBJECT in the stream binds subchannel 1
    assert all(x.known for x in got)
    assert [x.name for x in got] == [
        "SET_OBJECT", "SEND_PCAS_A", "SEND_SIGNALING_PCAS2_B", "SEND_PCAS_A", "SEND_SIGNALING_PCAS_B",
        "INVALIDATE_SHADER_CACHES", "INVALIDATE_SHADER_CACHES_NO_WFI", "SET_SHADER_LOCAL_MEMORY_WINDOW_A",
        "SET_SHADER_LOCAL_MEMORY_WINDOW_B", "SET_SHADER_SHARED_MEMORY_WINDOW_A", "SET_SHADER_SHARED_MEMORY_WINDOW_B",
        "SET_SHADER_LOCAL_MEMORY_A", "SET_SHADER_LOCAL_MEMORY_B", "SET_SHADER_LOCAL_MEMORY_NON_THROTTLED_A",
        "SET_SHADER_LOCAL_MEMORY_NON_THROTTLED_B", "SET_SHADER_LOCAL_MEMORY_NON_THROTTLED_C"]
    assert got[1].method == getattr(C, p + "_SEND_PCAS_A") == 0x2b4 and got[1].value == 0x12_3456_78
    assert got[2].fields()["pcas_action"] == getattr(C, p + "_SEND_SIGNALING_PCAS2_B_PCAS_ACTION_INVALIDATE_COPY_SCHEDULE")
    assert got[4].fields() == {"invalidate": 1, "schedule": 1}
    assert {k: v for k, v in got[5].fields().items() if v} == {"instruction": 1, "data": 1, "constant": 1}
    assert got[6].fields() == {"instruction": 0, "global_data": 1, "constant": 0}
    assert (got[7].value, got[8].value) == (7, 0)
    assert (got[13].value, got[14].value, got[15].fields()["max_sm_count"]) == (1, 0x2000_0000, 132)
    with pytest.raises(m.NVMethodError):
        m.launch_qmd(0x180, cls=cls)
    with pytest.raises(m.NVMethodError):
        m.invalidate_shader_caches(locks=True, no_wfi=True, cls=cls)


@pytest.mark.parametrize("cls", m.COPY_CLASSES)
def test_copy_round_trip(cls):
    p = m.CLASS_PREFIX[cls]
    got = m.decode(m.copy(0x2000, 0x1_0000_3000, 100, cls=cls, pipelined=True, semaphore=(0x5000, 9)),
                   {m.SUBCH_COPY: cls})
    by = {x.name: x for x in got}
    assert by["OFFSET_IN_UPPER"].value == 1 and by["OFFSET_IN_LOWER"].value == 0x3000
    assert by["OFFSET_OUT_LOWER"].value == 0x2000 and by["LINE_LENGTH_IN"].value == 100
    assert by["LINE_COUNT"].value == 1 and by["SET_SEMAPHORE_B"].value == 0x5000
    assert by["SET_SEMAPHORE_PAYLOAD"].value == 9
    f = by["LAUNCH_DMA"].fields()
    assert f["data_transfer_type"] == getattr(C, p + "_LAUNCH_DMA_DATA_TRANSFER_TYPE_PIPELINED")
    assert f["flush_enable"] == 1 and f["src_memory_layout"] == f["dst_memory_layout"] == 1
    assert f["semaphore_type"] == getattr(C, p + "_LAUNCH_DMA_SEMAPHORE_TYPE_RELEASE_ONE_WORD_SEMAPHORE")
    assert by["LAUNCH_DMA"].value >> 2 & 1 == 1  # clc6b5.h FLUSH_ENABLE 2:2


def test_copy_split_at_line_limit():
    n = m.COPY_MAX_LINE * 2 + 5
    got = m.decode(m.copy(0, 1 << 40, n), {m.SUBCH_COPY: C.AMPERE_DMA_COPY_B})
    lens = [x.value for x in got if x.name == "LINE_LENGTH_IN"]
    assert lens == [m.COPY_MAX_LINE, m.COPY_MAX_LINE, 5] and all(v <= 0xFFFFFFFF for v in lens)
    launches = [x.fields() for x in got if x.name == "LAUNCH_DMA"]
    assert [f["flush_enable"] for f in launches] == [0, 0, 1]
    ins = [x.value for x in got if x.name == "OFFSET_IN_LOWER"]
    assert ins == [0, m.COPY_MAX_LINE & 0xFFFFFFFF, (2 * m.COPY_MAX_LINE) & 0xFFFFFFFF]
    with pytest.raises(m.NVMethodError):
        m.copy(0, 0, 0)
    with pytest.raises(m.NVMethodError):
        m.copy(1 << 49, 0, 4)  # Ampere's OFFSET_*_UPPER is 17 bits
    with pytest.raises(m.NVMethodError):
        m.copy(0, 0, 4, cls=C.AMPERE_DMA_COPY_A, semaphore=(0x100, 1 << 32))  # C6B5: one-word payload only


def test_unknown_methods():
    words = m.inc(1, 0x1234, 5) + m.inc(0, 0x44, 6)
    got = m.decode(words, {1: C.AMPERE_COMPUTE_B})
    assert [x.name for x in got] == ["UNKNOWN(NVC7C0 0x1234)", "UNKNOWN(NVC56F 0x0044)"]
    assert not got[0].known and got[0].fields() == {}
    assert m.decode(m.inc(2, 0x300, 1))[0].name == "UNKNOWN(unbound subchannel 0x0300)"
    with pytest.raises(m.NVDecodeError, match="0x1234"):
        m.decode(words, {1: C.AMPERE_COMPUTE_B}, strict=True)


def test_decode_errors():
    with pytest.raises(m.NVDecodeError, match="word 0"):
        m.decode([m.header("inc", 0, 0x5c, 3), 1])
    with pytest.raises(m.NVDecodeError, match="secondary opcode 7"):
        m.decode([7 << 29])
