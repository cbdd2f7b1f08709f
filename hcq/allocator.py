"""A GPU virtual-address heap: TLSF (two-level segregated fit).

Free blocks sit in buckets by size class: the first level is the power of two, the second splits each
power of two into 2**SL_BITS linear steps. Two bitmaps find a non-empty bucket that surely fits in O(1),
and a freed block merges at once with free neighbours, so fragmentation stays low without a compaction pass.
Sizes are kept in units of `min_align` so every block is aligned to it.
"""
from __future__ import annotations

from hcq.errors import InvalidHandleError, OutOfMemoryError

SL_BITS = 4
SL_COUNT = 1 << SL_BITS


def _mapping(units: int) -> tuple[int, int]:
    """The bucket (first level, second level) a free block of `units` belongs to."""
    fl = units.bit_length() - 1
    if fl < SL_BITS:
        return 0, units
    return fl - SL_BITS + 1, (units >> (fl - SL_BITS)) - SL_COUNT


class VAHeap:
    """Allocates aligned ranges of [base, base+size); exact accounting, clear errors, never corrupted by misuse."""

    def __init__(self, base: int, size: int, min_align: int = 256, name: str = ""):
        if min_align <= 0 or min_align & (min_align - 1):
            raise ValueError(f"min_align must be a power of two, got {min_align}")
        if base % min_align or size < min_align:
            raise ValueError(f"heap base {base:#x} must be {min_align}-aligned and size {size:#x} at least {min_align}")
        self.base, self.size, self.min_align = base, size - size % min_align, min_align
        self.name = name or f"heap@{base:#x}"
        self._shift = min_align.bit_length() - 1
        levels = _mapping(self.size >> self._shift)[0] + 1
        self._buckets: list[list[dict[int, None]]] = [[{} for _ in range(SL_COUNT)] for _ in range(levels)]
        self._fl_bits = 0
        self._sl_bits = [0] * levels
        self._free: dict[int, int] = {}  # start unit -> length in units
        self._free_by_end: dict[int, int] = {}  # end unit -> start unit, to merge with the block before
        self._used: dict[int, int] = {}  # start unit -> length in units
        self.used = 0
        self.peak_used = 0
        start = base >> self._shift
        self._insert(start, self.size >> self._shift)

    # --- bucket bookkeeping ---
    def _insert(self, start: int, units: int) -> None:
        fl, sl = _mapping(units)
        self._buckets[fl][sl][start] = None
        self._fl_bits |= 1 << fl
        self._sl_bits[fl] |= 1 << sl
        self._free[start] = units
        self._free_by_end[start + units] = start

    def _remove(self, start: int, units: int) -> None:
        fl, sl = _mapping(units)
        bucket = self._buckets[fl][sl]
        del bucket[start]
        if not bucket:
            self._sl_bits[fl] &= ~(1 << sl)
            if not self._sl_bits[fl]:
                self._fl_bits &= ~(1 << fl)
        del self._free[start]
        del self._free_by_end[start + units]

    def _find(self, units: int) -> int | None:
        """Start of a free block of at least `units`.

        The request is rounded up to the next size class so the first block found surely fits (O(1)); if
        that finds nothing, the request's own class is searched block by block, so a block that fits is
        never missed (freeing everything always lets the whole heap be allocated again).
        """
        fl = units.bit_length() - 1
        rounded = units + ((1 << (fl - SL_BITS)) - 1 if fl >= SL_BITS else 0)
        fl, sl = _mapping(rounded)
        if fl < len(self._sl_bits):
            sl_map = self._sl_bits[fl] & (~0 << sl)
            if not sl_map:
                fl_map = self._fl_bits & (~0 << (fl + 1))
                if fl_map:
                    fl = (fl_map & -fl_map).bit_length() - 1
                    sl_map = self._sl_bits[fl]
            if sl_map:
                sl = (sl_map & -sl_map).bit_length() - 1
                return next(iter(self._buckets[fl][sl]))
        exact_fl, exact_sl = _mapping(units)
        if exact_fl < len(self._buckets):
            for start in self._buckets[exact_fl][exact_sl]:
                if self._free[start] >= units:
                    return start
        return None

    # --- the API ---
    def alloc(self, size: int, align: int = 0) -> int:
        """An address of `size` bytes aligned to max(align, min_align); OutOfMemoryError when it does not fit."""
        if not isinstance(size, int) or size <= 0:
            raise ValueError(f"{self.name}: allocation size must be a positive int, got {size!r}")
        if align and align & (align - 1):
            raise ValueError(f"{self.name}: alignment must be a power of two, got {align}")
        shift = self._shift
        units = (size + self.min_align - 1) >> shift
        align_units = (align >> shift) if align > self.min_align else 1
        start = self._find(units + align_units - 1)
        if start is None:
            raise self._oom(size, align)
        length = self._free[start]
        self._remove(start, length)
        aligned = (start + align_units - 1) & ~(align_units - 1)
        if aligned > start:  # give the front padding back
            self._insert(start, aligned - start)
        tail = start + length - (aligned + units)
        if tail:
            self._insert(aligned + units, tail)
        self._used[aligned] = units
        self.used += units << shift
        if self.used > self.peak_used:
            self.peak_used = self.used
        return aligned << shift

    def free(self, addr: int) -> None:
        """Return an address from alloc; freeing it twice or freeing a foreign address is InvalidHandleError."""
        start = addr >> self._shift
        units = self._used.pop(start, None) if addr % self.min_align == 0 else None
        if units is None:
            what = "freed twice" if start in self._free or self._inside_free(start) else "never allocated here"
            raise InvalidHandleError(f"{self.name}: address {addr:#x} was {what}; the heap is unchanged")
        self.used -= units << self._shift
        nxt = start + units
        if nxt in self._free:
            n_units = self._free[nxt]
            self._remove(nxt, n_units)
            units += n_units
        prev = self._free_by_end.get(start)
        if prev is not None:
            p_units = self._free[prev]
            self._remove(prev, p_units)
            start, units = prev, units + p_units
        self._insert(start, units)

    def size_of(self, addr: int) -> int:
        """Bytes reserved for a live allocation (its size rounded up to min_align)."""
        units = self._used.get(addr >> self._shift) if addr % self.min_align == 0 else None
        if units is None:
            raise InvalidHandleError(f"{self.name}: {addr:#x} is not a live allocation")
        return units << self._shift

    def _inside_free(self, unit: int) -> bool:
        return any(s <= unit < s + n for s, n in self._free.items()) if len(self._free) < 4096 else False

    def _oom(self, size: int, align: int) -> OutOfMemoryError:
        free, largest = self.free_bytes, self.largest_free
        hint = " (fragmented: enough is free, but not in one piece)" if free >= size else ""
        return OutOfMemoryError(f"{self.name}: out of memory allocating {size} bytes (alignment {max(align, self.min_align)}): "
                                f"{free} bytes free, largest free block {largest} bytes{hint}; free buffers you no longer "
                                "need or use a smaller size")

    # --- accounting ---
    @property
    def free_bytes(self) -> int:
        return self.size - self.used

    @property
    def largest_free(self) -> int:
        return max(self._free.values(), default=0) << self._shift

    @property
    def allocations(self) -> int:
        return len(self._used)

    def check(self) -> None:
        """Verify every invariant (for tests and fuzzing); raises AssertionError naming the broken one."""
        spans = sorted([(s, n, "free") for s, n in self._free.items()] + [(s, n, "used") for s, n in self._used.items()])
        pos = self.base >> self._shift
        for (s, n, kind), nxt in zip(spans, spans[1:] + [None]):
            assert s == pos, f"{self.name}: gap or overlap at unit {pos:#x} (next block at {s:#x})"
            assert n > 0, f"{self.name}: empty {kind} block at {s:#x}"
            if kind == "free" and nxt is not None:
                assert nxt[2] == "used", f"{self.name}: adjacent free blocks at {s:#x} were not merged"
            pos = s + n
        assert pos == (self.base + self.size) >> self._shift, f"{self.name}: blocks do not cover the heap"
        assert self.used == sum(self._used.values()) << self._shift, f"{self.name}: used bytes drifted"
        listed = {s for lvl in self._buckets for b in lvl for s in b}
        assert listed == set(self._free), f"{self.name}: bucket lists disagree with the free blocks"
        for fl, lvl in enumerate(self._buckets):
            for sl, b in enumerate(lvl):
                assert bool(b) == bool(self._sl_bits[fl] >> sl & 1), f"{self.name}: stale bitmap bit ({fl}, {sl})"
                for s in b:
                    assert _mapping(self._free[s]) == (fl, sl), f"{self.name}: block {s:#x} in the wrong bucket"

    def __repr__(self) -> str:
        return f"<VAHeap {self.name} used={self.used} free={self.free_bytes} blocks={self.allocations}>"
