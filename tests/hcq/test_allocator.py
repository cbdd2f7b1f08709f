"""The VA heap against a model: no overlaps, alignment, exact accounting, exhaustion and recovery, misuse."""
from __future__ import annotations

import random
import re

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, initialize, invariant, precondition, rule

from hcq.allocator import SL_COUNT, VAHeap, size_class
from hcq.errors import HCQError, InvalidHandleError, OutOfMemoryError

MIN_ALIGN = 256


def reserved(size: int, min_align: int = MIN_ALIGN) -> int:
    """What the heap documents it reserves for a request: the size rounded up to min_align."""
    return -(-size // min_align) * min_align


def gaps(base: int, size: int, live: dict[int, int]) -> list[tuple[int, int]]:
    """The model's free ranges (start, length), from the live ranges."""
    out, pos = [], base
    for a in sorted(live):
        if a > pos:
            out.append((pos, a - pos))
        pos = a + live[a]
    if pos < base + size:
        out.append((pos, base + size - pos))
    return out


def fits_somewhere(free: list[tuple[int, int]], nbytes: int, align: int) -> bool:
    return any(-(-s // align) * align + nbytes <= s + n for s, n in free)


def snapshot(heap: VAHeap) -> tuple:
    return heap.used, heap.free_bytes, heap.largest_free, heap.allocations, heap.peak_used, repr(heap)


class HeapModel(RuleBasedStateMachine):
    """Random allocs and frees against a model (the live ranges); every refusal must be a true one."""

    blocks = Bundle("blocks")

    @initialize(base_units=st.integers(1, 1 << 12), size=st.integers(1 << 12, 1 << 24))
    def make_heap(self, base_units, size):
        # The base is only min_align-aligned, so large alignments need front padding.
        self.base = 0x7F00_0000_0000 + base_units * MIN_ALIGN
        self.heap = VAHeap(self.base, size, MIN_ALIGN, "model")
        self.size = size - size % MIN_ALIGN
        self.live: dict[int, int] = {}
        self.peak = 0

    @rule(target=blocks, size=st.integers(1, 4096) | st.integers(1, 1 << 20) | st.integers(1 << 20, 1 << 25),
          align=st.sampled_from([0, 1, 64, 256, 512, 4096, 65536, 1 << 21]))
    def alloc(self, size, align):
        eff = max(align, MIN_ALIGN)
        try:
            addr = self.heap.alloc(size, align)
        except OutOfMemoryError as e:
            msg = str(e)
            assert msg.startswith("model: out of memory") and f"allocating {size} bytes (alignment {eff})" in msg
            assert f"{self.size - sum(self.live.values())} bytes free" in msg
            assert f"largest free block {max((n for _, n in gaps(self.base, self.size, self.live)), default=0)}" in msg
            assert not fits_somewhere(gaps(self.base, self.size, self.live), reserved(size), eff), \
                "refused a request that fits in a free range"
            return None
        r = reserved(size)
        assert addr % eff == 0, f"{addr:#x} not aligned to {eff}"
        assert self.base <= addr and addr + r <= self.base + self.size, "allocation outside the heap"
        for a, s in self.live.items():
            assert addr + r <= a or a + s <= addr, f"[{addr:#x}, +{r}) overlaps [{a:#x}, +{s})"
        assert self.heap.size_of(addr) == r and self.heap.owns(addr)
        self.live[addr] = r
        self.peak = max(self.peak, sum(self.live.values()))
        return addr

    @rule(addr=consumes(blocks))
    def free(self, addr):
        if addr is None:
            return
        self.heap.free(addr)
        del self.live[addr]
        before = snapshot(self.heap)
        with pytest.raises(InvalidHandleError, match=rf"model: free\({addr:#x}\): no live allocation starts there"):
            self.heap.free(addr)
        assert snapshot(self.heap) == before, "a double free changed the heap"

    @precondition(lambda self: self.live)
    @rule(pick=st.randoms(use_true_random=False), how=st.sampled_from(["interior", "unaligned", "outside"]))
    def bogus_free(self, pick, how):
        addr = pick.choice(sorted(self.live))
        bad = {"interior": addr + MIN_ALIGN * pick.randrange(1, self.live[addr] // MIN_ALIGN + 1)
               if self.live[addr] > MIN_ALIGN else addr + 1,
               "unaligned": addr + pick.randrange(1, MIN_ALIGN),
               "outside": self.base + self.size + pick.randrange(0, 1 << 30)}[how]
        if bad in self.live:  # the "interior" of a block can be the next block's start
            return
        before = snapshot(self.heap)
        with pytest.raises(InvalidHandleError, match=rf"model: free\({bad:#x}\)"):
            self.heap.free(bad)
        assert snapshot(self.heap) == before, "a bogus free changed the heap"

    @invariant()
    def consistent(self):
        if not hasattr(self, "heap"):
            return
        self.heap.check()
        assert self.heap.used == sum(self.live.values())
        assert self.heap.allocations == len(self.live)
        assert self.heap.free_bytes == self.size - self.heap.used
        assert self.heap.peak_used == self.peak
        assert self.heap.free_blocks == len(gaps(self.base, self.size, self.live))
        assert self.heap.largest_free == max((n for _, n in gaps(self.base, self.size, self.live)), default=0)

    def teardown(self):
        if not hasattr(self, "heap"):
            return
        for a in list(self.live):
            self.heap.free(a)
        self.heap.check()
        assert self.heap.used == 0 and self.heap.largest_free == self.size, "free neighbours were not merged"
        assert self.heap.alloc(self.size) == self.base, "after freeing everything the heap is one block again"


TestHeapModel = HeapModel.TestCase
TestHeapModel.settings = settings(max_examples=80, stateful_step_count=40, deadline=None)


def test_seeded_churn_keeps_every_invariant():
    """A longer run than hypothesis does: many blocks in many size classes, frees in random order."""
    rng = random.Random(1234)
    heap = VAHeap(0x1000_0000, 64 << 20, 256, "churn")
    live: dict[int, int] = {}
    for step in range(6000):
        if live and (rng.random() < 0.45 or heap.free_bytes < 8 << 20):
            addr = rng.choice(list(live))
            heap.free(addr)
            del live[addr]
        else:
            size = rng.choice([rng.randrange(1, 4097), rng.randrange(1, 1 << 17), rng.randrange(1, 1 << 21)])
            align = rng.choice([0, 0, 0, 4096, 1 << 16])
            try:
                addr = heap.alloc(size, align)
            except OutOfMemoryError:
                assert not fits_somewhere(gaps(0x1000_0000, 64 << 20, live), reserved(size), max(align, 256))
                continue
            assert addr % max(align, 256) == 0
            live[addr] = reserved(size)
        if step % 500 == 0:
            heap.check()
    heap.check()
    assert heap.used == sum(live.values()) and heap.allocations == len(live)
    for addr in live:
        heap.free(addr)
    heap.check()
    assert heap.alloc(64 << 20) == 0x1000_0000


def test_exhaustion_names_the_numbers_and_recovers_after_frees():
    heap = VAHeap(0x10000, 64 * 1024, 256, "small")
    addrs = [heap.alloc(4096) for _ in range(16)]
    with pytest.raises(OutOfMemoryError, match=re.escape("small: out of memory allocating 1 bytes (alignment 256): "
                                                         "0 bytes free, largest free block 0 bytes")):
        heap.alloc(1)
    for a in addrs[::2]:
        heap.free(a)
    with pytest.raises(OutOfMemoryError) as e:
        heap.alloc(8192)  # 32 KiB free, but in 4 KiB holes
    assert "32768 bytes free, largest free block 4096 bytes" in str(e.value) and "fragmented" in str(e.value)
    assert isinstance(e.value, HCQError) and isinstance(e.value, MemoryError)
    heap.check()
    for a in addrs[1::2]:
        heap.free(a)
    heap.check()
    assert heap.alloc(64 * 1024) == 0x10000, "after freeing everything the whole heap is one block again"
    assert heap.peak_used == 64 * 1024


def test_refusal_for_alignment_alone_says_so():
    heap = VAHeap(0x10000 + 256, 1 << 20, 256, "h")  # starts 256 bytes past a 64 KiB boundary
    with pytest.raises(OutOfMemoryError, match="none at this alignment"):
        heap.alloc((1 << 20) - (64 << 10) + 512, align=1 << 16)
    heap.check()
    assert heap.alloc((1 << 20) - (64 << 10) + 256, align=1 << 16) == 0x20000


def test_the_whole_heap_at_a_large_alignment_its_base_satisfies():
    base = 1 << 40
    heap = VAHeap(base, 16 << 20, 256, "h")
    assert heap.alloc(16 << 20, align=2 << 20) == base, "a fitting aligned request was refused"
    heap.check()


def test_padding_around_a_large_alignment_goes_back_to_the_heap():
    heap = VAHeap(0x10000 + 256, 8 << 20, 256, "h")  # the base is only 256-aligned
    b = heap.alloc(4096, align=1 << 20)
    assert b % (1 << 20) == 0
    heap.check()
    assert heap.used == 4096 and heap.free_bytes == (8 << 20) - 4096, "padding is not counted as used"
    smalls = [heap.alloc(4096) for _ in range(64)]
    assert any(s < b for s in smalls) and any(s > b for s in smalls), "the pieces on both sides are reusable"
    heap.check()
    for s in smalls + [b]:
        heap.free(s)
    assert heap.alloc(8 << 20) == 0x10000 + 256


def test_small_alignments_are_satisfied_by_min_align():
    heap = VAHeap(0x10000, 1 << 20, 256, "h")
    for align in (1, 2, 64, 128, 256):
        assert heap.alloc(10, align) % 256 == 0
    heap.check()


def test_bad_arguments_name_the_argument_and_leave_the_heap_unchanged():
    heap = VAHeap(0x10000, 1 << 20, 256, "h")
    a = heap.alloc(1000)
    before = snapshot(heap)
    for bad in (0, -5):
        with pytest.raises(ValueError, match=rf"h: alloc size must be positive, got size={bad}"):
            heap.alloc(bad)
    for bad in (1.5, "64", True, None):
        with pytest.raises(TypeError, match="h: alloc size must be an int"):
            heap.alloc(bad)
    for bad in (384, 3, -256):
        with pytest.raises(ValueError, match=rf"h: alloc align must be 0 or a power of two, got align={bad}"):
            heap.alloc(64, align=bad)
    with pytest.raises(TypeError, match="h: alloc align must be an int"):
        heap.alloc(64, align=4096.0)
    with pytest.raises(InvalidHandleError, match=rf"h: free\({a + 256:#x}\): the address is inside the live "
                                                 rf"allocation at {a:#x} \(1024 bytes\)"):
        heap.free(a + 256)
    with pytest.raises(InvalidHandleError, match="inside the live allocation"):
        heap.free(a + 1)
    with pytest.raises(InvalidHandleError, match=r"outside the heap \[0x10000, 0x110000\)"):
        heap.free(0x10)
    with pytest.raises(InvalidHandleError, match="no live allocation starts there"):
        heap.free(0x10000 + (512 << 10))
    with pytest.raises(InvalidHandleError, match="takes an address"):
        heap.free("0x10000")
    with pytest.raises(InvalidHandleError, match="size_of"):
        heap.size_of(a + 256)
    assert snapshot(heap) == before
    heap.check()
    assert heap.used == 1024 and heap.peak_used == 1024
    heap.free(a)
    assert heap.used == 0 and heap.peak_used == 1024 and heap.largest_free == 1 << 20


def test_numpy_integers_are_accepted_as_sizes_alignments_and_addresses():
    heap = VAHeap(0x10000, 1 << 20, 256, "h")
    a = heap.alloc(np.int64(5000), np.uint32(4096))
    assert a % 4096 == 0 and heap.size_of(np.uint64(a)) == 5120
    heap.free(np.uint64(a))
    assert heap.allocations == 0
    heap.check()


def test_heap_construction_errors_name_the_argument():
    with pytest.raises(ValueError, match="min_align must be a power of two"):
        VAHeap(0, 1 << 20, 384)
    with pytest.raises(ValueError, match="base 0x80 must be a non-negative multiple of min_align 256"):
        VAHeap(0x80, 1 << 20, 256)
    with pytest.raises(ValueError, match="size 0x80 must be at least min_align 256"):
        VAHeap(0, 0x80, 256)
    heap = VAHeap(0, 1000, 256)  # a partial unit at the end is unusable
    assert heap.size == 768 and heap.alloc(768) == 0 and heap.name == "heap@0x0"


def test_size_classes_are_monotonic_and_split_powers_of_two_linearly():
    classes = [size_class(u) for u in range(1, 1 << 14)]
    assert classes == sorted(classes)
    assert size_class(SL_COUNT * 2) == size_class(SL_COUNT * 2 + 1) != size_class(SL_COUNT * 2 + 2)
    assert len({size_class(u) for u in range(1 << 10, 1 << 11)}) == SL_COUNT


def test_a_16_gib_heap_reuses_merged_space():
    heap = VAHeap(1 << 40, 16 << 30, 256, "big")
    addrs = [heap.alloc(s) for s in (4096, 1 << 20, 3 << 30, 256, 7 << 30)]
    heap.free(addrs[1])
    heap.free(addrs[3])
    heap.free(addrs[2])  # merges with both freed neighbours
    heap.check()
    assert heap.alloc((3 << 30) + (1 << 20) + 256) in range(1 << 40, (1 << 40) + (16 << 30))
    heap.check()
