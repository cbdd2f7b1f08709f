"""Buffers: a GPU virtual address range with an optional CPU view, owned by one device, mapped on some."""
from __future__ import annotations

import ctypes
from enum import IntFlag
from typing import Any

from hcq.errors import InvalidHandleError


class MemFlags(IntFlag):
    """Where memory lives and how the host sees it; drivers translate these to their own allocation flags."""
    DEVICE_LOCAL = 1  # VRAM (or the device's own memory)
    HOST_VISIBLE = 2  # the host can map it
    UNCACHED = 4  # host and device see writes without cache maintenance (signals, rings)
    EXECUTABLE = 8  # code objects
    # Bits 16 and up are left for driver-specific flags.


class Buffer:
    """A range of GPU virtual memory: `va`, `size`, the owning `device`, `flags`, an optional host mapping.

    `view(offset, size)` makes a sub-range sharing the same memory; every view keeps its root buffer (`base`)
    alive and fails once that root was freed. `mapped_on` is the set of devices that can reach the address
    (shared by a buffer and all its views). The allocator that frees a buffer calls `mark_freed()`; using the
    buffer or any view of it afterwards raises InvalidHandleError.
    """

    __slots__ = ("va", "size", "device", "flags", "host_addr", "base", "offset", "mapped_on", "meta", "_freed",
                 "_host_view")

    def __init__(self, va: int, size: int, device: Any, flags: MemFlags, host_addr: int | None = None,
                 base: Buffer | None = None, offset: int = 0, meta: Any = None):
        if size < 0:
            raise ValueError(f"Buffer at va {va:#x}: size must be >= 0, got {size}")
        self.va, self.size, self.device, self.flags = va, size, device, flags
        self.host_addr, self.base, self.offset = host_addr, base, offset
        self.mapped_on: set[Any] = {device} if base is None else base.mapped_on
        self.meta = meta  # driver data: KFD handle, BO, ...
        self._freed = False
        self._host_view: memoryview | None = None  # built on first cpu_view(): a ctypes view costs ~1 us

    @property
    def freed(self) -> bool:
        """Whether this buffer's memory (or its root buffer's) was given back to the allocator."""
        return self._freed or (self.base is not None and self.base._freed)

    def _alive(self, what: str) -> None:
        if self._freed or (self.base is not None and self.base._freed):
            raise InvalidHandleError(f"{what} on {self!r}: its memory was freed; allocate a new buffer instead of "
                                     "keeping a handle (or a view) past free()")

    def mark_freed(self) -> None:
        """Called by the allocator that freed the memory; every later use (and every view's) is an error."""
        self._freed = True
        self._host_view = None

    def add_mapping(self, device: Any) -> None:
        """Record that `device` can reach this buffer's address too."""
        self._alive("add_mapping()")
        self.mapped_on.add(device)

    def view(self, offset: int, size: int | None = None) -> Buffer:
        """A sub-range [offset, offset + size) sharing this buffer's memory (size defaults to the rest)."""
        self._alive("view()")
        if size is None:
            size = self.size - offset
        if offset < 0 or size < 0 or offset + size > self.size:
            raise ValueError(f"view [{offset}, {offset + size}) is outside {self!r} (size {self.size}); "
                             f"pick 0 <= offset and offset + size <= {self.size}")
        host = None if self.host_addr is None else self.host_addr + offset
        return Buffer(self.va + offset, size, self.device, self.flags, host, self.base or self, self.offset + offset,
                      self.meta)

    def cpu_view(self) -> memoryview | None:
        """The bytes as the host sees them (writes go straight to the memory), or None when not host-visible."""
        self._alive("cpu_view()")
        if self.host_addr is None:
            return None
        if self._host_view is None:
            self._host_view = memoryview((ctypes.c_char * self.size).from_address(self.host_addr)).cast("B")
        return self._host_view[:]  # a fresh slice each call, so a caller's release() cannot break the cached one

    def numpy(self, dtype: Any, count: int | None = None, offset: int = 0) -> Any:
        """An ndarray of `count` items of `dtype` (default: as many as fit) starting `offset` bytes in; no copy."""
        import numpy as np  # numpy is only needed by callers that ask for arrays
        view = self.cpu_view()
        if view is None:
            raise ValueError(f"{self!r} is not host-visible; allocate it with MemFlags.HOST_VISIBLE or copy it to "
                             "host memory first")
        itemsize = np.dtype(dtype).itemsize
        if not 0 <= offset <= self.size:
            raise ValueError(f"numpy(offset={offset}) is outside {self!r}; pick 0 <= offset <= {self.size}")
        if count is None:
            count = (self.size - offset) // itemsize
        if count < 0 or offset + count * itemsize > self.size:
            raise ValueError(f"numpy(count={count}, offset={offset}) of {np.dtype(dtype)} needs bytes "
                             f"[{offset}, {offset + count * itemsize}) but {self!r} has {self.size}")
        return np.frombuffer(view, dtype=dtype, count=count, offset=offset)

    def __repr__(self) -> str:
        state = ", freed" if self.freed else ""
        kind = f", view +{self.offset}" if self.base is not None else ""
        return f"Buffer(va={self.va:#x}, size={self.size}, on {getattr(self.device, 'name', self.device)}{kind}{state})"
