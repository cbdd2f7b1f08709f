"""Kernel-argument memory: staged per submission and reused only once the GPU is done with it.

A ring over one host-visible buffer. Each staged block is tagged with the device timeline value whose
arrival proves the submission that reads it has finished; space is reclaimed oldest first, and a full ring
waits (bounded, through the timeline signal's own wait) instead of overwriting arguments still in use.
"""
from __future__ import annotations

from collections import deque
from typing import Any

from hcq.errors import HCQError

ALIGN = 256  # kernel-argument blocks are 256-byte aligned on AMD (the dispatch packet requires 16); keep it simple


class KernargRing:
    """Stages kernel-argument blocks in `buffer` (host-visible, GPU-mapped)."""

    def __init__(self, buffer: Any, timeline: Any, wait_timeout: float = 10.0):
        self.buf, self.timeline, self.wait_timeout = buffer, timeline, wait_timeout
        self.head = 0  # next free offset
        self.live: deque[tuple[int, int, int]] = deque()  # (offset, end, tag) oldest first
        self.staged = 0

    def _reclaim(self) -> None:
        done = self.timeline.value
        while self.live and self.live[0][2] <= done:
            self.live.popleft()

    def _fits(self, off: int, size: int) -> bool:
        if off + size > self.buf.size:
            return False
        return not any(o < off + size and off < e for o, e, _ in self.live)

    def stage(self, blob: bytes, tag: int) -> int:
        """Copy blob into the ring and return its GPU address; `tag` is the timeline value that frees it."""
        size = max(ALIGN, -(-len(blob) // ALIGN) * ALIGN)
        if size > self.buf.size:
            raise HCQError(f"kernel arguments of {len(blob)} bytes exceed the {self.buf.size}-byte argument ring")
        while True:
            self._reclaim()
            off = self.head if self.head + size <= self.buf.size else 0
            if self._fits(off, size):
                break
            if not self.live:
                raise HCQError("kernel-argument ring is inconsistent: no live blocks yet no room")
            oldest = self.live[0][2]
            # Wait for the submission holding the oldest block; raises a hang report if it never finishes.
            self.timeline.wait(oldest, self.wait_timeout)
        self.buf.cpu_view()[off:off + len(blob)] = blob
        self.live.append((off, off + size, tag))
        self.head = off + size
        self.staged += 1
        return self.buf.va + off
