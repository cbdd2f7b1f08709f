"""The emulated NVIDIA GPU's MMU: one GPU virtual address space (a FERMI_VASPACE_A as UVM maps it).

A mapping ties a range of GPU VAs to memory this process can read and write (`host`): the emulated RM maps the
buffers it allocated (memfd-backed VRAM, system memory, the driver's own pages for OS descriptors) where UVM was
asked to map them. Every access the GPU engines make goes through `translate` (one mapping) or `read`/`write`
(which walk across adjacent mappings, as page tables do); an access to an unmapped or poisoned byte raises
MMUFault with the address of the first bad byte, which the engines turn into a channel error.

The tables are replaced, never changed in place, so engine threads read them without a lock. Memory a running
engine touches stays mapped until it is done: `unmap` waits (the `gate`) for accesses in flight, so an engine never
reads memory the emulated RM has already returned to the OS.
"""
from __future__ import annotations

import bisect
import ctypes
import threading

from emu.gate import MapGate

# The GPU VA width the MMU translates: 49 bits on Ampere/Ada (dev_mmu.ref: 5-level page tables with 49-bit VAs),
# 57 bits on Hopper (GH100's 6-level tables); an address beyond it can never be mapped.
VA_BITS = {"sm_86": 49, "sm_89": 49, "sm_90": 57}


class MMUFault(Exception):
    """A GPU access to an address with no valid mapping: `va` is the first faulting byte, `access` "read"/"write"."""

    def __init__(self, va: int, access: str, message: str = ""):
        self.va, self.access = va, access
        super().__init__(message or f"MMU fault: {access} of unmapped GPU VA {va:#x}")


class VASpace:
    """One GPU virtual address space: mappings VA -> host memory, poisoned ranges, and access checks."""

    def __init__(self, va_bits: int = 57, name: str = "vaspace"):
        self.va_bits, self.name = va_bits, name
        self._starts: tuple[int, ...] = ()  # sorted mapping starts
        self._maps: dict[int, tuple[int, int, str]] = {}  # start -> (size, host, what)
        self._poisoned: tuple[tuple[int, int], ...] = ()
        self._lock = threading.Lock()  # serializes table replacement (readers never take it)
        self.gate = MapGate()

    # --- the emulated RM / UVM side ---
    def map(self, va: int, size: int, host: int, what: str) -> None:
        """Map [va, va+size) to host memory at `host`; overlapping an existing mapping is an error."""
        if size <= 0 or va < 0 or va + size > 1 << self.va_bits:
            raise ValueError(f"{self.name}: cannot map {what} at {va:#x}+{size:#x}: outside the {self.va_bits}-bit VA "
                             "space or empty")
        if not host:
            raise ValueError(f"{self.name}: {what} at {va:#x} has no host memory behind it")
        with self._lock:
            hit = self._overlap(va, size)
            if hit is not None:
                s, (n, _, w) = hit, self._maps[hit]
                raise ValueError(f"{self.name}: cannot map {what} at {va:#x}+{size:#x}: it overlaps {w} at "
                                 f"{s:#x}+{n:#x}; unmap that first")
            maps = dict(self._maps)
            maps[va] = (size, host, what)
            self._maps, self._starts = maps, tuple(sorted(maps))

    def unmap(self, va: int, size: int) -> None:
        """Remove the mappings inside [va, va+size); one that only partly lies inside is an error. Waits until no
        engine access is in flight."""
        with self._lock:
            inside = [s for s in self._starts if va <= s and s + self._maps[s][0] <= va + size]
            partial = [s for s in self._starts if s not in inside and s < va + size and va < s + self._maps[s][0]]
            if partial:
                s = partial[0]
                raise ValueError(f"{self.name}: unmap {va:#x}+{size:#x} cuts {self._maps[s][2]} at "
                                 f"{s:#x}+{self._maps[s][0]:#x} in two; unmap whole mappings")
            if not inside:
                raise ValueError(f"{self.name}: nothing is mapped in {va:#x}+{size:#x}")
            with self.gate.exclusive():
                maps = {k: v for k, v in self._maps.items() if k not in inside}
                self._maps, self._starts = maps, tuple(sorted(maps))

    def poison(self, va: int, size: int) -> None:
        """Fault injection: accesses to [va, va+size) fault although mapped."""
        with self._lock:
            self._poisoned = self._poisoned + ((va, size),)

    def mappings(self) -> list[tuple[int, int, int, str]]:
        """(va, size, host, what) of every mapping, by address."""
        maps = self._maps
        return [(s, *maps[s]) for s in sorted(maps)]

    # --- the engines' side ---
    def _overlap(self, va: int, size: int) -> int | None:
        starts = self._starts
        i = bisect.bisect_right(starts, va + size - 1) - 1
        if i >= 0 and starts[i] + self._maps[starts[i]][0] > va:
            return starts[i]
        return None

    def range_of(self, va: int) -> tuple[int, int, int] | None:
        """(start va, size, host) of the mapping holding `va`, or None."""
        starts, maps = self._starts, self._maps
        i = bisect.bisect_right(starts, va) - 1
        if i < 0:
            return None
        s = starts[i]
        m = maps.get(s)
        if m is None or va >= s + m[0]:
            return None
        return s, m[0], m[1]

    def _poison_hit(self, va: int, size: int) -> int | None:
        first = None
        for p, n in self._poisoned:
            if p < va + size and va < p + n:
                at = max(p, va)
                first = at if first is None else min(first, at)
        return first

    def translate(self, va: int, size: int, write: bool) -> int:
        """The host address of [va, va+size), which must lie in one mapping; else MMUFault at the first bad byte."""
        access = "write" if write else "read"
        r = self.range_of(va)
        if r is None:
            raise MMUFault(va, access, f"MMU fault: {access} of {size} bytes at GPU VA {va:#x}, which is not mapped "
                                       f"in {self.name}")
        start, n, host = r
        if va + size > start + n:
            end = start + n
            raise MMUFault(end, access, f"MMU fault: {access} of {size} bytes at GPU VA {va:#x} runs past the end of "
                                        f"the mapping {start:#x}+{n:#x} at {end:#x}")
        if self._poisoned:
            bad = self._poison_hit(va, size)
            if bad is not None:
                raise MMUFault(bad, access, f"MMU fault: {access} at GPU VA {bad:#x}, a poisoned page (fault injection)")
        return host + (va - start)

    def spans(self, va: int, size: int, write: bool) -> list[tuple[int, int]]:
        """[(host, length)] covering [va, va+size) across adjacent mappings; MMUFault at the first bad byte."""
        out, at, end = [], va, va + size
        while at < end:
            r = self.range_of(at)
            if r is None:
                access = "write" if write else "read"
                raise MMUFault(at, access, f"MMU fault: {access} at GPU VA {at:#x} (of {va:#x}+{size:#x}), which is "
                                           f"not mapped in {self.name}")
            start, n, host = r
            take = min(end, start + n) - at
            out.append((host + (at - start), take))
            at += take
        if self._poisoned and size:
            bad = self._poison_hit(va, size)
            if bad is not None:
                access = "write" if write else "read"
                raise MMUFault(bad, access, f"MMU fault: {access} at GPU VA {bad:#x}, a poisoned page (fault injection)")
        return out

    def read(self, va: int, size: int) -> bytes:
        """Bytes at a GPU VA (across mappings)."""
        parts = self.spans(va, size, False)
        if len(parts) == 1:
            return ctypes.string_at(parts[0][0], size)
        return b"".join(ctypes.string_at(h, n) for h, n in parts)

    def write(self, va: int, data: bytes) -> None:
        """Store bytes at a GPU VA (across mappings); nothing is written when any byte faults."""
        at = 0
        for h, n in self.spans(va, len(data), True):
            ctypes.memmove(h, bytes(data[at:at + n]), n)
            at += n

    def read_u32(self, va: int) -> int:
        return ctypes.c_uint32.from_address(self.translate(va, 4, False)).value

    def read_u64(self, va: int) -> int:
        return ctypes.c_uint64.from_address(self.translate(va, 8, False)).value
