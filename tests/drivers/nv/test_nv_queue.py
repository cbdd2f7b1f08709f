"""NV queue builders and the GPFIFO channel, without a GPU: what the methods say (decoded with drivers.nv.methods),
how Vars are patched for replay, and how submission fills the ring, USERD, the doorbell and the pushbuffer."""
from __future__ import annotations

import ctypes
import itertools
from types import SimpleNamespace

import pytest

from autogen import nv_classes as C
from drivers.nv import methods as m
from drivers.nv import queue as nvq
from drivers.nv.queue import GPFifo, NVComputeQueue, NVCopyQueue, RingFullError
from drivers.system import MAP_ANONYMOUS, MAP_PRIVATE, LinuxSystem
from hcq.queue import QueueBuildError, Var

SIG_VA = 0x40_0000_1000


_LINUX = LinuxSystem()
_hints = itertools.count()


class Mem:
    """Host memory standing in for a host-visible GPU buffer (GPU VA == host address, as the driver maps it), placed
    below 2**40 like the driver's VA window (GPFIFO entries and QMD addresses hold 40 bits)."""

    def __init__(self, size: int):
        rounded = -(-size // 4096) * 4096
        hint = 0x30_0000_0000 + next(_hints) * 0x10_0000
        self.va = _LINUX.mmap(-1, rounded, 3, MAP_PRIVATE | MAP_ANONYMOUS, 0, hint)
        assert self.va < 1 << 40, "no free low address for the test's memory"
        self.size, self.host_addr, self._rounded = size, self.va, rounded

    def __del__(self):
        _LINUX.munmap(self.va, self._rounded)

    def u32(self, off: int) -> int:
        return ctypes.c_uint32.from_address(self.va + off).value


class Done:
    """The channel's done counter."""

    def __init__(self):
        self.mem = Mem(16)
        self.va = self.mem.va

    @property
    def value(self) -> int:
        return ctypes.c_uint64.from_address(self.va).value

    @value.setter
    def value(self, v: int) -> None:
        ctypes.c_uint64.from_address(self.va).value = v


def channel(kind="copy", entries=8, push=4096, host=C.HOPPER_CHANNEL_GPFIFO_A, engine=C.HOPPER_DMA_COPY_A):
    ring, userd, doorbell = Mem(entries * 8), Mem(512), Mem(4)
    fifo = GPFifo(f"test.{kind}", kind, host, engine, m.SUBCH_COPY, ring.va, entries, userd.va, doorbell.va, 0x1234,
                  Mem(push), Done())
    fifo._keep = (ring, userd, doorbell)
    return fifo, ring, userd, doorbell


def device(sm90=True):
    classes = SimpleNamespace(channel=C.HOPPER_CHANNEL_GPFIFO_A if sm90 else C.AMPERE_CHANNEL_GPFIFO_A,
                              compute=C.HOPPER_COMPUTE_A if sm90 else C.AMPERE_COMPUTE_B,
                              copy=C.HOPPER_DMA_COPY_A if sm90 else C.AMPERE_DMA_COPY_B)
    return SimpleNamespace(classes=classes, _timeline=None, profiling=False)


def sig(va=SIG_VA):
    return SimpleNamespace(va=va, name=f"sig@{va:#x}")


def decoded(q, engine=C.HOPPER_COMPUTE_A, sub=m.SUBCH_COMPUTE):
    return m.decode(list(q.cmd), {sub: engine})


def test_wait_is_a_64_bit_strict_acquire_and_signal_a_timestamped_release_then_an_interrupt():
    q = NVComputeQueue(device()).wait(sig(), 2**40 + 7).signal(sig(SIG_VA + 16), 2**63 + 5)
    got = decoded(q)
    names = [x.name for x in got]
    assert names == ["SEM_ADDR_LO", "SEM_ADDR_HI", "SEM_PAYLOAD_LO", "SEM_PAYLOAD_HI", "SEM_EXECUTE"] * 2 + \
        ["NON_STALL_INTERRUPT"]
    acq, rel = got[4].fields(), got[9].fields()
    assert acq["operation"] == C.NVC56F_SEM_EXECUTE_OPERATION_ACQ_STRICT_GEQ
    assert acq["payload_size"] == C.NVC56F_SEM_EXECUTE_PAYLOAD_SIZE_64BIT
    assert got[2].value | got[3].value << 32 == 2**40 + 7 and got[0].value | got[1].value << 32 == SIG_VA
    assert rel["operation"] == C.NVC56F_SEM_EXECUTE_OPERATION_RELEASE
    assert rel["release_timestamp"] == 1 and rel["release_wfi"] == 1 and rel["payload_size"] == 1
    assert got[7].value | got[8].value << 32 == 2**63 + 5


def test_semaphore_vars_are_patched_in_place():
    q = NVCopyQueue(device()).wait(sig(), Var("w")).signal(sig(), Var("v") + 1)
    before = list(q.cmd)
    q.apply({"w": 2**32 + 9, "v": 41})
    got = decoded(q, C.HOPPER_DMA_COPY_A, m.SUBCH_COPY)
    assert got[2].value | got[3].value << 32 == 2**32 + 9
    assert got[7].value | got[8].value << 32 == 42
    changed = {i for i, (a, b) in enumerate(zip(before, q.cmd)) if a != b}
    assert changed <= {p.index + k for p in q.patches for k in range(p.bits // 32)}


def test_timestamp_writes_only_through_a_release_of_its_own_signal():
    q = NVComputeQueue(device()).timestamp(sig())
    got = decoded(q)
    assert [x.name for x in got][-1] == "SEM_EXECUTE" and got[-1].fields()["release_timestamp"] == 1
    assert got[0].value == SIG_VA & 0xFFFFFFFF


def test_copies_split_at_the_line_limit_and_patch_every_chunk(monkeypatch):
    monkeypatch.setattr(m, "COPY_MAX_LINE", 4096)
    q = NVCopyQueue(device()).copy(Var("dst"), 0x40_0000_0000, 10000)
    q.apply({"dst": 0x41_0000_0000})
    got = decoded(q, C.HOPPER_DMA_COPY_A, m.SUBCH_COPY)
    launches, regs, seen = [], {}, []
    for x in got:
        regs[x.name] = x.value
        if x.name == "LAUNCH_DMA":
            src = regs["OFFSET_IN_UPPER"] << 32 | regs["OFFSET_IN_LOWER"]
            dst = regs["OFFSET_OUT_UPPER"] << 32 | regs["OFFSET_OUT_LOWER"]
            seen.append((dst, src, regs["LINE_LENGTH_IN"]))
            launches.append(x.fields())
    assert seen == [(0x41_0000_0000, 0x40_0000_0000, 4096), (0x41_0000_1000, 0x40_0000_1000, 4096),
                    (0x41_0000_2000, 0x40_0000_2000, 1808)]
    assert all(f["flush_enable"] == 1 for f in launches)
    assert all(f["data_transfer_type"] == C.NVC6B5_LAUNCH_DMA_DATA_TRANSFER_TYPE_NON_PIPELINED for f in launches)


def test_an_empty_copy_encodes_nothing():
    assert len(NVCopyQueue(device()).copy(0x1000, 0x2000, 0).cmd) == 0


def test_barriers_wait_for_idle_and_flush():
    got = decoded(NVComputeQueue(device()).memory_barrier())
    assert [x.name for x in got] == ["WFI", "INVALIDATE_SHADER_CACHES"]
    f = got[1].fields()
    assert f["flush_data"] == 1 and f["data"] == 1 and f["constant"] == 1
    assert [x.name for x in decoded(NVCopyQueue(device()).memory_barrier(), C.HOPPER_DMA_COPY_A, 4)] == ["WFI"]


def test_queues_refuse_work_of_the_other_engine():
    with pytest.raises(QueueBuildError, match="copy queue"):
        NVComputeQueue(device()).copy(0x1000, 0x2000, 16)
    with pytest.raises(QueueBuildError, match="compute queue"):
        NVCopyQueue(device()).exec(SimpleNamespace(name="k", local_size=(1, 1, 1)), 0, (1, 1, 1), (1, 1, 1))


def test_submit_writes_the_segment_the_entry_gp_put_and_the_doorbell():
    fifo, ring, userd, doorbell = channel()
    words = m.non_stall_interrupt(0)
    seq = fifo.submit(words)
    e = m.decode_gpfifo_entry(ctypes.c_uint64.from_address(ring.va).value)
    assert e.address == fifo.push.va and e.length == len(words) + 6
    seg = [ctypes.c_uint32.from_address(e.address + 4 * i).value for i in range(e.length)]
    got = m.decode(seg)
    assert got[0].name == "NON_STALL_INTERRUPT"
    assert got[-1].name == "SEM_EXECUTE" and got[-1].fields()["release_wfi"] == 1
    assert got[1].value | got[2].value << 32 == fifo.done.va and got[3].value == seq == 1
    assert userd.u32(nvq.GPPUT_OFFSET) == 1 and doorbell.u32(0) == 0x1234


def test_qmd_addresses_are_filled_in_at_submit():
    fifo, *_ = channel()
    qmds = __import__("array").array("I", [7] * 96)
    cmd = m.launch_qmd(0, cls=C.HOPPER_COMPUTE_A)
    fifo.submit(cmd, qmds, [(1, 0)])
    base = fifo.push.va
    assert ctypes.c_uint32.from_address(base + 4).value << 8 == base + 256, "QMD placed 256-aligned after the words"
    assert ctypes.c_uint32.from_address(base + 256).value == 7


def test_pushbuffer_space_is_reused_only_after_the_done_counter_passes_it(monkeypatch):
    monkeypatch.setattr(nvq, "SUBMIT_TIMEOUT_S", 0.05)
    fifo, ring, userd, _ = channel(entries=64, push=1024)
    words = [m.header("inc", 0, C.NVC56F_NON_STALL_INTERRUPT, 1), 0] * 40  # 320 bytes -> 512-byte segments
    fifo.submit(words)
    fifo.submit(words)
    with pytest.raises(RingFullError, match=r"pushbuffer ring.*read 0x0 write 0x2 \(2 not consumed\)"):
        fifo.submit(words)
    fifo.done.value = 1  # the GPU finished the first submission: its segment is free again
    ctypes.c_uint32.from_address(userd.va + nvq.GPGET_OFFSET).value = 1
    fifo.submit(words)
    assert m.decode_gpfifo_entry(ctypes.c_uint64.from_address(ring.va + 16).value).address == fifo.push.va


def test_a_full_gpfifo_ring_waits_for_gp_get(monkeypatch):
    monkeypatch.setattr(nvq, "SUBMIT_TIMEOUT_S", 0.05)
    fifo, ring, userd, _ = channel(entries=4, push=1 << 16)
    for _ in range(3):
        fifo.submit(m.non_stall_interrupt(0))
    with pytest.raises(RingFullError, match="GPFIFO ring"):
        fifo.submit(m.non_stall_interrupt(0))
    ctypes.c_uint32.from_address(userd.va + nvq.GPGET_OFFSET).value = 2
    fifo.submit(m.non_stall_interrupt(0))
    assert userd.u32(nvq.GPPUT_OFFSET) == 0, "GP_PUT wraps at the ring's size"


def test_hang_state_decodes_the_last_submissions():
    fifo, *_ = channel()
    fifo.submit(m.semaphore_release(SIG_VA, 3, timestamp=True, host=C.HOPPER_CHANNEL_GPFIFO_A) +
                m.non_stall_interrupt(0))
    state = fifo.debug_state()
    text = state.describe()
    assert "test.copy" in text and "NOT DONE" in text and "NON_STALL_INTERRUPT" in text and "SEM_EXECUTE" in text
    assert state.write_ptr == 1 and state.extra["token"] == 0x1234
