"""The VA heap against a model: no overlaps, alignment, exact accounting, exhaustion and recovery, misuse."""
from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from hcq.allocator import VAHeap
from hcq.errors import InvalidHandleError, OutOfMemoryError

BASE, SIZE, MIN_ALIGN = 0x7F0000000000, 1 << 24, 256


class HeapModel(RuleBasedStateMachine):
    """Random allocs and frees; the model is the set of live (addr, size) ranges."""

    blocks = Bundle("blocks")

    def __init__(self):
        super().__init__()
        self.heap = VAHeap(BASE, SIZE, MIN_ALIGN, "model")
        self.live: dict[int, int] = {}

    @rule(target=blocks, size=st.integers(1, 1 << 20) | st.integers(1, 4096),
          align=st.sampled_from([0, 256, 512, 4096, 65536, 1 << 21]))
    def alloc(self, size, align):
        try:
            addr = self.heap.alloc(size, align)
        except OutOfMemoryError as e:
            assert f"allocating {size} bytes" in str(e) and "bytes free" in str(e)
            assert self.heap.largest_free < size + max(align, MIN_ALIGN), "refused although a block surely fits"
            return None
        reserved = -(-size // MIN_ALIGN) * MIN_ALIGN
        assert addr % max(align, MIN_ALIGN) == 0
        assert BASE <= addr and addr + reserved <= BASE + SIZE
        for a, s in self.live.items():
            assert addr + reserved <= a or a + s <= addr, "overlapping allocations"
        assert self.heap.size_of(addr) == reserved
        self.live[addr] = reserved
        return addr

    @rule(addr=consumes(blocks))
    def free(self, addr):
        if addr is None:
            return
        self.heap.free(addr)
        del self.live[addr]
        with pytest.raises(InvalidHandleError, match="freed twice|never allocated"):
            self.heap.free(addr)

    @invariant()
    def consistent(self):
        self.heap.check()
        assert self.heap.used == sum(self.live.values())
        assert self.heap.allocations == len(self.live)
        assert self.heap.free_bytes == SIZE - self.heap.used


TestHeapModel = HeapModel.TestCase
TestHeapModel.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


def test_exhaustion_names_the_numbers_and_recovers_after_frees():
    heap = VAHeap(0x10000, 64 * 1024, 256, "small")
    addrs = [heap.alloc(4096) for _ in range(16)]
    with pytest.raises(OutOfMemoryError, match=r"small: out of memory allocating 1 bytes .* 0 bytes free"):
        heap.alloc(1)
    for a in addrs[::2]:
        heap.free(a)
    with pytest.raises(OutOfMemoryError, match="fragmented"):
        heap.alloc(8192)  # 32 KiB free, but in 4 KiB holes
    for a in addrs[1::2]:
        heap.free(a)
    heap.check()
    assert heap.alloc(64 * 1024) == 0x10000, "after freeing everything the whole heap is one block again"


def test_bad_arguments_and_foreign_addresses_leave_the_heap_unchanged():
    heap = VAHeap(0x10000, 1 << 20, 256, "h")
    a = heap.alloc(1000)
    for bad in (0, -5):
        with pytest.raises(ValueError, match="positive"):
            heap.alloc(bad)
    with pytest.raises(ValueError, match="power of two"):
        heap.alloc(64, align=384)
    with pytest.raises(InvalidHandleError, match="never allocated"):
        heap.free(a + 256)
    with pytest.raises(InvalidHandleError):
        heap.free(a + 1)
    heap.check()
    assert heap.used == 1024 and heap.peak_used == 1024
    heap.free(a)
    assert heap.used == 0 and heap.peak_used == 1024


def test_large_alignment_returns_front_padding_to_the_heap():
    heap = VAHeap(0x10000 + 256, 8 << 20, 256, "h")
    a = heap.alloc(256)
    b = heap.alloc(4096, align=1 << 20)
    assert b % (1 << 20) == 0
    heap.check()
    c = heap.alloc(256)
    assert c < b, "the padding in front of the aligned block must be reusable"
