"""The emulated command processor is strict and faithful: legal waits block (in rings and indirect buffers) and
compare the width their packet names, a queue runs only when its doorbell is written, and malformed packets are
GPU faults that name the packet. Streams are raw words built here from the generated constants, submitted
through the KFD driver's rings, so neither the driver's encoders nor its decoders are involved.
"""
from __future__ import annotations

import ctypes
import re
import time

import pytest

from autogen import pm4_nvd as nvd
from autogen import sdma_v6 as sd
from drivers.amd.kfd import KFDDevice
from emu.machine import emulated_system
from hcq.buffer import MemFlags
from hcq.device import DeviceFaultError

HOST = MemFlags.HOST_VISIBLE | MemFlags.UNCACHED
WAIT_S = 10.0


def pm4(op: int, body: list[int]) -> list[int]:
    """A type-3 packet: type 3 in bits 31:30, body dwords - 1 in 29:16, opcode in 15:8."""
    return [3 << 30 | (len(body) - 1) << 16 | op << 8] + body


def release_mem(addr: int, value: int, data_sel: int = 2) -> list[int]:
    # event 20 (CACHE_FLUSH_AND_INV_TS_EVENT), event_index 5 (end of pipe); data_sel in 31:29, no interrupt
    return pm4(nvd.PACKET3_RELEASE_MEM, [20 | 5 << 8, data_sel << 29, addr & 0xFFFFFFFF, addr >> 32,
                                         value & 0xFFFFFFFF, value >> 32, 0])


def wait_mem(addr: int, ref: int, func: int = 5, mask: int = 0xFFFFFFFF) -> list[int]:
    """WAIT_REG_MEM on memory (MEM_SPACE 1 in bits 5:4), 32-bit reference and mask."""
    return pm4(nvd.PACKET3_WAIT_REG_MEM, [func | 1 << 4, addr & 0xFFFFFFFF, addr >> 32, ref, mask, 4])


def wait_mem64(addr: int, ref: int, func: int = 5, mask: int = (1 << 64) - 1) -> list[int]:
    """WAIT_REG_MEM64 (PAL PM4_MEC_WAIT_REG_MEM64): control, address, 64-bit reference and mask, poll interval."""
    return pm4(nvd.PACKET3_WAIT_REG_MEM64, [func | 1 << 4, addr & 0xFFFFFFFF, addr >> 32, ref & 0xFFFFFFFF,
                                            ref >> 32, mask & 0xFFFFFFFF, mask >> 32, 4])


def indirect_buffer(addr: int, size: int, valid: int = 1, chain: int = 0) -> list[int]:
    return pm4(nvd.PACKET3_INDIRECT_BUFFER, [addr & 0xFFFFFFFF, addr >> 32, size | chain << 20 | valid << 23])


@pytest.fixture
def dev():
    d = KFDDevice(0, emulated_system("amd", ("gfx1100",), private=True))
    yield d
    d.close()


def buffer(dev, words_or_size) -> object:
    """A host-visible buffer holding words (or zeroed, of a size in bytes)."""
    if isinstance(words_or_size, int):
        buf = dev.alloc(words_or_size, HOST)
        ctypes.memset(buf.host_addr, 0, words_or_size)
        return buf
    buf = dev.alloc(4 * len(words_or_size), HOST)
    (ctypes.c_uint32 * len(words_or_size)).from_address(buf.host_addr)[:] = words_or_size
    return buf


def u64(buf, off: int = 0) -> int:
    return ctypes.c_uint64.from_address(buf.host_addr + off).value


def set_u64(buf, value: int, off: int = 0) -> None:
    ctypes.c_uint64.from_address(buf.host_addr + off).value = value


def cp_counter(dev, name: str) -> int:
    return dev.system.kfd.cp_counters().get(name, 0)


def until(cond, what: str) -> None:
    """Poll a condition the emulated GPU makes true, bounded."""
    deadline = time.monotonic() + WAIT_S
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


def expect_fault(dev, queue: str, pattern: str) -> None:
    """Signal after the bad stream on the same queue: the wait ends in the driver's DeviceFaultError, and the fault
    the emulated GPU reported names the packet."""
    sig = dev.new_signal(0)
    with pytest.raises(DeviceFaultError, match="hardware exception|page fault"):
        q = dev.compute_queue() if queue == "compute" else dev.copy_queue()
        q.signal(sig, 1).submit(dev)
        sig.wait(1, timeout=WAIT_S)
    messages = [f["message"] for f in dev.system.kfd.faults]
    assert any(re.search(pattern, m) for m in messages), messages


def signal_after(dev, queue: str = "compute"):
    sig = dev.new_signal(0)
    q = dev.compute_queue() if queue == "compute" else dev.copy_queue()
    q.signal(sig, 1).submit(dev)
    return sig


# --- legal waits block, in rings and indirect buffers, and compare the width they name ---

@pytest.mark.parametrize("wide", [False, True])
def test_an_unsatisfied_wait_inside_an_indirect_buffer_blocks_then_completes(dev, wide):
    gate, out = buffer(dev, 64), buffer(dev, 64)
    wait = wait_mem64(gate.va, 1 << 32 | 5) if wide else wait_mem(gate.va, 5)
    words = wait + release_mem(out.va, 7)
    ib = buffer(dev, words)
    polls = cp_counter(dev, "wait_polls")
    dev.compute_ring.submit(indirect_buffer(ib.va, len(words)))
    sig = signal_after(dev)
    until(lambda: cp_counter(dev, "wait_polls") >= polls + 3, "the CP to poll the wait")
    set_u64(gate, 4 if not wide else 1 << 32 | 4)  # not yet: one below
    polls = cp_counter(dev, "wait_polls")
    until(lambda: cp_counter(dev, "wait_polls") >= polls + 3, "the CP to poll the wait again")
    assert (u64(out), sig.value) == (0, 0), "the queue ran past a wait that is not satisfied"
    set_u64(gate, 5 if not wide else 1 << 32 | 5)
    sig.wait(1, timeout=WAIT_S)
    assert u64(out) == 7 and not dev.system.kfd.faults, dev.system.kfd.faults


def test_wait_reg_mem_compares_the_low_word_and_wait_reg_mem64_all_64_bits(dev):
    sig_mem, out = buffer(dev, 64), buffer(dev, 64)
    set_u64(sig_mem, 1 << 32)  # low word 0, high word 1
    # 32 bits: the low word (0) is not >= 1, although the 64-bit value is: it blocks as hardware does.
    dev.compute_ring.submit(wait_mem(sig_mem.va, 1) + release_mem(out.va, 1))
    polls = cp_counter(dev, "wait_polls")
    until(lambda: cp_counter(dev, "wait_polls") >= polls + 3, "the CP to poll the 32-bit wait")
    assert u64(out) == 0
    set_u64(sig_mem, 1 << 32 | 1)
    until(lambda: u64(out) == 1, "the 32-bit wait to pass on the low word")
    # 64 bits: 2**32 + 1 is not >= 2**33 although its low word is >= 0.
    dev.compute_ring.submit(wait_mem64(sig_mem.va, 1 << 33) + release_mem(out.va, 2))
    polls = cp_counter(dev, "wait_polls")
    until(lambda: cp_counter(dev, "wait_polls") >= polls + 3, "the CP to poll the 64-bit wait")
    assert u64(out) == 1
    set_u64(sig_mem, 1 << 33)
    until(lambda: u64(out) == 2, "the 64-bit wait to pass")
    assert not dev.system.kfd.faults


def test_sdma_poll_regmem_compares_32_bits(dev):
    mem, out = buffer(dev, 64), buffer(dev, 64)
    set_u64(mem, 1 << 32)
    # POLL_REGMEM: FUNC >= (5) in 30:28, MEM_POLL bit 31; address, value, mask, interval/retry
    poll = [sd.SDMA_OP_POLL_REGMEM | 5 << 28 | 1 << 31, mem.va & 0xFFFFFFFF, mem.va >> 32, 1, 0xFFFFFFFF, 10]
    fence = [sd.SDMA_OP_FENCE, out.va & 0xFFFFFFFF, out.va >> 32, 9]
    dev.sdma_ring.submit(poll + fence)
    polls = cp_counter(dev, "wait_polls")
    until(lambda: cp_counter(dev, "wait_polls") >= polls + 3, "the SDMA engine to poll")
    assert u64(out) == 0, "a 32-bit poll passed on the high word"
    set_u64(mem, 1)
    until(lambda: u64(out) == 9, "the poll to pass")
    assert not dev.system.kfd.faults


# --- doorbells ---

def test_writing_the_write_pointer_without_the_doorbell_runs_nothing(dev):
    out = buffer(dev, 64)
    ring = dev.compute_ring
    words = release_mem(out.va, 0x1234)
    pos = ring.wptr * 4 % ring.size
    (ctypes.c_uint32 * len(words)).from_address(ring.buf.host_addr + pos)[:] = words
    ring.wptr += len(words)
    ring._wptr_mem.value = ring.wptr  # the pointer in memory moves; the doorbell is not written
    seen = cp_counter(dev, "doorbells_seen")
    for _ in range(2):  # two round trips on the other queue: the CP has looked at every queue since
        signal_after(dev, "sdma").wait(1, timeout=WAIT_S)
    assert cp_counter(dev, "doorbells_seen") == seen + 2, "only the copy queue's two doorbells were written"
    assert u64(out) == 0 and ring.read_ptr == ring.wptr - len(words), "the queue ran without its doorbell"
    ring._doorbell.value = ring.wptr
    until(lambda: u64(out) == 0x1234, "the queue to run once its doorbell is written")
    assert ring.read_ptr == ring.wptr


def test_counters_count_packets_run_not_looks(dev):
    base = dev.system.kfd.cp_counters()
    sig = signal_after(dev)  # the driver's signal: timestamp and value RELEASE_MEMs
    sig.wait(1, timeout=WAIT_S)
    after = dev.system.kfd.cp_counters()
    assert after.get("pm4.RELEASE_MEM", 0) - base.get("pm4.RELEASE_MEM", 0) >= 1
    assert after["doorbells_seen"] - base.get("doorbells_seen", 0) == 1


# --- malformed PM4 streams fault, naming the packet ---

def test_a_type_2_header_faults(dev):
    dev.compute_ring.submit([nvd.CP_PACKET2])
    expect_fault(dev, "compute", r"ring dword 0x[0-9a-f]+: type-2 header 0x80000000")


@pytest.mark.parametrize("op,body,message", [
    (nvd.PACKET3_ACQUIRE_MEM, [0] * 6, "ACQUIRE_MEM with 6 body dwords; the packet has 7"),
    (nvd.PACKET3_EVENT_WRITE, [7 | 4 << 8, 0], "EVENT_WRITE with 2 body dwords; the packet has 1"),
    (nvd.PACKET3_RELEASE_MEM, [20 | 5 << 8, 0], "RELEASE_MEM with 2 body dwords; the packet has 7"),
    (nvd.PACKET3_WAIT_REG_MEM, [0x15, 0, 0], "WAIT_REG_MEM with 3 body dwords; the packet has 6"),
])
def test_fixed_size_packets_with_the_wrong_length_fault(dev, op, body, message):
    dev.compute_ring.submit(pm4(op, body))
    expect_fault(dev, "compute", message)


def test_a_nop_running_past_the_end_of_its_indirect_buffer_faults(dev):
    ib = buffer(dev, pm4(nvd.PACKET3_NOP, [0] * 8)[:5])  # the header says 9 dwords, the buffer holds 5
    dev.compute_ring.submit(indirect_buffer(ib.va, 5))
    expect_fault(dev, "compute", rf"IB1 at {ib.va:#x} dword 0x0: NOP header 0x[0-9a-f]+ says 9 dwords but the "
                                 "indirect buffer ends after 5")


def test_set_sh_reg_outside_the_sh_range_faults(dev):
    last = nvd.PACKET3_SET_SH_REG_END - nvd.PACKET3_SET_SH_REG_START - 1
    dev.compute_ring.submit(pm4(nvd.PACKET3_SET_SH_REG, [last, 1, 2]))
    expect_fault(dev, "compute", r"SET_SH_REG writes registers 0x2fff\.\.0x3000, past the SH range \[0x2c00, 0x3000\)")


def test_an_indirect_buffer_without_valid_faults(dev):
    out = buffer(dev, 64)
    ib = buffer(dev, release_mem(out.va, 1))
    dev.compute_ring.submit(indirect_buffer(ib.va, 8, valid=0))
    expect_fault(dev, "compute", rf"INDIRECT_BUFFER at {ib.va:#x} \(8 dwords\) has VALID=0")
    assert u64(out) == 0, "an IB without VALID ran"


def test_a_misaligned_64_bit_release_mem_faults(dev):
    out = buffer(dev, 64)
    dev.compute_ring.submit(release_mem(out.va + 4, 1))
    expect_fault(dev, "compute", rf"RELEASE_MEM writes 64-bit data \(data_sel 2\) to {out.va + 4:#x}, not 8-byte")
    assert u64(out) == 0 and u64(out, 8) == 0


@pytest.mark.parametrize("wide", [False, True])
def test_a_misaligned_wait_faults(dev, wide):
    mem = buffer(dev, 64)
    dev.compute_ring.submit(wait_mem64(mem.va + 4, 0) if wide else wait_mem(mem.va + 2, 0))
    expect_fault(dev, "compute", "WAIT_REG_MEM64 polls .* not 8-byte aligned" if wide
                 else "WAIT_REG_MEM polls .* not 4-byte aligned")


def test_a_self_calling_indirect_buffer_faults_at_the_hardware_depth(dev):
    ib = buffer(dev, 4)  # patched below to call itself
    words = indirect_buffer(ib.va, 4)
    (ctypes.c_uint32 * 4).from_address(ib.host_addr)[:] = words
    dev.compute_ring.submit(indirect_buffer(ib.va, 4))
    expect_fault(dev, "compute", rf"IB2 at {ib.va:#x} dword 0x0: INDIRECT_BUFFER at {ib.va:#x} called from IB2: "
                                 "the CP fetches the ring and 2 levels")
    assert dev.system.kfd.cp_counters()["pm4.INDIRECT_BUFFER"] == 2


def test_a_chained_indirect_buffer_replaces_its_caller_and_the_ring_resumes(dev):
    out = buffer(dev, 64)
    second = buffer(dev, release_mem(out.va, 2))
    first = buffer(dev, release_mem(out.va + 8, 1) + indirect_buffer(second.va, 8, chain=1)
                   + release_mem(out.va, 99))  # after a chain nothing of the first buffer runs
    dev.compute_ring.submit(indirect_buffer(first.va, 20))
    signal_after(dev).wait(1, timeout=WAIT_S)
    assert (u64(out), u64(out, 8)) == (2, 1)


def test_an_unknown_opcode_faults_naming_it(dev):
    dev.compute_ring.submit(pm4(nvd.PACKET3_DMA_DATA, [0] * 6))
    expect_fault(dev, "compute", rf"PM4 opcode {nvd.PACKET3_DMA_DATA:#x} with 6 body dwords is not a packet")


# --- SDMA: sub-ops honoured or faulted, never reinterpreted ---

def test_copy_tiled_faults_instead_of_running_as_a_linear_copy(dev):
    src, dst = buffer(dev, [0xABCD] * 16), buffer(dev, 64)
    linear_body = [63, 0, src.va & 0xFFFFFFFF, src.va >> 32, dst.va & 0xFFFFFFFF, dst.va >> 32]
    dev.sdma_ring.submit([sd.SDMA_OP_COPY | sd.SDMA_SUBOP_COPY_TILED << 8] + linear_body + [0] * 6)
    expect_fault(dev, "sdma", r"ring byte 0x[0-9a-f]+: SDMA op 0x1 \(COPY\) sub-op 0x1 \(COPY_TILED\)")
    assert u64(dst) == 0, "COPY_TILED ran as a linear copy"


def test_timestamp_set_writes_no_memory_and_get_reads_the_local_counter(dev):
    mem = buffer(dev, 64)
    target = mem.va + 8
    # TIMESTAMP_SET's two dwords are the counter's new value, not an address: here they look like one
    set_local = [sd.SDMA_OP_TIMESTAMP | sd.SDMA_SUBOP_TIMESTAMP_SET << 8, target & 0xFFFFFFFF, 1 << 20]
    get_local = [sd.SDMA_OP_TIMESTAMP | sd.SDMA_SUBOP_TIMESTAMP_GET << 8, mem.va & 0xFFFFFFFF, mem.va >> 32]
    dev.sdma_ring.submit(set_local + get_local)
    signal_after(dev, "sdma").wait(1, timeout=WAIT_S)
    assert u64(mem, 8) == 0, "TIMESTAMP_SET wrote memory"
    assert u64(mem) >= (1 << 52 | target & 0xFFFFFFFF), "TIMESTAMP_GET did not read the counter SET loaded"


@pytest.mark.parametrize("op,name", [(sd.SDMA_OP_WRITE, "WRITE"), (sd.SDMA_OP_ATOMIC, "ATOMIC"),
                                     (sd.SDMA_OP_INDIRECT, "INDIRECT")])
def test_sdma_ops_the_engine_does_not_run_fault(dev, op, name):
    dev.sdma_ring.submit([op, 0, 0, 0, 0])
    expect_fault(dev, "sdma", rf"SDMA op {op:#x} \({name}\) sub-op 0x0 .* is not run by the emulated SDMA engine")


def test_a_misaligned_sdma_fence_faults(dev):
    out = buffer(dev, 64)
    dev.sdma_ring.submit([sd.SDMA_OP_FENCE, (out.va + 2) & 0xFFFFFFFF, out.va >> 32, 1])
    expect_fault(dev, "sdma", "FENCE writes .* not 4-byte aligned")
    assert u64(out) == 0
