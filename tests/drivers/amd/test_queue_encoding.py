"""What the AMD queue builders emit for waits, signals and memory barriers, read back through the decoders.

These check the driver's choices without an emulator: the compute queue waits with the 64-bit WAIT_REG_MEM64, the
copy queue waits only where a 32-bit POLL_REGMEM is exact and refuses the rest, and memory_barrier carries a
partial flush plus cache actions on both queues. The behaviour (waits around 2**32 and 2**63 on a running device)
is the contract suite's (tests/hcq/test_contract.py).
"""
from __future__ import annotations

import threading
from array import array
from types import SimpleNamespace

import pytest

from autogen import soc21_enum as ev
from drivers.amd import pm4, queue, sdma
from hcq.queue import QueueBuildError, Var

SIG = SimpleNamespace(va=0x7000_1000, name="sig")


class FakeRing:
    """Records what a copy queue submits; hands out barrier sequence numbers like Ring."""

    def __init__(self):
        self.barrier_slot = SimpleNamespace(va=0x9000_0040)
        self._lock = threading.Lock()
        self._barrier_seq = 0
        self.submitted: list[array] = []

    next_barrier_seq = queue.Ring.next_barrier_seq

    def submit(self, words):
        self.submitted.append(array("I", words))


SLOT = 0x7000  # the device's KFD mailbox slot for its signal event


def fake_device():
    return SimpleNamespace(target="gfx1100", signal_event_id=5, signal_slot_va=SLOT, sdma_ring=FakeRing(),
                           check=lambda: None)


def compute():
    return queue.AMDComputeQueue(fake_device())


def copy():
    return queue.AMDCopyQueue(fake_device())


@pytest.mark.parametrize("value", [0, 2**32 - 1, 2**32, 2**32 + 1, 2**63 - 1, 2**63, 2**64 - 1])
def test_compute_wait_compares_all_64_bits(value):
    (p,) = pm4.decode(list(compute().wait(SIG, value).cmd))
    f = p.fields
    assert p.name == "WAIT_REG_MEM64"
    assert (f["addr"], f["reference"], f["mask"], f["function"], f["mem_space"]) == (SIG.va, value, 2**64 - 1, 5, 1)


def test_compute_wait_replays_the_whole_64_bit_value():
    q = compute().wait(SIG, Var("v"))
    (patch,) = q.patches
    assert (patch.index, patch.bits, patch.truncate) == (pm4.WAIT_REG_MEM64_REF_WORD, 64, False)
    q.apply({"v": 2**63 + 2**32 + 7})
    assert pm4.decode(list(q.cmd))[0].fields["reference"] == 2**63 + 2**32 + 7


def test_compute_wait_refuses_a_value_past_64_bits():
    with pytest.raises(QueueBuildError, match="64-bit"):
        compute().wait(SIG, 2**64)


def test_compute_memory_barrier_is_a_partial_flush_then_cache_actions():
    q = compute()
    packets = pm4.decode(list(q.memory_barrier().cmd))
    assert [p.name for p in packets] == ["EVENT_WRITE", "ACQUIRE_MEM"]
    assert (packets[0].fields["event_type"], packets[0].fields["event_index"]) == (ev.CS_PARTIAL_FLUSH, 4)
    gcr = packets[1].fields["gcr_cntl"]
    assert gcr == pm4.gcr_invalidate_all(q.family) and packets[1].fields["coher_size"] == pm4.COHER_SIZE_WHOLE


@pytest.mark.parametrize("value,addr,ref", [(0, SIG.va, 0), (2**32 - 1, SIG.va, 2**32 - 1),
                                             (2**32, SIG.va + 4, 1), (2**63, SIG.va + 4, 2**31),
                                             (5 << 32, SIG.va + 4, 5)])
def test_copy_wait_polls_the_word_that_decides_it(value, addr, ref):
    (p,) = sdma.decode(list(copy().wait(SIG, value).cmd))
    f = p.fields
    assert (p.name, f["addr"], f["value"], f["mask"], f["func"], f["mem_poll"]) == (
        "POLL_REGMEM", addr, ref, 0xFFFFFFFF, 5, 1)


@pytest.mark.parametrize("value", [2**32 + 1, 2**63 - 1, 2**64 - 1])
def test_copy_wait_refuses_what_a_32_bit_poll_cannot_decide(value):
    with pytest.raises(QueueBuildError, match=r"SDMA POLL_REGMEM\) compares 32 bits"):
        copy().wait(SIG, value)


def test_copy_wait_replay_refuses_a_value_past_32_bits():
    q = copy().wait(SIG, Var("v"))
    q.apply({"v": 2**32 - 1})
    assert sdma.decode(list(q.cmd))[0].fields["value"] == 2**32 - 1
    with pytest.raises(QueueBuildError, match="does not fit the 32-bit field"):
        q.apply({"v": 2**32})


def test_copy_signal_writes_the_low_word_first():
    packets = sdma.decode(list(copy().signal(SIG, 2**32 + 9).cmd))
    fences = [(p.fields["addr"], p.fields["data"]) for p in packets if p.name == "FENCE"]
    assert fences == [(SIG.va, 9), (SIG.va + 4, 1), (SLOT, 5)]  # the value low word first, then the event slot


def test_signals_write_the_event_slot_before_they_interrupt():
    """amdkfd ignores an interrupt whose mailbox slot is unsignalled (kfd_signal_event_interrupt)."""
    names = [(p.name, p.fields) for p in sdma.decode(list(copy().signal(SIG, 3).cmd))]
    assert [n for n, _ in names][-2:] == ["FENCE", "TRAP"] and names[-2][1]["addr"] == SLOT
    releases = [p.fields for p in pm4.decode(list(compute().signal(SIG, 3).cmd)) if p.name == "RELEASE_MEM"]
    value, slot = releases[-2], releases[-1]
    assert value["int_sel"] == pm4.INT_SEL_NONE and slot["int_sel"] == pm4.INT_SEL_SEND_INT_AFTER_WRITE_CONFIRM
    assert slot["addr"] == SLOT and slot["value"] == 5 and slot["int_ctxid"] == 5


def test_copy_memory_barrier_waits_for_its_own_fence_then_rinses_caches():
    dev = fake_device()
    q = queue.AMDCopyQueue(dev).copy(0x1000, 0x2000, 64).memory_barrier().copy(0x3000, 0x1000, 64).memory_barrier()
    for _ in range(2):
        q._submit(dev)
    seen = []
    for words in dev.sdma_ring.submitted:
        names = [(p.name, p.fields) for p in sdma.decode(list(words))]
        assert [n for n, _ in names] == ["COPY_LINEAR", "FENCE", "POLL_REGMEM", "GCR_REQ"] * 2
        for (n1, fence), (n2, poll) in zip(names[1::4], names[2::4]):
            assert fence["addr"] == poll["addr"] == dev.sdma_ring.barrier_slot.va
            assert fence["data"] == poll["value"] and poll["func"] == 3  # "==" on the value just fenced
            seen.append(fence["data"])
        assert [f["gcr_control"] for n, f in names if n == "GCR_REQ"] == [sdma.GCR_INVALIDATE_ALL] * 2
    assert seen == [1, 2, 3, 4], "every barrier of every submission fences a value the word did not hold"


def test_a_bound_copy_keeps_its_barriers():
    dev = fake_device()
    template = queue.AMDCopyQueue(dev).copy(Var("d"), 0x2000, 64).memory_barrier()
    template.bind({"d": 0x5000})._submit(dev)
    (words,) = dev.sdma_ring.submitted
    fence, poll = sdma.decode(list(words))[1:3]
    assert fence.fields["data"] == poll.fields["value"] == 1


def test_the_store_fence_is_the_instruction_and_runs():
    from compiler import toolchain
    toolchain.store_fence()()  # an illegal instruction would kill the process here
    llvm = toolchain._llvm()
    if llvm.get_process_triple().startswith("x86_64"):
        mod = llvm.parse_assembly(toolchain._FENCE_IR["x86_64"])
        assert "sfence" in toolchain._host_tm().emit_assembly(mod), "the x86 fence must be SFENCE, not a no-op"
