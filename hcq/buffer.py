"""Buffers: a GPU virtual address range with an optional CPU view, owned by one device, mapped on some."""
from __future__ import annotations

import ctypes
from enum import IntFlag
from typing import Any

from hcq.errors import InvalidHandleError


class MemFlags(IntFlag):
    """Where memory lives and how the host sees it."""
    DEVICE_LOCAL = 1  # VRAM (or the device's own memory)
    HOST_VISIBLE = 2  # the host can map it
    UNCACHED = 4  # host and device see writes without cache maintenance (signals, rings)
    EXECUTABLE = 8  # code objects


class Buffer:
    """A range of GPU virtual memory; views share their base and fail once the base was freed."""

    __slots__ = ("va", "size", "device", "flags", "host_addr", "base", "offset", "mapped_on", "_freed", "meta")

    def __init__(self, va: int, size: int, device: Any, flags: MemFlags, host_addr: int | None = None,
                 base: "Buffer | None" = None, offset: int = 0, meta: Any = None):
        self.va, self.size, self.device, self.flags = va, size, device, flags
        self.host_addr, self.base, self.offset = host_addr, base, offset
        self.mapped_on: set[Any] = {device} if base is None else base.mapped_on
        self._freed = False
        self.meta = meta  # driver data: KFD handle, BO, ...

    @property
    def freed(self) -> bool:
        return self._freed or (self.base is not None and self.base.freed)

    def _alive(self, what: str) -> None:
        if self.freed:
            raise InvalidHandleError(f"{what} on {self!r}, which was freed")

    def mark_freed(self) -> None:
        """Called by the allocator that freed the memory; every later use (and every view's) is an error."""
        self._freed = True

    def add_mapping(self, device: Any) -> None:
        """Record that `device` can reach this buffer's address too."""
        self._alive("add_mapping")
        self.mapped_on.add(device)

    def view(self, offset: int, size: int | None = None) -> "Buffer":
        """A sub-range sharing this buffer's memory."""
        self._alive("view")
        size = self.size - offset if size is None else size
        if offset < 0 or size < 0 or offset + size > self.size:
            raise ValueError(f"view [{offset}, {offset + size}) is outside {self!r} (size {self.size})")
        root = self.base or self
        return Buffer(self.va + offset, size, self.device, self.flags,
                      None if self.host_addr is None else self.host_addr + offset, root, self.offset + offset, self.meta)

    def cpu_view(self) -> memoryview | None:
        """The bytes as the host sees them, or None when the memory is not host-visible."""
        self._alive("cpu_view")
        if self.host_addr is None:
            return None
        return memoryview((ctypes.c_char * self.size).from_address(self.host_addr)).cast("B")

    def numpy(self, dtype: Any, count: int | None = None, offset: int = 0) -> Any:
        """An ndarray over the host view (no copy)."""
        import numpy as np
        view = self.cpu_view()
        if view is None:
            raise ValueError(f"{self!r} is not host-visible; copy it to host memory first")
        return np.frombuffer(view, dtype=dtype, count=-1 if count is None else count, offset=offset)

    def __repr__(self) -> str:
        state = ", freed" if self.freed else ""
        return f"Buffer(va={self.va:#x}, size={self.size}, on {getattr(self.device, 'name', self.device)}{state})"
