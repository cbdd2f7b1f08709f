"""The emulated NVIDIA GPU driven directly (no RM, no driver): doorbells, GPFIFO and method decoding, host
semaphores, the copy engine, channel errors, fault injection, the MMU. Kernel launches: test_gpu_launch.py."""
from __future__ import annotations

import ctypes
import struct
import threading
import time

import pytest

from autogen import nv_classes as C
from autogen import nv_rm as R
from emu.nv.gpu import EmuNVGPU
from emu.nv.vaspace import MMUFault, VASpace
from gpu_rig import DATA_VA, SUBCH, Rig, immd, inc, non_inc, one_inc, sem_acquire, sem_release

PBDMA, MMU, CE = R.ROBUST_CHANNEL_PBDMA_ERROR, R.ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT, R.ROBUST_CHANNEL_CE0_ERROR


@pytest.fixture
def rig():
    r = Rig("sm_90", "compute")
    yield r
    r.close()


def u64(host: int, off: int = 0) -> int:
    return ctypes.c_uint64.from_address(host + off).value


def until(cond, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.0005)


# --- doorbells, entries, method headers -----------------------------------------------------------------------

def test_release_with_timestamp_writes_timestamp_then_payload_and_nonstall_interrupts(rig):
    sem = rig.map(DATA_VA, 0x1000)
    before = rig.gpu.clock_ns()
    rig.submit(sem_release(DATA_VA, 0x1234_5678_9ABC) + inc(0, C.NVC56F_NON_STALL_INTERRUPT, 0))
    rig.wait_idle()
    assert u64(sem) == 0x1234_5678_9ABC
    assert before <= u64(sem, 8) <= rig.gpu.clock_ns()
    assert rig.nonstall == [rig.token] and not rig.errors
    c = rig.gpu.counters()
    assert c["semaphores"] == 1 and c["nonstall_interrupts"] == 1 and c["doorbells"] >= 1


def test_work_starts_only_on_the_doorbell_and_the_same_token_rings_again(rig):
    sem = rig.map(DATA_VA, 0x1000)
    rig.wait_idle()  # the SET_OBJECT entry (rung at set-up) done, and the channel gone back to sleep: a channel that
    time.sleep(0.02)  # is still fetching may see a GPPut store without a new doorbell, as a loaded PBDMA does
    rig.submit(sem_release(DATA_VA, 1, timestamp=False), doorbell=False)
    struct.pack_into("<I", rig.userd, 0x8C, rig.put)  # GPPut written, no doorbell
    time.sleep(0.05)
    assert rig.gpget == 1 and u64(sem) == 0  # only the SET_OBJECT entry ran
    rig.ring_doorbell()
    rig.wait_idle()
    assert u64(sem) == 1
    for v in (2, 3):  # the same token written again is a new doorbell (the watcher exchanges it away)
        rig.submit(sem_release(DATA_VA, v, timestamp=False))
        rig.wait_idle()
        assert u64(sem) == v


def test_method_header_formats_and_a_sequence_split_across_entries(rig):
    sem = rig.map(DATA_VA, 0x1000)
    release32 = C.NVC56F_SEM_EXECUTE_OPERATION_RELEASE
    words = inc(0, C.NVC56F_SEM_ADDR_LO, DATA_VA & 0xFFFFFFFF, DATA_VA >> 32)
    words += [0]  # NVC56F_DMA_NOP
    words += one_inc(0, C.NVC56F_SEM_PAYLOAD_LO, 5, 7, 8)  # LO=5, then HI=7, HI=8
    words += non_inc(0, C.NVC56F_SEM_PAYLOAD_LO, 1, 2, 9)  # LO ends as 9
    words += immd(0, C.NVC56F_SEM_EXECUTE, release32)
    rig.submit(words)
    rig.wait_idle()
    assert u64(sem) == 9  # a 32-bit release writes 4 bytes
    # a method sequence whose header is in one segment and data in the next; END_PB_SEGMENT skips the rest
    head = inc(0, C.NVC56F_SEM_PAYLOAD_LO, 11)
    rig.entry(rig.push(head[:1]), 1)
    rig.entry(rig.push(head[1:] + immd(0, C.NVC56F_SEM_EXECUTE, release32) + [7 << 29] + [0xDEADBEEF]), 4)
    rig.ring_doorbell()
    rig.wait_idle()
    assert u64(sem) == 11 and not rig.errors


def test_control_entry_nop_is_accepted(rig):
    rig.entry(0, 0)  # LENGTH 0, OPCODE NOP
    rig.ring_doorbell()
    rig.wait_idle()
    assert not rig.errors


@pytest.mark.parametrize("words, match", [
    (inc(0, 0x0C4, 1), "not a valid host method"),
    (inc(3, 0x300, 1), "subchannel 3, which no SET_OBJECT"),
    ([1 << 29 | 1 << 16 | 1 << 12 | 0x100 >> 2, 0], "reserved bit 12"),
    ([6 << 29], "reserved SEC_OP 6"),
    (inc(2, C.NVC56F_SET_OBJECT, C.HOPPER_DMA_COPY_A), "no object of that class"),
    (inc(0, C.NVC56F_MEM_OP_D, C.NVC56F_MEM_OP_D_OPERATION_MMU_TLB_INVALIDATE << 27), "privileged"),
    (inc(0, C.NVC56F_SEM_EXECUTE, 1 << 5), "reserved bits"),
    (inc(0, C.NVC56F_SEM_ADDR_LO, 0x1004, 0, 1, 0, 1 | 1 << 24), "8-byte alignment"),
    (inc(0, C.NVC56F_SEM_ADDR_LO, 0x1008, 0, 1, 0, 1 | 1 << 24 | 1 << 25), "16-byte alignment"),
    (inc(0, C.NVC56F_WFI, 2), "reserved bits 31:1"),
])
def test_bad_methods_are_pbdma_errors_and_the_channel_stops_at_the_entry(rig, words, match):
    bad = rig.put
    rig.submit(words)
    token, code, info = rig.wait_error()
    assert (token, code, info["engine"]) == (rig.token, PBDMA, "host")
    assert match in info["message"]
    time.sleep(0.02)
    assert rig.gpget == bad  # GPGet stays at the offending entry
    rig.submit(sem_release(DATA_VA, 1))  # a dead channel runs nothing more
    time.sleep(0.02)
    assert rig.gpget == bad and len(rig.errors) == 1


def test_unmapped_pushbuffer_and_semaphore_are_mmu_faults_with_the_address(rig):
    rig.entry(0x7000_0000, 4)
    rig.ring_doorbell()
    _, code, info = rig.wait_error()
    assert (code, info["address"], info["access"]) == (MMU, 0x7000_0000, "read")


def test_release_to_unmapped_memory_faults_at_its_address():
    r = Rig("sm_86", "compute")
    try:
        r.submit(sem_release(0x5000_0000, 1))
        _, code, info = r.wait_error()
        assert (code, info["address"], info["access"]) == (MMU, 0x5000_0008, "write")  # the timestamp goes first
    finally:
        r.close()


def test_acquire_blocks_its_channel_only_and_wakes_on_release():
    r = Rig("sm_90", "compute")
    other = Rig(engine="copy", gpu=r.gpu, vas=r.vas, token=9)
    try:
        sem = r.map(DATA_VA, 0x1000)
        r.submit(sem_acquire(DATA_VA + 16, 5) + sem_release(DATA_VA, 1, timestamp=False))
        time.sleep(0.03)
        assert u64(sem) == 0 and r.gpget != r.put  # blocked on the acquire
        other.submit(sem_release(DATA_VA + 16, 4, timestamp=False))  # not enough
        other.wait_idle()
        time.sleep(0.01)
        assert u64(sem) == 0
        other.submit(sem_release(DATA_VA + 16, 5, timestamp=False))  # another channel's release wakes it
        r.wait_idle(2.0)
        assert u64(sem) == 1
        # a CPU write is seen too (re-read with back-off, at once after a kick)
        r.submit(sem_acquire(DATA_VA + 32, 1 << 40) + sem_release(DATA_VA, 2, timestamp=False))
        ctypes.c_uint64.from_address(sem + 32).value = 1 << 40
        r.gpu.kick()
        r.wait_idle(2.0)
        assert u64(sem) == 2 and not r.errors and not other.errors
    finally:
        r.close()


@pytest.mark.parametrize("op, mem, payload, ok", [
    (C.NVC56F_SEM_EXECUTE_OPERATION_ACQUIRE, 7, 7, True),
    (C.NVC56F_SEM_EXECUTE_OPERATION_ACQUIRE, 8, 7, False),
    (C.NVC56F_SEM_EXECUTE_OPERATION_ACQ_STRICT_GEQ, 2 ** 64 - 1, 5, True),
    (C.NVC56F_SEM_EXECUTE_OPERATION_ACQ_CIRC_GEQ, 2, 2 ** 64 - 3, True),  # wrapped: 2 is 5 past 2**64-3
    (C.NVC56F_SEM_EXECUTE_OPERATION_ACQ_CIRC_GEQ, 2 ** 64 - 3, 2, False),
    (C.NVC56F_SEM_EXECUTE_OPERATION_ACQ_AND, 0b100, 0b110, True),
    (C.NVC56F_SEM_EXECUTE_OPERATION_ACQ_NOR, 2 ** 64 - 1, 0, False),
])
def test_acquire_operations(rig, op, mem, payload, ok):
    sem = rig.map(DATA_VA, 0x1000)
    ctypes.c_uint64.from_address(sem + 64).value = mem
    rig.submit(sem_acquire(DATA_VA + 64, payload, op) + sem_release(DATA_VA, 1, timestamp=False))
    time.sleep(0.03)
    assert (u64(sem) == 1) == ok


def test_semaphore_reduction_add(rig):
    sem = rig.map(DATA_VA, 0x1000)
    ctypes.c_uint64.from_address(sem).value = 40
    ex = C.NVC56F_SEM_EXECUTE_OPERATION_REDUCTION | 1 << 24 | C.NVC56F_SEM_EXECUTE_REDUCTION_IADD << 27 | 1 << 31
    rig.submit(inc(0, C.NVC56F_SEM_ADDR_LO, DATA_VA & 0xFFFFFFFF, DATA_VA >> 32, 2, 0, ex))
    rig.wait_idle()
    assert u64(sem) == 42


# --- copy engine -------------------------------------------------------------------------------------------------

def launch_dma(pitch=True, flush=True, multi=False, sem=0, intr=0, transfer=1, extra=0) -> int:
    p = "NVC8B5_LAUNCH_DMA_"

    def f(name: str, v: int) -> int:
        return v << getattr(C, p + name + "_SHIFT")
    return (f("DATA_TRANSFER_TYPE", transfer) | f("FLUSH_ENABLE", flush) | f("SEMAPHORE_TYPE", sem)
            | f("INTERRUPT_TYPE", intr) | f("SRC_MEMORY_LAYOUT", pitch) | f("DST_MEMORY_LAYOUT", pitch)
            | f("MULTI_LINE_ENABLE", multi) | f("SEMAPHORE_PAYLOAD_SIZE", 1) | extra)


def copy_words(src: int, dst: int, length: int, lines: int = 1, pitch_in: int = 0, pitch_out: int = 0,
               **kw) -> list[int]:
    s = SUBCH["copy"]
    return (inc(s, C.NVC8B5_OFFSET_IN_UPPER, src >> 32, src & 0xFFFFFFFF, dst >> 32, dst & 0xFFFFFFFF, pitch_in,
                pitch_out, length, lines) + inc(s, C.NVC8B5_LAUNCH_DMA, launch_dma(multi=lines > 1, **kw)))


@pytest.fixture
def ce():
    r = Rig("sm_90", "copy")
    yield r
    r.close()


def test_copy_one_line_and_pitched_lines(ce):
    src, dst = ce.map(DATA_VA, 0x4000), ce.map(DATA_VA + 0x10000, 0x4000)
    ctypes.memmove(src, bytes(range(256)) * 16, 4096)
    ce.submit(copy_words(DATA_VA + 3, DATA_VA + 0x10000 + 5, 1000))
    ce.wait_idle()
    assert ctypes.string_at(dst + 5, 1000) == ctypes.string_at(src + 3, 1000)
    assert ctypes.string_at(dst, 5) == b"\0" * 5 and ctypes.string_at(dst + 1005, 4) == b"\0" * 4
    ce.submit(copy_words(DATA_VA, DATA_VA + 0x12000, 16, lines=4, pitch_in=256, pitch_out=32))
    ce.wait_idle()
    for i in range(4):
        assert ctypes.string_at(dst + 0x2000 + 32 * i, 16) == ctypes.string_at(src + 256 * i, 16)
    ce.submit(copy_words(0x9999_0000, 0x9999_0000, 0))  # zero bytes: nothing is touched, nothing faults
    ce.wait_idle()
    c = ce.gpu.counters()
    assert not ce.errors and c["copies"] == 3 and c["bytes_copied"] == 1000 + 64


def test_copy_semaphore_four_words_and_interrupt(ce):
    ce.map(DATA_VA, 0x2000)
    sem = ce.map(DATA_VA + 0x10000, 0x1000)
    s = SUBCH["copy"]
    words = inc(s, C.NVC8B5_SET_SEMAPHORE_A, DATA_VA >> 32 | 0, (DATA_VA + 0x10000) & 0xFFFFFFFF, 77, 1)
    words += copy_words(DATA_VA, DATA_VA + 0x1000, 64, sem=2, intr=2)
    ce.submit(words)
    ce.wait_idle()
    until(lambda: ce.nonstall)
    assert u64(sem) == 1 << 32 | 77 and u64(sem, 8) > 0 and ce.nonstall == [ce.token]


def test_copy_faults_at_the_first_unmapped_byte(ce):
    ce.map(DATA_VA, 0x1000)
    ce.map(DATA_VA + 0x1000, 0x1000)  # adjacent mappings: a copy may run across them
    ce.map(DATA_VA + 0x10000, 0x4000)
    ce.submit(copy_words(DATA_VA + 0x800, DATA_VA + 0x10000, 0x1800))
    ce.wait_idle()
    assert not ce.errors
    ce.submit(copy_words(DATA_VA + 0x800, DATA_VA + 0x10000, 0x2000))
    _, code, info = ce.wait_error()
    assert (code, info["address"], info["access"], info["engine"]) == (MMU, DATA_VA + 0x2000, "read", "copy")


@pytest.mark.parametrize("kw, match", [
    (dict(pitch=False), "BLOCKLINEAR"),
    (dict(extra=1 << C.NVC8B5_LAUNCH_DMA_REMAP_ENABLE_SHIFT), "REMAP_ENABLE"),
    (dict(extra=1 << 30), "reserved bits"),
    (dict(intr=1), "BLOCKING"),
])
def test_copy_refuses_what_it_does_not_implement(ce, kw, match):
    ce.map(DATA_VA, 0x1000)
    ce.submit(copy_words(DATA_VA, DATA_VA + 0x100, 16, **kw))
    _, code, info = ce.wait_error()
    assert code == CE and match in info["message"]


# --- fault injection, close ---------------------------------------------------------------------------------------

def test_stall_delay_kill_and_poison(rig):
    sem = rig.map(DATA_VA, 0x1000)
    rig.gpu.stall("compute")
    rig.submit(sem_release(DATA_VA, 1, timestamp=False))
    time.sleep(0.05)
    assert u64(sem) == 0
    rig.gpu.stall("compute", False)
    rig.wait_idle()
    assert u64(sem) == 1
    rig.gpu.delay(rig.token, 0.1)
    t0 = time.monotonic()
    rig.submit(sem_release(DATA_VA, 2, timestamp=False))
    until(lambda: u64(sem) == 2)
    assert time.monotonic() - t0 >= 0.09
    rig.gpu.poison(DATA_VA + 0x100, 0x10)
    rig.submit(sem_release(DATA_VA + 0x100, 3, timestamp=False))
    _, code, info = rig.wait_error()
    assert (code, info["address"]) == (MMU, DATA_VA + 0x100)


def test_kill_channel_reports_a_channel_error_and_stops_it(rig):
    rig.map(DATA_VA, 0x1000)
    rig.submit(sem_acquire(DATA_VA, 1))
    time.sleep(0.01)
    rig.gpu.kill_channel(rig.token)
    _, code, info = rig.wait_error()
    assert code == R.ROBUST_CHANNEL_PREEMPTIVE_REMOVAL and "dead channel" in info["message"]  # nverror.h ROBUST_CHANNEL_PREEMPTIVE_REMOVAL


def test_close_stops_everything_quickly_even_during_an_acquire():
    r = Rig("sm_89", "compute")
    r.map(DATA_VA, 0x1000)
    r.submit(sem_acquire(DATA_VA, 1))
    time.sleep(0.01)
    threads = [r.gpu._watcher] + [c.thread for c in r.gpu.channels.values()]
    t0 = time.monotonic()
    r.close()
    assert time.monotonic() - t0 < 1.0 and not any(t.is_alive() for t in threads)


def test_remove_channel_and_unknown_arguments():
    gpu = EmuNVGPU(0, "sm_86")
    try:
        r = Rig(gpu=gpu, engine="compute")
        gpu.remove_channel(r.token)
        with pytest.raises(KeyError, match="no channel"):
            gpu.schedule([r.token], True)
        with pytest.raises(ValueError, match="is a compute channel"):
            Rig(gpu=gpu, engine="compute", token=3, bind=False).gpu.add_object(3, C.AMPERE_DMA_COPY_B)
    finally:
        gpu.close()
    with pytest.raises(ValueError, match="host_kernels=False is not supported"):
        EmuNVGPU(0, "sm_90", host_kernels=False)
    with pytest.raises(ValueError, match="not one of"):
        EmuNVGPU(0, "sm_75")


def test_doorbells_of_two_channels_between_two_looks_serve_both():
    a = Rig("sm_90", "compute")
    b = Rig(engine="copy", gpu=a.gpu, vas=a.vas, token=9)
    try:
        sem = a.map(DATA_VA, 0x1000)
        a.gpu.stall("compute")
        a.gpu.stall("copy")
        a.submit(sem_release(DATA_VA, 1, timestamp=False))
        b.submit(sem_release(DATA_VA + 8, 2, timestamp=False))  # overwrites a's token in the doorbell word
        a.gpu.stall("compute", False)
        a.gpu.stall("copy", False)
        a.wait_idle()
        b.wait_idle()
        assert (u64(sem), u64(sem, 8)) == (1, 2)
    finally:
        a.close()


# --- the MMU ---------------------------------------------------------------------------------------------------------

def test_vaspace_maps_translates_and_faults():
    vas = VASpace(49)
    bufs = [ctypes.create_string_buffer(0x1000) for _ in range(3)]
    vas.map(0x1000, 0x1000, ctypes.addressof(bufs[0]), "a")
    vas.map(0x2000, 0x1000, ctypes.addressof(bufs[1]), "b")
    with pytest.raises(ValueError, match="overlaps (a|b)"):
        vas.map(0x1800, 0x1000, ctypes.addressof(bufs[2]), "c")
    assert vas.translate(0x1010, 16, False) == ctypes.addressof(bufs[0]) + 0x10
    assert vas.range_of(0x2fff) == (0x2000, 0x1000, ctypes.addressof(bufs[1])) and vas.range_of(0x3000) is None
    with pytest.raises(MMUFault) as e:
        vas.translate(0x1ff8, 16, True)  # one mapping only: crossing is a fault at its end
    assert (e.value.va, e.value.access) == (0x2000, "write")
    vas.write(0x1ffc, b"12345678")  # read/write walk across adjacent mappings
    assert vas.read(0x1ffc, 8) == b"12345678"
    with pytest.raises(MMUFault) as e:
        vas.read(0x2ff0, 0x20)
    assert e.value.va == 0x3000
    with pytest.raises(ValueError, match="in two"):
        vas.unmap(0x1000, 0x1800)
    vas.unmap(0x1000, 0x2000)
    assert vas.mappings() == []


def test_unmap_waits_for_accesses_in_flight():
    vas = VASpace(49)
    buf = ctypes.create_string_buffer(0x1000)
    vas.map(0x1000, 0x1000, ctypes.addressof(buf), "a")
    done = []
    with vas.gate.shared():
        t = threading.Thread(target=lambda: (vas.unmap(0x1000, 0x1000), done.append(1)))
        t.start()
        time.sleep(0.02)
        assert not done
    t.join(1.0)
    assert done
