"""The GPU virtual address space as the wave executor sees it: the buffers the driver mapped, read and written
lane-parallel with every byte checked, and faults that say where an access went wrong.

A range is backed by a numpy uint8 array over its bytes. In the command processor's process buffers are mapped at
the same virtual addresses the driver uses, so the default backing of a range is a view of the memory at `va`
itself; tests register plain numpy arrays at made-up addresses instead. A range whose bytes live elsewhere (a
userptr range of the driver's process) is backed by an object with read(offset, size) -> bytes and
write(offset, data), reached lane by lane.

Lookups are vectorized: one np.searchsorted over the sorted range starts per access, never a Python loop over lanes.
A lane touching a byte outside every range, or a poisoned byte (fault injection), raises VMFault naming the address,
the access kind and the mapped buffer nearest to it; the executor adds the instruction and its pc.
"""
from __future__ import annotations

import ctypes
from bisect import bisect_left, bisect_right
from typing import Any, Optional

import numpy as np

_U8 = np.uint8


class GPUFault(Exception):
    """A fault a kernel caused. `kind` names the class ("page fault", "illegal instruction", "trap", "barrier",
    "hang", "bad dispatch"), `va` the address involved if any; the executor fills in `pc`, `instr` (the instruction
    as assembly) and `where` (workgroup and wave) when it knows them, and str() reads as one line of a fault report."""

    def __init__(self, message: str, kind: str = "illegal instruction", va: Optional[int] = None):
        super().__init__(message)
        self.kind, self.va = kind, va
        self.pc: Optional[int] = None
        self.instr: Optional[str] = None
        self.where: Optional[str] = None

    def __str__(self) -> str:
        head = ""
        if self.instr is not None and self.pc is not None:
            head = f"{self.instr} at pc {self.pc:#x}"
        elif self.pc is not None:
            head = f"pc {self.pc:#x}"
        if self.where:
            head = f"{self.where}: {head}" if head else self.where
        return f"{head}: {self.args[0]}" if head else str(self.args[0])


class VMFault(GPUFault):
    """A VM fault: a lane touched a byte no buffer maps, or a poisoned one. `va` is the first faulting byte,
    `access` what it did ("read", "write", "atomic"), `size` the bytes per lane, `lane` which lane."""

    def __init__(self, message: str, va: int, access: str, size: int = 0, lane: Optional[int] = None):
        super().__init__(message, "page fault", va)
        self.access, self.size, self.lane = access, size, lane


_SPANS: dict[int, np.ndarray] = {}  # access size -> arange(size), the byte offsets of one access


def _span(size: int) -> np.ndarray:
    r = _SPANS.get(size)
    if r is None:
        r = np.arange(size)
        r.flags.writeable = False
        _SPANS[size] = r
    return r


def host_view(va: int, size: int) -> np.ndarray:
    """A writable uint8 view of `size` bytes of this process's memory at address `va`."""
    return np.frombuffer((ctypes.c_uint8 * size).from_address(va), dtype=_U8)


class AddressSpace:
    """Mapped ranges (va -> size and backing), poisoned ranges, and checked lane-parallel gathers and scatters."""

    def __init__(self) -> None:
        self._ranges: dict[int, tuple[int, Any]] = {}  # va -> (size, backing or None for host memory at va)
        self._poison: list[tuple[int, int]] = []
        self._dirty = True
        self._starts = np.zeros(0, np.uint64)
        self._ends = np.zeros(0, np.uint64)
        self._backs: list[Any] = []
        self._views: dict[int, np.ndarray] = {}  # range start -> uint8 view, made on first touch
        self._pstarts = np.zeros(0, np.uint64)
        self._pends = np.zeros(0, np.uint64)
        # the same tables as Python lists (starts, ends, poison starts, poison ends), for the one-range fast path
        self._fast: tuple[list[int], list[int], list[int], list[int]] = ([], [], [], [])
        self.synced: Any = None  # the owner's generation of the tables last synced (sync's `generation`)
        self.remaps = 0  # ranges mapped or unmapped by sync: what a generation change cost

    # --- the map ---
    def map(self, va: int, size: int, backing: Any = None) -> None:
        """Map [va, va+size): backed by `backing` (a uint8 numpy array of `size` bytes, or an object with
        read(offset, size)/write(offset, data)), or by this process's memory at va when backing is None."""
        if size <= 0:
            raise ValueError(f"mapping at {va:#x}: size {size} must be positive")
        if isinstance(backing, np.ndarray):
            if backing.dtype != _U8 or backing.ndim != 1 or backing.size < size:
                raise ValueError(f"mapping at {va:#x}: a backing array is uint8, 1-D, of at least {size} bytes")
            backing = backing[:size]
        self._ranges[va] = (size, backing)
        self._views.pop(va, None)
        self._dirty = True

    def unmap(self, va: int) -> None:
        self._ranges.pop(va, None)
        self._views.pop(va, None)
        self._dirty = True

    def poison(self, va: int, size: int) -> None:
        """Fault injection: accesses to [va, va+size) fault although the range is mapped."""
        self._poison.append((va, size))
        self._dirty = True

    def sync(self, ranges: dict[int, int], poisoned: list[tuple[int, int]] = (),
             remote: Optional[dict[int, Any]] = None, generation: Any = None) -> None:
        """Bring the map in line with an owner's tables (the CP's Memory: va -> size, poisoned ranges, and ranges
        whose bytes live elsewhere with their accessor objects): only what changed is remapped.

        `generation`: the owner's count of changes to those tables (None: unknown). When it equals the generation
        of the last sync nothing changed, and nothing is compared: a dispatch on an unchanged map costs nothing.
        The owner must read the generation before (or with) the tables it belongs to, never after."""
        if generation is not None and generation == self.synced:
            return
        want = {va: (n, None) for va, n in ranges.items()}
        want.update({va: (n, acc) for va, (n, acc) in (remote or {}).items()})
        for va in [va for va, (n, b) in self._ranges.items() if want.get(va, (None, None))[0] != n
                   or want[va][1] is not b]:
            self.unmap(va)
            self.remaps += 1
        for va, (n, b) in want.items():
            if va not in self._ranges:
                self.map(va, n, b)
                self.remaps += 1
        if list(poisoned) != self._poison:
            self._poison = list(poisoned)
            self._dirty = True
        self.synced = generation

    @property
    def ranges(self) -> dict[int, int]:
        return {va: n for va, (n, _) in self._ranges.items()}

    def _rebuild(self) -> None:
        order = sorted(self._ranges)
        self._starts = np.array(order, np.uint64)
        self._ends = np.array([va + self._ranges[va][0] for va in order], np.uint64)
        self._backs = [self._ranges[va][1] for va in order]
        pois = sorted(self._poison)
        self._pstarts = np.array([p[0] for p in pois], np.uint64)
        # the furthest end of any poisoned range starting at or before each one: a lookup finds overlaps in one step
        self._pends = np.maximum.accumulate(np.array([p[0] + p[1] for p in pois], np.uint64)) if pois else \
            np.zeros(0, np.uint64)
        self._fast = (self._starts.tolist(), self._ends.tolist(), self._pstarts.tolist(), self._pends.tolist())
        self._dirty = False

    def _view(self, i: int) -> Any:
        start = int(self._starts[i])
        v = self._views.get(start)
        if v is None:
            b = self._backs[i]
            v = host_view(start, int(self._ends[i]) - start) if b is None else b
            self._views[start] = v
        return v

    # --- describing addresses ---
    def describe(self, va: int, size: int = 1) -> str:
        """Where `va` lies relative to the nearest mapped buffer, in words a fault report can use."""
        if self._dirty:
            self._rebuild()
        if not len(self._starts):
            return "nothing is mapped"
        i = int(np.searchsorted(self._starts, np.uint64(va), "right")) - 1
        cands = [j for j in (i, i + 1) if 0 <= j < len(self._starts)]

        def dist(j: int) -> int:
            s, e = int(self._starts[j]), int(self._ends[j])
            return 0 if s <= va < e else (va - e + 1 if va >= e else s - va)
        j = min(cands, key=dist)
        s, e = int(self._starts[j]), int(self._ends[j])
        buf = f"the buffer at {s:#x} ({e - s} bytes)"
        if va >= e:
            return f"{va - e:#x} bytes past the end of {buf}"
        if va < s:
            return f"{s - va:#x} bytes before {buf}"
        if va + size > e:
            return f"{va + size - e:#x} bytes over the end of {buf}"
        return f"inside {buf}"

    def _fault(self, va: int, size: int, kind: str, lane: Optional[int], why: str) -> VMFault:
        who = f" (lane {lane})" if lane is not None else ""
        return VMFault(f"{kind} of {size} bytes at {va:#x}{who} {why}: {self.describe(va, size)}", va, kind, size, lane)

    # --- lookups ---
    def locate(self, addrs: np.ndarray, size: int, kind: str, lanes: Optional[np.ndarray] = None) -> np.ndarray:
        """The range index of every address, after checking each [addr, addr+size) lies inside one range and
        touches no poisoned byte; `lanes` names the lane of each address for the fault message."""
        if self._dirty:
            self._rebuild()
        a = addrs.astype(np.uint64, copy=False)
        idx = np.searchsorted(self._starts, a, "right").astype(np.int64) - 1
        end = a + np.uint64(size)
        ok = (idx >= 0) & (end >= a)  # end < a: the access wraps the 64-bit address space
        safe = np.maximum(idx, 0)
        if len(self._ends):
            ok &= end <= self._ends[safe]
        else:
            ok[:] = False
        if not ok.all():
            bad = int(np.argmin(ok))
            raise self._fault(int(a[bad]), size, kind, None if lanes is None else int(lanes[bad]),
                              "outside every mapped buffer")
        if len(self._pstarts):
            pi = np.searchsorted(self._pstarts, end, "left").astype(np.int64) - 1  # last poison starting before end
            hit = (pi >= 0) & (self._pends[np.maximum(pi, 0)] > a)
            if hit.any():
                bad = int(np.argmax(hit))
                first = max(int(a[bad]), int(self._pstarts[pi[bad]]))
                raise self._fault(first, size, kind, None if lanes is None else int(lanes[bad]),
                                  "touches a poisoned page (injected fault)")
        return idx

    def _one_range(self, a: np.ndarray, size: int) -> int:
        """The range index when every [addr, addr+size) of `a` (uint64, not empty) lies inside one range and no
        poisoned range comes near them (then locate() would pass them all, with that index for each); -1 when
        not sure, and locate() must decide (and name the fault)."""
        if self._dirty:
            self._rebuild()
        starts, ends, pstarts, pends = self._fast
        if len(a) == 1:
            lo = hi = int(a[0])
        else:
            lo, hi = int(a.min()), int(a.max())
        hi_end = hi + size
        if hi_end >= 1 << 64:  # wraps the address space (or ends exactly at 2**64): locate() reports it
            return -1
        i = bisect_right(starts, lo) - 1
        if i < 0 or hi_end > ends[i]:
            return -1
        if pstarts:
            p = bisect_left(pstarts, hi_end) - 1  # the furthest end of any poisoned range starting before hi_end
            if p >= 0 and pends[p] > lo:
                return -1
        return i

    def read(self, addrs: np.ndarray, size: int, lanes: Optional[np.ndarray] = None, kind: str = "read") -> np.ndarray:
        """Bytes at each address: an (n, size) uint8 array, every byte checked."""
        n = len(addrs)
        if n == 0:
            return np.empty((0, size), _U8)
        if size:
            a = addrs.astype(np.uint64, copy=False)
            i = self._one_range(a, size)
            if i >= 0:  # every address in one range, none near a poisoned byte: locate()'s checks all pass
                view = self._view(i)
                if isinstance(view, np.ndarray):
                    start = self._fast[0][i]
                    if n == 1:
                        off = int(a[0]) - start
                        return view[off:off + size].reshape(1, size).copy()
                    offs = (a - np.uint64(start)).astype(np.int64)
                    return view[offs[:, None] + _span(size)]
        out = np.empty((n, size), _U8)
        idx = self.locate(addrs, size, kind, lanes)
        a = addrs.astype(np.uint64, copy=False)
        for i in (np.unique(idx) if n > 1 and idx.min() != idx.max() else idx[:1]):
            sel = None if n == 1 or idx.min() == idx.max() else idx == i
            view = self._view(int(i))
            offs = (a if sel is None else a[sel]) - self._starts[i]
            if isinstance(view, np.ndarray):
                got = view[offs.astype(np.int64)[:, None] + np.arange(size)]
            else:
                got = np.array([np.frombuffer(view.read(int(o), size), _U8) for o in offs]).reshape(-1, size)
            if sel is None:
                out[:] = got
            else:
                out[sel] = got
        return out

    def write(self, addrs: np.ndarray, data: np.ndarray, lanes: Optional[np.ndarray] = None,
              kind: str = "write") -> None:
        """Store data[k] (an (n, size) uint8 array) at addrs[k], every byte checked before any is written; when
        lanes write the same byte the highest lane wins (numpy's last-write order)."""
        n, size = data.shape
        if n == 0:
            return
        if size:
            a = addrs.astype(np.uint64, copy=False)
            i = self._one_range(a, size)
            if i >= 0:  # every address in one range, none near a poisoned byte: locate()'s checks all pass
                view = self._view(i)
                if isinstance(view, np.ndarray):
                    offs = (a - np.uint64(self._fast[0][i])).astype(np.int64)
                    view[offs[:, None] + _span(size)] = data
                    return
        idx = self.locate(addrs, size, kind, lanes)
        a = addrs.astype(np.uint64, copy=False)
        uniform = n == 1 or idx.min() == idx.max()
        for i in (idx[:1] if uniform else np.unique(idx)):
            sel = None if uniform else idx == i
            view = self._view(int(i))
            offs = (a if sel is None else a[sel]) - self._starts[i]
            part = data if sel is None else data[sel]
            if isinstance(view, np.ndarray):
                view[offs.astype(np.int64)[:, None] + np.arange(size)] = part
            else:
                for o, row in zip(offs, part):
                    view.write(int(o), row.tobytes())

    def read_bytes(self, va: int, size: int, kind: str = "read") -> bytes:
        """One checked span of bytes (instruction fetch, scalar loads)."""
        if size and 0 <= va:
            i = self._one_range(np.array([va], np.uint64), size)
            if i >= 0:
                view = self._view(i)
                off = va - self._fast[0][i]
                if isinstance(view, np.ndarray):
                    return view[off:off + size].tobytes()
                return bytes(view.read(off, size))
        idx = int(self.locate(np.array([va], np.uint64), size, kind)[0])  # the same checks as read()
        view = self._view(idx)
        off = va - int(self._starts[idx])
        if isinstance(view, np.ndarray):
            return view[off:off + size].tobytes()  # one contiguous span: a slice, not a gather per byte
        return bytes(view.read(off, size))

    def span(self, va: int) -> tuple[int, int]:
        """The mapped range holding `va`, as (start, size); VMFault if none does."""
        if 0 <= va:
            i = self._one_range(np.array([va], np.uint64), 1)
            if i >= 0:
                starts, ends = self._fast[0], self._fast[1]
                return starts[i], ends[i] - starts[i]
        idx = int(self.locate(np.array([va], np.uint64), 1, "instruction fetch")[0])
        return int(self._starts[idx]), int(self._ends[idx] - self._starts[idx])
