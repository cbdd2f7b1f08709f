"""A GPU virtual-address heap: TLSF (two-level segregated fit).

Free blocks sit in buckets by size class: the first level is the power of two, the second splits each
power of two into SL_COUNT linear steps. A bitmap of non-empty buckets finds one that surely fits in O(1),
and a freed block merges at once with free neighbours, so fragmentation stays low without a compaction pass.

The classes are numbered fl * SL_COUNT + sl, which orders them by size, so the two levels' bitmaps of a C
TLSF become one Python int: "the first non-empty class at or above c" is one shift and one lowest-bit test.
The int has (number of classes) bits, bounded by the heap size (368 for 16 GiB at 256-byte units).

Accounting: sizes are kept in units of `min_align`, so every block starts on a `min_align` boundary and a
request of `size` bytes reserves `size` rounded up to a multiple of `min_align` (what `size_of` returns and
what `used` counts). A large alignment over-allocates, and the padding on either side goes back to the free
lists at once; it is never counted as used.

Allocations are carved from the end of the free block found, so the block keeps its start and, as long as
its size class does not change, stays in its bucket untouched; `free` merging into the block in front does
the same. `alloc` (alignment <= min_align) and `free` inline the bucket bookkeeping: in CPython a function
call costs about as much as the rest of the operation.
"""
from __future__ import annotations

from operator import index as _as_int

from hcq.errors import InvalidHandleError, OutOfMemoryError

SL_BITS = 4  # 16 linear steps per power of two: a rounded-up search skips at most 1/16 of a class
SL_COUNT = 1 << SL_BITS
_SHIFT0 = SL_BITS + 1  # blocks of fewer than 2**_SHIFT0 units are classed exactly, one class per length


def size_class(units: int) -> int:
    """The bucket (fl * SL_COUNT + sl) a free block of `units` belongs to; monotonic in `units`."""
    s = units.bit_length() - _SHIFT0
    return (s << SL_BITS) + (units >> s) if s > 0 else units


def _hex(value: object) -> str:
    return f"{value:#x}" if type(value) is int else repr(value)


class VAHeap:
    """Hands out aligned ranges of [base, base + size) with O(1) alloc and free and exact accounting.

    `alloc` returns an address, `free` takes it back; misuse (double free, a foreign or interior address, bad
    sizes or alignments) raises a clear error and leaves the heap exactly as it was. `check()` verifies every
    invariant, for tests and fuzzing. Not thread-safe: the owning device serialises its allocations.
    """

    __slots__ = ("base", "size", "min_align", "name", "_shift", "_mask", "_buckets", "_bits", "_free",
                 "_free_by_end", "_live", "_used", "_peak")

    def __init__(self, base: int, size: int, min_align: int = 256, name: str = ""):
        if type(min_align) is not int or min_align <= 0 or min_align & (min_align - 1):
            raise ValueError(f"VAHeap {name!r}: min_align must be a power of two, got {min_align!r}")
        if type(base) is not int or base < 0 or base % min_align:
            raise ValueError(f"VAHeap {name!r}: base {_hex(base)} must be a non-negative multiple of min_align "
                             f"{min_align}")
        if type(size) is not int or size < min_align:
            raise ValueError(f"VAHeap {name!r}: size {_hex(size)} must be at least min_align {min_align}")
        self.base, self.size, self.min_align = base, size - size % min_align, min_align  # a partial unit is unusable
        self.name = name or f"heap@{base:#x}"
        self._shift = min_align.bit_length() - 1
        self._mask = min_align - 1
        # One dict per class, used as an insertion-ordered set of block starts.
        self._buckets: list[dict[int, None]] = [{} for _ in range(size_class(self.size >> self._shift) + 1)]
        self._bits = 0  # bit c set <=> bucket c is non-empty
        self._free: dict[int, int] = {}  # start unit -> length in units
        self._free_by_end: dict[int, int] = {}  # end unit -> start unit, to merge with the block before
        self._live: dict[int, int] = {}  # start unit -> length in units
        self._used = 0
        self._peak = 0
        self._insert(base >> self._shift, self.size >> self._shift)

    # --- bucket bookkeeping (cold paths; alloc and free inline the same steps) ---
    def _insert(self, start: int, units: int) -> None:
        c = size_class(units)
        self._buckets[c][start] = None
        self._bits |= 1 << c
        self._free[start] = units
        self._free_by_end[start + units] = start

    def _remove(self, start: int, units: int) -> None:
        c = size_class(units)
        bucket = self._buckets[c]
        del bucket[start]
        if not bucket:
            self._bits ^= 1 << c
        del self._free[start]
        del self._free_by_end[start + units]

    def _find(self, units: int) -> int:
        """Start of a free block of at least `units` in O(1), or -1.

        The request is rounded up to the next class boundary, so any block in the first non-empty class at or
        above it fits; blocks in the request's own class that might fit are left to `_search`.
        """
        s = units.bit_length() - _SHIFT0
        c = (s << SL_BITS) + ((units - 1) >> s) + 1 if s > 0 else units  # ceil(units / 2**s) is the rounding
        found = self._bits >> c
        if not found:
            return -1
        c += (found & -found).bit_length() - 1
        return next(reversed(self._buckets[c]))  # the most recently freed: likely still warm

    def _search(self, units: int, align_units: int) -> tuple[int, int] | None:
        """(block start, aligned start) of the first free block that fits `units` at `align_units`, looked at
        block by block, or None.

        Runs only after `_find` failed, and scans only the classes whose blocks `_find` cannot vouch for (the
        class of `units` up to that of `units + align_units - 1`), so a fit is never missed: after freeing
        everything the whole heap can be allocated again, at any alignment its base satisfies.
        """
        top = min(size_class(units + align_units - 1), len(self._buckets) - 1)
        for c in range(size_class(units), top + 1):
            if self._bits >> c & 1:
                for start in self._buckets[c]:
                    aligned = (start + align_units - 1) & -align_units
                    if aligned + units <= start + self._free[start]:
                        return start, aligned
        return None

    # --- the API ---
    def alloc(self, size: int, align: int = 0) -> int:
        """An address of `size` bytes aligned to max(align, min_align); OutOfMemoryError when nothing fits.

        `align` is 0 (meaning min_align) or any power of two; the reservation is `size` rounded up to min_align.
        """
        if type(size) is not int or size <= 0:  # one exact-type test keeps the common case cheap
            size = self._checked_size(size)
        if align:
            if type(align) is not int or align < 0 or align & (align - 1):
                align = self._checked_align(align)
            if align > self.min_align:
                return self._alloc_slow(size, align)
        units = (size + self._mask) >> self._shift
        # _find, inlined: the class of units rounded up to the next class boundary (ceil(units / 2**s)).
        s = units.bit_length() - _SHIFT0
        c = (s << SL_BITS) + ((units - 1) >> s) + 1 if s > 0 else units
        found = self._bits >> c
        if not found:
            return self._alloc_slow(size, align)
        c += (found & -found).bit_length() - 1
        bucket = self._buckets[c]
        block = next(reversed(bucket))  # the most recently freed block, likely still warm
        free = self._free
        rest = free[block] - units
        if rest:
            # Carve from the block's end: the block keeps its start, so unless its class changes it stays put.
            start = block + rest
            by_end = self._free_by_end
            del by_end[start + units]
            by_end[start] = block
            free[block] = rest
            s = rest.bit_length() - _SHIFT0
            rc = (s << SL_BITS) + (rest >> s) if s > 0 else rest
            if rc != c:
                del bucket[block]
                if not bucket:
                    self._bits ^= 1 << c
                bucket = self._buckets[rc]
                if not bucket:
                    self._bits |= 1 << rc
                bucket[block] = None
        else:
            start = block
            del bucket[start]
            if not bucket:
                self._bits ^= 1 << c
            del free[start]
            del self._free_by_end[start + units]
        self._live[start] = units
        used = self._used + (units << self._shift)
        self._used = used
        if used > self._peak:
            self._peak = used
        return start << self._shift

    def _alloc_slow(self, size: int, align: int) -> int:
        """alloc for alignments above min_align, and for requests the O(1) search could not place.

        Over-allocates (room for the request plus the worst-case padding), places the block at the highest
        aligned start inside, and gives the pieces in front and behind back to the free lists; failing that,
        searches the classes block by block.
        """
        units = (size + self._mask) >> self._shift
        align_units = max(align >> self._shift, 1)
        block = self._find(units + align_units - 1)
        if block >= 0:
            start = (block + self._free[block] - units) & -align_units
        else:
            hit = self._search(units, align_units)
            if hit is None:
                raise self._oom(size, align)
            block, start = hit
        self._carve(block, start, units)
        self._live[start] = units
        self._used += units << self._shift
        if self._used > self._peak:
            self._peak = self._used
        return start << self._shift

    def _carve(self, block: int, start: int, units: int) -> None:
        """Take [start, start + units) out of the free block at `block`; what is left on either side stays free."""
        length = self._free[block]
        end = block + length
        tail = end - start - units
        if start > block:  # the block keeps its start and shrinks to the front piece
            front = start - block
            self._free[block] = front
            del self._free_by_end[end]
            self._free_by_end[start] = block
            c, fc = size_class(length), size_class(front)
            if fc != c:
                bucket = self._buckets[c]
                del bucket[block]
                if not bucket:
                    self._bits ^= 1 << c
                if not self._buckets[fc]:
                    self._bits |= 1 << fc
                self._buckets[fc][block] = None
        else:
            self._remove(block, length)
        if tail:
            self._insert(start + units, tail)

    def free(self, addr: int) -> None:
        """Take back an address alloc returned; anything else (a second free, an address never returned, an
        address inside an allocation) is InvalidHandleError and the heap is unchanged."""
        start = addr >> self._shift if type(addr) is int and not addr & self._mask else -1
        units = self._live.pop(start, None)
        if units is None:
            return self._free_slow(addr)
        self._used -= units << self._shift
        free, by_end, buckets = self._free, self._free_by_end, self._buckets
        end = start + units
        after = free.pop(end, None)
        if after is not None:  # merge with the free block behind: it leaves its bucket, its end becomes ours
            s = after.bit_length() - _SHIFT0
            c = (s << SL_BITS) + (after >> s) if s > 0 else after
            bucket = buckets[c]
            del bucket[end]
            if not bucket:
                self._bits ^= 1 << c
            end += after
        before = by_end.pop(start, None)
        if before is not None:
            # Merge into the free block in front: it keeps its start, so unless its class changes it stays put.
            n = free[before]
            s = n.bit_length() - _SHIFT0
            c = (s << SL_BITS) + (n >> s) if s > 0 else n
            units = end - before
            s = units.bit_length() - _SHIFT0
            nc = (s << SL_BITS) + (units >> s) if s > 0 else units
            free[before] = units
            by_end[end] = before
            if nc == c:
                return
            bucket = buckets[c]
            del bucket[before]
            if not bucket:
                self._bits ^= 1 << c
            start = before
        else:
            units = end - start
            free[start] = units
            by_end[end] = start
            s = units.bit_length() - _SHIFT0
            nc = (s << SL_BITS) + (units >> s) if s > 0 else units
        bucket = buckets[nc]
        if not bucket:  # the bit changes only when the bucket stops being empty
            self._bits |= 1 << nc
        bucket[start] = None

    def _free_slow(self, addr: object) -> None:
        """free for integer types other than int (numpy's, say), and the error for anything not live."""
        if type(addr) is not int:
            try:
                value = _as_int(addr)
            except TypeError:
                raise InvalidHandleError(f"{self.name}: free() takes an address (int) that alloc returned, got "
                                         f"{type(addr).__name__} {addr!r}") from None
            if self.owns(value):
                return self.free(value)
        raise self._bad_address(addr, "free")

    def size_of(self, addr: int) -> int:
        """Bytes reserved for the live allocation at `addr` (its size rounded up to min_align)."""
        if not self.owns(addr):
            raise self._bad_address(addr, "size_of")
        return self._live[_as_int(addr) >> self._shift] << self._shift

    def owns(self, addr: int) -> bool:
        """Whether `addr` is the start of a live allocation of this heap."""
        try:
            addr = _as_int(addr)
        except TypeError:
            return False
        return not addr & self._mask and (addr >> self._shift) in self._live

    # --- errors (cold paths) ---
    def _checked_size(self, size: object) -> int:
        if isinstance(size, bool):
            raise TypeError(f"{self.name}: alloc size must be an int, got {size!r}")
        try:
            size = _as_int(size)  # numpy integers and other exact integer types are fine
        except TypeError:
            raise TypeError(f"{self.name}: alloc size must be an int, got {type(size).__name__} {size!r}") from None
        if size <= 0:
            raise ValueError(f"{self.name}: alloc size must be positive, got size={size}")
        return size

    def _checked_align(self, align: object) -> int:
        if isinstance(align, bool):
            raise TypeError(f"{self.name}: alloc align must be an int, got {align!r}")
        try:
            value = _as_int(align)
        except TypeError:
            raise TypeError(f"{self.name}: alloc align must be an int, got {type(align).__name__} {align!r}") from None
        if value < 0 or value & (value - 1):
            raise ValueError(f"{self.name}: alloc align must be 0 or a power of two, got align={align!r}")
        return value

    def _bad_address(self, addr: object, what: str) -> InvalidHandleError:
        try:
            value = _as_int(addr)
        except TypeError:
            return InvalidHandleError(f"{self.name}: {what}() takes an address (int) that alloc returned, "
                                      f"got {type(addr).__name__} {addr!r}")
        end = self.base + self.size
        if not self.base <= value < end:
            return InvalidHandleError(f"{self.name}: {what}({value:#x}): the address is outside the heap "
                                      f"[{self.base:#x}, {end:#x}); pass an address this heap's alloc returned")
        unit = value >> self._shift
        for start, n in self._live.items():
            if start <= unit < start + n:
                return InvalidHandleError(
                    f"{self.name}: {what}({value:#x}): the address is inside the live allocation at "
                    f"{start << self._shift:#x} ({n << self._shift} bytes), not its start; pass the address alloc "
                    "returned")
        return InvalidHandleError(f"{self.name}: {what}({value:#x}): no live allocation starts there (already "
                                  "freed, or never returned by alloc); the heap is unchanged")

    def _oom(self, size: int, align: int) -> OutOfMemoryError:
        free, largest = self.free_bytes, self.largest_free
        reserved = -(-size // self.min_align) * self.min_align
        if free < reserved:
            hint = "free buffers you no longer need, or allocate less"
        elif largest >= reserved:
            hint = "free blocks are big enough but none at this alignment; ask for a smaller alignment"
        else:
            hint = ("fragmented: enough is free, but not in one piece; free neighbouring buffers or allocate "
                    "smaller pieces")
        return OutOfMemoryError(f"{self.name}: out of memory allocating {size} bytes (alignment "
                                f"{max(align, self.min_align)}): {free} bytes free, largest free block {largest} "
                                f"bytes; {hint}")

    # --- accounting ---
    @property
    def used(self) -> int:
        """Bytes reserved by live allocations (each rounded up to min_align)."""
        return self._used

    @property
    def peak_used(self) -> int:
        """The most bytes ever reserved at once."""
        return self._peak

    @property
    def free_bytes(self) -> int:
        """Bytes not reserved, in however many pieces."""
        return self.size - self._used

    @property
    def largest_free(self) -> int:
        """Bytes in the largest free block: the biggest request at min_align that can succeed now."""
        if not self._bits:
            return 0
        top = self._buckets[self._bits.bit_length() - 1]  # the top non-empty class holds the largest block
        return max(self._free[s] for s in top) << self._shift

    @property
    def allocations(self) -> int:
        """How many allocations are live."""
        return len(self._live)

    @property
    def free_blocks(self) -> int:
        """How many separate free ranges there are: 1 on an empty heap, more as it fragments."""
        return len(self._free)

    def check(self) -> None:
        """Verify every invariant (for tests and fuzzing); raises AssertionError naming the broken one."""
        spans = sorted([(s, n, "free") for s, n in self._free.items()]
                       + [(s, n, "used") for s, n in self._live.items()])
        pos = self.base >> self._shift
        for (s, n, kind), nxt in zip(spans, spans[1:] + [None]):
            assert s == pos, f"{self.name}: gap or overlap at unit {pos:#x} (next block at {s:#x})"
            assert n > 0, f"{self.name}: empty {kind} block at {s:#x}"
            if kind == "free" and nxt is not None:
                assert nxt[2] == "used", f"{self.name}: adjacent free blocks at {s:#x} were not merged"
            pos = s + n
        assert pos == (self.base + self.size) >> self._shift, f"{self.name}: blocks do not cover the heap"
        assert self._used == sum(self._live.values()) << self._shift, f"{self.name}: used bytes drifted"
        assert self._peak >= self._used, f"{self.name}: peak_used {self._peak} below used {self._used}"
        assert self._free_by_end == {s + n: s for s, n in self._free.items()}, f"{self.name}: end index is stale"
        listed = [s for b in self._buckets for s in b]
        assert sorted(listed) == sorted(self._free), f"{self.name}: buckets disagree with the free blocks"
        for c, bucket in enumerate(self._buckets):
            assert bool(bucket) == bool(self._bits >> c & 1), f"{self.name}: stale bitmap bit for class {c}"
            for s in bucket:
                assert size_class(self._free[s]) == c, f"{self.name}: free block {s:#x} in the wrong class {c}"
        assert self._bits >> len(self._buckets) == 0, f"{self.name}: bitmap bit beyond the top class"

    def __repr__(self) -> str:
        return (f"<VAHeap {self.name} [{self.base:#x}, {self.base + self.size:#x}) used={self._used} "
                f"free={self.free_bytes} allocations={len(self._live)}>")
