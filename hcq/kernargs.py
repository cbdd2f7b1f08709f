"""Kernel-argument memory: staged per submission and reused only once the GPU is done with it.

A ring over one host-visible buffer. Each staged block is tagged with the device timeline value whose
arrival proves the submission that reads it has finished. Blocks are placed one after another, wrapping to
the start when one does not fit before the end, so the live blocks always form one run from the oldest
(`live[0]`) to `head`: placing a block looks only at the oldest one, however many are in flight. Space is
reclaimed oldest first, and a full ring waits (bounded, through the timeline signal's own wait) for the
oldest block instead of overwriting arguments still in use.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Any

from hcq.errors import HCQError

ALIGN = 256  # kernel-argument blocks are 256-byte aligned on AMD (the dispatch packet requires 16); keep it simple


class KernargRing:
    """Stages kernel-argument blocks in `buffer` (host-visible, GPU-mapped); safe from several threads."""

    def __init__(self, buffer: Any, timeline: Any, wait_timeout: float = 10.0):
        self.buf, self.timeline, self.wait_timeout = buffer, timeline, wait_timeout
        self.head = 0  # next free offset
        self.live: deque[tuple[int, int, int]] = deque()  # (offset, end, tag) oldest first
        self.staged = 0
        self._lock = threading.Lock()

    def _reclaim(self) -> None:
        done = self.timeline.value
        while self.live and self.live[0][2] <= done:
            self.live.popleft()

    def _place(self, size: int) -> int:
        """Where a block of size bytes goes now without touching a live block, or -1 (wait for the oldest)."""
        if not self.live:
            return self.head if self.head + size <= self.buf.size else 0
        tail = self.live[0][0]
        if tail < self.head:  # live run [tail, head): free space after head, then before tail
            if self.head + size <= self.buf.size:
                return self.head
            return 0 if size <= tail else -1
        # Wrapped (or full when head == tail): the only free space is [head, tail).
        return self.head if self.head + size <= tail else -1

    def stage(self, blob: bytes, tag: int) -> int:
        """Copy blob into the ring and return its GPU address; `tag` is the timeline value that frees it."""
        size = max(ALIGN, -(-len(blob) // ALIGN) * ALIGN)
        if size > self.buf.size:
            raise HCQError(f"kernel arguments of {len(blob)} bytes exceed the {self.buf.size}-byte argument ring")
        with self._lock:
            while True:
                self._reclaim()
                off = self._place(size)
                if off >= 0:
                    break
                # Wait for the submission holding the oldest block; raises a hang report if it never finishes.
                self.timeline.wait(self.live[0][2], self.wait_timeout)
            self.buf.cpu_view()[off:off + len(blob)] = blob
            self.live.append((off, off + size, tag))
            self.head = off + size
            self.staged += 1
        return self.buf.va + off
